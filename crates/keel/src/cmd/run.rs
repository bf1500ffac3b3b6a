//! `keel run`: the pipeline keel.toml declares, step by step, each step keyed by the hash of its
//! inputs, its config section and the Keel build.
//!
//! Steps and what they record (in the store's `pipeline_steps` table, by project and key):
//! - ingest: the dataset version (records and quarantine artifacts, dataset row);
//! - embed: the embedding-cache rows of every text (content-addressed by text hash), and the
//!   encoder id;
//! - train: the head, fallback and training-details artifacts;
//! - evaluate: the test-split report artifact;
//! - gate: the decision against the production version this one would replace;
//! - register: the model version (its number, final report artifacts);
//! - promote: the alias move (production when the gate passed, candidate otherwise).
//!
//! Crash safety: a step writes its artifacts and rows first and records itself last, in one
//! statement; every step is deterministic, so a step redone after a kill makes the same bytes,
//! and registration is idempotent by key. A run killed anywhere and started again ends with
//! the same artifacts as one that was never interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use keel_core::{ContentHash, Hasher, Matrix, Record};
use keel_data::{Format, ReadOptions, SplitConfig};
use keel_embed::{Encoder, EncoderConfig, InstalledModel, PullOptions};
use keel_eval::{BaselineResult, Report, TemperatureFit};
use keel_store::{Dataset, ModelVersion, NewDataset, NewModelVersion, NewStep, RunStatus, Store};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::{HeadKind, RunArgs, Step};
use crate::config::{self, Config, Loaded, SourceFormat};
use crate::context;
use crate::embedding::embed_cached;
use crate::output::{self, note};
use crate::pipeline::{self, GateOutcome};
use crate::training::{self, Part, SplitRows};

const ALL_STEPS: [Step; 7] =
    [Step::Ingest, Step::Embed, Step::Train, Step::Evaluate, Step::Gate, Step::Register, Step::Promote];

/// Keel's version and a fingerprint of the code it was built from: part of every step key.
pub fn build_id() -> String {
    format!("{} ({})", context::code_version(), env!("KEEL_CODE_HASH"))
}

fn step_name(s: Step) -> &'static str {
    match s {
        Step::Ingest => "ingest",
        Step::Embed => "embed",
        Step::Train => "train",
        Step::Evaluate => "evaluate",
        Step::Gate => "gate",
        Step::Register => "register",
        Step::Promote => "promote",
    }
}

fn step_key(step: Step, parts: &[&str]) -> ContentHash {
    let mut h = Hasher::new();
    h.field(b"keel-run-v1").field(step_name(step).as_bytes()).field(build_id().as_bytes());
    for p in parts {
        h.field(p.as_bytes());
    }
    h.finish()
}

fn section<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("config sections serialise")
}

/// What happened to one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: Step,
    pub key: Option<String>,
    /// ran, forced, skipped (key found), or, under --plan, would-run.
    pub action: &'static str,
    pub note: String,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub output: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestSummary {
    pub dataset: Dataset,
    /// False when this exact dataset version was already in the store.
    pub created: bool,
    /// Rows left out by [source.filter] (not bad data), by reason.
    pub filtered: BTreeMap<String, usize>,
    pub quarantine_by_reason: Vec<(String, usize)>,
    pub quarantine_file: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub project: String,
    pub config: String,
    /// The `pipeline` run row that did the work (none when every step was up to date).
    pub run_id: Option<String>,
    pub steps: Vec<StepReport>,
    pub ingest: IngestSummary,
    /// Present when the embed step ran.
    pub embedding: Option<Value>,
    pub model: ModelVersion,
    /// True when every step was up to date: nothing was recomputed.
    pub reused: bool,
    pub gate: GateOutcome,
    pub report_html: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub project: String,
    pub config: String,
    pub plan: Vec<StepReport>,
}

/// What stays loaded between runs of one process (the watcher's cycles).
pub struct Session {
    pub store: Store,
    encoder: Option<Arc<Encoder>>,
    installed: Option<InstalledModel>,
}

impl Session {
    pub fn new(store: Store) -> Self {
        Self { store, encoder: None, installed: None }
    }

    /// Reuses an encoder the caller already loaded (the quickstart serves with the same one).
    pub fn with_encoder(store: Store, installed: InstalledModel, encoder: Arc<Encoder>) -> Self {
        Self { store, encoder: Some(encoder), installed: Some(installed) }
    }

    fn installed(&mut self, cfg: &Config, dir: &Path) -> anyhow::Result<InstalledModel> {
        if let Some(i) = &self.installed {
            return Ok(i.clone());
        }
        let mut opts = PullOptions::from_env();
        if let Some(d) = &cfg.encoder.model_dir {
            let d = PathBuf::from(config::expand_vars(d)?);
            opts.model_dir = Some(if d.is_absolute() { d } else { dir.join(d) });
        } else if let Some(d) = std::env::var_os("KEEL_MODEL_DIR") {
            opts.model_dir = Some(d.into());
        }
        let installed = keel_embed::pull(&cfg.encoder.name, &opts)
            .with_context(|| format!("cannot get encoder model {}", cfg.encoder.name))?;
        self.installed = Some(installed.clone());
        Ok(installed)
    }

    fn load_encoder(&mut self, cfg: &Config, dir: &Path) -> anyhow::Result<Arc<Encoder>> {
        if let Some(e) = &self.encoder {
            return Ok(e.clone());
        }
        let installed = self.installed(cfg, dir)?;
        let precision = match cfg.encoder.precision {
            config::Precision::F32 => keel_embed::Precision::F32,
            config::Precision::Int8 => keel_embed::Precision::Int8,
        };
        let ecfg = EncoderConfig { batch_size: cfg.encoder.batch_size, precision, ..EncoderConfig::default() };
        let encoder = Arc::new(
            Encoder::load(&installed, ecfg)
                .with_context(|| format!("cannot load encoder from {}", installed.dir.display()))?,
        );
        self.encoder = Some(encoder.clone());
        Ok(encoder)
    }
}

/// One pass over the steps.
struct Pass<'a> {
    session: &'a mut Session,
    loaded: &'a Loaded,
    cfg: &'a Config,
    project: String,
    force: Option<Step>,
    plan: bool,
    quiet: bool,
    trigger: String,
    run_id: Option<String>,
    steps: Vec<StepReport>,
    /// Set under --plan once a step would run: later keys depend on its output.
    blocked_by: Option<Step>,
    records: Option<Vec<Record>>,
    x: Option<Matrix>,
}

