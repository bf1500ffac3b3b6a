//! Integration tests for keel-eval, against hand computation and scikit-learn 1.9.1.

use keel_core::{Matrix, SplitMix64};
use keel_eval::{Evaluation, accuracy, evaluate, macro_f1};

pub(crate) fn labels(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Eight examples, three classes. Argmax predictions: [0, 0, 1, 1, 2, 2, 2, 0].
pub(crate) fn case_a() -> (Vec<usize>, Matrix) {
    let y_true = vec![0, 0, 0, 1, 1, 2, 2, 2];
    let proba = Matrix::from_vec(
        8,
        3,
        vec![
            0.7, 0.2, 0.1, 0.5, 0.4, 0.1, 0.2, 0.5, 0.3, 0.1, 0.8, 0.1, 0.3, 0.3, 0.4, 0.1, 0.1, 0.8, 0.2, 0.2, 0.6,
            0.6, 0.3, 0.1,
        ],
    );
    (y_true, proba)
}

#[test]
fn hand_computed_three_class_case() {
    let (y_true, proba) = case_a();
    let e = evaluate(&y_true, &proba, &labels(&["neg", "neu", "pos"]));
    // Confusion (rows true, cols predicted):
    //   neg: 2 1 0    neu: 0 1 1    pos: 1 0 2
    assert_eq!(e.confusion, vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 2]]);
    assert_eq!(e.n, 8);
    // 5 of 8 on the diagonal.
    assert!(close(e.accuracy, 0.625));
    // neg: tp 2, predicted 3, support 3 → P = R = F1 = 2/3.
    // neu: tp 1, predicted 2, support 2 → 1/2.   pos: tp 2, predicted 3, support 3 → 2/3.
    let expect = [(2.0 / 3.0, 3), (0.5, 2), (2.0 / 3.0, 3)];
    for (m, (v, support)) in e.per_class.iter().zip(expect) {
        assert!(close(m.precision, v) && close(m.recall, v) && close(m.f1, v), "{m:?}");
        assert_eq!(m.support, support);
    }
    assert_eq!(e.per_class.iter().map(|m| m.label.as_str()).collect::<Vec<_>>(), ["neg", "neu", "pos"]);
    // Macro-F1 = (2/3 + 1/2 + 2/3) / 3 = 0.6111…; scikit-learn: 0.611111111111111.
    assert!(close(e.macro_f1, 0.611111111111111));
    // Log loss = −mean ln(.7 .5 .2 .8 .3 .8 .6 .1) = 7.12288/8; scikit-learn (float32): 0.8903663158416748.
    let hand = -[0.7f32, 0.5, 0.2, 0.8, 0.3, 0.8, 0.6, 0.1].iter().map(|&p| f64::from(p).ln()).sum::<f64>() / 8.0;
    assert!(close(e.log_loss, hand));
    assert!((e.log_loss - 0.8903663158416748).abs() < 1e-6);
}

#[test]
fn building_blocks_agree_with_evaluate() {
    let (y_true, proba) = case_a();
    let y_pred = [0, 0, 1, 1, 2, 2, 2, 0];
    assert!(close(accuracy(&y_true, &y_pred), 0.625));
    assert!(close(macro_f1(&y_true, &y_pred, 3), 0.611111111111111));
    let e = evaluate(&y_true, &proba, &labels(&["a", "b", "c"]));
    assert!(close(macro_f1(&y_true, &y_pred, 3), e.macro_f1));
}

#[test]
fn classes_without_examples_follow_zero_division_zero() {
    // Labels 0..4; class 2 is predicted once but never true; class 3 is neither.
    let y_true = [0, 1, 1, 0, 1];
    let y_pred = [0, 1, 2, 1, 1];
    // Per class (scikit-learn, labels=[0,1,2,3], zero_division=0):
    //   0: P 1/1, R 1/2, F1 2/3    1: P 2/3, R 2/3, F1 2/3    2: P 0/1, R 0/0 → 0, F1 0    3: all 0
    // Macro over the four labels = (2/3 + 2/3 + 0 + 0)/4 = 1/3. scikit-learn: 0.3333333333333333.
    assert!(close(macro_f1(&y_true, &y_pred, 4), 1.0 / 3.0));
    // Over only the three labels that occur it would be 4/9 (scikit-learn's default without
    // `labels=`): the label list, not the data, decides what is averaged.
    assert!(close(macro_f1(&y_true, &y_pred, 3), 4.0 / 9.0));

    let mut proba = Matrix::zeros(5, 4);
    for (i, &p) in y_pred.iter().enumerate() {
        proba.row_mut(i)[p] = 1.0;
    }
    let e = evaluate(&y_true, &proba, &labels(&["a", "b", "c", "d"]));
    let f1: Vec<f64> = e.per_class.iter().map(|m| m.f1).collect();
    assert!(close(f1[0], 2.0 / 3.0) && close(f1[1], 2.0 / 3.0) && f1[2] == 0.0 && f1[3] == 0.0, "{f1:?}");
    assert_eq!((e.per_class[2].precision, e.per_class[2].recall, e.per_class[2].support), (0.0, 0.0, 0));
    assert_eq!((e.per_class[3].precision, e.per_class[3].recall, e.per_class[3].support), (0.0, 0.0, 0));
}

