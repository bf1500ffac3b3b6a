//! The encoder queue: every text to embed, from any route, goes through one bounded queue to one
//! worker task. The worker takes the oldest request, waits at most `max_wait` for more to fill a
//! batch of up to `max_batch` texts, runs the encoder once on a blocking thread, and answers each
//! request through its own oneshot. A full queue is refused at once (the caller answers 429);
//! requests whose caller has gone (deadline passed, client disconnected) are skipped unrun.
//!
//! The worker also keeps the encoder's health: a failed call (error, panic) or a deadline missed
//! while the encoder was computing the request marks the server degraded; the next successful
//! call clears it. A deadline that passes while the request still waits in the queue is overload,
//! not an encoder failure: it is answered 429 (classify: from the fallback head) and counted in
//! `keel_encoder_queue_timeouts_total`, and neither degrades the server nor moves the breaker. A circuit breaker sits in front
//! of the queue: after `breaker_failures` failures in a row it opens and requests fail at once
//! (classify answers from the fallback head) without calling the encoder; after
//! `breaker_cooldown` it lets one request through as a probe (half-open): success closes it,
//! failure opens it for another cool-down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::ApiError;
use crate::embed::{Embed, EncoderSlot};
use crate::metrics::{Metrics, Route};

/// How the encoder queue batches and how long a request may wait for it.
#[derive(Clone, Debug)]
pub struct Batching {
    /// Requests that may wait for the encoder; one more gets 429.
    pub queue_capacity: usize,
    /// Most texts in one encoder call (the encoder's batch size). A larger request runs alone.
    pub max_batch: usize,
    /// Longest the worker waits for more requests to fill a batch.
    pub max_wait: Duration,
    /// Deadline for one request's embeddings, queueing included; past it the encoder counts as
    /// failing and classify answers from the fallback head.
    pub deadline: Duration,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u32,
    /// Consecutive encoder failures that open the circuit breaker (0: never open it).
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before it lets one probe through.
    pub breaker_cooldown: Duration,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            queue_capacity: 64,
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            deadline: Duration::from_secs(10),
            retry_after_secs: 1,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(5),
        }
    }
}

/// Embeddings for one request, in input order, and the tokens its texts made.
pub(crate) struct Encoded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    #[error("the encoder queue is full ({0} requests waiting); retry shortly")]
    Full(usize),
    #[error("the encoder failed: {0}")]
    Failed(String),
    #[error("the encoder did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the encoder is busy: the request waited {0:?} in its queue; retry shortly")]
    QueueTimeout(Duration),
    #[error("the encoder worker has stopped")]
    Stopped,
    #[error("the encoder is failing and its circuit breaker is open for {0:?} more: {1}")]
    CircuitOpen(Duration, String),
}

/// The breaker's state; see the module comment.
#[derive(Clone, Copy, Debug)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight since `since`; a probe whose caller vanished is replaced after the
    /// deadline.
    HalfOpen {
        since: Instant,
    },
}

struct Job {
    texts: Vec<String>,
    /// A version's own (fine-tuned) encoder; `None`: the server's. A batch holds one encoder's
    /// jobs only.
    encoder: Option<Arc<dyn Embed>>,
    reply: oneshot::Sender<Result<Encoded, String>>,
    /// Set by the worker when the job's batch goes to the encoder: a deadline before that is a
    /// queue wait, after it an encoder that is too slow.
    started: Arc<AtomicBool>,
}

/// Whether two jobs embed with the same encoder.
fn same_encoder(a: &Option<Arc<dyn Embed>>, b: &Option<Arc<dyn Embed>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.id() == b.id(),
        _ => false,
    }
}

/// The encoder in use and whether it is failing; shared by the handlers and the worker.
#[derive(Debug)]
pub(crate) struct EncoderHealth {
    encoder: EncoderSlot,
    degraded: AtomicBool,
    last_error: Mutex<Option<String>>,
    breaker: Mutex<Breaker>,
    cfg: Batching,
    metrics: Arc<Metrics>,
}

impl EncoderHealth {
    pub fn encoder(&self) -> &EncoderSlot {
        &self.encoder
    }

    pub fn degraded(&self) -> Option<String> {
        if self.degraded.load(Ordering::Acquire) {
            Some(self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default())
        } else {
            None
        }
    }

    fn last_error(&self) -> String {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
    }

