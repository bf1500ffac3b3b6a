//! keel-data integration tests: every row read is accepted or quarantined with a reason.
// Helpers outside `#[test]` functions unwrap too (allow-unwrap-in-tests covers only those): a
// panic is how a test fails.
#![allow(clippy::unwrap_used)]

mod bomb;
mod hostile;
mod options;

use std::io::Write;

use keel_core::{Record, Split};
use keel_data::{Format, ReadOptions, SplitConfig, assign_splits, dataset_version, read_table};

pub fn file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::File::create(&path).unwrap().write_all(bytes).unwrap();
    (dir, path)
}

/// The invariant: every row read is accepted or quarantined, and the counters agree.
pub fn accounted(ing: &keel_data::Ingested) {
    let s = &ing.stats;
    assert_eq!(s.rows_read as usize, ing.records.len() + ing.quarantined.len(), "{s:#?}");
    assert_eq!((s.accepted as usize, s.quarantined as usize), (ing.records.len(), ing.quarantined.len()), "{s:#?}");
}

#[test]
fn csv_with_quotes_crlf_bom_and_bad_rows() {
    let data = b"\xef\xbb\xbfid,text,label\r\n1,\"hello, world\",pos\r\n2,\"multi\nline\",neg\r\n3,   ,pos\r\n4,no label,\r\n5,too,many,cols\r\n6,\xff\xfe bad utf8,pos\r\n7,\"quoted \"\"inner\"\"\",neg\r\n";
    let (_d, path) = file("t.csv", data);
    let opts = ReadOptions { id_col: Some("id".into()), ..Default::default() };
    let ing = read_table(&path, &opts).unwrap();
    accounted(&ing);
    assert_eq!(ing.stats.rows_read, 7);
    let texts: Vec<_> = ing.records.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["hello, world", "multi line", "quoted \"inner\""]);
    assert_eq!(ing.records[1].raw_text.as_deref(), Some("multi\nline"), "the raw text is kept");
    assert_eq!(ing.records[0].id, "1");
    assert_eq!(ing.records[0].label.as_deref(), Some("pos"));
    let reasons: Vec<_> = ing.quarantined.iter().map(|q| (q.line, q.reason.split(':').next().unwrap())).collect();
    assert_eq!(
        reasons,
        // Line numbers count the line break inside the quoted field of row 2.
        [(5, "empty text"), (6, "missing label"), (7, "wrong column count"), (8, "invalid UTF-8 in text")]
    );
    let summary = keel_data::quarantine_summary(&ing.quarantined);
    assert_eq!(summary.len(), 4);
}

#[test]
fn tsv_without_header_by_position_and_limit() {
    let (_d, path) = file("t.tsv", b"a\t1.5\tgood film\nb\t-2\tbad film\nc\t3\tfine\n");
    let opts = ReadOptions {
        text_col: "2".into(),
        label_col: Some("1".into()),
        id_col: Some("0".into()),
        has_header: Some(false),
        limit: Some(2),
        ..Default::default()
    };
    let ing = read_table(&path, &opts).unwrap();
    accounted(&ing);
    assert_eq!(ing.records.len(), 2);
    assert_eq!(ing.records[1].id, "b");
    assert_eq!(ing.records[1].label.as_deref(), Some("-2"));
}

#[test]
fn orange_tab_skips_type_rows() {
    let (_d, path) = file("x.tab", b"Category\tText\nd\tstring\nclass\t\nsport\tgoal scored\n");
    let opts = ReadOptions {
        text_col: "Text".into(),
        label_col: Some("Category".into()),
        skip_after_header: Some(2),
        ..Default::default()
    };
    let ing = read_table(&path, &opts).unwrap();
    accounted(&ing);
    assert_eq!(ing.records.len(), 1);
    assert_eq!(ing.records[0].label.as_deref(), Some("sport"));
    assert_eq!(ing.records[0].id, "x:4");
}

#[test]
fn jsonl_rows_and_errors() {
    let data = b"{\"text\": \"a\", \"label\": \"x\"}\n\n{\"text\": 5, \"label\": 1}\nnot json\n[1,2]\n{\"text\": [1], \"label\": \"x\"}\n{\"label\": \"x\"}\n";
    let (_d, path) = file("t.jsonl", data);
    let ing = read_table(&path, &ReadOptions::default()).unwrap();
    accounted(&ing);
    assert_eq!(ing.stats.rows_read, 6);
    assert_eq!(ing.records.len(), 2);
    assert_eq!(ing.records[1].text, "5");
    assert_eq!(ing.records[1].label.as_deref(), Some("1"));
    let kinds: Vec<_> = ing.quarantined.iter().map(|q| q.reason.split(':').next().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["invalid JSON", "not an object", "wrong type", "missing text"]);
}

#[test]
fn missing_column_names_the_header() {
    let (_d, path) = file("t.csv", b"body,tag\nx,y\n");
    let err = read_table(&path, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("\"text\"") && err.contains("body, tag"), "{err}");
}

#[test]
fn empty_and_header_only_files() {
    for bytes in [&b""[..], b"text,label\n"] {
        let (_d, path) = file("t.csv", bytes);
        let ing = read_table(&path, &ReadOptions::default()).unwrap();
        accounted(&ing);
        assert_eq!(ing.stats.rows_read, 0);
    }
    let (_d, path) = file("t.weird", b"x");
    assert!(read_table(&path, &ReadOptions::default()).is_err());
    let opts = ReadOptions { format: Some(Format::JsonLines), ..Default::default() };
    assert_eq!(read_table(&path, &opts).unwrap().quarantined.len(), 1);
}

fn rec(i: usize, text: &str, label: &str) -> Record {
    Record { id: i.to_string(), text: text.into(), label: Some(label.into()), line: i as u64, raw_text: None }
}

#[test]
fn splits_are_deterministic_stratified_and_keep_duplicates_together() {
    let mut records: Vec<Record> =
        (0..1000).map(|i| rec(i, &format!("text {i}"), if i % 4 == 0 { "a" } else { "b" })).collect();
    records.push(rec(1000, "text 7", "b")); // exact duplicate of row 7
    let cfg = SplitConfig::default();
    let s1 = assign_splits(&records, &cfg);
    let mut shuffled = records.clone();
    shuffled.reverse();
    let mut s2 = assign_splits(&shuffled, &cfg);
    s2.reverse();
    assert_eq!(s1, s2, "assignment must not depend on row order");
    assert_eq!(s1[7], s1[1000]);
    for label in ["a", "b"] {
        let idx: Vec<_> = (0..records.len()).filter(|&i| records[i].label.as_deref() == Some(label)).collect();
        let test = idx.iter().filter(|&&i| s1[i] == Split::Test).count() as f64 / idx.len() as f64;
        let val = idx.iter().filter(|&&i| s1[i] == Split::Validation).count() as f64 / idx.len() as f64;
        assert!((test - 0.2).abs() < 0.01 && (val - 0.1).abs() < 0.01, "{label}: test {test} val {val}");
    }
    let other = assign_splits(&records, &SplitConfig { seed: 7, ..cfg });
    assert_ne!(s1, other, "a different seed gives a different split");
}

#[test]
fn dataset_version_changes_with_content() {
    let a = vec![rec(0, "x", "p"), rec(1, "y", "n")];
    let mut b = a.clone();
    assert_eq!(dataset_version(&a), dataset_version(&b));
    b[1].label = Some("p".into());
    assert_ne!(dataset_version(&a), dataset_version(&b));
}
