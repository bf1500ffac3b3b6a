//! One pass over the steps, in order, each through one helper ([`Pass::step`]): look its key
//! up, stop there under `--plan`, or do the work and record its typed output.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use keel_core::{ContentHash, Matrix, Record};
use keel_data::SplitConfig;
use keel_embed::Encoder;
use keel_eval::{BaselineResult, FineTuneRecord};
use keel_store::{Dataset, ModelVersion, Store};
use keel_train::{Head, InputKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::l2::{self, L2Context};

/// The pipeline-step name under which a measured encoder cost is kept (`pipeline_steps`; no
/// step of `keel run` is called so, and nothing lists these rows as steps).
const ENCODER_COST_STEP: &str = "encoder-cost";

/// A measured encoder cost, as kept under [`ENCODER_COST_STEP`].
#[derive(Serialize, serde::Deserialize)]
struct EncoderCost {
    us_per_text: f64,
    encoder: String,
    cpu: String,
}
use super::record::{Recorder, section, step_key};
use super::session::Session;
use super::{IngestSummary, RunOutcome, Trigger};
use crate::config::{Config, Loaded};
use crate::context;
use crate::embedding::embed_cached;
use crate::stages::data::{Labelled, Part, label_and_split, load_records};
use crate::stages::evaluate::{self, load_head, load_head_artifact};
use crate::stages::finetune::{self, FineTuneInput, FineTuneSection};
use crate::stages::gate::{self, Promotion};
use crate::stages::ingest::{self, IngestRequest};
use crate::stages::register::{self, RegisterInput};
use crate::stages::select;
use crate::stages::train::{self, HeadKind, TrainDetails, TrainInput};
use crate::stages::{
    ArtifactKind, Embedded, Evaluated, Gated, Ingested, L2Origin, Promoted, Registered, StepKind, Trained,
};

/// The state of one pass: what it has loaded so far and what it has recorded.
pub struct Pass<'a> {
    pub session: &'a mut Session,
    pub loaded: &'a Loaded,
    pub cfg: &'a Config,
    pub rec: Recorder,
    pub trigger: &'a Trigger,
    records: Option<Vec<Record>>,
    x: Option<Matrix>,
    /// Labels and split of `records`, worked out once per pass.
    labelled: Option<std::sync::Arc<Labelled>>,
    /// How the embed step fine-tuned the encoder, when it did: the steps after it read the
    /// adapted encoder.
    fine_tuned: Option<FineTuneRecord>,
}

impl<'a> Pass<'a> {
    pub fn new(session: &'a mut Session, loaded: &'a Loaded, rec: Recorder, trigger: &'a Trigger) -> Self {
        Self {
            session,
            loaded,
            cfg: &loaded.config,
            rec,
            trigger,
            records: None,
            x: None,
            labelled: None,
            fine_tuned: None,
        }
    }

    pub fn store(&self) -> &Store {
        &self.session.store
    }

    /// One step: its recorded output when its key was done before, `None` under `--plan` when it
    /// would run (the pass stops there), else the output of `work`, recorded last. The flag says
    /// whether the work ran.
    async fn step<T, F>(&mut self, kind: StepKind, key: &ContentHash, work: F) -> anyhow::Result<Option<(T, bool)>>
    where
        T: Serialize + DeserializeOwned,
        F: AsyncFnOnce(&mut Self) -> anyhow::Result<T>,
    {
        if let Some(found) = self.rec.lookup(&self.session.store, kind, key).await? {
            return Ok(Some((found, false)));
        }
        if self.rec.would_run(kind, key) {
            return Ok(None);
        }
        let started = Instant::now();
        let out = work(self).await?;
        self.rec.record(&self.session.store, kind, key, &out, started).await?;
        Ok(Some((out, true)))
    }

    /// The encoder this pass's embeddings come from: the base, or the fine-tuned one.
    async fn encoder(&mut self) -> anyhow::Result<Arc<Encoder>> {
        match self.fine_tuned.clone() {
            None => self.session.load_encoder(&self.cfg.encoder, &self.loaded.dir),
            Some(ft) => self.session.adapted(&self.cfg.encoder, &self.loaded.dir, &ft).await,
        }
    }

