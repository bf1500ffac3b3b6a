//! Search modes, fusion, filters and persistence on real articles.

use std::collections::BTreeMap;

use keel_index::{Document, Filter, Index, IndexOptions, Mode, Query, dedupe_docs};

use crate::{CountingEmbedder, articles, embed_query, update};

fn docs(n: usize) -> (Vec<crate::Article>, Vec<Document>) {
    let a = articles(n);
    let d = a
        .iter()
        .map(|x| Document {
            id: format!("news#{}", x.id),
            source: "news.jsonl".into(),
            text: x.text.clone(),
            metadata: BTreeMap::from([
                ("date".into(), x.date.clone()),
                ("parity".into(), if x.id.parse::<u64>().unwrap_or(0) % 2 == 0 { "even" } else { "odd" }.into()),
            ]),
        })
        .collect();
    (a, d)
}

fn build(n: usize) -> (tempfile::TempDir, Vec<crate::Article>, Index) {
    let dir = tempfile::tempdir().unwrap();
    let (a, d) = docs(n);
    let report = update(dir.path(), d, IndexOptions::default(), &CountingEmbedder::default());
    assert!(report.written && report.added == n && report.chunks > n);
    let index = Index::open(dir.path()).unwrap();
    (dir, a, index)
}

fn top_doc(index: &Index, text: &str, mode: Mode) -> String {
    let v = embed_query(text);
    let hits = index.search(&Query::new(text, Some(&v), 20, mode)).unwrap();
    dedupe_docs(&hits, 1)[0].doc_id.clone()
}

#[test]
fn titles_find_their_articles_in_every_mode_and_hybrid_is_rrf_of_both() {
    let (_dir, a, index) = build(30);
    for mode in [Mode::Dense, Mode::Bm25, Mode::Hybrid] {
        let found = a.iter().filter(|x| top_doc(&index, &x.title, mode) == format!("news#{}", x.id)).count();
        assert!(found >= 24, "{mode:?}: {found}/30 titles rank their own article first");
    }
    let q = &a[3].title;
    let v = embed_query(q);
    let hits = index.search(&Query::new(q, Some(&v), 10, Mode::Hybrid)).unwrap();
    assert_eq!(hits.len(), 10);
    for h in &hits {
        let want: f32 = [h.dense_rank, h.bm25_rank].iter().flatten().map(|&r| 1.0 / (60.0 + r as f32)).sum();
        assert!((h.score - want).abs() < 1e-6, "{} vs {want}", h.score);
        // Offsets and text agree with the document.
        let doc = a.iter().find(|x| format!("news#{}", x.id) == h.doc_id).unwrap();
        let slice: String = doc.text.chars().skip(h.start_char).take(h.end_char - h.start_char).collect();
        assert_eq!(slice, h.text);
        assert_eq!(h.chunk_id, format!("{}:{}", h.doc_id, h.chunk));
    }
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    // The dense list is the graph's; BM25 hits all contain a query term.
    let dense = index.search(&Query::new(q, Some(&v), 5, Mode::Dense)).unwrap();
    let exact = index.hnsw().exact(&v, 5, None);
    assert_eq!(dense.iter().map(|h| h.score).collect::<Vec<_>>(), exact.iter().map(|x| x.1).collect::<Vec<_>>());
    // Dense search without a vector is an error, not an empty answer.
    assert!(index.search(&Query::new(q, None, 5, Mode::Dense)).is_err());
    assert!(index.search(&Query::new(q, Some(&v[..10]), 5, Mode::Dense)).is_err());
}

#[test]
fn filters_restrict_every_mode_to_matching_documents() {
    let (_dir, a, index) = build(30);
    // Even-numbered articles only, asked with the title of an odd one.
    let (key, date) = ("parity".to_string(), "even".to_string());
    let count = a.iter().filter(|x| x.id.parse::<u64>().unwrap_or(0) % 2 == 0).count();
    let other = a.iter().find(|x| x.id.parse::<u64>().unwrap_or(0) % 2 == 1).unwrap();
    let v = embed_query(&other.title);
    for mode in [Mode::Dense, Mode::Bm25, Mode::Hybrid] {
        let f = Filter(vec![(key.clone(), date.clone())]);
        let hits = index.search(&Query::new(&other.title, Some(&v), 50, mode).with_filter(f)).unwrap();
        assert!(!hits.is_empty(), "{mode:?}");
        assert!(hits.iter().all(|h| h.metadata[&key] == date), "{mode:?}");
        assert!(dedupe_docs(&hits, 100).len() <= count);
        let none = Filter(vec![(key.clone(), "neither".into())]);
        assert!(index.search(&Query::new(&other.title, Some(&v), 5, mode).with_filter(none)).unwrap().is_empty());
    }
}

#[test]
fn persisted_index_answers_the_same_and_keeps_one_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (a, d) = docs(12);
    let e = CountingEmbedder::default();
    update(dir.path(), d[..10].to_vec(), IndexOptions::default(), &e);
    let first = Index::open(dir.path()).unwrap();
    let q = &a[4].title;
    let v = embed_query(q);
    let before = first.search(&Query::new(q, Some(&v), 8, Mode::Hybrid)).unwrap();
    drop(first);
    let reopened = Index::open(dir.path()).unwrap();
    assert_eq!(reopened.search(&Query::new(q, Some(&v), 8, Mode::Hybrid)).unwrap(), before);
    assert_eq!(reopened.encoder_id(), crate::encoder().id());
    // A second update writes generation 2 and removes generation 1 once CURRENT names 2.
    let r = update(dir.path(), d.clone(), IndexOptions::default(), &e);
    assert_eq!((r.generation, r.added, r.unchanged), (2, 2, 10));
    let mut entries: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    entries.sort();
    assert_eq!(entries, vec!["CURRENT", "gen-000002"]);
    // An index whose CURRENT names a missing generation fails to open with the path.
    std::fs::write(dir.path().join("CURRENT"), "gen-000009\n").unwrap();
    let err = Index::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("gen-000009"), "{err}");
    assert!(matches!(Index::open(&dir.path().join("nothing")), Err(keel_index::IndexError::NotFound(_))));
}
