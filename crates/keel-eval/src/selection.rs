//! Model selection's record: every candidate family's cross-validated accuracy, its cost rank
//! and (outside artifacts) its measured cost, the rule, and the choice in plain words.
//!
//! Artifacts hold only what the same inputs always give (scores, ranks, the reason); CPU time
//! measured on the training machine goes to the version's metrics row (`cost_us`,
//! `cost_note`), so a run killed and redone ends with the same artifact bytes.

use serde::{Deserialize, Serialize};

/// One candidate's cross-validated accuracy and its cost.
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
    /// Cost order of the family (0 is cheapest): what reads no encoder costs microseconds per
    /// prediction, what reads the encoder milliseconds, and the combined model adds its n-grams
    /// to that. Fixed per family, so the choice does not depend on a clock.
    pub cost_rank: u32,
    /// CPU microseconds per prediction measured on the training machine (two significant
    /// digits), the encoder's share included; absent in artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_us: Option<f64>,
    /// The setting the candidate's own cross-validation chose.
    pub setting: String,
    /// Whether serving it needs the encoder.
    pub needs_encoder: bool,
    /// Dropped after the first fold, too far behind the leader there to be chosen: its score is
    /// that fold's alone, and it cannot be shipped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raced_out: bool,
}

/// What auto selection compared and why it shipped what it shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSelection {
    pub candidates: Vec<CandidateScore>,
    /// The chosen candidate's `family`.
    pub chosen: String,
    /// The rule, in words.
    pub rule: String,
    /// The choice in plain words, with every candidate's score.
    pub reason: String,
    /// The measured costs in words ("about 7000× cheaper per prediction than ..."); absent in
    /// artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_note: Option<String>,
}

impl ModelSelection {
    /// The chosen candidate's record.
    pub fn chosen(&self) -> Option<&CandidateScore> {
        self.candidates.iter().find(|c| c.family == self.chosen)
    }
}