    /// Whether a request may call the encoder now; moves an open breaker whose cool-down is over
    /// to half-open, with this request as its probe.
    fn admit(&self) -> Result<(), EncodeError> {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refuse = |until: Instant| {
            self.metrics.breaker_short_circuited.inc();
            Err(EncodeError::CircuitOpen(until.saturating_duration_since(now), self.last_error()))
        };
        match *b {
            Breaker::Closed { .. } => Ok(()),
            Breaker::Open { until } if now < until => refuse(until),
            Breaker::HalfOpen { since } if now < since + self.cfg.deadline => refuse(since + self.cfg.deadline),
            Breaker::Open { .. } | Breaker::HalfOpen { .. } => {
                *b = Breaker::HalfOpen { since: now };
                self.metrics.breaker_state.set(2);
                tracing::info!("encoder circuit half-open: probing the encoder");
                Ok(())
            }
        }
    }

    fn failed(&self, cause: &str) {
        self.metrics.encoder_failures.inc();
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(cause.to_owned());
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.metrics.degraded_state.set(1);
            tracing::warn!(%cause, "encoder failing: classify answers from the fallback head");
        }
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let failures = match *b {
            Breaker::Closed { failures } => failures + 1,
            Breaker::HalfOpen { .. } => u32::MAX,
            Breaker::Open { .. } => return,
        };
        if self.cfg.breaker_failures > 0 && failures >= self.cfg.breaker_failures {
            *b = Breaker::Open { until: Instant::now() + self.cfg.breaker_cooldown };
            self.metrics.breaker_state.set(1);
            self.metrics.breaker_opened.inc();
            tracing::warn!(cooldown = ?self.cfg.breaker_cooldown, "encoder circuit open: not calling the encoder");
        } else {
            *b = Breaker::Closed { failures };
        }
    }

    fn succeeded(&self) {
        {
            let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
            if !matches!(*b, Breaker::Closed { failures: 0 }) {
                if !matches!(*b, Breaker::Closed { .. }) {
                    tracing::info!("encoder circuit closed");
                }
                *b = Breaker::Closed { failures: 0 };
                self.metrics.breaker_state.set(0);
            }
        }
        if self.degraded.swap(false, Ordering::AcqRel) {
            self.metrics.degraded_state.set(0);
            tracing::info!("encoder recovered");
        }
    }
}

/// The sending side of the queue; dropping it stops the worker once the queue is empty.
#[derive(Debug)]
pub(crate) struct Batcher {
    tx: mpsc::Sender<Job>,
    health: Arc<EncoderHealth>,
    cfg: Batching,
}

impl Batcher {
    /// Starts the worker on the current Tokio runtime.
    pub fn start(encoder: EncoderSlot, cfg: Batching, metrics: Arc<Metrics>) -> Self {
        let cfg = Batching { queue_capacity: cfg.queue_capacity.max(1), max_batch: cfg.max_batch.max(1), ..cfg };
        let health = Arc::new(EncoderHealth {
            encoder,
            degraded: AtomicBool::new(false),
            last_error: Mutex::new(None),
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
            cfg: cfg.clone(),
            metrics,
        });
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        tokio::spawn(worker(rx, health.clone(), cfg.clone()));
        Self { tx, health, cfg }
    }

    pub fn health(&self) -> &EncoderHealth {
        &self.health
    }

    pub fn config(&self) -> &Batching {
        &self.cfg
    }

    /// [`Batcher::encode_with`], counting the texts under `route`.
    pub async fn encode_for_with(
        &self,
        route: &str,
        texts: Vec<String>,
        encoder: Option<Arc<dyn Embed>>,
    ) -> Result<Encoded, EncodeError> {
        self.health.metrics.texts.get_or_create(&Route { route: route.to_owned() }).inc_by(texts.len() as u64);
        self.encode_with(texts, encoder).await
    }

    /// 429 with `Retry-After` for a full queue; 503 for a failing encoder (with `Retry-After`
    /// while the breaker is open).
    /// The encoder's own error is the cause, kept for the log.
    pub fn api_error(&self, e: EncodeError) -> ApiError {
        match e {
            EncodeError::Full(_) | EncodeError::QueueTimeout(_) => {
                ApiError::overloaded(e.to_string(), self.cfg.retry_after_secs)
            }
            EncodeError::CircuitOpen(left, cause) => ApiError::unavailable_for(
                format!("the encoder is failing and its circuit breaker is open for {left:?} more"),
                u32::try_from(left.as_secs() + 1).unwrap_or(u32::MAX),
            )
            .with_cause(cause),
            EncodeError::Failed(cause) => ApiError::unavailable("the encoder failed").with_cause(cause),
            e => ApiError::unavailable(e.to_string()),
        }
    }

    /// Embeds `texts` with the server's encoder in whatever batch the worker puts them, within
    /// the deadline.
    pub async fn encode(&self, texts: Vec<String>) -> Result<Encoded, EncodeError> {
        self.encode_with(texts, None).await
    }