fn jsonl<T: Serialize>(items: &[T]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.push(b'\n');
    }
    Ok(out)
}

fn read_options(cfg: &Config) -> ReadOptions {
    let (s, v) = (&cfg.source, &cfg.validation);
    ReadOptions {
        text_col: s.text_col.clone(),
        label_col: Some(s.label_col.clone()),
        id_col: s.id_col.clone(),
        format: match s.format {
            SourceFormat::Auto => None,
            SourceFormat::Csv => Some(Format::Delimited { delimiter: b',' }),
            SourceFormat::Tsv => Some(Format::Delimited { delimiter: b'\t' }),
            SourceFormat::Jsonl => Some(Format::JsonLines),
        },
        has_header: s.header,
        skip_after_header: s.skip_rows,
        limit: s.limit,
        lossy_utf8: v.lossy_utf8,
        max_text_chars: (v.max_text_chars > 0).then_some(v.max_text_chars),
        max_record_bytes: v.max_record_bytes,
        normalize: v.normalize,
        strip_html: v.strip_html,
        labels: v.labels.clone(),
        drop_duplicates: v.drop_duplicates,
    }
}

/// The content hash of each source file (what the ingest key and the watcher look at).
pub fn source_hashes(files: &[PathBuf]) -> anyhow::Result<Vec<ContentHash>> {
    files
        .iter()
        .map(|f| {
            std::fs::read(f)
                .map(|b| ContentHash::of(&b))
                .with_context(|| format!("cannot read source file {}", f.display()))
        })
        .collect()
}

fn s(v: &Value, k: &str) -> anyhow::Result<String> {
    v[k].as_str().map(str::to_owned).with_context(|| format!("a recorded step output has no {k:?}"))
}

fn hash(v: &Value, k: &str) -> anyhow::Result<ContentHash> {
    ContentHash::parse(&s(v, k)?).with_context(|| format!("a recorded step output has a malformed {k:?}"))
}

