//! The pipeline stages the commands share: ingest, then embed → train → evaluate → register.

use std::path::Path;

use anyhow::{Context as _, bail};
use keel_core::{ContentHash, Hasher, Matrix, Record, Split};
use keel_data::{Format, ReadOptions, SplitConfig};
use keel_embed::Encoder;
use keel_store::{Dataset, ModelVersion, NewDataset, NewModelVersion, RunStatus, Store};
use keel_train::{LogisticRegression, LrConfig};
use serde::Serialize;
use serde_json::json;

use crate::cli::ColumnArgs;
use crate::context;
use crate::embedding::{EmbedStats, embed_cached};

/// Candidate L2 strengths; the one with the best validation macro-F1 wins (ties go to the
/// stronger penalty). On L2-normalised 384-d embeddings with thousands of rows these span
/// scikit-learn's C from about 0.01 to 100.
const L2_GRID: [f64; 4] = [1e-5, 1e-4, 1e-3, 1e-2];

#[derive(Debug, Serialize)]
pub struct IngestOutcome {
    pub dataset: Dataset,
    /// False when this exact dataset version was already in the store.
    pub created: bool,
    pub quarantine_by_reason: Vec<(String, usize)>,
    /// Where the quarantined rows are, with their reasons and source lines.
    pub quarantine_file: String,
    #[serde(skip)]
    pub records: Vec<Record>,
}

pub fn read_options(cols: &ColumnArgs) -> anyhow::Result<ReadOptions> {
    let format = match cols.delimiter.as_deref() {
        None => None,
        Some("\\t" | "tab" | "\t") => Some(Format::Delimited { delimiter: b'\t' }),
        Some(d) if d.len() == 1 => Some(Format::Delimited { delimiter: d.as_bytes()[0] }),
        Some(d) => bail!("--delimiter must be one character (or \\t), not {d:?}"),
    };
    Ok(ReadOptions {
        text_col: cols.text_col.clone(),
        label_col: Some(cols.label_col.clone()),
        id_col: cols.id_col.clone(),
        format,
        has_header: !cols.no_header,
        skip_after_header: cols.skip_rows,
        limit: cols.limit,
    })
}

fn jsonl<T: Serialize>(items: &[T]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.push(b'\n');
    }
    Ok(out)
}

pub async fn ingest(store: &Store, path: &Path, cols: &ColumnArgs) -> anyhow::Result<IngestOutcome> {
    let opts = read_options(cols)?;
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let ingested = tokio::task::block_in_place(|| keel_data::read_table(path, &opts))?;
    debug_assert_eq!(ingested.rows_read as usize, ingested.records.len() + ingested.quarantined.len());
    let id = keel_data::dataset_version(&ingested.records);
    let existed = store.dataset(id.as_str()).await.is_ok();
    let records_artifact = store.put_artifact("records", &jsonl(&ingested.records)?).await?;
    let quarantine_artifact = store.put_artifact("quarantine", &jsonl(&ingested.quarantined)?).await?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("dataset").to_owned();
    let dataset = store
        .put_dataset(&NewDataset {
            id,
            name,
            source: path.display().to_string(),
            source_sha256: ContentHash::of(&raw),
            rows_read: ingested.rows_read,
            n_records: ingested.records.len() as u64,
            n_quarantined: ingested.quarantined.len() as u64,
            records_artifact,
            quarantine_artifact: quarantine_artifact.clone(),
        })
        .await?;
    Ok(IngestOutcome {
        created: !existed,
        quarantine_by_reason: keel_data::quarantine_summary(&ingested.quarantined),
        quarantine_file: store.artifacts().path(&quarantine_artifact).display().to_string(),
        dataset,
        records: ingested.records,
    })
}

#[derive(Debug, Serialize)]
pub struct TrainOutcome {
    pub model: ModelVersion,
    /// True when a version made from exactly these inputs existed and nothing was recomputed.
    pub reused: bool,
    pub ingest: IngestOutcome,
    pub embedding: Option<EmbedStats>,
}

pub struct TrainRequest<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub columns: &'a ColumnArgs,
    pub seed: u64,
    pub quiet: bool,
}

pub async fn train(store: &Store, encoder: &Encoder, req: &TrainRequest<'_>) -> anyhow::Result<TrainOutcome> {
    let ingest = ingest(store, req.file, req.columns).await?;
    let split_cfg = SplitConfig { seed: req.seed, ..SplitConfig::default() };
    let key = {
        let mut h = Hasher::new();
        h.field(b"keel-train-v1").field(context::code_version().as_bytes());
        h.field(ingest.dataset.fields.id.as_str().as_bytes()).field(encoder.id().as_bytes());
        h.field(serde_json::to_string(&split_cfg)?.as_bytes()).field(format!("{L2_GRID:?}").as_bytes());
        h.finish()
    };
    if let Some(model) = store.find_model_version(req.name, &key).await? {
        return Ok(TrainOutcome { model, reused: true, ingest, embedding: None });
    }
    let params = json!({"file": req.file.display().to_string(), "columns": format!("{:?}", req.columns), "seed": req.seed,
        "split": split_cfg, "encoder": encoder.id(), "head": "logistic-regression", "l2_grid": L2_GRID});
    let run = store.start_run("train", &params, &context::code_version(), &context::host()).await?;
    store.set_run_dataset(&run, &ingest.dataset.fields.id).await?;
    match fit_and_register(store, encoder, req, &ingest, &split_cfg, &key, &run).await {
        Ok((model, stats)) => {
            store.finish_run(&run, RunStatus::Succeeded, Some(&model.metrics), None).await?;
            Ok(TrainOutcome { model, reused: false, ingest, embedding: Some(stats) })
        }
        Err(e) => {
            store.finish_run(&run, RunStatus::Failed, None, Some(&format!("{e:#}"))).await?;
            Err(e)
        }
    }
}

