//! Safe rollouts: the server follows the registry in a real SQLite store, swaps versions under
//! load with no failed request, canary and shadow challengers, admin routes behind a token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use keel_core::ContentHash;
use keel_server::{AppState, Challenger, ChallengerMode, Options, Rollout};
use keel_store::{ModelVersion, NewDataset, NewModelVersion, Store};
use serde_json::{Value, json};

use super::{call, call_with_headers, encoder, error_type, json_of, model};

/// Registers a version of `sentiment` made from `key` with the test head and its n-gram fallback,
/// trained on `encoder_id`'s embeddings.
pub(crate) async fn register(store: &Store, key: &str, encoder_id: &str) -> ModelVersion {
    let m = model();
    register_head(store, key, encoder_id, &m.head, m.fallback.as_ref()).await
}

/// Registers a version of `sentiment` made from `key` with `head` (and `fallback`, if any).
pub(crate) async fn register_head(
    store: &Store,
    key: &str,
    encoder_id: &str,
    head: &keel_train::Head,
    fallback: Option<&keel_train::Head>,
) -> ModelVersion {
    let records = store.put_artifact("records", b"text,label\n").await.unwrap();
    let dataset = store
        .put_dataset(&NewDataset {
            id: ContentHash::of(b"dataset"),
            name: "reviews".into(),
            source: "reviews.csv".into(),
            source_sha256: ContentHash::of(b"source"),
            rows_read: 8,
            n_records: 8,
            n_quarantined: 0,
            records_artifact: records.clone(),
            quarantine_artifact: records,
        })
        .await
        .unwrap();
    let run = store.start_run("train", &json!({}), "test", "localhost").await.unwrap();
    let head = store.put_artifact("head", &head.to_bytes()).await.unwrap();
    let mut metrics = json!({});
    if let Some(f) = fallback {
        let hash = store.put_artifact("head", &f.to_bytes()).await.unwrap();
        metrics = json!({"artifacts": {"fallback": hash.as_str()}});
    }
    let (v, created) = store
        .register_model_version(&NewModelVersion {
            name: "sentiment".into(),
            input_key: ContentHash::of(key.as_bytes()),
            run_id: run,
            dataset_id: dataset.fields.id,
            encoder_id: encoder_id.into(),
            head_artifact: head,
            metrics,
        })
        .await
        .unwrap();
    assert!(created);
    v
}

/// A store with versions 1 and 2 of `sentiment`, production on 1.
async fn two_versions() -> (tempfile::TempDir, Store) {
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).await.unwrap();
    let enc = encoder();
    assert_eq!(register(&store, "one", enc.id()).await.version, 1);
    assert_eq!(register(&store, "two", enc.id()).await.version, 2);
    store.set_alias("sentiment", "production", 1, "first").await.unwrap();
    (home, store)
}

