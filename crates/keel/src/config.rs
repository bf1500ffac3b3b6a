//! keel.toml: one project's whole pipeline, declared. Every table rejects keys it does not
//! know, and the error names the nearest valid key, so a typo never silently falls back to a
//! default.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use keel_data::{Format, ReadOptions};

use crate::stages::finetune::FineTuneSection;
use crate::stages::train::{HeadKind, HeadSpec};

impl Config {
    /// The reader's options `[source]` and `[validation]` declare.
    pub fn read_options(&self) -> anyhow::Result<ReadOptions> {
        let (s, v) = (&self.source, &self.validation);
        let format = match (s.delimiter.as_deref(), s.format) {
            (Some("\\t" | "tab" | "\t"), _) => Some(Format::Delimited { delimiter: b'\t' }),
            (Some(d), _) if d.len() == 1 => Some(Format::Delimited { delimiter: d.as_bytes()[0] }),
            (Some(d), _) => bail!("[source] delimiter must be one character (or \\t), not {d:?}"),
            (None, SourceFormat::Auto) => None,
            (None, SourceFormat::Csv) => Some(Format::Delimited { delimiter: b',' }),
            (None, SourceFormat::Tsv) => Some(Format::Delimited { delimiter: b'\t' }),
            (None, SourceFormat::Jsonl) => Some(Format::JsonLines),
        };
        Ok(ReadOptions {
            text_col: s.text_col.clone(),
            label_col: Some(s.label_col.clone()),
            id_col: s.id_col.clone(),
            format,
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
            decompression: keel_data::Decompression::default(),
        })
    }
}

/// The file `keel init` writes. It parses to [`Config::default`] plus the example's paths
/// (checked by a unit test), so every documented key is real.
pub const TEMPLATE: &str = include_str!("keel.template.toml");

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub project: Project,
    pub source: Source,
    pub validation: Validation,
    pub split: Split,
    pub encoder: EncoderSection,
    pub head: HeadSection,
    pub gate: GateSection,
    pub serve: Serve,
    pub monitor: Monitor,
    pub watch: Watch,
    pub answer: AnswerSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Project {
    /// The model name versions are registered under.
    pub name: String,
    /// Seed for the split and the heads.
    pub seed: u64,
}

impl Default for Project {
    fn default() -> Self {
        Self { name: "model".into(), seed: 42 }
    }
}

/// One file or several read as one data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Paths {
    One(String),
    Many(Vec<String>),
}

impl Default for Paths {
    fn default() -> Self {
        Paths::One("data.csv".into())
    }
}

