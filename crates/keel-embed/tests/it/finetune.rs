//! Fine-tuning: tiny random models for determinism, resumption, LoRA artifacts and learning;
//! one check on the real model (forward parity with `Encoder`, loss going down, merged weights
//! served by the fp32 and int8 encoders).

use std::time::Instant;

use keel_embed::finetune::{
    BertWeights, Dims, FineTuneConfig, FineTuner, Lora, LoraConfig, Loss, Method, Pair, Proj, TokenIds,
    contrastive_pairs, tokenize,
};
use keel_embed::{Encoder, EncoderConfig, Precision};
use sha2::{Digest, Sha256};

use crate::{cosine, encoder, model};

const TINY: Dims =
    Dims { vocab: 40, hidden: 16, heads: 2, layers: 2, inter: 32, max_pos: 12, type_vocab: 2, layer_norm_eps: 1e-12 };

/// 24 texts of two classes: class 0 draws its words from ids 4..14, class 1 from 14..24; both
/// share ids 24..40. Each text is `[CLS] words [SEP]` (ids 1 and 2).
fn tiny_task() -> (Vec<TokenIds>, Vec<u8>) {
    let mut rng = keel_embed::finetune::SplitMix64::new(3);
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for i in 0..24 {
        let class = (i % 2) as u8;
        let n = 3 + rng.below(6);
        let mut ids = vec![1u32];
        for _ in 0..n {
            let id = if rng.below(2) == 0 {
                4 + 10 * u32::from(class) + rng.below(10) as u32
            } else {
                24 + rng.below(16) as u32
            };
            ids.push(id);
        }
        ids.push(2);
        texts.push(TokenIds { type_ids: vec![0; ids.len()], ids });
        labels.push(class);
    }
    (texts, labels)
}

fn tiny_cfg(method: Method, lr: f64, steps: u64) -> FineTuneConfig {
    FineTuneConfig { method, learning_rate: lr, warmup_steps: 2, threads: 1, seed: 4, ..FineTuneConfig::setfit(steps) }
}

fn lora_cfg() -> Method {
    Method::Lora(LoraConfig { rank: 4, alpha: 8.0, targets: vec![Proj::Query, Proj::Value, Proj::FfIn] })
}

fn train(tuner: &mut FineTuner, texts: &[TokenIds], pairs: &[Pair], steps: std::ops::Range<usize>) -> Vec<f32> {
    steps.map(|s| tuner.step(texts, &pairs[(s * 8) % pairs.len()..][..8]).unwrap()).collect()
}

#[test]
fn tiny_training_lowers_the_loss() {
    let (texts, labels) = tiny_task();
    let pairs = contrastive_pairs(&labels, 160, 1);
    assert_eq!(pairs.len(), 160);
    for (method, lr) in [(Method::Full { embeddings: true }, 3e-3), (lora_cfg(), 1e-2)] {
        for loss in [Loss::CosineSimilarity, Loss::MultipleNegativesRanking { scale: 20.0 }] {
            let weights = BertWeights::random(TINY, 0.3, 9).unwrap();
            let mut tuner =
                FineTuner::new(weights, FineTuneConfig { loss, ..tiny_cfg(method.clone(), lr, 80) }).unwrap();
            let before = tuner.eval_loss(&texts, &pairs, 16).unwrap();
            train(&mut tuner, &texts, &pairs, 0..80);
            let after = tuner.eval_loss(&texts, &pairs, 16).unwrap();
            println!("{} {loss:?}: loss {before:.4} -> {after:.4}", method.describe());
            assert!(after < 0.7 * before, "{} {loss:?}: loss {before} -> {after}", method.describe());
        }
    }
}

