//! `bitconv golden DIR|FILE -o G`: computes a golden file.

use std::path::PathBuf;

use anyhow::Context;
use bitconv::validate::{self, RunOptions};

use super::runopts::load_tl_params;

/// Arguments of `bitconv golden`.
#[derive(clap::Args)]
pub struct Args {
    /// A Hugging Face checkpoint directory or a GGUF file.
    source: PathBuf,
    /// The golden file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// A JSON file with "prompts" (and optionally "greedy_tokens") [default: the built-in
    /// calibration prompts].
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Greedy tokens per prompt [default: the calibration set's].
    #[arg(short = 'n', long)]
    greedy: Option<usize>,
    /// TL1/TL2 kernel parameters for a TL file.
    #[arg(long, value_name = "FILE")]
    kernel_config: Option<PathBuf>,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runner: super::runopts::Runner,
}

pub fn run(a: Args) -> super::Outcome {
    a.runner.init()?;
    let (mut prompts, mut n) = validate::calibration_prompts();
    if let Some(p) = &a.prompts {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )
        .with_context(|| format!("{}: not JSON", p.display()))?;
        prompts = v["prompts"]
            .as_array()
            .with_context(|| format!("{}: no \"prompts\" array", p.display()))?
            .iter()
            .map(|s| {
                s.as_str()
                    .map(String::from)
                    .with_context(|| format!("{}: prompts must be strings", p.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        if let Some(g) = v["greedy_tokens"].as_u64() {
            n = g as usize;
        }
    }
    if let Some(g) = a.greedy {
        n = g;
    }
    let opts = RunOptions {
        tl_params: load_tl_params(a.kernel_config.as_deref())?,
        run_as: None,
    };
    let g = if a.source.is_dir() {
        validate::golden_from_checkpoint(&a.source, &opts, &prompts, n)
    } else {
        validate::golden_from_gguf(&a.source, &opts, &prompts, n)
    }
    .with_context(|| format!("cannot compute a golden from {}", a.source.display()))?;
    g.write(&a.output)?;
    if a.json {
        super::print_json(&serde_json::json!({
            "golden": a.output.display().to_string(), "kind": g.model.kind, "prompts": g.prompts.len(),
            "tensors": g.tensors.as_ref().map_or(0, |t| t.len()),
        }))?;
    } else {
        println!(
            "wrote {} ({} golden from {}, {} prompts)",
            a.output.display(),
            g.model.kind,
            a.source.display(),
            g.prompts.len()
        );
    }
    Ok(true)
}
