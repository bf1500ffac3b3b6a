//! Fine-tuning end to end, on the real encoder and real sentences: a LoRA-adapted encoder is part
//! of the model version (its id, its artifact, its own cache entries), the gate compares it with
//! a base-encoder production on the same raw test texts, a server with a base-encoder production
//! and a LoRA canary answers each request from the right encoder, a promotion from the one to the
//! other swaps encoders with no failed request, and a fine-tuning killed with
//! SIGKILL resumes from its checkpoint to the adapter bytes of an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::http::post;
use super::{Server, json_of, keel};

const EXAMPLE: &str = include_str!("../../../../examples/sentiment/movie_sentences.csv");

/// The header and the first `n` rows of the bundled sentences, as `dir/reviews.csv`.
fn data(dir: &Path, n: usize) -> PathBuf {
    let mut s: String = EXAMPLE.lines().take(n + 1).collect::<Vec<_>>().join("\n");
    s.push('\n');
    let path = dir.join("reviews.csv");
    std::fs::write(&path, s).unwrap();
    path
}

fn train(home: &Path, file: &Path, extra: &[&str]) -> Value {
    json_of(
        keel(home)
            .args(["train", "--name", "reviews", "--id-col", "id", "--head", "logistic", "--json"])
            .arg(file)
            .args(extra)
            .output()
            .unwrap(),
    )
}

fn artifact_path(home: &Path, hash: &str) -> PathBuf {
    home.join("artifacts").join("sha256").join(&hash[..2]).join(&hash[2..])
}

/// One classify answer: the version that answered and its scores.
fn classify(addr: &str, text: &str) -> (String, Value) {
    let (status, body) = post(addr, "/v1/classify", &serde_json::json!({ "inputs": [text] }).to_string());
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["degraded"], false, "{v}");
    (v["model"].as_str().unwrap().to_owned(), v["predictions"][0]["scores"].clone())
}

#[test]
fn a_lora_encoder_is_part_of_the_version_and_served_beside_a_base_production() {
    let dir = tempfile::tempdir().unwrap();
    let file = data(dir.path(), 300);
    let base = train(dir.path(), &file, &[]);
    let base_encoder = base["model"]["encoder_id"].as_str().unwrap().to_owned();
    assert!(!base_encoder.contains("+lora"), "{base_encoder}");

    let tuned = train(dir.path(), &file, &["--fine-tune", "lora", "--fine-tune-pairs", "64", "--no-promote"]);
    let model = &tuned["model"];
    let encoder = model["encoder_id"].as_str().unwrap();
    let ft = &model["metrics"]["fine_tune"];
    let adapter = ft["adapter"].as_str().unwrap();
    // The version's encoder is the base plus the adapter's hash; the adapter is an artifact.
    assert_eq!(encoder, format!("{base_encoder}+lora-{}", &adapter[..12]), "{ft}");
    assert_eq!(ft["base_encoder"], base_encoder.as_str(), "{ft}");
    assert_eq!(ft["encoder_id"], encoder, "{ft}");
    assert_eq!(model["metrics"]["artifacts"]["encoder_adapter"], adapter, "{model}");
    let bytes = std::fs::read(artifact_path(dir.path(), adapter)).unwrap();
    assert!(bytes.len() < 2 << 20, "a LoRA adapter is small: {} bytes", bytes.len());
    // The pairs' recipe and the steps are recorded: 64 pairs in batches of 16.
    assert_eq!(ft["pairs"]["pairs"], 64, "{ft}");
    assert_eq!(ft["pairs"]["kind"], "contrastive", "{ft}");
    assert_eq!(ft["planned_steps"], 4, "{ft}");
    assert!(ft["method"].as_str().unwrap().starts_with("lora r=8"), "{ft}");
    // Its embeddings are its own: none came from the base encoder's cache entries.
    assert_eq!(tuned["embedding"]["cached"], 0, "{}", tuned["embedding"]);
    // The gate paired it with the base-encoder production on the same raw test texts.
    let reason = tuned["gate"]["reason"].as_str().unwrap();
    assert!(!reason.contains("not compared"), "{reason}");
    assert!(reason.contains("reviews@1"), "{reason}");
    assert_eq!(model["aliases"], serde_json::json!(["candidate"]), "{model}");

    // Production reads the base encoder, the canary the adapted one; each answer comes from its
    // version's encoder: the canary's scores are those of the adapted version served alone.
    let texts = ["a gripping, beautifully acted film", "dull and far too long", "it has its moments"];
    let mut seen: std::collections::BTreeMap<(String, usize), Value> = Default::default();
    {
        let server =
            Server::start(dir.path(), &["--model", "reviews", "--canary", "reviews@2", "--canary-share", "0.5"]);
        for round in 0..12 {
            for (i, t) in texts.iter().enumerate() {
                let (tag, scores) = classify(&server.addr, t);
                if let Some(before) = seen.get(&(tag.clone(), i)) {
                    assert_eq!(before, &scores, "{tag} answered {t:?} differently in round {round}");
                }
                seen.insert((tag, i), scores);
            }
        }
        embeddings_serve_the_base_encoder_unless_asked_for_a_version(&server.addr, &base_encoder, encoder);
    }
    let answered: std::collections::BTreeSet<&str> = seen.keys().map(|(t, _)| t.as_str()).collect();
    assert_eq!(answered, ["reviews@1", "reviews@2"].into(), "both arms answered");
    let alone = Server::start(dir.path(), &["--model", "reviews@2"]);
    for (i, t) in texts.iter().enumerate() {
        let (tag, scores) = classify(&alone.addr, t);
        assert_eq!(tag, "reviews@2");
        if let Some(canary) = seen.get(&("reviews@2".to_owned(), i)) {
            assert_eq!(canary, &scores, "the canary read another encoder for {t:?}");
        }
        if let (Some(a), Some(b)) = (seen.get(&("reviews@1".to_owned(), i)), seen.get(&("reviews@2".to_owned(), i))) {
            assert_ne!(a, b, "production and the canary scored {t:?} alike: one encoder served both");
        }
    }
    drop(alone);
    promotion_swaps_encoders_without_a_failed_request(dir.path(), &texts, &seen);
}

