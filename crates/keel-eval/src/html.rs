//! The report as one self-contained HTML page: inline CSS, inline SVG plots generated here, no
//! scripts, no external requests. It opens offline from a file.

use std::fmt::Write as _;

use crate::bootstrap::Interval;
use crate::gate::signed_pt;
use crate::page::{escape, page};
use crate::report::{Report, explain};

fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n { s.chars().take(n - 1).chain(['…']).collect() } else { s.to_owned() }
}

/// Renders the report as one HTML document with inline CSS and SVG: a confusion-matrix heat
/// map, a reliability diagram, per-class bars and metric intervals, plus slices and the most
/// confidently wrong examples. Every number comes with a sentence on what it means.
pub fn render_html(r: &Report) -> String {
    page(&r.title, "", |h| {
        heading(h, r);
        gate_section(h, r);
        headline_cards(h, r);
        intervals_section(h, r);
        calibration_section(h, r);
        plots(h, r);
        if let Some(ft) = &r.fine_tune {
            h.push_str(&fine_tune_html(ft));
        }
        baselines_section(h, r);
        if let Some(sel) = &r.selection {
            h.push_str(&selection_html(sel));
        }
        slices_section(h, r);
        wrong_section(h, r);
    })
}

/// The title line and what the test set is.
fn heading(h: &mut String, r: &Report) {
    let title = escape(&r.title);
    let _ = writeln!(
        h,
        "<h1>{title}</h1><p class=\"sub\">{} · {} test examples · {} labels</p>",
        escape(&r.model),
        r.evaluation.n,
        r.labels.len()
    );
    let _ = writeln!(h, "<p class=\"why\">{}</p>", explain::N);
}

/// The promotion decision, when the report has one.
fn gate_section(h: &mut String, r: &Report) {
    if let Some(g) = &r.gate {
        let cls = if g.promote { "promote" } else { "hold" };
        let _ = writeln!(
            h,
            "<h2>Promotion decision</h2><div class=\"{cls}\" id=\"gate\"><strong>{}</strong><br><span class=\"why\">The challenger and the production model were scored on the same {} test rows; the interval comes from resampling those rows together, so it measures how sure we are that the difference is real. The rule: promote only if the difference is positive and the interval's lower end is above −0.5 points.</span></div>",
            escape(&g.reason),
            g.n
        );
    }
}

/// The headline metrics as cards, each with its interval and what it means.
fn headline_cards(h: &mut String, r: &Report) {
    h.push_str("<h2>Headline metrics</h2><div class=\"cards\">");
    let pct = r.bootstrap.level * 100.0;
    let card = |h: &mut String, name: &str, iv: &Interval, why: &str| {
        let _ = write!(
            h,
            "<div class=\"card\"><div>{name}</div><div class=\"v\">{:.4}</div><div class=\"sub\">{pct:.0}% interval {:.4} – {:.4}</div><p class=\"why\">{}</p></div>",
            iv.point,
            iv.lo,
            iv.hi,
            escape(why)
        );
    };
    card(h, "Accuracy", &r.intervals.accuracy, explain::ACCURACY);
    card(h, "Macro-F1", &r.intervals.macro_f1, explain::MACRO_F1);
    card(h, "Log loss", &r.intervals.log_loss, explain::LOG_LOSS);
    card(h, "Expected calibration error", &r.intervals.ece, explain::ECE);
    let _ = write!(
        h,
        "<div class=\"card\"><div>Brier score</div><div class=\"v\">{:.4}</div><p class=\"why\">{}</p></div>",
        r.brier,
        escape(explain::BRIER)
    );
    if let Some(auc) = &r.roc_auc {
        let what = if r.labels.len() == 2 { "binary" } else { "one-vs-rest, averaged over labels" };
        let _ = write!(
            h,
            "<div class=\"card\"><div>ROC-AUC ({what})</div><div class=\"v\">{:.4}</div><p class=\"why\">{}</p></div>",
            auc.value,
            escape(explain::ROC_AUC)
        );
    }
    h.push_str("</div>\n");
}

/// Every metric's bootstrap interval on its own axis.
fn intervals_section(h: &mut String, r: &Report) {
    let pct = r.bootstrap.level * 100.0;
    let _ = writeln!(
        h,
        "<h2>Metric intervals</h2><p class=\"why\">{} Each line is one metric's {pct:.0}% interval from {} bootstrap resamples; the dot is the value on the full test set. A narrow line means the number is trustworthy; a wide one means the test set is too small to be sure.</p>",
        escape(explain::INTERVAL),
        r.bootstrap.resamples
    );
    h.push_str(&intervals_svg(&r.intervals.all()));
}

