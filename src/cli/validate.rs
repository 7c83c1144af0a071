//! `bitconv validate FILE [--golden G]`: runs the file and compares it with a golden.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bitconv::validate::{self, Golden, Report, RunOptions};

use super::runopts::load_tl_params;

/// Arguments of `bitconv validate`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file to check.
    file: PathBuf,
    /// The golden file [default: FILE.golden.json beside the file, as `convert --validate`
    /// writes it].
    #[arg(short, long)]
    golden: Option<PathBuf>,
    /// Compute the golden now from this checkpoint directory (read as transformers reads it),
    /// instead of reading a golden file.
    #[arg(long, value_name = "DIR", conflicts_with = "golden")]
    checkpoint: Option<PathBuf>,
    /// Validate on this UTF-8 text (one prompt; at most its first 4096 characters) instead of
    /// the calibration prompts: KL divergence, perplexity and the block-by-block check on the
    /// user's own text. Needs --checkpoint.
    #[arg(long, value_name = "FILE", requires = "checkpoint")]
    text: Option<PathBuf>,
    /// TL1/TL2 kernel parameters for a TL file.
    #[arg(long, value_name = "FILE")]
    kernel_config: Option<PathBuf>,
    /// Run the file the way this runtime computes it (the current bitnet.cpp and mainline
    /// llama.cpp apply SiLU to every BitNet FFN, whatever the file says), to see what it will do
    /// to the model before deploying: the report gives the KL divergence and perplexity against
    /// the golden.
    #[arg(long = "as", value_name = "RUNTIME")]
    run_as: Option<bitconv::arch::Target>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runner: super::runopts::Runner,
}

pub fn run(a: Args) -> super::Outcome {
    a.runner.init()?;
    let opts = RunOptions {
        tl_params: load_tl_params(a.kernel_config.as_deref())?,
        run_as: a.run_as,
    };
    let (golden, gpath) = if let Some(dir) = &a.checkpoint {
        let prompts = match &a.text {
            Some(t) => vec![read_text(t)?],
            None => validate::calibration_prompts().0,
        };
        let g = validate::golden_from_checkpoint(dir, &opts, &prompts, 0)
            .with_context(|| format!("cannot compute the golden of {}", dir.display()))?;
        (g, dir.clone())
    } else {
        let gpath = a
            .golden
            .clone()
            .unwrap_or_else(|| validate::golden_path_for(&a.file));
        anyhow::ensure!(
            gpath.is_file(),
            "no golden file {} (make one with `bitconv golden CHECKPOINT_DIR -o {}`, pass \
             --golden, or compare with the checkpoint directly with --checkpoint DIR)",
            gpath.display(),
            gpath.display()
        );
        (Golden::read(&gpath)?, gpath)
    };
    let rep = validate::validate(&a.file, &golden, &gpath, &opts)
        .with_context(|| format!("cannot validate {}", a.file.display()))?;
    print_report(&rep, a.json)?;
    Ok(rep.pass)
}

/// The text of `--text`: UTF-8, not empty, at most 4096 characters.
fn read_text(p: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text ({e})", p.display()))?;
    anyhow::ensure!(
        !text.trim().is_empty(),
        "{}: the text is empty",
        p.display()
    );
    Ok(text.chars().take(4096).collect())
}

/// Prints a report as text or JSON.
pub fn print_report(rep: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(&serde_json::to_value(rep)?);
    }
    println!("validate {} against {}", rep.file, rep.golden);
    if !rep.against.is_empty() {
        println!("  against: {}", rep.against);
    }
    if !rep.arithmetic.is_empty() {
        println!("  arithmetic: {}", rep.arithmetic);
    }
    if let Some(r) = &rep.run_as {
        println!("  run as: {r}");
    }
    for c in &rep.checks {
        println!(
            "  [{}] {:<28} {}",
            match (c.ok, c.informational) {
                (true, false) => " ok ",
                (false, false) => "FAIL",
                (_, true) => "info",
            },
            c.name,
            c.detail
        );
    }
    if let Some(o) = &rep.overall {
        println!(
            "  all prompts: {} rows, mean KL divergence {:.3e} nats (worst p99 {:.3e}), top-1 {:.1}%",
            o.rows,
            o.mean_kl,
            o.p99_kl,
            o.top1_agreement * 100.0
        );
    }
    println!("{}", if rep.pass { "PASS" } else { "FAIL" });
    Ok(())
}
