//! The rows each stage sees: a dataset version's records, their labels and their split.

use anyhow::{Context as _, bail};
use keel_core::{Matrix, Record, Split};
use keel_data::SplitConfig;
use keel_store::{Dataset, Store};

/// Row indices of each split.
#[derive(Debug)]
pub struct SplitRows {
    pub train: Vec<usize>,
    pub validation: Vec<usize>,
    pub test: Vec<usize>,
}

impl SplitRows {
    pub fn sizes(&self) -> keel_eval::SplitSizes {
        keel_eval::SplitSizes { train: self.train.len(), validation: self.validation.len(), test: self.test.len() }
    }
}

/// The rows of one split: embeddings, label indices, texts.
#[derive(Debug)]
pub struct Part {
    pub x: Matrix,
    pub y: Vec<usize>,
    pub texts: Vec<String>,
}

impl Part {
    pub fn new(x: &Matrix, y: &[usize], texts: &[&str], rows: &[usize]) -> Self {
        Self {
            x: x.select_rows(rows),
            y: rows.iter().map(|&i| y[i]).collect(),
            texts: rows.iter().map(|&i| texts[i].to_owned()).collect(),
        }
    }
}

/// A dataset's records with their label indices and split.
#[derive(Debug)]
pub struct Labelled {
    /// The label list, sorted: class `c` is `labels[c]`.
    pub labels: Vec<String>,
    /// Each record's class.
    pub y: Vec<usize>,
    pub rows: SplitRows,
}

/// Label list (sorted), label index per record, and the split of each record.
pub fn label_and_split(records: &[Record], split_cfg: &SplitConfig) -> anyhow::Result<Labelled> {
    let mut labels: Vec<String> = records.iter().filter_map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        bail!("need at least two distinct labels to train a classifier; found {labels:?}");
    }
    let y = records
        .iter()
        .map(|r| {
            let label = r.label.as_ref().context("an accepted row has no label")?;
            labels.binary_search(label).ok().context("a label missing from the label list")
        })
        .collect::<anyhow::Result<Vec<usize>>>()?;
    let splits = keel_data::assign_splits(records, split_cfg);
    let idx = |s: Split| -> Vec<usize> { (0..records.len()).filter(|&i| splits[i] == s).collect() };
    let rows = SplitRows { train: idx(Split::Train), validation: idx(Split::Validation), test: idx(Split::Test) };
    if rows.train.is_empty() || rows.validation.is_empty() || rows.test.is_empty() {
        bail!(
            "too few rows to split: {} train, {} validation, {} test; give at least a few dozen labelled rows",
            rows.train.len(),
            rows.validation.len(),
            rows.test.len()
        );
    }
    Ok(Labelled { labels, y, rows })
}

/// A dataset version's accepted records, read back from their artifact.
pub async fn load_records(store: &Store, dataset: &Dataset) -> anyhow::Result<Vec<Record>> {
    store
        .read_artifact(&dataset.fields.records_artifact)
        .await?
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()
        .context("the dataset's records artifact is not valid JSONL")
}
