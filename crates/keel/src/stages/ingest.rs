//! Ingest: raw files → accepted records, quarantine and a dataset version in the store.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use keel_core::{Hasher, Record};
use keel_data::{ReadOptions, Row};
use keel_store::{ArtifactWriter, Dataset, NewDataset, Store};

use super::{ArtifactKind, Ingested};
use crate::config::Filter;

/// What to read and what to accept.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// Read as one data set, in order.
    pub files: Vec<PathBuf>,
    pub read: ReadOptions,
    /// Rows left out on purpose (counted, not quarantined).
    pub filter: Filter,
    /// Stop when fewer rows are accepted.
    pub min_records: usize,
    /// Stop when a larger share of the rows read is quarantined.
    pub max_quarantined_share: f64,
    /// Return the accepted records (the pipeline embeds them next); without it ingest holds no
    /// row in memory: rows stream from the file to the records and quarantine artifacts.
    pub keep_records: bool,
}

/// What ingest produced: the record, the dataset row, and the accepted records themselves
/// (empty unless asked for with `keep_records`).
#[derive(Debug)]
pub struct IngestResult {
    pub ingested: Ingested,
    pub dataset: Dataset,
    pub records: Vec<Record>,
}

/// Where streamed rows go: one JSON line each into the records or the quarantine artifact, the
/// dataset version's hash ([`keel_data::dataset_version`]'s fields, in the same order), counts.
struct Sink {
    records: ArtifactWriter,
    quarantine: ArtifactWriter,
    version: Hasher,
    kept: Option<Vec<Record>>,
    n_records: u64,
    n_quarantined: u64,
    reasons: keel_data::ReasonCounts,
    filtered: BTreeMap<String, usize>,
}

impl Sink {
    fn row(&mut self, row: Row, filter: &Filter) -> std::io::Result<()> {
        match row {
            Row::Accepted(r) => {
                if let Some(why) = filtered_out(filter, &r) {
                    *self.filtered.entry(why).or_default() += 1;
                    return Ok(());
                }
                line(&mut self.records, &r)?;
                self.version.field(r.id.as_bytes()).field(r.text.as_bytes());
                self.version.field(r.label.as_deref().unwrap_or("").as_bytes());
                self.n_records += 1;
                if let Some(kept) = &mut self.kept {
                    kept.push(r);
                }
            }
            Row::Quarantined(q) => {
                line(&mut self.quarantine, &q)?;
                self.reasons.add(&q.reason);
                self.n_quarantined += 1;
            }
        }
        Ok(())
    }
}

/// One JSON document and a newline: a JSON-lines artifact's line.
fn line<T: serde::Serialize>(out: &mut ArtifactWriter, item: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, item)?;
    out.write_all(b"\n")
}

/// Why `filter` leaves a row out, if it does.
fn filtered_out(filter: &Filter, r: &Record) -> Option<String> {
    let label = r.label.as_deref().unwrap_or("");
    if filter.drop_labels.iter().any(|l| l == label) {
        Some(format!("label {label:?} dropped by [source.filter] drop_labels"))
    } else if !filter.keep_labels.is_empty() && !filter.keep_labels.iter().any(|l| l == label) {
        Some("label not in [source.filter] keep_labels".to_owned())
    } else if r.text.chars().count() < filter.min_chars {
        Some(format!("shorter than [source.filter] min_chars = {}", filter.min_chars))
    } else {
        None
    }
}

/// Reads every file, validates and filters its rows, and records the dataset version (records
/// and quarantine as artifacts first, then the row). Rows stream from the files to the
/// artifacts: memory holds the reader's id and duplicate indexes, not the rows (unless
/// `keep_records`).
pub async fn ingest(store: &Store, req: &IngestRequest) -> anyhow::Result<IngestResult> {
    let mut sink = Sink {
        records: store.artifact_writer()?,
        quarantine: store.artifact_writer()?,
        version: Hasher::new(),
        kept: req.keep_records.then(Vec::new),
        n_records: 0,
        n_quarantined: 0,
        reasons: keel_data::ReasonCounts::default(),
        filtered: BTreeMap::new(),
    };
    sink.version.field(b"keel-dataset-v1");
    let mut stats = Vec::new();
    for f in &req.files {
        let read =
            tokio::task::block_in_place(|| keel_data::ingest(f, &req.read, &mut |row| sink.row(row, &req.filter)))
                .with_context(|| format!("cannot ingest {}", f.display()))?;
        stats.push(read);
    }
    let Sink { records, quarantine, version, kept, n_records, n_quarantined, reasons, filtered } = sink;
    let rows_read: u64 = stats.iter().map(|s| s.rows_read).sum();
    let by_reason = reasons.summary();
    if n_records < req.min_records as u64 {
        bail!(
            "[validation] min_records = {}, but only {} rows were accepted ({} read, {} quarantined, {} filtered)",
            req.min_records,
            n_records,
            rows_read,
            n_quarantined,
            filtered.values().sum::<usize>()
        );
    }
    let share = n_quarantined as f64 / rows_read.max(1) as f64;
    if share > req.max_quarantined_share {
        bail!(
            "[validation] max_quarantined_share = {}, but {:.1}% of the rows read were quarantined (first reason: {})",
            req.max_quarantined_share,
            share * 100.0,
            by_reason.first().map_or("?", |(r, _)| r.as_str())
        );
    }
    let id = version.finish();
    let existed = store.dataset(id.as_str()).await.is_ok();
    let records_artifact = store.put_written_artifact(ArtifactKind::Records.as_str(), records).await?;
    let quarantine_artifact = store.put_written_artifact(ArtifactKind::Quarantine.as_str(), quarantine).await?;
    let source_sha256 = match stats.as_slice() {
        [one] => one.source_sha256.clone(),
        many => {
            let mut h = Hasher::new();
            for s in many {
                h.field(s.source_sha256.as_str().as_bytes());
            }
            h.finish()
        }
    };
    let name = req.files[0].file_stem().and_then(|s| s.to_str()).unwrap_or("dataset").to_owned();
    let dataset = store
        .put_dataset(&NewDataset {
            id: id.clone(),
            name,
            source: req.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" + "),
            source_sha256,
            rows_read,
            n_records,
            n_quarantined,
            records_artifact,
            quarantine_artifact: quarantine_artifact.clone(),
        })
        .await?;
    let ingested = Ingested {
        dataset_id: id,
        created: !existed,
        filtered,
        quarantine_by_reason: by_reason,
        quarantine_file: store.artifacts().location(&quarantine_artifact),
        files: stats,
    };
    Ok(IngestResult { ingested, dataset, records: kept.unwrap_or_default() })
}
