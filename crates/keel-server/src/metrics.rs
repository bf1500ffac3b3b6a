use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
}

/// The server's Prometheus metrics, in a registry owned by the server (not a global).
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RouteStatus, Counter>,
    pub latency: Family<Route, Histogram, fn() -> Histogram>,
    pub texts: Family<Route, Counter>,
    /// Texts per encoder call.
    pub batch_size: Histogram,
    /// Requests merged into one encoder call.
    pub batch_requests: Histogram,
    /// Requests waiting in the encoder queue.
    pub queue_depth: Gauge,
    /// Requests refused with 429 because the encoder queue was full.
    pub queue_rejected: Counter,
    /// Encoder calls that failed (error, panic or deadline missed).
    pub encoder_failures: Counter,
    /// 1 while the encoder is failing and classify answers from the fallback head.
    pub degraded_state: Gauge,
    /// Classify responses answered by the fallback head.
    pub degraded: Counter,
    /// Predictions written to the prediction log.
    pub log_written: Counter,
    /// Predictions dropped because the log buffer was full.
    pub log_dropped: Counter,
    /// Predictions lost because the store refused the write.
    pub log_failed: Counter,
    model_info: Family<ModelInfo, Gauge>,
    current: Mutex<Option<ModelInfo>>,
    encoder: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new(encoder: &str) -> Self {
        let mut registry = Registry::with_prefix("keel");
        let requests = Family::<RouteStatus, Counter>::default();
        let latency = Family::<Route, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let texts = Family::<Route, Counter>::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        let batch_requests = Histogram::new(exponential_buckets(1.0, 2.0, 8));
        let model_info = Family::<ModelInfo, Gauge>::default();
        let (queue_depth, degraded_state) = (Gauge::default(), Gauge::default());
        let (queue_rejected, encoder_failures, degraded) = (Counter::default(), Counter::default(), Counter::default());
        let (log_written, log_dropped, log_failed) = (Counter::default(), Counter::default(), Counter::default());
        registry.register("http_requests", "HTTP requests by route and status code", requests.clone());
        registry.register("http_request_duration_seconds", "Time to answer a request, by route", latency.clone());
        registry.register("texts", "Texts received, by route", texts.clone());
        registry.register("encoder_batch_size", "Texts per encoder call", batch_size.clone());
        registry.register("encoder_batch_requests", "Requests merged into one encoder call", batch_requests.clone());
        registry.register("encoder_queue_depth", "Requests waiting for the encoder", queue_depth.clone());
        registry.register(
            "encoder_queue_rejected",
            "Requests refused (429) with the queue full",
            queue_rejected.clone(),
        );
        registry.register(
            "encoder_failures",
            "Encoder calls that failed or missed the deadline",
            encoder_failures.clone(),
        );
        registry.register(
            "encoder_degraded",
            "1 while the encoder is failing (fallback answers)",
            degraded_state.clone(),
        );
        registry.register("degraded", "Classify responses answered by the fallback head", degraded.clone());
        registry.register("prediction_log_written", "Predictions written to the prediction log", log_written.clone());
        registry.register("prediction_log_dropped", "Predictions dropped: log buffer full", log_dropped.clone());
        registry.register("prediction_log_failed", "Predictions lost: the store refused the write", log_failed.clone());
        registry.register("model_info", "The model version answering classify requests (value 1)", model_info.clone());
        Self {
            registry,
            requests,
            latency,
            texts,
            batch_size,
            batch_requests,
            queue_depth,
            queue_rejected,
            encoder_failures,
            degraded_state,
            degraded,
            log_written,
            log_dropped,
            log_failed,
            model_info,
            current: Mutex::new(None),
            encoder: encoder.to_owned(),
        }
    }

    pub fn set_model(&self, tag: &str) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = current.take() {
            self.model_info.get_or_create(&old).set(0);
        }
        let info = ModelInfo { model: tag.to_owned(), encoder: self.encoder.clone() };
        self.model_info.get_or_create(&info).set(1);
        *current = Some(info);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
