//! Model selection's record: every candidate family's cross-validated accuracy and measured
//! cost, the rule, and the choice in plain words (kept with the version and in its report).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::html::escape;

/// One candidate's cross-validated accuracy and its measured cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    /// The family's name (`sparse`, `logistic`, ...).
    pub family: String,
    /// The family in plain words.
    pub description: String,
    /// Held-out accuracy of each fold (the same folds for every candidate), at the candidate's
    /// own chosen setting.
    pub fold_accuracy: Vec<f64>,
    /// Mean of `fold_accuracy`.
    pub mean: f64,
    /// Standard error of that mean (sample standard deviation over folds / √folds).
    pub se: f64,
    /// CPU microseconds per prediction, measured on the training machine (two significant
    /// digits), the encoder's share included for families that read embeddings.
    pub cost_us: f64,
    /// The setting the candidate's own cross-validation chose.
    pub setting: String,
    /// Whether serving it needs the encoder.
    pub needs_encoder: bool,
}

/// What auto selection compared and why it shipped what it shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSelection {
    pub candidates: Vec<CandidateScore>,
    /// The chosen candidate's `family`.
    pub chosen: String,
    /// The rule, in words.
    pub rule: String,
    /// The choice in plain words, with every candidate's score and the cost ratio.
    pub reason: String,
}

impl ModelSelection {
    /// The chosen candidate's record.
    pub fn chosen(&self) -> Option<&CandidateScore> {
        self.candidates.iter().find(|c| c.family == self.chosen)
    }

    /// The report's "Model selection" section (empty string never: a heading, the reason and a
    /// table of candidates).
    pub fn html(&self) -> String {
        let mut h = String::from(
            "<h2>Model selection</h2><p class=\"why\">Each model family was cross-validated on the same folds of the training split (never the test split); the cheapest within one standard error of the best was shipped.</p>",
        );
        let _ = write!(h, "<p><strong>{}</strong></p>", escape(&self.reason));
        h.push_str("<table><tr><th>candidate</th><th>CV accuracy</th><th>± SE</th><th>CPU µs / prediction</th><th>setting</th></tr>");
        for c in &self.candidates {
            let mark = if c.family == self.chosen { " (shipped)" } else { "" };
            let _ = write!(
                h,
                "<tr><td>{}{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{:.4}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&c.description),
                mark,
                c.mean,
                c.se,
                c.cost_us,
                escape(&c.setting)
            );
        }
        h.push_str("</table>\n");
        h
    }
}
