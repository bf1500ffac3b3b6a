//! Model selection end to end: on a task whose label is given away by a token the encoder
//! blurs (the source's URL shortener), `--head auto` ships the n-gram model and says why, the
//! server answers it from the text alone, and a version worse than its own n-gram baseline is
//! never promoted automatically.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::http::post;
use super::{Server, json_of, keel};

const EXAMPLE: &str = include_str!("../../../../examples/sentiment/movie_sentences.csv");

/// Each source posts with its own link shortener.
const SOURCES: [(&str, &str); 4] =
    [("wire", "bit.ly"), ("tribune", "trib.al"), ("herald", "ow.ly"), ("courier", "buff.ly")];

/// `n` real movie-review sentences, each given to a source by a hash of its position (so the
/// source has nothing to do with the sentence), with that source's shortened link appended.
fn source_task(dir: &Path, n: usize) -> PathBuf {
    let mut csv = String::from("id,label,text\n");
    for (i, line) in EXAMPLE.lines().skip(1).take(n).enumerate() {
        let sentence = line.splitn(4, ',').nth(3).unwrap().trim_matches('"').replace('"', "");
        let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
        let (source, short) = SOURCES[(h % 4) as usize];
        let code: String = format!("{:x}", h.wrapping_mul(2_654_435_761)).chars().take(7).collect();
        csv.push_str(&format!("{i},{source},\"{sentence} {short}/{code}\"\n"));
    }
    let path = dir.join("posts.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn train(home: &Path, file: &Path, name: &str, head: &str) -> Value {
    json_of(
        keel(home)
            .args(["train", file.to_str().unwrap(), "--name", name, "--id-col", "id", "--head", head, "--json"])
            .output()
            .unwrap(),
    )
}

#[test]
fn auto_ships_the_ngram_model_when_a_token_gives_the_label_away() {
    let dir = tempfile::tempdir().unwrap();
    let file = source_task(dir.path(), 480);
    let out = train(dir.path(), &file, "posts", "auto");
    let m = &out["model"]["metrics"];
    assert_eq!(m["head"], "sparse", "{m}");
    let sel = &m["selection"];
    assert_eq!(sel["chosen"], "sparse", "{sel}");
    let scores: Vec<(String, f64)> = sel["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["family"].as_str().unwrap().to_owned(), c["mean"].as_f64().unwrap()))
        .collect();
    let score = |f: &str| scores.iter().find(|(n, _)| n == f).unwrap().1;
    assert!(score("sparse") > 0.9, "the shortener gives the source away: {scores:?}");
    assert!(score("sparse") > score("logistic") + 0.1, "the encoder blurs it: {scores:?}");
    let reason = sel["reason"].as_str().unwrap();
    assert!(reason.contains("shipped the n-gram model") && reason.contains("needs no encoder"), "{reason}");
    // Its measured cost per prediction is kept with the version, beside every candidate's.
    let note = sel["cost_note"].as_str().unwrap();
    assert!(note.contains("cheaper than the encoder head"), "{note}");
    assert!(sel["candidates"].as_array().unwrap().iter().all(|c| c["cost_us"].as_f64().unwrap() > 0.0), "{sel}");
    assert!(m["accuracy"].as_f64().unwrap() > 0.9, "{m}");
    // The report names the choice and its reason.
    let html = std::fs::read_to_string(out["report_html"].as_str().unwrap()).unwrap();
    assert!(html.contains("Model selection") && html.contains("shipped the n-gram model"), "the report says why");

    // Served from the text: every answer is the source's, none degraded.
    let server = Server::start(dir.path(), &["--model", "posts"]);
    for (source, short) in SOURCES {
        let body = format!("{{\"inputs\": [\"a quiet, well made film {short}/9f3a2c1\"]}}");
        let (status, text) = post(&server.addr, "/v1/classify", &body);
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["degraded"], false, "{v}");
        assert_eq!(v["predictions"][0]["label"], source, "{v}");
    }
    // ... without the encoder ever loaded (it loads only when a request needs embeddings).
    let (status, body) = super::http::get(&server.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["encoder"], Value::Null, "{ready}");
    let (_, body) = super::http::get(&server.addr, "/v1/models");
    assert!(body.contains("\"reads\":\"text\""), "{body}");
}

#[test]
fn the_gate_refuses_to_promote_a_version_worse_than_its_own_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let file = source_task(dir.path(), 480);
    // The encoder head, asked for explicitly: far below the n-gram baseline trained beside it.
    let out = train(dir.path(), &file, "posts", "logistic");
    assert_eq!(out["model"]["metrics"]["head"], "logistic");
    let gate = &out["gate"];
    assert_eq!(gate["alias"], "candidate", "{gate}");
    let reason = gate["reason"].as_str().unwrap();
    assert!(reason.starts_with("first version of this model, but worse than its own n-gram baseline"), "{reason}");
    assert!(reason.contains("not promoted automatically"), "{reason}");
    let aliases = out["model"]["aliases"].as_array().unwrap();
    assert_eq!(aliases, &[Value::from("candidate")], "{out}");
    // The refusal is stored with the alias move.
    let lineage = json_of(keel(dir.path()).args(["lineage", "posts@1", "--json"]).output().unwrap());
    let events = lineage["alias_events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["alias"] == "candidate" && e["reason"] == reason), "{lineage}");
    // And nothing is in production.
    let status = keel(dir.path()).args(["lineage", "posts@production", "--json"]).output().unwrap().status;
    assert!(!status.success(), "no production version");
}
