//! Ingest: raw files → accepted records, quarantine and a dataset version in the store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use keel_core::{Hasher, Record};
use keel_data::ReadOptions;
use keel_store::{Dataset, NewDataset, Store};

use super::data::jsonl;
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
}

/// What ingest produced: the record, the dataset row, and the accepted records themselves.
#[derive(Debug)]
pub struct IngestResult {
    pub ingested: Ingested,
    pub dataset: Dataset,
    pub records: Vec<Record>,
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
/// and quarantine as artifacts first, then the row).
pub async fn ingest(store: &Store, req: &IngestRequest) -> anyhow::Result<IngestResult> {
    let (mut records, mut quarantined, mut stats) = (Vec::new(), Vec::new(), Vec::new());
    let mut filtered: BTreeMap<String, usize> = BTreeMap::new();
    for f in &req.files {
        let ing = tokio::task::block_in_place(|| keel_data::read_table(f, &req.read))
            .with_context(|| format!("cannot ingest {}", f.display()))?;
        debug_assert_eq!(ing.stats.rows_read as usize, ing.records.len() + ing.quarantined.len());
        for r in ing.records {
            match filtered_out(&req.filter, &r) {
                Some(w) => *filtered.entry(w).or_default() += 1,
                None => records.push(r),
            }
        }
        quarantined.extend(ing.quarantined);
        stats.push(ing.stats);
    }
    let rows_read: u64 = stats.iter().map(|s| s.rows_read).sum();
    let by_reason = keel_data::quarantine_summary(&quarantined);
    if records.len() < req.min_records {
        bail!(
            "[validation] min_records = {}, but only {} rows were accepted ({} read, {} quarantined, {} filtered)",
            req.min_records,
            records.len(),
            rows_read,
            quarantined.len(),
            filtered.values().sum::<usize>()
        );
    }
    let share = quarantined.len() as f64 / rows_read.max(1) as f64;
    if share > req.max_quarantined_share {
        bail!(
            "[validation] max_quarantined_share = {}, but {:.1}% of the rows read were quarantined (first reason: {})",
            req.max_quarantined_share,
            share * 100.0,
            by_reason.first().map_or("?", |(r, _)| r.as_str())
        );
    }
    let id = keel_data::dataset_version(&records);
    let existed = store.dataset(id.as_str()).await.is_ok();
    let records_artifact = store.put_artifact(ArtifactKind::Records.as_str(), &jsonl(&records)?).await?;
    let quarantine_artifact = store.put_artifact(ArtifactKind::Quarantine.as_str(), &jsonl(&quarantined)?).await?;
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
            n_records: records.len() as u64,
            n_quarantined: quarantined.len() as u64,
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
    Ok(IngestResult { ingested, dataset, records })
}
