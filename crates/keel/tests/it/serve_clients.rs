//! The official clients against a running `keel serve` on loopback: OpenAI's Python client
//! (`embeddings.create`) and prometheus_client's text-format parsers, from PyPI in a venv under
//! target/ (made once; `scripts/test` makes it too), then a SIGTERM that stops it cleanly.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Server;

/// The venv with `openai` and `prometheus_client`: $KEEL_TEST_PY_VENV, or target/serve-venv,
/// created here when missing (python3 -m venv, pip install from PyPI).
fn venv() -> PathBuf {
    let dir = std::env::var_os("KEEL_TEST_PY_VENV").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/tmp has a parent").join("serve-venv")
    });
    let ready = dir.join(".keel-ready");
    if !ready.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let made = Command::new("python3").arg("-m").arg("venv").arg(&dir).status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "cannot create a Python venv at {} (install python3-venv, or run scripts/test)",
            dir.display()
        );
        let pip = Command::new(dir.join("bin/pip"))
            .args(["install", "-q", "openai", "prometheus_client"])
            .status()
            .expect("pip runs");
        assert!(pip.success(), "pip install openai prometheus_client failed");
        std::fs::write(&ready, "openai prometheus_client\n").unwrap();
    }
    dir
}

#[test]
fn the_official_openai_and_prometheus_python_clients_work_against_keel_serve() {
    let python = venv().join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/serve-clients.py");
    // No model registered: the server serves embeddings (and metrics) only.
    let home = tempfile::tempdir().unwrap();
    let mut server = Server::start(home.path(), &[]);
    let addr = server.addr.clone();
    let out = Command::new(&python).arg(&script).arg(format!("http://{addr}")).output().unwrap();
    assert!(
        out.status.success(),
        "the Python clients failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: openai"));
    // SIGTERM: the server stops by itself, with a clean exit.
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "keel serve exited with {status} on SIGTERM");
}
