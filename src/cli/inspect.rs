//! `bitconv inspect FILE.gguf|DIR`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bitconv::checkpoint::Checkpoint;
use bitconv::gguf::{inspect, MappedGguf};

/// Arguments of `bitconv inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file, or a Hugging Face checkpoint directory.
    path: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Add the sha256 of every tensor's byte span (GGUF files only).
    #[arg(long)]
    hash: bool,
}

pub fn run(a: Args) -> super::Outcome {
    if a.path.is_dir() {
        let ck = Checkpoint::open(&a.path)
            .with_context(|| format!("cannot read checkpoint {}", a.path.display()))?;
        let d = ck.describe();
        if a.json {
            super::print_json(&d)?;
        } else {
            print_checkpoint(&d)?;
        }
        return Ok(true);
    }
    let g = MappedGguf::open_for_report(&a.path)
        .with_context(|| format!("cannot read {}", a.path.display()))?;
    if a.json {
        super::print_json(&inspect::report_json(&g, a.hash))?;
    } else {
        std::io::stdout()
            .lock()
            .write_all(inspect::report_text(&g, a.hash).as_bytes())?;
    }
    Ok(true)
}

fn print_checkpoint(d: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let obj = d.as_object().expect("describe returns an object");
    for (k, v) in obj {
        if k == "output_types" {
            continue;
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        writeln!(out, "{k:<24} {text}")?;
    }
    writeln!(out, "output types:")?;
    for t in d["output_types"].as_array().into_iter().flatten() {
        let name = t["type"].as_str().unwrap_or("?");
        if t["ok"].as_bool() == Some(true) {
            writeln!(out, "  {name:<8} yes")?;
        } else {
            writeln!(out, "  {name:<8} no: {}", t["why"].as_str().unwrap_or(""))?;
        }
    }
    Ok(())
}
