//! Keel evaluation: metrics on a held-out split.