    fn split_cfg(&self) -> SplitConfig {
        SplitConfig { validation: self.cfg.split.validation, test: self.cfg.split.test, seed: self.cfg.project.seed }
    }

    async fn load_records(&mut self, dataset: &Dataset) -> anyhow::Result<()> {
        if self.records.is_none() {
            self.records = Some(load_records(self.store(), dataset).await?);
        }
        Ok(())
    }

    fn records(&self) -> &[Record] {
        self.records.as_deref().unwrap_or_default()
    }

    fn texts(&self) -> Vec<&str> {
        self.records().iter().map(|r| r.text.as_str()).collect()
    }

    /// Every record's embedding: from the cache, embedding what is missing.
    async fn vectors(&mut self, dataset: &Dataset, encoder_id: &str) -> anyhow::Result<()> {
        if self.x.is_some() {
            return Ok(());
        }
        self.load_records(dataset).await?;
        let texts: Vec<String> = self.records().iter().map(|r| r.text.clone()).collect();
        let hashes: Vec<ContentHash> = texts.iter().map(|t| ContentHash::of(t.as_bytes())).collect();
        let cached = self.store().cached_embeddings(encoder_id, &hashes).await?;
        let x = if cached.iter().all(Option::is_some) {
            let dim = cached.first().and_then(|v| v.as_ref()).map_or(0, Vec::len);
            let mut m = Matrix::zeros(texts.len(), dim);
            for (i, v) in cached.into_iter().enumerate() {
                let v = v.context("a cached vector vanished")?;
                anyhow::ensure!(v.len() == dim, "cached vectors of {encoder_id} differ in length");
                m.row_mut(i).copy_from_slice(&v);
            }
            m
        } else {
            let encoder = self.encoder().await?;
            anyhow::ensure!(
                encoder.id() == encoder_id,
                "the embeddings were made by {encoder_id}, not {}",
                encoder.id()
            );
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            embed_cached(&self.session.store, &encoder, &refs, self.rec.quiet).await?.0
        };
        self.x = Some(x);
        Ok(())
    }

    /// Labels and split of the loaded records, and their embeddings (loaded first).
    async fn labelled(&mut self, dataset: &Dataset, encoder_id: &str) -> anyhow::Result<std::sync::Arc<Labelled>> {
        self.vectors(dataset, encoder_id).await?;
        if self.labelled.is_none() {
            self.labelled = Some(std::sync::Arc::new(label_and_split(self.records(), &self.split_cfg())?));
        }
        Ok(self.labelled.clone().expect("set above"))
    }

    /// The embeddings, labels and texts of the rows `rows` picks.
    fn part(&self, l: &Labelled, rows: &[usize]) -> Part {
        let x = self.x.as_ref().expect("vectors are loaded before parts are cut");
        Part::new(x, &l.y, &self.texts(), rows)
    }

    // ---- the steps ----

    async fn ingest(&mut self, files: Vec<PathBuf>) -> anyhow::Result<Ingested> {
        let (s, v) = (&self.cfg.source, &self.cfg.validation);
        let req = IngestRequest {
            files,
            read: self.cfg.read_options()?,
            filter: s.filter.clone(),
            min_records: v.min_records,
            max_quarantined_share: v.max_quarantined_share,
            keep_records: true,
        };
        let result = ingest::ingest(self.store(), &req).await?;
        self.records = Some(result.records);
        Ok(result.ingested)
    }

