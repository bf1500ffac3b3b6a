//! `keel run --watch`: run, then run again whenever a source file's content changes (once it
//! has stopped changing for one interval) or the served alias drifts, until SIGTERM or Ctrl-C.
//! Every trigger and decision is logged in the store's pipeline events.

use std::time::{Duration, Instant};

use keel_core::ContentHash;
use serde_json::json;

use super::session::Session;
use super::{RunOutcome, Trigger, run_once, source_hashes};
use crate::config::Loaded;
use crate::output::note;
use crate::stages::EventKind;

/// What the watcher decided after one run, in words, with the event kind it is logged as.
fn decision(o: &RunOutcome, trigger: &Trigger) -> (EventKind, String) {
    if o.reused && matches!(trigger, Trigger::Drift(_)) {
        let why = format!(
            "{trigger}; but every step is up to date: the sources hold no new labelled rows to retrain \
             on (add labelled examples of the recent traffic to them)"
        );
        (EventKind::Skip, why)
    } else if o.reused {
        (EventKind::Skip, "every step up to date: nothing to do".to_owned())
    } else {
        (EventKind::Run, format!("{}: {} is {} ({})", trigger, o.model.tag(), o.gate.alias, o.gate.reason))
    }
}

/// Runs once and logs what happened; an error is logged, not returned.
async fn cycle(
    session: &mut Session,
    loaded: &Loaded,
    force: Option<crate::stages::StepKind>,
    json: bool,
    trigger: &Trigger,
) -> anyhow::Result<()> {
    let project = &loaded.config.project.name;
    match run_once(session, loaded, force, json, trigger).await {
        Ok(o) => {
            let (kind, reason) = decision(&o, trigger);
            let detail = json!({"trigger": trigger.to_string(), "version": o.model.version,
                "alias": o.gate.alias, "run_id": o.run_id});
            session.store.log_pipeline_event(project, kind.as_str(), &reason, &detail).await?;
            if json {
                let line = json!({"trigger": trigger.to_string(), "decision": reason, "outcome": o});
                println!("{}", serde_json::to_string(&line)?);
            } else {
                note(format!("watch: {reason}"));
                crate::cmd::summary::print_run(&o);
            }
        }
        Err(e) => {
            let why = format!("{trigger}: run failed: {e:#}");
            note(format!("watch: {why}"));
            let detail = json!({"trigger": trigger.to_string()});
            session.store.log_pipeline_event(project, EventKind::Error.as_str(), &why, &detail).await?;
            if json {
                let line = json!({"trigger": trigger.to_string(), "error": format!("{e:#}")});
                println!("{}", serde_json::to_string(&line)?);
            }
        }
    }
    Ok(())
}

/// Logs a trigger and says it on stderr.
async fn fire(session: &Session, project: &str, trigger: &Trigger) -> anyhow::Result<()> {
    session.store.log_pipeline_event(project, EventKind::Trigger.as_str(), &trigger.to_string(), &json!({})).await?;
    note(format!("watch: {trigger}"));
    Ok(())
}

/// `--watch`'s loop. `interval` is the time between checks of the sources.
pub async fn watch(
    session: &mut Session,
    loaded: &Loaded,
    interval: Duration,
    mut force: Option<crate::stages::StepKind>,
    json: bool,
) -> anyhow::Result<()> {
    let project = loaded.config.project.name.clone();
    let files = loaded.source_paths()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let monitor = &loaded.config.monitor;
    let drift_every = Duration::from_secs_f64(monitor.check_every_secs.max(0.05));
    let mut last_drift_check = Instant::now();
    let mut trigger = Trigger::WatchStarted;
    loop {
        let seen = source_hashes(&files).unwrap_or_default();
        cycle(session, loaded, force.take(), json, &trigger).await?;
        // Wait for a change that has settled: the new content seen twice, an interval apart.
        let mut pending: Option<Vec<ContentHash>> = None;
        trigger = loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = tokio::signal::ctrl_c() => return stop(session, &project, "interrupted").await,
                _ = term.recv() => return stop(session, &project, "terminated").await,
            }
            if monitor.retrain_on_drift && last_drift_check.elapsed() >= drift_every {
                last_drift_check = Instant::now();
                match drift_trigger(session, loaded).await {
                    Ok(Some(why)) => break Trigger::Drift(why),
                    Ok(None) => {}
                    Err(e) => {
                        let why = format!("drift check failed: {e:#}");
                        note(format!("watch: {why}"));
                        session.store.log_pipeline_event(&project, EventKind::Error.as_str(), &why, &json!({})).await?;
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
                break Trigger::Sources(changed.join(", "));
            }
            pending = Some(now);
        };
        fire(session, &project, &trigger).await?;
    }
}

/// Checks the served alias's logged predictions of the last `[monitor] window_hours` against
/// its reference profile. `Some(reason)` when the verdict is drift or lower live quality;
/// `None` when there is nothing to check (no such alias yet, too few predictions) or no drift.
async fn drift_trigger(session: &mut Session, loaded: &Loaded) -> anyhow::Result<Option<String>> {
    let cfg = &loaded.config;
    let spec = format!("{}@{}", cfg.project.name, cfg.serve.alias);
    let Ok(model) = session.store.resolve(&spec).await else { return Ok(None) };
    let profile = crate::cmd::monitor::load_profile(&session.store, &model).await?;
    let encoder = session.version_encoder(&cfg.encoder, &loaded.dir, &model).await?;
    let now = std::time::SystemTime::now();
    let window = Duration::from_secs(cfg.monitor.window_hours.saturating_mul(3600));
    let (since, until) = (crate::cmd::monitor::rfc3339(now - window), crate::cmd::monitor::rfc3339(now));
    let window = crate::cmd::monitor::Window { since: &since, until: &until };
    let Some(checked) = crate::cmd::monitor::check(&session.store, &model, &profile, &encoder, window, true).await?
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
    session.store.log_pipeline_event(project, EventKind::Stop.as_str(), &format!("watcher {why}"), &json!({})).await?;
    note(format!("watch: stopped ({why})"));
    Ok(())
}
