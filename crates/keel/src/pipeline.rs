//! The pipeline stages the commands share: ingest, then embed → train → evaluate → register.

use std::path::Path;

use anyhow::{Context as _, bail};
use keel_core::{ContentHash, Hasher, Record, Split};
use keel_data::{Format, ReadOptions, SplitConfig};
use keel_embed::Encoder;
use keel_eval::GateDecision;
use keel_store::{Dataset, ModelVersion, NewDataset, NewModelVersion, RunStatus, Store};
use keel_train::{Head, LogisticRegression};
use serde::Serialize;
use serde_json::json;

use crate::cli::{ColumnArgs, HeadArgs};
use crate::context;
use crate::embedding::{EmbedStats, embed_cached};
use crate::training::{self, Part, SplitRows};

#[derive(Debug, Serialize)]
pub struct IngestOutcome {
    pub dataset: Dataset,
    /// False when this exact dataset version was already in the store.
    pub created: bool,
    pub quarantine_by_reason: Vec<(String, usize)>,
    /// Where the quarantined rows are, with their reasons and source lines.
    pub quarantine_file: String,
    /// Everything the reader counted: format used, blank lines, duplicates, repairs, ...
    pub stats: keel_data::IngestStats,
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
        has_header: cols.no_header.then_some(false),
        skip_after_header: cols.skip_rows,
        limit: cols.limit,
        lossy_utf8: cols.lossy_utf8,
        max_text_chars: (cols.max_text_chars > 0).then_some(cols.max_text_chars),
        max_record_bytes: cols.max_record_bytes,
        normalize: !cols.no_normalize,
        strip_html: cols.strip_html,
        labels: cols.labels.clone(),
        drop_duplicates: cols.drop_duplicates,
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
    let ingested = tokio::task::block_in_place(|| keel_data::read_table(path, &opts))?;
    debug_assert_eq!(ingested.stats.rows_read as usize, ingested.records.len() + ingested.quarantined.len());
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
            source_sha256: ingested.stats.source_sha256.clone(),
            rows_read: ingested.stats.rows_read,
            n_records: ingested.records.len() as u64,
            n_quarantined: ingested.quarantined.len() as u64,
            records_artifact,
            quarantine_artifact: quarantine_artifact.clone(),
        })
        .await?;
    Ok(IngestOutcome {
        created: !existed,
        quarantine_by_reason: keel_data::quarantine_summary(&ingested.quarantined),
        quarantine_file: store.artifacts().location(&quarantine_artifact),
        dataset,
        stats: ingested.stats,
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
    /// The comparison with production, or why there was none.
    pub gate: GateOutcome,
    /// The HTML report (also stored as an artifact).
    pub report_html: Option<String>,
}

/// The promotion gate's verdict on a new version.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GateOutcome {
    pub decision: Option<GateDecision>,
    /// In plain words: what happened and why.
    pub reason: String,
    /// The alias the new version received.
    pub alias: String,
}

pub struct TrainRequest<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub columns: &'a ColumnArgs,
    pub seed: u64,
    pub head: &'a HeadArgs,
    /// Promote to production when the gate passes (otherwise the version stays `candidate`).
    pub promote: bool,
    pub quiet: bool,
}

pub async fn train(store: &Store, encoder: &Encoder, req: &TrainRequest<'_>) -> anyhow::Result<TrainOutcome> {
    let ingest = ingest(store, req.file, req.columns).await?;
    let split_cfg = SplitConfig { seed: req.seed, ..SplitConfig::default() };
    let key = {
        let mut h = Hasher::new();
        h.field(b"keel-train-v2").field(context::code_version().as_bytes());
        h.field(ingest.dataset.fields.id.as_str().as_bytes()).field(encoder.id().as_bytes());
        h.field(serde_json::to_string(&split_cfg)?.as_bytes()).field(serde_json::to_string(req.head)?.as_bytes());
        h.finish()
    };
    if let Some(model) = store.find_model_version(req.name, &key).await? {
        let gate = serde_json::from_value(model.metrics["gate"].clone()).unwrap_or(GateOutcome {
            decision: None,
            reason: "reused".into(),
            alias: model.aliases.first().cloned().unwrap_or_default(),
        });
        let report_html = Some(report_path(store, &model)).filter(|p| p.exists()).map(|p| p.display().to_string());
        return Ok(TrainOutcome { model, reused: true, ingest, embedding: None, gate, report_html });
    }
    let params = json!({"file": req.file.display().to_string(), "columns": format!("{:?}", req.columns), "seed": req.seed,
        "split": split_cfg, "encoder": encoder.id(), "head": req.head, "cv_folds": training::CV_FOLDS});
    let run = store.start_run("train", &params, &context::code_version(), &context::host()).await?;
    store.set_run_dataset(&run, &ingest.dataset.fields.id).await?;
    match fit_and_register(store, encoder, req, &ingest, &split_cfg, &key, &run).await {
        Ok((model, stats, gate, report_html)) => {
            store.finish_run(&run, RunStatus::Succeeded, Some(&model.metrics), None).await?;
            Ok(TrainOutcome {
                model,
                reused: false,
                ingest,
                embedding: Some(stats),
                gate,
                report_html: Some(report_html),
            })
        }
        Err(e) => {
            store.finish_run(&run, RunStatus::Failed, None, Some(&format!("{e:#}"))).await?;
            Err(e)
        }
    }
}

