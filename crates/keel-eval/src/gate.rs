//! The promotion gate: is a challenger better than the production model on the same rows?

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{BootstrapConfig, paired_macro_f1_diff};

/// The rule a challenger must pass. Default: promote iff the lower bound of the 95% paired
/// bootstrap interval of the macro-F1 difference (challenger − production) is above −0.005
/// (half a point) and the point estimate is above 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// The interval's lower bound must exceed this (default −0.005).
    pub min_lower: f64,
    /// The point estimate must exceed this (default 0).
    pub min_point: f64,
    pub bootstrap: BootstrapConfig,
}

impl Default for Gate {
    fn default() -> Self {
        Self { min_lower: -0.005, min_point: 0.0, bootstrap: BootstrapConfig::default() }
    }
}

/// What the gate decided and why, in words.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateDecision {
    pub promote: bool,
    /// E.g. "promoted: macro-F1 +2.1 pt, 95% interval [+0.9, +3.3]".
    pub reason: String,
    /// Macro-F1 of the challenger minus that of production, on the full test rows.
    pub diff: f64,
    /// The bootstrap interval of `diff`.
    pub ci: (f64, f64),
    pub level: f64,
    pub challenger_macro_f1: f64,
    pub production_macro_f1: f64,
    pub n: u64,
}

impl Gate {
    /// Compares two models' class probabilities on the same rows (`y_true`), both over the same
    /// label list in the same order.
    ///
    /// Panics if the shapes disagree.
    pub fn decide(&self, y_true: &[usize], challenger: &Matrix, production: &Matrix) -> GateDecision {
        let iv = paired_macro_f1_diff(y_true, challenger, production, &self.bootstrap);
        let labels: Vec<String> = (0..challenger.cols()).map(|c| c.to_string()).collect();
        let ch = crate::evaluate(y_true, challenger, &labels).macro_f1;
        let pr = crate::evaluate(y_true, production, &labels).macro_f1;
        self.decide_from(iv.point, (iv.lo, iv.hi), iv.level, ch, pr, y_true.len() as u64)
    }

    /// Applies the rule to an already computed difference and interval.
    pub fn decide_from(
        &self,
        diff: f64,
        ci: (f64, f64),
        level: f64,
        challenger_macro_f1: f64,
        production_macro_f1: f64,
        n: u64,
    ) -> GateDecision {
        let pass_point = diff > self.min_point;
        let pass_lower = ci.0 > self.min_lower;
        let promote = pass_point && pass_lower;
        let body = format!(
            "macro-F1 {} pt, {:.0}% interval [{}, {}]",
            signed_pt(diff),
            level * 100.0,
            signed_pt(ci.0),
            signed_pt(ci.1)
        );
        let reason = if promote {
            format!("promoted: {body}")
        } else if !pass_point {
            format!("not promoted: {body}: no gain over production")
        } else {
            format!("not promoted: {body} includes a loss")
        };
        GateDecision { promote, reason, diff, ci, level, challenger_macro_f1, production_macro_f1, n }
    }
}

/// A difference in points (hundredths) with an explicit sign: "+2.1", "−0.8" (Unicode minus).
pub fn signed_pt(v: f64) -> String {
    let s = format!("{:.1}", (v * 100.0).abs());
    // "-0.0" reads as a loss; a value that rounds to zero is shown as "+0.0" or "−0.0" by sign.
    if v < 0.0 { format!("\u{2212}{s}") } else { format!("+{s}") }
}
