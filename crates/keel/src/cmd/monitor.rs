//! `keel monitor`: the prediction log of one model version against the reference profile
//! stored when it was trained.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use keel_core::{ContentHash, Matrix};
use keel_embed::Encoder;
use keel_monitor::{DriftReport, MonitorConfig, Observation, Profile, Rows};
use keel_store::{ModelVersion, PredictionRecord, Store};

use crate::cli::MonitorArgs;
use crate::context::open_store;
use crate::embedding::embed_cached;
use crate::output::{self, note};

/// The version's stored reference profile.
pub async fn load_profile(store: &Store, model: &ModelVersion) -> anyhow::Result<Profile> {
    let artifacts = keel_eval::VersionArtifacts::recorded_in(&model.metrics);
    let hash = artifacts.profile.as_deref().with_context(|| {
        format!("{} has no reference profile (it was registered before Keel stored one); train it again", model.tag())
    })?;
    let hash = ContentHash::parse(hash).context("malformed profile hash")?;
    let bytes = store.read_artifact(&hash).await?;
    Profile::from_bytes(&bytes).with_context(|| format!("cannot read the reference profile of {}", model.tag()))
}

/// Seconds in a duration written `90s`, `15m`, `1h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.trim().parse().with_context(|| format!("{s:?} is not a duration like 30m, 1h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 604_800.0,
        _ => bail!("unknown duration unit {unit:?} in {s:?}: use s, m, h, d or w"),
    };
    anyhow::ensure!(n.is_finite() && n > 0.0, "the duration {s:?} must be positive");
    Ok(Duration::from_secs_f64(n * mult))
}

/// RFC 3339 UTC with milliseconds, the prediction log's format (so text order is time order).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Probabilities as served, in the profile's label order.
fn served_proba(preds: &[&PredictionRecord], labels: &[String]) -> Matrix {
    let mut m = Matrix::zeros(preds.len(), labels.len());
    for (i, p) in preds.iter().enumerate() {
        for (c, l) in labels.iter().enumerate() {
            m.row_mut(i)[c] = p.scores.get(l).and_then(serde_json::Value::as_f64).unwrap_or(0.0) as f32;
        }
    }
    m
}

pub async fn run(home: &Path, json: bool, args: MonitorArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let model = store.resolve(&args.spec).await?;
    let profile = load_profile(&store, &model).await?;
    let now = SystemTime::now();
    let (since, until) = match (&args.since, &args.until) {
        (None, None) => (rfc3339(now - parse_duration(&args.window)?), rfc3339(now)),
        (since, until) => (
            since.clone().unwrap_or_else(|| "0000".into()),
            until.clone().unwrap_or_else(|| rfc3339(now + Duration::from_secs(1))),
        ),
    };
    let (installed, base) = args.encoder.load()?;
    let encoder = crate::context::version_encoder(&store, &args.encoder.section(), &installed, base, &model).await?;
    let tag = model.tag();
    let Some(Checked { mut report, observed, predictions: preds }) =
        check(&store, &model, &profile, &encoder, Window { since: &since, until: &until }, json).await?
    else {
        bail!(
            "fewer than {MIN_PREDICTIONS} logged predictions of {tag} in [{since}, {until}): too few to compare (widen --window or --since)"
        );
    };
    if let Some(dir) = &args.export {
        export_csv(dir, &profile, &observed)?;
        note(format!("reference and window as CSV in {}", dir.display()));
    }

    report.title = format!("{tag}: {} predictions, {since} – {until}", preds.len());
    // Drift over time: equal slices of the window by row order (the log is time-ordered).
    let buckets = args.buckets.max(1).min(preds.len() / args.min_bucket_rows.max(2)).max(1);
    if buckets >= 2 {
        let per = preds.len().div_ceil(buckets);
        let windows: Vec<(String, Observation)> = (0..preds.len())
            .step_by(per)
            .map(|start| {
                let idx: Vec<usize> = (start..(start + per).min(preds.len())).collect();
                let label = preds[start].at.chars().take(16).collect::<String>();
                (label, observed.select(&idx))
            })
            .collect();
        let cfg = MonitorConfig::default();
        report.over_time = tokio::task::block_in_place(|| keel_monitor::over_time(&profile, &windows, &cfg));
    }
    if let Some(path) = &args.html {
        crate::stages::evaluate::write_html(path, &keel_monitor::render_html(&report))?;
        note(format!("report: {}", path.display()));
    }
    if json {
        output::json(&report)?;
    } else {
        print!("{}", report.summary());
    }
    if args.fail_on_drift && (report.verdict.drift || report.verdict.quality_degraded) {
        bail!("{}", report.verdict.summary);
    }
    Ok(())
}

/// What one drift check saw: the report, the window's observation, and its predictions.
pub struct Checked {
    pub report: DriftReport,
    pub observed: Observation,
    pub predictions: Vec<PredictionRecord>,
}

/// A time window of the prediction log: `[since, until)`, RFC 3339 UTC.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub since: &'a str,
    pub until: &'a str,
}

/// Fewest logged predictions a drift check compares with the reference.
pub const MIN_PREDICTIONS: usize = 2;

