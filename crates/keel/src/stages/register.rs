//! Register: the evaluated, gated head becomes a model version (its figures typed as
//! [`VersionMetrics`], its report and reference profile as artifacts); promote moves the alias
//! the gate chose and logs the decision.

use keel_core::ContentHash;
use keel_data::SplitConfig;
use keel_embed::Encoder;
use keel_eval::{GateOutcome, PipelineOrigin, Report, VersionArtifacts, VersionMetrics};
use keel_monitor::{Profile, Rows};
use keel_store::{Dataset, ModelVersion, NewModelVersion, Store};
use keel_train::Head;

use super::data::Part;
use super::evaluate::{report_path, write_html};
use super::train::{TrainDetails, predict};
use super::{ArtifactKind, EventKind, Promoted, Registered, Trained};

/// The reference `keel monitor` compares live traffic with: the training split's texts, token
/// counts, embeddings and the head's predictions (deterministic bytes, like every artifact).
pub fn reference_profile(
    encoder: &Encoder,
    train: &Part,
    head: &Head,
    labels: &[String],
    report: &Report,
) -> anyhow::Result<Vec<u8>> {
    let started = std::time::Instant::now();
    // Tokenizing the training split is most of the profile's cost: one share per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = train.texts.len().div_ceil(cores).max(1);
    let counted: Vec<Result<Vec<usize>, keel_embed::EmbedError>> = std::thread::scope(|s| {
        let handles: Vec<_> = train
            .texts
            .chunks(share)
            .map(|part| s.spawn(move || part.iter().map(|t| encoder.count_tokens(t)).collect()))
            .collect();
        handles.into_iter().map(|h| h.join().expect("token counting does not panic")).collect()
    });
    let mut tokens = Vec::with_capacity(train.texts.len());
    for part in counted {
        tokens.extend(part?);
    }
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "profile: tokens counted");
    let proba = predict(head, train)?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "profile: training split predicted");
    let rows = Rows { texts: &train.texts, tokens: Some(&tokens), embeddings: &train.x, proba: &proba };
    let evaluation =
        keel_monitor::EvalFigures { accuracy: report.evaluation.accuracy, macro_f1: report.evaluation.macro_f1 };
    let profile = tokio::task::block_in_place(|| {
        Profile::build(&rows, labels, Some(evaluation), &keel_monitor::ProfileConfig::default())
    })?;
    Ok(profile.to_bytes())
}

/// Everything registration reads.
#[derive(Debug)]
pub struct RegisterInput<'a> {
    pub project: &'a str,
    /// The register step's key: registering again with it finds the same version.
    pub key: &'a ContentHash,
    pub run_id: String,
    pub dataset: &'a Dataset,
    pub encoder_id: &'a str,
    pub train_key: &'a ContentHash,
    pub trained: &'a Trained,
    pub details: &'a TrainDetails,
    /// The candidate's report; the gate's decision is added to it here.
    pub report: Report,
    pub gate: &'a GateOutcome,
    /// The reference profile's bytes.
    pub profile: &'a [u8],
    /// How the encoder the version reads was fine-tuned, when it was.
    pub fine_tune: Option<&'a keel_eval::FineTuneRecord>,
    /// The keel.toml (or command) the version was declared by.
    pub config: String,
    pub split: &'a SplitConfig,
}

/// The version's figures, from its report, training details and artifacts.
fn version_metrics(input: &RegisterInput<'_>, report: &Report, artifacts: VersionArtifacts) -> VersionMetrics {
    let mut m = VersionMetrics::from_report(report);
    let d = input.details;
    m.head = Some(d.head.clone());
    m.set_calibration(&d.calibration);
    m.baselines = Some(d.baselines.clone());
    m.selection = d.selection.clone().map(|mut sel| {
        let costs = &input.trained.costs_us;
        if costs.len() == sel.candidates.len() {
            for (c, &us) in sel.candidates.iter_mut().zip(costs) {
                c.cost_us = Some(us);
            }
            let chosen = sel.candidates.iter().position(|c| c.family == sel.chosen).unwrap_or(0);
            sel.cost_note = Some(super::select::cost_note(&sel.candidates, costs, chosen));
        }
        sel
    });
    if let serde_json::Value::Object(extra) = &d.details {
        m.details.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    m.fine_tune = input.fine_tune.cloned();
    m.split_sizes = Some(input.trained.split_sizes);
    m.gate = Some(input.gate.clone());
    m.artifacts = Some(artifacts);
    m.pipeline = Some(PipelineOrigin {
        train_key: input.train_key.as_str().to_owned(),
        config: input.config.clone(),
        split: Some(serde_json::to_value(input.split).expect("a split config serialises")),
    });
    m
}

/// Stores the final report (with the gate's decision) and the profile, then registers the
/// version (idempotent by key) and writes the readable copy of its report.
pub async fn register(store: &Store, input: RegisterInput<'_>) -> anyhow::Result<Registered> {
    let mut report = input.report.clone();
    report.gate = input.gate.decision.clone();
    let profile = store.put_artifact(ArtifactKind::Profile.as_str(), input.profile).await?;
    let html = keel_eval::render_html(&report);
    let report_json = store.put_artifact(ArtifactKind::ReportJson.as_str(), report.to_json().as_bytes()).await?;
    let report_html = store.put_artifact(ArtifactKind::ReportHtml.as_str(), html.as_bytes()).await?;
    let artifacts = VersionArtifacts {
        fallback: Some(input.trained.fallback.as_str().to_owned()),
        report: Some(report_json.as_str().to_owned()),
        report_html: Some(report_html.as_str().to_owned()),
        profile: Some(profile.as_str().to_owned()),
        encoder_adapter: input.fine_tune.map(|f| f.adapter.clone()),
    };
    let metrics = version_metrics(&input, &report, artifacts).to_value();
    let (model, _) = store
        .register_model_version(&NewModelVersion {
            name: input.project.to_owned(),
            input_key: input.key.clone(),
            run_id: input.run_id,
            dataset_id: input.dataset.fields.id.clone(),
            encoder_id: input.encoder_id.to_owned(),
            head_artifact: input.trained.head.clone(),
            metrics,
        })
        .await?;
    write_html(&report_path(store, &model), &html)?;
    Ok(Registered { version: model.version, report_json, report_html })
}

/// Moves the alias the gate chose to `version` (no move when it is there already) and logs
/// the decision as a pipeline event.
pub async fn promote(
    store: &Store,
    project: &str,
    version: i64,
    gate: &GateOutcome,
    trigger: &str,
) -> anyhow::Result<Promoted> {
    let current = store.resolve(&format!("{project}@{}", gate.alias)).await.ok().map(|m| m.version);
    let previous = if current == Some(version) {
        current
    } else {
        store.set_alias(project, &gate.alias, version, &gate.reason).await?
    };
    let kind = if gate.alias == "production" { EventKind::Promote } else { EventKind::Refuse };
    let detail = serde_json::json!({"version": version, "alias": gate.alias, "previous": previous, "trigger": trigger});
    store.log_pipeline_event(project, kind.as_str(), &gate.reason, &detail).await?;
    Ok(Promoted { alias: gate.alias.clone(), version, previous })
}

/// Reads a version's typed figures; a version without them is an error naming it.
pub fn metrics_of(model: &ModelVersion) -> anyhow::Result<VersionMetrics> {
    VersionMetrics::parse(&model.metrics)
        .map_err(|e| anyhow::anyhow!("{} has no readable metrics ({e}); train it again", model.tag()))
}
