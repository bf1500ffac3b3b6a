//! `keel serve`: load the encoder and a registered model, then answer HTTP until stopped.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use keel_embed::Encoder;
use keel_server::{AppState, Limits, LoadedModel};

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
            let head = pipeline::load_head(&store, &version)?;
            Some(LoadedModel { version, head })
        }
        None => {
            note("no model is registered yet: serving /v1/embeddings only (train one with `keel quickstart`)");
            None
        }
    };
    let tag = model.as_ref().map(|m| m.version.tag());
    let state = AppState::new(encoder, model, Limits::default());
    let listener = tokio::net::TcpListener::bind(args.addr).await.with_context(|| {
        format!("cannot listen on {}; is another server using it? pick another with --addr", args.addr)
    })?;
    let addr = listener.local_addr()?;
    note(format!("listening on http://{addr} (model {}); Ctrl-C stops", tag.as_deref().unwrap_or("none")));
    keel_server::serve(state, listener, shutdown_signal()).await.context("server failed")?;
    note("stopped");
    Ok(())
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