impl Pass<'_> {
    fn store(&self) -> &Store {
        &self.session.store
    }

    /// The recorded output of `step` for `key`, or `None` when it must run (not recorded, or
    /// forced). Logs the skip.
    async fn lookup(&mut self, step: Step, key: &ContentHash) -> anyhow::Result<Option<Value>> {
        let found = self.store().find_step(&self.project, step_name(step), key.as_str()).await?;
        match found {
            Some(rec) if self.force != Some(step) => {
                self.steps.push(StepReport {
                    step,
                    key: Some(key.as_str().to_owned()),
                    action: "skipped",
                    note: format!("up to date (done {})", rec.created_at),
                    seconds: 0.0,
                    output: rec.fields.output.clone(),
                });
                if !self.quiet {
                    note(format!("{:<9} skipped: up to date (key {})", step_name(step), key.short()));
                }
                Ok(Some(rec.fields.output))
            }
            _ => {
                if !self.quiet && !self.plan {
                    note(format!("{:<9} running (key {})", step_name(step), key.short()));
                }
                Ok(None)
            }
        }
    }

    /// Under --plan: notes that the step would run and returns true (the caller stops).
    fn would_run(&mut self, step: Step, key: &ContentHash) -> bool {
        if !self.plan {
            return false;
        }
        let forced = self.force == Some(step);
        self.steps.push(StepReport {
            step,
            key: Some(key.as_str().to_owned()),
            action: "would-run",
            note: if forced { "forced with --force".into() } else { "inputs not seen before".into() },
            seconds: 0.0,
            output: Value::Null,
        });
        self.blocked_by = Some(step);
        true
    }

    async fn record(
        &mut self,
        step: Step,
        key: &ContentHash,
        output: Value,
        started: Instant,
    ) -> anyhow::Result<Value> {
        let run_id = self.ensure_run().await?;
        self.store()
            .record_step(&NewStep {
                project: self.project.clone(),
                step: step_name(step).to_owned(),
                input_key: key.as_str().to_owned(),
                output: output.clone(),
                keel_version: build_id(),
                run_id: Some(run_id),
            })
            .await?;
        let forced = self.force == Some(step);
        let seconds = started.elapsed().as_secs_f64();
        if !self.quiet {
            note(format!("{:<9} done in {seconds:.2}s", step_name(step)));
        }
        self.steps.push(StepReport {
            step,
            key: Some(key.as_str().to_owned()),
            action: if forced { "forced" } else { "ran" },
            note: String::new(),
            seconds,
            output: output.clone(),
        });
        Ok(output)
    }

    /// The `pipeline` run row, started when the first step does work.
    async fn ensure_run(&mut self) -> anyhow::Result<String> {
        if let Some(r) = &self.run_id {
            return Ok(r.clone());
        }
        let params = json!({"config": self.loaded.path.display().to_string(), "project": self.project,
            "trigger": self.trigger, "force": self.force, "keel": build_id(), "settings": self.cfg});
        let id = self.store().start_run("pipeline", &params, &context::code_version(), &context::host()).await?;
        self.run_id = Some(id.clone());
        Ok(id)
    }

    async fn records(&mut self, dataset: &Dataset) -> anyhow::Result<&[Record]> {
        if self.records.is_none() {
            self.records = Some(pipeline::load_records(self.store(), dataset).await?);
        }
        Ok(self.records.as_deref().unwrap_or_default())
    }

    /// Every record's embedding: from the cache, embedding what is missing.
    async fn vectors(&mut self, dataset: &Dataset, encoder_id: &str) -> anyhow::Result<()> {
        if self.x.is_some() {
            return Ok(());
        }
        let texts: Vec<String> = self.records(dataset).await?.iter().map(|r| r.text.clone()).collect();
        let hashes: Vec<ContentHash> = texts.iter().map(|t| ContentHash::of(t.as_bytes())).collect();
        let cached = self.store().cached_embeddings(encoder_id, &hashes).await?;
        let x = if cached.iter().all(Option::is_some) {
            let dim = cached.first().and_then(|v| v.as_ref()).map_or(0, Vec::len);
            let mut m = Matrix::zeros(texts.len(), dim);
            for (i, v) in cached.into_iter().enumerate() {
                let v = v.expect("checked above");
                anyhow::ensure!(v.len() == dim, "cached vectors of {encoder_id} differ in length");
                m.row_mut(i).copy_from_slice(&v);
            }
            m
        } else {
            let encoder = self.session.load_encoder(self.cfg, &self.loaded.dir)?;
            anyhow::ensure!(
                encoder.id() == encoder_id,
                "the embeddings were made by {encoder_id}, not {}",
                encoder.id()
            );
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embed_cached(&self.session.store, &encoder, &refs, self.quiet).await?.0
        };
        self.x = Some(x);
        Ok(())
    }

    fn split_cfg(&self) -> SplitConfig {
        SplitConfig { validation: self.cfg.split.validation, test: self.cfg.split.test, seed: self.cfg.project.seed }
    }

    /// Embeddings, labels and texts of one split (`|r| &r.test`, `|r| &r.train`), as the train
    /// step saw it.
    async fn part(
        &mut self,
        dataset: &Dataset,
        encoder_id: &str,
        which: fn(&SplitRows) -> &Vec<usize>,
    ) -> anyhow::Result<(Part, Vec<String>)> {
        self.vectors(dataset, encoder_id).await?;
        let split = self.split_cfg();
        let records = self.records.as_deref().unwrap_or_default();
        let (labels, y, rows) = pipeline::label_and_split(records, &split)?;
        let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
        let x = self.x.as_ref().expect("vectors loaded");
        Ok((Part::new(x, &y, &texts, which(&rows)), labels))
    }

    // ---- the steps ----

    async fn ingest(&mut self, files: &[PathBuf]) -> anyhow::Result<Value> {
        let opts = read_options(self.cfg);
        let filter = &self.cfg.source.filter;
        let (mut records, mut quarantined, mut stats) = (Vec::new(), Vec::new(), Vec::new());
        let mut filtered: BTreeMap<String, usize> = BTreeMap::new();
        for f in files {
            let ing = tokio::task::block_in_place(|| keel_data::read_table(f, &opts))
                .with_context(|| format!("cannot ingest {}", f.display()))?;
            for r in ing.records {
                let label = r.label.as_deref().unwrap_or("");
                let why = if filter.drop_labels.iter().any(|l| l == label) {
                    Some(format!("label {label:?} dropped by [source.filter] drop_labels"))
                } else if !filter.keep_labels.is_empty() && !filter.keep_labels.iter().any(|l| l == label) {
                    Some("label not in [source.filter] keep_labels".to_owned())
                } else if r.text.chars().count() < filter.min_chars {
                    Some(format!("shorter than [source.filter] min_chars = {}", filter.min_chars))
                } else {
                    None
                };
                match why {
                    Some(w) => *filtered.entry(w).or_default() += 1,
                    None => records.push(r),
                }
            }
            quarantined.extend(ing.quarantined);
            stats.push(ing.stats);
        }
        let rows_read: u64 = stats.iter().map(|s| s.rows_read).sum();
        let by_reason = keel_data::quarantine_summary(&quarantined);
        let rules = &self.cfg.validation;
        if records.len() < rules.min_records {
            bail!(
                "[validation] min_records = {}, but only {} rows were accepted ({} read, {} quarantined, {} filtered)",
                rules.min_records,
                records.len(),
                rows_read,
                quarantined.len(),
                filtered.values().sum::<usize>()
            );
        }
        let share = quarantined.len() as f64 / rows_read.max(1) as f64;
        if share > rules.max_quarantined_share {
            bail!(
                "[validation] max_quarantined_share = {}, but {:.1}% of the rows read were quarantined (first reason: {})",
                rules.max_quarantined_share,
                share * 100.0,
                by_reason.first().map_or("?", |(r, _)| r.as_str())
            );
        }
        let id = keel_data::dataset_version(&records);
        let store = self.store();
        let existed = store.dataset(id.as_str()).await.is_ok();
        let records_artifact = store.put_artifact("records", &jsonl(&records)?).await?;
        let quarantine_artifact = store.put_artifact("quarantine", &jsonl(&quarantined)?).await?;
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
        let name = files[0].file_stem().and_then(|s| s.to_str()).unwrap_or("dataset").to_owned();
        store
            .put_dataset(&NewDataset {
                id: id.clone(),
                name,
                source: files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" + "),
                source_sha256,
                rows_read,
                n_records: records.len() as u64,
                n_quarantined: quarantined.len() as u64,
                records_artifact,
                quarantine_artifact: quarantine_artifact.clone(),
            })
            .await?;
        let out = json!({
            "dataset_id": id.as_str(),
            "created": !existed,
            "filtered": filtered,
            "quarantine_by_reason": by_reason,
            "quarantine_file": store.artifacts().location(&quarantine_artifact),
            "files": stats,
        });
        self.records = Some(records);
        Ok(out)
    }

    async fn embed(&mut self, dataset: &Dataset) -> anyhow::Result<Value> {
        let started = Instant::now();
        let encoder = self.session.load_encoder(self.cfg, &self.loaded.dir)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "encoder loaded");
        let texts: Vec<String> = self.records(dataset).await?.iter().map(|r| r.text.clone()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let (x, stats) = embed_cached(&self.session.store, &encoder, &refs, self.quiet).await?;
        self.x = Some(x);
        Ok(json!({"encoder_id": encoder.id(), "dim": encoder.dim(), "texts": stats.texts,
            "cached": stats.cached, "computed": stats.computed}))
    }

    async fn train(&mut self, dataset: &Dataset, encoder_id: &str, key: &ContentHash) -> anyhow::Result<Value> {
        self.vectors(dataset, encoder_id).await?;
        let split = self.split_cfg();
        let records = self.records.as_deref().unwrap_or_default();
        let (labels, y, rows) = pipeline::label_and_split(records, &split)?;
        let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
        let x = self.x.as_ref().expect("vectors loaded");
        let train = Part::new(x, &y, &texts, &rows.train);
        let validation = Part::new(x, &y, &texts, &rows.validation);
        let test = Part::new(x, &y, &texts, &rows.test);
        let checkpoint = self.store().home().join("checkpoints").join(format!("{}.mlp", key.as_str()));
        let head_args = self.cfg.head.args();
        let seed = self.cfg.project.seed;
        let fingerprints = row_fingerprints(records, &y, &labels, &rows.train);
        let (l2, kept_origin) = self.l2_choice(key, encoder_id, &labels, &fingerprints).await?;
        let trained = tokio::task::block_in_place(|| {
            training::train_heads(&train, &validation, &test, &labels, &head_args, seed, &checkpoint, &l2)
        })?;
        let store = self.store();
        // Where the L2 strength was chosen: these rows, by cross-validation, or the production
        // version's origin, carried forward while the rows stay close to it.
        let l2_origin = match (kept_origin, &trained.details["cross_validation"]["chosen_l2"]) {
            (Some(origin), _) => origin,
            (None, Value::Number(chosen)) => {
                let bytes: Vec<u8> = fingerprints.iter().flat_map(|f| f.to_le_bytes()).collect();
                let rows = store.put_artifact("train/rows", &bytes).await?;
                json!({"l2": chosen, "rows": rows.as_str(), "train_key": key.as_str()})
            }
            (None, _) => Value::Null,
        };
        let head = store.put_artifact("head", &trained.head.to_bytes()).await?;
        let fallback = store.put_artifact("head/fallback", &trained.fallback.to_bytes()).await?;
        let details = json!({"head": trained.head.kind(), "details": trained.details,
            "calibration": trained.calibration, "baselines": trained.baselines});
        let details_artifact = store.put_artifact("train/details", details.to_string().as_bytes()).await?;
        Ok(json!({"head": head.as_str(), "fallback": fallback.as_str(), "details": details_artifact.as_str(),
            "labels": labels, "l2_origin": l2_origin,
            "split_sizes": {"train": rows.train.len(), "validation": rows.validation.len(), "test": rows.test.len()}}))
    }

    /// Cross-validate the L2 strength again, or keep the one the production version's training
    /// carried: kept when the head is logistic regression on the same encoder and labels and at
    /// most `[head] l2_reuse_max_change` of the training rows (text and label) differ from the
    /// rows that strength was cross-validated on. Cross-validation is most of the training
    /// time, and a strength chosen on nearly the same rows is the one it would choose again.
    /// Also returns the origin to record when kept. Production cannot move between this and
    /// the train step's record (promotion comes later in the pass), so a step redone after a
    /// kill makes the same choice.
    async fn l2_choice(
        &self,
        key: &ContentHash,
        encoder_id: &str,
        labels: &[String],
        rows: &[u64],
    ) -> anyhow::Result<(training::L2Choice, Option<Value>)> {
        let cv = Ok((training::L2Choice::CrossValidate, None));
        let max_change = self.cfg.head.l2_reuse_max_change;
        if self.cfg.head.kind != HeadKind::Logistic || max_change <= 0.0 {
            return cv;
        }
        let Some(prev) = self.production_before(key.as_str()).await? else { return cv };
        if prev.encoder_id != encoder_id {
            return cv;
        }
        let Some(prev_key) = prev.metrics["pipeline"]["train_key"].as_str() else { return cv };
        let Some(step) = self.store().find_step(&self.project, step_name(Step::Train), prev_key).await? else {
            return cv;
        };
        let out = &step.fields.output;
        let origin = &out["l2_origin"];
        let (Some(l2), Some(origin_rows)) = (origin["l2"].as_f64(), origin["rows"].as_str()) else { return cv };
        if out["labels"] != json!(labels) {
            return cv;
        }
        let Some(origin_hash) = ContentHash::parse(origin_rows) else { return cv };
        let bytes = self.store().read_artifact(&origin_hash).await?;
        let old: Vec<u64> =
            bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk"))).collect();
        let share = changed_share(&old, rows);
        let pct = |x: f64| format!("{:.1}%", 100.0 * x);
        if share > max_change {
            if !self.quiet {
                note(format!(
                    "train     cross-validating L2 again: {} of the training rows differ from those {}'s was chosen on (above [head] l2_reuse_max_change = {})",
                    pct(share),
                    prev.tag(),
                    pct(max_change)
                ));
            }
            return cv;
        }
        if !self.quiet {
            note(format!(
                "train     keeping L2 = {l2:e} from {}: {} of the training rows differ from those it was cross-validated on (at most {} allowed by [head] l2_reuse_max_change)",
                prev.tag(),
                pct(share),
                pct(max_change)
            ));
        }
        let note = json!({"version": prev.tag(), "changed_share": share, "max_change": max_change,
            "cross_validated_in": origin["train_key"]});
        Ok((training::L2Choice::Keep { l2, note }, Some(origin.clone())))
    }

    async fn evaluate(&mut self, dataset: &Dataset, encoder_id: &str, trained: &Value) -> anyhow::Result<Value> {
        let (test, labels) = self.part(dataset, encoder_id, |r| &r.test).await?;
        let store = self.store();
        let head = load_head_artifact(store, &hash(trained, "head")?).await?;
        let details: Value = serde_json::from_slice(&store.read_artifact(&hash(trained, "details")?).await?)?;
        let proba = training::predict(&head, &test)?;
        let title = format!("{}: {} head on {}", self.project, head.kind(), dataset.fields.name);
        let mut report = training::report(title, format!("{} (new version)", self.project), &test, &proba, &labels);
        report.calibration = Some(serde_json::from_value::<TemperatureFit>(details["calibration"].clone())?);
        report.baselines = serde_json::from_value::<Vec<BaselineResult>>(details["baselines"].clone())?;
        let artifact = store.put_artifact("report/candidate", report.to_json().as_bytes()).await?;
        Ok(json!({"report": artifact.as_str(), "accuracy": report.evaluation.accuracy,
            "macro_f1": report.evaluation.macro_f1, "test_rows": test.y.len()}))
    }

    /// The production version a new version from `train_key` is compared with: production now,
    /// unless production already is that version (a run killed after promoting it), then the
    /// one it replaced.
    async fn production_before(&self, train_key: &str) -> anyhow::Result<Option<ModelVersion>> {
        let store = self.store();
        let Ok(p) = store.resolve(&format!("{}@production", self.project)).await else { return Ok(None) };
        if p.metrics["pipeline"]["train_key"].as_str() != Some(train_key) {
            return Ok(Some(p));
        }
        let events = store.alias_events(&self.project).await?;
        let previous = events
            .iter()
            .rev()
            .find(|e| e.alias == "production" && e.version == p.version)
            .and_then(|e| e.previous_version);
        Ok(match previous {
            Some(v) => Some(store.model_version(&self.project, v).await?),
            None => None,
        })
    }

    async fn gate(
        &mut self,
        dataset: &Dataset,
        encoder_id: &str,
        trained: &Value,
        against: Option<&ModelVersion>,
    ) -> anyhow::Result<Value> {
        let promote = self.cfg.gate.promote;
        let compared = match against {
            None => Err("first version of this model".to_owned()),
            Some(p) if p.encoder_id != encoder_id => Err(format!(
                "not compared with {}: it reads embeddings from {}, not {encoder_id}",
                p.tag(),
                p.encoder_id
            )),
            Some(p) => {
                let (test, labels) = self.part(dataset, encoder_id, |r| &r.test).await?;
                let ours = load_head_artifact(self.store(), &hash(trained, "head")?).await?;
                let proba = training::predict(&ours, &test)?;
                let theirs = pipeline::load_head(self.store(), p).await?;
                let rule = self.cfg.gate.gate();
                tokio::task::block_in_place(|| training::gate_with(&rule, &proba, &theirs, &p.tag(), &test, &labels))
            }
        };
        let (alias, reason, decision) = match compared {
            Err(why) if against.is_none() && promote => ("production", why, None),
            Err(why) if against.is_none() => {
                ("candidate", format!("{why} (held as candidate: [gate] promote = false)"), None)
            }
            Err(why) => ("candidate", format!("{why}; left as candidate (promote by hand with keel promote)"), None),
            Ok(d) if d.promote && promote => ("production", d.reason.clone(), Some(d)),
            Ok(d) if d.promote => {
                ("candidate", format!("{} (held as candidate: [gate] promote = false)", d.reason), Some(d))
            }
            Ok(d) => ("candidate", d.reason.clone(), Some(d)),
        };
        let gate = GateOutcome { decision, reason, alias: alias.to_owned() };
        Ok(json!({"gate": gate, "against": against.map(ModelVersion::tag)}))
    }

    #[allow(clippy::too_many_arguments)]
    async fn register(
        &mut self,
        key: &ContentHash,
        dataset: &Dataset,
        encoder_id: &str,
        train_key: &ContentHash,
        trained: &Value,
        evaluated: &Value,
        gated: &Value,
    ) -> anyhow::Result<Value> {
        let run_id = self.ensure_run().await?;
        let gate: GateOutcome = serde_json::from_value(gated["gate"].clone())?;
        let mut report: Report =
            serde_json::from_slice(&self.store().read_artifact(&hash(evaluated, "report")?).await?)?;
        report.gate = gate.decision.clone();
        // The reference `keel monitor` compares live traffic with: the training split's texts,
        // embeddings and the head's predictions (deterministic bytes, like every artifact here).
        let (train, labels) = self.part(dataset, encoder_id, |r| &r.train).await?;
        let encoder = self.session.load_encoder(self.cfg, &self.loaded.dir)?;
        let head = load_head_artifact(self.store(), &hash(trained, "head")?).await?;
        let started = Instant::now();
        let profile = crate::cmd::monitor::reference_profile(&encoder, &train, &head, &labels, &report)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "reference profile built");
        let store = self.store();
        let profile = store.put_artifact("profile", &profile).await?;
        let html = keel_eval::render_html(&report);
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "report rendered");
        let report_json = store.put_artifact("report/json", report.to_json().as_bytes()).await?;
        let report_html = store.put_artifact("report/html", html.as_bytes()).await?;
        let details: Value = serde_json::from_slice(&store.read_artifact(&hash(trained, "details")?).await?)?;
        let mut metrics = training::metrics(&report, None);
        metrics["head"] = details["head"].clone();
        if let Some(cal) = details["calibration"].as_object() {
            metrics["temperature"] = cal.get("temperature").cloned().unwrap_or(Value::Null);
            metrics["calibration"] = json!({"before": cal.get("before"), "after": cal.get("after")});
        }
        metrics["baselines"] = details["baselines"].clone();
        if let Value::Object(d) = &details["details"] {
            for (k, v) in d {
                metrics[k] = v.clone();
            }
        }
        metrics["split_sizes"] = trained["split_sizes"].clone();
        metrics["gate"] = serde_json::to_value(&gate)?;
        metrics["artifacts"] = json!({"fallback": trained["fallback"], "report": report_json.as_str(),
            "report_html": report_html.as_str(), "profile": profile.as_str()});
        metrics["pipeline"] =
            json!({"train_key": train_key.as_str(), "config": self.loaded.path.display().to_string()});
        let (model, _) = store
            .register_model_version(&NewModelVersion {
                name: self.project.clone(),
                input_key: key.clone(),
                run_id,
                dataset_id: dataset.fields.id.clone(),
                encoder_id: encoder_id.to_owned(),
                head_artifact: hash(trained, "head")?,
                metrics,
            })
            .await?;
        let page = pipeline::report_path(store, &model);
        training::write_html(&page, &html)?;
        Ok(json!({"version": model.version, "report_json": report_json.as_str(), "report_html": report_html.as_str()}))
    }

    async fn promote(&mut self, version: i64, gate: &GateOutcome) -> anyhow::Result<Value> {
        let store = self.store();
        let current = store.resolve(&format!("{}@{}", self.project, gate.alias)).await.ok().map(|m| m.version);
        let previous = if current == Some(version) {
            current
        } else {
            store.set_alias(&self.project, &gate.alias, version, &gate.reason).await?
        };
        let kind = if gate.alias == "production" { "promote" } else { "refuse" };
        store
            .log_pipeline_event(
                &self.project,
                kind,
                &gate.reason,
                &json!({"version": version, "alias": gate.alias, "previous": previous, "trigger": self.trigger}),
            )
            .await?;
        Ok(json!({"alias": gate.alias, "version": version, "previous": previous}))
    }
}

