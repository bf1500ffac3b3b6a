//! Keel store: the only crate that speaks SQL; content-addressed artifacts.
