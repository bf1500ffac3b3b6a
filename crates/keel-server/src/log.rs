//! The prediction log: handlers hand each prediction to a bounded channel without waiting; one
//! background task writes them to the store in batches (every `flush_rows` rows or every
//! `flush_interval`, whichever comes first). A full channel drops the row and counts it
//! (`keel_prediction_log_dropped_total`): the request path never blocks on the database.

use std::sync::Arc;
use std::time::Duration;

use keel_store::{PredictionRecord, Store};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// How the prediction log buffers and flushes.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Rows that may wait for the writer; more are dropped and counted.
    pub capacity: usize,
    /// Write as soon as this many rows are waiting.
    pub flush_rows: usize,
    /// Write whatever is waiting at least this often.
    pub flush_interval: Duration,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self { capacity: 16_384, flush_rows: 256, flush_interval: Duration::from_secs(1) }
    }
}

enum Msg {
    Row(Box<PredictionRecord>),
    /// Write everything received so far, then answer.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
pub(crate) struct PredictionLog {
    tx: mpsc::Sender<Msg>,
    store: Store,
    metrics: Arc<Metrics>,
}

impl PredictionLog {
    /// Starts the writer on the current Tokio runtime; it stops when this is dropped.
    pub fn start(store: Store, opts: LogOptions, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(opts.capacity.max(1));
        tokio::spawn(writer(rx, store.clone(), opts, metrics.clone()));
        Self { tx, store, metrics }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues one prediction, or drops and counts it if the buffer is full. Never waits.
    pub fn record(&self, row: PredictionRecord) {
        if self.tx.try_send(Msg::Row(Box::new(row))).is_err() {
            self.metrics.log_dropped.inc();
        }
    }

    /// Waits until every prediction recorded before this call has been written (or has failed).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn writer(mut rx: mpsc::Receiver<Msg>, store: Store, opts: LogOptions, metrics: Arc<Metrics>) {
    let flush_rows = opts.flush_rows.max(1);
    let mut buf: Vec<PredictionRecord> = Vec::with_capacity(flush_rows);
    let mut tick = tokio::time::interval(opts.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Row(row)) => {
                    buf.push(*row);
                    if buf.len() >= flush_rows {
                        write(&store, &mut buf, &metrics).await;
                    }
                }
                Some(Msg::Flush(ack)) => {
                    write(&store, &mut buf, &metrics).await;
                    let _ = ack.send(());
                }
                None => {
                    write(&store, &mut buf, &metrics).await;
                    return;
                }
            },
            _ = tick.tick() => write(&store, &mut buf, &metrics).await,
        }
    }
}

async fn write(store: &Store, buf: &mut Vec<PredictionRecord>, metrics: &Metrics) {
    if buf.is_empty() {
        return;
    }
    let n = buf.len() as u64;
    match store.log_predictions(buf).await {
        Ok(()) => {
            metrics.log_written.inc_by(n);
        }
        Err(e) => {
            metrics.log_failed.inc_by(n);
            tracing::error!(error = %e, rows = n, "cannot write the prediction log; these predictions are lost");
        }
    }
    buf.clear();
}
