//! Keel training: classification heads on frozen embeddings.