/// Temperature scaling's effect on the validation split, when it was fitted.
fn calibration_section(h: &mut String, r: &Report) {
    if let Some(c) = &r.calibration {
        let _ = writeln!(
            h,
            "<h2>Calibration</h2><p class=\"why\">Temperature scaling divides the model's scores by one number fitted on the validation split, so its confidence matches how often it is right without changing any prediction. A temperature above 1 means the model was over-confident.</p>\
<table><tr><th></th><th>log loss (validation)</th><th>ECE (validation)</th></tr>\
<tr><td>before (temperature 1)</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td></tr>\
<tr><td>after (temperature {:.3})</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td></tr></table>",
            c.before.log_loss, c.before.ece, c.temperature, c.after.log_loss, c.after.ece
        );
    }
}

/// The reliability diagram, the confusion matrix and the per-label bars with their table.
fn plots(h: &mut String, r: &Report) {
    let _ = writeln!(
        h,
        "<h2>Reliability diagram</h2><p class=\"why\">Test examples grouped into {} bins by how confident the model was. Bars show how often it was right in each bin; the dashed diagonal is perfect calibration. Bars below the diagonal mean over-confidence.</p>",
        r.ece_bins
    );
    h.push_str(&reliability_svg(r));

    let _ = writeln!(
        h,
        "<h2>Confusion matrix</h2><p class=\"why\">Rows are the true labels, columns the predicted ones; each cell counts examples, and its colour shows the share of the row. A perfect model has colour only on the diagonal; off-diagonal colour shows which labels get confused.</p>"
    );
    h.push_str(&confusion_svg(r));

    let _ = writeln!(
        h,
        "<h2>Per-label precision, recall and F1</h2><p class=\"why\">Precision: of the examples given this label, the share that truly had it. Recall: of the examples that truly had it, the share found. F1 is their harmonic mean. Support is how many test examples had the label.</p>"
    );
    h.push_str(&per_class_svg(r));
    h.push_str("<table><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>");
    for m in &r.evaluation.per_class {
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{}</td></tr>",
            escape(&m.label),
            m.precision,
            m.recall,
            m.f1,
            m.support
        );
    }
    h.push_str("</table>\n");
}

/// The baselines beside this model, when there are any.
fn baselines_section(h: &mut String, r: &Report) {
    if !r.baselines.is_empty() {
        h.push_str("<h2>Baselines</h2><p class=\"why\">Simple models trained on the same data. If the model does not clearly beat them, it has not learned much beyond label frequencies or keywords.</p><table><tr><th>model</th><th>accuracy</th><th>macro-F1</th><th>log loss</th></tr>");
        let _ = write!(
            h,
            "<tr><td><strong>this model</strong></td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td></tr>",
            r.evaluation.accuracy, r.evaluation.macro_f1, r.evaluation.log_loss
        );
        for b in &r.baselines {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td></tr>",
                escape(&b.name),
                b.accuracy,
                b.macro_f1,
                b.log_loss
            );
        }
        h.push_str("</table>\n");
    }
}

/// The metrics on slices of the test rows.
fn slices_section(h: &mut String, r: &Report) {
    h.push_str("<h2>Slices</h2><p class=\"why\">The same metrics on subsets of the test rows: by true label, by text length and by any metadata column. A slice far below the overall numbers is where the model fails; slices with few examples are noisy.</p><table><tr><th>by</th><th>slice</th><th>examples</th><th>accuracy</th><th>macro-F1</th><th>log loss</th></tr>");
    for s in &r.slices {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td></tr>",
            escape(&s.column),
            escape(&s.key),
            s.n,
            s.accuracy,
            s.macro_f1,
            s.log_loss
        );
    }
    h.push_str("</table>\n");
}

/// The most confidently wrong test rows.
fn wrong_section(h: &mut String, r: &Report) {
    h.push_str("<h2>Most confidently wrong</h2><p class=\"why\">Test examples the model got wrong while being most sure of itself. They often reveal mislabelled data or a systematic blind spot.</p><table><tr><th>row</th><th>text</th><th>true label</th><th>predicted</th><th>confidence</th></tr>");
    for w in &r.confidently_wrong {
        let _ = write!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.3}</td></tr>",
            w.index,
            escape(w.text.as_deref().unwrap_or("")),
            escape(&w.true_label),
            escape(&w.predicted),
            w.confidence
        );
    }
    h.push_str("</table>\n");
}

