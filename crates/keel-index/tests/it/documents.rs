//! Reading every supported format, and chunking with offsets.

use std::collections::BTreeMap;

use keel_index::document::{ReadOptions, read_documents};
use keel_index::{IndexOptions, beir};

use crate::{articles, chunker};

#[test]
fn every_format_reads_with_metadata_and_skips_bad_rows_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let a = articles(6);
    std::fs::write(dir.path().join("one.txt"), &a[0].text).unwrap();
    std::fs::write(dir.path().join("two.md"), format!("# {}\n\n{}", a[1].title, a[1].text)).unwrap();
    std::fs::write(
        dir.path().join("three.html"),
        format!("<html><body><h1>{}</h1><p>{}</p><p>AT&amp;T</p></body></html>", a[2].title, a[2].text),
    )
    .unwrap();
    let jsonl = format!(
        "{}\n{}\nnot json\n{{\"id\": \"x\", \"text\": \"\"}}\n",
        serde_json::json!({"id": a[3].id, "text": a[3].text, "date": a[3].date, "views": 12}),
        serde_json::json!({"text": a[4].text, "date": a[4].date}),
    );
    std::fs::write(dir.path().join("rows.jsonl"), jsonl).unwrap();
    let mut w = csv::Writer::from_path(dir.path().join("table.csv")).unwrap();
    w.write_record(["id", "date", "text"]).unwrap();
    w.write_record([a[5].id.as_str(), a[5].date.as_str(), a[5].text.as_str()]).unwrap();
    w.write_record(["empty", "2017/1/1", "  "]).unwrap();
    w.flush().unwrap();
    std::fs::write(dir.path().join("picture.png"), b"\x89PNG").unwrap();

    let (docs, skipped) = read_documents(dir.path(), &ReadOptions::default()).unwrap();
    let ids: Vec<String> = docs.iter().map(|d| d.id.rsplit('/').next().unwrap().to_owned()).collect();
    let want = [
        "one.txt".to_owned(),
        format!("rows.jsonl#{}", a[3].id),
        "rows.jsonl#2".into(),
        format!("table.csv#{}", a[5].id),
        "three.html".into(),
        "two.md".into(),
    ];
    assert_eq!(ids, want);
    // Plain text is the file as it is; HTML loses its tags and decodes entities.
    assert_eq!(docs[0].text, a[0].text);
    let html = docs.iter().find(|d| d.id.ends_with("three.html")).unwrap();
    assert!(!html.text.contains('<') && html.text.contains("AT&T") && html.text.contains(&a[2].title));
    // JSONL and CSV fields besides the text are metadata.
    assert_eq!(
        docs[1].metadata,
        BTreeMap::from([
            ("date".into(), a[3].date.clone()),
            ("id".into(), a[3].id.clone()),
            ("views".into(), "12".into())
        ])
    );
    assert_eq!(docs[3].metadata["date"], a[5].date);
    // Bad rows and unknown files are reported with a line and a reason.
    let mut reasons: Vec<(String, u64)> =
        skipped.iter().map(|s| (s.source.rsplit('/').next().unwrap().to_owned(), s.line)).collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![("picture.png".into(), 0), ("rows.jsonl".into(), 3), ("rows.jsonl".into(), 4), ("table.csv".into(), 2)]
    );
    // A CSV without the text column is an error naming the columns.
    let err = read_documents(&dir.path().join("table.csv"), &ReadOptions { text_field: "body".into(), id_field: None });
    assert!(err.unwrap_err().to_string().contains("id, date, text"));
}

#[test]
fn chunks_are_token_windows_with_overlap_and_exact_char_offsets() {
    let opts = IndexOptions { chunk_tokens: 64, overlap: 16, ..IndexOptions::default() };
    let c = chunker(&opts);
    let text = articles(1).remove(0).text + " Ünïcödé — ✓ ends here.";
    let chunks = c.chunk(&text).unwrap();
    let total = c.count_tokens(&text).unwrap();
    assert!(total > 200, "{total} tokens");
    // ceil((total - overlap) / (tokens - overlap)) windows.
    assert_eq!(chunks.len(), (total - 16).div_ceil(48));
    let chars: Vec<char> = text.chars().collect();
    for (i, ch) in chunks.iter().enumerate() {
        assert_eq!(ch.text, chars[ch.start_char..ch.end_char].iter().collect::<String>());
        let n = c.count_tokens(&ch.text).unwrap();
        assert!(n <= 64 + 2, "chunk {i} has {n} tokens");
        if i > 0 {
            assert!(ch.start_char < chunks[i - 1].end_char, "chunk {i} overlaps the previous one");
        }
    }
    assert_eq!(chunks[0].start_char, 0);
    assert_eq!(chunks.last().unwrap().end_char, chars.len());
    assert!(c.chunk("   ").unwrap().is_empty());
}

#[test]
fn beir_files_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("corpus.jsonl"),
        "{\"_id\":\"d1\",\"title\":\"T\",\"text\":\"body\"}\n{\"_id\":\"d2\",\"text\":\"only\"}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("queries.jsonl"), "{\"_id\":\"q1\",\"text\":\"what\"}\n").unwrap();
    std::fs::write(dir.path().join("qrels.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\n").unwrap();
    let corpus = beir::read_corpus(&dir.path().join("corpus.jsonl")).unwrap();
    assert_eq!((corpus[0].id.as_str(), corpus[0].text.as_str()), ("d1", "T\n\nbody"));
    assert_eq!(corpus[1].text, "only");
    assert_eq!(beir::read_queries(&dir.path().join("queries.jsonl")).unwrap(), vec![("q1".into(), "what".into())]);
    let q = beir::read_qrels(&dir.path().join("qrels.tsv")).unwrap();
    assert_eq!((q["q1"]["d1"], q["q1"]["d2"]), (2, 0));
}

#[test]
fn symbolic_links_out_of_the_folder_or_to_folders_are_skipped_with_a_reason() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "a secret outside the folder").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("inside.txt"), "a document inside").unwrap();
    let link =
        |target: &std::path::Path, name: &str| std::os::unix::fs::symlink(target, dir.path().join(name)).unwrap();
    link(&outside.path().join("secret.txt"), "leak.txt");
    link(outside.path(), "elsewhere");
    link(dir.path(), "loop");
    link(&dir.path().join("inside.txt"), "alias.txt");
    link(&dir.path().join("gone.txt"), "dangling.txt");
    let (docs, skipped) = read_documents(dir.path(), &ReadOptions::default()).unwrap();
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["alias.txt", "inside.txt"], "only files inside the folder are read");
    assert!(docs.iter().all(|d| !d.text.contains("secret")));
    let reasons: BTreeMap<&str, &str> = skipped.iter().map(|s| (s.source.as_str(), s.reason.as_str())).collect();
    assert!(reasons["leak.txt"].contains("out of the folder"), "{reasons:?}");
    assert!(reasons["elsewhere"].contains("out of the folder"), "{reasons:?}");
    assert!(reasons["loop"].contains("to a folder"), "{reasons:?}");
    assert!(reasons["dangling.txt"].contains("to nothing"), "{reasons:?}");
}
