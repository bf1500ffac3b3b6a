//! Cross-validated logistic regression, the baselines, the `Head` wrapper, calibration.

use keel_core::Matrix;
use keel_eval::fit_temperature;
use keel_train::{
    Head, Input, InputKind, LrConfig, Majority, NgramConfig, NgramModel, TrainError, fit, fit_cv, stratified_folds,
};

use crate::{Rng, gaussian_blobs, names};

#[test]
fn folds_are_stratified_and_deterministic() {
    let y: Vec<usize> = (0..103).map(|i| if i % 10 == 0 { 2 } else { i % 2 }).collect();
    let f = stratified_folds(&y, 5, 7);
    assert_eq!(f, stratified_folds(&y, 5, 7));
    assert_ne!(f, stratified_folds(&y, 5, 8));
    for c in 0..3 {
        let counts: Vec<usize> = (0..5).map(|k| (0..y.len()).filter(|&i| y[i] == c && f[i] == k).count()).collect();
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 1, "class {c} spread over folds as {counts:?}");
    }
}

#[test]
fn cross_validation_picks_a_sensible_penalty_and_is_deterministic() {
    // The chosen strength is the grid point with the lowest pooled held-out log loss.
    let (x, y) = gaussian_blobs(40, 3, 30, 4.0, 3);
    let grid = [1e-6, 1e-3, 1e-2, 1e-1, 10.0];
    let (m1, r1) = fit_cv(&x, &y, names(3), &grid, 5, 1).unwrap();
    let (m2, r2) = fit_cv(&x, &y, names(3), &grid, 5, 1).unwrap();
    assert_eq!(m1.to_json_bytes(), m2.to_json_bytes());
    assert_eq!(r1, r2);
    assert_eq!(r1.grid.len(), 5);
    let best = r1.grid.iter().map(|p| p.log_loss).fold(f64::INFINITY, f64::min);
    assert_eq!(r1.grid.iter().find(|p| p.l2 == r1.chosen_l2).unwrap().log_loss, best);
    // The final model is the plain fit at the chosen strength on all rows.
    let (plain, _) = fit(&x, &y, names(3), &LrConfig { l2: r1.chosen_l2, ..LrConfig::default() }).unwrap();
    assert_eq!(plain.to_json_bytes(), m1.to_json_bytes());
    assert!(matches!(fit_cv(&x, &y, names(3), &grid, 1, 1), Err(TrainError::InvalidConfig(_))));
}

#[test]
fn majority_baseline_predicts_priors() {
    let y = [0, 1, 1, 1, 2, 1];
    let m = Majority::fit(&y, names(4)).unwrap();
    let p = m.predict_proba();
    assert!((p[1] - 4.0 / 6.0).abs() < 1e-6 && p[3] == 0.0);
    let head = Head::from(m);
    assert_eq!(head.input_kind(), InputKind::Any);
    let q = head.predict_proba(Input::Text("anything")).unwrap();
    assert_eq!(keel_eval_argmax(&q), 1);
    assert!((q.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert_eq!(Head::from_bytes(&head.to_bytes()).unwrap(), head);
}

fn keel_eval_argmax(p: &[f32]) -> usize {
    (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b })
}

/// A toy ticket-routing task: the label is decided by which topic words appear among filler.
fn toy_texts(n: usize, seed: u64) -> (Vec<String>, Vec<usize>) {
    let topics = [
        ["refund", "invoice", "charged", "payment", "billing"],
        ["crash", "error", "bug", "broken", "exception"],
        ["feature", "request", "would", "love", "suggest"],
    ];
    let filler = ["the", "my", "app", "today", "please", "help", "thanks", "account", "again", "since", "update"];
    let mut rng = Rng(seed);
    let mut texts = Vec::new();
    let mut y = Vec::new();
    for i in 0..n {
        let c = i % 3;
        let mut words: Vec<&str> = (0..8).map(|_| filler[(rng.uniform() * filler.len() as f64) as usize]).collect();
        for _ in 0..2 {
            let w = topics[c][(rng.uniform() * 5.0) as usize];
            let pos = (rng.uniform() * words.len() as f64) as usize;
            words.insert(pos, w);
        }
        texts.push(words.join(" "));
        y.push(c);
    }
    (texts, y)
}

#[test]
fn ngram_baseline_learns_a_toy_text_task() {
    let (train, ytr) = toy_texts(300, 1);
    let (test, yte) = toy_texts(150, 2);
    let cfg = NgramConfig { buckets_log2: 16, ..NgramConfig::default() };
    let (m, report) = NgramModel::fit(&train, &ytr, names(3), &cfg).unwrap();
    assert!(report.train_log_loss.last().unwrap() < &report.train_log_loss[0], "{report:?}");
    let hits = test.iter().zip(&yte).filter(|(t, c)| keel_eval_argmax(&m.predict_proba(t)) == **c).count();
    assert!(hits as f64 / test.len() as f64 > 0.95, "test accuracy {}", hits as f64 / test.len() as f64);
    // Character n-grams carry a misspelt, never-seen form of a topic word.
    let p = m.predict_proba("the app keeps crashin today");
    assert_eq!(keel_eval_argmax(&p), 1, "{p:?}");
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    // Determinism and a compact artifact that predicts the same.
    let (m2, _) = NgramModel::fit(&train, &ytr, names(3), &cfg).unwrap();
    let head = Head::from(m);
    let bytes = head.to_bytes();
    assert_eq!(bytes, Head::from(m2).to_bytes());
    assert!(bytes.len() < 4 * (1 << 16) * 3, "artifact is {} bytes", bytes.len());
    let back = Head::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(
        back.predict_proba_text("refund my invoice").unwrap(),
        head.predict_proba_text("refund my invoice").unwrap()
    );
    assert!(matches!(head.predict_proba_embedding(&[0.0; 4]), Err(TrainError::WrongInput(_))));
    // A different seed changes the SGD order and so the bytes.
    let (m3, _) = NgramModel::fit(&train, &ytr, names(3), &NgramConfig { seed: 9, ..cfg }).unwrap();
    assert_ne!(Head::from(m3).to_bytes(), bytes);
}

#[test]
fn logistic_head_round_trips_and_checks_its_input() {
    let (x, y) = gaussian_blobs(30, 3, 6, 1.0, 4);
    let (m, _) = fit(&x, &y, names(3), &LrConfig::default()).unwrap();
    let head = Head::from(m.clone());
    assert_eq!(head.kind(), "logistic");
    assert_eq!(head.input_kind(), InputKind::Embedding { dim: 6 });
    let (a, b) = (head.predict_proba_embedding(x.row(0)).unwrap(), m.predict_proba(x.row(0)));
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5), "{a:?} vs {b:?}");
    assert!(matches!(head.predict_proba_text("hi"), Err(TrainError::WrongInput(_))));
    assert!(matches!(head.predict_proba_embedding(&[0.0; 5]), Err(TrainError::WrongInput(_))));
    let bytes = head.to_bytes();
    assert_eq!(Head::from_bytes(&bytes).unwrap(), head);
    assert!(Head::from_bytes(b"{\"kind\":\"logistic\",\"model\":{}}").is_err());
    assert!(Head::from_bytes(b"{\"kind\":\"tree\",\"model\":{}}").is_err());
}

