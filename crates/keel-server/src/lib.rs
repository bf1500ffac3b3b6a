//! Keel HTTP server: the only crate that knows HTTP.
