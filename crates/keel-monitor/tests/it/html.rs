//! The HTML page opens in headless Chromium with its plots and no console errors.

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(p.exists(), "headless Chromium is required: apt-get install -y chromium, or set CHROMIUM");
    p
}

fn dump_dom(page: &Path, profile: &Path) -> (String, Vec<String>) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .args(["--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    let errors = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("console.error"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), errors)
}

/// Renders `page` and asserts the DOM holds the plots and Chromium logged no console error
/// (after checking, on a page that does log one, that such errors would be seen).
pub fn check_renders(page: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.html");
    std::fs::write(&bad, "<!DOCTYPE html><html><body><script>console.error('keel-probe-error')</script></body></html>")
        .unwrap();
    let (_, errors) = dump_dom(&bad, &tmp.path().join("p1"));
    assert!(
        errors.iter().any(|l| l.contains("keel-probe-error")),
        "console errors are not visible; the check would prove nothing"
    );
    let (dom, errors) = dump_dom(page, &tmp.path().join("p2"));
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    for id in ["verdict", "statistics", "dist-text_chars", "dist-predicted_class", "over-time"] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "rendered DOM lacks #{id}");
    }
    assert!(!dom.contains("src=\"http") && !dom.contains("<script"), "the page must be self-contained");
}