async fn load_head_artifact(store: &Store, hash: &ContentHash) -> anyhow::Result<keel_train::Head> {
    let bytes = store.read_artifact(hash).await?;
    keel_train::Head::from_bytes(&bytes).context("cannot load a trained head")
}

/// One 64-bit fingerprint per training row (its text and label), sorted: what the L2 reuse
/// rule compares between runs.
fn row_fingerprints(records: &[Record], y: &[usize], labels: &[String], rows: &[usize]) -> Vec<u64> {
    let mut out: Vec<u64> = rows
        .iter()
        .map(|&i| {
            let mut h = Hasher::new();
            h.field(records[i].text.as_bytes()).field(labels[y[i]].as_bytes());
            let hex = h.finish();
            u64::from_str_radix(&hex.as_str()[..16], 16).expect("hex digest")
        })
        .collect();
    out.sort_unstable();
    out
}

/// Share of rows that changed between two sorted multisets of fingerprints: half the rows in
/// one and not the other, over the larger one's size (one edited row of a hundred: 1%).
fn changed_share(old: &[u64], new: &[u64]) -> f64 {
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let larger = old.len().max(new.len());
    if larger == 0 { 0.0 } else { (old.len() + new.len() - 2 * common) as f64 / (2 * larger) as f64 }
}

