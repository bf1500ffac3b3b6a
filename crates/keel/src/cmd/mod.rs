//! One function per command. Each produces its result on stdout (JSON with --json).

pub mod ask;
mod data;
pub mod index;
mod init;
pub mod monitor;
mod quickstart;
pub mod run;
mod serve;
mod summary;
mod train;

use std::io::Write;

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_json::json;

use crate::cli::{
    Cli, Command, DataCommand, EmbedArgs, EvalArgs, IngestArgs, LineageArgs, ModelCommand, PromoteArgs, RollbackArgs,
    StoreCommand,
};
use crate::config::Filter;
use crate::context::{self, open_store};
use crate::output::{self, note};
use crate::stages::evaluate::{self, EvalRequest};
use crate::stages::ingest::IngestRequest;

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { home, json, command } = cli;
    match command {
        Command::Quickstart(args) => quickstart::run(&home, json, args).await,
        Command::Init(args) => init::run(json, args),
        Command::Run(args) => run::run(&home, json, args).await,
        Command::Model(ModelCommand::Pull { name, model_dir, offline }) => model_pull(&name, model_dir, offline, json),
        Command::Model(ModelCommand::List) => model_list(json),
        Command::Embed(args) => embed(&home, json, args).await,
        Command::Ingest(args) => ingest(&home, json, args).await,
        Command::Train(args) => train::train(&home, json, args).await,
        Command::Eval(args) => eval(&home, json, args).await,
        Command::Models => models(&home, json).await,
        Command::Runs(args) => runs(&home, json, args.limit).await,
        Command::Promote(args) => promote(&home, json, args).await,
        Command::Rollback(args) => rollback(&home, json, args).await,
        Command::Lineage(args) => lineage(&home, json, args).await,
        Command::Store(StoreCommand::Check) => store_check(&home, json).await,
        Command::Data(DataCommand::Show { spec }) => data::show(&home, json, &spec).await,
        Command::Serve(args) => serve::run(&home, args).await,
        Command::Ask(args) => ask::run(&home, json, args).await,
        Command::Index(args) => index::index(&home, json, args).await,
        Command::Search(args) => index::search(&home, json, args).await,
        Command::EvalRetrieval(args) => index::eval_retrieval(&home, json, args).await,
        Command::Monitor(args) => monitor::run(&home, json, args).await,
    }
}

fn model_pull(name: &str, model_dir: Option<std::path::PathBuf>, offline: bool, json: bool) -> anyhow::Result<()> {
    let mut opts = keel_embed::PullOptions::from_env();
    opts.model_dir = model_dir;
    opts.offline = offline;
    let m = keel_embed::pull(name, &opts)?;
    if json {
        output::json(&json!({"name": m.name, "dir": m.dir, "source": format!("{:?}", m.source), "sha256": m.sha256}))
    } else {
        println!("{} ready in {} (from {:?}; weights sha256 {})", m.name, m.dir.display(), m.source, m.sha256);
        Ok(())
    }
}

fn model_list(json: bool) -> anyhow::Result<()> {
    let opts = keel_embed::PullOptions::from_env();
    let mut names: Vec<String> = match std::fs::read_dir(&opts.cache_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok().map(|name| (e.path(), name)))
            // A folder of a known model with every file it needs (verified when it is loaded).
            .filter(|(dir, name)| {
                keel_embed::ModelSpec::find(name).is_ok_and(|spec| spec.files.iter().all(|f| dir.join(f).is_file()))
            })
            .map(|(_, name)| name)
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    if json {
        return output::json(&json!({"cache_dir": opts.cache_dir, "models": names}));
    }
    if names.is_empty() {
        println!("no models in {}; fetch one with `keel model pull all-MiniLM-L6-v2`", opts.cache_dir.display());
    }
    for n in names {
        println!("{n}\t{}", opts.cache_dir.join(&n).display());
    }
    Ok(())
}

