//! Integration tests for keel-train: the fitted model, its objective, its artifact.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

use keel_core::Matrix;
use keel_train::{LogisticRegression, LrConfig, Objective, StopReason, TrainError, fit};

/// A small deterministic generator (xorshift64*) so the tests need no extra crates.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal by Box-Muller.
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub(crate) fn names(k: usize) -> Vec<String> {
    (0..k).map(|c| format!("class-{c}")).collect()
}

/// `n` points per class around `k` well-separated centres in `d` dimensions.
pub(crate) fn gaussian_blobs(n: usize, k: usize, d: usize, spread: f64, seed: u64) -> (Matrix, Vec<usize>) {
    let mut rng = Rng(seed);
    let centres: Vec<Vec<f64>> = (0..k).map(|_| (0..d).map(|_| 3.0 * rng.normal()).collect()).collect();
    let mut data = Vec::with_capacity(n * k * d);
    let mut y = Vec::with_capacity(n * k);
    for i in 0..n * k {
        let c = i % k;
        data.extend(centres[c].iter().map(|m| (m + spread * rng.normal()) as f32));
        y.push(c);
    }
    (Matrix::from_vec(n * k, d, data), y)
}

fn train_accuracy(model: &LogisticRegression, x: &Matrix, y: &[usize]) -> f64 {
    let hits = (0..x.rows()).filter(|&i| model.predict(x.row(i)) == y[i]).count();
    hits as f64 / y.len() as f64
}

#[test]
fn separable_three_class_problem_is_learned() {
    let (x, y) = gaussian_blobs(100, 3, 8, 1.0, 7);
    let (model, report) = fit(&x, &y, names(3), &LrConfig::default()).unwrap();
    assert!(report.converged, "{report:?}");
    assert_eq!(report.stop, StopReason::GradientTolerance);
    let acc = train_accuracy(&model, &x, &y);
    assert!(acc > 0.95, "training accuracy {acc}");
    assert_eq!(model.dim(), 8);
    assert_eq!(model.labels(), names(3).as_slice());
}

#[test]
fn gradient_matches_finite_differences() {
    let (x, y) = gaussian_blobs(10, 3, 5, 2.0, 11);
    let obj = Objective::new(&x, &y, 3, 0.3).unwrap();
    let mut rng = Rng(3);
    let params: Vec<f64> = (0..obj.n_params()).map(|_| 0.5 * rng.normal()).collect();
    let mut grad = vec![0.0; obj.n_params()];
    obj.eval(&params, &mut grad);
    let mut scratch = vec![0.0; obj.n_params()];
    let h = 1e-5;
    for i in 0..params.len() {
        let mut p = params.clone();
        p[i] = params[i] + h;
        let up = obj.eval(&p, &mut scratch).total;
        p[i] = params[i] - h;
        let down = obj.eval(&p, &mut scratch).total;
        let numeric = (up - down) / (2.0 * h);
        assert!(
            (numeric - grad[i]).abs() <= 1e-7 * (1.0 + grad[i].abs()),
            "component {i}: analytic {} numeric {numeric}",
            grad[i]
        );
    }
}

#[test]
fn objective_value_matches_its_definition() {
    // Two examples, one feature, two classes, W = [[1], [-1]], b = [0.5, 0], l2 = 0.2.
    // Logits: x=2 → (2.5, -2); x=-1 → (-0.5, 1).
    // CE(ex 0, y=0) = ln(e^2.5 + e^-2) − 2.5;  CE(ex 1, y=1) = ln(e^-0.5 + e^1) − 1.
    let x = Matrix::from_vec(2, 1, vec![2.0, -1.0]);
    let y = [0, 1];
    let obj = Objective::new(&x, &y, 2, 0.2).unwrap();
    let mut g = vec![0.0; 4];
    let v = obj.eval(&[1.0, -1.0, 0.5, 0.0], &mut g);
    let ce0 = (2.5f64.exp() + (-2.0f64).exp()).ln() - 2.5;
    let ce1 = ((-0.5f64).exp() + 1.0f64.exp()).ln() - 1.0;
    let data = (ce0 + ce1) / 2.0;
    assert!((v.data_loss - data).abs() < 1e-12);
    // Penalty (0.2/2)·(1² + 1²) = 0.2; the bias is not penalised.
    assert!((v.total - (data + 0.2)).abs() < 1e-12);
}

