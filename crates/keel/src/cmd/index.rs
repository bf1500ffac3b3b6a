//! `keel index PATH`, `keel search QUERY`, `keel eval-retrieval DIR`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use keel_embed::Encoder;
use keel_index::document::ReadOptions;
use keel_index::metrics::{RetrievalMetrics, score_run};
use keel_index::{Chunker, Filter, Index, IndexOptions, Mode, Query, dedupe_docs};
use serde_json::json;

use crate::cli::{EvalRetrievalArgs, IndexArgs, SearchArgs};
use crate::context::open_store;
use crate::embedding::{EmbedStats, embed_cached};
use crate::output::{self, note};

/// Where the index lives and how it is built.
fn vectors_of(m: &keel_core::Matrix) -> Vec<Vec<f32>> {
    (0..m.rows()).map(|i| m.row(i).to_vec()).collect()
}

/// Plans, embeds through the cache, applies. Returns the report and the embedding stats.
async fn update_index(
    store: &keel_store::Store,
    encoder: &Encoder,
    model_dir: &Path,
    dir: &Path,
    docs: Vec<keel_index::document::Document>,
    opts: IndexOptions,
    quiet: bool,
) -> anyhow::Result<(keel_index::IndexReport, EmbedStats)> {
    let chunker = Chunker::from_model_dir(model_dir, opts.chunk_tokens, opts.overlap)?;
    let plan = tokio::task::block_in_place(|| Index::plan(dir, docs, &chunker, encoder.id(), opts))?;
    let texts = plan.texts_to_embed();
    let (vectors, stats) = embed_cached(store, encoder, &texts, quiet).await?;
    drop(texts);
    let report = tokio::task::block_in_place(|| plan.apply(vectors_of(&vectors)))?;
    Ok((report, stats))
}

pub async fn index(home: &Path, json: bool, args: IndexArgs) -> anyhow::Result<()> {
    let dir = args.settings.index_dir.clone().unwrap_or_else(|| keel_index::default_dir(home));
    let read = ReadOptions { text_field: args.text_field.clone(), id_field: args.id_field.clone() };
    let (docs, skipped) = keel_index::read_documents(&args.path, &read)
        .with_context(|| format!("cannot read documents from {}", args.path.display()))?;
    anyhow::ensure!(!docs.is_empty(), "no documents in {} ({} skipped)", args.path.display(), skipped.len());
    let (installed, encoder) = args.encoder.load()?;
    let store = open_store(home).await?;
    let (report, stats) =
        update_index(&store, &encoder, &installed.dir, &dir, docs, args.settings.options(), json).await?;
    if json {
        return output::json(&json!({"index": dir, "encoder": encoder.id(), "report": report, "embedding": stats,
            "skipped": skipped}));
    }
    println!(
        "index {} generation {}{}: {} documents, {} chunks",
        dir.display(),
        report.generation,
        if report.written { "" } else { " (unchanged; nothing written)" },
        report.documents,
        report.chunks
    );
    println!(
        "  documents {} added, {} changed, {} unchanged, {} removed",
        report.added, report.changed, report.unchanged, report.removed
    );
    println!(
        "  embedding {} chunks to embed: {} from cache, {} computed with {}",
        stats.texts,
        stats.cached,
        stats.computed,
        encoder.id()
    );
    for s in skipped.iter().take(20) {
        println!(
            "  skipped   {}{}: {}",
            s.source,
            if s.line > 0 { format!(":{}", s.line) } else { String::new() },
            s.reason
        );
    }
    if skipped.len() > 20 {
        println!("  skipped   ... {} more (see --json)", skipped.len() - 20);
    }
    for id in &report.duplicate_ids {
        println!("  duplicate id {id}: later copy not indexed");
    }
    Ok(())
}

pub async fn search(home: &Path, json: bool, args: SearchArgs) -> anyhow::Result<()> {
    let dir = args.index_dir.clone().unwrap_or_else(|| keel_index::default_dir(home));
    let index = Index::open(&dir)?;
    let mode = Mode::parse(&args.mode).context("mode must be dense, bm25 or hybrid")?;
    let filter = Filter(args.filters.iter().map(|f| Filter::parse_condition(f)).collect::<Result<_, _>>()?);
    let vector = keel_server::query_vector(&index, &args.query, mode, &super::serve::lazy_encoder(&args.encoder))?;
    let mut q = Query::new(&args.query, vector.as_deref(), args.k, mode).with_filter(filter);
    q.rrf_k = args.rrf_k;
    q.ef_search = args.ef_search;
    let hits = index.search(&q)?;
    if json {
        return output::json(&json!({"query": args.query, "mode": mode, "rrf_k": args.rrf_k, "hits": hits}));
    }
    if hits.is_empty() {
        println!("no hits");
    }
    for (i, h) in hits.iter().enumerate() {
        let preview: String = h.text.chars().take(160).collect::<String>().replace('\n', " ");
        println!("{:>2}. {:.4}  {}  [chars {}..{}]", i + 1, h.score, h.chunk_id, h.start_char, h.end_char);
        println!("    {preview}{}", if h.text.chars().count() > 160 { "…" } else { "" });
    }
    Ok(())
}