#[test]
fn same_seed_same_bytes_and_resuming_changes_nothing() {
    let (texts, labels) = tiny_task();
    let pairs = contrastive_pairs(&labels, 64, 2);
    for method in [Method::Full { embeddings: true }, Method::Full { embeddings: false }, lora_cfg()] {
        let cfg = tiny_cfg(method.clone(), 1e-2, 8);
        let run = || {
            let mut t = FineTuner::new(BertWeights::random(TINY, 0.3, 9).unwrap(), cfg.clone()).unwrap();
            let losses = train(&mut t, &texts, &pairs, 0..8);
            (t, losses)
        };
        let (a, la) = run();
        let (b, lb) = run();
        assert_eq!(la, lb);
        assert_eq!(a.checkpoint(), b.checkpoint(), "{}", method.describe());
        // Two threads (sequences' attention on separate threads) give the same bits.
        let mut two =
            FineTuner::new(BertWeights::random(TINY, 0.3, 9).unwrap(), FineTuneConfig { threads: 2, ..cfg.clone() })
                .unwrap();
        assert_eq!(train(&mut two, &texts, &pairs, 0..8), la);
        assert_eq!(two.checkpoint(), a.checkpoint(), "{}", method.describe());
        assert_ne!(a.weights().to_safetensors().len(), 0);

        // Stop after 3 updates, checkpoint, resume in a fresh tuner, finish: the same state.
        let mut first = FineTuner::new(BertWeights::random(TINY, 0.3, 9).unwrap(), cfg.clone()).unwrap();
        train(&mut first, &texts, &pairs, 0..3);
        let ckpt = first.checkpoint();
        drop(first);
        let mut resumed = FineTuner::new(BertWeights::random(TINY, 0.3, 9).unwrap(), cfg.clone()).unwrap();
        resumed.restore(&ckpt).unwrap();
        assert_eq!(resumed.steps_done(), 3);
        let lr = train(&mut resumed, &texts, &pairs, 3..8);
        assert_eq!(lr, la[3..], "{}", method.describe());
        assert_eq!(resumed.checkpoint(), a.checkpoint(), "{}", method.describe());
        assert_eq!(resumed.merged_weights(), a.merged_weights());
        if let (Some(x), Some(y)) = (resumed.lora(), a.lora()) {
            assert_eq!(x.to_bytes("base"), y.to_bytes("base"));
        }

        // A checkpoint of another method is refused.
        let other = if matches!(method, Method::Lora(_)) { Method::Full { embeddings: true } } else { lora_cfg() };
        let mut wrong = FineTuner::new(BertWeights::random(TINY, 0.3, 9).unwrap(), tiny_cfg(other, 1e-2, 8)).unwrap();
        assert!(wrong.restore(&ckpt).is_err());
    }
}

#[test]
fn lora_artifact_round_trips_and_merges() {
    let (texts, labels) = tiny_task();
    let pairs = contrastive_pairs(&labels, 64, 2);
    let base = BertWeights::random(TINY, 0.3, 9).unwrap();
    let mut tuner = FineTuner::new(base.clone(), tiny_cfg(lora_cfg(), 1e-2, 8)).unwrap();
    train(&mut tuner, &texts, &pairs, 0..8);
    let lora = tuner.lora().unwrap();
    assert!(lora.adapters.iter().all(|a| a.b.iter().any(|&v| v != 0.0)), "B trained");
    assert_eq!(lora.adapters.len(), 2 * 3);

    let bytes = lora.to_bytes("tiny@0123");
    let (back, base_id) = Lora::from_bytes(&bytes, &TINY).unwrap();
    assert_eq!((&back, base_id.as_str()), (lora, "tiny@0123"));
    assert_eq!(back.to_bytes("tiny@0123"), bytes);
    let params: usize = lora.adapters.iter().map(|a| a.a.len() + a.b.len()).sum();
    assert!(bytes.len() < 4 * params + 2048, "artifact {} bytes for {params} values", bytes.len());
    assert!(Lora::from_bytes(&bytes[..bytes.len() - 4], &TINY).is_err());
    assert!(Lora::from_bytes(&bytes, &Dims { hidden: 8, ..TINY }).is_err());

    // The merged weights, run without adapters, embed as the adapters do.
    let mut merged = base.clone();
    back.merge_into(&mut merged).unwrap();
    assert_eq!(merged, tuner.merged_weights());
    assert_ne!(merged, base);
    let plain = FineTuner::new(merged, tiny_cfg(Method::Full { embeddings: false }, 1e-3, 1)).unwrap();
    for (u, m) in tuner.embed(&texts).iter().zip(plain.embed(&texts)) {
        assert!(cosine(u, &m) > 0.99999, "unmerged vs merged cosine {}", cosine(u, &m));
    }
}

