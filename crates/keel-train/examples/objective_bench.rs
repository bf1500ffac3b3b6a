//! Time of one objective evaluation (loss + gradient) on embeddings in JSONL, single-threaded,
//! for the kernel this CPU runs and for the portable one: the fastest of `ROUNDS` evaluations.
//!
//!     cargo run --release -p keel-train --example objective_bench -- train.jsonl [ROUNDS]
// A benchmark program run by hand: any failure should stop it with a panic and its message.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::time::Instant;

use keel_core::Matrix;
use keel_train::Objective;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: objective_bench TRAIN.jsonl [ROUNDS]");
    let rounds: usize = args.get(2).map_or(20, |r| r.parse().expect("ROUNDS is a number"));
    let f = std::io::BufReader::new(std::fs::File::open(path).expect("readable file"));
    let (mut labels, mut rows) = (Vec::new(), Vec::<Vec<f32>>::new());
    for line in f.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.expect("a line")).expect("JSON");
        labels.push(v["label"].as_str().expect("label").to_owned());
        rows.push(v["embedding"].as_array().expect("embedding").iter().map(|x| x.as_f64().unwrap() as f32).collect());
    }
    let mut names = labels.clone();
    names.sort();
    names.dedup();
    let y: Vec<usize> = labels.iter().map(|l| names.binary_search(l).unwrap()).collect();
    let x = Matrix::from_rows(&rows, rows[0].len()).expect("equal lengths");
    let k = names.len();
    for (name, portable) in [("detected", false), ("portable", true)] {
        let mut obj = Objective::new(&x, &y, k, 1e-4).unwrap().with_threads(1);
        if portable {
            obj = obj.portable();
        }
        let params: Vec<f64> = (0..obj.n_params()).map(|i| ((i * 7919) % 1000) as f64 * 1e-4 - 0.05).collect();
        let mut g = vec![0.0; params.len()];
        let mut best = f64::INFINITY;
        let mut bits = 0u64;
        for _ in 0..rounds {
            let t = Instant::now();
            let v = obj.eval(&params, &mut g);
            best = best.min(t.elapsed().as_secs_f64());
            bits = v.total.to_bits() ^ g.iter().fold(0u64, |h, x| h.rotate_left(5) ^ x.to_bits());
        }
        let flops = 4.0 * (x.rows() * x.cols() * k) as f64;
        println!(
            "{name}: {:.2} ms per evaluation (fastest of {rounds}), {:.1} GFLOP/s, result bits {bits:016x}",
            best * 1e3,
            flops / best / 1e9
        );
    }
}
