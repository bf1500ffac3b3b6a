//! `keel train`: a run of the pipeline on a configuration built from the command's flags, so
//! it keys, caches, gates and records exactly as `keel run` does.

use std::path::{Path, PathBuf};

use crate::cli::TrainArgs;
use crate::config::{Config, Declared, Loaded, Paths};
use crate::context::open_store;
use crate::output;

use super::run::{self, Session, Trigger};

/// The keel.toml `keel train`'s flags amount to. Like the command always did, it sets no
/// minimum row count or quarantine share: a small or messy file still trains when it splits.
pub fn config_of(args: &TrainArgs) -> Config {
    let mut c = Config::default();
    c.project.name.clone_from(&args.name);
    c.project.seed = args.seed;
    let (cols, s, v) = (&args.columns, &mut c.source, &mut c.validation);
    s.path = Paths::One(args.file.display().to_string());
    s.text_col.clone_from(&cols.text_col);
    s.label_col.clone_from(&cols.label_col);
    s.id_col.clone_from(&cols.id_col);
    s.header = cols.no_header.then_some(false);
    s.skip_rows = cols.skip_rows;
    s.limit = cols.limit;
    s.delimiter.clone_from(&cols.delimiter);
    v.labels.clone_from(&cols.labels);
    v.max_text_chars = cols.max_text_chars;
    v.max_record_bytes = cols.max_record_bytes;
    v.lossy_utf8 = cols.lossy_utf8;
    v.normalize = !cols.no_normalize;
    v.strip_html = cols.strip_html;
    v.drop_duplicates = cols.drop_duplicates;
    v.min_records = 0;
    v.max_quarantined_share = 1.0;
    c.encoder = args.encoder.section();
    c.encoder.fine_tune = args.fine_tune_section();
    let spec = args.head.spec();
    c.head.kind = spec.kind;
    c.head.mlp_hidden = spec.mlp_hidden;
    c.head.mlp_max_epochs = spec.mlp_max_epochs;
    c.head.mlp_patience = spec.mlp_patience;
    c.gate.promote = !args.no_promote;
    c
}

pub async fn train(home: &Path, json: bool, args: TrainArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let (installed, encoder) = args.encoder.load()?;
    let loaded = Loaded {
        config: config_of(&args),
        path: PathBuf::from("keel train"),
        dir: PathBuf::new(),
        declared_by: Declared::Flags,
    };
    let mut session = Session::with_encoder(store, installed, encoder);
    let outcome = run::run_once(&mut session, &loaded, None, json, &Trigger::Command("keel train")).await?;
    if json {
        return output::json(&outcome);
    }
    super::summary::print_run(&outcome);
    if outcome.model.aliases.iter().any(|a| a == "candidate") {
        println!("next      keel promote {} to serve it anyway", outcome.model.tag());
    }
    Ok(())
}
