//! Retrieval's two shared steps, used by `/v1/search`, `/v1/answer`, `keel search` and
//! `keel ask`: the query's vector (embedded with the encoder the index generation was built
//! with, and refused with both ids named when the encoder at hand is another one) and a hit as a
//! prompt passage.

use keel_index::{Hit, Index, Mode};
use keel_llm::Passage;

use crate::{ApiError, EncoderSlot};

/// Why a query has no vector.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "index generation {generation} was built with encoder {index}, but the encoder at hand is {encoder}: \
         dense and hybrid search need the same encoder (use that encoder, rebuild the index, or search with mode bm25)"
    )]
    EncoderMismatch { generation: u64, index: String, encoder: String },
    #[error("dense and hybrid search need an encoder: {0}")]
    NoEncoder(String),
    #[error("the encoder failed on the query: {0}")]
    Failed(String),
}

/// Every query error is a 503. The encoder mismatch names both ids (what the operator must fix); a
/// load failure or an encoder failure keeps its cause for the log.
impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::EncoderMismatch { .. } => ApiError::unavailable(e.to_string()),
            QueryError::NoEncoder(cause) => {
                ApiError::unavailable("dense and hybrid search need an encoder, and it cannot be loaded")
                    .with_cause(cause)
            }
            QueryError::Failed(cause) => ApiError::unavailable("the encoder failed on the query").with_cause(cause),
        }
    }
}

/// The query's vector for `mode`: none for BM25 (no encoder is loaded); for dense and hybrid,
/// the query embedded by the slot's encoder (loaded if needed), which must be the encoder
/// `index` was built with. Blocks: call it on a blocking thread in the server.
pub fn query_vector(
    index: &Index,
    query: &str,
    mode: Mode,
    encoders: &EncoderSlot,
) -> Result<Option<Vec<f32>>, QueryError> {
    if mode == Mode::Bm25 {
        return Ok(None);
    }
    let encoder = encoders.get_or_load().map_err(QueryError::NoEncoder)?;
    if encoder.id() != index.encoder_id() {
        return Err(QueryError::EncoderMismatch {
            generation: index.generation(),
            index: index.encoder_id().to_owned(),
            encoder: encoder.id().to_owned(),
        });
    }
    let mut vectors = encoder.embed(&[query]).map_err(|e| QueryError::Failed(e.to_string()))?;
    match vectors.len() {
        1 => Ok(vectors.pop()),
        n => Err(QueryError::Failed(format!("{n} vectors for one query"))),
    }
}

/// A retrieved chunk as a prompt passage.
pub fn passage(h: &Hit) -> Passage {
    Passage {
        chunk_id: h.chunk_id.clone(),
        doc_id: h.doc_id.clone(),
        source: h.source.clone(),
        start: h.start_char,
        end: h.end_char,
        text: h.text.clone(),
        score: f64::from(h.score),
    }
}