/// `/v1/embeddings` answers from the configured base encoder; `version` (a tag or an alias of a
/// served version) picks that version's own encoder; a version the server does not hold is 404.
fn embeddings_serve_the_base_encoder_unless_asked_for_a_version(addr: &str, base: &str, tuned: &str) {
    let embed = |extra: &str| {
        let (status, body) = post(addr, "/v1/embeddings", &format!("{{\"input\": [\"a gripping film\"]{extra}}}"));
        let v: Value = serde_json::from_str(&body).unwrap();
        (status, v)
    };
    let (status, plain) = embed("");
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["model"], base, "{plain}");
    let (status, production) = embed(", \"version\": \"reviews@production\"");
    assert_eq!((status, &production["model"]), (200, &Value::from(base)), "{production}");
    assert_eq!(production["data"], plain["data"], "production reads the base encoder");
    for version in ["reviews@2", "reviews@candidate"] {
        let (status, own) = embed(&format!(", \"version\": \"{version}\""));
        assert_eq!(status, 200, "{own}");
        assert_eq!(own["model"], tuned, "{own}");
        assert_ne!(own["data"], plain["data"], "{version}'s encoder is its fine-tuned one");
    }
    let (status, missing) = embed(", \"version\": \"reviews@7\"");
    assert_eq!(status, 404, "{missing}");
    let message = missing["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("reviews@1") && message.contains("reviews@2"), "{missing}");
}

