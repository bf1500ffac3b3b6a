//! `keel serve`: load the encoder and a registered model, then answer HTTP until stopped.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use keel_core::ContentHash;
use keel_embed::Encoder;
use keel_server::{AppState, Batching, LoadedModel, Options};
use keel_store::{ModelVersion, Store};
use keel_train::{Head, InputKind};

use crate::cli::ServeArgs;
use crate::context::{load_encoder, open_store};
use crate::output::note;
use crate::pipeline;

pub async fn run(home: &Path, args: ServeArgs) -> anyhow::Result<()> {
    run_with(home, args, None).await
}

pub async fn run_with(home: &Path, args: ServeArgs, encoder: Option<Arc<Encoder>>) -> anyhow::Result<()> {
    let store = open_store(home).await?;
    let encoder = match encoder {
        Some(e) => e,
        None => load_encoder(&args.encoder)?.1,
    };
    let spec = match &args.model {
        Some(s) => Some(s.clone()),
        None => match store.model_names().await?.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            many => bail!("several models are registered ({}); choose one with --model NAME", many.join(", ")),
        },
    };
    let model = match spec {
        Some(spec) => {
            let version = store.resolve(&spec).await?;
            if version.encoder_id != encoder.id() {
                bail!(
                    "{} was trained on embeddings from {}, but this server loads {}; pass the same --encoder/--model-dir",
                    version.tag(),
                    version.encoder_id,
                    encoder.id()
                );
            }
            let head = pipeline::load_head(&store, &version).await?;
            let fallback = load_fallback(&store, &version).await;
            Some(LoadedModel { version, head, fallback })
        }
        None => {
            note("no model is registered yet: serving /v1/embeddings only (train one with `keel quickstart`)");
            None
        }
    };
    let tag = model.as_ref().map(|m| m.version.tag());
    let batching = Batching { max_batch: args.encoder.batch_size.max(1), ..Batching::default() };
    let options = Options { batching, store: Some(store), ..Options::default() };
    let state = AppState::with_options(encoder, model, options);
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| {
        format!("cannot listen on {}; is another server using it? pick another with --addr", args.addr)
    })?;
    let addr = listener.local_addr()?;
    note(format!("listening on http://{addr} (model {}); Ctrl-C stops", tag.as_deref().unwrap_or("none")));
    keel_server::serve(state, listener, shutdown_signal()).await.context("server failed")?;
    note("stopped");
    Ok(())
}

/// The version's n-gram fallback head, if it has one that loads. Serving goes on without it: the
/// server then answers 503 instead of a degraded answer when the encoder fails.
async fn load_fallback(store: &Store, version: &ModelVersion) -> Option<Head> {
    let Some(hash) = version.metrics["artifacts"]["fallback"].as_str() else {
        note(format!("{} has no fallback head: classify answers 503 if the encoder fails", version.tag()));
        return None;
    };
    let loaded = async {
        let hash = ContentHash::parse(hash).context("malformed fallback artifact hash")?;
        let head = Head::from_bytes(&store.read_artifact(&hash).await?)?;
        if head.input_kind() != InputKind::Text {
            bail!("it reads {:?}, not raw text", head.input_kind());
        }
        Ok::<_, anyhow::Error>(head)
    }
    .await;
    match loaded {
        Ok(head) => Some(head),
        Err(e) => {
            note(format!("{}: cannot load the fallback head ({e:#}); serving without one", version.tag()));
            None
        }
    }
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
