//! The report: JSON, terminal summary, and the HTML page rendered by headless Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_eval::{BaselineResult, Gate, Report, ReportInput, build_report, fit_temperature, render_html};

use crate::{Rng, synthetic};

fn sample_report() -> Report {
    let mut rng = Rng::new(31);
    let (y, proba) = synthetic(400, 4, 0.75, &mut rng);
    let labels: Vec<String> =
        ["billing", "bug <report>", "feature & request", "other"].iter().map(|s| (*s).to_owned()).collect();
    let texts: Vec<String> = (0..400)
        .map(|i| {
            if i % 50 == 3 {
                "<script>console.error('injected')</script> a hostile ticket".to_owned()
            } else {
                "word ".repeat(1 + (i * 7) % 80)
            }
        })
        .collect();
    let region: Vec<String> = (0..400).map(|i| ["eu", "us", "apac"][i % 3].to_owned()).collect();
    let mut input = ReportInput::new(&y, &proba, &labels);
    input.title = "tickets@2".into();
    input.model = "tickets@2 (logistic) <script>console.error('injected')</script>".into();
    input.texts = Some(&texts);
    input.slices.push(("region".into(), region));
    let mut r = build_report(&input);
    let logits = keel_core::Matrix::from_vec(400, 4, proba.as_slice().iter().map(|p| p.ln()).collect());
    r.calibration = Some(fit_temperature(&logits, &y));
    let (_, prod) = synthetic(400, 4, 0.7, &mut rng);
    r.gate = Some(Gate::default().decide(&y, &proba, &prod));
    r.baselines.push(BaselineResult::new("majority class", &y, &prod, &labels));
    r
}

#[test]
fn report_round_trips_through_json_and_summarises() {
    let r = sample_report();
    let back: Report = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(back, r);
    assert_eq!(r.ece_bins, 15);
    assert_eq!(r.reliability.len(), 15);
    assert_eq!(r.confidently_wrong.len(), 20);
    // Slices: 4 labels, length buckets, 3 regions.
    assert_eq!(r.slices.iter().filter(|s| s.column == "label").count(), 4);
    assert_eq!(r.slices.iter().filter(|s| s.column == "region").count(), 3);
    assert!(r.slices.iter().any(|s| s.column == "length"));
    let total: u64 = r.slices.iter().filter(|s| s.column == "length").map(|s| s.n).sum();
    assert_eq!(total, 400);
    let s = r.summary();
    for needle in ["accuracy", "macro-F1", "log loss", "ECE", "Brier", "ROC-AUC", "gate: ", "baseline majority class"] {
        assert!(s.contains(needle), "summary lacks {needle}:\n{s}");
    }
}

#[test]
fn html_is_self_contained_and_escaped() {
    let html = render_html(&sample_report());
    for id in ["confusion", "reliability", "per-class", "intervals"] {
        assert!(html.contains(&format!("<svg id=\"{id}\"")), "no {id} plot");
    }
    // No scripts and no external resources.
    assert!(!html.contains("<script"), "the hostile text must be escaped");
    assert!(html.contains("&lt;script&gt;"));
    // The only URL is the SVG namespace name, which is never fetched.
    assert_eq!(html.matches("http").count(), html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count());
    assert!(!html.contains("src=") && !html.contains("<link rel=\"stylesheet\""));
    assert!(html.contains("bug &lt;report&gt;") && html.contains("feature &amp; request"));
}

/// The Chromium binary: `$CHROMIUM`, else `/usr/bin/chromium`. Fails (does not skip) when
/// neither exists: this test is part of the suite CI runs.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "CHROMIUM={} does not exist", p.display());
        return p;
    }
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(
        p.exists(),
        "headless Chromium is required for this test: install the Debian package (`apt-get install -y chromium`) or set CHROMIUM to its path"
    );
    p
}

struct Rendered {
    dom: String,
    console_errors: Vec<String>,
    png_len: u64,
}

/// Opens `page` in headless Chromium twice: once dumping the DOM with console logging on
/// stderr, once taking a screenshot.
fn render(page: &Path, tmp: &Path) -> Rendered {
    let url = format!("file://{}", page.display());
    let common = |profile: &str| -> Command {
        let mut c = Command::new(chromium());
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ]);
        c.arg(format!("--user-data-dir={}", tmp.join(profile).display()));
        c
    };
    let out = common("dom").arg("--dump-dom").arg(&url).output().expect("chromium runs");
    assert!(out.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console_errors: Vec<String> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("console.error"))
        .map(str::to_owned)
        .collect();
    let png = tmp.join("shot.png");
    let shot = common("shot")
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1200,2400")
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(shot.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&shot.stderr));
    let png_len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    Rendered { dom: String::from_utf8_lossy(&out.stdout).into_owned(), console_errors, png_len }
}

#[test]
fn html_report_renders_in_headless_chromium_with_plots_and_no_console_errors() {
    let tmp = tempfile::tempdir().unwrap();

    // Control: a page that does log a console error must be caught, or the check below proves
    // nothing.
    let bad = tmp.path().join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><html><body><p>x</p><script>console.error('keel-probe-error')</script></body></html>",
    )
    .unwrap();
    let r = render(&bad, tmp.path());
    assert!(
        r.console_errors.iter().any(|l| l.contains("keel-probe-error")),
        "console errors are not visible on Chromium's stderr, so their absence would prove nothing"
    );

    let page = tmp.path().join("report.html");
    std::fs::write(&page, render_html(&sample_report())).unwrap();
    let r = render(&page, tmp.path());
    assert!(r.console_errors.is_empty(), "console errors: {:#?}", r.console_errors);
    for id in ["confusion", "reliability", "per-class", "intervals"] {
        assert!(r.dom.contains(&format!("<svg id=\"{id}\"")), "rendered DOM lacks the {id} plot");
    }
    // 16 confusion cells, reliability bars, 12 per-class bars survived parsing.
    assert_eq!(r.dom.matches("class=\"cell\"").count(), 16);
    assert_eq!(r.dom.matches("class=\"bar\"").count(), 12);
    assert!(r.dom.matches("class=\"bin\"").count() >= 3);
    assert!(!r.dom.contains("<script"), "hostile text became a script");
    // A blank 1200×2400 page compresses to a few kilobytes; a page of tables and plots does not.
    assert!(r.png_len > 40_000, "screenshot is only {} bytes", r.png_len);
}
