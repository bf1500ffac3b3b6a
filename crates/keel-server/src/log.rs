//! The prediction log: handlers hand each prediction to a bounded channel without waiting; one
//! background task writes them to the store in batches (every `flush_rows` rows or every
//! `flush_interval`, whichever comes first).
//!
//! Nothing goes to the floor silently: a row that finds the channel full (in rows, or in bytes of
//! text waiting), or a batch the store refuses, is appended to a local spill file
//! (`<home>/spill/predictions.jsonl`, one JSON row a line). The spill files together are capped
//! (`max_spill_bytes`): past the cap a row is refused, counted (`keel_prediction_log_spill_refused_total`
//! and `..._dropped_total`) and logged, rather than filling the disk.
//! The writer replays spilled rows into the store when it is idle, and at start-up (rows a
//! previous process spilled); the store ignores rows it already has (same prediction id), so a
//! replay cut short is simply done again. Replay streams a file line by line, a few hundred rows
//! at a time; a line that does not parse (a torn last line, even one cut inside a UTF-8
//! character) is skipped with a warning and the file removed once the rest is in. [`PredictionLog::flush`] writes the channel, then the
//! spill file, so a server that drains on SIGTERM leaves every answered prediction in the store
//! (or, with the store down, on disk for the next start).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_store::{PredictionRecord, Store};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// How the prediction log buffers and flushes.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Rows that may wait for the writer; more go to the spill file.
    pub capacity: usize,
    /// Write as soon as this many rows are waiting.
    pub flush_rows: usize,
    /// Write whatever is waiting at least this often (and replay spilled rows).
    pub flush_interval: Duration,
    /// Bytes of rows (their text, mostly) that may wait for the writer; more go to the spill file.
    pub max_queued_bytes: usize,
    /// Largest the spill files may grow together, in bytes; rows past it are refused (counted
    /// and logged as lost).
    pub max_spill_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            capacity: 16_384,
            flush_rows: 256,
            flush_interval: Duration::from_secs(1),
            max_queued_bytes: 64 * 1024 * 1024,
            max_spill_bytes: 256 * 1024 * 1024,
        }
    }
}

/// What a row weighs in the channel's byte bound: its text and a fixed share for the rest.
fn weight(row: &PredictionRecord) -> usize {
    row.input_text.len() + row.model.len() + 512
}

enum Msg {
    Row(Box<PredictionRecord>),
    /// Write everything received so far, and the spill file, then answer.
    Flush(oneshot::Sender<()>),
}

/// The spill file: appended by handlers (buffer full) and by the writer (store failing).
#[derive(Debug)]
struct Spill {
    dir: PathBuf,
    file: Mutex<Option<BufWriter<File>>>,
    /// Rows appended since the last replay took the file.
    pending: AtomicU64,
    /// Bytes in the spill files (the open one and those waiting for replay).
    bytes: AtomicU64,
    max_bytes: u64,
    /// Whether the last append was refused for the cap (logged once per episode).
    refusing: AtomicBool,
}

const SPILL_FILE: &str = "predictions.jsonl";
const REPLAY_SUFFIX: &str = ".replay.jsonl";

