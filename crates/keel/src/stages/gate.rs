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
