//! `Embed` implementations that drive the server's failure paths: one that fails, one that
//! stalls until released, one that counts (or refuses) calls, one under another id. Each wraps
//! the real encoder for what it does not change, so the system under test stays real.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use keel_embed::Encoder;
use keel_server::{BoxError, Embed};

use super::encoder;

/// An encoder that loads (same id and dimension as the real one) but cannot embed, as a broken
/// model folder would: every call fails.
#[derive(Debug)]
pub struct Failing {
    inner: Arc<Encoder>,
    pub calls: AtomicUsize,
}

impl Failing {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { inner: encoder(), calls: AtomicUsize::new(0) })
    }
}

impl Embed for Failing {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn embed(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err("index out of range: token type id 7 in a table of 2 (a failing test encoder)".into())
    }
    fn count_tokens(&self, text: &str) -> Result<usize, BoxError> {
        self.inner.count_tokens(text).map_err(Into::into)
    }
}

/// The real encoder, except that each call blocks until [`Stalled::release`]; the test learns
/// that a call has started through [`Stalled::started`] (no clock involved).
#[derive(Debug)]
pub struct Stalled {
    inner: Arc<Encoder>,
    released: Mutex<bool>,
    wake: Condvar,
    started: tokio::sync::Notify,
}

impl Stalled {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            inner: encoder(),
            released: Mutex::new(false),
            wake: Condvar::new(),
            started: tokio::sync::Notify::new(),
        })
    }

    /// Waits until a call is blocked in the encoder.
    pub async fn started(&self) {
        self.started.notified().await;
    }

    /// Lets every blocked and later call through.
    pub fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.wake.notify_all();
    }
}

impl Embed for Stalled {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        self.started.notify_one();
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.wake.wait(released).unwrap();
        }
        drop(released);
        self.inner.embed(texts).map_err(Into::into)
    }
    fn count_tokens(&self, text: &str) -> Result<usize, BoxError> {
        self.inner.count_tokens(text).map_err(Into::into)
    }
}

/// The real encoder, counting the texts it embeds; with `refuse`, any call panics (a model
/// that needs no encoder must never reach it).
#[derive(Debug)]
pub struct Counting {
    inner: Arc<Encoder>,
    refuse: bool,
    pub texts: AtomicUsize,
}

impl Counting {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { inner: encoder(), refuse: false, texts: AtomicUsize::new(0) })
    }

    pub fn refusing() -> Arc<Self> {
        Arc::new(Self { inner: encoder(), refuse: true, texts: AtomicUsize::new(0) })
    }

    pub fn texts(&self) -> usize {
        self.texts.load(Ordering::SeqCst)
    }
}

impl Embed for Counting {
    fn id(&self) -> &str {
        self.inner.id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        self.texts.fetch_add(texts.len(), Ordering::SeqCst);
        assert!(!self.refuse, "the encoder was called for {texts:?}");
        self.inner.embed(texts).map_err(Into::into)
    }
    fn count_tokens(&self, text: &str) -> Result<usize, BoxError> {
        assert!(!self.refuse, "the encoder was asked to count the tokens of {text:?}");
        self.inner.count_tokens(text).map_err(Into::into)
    }
}

/// The real encoder under another id, as a server started with a different model would be.
#[derive(Debug)]
pub struct Renamed {
    inner: Arc<Encoder>,
    id: String,
}

impl Renamed {
    pub fn new(id: &str) -> Arc<Self> {
        Arc::new(Self { inner: encoder(), id: id.to_owned() })
    }
}

impl Embed for Renamed {
    fn id(&self) -> &str {
        &self.id
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BoxError> {
        self.inner.embed(texts).map_err(Into::into)
    }
    fn count_tokens(&self, text: &str) -> Result<usize, BoxError> {
        self.inner.count_tokens(text).map_err(Into::into)
    }
}
