//! The sparse TF-IDF linear SVM: learning, cross-validation, determinism, the artifact.

use keel_eval::fit_temperature;
use keel_train::{Head, InputKind, Majority, SparseConfig, SparseModel, TrainError};

use crate::{Rng, names};

/// Random filler from a shared word list, plus one per-class URL shortener code somewhere in
/// the text: the only thing that tells the classes apart.
fn shortener_texts(n: usize, k: usize, seed: u64) -> (Vec<String>, Vec<usize>) {
    let filler: Vec<String> = (0..400).map(|i| format!("w{i:03}x")).collect();
    let mut rng = Rng(seed);
    let (mut texts, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let c = i % k;
        let mut words: Vec<String> =
            (0..25).map(|_| filler[(rng.uniform() * filler.len() as f64) as usize].clone()).collect();
        let pos = (rng.uniform() * words.len() as f64) as usize;
        words.insert(pos, format!("https://t.co/Q{c}zR7"));
        texts.push(words.join(" "));
        y.push(c);
    }
    (texts, y)
}

fn accuracy(m: &SparseModel, texts: &[String], y: &[usize]) -> f64 {
    texts.iter().zip(y).filter(|(t, c)| m.predict(t) == **c).count() as f64 / y.len() as f64
}

#[test]
fn a_rare_give_away_token_is_learned() {
    let (train, ytr) = shortener_texts(240, 4, 1);
    let (test, yte) = shortener_texts(200, 4, 2);
    let (m, report) = SparseModel::fit(&train, &ytr, names(4), &SparseConfig::default()).unwrap();
    assert!(report.converged, "{report:?}");
    assert_eq!(report.epochs.len(), 4);
    // The filler alone is noise: the model must find the one token per text that matters.
    let acc = accuracy(&m, &test, &yte);
    assert!(acc > 0.97, "test accuracy {acc}");
    let p = m.predict_proba("w001x w002x see https://t.co/Q2zR7 w003x");
    assert_eq!(keel_train::Head::from(m.clone()).predict_proba_text("https://t.co/Q2zR7").unwrap().len(), 4);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert_eq!((0..4).fold(0, |b, c| if p[c] > p[b] { c } else { b }), 2, "{p:?}");
    // Bigrams and unigrams seen once are out of the vocabulary (min_df 2), so a text of
    // unknown terms scores the bias alone.
    assert_eq!(m.logits("never seen words"), m.logits(""));
}

#[test]
fn two_classes_train_one_problem_with_opposite_scores() {
    let (train, ytr) = shortener_texts(120, 2, 3);
    let (m, report) = SparseModel::fit(&train, &ytr, names(2), &SparseConfig::default()).unwrap();
    assert_eq!(report.epochs.len(), 1);
    let z = m.logits(&train[1]);
    assert_eq!(z[0], -z[1]);
    assert!(z[1] > 0.0 && m.predict(&train[1]) == 1);
}

#[test]
fn training_is_deterministic_whatever_the_thread_count() {
    let (train, ytr) = shortener_texts(150, 3, 4);
    let cfg = SparseConfig { threads: Some(1), ..SparseConfig::default() };
    let (a, ra) = SparseModel::fit_cv(&train, &ytr, names(3), &cfg, &[0.1, 1.0], 3).unwrap();
    let (b, rb) = SparseModel::fit_cv(&train, &ytr, names(3), &cfg, &[0.1, 1.0], 3).unwrap();
    let (c, rc) =
        SparseModel::fit_cv(&train, &ytr, names(3), &SparseConfig { threads: Some(3), ..cfg.clone() }, &[0.1, 1.0], 3)
            .unwrap();
    let bytes = Head::from(a).to_bytes();
    assert_eq!(bytes, Head::from(b).to_bytes());
    assert_eq!(bytes, Head::from(c).to_bytes());
    assert_eq!(ra, rb);
    assert_eq!(ra, rc);
    // The seed moves the folds and the visiting order, and with them the bytes.
    let (d, _) = SparseModel::fit_cv(&train, &ytr, names(3), &SparseConfig { seed: 5, ..cfg }, &[0.1, 1.0], 3).unwrap();
    assert_ne!(Head::from(d).to_bytes(), bytes);
}

