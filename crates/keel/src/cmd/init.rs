//! `keel init`: a commented keel.toml to start a project from.

use std::path::Path;

use anyhow::bail;
use serde_json::json;

use crate::cli::InitArgs;
use crate::config;
use crate::output;

pub fn run(json: bool, args: InitArgs) -> anyhow::Result<()> {
    if args.path.exists() && !args.force {
        bail!("{} exists; pass --force to replace it", args.path.display());
    }
    let mut text = config::TEMPLATE.to_owned();
    if let Some(name) = &args.name {
        text = text.replacen("name = \"my-model\"", &format!("name = {}", toml_string(name)), 1);
    }
    if let Some(source) = &args.source {
        text = text.replacen("path = \"data.csv\"", &format!("path = {}", toml_string(source)), 1);
    }
    // What is written must be what `keel run` accepts.
    config::parse(&text)?;
    crate::stages::train::write_atomically(&args.path, text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.path.display()))?;
    if json {
        return output::json(&json!({"config": args.path, "written": true}));
    }
    let dir = args.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    println!(
        "wrote {}: point [source] at your data, then run `keel run --config {}`",
        args.path.display(),
        args.path.display()
    );
    println!("(relative paths in it start from {})", dir.display());
    Ok(())
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