/// What a pass over the steps ended with.
enum Ended {
    Done(Box<RunOutcome>),
    Planned(Plan),
}

/// Runs (or, with `plan`, plans) every step once.
async fn pass(
    session: &mut Session,
    loaded: &Loaded,
    force: Option<Step>,
    plan: bool,
    quiet: bool,
    trigger: &str,
) -> anyhow::Result<Ended> {
    let started = Instant::now();
    let cfg = &loaded.config;
    let mut p = Pass {
        session,
        loaded,
        cfg,
        project: cfg.project.name.clone(),
        force,
        plan,
        quiet,
        trigger: trigger.to_owned(),
        run_id: None,
        steps: Vec::new(),
        blocked_by: None,
        records: None,
        x: None,
    };
    let result = steps(&mut p, started).await;
    let ended = match result {
        Ok(Some(outcome)) => Ok(Ended::Done(Box::new(outcome))),
        Ok(None) => {
            let mut plan = std::mem::take(&mut p.steps);
            if let Some(blocker) = p.blocked_by {
                for &s in ALL_STEPS.iter().filter(|&&s| s > blocker) {
                    plan.push(StepReport {
                        step: s,
                        key: None,
                        action: "would-run",
                        note: format!("its inputs come from {}", step_name(blocker)),
                        seconds: 0.0,
                        output: Value::Null,
                    });
                }
            }
            Ok(Ended::Planned(Plan { project: p.project.clone(), config: loaded.path.display().to_string(), plan }))
        }
        Err(e) => Err(e),
    };
    if let Some(run) = &p.run_id {
        let store = &p.session.store;
        match &ended {
            Ok(Ended::Done(o)) => {
                let m = json!({"trigger": trigger, "version": o.model.version, "alias": o.gate.alias,
                    "reason": o.gate.reason, "steps": o.steps.iter().map(|s| json!({"step": s.step, "action": s.action})).collect::<Vec<_>>(),
                    "accuracy": o.model.metrics["accuracy"], "dataset": o.ingest.dataset.fields.id.as_str()});
                store.finish_run(run, RunStatus::Succeeded, Some(&m), None).await?;
            }
            Ok(Ended::Planned(_)) => {}
            Err(e) => store.finish_run(run, RunStatus::Failed, None, Some(&format!("{e:#}"))).await?,
        }
    }
    ended
}

