//! The drift report as one self-contained HTML page (inline CSS and SVG, no scripts, no
//! external requests), in keel-eval's page shell.

use std::fmt::Write as _;

use keel_eval::{escape, page};

use crate::drift::{ColumnDrift, DriftReport, TimePoint};

/// The drift page's own style, after keel-eval's shared one.
const GRID_CSS: &str = ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:.8rem}\n";

const REF: &str = "#6b8fc7";
const CUR: &str = "#e07b39";

/// Renders the report: verdict, embedding drift, the statistics table, one distribution
/// overlay per statistic (reference against current), predicted-class shares, live quality and
/// the drift-over-time line when the report has a series.
pub fn render_html(r: &DriftReport) -> String {
    page(&r.title, GRID_CSS, |h| {
        heading(h, r);
        embeddings(h, r);
        quality(h, r);
        over_time(h, r);
        statistics(h, r);
        distributions(h, r);
    })
}

/// The title line and the verdict with its rule.
fn heading(h: &mut String, r: &DriftReport) {
    let title = escape(&r.title);
    let _ = writeln!(
        h,
        "<h1>{title}</h1><p class=\"sub\">{} reference rows (training split) · {} current rows</p>",
        r.reference_rows, r.current_rows
    );
    let cls = if r.verdict.drift || r.verdict.quality_degraded { "hold" } else { "promote" };
    let _ = writeln!(
        h,
        "<div class=\"{cls}\" id=\"verdict\"><strong>{}</strong><br><span class=\"why\">Drift is declared when a classifier can tell current inputs from training inputs (ROC-AUC above {:.2}), or when at least {:.0}% of the per-row statistics below drifted.</span></div>",
        escape(&r.verdict.summary),
        r.embedding.threshold,
        100.0 * r.config.drift_share
    );
}

/// The embedding comparison: domain classifier, MMD and the unexplained norm.
fn embeddings(h: &mut String, r: &DriftReport) {
    let e = &r.embedding;
    h.push_str("<h2>Embeddings</h2><div class=\"cards\">");
    let _ = write!(
        h,
        "<div class=\"card\"><div>Domain classifier ROC-AUC</div><div class=\"v\">{:.3}</div><div class=\"sub\">{} · threshold {:.2}{}</div><p class=\"why\">Logistic regression trained to tell {} current rows from {} training rows by their embeddings (projected on the training data's {} main directions, plus what those do not explain), scored on rows it did not see. 0.5 means it cannot; 1.0 means they are different worlds. Above the threshold, the same procedure is repeated on shuffled labels: the permutation p is the share of shuffles that score as high, and drift needs it below {:.3}.</p></div>",
        e.domain_auc,
        if e.drifted { "drift" } else { "no drift" },
        e.threshold,
        e.p_value.map(|p| format!(" · permutation p {p:.3}")).unwrap_or_default(),
        e.current_rows,
        e.reference_rows,
        e.components,
        r.config.p_value / 2.0
    );
    let _ = write!(
        h,
        "<div class=\"card\"><div>MMD² (second opinion)</div><div class=\"v\">{:.4}</div><div class=\"sub\">permutation p {:.3} · {}</div><p class=\"why\">Maximum mean discrepancy between the two sets of embeddings with a Gaussian kernel; the p-value is the share of random relabellings that look at least as different.</p></div>",
        e.mmd2,
        e.mmd_p_value,
        if e.mmd_drifted { "drift" } else { "no drift" }
    );
    let _ = write!(
        h,
        "<div class=\"card\"><div>Unexplained embedding norm</div><div class=\"v\">{:.3}</div><div class=\"sub\">training {:.3}</div><p class=\"why\">How far, on average, embeddings lie outside the space the training data spans. Larger means new kinds of input.</p></div>",
        e.current_residual, e.reference_residual
    );
    h.push_str("</div>");
}

