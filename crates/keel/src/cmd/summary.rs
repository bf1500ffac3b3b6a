//! The terminal summary of a run (`keel run`, `keel train`, the quickstart): one printer.

use keel_eval::{Interval, VersionMetrics};

use super::run::{Plan, RunOutcome, StepAction};

fn interval(i: &Interval) -> String {
    format!(" [{:.4}, {:.4}]", i.lo, i.hi)
}

fn print_data(o: &RunOutcome) {
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
        println!("embedded  {} texts ({} from cache, {} computed)", e.texts, e.cached, e.computed);
    }
}

fn print_figures(m: &VersionMetrics) {
    if let Some(s) = &m.split_sizes {
        println!("split     {} train / {} validation / {} test", s.train, s.validation, s.test);
    }
    if let Some(head) = &m.head {
        println!("head      {head}, temperature {:.3} fitted on validation", m.temperature.unwrap_or(f64::NAN));
    }
    if let Some(ft) = &m.fine_tune {
        println!("encoder   {}", fine_tune_line(ft));
    }
    if let Some(sel) = &m.selection {
        println!("selected  {}", sel.reason);
        if let Some(note) = &sel.cost_note {
            println!("cost      {note}");
        }
    }
    println!(
        "accuracy  {:.4}{}   share of test rows labelled correctly (95% interval)",
        m.accuracy,
        interval(&m.intervals.accuracy)
    );
    println!(
        "macro-F1  {:.4}{}   F1 averaged over labels, so each label counts the same",
        m.macro_f1,
        interval(&m.intervals.macro_f1)
    );
    for b in m.baselines.iter().flatten() {
        println!("baseline  {:.4} macro-F1: {}", b.macro_f1, b.name);
    }
}

/// What fine-tuning did, in one line: method, steps, pairs, the validation loss it kept.
pub fn fine_tune_line(ft: &keel_eval::FineTuneRecord) -> String {
    let losses =
        match (ft.run.validation_loss.first(), ft.run.validation_loss.iter().find(|(s, _)| *s == ft.run.best_step)) {
            (Some((_, first)), Some((_, best))) => {
                format!(
                    "; validation loss {first:.4} at the first check, {best:.4} at step {} (kept)",
                    ft.run.best_step
                )
            }
            _ => String::new(),
        };
    let stop = if ft.run.stopped_early { ", stopped early" } else { "" };
    format!(
        "{} fine-tuned from {} ({}, {} loss): {} of {} steps on {} {} pairs from {} training rows{stop}{losses}",
        ft.encoder_id,
        ft.base_encoder,
        ft.method,
        ft.run.loss,
        ft.run.steps,
        ft.run.planned_steps,
        ft.run.pairs.pairs,
        ft.run.pairs.kind,
        ft.run.pairs.train_rows
    )
}

/// What a run did, in the order it happened, then the model's figures.
pub fn print_run(o: &RunOutcome) {
    for s in &o.steps {
        let what = match s.action {
            StepAction::Skipped => "skipped (up to date)".to_owned(),
            a => format!("{} in {:.2}s", action_word(a), s.seconds),
        };
        println!("step      {:<9} {what}", s.step.name());
    }
    print_data(o);
    let m = &o.model;
    println!(
        "model     {} {}",
        m.tag(),
        if o.reused { "(up to date: nothing changed since it was trained)" } else { "(new)" }
    );
    match crate::stages::register::metrics_of(m) {
        Ok(figures) => print_figures(&figures),
        Err(e) => println!("metrics   unreadable: {e:#}"),
    }
    println!("gate      {}", o.gate.reason);
    println!("aliases   {}", if m.aliases.is_empty() { "-".into() } else { m.aliases.join(", ") });
    if let Some(r) = &o.report_html {
        println!("report    {r}");
    }
    println!("took      {:.2}s", o.seconds);
}

fn action_word(a: StepAction) -> &'static str {
    match a {
        StepAction::Ran => "ran",
        StepAction::Forced => "forced",
        StepAction::Skipped => "skipped",
        StepAction::WouldRun => "would-run",
    }
}

/// `keel run --plan`.
pub fn print_plan(plan: &Plan) {
    println!("plan for {} ({})", plan.project, plan.config);
    for s in &plan.plan {
        let key = s.key.as_deref().map_or("-".to_owned(), |k| k[..12.min(k.len())].to_owned());
        println!("  {:<9} {:<10} {:<13} {}", s.step.name(), action_word(s.action), key, s.note);
    }
}
