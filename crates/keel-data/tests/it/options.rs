//! Sniffing, normalisation, validation options, dedup and compressed input.

use std::io::Write;

use keel_core::ContentHash;
use keel_data::{Compression, Format, Ingested, ReadOptions, read_bytes, read_table};

use crate::{accounted, file};

fn read(bytes: &[u8], name: &str, opts: &ReadOptions) -> Ingested {
    let ing = read_bytes(bytes, name, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    accounted(&ing);
    ing
}

fn reasons(ing: &Ingested) -> Vec<&str> {
    ing.quarantined.iter().map(|q| q.reason.as_str()).collect()
}

#[test]
fn delimiter_is_sniffed_when_the_extension_does_not_say_or_is_wrong() {
    let semi = b"text;label\n\"a, b, c\";x\nplain;y\n";
    for name in ["t.csv", "t.dat", "noext"] {
        let ing = read(semi, name, &ReadOptions::default());
        assert_eq!(ing.stats.format, Format::Delimited { delimiter: b';' }, "{name}");
        assert_eq!(ing.records[0].text, "a, b, c");
    }
    let pipes = read(b"text|label\nx|1\ny|2\n", "t.txt", &ReadOptions::default());
    assert_eq!(pipes.stats.format, Format::Delimited { delimiter: b'|' });
    let json = read(b"{\"text\":\"a\",\"label\":\"b\"}\n", "t.data", &ReadOptions::default());
    assert_eq!(json.stats.format, Format::JsonLines);
    // An explicit format wins over sniffing.
    let opts = ReadOptions { format: Some(Format::Delimited { delimiter: b',' }), ..Default::default() };
    let forced = read_bytes(semi, "t.csv", &opts).unwrap_err();
    assert!(forced.to_string().contains("text;label"), "{forced}");
}

#[test]
fn header_is_sniffed_when_columns_are_positions() {
    let opts = ReadOptions { text_col: "1".into(), label_col: Some("0".into()), ..Default::default() };
    let with = read(b"stars,review\n5,a truly wonderful film\n1,dull and far too long\n", "t.csv", &opts);
    assert!(with.stats.has_header);
    assert_eq!(with.stats.columns, ["stars", "review"]);
    assert_eq!(with.records.len(), 2);
    let without = read(b"5,a truly wonderful film\n1,dull and far too long\n", "t.csv", &opts);
    assert!(!without.stats.has_header);
    assert_eq!(without.records.len(), 2);
    assert_eq!(without.records[0].line, 1);
    // A named column means a header, always.
    let named = read(b"text,label\nx,y\n", "t.csv", &ReadOptions::default());
    assert!(named.stats.has_header);
}

#[test]
fn orange_type_and_flag_rows_are_skipped_by_default() {
    let data = b"Category\tText\nd\tstring\nclass\t\n\nsport\tgoal scored\npolitics\ta vote\n";
    let opts = ReadOptions { text_col: "Text".into(), label_col: Some("Category".into()), ..Default::default() };
    let ing = read(data, "news.tab", &opts);
    assert_eq!(ing.stats.skipped_after_header, 2);
    assert_eq!(ing.stats.blank_lines, 1);
    assert_eq!(ing.records.iter().map(|r| (r.line, r.id.as_str())).collect::<Vec<_>>(), [(5, "news:5"), (6, "news:6")]);
    // Not Orange: nothing skipped.
    let ing = read(b"Category\tText\nsport\tgoal\n", "news.tab", &opts);
    assert_eq!((ing.stats.skipped_after_header, ing.records.len()), (0, 1));
    // An explicit count wins.
    let ing = read(data, "news.tab", &ReadOptions { skip_after_header: Some(0), ..opts });
    assert_eq!(ing.stats.rows_read, 4);
}

#[test]
fn text_is_normalised_and_the_raw_text_kept() {
    let data = "text,label\n\"  Caf\u{65}\u{301}\t\tcr\u{e8}me \u{0}\u{7f} ok\r\n \",a\nclean text,b\n".as_bytes();
    let ing = read(data, "t.csv", &ReadOptions::default());
    assert_eq!(ing.records[0].text, "Caf\u{e9} cr\u{e8}me ok");
    assert_eq!(ing.records[0].raw_text.as_deref(), Some("  Caf\u{65}\u{301}\t\tcr\u{e8}me \u{0}\u{7f} ok\r\n "));
    assert_eq!(ing.records[1].raw_text, None, "unchanged text is not stored twice");
    assert_eq!(ing.stats.normalised, 1);
    let raw = read(data, "t.csv", &ReadOptions { normalize: false, ..Default::default() });
    assert_eq!(raw.records[0].text, "  Caf\u{65}\u{301}\t\tcr\u{e8}me \u{0}\u{7f} ok\r\n ");
    assert_eq!(raw.records[0].raw_text, None);
}

#[test]
fn html_is_stripped_on_request() {
    let data = b"text,label\n\"Great.<br /><br />A &quot;must&quot; see &amp; more\",pos\n<br /><br />,neg\n";
    let kept = read(data, "t.csv", &ReadOptions::default());
    assert_eq!(kept.records[0].text, "Great.<br /><br />A &quot;must&quot; see &amp; more");
    assert_eq!(kept.records.len(), 2);
    let stripped = read(data, "t.csv", &ReadOptions { strip_html: true, ..Default::default() });
    assert_eq!(stripped.records[0].text, "Great. A \"must\" see & more");
    assert_eq!(
        reasons(&stripped),
        ["empty text: nothing is left after normalisation (only markup, control characters or whitespace)"]
    );
}

#[test]
fn every_rejection_has_its_reason() {
    let data = b"id,text,label\n\
        1,fine,pos\n\
        2,  \t ,pos\n\
        3,no label,\n\
        4,odd,maybe\n\
        5,this one is much too long,neg\n\
        6,a,b,c\n\
        1,same id other label,neg\n\
        1,same id same label,pos\n\
        7,\xff,neg\n";
    let opts = ReadOptions {
        id_col: Some("id".into()),
        labels: Some(vec!["pos".into(), "neg".into()]),
        max_text_chars: Some(20),
        ..Default::default()
    };
    let ing = read(data, "t.csv", &opts);
    assert_eq!(ing.records.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 9]);
    let got: Vec<_> = ing.quarantined.iter().map(|q| (q.line, q.reason.as_str())).collect();
    assert_eq!(
        got,
        [
            (3, "empty text: the text is empty or only whitespace"),
            (4, "missing label: the label column is empty"),
            (5, "unknown label: \"maybe\" is not one of pos, neg"),
            (6, "text too long: 25 characters, over the limit of 20 (--max-text-chars)"),
            (7, "wrong column count: expected 3, found 4"),
            (8, "duplicate id with a different label: id \"1\" is labelled \"pos\" on line 2"),
            (10, "invalid UTF-8 in text: invalid utf-8 sequence of 1 bytes from index 0"),
        ]
    );
    for q in &ing.quarantined {
        assert_eq!(q.source, "t.csv");
    }
    assert_eq!(ing.quarantined[4].raw, "6,a,b,c\n", "the original bytes, quotes and line end included");
    let summary = keel_data::quarantine_summary(&ing.quarantined);
    assert_eq!(summary.len(), 7);
}

