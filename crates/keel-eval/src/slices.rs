//! Metrics on subsets of the test rows, and the examples the model got most confidently wrong.

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::metrics::top;

/// Metrics on the rows sharing one value of one slicing column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// What the rows were grouped by, e.g. `"label"`, `"length"`, or a metadata column.
    pub column: String,
    /// The group's value, e.g. `"sports"` or `"11-30 words"`.
    pub key: String,
    pub n: u64,
    pub accuracy: f64,
    /// Macro-F1 over the whole label list, computed on this slice's rows only.
    pub macro_f1: f64,
    pub log_loss: f64,
}

/// Groups the rows by `keys` (one per row, caller-supplied: a metadata column, a length
/// bucket, the true label) and evaluates each group. Groups come out in order of first
/// appearance, so the order is deterministic.
///
/// Panics if `keys.len() != y_true.len()` or the shapes disagree.
pub fn slice_metrics(column: &str, keys: &[String], y_true: &[usize], proba: &Matrix, labels: &[String]) -> Vec<Slice> {
    assert_eq!(keys.len(), y_true.len(), "one slice key per row");
    let mut order: Vec<&String> = Vec::new();
    let mut rows: std::collections::HashMap<&String, Vec<usize>> = std::collections::HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        rows.entry(k)
            .or_insert_with(|| {
                order.push(k);
                Vec::new()
            })
            .push(i);
    }
    order
        .into_iter()
        .map(|k| {
            let idx = &rows[k];
            let y: Vec<usize> = idx.iter().map(|&i| y_true[i]).collect();
            let e = crate::evaluate(&y, &proba.select_rows(idx), labels);
            Slice {
                column: column.to_owned(),
                key: k.clone(),
                n: e.n,
                accuracy: e.accuracy,
                macro_f1: e.macro_f1,
                log_loss: e.log_loss,
            }
        })
        .collect()
}

/// The true label's name of each row: the keys for slicing by label.
pub fn label_keys(y_true: &[usize], labels: &[String]) -> Vec<String> {
    y_true.iter().map(|&t| labels[t].clone()).collect()
}

/// Upper bounds (inclusive, in whitespace-separated words) of the text-length buckets.
pub const LENGTH_BUCKETS: [usize; 5] = [5, 15, 50, 150, 500];

/// The length bucket of each text, by whitespace-separated words: "0-5 words", "6-15 words",
/// "16-50 words", "51-150 words", "151-500 words", ">500 words".
pub fn length_keys<S: AsRef<str>>(texts: &[S]) -> Vec<String> {
    texts
        .iter()
        .map(|t| {
            let w = t.as_ref().split_whitespace().count();
            let mut lo = 0;
            for &hi in &LENGTH_BUCKETS {
                if w <= hi {
                    return format!("{lo}-{hi} words");
                }
                lo = hi + 1;
            }
            format!(">{} words", LENGTH_BUCKETS[LENGTH_BUCKETS.len() - 1])
        })
        .collect()
}

/// One misclassified example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WrongExample {
    /// Row index in the evaluated data.
    pub index: usize,
    pub true_label: usize,
    pub predicted: usize,
    /// The probability the model gave its (wrong) prediction.
    pub confidence: f64,
    /// The probability it gave the true label.
    pub true_probability: f64,
}

/// The `k` misclassified rows with the highest confidence in their wrong prediction, most
/// confident first (lower index first on ties).
pub fn confidently_wrong(y_true: &[usize], proba: &Matrix, k: usize) -> Vec<WrongExample> {
    assert_eq!(proba.rows(), y_true.len(), "one probability row per example");
    let mut wrong: Vec<WrongExample> = y_true
        .iter()
        .enumerate()
        .filter_map(|(i, &t)| {
            let row = proba.row(i);
            let (p, c) = top(row);
            (p != t).then(|| WrongExample {
                index: i,
                true_label: t,
                predicted: p,
                confidence: c,
                true_probability: f64::from(row[t]),
            })
        })
        .collect();
    wrong.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.index.cmp(&b.index)));
    wrong.truncate(k);
    wrong
}
