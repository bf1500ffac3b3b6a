//! The seam between the server and the encoder, as text-embeddings-inference puts `trait Backend`
//! between its router and the model: [`Embed`] is all the server asks of an encoder (its id, its
//! dimension, vectors for a batch of texts, tokens per text). `keel_embed::Encoder` implements
//! it; tests drive degradation, the circuit breaker and the deadline with failing or slow
//! implementations of their own.
//!
//! [`EncoderSlot`] holds the server's encoder: loaded at start, loaded on first need (a version
//! whose head reads embeddings, `/v1/embeddings`, dense search), or none at all. A server whose
//! versions all read text never loads one. A version trained on a fine-tuned encoder gets its
//! own ([`EncoderSlot::for_version`]), loaded once per adapter and shared by every loaded
//! version that reads it, so production and a canary or shadow may read different encoders.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};

use keel_embed::Encoder;
use keel_eval::FineTuneRecord;

/// Any error an [`Embed`] implementation reports.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the server needs from an encoder. Calls block (compute); the server makes them on
/// blocking threads, never on the async runtime.
pub trait Embed: Send + Sync + std::fmt::Debug {
    /// Stable identity of what this encoder computes; a version or an index built with another
    /// id is not served with this one.
    fn id(&self) -> &str;
    /// Length of every vector.
    fn dim(&self) -> usize;
    /// One vector per text, in input order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError>;
    /// Tokens the model sees for `text` (for usage counts).
    fn count_tokens(&self, text: &str) -> Result<usize, BoxError>;
}

impl Embed for Encoder {
    fn id(&self) -> &str {
        Encoder::id(self)
    }

    fn dim(&self) -> usize {
        Encoder::dim(self)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        Ok(Encoder::embed(self, texts)?)
    }

    fn count_tokens(&self, text: &str) -> Result<usize, BoxError> {
        Ok(Encoder::count_tokens(self, text)?)
    }
}

/// Loads the encoder when first needed (blocking; run on a blocking thread).
pub type LoadEncoder = Box<dyn Fn() -> Result<Arc<dyn Embed>, String> + Send + Sync>;

/// What loading a fine-tuned encoder returns.
pub type Adapted = Pin<Box<dyn Future<Output = Result<Arc<dyn Embed>, String>> + Send>>;

/// Loads the fine-tuned encoder a version records (its adapter from the store, merged into the
/// base model's weights).
pub type LoadAdapted = Box<dyn Fn(FineTuneRecord) -> Adapted + Send + Sync>;

struct Slot {
    current: RwLock<Option<Arc<dyn Embed>>>,
    load: Option<LoadEncoder>,
    load_adapted: std::sync::OnceLock<LoadAdapted>,
    /// Fine-tuned encoders by id, alive while a loaded version holds them.
    adapted: tokio::sync::Mutex<HashMap<String, Weak<dyn Embed>>>,
    /// Why the load failed; kept so a missing model is not fetched again on every request.
    failed: Mutex<Option<String>>,
    /// One load at a time.
    loading: Mutex<()>,
}

/// The server's encoder, shared by the batching worker, the registry follower and the document
/// routes. Cloning shares it.
#[derive(Clone)]
pub struct EncoderSlot(Arc<Slot>);

impl std::fmt::Debug for EncoderSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncoderSlot")
            .field("loaded", &self.get().map(|e| e.id().to_owned()))
            .field("lazy", &self.0.load.is_some())
            .finish()
    }
}

impl<T: Embed + 'static> From<Arc<T>> for EncoderSlot {
    fn from(encoder: Arc<T>) -> Self {
        Self::ready(encoder)
    }
}

impl EncoderSlot {
    fn with(current: Option<Arc<dyn Embed>>, load: Option<LoadEncoder>) -> Self {
        Self(Arc::new(Slot {
            current: RwLock::new(current),
            load,
            load_adapted: std::sync::OnceLock::new(),
            adapted: tokio::sync::Mutex::new(HashMap::new()),
            failed: Mutex::new(None),
            loading: Mutex::new(()),
        }))
    }

    /// The same slot, able to load the fine-tuned encoders versions record through `load`
    /// (without it, such versions answer 503). The first loader given is kept.
    pub fn with_adapted(self, load: impl Fn(FineTuneRecord) -> Adapted + Send + Sync + 'static) -> Self {
        let _ = self.0.load_adapted.set(Box::new(load));
        self
    }

    /// The fine-tuned encoder `record` names: the one a loaded version already reads, or newly
    /// loaded. Its id is checked against the record's.
    pub async fn for_version(&self, record: &FineTuneRecord) -> Result<Arc<dyn Embed>, String> {
        let mut adapted = self.0.adapted.lock().await;
        if let Some(e) = adapted.get(&record.encoder_id).and_then(Weak::upgrade) {
            return Ok(e);
        }
        let Some(load) = self.0.load_adapted.get() else {
            return Err(format!("this server cannot load fine-tuned encoders such as {}", record.encoder_id));
        };
        let encoder = load(record.clone()).await?;
        if encoder.id() != record.encoder_id {
            return Err(format!("the adapter loads as {}, not {}", encoder.id(), record.encoder_id));
        }
        tracing::info!(encoder = encoder.id(), "fine-tuned encoder loaded");
        adapted.retain(|_, w| w.strong_count() > 0);
        adapted.insert(record.encoder_id.clone(), Arc::downgrade(&encoder));
        Ok(encoder)
    }

    /// An encoder loaded already.
    pub fn ready(encoder: Arc<dyn Embed>) -> Self {
        Self::with(Some(encoder), None)
    }

    /// An encoder `load` makes the first time something needs it.
    pub fn lazy(load: impl Fn() -> Result<Arc<dyn Embed>, String> + Send + Sync + 'static) -> Self {
        Self::with(None, Some(Box::new(load)))
    }

    /// No encoder: embedding heads, `/v1/embeddings` and dense search answer 503.
    pub fn none() -> Self {
        Self::with(None, None)
    }

    /// The encoder, if it is loaded; never loads it.
    pub fn get(&self) -> Option<Arc<dyn Embed>> {
        self.0.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the encoder (for drills and tests); the next call uses the new one.
    pub fn set(&self, encoder: Arc<dyn Embed>) {
        *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = Some(encoder);
        *self.0.failed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The encoder, loading it first if needed. Blocks while it loads: call it on a blocking
    /// thread (or through [`EncoderSlot::load`]).
    pub fn get_or_load(&self) -> Result<Arc<dyn Embed>, String> {
        if let Some(e) = self.get() {
            return Ok(e);
        }
        let Some(load) = &self.0.load else {
            return Err("this server has no encoder".into());
        };
        let _one = self.0.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = self.get() {
            return Ok(e);
        }
        if let Some(cause) = self.0.failed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(cause);
        }
        match load() {
            Ok(e) => {
                tracing::info!(encoder = e.id(), "encoder loaded");
                *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                Ok(e)
            }
            Err(cause) => {
                let cause = format!("the encoder could not be loaded: {cause}");
                tracing::error!(%cause, "no encoder");
                *self.0.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(cause.clone());
                Err(cause)
            }
        }
    }

    /// [`EncoderSlot::get_or_load`] on a blocking thread.
    pub async fn load(&self) -> Result<Arc<dyn Embed>, String> {
        if let Some(e) = self.get() {
            return Ok(e);
        }
        let slot = self.clone();
        tokio::task::spawn_blocking(move || slot.get_or_load())
            .await
            .unwrap_or_else(|e| Err(format!("loading the encoder failed: {e}")))
    }
}
