use serde::{Deserialize, Serialize};

/// One accepted input row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// From the id column when there is one, otherwise `<file stem>:<line>`.
    pub id: String,
    pub text: String,
    pub label: Option<String>,
    /// 1-based line in the source file where the row starts.
    pub line: u64,
    /// The text as read, when normalisation changed it (`text` is the normalised one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_text: Option<String>,
}

/// One rejected input row: kept with its reason, never silently dropped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub source: String,
    pub line: u64,
    pub reason: String,
    /// The original bytes of the row, lossily shown as UTF-8.
    pub raw: String,
    /// The original bytes exactly, in standard base64, when they are not valid UTF-8 (otherwise
    /// `raw` is exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_base64: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}
