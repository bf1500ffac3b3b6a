//! Safe rollouts: the server follows the registry. A follower task resolves the followed spec
//! (`NAME` = its production alias, or `NAME@ALIAS`) every `poll_interval`, or at once on
//! `POST /v1/admin/reload`; when the alias points at another version it loads that version
//! completely (head, fallback head, and for a head that reads embeddings the encoder and its
//! check) and only then swaps one `Arc`, so a request
//! answers wholly from the old version or wholly from the new one and none fails. A version that
//! does not load leaves the old one serving and is counted (`keel_model_reload_failures_total`).
//!
//! A challenger (another spec, e.g. `sentiment@canary`) is followed the same way, in one of two
//! modes: canary (a configured share of classify requests is answered by the challenger, chosen
//! by a counter so the share is exact) or shadow (the challenger scores every request from the
//! same embeddings off the request path and its predictions go to the log under its own tag; it
//! never answers).

use std::sync::Arc;
use std::time::Duration;

use keel_core::ContentHash;
use keel_store::{ModelVersion, Store};
use keel_train::{Head, InputKind, LogisticRegression};

use crate::{ApiError, EncoderSlot, LoadedModel};

/// How the server follows the registry.
#[derive(Clone, Debug)]
pub struct Rollout {
    /// The spec the primary model follows (`NAME` or `NAME@ALIAS`); `None`, or a pinned
    /// `NAME@VERSION`, keeps the model the server started with.
    pub follow: Option<String>,
    /// How often the follower looks at the registry.
    pub poll_interval: Duration,
    /// A second model version answering a share of traffic or scoring in the shadow.
    pub challenger: Option<Challenger>,
}

impl Default for Rollout {
    fn default() -> Self {
        Self { follow: None, poll_interval: Duration::from_secs(1), challenger: None }
    }
}

/// The challenger: its spec (followed like the primary's) and what it does.
#[derive(Clone, Debug)]
pub struct Challenger {
    pub spec: String,
    pub mode: ChallengerMode,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ChallengerMode {
    /// This share (0..=1) of classify requests is answered by the challenger.
    Canary { share: f64 },
    /// The challenger scores every classify request and logs; it never answers.
    Shadow,
}

impl ChallengerMode {
    pub(crate) fn role(self) -> &'static str {
        match self {
            ChallengerMode::Canary { .. } => "canary",
            ChallengerMode::Shadow => "shadow",
        }
    }
}

/// Whether a spec names a fixed version (`NAME@3`), which there is nothing to follow for.
pub(crate) fn is_pinned(spec: &str) -> bool {
    spec.split_once('@').is_some_and(|(_, w)| w.parse::<i64>().is_ok())
}

/// Resolves `spec` in the registry and loads that version: its head, and its n-gram fallback
/// head when it has one that loads. A head that reads embeddings needs the encoder (loaded from
/// `encoders` if it is not yet): a version trained on another encoder's embeddings is refused
/// (409), and one that needs an encoder the server cannot load answers 503. A head that reads
/// text needs no encoder and loads none.
pub async fn load_model(store: &Store, spec: &str, encoders: &EncoderSlot) -> Result<LoadedModel, ApiError> {
    let version = store.resolve(spec).await?;
    load_version(store, version, encoders).await
}

pub(crate) async fn load_version(
    store: &Store,
    version: ModelVersion,
    encoders: &EncoderSlot,
) -> Result<LoadedModel, ApiError> {
    let head = load_head(store, &version).await?;
    let reads_embeddings =
        matches!(head.input_kind(), InputKind::Embedding { .. } | InputKind::TextAndEmbedding { .. });
    let fine_tuned = keel_eval::VersionMetrics::parse(&version.metrics).ok().and_then(|m| m.fine_tune);
    let mut own = None;
    if let (true, Some(record)) = (reads_embeddings, fine_tuned) {
        let encoder = encoders.for_version(&record).await.map_err(|e| no_encoder(&version, e))?;
        own = Some(encoder);
    } else if reads_embeddings {
        let encoder = encoders.load().await.map_err(|e| no_encoder(&version, e))?;
        if version.encoder_id != encoder.id() {
            return Err(ApiError::conflict(format!(
                "{} was trained on embeddings from {}, but this server runs {}",
                version.tag(),
                version.encoder_id,
                encoder.id()
            )));
        }
    }
    let fallback = load_fallback(store, &version).await;
    Ok(LoadedModel { version, head, fallback, encoder: own })
}

/// 503: `version` reads embeddings from an encoder that cannot be loaded (the cause is logged).
fn no_encoder(version: &ModelVersion, cause: String) -> ApiError {
    ApiError::unavailable(format!(
        "{} reads embeddings from {}, but that encoder cannot be loaded",
        version.tag(),
        version.encoder_id
    ))
    .with_cause(cause)
}

async fn load_head(store: &Store, version: &ModelVersion) -> Result<Head, ApiError> {
    let hash = ContentHash::parse(&version.head_artifact)
        .ok_or_else(|| ApiError::internal(format!("{}: malformed head artifact hash", version.tag())))?;
    let bytes = store.read_artifact(&hash).await?;
    Head::from_bytes(&bytes)
        .or_else(|e| LogisticRegression::from_json_bytes(&bytes).map(Head::Logistic).map_err(|_| e))
        .map_err(|e| ApiError::internal(format!("cannot load the head of {}: {e}", version.tag())))
}

/// The version's n-gram fallback head, if it has one that loads. Serving goes on without it: the
/// server then answers 503 instead of a degraded answer when the encoder fails.
async fn load_fallback(store: &Store, version: &ModelVersion) -> Option<Head> {
    let artifacts = keel_eval::VersionArtifacts::recorded_in(&version.metrics);
    let Some(hash) = artifacts.fallback.as_deref() else {
        tracing::warn!(model = %version.tag(), "no fallback head: classify answers 503 if the encoder fails");
        return None;
    };
    let loaded = async {
        let hash = ContentHash::parse(hash).ok_or_else(|| "malformed artifact hash".to_owned())?;
        let bytes = store.read_artifact(&hash).await.map_err(|e| e.to_string())?;
        let head = Head::from_bytes(&bytes).map_err(|e| e.to_string())?;
        if head.input_kind() != InputKind::Text {
            return Err(format!("it reads {:?}, not raw text", head.input_kind()));
        }
        Ok(head)
    }
    .await;
    match loaded {
        Ok(head) => Some(head),
        Err(e) => {
            tracing::warn!(model = %version.tag(), error = %e, "cannot load the fallback head; serving without one");
            None
        }
    }
}

/// What one look at the registry found and did.
#[derive(Debug, Default)]
pub(crate) struct Synced {
    pub changed: bool,
    pub errors: Vec<String>,
}

/// Brings `current` in line with the version `spec` resolves to. `Ok(Some(model))` when a
/// different version was loaded and should be swapped in.
pub(crate) async fn resolve_change(
    store: &Store,
    spec: &str,
    current: Option<&Arc<LoadedModel>>,
    encoders: &EncoderSlot,
) -> Result<Option<LoadedModel>, ApiError> {
    let version = store.resolve(spec).await?;
    if current.is_some_and(|c| c.version.name == version.name && c.version.version == version.version) {
        return Ok(None);
    }
    load_version(store, version, encoders).await.map(Some)
}
