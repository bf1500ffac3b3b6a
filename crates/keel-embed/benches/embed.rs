//! Encoder throughput and latency: `cargo bench -p keel-embed`.
//!
//! Throughput: sentences/s embedding 2,000 movie-review sentences at batch 32 (median of
//! several rounds) for Keel fp32, Keel int8 and candle's BERT (the in-process baseline).
//! Latency: batch 1, ~20-token sentences, p50 / p99 per mode.
//!
//! Environment: `KEEL_BENCH_TEXTS` (one text per line; default: the first 2,000 sentences of
//! shared/data/vader-sentiment/movieReviewSnippets_GroundTruth.txt), `KEEL_BENCH_ROUNDS` (5),
//! `KEEL_BENCH_MODES` (`f32,int8,candle`), `KEEL_BENCH_JSON` (also write results there),
//! `KEEL_SHARED` (the shared folder), plus the model lookup of `PullOptions::from_env`.
// A benchmark program run by hand: any failure should stop it with a panic and its message.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use keel_embed::{Encoder, EncoderConfig, Kernels, Precision, PullOptions, pull};
use keel_test_support::shared_text;

fn texts() -> Vec<String> {
    if let Some(path) = std::env::var_os("KEEL_BENCH_TEXTS") {
        let raw = std::fs::read_to_string(&path).expect("KEEL_BENCH_TEXTS");
        return raw.lines().map(str::to_owned).collect();
    }
    let raw = shared_text("data/vader-sentiment/movieReviewSnippets_GroundTruth.txt");
    raw.lines().filter_map(|l| l.trim_end_matches('\r').splitn(3, '\t').nth(2).map(str::to_owned)).take(2000).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Row {
    mode: String,
    id: String,
    kernels: &'static str,
    rate: f64,
    rounds: Vec<f64>,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let rounds: usize = std::env::var("KEEL_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let modes = std::env::var("KEEL_BENCH_MODES").unwrap_or_else(|_| "f32,int8,candle".into());
    let model = pull("all-MiniLM-L6-v2", &PullOptions::from_env()).expect("pull all-MiniLM-L6-v2");

    let mut rows = Vec::new();
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (precision, kernels) = match mode {
            "f32" => (Precision::F32, Kernels::Auto),
            "int8" => (Precision::Int8, Kernels::Auto),
            "f32-portable" => (Precision::F32, Kernels::Portable),
            "int8-portable" => (Precision::Int8, Kernels::Portable),
            "candle" => (Precision::F32, Kernels::Candle),
            other => panic!("unknown mode {other:?}"),
        };
        let cfg = EncoderConfig { batch_size: 32, precision, kernels, ..EncoderConfig::default() };
        let enc = Encoder::load(&model, cfg).expect("load encoder");
        enc.embed(&refs[..64.min(refs.len())]).unwrap();

        // The baseline is slow: fewer rounds.
        let n_rounds = if mode == "candle" { rounds.min(2) } else { rounds };
        let mut rates = Vec::new();
        for _ in 0..n_rounds {
            let t = Instant::now();
            let v = enc.embed(&refs).unwrap();
            rates.push(refs.len() as f64 / t.elapsed().as_secs_f64());
            assert_eq!(v.len(), refs.len());
        }
        let rate = median(&mut rates.clone());

        // Batch-1 latency on ~20-token sentences.
        let mut short: Vec<&str> =
            refs.iter().copied().filter(|t| (18..=22).contains(&enc.count_tokens(t).unwrap())).take(100).collect();
        if short.is_empty() {
            // Texts of another shape (long documents): time batch 1 on the 100 shortest instead.
            eprintln!("no 18-22-token texts among KEEL_BENCH_TEXTS: batch-1 latency on the 100 shortest");
            short = refs.clone();
            short.sort_by_key(|t| t.len());
            short.truncate(100);
        }
        let iters = if mode == "candle" { 100 } else { 300 };
        let mut lat = Vec::with_capacity(iters);
        for i in 0..iters + 20 {
            let t = Instant::now();
            enc.embed(&[short[i % short.len()]]).unwrap();
            if i >= 20 {
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        lat.sort_by(f64::total_cmp);
        let row = Row {
            mode: mode.to_string(),
            id: enc.id().to_string(),
            kernels: enc.kernels(),
            rate,
            rounds: rates,
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
        };
        eprintln!(
            "{:<8} {:>8.1} sentences/s  (rounds: {})  batch-1 p50 {:.2} ms p99 {:.2} ms  [{} on {}, {} threads]",
            row.mode,
            row.rate,
            row.rounds.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>().join(" "),
            row.p50_ms,
            row.p99_ms,
            row.id,
            row.kernels,
            enc.threads()
        );
        rows.push(row);
    }

    let base = rows.iter().find(|r| r.mode == "candle").map(|r| r.rate);
    println!("\n{} texts, batch 32, median of {rounds} rounds (candle: at most 2)", refs.len());
    println!("| mode | kernels | sentences/s | vs candle | batch-1 p50 ms | batch-1 p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    for r in &rows {
        let ratio = base.map_or("-".into(), |b| format!("{:.2}x", r.rate / b));
        println!("| {} | {} | {:.1} | {ratio} | {:.2} | {:.2} |", r.mode, r.kernels, r.rate, r.p50_ms, r.p99_ms);
    }

    if let Some(path) = std::env::var_os("KEEL_BENCH_JSON") {
        let json: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|r| {
                (
                    r.mode.clone(),
                    serde_json::json!({
                        "id": r.id, "kernels": r.kernels, "median": r.rate, "rounds": r.rounds,
                        "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
                    }),
                )
            })
            .collect();
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).expect("write KEEL_BENCH_JSON");
    }
}
