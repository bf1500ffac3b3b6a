//! Fuzzes keel-data's readers (delimited with sniffing, JSON lines) and the normaliser.
//!
//! The first input byte picks the options (file type, header mode, lossy UTF-8, HTML stripping,
//! dedup, tight limits); the rest is the file. Checked on every input: no panic, every row read
//! is accepted or quarantined, every byte is parsed, accepted texts are normalised.
#![no_main]

use keel_data::{Format, ReadOptions, normalize, read_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&knobs, data)) = input.split_first() else { return };
    let name = ["f.csv", "f.tsv", "f.jsonl", "f.dat"][usize::from(knobs & 3)];
    let positional = knobs & 4 != 0;
    let opts = ReadOptions {
        text_col: if positional { "0".into() } else { "text".into() },
        label_col: Some(if positional { "1".into() } else { "label".into() }),
        id_col: (knobs & 8 != 0).then(|| if positional { "2".into() } else { "id".into() }),
        has_header: (knobs & 16 != 0).then_some(false),
        lossy_utf8: knobs & 32 != 0,
        strip_html: knobs & 64 != 0,
        drop_duplicates: knobs & 128 != 0,
        // Tight limits reach the oversize and unbalanced-quote paths with small inputs.
        max_record_bytes: if knobs & 3 == 3 { 64 } else { 1 << 20 },
        max_text_chars: Some(if knobs & 1 != 0 { 40 } else { 1 << 20 }),
        format: (knobs & 0b1001_0011 == 0b1001_0011).then_some(Format::Delimited { delimiter: b';' }),
        ..Default::default()
    };
    match read_bytes(data, name, &opts) {
        Ok(ing) => {
            let s = &ing.stats;
            assert_eq!(s.rows_read, s.accepted + s.quarantined);
            assert_eq!((s.accepted as usize, s.quarantined as usize), (ing.records.len(), ing.quarantined.len()));
            assert_eq!(s.bytes, data.len() as u64, "every byte is parsed");
            for r in &ing.records {
                assert!(!r.text.is_empty());
                assert!(r.text.chars().count() <= opts.max_text_chars.unwrap());
                assert_eq!(normalize(&r.text, false), r.text.as_str(), "accepted text is normalised");
                assert!(r.label.as_deref().is_some_and(|l| !l.is_empty() && l.trim() == l));
            }
            for q in &ing.quarantined {
                assert!(q.reason.contains(": "), "{q:?}");
                assert!(q.line >= 1);
            }
        }
        Err(e) => assert!(!matches!(e, keel_data::DataError::Io { .. }), "{e}"),
    }
    // The normaliser alone, on the same bytes as text: idempotent without HTML stripping.
    let text = String::from_utf8_lossy(data);
    let once = normalize(&text, false);
    assert_eq!(normalize(&once, false), once);
    let _ = normalize(&text, true);
});
