//! `POST /v1/search` over a real index (real encoder, real tantivy), merged into the app.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use keel_index::{Chunker, Document, Index, IndexOptions};
use keel_server::{SearchService, search_routes};
use serde_json::Value;

use crate::embedders::Renamed;
use crate::{app, call, encoder, error_type, installed};

pub(crate) const DOCS: [(&str, &str, &str); 4] = [
    ("tea", "kitchen", "Green tea is steeped at eighty degrees for two minutes; boiling water makes it bitter."),
    ("bikes", "garage", "A bicycle chain wants oil every few hundred kilometres and a wipe after rain."),
    ("bread", "kitchen", "Sourdough rises overnight in the fridge and bakes for forty minutes in a hot oven."),
    ("tyres", "garage", "Road bike tyres hold about seven bar of pressure and lose some of it every week."),
];

pub(crate) fn build(dir: &std::path::Path, docs: &[(&str, &str, &str)]) {
    let enc = encoder();
    let opts = IndexOptions::default();
    let chunker = Chunker::from_model_dir(&installed().dir, opts.chunk_tokens, opts.overlap).unwrap();
    let docs: Vec<Document> = docs
        .iter()
        .map(|(id, room, text)| Document {
            id: (*id).into(),
            source: "notes.jsonl".into(),
            text: (*text).into(),
            metadata: BTreeMap::from([("room".to_string(), (*room).to_string())]),
        })
        .collect();
    let plan = Index::plan(dir, docs, &chunker, enc.id(), opts).unwrap();
    let texts = plan.texts_to_embed();
    let vectors = enc.embed(&texts).unwrap();
    drop(texts);
    plan.apply(vectors).unwrap();
}

#[tokio::test]
async fn search_answers_every_mode_with_filters_and_rejects_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &DOCS);
    let svc = SearchService::open(dir.path(), encoder()).unwrap();
    let app = app(false).merge(search_routes(svc));
    for mode in ["dense", "bm25", "hybrid"] {
        let body = format!(r#"{{"query": "how hot should the water be for green tea", "k": 2, "mode": "{mode}"}}"#);
        let (status, body) = call(&app, "POST", "/v1/search", Some(&body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["mode"], mode);
        assert_eq!(v["hits"][0]["doc_id"], "tea", "{mode}: {body}");
        assert_eq!(v["hits"][0]["start_char"], 0);
        assert!(v["hits"].as_array().unwrap().len() <= 2);
    }
    // A filter keeps the garage only, whatever the query is about.
    let (status, body) =
        call(&app, "POST", "/v1/search", Some(r#"{"query": "green tea water", "filter": {"room": "garage"}}"#)).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).unwrap();
    let hits = v["hits"].as_array().unwrap();
    assert!(!hits.is_empty() && hits.iter().all(|h| h["metadata"]["room"] == "garage"), "{body}");
    // Bad requests: JSON errors with 4xx.
    for bad in [
        r#"{"query": ""}"#,
        r#"{"query": "x", "k": 0}"#,
        r#"{"query": "x", "k": 1000}"#,
        r#"{"query": "x", "mode": "fuzzy"}"#,
        r#"{"q": "x"}"#,
    ] {
        let (status, body) = call(&app, "POST", "/v1/search", Some(bad)).await;
        assert!(status == StatusCode::UNPROCESSABLE_ENTITY || status == StatusCode::BAD_REQUEST, "{bad}: {status}");
        assert!(!error_type(&body).is_empty());
    }
    // The other routes still answer.
    assert_eq!(call(&app, "GET", "/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_new_index_generation_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &DOCS[..2]);
    let app = search_routes(SearchService::open(dir.path(), encoder()).unwrap());
    let ask = r#"{"query": "sourdough in the oven", "k": 1, "mode": "bm25"}"#;
    let (_, body) = call(&app, "POST", "/v1/search", Some(ask)).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["hits"].as_array().unwrap().len(), 0, "{body}");
    build(dir.path(), &DOCS);
    let (_, body) = call(&app, "POST", "/v1/search", Some(ask)).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["generation"].as_u64(), v["hits"][0]["doc_id"].as_str()), (Some(2), Some("bread")), "{body}");
}

#[tokio::test]
async fn an_index_built_with_another_encoder_refuses_dense_search_and_names_both() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), &DOCS);
    let other = Renamed::new("another-encoder@123456789abc");
    let app = search_routes(SearchService::open(dir.path(), other).unwrap());
    for mode in ["dense", "hybrid"] {
        let ask = format!(r#"{{"query": "green tea", "mode": "{mode}"}}"#);
        let (status, body) = call(&app, "POST", "/v1/search", Some(&ask)).await;
        assert_eq!((status, error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
        assert!(body.contains(encoder().id()) && body.contains("another-encoder@123456789abc"), "{body}");
    }
    // BM25 needs no vectors: it still answers.
    let (status, body) = call(&app, "POST", "/v1/search", Some(r#"{"query": "green tea", "mode": "bm25"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["hits"][0]["doc_id"], "tea");
}
