//! `keel serve`: load a registered model (and the encoder, only when a served version reads
//! embeddings), then answer HTTP until stopped, following the registry (promotions and
//! rollbacks swap the model without a failed request). A server whose versions all read text
//! loads the encoder only if `/v1/embeddings` or dense search asks for it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use keel_embed::Encoder;
use keel_server::{AppState, Batching, Challenger, ChallengerMode, Embed, EncoderSlot, Limits, Options, Rollout};

use crate::cli::{EncoderArgs, ServeArgs};
use crate::context::{load_encoder, load_recorded, open_store, pull_encoder};
use crate::output::note;

pub async fn run(home: &Path, args: ServeArgs) -> anyhow::Result<()> {
    run_with(home, args, None).await
}

/// The encoder these flags name, loaded (fetched on first use) when something first needs it.
pub(crate) fn lazy_encoder(args: &EncoderArgs) -> EncoderSlot {
    let section = args.section();
    EncoderSlot::lazy(move || {
        load_encoder(&section, Path::new("")).map(|(_, e)| e as Arc<dyn Embed>).map_err(|e| format!("{e:#}"))
    })
}

/// `slot`, able to load the fine-tuned encoders versions record: the base model (fetched on
/// first use) with the version's adapter from `store` merged in.
fn with_fine_tuned(slot: EncoderSlot, args: &EncoderArgs, store: &keel_store::Store) -> EncoderSlot {
    let (section, store) = (args.section(), store.clone());
    slot.with_adapted(move |record| {
        let (section, store) = (section.clone(), store.clone());
        Box::pin(async move {
            let load = async {
                let installed = tokio::task::block_in_place(|| pull_encoder(&section, Path::new("")))?;
                load_recorded(&store, &section, &installed, &record).await
            };
            load.await.map(|e| e as Arc<dyn Embed>).map_err(|e| format!("{e:#}"))
        })
    })
}

pub async fn run_with(home: &Path, args: ServeArgs, encoder: Option<Arc<Encoder>>) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let encoders = match encoder {
        Some(e) => EncoderSlot::from(e),
        None => lazy_encoder(&args.encoder),
    };
    let encoders = with_fine_tuned(encoders, &args.encoder, &store);
    let spec = match &args.model {
        Some(s) => Some(s.clone()),
        None => match store.model_names().await?.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => bail!("several models are registered ({}); choose one with --model NAME", many.join(", ")),
        },
    };
    let model = match &spec {
        Some(spec) => Some(keel_server::load_model(&store, spec, &encoders).await.with_context(|| {
            format!("cannot serve {spec}; pass the same --encoder/--model-dir it was trained with")
        })?),
        None => {
            note("no model is registered yet: serving /v1/embeddings only (train one with `keel quickstart`)");
            None
        }
    };
    let ops = &args.ops;
    let poll_ms = ops.poll_ms.unwrap_or(1000);
    let challenger = challenger_of(ops)?;
    let rollout = Rollout {
        follow: spec.clone().filter(|_| poll_ms > 0),
        // With polling off, the follower only looks when asked (admin reload, promote, rollback).
        poll_interval: if poll_ms > 0 { Duration::from_millis(poll_ms) } else { Duration::from_secs(365 * 86_400) },
        challenger: challenger.clone(),
    };
    let mut limits = Limits::default();
    let mut batching = Batching { max_batch: args.encoder.batch_size.max(1), ..Batching::default() };
    if let Some(ms) = ops.deadline_ms {
        limits.request_deadline = Duration::from_millis(ms.max(1));
        // The encoder gets two thirds, so classify can still answer from the fallback head.
        batching.deadline = limits.request_deadline * 2 / 3;
    }
    if let Some(n) = ops.queue_capacity {
        batching.queue_capacity = n.max(1);
    }
    if let Some(n) = ops.max_body_bytes {
        limits.max_body_bytes = n;
    }
    let admin = ops.admin_token.as_deref().is_some_and(|t| !t.is_empty());
    let allowed_hosts = allowed_hosts(&args);
    let options = Options {
        limits: limits.clone(),
        batching,
        store: Some(store.clone()),
        rollout,
        admin_token: ops.admin_token.clone(),
        allowed_hosts,
        ..Options::default()
    };
    let state = AppState::with_options(encoders.clone(), model, options);
    let extension = documents_extension(home, &args, &store, encoders, &limits).await;
    if challenger.is_some() {
        let (_, errors) = state.reload().await;
        for e in errors {
            note(format!("challenger not loaded: {e}"));
        }
    }
    match state.encoder() {
        Some(e) => note(format!("encoder {}", e.id())),
        None => {
            note("no encoder loaded: the served model reads text; /v1/embeddings and dense search load it on first use")
        }
    }
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| {
        format!("cannot listen on {}; is another server using it? pick another with --addr", args.addr)
    })?;
    let addr = listener.local_addr()?;
    let tag = state.model().map(|m| m.version.tag());
    let mut extra = Vec::new();
    if let (Some(c), Some(cfg)) = (state.challenger(), &challenger) {
        extra.push(match cfg.mode {
            ChallengerMode::Canary { share } => format!("canary {} at {share}", c.version.tag()),
            ChallengerMode::Shadow => format!("shadow {}", c.version.tag()),
        });
    }
    if admin {
        extra.push("admin routes on".into());
    }
    let extra = if extra.is_empty() { String::new() } else { format!(", {}", extra.join(", ")) };
    note(format!(
        "listening on http://{addr} (model {}{extra}); Ctrl-C or SIGTERM stops after answering what is in flight",
        tag.as_deref().unwrap_or("none")
    ));
    let app = keel_server::router_with(state.clone(), extension);
    keel_server::serve_app(state, app, listener, shutdown_signal()).await.context("server failed")?;
    note("stopped");
    Ok(())
}

