use std::time::Instant;

use keel_embed::{Encoder, EncoderConfig, Kernels, Precision};
use serde::Deserialize;

use crate::{cosine, encoder, model, shared_text};

#[derive(Deserialize)]
struct Reference {
    text: String,
    n_tokens: usize,
    embedding: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let raw = shared_text("reference/minilm-embeddings.jsonl");
    raw.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Embeds every reference text with `enc` and asserts each cosine is at least `bound`.
fn check_reference(enc: &Encoder, bound: f64) {
    let refs = references();
    assert!(refs.len() > 100, "only {} reference texts", refs.len());
    assert!(refs.iter().any(|r| r.text.is_empty()), "reference lacks the empty text");
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();

    let started = Instant::now();
    let got = enc.embed(&texts).unwrap();
    let secs = started.elapsed().as_secs_f64();

    assert_eq!(got.len(), refs.len());
    let mut min = (f64::INFINITY, "");
    let mut max_abs = 0f32;
    let mut worst: Vec<(f64, &str)> =
        refs.iter().zip(&got).map(|(r, v)| (cosine(v, &r.embedding), r.text.as_str())).collect();
    worst.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (c, t) in worst.iter().take(5) {
        println!("  worst {c:.6} {:?} ({} chars)", t.chars().take(30).collect::<String>(), t.len());
    }
    for (r, v) in refs.iter().zip(&got) {
        assert_eq!(v.len(), enc.dim());
        let c = cosine(v, &r.embedding);
        for (a, b) in v.iter().zip(&r.embedding) {
            max_abs = max_abs.max((a - b).abs());
        }
        if c < min.0 {
            min = (c, &r.text);
        }
        assert!(c >= bound, "{} ({}): cosine {c} for {:?}", enc.id(), enc.kernels(), r.text);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm} for {:?}", r.text);
        assert_eq!(enc.count_tokens(&r.text).unwrap(), r.n_tokens, "token count for {:?}", r.text);
    }
    assert!(refs.iter().any(|r| r.n_tokens == enc.max_seq_len()), "no truncated reference");
    let truncated = refs.iter().filter(|r| r.n_tokens == enc.max_seq_len()).count() as u64;
    assert!(enc.truncated_count() >= truncated.saturating_sub(1), "truncations not counted");
    println!(
        "reference {} ({}): {} texts, min cosine {:.9} (1 - min = {:.1e}, {:?}), max |Δ| {max_abs:.1e}, {secs:.2}s ({:.1} texts/s)",
        enc.id(),
        enc.kernels(),
        refs.len(),
        min.0,
        1.0 - min.0,
        min.1.chars().take(40).collect::<String>(),
        refs.len() as f64 / secs
    );
}

fn load(precision: Precision, kernels: Kernels) -> Encoder {
    Encoder::load(model(), EncoderConfig { precision, kernels, ..EncoderConfig::default() }).unwrap()
}

#[test]
fn reference_f32() {
    check_reference(encoder(), 0.9999);
}

#[test]
fn reference_f32_portable_kernels() {
    let enc = load(Precision::F32, Kernels::Portable);
    assert_eq!(enc.kernels(), "portable");
    check_reference(&enc, 0.9999);
}

#[test]
fn reference_int8() {
    let enc = load(Precision::Int8, Kernels::Auto);
    check_reference(&enc, 0.99);
}

#[test]
fn reference_int8_portable_kernels() {
    let enc = load(Precision::Int8, Kernels::Portable);
    assert_eq!(enc.kernels(), "portable");
    check_reference(&enc, 0.99);
}

#[test]
fn candle_baseline_agrees() {
    let enc = load(Precision::F32, Kernels::Candle);
    assert_eq!(enc.kernels(), "candle");
    assert!(
        Encoder::load(
            model(),
            EncoderConfig { precision: Precision::Int8, kernels: Kernels::Candle, ..EncoderConfig::default() }
        )
        .is_err()
    );
    let refs = references();
    let texts: Vec<&str> = refs.iter().step_by(10).map(|r| r.text.as_str()).collect();
    let a = enc.embed(&texts).unwrap();
    let b = encoder().embed(&texts).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!(cosine(x, y) > 0.9999);
    }
}