#[test]
fn matches_scikit_learn_multinomial_fit() {
    // scikit-learn 1.9.1: LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X, y)
    // on these 12 points (3 classes, so the multinomial formulation). l2 = 1/(C·n) = 1/12.
    let x = Matrix::from_vec(
        12,
        2,
        vec![
            0.0, 1.0, 0.5, 1.5, 1.0, 0.5, -1.0, 0.0, -0.5, -1.0, -1.5, 0.5, 1.0, -1.0, 1.5, -0.5, 0.5, -1.5, 0.2, 0.3,
            -0.3, 0.8, 0.7, -0.2,
        ],
    );
    let y = [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2];
    let cfg = LrConfig { l2: 1.0 / 12.0, max_iter: 1000, tol: 1e-9, threads: None };
    let (model, _) = fit(&x, &y, names(3), &cfg).unwrap();
    let sk_coef = [0.38512779, 0.95344068, -1.23866356, -0.09157098, 0.85353576, -0.86186970];
    let sk_intercept = [-0.00510432, 0.25640422, -0.25129990];
    let params = model.params();
    for (i, (ours, theirs)) in params.iter().zip(sk_coef.iter().chain(&sk_intercept)).enumerate() {
        assert!((ours - theirs).abs() < 1e-5, "parameter {i}: ours {ours}, scikit-learn {theirs}");
    }
    let p = model.predict_proba(&[0.3, 0.4]);
    for (ours, theirs) in p.iter().zip([0.51003592, 0.26796266, 0.22200143]) {
        assert!((f64::from(*ours) - theirs).abs() < 1e-5, "{p:?}");
    }
}

#[test]
fn training_is_deterministic() {
    let (x, y) = gaussian_blobs(200, 4, 16, 3.0, 5);
    let (a, ra) = fit(&x, &y, names(4), &LrConfig::default()).unwrap();
    let (b, rb) = fit(&x, &y, names(4), &LrConfig::default()).unwrap();
    assert_eq!(a.to_json_bytes(), b.to_json_bytes());
    assert_eq!(ra, rb);
}

#[test]
fn gradient_does_not_depend_on_thread_count() {
    // Large enough for Objective to use threads by default; compare explicit counts too.
    let (x, y) = gaussian_blobs(1000, 5, 48, 3.0, 9);
    let base = Objective::new(&x, &y, 5, 1e-3).unwrap();
    let mut rng = Rng(17);
    let params: Vec<f64> = (0..base.n_params()).map(|_| 0.1 * rng.normal()).collect();
    let eval = |obj: Objective| {
        let mut g = vec![0.0; params.len()];
        let v = obj.eval(&params, &mut g);
        (v, g)
    };
    let one = eval(Objective::new(&x, &y, 5, 1e-3).unwrap().with_threads(1));
    for threads in [2, 3, 8] {
        let many = eval(Objective::new(&x, &y, 5, 1e-3).unwrap().with_threads(threads));
        assert_eq!(one.0, many.0, "{threads} threads");
        assert!(one.1 == many.1, "gradient differs with {threads} threads");
    }
    assert!(eval(base) == one);
}

#[test]
fn fitted_model_is_at_the_optimum() {
    let (x, y) = gaussian_blobs(60, 3, 6, 4.0, 21);
    let l2 = 1e-2;
    let cfg = LrConfig { l2, ..LrConfig::default() };
    let (model, report) = fit(&x, &y, names(3), &cfg).unwrap();
    assert_eq!(report.stop, StopReason::GradientTolerance);
    assert!(report.grad_max <= cfg.tol);

    // The stored (f32) parameters still have a near-zero gradient...
    let obj = Objective::new(&x, &y, 3, l2).unwrap();
    let params = model.params();
    let mut g = vec![0.0; params.len()];
    let at_opt = obj.eval(&params, &mut g).total;
    let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(gmax < 1e-5, "gradient at the stored optimum: {gmax}");
    // ...and every nearby point is worse.
    let mut rng = Rng(5);
    for _ in 0..20 {
        let moved: Vec<f64> = params.iter().map(|p| p + 1e-2 * rng.normal()).collect();
        assert!(obj.eval(&moved, &mut g).total > at_opt);
    }
}

#[test]
fn weaker_penalty_never_increases_training_loss() {
    // Overlapping classes, so the unpenalised optimum is finite and the losses differ.
    let (x, y) = gaussian_blobs(80, 3, 5, 4.0, 13);
    let mut previous = f64::INFINITY;
    for l2 in [1.0, 1e-1, 1e-2, 1e-3, 1e-4] {
        let cfg = LrConfig { l2, ..LrConfig::default() };
        let (_, report) = fit(&x, &y, names(3), &cfg).unwrap();
        assert!(report.converged);
        assert!(
            report.train_log_loss <= previous + 1e-9,
            "l2 {l2}: training loss {} after {previous}",
            report.train_log_loss
        );
        assert!(report.train_log_loss < previous, "l2 {l2} should fit strictly better");
        previous = report.train_log_loss;
    }
}

#[test]
fn probabilities_are_consistent() {
    let (x, y) = gaussian_blobs(30, 3, 4, 2.0, 2);
    let (model, _) = fit(&x, &y, names(3), &LrConfig::default()).unwrap();
    let batch = model.predict_proba_batch(&x);
    assert_eq!((batch.rows(), batch.cols()), (x.rows(), 3));
    for i in 0..x.rows() {
        let p = model.predict_proba(x.row(i));
        assert_eq!(p.as_slice(), batch.row(i));
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5);
        let best = (0..3).fold(0, |b, c| if p[c] > p[b] { c } else { b });
        assert_eq!(model.predict(x.row(i)), best);
    }
}

