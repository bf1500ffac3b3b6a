//! `keel train` and `keel eval` end to end on a slice of the bundled movie sentences: heads,
//! baselines, intervals, calibration, the gate and its stored reason, byte-identical artifacts,
//! and an MLP run killed mid-training that resumes from its checkpoint.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{json_of, keel};

const SLICE: &str = "600";

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sentiment/movie_sentences.csv")
}

fn train(home: &Path, name: &str, extra: &[&str]) -> Value {
    let file = example();
    json_of(
        keel(home)
            .args(["train", file.to_str().unwrap(), "--name", name, "--id-col", "id", "--limit", SLICE, "--json"])
            .args(extra)
            .output()
            .unwrap(),
    )
}

fn aliases(v: &Value) -> Vec<String> {
    v["model"]["aliases"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect()
}

#[test]
fn train_reports_intervals_baselines_and_gates_the_second_version() {
    let home = tempfile::tempdir().unwrap();
    let first = train(home.path(), "s", &[]);
    let m = &first["model"]["metrics"];
    assert_eq!(m["head"], "logistic");
    let (acc, lo, hi) = (
        m["accuracy"].as_f64().unwrap(),
        m["intervals"]["accuracy"]["lo"].as_f64().unwrap(),
        m["intervals"]["accuracy"]["hi"].as_f64().unwrap(),
    );
    assert!(lo <= acc && acc <= hi && hi - lo > 0.01, "accuracy {acc} in [{lo}, {hi}]");
    assert!(acc > 0.6, "a 600-row slice still learns sentiment: {acc}");
    let baselines = m["baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 2);
    assert!(baselines.iter().all(|b| b["accuracy"].as_f64().unwrap() < acc + 0.05));
    assert!(m["temperature"].as_f64().unwrap() > 0.0);
    assert!(m["cross_validation"]["grid"].as_array().unwrap().len() >= 3);
    assert_eq!(first["gate"]["reason"], "first version of this model");
    assert_eq!(aliases(&first), ["production"]);
    let html = std::fs::read_to_string(first["report_html"].as_str().unwrap()).unwrap();
    assert!(html.contains("<svg") && html.contains("Brier"), "the stored report has its plots");

    // Same data, config and seed under another name: trained again from the cached embeddings,
    // byte-identical artifacts.
    let again = train(home.path(), "s-copy", &[]);
    assert_eq!(again["reused"], false);
    assert_eq!(again["model"]["head_artifact"], first["model"]["head_artifact"]);
    assert_eq!(again["model"]["metrics"]["artifacts"]["fallback"], m["artifacts"]["fallback"]);

    // A second version of `s` (another head) is gated against production on the same test rows.
    let second = train(home.path(), "s", &["--head", "mlp", "--mlp-hidden", "64"]);
    assert_eq!(second["model"]["version"], 2);
    let decision = &second["gate"]["decision"];
    let reason = second["gate"]["reason"].as_str().unwrap();
    assert!(reason.contains("macro-F1") && reason.contains("against s@1"), "{reason}");
    let promoted = decision["promote"].as_bool().unwrap();
    assert_eq!(aliases(&second), [if promoted { "production" } else { "candidate" }]);
    assert!(decision["ci"][0].as_f64().unwrap() <= decision["diff"].as_f64().unwrap());
    // The reason is stored with the alias move.
    let lineage = json_of(keel(home.path()).args(["lineage", "s@2", "--json"]).output().unwrap());
    let text = lineage.to_string();
    assert!(text.contains(&reason.replace('"', "\\\"")), "the gate's reason is in the alias history: {text}");

    // `keel eval` recomputes the same figures from the store and applies the gate on demand.
    let report_path = home.path().join("eval.html");
    let eval = json_of(
        keel(home.path())
            .args(["eval", "s@1", "--against", "s@2", "--html", report_path.to_str().unwrap(), "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(eval["report"]["evaluation"]["accuracy"].as_f64().unwrap(), acc);
    let g = &eval["report"]["gate"];
    assert!((g["diff"].as_f64().unwrap() + decision["diff"].as_f64().unwrap()).abs() < 1e-12, "{g} vs {decision}");
    assert!(std::fs::read_to_string(&report_path).unwrap().contains("<svg"));
}

fn checkpoints(home: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(home.join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "mlp")).collect())
        .unwrap_or_default()
}

#[test]
fn a_killed_mlp_run_resumes_from_its_last_checkpoint() {
    // Wide enough that an epoch takes a noticeable time, patient enough to run every epoch.
    let mlp = ["--head", "mlp", "--mlp-hidden", "4096", "--mlp-max-epochs", "8", "--mlp-patience", "100"];
    let home = tempfile::tempdir().unwrap();
    // Uninterrupted run (it also fills the embedding cache).
    let clean = train(home.path(), "clean", &mlp);
    assert!(clean["model"]["metrics"]["mlp"]["report"]["resumed_from"].is_null());
    assert!(checkpoints(home.path()).is_empty(), "a finished run removes its checkpoint");

    // The same training under another name, killed once a checkpoint exists.
    let file = example();
    let mut child = keel(home.path())
        .args(["train", file.to_str().unwrap(), "--name", "killed", "--id-col", "id", "--limit", SLICE, "--json"])
        .args(mlp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while checkpoints(home.path()).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "training finished before its first checkpoint could be seen");
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 5 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(checkpoints(home.path()).len(), 1, "the killed run left its checkpoint");

    let resumed = train(home.path(), "killed", &mlp);
    let from = resumed["model"]["metrics"]["mlp"]["report"]["resumed_from"].as_u64();
    assert!(from.is_some_and(|e| (1..8).contains(&e)), "resumed from epoch {from:?}");
    assert_eq!(
        resumed["model"]["head_artifact"], clean["model"]["head_artifact"],
        "the resumed run ends with the uninterrupted run's weights"
    );
    assert!(checkpoints(home.path()).is_empty());
}
