//! Keel embedding: model sources, tokenizer, BERT encoder, pooling, batching.