/// The steps in order. `Ok(None)`: planning stopped at a step that would run.
async fn steps(p: &mut Pass<'_>, started: Instant) -> anyhow::Result<Option<RunOutcome>> {
    let cfg = p.cfg;
    let files = p.loaded.source_paths()?;
    let file_hashes = source_hashes(&files)?;

    // ingest
    let mut parts = vec![section(&cfg.source), section(&cfg.validation)];
    parts.extend(file_hashes.iter().map(|h| h.as_str().to_owned()));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let k_ingest = step_key(Step::Ingest, &refs);
    let ingested = match p.lookup(Step::Ingest, &k_ingest).await? {
        Some(o) => o,
        None if p.would_run(Step::Ingest, &k_ingest) => return Ok(None),
        None => {
            let t = Instant::now();
            let o = p.ingest(&files).await?;
            p.record(Step::Ingest, &k_ingest, o, t).await?
        }
    };
    let dataset = p.store().dataset(&s(&ingested, "dataset_id")?).await?;

    // embed
    let installed = p.session.installed(cfg, &p.loaded.dir)?;
    let k_embed = step_key(
        Step::Embed,
        &[dataset.fields.id.as_str(), &section(&cfg.encoder), &installed.name, installed.sha256.as_str()],
    );
    let (embedded, embed_ran) = match p.lookup(Step::Embed, &k_embed).await? {
        Some(o) => (o, false),
        None if p.would_run(Step::Embed, &k_embed) => return Ok(None),
        None => {
            let t = Instant::now();
            let o = p.embed(&dataset).await?;
            (p.record(Step::Embed, &k_embed, o, t).await?, true)
        }
    };
    let encoder_id = s(&embedded, "encoder_id")?;

    // train
    let split = section(&p.split_cfg());
    let k_train = step_key(Step::Train, &[dataset.fields.id.as_str(), &encoder_id, &split, &section(&cfg.head)]);
    let trained = match p.lookup(Step::Train, &k_train).await? {
        Some(o) => o,
        None if p.would_run(Step::Train, &k_train) => return Ok(None),
        None => {
            let t = Instant::now();
            let o = p.train(&dataset, &encoder_id, &k_train).await?;
            p.record(Step::Train, &k_train, o, t).await?
        }
    };

    // evaluate
    let k_eval = step_key(Step::Evaluate, &[k_train.as_str(), &s(&trained, "head")?, &split, &p.project]);
    let evaluated = match p.lookup(Step::Evaluate, &k_eval).await? {
        Some(o) => o,
        None if p.would_run(Step::Evaluate, &k_eval) => return Ok(None),
        None => {
            let t = Instant::now();
            let o = p.evaluate(&dataset, &encoder_id, &trained).await?;
            p.record(Step::Evaluate, &k_eval, o, t).await?
        }
    };

    // gate
    let against = p.production_before(k_train.as_str()).await?;
    let against_id = against.as_ref().map_or_else(|| "none".to_owned(), |a| format!("{} {}", a.tag(), a.head_artifact));
    let mut gate_cfg = cfg.gate.clone();
    gate_cfg.promote = true; // promotion is the promote step's; the decision does not depend on it
    let k_gate = step_key(
        Step::Gate,
        &[
            &s(&trained, "head")?,
            &s(&evaluated, "report")?,
            &section(&gate_cfg),
            &cfg.gate.promote.to_string(),
            &against_id,
        ],
    );
    let gated = match p.lookup(Step::Gate, &k_gate).await? {
        Some(o) => o,
        None if p.would_run(Step::Gate, &k_gate) => return Ok(None),
        None => {
            let t = Instant::now();
            let o = p.gate(&dataset, &encoder_id, &trained, against.as_ref()).await?;
            p.record(Step::Gate, &k_gate, o, t).await?
        }
    };
    let gate: GateOutcome = serde_json::from_value(gated["gate"].clone())?;

    // register
    let k_register = step_key(Step::Register, &[&p.project, k_train.as_str(), k_eval.as_str(), k_gate.as_str()]);
    let registered = match p.lookup(Step::Register, &k_register).await? {
        Some(o) => o,
        None if p.would_run(Step::Register, &k_register) => return Ok(None),
        None => {
            let t = Instant::now();
            let o = p.register(&k_register, &dataset, &encoder_id, &k_train, &trained, &evaluated, &gated).await?;
            p.record(Step::Register, &k_register, o, t).await?
        }
    };
    let version = registered["version"].as_i64().context("the register step recorded no version")?;

    // promote (or hold as candidate, with the gate's reason)
    let k_promote =
        step_key(Step::Promote, &[&p.project, &version.to_string(), &gate.alias, &gate.reason, k_register.as_str()]);
    match p.lookup(Step::Promote, &k_promote).await? {
        Some(_) => {}
        None if p.would_run(Step::Promote, &k_promote) => return Ok(None),
        None => {
            let t = Instant::now();
            let o = p.promote(version, &gate).await?;
            p.record(Step::Promote, &k_promote, o, t).await?;
        }
    }
    if p.plan {
        return Ok(None);
    }

    let store = p.store();
    let model = store.model_version(&p.project, version).await?;
    let page = pipeline::report_path(store, &model);
    if !page.exists() {
        // The readable copy is a convenience; the stored artifact is the record.
        let html = store.read_artifact(&hash(&registered, "report_html")?).await?;
        training::write_html(&page, &String::from_utf8_lossy(&html))?;
    }
    let ingest = IngestSummary {
        dataset,
        created: ingested["created"].as_bool().unwrap_or(false) && p.steps[0].action != "skipped",
        filtered: serde_json::from_value(ingested["filtered"].clone()).unwrap_or_default(),
        quarantine_by_reason: serde_json::from_value(ingested["quarantine_by_reason"].clone()).unwrap_or_default(),
        quarantine_file: ingested["quarantine_file"].as_str().unwrap_or_default().to_owned(),
    };
    let reused = p.steps.iter().all(|s| s.action == "skipped");
    Ok(Some(RunOutcome {
        project: p.project.clone(),
        config: p.loaded.path.display().to_string(),
        run_id: p.run_id.clone(),
        steps: std::mem::take(&mut p.steps),
        ingest,
        embedding: embed_ran.then_some(embedded),
        model,
        reused,
        gate,
        report_html: Some(page.display().to_string()),
        seconds: started.elapsed().as_secs_f64(),
    }))
}

