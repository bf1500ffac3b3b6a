//! The on-disk index and search over it.
//!
//! Layout of an index folder (by default `<home>/index/default`):
//!
//! ```text
//! CURRENT              "gen-000007": the generation readers open
//! gen-000007/
//!   manifest.json      encoder, chunking, graph parameters, documents (id, source, content
//!                      hash, metadata) and chunks (document, char offsets, text)
//!   vectors.hnsw       chunk vectors (row = chunk ordinal) and the HNSW graph
//!   bm25/              tantivy index of the chunk texts and metadata terms
//! ```
//!
//! A change writes a complete new generation (each file fsynced), then replaces `CURRENT`
//! (temp file, fsync, rename, fsync of the folder) and only then deletes older generations. A
//! crash at any point leaves the previous generation current; readers never see a half-written
//! index. Updating is incremental where it costs: [`Index::plan`] compares each document's
//! content hash with the current generation and asks to embed only the chunks of new and
//! changed documents; unchanged documents keep their chunks and vectors. When nothing changed,
//! nothing is written at all.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use keel_core::ContentHash;
use serde::{Deserialize, Serialize};

use crate::IndexError;
use crate::bm25::{self, Bm25};
use crate::chunk::{ChunkSpan, Chunker};
use crate::document::Document;
use crate::hnsw::{Hnsw, HnswParams};

/// Reciprocal-rank fusion constant: a hit at rank r (1-based) in a list adds 1 / (k + r).
/// 60 is the constant of the original RRF paper (Cormack, Clarke & Büttcher, SIGIR 2009),
/// chosen there on held-out data and robust across collections without tuning; a larger k
/// flattens the advantage of the top ranks.
pub const DEFAULT_RRF_K: f32 = 60.0;

const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const VECTORS: &str = "vectors.hnsw";
const BM25_DIR: &str = "bm25";
const CURRENT: &str = "CURRENT";

/// The default index folder of a project store.
pub fn default_dir(home: &Path) -> PathBuf {
    home.join("index").join("default")
}

