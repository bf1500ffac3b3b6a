//! Keel ingest: readers, validation, quarantine, splits.