/// Compares `model`'s logged predictions in `[since, until)` with its reference profile:
/// embeddings of the logged texts (from the cache where present), token counts, served
/// probabilities, and the live quality of the predictions that received feedback. `None` when
/// the window holds fewer than [`MIN_PREDICTIONS`]; an error when `encoder` is not the model's.
pub async fn check(
    store: &Store,
    model: &ModelVersion,
    profile: &Profile,
    encoder: &Encoder,
    window: Window<'_>,
    quiet: bool,
) -> anyhow::Result<Option<Checked>> {
    let Window { since, until } = window;
    let tag = model.tag();
    let preds: Vec<PredictionRecord> =
        store.predictions(since, until).await?.into_iter().filter(|p| p.model == tag).collect();
    if preds.len() < MIN_PREDICTIONS {
        return Ok(None);
    }
    if !quiet {
        note(format!("{} predictions of {tag} between {since} and {until}", preds.len()));
    }
    if encoder.id() != model.encoder_id {
        bail!(
            "{tag} reads embeddings from {}, but {} is loaded; pass the same --encoder",
            model.encoder_id,
            encoder.id()
        );
    }
    let texts: Vec<&str> = preds.iter().map(|p| p.input_text.as_str()).collect();
    let (x, stats) = embed_cached(store, encoder, &texts, quiet).await?;
    if !quiet {
        note(format!("embeddings: {} from cache, {} computed", stats.cached, stats.computed));
    }
    // Logs repeat inputs: each distinct text is tokenized once.
    let mut counted: HashMap<&str, usize> = HashMap::new();
    let mut tokens = Vec::with_capacity(texts.len());
    for &t in &texts {
        let n = match counted.get(t) {
            Some(&n) => n,
            None => {
                let n = encoder.count_tokens(t).context("tokenizing logged inputs")?;
                counted.insert(t, n);
                n
            }
        };
        tokens.push(n);
    }
    let refs: Vec<&PredictionRecord> = preds.iter().collect();
    let proba = served_proba(&refs, &profile.labels);
    let cfg = MonitorConfig::default();
    let rows = Rows { texts: &texts, tokens: Some(&tokens), embeddings: &x, proba: &proba };
    let observed = Observation::new(profile, &rows)?;

    // Live quality from the feedback given to these predictions.
    let feedback = store.feedback_for_window(since, until).await?;
    let truth: HashMap<&str, &str> = feedback.iter().map(|f| (f.prediction_id.as_str(), f.label.as_str())).collect();
    let (mut y, mut rows_fb) = (Vec::new(), Vec::new());
    for (i, p) in preds.iter().enumerate() {
        if let Some(c) = truth.get(p.id.as_str()).and_then(|l| profile.labels.iter().position(|x| x == l)) {
            y.push(c);
            rows_fb.push(i);
        }
    }
    let quality = keel_monitor::live_quality(&y, &proba.select_rows(&rows_fb), profile, &cfg);
    let report = tokio::task::block_in_place(|| keel_monitor::compare(profile, &observed, quality, &cfg));
    Ok(Some(Checked { report, observed, predictions: preds }))
}

/// Writes the reference and the window as CSV for another drift tool (scripts/bench-monitor
/// runs Evidently on them): `reference.csv` (the per-row statistics and predicted class of the
/// profile's rows; a statistic kept for fewer rows leaves its later cells empty),
/// `reference_embeddings.csv` (the profile's projected sample, `f0..fK` with the residual norm
/// last) and `current.csv` (the window: statistics, predicted class and projections per row).
fn export_csv(dir: &Path, profile: &Profile, observed: &Observation) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let label = |c: u32| profile.labels.get(c as usize).cloned().unwrap_or_else(|| format!("#{c}"));
    let names: Vec<&str> = profile.columns.iter().map(|c| c.name.as_str()).collect();
    let f = profile.components + 1;
    let features: Vec<String> = (0..f).map(|j| format!("f{j}")).collect();
    let write = |name: &str, body: String| -> anyhow::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, body).with_context(|| format!("cannot write {}", path.display()))
    };

    let mut s = format!("{},predicted_class\n", names.join(","));
    let n = profile.columns.iter().map(|c| c.values.len()).max().unwrap_or(0).max(profile.predicted.len());
    for i in 0..n {
        for c in &profile.columns {
            if let Some(v) = c.values.get(i) {
                let _ = write!(s, "{v}");
            }
            s.push(',');
        }
        if let Some(&p) = profile.predicted.get(i) {
            s.push_str(&label(p));
        }
        s.push('\n');
    }
    write("reference.csv", s)?;

    let mut s = format!("{}\n", features.join(","));
    for row in profile.sample.chunks(f) {
        let cells: Vec<String> = row.iter().map(f32::to_string).collect();
        let _ = writeln!(s, "{}", cells.join(","));
    }
    write("reference_embeddings.csv", s)?;

    let mut s = format!("{},predicted_class,{}\n", names.join(","), features.join(","));
    for i in 0..observed.n {
        for name in &names {
            if let Some(v) = observed.column(name).and_then(|c| c.values.get(i)) {
                let _ = write!(s, "{v}");
            }
            s.push(',');
        }
        s.push_str(&label(observed.predicted[i]));
        for v in &observed.features[i * f..(i + 1) * f] {
            let _ = write!(s, ",{v}");
        }
        s.push('\n');
    }
    write("current.csv", s)
}