/// Live quality on the predictions that received feedback, when there are any.
fn quality(h: &mut String, r: &DriftReport) {
    if let Some(q) = &r.quality {
        h.push_str("<h2>Live quality</h2><div class=\"cards\" id=\"quality\">");
        for (name, iv, at) in [
            ("Accuracy", &q.accuracy, q.at_evaluation.as_ref().map(|e| e.accuracy)),
            ("Macro-F1", &q.macro_f1, q.at_evaluation.as_ref().map(|e| e.macro_f1)),
        ] {
            let at = at.map(|v| format!(" · {v:.3} at evaluation")).unwrap_or_default();
            let _ = write!(
                h,
                "<div class=\"card\"><div>{name}</div><div class=\"v\">{:.3}</div><div class=\"sub\">{:.0}% interval {:.3} – {:.3}{at}</div><p class=\"why\">On the {} served predictions that received a true label through feedback.</p></div>",
                iv.point,
                100.0 * iv.level,
                iv.lo,
                iv.hi,
                q.n
            );
        }
        h.push_str("</div>");
    }
}

/// The drift-over-time line, when the report has a series.
fn over_time(h: &mut String, r: &DriftReport) {
    if !r.over_time.is_empty() {
        h.push_str("<h2>Drift over time</h2><p class=\"why\">Domain classifier ROC-AUC of each window against the training data; the dashed line is the drift threshold.</p>");
        over_time_svg(h, &r.over_time, r.embedding.threshold);
    }
}

/// The per-row statistics and their tests.
fn statistics(h: &mut String, r: &DriftReport) {
    h.push_str("<h2>Statistics</h2><p class=\"why\">Each per-row statistic is compared with Evidently's default test: with at most 1,000 reference rows, Kolmogorov–Smirnov (numbers) or chi-square (categories) at p &lt; 0.05; with more, the Wasserstein distance divided by the reference's spread, or the Jensen–Shannon distance, at 0.1. PSI is shown for reference.</p>");
    h.push_str("<table id=\"statistics\"><tr><th>statistic</th><th>test</th><th>value</th><th>p</th><th>threshold</th><th>PSI</th><th>training mean</th><th>current mean</th><th>drift</th></tr>");
    for c in &r.columns {
        let f = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.4}"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&c.column),
            escape(&c.method),
            c.statistic,
            f(c.p_value),
            c.threshold,
            f(c.psi),
            f(c.reference_mean),
            f(c.current_mean),
            if c.drifted { "<strong>yes</strong>" } else { "no" }
        );
    }
    h.push_str("</table>");
}

/// One distribution overlay per statistic.
fn distributions(h: &mut String, r: &DriftReport) {
    let _ = write!(
        h,
        "<h2>Distributions</h2><p class=\"why\"><span style=\"color:{REF}\">■</span> training · <span style=\"color:{CUR}\">■</span> current. Share of rows in each bin.</p><div class=\"grid\">"
    );
    for c in &r.columns {
        distribution_svg(h, c);
    }
    h.push_str("</div>");
}

