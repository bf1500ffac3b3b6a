//! Incremental updates: unchanged documents cost nothing, changed ones are re-chunked and
//! re-embedded, deleted ones disappear.

use std::collections::BTreeMap;

use keel_index::{Document, Index, IndexOptions, Mode, Query};

use crate::{CountingEmbedder, articles, embed_query, update};

fn corpus(n: usize) -> Vec<Document> {
    articles(n)
        .into_iter()
        .map(|x| Document { id: x.id.clone(), source: "news.csv".into(), text: x.text, metadata: BTreeMap::new() })
        .collect()
}

#[test]
fn reindexing_an_unchanged_corpus_does_no_embedding_work() {
    let dir = tempfile::tempdir().unwrap();
    let docs = corpus(15);
    let e = CountingEmbedder::default();
    let first = update(dir.path(), docs.clone(), IndexOptions::default(), &e);
    assert_eq!(e.embedded.get(), first.chunks);
    assert_eq!(first.chunks_embedded, first.chunks);
    let manifest = std::fs::read(dir.path().join("gen-000001/manifest.json")).unwrap();

    let again = update(dir.path(), docs, IndexOptions::default(), &e);
    assert_eq!(e.embedded.get(), first.chunks, "no text was embedded the second time");
    assert_eq!((again.chunks_embedded, again.unchanged, again.added, again.changed, again.removed), (0, 15, 0, 0, 0));
    assert!(!again.written);
    assert_eq!(again.generation, 1);
    assert_eq!(std::fs::read(dir.path().join("gen-000001/manifest.json")).unwrap(), manifest, "nothing rewritten");
}

#[test]
fn changed_documents_are_reembedded_and_deleted_ones_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = corpus(15);
    let e = CountingEmbedder::default();
    let first = update(dir.path(), docs.clone(), IndexOptions::default(), &e);

    // Change one document, delete another, add nothing.
    let marker = "The zeppelin festival in Quedlinburg drew eleven thousand balloonists.";
    docs[2].text = format!("{marker} {}", docs[2].text);
    let deleted = docs.remove(7);
    let before = e.embedded.get();
    let plan_chunks = {
        let opts = IndexOptions::default();
        crate::chunker(&opts).chunk(&docs[2].text).unwrap().len()
    };
    let r = update(dir.path(), docs.clone(), IndexOptions::default(), &e);
    assert_eq!((r.changed, r.removed, r.unchanged, r.added), (1, 1, 13, 0));
    assert_eq!(e.embedded.get() - before, plan_chunks, "only the changed document's chunks were embedded");
    assert_eq!(r.chunks_embedded, plan_chunks);
    assert!(r.written && r.generation == first.generation + 1);

    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.documents(), 14);
    let v = embed_query(marker);
    let hits = index.search(&Query::new(marker, Some(&v), 3, Mode::Hybrid)).unwrap();
    assert_eq!(hits[0].doc_id, docs[2].id);
    assert_eq!(hits[0].start_char, 0);
    // Nothing of the deleted document is left, in any mode.
    let probe: String = deleted.text.chars().take(300).collect();
    let pv = embed_query(&probe);
    for mode in [Mode::Dense, Mode::Bm25, Mode::Hybrid] {
        let hits = index.search(&Query::new(&probe, Some(&pv), 200, mode)).unwrap();
        assert!(hits.iter().all(|h| h.doc_id != deleted.id), "{mode:?}");
    }
    // Unchanged documents kept their vectors: the same as embedding their chunks now.
    let kept = index.search(&Query::new(&docs[0].text, Some(&embed_query(&docs[0].text)), 1, Mode::Dense)).unwrap();
    let fresh = embed_query(&kept[0].text);
    assert!((index.search(&Query::new("", Some(&fresh), 1, Mode::Dense)).unwrap()[0].score - 1.0).abs() < 1e-4);

    // Other chunking settings re-chunk (and so re-embed) everything.
    let small = IndexOptions { chunk_tokens: 120, overlap: 20, ..IndexOptions::default() };
    let before = e.embedded.get();
    let r = update(dir.path(), docs, small, &e);
    assert_eq!(r.added + r.changed, 14);
    assert_eq!(e.embedded.get() - before, r.chunks);
}