    /// [`Batcher::encode`] with `encoder` (a version's own) instead of the server's when given.
    pub async fn encode_with(
        &self,
        texts: Vec<String>,
        encoder: Option<Arc<dyn Embed>>,
    ) -> Result<Encoded, EncodeError> {
        let metrics = &self.health.metrics;
        self.health.admit()?;
        let (reply, rx) = oneshot::channel();
        let started = Arc::new(AtomicBool::new(false));
        metrics.queue_depth.inc();
        if let Err(e) = self.tx.try_send(Job { texts, encoder, reply, started: started.clone() }) {
            metrics.queue_depth.dec();
            return Err(match e {
                mpsc::error::TrySendError::Full(_) => {
                    metrics.queue_rejected.inc();
                    EncodeError::Full(self.cfg.queue_capacity)
                }
                mpsc::error::TrySendError::Closed(_) => EncodeError::Stopped,
            });
        }
        match tokio::time::timeout(self.cfg.deadline, rx).await {
            Err(_) if !started.load(Ordering::Acquire) => {
                metrics.queue_timeouts.inc();
                Err(EncodeError::QueueTimeout(self.cfg.deadline))
            }
            Err(_) => {
                let e = EncodeError::Timeout(self.cfg.deadline);
                self.health.failed(&e.to_string());
                Err(e)
            }
            Ok(Err(_)) => Err(EncodeError::Stopped),
            Ok(Ok(Err(cause))) => Err(EncodeError::Failed(cause)),
            Ok(Ok(Ok(encoded))) => Ok(encoded),
        }
    }
}

async fn worker(mut rx: mpsc::Receiver<Job>, health: Arc<EncoderHealth>, cfg: Batching) {
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => {
                    health.metrics.queue_depth.dec();
                    job
                }
                None => return,
            },
        };
        let mut texts = first.texts.len();
        let mut jobs = vec![first];
        let fill_by = Instant::now() + cfg.max_wait;
        while texts < cfg.max_batch {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(fill_by, rx.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                },
            };
            health.metrics.queue_depth.dec();
            if job.reply.is_closed() {
                continue;
            }
            if texts + job.texts.len() > cfg.max_batch || !same_encoder(&job.encoder, &jobs[0].encoder) {
                carry = Some(job);
                break;
            }
            texts += job.texts.len();
            jobs.push(job);
        }
        jobs.retain(|j| !j.reply.is_closed());
        for job in &jobs {
            job.started.store(true, Ordering::Release);
        }
        if !jobs.is_empty() {
            run_batch(&health, jobs).await;
        }
    }
}

/// One encoder call for every text of `jobs`, then each job's share of the result.
async fn run_batch(health: &EncoderHealth, jobs: Vec<Job>) {
    let mut texts = Vec::with_capacity(jobs.iter().map(|j| j.texts.len()).sum());
    let mut replies = Vec::with_capacity(jobs.len());
    let own = jobs.first().and_then(|j| j.encoder.clone());
    for job in jobs {
        replies.push((job.texts.len(), job.reply));
        texts.extend(job.texts);
    }
    health.metrics.batch_size.observe(texts.len() as f64);
    health.metrics.batch_requests.observe(replies.len() as f64);
    health.metrics.encoder_calls.inc();
    let slot = health.encoder().clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let encoder = match own {
            Some(e) => e,
            None => slot.get_or_load()?,
        };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens = refs
            .iter()
            .map(|t| encoder.count_tokens(t))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((encoder.embed(&refs).map_err(|e| e.to_string())?, tokens))
    })
    .await;
    let result = match outcome {
        Ok(Ok((vectors, tokens))) if vectors.len() == tokens.len() => Ok((vectors, tokens)),
        Ok(Ok((vectors, tokens))) => Err(format!("{} vectors for {} texts", vectors.len(), tokens.len())),
        Ok(Err(e)) => Err(e),
        Err(e) if e.is_panic() => Err(format!("the encoder panicked: {}", panic_message(e.into_panic()))),
        Err(e) => Err(e.to_string()),
    };
    match result {
        Ok((vectors, tokens)) => {
            health.succeeded();
            let (mut vectors, mut tokens) = (vectors.into_iter(), tokens.into_iter());
            for (n, reply) in replies {
                let encoded =
                    Encoded { vectors: vectors.by_ref().take(n).collect(), tokens: tokens.by_ref().take(n).sum() };
                let _ = reply.send(Ok(encoded));
            }
        }
        Err(cause) => {
            health.failed(&cause);
            for (_, reply) in replies {
                let _ = reply.send(Err(cause.clone()));
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(|| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}