    async fn embed(&mut self, dataset: &Dataset, key: &ContentHash) -> anyhow::Result<Embedded> {
        let started = Instant::now();
        let base = self.session.load_encoder(&self.cfg.encoder, &self.loaded.dir)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "encoder loaded");
        self.load_records(dataset).await?;
        let (encoder, fine_tune) = match self.cfg.encoder.fine_tune.clone() {
            Some(section) => {
                let (encoder, record) = self.fine_tune(&section, &base, key).await?;
                (encoder, Some(record))
            }
            None => (base, None),
        };
        let texts = self.texts();
        let (x, stats) = embed_cached(&self.session.store, &encoder, &texts, self.rec.quiet).await?;
        self.x = Some(x);
        Ok(Embedded {
            encoder_id: encoder.id().to_owned(),
            dim: encoder.dim(),
            texts: stats.texts,
            cached: stats.cached,
            computed: stats.computed,
            fine_tune,
        })
    }

    /// Fine-tunes the base encoder on the training split (validation for early stopping), stores
    /// the adaptation and loads the adapted encoder.
    async fn fine_tune(
        &mut self,
        section: &FineTuneSection,
        base: &Arc<Encoder>,
        key: &ContentHash,
    ) -> anyhow::Result<(Arc<Encoder>, FineTuneRecord)> {
        let installed = self.session.installed(&self.cfg.encoder, &self.loaded.dir)?;
        let l = label_and_split(self.records(), &self.split_cfg())?;
        let texts = self.texts();
        let pick = |rows: &[usize]| -> (Vec<&str>, Vec<usize>) { rows.iter().map(|&i| (texts[i], l.y[i])).unzip() };
        let ((tr_x, tr_y), (va_x, va_y)) = (pick(&l.rows.train), pick(&l.rows.validation));
        let checkpoint = self.store().home().join("checkpoints").join(format!("{}.finetune", key.as_str()));
        let input = FineTuneInput {
            section,
            base,
            installed: &installed,
            train: (&tr_x, &tr_y),
            validation: (&va_x, &va_y),
            seed: self.cfg.project.seed,
            checkpoint: &checkpoint,
            quiet: self.rec.quiet,
        };
        let adaptation = tokio::task::block_in_place(|| finetune::fine_tune(&input))?;
        let kind = adaptation.kind;
        let hash = self.store().put_artifact(finetune::artifact_kind(kind), &adaptation.bytes).await?;
        let encoder = tokio::task::block_in_place(|| {
            context::load_adapted(&self.cfg.encoder, &installed, kind, &adaptation.bytes, &hash)
        })?;
        let record =
            finetune::record(adaptation, hash.as_str().to_owned(), base.id().to_owned(), encoder.id().to_owned());
        self.session.keep_adapted(encoder.clone());
        self.fine_tuned = Some(record.clone());
        Ok((encoder, record))
    }

    async fn train(&mut self, dataset: &Dataset, encoder_id: &str, key: &ContentHash) -> anyhow::Result<Trained> {
        let started = Instant::now();
        let spec = self.cfg.head.spec();
        // Auto selection times the encoder, once per encoder, texts, machine and build (a rerun
        // reads the measurement back). To measure, it loads while the rows and vectors are read
        // and the heads train, and is waited for only when its cost is measured, after selection.
        let cost_key = self.encoder_cost_key(dataset, encoder_id);
        let measured = match spec.kind {
            HeadKind::Auto => self.store().find_step(&self.rec.project, ENCODER_COST_STEP, &cost_key).await?,
            _ => None,
        };
        let measured: Option<f64> =
            measured.and_then(|s| serde_json::from_value::<EncoderCost>(s.fields.output).ok()).map(|c| c.us_per_text);
        let pending = if spec.kind == HeadKind::Auto && measured.is_none() {
            self.session.load_encoder_in_background(&self.cfg.encoder, &self.loaded.dir)?
        } else {
            None
        };
        let l = self.labelled(dataset, encoder_id).await?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "train: rows and vectors loaded");
        let (tr, va, te) =
            (self.part(&l, &l.rows.train), self.part(&l, &l.rows.validation), self.part(&l, &l.rows.test));
        let checkpoint = self.store().home().join("checkpoints").join(format!("{}.mlp", key.as_str()));
        let fingerprints = l2::row_fingerprints(self.records(), &l.y, &l.labels, &l.rows.train);
        let production = self.production_before(key.as_str()).await?;
        let cx = L2Context {
            store: self.store(),
            project: &self.rec.project,
            head: &self.cfg.head,
            production: production.as_ref(),
            encoder_id,
            labels: &l.labels,
            quiet: self.rec.quiet,
        };
        let (l2, kept_origin) = l2::l2_choice(&cx, &fingerprints).await?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "train: L2 choice");
        let input = TrainInput {
            train: &tr,
            validation: &va,
            test: &te,
            labels: &l.labels,
            spec: &spec,
            seed: self.cfg.project.seed,
            checkpoint: &checkpoint,
            l2: &l2,
        };
        let mut trained = tokio::task::block_in_place(|| train::train_heads(&input))?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "train: heads trained");
        self.session.finish_loading(pending)?;
        if let Some(sel) = &trained.selection {
            // The encoder's cost per text, for the candidates that read embeddings.
            let us = match measured {
                Some(us) => us,
                None => self.measure_encoder_cost(encoder_id, cost_key, &va.texts).await?,
            };
            select::add_encoder_cost(&sel.candidates, &mut trained.costs, us);
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                cached = measured.is_some(),
                "train: encoder cost"
            );
        }
        if self.fine_tuned.is_some() {
            // What fine-tuning bought: the same training on the frozen base encoder, beside.
            let frozen = self.frozen_baseline(&l, &input).await?;
            trained.baselines.push(frozen);
        }
        let store = self.store();
        // Where the L2 strength was chosen: these rows, by cross-validation, or the production
        // version's origin, carried forward while the rows stay close to it.
        let l2_origin = match (kept_origin, trained.cross_validated_l2) {
            (Some(origin), _) => Some(origin),
            (None, Some(chosen)) => {
                let bytes: Vec<u8> = fingerprints.iter().flat_map(|f| f.to_le_bytes()).collect();
                let rows = store.put_artifact(ArtifactKind::TrainRows.as_str(), &bytes).await?;
                Some(L2Origin { l2: chosen, rows, train_key: key.as_str().to_owned() })
            }
            (None, None) => None,
        };
        let head = store.put_artifact(ArtifactKind::Head.as_str(), &trained.head.to_bytes()).await?;
        let fallback = store.put_artifact(ArtifactKind::Fallback.as_str(), &trained.fallback.to_bytes()).await?;
        let details = TrainDetails::of(&trained).to_bytes();
        let details = store.put_artifact(ArtifactKind::TrainDetails.as_str(), &details).await?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "train: artifacts stored");
        Ok(Trained {
            head,
            fallback,
            details,
            labels: l.labels.clone(),
            l2_origin,
            split_sizes: l.rows.sizes(),
            costs_us: trained.costs.clone(),
        })
    }

    /// Times the encoder on `texts` and keeps the measurement under `cost_key`.
    async fn measure_encoder_cost(
        &mut self,
        encoder_id: &str,
        cost_key: String,
        texts: &[String],
    ) -> anyhow::Result<f64> {
        let encoder = self.encoder().await?;
        let us = tokio::task::block_in_place(|| select::encoder_cost_us(&encoder, texts))?;
        let cost = EncoderCost { us_per_text: us, encoder: encoder_id.to_owned(), cpu: select::cpu_identity() };
        self.store()
            .record_step(&keel_store::NewStep {
                project: self.rec.project.clone(),
                step: ENCODER_COST_STEP.to_owned(),
                input_key: cost_key,
                output: serde_json::to_value(cost)?,
                keel_version: super::record::build_id(),
                run_id: None,
            })
            .await?;
        Ok(us)
    }

    /// The key of the encoder's measured cost per text: the encoder, the texts it is timed on
    /// (the dataset's validation rows, from its split), the machine and the build.
    fn encoder_cost_key(&self, dataset: &Dataset, encoder_id: &str) -> String {
        let split = self.split_cfg();
        let mut h = keel_core::Hasher::new();
        h.field(b"keel-encoder-cost/1").field(encoder_id.as_bytes()).field(dataset.fields.id.as_str().as_bytes());
        h.field(format!("{} {} {}", split.validation, split.test, split.seed).as_bytes());
        h.field(select::cpu_identity().as_bytes()).field(super::record::build_id().as_bytes());
        h.finish().as_str().to_owned()
    }

    /// The same training as `like` on the base encoder's embeddings (cached where the base
    /// model embedded these texts before), scored on the same test rows.
    async fn frozen_baseline(&mut self, l: &Labelled, like: &TrainInput<'_>) -> anyhow::Result<BaselineResult> {
        let base = self.session.load_encoder(&self.cfg.encoder, &self.loaded.dir)?;
        let texts = self.texts();
        let (x, _) = embed_cached(&self.session.store, &base, &texts, self.rec.quiet).await?;
        let part = |rows: &[usize]| Part::new(&x, &l.y, &texts, rows);
        let (tr, va, te) = (part(&l.rows.train), part(&l.rows.validation), part(&l.rows.test));
        let input = TrainInput { train: &tr, validation: &va, test: &te, ..*like };
        let heads = tokio::task::block_in_place(|| train::train_heads(&input))?;
        let proba = train::predict(&heads.head, &te)?;
        let name = format!("the same training on the frozen encoder {} (before fine-tuning)", base.id());
        Ok(BaselineResult::new(&name, &te.y, &proba, &l.labels))
    }

    async fn train_details(&self, trained: &Trained) -> anyhow::Result<TrainDetails> {
        let bytes = self.store().read_artifact(&trained.details).await?;
        serde_json::from_slice(&bytes).context("the training details artifact is unreadable")
    }

    async fn evaluate(&mut self, dataset: &Dataset, encoder_id: &str, trained: &Trained) -> anyhow::Result<Evaluated> {
        let l = self.labelled(dataset, encoder_id).await?;
        let test = self.part(&l, &l.rows.test);
        let head = load_head_artifact(self.store(), &trained.head).await?;
        let details = self.train_details(trained).await?;
        let proba = train::predict(&head, &test)?;
        let title = format!("{}: {} head on {}", self.rec.project, head.kind(), dataset.fields.name);
        let model = format!("{} (new version)", self.rec.project);
        let mut report = evaluate::report(title, model, &test, &proba, &l.labels);
        report.calibration = Some(details.calibration);
        report.baselines = details.baselines;
        report.selection = details.selection;
        report.fine_tune.clone_from(&self.fine_tuned);
        let artifact =
            self.store().put_artifact(ArtifactKind::CandidateReport.as_str(), report.to_json().as_bytes()).await?;
        Ok(Evaluated {
            report: artifact,
            accuracy: report.evaluation.accuracy,
            macro_f1: report.evaluation.macro_f1,
            test_rows: test.y.len(),
        })
    }

    /// The production version a new version from `train_key` is compared with: production now,
    /// unless production already is that version (a run killed after promoting it), then the
    /// one it replaced.
    pub async fn production_before(&self, train_key: &str) -> anyhow::Result<Option<ModelVersion>> {
        let store = self.store();
        let project = &self.rec.project;
        let Ok(p) = store.resolve(&format!("{project}@production")).await else { return Ok(None) };
        let origin = register::metrics_of(&p).ok().and_then(|m| m.pipeline);
        if origin.is_none_or(|o| o.train_key != train_key) {
            return Ok(Some(p));
        }
        let events = store.alias_events(project).await?;
        let previous = events
            .iter()
            .rev()
            .find(|e| e.alias == "production" && e.version == p.version)
            .and_then(|e| e.previous_version);
        Ok(match previous {
            Some(v) => Some(store.model_version(project, v).await?),
            None => None,
        })
    }

    async fn gate(
        &mut self,
        dataset: &Dataset,
        encoder_id: &str,
        trained: &Trained,
        against: Option<&ModelVersion>,
    ) -> anyhow::Result<Gated> {
        let compared = match against {
            None => Err("first version of this model".to_owned()),
            Some(p) => {
                let l = self.labelled(dataset, encoder_id).await?;
                let test = self.part(&l, &l.rows.test);
                let ours = load_head_artifact(self.store(), &trained.head).await?;
                let proba = train::predict(&ours, &test)?;
                let theirs = load_head(self.store(), p).await?;
                let rule = self.cfg.gate.gate();
                self.as_read_by(p, &theirs, encoder_id, test).await.and_then(|test| {
                    tokio::task::block_in_place(|| gate::compare(&rule, &proba, &theirs, &p.tag(), &test, &l.labels))
                })
            }
        };
        let promotion = Promotion { allowed: self.cfg.gate.promote, held_by: self.loaded.held_by() };
        let gate = gate::decide(compared, against.is_none(), promotion);
        let refusal = {
            let l = self.labelled(dataset, encoder_id).await?;
            let test = self.part(&l, &l.rows.test);
            let ours = load_head_artifact(self.store(), &trained.head).await?;
            let proba = train::predict(&ours, &test)?;
            let baseline = load_head_artifact(self.store(), &trained.fallback).await?;
            let rule = self.cfg.gate.gate();
            tokio::task::block_in_place(|| gate::below_baseline(&rule, &proba, &baseline, &test))?
        };
        let gate = gate::refuse_below_baseline(gate, refusal);
        Ok(Gated { gate, against: against.map(ModelVersion::tag) })
    }

    /// The test rows as `version` reads them: the same raw texts and labels, embedded by its own
    /// encoder when that is not this run's (a fine-tuned one, or the base beside a fine-tuned
    /// run), so the gate pairs the two on the same texts whatever their encoders. `Err`: why the
    /// two cannot be compared.
    async fn as_read_by(
        &mut self,
        version: &ModelVersion,
        head: &Head,
        ours: &str,
        test: Part,
    ) -> Result<Part, String> {
        let reads_embeddings = !matches!(head.input_kind(), InputKind::Text);
        if version.encoder_id == ours || !reads_embeddings {
            return Ok(test);
        }
        let not = |e: anyhow::Error| {
            format!("not compared with {}: its encoder {} cannot be loaded ({e:#})", version.tag(), version.encoder_id)
        };
        let encoder = self.session.version_encoder(&self.cfg.encoder, &self.loaded.dir, version).await.map_err(not)?;
        if encoder.id() != version.encoder_id {
            return Err(format!(
                "not compared with {}: it reads embeddings from {}, and this run's encoders are {ours} and {}",
                version.tag(),
                version.encoder_id,
                encoder.id()
            ));
        }
        let texts: Vec<&str> = test.texts.iter().map(String::as_str).collect();
        let (x, _) = embed_cached(&self.session.store, &encoder, &texts, self.rec.quiet).await.map_err(not)?;
        Ok(Part { x, y: test.y, texts: test.texts })
    }

    async fn register(
        &mut self,
        keys: [&ContentHash; 2],
        dataset: &Dataset,
        done: Done<'_>,
    ) -> anyhow::Result<Registered> {
        let [key, train_key] = keys;
        let run_id = self.rec.ensure_run(&self.session.store).await?;
        let report = serde_json::from_slice(&self.store().read_artifact(&done.evaluated.report).await?)
            .context("the candidate report artifact is unreadable")?;
        let l = self.labelled(dataset, done.encoder_id).await?;
        let train = self.part(&l, &l.rows.train);
        let encoder = self.encoder().await?;
        let head = load_head_artifact(self.store(), &done.trained.head).await?;
        let started = Instant::now();
        let profile = register::reference_profile(&encoder, &train, &head, &l.labels, &report)?;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "reference profile built");
        let details = self.train_details(done.trained).await?;
        let input = RegisterInput {
            project: &self.rec.project,
            key,
            run_id,
            dataset,
            encoder_id: done.encoder_id,
            train_key,
            trained: done.trained,
            details: &details,
            report,
            gate: &done.gated.gate,
            profile: &profile,
            fine_tune: self.fine_tuned.as_ref(),
            config: self.loaded.path.display().to_string(),
            split: &self.split_cfg(),
        };
        register::register(self.store(), input).await
    }

    async fn promote(&mut self, version: i64, gated: &Gated) -> anyhow::Result<Promoted> {
        let trigger = self.trigger.to_string();
        register::promote(self.store(), &self.rec.project, version, &gated.gate, &trigger).await
    }
}