fn write_f32s(path: &Path, rows: impl Iterator<Item = Vec<f32>>) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("{}", path.display()))?);
    for r in rows {
        for x in r {
            f.write_all(&x.to_le_bytes())?;
        }
    }
    f.flush()?;
    Ok(())
}

#[derive(serde::Serialize)]
struct AnnPoint {
    ef_search: usize,
    recall_at_10: f64,
    queries_per_second: f64,
}

/// A BEIR folder's corpus, the queries that have judgements, and the judgements.
struct Beir {
    docs: Vec<keel_index::document::Document>,
    queries: Vec<(String, String)>,
    qrels: HashMap<String, keel_index::metrics::Judgements>,
    corpus_hash: keel_core::ContentHash,
}

fn read_beir(args: &EvalRetrievalArgs) -> anyhow::Result<Beir> {
    let corpus_path = args.dir.join("corpus.jsonl");
    let queries_path = args.dir.join("queries.jsonl");
    let qrels_path = match &args.qrels {
        Some(p) => p.clone(),
        None if args.dir.join("qrels/test.tsv").exists() => args.dir.join("qrels/test.tsv"),
        None => args.dir.join("qrels.tsv"),
    };
    let docs = keel_index::beir::read_corpus(&corpus_path)?;
    let queries = keel_index::beir::read_queries(&queries_path)?;
    let qrels = keel_index::beir::read_qrels(&qrels_path)?;
    let queries: Vec<(String, String)> = queries.into_iter().filter(|(id, _)| qrels.contains_key(id)).collect();
    anyhow::ensure!(
        !queries.is_empty(),
        "no query in {} has judgements in {}",
        queries_path.display(),
        qrels_path.display()
    );
    let corpus_hash = keel_core::ContentHash::of(&std::fs::read(&corpus_path)?);
    Ok(Beir { docs, queries, qrels, corpus_hash })
}

/// Every mode's retrieval metrics and queries per second, over the top 100 documents.
fn score_modes(
    index: &Index,
    beir: &Beir,
    qvecs: &keel_core::Matrix,
    modes: &[Mode],
    rrf_k: f32,
) -> anyhow::Result<Vec<(Mode, RetrievalMetrics, f64)>> {
    // Enough chunks to rank 100 distinct documents in nearly every case.
    let depth = 200;
    let mut table = Vec::new();
    for &mode in modes {
        let start = Instant::now();
        let mut run = Vec::with_capacity(beir.queries.len());
        for (i, (qid, text)) in beir.queries.iter().enumerate() {
            let mut q = Query::new(text, Some(qvecs.row(i)), depth, mode);
            q.rrf_k = rrf_k;
            q.fusion_depth = depth;
            let hits = index.search(&q)?;
            run.push((qid.clone(), dedupe_docs(&hits, 100).into_iter().map(|h| h.doc_id.clone()).collect()));
        }
        let qps = beir.queries.len() as f64 / start.elapsed().as_secs_f64();
        table.push((mode, score_run(&run, &beir.qrels), qps));
    }
    Ok(table)
}

/// The graph against exact search on the same query vectors (top 10 chunks), at each
/// `ef_search`: exact search's queries per second, then a point per value.
fn ann_sweep(index: &Index, qvecs: &keel_core::Matrix, efs: &[usize]) -> (f64, Vec<AnnPoint>) {
    let g = index.hnsw();
    let n = qvecs.rows();
    let start = Instant::now();
    let exact: Vec<Vec<u32>> =
        (0..n).map(|i| g.exact(qvecs.row(i), 10, None).into_iter().map(|x| x.0).collect()).collect();
    let exact_qps = n as f64 / start.elapsed().as_secs_f64();
    let mut ann = Vec::new();
    for &ef in efs {
        let start = Instant::now();
        let approx: Vec<Vec<u32>> =
            (0..n).map(|i| g.search(qvecs.row(i), 10, ef, None).into_iter().map(|x| x.0).collect()).collect();
        let qps = n as f64 / start.elapsed().as_secs_f64();
        let found: usize = approx.iter().zip(&exact).map(|(a, e)| a.iter().filter(|x| e.contains(x)).count()).sum();
        let relevant: usize = exact.iter().map(Vec::len).sum();
        ann.push(AnnPoint {
            ef_search: ef,
            recall_at_10: found as f64 / relevant.max(1) as f64,
            queries_per_second: qps,
        });
    }
    (exact_qps, ann)
}

