//! The server's Prometheus metrics, in a registry owned by the server (not a global).
//!
//! `GET /metrics` answers in the Prometheus text format 0.0.4 by default and in OpenMetrics 1.0
//! when the scraper asks for it (`Accept: application/openmetrics-text`), as Prometheus does.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteStatus {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Route {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelInfo {
    pub model: String,
    pub encoder: String,
    /// `primary`, `canary` or `shadow`.
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ModelRole {
    pub model: String,
    pub role: String,
}

/// The server's metrics. Fields are the series the server updates; [`Metrics::register`] lets
/// other parts (the drift monitor) add their own to the same registry.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Family<RouteStatus, Counter>,
    pub latency: Family<Route, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub deadline_exceeded: Counter,
    pub texts: Family<Route, Counter>,
    /// Texts per encoder call.
    pub batch_size: Histogram,
    /// Requests merged into one encoder call.
    pub batch_requests: Histogram,
    /// Requests waiting in the encoder queue.
    pub queue_depth: Gauge,
    /// Requests refused with 429 because the encoder queue was full.
    pub queue_rejected: Counter,
    /// Requests whose deadline passed while they waited in the queue (overload, not a failure).
    pub queue_timeouts: Counter,
    /// Encoder calls made (one per batch).
    pub encoder_calls: Counter,
    /// Encoder calls that failed (error, panic or deadline missed).
    pub encoder_failures: Counter,
    /// 1 while the encoder is failing and classify answers from the fallback head.
    pub degraded_state: Gauge,
    /// Circuit breaker: 0 closed, 1 open, 2 half-open.
    pub breaker_state: Gauge,
    /// Times the breaker opened.
    pub breaker_opened: Counter,
    /// Requests answered without calling the encoder because the breaker was open.
    pub breaker_short_circuited: Counter,
    /// Classify responses answered by the fallback head.
    pub degraded: Counter,
    /// Predictions answered, by model version and role (primary or canary), and scored in shadow.
    pub predictions: Family<ModelRole, Counter>,
    /// Shadow predictions whose label equals the one the primary answered.
    pub shadow_agreed: Counter,
    /// Model swaps (promotion, rollback, reload) that took effect.
    pub model_swaps: Counter,
    /// Registry changes the server could not follow (the new version failed to load).
    pub model_reload_failures: Counter,
    /// Predictions written to the prediction log.
    pub log_written: Counter,
    /// Predictions written to the local spill file (buffer full or store failing).
    pub log_spilled: Counter,
    /// Spilled predictions later written to the store.
    pub log_replayed: Counter,
    /// Predictions lost: neither the store nor the spill file took them.
    pub log_dropped: Counter,
    /// Predictions the spill file refused because the spill files reached their size cap.
    pub log_spill_refused: Counter,
    /// Store writes of the prediction log that failed (their rows were spilled).
    pub log_failed: Counter,
    model_info: Family<ModelInfo, Gauge>,
    current: Mutex<Vec<ModelInfo>>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Mutex::new(Registry::with_prefix("keel")),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
            deadline_exceeded: Counter::default(),
            texts: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            batch_requests: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            queue_depth: Gauge::default(),
            queue_rejected: Counter::default(),
            queue_timeouts: Counter::default(),
            encoder_calls: Counter::default(),
            encoder_failures: Counter::default(),
            degraded_state: Gauge::default(),
            breaker_state: Gauge::default(),
            breaker_opened: Counter::default(),
            breaker_short_circuited: Counter::default(),
            degraded: Counter::default(),
            predictions: Family::default(),
            shadow_agreed: Counter::default(),
            model_swaps: Counter::default(),
            model_reload_failures: Counter::default(),
            log_written: Counter::default(),
            log_spilled: Counter::default(),
            log_replayed: Counter::default(),
            log_dropped: Counter::default(),
            log_spill_refused: Counter::default(),
            log_failed: Counter::default(),
            model_info: Family::default(),
            current: Mutex::new(Vec::new()),
        };
        m.register("http_requests", "HTTP requests by route and status code", m.requests.clone());
        m.register("http_request_duration_seconds", "Time to answer a request, by route", m.latency.clone());
        m.register("http_requests_in_flight", "Requests being answered now", m.in_flight.clone());
        m.register(
            "deadline_exceeded",
            "Requests cut off by the per-request deadline (503)",
            m.deadline_exceeded.clone(),
        );
        m.register("texts", "Texts received, by route", m.texts.clone());
        m.register("encoder_batch_size", "Texts per encoder call", m.batch_size.clone());
        m.register("encoder_batch_requests", "Requests merged into one encoder call", m.batch_requests.clone());
        m.register("encoder_queue_depth", "Requests waiting for the encoder", m.queue_depth.clone());
        m.register("encoder_queue_rejected", "Requests refused (429) with the queue full", m.queue_rejected.clone());
        m.register(
            "encoder_queue_timeouts",
            "Requests whose deadline passed while they waited for the encoder (overload; not encoder failures)",
            m.queue_timeouts.clone(),
        );
        m.register("encoder_calls", "Encoder calls (one per batch)", m.encoder_calls.clone());
        m.register("encoder_failures", "Encoder calls that failed or missed the deadline", m.encoder_failures.clone());
        m.register("encoder_degraded", "1 while the encoder is failing (fallback answers)", m.degraded_state.clone());
        m.register(
            "encoder_circuit_state",
            "Encoder circuit breaker: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        m.register("encoder_circuit_opened", "Times the encoder circuit breaker opened", m.breaker_opened.clone());
        m.register(
            "encoder_circuit_short_circuited",
            "Requests that skipped the encoder because its breaker was open",
            m.breaker_short_circuited.clone(),
        );
        m.register("degraded", "Classify responses answered by the fallback head", m.degraded.clone());
        m.register(
            "predictions",
            "Predictions by model version and role (primary, canary, shadow)",
            m.predictions.clone(),
        );
        m.register("shadow_agreed", "Shadow predictions that agree with the primary's label", m.shadow_agreed.clone());
        m.register("model_swaps", "Model swaps (promotion, rollback, reload) that took effect", m.model_swaps.clone());
        m.register(
            "model_reload_failures",
            "Registry changes not followed: the new version failed to load",
            m.model_reload_failures.clone(),
        );
        m.register("prediction_log_written", "Predictions written to the prediction log", m.log_written.clone());
        m.register("prediction_log_spilled", "Predictions spilled to the local file", m.log_spilled.clone());
        m.register("prediction_log_replayed", "Spilled predictions written to the store later", m.log_replayed.clone());
        m.register(
            "prediction_log_dropped",
            "Predictions lost: neither store nor spill file took them",
            m.log_dropped.clone(),
        );
        m.register(
            "prediction_log_spill_refused",
            "Predictions the spill file refused: the spill files reached max_spill_bytes (also counted as dropped)",
            m.log_spill_refused.clone(),
        );
        m.register("prediction_log_failed", "Prediction rows the store refused (then spilled)", m.log_failed.clone());
        m.register("model_info", "The model versions answering or shadowing classify (value 1)", m.model_info.clone());
        m
    }

    /// Adds a metric to the server's registry (the name gets the `keel_` prefix).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// Marks these models (tag, the encoder they read or `none`, role) as in use (value 1) and
    /// the previous ones 0.
    pub fn set_models(&self, models: &[ModelInfo]) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        for old in current.drain(..) {
            self.model_info.get_or_create(&old).set(0);
        }
        for info in models {
            self.model_info.get_or_create(info).set(1);
            current.push(info.clone());
        }
    }

    /// The OpenMetrics 1.0 text the registry encodes.
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// The same metrics in the Prometheus text format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render_openmetrics())
    }
}

/// OpenMetrics text to Prometheus text 0.0.4: a counter family `x` becomes `x_total` in its
/// `# HELP`/`# TYPE` lines (its samples are already `x_total`), `# UNIT` and `# EOF` go.
pub(crate) fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