#[test]
fn the_artifact_round_trips_and_takes_a_temperature() {
    let (train, ytr) = shortener_texts(150, 3, 5);
    let (val, yval) = shortener_texts(90, 3, 6);
    let (m, _) = SparseModel::fit(&train, &ytr, names(3), &SparseConfig::default()).unwrap();
    let head = Head::from(m.clone());
    assert_eq!(head.kind(), "sparse");
    assert_eq!(head.input_kind(), InputKind::Text);
    assert_eq!(head.labels(), names(3).as_slice());
    let bytes = head.to_bytes();
    let back = Head::from_bytes(&bytes).unwrap();
    assert_eq!(back, head);
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(back.logits_texts(&val).unwrap(), head.logits_texts(&val).unwrap());
    assert_eq!(head.predict_proba_text(&val[0]).unwrap(), m.predict_proba(&val[0]));
    assert!(matches!(head.predict_proba_embedding(&[0.0; 4]), Err(TrainError::WrongInput(_))));

    // Decision values are on the hinge scale (about ±1); a temperature fitted on validation
    // sharpens them and survives serialisation.
    let t = fit_temperature(&head.logits_texts(&val).unwrap(), &yval);
    assert!(t.temperature < 1.0 && t.after.log_loss < t.before.log_loss, "{t:?}");
    let calibrated = head.clone().with_temperature(t.temperature as f32);
    assert_eq!(calibrated.kind(), "sparse");
    let again = Head::from_bytes(&calibrated.to_bytes()).unwrap();
    assert_eq!(again, calibrated);
    assert_eq!(again.predict_proba_texts(&val).unwrap(), calibrated.predict_proba_texts(&val).unwrap());

    // A damaged artifact is refused.
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let weights = json["model"]["weights"].as_str().unwrap().to_owned();
    json["model"]["weights"] = weights[..weights.len() - 8].into();
    assert!(matches!(Head::from_bytes(&serde_json::to_vec(&json).unwrap()), Err(TrainError::InvalidArtifact(_))));
}

#[test]
fn cross_validation_uses_only_the_rows_given() {
    let (texts, y) = shortener_texts(300, 3, 7);
    // Rows 200.. hold a term that never occurs in rows ..200.
    let mut texts = texts;
    for t in &mut texts[200..] {
        t.push_str(" onlylater onlylater");
    }
    let (head, yh) = (&texts[..200], &y[..200]);
    let cfg = SparseConfig::default();
    let grid = [0.05, 0.5, 5.0];
    let (m, r) = SparseModel::fit_cv(head, yh, names(3), &cfg, &grid, 4).unwrap();
    assert_eq!(r.folds, 4);
    assert_eq!(r.fold_rows.iter().sum::<usize>(), 200);
    assert!(r.fold_rows.iter().all(|&n| n == 50), "{:?}", r.fold_rows);
    // The final model is the plain fit on the same rows at the chosen value...
    assert!(grid.contains(&r.chosen_c));
    let (plain, fit) = SparseModel::fit(head, yh, names(3), &SparseConfig { c: r.chosen_c, ..cfg.clone() }).unwrap();
    assert_eq!(Head::from(plain).to_bytes(), Head::from(m.clone()).to_bytes());
    assert_eq!(fit, r.fit);
    // ...whose vocabulary has nothing from the other rows.
    assert_eq!(m.logits("onlylater onlylater"), m.logits(""));
    // Per point: one accuracy per fold, their mean and standard error.
    for p in &r.grid {
        assert_eq!(p.fold_accuracy.len(), 4);
        let mean = p.fold_accuracy.iter().sum::<f64>() / 4.0;
        assert!((p.mean - mean).abs() < 1e-12);
        let var = p.fold_accuracy.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 3.0;
        assert!((p.se - (var / 4.0).sqrt()).abs() < 1e-12);
    }
    let best = r.grid.iter().map(|p| p.mean).fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(r.grid.iter().find(|p| p.c == r.chosen_c).unwrap().mean, best);
    assert!(best > 0.9, "{r:?}");
    assert!(matches!(SparseModel::fit_cv(head, yh, names(3), &cfg, &grid, 1), Err(TrainError::InvalidConfig(_))));
    assert!(matches!(SparseModel::fit_cv(head, yh, names(3), &cfg, &[-1.0], 3), Err(TrainError::InvalidConfig(_))));
}

#[test]
fn bad_inputs_are_errors() {
    let texts = ["a bb cc", "dd ee ff", "bb cc dd"];
    let cfg = SparseConfig::default();
    let fit = |t: &[&str], y: &[usize], k: usize, cfg: &SparseConfig| SparseModel::fit(t, y, names(k), cfg);
    assert!(matches!(fit(&[], &[], 2, &cfg), Err(TrainError::Empty)));
    assert!(matches!(fit(&texts, &[0, 1], 2, &cfg), Err(TrainError::LengthMismatch { .. })));
    assert!(matches!(fit(&texts, &[0, 0, 0], 2, &cfg), Err(TrainError::TooFewClasses { present: 1 })));
    assert!(matches!(fit(&texts, &[0, 3, 1], 2, &cfg), Err(TrainError::LabelOutOfRange { row: 1, .. })));
    for bad in [
        SparseConfig { c: 0.0, ..cfg.clone() },
        SparseConfig { tol: 0.0, ..cfg.clone() },
        SparseConfig { min_df: 0, ..cfg.clone() },
        SparseConfig { word_ngrams: (2, 1), ..cfg.clone() },
        SparseConfig { word_ngrams: (0, 0), char_ngrams: (0, 0), ..cfg.clone() },
    ] {
        assert!(matches!(fit(&texts, &[0, 1, 1], 2, &bad), Err(TrainError::InvalidConfig(_))), "{bad:?}");
    }
}