async fn embed(home: &std::path::Path, json: bool, args: EmbedArgs) -> anyhow::Result<()> {
    let texts = keel_embed::read_texts(&args.file, args.field.as_deref())?;
    let (_, encoder) = args.encoder.load()?;
    let store = open_store(home).await?;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (vectors, stats) = crate::embedding::embed_cached(&store, &encoder, &refs, false).await?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for (i, text) in texts.iter().enumerate() {
        serde_json::to_writer(&mut out, &json!({"text": text, "embedding": vectors.row(i)}))?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    drop(out);
    let summary = json!({"encoder": encoder.id(), "texts": stats.texts, "cached": stats.cached, "computed": stats.computed,
        "truncated": encoder.truncated_count(), "output": args.output});
    if args.output.is_some() {
        if json {
            output::json(&summary)?;
        } else {
            println!(
                "embedded {} texts with {} ({} from cache) into {}",
                stats.texts,
                encoder.id(),
                stats.cached,
                args.output.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
    } else {
        note(format!("embedded {} texts with {} ({} from cache)", stats.texts, encoder.id(), stats.cached));
    }
    Ok(())
}

/// `keel ingest`'s result: the dataset version and what the reader counted.
#[derive(Debug, serde::Serialize)]
struct IngestOutcome {
    dataset: keel_store::Dataset,
    /// False when this exact dataset version was already in the store.
    created: bool,
    quarantine_by_reason: Vec<(String, usize)>,
    /// Where the quarantined rows are, with their reasons and source lines.
    quarantine_file: String,
    /// Everything the reader counted: format used, blank lines, duplicates, repairs, ...
    stats: keel_data::IngestStats,
}

async fn ingest(home: &std::path::Path, json: bool, args: IngestArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let req = IngestRequest {
        files: vec![args.file.clone()],
        read: args.columns.read_options()?,
        filter: Filter::default(),
        min_records: 0,
        max_quarantined_share: 1.0,
        keep_records: false,
    };
    let result = crate::stages::ingest::ingest(&store, &req).await?;
    let i = result.ingested;
    let stats = i.files.into_iter().next().context("ingest read no file")?;
    let outcome = IngestOutcome {
        dataset: result.dataset,
        created: i.created,
        quarantine_by_reason: i.quarantine_by_reason,
        quarantine_file: i.quarantine_file,
        stats,
    };
    if json {
        return output::json(&outcome);
    }
    let d = &outcome.dataset.fields;
    println!(
        "dataset {} ({}): {} rows read, {} accepted, {} quarantined{}",
        d.id.short(),
        d.name,
        d.rows_read,
        d.n_records,
        d.n_quarantined,
        if outcome.created { "" } else { " (already in the store; nothing new)" }
    );
    let s = &outcome.stats;
    let format = match s.format {
        keel_data::Format::Delimited { delimiter: b'\t' } => "tab-separated".to_owned(),
        keel_data::Format::Delimited { delimiter } => format!("{:?}-separated", char::from(delimiter)),
        keel_data::Format::JsonLines => "JSON lines".to_owned(),
    };
    let compression = s.compression.map(|c| format!(", {c:?} compressed").to_lowercase()).unwrap_or_default();
    let header = if s.has_header { format!("header of {} columns", s.columns.len()) } else { "no header".into() };
    println!(
        "  read      {} bytes, {format}{compression}, {header}, {} rows skipped after it, {} blank lines",
        s.bytes, s.skipped_after_header, s.blank_lines
    );
    println!(
        "  text      {} normalised (raw kept beside), {} exact duplicates ({} with another label), {} UTF-8 repairs",
        s.normalised, s.exact_duplicates, s.conflicting_duplicates, s.repaired_utf8
    );
    for (reason, n) in &outcome.quarantine_by_reason {
        println!("  quarantined {n:>6}  {reason}");
    }
    if !outcome.quarantine_by_reason.is_empty() {
        println!("  quarantined rows, with line numbers and reasons: {}", outcome.quarantine_file);
    }
    Ok(())
}

async fn eval(home: &std::path::Path, json: bool, args: EvalArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let (installed, base) = args.encoder.load()?;
    let version = store.resolve(&args.spec).await?;
    let encoder = context::version_encoder(&store, &args.encoder.section(), &installed, base, &version).await?;
    let data = match &args.data {
        Some(path) => Some((path.as_path(), args.columns.read_options()?)),
        None => None,
    };
    let req = EvalRequest {
        spec: &args.spec,
        against: args.against.as_deref(),
        html: args.html.as_deref(),
        quiet: json,
        data,
    };
    let out = evaluate::eval(&store, &encoder, &req).await?;
    if json {
        return output::json(&out);
    }
    println!("{}", out.report.summary());
    if let Some(n) = &out.gate_note {
        println!("gate: {n}");
    }
    println!("report: {}", out.report_html);
    Ok(())
}

async fn models(home: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let versions = store.model_versions().await?;
    if json {
        return output::json(&versions);
    }
    if versions.is_empty() {
        println!("no models yet; train one with `keel quickstart` or `keel train FILE`");
    }
    println!("{:<24} {:>9} {:>9} {:<22} {:<20} created", "model", "accuracy", "macro-F1", "aliases", "encoder");
    for v in versions {
        let figures = keel_eval::VersionMetrics::parse(&v.metrics).ok();
        println!(
            "{:<24} {:>9.4} {:>9.4} {:<22} {:<20} {}",
            v.tag(),
            figures.as_ref().map_or(f64::NAN, |m| m.accuracy),
            figures.as_ref().map_or(f64::NAN, |m| m.macro_f1),
            v.aliases.join(","),
            v.encoder_id,
            v.created_at
        );
    }
    Ok(())
}

async fn runs(home: &std::path::Path, json: bool, limit: i64) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let runs = store.runs(limit).await?;
    if json {
        return output::json(&runs);
    }
    println!("{:<32} {:<8} {:<10} {:<26} result", "run", "kind", "status", "started");
    for r in runs {
        let result = match (&r.metrics, &r.error) {
            (_, Some(e)) => e.clone(),
            (Some(m), _) => {
                /// The one figure every run kind records.
                #[derive(serde::Deserialize)]
                struct Figures {
                    accuracy: Option<f64>,
                }
                let accuracy = Figures::deserialize(m).ok().and_then(|f| f.accuracy);
                format!("accuracy {:.4}", accuracy.unwrap_or(f64::NAN))
            }
            _ => String::new(),
        };
        println!("{:<32} {:<8} {:<10} {:<26} {}", r.id, r.kind, r.status, r.started_at, result);
    }
    Ok(())
}

async fn promote(home: &std::path::Path, json: bool, args: PromoteArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let v = store.resolve(&args.spec).await?;
    let previous = store.set_alias(&v.name, &args.alias, v.version, "promoted by hand (keel promote)").await?;
    let v = store.model_version(&v.name, v.version).await?;
    if json {
        return output::json(&json!({"model": v, "alias": args.alias, "previous_version": previous}));
    }
    match previous {
        Some(p) if p != v.version => println!("{} is now {} (was version {p})", v.tag(), args.alias),
        _ => println!("{} is now {}", v.tag(), args.alias),
    }
    Ok(())
}

/// The model a command means when the user names none: the only one in the store.
async fn only_model(store: &keel_store::Store) -> anyhow::Result<String> {
    match store.model_names().await?.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no models yet; train one with `keel quickstart` or `keel train FILE`"),
        many => anyhow::bail!("several models are registered ({}); name one", many.join(", ")),
    }
}

async fn rollback(home: &std::path::Path, json: bool, args: RollbackArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let name = match args.name {
        Some(n) => n,
        None => only_model(&store).await?,
    };
    let (from, to) = store.rollback(&name, &args.alias).await?;
    if json {
        return output::json(&json!({"model": name, "alias": args.alias, "from": from, "to": to}));
    }
    println!("{name}@{}: version {from} → version {to}", args.alias);
    Ok(())
}

async fn lineage(home: &std::path::Path, json: bool, args: LineageArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let l = store.lineage(&args.spec).await?;
    if json {
        return output::json(&l);
    }
    let d = &l.dataset.fields;
    println!("model    {} (created {})", l.model.tag(), l.model.created_at);
    println!("  head     artifact {}", l.model.head_artifact);
    println!("  encoder  {}", l.model.encoder_id);
    if let Some(ft) = keel_eval::VersionMetrics::parse(&l.model.metrics).ok().and_then(|m| m.fine_tune) {
        println!("  base     {} (the encoder before fine-tuning)", ft.base_encoder);
        println!("  adapter  artifact {} ({}: {})", ft.adapter, ft.adapter_kind, ft.method);
        let p = &ft.run.pairs;
        println!(
            "  pairs    {} {} pairs (at most {}) from {} training rows, seed {}; {} of {} steps, kept step {}",
            p.pairs, p.kind, p.max_pairs, p.train_rows, p.seed, ft.run.steps, ft.run.planned_steps, ft.run.best_step
        );
    }
    println!("run      {} ({}, {}, {} on {})", l.run.id, l.run.kind, l.run.status, l.run.code_version, l.run.host);
    println!("  params   {}", l.run.params);
    println!(
        "dataset  {} ({} accepted, {} quarantined of {} rows read)",
        d.id, d.n_records, d.n_quarantined, d.rows_read
    );
    println!("  records  artifact {}", d.records_artifact);
    println!("raw file {} (sha256 {})", d.source, d.source_sha256);
    for e in &l.alias_events {
        println!("alias    {} at {}: {}", e.alias, e.at, e.reason);
    }
    Ok(())
}

async fn store_check(home: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let report = store.check().await?;
    if json {
        output::json(&report)?;
    } else {
        println!(
            "{} artifacts checked, {} problems, {} leftover temporary files",
            report.artifacts_checked,
            report.problems.len(),
            report.leftover_temp_files
        );
        for p in &report.problems {
            println!("  {p}");
        }
    }
    anyhow::ensure!(report.problems.is_empty(), "the store has {} problems", report.problems.len());
    Ok(())
}