fn distribution_svg(h: &mut String, c: &ColumnDrift) {
    let (w, ht, left, bottom, top) = (340.0, 190.0, 34.0, 36.0, 20.0);
    let k = c.reference_share.len().max(1);
    let max = c.reference_share.iter().chain(&c.current_share).copied().fold(0.0f64, f64::max).max(1e-9);
    let plot_w = w - left - 8.0;
    let plot_h = ht - bottom - top;
    let bw = plot_w / k as f64;
    let _ = write!(
        h,
        "<svg id=\"dist-{}\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"{} distribution\"><text x=\"{left}\" y=\"13\">{}{}</text>",
        escape(&c.column),
        escape(&c.column),
        escape(&c.column),
        if c.drifted { " (drift)" } else { "" }
    );
    for (i, (rv, cv)) in c.reference_share.iter().zip(&c.current_share).enumerate() {
        let x = left + i as f64 * bw;
        for (j, (v, col)) in [(rv, REF), (cv, CUR)].into_iter().enumerate() {
            let bh = v / max * plot_h;
            let _ = write!(
                h,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{col}\" fill-opacity=\"0.75\"><title>{:.1}%</title></rect>",
                x + j as f64 * bw / 2.0 + 0.5,
                top + plot_h - bh,
                (bw / 2.0 - 1.0).max(0.5),
                100.0 * v
            );
        }
    }
    let _ = write!(
        h,
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"#1d2330\"/><text x=\"2\" y=\"{t}\">{:.0}%</text>",
        100.0 * max,
        y = top + plot_h,
        x2 = left + plot_w,
        t = top + 8.0
    );
    // Axis labels: categories, or the first, middle and last numeric edges.
    if c.bins.len() == c.reference_share.len() {
        for (i, b) in c.bins.iter().enumerate() {
            let label: String = b.chars().take(12).collect();
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                left + i as f64 * bw + 2.0,
                top + plot_h + 14.0,
                escape(&label)
            );
        }
    } else if let (Some(first), Some(last)) = (c.bins.first(), c.bins.last()) {
        let _ = write!(
            h,
            "<text x=\"{left}\" y=\"{y:.1}\">{}</text><text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\">{}</text>",
            escape(trim(first)),
            left + plot_w,
            escape(trim(last)),
            y = top + plot_h + 14.0
        );
    }
    h.push_str("</svg>");
}

fn trim(s: &str) -> &str {
    let s = if s.contains('.') { s.trim_end_matches('0') } else { s };
    s.trim_end_matches('.')
}

fn over_time_svg(h: &mut String, points: &[TimePoint], threshold: f64) {
    let (w, ht, left, bottom, top) = (900.0, 260.0, 44.0, 40.0, 14.0);
    let plot_w = w - left - 16.0;
    let plot_h = ht - bottom - top;
    let lo = 0.4f64;
    let hi = points.iter().map(|p| p.domain_auc).fold(threshold + 0.1, f64::max).min(1.0).max(threshold + 0.05);
    let y = |v: f64| top + plot_h - (v.clamp(lo, 1.0) - lo) / (hi - lo) * plot_h;
    let step = if points.len() > 1 { plot_w / (points.len() - 1) as f64 } else { 0.0 };
    let x = |i: usize| left + if points.len() > 1 { i as f64 * step } else { plot_w / 2.0 };
    let _ = write!(
        h,
        "<svg id=\"over-time\" viewBox=\"0 0 {w} {ht}\" width=\"{w}\" height=\"{ht}\" role=\"img\" aria-label=\"drift over time\">"
    );
    for v in [0.5, threshold, hi] {
        let _ = write!(h, "<text x=\"4\" y=\"{:.1}\">{v:.2}</text>", y(v) + 4.0);
    }
    let _ = write!(
        h,
        "<line x1=\"{left}\" y1=\"{t:.1}\" x2=\"{:.1}\" y2=\"{t:.1}\" stroke=\"#d9822b\" stroke-dasharray=\"5,4\"/>",
        left + plot_w,
        t = y(threshold)
    );
    let path: Vec<String> =
        points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.domain_auc))).collect();
    let _ = write!(h, "<polyline points=\"{}\" fill=\"none\" stroke=\"{REF}\" stroke-width=\"2\"/>", path.join(" "));
    let every = points.len().div_ceil(12).max(1);
    for (i, p) in points.iter().enumerate() {
        let col = if p.drift { CUR } else { REF };
        let _ = write!(
            h,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{col}\"><title>{}: AUC {:.3}, {} rows</title></circle>",
            x(i),
            y(p.domain_auc),
            escape(&p.label),
            p.domain_auc,
            p.n
        );
        if i % every == 0 {
            let label: String = p.label.chars().take(16).collect();
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x(i),
                top + plot_h + 18.0,
                escape(&label)
            );
        }
    }
    h.push_str("</svg>");
}