async fn following(store: &Store, challenger: Option<Challenger>, token: Option<&str>) -> Arc<AppState> {
    let first = keel_server::load_model(store, "sentiment", &encoder().into()).await.unwrap();
    let rollout = Rollout { follow: Some("sentiment".into()), poll_interval: Duration::from_millis(50), challenger };
    let options =
        Options { store: Some(store.clone()), rollout, admin_token: token.map(str::to_owned), ..Options::default() };
    let state = AppState::with_options(encoder(), Some(first), options);
    state.reload().await;
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promoting_under_steady_load_switches_versions_with_no_failed_request() {
    let (_home, store) = two_versions().await;
    let state = following(&store, None, None).await;
    let app = keel_server::router(state.clone());
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (app, answered, stop) = (app.clone(), answered.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            // Bounded: at most 400 requests per client.
            for i in 0..400 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let body = json!({"inputs": [format!("client {c} request {i}: a wonderful film")]}).to_string();
                let (status, headers, body) = call_with_headers(&app, "POST", "/v1/classify", Some(&body)).await;
                let tag = if status == StatusCode::OK {
                    json_of(&body)["model"].as_str().unwrap().to_owned()
                } else {
                    String::new()
                };
                assert_eq!(
                    headers.get("x-keel-model").map(|h| h.to_str().unwrap().to_owned()).unwrap_or_default(),
                    tag
                );
                seen.push((status, tag, body));
                answered.fetch_add(1, Ordering::AcqRel);
            }
            seen
        }));
    }
    let wait_for = |n: usize| {
        let answered = answered.clone();
        async move {
            for _ in 0..6000 {
                if answered.load(Ordering::Acquire) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the load stalled below {n} answers");
        }
    };
    wait_for(40).await;
    // Another process (`keel promote`) moves the alias; the server notices on its next poll.
    store.set_alias("sentiment", "production", 2, "better").await.unwrap();
    for _ in 0..400 {
        if state.model().unwrap().version.version == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state.model().unwrap().version.version, 2, "the follower picked up the promotion");
    let after = answered.load(Ordering::Acquire);
    wait_for(after + 40).await;
    stop.store(true, Ordering::Release);
    let mut total = 0;
    let mut per_version = std::collections::BTreeMap::<String, usize>::new();
    for client in clients {
        let seen = client.await.unwrap();
        total += seen.len();
        for (status, _, body) in &seen {
            assert_eq!(*status, StatusCode::OK, "a request failed during the rollout: {body}");
        }
        let tags: Vec<&str> = seen.iter().map(|(_, t, _)| t.as_str()).collect();
        let first_new = tags.iter().position(|t| *t == "sentiment@2").unwrap_or(tags.len());
        assert!(tags[..first_new].iter().all(|t| *t == "sentiment@1"), "{tags:?}");
        assert!(tags[first_new..].iter().all(|t| *t == "sentiment@2"), "never back to the old version: {tags:?}");
        for t in tags {
            *per_version.entry(t.to_owned()).or_default() += 1;
        }
    }
    assert!(per_version["sentiment@1"] >= 40 && per_version["sentiment@2"] >= 40, "{per_version:?} of {total}");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains("keel_model_swaps_total 1\n"), "{metrics}");
    assert!(metrics.contains(r#"keel_model_info{model="sentiment@2",encoder="#), "{metrics}");
    assert!(!metrics.contains(r#"status="5"#), "{metrics}");
}

#[tokio::test]
async fn admin_routes_need_the_token_and_promote_and_roll_back_the_served_model() {
    let (_home, store) = two_versions().await;
    // Without a configured token the admin routes do not exist.
    let disabled = keel_server::router(following(&store, None, None).await);
    let (status, body) = call(&disabled, "POST", "/v1/admin/reload", None).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::NOT_FOUND, "not_found"), "{body}");

    let state = following(&store, None, Some("s3cret-token")).await;
    let app = keel_server::router(state.clone());
    let promote = json!({"model": "sentiment", "version": 2}).to_string();
    let (status, headers, body) = call_with_headers(&app, "POST", "/v1/admin/promote", Some(&promote)).await;
    assert_eq!((status, error_type(&body).as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"), "{body}");
    assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    let (status, _) = admin(&app, "/v1/admin/promote", "wrong-token", Some(&promote)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(store.resolve("sentiment").await.unwrap().version, 1, "a refused call changes nothing");

    let (status, body) = admin(&app, "/v1/admin/promote", "s3cret-token", Some(&promote)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json_of(&body);
    assert_eq!((v["from"].as_i64(), v["to"].as_i64()), (Some(1), Some(2)), "{body}");
    assert_eq!(v["serving"]["model"], "sentiment@2");
    assert_eq!(classify_tag(&app).await, "sentiment@2", "the swap is immediate, not at the next poll");

    let (status, body) = admin(&app, "/v1/admin/rollback", "s3cret-token", Some(r#"{"model": "sentiment"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json_of(&body)["serving"]["model"], "sentiment@1");
    assert_eq!(classify_tag(&app).await, "sentiment@1");

    // A version trained on another encoder's embeddings is refused before the alias moves.
    let foreign = register(&store, "three", "some-other-encoder").await;
    let body = json!({"model": "sentiment", "version": foreign.version}).to_string();
    let (status, resp) = admin(&app, "/v1/admin/promote", "s3cret-token", Some(&body)).await;
    assert_eq!((status, error_type(&resp).as_str()), (StatusCode::CONFLICT, "conflict"), "{resp}");
    assert_eq!(store.resolve("sentiment").await.unwrap().version, 1);
    let (status, resp) =
        admin(&app, "/v1/admin/promote", "s3cret-token", Some(r#"{"model": "nope", "version": 1}"#)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{resp}");

    // Moved behind the server's back: reload follows at once.
    store.set_alias("sentiment", "production", 2, "by hand").await.unwrap();
    let (status, body) = admin(&app, "/v1/admin/reload", "s3cret-token", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json_of(&body)["serving"]["model"], "sentiment@2");
}

async fn admin(app: &axum::Router, uri: &str, token: &str, body: Option<&str>) -> (StatusCode, String) {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn classify_tag(app: &axum::Router) -> String {
    let (status, body) = call(app, "POST", "/v1/classify", Some(r#"{"inputs": ["a wonderful film"]}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    json_of(&body)["model"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_canary_answers_exactly_its_share_and_follows_its_alias() {
    let (_home, store) = two_versions().await;
    store.set_alias("sentiment", "canary", 2, "try it").await.unwrap();
    let canary = Challenger { spec: "sentiment@canary".into(), mode: ChallengerMode::Canary { share: 0.25 } };
    let state = following(&store, Some(canary), None).await;
    let app = keel_server::router(state.clone());
    let mut tags = Vec::new();
    for _ in 0..40 {
        tags.push(classify_tag(&app).await);
    }
    assert_eq!(tags.iter().filter(|t| *t == "sentiment@2").count(), 10, "{tags:?}");
    assert_eq!(tags.iter().filter(|t| *t == "sentiment@1").count(), 30, "{tags:?}");
    let (_, models) = call(&app, "GET", "/v1/models", None).await;
    let roles: Vec<(String, String)> = json_of(&models)["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "classifier")
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(roles, [("sentiment@1".into(), "primary".into()), ("sentiment@2".into(), "canary".into())]);
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains(r#"keel_predictions_total{model="sentiment@2",role="canary"} 10"#), "{metrics}");
    assert!(metrics.contains(r#"keel_predictions_total{model="sentiment@1",role="primary"} 30"#), "{metrics}");

    // Removing the canary's alias target (pointing it at production's version) ends the canary.
    store.set_alias("sentiment", "canary", 1, "done").await.unwrap();
    state.reload().await;
    for _ in 0..8 {
        assert_eq!(classify_tag(&app).await, "sentiment@1");
    }
}

#[tokio::test]
async fn a_shadow_scores_and_logs_every_request_but_never_answers() {
    let (_home, store) = two_versions().await;
    let shadow = Challenger { spec: "sentiment@2".into(), mode: ChallengerMode::Shadow };
    let state = following(&store, Some(shadow), None).await;
    assert_eq!(state.challenger().unwrap().version.tag(), "sentiment@2");
    let app = keel_server::router(state.clone());
    let texts = ["a wonderful, moving film", "dull and far too long", "I loved it", "I hated it", "superb"];
    for t in texts {
        let (status, body) = call(&app, "POST", "/v1/classify", Some(&json!({"inputs": [t]}).to_string())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(json_of(&body)["model"], "sentiment@1");
    }
    // Shadow scoring runs in a task after the answer; wait for its rows.
    let mut rows = Vec::new();
    for _ in 0..200 {
        state.flush_log().await;
        rows = store.predictions("0000", "9999").await.unwrap();
        if rows.len() >= 2 * texts.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let by = |tag: &str| {
        let mut t: Vec<String> = rows.iter().filter(|r| r.model == tag).map(|r| r.input_text.clone()).collect();
        t.sort();
        t
    };
    let mut want: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
    want.sort();
    assert_eq!(by("sentiment@1"), want);
    assert_eq!(by("sentiment@2"), want, "the shadow scored every request");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    assert!(metrics.contains(r#"keel_predictions_total{model="sentiment@2",role="shadow"} 5"#), "{metrics}");
    // The same head in both versions: the shadow agrees every time.
    assert!(metrics.contains("keel_shadow_agreed_total 5\n"), "{metrics}");
    let _: Value = json_of(&call(&app, "GET", "/v1/models", None).await.1);
}