#[test]
fn temperature_scaling_reduces_nll_of_an_overconfident_head() {
    // A head with almost no penalty on overlapping blobs with few rows is over-confident on
    // new data; a temperature fitted on validation must lower the validation NLL and make the
    // test NLL lower as well.
    let (xt, yt) = gaussian_blobs(25, 4, 40, 5.0, 10);
    let (xv, yv) = gaussian_blobs(200, 4, 40, 5.0, 10);
    let (xs, ys) = gaussian_blobs(200, 4, 40, 5.0, 10);
    // Same centres (same seed) but the first call drew fewer rows: take fresh rows from the
    // larger draws' tails for validation and test.
    let val: Vec<usize> = (100..800).step_by(2).collect();
    let test: Vec<usize> = (101..800).step_by(2).collect();
    let (xv, yv) = (xv.select_rows(&val), val.iter().map(|&i| yv[i]).collect::<Vec<_>>());
    let (xs, ys) = (xs.select_rows(&test), test.iter().map(|&i| ys[i]).collect::<Vec<_>>());
    let (m, _) = fit(&xt, &yt, names(4), &LrConfig { l2: 1e-7, ..LrConfig::default() }).unwrap();
    let head = Head::from(m);
    let fit_t = fit_temperature(&head.logits_batch(&xv).unwrap(), &yv);
    assert!(fit_t.temperature > 1.2, "{fit_t:?}");
    assert!(fit_t.after.log_loss < fit_t.before.log_loss, "{fit_t:?}");
    let calibrated = head.clone().with_temperature(fit_t.temperature as f32);
    assert_eq!(calibrated.temperature(), fit_t.temperature as f32);
    let nll = |h: &Head| {
        let p = h.predict_proba_batch(&xs).unwrap();
        ys.iter().enumerate().map(|(i, &c)| -f64::from(p.row(i)[c]).max(1e-12).ln()).sum::<f64>() / ys.len() as f64
    };
    assert!(nll(&calibrated) < nll(&head), "test NLL {} vs {}", nll(&calibrated), nll(&head));
    // Same predictions, and the calibrated head survives serialisation.
    let a: Matrix = head.predict_proba_batch(&xs).unwrap();
    let b: Matrix = calibrated.predict_proba_batch(&xs).unwrap();
    for i in 0..xs.rows() {
        assert_eq!(keel_eval_argmax(a.row(i)), keel_eval_argmax(b.row(i)));
    }
    assert_eq!(Head::from_bytes(&calibrated.to_bytes()).unwrap(), calibrated);
    // Re-calibrating replaces the temperature instead of stacking it.
    assert_eq!(calibrated.with_temperature(2.0).temperature(), 2.0);
}
