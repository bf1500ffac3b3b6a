//! Hostile inputs: every row is accounted for, every byte is parsed, nothing panics.

use std::io::Read;

use base64::Engine as _;
use keel_data::{DataError, Ingested, ReadOptions, read_bytes, read_table};

use crate::{accounted, file};

/// Reads `bytes` as `name`, checks the invariants, and returns what was read.
fn read(bytes: &[u8], name: &str, opts: &ReadOptions) -> Ingested {
    let ing = read_bytes(bytes, name, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    accounted(&ing);
    assert_eq!(ing.stats.bytes, bytes.len() as u64, "every byte is parsed: {:#?}", ing.stats);
    ing
}

fn kinds(ing: &Ingested) -> Vec<(u64, String)> {
    ing.quarantined.iter().map(|q| (q.line, q.reason.split(':').next().unwrap().to_owned())).collect()
}

fn texts(ing: &Ingested) -> Vec<&str> {
    ing.records.iter().map(|r| r.text.as_str()).collect()
}

#[test]
fn invalid_utf8_is_quarantined_with_its_exact_bytes_or_repaired_on_request() {
    let data = b"text,label\ngood,pos\nbad \xff\xfe text,neg\nfine,\xc3\x28\n\xed\xa0\x80surrogate,pos\n";
    let ing = read(data, "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["good"]);
    assert_eq!(
        kinds(&ing),
        [
            (3, "invalid UTF-8 in text".into()),
            (4, "invalid UTF-8 in label".into()),
            (5, "invalid UTF-8 in text".into())
        ]
    );
    let q = &ing.quarantined[0];
    let exact = base64::engine::general_purpose::STANDARD.decode(q.raw_base64.as_deref().unwrap()).unwrap();
    assert_eq!(exact, b"bad \xff\xfe text,neg\n");
    assert!(q.raw.contains('\u{fffd}'), "raw is shown lossily: {:?}", q.raw);
    assert_eq!(q.source, "t.csv");

    let lossy = read(data, "t.csv", &ReadOptions { lossy_utf8: true, ..Default::default() });
    assert_eq!(lossy.records.len(), 4);
    assert_eq!(lossy.stats.repaired_utf8, 3);
    assert_eq!(lossy.records[1].text, "bad \u{fffd}\u{fffd} text");
    assert_eq!(lossy.records[2].label.as_deref(), Some("\u{fffd}("));

    let jsonl = b"{\"text\": \"ok\", \"label\": \"a\"}\n{\"text\": \"\xff\", \"label\": \"a\"}\n";
    let ing = read(jsonl, "t.jsonl", &ReadOptions::default());
    assert_eq!(kinds(&ing), [(2, "invalid UTF-8".into())]);
    let ing = read(jsonl, "t.jsonl", &ReadOptions { lossy_utf8: true, ..Default::default() });
    assert_eq!(texts(&ing), ["ok", "\u{fffd}"]);
}

#[test]
fn nul_bytes_are_removed_from_text_and_kept_in_raw() {
    let data = b"text,label\nnul\x00in\x00the middle,pos\n\x00\x00\x00,neg\n\x00\x00\x00\x00\x00\x00\n";
    let ing = read(data, "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["nulinthe middle"]);
    assert_eq!(ing.records[0].raw_text.as_deref(), Some("nul\0in\0the middle"));
    assert_eq!(kinds(&ing), [(3, "empty text".into()), (4, "wrong column count".into())]);
    assert_eq!(ing.quarantined[1].raw, "\0\0\0\0\0\0\n");

    // Nothing but NULs, without a line end: one row, with one column.
    let ing = read(&[0u8; 1000], "t.csv", &ReadOptions { has_header: Some(false), ..positional() });
    assert_eq!(ing.stats.rows_read, 1);
    assert_eq!(kinds(&ing), [(1, "empty text".into())]);
}

fn positional() -> ReadOptions {
    ReadOptions { text_col: "0".into(), label_col: Some("1".into()), ..Default::default() }
}

#[test]
fn a_10_mb_field_is_read_whole_and_checked_against_the_limits() {
    let big = "word ".repeat(2 << 20); // 10 MiB
    let data = format!("text,label\nsmall,a\n\"{big}\",b\nafter,c\n");
    let ing = read(data.as_bytes(), "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["small", "after"]);
    assert_eq!(kinds(&ing), [(3, "text too long".into())]);
    assert!(ing.quarantined[0].reason.contains("10485759 characters"), "{}", ing.quarantined[0].reason);
    assert_eq!(ing.quarantined[0].raw.len(), big.len() + 5, "the raw row is kept whole");

    let ing = read(data.as_bytes(), "t.csv", &ReadOptions { max_text_chars: None, ..Default::default() });
    assert_eq!(ing.records.len(), 3);
    assert_eq!(ing.records[1].text.len(), big.len() - 1, "trailing space trimmed");
    assert_eq!(ing.records[2].line, 4);

    // Over the record limit: skipped without being buffered, and reading goes on after it.
    let opts = ReadOptions { max_record_bytes: 1 << 20, ..Default::default() };
    let ing = read(data.as_bytes(), "t.csv", &opts);
    assert_eq!(texts(&ing), ["small", "after"]);
    assert_eq!(kinds(&ing), [(3, "record too large".into())]);
    let q = &ing.quarantined[0];
    assert!(q.reason.contains(&format!("{} bytes", big.len() + 5)), "{}", q.reason);
    assert_eq!(q.raw.len(), 64 * 1024, "only a prefix is kept");
    assert!(q.raw.starts_with("\"word word"));

    // The same in JSON lines.
    let data = format!("{{\"text\": \"{big}\", \"label\": \"b\"}}\n{{\"text\": \"after\", \"label\": \"c\"}}\n");
    let ing = read(data.as_bytes(), "t.jsonl", &opts);
    assert_eq!(texts(&ing), ["after"]);
    assert_eq!(kinds(&ing), [(1, "record too large".into())]);
}

/// A reader that yields `n` bytes of `fill`, then `tail`, without holding them.
struct Generated {
    left: u64,
    fill: u8,
    tail: std::io::Cursor<Vec<u8>>,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return self.tail.read(buf);
        }
        let n = buf.len().min(self.left as usize);
        buf[..n].fill(self.fill);
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_line_larger_than_the_limit_streams_through() {
    // 200 MB of one unquoted line, then a normal row: memory stays at the 1 MiB record limit.
    let input = Generated { left: 200_000_000, fill: b'x', tail: std::io::Cursor::new(b",a\nafter,b\n".to_vec()) };
    let opts = ReadOptions { max_record_bytes: 1 << 20, has_header: Some(false), ..positional() };
    let mut rows = Vec::new();
    let stats = keel_data::ingest_reader(input, "big.csv", &opts, &mut |row| {
        rows.push(row);
        Ok(())
    })
    .unwrap();
    assert_eq!((stats.rows_read, stats.accepted, stats.quarantined), (2, 1, 1));
    assert_eq!(stats.bytes, 200_000_000 + 11);
    match &rows[0] {
        keel_data::Row::Quarantined(q) => {
            assert!(q.reason.starts_with("record too large: 200000003 bytes"), "{}", q.reason);
            assert_eq!(q.line, 1);
        }
        other => panic!("{other:?}"),
    }
    match &rows[1] {
        keel_data::Row::Accepted(r) => assert_eq!((r.text.as_str(), r.line), ("after", 2)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unbalanced_quotes_cost_one_line_not_the_rest_of_the_file() {
    // The quote on line 2 never closes: line 2 is quarantined and line 3 on are read.
    let data = b"text,label\n\"oops,pos\nfine,neg\nalso \"quoted\" inside,pos\n";
    let ing = read(data, "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["fine", "also \"quoted\" inside"]);
    assert_eq!(kinds(&ing), [(2, "unbalanced quote".into())]);
    assert_eq!(ing.quarantined[0].raw, "\"oops,pos\n");
    assert_eq!(ing.records[1].line, 4);

    // A later quote would close it, but text follows that quote: still one bad line.
    let data = b"text,label\n\"oops,pos\nfine,neg\n\"also fine\",pos\n";
    let ing = read(data, "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["fine", "also fine"]);
    assert_eq!(kinds(&ing), [(2, "unbalanced quote".into())]);

    // On the last line, without a line end.
    let ing = read(b"text,label\nok,a\n\"no end,b", "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["ok"]);
    assert_eq!(kinds(&ing), [(3, "unbalanced quote".into())]);

    // Quotes that open past the start of a field, or close then continue on the same line, are
    // lenient, like the csv crate.
    let ing = read(b"text,label\n5\" tall,a\n\"ab\"c,b\n\"\",c\n", "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["5\" tall", "abc"]);
    assert_eq!(kinds(&ing), [(4, "empty text".into())]);

    // Within the record limit a quoted field may span lines; past it, its quote is taken as
    // unbalanced, whatever comes later.
    let short = "x\n".repeat(100);
    let long = "x\n".repeat(1000);
    let data = format!("text,label\n\"{short}\",a\nnext,b\n\"{long}\",d\n");
    let opts = ReadOptions { max_record_bytes: 1000, ..Default::default() };
    let ing = read(data.as_bytes(), "t.csv", &opts);
    assert_eq!(ing.records[0].text, "x ".repeat(100).trim_end());
    assert_eq!((ing.records[1].text.as_str(), ing.records[1].line), ("next", 103));
    let k = kinds(&ing);
    assert_eq!(k[0], (104, "unbalanced quote".into()));
    // After the dropped line, each `x` line is a row of one column, and the last quote is
    // unbalanced too.
    assert_eq!(k[1], (105, "wrong column count".into()));
    assert_eq!(k.last().unwrap(), &(1104, "unbalanced quote".into()));
    assert_eq!(ing.stats.rows_read, 1003);
}

#[test]
fn mixed_line_ends_count_lines_correctly() {
    let data = b"text,label\r\na,1\nb,2\rc,3\r\n\"multi\r\nline\rtext\nend\",4\n\r\n\re,5";
    let ing = read(data, "t.csv", &ReadOptions::default());
    let got: Vec<_> = ing.records.iter().map(|r| (r.line, r.text.as_str())).collect();
    assert_eq!(got, [(2, "a"), (3, "b"), (4, "c"), (5, "multi line text end"), (11, "e")]);
    assert_eq!(ing.records[3].raw_text.as_deref(), Some("multi\r\nline\rtext\nend"));
    assert_eq!(ing.stats.blank_lines, 2);
    let jsonl = b"{\"text\":\"a\",\"label\":\"x\"}\r\n\r\n{\"text\":\"b\",\"label\":\"y\"}";
    let ing = read(jsonl, "t.jsonl", &ReadOptions::default());
    assert_eq!(ing.records.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3]);
}

#[test]
fn byte_order_marks() {
    let ing = read(b"\xef\xbb\xbftext,label\nx,y\n", "t.csv", &ReadOptions::default());
    assert_eq!(ing.stats.columns, ["text", "label"]);
    assert_eq!(texts(&ing), ["x"]);
    // A BOM inside a field (files concatenated) is removed from the text.
    let ing = read(b"text,label\n\xef\xbb\xbfx,y\n", "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["x"]);
    let ing = read(b"\xef\xbb\xbf{\"text\":\"j\",\"label\":\"l\"}\n", "t.jsonl", &ReadOptions::default());
    assert_eq!(texts(&ing), ["j"]);
    // UTF-16 is a whole-file problem, said plainly.
    let err = read_bytes(b"\xff\xfet\x00e\x00", "t.csv", &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }) && err.to_string().contains("UTF-16"), "{err}");
    // A lone BOM is an empty file.
    let ing = read(b"\xef\xbb\xbf", "t.csv", &ReadOptions::default());
    assert_eq!(ing.stats.rows_read, 0);
}

#[test]
fn empty_header_only_and_blank_files() {
    for (bytes, name) in [
        (&b""[..], "t.csv"),
        (b"text,label", "t.csv"),
        (b"text,label\n", "t.csv"),
        (b"text,label\r\n\r\n\n", "t.csv"),
        (b"\n\n\r\n", "t.csv"),
        (b"", "t.jsonl"),
        (b"\n \n\t\n", "t.jsonl"),
        (b"text\tlabel\nd\tstring\nclass\t\n", "t.tab"),
    ] {
        let ing = read(bytes, name, &ReadOptions::default());
        assert_eq!(ing.stats.rows_read, 0, "{bytes:?}");
    }
    // On disk too, through the file reader.
    let (_d, path) = file("empty.csv", b"");
    let ing = read_table(&path, &ReadOptions::default()).unwrap();
    accounted(&ing);
    assert_eq!(ing.stats.rows_read, 0);
}

#[test]
fn a_1000_column_row() {
    let wide: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
    let data = format!("text,label\nnormal,a\n{}\nafter,b\n", wide.join(","));
    let ing = read(data.as_bytes(), "t.csv", &ReadOptions::default());
    assert_eq!(texts(&ing), ["normal", "after"]);
    assert_eq!(kinds(&ing), [(3, "wrong column count".into())]);
    assert!(ing.quarantined[0].reason.contains("expected 2, found 1000"));

    // A 1,000-column header, with the text in the last column.
    let row: Vec<String> = (0..1000).map(|i| if i == 999 { "the text".into() } else { i.to_string() }).collect();
    let data = format!("{}\n{}\n", wide.join("\t"), row.join("\t"));
    let opts = ReadOptions { text_col: "c999".into(), label_col: Some("c0".into()), ..Default::default() };
    let ing = read(data.as_bytes(), "t.tsv", &opts);
    assert_eq!(texts(&ing), ["the text"]);
    assert_eq!(ing.records[0].label.as_deref(), Some("0"));
}

/// A small deterministic generator (xorshift), so the test needs no crate and never flakes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_hostile_bytes_never_break_the_invariant() {
    // Pieces that trouble readers, glued at random: quotes, delimiters, every line end, NUL,
    // invalid and multi-byte UTF-8, BOMs, HTML, JSON.
    const PIECES: &[&[u8]] = &[
        b"\"",
        b"\"\"",
        b",",
        b"\t",
        b";",
        b"\n",
        b"\r",
        b"\r\n",
        b"\0",
        b"\xff",
        b"\xc3",
        b"\xc3\xa9",
        b"e\xcc\x81",
        b"\xef\xbb\xbf",
        b"text",
        b"label",
        b"pos",
        b" ",
        b"<br />",
        b"&amp;",
        b"{\"text\":\"a\",\"label\":1}",
        b"{",
        b"}",
        b"x",
        b"12",
        b"\xe2\x80\x8b",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for case in 0..3000 {
        let mut data = Vec::new();
        if case % 2 == 0 {
            data.extend_from_slice(b"text,label\n");
        }
        for _ in 0..rng.next() % 60 {
            data.extend_from_slice(PIECES[(rng.next() % PIECES.len() as u64) as usize]);
        }
        let opts = ReadOptions {
            max_record_bytes: 1 + (rng.next() % 64) as usize,
            lossy_utf8: case % 3 == 0,
            strip_html: case % 5 == 0,
            drop_duplicates: case % 7 == 0,
            ..Default::default()
        };
        for name in ["t.csv", "t.tsv", "t.jsonl", "t.unknown"] {
            match read_bytes(&data, name, &opts) {
                Ok(ing) => {
                    accounted(&ing);
                    assert_eq!(ing.stats.bytes, data.len() as u64, "{name} {data:?}");
                    for r in &ing.records {
                        assert!(!r.text.is_empty() && r.text.trim() == r.text, "{r:?}");
                        assert!(!r.text.chars().any(char::is_control), "{r:?}");
                    }
                    for q in &ing.quarantined {
                        assert!(q.reason.contains(": "), "{q:?}");
                    }
                }
                Err(e) => assert!(!matches!(e, DataError::Io { .. }), "{name} {data:?}: {e}"),
            }
        }
    }
}
