//! Embedding through the store's cache: a text embedded once by an encoder is never embedded
//! again by it.

use keel_core::{ContentHash, Matrix};
use keel_embed::Encoder;
use keel_store::Store;

use crate::output;

/// How much work the cache saved.
#[derive(Debug, Default, serde::Serialize)]
pub struct EmbedStats {
    pub texts: usize,
    /// Texts whose vector came from the cache.
    pub cached: usize,
    /// Distinct texts embedded now (a repeat of one of them counts in neither).
    pub computed: usize,
}

/// Texts are embedded in chunks; each chunk's vectors are committed to the cache as soon as
/// they exist, so an interrupted run keeps what it computed.
const CHUNK: usize = 1024;

pub async fn embed_cached(
    store: &Store,
    encoder: &Encoder,
    texts: &[&str],
    quiet: bool,
) -> anyhow::Result<(Matrix, EmbedStats)> {
    let dim = encoder.dim();
    let hashes: Vec<ContentHash> = texts.iter().map(|t| ContentHash::of(t.as_bytes())).collect();
    let started = std::time::Instant::now();
    let mut vectors = store.cached_embeddings(encoder.id(), &hashes).await?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), texts = texts.len(), "embedding cache read");
    // A text that occurs several times (a prediction log repeats inputs) is embedded once.
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut copies: Vec<(usize, usize)> = Vec::new();
    let mut missing: Vec<usize> = Vec::new();
    for i in (0..texts.len()).filter(|&i| vectors[i].is_none()) {
        match first.get(hashes[i].as_str()) {
            Some(&j) => copies.push((i, j)),
            None => {
                first.insert(hashes[i].as_str(), i);
                missing.push(i);
            }
        }
    }
    let stats =
        EmbedStats { texts: texts.len(), cached: texts.len() - missing.len() - copies.len(), computed: missing.len() };
    let bar = output::progress(missing.len() as u64, "embedding", quiet || missing.is_empty());
    for chunk in missing.chunks(CHUNK) {
        let chunk_texts: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
        let base = bar.position();
        let computed = tokio::task::block_in_place(|| {
            encoder.embed_with_progress(&chunk_texts, &mut |done| bar.set_position(base + done as u64))
        })?;
        let items: Vec<(ContentHash, &[f32])> =
            chunk.iter().zip(&computed).map(|(&i, v)| (hashes[i].clone(), v.as_slice())).collect();
        store.cache_embeddings(encoder.id(), &items).await?;
        for (&i, v) in chunk.iter().zip(computed) {
            vectors[i] = Some(v);
        }
    }
    bar.finish_and_clear();
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), computed = missing.len(), "missing texts embedded");
    for (i, j) in copies {
        vectors[i] = vectors[j].clone();
    }
    let mut m = Matrix::zeros(texts.len(), dim);
    for (i, v) in vectors.into_iter().enumerate() {
        let v = v.expect("every text is cached or computed");
        anyhow::ensure!(v.len() == dim, "cached vector has {} dimensions, the encoder gives {dim}", v.len());
        m.row_mut(i).copy_from_slice(&v);
    }
    Ok((m, stats))
}
