//! The MLP head: learning, early stopping, determinism, and resume after a kill.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_core::Matrix;
use keel_train::{Activation, Checkpoint, Head, MemoryCheckpoint, MlpConfig, NoCheckpoint, TrainError, fit_mlp};

use crate::{gaussian_blobs, names};

struct Data {
    x: Matrix,
    y: Vec<usize>,
    xv: Matrix,
    yv: Vec<usize>,
}

fn data() -> Data {
    let (x, y) = gaussian_blobs(150, 4, 16, 1.0, 21);
    let train: Vec<usize> = (0..x.rows()).filter(|i| i % 5 != 0).collect();
    let val: Vec<usize> = (0..x.rows()).filter(|i| i % 5 == 0).collect();
    Data {
        x: x.select_rows(&train),
        y: train.iter().map(|&i| y[i]).collect(),
        xv: x.select_rows(&val),
        yv: val.iter().map(|&i| y[i]).collect(),
    }
}

fn cfg() -> MlpConfig {
    MlpConfig {
        hidden: 32,
        batch_size: 16,
        max_epochs: 12,
        patience: 100,
        learning_rate: 1e-2,
        seed: 5,
        ..MlpConfig::default()
    }
}

fn head_bytes(d: &Data, cfg: &MlpConfig, ckpt: &mut dyn Checkpoint) -> (Vec<u8>, keel_train::MlpReport) {
    let (m, r) = fit_mlp(&d.x, &d.y, &d.xv, &d.yv, names(4), cfg, ckpt).unwrap();
    (Head::from(m).to_bytes(), r)
}

