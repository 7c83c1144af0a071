//! `bitconv dummy --size SIZE --quant TYPE`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use bitconv::checkpoint::Arch;
use bitconv::convert::OutType;
use bitconv::dummy::{self, DummySpec, DEFAULT_VOCAB, SIZES};
use bitconv::quant::layouts::params;

use super::progress::Bar;

/// Arguments of `bitconv dummy`.
#[derive(clap::Args)]
pub struct Args {
    /// A size of bitnet.cpp's dummy generator (125M, 350M, 1B, 1.5B, 2.7B, 3.8B, 7B, 13B, 30B,
    /// 70B, 100B), `3B` (bitnet_b1_58-3B's shape: hidden 3200, FFN 8640, 26 layers), or `custom`
    /// with --hidden/--intermediate/--layers/--heads.
    #[arg(long, default_value = "125M")]
    size: String,
    /// Output type.
    #[arg(long = "quant", value_enum, default_value = "i2_s", ignore_case = true)]
    quant: OutType,
    /// Output file [default: ggml-model-SIZE-TYPE.gguf in the current directory].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Seed of the weights (same seed, same file).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    // Help from the table of architectures (`arch_help`).
    #[arg(long, default_value = "bitnet", value_parser = parse_arch, help = arch_help())]
    arch: Arch,
    /// Hidden size (overrides the size's).
    #[arg(long)]
    hidden: Option<usize>,
    /// FFN size (overrides the size's).
    #[arg(long)]
    intermediate: Option<usize>,
    /// Layers (overrides the size's).
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads (overrides the size's).
    #[arg(long)]
    heads: Option<usize>,
    /// KV heads [default: heads].
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Vocabulary size.
    #[arg(long, default_value_t = DEFAULT_VOCAB)]
    vocab: usize,
    /// TL1/TL2 kernel parameters from a kernel_config.ini (over derived ones).
    #[arg(long, value_name = "FILE")]
    kernel_config: Option<PathBuf>,
    /// The runtime the file is for: bitnet-cpp, bitnet-cpp-2024, llama-cpp [default: the
    /// runtime the output type comes from, llama-cpp for mainline's types, else bitnet-cpp].
    #[arg(long, value_name = "RUNTIME")]
    target: Option<bitconv::arch::Target>,
    /// Write the kernel_config.ini bitnet.cpp's build needs for this model.
    #[arg(long, value_name = "FILE")]
    emit_kernel_config: Option<PathBuf>,
    /// Print the plan (tensors, sizes, total) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::from_name(s).ok_or_else(|| format!("unknown architecture {s:?} ({})", Arch::names_list()))
}

/// The `--arch` help, from the table of architectures.
fn arch_help() -> String {
    let each: Vec<String> = Arch::all()
        .map(|a| {
            let i = a.info();
            format!("{} ({}, {})", i.name, i.models, i.activation.name())
        })
        .collect();
    format!("Architecture: {}", each.join(", "))
}

pub fn run(a: Args) -> super::Outcome {
    super::init_threads(a.threads)?;
    let base = if a.size.eq_ignore_ascii_case("custom") {
        None
    } else {
        Some(dummy::size(&a.size).with_context(|| {
            format!(
                "unknown size {:?}; choose one of {} or custom",
                a.size,
                SIZES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            )
        })?)
    };
    let pick = |v: Option<usize>, from: Option<usize>, flag: &str| -> anyhow::Result<usize> {
        v.or(from)
            .with_context(|| format!("--size custom needs {flag}"))
    };
    let hidden = pick(a.hidden, base.map(|s| s.hidden), "--hidden")?;
    let heads = pick(a.heads, base.map(|s| s.heads), "--heads")?;
    let spec = DummySpec {
        arch: a.arch,
        hidden,
        intermediate: pick(
            a.intermediate,
            base.map(|s| s.intermediate),
            "--intermediate",
        )?,
        layers: pick(a.layers, base.map(|s| s.layers), "--layers")?,
        heads,
        kv_heads: a.kv_heads.unwrap_or(heads),
        vocab: a.vocab,
        out_type: a.quant,
        seed: a.seed,
        name: format!("bitconv-dummy-{}", a.size),
        kernel_config: match &a.kernel_config {
            None => None,
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                Some(
                    params::parse_kernel_config_ini(&text)
                        .with_context(|| format!("{}", p.display()))?,
                )
            }
        },
        target: a.target,
    };
    let plan = dummy::plan(&spec)
        .with_context(|| format!("cannot make a {} {} model", a.size, a.quant))?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("ggml-model-{}-{}.gguf", a.size, a.quant.name())));
    if a.dry_run {
        if a.json {
            let mut j = plan.to_json();
            j["output"] = out.display().to_string().into();
            super::print_json(&j)?;
        } else {
            for t in &plan.tensors {
                println!(
                    "  {:<32} {:<6} {:<18} {:>14}",
                    t.spec.name,
                    t.spec.ty.name(),
                    format!("{:?}", t.spec.dims),
                    t.nbytes
                );
            }
            println!(
                "total: {} tensors, {} parameters, {} bytes ({:.2} GB) → {}",
                plan.tensors.len(),
                plan.parameters,
                plan.file_size,
                plan.file_size as f64 / 1e9,
                out.display()
            );
        }
        return Ok(true);
    }
    if let Some(p) = &a.emit_kernel_config {
        if a.quant.tl_layout().is_none() {
            bail!("--emit-kernel-config applies to tl1 and tl2 outputs only");
        }
        std::fs::write(p, params::emit_kernel_config_ini(&plan.kernel_entries))
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let bar = Bar::bytes(plan.file_size, a.quiet || a.json, "generating");
    let summary = dummy::write(&spec, &plan, &out, &bar).context("cannot write the dummy model")?;
    bar.finish();
    if a.json {
        super::print_json(&serde_json::to_value(&summary)?)?;
    } else {
        println!(
            "wrote {} ({} {}, {} parameters, {:.2} GB) in {:.2}s ({:.0} MB/s)",
            summary.output,
            a.size,
            a.quant,
            summary.parameters,
            summary.bytes as f64 / 1e9,
            summary.seconds,
            summary.bytes as f64 / 1e6 / summary.seconds.max(1e-9)
        );
    }
    Ok(true)
}