fn intervals_svg(ivs: &[&Interval]) -> String {
    let (w, row_h, left, right) = (720.0, 46.0, 130.0, 40.0);
    let height = row_h * ivs.len() as f64 + 10.0;
    let mut s = format!(
        "<svg id=\"intervals\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"metric intervals\">"
    );
    for (i, iv) in ivs.iter().enumerate() {
        let y = 10.0 + row_h * i as f64 + 18.0;
        // Each metric on its own axis, padded around its interval.
        let span = (iv.hi - iv.lo).max(1e-3);
        let (a, b) = (iv.lo - span, iv.hi + span);
        let x = |v: f64| left + (v - a) / (b - a) * (w - left - right);
        let _ = write!(
            s,
            "<text x=\"4\" y=\"{y}\" dominant-baseline=\"middle\">{}</text>\
<line x1=\"{left}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#dde2ea\"/>\
<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#3b6fd1\" stroke-width=\"3\"/>\
<circle cx=\"{:.1}\" cy=\"{y}\" r=\"5\" fill=\"#1d2330\"/>\
<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.4}</text><text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.4}</text>",
            escape(&iv.metric),
            w - right,
            y + 12.0,
            y + 12.0,
            x(iv.lo),
            x(iv.hi),
            x(iv.point),
            x(iv.lo),
            y - 9.0,
            iv.lo,
            x(iv.hi),
            y - 9.0,
            iv.hi
        );
    }
    s.push_str("</svg>\n");
    s
}

