//! Keeping a cross-validated L2 strength while the training rows change little: cross-
//! validation is most of a logistic head's training time, and a strength chosen on nearly the
//! same rows is the one it would choose again.

use keel_core::{Hasher, Record};
use keel_store::{ModelVersion, Store};
use serde_json::json;

use crate::config::HeadSection;
use crate::output::note;
use crate::stages::train::{HeadKind, L2Choice};
use crate::stages::{L2Origin, StepKind, Trained};

/// What the L2 rule looks at besides the rows.
#[derive(Debug)]
pub struct L2Context<'a> {
    pub store: &'a Store,
    pub project: &'a str,
    pub head: &'a HeadSection,
    /// The production version the new one would replace.
    pub production: Option<&'a ModelVersion>,
    pub encoder_id: &'a str,
    pub labels: &'a [String],
    pub quiet: bool,
}

/// Cross-validate the L2 strength again, or keep the one the production version's training
/// carried: kept when the head is logistic regression on the same encoder and labels and at
/// most `[head] l2_reuse_max_change` of the training rows (`rows`: text and label
/// fingerprints) differ from the rows that strength was cross-validated on. Also returns the
/// origin to record when kept. Production cannot move between this and the train step's
/// record (promotion comes later in the pass), so a step redone after a kill makes the same
/// choice.
pub async fn l2_choice(cx: &L2Context<'_>, rows: &[u64]) -> anyhow::Result<(L2Choice, Option<L2Origin>)> {
    let cv = Ok((L2Choice::CrossValidate, None));
    let max_change = cx.head.l2_reuse_max_change;
    // Under auto selection a kept strength also keeps the family: production shipped logistic
    // regression (only then does its training carry an L2 origin) and the rows barely moved.
    if !matches!(cx.head.kind, HeadKind::Logistic | HeadKind::Auto) || max_change <= 0.0 {
        return cv;
    }
    let Some(prev) = cx.production else { return cv };
    if prev.encoder_id != cx.encoder_id {
        return cv;
    }
    let Some(origin) = crate::stages::register::metrics_of(prev).ok().and_then(|m| m.pipeline) else {
        return cv;
    };
    let Some(step) = cx.store.find_step(cx.project, StepKind::Train.name(), &origin.train_key).await? else {
        return cv;
    };
    let Ok(before) = serde_json::from_value::<Trained>(step.fields.output) else { return cv };
    let Some(l2_origin) = before.l2_origin else { return cv };
    if before.labels != cx.labels {
        return cv;
    }
    let bytes = cx.store.read_artifact(&l2_origin.rows).await?;
    let old: Vec<u64> =
        bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk"))).collect();
    let share = changed_share(&old, rows);
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    if share > max_change {
        if !cx.quiet {
            note(format!(
                "train     cross-validating L2 again: {} of the training rows differ from those {}'s was chosen on (above [head] l2_reuse_max_change = {})",
                pct(share),
                prev.tag(),
                pct(max_change)
            ));
        }
        return cv;
    }
    let l2 = l2_origin.l2;
    if !cx.quiet {
        note(format!(
            "train     keeping L2 = {l2:e} from {}: {} of the training rows differ from those it was cross-validated on (at most {} allowed by [head] l2_reuse_max_change)",
            prev.tag(),
            pct(share),
            pct(max_change)
        ));
    }
    let note = json!({"version": prev.tag(), "changed_share": share, "max_change": max_change,
        "cross_validated_in": l2_origin.train_key});
    Ok((L2Choice::Keep { l2, note }, Some(l2_origin)))
}

/// One 64-bit fingerprint per training row (its text and label), sorted: what the L2 reuse
/// rule compares between runs.
pub fn row_fingerprints(records: &[Record], y: &[usize], labels: &[String], rows: &[usize]) -> Vec<u64> {
    let mut out: Vec<u64> = rows
        .iter()
        .map(|&i| {
            let mut h = Hasher::new();
            h.field(records[i].text.as_bytes()).field(labels[y[i]].as_bytes());
            let hex = h.finish();
            u64::from_str_radix(&hex.as_str()[..16], 16).expect("a sha256 digest is hex")
        })
        .collect();
    out.sort_unstable();
    out
}

/// Share of rows that changed between two sorted multisets of fingerprints: half the rows in
/// one and not the other, over the larger one's size (one edited row of a hundred: 1%).
pub fn changed_share(old: &[u64], new: &[u64]) -> f64 {
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let larger = old.len().max(new.len());
    if larger == 0 { 0.0 } else { (old.len() + new.len() - 2 * common) as f64 / (2 * larger) as f64 }
}
