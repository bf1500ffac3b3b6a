//! The majority-class baseline: predicts the training label frequencies for every input.

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// Predicts each class with its share of the training labels (scikit-learn's
/// `DummyClassifier(strategy="prior")`); the predicted class is the most frequent one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Majority {
    labels: Vec<String>,
    priors: Vec<f32>,
}

impl Majority {
    pub fn fit(y: &[usize], labels: Vec<String>) -> Result<Self, TrainError> {
        crate::check_labels(&labels)?;
        if y.is_empty() {
            return Err(TrainError::Empty);
        }
        let k = labels.len();
        let mut counts = vec![0u64; k];
        for (row, &c) in y.iter().enumerate() {
            if c >= k {
                return Err(TrainError::LabelOutOfRange { row, label: c, n_classes: k });
            }
            counts[c] += 1;
        }
        let n = y.len() as f64;
        Ok(Self { labels, priors: counts.iter().map(|&c| (c as f64 / n) as f32).collect() })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The class frequencies: the same probabilities for every input.
    pub fn predict_proba(&self) -> Vec<f32> {
        self.priors.clone()
    }

    /// Log-priors (floored at 1e-12), so temperature scaling and softmax apply uniformly.
    pub fn logits(&self) -> Vec<f32> {
        self.priors.iter().map(|&p| f64::from(p).max(1e-12).ln() as f32).collect()
    }

    pub(crate) fn validate(&self) -> Result<(), TrainError> {
        crate::check_labels(&self.labels).map_err(|e| TrainError::InvalidArtifact(e.to_string()))?;
        if self.priors.len() != self.labels.len() || !self.priors.iter().all(|p| p.is_finite() && *p >= 0.0) {
            return Err(TrainError::InvalidArtifact("majority priors do not match the labels".into()));
        }
        Ok(())
    }
}