impl Spill {
    fn append(&self, rows: &[PredictionRecord], metrics: &Metrics) {
        let n = rows.len() as u64;
        let mut lines = Vec::new();
        for row in rows {
            if serde_json::to_writer(&mut lines, row).is_ok() {
                lines.push(b'\n');
            }
        }
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let size = lines.len() as u64;
        if self.bytes.load(Ordering::Acquire) + size > self.max_bytes {
            metrics.log_spill_refused.inc_by(n);
            metrics.log_dropped.inc_by(n);
            if !self.refusing.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    rows = n,
                    cap_bytes = self.max_bytes,
                    dir = %self.dir.display(),
                    "the prediction spill files are full (max_spill_bytes): refusing rows; they are lost until the store takes the spilled ones"
                );
            }
            return;
        }
        let written = (|| -> std::io::Result<()> {
            if guard.is_none() {
                std::fs::create_dir_all(&self.dir)?;
                let f = OpenOptions::new().create(true).append(true).open(self.dir.join(SPILL_FILE))?;
                *guard = Some(BufWriter::new(f));
            }
            guard.as_mut().expect("opened above").write_all(&lines)
        })();
        match written {
            Ok(()) => {
                metrics.log_spilled.inc_by(n);
                self.pending.fetch_add(n, Ordering::AcqRel);
                self.bytes.fetch_add(size, Ordering::AcqRel);
                if self.refusing.swap(false, Ordering::AcqRel) {
                    tracing::info!("the prediction spill file takes rows again");
                }
            }
            Err(e) => {
                metrics.log_dropped.inc_by(n);
                tracing::error!(error = %e, rows = n, dir = %self.dir.display(), "cannot spill predictions; they are lost");
            }
        }
    }

    /// Flushes the open spill file to disk (fsync).
    fn sync(&self) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = guard.as_mut()
            && let Err(e) = w.flush().and_then(|()| w.get_ref().sync_data())
        {
            tracing::error!(error = %e, "cannot flush the prediction spill file");
        }
    }

    /// Closes the spill file and renames it for replay, so handlers start a new one. Returns the
    /// files waiting for replay (this one and any left by an earlier process).
    fn take(&self) -> Vec<PathBuf> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut w) = guard.take() {
            let _ = w.flush().and_then(|()| w.get_ref().sync_data());
        }
        let current = self.dir.join(SPILL_FILE);
        if current.exists() {
            let to = self.dir.join(format!("predictions-{}{REPLAY_SUFFIX}", uuid::Uuid::now_v7()));
            if let Err(e) = std::fs::rename(&current, &to) {
                tracing::error!(error = %e, "cannot rotate the prediction spill file");
            }
        }
        self.pending.store(0, Ordering::Release);
        drop(guard);
        replay_files(&self.dir)
    }
}

/// Bytes in the spill files `dir` holds now.
fn spill_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| n == SPILL_FILE || n.ends_with(REPLAY_SUFFIX)))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn replay_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(REPLAY_SUFFIX)))
        .collect();
    files.sort();
    files
}

#[derive(Debug)]
pub(crate) struct PredictionLog {
    tx: mpsc::Sender<Msg>,
    store: Store,
    metrics: Arc<Metrics>,
    spill: Arc<Spill>,
    /// Bytes of rows in the channel ([`weight`]), and their bound.
    queued_bytes: Arc<AtomicUsize>,
    max_queued_bytes: usize,
}

impl PredictionLog {
    /// Starts the writer on the current Tokio runtime; it stops when this is dropped. Rows
    /// spilled by an earlier process are replayed first.
    pub fn start(store: Store, opts: LogOptions, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::channel(opts.capacity.max(1));
        let dir = store.home().join("spill");
        let spill = Arc::new(Spill {
            pending: AtomicU64::new(u64::from(dir.join(SPILL_FILE).exists())),
            bytes: AtomicU64::new(spill_bytes(&dir)),
            max_bytes: opts.max_spill_bytes,
            refusing: AtomicBool::new(false),
            file: Mutex::new(None),
            dir,
        });
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let max_queued_bytes = opts.max_queued_bytes;
        tokio::spawn(writer(rx, store.clone(), opts, metrics.clone(), spill.clone(), queued_bytes.clone()));
        Self { tx, store, metrics, spill, queued_bytes, max_queued_bytes }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues one prediction, or spills it to the local file if the buffer is full. Never waits
    /// for the database.
    pub fn record(&self, row: PredictionRecord) {
        let w = weight(&row);
        if self.queued_bytes.fetch_add(w, Ordering::AcqRel) + w > self.max_queued_bytes {
            self.queued_bytes.fetch_sub(w, Ordering::AcqRel);
            self.spill.append(std::slice::from_ref(&row), &self.metrics);
            return;
        }
        if let Err(e) = self.tx.try_send(Msg::Row(Box::new(row))) {
            self.queued_bytes.fetch_sub(w, Ordering::AcqRel);
            let row = match e {
                mpsc::error::TrySendError::Full(Msg::Row(r)) | mpsc::error::TrySendError::Closed(Msg::Row(r)) => r,
                _ => return,
            };
            self.spill.append(std::slice::from_ref(&*row), &self.metrics);
        }
    }

    /// Waits until every prediction recorded before this call has been written to the store,
    /// spilled rows included (or, if the store refuses, is safe in the spill file).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Msg>,
    store: Store,
    opts: LogOptions,
    metrics: Arc<Metrics>,
    spill: Arc<Spill>,
    queued_bytes: Arc<AtomicUsize>,
) {
    let flush_rows = opts.flush_rows.max(1);
    let mut buf: Vec<PredictionRecord> = Vec::with_capacity(flush_rows);
    let mut tick = tokio::time::interval(opts.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Rows an earlier process spilled.
    if !replay_files(&spill.dir).is_empty() || spill.pending.load(Ordering::Acquire) > 0 {
        replay(&store, &spill, &metrics).await;
    }
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Row(row)) => {
                    queued_bytes.fetch_sub(weight(&row), Ordering::AcqRel);
                    buf.push(*row);
                    if buf.len() >= flush_rows {
                        write(&store, &mut buf, &metrics, &spill).await;
                    }
                }
                Some(Msg::Flush(ack)) => {
                    write(&store, &mut buf, &metrics, &spill).await;
                    replay(&store, &spill, &metrics).await;
                    let _ = ack.send(());
                }
                None => {
                    write(&store, &mut buf, &metrics, &spill).await;
                    replay(&store, &spill, &metrics).await;
                    return;
                }
            },
            _ = tick.tick() => {
                write(&store, &mut buf, &metrics, &spill).await;
                if spill.pending.load(Ordering::Acquire) > 0 && rx.is_empty() {
                    replay(&store, &spill, &metrics).await;
                } else {
                    spill.sync();
                }
            }
        }
    }
}

