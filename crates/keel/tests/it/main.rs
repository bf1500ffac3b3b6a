//! End-to-end tests of the `keel` binary: real model, real data, real HTTP on loopback.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod answer;
mod documents;
mod fine_tune;
mod http;
mod ingest_shared;
mod monitor;
mod run;
mod select;
mod serve_clients;
mod serve_text;
mod store_kill;
mod train_eval;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn keel(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keel"));
    c.arg("--home").arg(home).env("KEEL_LOG", "warn");
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "keel failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_of(out: Output) -> Value {
    serde_json::from_slice(&ok(out).stdout).expect("stdout is one JSON document")
}

/// A running `keel serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(home: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(home, extra, &[])
    }

    fn start_with_env(home: &Path, extra: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Server {
        let mut child = keel(home)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        while let Some(Ok(line)) = stderr.next() {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap().to_owned();
                // Keep reading (and echo) what the server says, so it never writes to a closed
                // or full pipe.
                std::thread::spawn(move || stderr.map_while(Result::ok).for_each(|l| eprintln!("[keel serve] {l}")));
                return Server { child, addr };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("server exited before listening:\n{seen}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

#[test]
fn quickstart_slice_then_serve_and_classify_over_http() {
    let home = tempfile::tempdir().unwrap();
    let first =
        json_of(keel(home.path()).args(["quickstart", "--no-serve", "--limit", "600", "--json"]).output().unwrap());
    let d = &first["ingest"]["dataset"];
    assert_eq!(d["rows_read"], 600);
    assert_eq!(d["n_records"].as_u64().unwrap() + d["n_quarantined"].as_u64().unwrap(), 600);
    assert!(d["n_quarantined"].as_u64().unwrap() > 0, "near-neutral sentences are quarantined");
    assert_eq!(first["ingest"]["quarantine_by_reason"][0][0], "missing label");
    assert_eq!(first["reused"], false);
    let model = &first["model"];
    assert_eq!(model["name"], "sentiment");
    assert_eq!(model["version"], 1);
    assert_eq!(model["aliases"], serde_json::json!(["production"]));
    let acc = model["metrics"]["accuracy"].as_f64().unwrap();
    let f1 = model["metrics"]["macro_f1"].as_f64().unwrap();
    // About 113 test sentences: chance is 0.5 with a standard error near 0.047, so 0.6 is more
    // than two standard errors above chance (the full data set gives about 0.80).
    assert!(acc > 0.6 && f1 > 0.6, "accuracy {acc}, macro-F1 {f1} on a 600-row slice");
    let sizes = &model["metrics"]["split_sizes"];
    let total: u64 = ["train", "validation", "test"].iter().map(|k| sizes[k].as_u64().unwrap()).sum();
    assert_eq!(total, d["n_records"].as_u64().unwrap());

    // Running it again reuses everything.
    let again =
        json_of(keel(home.path()).args(["quickstart", "--no-serve", "--limit", "600", "--json"]).output().unwrap());
    assert_eq!(again["reused"], true);
    assert_eq!(again["model"]["version"], 1);

    let server = Server::start(home.path(), &[]);
    let (status, body) = http::post(
        &server.addr,
        "/v1/classify",
        r#"{"inputs": ["A gorgeous, moving and beautifully acted film.", "Dull, lifeless and a waste of two hours."]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model"], "sentiment@1");
    assert_eq!(v["degraded"], false);
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    assert_eq!(preds[0]["label"], "positive", "{body}");
    assert_eq!(preds[1]["label"], "negative", "{body}");
    for p in preds {
        let sum: f64 = p["scores"].as_object().unwrap().values().map(|s| s.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4);
        assert!(!p["id"].as_str().unwrap().is_empty());
    }

    let (status, body) =
        http::post(&server.addr, "/v1/embeddings", r#"{"input": "hello", "model": "all-MiniLM-L6-v2"}"#);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 384);

    let (status, body) = http::post(&server.addr, "/v1/classify", r#"{"inputs": "#);
    assert_eq!(status, 400, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"]["message"].is_string());

    assert_eq!(http::get(&server.addr, "/healthz").0, 200);
    let (status, metrics) = http::get(&server.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains(r#"keel_http_requests_total{route="/v1/classify",status="200"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"keel_model_info{model="sentiment@1""#), "{metrics}");
}

#[test]
fn ingest_accounts_for_every_row() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("messy.csv");
    std::fs::write(&file, "text,label\ngood,pos\n,neg\nbad,\n\"quoted, fine\",neg\nthree,col,umns\n").unwrap();
    let v = json_of(keel(home.path()).args(["ingest", "--json"]).arg(&file).output().unwrap());
    let d = &v["dataset"];
    assert_eq!(d["rows_read"], 5);
    assert_eq!(d["n_records"], 2);
    assert_eq!(d["n_quarantined"], 3);
    let quarantine = std::fs::read_to_string(v["quarantine_file"].as_str().unwrap()).unwrap();
    assert_eq!(quarantine.lines().count(), 3);
    assert!(quarantine.contains("\"line\":3") && quarantine.contains("empty text"));
    // Same data again: the same version, nothing new.
    let again = json_of(keel(home.path()).args(["ingest", "--json"]).arg(&file).output().unwrap());
    assert_eq!(again["created"], false);
    assert_eq!(again["dataset"]["id"], d["id"]);
}

#[test]
fn model_pull_without_any_source_names_each_one() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["model", "pull", "all-MiniLM-L6-v2", "--offline"])
        .env("KEEL_MODELS", empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1 + err.matches("\n  ").count(), "{err}");
    assert!(err.to_lowercase().contains("cache"), "{err}");
}

#[test]
fn embed_writes_jsonl_and_reuses_the_cache() {
    let home = tempfile::tempdir().unwrap();
    let input = home.path().join("texts.txt");
    std::fs::write(&input, "first line\nsecond line\n\nünïcödé 🙂\n").unwrap();
    let out_path = home.path().join("out.jsonl");
    let run =
        || json_of(keel(home.path()).args(["embed", "--json", "-o"]).arg(&out_path).arg(&input).output().unwrap());
    let first = run();
    assert_eq!(first["texts"], 4);
    assert_eq!(first["computed"], 4);
    let lines: Vec<Value> =
        std::fs::read_to_string(&out_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[3]["text"], "ünïcödé 🙂");
    let e = lines[0]["embedding"].as_array().unwrap();
    assert_eq!(e.len(), 384);
    let norm: f64 = e.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-4);
    let second = run();
    assert_eq!(second["cached"], 4);
    assert_eq!(std::fs::read_to_string(&out_path).unwrap().lines().count(), 4);
}
