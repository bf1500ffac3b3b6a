//! CSV ingest throughput, no embedding: keel-data's reader beside the raw read speed of the
//! `csv` crate, on the same file. Run by `scripts/bench-ingest`.
//!
//! ```text
//! ingest_bench prepare SRC OUT COPIES   # OUT = header + COPIES x the rows of SRC (.bz2/.gz ok)
//! ingest_bench run FILE [REPS] [TEXT_COL] [LABEL_COL]
//! ```
//!
//! `run` times, on FILE (read from the page cache after a warm-up pass):
//! - `csv ByteRecord`: `csv::Reader::read_byte_record` over every record (no UTF-8 check);
//! - `csv StringRecord`: `csv::Reader::read_record` (UTF-8 checked);
//! - `keel ingest (stream)`: `keel_data::ingest` with default options: sniffing, parsing with the
//!   original bytes of every row, UTF-8 check, NFC and whitespace normalisation, validation, the
//!   id and duplicate indexes, the sha256 of the file, one `Record` or `Quarantined` per row;
//! - `keel ingest, no normalisation`: the same with `normalize: false`;
//! - `keel read_table`: the same as the first, collecting every row in memory (what `keel
//!   ingest` does before it writes the store).
//!
//! Each is run REPS times; the median and best MB/s (10^6 bytes per second of file size) and the
//! ratio of each to `csv ByteRecord` are printed.
// A benchmark program run by hand: any failure should stop it with a panic and its message.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use keel_data::{ReadOptions, Row};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("prepare") if args.len() == 4 => prepare(&args[1], &args[2], args[3].parse().expect("COPIES")),
        Some("run") if args.len() >= 2 => {
            let reps = args.get(2).map_or(5, |r| r.parse().expect("REPS"));
            let text = args.get(3).map_or("text", String::as_str);
            let label = args.get(4).map_or("label", String::as_str);
            run(Path::new(&args[1]), reps, text, label);
        }
        _ => {
            eprintln!(
                "usage: ingest_bench prepare SRC OUT COPIES | ingest_bench run FILE [REPS] [TEXT_COL] [LABEL_COL]"
            );
            std::process::exit(2);
        }
    }
}

/// Writes the header of SRC once, then its data rows COPIES times.
fn prepare(src: &str, out: &str, copies: usize) {
    let file = std::fs::File::open(src).unwrap_or_else(|e| panic!("{src}: {e}"));
    let mut bytes = Vec::new();
    if src.ends_with(".bz2") {
        bzip2::read::MultiBzDecoder::new(file).read_to_end(&mut bytes).unwrap();
    } else if src.ends_with(".gz") {
        flate2::read::MultiGzDecoder::new(file).read_to_end(&mut bytes).unwrap();
    } else {
        std::io::BufReader::new(file).read_to_end(&mut bytes).unwrap();
    }
    if !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    // The header is the first line (header names hold no line breaks).
    let split = bytes.iter().position(|&b| b == b'\n').expect("a header line") + 1;
    let (header, rows) = bytes.split_at(split);
    let tmp = format!("{out}.tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
    w.write_all(header).unwrap();
    for _ in 0..copies {
        w.write_all(rows).unwrap();
    }
    w.into_inner().unwrap().sync_all().unwrap();
    std::fs::rename(&tmp, out).unwrap();
    let len = std::fs::metadata(out).unwrap().len();
    println!("wrote {out}: {:.1} MB ({copies} copies of the rows of {src})", len as f64 / 1e6);
}

struct Timing {
    name: &'static str,
    secs: Vec<f64>,
    rows: u64,
}

fn time<F: FnMut() -> u64>(name: &'static str, reps: usize, mut f: F) -> Timing {
    let mut secs = Vec::with_capacity(reps);
    let mut rows = 0;
    for _ in 0..reps {
        let t = Instant::now();
        rows = f();
        secs.push(t.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    Timing { name, secs, rows }
}

fn run(path: &Path, reps: usize, text: &str, label: &str) {
    let len = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
    // Warm the page cache so that every variant reads from memory.
    std::io::copy(&mut std::fs::File::open(path).unwrap(), &mut std::io::sink()).unwrap();
    let opts = ReadOptions { text_col: text.into(), label_col: Some(label.into()), ..Default::default() };
    let raw_opts = ReadOptions { normalize: false, ..opts.clone() };

    let csv_bytes = || {
        let mut r = csv::ReaderBuilder::new().flexible(true).from_path(path).unwrap();
        let mut rec = csv::ByteRecord::new();
        let mut n = 0;
        while r.read_byte_record(&mut rec).unwrap() {
            n += 1;
        }
        n
    };
    let csv_strings = || {
        let mut r = csv::ReaderBuilder::new().flexible(true).from_path(path).unwrap();
        let mut rec = csv::StringRecord::new();
        let mut n = 0;
        while r.read_record(&mut rec).unwrap_or(true) {
            n += 1;
        }
        n
    };
    let keel_stream = |opts: &ReadOptions| {
        let mut chars = 0usize;
        let stats = keel_data::ingest(path, opts, &mut |row| {
            // Touch every row so nothing is optimised away.
            chars += match &row {
                Row::Accepted(r) => r.text.len(),
                Row::Quarantined(q) => q.raw.len(),
            };
            Ok(())
        })
        .unwrap();
        assert_eq!(stats.rows_read, stats.accepted + stats.quarantined);
        std::hint::black_box(chars);
        stats.rows_read
    };

    let stats = keel_data::read_table(path, &opts).unwrap().stats;
    println!(
        "file {}: {:.1} MB, {} rows ({} accepted, {} quarantined, {} exact duplicates), {reps} repetitions",
        path.display(),
        len as f64 / 1e6,
        stats.rows_read,
        stats.accepted,
        stats.quarantined,
        stats.exact_duplicates
    );
    let timings = [
        time("csv ByteRecord (raw read)", reps, csv_bytes),
        time("csv StringRecord (UTF-8)", reps, csv_strings),
        time("keel ingest (stream)", reps, || keel_stream(&opts)),
        time("keel ingest, no normalisation", reps, || keel_stream(&raw_opts)),
        time("keel read_table (collect)", reps, || {
            let ing = keel_data::read_table(path, &opts).unwrap();
            ing.records.len() as u64 + ing.quarantined.len() as u64
        }),
    ];
    let mbps = |s: f64| len as f64 / 1e6 / s;
    let base = mbps(timings[0].secs[timings[0].secs.len() / 2]);
    println!("{:<32} {:>12} {:>10} {:>10} {:>16}", "reader", "rows", "median", "best", "median vs csv");
    for t in &timings {
        let median = mbps(t.secs[t.secs.len() / 2]);
        println!(
            "{:<32} {:>12} {:>5.0} MB/s {:>5.0} MB/s {:>15.2}x",
            t.name,
            t.rows,
            median,
            mbps(t.secs[0]),
            median / base
        );
    }
}