async fn fit_and_register(
    store: &Store,
    encoder: &Encoder,
    req: &TrainRequest<'_>,
    ingest: &IngestOutcome,
    split_cfg: &SplitConfig,
    key: &ContentHash,
    run: &str,
) -> anyhow::Result<(ModelVersion, EmbedStats)> {
    let records = &ingest.records;
    let mut labels: Vec<String> = records.iter().filter_map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        bail!("need at least two distinct labels to train a classifier; found {labels:?}");
    }
    let y: Vec<usize> = records
        .iter()
        .map(|r| labels.binary_search(r.label.as_ref().expect("accepted rows have labels")).expect("label is known"))
        .collect();
    let splits = keel_data::assign_splits(records, split_cfg);
    let idx = |s: Split| -> Vec<usize> { (0..records.len()).filter(|&i| splits[i] == s).collect() };
    let (train_i, val_i, test_i) = (idx(Split::Train), idx(Split::Validation), idx(Split::Test));
    if train_i.is_empty() || val_i.is_empty() || test_i.is_empty() {
        bail!(
            "too few rows to split: {} train, {} validation, {} test; give at least a few dozen labelled rows",
            train_i.len(),
            val_i.len(),
            test_i.len()
        );
    }

    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let (x, stats) = embed_cached(store, encoder, &texts, req.quiet).await?;
    let pick = |ix: &[usize]| -> (Matrix, Vec<usize>) { (x.select_rows(ix), ix.iter().map(|&i| y[i]).collect()) };
    let (x_train, y_train) = pick(&train_i);
    let (x_val, y_val) = pick(&val_i);
    let (x_test, y_test) = pick(&test_i);

    // Choose the L2 strength on the validation split; the test split is touched once, below.
    let mut best: Option<(f64, f64, LogisticRegression)> = None;
    for &l2 in L2_GRID.iter().rev() {
        let cfg = LrConfig { l2, ..LrConfig::default() };
        let (head, _) = tokio::task::block_in_place(|| keel_train::fit(&x_train, &y_train, labels.clone(), &cfg))?;
        let pred: Vec<usize> = (0..x_val.rows()).map(|i| head.predict(x_val.row(i))).collect();
        let f1 = keel_eval::macro_f1(&y_val, &pred, labels.len());
        if best.as_ref().is_none_or(|(_, b, _)| f1 > *b) {
            best = Some((l2, f1, head));
        }
    }
    let (l2, val_f1, head) = best.expect("the grid is not empty");
    let proba = head.predict_proba_batch(&x_test);
    let eval = keel_eval::evaluate(&y_test, &proba, &labels);
    let metrics = json!({
        "accuracy": eval.accuracy,
        "macro_f1": eval.macro_f1,
        "split_sizes": {"train": train_i.len(), "validation": val_i.len(), "test": test_i.len()},
        "l2": l2,
        "validation_macro_f1": val_f1,
        "test": eval,
    });
    let head_artifact = store.put_artifact("head/logistic-regression", &head.to_json_bytes()).await?;
    let (model, _) = store
        .register_model_version(&NewModelVersion {
            name: req.name.to_owned(),
            input_key: key.clone(),
            run_id: run.to_owned(),
            dataset_id: ingest.dataset.fields.id.clone(),
            encoder_id: encoder.id().to_owned(),
            head_artifact,
            metrics,
        })
        .await?;
    // The first version of a model goes to production; later ones wait as `candidate` for a
    // promotion (`keel promote NAME@VERSION`).
    let (alias, reason) = if store.resolve(&format!("{}@production", req.name)).await.is_err() {
        ("production", "first version of this model")
    } else {
        ("candidate", "newly trained; promote with keel promote")
    };
    store.set_alias(req.name, alias, model.version, reason).await?;
    let model = store.model_version(req.name, model.version).await?;
    Ok((model, stats))
}

/// Loads a registered version's head from its artifact.
pub fn load_head(store: &Store, model: &ModelVersion) -> anyhow::Result<LogisticRegression> {
    let hash = ContentHash::parse(&model.head_artifact).context("malformed head artifact hash")?;
    let bytes = store.read_artifact(&hash)?;
    LogisticRegression::from_json_bytes(&bytes).with_context(|| format!("cannot load the head of {}", model.tag()))
}
