//! Keel's sparse TF-IDF linear SVM on an Orange `.tab` text data set: chooses `C` by
//! cross-validation on the training file, refits, and prints one JSON line with the grid, the
//! test accuracy, the fit time (vectorise + cross-validation + final fit), the prediction time
//! per text and the artifact size. `scripts/bench-sparse-peer.py` runs scikit-learn's
//! peers on the same files.
//!
//!     cargo run --release -p keel-train --example sparse_bench -- TRAIN.tab TEST.tab \
//!         [--folds 5] [--grid 0.1,0.3,0.8,2] [--c 0.5] [--char 2,5] [--tol 0.1] [--cv-tol 0.5] [--threads N] [--save HEAD.json]
//!
//! `--c` fits at that one value instead of cross-validating; `--char lo,hi` adds character
//! n-grams inside words.

use std::time::Instant;

use keel_train::{Head, SparseConfig, SparseModel};

/// Orange `.tab`: a row of column names, a row of types, a row of flags, then tab-separated
/// rows. The class is the column flagged `class`, the text the first `string`/`text` column.
fn read_tab(path: &str) -> (Vec<String>, Vec<String>) {
    let raw = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let mut lines = raw.split('\n');
    let _names = lines.next().expect("a header row");
    let types: Vec<&str> = lines.next().expect("a type row").split('\t').collect();
    let flags: Vec<&str> = lines.next().expect("a flags row").split('\t').collect();
    let class = flags.iter().position(|f| f.trim() == "class").expect("a column flagged class");
    let text = types.iter().position(|t| matches!(t.trim(), "string" | "text" | "s")).expect("a string column");
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for line in lines {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() <= class.max(text) {
            continue;
        }
        texts.push(cols[text].to_owned());
        labels.push(cols[class].to_owned());
    }
    (texts, labels)
}

/// CPU time this process has used, user + system, in seconds (Linux `/proc/self/stat`, 100 Hz
/// ticks; `None` elsewhere). On a shared machine it says more than wall time does.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(args.len() >= 2, "usage: sparse_bench TRAIN.tab TEST.tab [--folds N] [--grid C,..] [--c C] [--char LO,HI]");
    let (mut folds, mut grid, mut fixed_c, mut save) = (5usize, Vec::new(), None, None);
    let mut cfg = SparseConfig::default();
    let pair = |s: &str| {
        let v: Vec<usize> = s.split(',').map(|x| x.parse().expect("a number")).collect();
        (v[0], v[1])
    };
    let mut i = 2;
    while i < args.len() {
        let v = args.get(i + 1).expect("a value after the flag");
        match args[i].as_str() {
            "--folds" => folds = v.parse().expect("folds"),
            "--grid" => grid = v.split(',').map(|x| x.parse().expect("a number")).collect(),
            "--c" => fixed_c = Some(v.parse().expect("a number")),
            "--char" => cfg.char_ngrams = pair(v),
            "--tol" => cfg.tol = v.parse().expect("a number"),
            "--cv-tol" => cfg.cv_tol = v.parse().expect("a number"),
            "--threads" => cfg.threads = Some(v.parse().expect("a number")),
            "--save" => save = Some(v.clone()),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    let (train, train_labels) = read_tab(&args[0]);
    let (test, test_labels) = read_tab(&args[1]);
    let mut names = train_labels.clone();
    names.sort();
    names.dedup();
    let index = |l: &String| names.binary_search(l).ok();
    let y: Vec<usize> = train_labels.iter().map(|l| index(l).expect("known label")).collect();

    let (start, cpu0) = (Instant::now(), cpu_seconds());
    let (model, cv, fit) = match fixed_c {
        Some(c) => {
            let (m, r) = SparseModel::fit(&train, &y, names.clone(), &SparseConfig { c, ..cfg.clone() }).expect("fit");
            (m, None, r)
        }
        None => {
            let (m, r) = SparseModel::fit_cv(&train, &y, names.clone(), &cfg, &grid, folds).expect("fit_cv");
            let fit = r.fit.clone();
            (m, Some(r), fit)
        }
    };
    let fit_seconds = start.elapsed().as_secs_f64();
    let fit_cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);

    let start = Instant::now();
    let predicted: Vec<usize> = test.iter().map(|t| model.predict(t)).collect();
    let predict_seconds = start.elapsed().as_secs_f64();
    let hits = predicted.iter().zip(&test_labels).filter(|(p, l)| index(l) == Some(**p)).count();

    let head = Head::from(model);
    let start = Instant::now();
    let bytes = head.to_bytes();
    let save_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let back = Head::from_bytes(&bytes).expect("the artifact loads");
    let load_seconds = start.elapsed().as_secs_f64();
    assert!(back == head, "the artifact round-trips");
    if let Some(path) = save {
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    }

    let data = args[0].rsplit('/').next().unwrap_or(&args[0]);
    println!(
        "{}",
        serde_json::json!({
            "impl": "keel sparse", "data": data, "train_rows": y.len(), "test_rows": test.len(),
            "char_ngrams": cfg.char_ngrams, "tol": cfg.tol, "cv_tol": cfg.cv_tol, "folds": cv.as_ref().map(|c| c.folds),
            "cv_grid": cv.as_ref().map(|c| &c.grid), "chosen_c": fit.c, "features": fit.features,
            "nonzeros": fit.nonzeros, "epochs": fit.epochs, "converged": fit.converged,
            "test_accuracy": (hits as f64 / test.len() as f64 * 1e4).round() / 1e4,
            "fit_seconds": (fit_seconds * 1e3).round() / 1e3, "fit_cpu_seconds": fit_cpu,
            "predict_seconds": (predict_seconds * 1e3).round() / 1e3,
            "predict_us_per_text": (predict_seconds * 1e6 / test.len() as f64 * 10.0).round() / 10.0,
            "artifact_bytes": bytes.len(), "save_seconds": (save_seconds * 1e3).round() / 1e3,
            "load_seconds": (load_seconds * 1e3).round() / 1e3,
        })
    );
}