/// The Host allow-list besides loopback (always allowed): the address bound to and every
/// `--allow-host`.
fn allowed_hosts(args: &ServeArgs) -> Vec<String> {
    let mut hosts = args.ops.allow_host.clone();
    if !args.addr.ip().is_unspecified() {
        hosts.push(args.addr.ip().to_string());
    } else if hosts.is_empty() {
        note(format!(
            "listening on {}: requests must name a loopback host; allow others with --allow-host NAME (or '*')",
            args.addr
        ));
    }
    hosts
}

/// The `--canary` or `--shadow` challenger, if one is asked for.
fn challenger_of(ops: &crate::cli::ServeOps) -> anyhow::Result<Option<Challenger>> {
    Ok(match (&ops.canary, &ops.shadow) {
        (Some(_), Some(_)) => bail!("choose --canary or --shadow, not both"),
        (Some(spec), None) => {
            let share = ops.canary_share.unwrap_or(0.1);
            if !(0.0..=1.0).contains(&share) {
                bail!("--canary-share must be between 0 and 1, not {share}");
            }
            Some(Challenger { spec: spec.clone(), mode: ChallengerMode::Canary { share } })
        }
        (None, Some(spec)) => Some(Challenger { spec: spec.clone(), mode: ChallengerMode::Shadow }),
        (None, None) => None,
    })
}

/// `/v1/search` and `/v1/answer` over the document index, when `keel index` has built one.
/// The generator for answers loads from the model cache (fetched once) on the first request
/// that generates; when it cannot load, answers are extractive and the reason is logged.
async fn documents_extension(
    home: &Path,
    args: &ServeArgs,
    store: &keel_store::Store,
    encoders: EncoderSlot,
    limits: &Limits,
) -> keel_server::Extension {
    let dir = args.index.clone().unwrap_or_else(|| keel_index::default_dir(home));
    if !dir.exists() {
        return keel_server::Extension::default();
    }
    let search = match keel_server::SearchService::open(&dir, encoders.clone()) {
        Ok(s) => s,
        Err(e) => {
            note(format!("not serving /v1/search or /v1/answer: {e}"));
            return keel_server::Extension::default();
        }
    };
    let mut extension = keel_server::search_extension(search.with_limits(limits.clone()));
    if args.no_answer {
        note(format!("serving /v1/search over {}", dir.display()));
        return extension;
    }
    let mode = match crate::config::answer_mode(args.answer_mode.as_deref(), Path::new("keel.toml")) {
        Ok(m) => m,
        Err(e) => {
            note(format!("serving /v1/search only: {e:#}"));
            return extension;
        }
    };
    // The generator loads on the first request that generates: extractive answers need none.
    let pull = keel_embed::PullOptions::from_env();
    let load: keel_server::LoadChain = Arc::new(move || {
        keel_llm::chain_from_env(&pull, keel_llm::DEFAULT_LOCAL_WINDOW)
            .map_err(|e| format!("{e}; fetch the local model with `keel model pull smollm2-135m-instruct`"))
    });
    match keel_server::AnswerService::open(&dir, encoders, Some(load), store.clone()) {
        Ok(answer) => {
            let answer = answer.with_mode(mode, keel_llm::capability_from_env()).with_limits(limits.clone());
            extension = extension.merge(keel_server::answer_extension(answer));
            note(format!("serving /v1/search and /v1/answer (answer mode {}) over {}", mode.as_str(), dir.display()));
        }
        Err(e) => note(format!("not serving /v1/answer: {e}")),
    }
    extension
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
