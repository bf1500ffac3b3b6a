//! Issue 26's question, end to end: the repository's README and ARCHITECTURE.md indexed with
//! the real encoder, `keel ask "How do I keep the records in PostgreSQL instead of SQLite?"`
//! answered from the README sentence naming `KEEL_DATABASE_URL`, in extractive mode and in auto
//! mode with only the bundled local model configured (not capable, so it extracts); and
//! `/v1/answer` carrying the decision and the `grounded` score, as JSON and as a stream.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{Server, http, json_of, keel};

const QUESTION: &str = "How do I keep the records in PostgreSQL instead of SQLite?";

/// `keel` with no remote generator or capability override from the caller's environment.
fn local_only(home: &Path) -> Command {
    let mut c = keel(home);
    for k in ["KEEL_LLM_BASE_URL", "KEEL_LLM_CHAIN", "KEEL_LLM_GGUF", "KEEL_LLM_CAPABLE"] {
        c.env_remove(k);
    }
    c
}

fn indexed_repository_docs() -> (tempfile::TempDir, tempfile::TempDir) {
    let (home, corpus) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for doc in ["README.md", "ARCHITECTURE.md"] {
        std::fs::copy(repo.join(doc), corpus.path().join(doc)).unwrap();
    }
    json_of(keel(home.path()).args(["--json", "index"]).arg(corpus.path()).output().unwrap());
    (home, corpus)
}

fn assert_answers_from_the_readme(a: &Value) {
    let answer = a["answer"].as_str().unwrap();
    assert!(answer.contains("KEEL_DATABASE_URL"), "{a:#}");
    assert_eq!(a["citations"][0]["doc_id"], "README.md", "{a:#}");
    assert_eq!(a["decision"], "extractive", "{a:#}");
    assert_eq!(a["grounded"], 1.0, "an extracted answer is its documents' own words: {a:#}");
    assert!(a["generation"].is_null(), "nothing was generated: {a:#}");
    assert!(a["notice"].is_null(), "{a:#}");
}

#[test]
fn the_readme_question_is_answered_from_the_readme_extractively_and_in_auto_mode() {
    let (home, _corpus) = indexed_repository_docs();
    let extractive = ["--json", "ask", QUESTION, "--mode", "extractive"];
    let a = json_of(local_only(home.path()).args(extractive).output().unwrap());
    assert_answers_from_the_readme(&a);
    assert_eq!(a["mode"], "extractive");

    // auto (the default) with only the bundled SmolLM2: not capable, so it extracts.
    let a = json_of(local_only(home.path()).args(["--json", "ask", QUESTION]).output().unwrap());
    assert_answers_from_the_readme(&a);
    assert_eq!(a["mode"], "auto");
    assert!(a["reason"].as_str().unwrap().contains("SmolLM2-135M"), "{a:#}");

    // The human output: the answer, then its citations.
    let out = crate::ok(local_only(home.path()).args(["ask", QUESTION]).output().unwrap());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("KEEL_DATABASE_URL") && text.contains("[1] README.md"), "{text}");

    // A question the documents do not answer gets their closest sentences, and says so.
    let a = json_of(
        local_only(home.path()).args(["--json", "ask", "What colour are flamingo feathers?"]).output().unwrap(),
    );
    assert!(a["notice"].as_str().unwrap().contains("may not answer it"), "{a:#}");

    // The retrieval flag moved to --retrieval; the old use of --mode says so.
    let out = local_only(home.path()).args(["ask", QUESTION, "--mode", "bm25"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--retrieval bm25"));
    let a = json_of(local_only(home.path()).args(["--json", "ask", QUESTION, "--retrieval", "bm25"]).output().unwrap());
    assert_answers_from_the_readme(&a);
}

#[test]
fn v1_answer_carries_the_decision_and_the_grounded_score_as_json_and_as_a_stream() {
    let (home, _corpus) = indexed_repository_docs();
    let clear: Vec<(&str, &std::ffi::OsStr)> = Vec::new();
    let server = Server::start_with_env(home.path(), &["--no-answer"], &clear);
    let (status, _) = http::post(&server.addr, "/v1/answer", &serde_json::json!({"question": QUESTION}).to_string());
    assert_eq!(status, 404, "--no-answer leaves the route out");
    drop(server);

    let server = Server::start(home.path(), &["--answer-mode", "extractive"]);
    let (status, body) = http::post(&server.addr, "/v1/answer", &serde_json::json!({"question": QUESTION}).to_string());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_answers_from_the_readme(&v);
    assert!(v["grounding"]["sentences"].as_array().is_some_and(|s| !s.is_empty()), "{v:#}");

    // The stream's last event is the whole reply.
    let req = serde_json::json!({"question": QUESTION, "stream": true}).to_string();
    let (status, body) = http::post(&server.addr, "/v1/answer", &req);
    assert_eq!(status, 200, "{body}");
    let last = body.split("\n\n").filter(|e| !e.trim().is_empty()).last().unwrap();
    let data = last.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert!(last.starts_with("event: answer"), "{body}");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_answers_from_the_readme(&v);

    // A mode the server does not know is refused, naming the valid ones.
    let req = serde_json::json!({"question": QUESTION, "answer_mode": "guess"}).to_string();
    let (status, body) = http::post(&server.addr, "/v1/answer", &req);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("extractive"), "{body}");
}
