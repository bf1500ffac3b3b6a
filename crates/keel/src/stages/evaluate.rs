//! Evaluate: a head's predictions on the test split → the report (metrics with intervals,
//! calibration, slices, the most confidently wrong rows), and `keel eval`'s re-evaluation of a
//! registered version on its own test rows.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use keel_core::{ContentHash, Matrix};
use keel_data::{ReadOptions, SplitConfig};
use keel_embed::Encoder;
use keel_eval::{Report, ReportInput, VersionMetrics};
use keel_store::{ModelVersion, RunStatus, Store};
use keel_train::{Head, LogisticRegression};
use serde::{Deserialize, Serialize};

use super::data::{Part, label_and_split, load_records};
use super::gate;
use super::train::{predict, write_atomically};
use crate::context;
use crate::embedding::embed_cached;

/// The full report of `proba` on the test split.
pub fn report(title: String, model: String, test: &Part, proba: &Matrix, labels: &[String]) -> Report {
    let mut input = ReportInput::new(&test.y, proba, labels);
    input.title = title;
    input.model = model;
    input.texts = Some(&test.texts);
    keel_eval::build_report(&input)
}

/// Writes the HTML report to `path`, atomically.
pub fn write_html(path: &Path, html: &str) -> anyhow::Result<()> {
    write_atomically(path, html.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Where a version's HTML report is written for reading: `<home>/reports/NAME-vVERSION.html`.
pub fn report_path(store: &Store, model: &ModelVersion) -> PathBuf {
    store.home().join("reports").join(format!("{}-v{}.html", model.name, model.version))
}

/// Loads a head from its artifact. Heads stored before they were tagged with their kind hold
/// a bare logistic regression; those load too.
pub async fn load_head_artifact(store: &Store, hash: &ContentHash) -> anyhow::Result<Head> {
    let bytes = store.read_artifact(hash).await?;
    Head::from_bytes(&bytes)
        .or_else(|e| LogisticRegression::from_json_bytes(&bytes).map(Head::Logistic).map_err(|_| e))
        .context("cannot load a trained head")
}

/// A registered version's head.
pub async fn load_head(store: &Store, model: &ModelVersion) -> anyhow::Result<Head> {
    let hash = ContentHash::parse(&model.head_artifact).context("malformed head artifact hash")?;
    load_head_artifact(store, &hash).await.with_context(|| format!("cannot load the head of {}", model.tag()))
}

/// The split a version was trained with: recorded with the version by `keel run`, or in the
/// parameters of the `train` run of versions registered before that.
pub async fn split_of(store: &Store, model: &ModelVersion) -> anyhow::Result<SplitConfig> {
    let recorded = VersionMetrics::parse(&model.metrics).ok().and_then(|m| m.pipeline).and_then(|p| p.split);
    if let Some(split) = recorded {
        return serde_json::from_value(split).context("the version's recorded split is malformed");
    }
    #[derive(Deserialize)]
    struct TrainParams {
        split: SplitConfig,
    }
    let run = store.run(&model.run_id).await?;
    let params: TrainParams = serde_json::from_value(run.params)
        .with_context(|| format!("run {} does not record its split", model.run_id))?;
    Ok(params.split)
}

/// `keel eval`'s result.
#[derive(Debug, Serialize)]
pub struct EvalOutcome {
    pub model: ModelVersion,
    pub against: Option<ModelVersion>,
    pub report: Report,
    /// Why no gate decision was made, when there is none.
    pub gate_note: Option<String>,
    pub report_html: String,
    pub run_id: String,
}

/// What `keel eval` is asked.
#[derive(Debug)]
pub struct EvalRequest<'a> {
    /// NAME, NAME@VERSION or NAME@ALIAS.
    pub spec: &'a str,
    /// Another version (or an alias of the same model) to compare with on the same rows.
    pub against: Option<&'a str>,
    pub html: Option<&'a Path>,
    pub quiet: bool,
    /// Evaluate on this labelled file (read with these options) instead of the version's own
    /// test split: a held-out file the version never saw.
    pub data: Option<(&'a Path, ReadOptions)>,
}

/// The rows `keel eval` scores: the version's test split, rebuilt, or a labelled file.
struct EvalRows {
    texts: Vec<String>,
    y: Vec<usize>,
    labels: Vec<String>,
    /// Where the rows came from, for the run's parameters.
    source: serde_json::Value,
    dataset_id: Option<ContentHash>,
}

/// The version's own test split, rebuilt from its dataset and split seed.
async fn split_rows(store: &Store, model: &ModelVersion) -> anyhow::Result<EvalRows> {
    let split_cfg = split_of(store, model).await?;
    let dataset = store.dataset(&model.dataset_id).await?;
    let records = load_records(store, &dataset).await?;
    let l = label_and_split(&records, &split_cfg)?;
    Ok(EvalRows {
        texts: l.rows.test.iter().map(|&i| records[i].text.clone()).collect(),
        y: l.rows.test.iter().map(|&i| l.y[i]).collect(),
        labels: l.labels,
        source: serde_json::json!({"split": split_cfg}),
        dataset_id: Some(dataset.fields.id.clone()),
    })
}

/// Every accepted row of a labelled file whose label the head knows. A row with another label
/// cannot be scored: the file is refused, naming the labels, rather than scored in part.
fn file_rows(path: &Path, opts: &ReadOptions, head: &Head) -> anyhow::Result<EvalRows> {
    let read = keel_data::read_table(path, opts).with_context(|| format!("cannot read {}", path.display()))?;
    let labels = head.labels().to_vec();
    let (mut texts, mut y, mut unknown) = (Vec::new(), Vec::new(), std::collections::BTreeMap::new());
    for r in read.records {
        let label = r.label.as_deref().unwrap_or_default();
        match labels.iter().position(|l| l == label) {
            Some(c) => {
                texts.push(r.text);
                y.push(c);
            }
            None => *unknown.entry(label.to_owned()).or_insert(0usize) += 1,
        }
    }
    if !unknown.is_empty() {
        let seen: Vec<String> = unknown.iter().map(|(l, n)| format!("{l:?} ({n} rows)")).collect();
        bail!(
            "{} has labels the version does not predict: {}; it knows {}",
            path.display(),
            seen.join(", "),
            labels.join(", ")
        );
    }
    if texts.is_empty() {
        bail!("{} has no labelled rows to evaluate on ({} quarantined)", path.display(), read.quarantined.len());
    }
    let source = serde_json::json!({"file": path.display().to_string(), "rows": texts.len(), "quarantined": read.quarantined.len()});
    Ok(EvalRows { texts, y, labels, source, dataset_id: None })
}

/// Whether predicting with `head` needs embeddings.
fn reads_embeddings(head: &Head) -> bool {
    matches!(
        head.input_kind(),
        keel_train::InputKind::Embedding { .. } | keel_train::InputKind::TextAndEmbedding { .. }
    )
}

/// The eval run's recorded figures.
#[derive(Debug, Serialize)]
struct EvalRunMetrics {
    #[serde(flatten)]
    figures: VersionMetrics,
    gate: Option<keel_eval::GateDecision>,
    gate_note: Option<String>,
}

/// Re-evaluates a registered version on its own test split (rebuilt from its dataset and split
/// seed; embeddings come from the cache), optionally against another version on the same rows.
/// Recorded as an `eval` run; aliases are not touched.
pub async fn eval(store: &Store, encoder: &Encoder, req: &EvalRequest<'_>) -> anyhow::Result<EvalOutcome> {
    let model = store.resolve(req.spec).await?;
    let head = load_head(store, &model).await?;
    if reads_embeddings(&head) && model.encoder_id != encoder.id() {
        bail!(
            "{} reads embeddings from {}, but {} is loaded; pass the same --encoder/--model-dir",
            model.tag(),
            model.encoder_id,
            encoder.id()
        );
    }
    let rows = match &req.data {
        None => split_rows(store, &model).await?,
        Some((path, opts)) => file_rows(path, opts, &head)?,
    };
    let other = match req.against {
        None => None,
        Some(a) => {
            let spec = if a.contains('@') { a.to_owned() } else { format!("{}@{a}", model.name) };
            Some(store.resolve(&spec).await?)
        }
    };
    let other_head = match &other {
        Some(o) => Some(load_head(store, o).await?),
        None => None,
    };
    // Embeddings only when a head reads them (an n-gram model's evaluation embeds nothing).
    let x = if reads_embeddings(&head) || other_head.as_ref().is_some_and(reads_embeddings) {
        let refs: Vec<&str> = rows.texts.iter().map(String::as_str).collect();
        embed_cached(store, encoder, &refs, req.quiet).await?.0
    } else {
        Matrix::zeros(rows.texts.len(), 0)
    };
    let test = Part { x, y: rows.y, texts: rows.texts };
    let proba = predict(&head, &test)?;
    let on = if req.data.is_some() { "the given file" } else { "its test split" };
    let title = format!("{} head, evaluated on {on}", head.kind());
    let mut report = report(title, model.tag(), &test, &proba, &rows.labels);
    let gate_note = match (&other, &other_head) {
        (Some(o), Some(oh)) => {
            if o.name == model.name && o.version == model.version {
                Some(format!("{} is {}: nothing to compare", req.spec, o.tag()))
            } else if reads_embeddings(oh) && o.encoder_id != encoder.id() {
                Some(format!("not compared with {}: it reads embeddings from {}", o.tag(), o.encoder_id))
            } else {
                let rule = keel_eval::Gate::default();
                match gate::compare(&rule, &proba, oh, &o.tag(), &test, &rows.labels) {
                    Ok(d) => {
                        report.gate = Some(d);
                        None
                    }
                    Err(why) => Some(why),
                }
            }
        }
        _ => None,
    };
    let html = keel_eval::render_html(&report);
    let path = req.html.map_or_else(|| report_path(store, &model), Path::to_owned);
    write_html(&path, &html)?;
    let mut params = serde_json::json!({"model": model.tag(), "against": other.as_ref().map(ModelVersion::tag)});
    if let (Some(p), serde_json::Value::Object(src)) = (params.as_object_mut(), rows.source) {
        p.extend(src);
    }
    let run_id = store.start_run("eval", &params, &context::code_version(), &context::host()).await?;
    if let Some(id) = &rows.dataset_id {
        store.set_run_dataset(&run_id, id).await?;
    }
    let metrics = EvalRunMetrics {
        figures: VersionMetrics::from_report(&report),
        gate: report.gate.clone(),
        gate_note: gate_note.clone(),
    };
    store.finish_run(&run_id, RunStatus::Succeeded, Some(&serde_json::to_value(&metrics)?), None).await?;
    Ok(EvalOutcome { model, against: other, report, gate_note, report_html: path.display().to_string(), run_id })
}
