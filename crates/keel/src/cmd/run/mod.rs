//! `keel run`: the pipeline keel.toml declares, step by step, each step keyed by the hash of its
//! inputs, its config section and the Keel build.
//!
//! Steps and what they record (in the store's `pipeline_steps` table, by project and key; the
//! types are in `stages/`):
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
//!
//! The rooms: `record.rs` (when a step is skipped or recorded), `sequence.rs` (the steps in
//! order through one helper), `session.rs` (what stays loaded), `l2.rs` (keeping a
//! cross-validated L2 strength), `watch.rs` (`--watch`).

mod l2;
mod record;
mod sequence;
mod session;
mod watch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use keel_core::ContentHash;
use keel_eval::GateOutcome;
use keel_store::{Dataset, ModelVersion, RunStatus};
use serde::Serialize;
use serde_json::json;

pub use record::{StepAction, StepReport, build_id};
pub use session::Session;

use crate::cli::RunArgs;
use crate::config::{self, Loaded};
use crate::context;
use crate::output;
use crate::stages::evaluate::{report_path, write_html};
use crate::stages::register::metrics_of;
use crate::stages::{Embedded, Gated, Ingested, Registered, StepKind};
use record::Recorder;
use sequence::Pass;

/// Why a run started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A command: `keel run`, `keel train`, `keel quickstart`, or `plan`.
    Command(&'static str),
    /// `--watch` started.
    WatchStarted,
    /// Source files changed (which, with their old and new hashes).
    Sources(String),
    /// The served alias drifted (the check's summary).
    Drift(String),
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Command(c) => f.write_str(c),
            Trigger::WatchStarted => f.write_str("watch started"),
            Trigger::Sources(changed) => write!(f, "source {changed}"),
            Trigger::Drift(why) => f.write_str(why),
        }
    }
}

/// The dataset a run trained on and what was left out of it.
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
    pub embedding: Option<Embedded>,
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

/// The finished run's outcome: the registered version, its readable report, the summary.
async fn outcome(
    p: &mut Pass<'_>,
    ingested: Ingested,
    dataset: Dataset,
    embedding: Option<Embedded>,
    registered: Registered,
    gated: Gated,
    started: Instant,
) -> anyhow::Result<RunOutcome> {
    let store = p.store();
    let model = store.model_version(&p.rec.project, registered.version).await?;
    let page = report_path(store, &model);
    if !page.exists() {
        // The readable copy is a convenience; the stored artifact is the record.
        let html = store.read_artifact(&registered.report_html).await?;
        write_html(&page, &String::from_utf8_lossy(&html))?;
    }
    let ran = p.rec.steps.first().is_some_and(|s| s.action != StepAction::Skipped);
    let reused = p.rec.steps.iter().all(|s| s.action == StepAction::Skipped);
    Ok(RunOutcome {
        project: p.rec.project.clone(),
        config: p.loaded.path.display().to_string(),
        run_id: p.rec.run_id.clone(),
        steps: std::mem::take(&mut p.rec.steps),
        ingest: sequence::ingest_summary(ingested, dataset, ran),
        embedding,
        model,
        reused,
        gate: gated.gate,
        report_html: Some(page.display().to_string()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What a pass over the steps ended with.
enum Ended {
    Done(Box<RunOutcome>),
    Planned(Plan),
}

/// The run row's figures once a pass has finished.
async fn finish_run(p: &Pass<'_>, run: &str, ended: &anyhow::Result<Ended>) -> anyhow::Result<()> {
    let store = p.store();
    match ended {
        Ok(Ended::Done(o)) => {
            let steps: Vec<_> = o.steps.iter().map(|s| json!({"step": s.step, "action": s.action})).collect();
            let accuracy = metrics_of(&o.model).ok().map(|m| m.accuracy);
            let m = json!({"trigger": p.trigger.to_string(), "version": o.model.version, "alias": o.gate.alias,
                "reason": o.gate.reason, "steps": steps, "accuracy": accuracy, "dataset": o.ingest.dataset.fields.id.as_str()});
            store.finish_run(run, RunStatus::Succeeded, Some(&m), None).await?;
        }
        Ok(Ended::Planned(_)) => {}
        Err(e) => store.finish_run(run, RunStatus::Failed, None, Some(&format!("{e:#}"))).await?,
    }
    Ok(())
}

/// How one pass is run.
#[derive(Debug, Clone, Copy)]
struct PassOptions<'a> {
    force: Option<StepKind>,
    plan: bool,
    quiet: bool,
    trigger: &'a Trigger,
}

/// Runs (or, with `plan`, plans) every step once.
async fn pass(session: &mut Session, loaded: &Loaded, opts: PassOptions<'_>) -> anyhow::Result<Ended> {
    let started = Instant::now();
    let cfg = &loaded.config;
    let run_params = json!({"config": loaded.path.display().to_string(), "project": cfg.project.name,
        "trigger": opts.trigger.to_string(), "force": opts.force, "keel": build_id(), "settings": cfg});
    let rec = Recorder {
        project: cfg.project.name.clone(),
        force: opts.force,
        plan: opts.plan,
        quiet: opts.quiet,
        run_id: None,
        steps: Vec::new(),
        blocked_by: None,
        run_params,
    };
    let mut p = Pass::new(session, loaded, rec, opts.trigger);
    let ended = match sequence::steps(&mut p, started).await {
        Ok(Some(outcome)) => Ok(Ended::Done(Box::new(outcome))),
        Ok(None) => {
            let plan = p.rec.plan_rest();
            Ok(Ended::Planned(Plan { project: p.rec.project.clone(), config: loaded.path.display().to_string(), plan }))
        }
        Err(e) => Err(e),
    };
    if let Some(run) = p.rec.run_id.clone() {
        finish_run(&p, &run, &ended).await?;
    }
    ended
}

/// One full run (no plan): what `keel run`, `keel train` and the quickstart do.
pub async fn run_once(
    session: &mut Session,
    loaded: &Loaded,
    force: Option<StepKind>,
    quiet: bool,
    trigger: &Trigger,
) -> anyhow::Result<RunOutcome> {
    match pass(session, loaded, PassOptions { force, plan: false, quiet, trigger }).await? {
        Ended::Done(o) => Ok(*o),
        Ended::Planned(_) => anyhow::bail!("a pass without --plan stopped before its last step"),
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
    let force = args.force;
    if args.plan {
        let trigger = Trigger::Command("plan");
        let opts = PassOptions { force, plan: true, quiet: true, trigger: &trigger };
        let Ended::Planned(plan) = pass(&mut session, &loaded, opts).await? else {
            anyhow::bail!("--plan ran every step instead of planning them")
        };
        if json {
            return output::json(&plan);
        }
        crate::cmd::summary::print_plan(&plan);
        return Ok(());
    }
    if args.watch {
        let interval = args.interval.unwrap_or(loaded.config.watch.interval_secs).max(0.05);
        return watch::watch(&mut session, &loaded, Duration::from_secs_f64(interval), force, json).await;
    }
    let outcome = run_once(&mut session, &loaded, force, json, &Trigger::Command("keel run")).await?;
    if json {
        return output::json(&outcome);
    }
    crate::cmd::summary::print_run(&outcome);
    Ok(())
}
