//! Results go to stdout (JSON with --json, text otherwise); progress and logs go to stderr.

use indicatif::{ProgressBar, ProgressStyle};

pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A progress bar on stderr; hidden when stderr is not a terminal or `quiet` is set.
pub fn progress(len: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A status line for humans, on stderr so stdout stays clean for results.
pub fn note(msg: impl std::fmt::Display) {
    // Not eprintln!: a closed stderr (a supervisor that stopped reading, `2>&-`) must not turn
    // a clean shutdown into a panic.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}