async fn write(store: &Store, buf: &mut Vec<PredictionRecord>, metrics: &Metrics, spill: &Spill) {
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
            tracing::error!(error = %e, rows = n, "cannot write the prediction log; spilling the rows to disk");
            spill.append(buf, metrics);
            spill.sync();
        }
    }
    buf.clear();
}

/// Writes every spilled row to the store; a file is removed once all its rows are in.
async fn replay(store: &Store, spill: &Spill, metrics: &Metrics) {
    for path in spill.take() {
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        match replay_file(store, &path).await {
            Ok(rows) => {
                metrics.log_replayed.inc_by(rows);
                metrics.log_written.inc_by(rows);
                match std::fs::remove_file(&path) {
                    Ok(()) => {
                        spill.bytes.fetch_sub(size.min(spill.bytes.load(Ordering::Acquire)), Ordering::AcqRel);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, file = %path.display(), "cannot remove a replayed spill file")
                    }
                }
            }
            Err(Replay::Read(e)) => {
                tracing::error!(error = %e, file = %path.display(), "cannot read a prediction spill file");
            }
            Err(Replay::Store(e)) => {
                tracing::warn!(error = %e, file = %path.display(), "replaying spilled predictions failed; will retry");
                spill.pending.fetch_add(1, Ordering::AcqRel);
                return;
            }
        }
    }
}

enum Replay {
    Read(std::io::Error),
    Store(keel_store::StoreError),
}

/// Streams one spill file into the store, 256 rows at a time; returns the rows written. A line
/// that does not parse (a torn last line from a crash mid-write, even cut inside a UTF-8
/// character) is skipped with a warning.
async fn replay_file(store: &Store, path: &Path) -> Result<u64, Replay> {
    let mut reader = BufReader::new(File::open(path).map_err(Replay::Read)?);
    let (mut line, mut chunk, mut rows) = (Vec::new(), Vec::with_capacity(256), 0u64);
    loop {
        line.clear();
        let end = reader.read_until(b'\n', &mut line).map_err(Replay::Read)? == 0;
        if !end {
            match serde_json::from_slice::<PredictionRecord>(&line) {
                Ok(row) => chunk.push(row),
                Err(e) if !line.trim_ascii().is_empty() => {
                    tracing::warn!(error = %e, file = %path.display(), "skipping a malformed spilled row");
                }
                Err(_) => {}
            }
        }
        if chunk.len() >= 256 || (end && !chunk.is_empty()) {
            store.log_predictions(&chunk).await.map_err(Replay::Store)?;
            rows += chunk.len() as u64;
            chunk.clear();
        }
        if end {
            return Ok(rows);
        }
    }
}