#[test]
fn exact_duplicates_are_counted_and_dropped_on_request() {
    let data = b"text,label\nGood  film,pos\ngood film,pos\nGood film,pos\nGood\tfilm ,neg\nother,neg\n";
    let ing = read(data, "t.csv", &ReadOptions::default());
    assert_eq!(ing.records.len(), 5);
    assert_eq!((ing.stats.exact_duplicates, ing.stats.conflicting_duplicates), (2, 1));
    let dropped = read(data, "t.csv", &ReadOptions { drop_duplicates: true, ..Default::default() });
    assert_eq!(dropped.records.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 6]);
    assert_eq!(
        reasons(&dropped),
        [
            "duplicate text: same normalised text and label as line 2",
            "conflicting duplicate: same normalised text as line 2, labelled \"pos\" there"
        ]
    );
}

#[test]
fn compressed_files_are_read_transparently() {
    let csv = b"text,label\nfrom a compressed file,pos\nsecond,neg\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(csv).unwrap();
    let gz = gz.finish().unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(csv).unwrap();
    let bz = bz.finish().unwrap();
    for (name, bytes, kind) in [
        ("t.csv.gz", &gz, Some(Compression::Gzip)),
        ("t.csv.bz2", &bz, Some(Compression::Bzip2)),
        ("t.csv", &csv.to_vec(), None),
        // No compression extension: the magic bytes tell.
        ("gz-in-disguise.csv", &gz, Some(Compression::Gzip)),
    ] {
        let (_d, path) = file(name, bytes);
        let ing = read_table(&path, &ReadOptions::default()).unwrap();
        accounted(&ing);
        assert_eq!(ing.stats.compression, kind, "{name}");
        assert_eq!(ing.records.len(), 2, "{name}");
        assert_eq!(ing.records[0].id, format!("{}:2", name.split('.').next().unwrap()));
        assert_eq!(ing.stats.source_sha256, ContentHash::of(bytes), "the hash is of the file as stored");
        assert_eq!(ing.stats.bytes, csv.len() as u64);
    }
    // A truncated stream is an error for the file, not a silent short read.
    let (_d, path) = file("cut.csv.bz2", &bz[..bz.len() / 2]);
    assert!(matches!(read_table(&path, &ReadOptions::default()), Err(keel_data::DataError::Io { .. })));
}

#[test]
fn streaming_hands_over_rows_in_order_and_stops_at_the_limit() {
    let mut data = String::from("text,label\n");
    for i in 0..1000 {
        data.push_str(&format!("row {i},{}\n", if i % 10 == 0 { "" } else { "x" }));
    }
    let (_d, path) = file("s.csv", data.as_bytes());
    let mut lines = Vec::new();
    let opts = ReadOptions { limit: Some(500), ..Default::default() };
    let stats = keel_data::ingest(&path, &opts, &mut |row| {
        lines.push(match row {
            keel_data::Row::Accepted(r) => r.line,
            keel_data::Row::Quarantined(q) => q.line,
        });
        Ok(())
    })
    .unwrap();
    assert_eq!((stats.rows_read, stats.accepted, stats.quarantined), (500, 450, 50));
    assert_eq!(lines, (2..502).collect::<Vec<u64>>());
    assert_eq!(stats.source_sha256, ContentHash::of(data.as_bytes()), "the whole file is hashed");
    // An error from the consumer stops the read and is reported.
    let err = keel_data::ingest(&path, &opts, &mut |_| Err(std::io::Error::other("disk full"))).unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
}