/// The outputs the register step reads.
#[derive(Debug, Clone, Copy)]
struct Done<'a> {
    encoder_id: &'a str,
    trained: &'a Trained,
    evaluated: &'a Evaluated,
    gated: &'a Gated,
}

/// What the first three steps made.
struct Fitted {
    ingested: Ingested,
    dataset: Dataset,
    embedded: Option<Embedded>,
    encoder_id: String,
    k_train: ContentHash,
    trained: Trained,
}

/// Ingest, embed and train. `Ok(None)`: planning stopped at a step that would run.
async fn fit(p: &mut Pass<'_>) -> anyhow::Result<Option<Fitted>> {
    let cfg = p.cfg;
    let files = p.loaded.source_paths()?;
    let file_hashes = super::source_hashes(&files)?;

    let mut parts = vec![section(&cfg.source), section(&cfg.validation)];
    parts.extend(file_hashes.iter().map(|h| h.as_str().to_owned()));
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    let k_ingest = step_key(StepKind::Ingest, &refs);
    let Some((ingested, _)) = p.step(StepKind::Ingest, &k_ingest, async |p| p.ingest(files).await).await? else {
        return Ok(None);
    };
    let dataset = p.store().dataset(ingested.dataset_id.as_str()).await?;

    let installed = p.session.installed(&cfg.encoder, &p.loaded.dir)?;
    let k_embed = step_key(
        StepKind::Embed,
        &[dataset.fields.id.as_str(), &section(&cfg.encoder), &installed.name, installed.sha256.as_str()],
    );
    let Some((embedded, embed_ran)) =
        p.step(StepKind::Embed, &k_embed, async |p| p.embed(&dataset, &k_embed).await).await?
    else {
        return Ok(None);
    };
    let encoder_id = embedded.encoder_id.clone();
    p.fine_tuned.clone_from(&embedded.fine_tune);

    let split = section(&p.split_cfg());
    let k_train = step_key(StepKind::Train, &[dataset.fields.id.as_str(), &encoder_id, &split, &section(&cfg.head)]);
    let Some((trained, _)) =
        p.step(StepKind::Train, &k_train, async |p| p.train(&dataset, &encoder_id, &k_train).await).await?
    else {
        return Ok(None);
    };
    let embedded = embed_ran.then_some(embedded);
    Ok(Some(Fitted { ingested, dataset, embedded, encoder_id, k_train, trained }))
}