/// Minimal CSV for the quickstart file: quoted fields with doubled quotes, no newlines inside.
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                out.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out
}

/// The first 32 positive and 32 negative quickstart sentences.
fn quickstart_64() -> (Vec<String>, Vec<String>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sentiment/movie_sentences.csv");
    let raw = std::fs::read_to_string(path).unwrap();
    let mut lines = raw.lines();
    let header = csv_fields(lines.next().unwrap());
    let (li, ti) =
        (header.iter().position(|h| h == "label").unwrap(), header.iter().position(|h| h == "text").unwrap());
    let (mut texts, mut labels) = (Vec::new(), Vec::new());
    let mut count = [0, 0];
    for line in lines {
        let f = csv_fields(line);
        let k = match f[li].as_str() {
            "positive" => 0,
            "negative" => 1,
            _ => continue,
        };
        if count[k] < 32 {
            count[k] += 1;
            texts.push(f[ti].clone());
            labels.push(f[li].clone());
        }
    }
    assert_eq!(texts.len(), 64);
    (texts, labels)
}

#[test]
fn real_model_forward_training_and_merged_encoders() {
    let enc = encoder();
    let weights = BertWeights::load(model()).unwrap();

    // 1. The training forward matches the inference encoder.
    let probe = ["A short sentence.", "", "Keel fine-tunes its encoder on the CPU, one contrastive pair at a time."];
    let probe_ids = tokenize(enc, &probe).unwrap();
    let want = enc.embed(&probe).unwrap();
    let threads = 2;
    let frozen = FineTuner::new(weights.clone(), FineTuneConfig { threads, ..FineTuneConfig::setfit(1) }).unwrap();
    for ((got, want), text) in frozen.embed(&probe_ids).iter().zip(&want).zip(probe) {
        let c = cosine(got, want);
        println!("training forward vs Encoder: cosine {c:.9} for {text:?}");
        assert!(c >= 0.9999, "cosine {c} for {text:?}");
    }
    drop(frozen);

    // 2. A few dozen LoRA steps on 64 quickstart sentences lower the training loss.
    let (texts, labels) = quickstart_64();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = tokenize(enc, &refs).unwrap();
    let (steps, batch) = (20, 8);
    let pairs = contrastive_pairs(&labels, batch * steps, 7);
    let cfg =
        FineTuneConfig { threads, learning_rate: 1e-3, warmup_steps: 2, seed: 1, ..FineTuneConfig::lora(steps as u64) };
    let mut tuner = FineTuner::new(weights.clone(), cfg).unwrap();
    let probe_pairs = &pairs[..48];
    let before = tuner.eval_loss(&ids, probe_pairs, 16).unwrap();
    let started = Instant::now();
    let mut losses = Vec::new();
    for chunk in pairs.chunks(batch) {
        losses.push(tuner.step(&ids, chunk).unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let after = tuner.eval_loss(&ids, probe_pairs, 16).unwrap();
    let first: f32 = losses[..6].iter().sum::<f32>() / 6.0;
    let last: f32 = losses[steps - 6..].iter().sum::<f32>() / 6.0;
    println!(
        "LoRA {steps} steps of {batch} pairs in {secs:.1}s: loss on 48 training pairs {before:.4} -> {after:.4}; batch losses first 6 {first:.4}, last 6 {last:.4}"
    );
    assert!(after < 0.8 * before, "training loss {before} -> {after}");

    // One full fine-tuning step gives the same bits on one thread and on two (the matrix
    // products split their output, not their sums).
    let one_step = |threads| {
        let cfg = FineTuneConfig { threads, method: Method::Full { embeddings: false }, ..FineTuneConfig::setfit(4) };
        let mut t = FineTuner::new(weights.clone(), cfg).unwrap();
        let loss = t.step(&ids, &pairs[..8]).unwrap();
        (loss, t.checkpoint())
    };
    assert!(one_step(1) == one_step(2), "one thread and two differ");

    // 3. The merged weights served by the inference encoder agree with the training forward.
    let lora = tuner.lora().unwrap();
    let bytes = lora.to_bytes(enc.id());
    let merged = tuner.merged_weights().to_safetensors();
    let unmerged = tuner.embed(&ids);
    assert!(Encoder::load_with_weights(model(), EncoderConfig::default(), &merged, "not a tag").is_err());
    for (precision, bound) in [(Precision::F32, 0.9999), (Precision::Int8, 0.99)] {
        let cfg = EncoderConfig { precision, threads: Some(threads), ..EncoderConfig::default() };
        let tag = format!("lora-{}", &hex::encode(Sha256::digest(&bytes))[..12]);
        let tuned = Encoder::load_with_weights(model(), cfg, &merged, &tag).unwrap();
        assert!(tuned.id().starts_with(&format!("{}+lora-", enc.id())), "{}", tuned.id());
        let got = tuned.embed(&refs).unwrap();
        let worst = got.iter().zip(&unmerged).map(|(g, u)| cosine(g, u)).fold(1.0, f64::min);
        let moved = got.iter().zip(enc.embed(&refs).unwrap()).map(|(g, b)| cosine(g, &b)).fold(1.0, f64::min);
        println!(
            "{}: worst cosine to the unmerged training forward {worst:.6}; to the base encoder {moved:.4}",
            tuned.id()
        );
        assert!(worst >= bound, "{precision:?}: cosine {worst}");
        assert!(moved < 0.9999, "the merged encoder embeds as the base one (min cosine {moved})");
    }
}

/// CPU time of this process so far (user + system, Linux), to tell compute from waiting on a
/// busy machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// Forward + backward + update throughput on the real model at 16 sentences per step: a
/// measurement, not a check. `KEEL_FT_THREADS` sets the threads (default: all cores). Run with
/// `cargo test -p keel-embed --test it finetune_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn finetune_throughput() {
    let enc = encoder();
    let weights = BertWeights::load(model()).unwrap();
    let (texts, labels) = quickstart_64();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = tokenize(enc, &refs).unwrap();
    let steps = 6;
    let pairs = contrastive_pairs(&labels, 8 * (steps + 1), 3);
    let tokens: usize = pairs.iter().map(|p| ids[p.a].ids.len() + ids[p.b].ids.len()).sum();
    println!("{:.1} tokens per sentence", tokens as f64 / (2 * pairs.len()) as f64);
    let threads = std::env::var("KEEL_FT_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // For scale: the inference encoder's forward alone over the same sentences.
    let infer =
        Encoder::load(model(), EncoderConfig { batch_size: 16, threads: Some(threads), ..EncoderConfig::default() })
            .unwrap();
    let sentences: Vec<&str> = pairs.iter().flat_map(|p| [refs[p.a], refs[p.b]]).collect();
    infer.embed(&sentences[..16]).unwrap();
    let (started, cpu) = (Instant::now(), cpu_seconds());
    infer.embed(&sentences[16..]).unwrap();
    let (secs, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    println!(
        "inference forward only ({threads} threads): {:.1} sentences/s ({:.0} ms of CPU per 16)",
        (16 * steps) as f64 / secs,
        1000.0 * cpu / steps as f64
    );
    for method in
        [Method::Full { embeddings: true }, Method::Full { embeddings: false }, Method::Lora(LoraConfig::default())]
    {
        let cfg = FineTuneConfig { method: method.clone(), threads, ..FineTuneConfig::setfit(100) };
        let mut tuner = FineTuner::new(weights.clone(), cfg).unwrap();
        tuner.step(&ids, &pairs[..8]).unwrap();
        let (started, cpu) = (Instant::now(), cpu_seconds());
        for batch in pairs[8..].chunks(8) {
            tuner.step(&ids, batch).unwrap();
        }
        let (secs, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        println!(
            "{} ({threads} threads): {:.1} sentences/s, {:.0} ms per step of 16 sentences ({:.0} ms of CPU)",
            method.describe(),
            (16 * steps) as f64 / secs,
            1000.0 * secs / steps as f64,
            1000.0 * cpu / steps as f64,
        );
    }
}