/// Label list (sorted), label index per record, and the split of each record.
pub fn label_and_split(
    records: &[Record],
    split_cfg: &SplitConfig,
) -> anyhow::Result<(Vec<String>, Vec<usize>, SplitRows)> {
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
    let rows = SplitRows { train: idx(Split::Train), validation: idx(Split::Validation), test: idx(Split::Test) };
    if rows.train.is_empty() || rows.validation.is_empty() || rows.test.is_empty() {
        bail!(
            "too few rows to split: {} train, {} validation, {} test; give at least a few dozen labelled rows",
            rows.train.len(),
            rows.validation.len(),
            rows.test.len()
        );
    }
    Ok((labels, y, rows))
}

async fn fit_and_register(
    store: &Store,
    encoder: &Encoder,
    req: &TrainRequest<'_>,
    ingest: &IngestOutcome,
    split_cfg: &SplitConfig,
    key: &ContentHash,
    run: &str,
) -> anyhow::Result<(ModelVersion, EmbedStats, GateOutcome, String)> {
    let records = &ingest.records;
    let (labels, y, rows) = label_and_split(records, split_cfg)?;
    let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
    let (x, stats) = embed_cached(store, encoder, &texts, req.quiet).await?;
    let train = Part::new(&x, &y, &texts, &rows.train);
    let validation = Part::new(&x, &y, &texts, &rows.validation);
    let test = Part::new(&x, &y, &texts, &rows.test);

    // Heads see the training split, calibration and early stopping the validation split; the
    // test split is touched once, below, for the report and the gate.
    let checkpoint = store.home().join("checkpoints").join(format!("{}.mlp", key.as_str()));
    let trained = tokio::task::block_in_place(|| {
        training::train_heads(
            &train,
            &validation,
            &test,
            &labels,
            req.head,
            req.seed,
            &checkpoint,
            &training::L2Choice::CrossValidate,
        )
    })?;
    let proba = training::predict(&trained.head, &test)?;
    let title = format!("{}: {} head on {}", req.name, trained.head.kind(), ingest.dataset.fields.name);
    let mut report = training::report(title, format!("{} (new version)", req.name), &test, &proba, &labels);
    report.calibration = Some(trained.calibration.clone());
    report.baselines = trained.baselines.clone();

    let production = store.resolve(&format!("{}@production", req.name)).await.ok();
    let compared = match &production {
        None => Err("first version of this model".to_owned()),
        Some(p) if p.encoder_id != encoder.id() => Err(format!(
            "not compared with {}: it reads embeddings from {}, not {}",
            p.tag(),
            p.encoder_id,
            encoder.id()
        )),
        Some(p) => {
            let theirs = load_head(store, p).await?;
            training::gate(&proba, &theirs, &p.tag(), &test, &labels)
        }
    };
    let (alias, reason, decision) = match compared {
        Err(why) if production.is_none() => ("production", why, None),
        Err(why) => ("candidate", format!("{why}; left as candidate (promote by hand with keel promote)"), None),
        Ok(d) if d.promote && req.promote => ("production", d.reason.clone(), Some(d)),
        Ok(d) if d.promote => ("candidate", format!("{} (held as candidate: --no-promote)", d.reason), Some(d)),
        Ok(d) => ("candidate", d.reason.clone(), Some(d)),
    };
    report.gate = decision.clone();
    let gate = GateOutcome { decision, reason, alias: alias.to_owned() };

    let html = keel_eval::render_html(&report);
    let head_artifact = store.put_artifact("head", &trained.head.to_bytes()).await?;
    let fallback = store.put_artifact("head/fallback", &trained.fallback.to_bytes()).await?;
    let report_json = store.put_artifact("report/json", report.to_json().as_bytes()).await?;
    let report_html = store.put_artifact("report/html", html.as_bytes()).await?;
    let profile = crate::cmd::monitor::reference_profile(encoder, &train, &trained.head, &labels, &report)?;
    let profile = store.put_artifact("profile", &profile).await?;
    let mut metrics = training::metrics(&report, Some(&trained));
    metrics["split_sizes"] =
        json!({"train": rows.train.len(), "validation": rows.validation.len(), "test": rows.test.len()});
    metrics["gate"] = serde_json::to_value(&gate)?;
    metrics["artifacts"] = json!({"fallback": fallback.as_str(), "report": report_json.as_str(),
        "report_html": report_html.as_str(), "profile": profile.as_str()});
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
    store.set_alias(req.name, alias, model.version, &gate.reason).await?;
    let model = store.model_version(req.name, model.version).await?;
    // A copy with a name and an extension a browser opens; the stored artifact is the record.
    let page = report_path(store, &model);
    training::write_html(&page, &html)?;
    Ok((model, stats, gate, page.display().to_string()))
}

