//! Benchmark driver for scripts/bench-monitor (not part of the library: this file does IO).
//!
//! `bench export DIR ROWS`: embeds real texts with all-MiniLM-L6-v2 (1,500 movie sentences as
//! the training split, 1,000 held-out sentences and 1,000 Guardian headlines), builds the
//! reference profile, and writes `DIR/reference.csv` (the training rows) and `DIR/current.csv`
//! (ROWS rows drawn with replacement, 70% held-out sentences and 30% headlines): every per-row
//! statistic and the 17 projection features, the numbers both Keel and Evidently then read.
//!
//! `bench compare DIR`: reads both files and runs `keel_monitor::compare` on them; prints one
//! JSON line with the timings.
// A benchmark program run by hand: any failure should stop it with a panic and its message.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use keel_core::Matrix;
use keel_monitor::{Column, MonitorConfig, Observation, PROFILE_FORMAT, Profile, ProfileConfig, Rows};
use keel_test_support::{shared_file, shared_text};

const NUMERIC: [&str; 4] = ["text_chars", "text_tokens", "oov_rate", "confidence"];

fn key(t: &str) -> String {
    let mut h = keel_core::Hasher::new();
    h.field(b"bench").field(t.as_bytes());
    h.finish().as_str().to_owned()
}

fn write_csv(path: &Path, o: &Observation, labels: &[String], pick: &[usize]) {
    let f = o.features.len() / o.n;
    let mut s = String::new();
    s.push_str(&NUMERIC.join(","));
    s.push_str(",predicted_class");
    for j in 0..f {
        let _ = write!(s, ",f{j}");
    }
    s.push('\n');
    for &i in pick {
        for name in NUMERIC {
            let _ = write!(s, "{},", o.column(name).unwrap().values[i]);
        }
        s.push_str(&labels[o.predicted[i] as usize]);
        for v in &o.features[i * f..(i + 1) * f] {
            let _ = write!(s, ",{v}");
        }
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn export(dir: &Path, rows: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let raw = shared_text("data/vader-sentiment/movieReviewSnippets_GroundTruth.txt");
    let mut movie: Vec<(String, usize)> = raw
        .lines()
        .filter_map(|l| {
            let mut f = l.trim_end_matches('\r').splitn(3, '\t');
            let (_, score, text) = (f.next()?, f.next()?.parse::<f64>().ok()?, f.next()?.trim().to_owned());
            (score.abs() >= 0.5 && !text.is_empty()).then_some((text, usize::from(score > 0.0)))
        })
        .collect();
    movie.sort_by_cached_key(|r| key(&r.0));
    movie.dedup_by(|a, b| a.0 == b.0);
    let opts = keel_data::ReadOptions { text_col: "Text".into(), label_col: Some("Date".into()), ..Default::default() };
    let mut news: Vec<String> =
        keel_data::read_table(&shared_file("data/scattertext/guardian_headlines.csv.bz2"), &opts)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.text)
            .collect();
    news.sort_by_cached_key(|t| key(t));
    news.dedup();
    news.truncate(1000);
    let train: Vec<String> = movie[..1500].iter().map(|r| r.0.clone()).collect();
    let y: Vec<usize> = movie[..1500].iter().map(|r| r.1).collect();
    let pool: Vec<String> = movie[1500..2500].iter().map(|r| r.0.clone()).chain(news).collect();

    let model = keel_embed::pull("all-MiniLM-L6-v2", &keel_embed::PullOptions::from_env()).unwrap();
    let enc = keel_embed::Encoder::load(&model, keel_embed::EncoderConfig::default()).unwrap();
    let embed = |t: &[String]| {
        let refs: Vec<&str> = t.iter().map(String::as_str).collect();
        let v = enc.embed(&refs).unwrap();
        let tokens: Vec<usize> = refs.iter().map(|s| enc.count_tokens(s).unwrap()).collect();
        (Matrix::from_rows(&v, enc.dim()).unwrap(), tokens)
    };
    let (tx, tt) = embed(&train);
    let (px, pt) = embed(&pool);
    let labels = vec!["negative".to_owned(), "positive".to_owned()];
    let (head, _) = keel_train::fit(&tx, &y, labels.clone(), &keel_train::LrConfig::default()).unwrap();
    let tp = head.predict_proba_batch(&tx);
    let pp = head.predict_proba_batch(&px);
    let profile = Profile::build(
        &Rows { texts: &train, tokens: Some(&tt), embeddings: &tx, proba: &tp },
        &labels,
        None,
        &ProfileConfig::default(),
    )
    .unwrap();
    let reference =
        Observation::new(&profile, &Rows { texts: &train, tokens: Some(&tt), embeddings: &tx, proba: &tp }).unwrap();
    let current =
        Observation::new(&profile, &Rows { texts: &pool, tokens: Some(&pt), embeddings: &px, proba: &pp }).unwrap();
    write_csv(&dir.join("reference.csv"), &reference, &labels, &(0..reference.n).collect::<Vec<_>>());
    // 70% held-out sentences (pool rows 0..1000), 30% headlines (1000..2000), drawn with replacement.
    let mut rng = keel_core::SplitMix64::new(0x6b65_656c);
    let mut next = || rng.next_u64();
    let pick: Vec<usize> = (0..rows)
        .map(|_| if next() % 10 < 7 { (next() % 1000) as usize } else { 1000 + (next() % 1000) as usize })
        .collect();
    write_csv(&dir.join("current.csv"), &current, &labels, &pick);
    eprintln!("wrote {} reference and {rows} current rows to {}", reference.n, dir.display());
}

struct Table {
    numeric: Vec<Vec<f64>>,
    predicted: Vec<String>,
    features: Vec<f32>,
    n: usize,
    f: usize,
}

fn read(path: &Path) -> Table {
    let raw = std::fs::read_to_string(path).unwrap();
    let mut lines = raw.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let f = header.len() - NUMERIC.len() - 1;
    let mut t =
        Table { numeric: vec![Vec::new(); NUMERIC.len()], predicted: Vec::new(), features: Vec::new(), n: 0, f };
    for l in lines {
        let cells: Vec<&str> = l.split(',').collect();
        for (j, c) in cells[..NUMERIC.len()].iter().enumerate() {
            t.numeric[j].push(c.parse().unwrap());
        }
        t.predicted.push(cells[NUMERIC.len()].to_owned());
        t.features.extend(cells[NUMERIC.len() + 1..].iter().map(|c| c.parse::<f32>().unwrap()));
        t.n += 1;
    }
    t
}

fn compare(dir: &Path) {
    let start = Instant::now();
    let r = read(&dir.join("reference.csv"));
    let c = read(&dir.join("current.csv"));
    let read_s = start.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let mut labels: Vec<String> = r.predicted.iter().chain(&c.predicted).cloned().collect();
    labels.sort();
    labels.dedup();
    let idx = |v: &[String]| v.iter().map(|p| labels.binary_search(p).unwrap() as u32).collect::<Vec<u32>>();
    let columns = |t: &Table| -> Vec<Column> {
        NUMERIC.iter().zip(&t.numeric).map(|(n, v)| Column { name: (*n).to_owned(), values: v.clone() }).collect()
    };
    let k = r.f - 1;
    let sample_rows = r.n.min(1000);
    let sample: Vec<f32> = r.features[..sample_rows * r.f].to_vec();
    let feature_mean: Vec<f64> = (0..r.f)
        .map(|j| sample.iter().skip(j).step_by(r.f).map(|&v| f64::from(v)).sum::<f64>() / sample_rows as f64)
        .collect();
    let feature_std: Vec<f64> = (0..r.f)
        .map(|j| {
            (sample.iter().skip(j).step_by(r.f).map(|&v| (f64::from(v) - feature_mean[j]).powi(2)).sum::<f64>()
                / sample_rows as f64)
                .sqrt()
        })
        .collect();
    let profile = Profile {
        format: PROFILE_FORMAT,
        n_rows: r.n as u64,
        labels: labels.clone(),
        dim: 0,
        mean: Vec::new(),
        basis: Vec::new(),
        components: k,
        explained_variance: Vec::new(),
        total_variance: 0.0,
        feature_mean,
        feature_std,
        sample,
        sample_rows,
        columns: columns(&r),
        predicted: idx(&r.predicted),
        vocabulary: Vec::new(),
        evaluation: None,
        config: ProfileConfig::default(),
    };
    let current =
        Observation { n: c.n, columns: columns(&c), predicted: idx(&c.predicted), features: c.features.clone() };
    let report = keel_monitor::compare(&profile, &current, None, &MonitorConfig::default());
    let compute_s = t0.elapsed().as_secs_f64();
    let cols: Vec<String> = report
        .columns
        .iter()
        .map(|c| {
            format!(
                "{{\"column\":\"{}\",\"method\":\"{}\",\"statistic\":{},\"drifted\":{}}}",
                c.column, c.method, c.statistic, c.drifted
            )
        })
        .collect();
    println!(
        "{{\"tool\":\"keel\",\"reference_rows\":{},\"current_rows\":{},\"read_s\":{read_s:.3},\"compute_s\":{compute_s:.3},\"total_s\":{:.3},\"domain_auc\":{},\"mmd_p\":{},\"dataset_drift\":{},\"drift\":{},\"columns\":[{}]}}",
        r.n,
        c.n,
        start.elapsed().as_secs_f64(),
        report.embedding.domain_auc,
        report.embedding.mmd_p_value,
        report.dataset_drift,
        report.verdict.drift,
        cols.join(",")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("export") => export(Path::new(&args[2]), args.get(3).map_or(100_000, |s| s.parse().unwrap())),
        Some("compare") => compare(Path::new(&args[2])),
        _ => eprintln!("usage: bench export DIR [ROWS] | bench compare DIR"),
    }
}
