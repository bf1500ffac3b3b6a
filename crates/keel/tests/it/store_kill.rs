//! Crash safety: `keel train` killed with SIGKILL at random points, 50 times, leaves a store
//! that `keel store check` passes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{json_of, keel, ok};

#[test]
fn killed_training_runs_leave_a_store_that_checks_clean() {
    let seed = std::env::var("KEEL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    eprintln!("kill test seed: {seed} (replay with KEEL_TEST_SEED={seed})");
    let mut rng = keel_test_support::Rng(seed);
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("reviews.csv");
    let base = include_str!("../../../../examples/sentiment/movie_sentences.csv");
    let rows: Vec<&str> = base.lines().take(121).collect(); // header + 120 rows
    let write_data = |extra: usize| {
        let mut text = rows.join("\n");
        for i in 0..extra {
            text.push_str(&format!(
                "\nx{i},1.0,positive,an extra sentence number {i} that makes a new dataset version"
            ));
        }
        text.push('\n');
        std::fs::write(&file, text).unwrap();
    };
    let train = || {
        let mut c = keel(home.path());
        c.args(["train", "--name", "reviews", "--id-col", "id", "--json"]).arg(&file);
        c
    };

    // A first run fills the embedding cache; a second, on one new row like every killed run
    // will have, tells how long such a run takes, so kills land across its whole span.
    write_data(0);
    json_of(train().output().unwrap());
    write_data(1);
    let start = Instant::now();
    json_of(train().output().unwrap());
    let span = start.elapsed().max(Duration::from_millis(200));
    eprintln!("an uninterrupted run takes {span:?}");

    let mut killed = 0;
    for i in 1..=50 {
        write_data(i + 1);
        let mut child = train().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let delay = Duration::from_micros(rng.next_u64() % (span.as_micros() as u64 * 9 / 10));
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if i % 10 == 0 {
            let report = json_of(keel(home.path()).args(["store", "check", "--json"]).output().unwrap());
            assert_eq!(report["problems"], serde_json::json!([]), "after {i} kills (seed {seed})");
        }
    }
    eprintln!("{killed} of 50 runs were killed mid-run");
    assert!(killed >= 30, "only {killed} of 50 runs were still running when killed; the delays are too long");

    // The store still works: a full run finishes and registers a version, and the check passes.
    let done = json_of(train().output().unwrap());
    assert_eq!(done["model"]["name"], "reviews");
    let report = json_of(keel(home.path()).args(["store", "check", "--json"]).output().unwrap());
    assert_eq!(report["problems"], serde_json::json!([]));
    assert!(report["artifacts_checked"].as_u64().unwrap() > 0);
    ok(Command::new(env!("CARGO_BIN_EXE_keel")).arg("--home").arg(home.path()).arg("models").output().unwrap());
}