#[test]
fn batching_does_not_change_embeddings() {
    let refs = references();
    // Mixed lengths: empty, short, the longest (truncated) and a few in between.
    let mut by_len: Vec<&Reference> = refs.iter().collect();
    by_len.sort_by_key(|r| r.n_tokens);
    let step = by_len.len() / 7;
    let picked: Vec<&str> = (0..8)
        .map(|i| by_len[(i * step).min(by_len.len() - 1)].text.as_str())
        .chain([by_len[by_len.len() - 1].text.as_str()])
        .collect();
    assert!(picked.contains(&""));

    let int8 = load(Precision::Int8, Kernels::Auto);
    let two =
        Encoder::load(model(), EncoderConfig { batch_size: 2, threads: Some(2), ..EncoderConfig::default() }).unwrap();
    for enc in [encoder(), &int8, &two] {
        let batched = enc.embed(&picked).unwrap();
        for (text, b) in picked.iter().zip(&batched) {
            let single = enc.embed(&[text]).unwrap();
            let c = cosine(&single[0], b);
            assert!(c > 0.99999, "{}: cosine {c} for {text:?}", enc.id());
        }
        // Output order is input order even though batches are sorted by length.
        let reversed: Vec<&str> = picked.iter().rev().copied().collect();
        let back = enc.embed(&reversed).unwrap();
        for (i, v) in back.iter().rev().enumerate() {
            assert!(cosine(v, &batched[i]) > 0.99999);
        }
    }
    // Many texts: several tokenizer windows, several batches in parallel.
    let many: Vec<&str> = refs.iter().cycle().take(700).map(|r| r.text.as_str()).collect();
    let got = two.embed(&many).unwrap();
    let want = encoder().embed(&many[..refs.len()]).unwrap();
    for (i, v) in got.iter().enumerate() {
        assert!(cosine(v, &want[i % refs.len()]) > 0.99999, "text {i}");
    }
}

#[test]
fn identity_and_shape() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Encoder>();
    let enc = encoder();
    assert_eq!(enc.id(), "all-MiniLM-L6-v2@53aa51172d14");
    assert_eq!(enc.precision(), Precision::F32);
    let int8 = load(Precision::Int8, Kernels::Auto);
    assert_eq!(int8.id(), "all-MiniLM-L6-v2@53aa51172d14+int8");
    assert_eq!(int8.precision(), Precision::Int8);
    assert_eq!(enc.dim(), 384);
    assert_eq!(enc.max_seq_len(), 256);
    assert!(enc.embed(&[]).unwrap().is_empty());
    // [CLS] [SEP]
    assert_eq!(enc.count_tokens("").unwrap(), 2);
}

#[test]
fn truncation_progress_and_threads() {
    let cfg = EncoderConfig { batch_size: 2, max_seq_len: Some(16), threads: Some(1), ..EncoderConfig::default() };
    let enc = Encoder::load(model(), cfg).unwrap();
    let long = "the quick brown fox jumps over the lazy dog ".repeat(10);
    let texts = ["short text", long.as_str(), "", "another one", long.as_str()];

    let mut calls = Vec::new();
    let got = enc.embed_with_progress(&texts, &mut |done| calls.push(done)).unwrap();
    assert_eq!(calls, [2, 4, 5]);
    assert_eq!(enc.truncated_count(), 2);
    assert_eq!(enc.count_tokens(&long).unwrap(), 16);
    assert_eq!(enc.count_tokens("short text").unwrap(), 4);

    // Truncation keeps the first 14 word pieces: same as embedding exactly that prefix.
    let prefix = "the quick brown fox jumps over the lazy dog the quick brown fox jumps";
    assert_eq!(enc.count_tokens(prefix).unwrap(), 16);
    let p = enc.embed(&[prefix]).unwrap();
    assert!(cosine(&p[0], &got[1]) > 0.99999);
    assert_eq!(enc.truncated_count(), 2, "exactly 16 tokens is not truncated");

    // Short inputs are unaffected by max_seq_len and by the thread count.
    let default = crate::encoder().embed(&["short text"]).unwrap();
    assert!(cosine(&default[0], &got[0]) > 0.99999);

    let err =
        Encoder::load(model(), EncoderConfig { max_seq_len: Some(100_000), ..EncoderConfig::default() }).unwrap_err();
    assert!(err.to_string().contains("max_seq_len 100000"), "{err}");
}
