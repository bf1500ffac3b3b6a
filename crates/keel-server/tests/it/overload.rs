//! Overload and work that outlives its request (issue 19): the encoder queue, search admission,
//! the generator's queue, and searches cut off by the deadline.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use keel_server::{AppState, Limits};

use super::embedders::Stalled;
use super::hardening::send;
use super::{encoder, sample};

/// Releases a stalled encoder however the test ends (a failed assertion too), so that the
/// runtime can shut down.
struct Release(Arc<Stalled>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[tokio::test(start_paused = true)]
async fn waiting_in_a_full_queue_is_overload_not_an_encoder_failure() {
    use std::time::Duration;
    // Virtual time: the clock moves when the test advances it.
    let stalled = Stalled::new();
    let _release = Release(stalled.clone());
    let batching = keel_server::Batching {
        deadline: Duration::from_millis(150),
        breaker_failures: 2,
        retry_after_secs: 3,
        ..keel_server::Batching::default()
    };
    let options = keel_server::Options { batching, ..keel_server::Options::default() };
    let app = keel_server::router(AppState::with_options(stalled.clone(), None, options));
    let embed = |app: &axum::Router| {
        let app = app.clone();
        tokio::spawn(async move { send(&app, "POST", "/v1/embeddings", &[], r#"{"input": "x"}"#).await })
    };
    // One request is in the encoder (it will miss its deadline: one real failure) ...
    let slow = embed(&app);
    stalled.started().await;
    // ... and three wait behind it in the queue.
    let waiting: Vec<_> = (0..3).map(|_| embed(&app)).collect();
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        if send(&app, "GET", "/metrics", &[], "").await.2.contains("keel_encoder_queue_depth 3\n") {
            break;
        }
    }
    tokio::time::advance(Duration::from_millis(200)).await;
    let (status, _, body) = slow.await.unwrap();
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"));
    for w in waiting {
        let (status, headers, body) = w.await.unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "a queue wait is overload: {body}");
        assert_eq!(super::error_type(&body), "overloaded");
        assert_eq!(headers.get("retry-after").unwrap(), "3");
    }
    let (_, _, m) = send(&app, "GET", "/metrics", &[], "").await;
    assert_eq!(sample(&m, "keel_encoder_failures_total"), 1.0, "only the request the encoder ran failed");
    assert_eq!(sample(&m, "keel_encoder_queue_timeouts_total"), 3.0);
    assert_eq!(sample(&m, "keel_encoder_circuit_opened_total"), 0.0, "overload does not open the breaker");
    assert_eq!(sample(&m, "keel_encoder_circuit_state"), 0.0);
}

#[tokio::test(start_paused = true)]
async fn searches_wait_a_bounded_time_in_a_bounded_queue_then_get_429() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    super::search::build(dir.path(), &super::search::DOCS);
    // The query encoder stalls until released: the first dense search holds the only slot.
    let stalled = Stalled::new();
    let _release = Release(stalled.clone());
    let limits = Limits { request_deadline: Duration::from_secs(3), ..Limits::default() };
    let svc = keel_server::SearchService::open(dir.path(), stalled.clone())
        .unwrap()
        .with_limits(limits.clone())
        .with_admission(keel_server::Admission { concurrency: 1, queue: 1, retry_after_secs: 2 });
    let options = keel_server::Options { limits, ..keel_server::Options::default() };
    let app =
        keel_server::router_with(AppState::with_options(encoder(), None, options), keel_server::search_extension(svc));
    let search = |body: &'static str| {
        let app = app.clone();
        tokio::spawn(async move { send(&app, "POST", "/v1/search", &[], body).await })
    };
    let first = search(r#"{"query": "green tea", "mode": "dense"}"#);
    stalled.started().await;
    let second = search(r#"{"query": "green tea", "mode": "bm25"}"#);
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    // The queue (one place) is taken: refused at once.
    let (status, headers, body) = send(&app, "POST", "/v1/search", &[], r#"{"query": "tea", "mode": "bm25"}"#).await;
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, "overloaded"), "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "2");
    // The waiting one gets 429 after a third of the deadline, before the deadline's 503.
    tokio::time::advance(Duration::from_millis(1100)).await;
    let (status, headers, body) = second.await.unwrap();
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, "overloaded"), "{body}");
    assert_eq!(headers.get("retry-after").unwrap(), "2");
    stalled.release();
    let (status, _, body) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    // The slot is free again.
    let (status, _, body) = send(&app, "POST", "/v1/search", &[], r#"{"query": "tea", "mode": "bm25"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A generator that answers only once released; it says when a call has begun.
struct HeldGenerator {
    released: Arc<(Mutex<bool>, std::sync::Condvar)>,
    started: Arc<tokio::sync::Notify>,
}

/// Releases the held generator however the test ends, so that the runtime can shut down.
struct ReleaseGenerator(Arc<(Mutex<bool>, std::sync::Condvar)>);

impl Drop for ReleaseGenerator {
    fn drop(&mut self) {
        *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.0.1.notify_all();
    }
}

impl keel_llm::Generator for HeldGenerator {
    fn name(&self) -> String {
        "test:held".into()
    }
    fn model_id(&self) -> String {
        "test:held@1".into()
    }
    fn context_window(&self) -> usize {
        4096
    }
    fn prompt_tokens(&self, messages: &[keel_llm::Message]) -> Result<usize, keel_llm::LlmError> {
        Ok(messages.iter().map(|m| m.content.split_whitespace().count() + 4).sum())
    }
    fn text_tokens(&self, text: &str) -> Result<usize, keel_llm::LlmError> {
        Ok(text.split_whitespace().count())
    }
    fn generate(
        &self,
        req: &keel_llm::GenRequest,
        _: &mut dyn FnMut(&str),
    ) -> Result<keel_llm::Generation, keel_llm::LlmError> {
        self.started.notify_one();
        let (lock, wake) = &*self.released;
        let mut released = lock.lock().unwrap();
        while !*released {
            released = wake.wait(released).unwrap();
        }
        Ok(keel_llm::Generation {
            text: "Green tea is steeped at eighty degrees [1].".into(),
            generator: self.name(),
            model: self.model_id(),
            tokens_in: self.prompt_tokens(&req.messages)? as u64,
            tokens_out: 9,
            cost: 0.0,
            finish: keel_llm::Finish::Stop,
            attempts: 1,
            failed: Vec::new(),
        })
    }
}

/// An app answering from the search fixture with a generator held until released, and a
/// `request_deadline` of `secs`.
struct HeldAnswers {
    app: axum::Router,
    release: ReleaseGenerator,
    started: Arc<tokio::sync::Notify>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl HeldAnswers {
    async fn start(secs: u64) -> Self {
        let home = tempfile::tempdir().unwrap();
        let store = keel_store::Store::open(home.path()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        super::search::build(dir.path(), &super::search::DOCS);
        let released = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let release = ReleaseGenerator(released.clone());
        let started = Arc::new(tokio::sync::Notify::new());
        let (r, s) = (released.clone(), started.clone());
        let load: keel_server::LoadChain = Arc::new(move || {
            let held = HeldGenerator { released: r.clone(), started: s.clone() };
            keel_llm::Chain::new(vec![Box::new(held)]).map_err(|e| e.to_string())
        });
        let limits = Limits { request_deadline: std::time::Duration::from_secs(secs), ..Limits::default() };
        let answer = keel_server::AnswerService::open(dir.path(), encoder(), Some(load), store)
            .unwrap()
            .with_limits(limits.clone());
        let options = keel_server::Options { limits, ..keel_server::Options::default() };
        let app = keel_server::router_with(
            AppState::with_options(encoder(), None, options),
            keel_server::answer_extension(answer),
        );
        Self { app, release, started, _dirs: (home, dir) }
    }
}

/// Asks `question` of `app` with a generated answer, on a task of its own.
fn ask(
    app: &axum::Router,
    question: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, axum::http::HeaderMap, String)> {
    let app = app.clone();
    let body = serde_json::json!({"question": question, "mode": "bm25", "answer_mode": "generate"}).to_string();
    tokio::spawn(async move { send(&app, "POST", "/v1/answer", &[], &body).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_the_generator_gets_429_before_the_deadline() {
    // The generator's queue wait is a third of the deadline: 2 s here, against a 6 s deadline.
    let held = HeldAnswers::start(6).await;
    let (release, started) = (held.release, held.started.clone());
    let ask = |question: &'static str| ask(&held.app, question);
    let first = ask("how hot should the water be for green tea?");
    started.notified().await;
    // The generator is busy until released (after the second answer is in): no race on time.
    let (status, headers, body) = ask("how long does sourdough bake?").await.unwrap();
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, "overloaded"), "{body}");
    assert!(headers.contains_key("retry-after"));
    drop(release);
    let (status, _, body) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(start_paused = true)]
async fn a_search_cut_off_by_the_deadline_stops_and_frees_its_slot() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    super::search::build(dir.path(), &super::search::DOCS);
    let stalled = Stalled::new();
    let release = Release(stalled.clone());
    let limits = Limits { request_deadline: Duration::from_millis(300), ..Limits::default() };
    let svc = keel_server::SearchService::open(dir.path(), stalled.clone())
        .unwrap()
        .with_limits(limits.clone())
        .with_admission(keel_server::Admission { concurrency: 1, queue: 4, retry_after_secs: 1 });
    let options = keel_server::Options { limits, ..keel_server::Options::default() };
    let state = AppState::with_options(encoder(), None, options);
    let app = keel_server::router_with(state, keel_server::search_extension(svc.clone()));
    let first = {
        let app = app.clone();
        tokio::spawn(async move {
            send(&app, "POST", "/v1/search", &[], r#"{"query": "green tea", "mode": "dense"}"#).await
        })
    };
    stalled.started().await;
    tokio::time::advance(Duration::from_millis(400)).await;
    let (status, _, body) = first.await.unwrap();
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded"));
    assert_eq!(svc.stopped(), 0, "the search is still in the encoder");
    // The encoder returns; the search sees that its request is gone and does not go on.
    drop(release);
    // Its slot is held until then: the next search gets it once the first has stopped.
    let (status, _, body) = send(&app, "POST", "/v1/search", &[], r#"{"query": "tea", "mode": "bm25"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(svc.stopped(), 1, "the cut-off search stopped before searching");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_cut_off_while_generating_keeps_the_next_from_generating_beside_it() {
    // A 3 s deadline: the generator's queue wait is 1 s.
    let held = HeldAnswers::start(3).await;
    let (release, started) = (held.release, held.started.clone());
    let ask = |question: &'static str| ask(&held.app, question);
    let first = ask("how hot should the water be for green tea?");
    started.notified().await;
    // The generation is held past the deadline: the first request is cut off ...
    let (status, _, body) = first.await.unwrap();
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::SERVICE_UNAVAILABLE, "deadline_exceeded"));
    // ... but its generation still runs, so the next one waits for it instead of starting beside it.
    let (status, _, body) = ask("how long does sourdough bake?").await.unwrap();
    assert_eq!((status, super::error_type(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, "overloaded"), "{body}");
    drop(release);
}