#[test]
fn class_absent_from_training_gets_little_probability() {
    let (x, y) = gaussian_blobs(40, 2, 3, 1.0, 4);
    let (model, report) = fit(&x, &y, names(3), &LrConfig::default()).unwrap();
    assert!(report.converged, "{report:?}");
    for i in 0..x.rows() {
        assert!(model.predict_proba(x.row(i))[2] < 1e-3);
    }
}

#[test]
fn max_iter_is_respected() {
    let (x, y) = gaussian_blobs(50, 3, 6, 3.0, 8);
    let cfg = LrConfig { max_iter: 2, tol: 0.0, ..LrConfig::default() };
    let (_, report) = fit(&x, &y, names(3), &cfg).unwrap();
    assert_eq!(report.iterations, 2);
    assert_eq!(report.stop, StopReason::MaxIterations);
    assert!(!report.converged);
}

#[test]
fn artifact_round_trips() {
    let (x, y) = gaussian_blobs(20, 3, 4, 2.0, 6);
    let (model, _) = fit(&x, &y, names(3), &LrConfig::default()).unwrap();
    let bytes = model.to_json_bytes();
    let back = LogisticRegression::from_json_bytes(&bytes).unwrap();
    assert_eq!(back, model);
    assert_eq!(back.to_json_bytes(), bytes);
    assert_eq!(back.predict_proba(x.row(0)), model.predict_proba(x.row(0)));
}

#[test]
fn malformed_artifacts_are_rejected() {
    let (x, y) = gaussian_blobs(20, 3, 4, 2.0, 6);
    let (model, _) = fit(&x, &y, names(3), &LrConfig::default()).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&model.to_json_bytes()).unwrap();
    let corrupt = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut j = json.clone();
        edit(&mut j);
        LogisticRegression::from_json_bytes(&serde_json::to_vec(&j).unwrap())
    };
    let is_invalid = |r: Result<LogisticRegression, TrainError>| matches!(r, Err(TrainError::InvalidArtifact(_)));
    assert!(is_invalid(corrupt(&|j| j["labels"].as_array_mut().unwrap().truncate(2))));
    assert!(is_invalid(corrupt(&|j| j["bias"].as_array_mut().unwrap().push(0.0.into()))));
    assert!(is_invalid(corrupt(&|j| j["weights"]["data"].as_array_mut().unwrap().truncate(5))));
    assert!(is_invalid(corrupt(&|j| j["labels"][1] = j["labels"][0].clone())));
    assert!(is_invalid(corrupt(&|j| j["weights"]["cols"] = 0.into())));
    json["weights"]["rows"] = 4.into();
    assert!(is_invalid(LogisticRegression::from_json_bytes(&serde_json::to_vec(&json).unwrap())));
    assert!(is_invalid(LogisticRegression::from_json_bytes(b"{\"labels\": [")));
}

#[test]
fn bad_inputs_are_errors() {
    let cfg = LrConfig::default();
    let x = Matrix::from_vec(3, 2, vec![0.0, 1.0, 1.0, 0.0, 0.5, 0.5]);
    let y = [0, 1, 1];

    let empty = Matrix::zeros(0, 2);
    assert!(matches!(fit(&empty, &[], names(2), &cfg), Err(TrainError::Empty)));
    assert!(matches!(fit(&Matrix::zeros(3, 0), &y, names(2), &cfg), Err(TrainError::NoFeatures)));
    assert!(matches!(fit(&x, &[0, 1], names(2), &cfg), Err(TrainError::LengthMismatch { rows: 3, labels: 2 })));
    assert!(matches!(fit(&x, &[1, 1, 1], names(2), &cfg), Err(TrainError::TooFewClasses { present: 1 })));
    assert!(matches!(fit(&x, &[0, 0, 0], names(1), &cfg), Err(TrainError::TooFewClasses { present: 1 })));
    assert!(matches!(
        fit(&x, &[0, 2, 1], names(2), &cfg),
        Err(TrainError::LabelOutOfRange { row: 1, label: 2, n_classes: 2 })
    ));
    let mut nan = x.clone();
    nan.row_mut(2)[1] = f32::NAN;
    assert!(matches!(fit(&nan, &y, names(2), &cfg), Err(TrainError::NonFiniteFeature { row: 2, col: 1 })));
    let mut inf = x.clone();
    inf.row_mut(0)[0] = f32::INFINITY;
    assert!(matches!(fit(&inf, &y, names(2), &cfg), Err(TrainError::NonFiniteFeature { row: 0, col: 0 })));
    let dup = vec!["a".to_owned(), "a".to_owned()];
    assert!(matches!(fit(&x, &y, dup, &cfg), Err(TrainError::DuplicateLabel(l)) if l == "a"));
    for bad in [
        LrConfig { l2: -1.0, ..cfg.clone() },
        LrConfig { l2: f64::NAN, ..cfg.clone() },
        LrConfig { tol: -1.0, ..cfg.clone() },
    ] {
        assert!(matches!(fit(&x, &y, names(2), &bad), Err(TrainError::InvalidConfig(_))), "{bad:?}");
    }
}

mod heads;
mod mlp;
mod objective;
mod sparse;
