//! Keel's logistic regression on embeddings in JSONL (`{"label", "embedding", ...}` per line):
//! fits on the first file with the default `LrConfig` and prints test accuracy and fit time as
//! one JSON line. Used by `scripts/bench-train` beside scikit-learn on the same vectors.
//!
//!     cargo run --release -p keel-train --example lr_bench -- train.jsonl test.jsonl
//!
//! With a third argument, a tolerance, it instead chooses the L2 strength by 5-fold
//! cross-validation (`fit_cv_with`, the fits inside it converged to that tolerance) and prints
//! the grid, the choice, the test accuracy and the time:
//!
//!     lr_bench train.jsonl test.jsonl 1e-4

use std::io::BufRead;
use std::time::Instant;

use keel_core::Matrix;
use keel_train::{LrConfig, fit, fit_cv_with};

fn load(path: &str) -> (Vec<String>, Vec<Vec<f32>>) {
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {path}: {e}")));
    let (mut labels, mut rows) = (Vec::new(), Vec::new());
    for line in f.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.expect("readable line")).expect("a JSON line");
        labels.push(v["label"].as_str().expect("a string label").to_owned());
        rows.push(
            v["embedding"]
                .as_array()
                .expect("an embedding array")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect(),
        );
    }
    (labels, rows)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 3 || args.len() == 4, "usage: lr_bench TRAIN.jsonl TEST.jsonl [CV_TOL]");
    let (train_labels, train_rows) = load(&args[1]);
    let (test_labels, test_rows) = load(&args[2]);
    let mut names = train_labels.clone();
    names.sort();
    names.dedup();
    let index = |l: &String| names.binary_search(l).ok();
    let d = train_rows[0].len();
    let x = Matrix::from_rows(&train_rows, d).expect("equal-length embeddings");
    let y: Vec<usize> = train_labels.iter().map(|l| index(l).expect("known label")).collect();
    let accuracy = |model: &keel_train::LogisticRegression| {
        let hits =
            test_rows.iter().zip(&test_labels).filter(|(r, l)| index(l).is_some_and(|c| model.predict(r) == c)).count();
        hits as f64 / test_labels.len() as f64
    };
    if let Some(tol) = args.get(3) {
        let tol: f64 = tol.parse().expect("CV_TOL is a number");
        let start = Instant::now();
        let (model, cv) = fit_cv_with(&x, &y, names.clone(), &[], 5, 0, tol).expect("training succeeds");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "impl": "keel fit_cv", "cv_tol": tol, "seconds": secs, "chosen_l2": cv.chosen_l2,
                "grid": cv.grid, "test_accuracy": accuracy(&model),
            })
        );
        return;
    }
    let cfg = LrConfig::default();
    let start = Instant::now();
    let (model, report) = fit(&x, &y, names.clone(), &cfg).expect("training succeeds");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "impl": "keel", "train_rows": y.len(), "test_rows": test_labels.len(), "l2": cfg.l2,
            "test_accuracy": accuracy(&model), "fit_seconds": secs,
            "iterations": report.iterations, "evaluations": report.evaluations,
            "ms_per_evaluation": secs * 1e3 / report.evaluations as f64, "converged": report.converged,
            "final_loss": report.final_loss, "grad_max": report.grad_max,
        })
    );
}