impl Paths {
    pub fn as_slice(&self) -> Vec<&str> {
        match self {
            Paths::One(p) => vec![p.as_str()],
            Paths::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    /// From the extension, checked against the first rows.
    #[default]
    Auto,
    Csv,
    Tsv,
    Jsonl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Source {
    /// Relative to keel.toml's folder; `${VAR}` and `${VAR:-default}` are expanded.
    pub path: Paths,
    pub format: SourceFormat,
    pub text_col: String,
    pub label_col: String,
    pub id_col: Option<String>,
    /// `None`: detected.
    pub header: Option<bool>,
    pub skip_rows: Option<usize>,
    /// Read only the first N data rows of each file.
    pub limit: Option<usize>,
    /// A field delimiter other than the format's (one character, or `\t`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    pub filter: Filter,
}

impl Default for Source {
    fn default() -> Self {
        Self {
            path: Paths::default(),
            format: SourceFormat::Auto,
            text_col: "text".into(),
            label_col: "label".into(),
            id_col: None,
            header: None,
            skip_rows: None,
            limit: None,
            delimiter: None,
            filter: Filter::default(),
        }
    }
}

/// Rows left out on purpose (not bad data, so not quarantined): counted, never trained on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    /// Leave out rows with these labels.
    pub drop_labels: Vec<String>,
    /// When not empty, keep only rows with these labels.
    pub keep_labels: Vec<String>,
    /// Leave out texts shorter than this many characters.
    pub min_chars: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Validation {
    /// When set, any other label is quarantined.
    pub labels: Option<Vec<String>>,
    pub max_text_chars: usize,
    pub max_record_bytes: usize,
    pub lossy_utf8: bool,
    pub normalize: bool,
    pub strip_html: bool,
    pub drop_duplicates: bool,
    /// The run stops at ingest when fewer rows are accepted.
    pub min_records: usize,
    /// The run stops at ingest when a larger share of the rows read is quarantined.
    pub max_quarantined_share: f64,
}

impl Default for Validation {
    fn default() -> Self {
        Self {
            labels: None,
            max_text_chars: keel_data::DEFAULT_MAX_TEXT_CHARS,
            max_record_bytes: keel_data::DEFAULT_MAX_RECORD_BYTES,
            lossy_utf8: false,
            normalize: true,
            strip_html: false,
            drop_duplicates: false,
            min_records: 30,
            max_quarantined_share: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Split {
    pub validation: f64,
    pub test: f64,
}

impl Default for Split {
    fn default() -> Self {
        let d = keel_data::SplitConfig::default();
        Self { validation: d.validation, test: d.test }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Int8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncoderSection {
    pub name: String,
    pub precision: Precision,
    pub batch_size: usize,
    /// Load the model from this folder instead of the user cache.
    pub model_dir: Option<String>,
    /// `[encoder.fine_tune]`: adapt the encoder to the task before embedding (none when absent
    /// or `method = "none"`; left out of the embed step's key then, so it keys as before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<FineTuneSection>,
}

impl Default for EncoderSection {
    fn default() -> Self {
        Self {
            name: "all-MiniLM-L6-v2".into(),
            precision: Precision::F32,
            batch_size: 32,
            model_dir: None,
            fine_tune: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadSection {
    pub kind: HeadKind,
    pub mlp_hidden: usize,
    pub mlp_max_epochs: usize,
    pub mlp_patience: usize,
    /// Logistic regression under `keel run`: keep the L2 strength the production version's
    /// cross-validation chose while at most this share of the training rows differ from the
    /// rows it was chosen on (0: cross-validate every time).
    pub l2_reuse_max_change: f64,
}

/// Default of `[head] l2_reuse_max_change`.
pub const L2_REUSE_MAX_CHANGE: f64 = 0.05;

impl Default for HeadSection {
    fn default() -> Self {
        let d = HeadSpec::default();
        Self {
            kind: d.kind,
            mlp_hidden: d.mlp_hidden,
            mlp_max_epochs: d.mlp_max_epochs,
            mlp_patience: d.mlp_patience,
            l2_reuse_max_change: L2_REUSE_MAX_CHANGE,
        }
    }
}

impl HeadSection {
    /// The head to train.
    pub fn spec(&self) -> HeadSpec {
        HeadSpec {
            kind: self.kind,
            mlp_hidden: self.mlp_hidden,
            mlp_max_epochs: self.mlp_max_epochs,
            mlp_patience: self.mlp_patience,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSection {
    /// The 95% interval of the macro-F1 difference (new − production) must have its lower
    /// bound above this.
    pub min_lower: f64,
    /// The macro-F1 difference itself must exceed this.
    pub min_point: f64,
    /// Bootstrap resamples for the interval.
    pub resamples: usize,
    /// Move `production` when the gate passes; `false` keeps new versions as `candidate`.
    pub promote: bool,
}

impl Default for GateSection {
    fn default() -> Self {
        let g = keel_eval::Gate::default();
        Self { min_lower: g.min_lower, min_point: g.min_point, resamples: g.bootstrap.resamples, promote: true }
    }
}

impl GateSection {
    pub fn gate(&self) -> keel_eval::Gate {
        let mut g = keel_eval::Gate { min_lower: self.min_lower, min_point: self.min_point, ..Default::default() };
        g.bootstrap.resamples = self.resamples;
        g
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Serve {
    pub addr: String,
    /// The alias `keel serve` answers with.
    pub alias: String,
}

impl Default for Serve {
    fn default() -> Self {
        Self { addr: "127.0.0.1:8080".into(), alias: "production".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitor {
    /// Retrain under `keel run --watch` when monitoring reports drift.
    pub retrain_on_drift: bool,
    /// Hours of logged predictions a drift check looks at.
    pub window_hours: u64,
    /// Seconds between drift checks of the served alias under `keel run --watch`.
    pub check_every_secs: f64,
}

impl Default for Monitor {
    fn default() -> Self {
        Self { retrain_on_drift: true, window_hours: 24, check_every_secs: 3600.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Watch {
    /// Seconds between checks of the sources under `keel run --watch`.
    pub interval_secs: f64,
}

impl Default for Watch {
    fn default() -> Self {
        Self { interval_secs: 30.0 }
    }
}

/// `[answer]`: how `keel ask` and `/v1/answer` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerSection {
    /// extractive | generate | auto (`keel_llm::reply` has the rule).
    pub mode: keel_llm::AnswerMode,
}

/// Where a configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// A keel.toml file.
    File,
    /// The flags of `keel train`.
    Flags,
}

/// A parsed keel.toml with the folder its relative paths start from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
    pub dir: PathBuf,
    pub declared_by: Declared,
}

impl Loaded {
    /// The setting that keeps a passing version as a candidate, in the user's words.
    pub fn held_by(&self) -> &'static str {
        match self.declared_by {
            Declared::File => "[gate] promote = false",
            Declared::Flags => "--no-promote",
        }
    }

    /// The source files, with variables expanded and relative paths resolved.
    pub fn source_paths(&self) -> anyhow::Result<Vec<PathBuf>> {
        self.config
            .source
            .path
            .as_slice()
            .into_iter()
            .map(|p| {
                let p = PathBuf::from(expand_vars(p)?);
                Ok(if p.is_absolute() { p } else { self.dir.join(p) })
            })
            .collect()
    }
}

pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!("cannot read {} (write one with `keel init`, or pass --config FILE)", path.display())
    })?;
    let config = parse(&text).with_context(|| format!("{} is not a valid keel.toml", path.display()))?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_owned();
    Ok(Loaded { config, path: path.to_owned(), dir, declared_by: Declared::File })
}

/// The answer mode (`keel ask --mode`, `keel serve --answer-mode`): the flag, else `[answer]
/// mode` in `config` when that file exists, else auto.
pub fn answer_mode(flag: Option<&str>, config: &Path) -> anyhow::Result<keel_llm::AnswerMode> {
    if let Some(f) = flag {
        return match (keel_llm::AnswerMode::parse(f), f) {
            (Some(m), _) => Ok(m),
            (None, "dense" | "bm25" | "hybrid") => {
                anyhow::bail!(
                    "{f} is a retrieval mode (--retrieval {f}); the answer mode is extractive, generate or auto"
                )
            }
            (None, _) => anyhow::bail!("the answer mode must be extractive, generate or auto, not {f:?}"),
        };
    }
    if !config.exists() {
        return Ok(keel_llm::AnswerMode::default());
    }
    Ok(load(config)?.config.answer.mode)
}

/// Parses keel.toml text. An unknown key is an error naming its table and the nearest valid
/// key; other errors keep toml's line and column.
pub fn parse(text: &str) -> anyhow::Result<Config> {
    let err = match toml::from_str::<Config>(text) {
        Ok(c) => return validate(c),
        Err(e) => e,
    };
    if let Some(msg) = unknown_key_message(text, &err) {
        bail!(msg);
    }
    // One line, with the position: the CLI prints errors on one line.
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            bail!("line {line}, column {column}: {}", err.message().trim_end())
        }
        None => bail!("{}", err.message().trim_end()),
    }
}

fn validate(mut c: Config) -> anyhow::Result<Config> {
    if c.project.name.trim().is_empty() {
        bail!("[project] name must not be empty");
    }
    let fractions = c.split.validation + c.split.test;
    let positive = |x: f64| x > 0.0;
    if !positive(c.split.validation) || !positive(c.split.test) || fractions >= 1.0 || fractions.is_nan() {
        bail!("[split] validation and test must be above 0 and add up to less than 1");
    }
    if c.encoder.batch_size == 0 {
        bail!("[encoder] batch_size must be at least 1");
    }
    if let Some(ft) = &c.encoder.fine_tune {
        ft.check()?;
    }
    c.encoder.fine_tune.take_if(|ft| !ft.active());
    if !positive(c.watch.interval_secs) {
        bail!("[watch] interval_secs must be above 0");
    }
    if !(0.0..=1.0).contains(&c.validation.max_quarantined_share) {
        bail!("[validation] max_quarantined_share is a share of rows, between 0 and 1");
    }
    if !(0.0..=1.0).contains(&c.head.l2_reuse_max_change) {
        bail!("[head] l2_reuse_max_change is a share of training rows, between 0 and 1 (0: always cross-validate)");
    }
    Ok(c)
}

/// serde's "unknown field `x`, expected one of `a`, `b`" turned into
/// "unknown key `x` in [table]; did you mean `a`?".
fn unknown_key_message(text: &str, err: &toml::de::Error) -> Option<String> {
    let msg = err.message();
    let rest = msg.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let valid: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let table = err.span().and_then(|s| table_at(text, s.start));
    let (what, place) = match &table {
        None => ("table", "keel.toml".to_owned()),
        Some(t) => ("key", format!("[{t}]")),
    };
    let wrap = |k: &str| if table.is_none() { format!("[{k}]") } else { format!("`{k}`") };
    let shown = if table.is_none() { format!("[{key}]") } else { format!("`{key}`") };
    let nearest = valid.iter().map(|v| (strsim::levenshtein(key, v), *v)).min();
    let hint = match nearest {
        Some((d, v)) if d <= 3.max(key.chars().count() / 3) => format!("did you mean {}?", wrap(v)),
        _ if valid.is_empty() => "it takes no keys".to_owned(),
        _ => format!("valid: {}", valid.iter().copied().map(wrap).collect::<Vec<_>>().join(", ")),
    };
    Some(format!("unknown {what} {shown} in {place}; {hint}"))
}

/// The table header (`source`, `source.filter`) in force at byte `offset`, or `None` at the top
/// level. Dotted keys at the top level (`source.lable_col = ...`) name their table too.
fn table_at(text: &str, offset: usize) -> Option<String> {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key_part = line.split('=').next().unwrap_or("");
    let dotted: Vec<&str> = key_part.trim().split('.').map(str::trim).collect();
    let header = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_owned());
    // The offending key is the last part of a dotted key; the parts before it are tables.
    let mut parts: Vec<String> = header.into_iter().filter(|h| !h.is_empty()).collect();
    if dotted.len() > 1 {
        let column = offset - line_start;
        let mut pos = 0;
        for part in &dotted[..dotted.len() - 1] {
            if let Some(i) = line[pos..].find(part) {
                if pos + i < column {
                    parts.push((*part).to_owned());
                }
                pos += i + part.len();
            }
        }
    }
    if parts.is_empty() { None } else { Some(parts.join(".")) }
}

/// Expands `${VAR}` and `${VAR:-default}` (a set but empty variable counts as unset).
pub fn expand_vars(s: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find('}') else { bail!("unclosed ${{ in {s:?}") };
        let inner = &rest[i + 2..i + end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => bail!("{s:?} uses ${{{name}}}, which is not set (give a default: ${{{name}:-...}})"),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_to_the_defaults() {
        let c = parse(TEMPLATE).unwrap();
        let mut expected = Config::default();
        expected.project.name = "my-model".into();
        expected.source.path = Paths::One("data.csv".into());
        assert_eq!(c, expected);
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_name_the_table_and_the_nearest_key() {
        let e = parse("[source]\npath = \"a.csv\"\nlable_col = \"y\"\n").unwrap_err().to_string();
        assert_eq!(e, "unknown key `lable_col` in [source]; did you mean `label_col`?");
        let e = parse("[source.filter]\ndrop_label = [\"plot\"]\n").unwrap_err().to_string();
        assert_eq!(e, "unknown key `drop_label` in [source.filter]; did you mean `drop_labels`?");
        let e = parse("[sorce]\npath = \"a.csv\"\n").unwrap_err().to_string();
        assert_eq!(e, "unknown table [sorce] in keel.toml; did you mean [source]?");
        let e = parse("source.lable_col = \"y\"\n").unwrap_err().to_string();
        assert_eq!(e, "unknown key `lable_col` in [source]; did you mean `label_col`?");
        let e = parse("[head]\nzzzzzzzz = 1\n").unwrap_err().to_string();
        assert!(e.starts_with("unknown key `zzzzzzzz` in [head]; valid: `kind`, "), "{e}");
    }

    #[test]
    fn wrong_types_and_values_keep_their_position() {
        let e = parse("[head]\nkind = \"forest\"\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("forest"), "{e}");
        let e = parse("[split]\nvalidation = 0.6\ntest = 0.5\n").unwrap_err().to_string();
        assert!(e.contains("[split]"), "{e}");
    }

    #[test]
    fn variables_expand_with_defaults() {
        // A variable name nothing sets.
        assert_eq!(expand_vars("${KEEL_TEST_SURELY_UNSET_VAR:-../shared}/x").unwrap(), "../shared/x");
        assert!(expand_vars("${KEEL_TEST_SURELY_UNSET_VAR}/x").is_err());
        assert_eq!(expand_vars("plain/path").unwrap(), "plain/path");
    }
}
