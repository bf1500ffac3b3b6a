//! BM25 over chunk texts with tantivy (its default tokenizer: split on non-alphanumerics,
//! lower-case, drop tokens over 40 bytes; no stemming, no stop words; k1 = 1.2, b = 0.75).
//!
//! A query is the disjunction of its terms, so any query string is valid input (no query
//! syntax to escape). Metadata filters are exact `field=value` terms required beside the text
//! and scored zero, so they restrict without changing BM25 scores.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::IndexError;

const WRITER_MEMORY: usize = 64 * 1024 * 1024;

/// One BM25 index (one per index generation).
pub struct Bm25 {
    index: Index,
    reader: IndexReader,
    ord: Field,
    text: Field,
    meta: Field,
}

impl std::fmt::Debug for Bm25 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25").finish_non_exhaustive()
    }
}

fn schema() -> (Schema, Field, Field, Field) {
    let mut b = Schema::builder();
    let ord = b.add_u64_field("ord", STORED);
    let text = b.add_text_field("text", TEXT);
    let meta = b.add_text_field("meta", STRING);
    (b.build(), ord, text, meta)
}

fn meta_term(field: &str, value: &str) -> String {
    format!("{field}\u{1f}{value}")
}

/// Writes a new BM25 index into the empty folder `dir`: one tantivy document per chunk,
/// `(ordinal, text, metadata)`.
pub fn build<'a>(
    dir: &Path,
    chunks: impl Iterator<Item = (u64, &'a str, &'a BTreeMap<String, String>)>,
) -> Result<(), IndexError> {
    let (schema, ord, text, meta) = schema();
    let index = Index::create_in_dir(dir, schema)?;
    // One thread: segments (and so scores' statistics) do not depend on scheduling.
    let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY)?;
    for (o, t, m) in chunks {
        let mut d = TantivyDocument::default();
        d.add_u64(ord, o);
        d.add_text(text, t);
        for (k, v) in m {
            d.add_text(meta, meta_term(k, v));
        }
        writer.add_document(d)?;
    }
    writer.commit()?;
    writer.wait_merging_threads()?;
    Ok(())
}

impl Bm25 {
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        let index = Index::open_in_dir(dir)?;
        let (_, ord, text, meta) = schema();
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Self { index, reader, ord, text, meta })
    }

    /// The analysed terms of `query`, deduplicated (by hash: linear in the query's length, so a
    /// 2 MB query of distinct words costs milliseconds, not the minutes of a pairwise scan), in
    /// order of first appearance.
    pub fn terms(&self, query: &str) -> Result<Vec<String>, IndexError> {
        let mut analyzer = self.index.tokenizer_for_field(self.text)?;
        let mut stream = analyzer.token_stream(query);
        let mut seen: HashSet<String> = HashSet::new();
        let mut out: Vec<String> = Vec::new();
        while stream.advance() {
            let t = &stream.token().text;
            if !seen.contains(t.as_str()) {
                seen.insert(t.clone());
                out.push(t.clone());
            }
        }
        Ok(out)
    }

    /// Top `k` chunks as `(ordinal, BM25 score)`, best first, among chunks whose metadata has
    /// every `(field, value)` of `filter`.
    pub fn search(&self, query: &str, k: usize, filter: &[(String, String)]) -> Result<Vec<(u64, f32)>, IndexError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        // A term no chunk holds adds nothing to any score; leaving it out keeps the query no
        // larger than the index's vocabulary, however long the query text.
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in self.terms(query)? {
            let term = Term::from_field_text(self.text, &t);
            if searcher.doc_freq(&term)? > 0 {
                should.push((Occur::Should, Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))));
            }
        }
        if should.is_empty() {
            return Ok(Vec::new());
        }
        let text_query: Box<dyn Query> = Box::new(BooleanQuery::new(should));
        let query: Box<dyn Query> = if filter.is_empty() {
            text_query
        } else {
            let mut clauses = vec![(Occur::Must, text_query)];
            for (f, v) in filter {
                let term = TermQuery::new(Term::from_field_text(self.meta, &meta_term(f, v)), IndexRecordOption::Basic);
                clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(Box::new(term), 0.0))));
            }
            Box::new(BooleanQuery::new(clauses))
        };
        let top = searcher.search(&query, &TopDocs::with_limit(k).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher.doc(addr)?;
            let o = d
                .get_first(self.ord)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| IndexError::Invalid("a BM25 document has no chunk ordinal".into()))?;
            out.push((o, score));
        }
        Ok(out)
    }
}
