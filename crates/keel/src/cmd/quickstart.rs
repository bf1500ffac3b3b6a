//! `keel quickstart`: the bundled sentiment example, end to end.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::cli::{ColumnArgs, HeadArgs, QuickstartArgs, ServeArgs};
use crate::context::{load_encoder, open_store};
use crate::output::{self, note};
use crate::pipeline;

/// Movie-review sentences with human sentiment scores (VADER data set, MIT licence); see
/// examples/sentiment/README.md for how labels were derived.
const EXAMPLE: &[u8] = include_bytes!("../../../../examples/sentiment/movie_sentences.csv");
pub const MODEL_NAME: &str = "sentiment";

/// Writes the bundled example into the store folder (once), so that its lineage points at a
/// real file.
fn materialise_example(home: &Path) -> anyhow::Result<PathBuf> {
    let path = home.join("examples").join("movie_sentences.csv");
    if std::fs::read(&path).is_ok_and(|b| b == EXAMPLE) {
        return Ok(path);
    }
    crate::training::write_atomically(&path, EXAMPLE).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub async fn run(home: &Path, json: bool, args: QuickstartArgs) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let file = materialise_example(home)?;
    note(format!("keel quickstart: sentiment of movie-review sentences ({})", file.display()));
    let (_, encoder) = load_encoder(&args.encoder)?;
    let columns = ColumnArgs {
        text_col: "text".into(),
        label_col: "label".into(),
        id_col: Some("id".into()),
        limit: args.limit,
        ..ColumnArgs::default()
    };
    let head = HeadArgs::default();
    let req = pipeline::TrainRequest {
        name: MODEL_NAME,
        file: &file,
        columns: &columns,
        seed: 42,
        head: &head,
        promote: true,
        quiet: json,
    };
    let outcome = pipeline::train(&store, &encoder, &req).await?;
    if json {
        output::json(&outcome)?;
    } else {
        super::print_trained(&outcome);
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
    drop(store);
    let serve = ServeArgs { addr: args.addr, model: Some(tag), encoder: args.encoder };
    super::serve::run_with(home, serve, Some(encoder)).await
}