/// How documents are cut and indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexOptions {
    /// Tokens per chunk (without `[CLS]`/`[SEP]`); 240 leaves room inside MiniLM's 256.
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks, so a sentence cut at a boundary is whole in one.
    pub overlap: usize,
    pub hnsw: HnswParams,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self { chunk_tokens: 240, overlap: 32, hnsw: HnswParams::default() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DocEntry {
    id: String,
    source: String,
    content_hash: ContentHash,
    metadata: BTreeMap<String, String>,
    first_chunk: usize,
    n_chunks: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChunkEntry {
    doc: usize,
    start_char: usize,
    end_char: usize,
    text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    generation: u64,
    encoder_id: String,
    dim: usize,
    chunk_tokens: usize,
    overlap: usize,
    hnsw: HnswParams,
    docs: Vec<DocEntry>,
    chunks: Vec<ChunkEntry>,
}

/// Which retriever answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Cosine similarity of embeddings, through the HNSW graph.
    Dense,
    /// BM25 over the chunk texts.
    Bm25,
    /// Both, fused by reciprocal rank.
    #[default]
    Hybrid,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "dense" => Some(Mode::Dense),
            "bm25" => Some(Mode::Bm25),
            "hybrid" => Some(Mode::Hybrid),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Bm25 => "bm25",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// Metadata conditions, all of which a hit's document must meet (`field = value`, exact).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter(pub Vec<(String, String)>);

impl Filter {
    /// Parses `field=value`.
    pub fn parse_condition(s: &str) -> Result<(String, String), IndexError> {
        let (f, v) =
            s.split_once('=').ok_or_else(|| IndexError::Invalid(format!("filter {s:?} is not field=value")))?;
        if f.trim().is_empty() {
            return Err(IndexError::Invalid(format!("filter {s:?} names no field")));
        }
        Ok((f.trim().to_owned(), v.to_owned()))
    }

    pub fn matches(&self, metadata: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|(f, v)| metadata.get(f) == Some(v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A search request. `vector` (the query embedded by the index's encoder, unit length) is
/// needed for dense and hybrid modes; `text` for BM25 and hybrid.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub text: &'a str,
    pub vector: Option<&'a [f32]>,
    pub k: usize,
    pub mode: Mode,
    pub filter: Filter,
    /// RRF constant ([`DEFAULT_RRF_K`]).
    pub rrf_k: f32,
    /// HNSW candidate list; `None`: the index's default.
    pub ef_search: Option<usize>,
    /// How deep each list goes before fusion; at least `k`.
    pub fusion_depth: usize,
}

impl<'a> Query<'a> {
    pub fn new(text: &'a str, vector: Option<&'a [f32]>, k: usize, mode: Mode) -> Self {
        Self {
            text,
            vector,
            k,
            mode,
            filter: Filter::default(),
            rrf_k: DEFAULT_RRF_K,
            ef_search: None,
            fusion_depth: 100,
        }
    }

    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }
}

/// One search result: a chunk, where it comes from, and why it ranked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// `doc_id:chunk`, stable while the document is unchanged.
    pub chunk_id: String,
    pub doc_id: String,
    /// Position of the chunk in its document (0-based).
    pub chunk: usize,
    /// The file the document came from.
    pub source: String,
    /// Char offsets of the chunk in the document text.
    pub start_char: usize,
    pub end_char: usize,
    pub text: String,
    /// Cosine (dense), BM25 score (bm25) or RRF score (hybrid).
    pub score: f32,
    /// 1-based rank in the dense and BM25 lists (hybrid shows both; a single mode its own).
    pub dense_rank: Option<usize>,
    pub bm25_rank: Option<usize>,
    pub metadata: BTreeMap<String, String>,
}

/// What an update did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexReport {
    pub generation: u64,
    /// False when nothing changed and nothing was written.
    pub written: bool,
    pub documents: usize,
    pub chunks: usize,
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// Chunks embedded for this update (new and changed documents only).
    pub chunks_embedded: usize,
    /// Later documents with an id seen before, not indexed.
    pub duplicate_ids: Vec<String>,
}

enum PlanDoc {
    Keep(usize),
    Fresh { doc: Document, hash: ContentHash, chunks: Vec<ChunkSpan> },
}

/// An update worked out but not yet written: embed [`Plan::texts_to_embed`] (in order), then
/// [`Plan::apply`].
pub struct Plan {
    dir: PathBuf,
    prev: Option<Index>,
    reuse_vectors: bool,
    encoder_id: String,
    opts: IndexOptions,
    docs: Vec<PlanDoc>,
    report: IndexReport,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("dir", &self.dir).field("report", &self.report).finish_non_exhaustive()
    }
}

impl Plan {
    /// Chunk texts that need vectors, in the order [`Plan::apply`] expects them.
    pub fn texts_to_embed(&self) -> Vec<&str> {
        self.docs
            .iter()
            .flat_map(|d| match d {
                PlanDoc::Fresh { chunks, .. } => chunks.iter().map(|c| c.text.as_str()).collect(),
                PlanDoc::Keep(_) => Vec::new(),
            })
            .collect()
    }

    /// The counts so far (added, changed, unchanged, removed).
    pub fn report(&self) -> &IndexReport {
        &self.report
    }

    /// True when applying would write nothing: same documents, same settings.
    pub fn is_noop(&self) -> bool {
        let r = &self.report;
        self.prev.as_ref().is_some_and(|p| p.manifest.hnsw == self.opts.hnsw)
            && self.reuse_vectors
            && r.added == 0
            && r.changed == 0
            && r.removed == 0
    }

    /// Writes the new generation with `vectors` (one per [`Plan::texts_to_embed`] text).
    pub fn apply(self, vectors: Vec<Vec<f32>>) -> Result<IndexReport, IndexError> {
        let expected = self.texts_to_embed().len();
        if vectors.len() != expected {
            return Err(IndexError::Invalid(format!("{} vectors for {expected} chunks", vectors.len())));
        }
        let mut report = self.report.clone();
        report.chunks_embedded = expected;
        if self.is_noop() {
            let prev = self.prev.as_ref().map(|p| &p.manifest);
            report.generation = prev.map_or(0, |m| m.generation);
            report.chunks = prev.map_or(0, |m| m.chunks.len());
            return Ok(report);
        }
        let dim = match (vectors.first(), &self.prev) {
            (Some(v), _) => v.len(),
            (None, Some(p)) => p.manifest.dim,
            (None, None) => 0,
        };
        if vectors.iter().any(|v| v.len() != dim) {
            return Err(IndexError::Invalid("vectors of different lengths".into()));
        }
        let mut docs = Vec::with_capacity(self.docs.len());
        let mut chunks = Vec::new();
        let mut rows: Vec<Vec<f32>> = Vec::new();
        let mut fresh = vectors.into_iter();
        for d in self.docs {
            let first_chunk = chunks.len();
            match d {
                PlanDoc::Keep(i) => {
                    let p = self.prev.as_ref().ok_or_else(|| IndexError::Invalid("no previous index".into()))?;
                    let old = &p.manifest.docs[i];
                    for c in old.first_chunk..old.first_chunk + old.n_chunks {
                        let e = &p.manifest.chunks[c];
                        chunks.push(ChunkEntry { doc: docs.len(), ..e.clone() });
                        rows.push(p.hnsw.vector(c as u32).to_vec());
                    }
                    docs.push(DocEntry { first_chunk, ..old.clone() });
                }
                PlanDoc::Fresh { doc, hash, chunks: spans } => {
                    let n_chunks = spans.len();
                    for s in spans {
                        chunks.push(ChunkEntry {
                            doc: docs.len(),
                            start_char: s.start_char,
                            end_char: s.end_char,
                            text: s.text,
                        });
                        rows.push(fresh.next().ok_or_else(|| IndexError::Invalid("too few vectors".into()))?);
                    }
                    docs.push(DocEntry {
                        id: doc.id,
                        source: doc.source,
                        content_hash: hash,
                        metadata: doc.metadata,
                        first_chunk,
                        n_chunks,
                    });
                }
            }
        }
        let generation = next_generation(&self.dir)?;
        let manifest = Manifest {
            format: FORMAT,
            generation,
            encoder_id: self.encoder_id,
            dim,
            chunk_tokens: self.opts.chunk_tokens,
            overlap: self.opts.overlap,
            hnsw: self.opts.hnsw,
            docs,
            chunks,
        };
        let hnsw = Hnsw::build(dim, &rows, self.opts.hnsw)?;
        drop(self.prev);
        write_generation(&self.dir, &manifest, &hnsw)?;
        report.generation = generation;
        report.written = true;
        report.documents = manifest.docs.len();
        report.chunks = manifest.chunks.len();
        Ok(report)
    }
}

fn gen_name(g: u64) -> String {
    format!("gen-{g:06}")
}

fn generations(dir: &Path) -> Result<Vec<(u64, PathBuf)>, IndexError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(IndexError::io(dir, e)),
    };
    let mut out: Vec<(u64, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((name.strip_prefix("gen-")?.parse().ok()?, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

fn next_generation(dir: &Path) -> Result<u64, IndexError> {
    Ok(generations(dir)?.last().map_or(1, |(g, _)| g + 1))
}

fn fsync_dir(dir: &Path) -> Result<(), IndexError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| IndexError::io(dir, e))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), IndexError> {
    let mut f = std::fs::File::create(path).map_err(|e| IndexError::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| IndexError::io(path, e))
}

fn write_generation(dir: &Path, manifest: &Manifest, hnsw: &Hnsw) -> Result<(), IndexError> {
    std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
    let name = gen_name(manifest.generation);
    let gdir = dir.join(&name);
    // create_dir (not _all): a concurrent writer of the same generation fails here.
    std::fs::create_dir(&gdir).map_err(|e| IndexError::io(&gdir, e))?;
    let json = serde_json::to_vec(manifest).map_err(|e| IndexError::format(&gdir, e.to_string()))?;
    write_file(&gdir.join(MANIFEST), &json)?;
    hnsw.write(&gdir.join(VECTORS))?;
    let bdir = gdir.join(BM25_DIR);
    std::fs::create_dir(&bdir).map_err(|e| IndexError::io(&bdir, e))?;
    bm25::build(
        &bdir,
        manifest.chunks.iter().enumerate().map(|(i, c)| (i as u64, c.text.as_str(), &manifest.docs[c.doc].metadata)),
    )?;
    for entry in std::fs::read_dir(&bdir).map_err(|e| IndexError::io(&bdir, e))?.filter_map(Result::ok) {
        let p = entry.path();
        if p.is_file() {
            std::fs::File::open(&p).and_then(|f| f.sync_all()).map_err(|e| IndexError::io(&p, e))?;
        }
    }
    fsync_dir(&bdir)?;
    fsync_dir(&gdir)?;
    let tmp = dir.join(format!("{CURRENT}.tmp-{}", std::process::id()));
    write_file(&tmp, format!("{name}\n").as_bytes())?;
    std::fs::rename(&tmp, dir.join(CURRENT)).map_err(|e| IndexError::io(dir, e))?;
    fsync_dir(dir)?;
    // Older generations are no longer current; readers that have them open keep their files.
    for (g, p) in generations(dir)? {
        if g != manifest.generation {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    Ok(())
}

/// An open index generation: documents, chunks, vectors, graph and BM25.
pub struct Index {
    dir: PathBuf,
    manifest: Manifest,
    hnsw: Hnsw,
    bm25: Bm25,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("dir", &self.dir)
            .field("generation", &self.manifest.generation)
            .field("documents", &self.manifest.docs.len())
            .field("chunks", &self.manifest.chunks.len())
            .finish_non_exhaustive()
    }
}

/// The generation `CURRENT` names, if any.
pub fn current_generation(dir: &Path) -> Result<Option<u64>, IndexError> {
    match std::fs::read_to_string(dir.join(CURRENT)) {
        Ok(s) => s
            .trim()
            .strip_prefix("gen-")
            .and_then(|g| g.parse().ok())
            .map(Some)
            .ok_or_else(|| IndexError::format(dir.join(CURRENT), format!("unreadable: {s:?}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(IndexError::io(dir.join(CURRENT), e)),
    }
}

impl Index {
    /// Opens the current generation of the index in `dir`.
    pub fn open(dir: &Path) -> Result<Index, IndexError> {
        let generation = current_generation(dir)?.ok_or_else(|| IndexError::NotFound(dir.to_path_buf()))?;
        let gdir = dir.join(gen_name(generation));
        let mpath = gdir.join(MANIFEST);
        let bytes = std::fs::read(&mpath).map_err(|e| IndexError::io(&mpath, e))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| IndexError::format(&mpath, e.to_string()))?;
        if manifest.format != FORMAT {
            return Err(IndexError::format(&mpath, format!("format {}, expected {FORMAT}", manifest.format)));
        }
        let hnsw = Hnsw::read(&gdir.join(VECTORS))?;
        if hnsw.len() != manifest.chunks.len() {
            return Err(IndexError::format(
                &gdir,
                format!("{} vectors for {} chunks", hnsw.len(), manifest.chunks.len()),
            ));
        }
        let bm25 = Bm25::open(&gdir.join(BM25_DIR))?;
        Ok(Index { dir: dir.to_path_buf(), manifest, hnsw, bm25 })
    }

    /// Works out an update of the index in `dir` (which may not exist yet) to exactly `docs`.
    /// Documents whose id and content hash are unchanged, indexed with the same encoder and
    /// chunking, are kept with their vectors; the others are chunked here.
    pub fn plan(
        dir: &Path,
        docs: Vec<Document>,
        chunker: &Chunker,
        encoder_id: &str,
        opts: IndexOptions,
    ) -> Result<Plan, IndexError> {
        if chunker.tokens != opts.chunk_tokens || chunker.overlap != opts.overlap {
            return Err(IndexError::Invalid("the chunker's settings differ from the index options".into()));
        }
        let prev = match current_generation(dir)? {
            Some(_) => Some(Index::open(dir)?),
            None => None,
        };
        let reuse_vectors = prev.as_ref().is_some_and(|p| {
            p.manifest.encoder_id == encoder_id
                && p.manifest.chunk_tokens == opts.chunk_tokens
                && p.manifest.overlap == opts.overlap
        });
        let old: HashMap<&str, usize> = match (&prev, reuse_vectors) {
            (Some(p), true) => p.manifest.docs.iter().enumerate().map(|(i, d)| (d.id.as_str(), i)).collect(),
            _ => HashMap::new(),
        };
        let prev_ids: HashSet<&str> =
            prev.as_ref().map(|p| p.manifest.docs.iter().map(|d| d.id.as_str()).collect()).unwrap_or_default();
        let mut report = IndexReport::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut planned = Vec::with_capacity(docs.len());
        for doc in docs {
            if !seen.insert(doc.id.clone()) {
                report.duplicate_ids.push(doc.id);
                continue;
            }
            let hash = doc.content_hash();
            match old.get(doc.id.as_str()) {
                Some(&i) if prev.as_ref().is_some_and(|p| p.manifest.docs[i].content_hash == hash) => {
                    report.unchanged += 1;
                    planned.push(PlanDoc::Keep(i));
                }
                _ => {
                    if prev_ids.contains(doc.id.as_str()) {
                        report.changed += 1;
                    } else {
                        report.added += 1;
                    }
                    let chunks = chunker.chunk(&doc.text)?;
                    planned.push(PlanDoc::Fresh { doc, hash, chunks });
                }
            }
        }
        report.removed = prev_ids.iter().filter(|id| !seen.contains(**id)).count();
        report.documents = planned.len();
        Ok(Plan {
            dir: dir.to_path_buf(),
            prev,
            reuse_vectors,
            encoder_id: encoder_id.to_owned(),
            opts,
            docs: planned,
            report,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn generation(&self) -> u64 {
        self.manifest.generation
    }

    /// The encoder the chunk vectors came from: embed queries with the same one.
    pub fn encoder_id(&self) -> &str {
        &self.manifest.encoder_id
    }

    pub fn dim(&self) -> usize {
        self.manifest.dim
    }

    pub fn documents(&self) -> usize {
        self.manifest.docs.len()
    }

    pub fn chunks(&self) -> usize {
        self.manifest.chunks.len()
    }

    pub fn options(&self) -> IndexOptions {
        IndexOptions {
            chunk_tokens: self.manifest.chunk_tokens,
            overlap: self.manifest.overlap,
            hnsw: self.manifest.hnsw,
        }
    }

    /// The graph, for benchmarks (exact search, other `ef`).
    pub fn hnsw(&self) -> &Hnsw {
        &self.hnsw
    }

    fn allowed(&self, filter: &Filter) -> Option<Vec<bool>> {
        if filter.is_empty() {
            return None;
        }
        let docs_ok: Vec<bool> = self.manifest.docs.iter().map(|d| filter.matches(&d.metadata)).collect();
        Some(self.manifest.chunks.iter().map(|c| docs_ok[c.doc]).collect())
    }

    /// Dense top `k` as `(chunk ordinal, cosine)`.
    fn dense(&self, v: &[f32], k: usize, ef: usize, filter: &Filter) -> Result<Vec<(u32, f32)>, IndexError> {
        if v.len() != self.manifest.dim {
            return Err(IndexError::Invalid(format!(
                "query vector has {} dimensions, the index {} (encoder {})",
                v.len(),
                self.manifest.dim,
                self.manifest.encoder_id
            )));
        }
        Ok(match self.allowed(filter) {
            None => self.hnsw.search(v, k, ef, None),
            Some(ok) => {
                let n_ok = ok.iter().filter(|&&b| b).count();
                let allow = |id: u32| ok[id as usize];
                // A selective filter starves the graph walk of allowed nodes: scan them exactly.
                if n_ok < 2000 || n_ok * 10 < ok.len() {
                    self.hnsw.exact(v, k, Some(&allow))
                } else {
                    self.hnsw.search(v, k, ef, Some(&allow))
                }
            }
        })
    }

    fn hit(&self, ord: usize, score: f32) -> Hit {
        let c = &self.manifest.chunks[ord];
        let d = &self.manifest.docs[c.doc];
        let chunk = ord - d.first_chunk;
        Hit {
            chunk_id: format!("{}:{chunk}", d.id),
            doc_id: d.id.clone(),
            chunk,
            source: d.source.clone(),
            start_char: c.start_char,
            end_char: c.end_char,
            text: c.text.clone(),
            score,
            dense_rank: None,
            bm25_rank: None,
            metadata: d.metadata.clone(),
        }
    }

    /// The top `q.k` chunks for `q`, best first.
    pub fn search(&self, q: &Query<'_>) -> Result<Vec<Hit>, IndexError> {
        if q.k == 0 {
            return Ok(Vec::new());
        }
        let ef = q.ef_search.unwrap_or(self.manifest.hnsw.ef_search);
        let need_vec = || {
            q.vector.ok_or_else(|| IndexError::Invalid(format!("{} search needs the query vector", q.mode.as_str())))
        };
        match q.mode {
            Mode::Dense => Ok(self
                .dense(need_vec()?, q.k, ef, &q.filter)?
                .into_iter()
                .enumerate()
                .map(|(r, (o, s))| Hit { dense_rank: Some(r + 1), ..self.hit(o as usize, s) })
                .collect()),
            Mode::Bm25 => Ok(self
                .bm25
                .search(q.text, q.k, &q.filter.0)?
                .into_iter()
                .enumerate()
                .map(|(r, (o, s))| Hit { bm25_rank: Some(r + 1), ..self.hit(o as usize, s) })
                .collect()),
            Mode::Hybrid => {
                let depth = q.fusion_depth.max(q.k);
                let dense = self.dense(need_vec()?, depth, ef.max(depth), &q.filter)?;
                let sparse = self.bm25.search(q.text, depth, &q.filter.0)?;
                let dense_ords: Vec<usize> = dense.iter().map(|x| x.0 as usize).collect();
                let sparse_ords: Vec<usize> = sparse.iter().map(|x| x.0 as usize).collect();
                let fused = rrf(&[&dense_ords, &sparse_ords], q.rrf_k);
                Ok(fused
                    .into_iter()
                    .take(q.k)
                    .map(|(o, s)| Hit {
                        dense_rank: dense_ords.iter().position(|&x| x == o).map(|r| r + 1),
                        bm25_rank: sparse_ords.iter().position(|&x| x == o).map(|r| r + 1),
                        ..self.hit(o, s)
                    })
                    .collect())
            }
        }
    }
}

/// Reciprocal-rank fusion of ranked lists: each item scores Σ 1 / (k + rank) over the lists
/// it appears in (rank 1-based). Ties go to the item seen first (earlier list, higher rank).
pub fn rrf(lists: &[&[usize]], k: f32) -> Vec<(usize, f32)> {
    let mut score: HashMap<usize, (f32, usize)> = HashMap::new();
    let mut order = 0;
    for list in lists {
        for (r, &item) in list.iter().enumerate() {
            let e = score.entry(item).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            e.0 += 1.0 / (k + (r + 1) as f32);
        }
    }
    let mut out: Vec<(usize, f32, usize)> = score.into_iter().map(|(i, (s, o))| (i, s, o)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.into_iter().map(|(i, s, _)| (i, s)).collect()
}

/// Keeps the first (best) hit of each document, in order, up to `k` documents.
pub fn dedupe_docs(hits: &[Hit], k: usize) -> Vec<&Hit> {
    let mut seen = HashSet::new();
    hits.iter().filter(|h| seen.insert(h.doc_id.as_str())).take(k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrf_by_hand() {
        // a: 1/61 + 1/62; b: 1/62 + 1/61; c: 1/63; d: 1/63 (k = 60).
        let fused = rrf(&[&[1, 2, 3], &[2, 1, 4]], 60.0);
        assert_eq!(fused.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-7);
        assert!((fused[2].1 - 1.0 / 63.0).abs() < 1e-7);
        // An item first in one list beats one second in both only when k is small.
        let fused = rrf(&[&[7, 8], &[9, 8]], 1.0);
        assert_eq!(fused[0].0, 8); // 1/3 + 1/3 > 1/2
        let fused = rrf(&[&[7, 8], &[9, 8]], 60.0);
        assert_eq!(fused[0].0, 8); // 2/62 > 1/61
    }

    #[test]
    fn filter_parsing() {
        assert_eq!(Filter::parse_condition("lang=en").unwrap(), ("lang".into(), "en".into()));
        assert_eq!(Filter::parse_condition("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(Filter::parse_condition("nofield").is_err());
        assert!(Filter::parse_condition("=x").is_err());
    }
}
