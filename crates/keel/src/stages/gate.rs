//! Gate: a new version against the production version it would replace, on the same test
//! rows (paired bootstrap of the macro-F1 difference), and the one place that turns the verdict
//! into an alias and a reason.

use keel_core::Matrix;
use keel_eval::{Gate, GateDecision, GateOutcome};
use keel_train::Head;

use super::data::Part;
use super::train::predict;

/// Compares a challenger with another version on the same test rows, or says why they cannot
/// be compared. Both must share the label list; the other head reads the same embeddings (the
/// caller checks the encoder) or text.
pub fn compare(
    rule: &Gate,
    challenger: &Matrix,
    other: &Head,
    other_tag: &str,
    test: &Part,
    labels: &[String],
) -> Result<GateDecision, String> {
    if other.labels() != labels {
        return Err(format!(
            "not compared with {other_tag}: it predicts other labels ({}), so macro-F1 is not comparable",
            other.labels().join(", ")
        ));
    }
    let theirs = predict(other, test).map_err(|e| format!("not compared with {other_tag}: {e:#}"))?;
    let mut d = rule.decide(&test.y, challenger, &theirs);
    d.reason = format!("{} (against {other_tag}, {} test rows)", d.reason, test.y.len());
    Ok(d)
}

/// Whether a passing version may move `production`, and what holds it back otherwise.
#[derive(Debug, Clone, Copy)]
pub struct Promotion<'a> {
    pub allowed: bool,
    /// The setting that holds it, in the user's words (`[gate] promote = false`, `--no-promote`).
    pub held_by: &'a str,
}

/// The alias a new version receives, with the reason stored beside the move.
/// `compared` is the gate's decision, or why there was none; `first` is true when the model
/// has no production version yet.
pub fn decide(compared: Result<GateDecision, String>, first: bool, promotion: Promotion<'_>) -> GateOutcome {
    let held = promotion.held_by;
    let (alias, reason, decision) = match compared {
        Err(why) if first && promotion.allowed => ("production", why, None),
        Err(why) if first => ("candidate", format!("{why} (held as candidate: {held})"), None),
        Err(why) => ("candidate", format!("{why}; left as candidate (promote by hand with keel promote)"), None),
        Ok(d) if d.promote && promotion.allowed => ("production", d.reason.clone(), Some(d)),
        Ok(d) if d.promote => ("candidate", format!("{} (held as candidate: {held})", d.reason), Some(d)),
        Ok(d) => ("candidate", d.reason.clone(), Some(d)),
    };
    GateOutcome { decision, reason, alias: alias.to_owned() }
}

/// Why a version may not move `production` automatically because it is worse than its own
/// n-gram baseline beyond noise (the upper end of the paired bootstrap interval of the macro-F1
/// difference below zero), or `None` when it is not. `baseline` is the version's own baseline,
/// trained on the same training rows; `challenger` its probabilities on `test`.
pub fn below_baseline(
    rule: &Gate,
    challenger: &Matrix,
    baseline: &Head,
    test: &Part,
) -> anyhow::Result<Option<String>> {
    let theirs = predict(baseline, test)?;
    let d = rule.decide(&test.y, challenger, &theirs);
    if d.ci.1 >= 0.0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "worse than its own n-gram baseline beyond noise: macro-F1 {:.3} against the baseline's {:.3}, \
         difference {:+.1} pt, {:.0}% interval [{:+.1}, {:+.1}] on {} test rows",
        d.challenger_macro_f1,
        d.production_macro_f1,
        d.diff * 100.0,
        d.level * 100.0,
        d.ci.0 * 100.0,
        d.ci.1 * 100.0,
        test.y.len()
    )))
}

/// An outcome that would have moved `production`, held back as `candidate` because the
/// version is worse than its own baseline (`refusal`, from [`below_baseline`]). Other outcomes
/// keep their alias and gain the refusal in their reason.
pub fn refuse_below_baseline(outcome: GateOutcome, refusal: Option<String>) -> GateOutcome {
    let Some(why) = refusal else { return outcome };
    let GateOutcome { decision, reason, alias } = outcome;
    if alias == "production" {
        let reason = format!("{reason}, but {why}; not promoted automatically (promote by hand with keel promote)");
        GateOutcome { decision, reason, alias: "candidate".into() }
    } else {
        GateOutcome { decision, reason: format!("{reason}; also {why}"), alias }
    }
}