#[test]
fn mlp_learns_and_is_deterministic() {
    let d = data();
    for activation in [Activation::Relu, Activation::Gelu] {
        let c = MlpConfig { activation, ..cfg() };
        let (a, report) = head_bytes(&d, &c, &mut NoCheckpoint);
        let (b, _) = head_bytes(&d, &c, &mut NoCheckpoint);
        assert_eq!(a, b, "{activation:?}: same data, config and seed must give the same bytes");
        let best = &report.history[report.best_epoch - 1];
        assert!(best.val_accuracy > 0.9, "{activation:?}: {report:?}");
        assert!(report.history.last().unwrap().train_loss < report.history[0].train_loss);
        let (other, _) = head_bytes(&d, &MlpConfig { seed: 6, ..c.clone() }, &mut NoCheckpoint);
        assert_ne!(a, other);
        let head = Head::from_bytes(&a).unwrap();
        assert_eq!(head.to_bytes(), a);
        assert_eq!(head.kind(), "mlp");
        let p = head.predict_proba_embedding(d.xv.row(0)).unwrap();
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn early_stopping_keeps_the_best_epoch() {
    // Tiny, noisy training set and a wide network: validation loss turns up quickly.
    let (x, y) = gaussian_blobs(8, 4, 16, 6.0, 3);
    let (xv, yv) = gaussian_blobs(60, 4, 16, 6.0, 3);
    let c = MlpConfig {
        hidden: 128,
        dropout: 0.0,
        learning_rate: 1e-2,
        weight_decay: 0.0,
        batch_size: 8,
        max_epochs: 200,
        patience: 3,
        seed: 1,
        ..MlpConfig::default()
    };
    let (m, r) = fit_mlp(&x, &y, &xv, &yv, names(4), &c, &mut NoCheckpoint).unwrap();
    assert!(r.stopped_early, "{r:?}");
    assert_eq!(r.history.len(), r.best_epoch + 3, "stops `patience` epochs after the best");
    let best = r.history.iter().map(|h| h.val_loss).fold(f64::INFINITY, f64::min);
    assert_eq!(r.best_val_loss, best);
    // The returned weights are the best epoch's: their validation loss is the best one.
    let nll: f64 =
        (0..xv.rows()).map(|i| -f64::from(m.predict_proba(xv.row(i))[yv[i]]).ln()).sum::<f64>() / xv.rows() as f64;
    assert!((nll - best).abs() < 1e-4, "{nll} vs {best}");
}

/// Saves into memory, then "kills" training by panicking right after the save of `kill_at`.
struct KillAfter {
    inner: MemoryCheckpoint,
    kill_at: usize,
}

impl Checkpoint for KillAfter {
    fn save(&mut self, epoch: usize, bytes: &[u8]) -> std::io::Result<()> {
        self.inner.save(epoch, bytes)?;
        if epoch == self.kill_at {
            panic!("killed after epoch {epoch}");
        }
        Ok(())
    }
    fn load(&mut self) -> Option<Vec<u8>> {
        self.inner.load()
    }
}

#[test]
fn interrupted_training_resumes_to_identical_weights() {
    let d = data();
    let mut full = MemoryCheckpoint::default();
    let (want, want_report) = head_bytes(&d, &cfg(), &mut full);
    assert_eq!(full.saves, 12, "a checkpoint every epoch");
    for kill_at in [1, 5, 11] {
        let mut k = KillAfter { inner: MemoryCheckpoint::default(), kill_at };
        let r = catch_unwind(AssertUnwindSafe(|| fit_mlp(&d.x, &d.y, &d.xv, &d.yv, names(4), &cfg(), &mut k)));
        assert!(r.is_err(), "the run was meant to be killed");
        // Only the checkpoint survives the "kill"; everything else is rebuilt.
        let mut resumed = k.inner.clone();
        let (got, report) = head_bytes(&d, &cfg(), &mut resumed);
        assert_eq!(report.resumed_from, Some(kill_at));
        assert_eq!(got, want, "killed after epoch {kill_at}: resumed weights differ");
        assert_eq!(report.history, want_report.history);
        assert_eq!(resumed.saves, 12, "epochs {}..=12 were saved again", kill_at + 1);
    }
    // A checkpoint from another configuration is refused, not silently reused.
    let other = MlpConfig { seed: 77, ..cfg() };
    let err = fit_mlp(&d.x, &d.y, &d.xv, &d.yv, names(4), &other, &mut full.clone()).unwrap_err();
    assert!(matches!(err, TrainError::InvalidCheckpoint(_)), "{err}");
    // A corrupt one too.
    let mut bad = MemoryCheckpoint { latest: Some((3, b"KEELMLP1garbage".to_vec())), saves: 0 };
    assert!(matches!(
        fit_mlp(&d.x, &d.y, &d.xv, &d.yv, names(4), &cfg(), &mut bad),
        Err(TrainError::InvalidCheckpoint(_))
    ));
}

/// Checkpoints in a folder, written atomically (temp file, rename), as the binary will.
struct DirCheckpoint {
    dir: PathBuf,
    /// Child mode: after saving this epoch, hang until killed.
    hang_after: Option<usize>,
}

impl Checkpoint for DirCheckpoint {
    fn save(&mut self, epoch: usize, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join("ckpt.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, self.dir.join("ckpt"))?;
        std::fs::write(self.dir.join("epoch.tmp"), epoch.to_string())?;
        std::fs::rename(self.dir.join("epoch.tmp"), self.dir.join("epoch"))?;
        if self.hang_after == Some(epoch) {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Ok(())
    }
    fn load(&mut self) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join("ckpt")).ok()
    }
}

fn read_epoch(dir: &Path) -> Option<usize> {
    std::fs::read_to_string(dir.join("epoch")).ok()?.trim().parse().ok()
}

const CHILD_ENV: &str = "KEEL_TEST_MLP_CHILD_DIR";

/// The real thing: a training process is SIGKILLed after its epoch-4 checkpoint, and a new
/// run on the same folder resumes from it and ends with the uninterrupted run's bytes. The
/// test re-runs its own binary as the child (selected by an environment variable).
#[test]
fn mlp_training_killed_with_sigkill_resumes_from_its_checkpoint() {
    let d = data();
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let mut ck = DirCheckpoint { dir: PathBuf::from(dir), hang_after: Some(4) };
        let _ = fit_mlp(&d.x, &d.y, &d.xv, &d.yv, names(4), &cfg(), &mut ck);
        unreachable!("the child hangs after epoch 4 until it is killed");
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "mlp::mlp_training_killed_with_sigkill_resumes_from_its_checkpoint",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (without a deadline: CI machines may be slow) for the epoch-4 checkpoint.
    while read_epoch(tmp.path()) != Some(4) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("child exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");

    let mut ck = DirCheckpoint { dir: tmp.path().to_path_buf(), hang_after: None };
    let (got, report) = head_bytes(&d, &cfg(), &mut ck);
    assert_eq!(report.resumed_from, Some(4));
    assert_eq!(read_epoch(tmp.path()), Some(12));
    let (want, _) = head_bytes(&d, &cfg(), &mut NoCheckpoint);
    assert_eq!(got, want, "resumed run differs from an uninterrupted one");
}
