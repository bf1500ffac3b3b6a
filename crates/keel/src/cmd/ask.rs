//! `keel ask QUESTION`: retrieve chunks from the index, answer from them with citations.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use keel_index::{Index, Mode, Query};
use keel_llm::{Params, Passage};

use super::serve::lazy_encoder;
use crate::cli::AskArgs;
use crate::context::open_store;
use crate::output::{self, note};

pub async fn run(home: &Path, json: bool, args: AskArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.question.trim().is_empty(), "the question is empty");
    let dir = args.index_dir.clone().unwrap_or_else(|| keel_index::default_dir(home));
    let index = Index::open(&dir)
        .with_context(|| format!("no index at {}; build one with `keel index PATH`", dir.display()))?;
    let mode = Mode::parse(&args.mode).context("mode must be dense, bm25 or hybrid")?;
    let vector = keel_server::query_vector(&index, &args.question, mode, &lazy_encoder(&args.encoder))?;
    let hits = index.search(&Query::new(&args.question, vector.as_deref(), args.k, mode))?;
    let passages: Vec<Passage> = hits.iter().map(keel_server::passage).collect();

    let store = open_store(home).await?;
    let pull = keel_embed::PullOptions::from_env();
    let context = args.context;
    let chain = tokio::task::spawn_blocking(move || keel_llm::chain_from_env(&pull, context))
        .await?
        .context("cannot load the generator (fetch it with `keel model pull smollm2-135m-instruct`)")?;
    let params =
        Params { max_tokens: args.max_tokens, temperature: args.temperature, seed: args.seed, ..Params::default() };
    // The answer streams to stderr as it is generated (stdout keeps the result).
    let stream: keel_llm::OnText = Box::new(|t| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(t.as_bytes());
        let _ = err.flush();
    });
    let a = keel_llm::answer(&store, Arc::new(chain), &args.question, passages, params, stream).await?;
    eprintln!();
    if json {
        return output::json(&a);
    }
    for (g, e) in &a.completion.failed {
        note(format!("{g} failed, fell back: {e}"));
    }
    println!("{}", a.answer);
    println!();
    if a.citations.is_empty() {
        println!("no citation: the answer shares no content words with the retrieved chunks");
    }
    for c in &a.citations {
        println!("[{}] {}  {} chars {}..{}", c.n, c.doc_id, c.source, c.start, c.end);
    }
    let how =
        if a.completion.cache_hit { "from the response cache".to_owned() } else { a.completion.generator.clone() };
    note(format!(
        "{} of {} chunks in a {}-token prompt (window {}); {} new tokens; {how}; {:.0} ms",
        a.sources.len(),
        a.sources.len() + a.dropped.len(),
        a.prompt_tokens,
        a.context_window,
        a.completion.tokens_out,
        a.completion.latency_ms
    ));
    Ok(())
}