/// One full run (no plan): what `keel run` and the quickstart do.
pub async fn run_once(
    session: &mut Session,
    loaded: &Loaded,
    force: Option<Step>,
    quiet: bool,
    trigger: &str,
) -> anyhow::Result<RunOutcome> {
    match pass(session, loaded, force, false, quiet, trigger).await? {
        Ended::Done(o) => Ok(*o),
        Ended::Planned(_) => unreachable!("a pass without --plan runs every step"),
    }
}

pub fn load_config(path: &Path, limit: Option<usize>) -> anyhow::Result<Loaded> {
    let mut loaded = config::load(path)?;
    if limit.is_some() {
        loaded.config.source.limit = limit;
    }
    Ok(loaded)
}

pub async fn run(home: &Path, json: bool, args: RunArgs) -> anyhow::Result<()> {
    let loaded = load_config(&args.config, args.limit)?;
    let store = context::open_store(home).await?;
    let mut session = Session::new(store);
    if args.plan {
        let Ended::Planned(plan) = pass(&mut session, &loaded, args.force, true, true, "plan").await? else {
            unreachable!("--plan never runs a step")
        };
        if json {
            return output::json(&plan);
        }
        println!("plan for {} ({})", plan.project, plan.config);
        for s in &plan.plan {
            let key = s.key.as_deref().map_or("-".to_owned(), |k| k[..12.min(k.len())].to_owned());
            println!("  {:<9} {:<10} {:<13} {}", step_name(s.step), s.action, key, s.note);
        }
        return Ok(());
    }
    if args.watch {
        return watch(&mut session, &loaded, &args, json).await;
    }
    let outcome = run_once(&mut session, &loaded, args.force, json, "keel run").await?;
    if json {
        return output::json(&outcome);
    }
    print_outcome(&outcome);
    Ok(())
}