/// The steps in order. `Ok(None)`: planning stopped at a step that would run.
pub async fn steps(p: &mut Pass<'_>, started: Instant) -> anyhow::Result<Option<RunOutcome>> {
    let Some(f) = fit(p).await? else { return Ok(None) };
    let (dataset, encoder_id, trained) = (&f.dataset, f.encoder_id.as_str(), &f.trained);
    let project = p.rec.project.clone();
    let split = section(&p.split_cfg());

    let k_eval = step_key(StepKind::Evaluate, &[f.k_train.as_str(), trained.head.as_str(), &split, &project]);
    let Some((evaluated, _)) =
        p.step(StepKind::Evaluate, &k_eval, async |p| p.evaluate(dataset, encoder_id, trained).await).await?
    else {
        return Ok(None);
    };

    let against = p.production_before(f.k_train.as_str()).await?;
    let against_id = against.as_ref().map_or_else(|| "none".to_owned(), |a| format!("{} {}", a.tag(), a.head_artifact));
    let mut gate_cfg = p.cfg.gate.clone();
    gate_cfg.promote = true; // promotion is the promote step's; the decision does not depend on it
    let promote_setting = p.cfg.gate.promote.to_string();
    let gate_parts =
        [trained.head.as_str(), evaluated.report.as_str(), &section(&gate_cfg), &promote_setting, &against_id];
    let k_gate = step_key(StepKind::Gate, &gate_parts);
    let Some((gated, _)) =
        p.step(StepKind::Gate, &k_gate, async |p| p.gate(dataset, encoder_id, trained, against.as_ref()).await).await?
    else {
        return Ok(None);
    };

    let k_register = step_key(StepKind::Register, &[&project, f.k_train.as_str(), k_eval.as_str(), k_gate.as_str()]);
    let done = Done { encoder_id, trained, evaluated: &evaluated, gated: &gated };
    let keys = [&k_register, &f.k_train];
    let Some((registered, _)) =
        p.step(StepKind::Register, &k_register, async |p| p.register(keys, dataset, done).await).await?
    else {
        return Ok(None);
    };

    let version = registered.version;
    let g = &gated.gate;
    let k_promote =
        step_key(StepKind::Promote, &[&project, &version.to_string(), &g.alias, &g.reason, k_register.as_str()]);
    if p.step(StepKind::Promote, &k_promote, async |p| p.promote(version, &gated).await).await?.is_none() {
        return Ok(None);
    }
    if p.rec.plan {
        return Ok(None);
    }
    super::outcome(p, f.ingested, f.dataset, f.embedded, registered, gated, started).await.map(Some)
}

/// The ingest summary a run reports.
pub fn ingest_summary(ingested: Ingested, dataset: Dataset, ran: bool) -> IngestSummary {
    IngestSummary {
        dataset,
        created: ingested.created && ran,
        filtered: ingested.filtered,
        quarantine_by_reason: ingested.quarantine_by_reason,
        quarantine_file: ingested.quarantine_file,
    }
}
