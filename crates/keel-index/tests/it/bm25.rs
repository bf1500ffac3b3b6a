//! BM25 under hostile queries (issue 19): a 2 MB query is deduplicated by hash, not by a
//! pairwise scan, and answers the same hits as its short form.

use std::collections::BTreeMap;

use keel_index::bm25::{self, Bm25};

fn index(dir: &std::path::Path) -> Bm25 {
    let none = BTreeMap::new();
    let texts = ["the zebra crossed the river", "a quiet river bank", "markets fell on tuesday"];
    bm25::build(dir, texts.iter().enumerate().map(|(i, t)| (i as u64, *t, &none))).unwrap();
    Bm25::open(dir).unwrap()
}

/// About 2 MB of distinct words, `planted` repeated among them.
fn huge_query(planted: &str) -> (String, usize) {
    let mut q = String::with_capacity(2 << 20);
    let mut distinct = 0;
    while q.len() < 2 << 20 {
        q.push_str(&format!("w{distinct} "));
        distinct += 1;
        if distinct % 1000 == 0 {
            q.push_str(planted);
            q.push(' ');
        }
    }
    (q, distinct)
}

#[test]
fn a_two_megabyte_query_of_distinct_words_is_deduplicated_and_answers_right() {
    let dir = tempfile::tempdir().unwrap();
    let bm = index(dir.path());
    let (q, distinct) = huge_query("Zebra RIVER");
    assert!(q.len() >= 2 << 20 && distinct > 200_000, "{distinct} distinct words");
    // A pairwise scan did ~distinct²/2 = 4e10 string comparisons here (minutes of one core).
    let terms = bm.terms(&q).unwrap();
    assert_eq!(terms.len(), distinct + 2, "every distinct word once, plus zebra and river");
    assert_eq!(&terms[..3], ["w0", "w1", "w2"], "first-appearance order");
    assert_eq!(terms.iter().position(|t| t == "zebra"), Some(1000));
    assert_eq!(terms.iter().position(|t| t == "river"), Some(1001));
    // The same hits and scores as the two words that the index holds.
    let long = bm.search(&q, 10, &[]).unwrap();
    let short = bm.search("zebra river", 10, &[]).unwrap();
    assert_eq!(long, short);
    assert_eq!(long.iter().map(|h| h.0).collect::<Vec<_>>(), vec![0, 1]);
    // Nothing the index holds: no hits, not an error.
    let (nothing, _) = huge_query("w1");
    assert!(bm.search(&nothing, 10, &[]).unwrap().is_empty());
}