/// `--watch`: run, then re-run whenever a source file's content changes (once it has stopped
/// changing for one interval), until SIGTERM or Ctrl-C. Every decision is logged in the store.
async fn watch(session: &mut Session, loaded: &Loaded, args: &RunArgs, json: bool) -> anyhow::Result<()> {
    let project = loaded.config.project.name.clone();
    let interval = Duration::from_secs_f64(args.interval.unwrap_or(loaded.config.watch.interval_secs).max(0.05));
    let files = loaded.source_paths()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let monitor = &loaded.config.monitor;
    let drift_every = Duration::from_secs_f64(monitor.check_every_secs.max(0.05));
    let mut last_drift_check = Instant::now();
    let mut trigger = "watch started".to_owned();
    let mut force = args.force;
    loop {
        let seen = source_hashes(&files).unwrap_or_default();
        match run_once(session, loaded, force.take(), json, &trigger).await {
            Ok(o) => {
                let (kind, reason) = if o.reused && trigger.starts_with("drift") {
                    (
                        "skip",
                        format!(
                            "{trigger}; but every step is up to date: the sources hold no new labelled rows to retrain \
                         on (add labelled examples of the recent traffic to them)"
                        ),
                    )
                } else if o.reused {
                    ("skip", "every step up to date: nothing to do".to_owned())
                } else {
                    ("run", format!("{}: {} is {} ({})", trigger, o.model.tag(), o.gate.alias, o.gate.reason))
                };
                session
                    .store
                    .log_pipeline_event(
                        &project,
                        kind,
                        &reason,
                        &json!({"trigger": trigger, "version": o.model.version,
                        "alias": o.gate.alias, "run_id": o.run_id}),
                    )
                    .await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&json!({"trigger": trigger, "decision": reason, "outcome": o}))?
                    );
                } else {
                    note(format!("watch: {reason}"));
                    print_outcome(&o);
                }
            }
            Err(e) => {
                let why = format!("{trigger}: run failed: {e:#}");
                note(format!("watch: {why}"));
                session.store.log_pipeline_event(&project, "error", &why, &json!({"trigger": trigger})).await?;
                if json {
                    println!("{}", serde_json::to_string(&json!({"trigger": trigger, "error": format!("{e:#}")}))?);
                }
            }
        }
        // Wait for a change that has settled: the new content seen twice, an interval apart.
        let mut pending: Option<Vec<ContentHash>> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tokio::signal::ctrl_c() => return stop(session, &project, "interrupted").await,
                _ = term.recv() => return stop(session, &project, "terminated").await,
            }
            if monitor.retrain_on_drift && last_drift_check.elapsed() >= drift_every {
                last_drift_check = Instant::now();
                match drift_trigger(session, loaded).await {
                    Ok(Some(why)) => {
                        trigger = why;
                        session.store.log_pipeline_event(&project, "trigger", &trigger, &json!({})).await?;
                        note(format!("watch: {trigger}"));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let why = format!("drift check failed: {e:#}");
                        note(format!("watch: {why}"));
                        session.store.log_pipeline_event(&project, "error", &why, &json!({})).await?;
                    }
                }
            }
            let Ok(now) = source_hashes(&files) else { continue };
            if now == seen {
                pending = None;
                continue;
            }
            if pending.as_ref() == Some(&now) {
                let changed: Vec<String> = files
                    .iter()
                    .zip(seen.iter().zip(&now))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(f, (a, b))| format!("{} changed ({} → {})", f.display(), a.short(), b.short()))
                    .collect();
                trigger = format!("source {}", changed.join(", "));
                session.store.log_pipeline_event(&project, "trigger", &trigger, &json!({})).await?;
                note(format!("watch: {trigger}"));
                break;
            }
            pending = Some(now);
        }
    }
}

/// Checks the served alias's logged predictions of the last `[monitor] window_hours` against
/// its reference profile. `Some(reason)` when the verdict is drift or lower live quality;
/// `None` when there is nothing to check (no such alias yet, too few predictions) or no drift.
async fn drift_trigger(session: &mut Session, loaded: &Loaded) -> anyhow::Result<Option<String>> {
    let cfg = &loaded.config;
    let spec = format!("{}@{}", cfg.project.name, cfg.serve.alias);
    let Ok(model) = session.store.resolve(&spec).await else { return Ok(None) };
    let profile = super::monitor::load_profile(&session.store, &model).await?;
    let encoder = session.load_encoder(cfg, &loaded.dir)?;
    let now = std::time::SystemTime::now();
    let window = Duration::from_secs(cfg.monitor.window_hours.saturating_mul(3600));
    let (since, until) = (super::monitor::rfc3339(now - window), super::monitor::rfc3339(now));
    let Some(checked) = super::monitor::check(&session.store, &model, &profile, &encoder, &since, &until, true).await?
    else {
        return Ok(None);
    };
    let v = &checked.report.verdict;
    Ok((v.drift || v.quality_degraded).then(|| {
        format!(
            "drift in {}'s last {} h ({} predictions): {}",
            model.tag(),
            cfg.monitor.window_hours,
            checked.predictions.len(),
            v.summary
        )
    }))
}

async fn stop(session: &Session, project: &str, why: &str) -> anyhow::Result<()> {
    session.store.log_pipeline_event(project, "stop", &format!("watcher {why}"), &json!({})).await?;
    note(format!("watch: stopped ({why})"));
    Ok(())
}

pub fn print_outcome(o: &RunOutcome) {
    for s in &o.steps {
        let what = match s.action {
            "skipped" => "skipped (up to date)".to_owned(),
            a => format!("{a} in {:.2}s", s.seconds),
        };
        println!("step      {:<9} {what}", step_name(s.step));
    }
    let d = &o.ingest.dataset.fields;
    println!(
        "data      {} rows read from {}: {} accepted, {} quarantined",
        d.rows_read, d.source, d.n_records, d.n_quarantined
    );
    for (why, n) in &o.ingest.filtered {
        println!("  filtered    {n:>6}  {why}");
    }
    for (reason, n) in &o.ingest.quarantine_by_reason {
        println!("  quarantined {n:>6}  {reason}");
    }
    if !o.ingest.quarantine_by_reason.is_empty() {
        println!("  quarantined rows, with line numbers and reasons: {}", o.ingest.quarantine_file);
    }
    if let Some(e) = &o.embedding {
        println!("embedded  {} texts ({} from cache, {} computed)", e["texts"], e["cached"], e["computed"]);
    }
    let m = &o.model;
    println!(
        "model     {} {}",
        m.tag(),
        if o.reused { "(up to date: nothing changed since it was trained)" } else { "(new)" }
    );
    let sizes = &m.metrics["split_sizes"];
    println!("split     {} train / {} validation / {} test", sizes["train"], sizes["validation"], sizes["test"]);
    let num = |k: &str| m.metrics[k].as_f64().unwrap_or(f64::NAN);
    let iv = |k: &str| {
        let i = &m.metrics["intervals"][k];
        match (i["lo"].as_f64(), i["hi"].as_f64()) {
            (Some(lo), Some(hi)) => format!(" [{lo:.4}, {hi:.4}]"),
            _ => String::new(),
        }
    };
    if let Some(head) = m.metrics["head"].as_str() {
        println!("head      {head}, temperature {:.3} fitted on validation", num("temperature"));
    }
    println!(
        "accuracy  {:.4}{}   share of test rows labelled correctly (95% interval)",
        num("accuracy"),
        iv("accuracy")
    );
    println!(
        "macro-F1  {:.4}{}   F1 averaged over labels, so each label counts the same",
        num("macro_f1"),
        iv("macro_f1")
    );
    if let Some(bs) = m.metrics["baselines"].as_array() {
        for b in bs {
            println!(
                "baseline  {:.4} macro-F1: {}",
                b["macro_f1"].as_f64().unwrap_or(f64::NAN),
                b["name"].as_str().unwrap_or("?")
            );
        }
    }
    println!("gate      {}", o.gate.reason);
    println!("aliases   {}", if m.aliases.is_empty() { "-".into() } else { m.aliases.join(", ") });
    if let Some(r) = &o.report_html {
        println!("report    {r}");
    }
    println!("took      {:.2}s", o.seconds);
}
