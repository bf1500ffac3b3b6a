//! Admission control for work that runs on blocking threads outside the encoder queue (index
//! searches): at most `concurrency` run at once, at most `queue` more wait, each for at most the
//! wait it is given (shorter than the request deadline, so the caller gets the documented 429
//! with `Retry-After` rather than a 503 from the deadline). The permit is moved into the
//! blocking task, so a request cut off by its deadline holds its place until its work has
//! really stopped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

/// How many searches run at once and how many may wait for a turn.
#[derive(Clone, Debug)]
pub struct Admission {
    /// Searches running at once (each on a blocking thread).
    pub concurrency: usize,
    /// Searches that may wait for a turn; one more is refused at once with 429.
    pub queue: usize,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after_secs: u32,
}

impl Default for Admission {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self { concurrency: cores, queue: 32, retry_after_secs: 1 }
    }
}

/// The gate itself: a semaphore and a count of waiters.
#[derive(Debug)]
pub(crate) struct Gate {
    cfg: Admission,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    wait: Duration,
}

/// Takes a waiter off the count however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    /// A gate that lets a request wait at most `wait` for its turn.
    pub(crate) fn new(cfg: Admission, wait: Duration) -> Self {
        let cfg = Admission { concurrency: cfg.concurrency.max(1), ..cfg };
        Self { permits: Arc::new(Semaphore::new(cfg.concurrency)), waiting: AtomicUsize::new(0), wait, cfg }
    }

    /// A turn for `what` (`"search"`), or 429 with `Retry-After` when the queue is full or the
    /// wait is over. Hold the permit for as long as the work runs.
    pub(crate) async fn enter(&self, what: &str) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let busy = |why: String| ApiError::overloaded(why, self.cfg.retry_after_secs);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.cfg.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(busy(format!("too many {what} requests are waiting ({}); retry shortly", self.cfg.queue)));
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(e)) => Err(ApiError::internal(e)),
            Err(_) => Err(busy(format!("no {what} slot came free within {:?}; retry shortly", self.wait))),
        }
    }
}
