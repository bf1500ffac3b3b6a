//! `keel quickstart`: the bundled sentiment example, end to end. A thin wrapper over `keel run`
//! with the example's keel.toml (examples/sentiment/keel.toml), then `keel serve`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::{QuickstartArgs, ServeArgs};
use crate::context::open_store;
use crate::output::{self, note};

use super::run::{self as pipeline_run, Session};

/// Movie-review sentences with human sentiment scores (VADER data set, MIT licence); see
/// examples/sentiment/README.md for how labels were derived.
const EXAMPLE: &[u8] = include_bytes!("../../../../examples/sentiment/movie_sentences.csv");
/// The example's project file.
const EXAMPLE_CONFIG: &[u8] = include_bytes!("../../../../examples/sentiment/keel.toml");

/// Writes the bundled example and its keel.toml into the store folder (once), so that its
/// lineage points at a real file. Returns the keel.toml path.
fn materialise_example(home: &Path) -> anyhow::Result<PathBuf> {
    let dir = home.join("examples");
    for (name, bytes) in [("movie_sentences.csv", EXAMPLE), ("keel.toml", EXAMPLE_CONFIG)] {
        let path = dir.join(name);
        if !std::fs::read(&path).is_ok_and(|b| b == bytes) {
            crate::stages::train::write_atomically(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(dir.join("keel.toml"))
}

pub async fn run(home: &Path, json: bool, args: QuickstartArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let config = materialise_example(home)?;
    note(format!("keel quickstart: sentiment of movie-review sentences (keel run --config {})", config.display()));
    let mut loaded = pipeline_run::load_config(&config, args.limit)?;
    loaded.config.encoder = args.encoder.section();
    let (installed, encoder) = args.encoder.load()?;
    let mut session = Session::with_encoder(store, installed, encoder.clone());
    let trigger = pipeline_run::Trigger::Command("keel quickstart");
    let outcome = pipeline_run::run_once(&mut session, &loaded, None, json, &trigger).await?;
    if json {
        output::json(&outcome)?;
    } else {
        super::summary::print_run(&outcome);
    }
    let tag = outcome.model.tag();
    if args.no_serve {
        note(format!("\nserve it with: keel --home {} serve --model {tag}", home.display()));
        return Ok(());
    }
    note(format!(
        "\ntry it:\n  curl -s http://{}/v1/classify -H 'content-type: application/json' -d '{{\"inputs\": [\"a gorgeous, moving film\", \"two hours I will never get back\"]}}'\n",
        args.addr
    ));
    drop(session);
    let serve = ServeArgs {
        addr: args.addr,
        model: Some(tag),
        encoder: args.encoder,
        ops: Default::default(),
        index: None,
        no_answer: false,
        answer_mode: None,
    };
    super::serve::run_with(home, serve, Some(encoder)).await
}