/// `(texts, labels)` of an Orange `.tab` file in the shared data folder.
fn read_tab(name: &str) -> (Vec<String>, Vec<String>) {
    let raw = keel_test_support::shared_text(&format!("data/orange-text/{name}"));
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    for line in raw.split('\n').skip(3) {
        // Reuters R8: "Category<TAB>Text".
        if let Some((label, text)) = line.split_once('\t') {
            labels.push(label.to_owned());
            texts.push(text.to_owned());
        }
    }
    (texts, labels)
}

#[test]
fn beats_the_majority_class_on_reuters() {
    let (texts, labels) = read_tab("reuters-r8-train.tab");
    let mut classes = labels.clone();
    classes.sort();
    classes.dedup();
    let y: Vec<usize> = labels.iter().map(|l| classes.binary_search(l).unwrap()).collect();
    let (tr, te) = (0..1500, 1500..2500);
    let (m, r) =
        SparseModel::fit_cv(&texts[tr.clone()], &y[tr.clone()], classes.clone(), &SparseConfig::default(), &[], 3)
            .unwrap();
    assert!(r.fit.converged, "{r:?}");
    let acc = accuracy(&m, &texts[te.clone()], &y[te.clone()]);
    let majority = Majority::fit(&y[tr], classes).unwrap();
    let top = keel_train::Head::from(majority).predict_proba_text("").unwrap();
    let top = (0..top.len()).fold(0, |b, c| if top[c] > top[b] { c } else { b });
    let base = y[te.clone()].iter().filter(|&&c| c == top).count() as f64 / te.len() as f64;
    assert!(acc > base + 0.3 && acc > 0.9, "accuracy {acc}, majority {base}, cv {:?}", r.grid);
}

#[test]
fn the_combined_model_reads_text_and_embedding_and_round_trips() {
    // The label is in the text's shortener for half the rows and only in the embedding (its
    // first component) for the rest: neither part alone gets them all.
    let (mut texts, y) = shortener_texts(240, 2, 9);
    let mut x = keel_core::Matrix::zeros(texts.len(), 3);
    for (i, t) in texts.iter_mut().enumerate() {
        x.row_mut(i)[0] = if y[i] == 1 { 1.0 } else { -1.0 };
        x.row_mut(i)[1] = 0.3;
        if i % 4 < 2 {
            *t = format!("an ordinary note number {i}");
        }
    }
    let cfg = SparseConfig::default();
    let (m, cv) = SparseModel::fit_cv_combined(&texts, &x, &y, names(2), &cfg, (&[0.1, 1.0], 3)).unwrap();
    assert_eq!(m.embedding_dim(), Some(3));
    let best = cv.grid.iter().map(|p| p.mean).fold(0.0, f64::max);
    assert!(best > 0.95, "text and embedding together separate every row: {cv:?}");
    let (text_only, tcv) = SparseModel::fit_cv(&texts, &y, names(2), &cfg, &[0.1, 1.0], 3).unwrap();
    assert!(tcv.grid.iter().all(|p| p.mean < best), "the embedding adds what the text lacks");
    assert_eq!(text_only.embedding_dim(), None);

    let head = Head::from(m);
    assert_eq!(head.kind(), "combined");
    assert_eq!(head.input_kind(), InputKind::TextAndEmbedding { dim: 3 });
    let bytes = head.to_bytes();
    let back = Head::from_bytes(&bytes).unwrap();
    assert_eq!(back.to_bytes(), bytes);
    assert_eq!(back.predict_proba_both(&texts, &x).unwrap(), head.predict_proba_both(&texts, &x).unwrap());
    // It needs both: text alone or a wrong-length embedding is refused, never guessed.
    assert!(matches!(head.predict_proba_text(&texts[0]), Err(TrainError::WrongInput(_))));
    let short = keel_core::Matrix::zeros(texts.len(), 2);
    assert!(matches!(head.predict_proba_both(&texts, &short), Err(TrainError::WrongInput(_))));
    // And the text-only model's artifact has no embedding part (its bytes are as before).
    assert!(!String::from_utf8(Head::from(text_only).to_bytes()).unwrap().contains("\"dense\""));
}
