use std::time::Instant;

use keel_embed::{Encoder, EncoderConfig};
use serde::Deserialize;

use crate::{cosine, encoder, model, shared_dir};

#[derive(Deserialize)]
struct Reference {
    text: String,
    n_tokens: usize,
    embedding: Vec<f32>,
}

fn references() -> Vec<Reference> {
    let path = shared_dir().join("reference/minilm-embeddings.jsonl");
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (set KEEL_SHARED)", path.display()));
    raw.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn reference() {
    let refs = references();
    assert!(refs.len() > 100, "only {} reference texts", refs.len());
    assert!(refs.iter().any(|r| r.text.is_empty()), "reference lacks the empty text");
    let enc = encoder();
    let texts: Vec<&str> = refs.iter().map(|r| r.text.as_str()).collect();

    let started = Instant::now();
    let got = enc.embed(&texts).unwrap();
    let secs = started.elapsed().as_secs_f64();

    assert_eq!(got.len(), refs.len());
    let mut min = (f64::INFINITY, "");
    let mut max_abs = 0f32;
    for (r, v) in refs.iter().zip(&got) {
        assert_eq!(v.len(), enc.dim());
        let c = cosine(v, &r.embedding);
        for (a, b) in v.iter().zip(&r.embedding) {
            max_abs = max_abs.max((a - b).abs());
        }
        if c < min.0 {
            min = (c, &r.text);
        }
        assert!(c >= 0.9999, "cosine {c} for {:?}", r.text);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm} for {:?}", r.text);
        assert_eq!(enc.count_tokens(&r.text).unwrap(), r.n_tokens, "token count for {:?}", r.text);
    }
    assert!(refs.iter().any(|r| r.n_tokens == enc.max_seq_len()), "no truncated reference");
    println!(
        "reference: {} texts, min cosine {:.9} (1 - min = {:.1e}, {:?}), max |Δ| {max_abs:.1e}, {secs:.2}s ({:.1} texts/s)",
        refs.len(),
        min.0,
        1.0 - min.0,
        min.1.chars().take(40).collect::<String>(),
        refs.len() as f64 / secs
    );
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

    let enc = encoder();
    let batched = enc.embed(&picked).unwrap();
    for (text, b) in picked.iter().zip(&batched) {
        let single = enc.embed(&[text]).unwrap();
        let c = cosine(&single[0], b);
        assert!(c > 0.99999, "cosine {c} for {text:?}");
    }
    // Output order is input order even though batches are sorted by length.
    let reversed: Vec<&str> = picked.iter().rev().copied().collect();
    let back = enc.embed(&reversed).unwrap();
    for (i, v) in back.iter().rev().enumerate() {
        assert!(cosine(v, &batched[i]) > 0.99999);
    }
}

#[test]
fn identity_and_shape() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Encoder>();
    let enc = encoder();
    assert_eq!(enc.id(), "all-MiniLM-L6-v2@53aa51172d14");
    assert_eq!(enc.dim(), 384);
    assert_eq!(enc.max_seq_len(), 256);
    assert!(enc.embed(&[]).unwrap().is_empty());
    // [CLS] [SEP]
    assert_eq!(enc.count_tokens("").unwrap(), 2);
}

#[test]
fn truncation_progress_and_threads() {
    let cfg = EncoderConfig { batch_size: 2, max_seq_len: Some(16), threads: Some(1) };
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