/// Writes the corpus and query vectors for peer libraries (`--export-vectors`).
fn export_vectors(out: &Path, index: &Index, qvecs: &keel_core::Matrix) -> anyhow::Result<()> {
    let g = index.hnsw();
    std::fs::create_dir_all(out)?;
    write_f32s(&out.join("corpus.f32"), (0..g.len() as u32).map(|i| g.vector(i).to_vec()))?;
    write_f32s(&out.join("queries.f32"), (0..qvecs.rows()).map(|i| qvecs.row(i).to_vec()))?;
    let shape = json!({"corpus": g.len(), "queries": qvecs.rows(), "dim": g.dim(), "hnsw": index.options().hnsw});
    std::fs::write(out.join("shape.json"), serde_json::to_vec_pretty(&shape)?)?;
    Ok(())
}

fn print_eval(
    index: &Index,
    queries: usize,
    encoder_id: &str,
    table: &[(Mode, RetrievalMetrics, f64)],
    ann: (f64, &[AnnPoint]),
) {
    println!(
        "{queries} queries over {} documents ({} chunks), encoder {encoder_id}",
        index.documents(),
        index.chunks()
    );
    println!("{:<8} {:>9} {:>10} {:>11} {:>9} {:>9}", "mode", "nDCG@10", "recall@10", "recall@100", "MRR@10", "q/s");
    for (mode, m, qps) in table {
        println!(
            "{:<8} {:>9.4} {:>10.4} {:>11.4} {:>9.4} {:>9.1}",
            mode.as_str(),
            m.ndcg_at_10,
            m.recall_at_10,
            m.recall_at_100,
            m.mrr_at_10,
            qps
        );
    }
    let params = index.options().hnsw;
    let (exact_qps, points) = ann;
    println!(
        "HNSW (M {}, ef_construction {}) against exact search ({exact_qps:.0} q/s), top 10 chunks:",
        params.m, params.ef_construction
    );
    for p in points {
        println!("  ef_search {:>4}: recall@10 {:.4}, {:.0} q/s", p.ef_search, p.recall_at_10, p.queries_per_second);
    }
}

pub async fn eval_retrieval(home: &Path, json: bool, args: EvalRetrievalArgs) -> anyhow::Result<()> {
    let mut beir = read_beir(&args)?;
    let modes: Vec<Mode> = args
        .modes
        .iter()
        .map(|m| Mode::parse(m.trim()).with_context(|| format!("unknown mode {m:?}: dense, bm25 or hybrid")))
        .collect::<anyhow::Result<_>>()?;
    let dir = args
        .settings
        .index_dir
        .clone()
        .unwrap_or_else(|| home.join("index").join(format!("eval-{}", beir.corpus_hash.short())));
    let (installed, encoder) = args.encoder.load()?;
    let store = open_store(home).await?;
    note(format!("indexing {} documents into {}", beir.docs.len(), dir.display()));
    let docs = std::mem::take(&mut beir.docs);
    let (report, stats) =
        update_index(&store, &encoder, &installed.dir, &dir, docs, args.settings.options(), json).await?;
    note(format!("embedding queries ({} texts)", beir.queries.len()));
    let qtexts: Vec<&str> = beir.queries.iter().map(|(_, t)| t.as_str()).collect();
    let (qvecs, qstats) = embed_cached(&store, &encoder, &qtexts, json).await?;
    let index = Index::open(&dir)?;

    let table = score_modes(&index, &beir, &qvecs, &modes, args.rrf_k)?;
    let default_ef = index.options().hnsw.ef_search;
    let mut efs = vec![default_ef];
    efs.extend(args.ef_sweep.iter().copied().filter(|&e| e != default_ef));
    let (exact_qps, ann) = ann_sweep(&index, &qvecs, &efs);
    if let Some(out) = &args.export_vectors {
        export_vectors(out, &index, &qvecs)?;
    }
    let params = index.options().hnsw;
    let results: serde_json::Map<String, serde_json::Value> = table
        .iter()
        .map(|(mode, m, qps)| (mode.as_str().to_owned(), json!({"metrics": m, "queries_per_second": qps})))
        .collect();
    let out = json!({
        "dataset": args.dir, "index": dir, "encoder": encoder.id(),
        "documents": index.documents(), "chunks": index.chunks(), "queries": beir.queries.len(),
        "index_report": report, "embedding": {"chunks": stats, "queries": qstats},
        "rrf_k": args.rrf_k, "modes": results,
        "ann": {"m": params.m, "ef_construction": params.ef_construction, "default_ef_search": default_ef,
                "exact_queries_per_second": exact_qps, "points": ann},
    });
    if json {
        return output::json(&out);
    }
    print_eval(&index, beir.queries.len(), encoder.id(), &table, (exact_qps, &ann));
    Ok(())
}
