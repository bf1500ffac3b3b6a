//! `keel ask QUESTION`: retrieve chunks from the index, then answer from them with citations:
//! extracted, or generated and checked (keel-llm's `reply` has the rule).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use keel_index::{Index, Mode, Query};
use keel_llm::{Ask, Embedder, ExtractOptions, Params, Passage, Reply};
use keel_server::EncoderSlot;

use super::serve::lazy_encoder;
use crate::cli::AskArgs;
use crate::context::open_store;
use crate::output::{self, note};

/// The encoder as keel-llm's sentence embedder (loaded on first use).
pub(crate) fn embedder(slot: &EncoderSlot) -> Embedder {
    let slot = slot.clone();
    Arc::new(move |texts: &[&str]| {
        let encoder = slot.get_or_load()?;
        encoder.embed(texts).map_err(|e| e.to_string())
    })
}

pub async fn run(home: &Path, json: bool, args: AskArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.question.trim().is_empty(), "the question is empty");
    let mode = crate::config::answer_mode(args.mode.as_deref(), &args.config)?;
    let dir = args.index_dir.clone().unwrap_or_else(|| keel_index::default_dir(home));
    let index = Index::open(&dir)
        .with_context(|| format!("no index at {}; build one with `keel index PATH`", dir.display()))?;
    let retrieval = Mode::parse(&args.retrieval).context("--retrieval must be dense, bm25 or hybrid")?;
    let encoders = lazy_encoder(&args.encoder);
    let vector = keel_server::query_vector(&index, &args.question, retrieval, &encoders)?;
    let hits = index.search(&Query::new(&args.question, vector.as_deref(), args.k, retrieval))?;
    let passages: Vec<Passage> = hits.iter().map(keel_server::passage).collect();
    // Sentence similarity needs the encoder the index was built with; without it, word overlap.
    let embed = match encoders.get_or_load() {
        Ok(e) if e.id() == index.encoder_id() => Some(embedder(&encoders)),
        Ok(e) => {
            note(format!(
                "sentence similarity off: the encoder at hand is {}, the index's is {}",
                e.id(),
                index.encoder_id()
            ));
            None
        }
        Err(e) => {
            note(format!("sentence similarity off (word overlap only): {e}"));
            None
        }
    };

    let store = open_store(home).await?;
    let capability = keel_llm::capability_from_env();
    let (generate, _) = keel_llm::plan(mode, &capability);
    let chain = if generate {
        let (pull, context) = (keel_embed::PullOptions::from_env(), args.context);
        let chain = tokio::task::spawn_blocking(move || keel_llm::chain_from_env(&pull, context)).await?.context(
            "cannot load the generator (fetch it with `keel model pull smollm2-135m-instruct`, or ask with --mode extractive)",
        )?;
        Some(Arc::new(chain))
    } else {
        None
    };
    let params =
        Params { max_tokens: args.max_tokens, temperature: args.temperature, seed: args.seed, ..Params::default() };
    // A generated draft streams to stderr, marked as one: it is shown as the answer only after
    // the check (stdout keeps the result).
    let mut started = false;
    let stream: keel_llm::OnText = Box::new(move |t| {
        let mut err = std::io::stderr().lock();
        if !started {
            let _ = err.write_all(b"draft (checked against the documents before it is shown): ");
            started = true;
        }
        let _ = err.write_all(t.as_bytes());
        let _ = err.flush();
    });
    let ask = Ask {
        question: args.question.clone(),
        passages,
        mode,
        capability,
        params,
        extract: ExtractOptions::default(),
        embed,
    };
    let r = keel_llm::reply(&store, chain, ask, stream).await?;
    if r.generation.is_some() {
        eprintln!();
    }
    if json {
        return output::json(&r);
    }
    print_reply(&r);
    Ok(())
}

fn print_reply(r: &Reply) {
    if let Some(g) = &r.generation {
        for (name, e) in &g.completion.failed {
            note(format!("{name} failed, fell back: {e}"));
        }
    }
    if let Some(n) = &r.notice {
        println!("Note: {n}.");
        println!();
    }
    if r.answer.is_empty() {
        println!("no answer: the retrieved chunks hold no sentence to show");
    } else {
        println!("{}", r.answer);
    }
    println!();
    for c in &r.citations {
        println!("[{}] {}  {} chars {}..{}", c.n, c.doc_id, c.source, c.start, c.end);
    }
    let how = match &r.generation {
        Some(g) if g.completion.cache_hit => "generation from the response cache".to_owned(),
        Some(g) => format!(
            "{} new tokens from {} in a {}-token prompt",
            g.completion.tokens_out, g.completion.generator, g.prompt_tokens
        ),
        None => "no generation".to_owned(),
    };
    note(format!("{}: {}; grounded {:.2}; {how}; {:.0} ms", r.decision.as_str(), r.reason, r.grounded, r.latency_ms));
}
