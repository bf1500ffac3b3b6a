//! The pipeline's stages, in data-flow order: ingest → embed → train → evaluate → gate →
//! register → promote. One orchestrator, `cmd/run/`, sequences them for `keel run`, `keel
//! train` (a run on a configuration built from its flags) and the quickstart; `keel ingest` and
//! `keel eval` call single stages.
//!
//! Every stage takes typed inputs and returns a typed output ([`Ingested`], [`Embedded`],
//! [`Trained`], [`Evaluated`], [`Gated`], [`Registered`], [`Promoted`]). The run records each
//! output as JSON in the store's `pipeline_steps` table and reads it back into the same type, so
//! a skipped step hands the next one exactly what a step that ran would have. Nothing here knows
//! clap; the command line converts its flags into these types in `cli.rs`.

pub mod data;
pub mod evaluate;
pub mod finetune;
pub mod gate;
pub mod ingest;
pub mod register;
pub mod select;
pub mod train;

use std::collections::BTreeMap;

use keel_core::ContentHash;
use keel_eval::{GateOutcome, SplitSizes};
use serde::{Deserialize, Serialize};

/// A pipeline step's identity, in run order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Ingest,
    Embed,
    Train,
    Evaluate,
    Gate,
    Register,
    Promote,
}

impl StepKind {
    pub const ALL: [StepKind; 7] = [
        StepKind::Ingest,
        StepKind::Embed,
        StepKind::Train,
        StepKind::Evaluate,
        StepKind::Gate,
        StepKind::Register,
        StepKind::Promote,
    ];

    /// The name the store and the terminal use.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Ingest => "ingest",
            StepKind::Embed => "embed",
            StepKind::Train => "train",
            StepKind::Evaluate => "evaluate",
            StepKind::Gate => "gate",
            StepKind::Register => "register",
            StepKind::Promote => "promote",
        }
    }
}

/// What an artifact holds (the store keeps the kind beside its hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    Records,
    Quarantine,
    Head,
    Fallback,
    TrainDetails,
    TrainRows,
    CandidateReport,
    ReportJson,
    ReportHtml,
    Profile,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Records => "records",
            ArtifactKind::Quarantine => "quarantine",
            ArtifactKind::Head => "head",
            ArtifactKind::Fallback => "head/fallback",
            ArtifactKind::TrainDetails => "train/details",
            ArtifactKind::TrainRows => "train/rows",
            ArtifactKind::CandidateReport => "report/candidate",
            ArtifactKind::ReportJson => "report/json",
            ArtifactKind::ReportHtml => "report/html",
            ArtifactKind::Profile => "profile",
        }
    }
}

/// What a pipeline event in the store's log says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A trigger fired (a source changed, drift was found).
    Trigger,
    /// A run did work.
    Run,
    /// Nothing to do.
    Skip,
    /// A run or a check failed.
    Error,
    /// The watcher stopped.
    Stop,
    /// The gate moved production.
    Promote,
    /// The gate held the version as a candidate.
    Refuse,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Trigger => "trigger",
            EventKind::Run => "run",
            EventKind::Skip => "skip",
            EventKind::Error => "error",
            EventKind::Stop => "stop",
            EventKind::Promote => "promote",
            EventKind::Refuse => "refuse",
        }
    }
}

/// The ingest step's record: the dataset version and what was left out of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ingested {
    pub dataset_id: ContentHash,
    /// False when this exact dataset version was already in the store.
    pub created: bool,
    /// Rows left out by `[source.filter]` (not bad data), by reason.
    pub filtered: BTreeMap<String, usize>,
    pub quarantine_by_reason: Vec<(String, usize)>,
    /// Where the quarantined rows are, with their reasons and source lines.
    pub quarantine_file: String,
    /// What the reader counted in each file.
    pub files: Vec<keel_data::IngestStats>,
}

/// The embed step's record: which encoder made the vectors, and what the cache saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Embedded {
    pub encoder_id: String,
    pub dim: usize,
    pub texts: usize,
    /// Texts whose vector came from the cache.
    pub cached: usize,
    /// Distinct texts embedded now.
    pub computed: usize,
    /// How the encoder was fine-tuned first (`[encoder.fine_tune]`); `encoder_id` is then the
    /// adapted encoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tune: Option<keel_eval::FineTuneRecord>,
}

/// Where a logistic head's L2 strength was cross-validated: carried forward while it is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L2Origin {
    pub l2: f64,
    /// Artifact of the sorted 64-bit fingerprints of the (text, label) rows it was chosen on.
    pub rows: ContentHash,
    /// The train step that cross-validated it.
    pub train_key: String,
}

/// The train step's record: the head, its fallback and the training details, as artifacts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trained {
    pub head: ContentHash,
    pub fallback: ContentHash,
    /// [`train::TrainDetails`] as JSON.
    pub details: ContentHash,
    pub labels: Vec<String>,
    pub l2_origin: Option<L2Origin>,
    pub split_sizes: SplitSizes,
    /// Auto selection: each candidate's CPU µs per prediction, measured while training (in the
    /// step's record, not in an artifact: a clock does not give the same bytes twice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub costs_us: Vec<f64>,
}

/// The evaluate step's record: the candidate's report on the test split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluated {
    pub report: ContentHash,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub test_rows: usize,
}

/// The gate step's record: the verdict and the version it was compared with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gated {
    pub gate: GateOutcome,
    pub against: Option<String>,
}

/// The register step's record: the version number and its final report artifacts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub version: i64,
    pub report_json: ContentHash,
    pub report_html: ContentHash,
}

/// The promote step's record: the alias moved (or kept) and what it pointed at before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Promoted {
    pub alias: String,
    pub version: i64,
    pub previous: Option<i64>,
}