#[derive(Debug, Serialize)]
pub struct EvalOutcome {
    pub model: ModelVersion,
    pub against: Option<ModelVersion>,
    pub report: keel_eval::Report,
    /// Why no gate decision was made, when there is none.
    pub gate_note: Option<String>,
    pub report_html: String,
    pub run_id: String,
}

/// Re-evaluates a registered version on its own test split (rebuilt from its dataset and split
/// seed; embeddings come from the cache), optionally against another version on the same rows.
/// Recorded as an `eval` run; aliases are not touched.
pub async fn eval(
    store: &Store,
    encoder: &Encoder,
    spec: &str,
    against: Option<&str>,
    html_path: Option<&Path>,
    quiet: bool,
) -> anyhow::Result<EvalOutcome> {
    let model = store.resolve(spec).await?;
    if model.encoder_id != encoder.id() {
        bail!(
            "{} reads embeddings from {}, but {} is loaded; pass the same --encoder/--model-dir",
            model.tag(),
            model.encoder_id,
            encoder.id()
        );
    }
    let train_run = store.run(&model.run_id).await?;
    let split_cfg: SplitConfig = serde_json::from_value(train_run.params["split"].clone())
        .with_context(|| format!("run {} does not record its split", model.run_id))?;
    let dataset = store.dataset(&model.dataset_id).await?;
    let records = load_records(store, &dataset).await?;
    let (labels, y, rows) = label_and_split(&records, &split_cfg)?;
    let test_texts: Vec<&str> = rows.test.iter().map(|&i| records[i].text.as_str()).collect();
    let test_y: Vec<usize> = rows.test.iter().map(|&i| y[i]).collect();
    let (x, _) = embed_cached(store, encoder, &test_texts, quiet).await?;
    let test = Part { x, y: test_y, texts: test_texts.iter().map(|t| (*t).to_owned()).collect() };

    let head = load_head(store, &model).await?;
    let proba = training::predict(&head, &test)?;
    let title = format!("{} head, evaluated on its test split", head.kind());
    let mut report = training::report(title, model.tag(), &test, &proba, &labels);
    let other = match against {
        None => None,
        Some(a) => {
            let spec = if a.contains('@') { a.to_owned() } else { format!("{}@{a}", model.name) };
            Some(store.resolve(&spec).await?)
        }
    };
    let gate_note = match &other {
        None => None,
        Some(o) if o.name == model.name && o.version == model.version => {
            Some(format!("{} is {}: nothing to compare", spec, o.tag()))
        }
        Some(o) if o.encoder_id != encoder.id() => {
            Some(format!("not compared with {}: it reads embeddings from {}", o.tag(), o.encoder_id))
        }
        Some(o) => match training::gate(&proba, &load_head(store, o).await?, &o.tag(), &test, &labels) {
            Ok(d) => {
                report.gate = Some(d);
                None
            }
            Err(why) => Some(why),
        },
    };
    let html = keel_eval::render_html(&report);
    let path = html_path.map_or_else(|| report_path(store, &model), Path::to_owned);
    training::write_html(&path, &html)?;
    let params = json!({"model": model.tag(), "against": other.as_ref().map(ModelVersion::tag), "split": split_cfg});
    let run_id = store.start_run("eval", &params, &context::code_version(), &context::host()).await?;
    store.set_run_dataset(&run_id, &dataset.fields.id).await?;
    let mut metrics = training::metrics(&report, None);
    metrics["gate"] = json!(report.gate);
    metrics["gate_note"] = json!(gate_note);
    store.finish_run(&run_id, RunStatus::Succeeded, Some(&metrics), None).await?;
    Ok(EvalOutcome { model, against: other, report, gate_note, report_html: path.display().to_string(), run_id })
}

/// A dataset version's accepted records, read back from their artifact.
pub async fn load_records(store: &Store, dataset: &Dataset) -> anyhow::Result<Vec<Record>> {
    store
        .read_artifact(&dataset.fields.records_artifact)
        .await?
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<_, _>>()
        .context("the dataset's records artifact is not valid JSONL")
}

/// Where a version's HTML report is written for reading: `<home>/reports/NAME-vVERSION.html`.
pub fn report_path(store: &Store, model: &ModelVersion) -> std::path::PathBuf {
    store.home().join("reports").join(format!("{}-v{}.html", model.name, model.version))
}

/// Loads a registered version's head from its artifact. Versions registered before heads were
/// tagged with their kind hold a bare logistic regression; those load too.
pub async fn load_head(store: &Store, model: &ModelVersion) -> anyhow::Result<Head> {
    let hash = ContentHash::parse(&model.head_artifact).context("malformed head artifact hash")?;
    let bytes = store.read_artifact(&hash).await?;
    Head::from_bytes(&bytes)
        .or_else(|e| LogisticRegression::from_json_bytes(&bytes).map(Head::Logistic).map_err(|_| e))
        .with_context(|| format!("cannot load the head of {}", model.tag()))
}