#[test]
fn log_loss_clips_confident_mistakes_like_scikit_learn() {
    // Probability 0 on the true class is clipped to ε = f32::EPSILON, and 1 to 1 − ε:
    // (−ln(1 − ε) − ln ε) / 2. scikit-learn on float32 input: 7.971192359924316.
    let proba = Matrix::from_vec(2, 2, vec![1.0, 0.0, 1.0, 0.0]);
    let e = evaluate(&[0, 1], &proba, &labels(&["x", "y"]));
    let eps = f64::from(f32::EPSILON);
    assert!(close(e.log_loss, (-(1.0 - eps).ln() - eps.ln()) / 2.0));
    assert!((e.log_loss - 7.971192359924316).abs() < 1e-5);
    assert!(close(e.accuracy, 0.5));
}

#[test]
fn perfect_predictions() {
    let y = [0, 1, 2, 1];
    let mut proba = Matrix::zeros(4, 3);
    for (i, &c) in y.iter().enumerate() {
        proba.row_mut(i)[c] = 1.0;
    }
    let e = evaluate(&y, &proba, &labels(&["a", "b", "c"]));
    assert_eq!((e.accuracy, e.macro_f1), (1.0, 1.0));
    assert!(e.log_loss < 1e-6);
    assert_eq!(e.confusion, vec![vec![1, 0, 0], vec![0, 2, 0], vec![0, 0, 1]]);
}

#[test]
fn ties_predict_the_first_class() {
    let proba = Matrix::from_vec(2, 2, vec![0.5, 0.5, 0.5, 0.5]);
    let e = evaluate(&[0, 1], &proba, &labels(&["a", "b"]));
    assert_eq!(e.confusion, vec![vec![1, 0], vec![1, 0]]);
}

#[test]
fn no_examples_gives_zeros() {
    let e = evaluate(&[], &Matrix::zeros(0, 2), &labels(&["a", "b"]));
    assert_eq!((e.n, e.accuracy, e.macro_f1, e.log_loss), (0, 0.0, 0.0, 0.0));
    assert_eq!(accuracy(&[], &[]), 0.0);
    assert_eq!(macro_f1(&[], &[], 2), 0.0);
}

#[test]
#[should_panic(expected = "one probability column per label")]
fn mismatched_shapes_are_caller_bugs() {
    evaluate(&[0], &Matrix::zeros(1, 3), &labels(&["a", "b"]));
}

#[test]
fn evaluation_round_trips_through_json() {
    let (y_true, proba) = case_a();
    let e = evaluate(&y_true, &proba, &labels(&["neg", "neu", "pos"]));
    let json = serde_json::to_string(&e).unwrap();
    let back: Evaluation = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["per_class"][1]["label"], "neu");
    assert_eq!(v["confusion"][2][0], 1);
}

#[test]
fn summary_shows_headline_metrics_and_every_class() {
    let (y_true, proba) = case_a();
    let e = evaluate(&y_true, &proba, &labels(&["negative", "neutral", "positive"]));
    let s = e.summary();
    assert!(s.contains("8 examples"), "{s}");
    assert!(s.contains("accuracy  0.6250"), "{s}");
    assert!(s.contains("macro-F1  0.6111"), "{s}");
    assert!(s.contains("log loss  0.8904"), "{s}");
    let neutral = s.lines().find(|l| l.starts_with("neutral")).expect("a row per class");
    let cells: Vec<&str> = neutral.split_whitespace().collect();
    assert_eq!(cells, ["neutral", "0.5000", "0.5000", "0.5000", "2"]);
    assert_eq!(s.lines().filter(|l| l.starts_with("neg") || l.starts_with("pos")).count(), 2);
}

mod gate;
mod html;
mod intervals;
mod probability;

/// Test data from keel-core's seeded generator, with the tests' own bounded-int (by a float)
/// and normal draws.
pub(crate) struct Rng(SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    pub fn uniform(&mut self) -> f64 {
        self.0.unit()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }

    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// `n` rows over `k` classes whose argmax is right with probability `p_correct`, the top
/// probability drawn in 0.4..1.0: a classifier with known true accuracy `p_correct`.
pub(crate) fn synthetic(n: usize, k: usize, p_correct: f64, rng: &mut Rng) -> (Vec<usize>, Matrix) {
    let mut y = Vec::with_capacity(n);
    let mut proba = Matrix::zeros(n, k);
    for i in 0..n {
        let t = rng.below(k);
        let pred = if rng.uniform() < p_correct { t } else { (t + 1 + rng.below(k - 1)) % k };
        let top = 0.4 + 0.6 * rng.uniform();
        let rest = (1.0 - top) / (k - 1) as f64;
        for (c, v) in proba.row_mut(i).iter_mut().enumerate() {
            *v = if c == pred { top as f32 } else { rest as f32 };
        }
        y.push(t);
    }
    (y, proba)
}