/// A server following production (the base-encoder version 1) while version 2, on the LoRA
/// encoder, is promoted under load: every request succeeds, the answers move from version 1 to
/// version 2 once and for good, and version 2's are its own encoder's (`seen`: scores by
/// version and text from servers holding each version).
fn promotion_swaps_encoders_without_a_failed_request(
    home: &Path,
    texts: &[&str],
    seen: &std::collections::BTreeMap<(String, usize), Value>,
) {
    let server = Server::start(home, &["--model", "reviews"]);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers = std::thread::scope(|s| {
        let client = s.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, t) in texts.iter().enumerate() {
                    let (status, body) =
                        post(&server.addr, "/v1/classify", &serde_json::json!({ "inputs": [t] }).to_string());
                    answers.push((i, status, body));
                }
            }
            answers
        });
        std::thread::sleep(Duration::from_millis(500));
        let out = keel(home).args(["promote", "reviews@2"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // The server follows production within its poll interval; then some more requests.
        std::thread::sleep(Duration::from_secs(8));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        client.join().unwrap()
    });
    let mut tags = Vec::new();
    for (i, status, body) in &answers {
        assert_eq!(*status, 200, "a request failed during the promotion: {body}");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["degraded"], false, "{v}");
        let tag = v["model"].as_str().unwrap().to_owned();
        if let Some(want) = seen.get(&(tag.clone(), *i)) {
            assert_eq!(want, &v["predictions"][0]["scores"], "{tag} answered {:?} from another encoder", texts[*i]);
        }
        if tags.last() != Some(&tag) {
            tags.push(tag);
        }
    }
    assert_eq!(tags, ["reviews@1", "reviews@2"], "answers moved from the base version to the fine-tuned one once");
    drop(server);

    // `keel monitor` embeds the logged inputs with the fine-tuned version's own encoder (it
    // refuses an encoder that is not the version's) and profiles them against its training.
    let out = keel(home).args(["monitor", "reviews@2", "--window", "1h", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let served = answers.iter().filter(|(_, _, b)| b.contains("\"reviews@2\"")).count();
    // Its window also holds version 2's answers as a canary and when served alone, above.
    let rows = report["current_rows"].as_u64().unwrap() as usize;
    assert!(served > 0 && rows >= served, "every answer of version 2 is in its window: {rows} < {served}");
}

/// A project whose fine-tuning checkpoints after every step.
fn project(dir: &Path) -> PathBuf {
    data(dir, 240);
    let config = dir.join("keel.toml");
    std::fs::write(
        &config,
        "[project]\nname = \"reviews\"\n\n[source]\npath = \"reviews.csv\"\nid_col = \"id\"\n\n\
         [validation]\nlabels = [\"negative\", \"positive\"]\n\n[head]\nkind = \"logistic\"\n\n\
         [encoder.fine_tune]\nmethod = \"lora\"\nmax_pairs = 160\nbatch_pairs = 8\ncheckpoint_every = 1\neval_every = 5\n",
    )
    .unwrap();
    config
}

fn adapter_of(run: &Value) -> String {
    run["model"]["metrics"]["fine_tune"]["adapter"].as_str().unwrap().to_owned()
}

#[test]
fn a_killed_fine_tuning_resumes_to_the_adapter_bytes_of_an_uninterrupted_run() {
    let clean = tempfile::tempdir().unwrap();
    let config = project(clean.path());
    let run = || keel(clean.path()).args(["run", "--json", "--config"]).arg(&config).output().unwrap();
    let want = adapter_of(&json_of(run()));

    let killed = tempfile::tempdir().unwrap();
    let config = project(killed.path());
    let mut child = keel(killed.path())
        .args(["run", "--json", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoints = killed.path().join("checkpoints");
    let has_checkpoint = || {
        std::fs::read_dir(&checkpoints)
            .is_ok_and(|d| d.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().ends_with(".finetune")))
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while !has_checkpoint() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first checkpoint");
        assert!(Instant::now() < deadline, "no checkpoint within 10 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A few steps more, then SIGKILL in the middle of the fine-tuning.
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(has_checkpoint(), "the run was killed after fine-tuning finished; nothing was resumed");
    // The checkpoint holds the loop's position (after a magic line and a length): mid-way.
    let entry = std::fs::read_dir(&checkpoints).unwrap().filter_map(Result::ok).next().unwrap();
    let bytes = std::fs::read(entry.path()).unwrap();
    let rest = bytes.strip_prefix(b"keel-finetune-run-1\n").expect("a fine-tuning checkpoint");
    let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
    let at: Value = serde_json::from_slice(&rest[8..8 + len]).unwrap();
    let step = at["step"].as_u64().unwrap();
    assert!((1..20).contains(&step), "killed at step {step} of 20");

    let resumed = json_of(keel(killed.path()).args(["run", "--json", "--config"]).arg(&config).output().unwrap());
    assert_eq!(adapter_of(&resumed), want, "the resumed run ends with other adapter bytes");
    assert!(!has_checkpoint(), "a finished fine-tuning removes its checkpoint");
}