fn reliability_svg(r: &Report) -> String {
    let (w, h, m) = (420.0, 420.0, 45.0);
    let side = w - 2.0 * m;
    let mut s = format!(
        "<svg id=\"reliability\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"reliability diagram\">\
<rect x=\"{m}\" y=\"{m}\" width=\"{side}\" height=\"{side}\" fill=\"#fbfcfe\" stroke=\"#dde2ea\"/>"
    );
    let px = |v: f64| m + v * side;
    let py = |v: f64| m + side - v * side;
    for b in &r.reliability {
        if b.count == 0 {
            continue;
        }
        let _ = write!(
            s,
            "<rect class=\"bin\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3b6fd1\" fill-opacity=\"0.75\"><title>confidence {:.2}–{:.2}: {} examples, right {:.1}% of the time, mean confidence {:.1}%</title></rect>\
<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d9822b\"/>",
            px(b.lo) + 1.0,
            py(b.accuracy),
            (b.hi - b.lo) * side - 2.0,
            b.accuracy * side,
            b.lo,
            b.hi,
            b.count,
            b.accuracy * 100.0,
            b.mean_confidence * 100.0,
            px(b.mean_confidence),
            py(b.accuracy)
        );
    }
    let _ = write!(
        s,
        "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\" stroke-dasharray=\"5,4\"/>\
<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">confidence (top probability)</text>\
<text x=\"12\" y=\"{}\" transform=\"rotate(-90 12 {})\" text-anchor=\"middle\">share right</text>",
        px(0.0),
        py(0.0),
        px(1.0),
        py(1.0),
        w / 2.0,
        h - 8.0,
        h / 2.0,
        h / 2.0
    );
    for t in [0.0, 0.5, 1.0] {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{t}</text>",
            px(t),
            m + side + 14.0,
            m - 4.0,
            py(t) + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn confusion_svg(r: &Report) -> String {
    let k = r.labels.len();
    let cell = (480.0 / k as f64).clamp(14.0, 48.0);
    let left = 130.0;
    let top = 110.0;
    let (w, h) = (left + cell * k as f64 + 10.0, top + cell * k as f64 + 10.0);
    let mut s = format!(
        "<svg id=\"confusion\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" role=\"img\" aria-label=\"confusion matrix\">"
    );
    for (i, l) in r.labels.iter().enumerate() {
        let l = escape(&short(l, 18));
        let c = top + cell * (i as f64 + 0.5);
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{c:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{l}</text>",
            left - 6.0
        );
        let cx = left + cell * (i as f64 + 0.5);
        let _ = write!(
            s,
            "<text x=\"{cx:.1}\" y=\"{:.1}\" transform=\"rotate(-55 {cx:.1} {:.1})\">{l}</text>",
            top - 6.0,
            top - 6.0
        );
    }
    for (t, row) in r.evaluation.confusion.iter().enumerate() {
        let total: u64 = row.iter().sum();
        for (p, &n) in row.iter().enumerate() {
            let share = if total == 0 { 0.0 } else { n as f64 / total as f64 };
            let (x, y) = (left + cell * p as f64, top + cell * t as f64);
            let fill = if t == p {
                format!("rgba(47,158,85,{:.3})", 0.08 + 0.92 * share)
            } else {
                format!("rgba(217,80,43,{:.3})", 0.04 + 0.96 * share)
            };
            let _ = write!(
                s,
                "<rect class=\"cell\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cell:.1}\" height=\"{cell:.1}\" fill=\"{fill}\" stroke=\"#fff\"><title>true {} → predicted {}: {n} ({:.1}% of the row)</title></rect>",
                escape(&r.labels[t]),
                escape(&r.labels[p]),
                share * 100.0
            );
            if cell >= 22.0 && n > 0 {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"middle\">{n}</text>",
                    x + cell / 2.0,
                    y + cell / 2.0
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

fn per_class_svg(r: &Report) -> String {
    let k = r.labels.len();
    let (left, bar_w, row_h) = (140.0, 420.0, 34.0);
    let (w, h) = (left + bar_w + 70.0, 24.0 + row_h * k as f64);
    let mut s = format!(
        "<svg id=\"per-class\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"per-label precision, recall and F1\">\
<rect x=\"{left}\" y=\"2\" width=\"10\" height=\"10\" fill=\"#8fb0ea\"/><text x=\"{}\" y=\"11\">precision</text>\
<rect x=\"{}\" y=\"2\" width=\"10\" height=\"10\" fill=\"#e8b27d\"/><text x=\"{}\" y=\"11\">recall</text>\
<rect x=\"{}\" y=\"2\" width=\"10\" height=\"10\" fill=\"#2f9e55\"/><text x=\"{}\" y=\"11\">F1</text>",
        left + 14.0,
        left + 90.0,
        left + 104.0,
        left + 170.0,
        left + 184.0
    );
    for (i, m) in r.evaluation.per_class.iter().enumerate() {
        let y = 20.0 + row_h * i as f64;
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}</text>",
            left - 6.0,
            y + 15.0,
            escape(&short(&m.label, 20))
        );
        for (j, (v, colour)) in
            [(m.precision, "#8fb0ea"), (m.recall, "#e8b27d"), (m.f1, "#2f9e55")].into_iter().enumerate()
        {
            let _ = write!(
                s,
                "<rect class=\"bar\" x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"9\" fill=\"{colour}\"><title>{:.3}</title></rect>",
                y + 3.0 + 9.5 * j as f64,
                (v * bar_w).max(0.5),
                v
            );
        }
        let _ = write!(s, "<text x=\"{:.1}\" y=\"{:.1}\">F1 {:.3}</text>", left + bar_w + 6.0, y + 25.0, m.f1);
    }
    s.push_str("</svg>\n");
    s
}

/// A gate decision's difference as the page and terminal show it, e.g. "+2.1 pt".
pub fn format_diff(diff: f64) -> String {
    format!("{} pt", signed_pt(diff))
}

/// The report's "Model selection" section: the reason and a table of candidates.
/// What fine-tuning did, in plain words; the frozen encoder's result is among the baselines.
fn fine_tune_html(ft: &crate::FineTuneRecord) -> String {
    let p = &ft.run.pairs;
    let losses = match (
        ft.run.validation_loss.first(),
        ft.run.validation_loss.iter().find(|(s, _)| *s == ft.run.best_step),
    ) {
        (Some((s0, first)), Some((_, best))) => format!(
            " The validation pairs' loss went from {first:.4} (step {s0}) to {best:.4} (step {}), the adaptation kept.",
            ft.run.best_step
        ),
        _ => String::new(),
    };
    let stop = if ft.run.stopped_early { " It stopped early: the validation loss had stopped improving." } else { "" };
    format!(
        "<h2>Fine-tuned encoder</h2><p class=\"why\">The encoder was adapted to this task before the model was trained on its embeddings: {} ({} loss), {} of {} steps on {} {} pairs drawn from {} training rows (seed {}).{losses}{stop} The same training on the frozen encoder is among the baselines below: the difference is what fine-tuning bought.</p><p>Encoder <code>{}</code>, from <code>{}</code>; adapter artifact <code>{}</code>.</p>",
        escape(&ft.method),
        escape(&ft.run.loss),
        ft.run.steps,
        ft.run.planned_steps,
        p.pairs,
        escape(&p.kind),
        p.train_rows,
        p.seed,
        escape(&ft.encoder_id),
        escape(&ft.base_encoder),
        escape(&ft.adapter),
    )
}

fn selection_html(sel: &crate::ModelSelection) -> String {
    let mut h = String::from(
        "<h2>Model selection</h2><p class=\"why\">Each model family was cross-validated on the same folds of the training split (never the test split); the cheapest within one standard error of the best was shipped.</p>",
    );
    let _ = write!(h, "<p><strong>{}</strong></p>", escape(&sel.reason));
    if let Some(note) = &sel.cost_note {
        let _ = write!(h, "<p>{}</p>", escape(note));
    }
    h.push_str("<table><tr><th>candidate</th><th>CV accuracy</th><th>± SE</th><th>needs the encoder</th><th>CPU µs / prediction</th><th>setting</th></tr>");
    for c in &sel.candidates {
        let mark = if c.family == sel.chosen { " (shipped)" } else { "" };
        let cost = c.cost_us.map_or_else(|| "(measured at training; see the version)".to_owned(), |u| u.to_string());
        let _ = write!(
            h,
            "<tr><td>{}{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&c.description),
            mark,
            c.mean,
            c.se,
            if c.needs_encoder { "yes" } else { "no" },
            cost,
            escape(&c.setting)
        );
    }
    h.push_str("</table>\n");
    h
}
