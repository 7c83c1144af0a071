//! `bitconv convert DIR --quant TYPE`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use bitconv::checkpoint::Checkpoint;
use bitconv::convert::{self, ConvertOptions, OutType, Plan};
use bitconv::gguf::GgmlType;
use bitconv::quant::absmean::AbsmeanMode;
use bitconv::quant::layouts::params;
use bitconv::util::AtomicFile;
use bitconv::validate;

use super::progress::Bar;

/// Arguments of `bitconv convert`.
#[derive(clap::Args)]
pub struct Args {
    /// The Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer files).
    dir: PathBuf,
    /// Output type (which runtime loads which: README, "Targets").
    #[arg(long = "quant", value_enum, default_value = "i2_s", ignore_case = true)]
    quant: OutType,
    /// Output file [default: DIR/ggml-model-TYPE.gguf, as bitnet.cpp names it].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Store the token embedding as F16 (what bitnet.cpp's setup_env --quant-embd does).
    #[arg(long)]
    quant_embd: bool,
    /// Token embedding type, over every other rule: f32, f16 or q8_0.
    #[arg(long, value_parser = parse_embd_type)]
    token_embedding_type: Option<GgmlType>,
    /// How the absmean of each weight matrix is computed: `exact` (the correctly rounded mean,
    /// the same on every machine) or `torch:T` (torch's float32 summation at T threads, to
    /// reproduce bitnet.cpp's files made on a T-core machine byte for byte).
    #[arg(long, default_value = "exact")]
    absmean: AbsmeanMode,
    /// TL1/TL2 kernel parameters from bitnet.cpp's kernel_config.ini (over the built-in tables).
    #[arg(long, value_name = "FILE")]
    kernel_config: Option<PathBuf>,
    /// Write the kernel_config.ini that bitnet.cpp's build needs for this model's TL kernels.
    #[arg(long, value_name = "FILE")]
    emit_kernel_config: Option<PathBuf>,
    /// The runtime the file is for: bitnet-cpp (current microsoft/BitNet: TL2 is type 42),
    /// bitnet-cpp-2024 (exactly the bytes of the reference converter of the type, bitnet.cpp's
    /// 2024 one or llama.cpp's: no bitconv.* or activation keys), llama-cpp (mainline: its own
    /// ternary types and the float ones) [default: the runtime the output type comes from,
    /// llama-cpp for mainline's types, else bitnet-cpp].
    #[arg(long, value_name = "RUNTIME")]
    target: Option<bitconv::arch::Target>,
    /// Model name that breaks ties between built-in kernel tables with the same shapes
    /// [default: the directory's name].
    #[arg(long)]
    model_name: Option<String>,
    /// general.name in the file [default: the directory's name].
    #[arg(long)]
    name: Option<String>,
    /// BPE pre-tokenizer name for tokenizer.ggml.pre (llama-bpe, falcon3, …), overriding the one
    /// recognised from tokenizer.json's pre_tokenizer definition.
    #[arg(long)]
    tokenizer_pre: Option<String>,
    /// Print the plan (every tensor with its type and size, the total) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// After writing, compute OUT.golden.json from the checkpoint and validate OUT against it
    /// (exit 1 if the file fails).
    #[arg(long)]
    validate: bool,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
}

fn parse_embd_type(s: &str) -> Result<GgmlType, String> {
    match GgmlType::from_name(s) {
        Some(t @ (GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0)) => Ok(t),
        _ => Err(format!(
            "{s:?}: the token embedding can be f32, f16 or q8_0"
        )),
    }
}

pub fn run(a: Args) -> super::Outcome {
    super::init_threads(a.threads)?;
    let ck = Checkpoint::open(&a.dir)
        .with_context(|| format!("cannot read checkpoint {}", a.dir.display()))?;
    let mut opts = ConvertOptions::new(a.quant);
    opts.quant_embd = a.quant_embd;
    opts.token_embedding_type = a.token_embedding_type;
    opts.absmean = a.absmean;
    opts.model_name = a.model_name.clone();
    opts.general_name = a.name.clone();
    opts.tokenizer_pre = a.tokenizer_pre.clone();
    opts.target = a.target;
    if let Some(p) = &a.kernel_config {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let entries =
            params::parse_kernel_config_ini(&text).with_context(|| format!("{}", p.display()))?;
        opts.kernel_config = Some(entries);
    }
    let plan =
        convert::plan(&ck, &opts).with_context(|| format!("cannot convert {}", a.dir.display()))?;
    let warnings = convert::plan_kv::runtime_warnings(&ck.config);
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| a.dir.join(format!("ggml-model-{}.gguf", a.quant.name())));

    if a.dry_run {
        if a.json {
            let mut j = plan.to_json();
            j["output"] = out.display().to_string().into();
            j["dry_run"] = true.into();
            j["warnings"] = warnings.clone().into();
            super::print_json(&j)?;
        } else {
            print_plan(&plan, &out);
            for w in &warnings {
                println!("warning: {w}");
            }
        }
        return Ok(true);
    }
    if plan.out_type.tl_layout().is_some() {
        if let Some(path) = &a.emit_kernel_config {
            write_ini(path, &plan)?;
        }
    } else if a.emit_kernel_config.is_some() {
        bail!("--emit-kernel-config applies to tl1 and tl2 outputs only");
    }
    let bar = Bar::bytes(ck.tensors.total_bytes(), a.quiet || a.json, "converting");
    let summary = convert::write(&ck, &plan, &opts, &out, &bar)
        .with_context(|| format!("cannot convert {}", a.dir.display()))?;
    bar.finish();
    let report = if a.validate {
        Some(
            validate::check_conversion(&a.dir, &out, &plan.kernel_entries)
                .with_context(|| format!("cannot validate {}", out.display()))?,
        )
    } else {
        None
    };
    if a.json {
        let mut j = serde_json::to_value(&summary)?;
        j["warnings"] = warnings.clone().into();
        j["runtimes"] = serde_json::to_value(runtimes_of(&out))?;
        j["out_type"] = plan.out_type.name().into();
        j["target"] = plan.target.name().into();
        j["architecture"] = plan.arch.name().into();
        j["absmean"] = opts.absmean.to_string().into();
        if let Some(r) = &report {
            j["validation"] = serde_json::to_value(r)?;
        }
        super::print_json(&j)?;
        return Ok(report.is_none_or(|r| r.pass));
    } else {
        println!(
            "wrote {} ({} for {}, {} tensors, {:.1} MB) in {:.2}s ({:.0} MB/s of input)",
            summary.output,
            plan.out_type,
            plan.target,
            summary.tensors,
            summary.bytes as f64 / 1e6,
            summary.seconds,
            summary.input_bytes as f64 / 1e6 / summary.seconds.max(1e-9)
        );
        let limited: Vec<&str> = plan
            .tensors
            .iter()
            .filter(|t| t.spec.ty.bitnet_cpp_limit(t.k as u64).is_some())
            .map(|t| t.spec.name.as_str())
            .collect();
        if let Some(first) = limited.first() {
            println!(
                "note: {} tensors ({first}, …): {}",
                limited.len(),
                GgmlType::I2_S.bitnet_cpp_limit(1).unwrap_or_default()
            );
        }
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        let lines = bitconv::gguf::compat::lines(&runtimes_of(&out));
        if !lines.is_empty() {
            println!("runtimes:");
            for l in lines {
                println!("  {l}");
            }
        }
        if let Some(r) = &report {
            super::validate::print_report(r, false)?;
        }
    }
    Ok(report.is_none_or(|r| r.pass))
}

/// Which runtimes load and compute the written file ([`bitconv::gguf::compat`]); none when it
/// cannot be read back.
pub(super) fn runtimes_of(out: &std::path::Path) -> Vec<bitconv::gguf::compat::Verdict> {
    bitconv::gguf::MappedGguf::open_for_report(out)
        .map(|g| bitconv::gguf::compat::verdicts(&g.header))
        .unwrap_or_default()
}

fn write_ini(path: &std::path::Path, plan: &Plan) -> anyhow::Result<()> {
    use std::io::Write;
    let text = params::emit_kernel_config_ini(&plan.kernel_entries);
    let mut f =
        AtomicFile::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.file().write_all(text.as_bytes())?;
    f.commit()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn print_plan(plan: &Plan, out: &std::path::Path) {
    println!(
        "plan: {} → {} ({} for {}, {} tensors, {} metadata keys)",
        plan.arch,
        out.display(),
        plan.out_type,
        plan.target,
        plan.tensors.len(),
        plan.kv.len()
    );
    for t in &plan.tensors {
        println!(
            "  {:<32} {:<6} {:<16} {:>12}  {}",
            t.spec.name,
            t.spec.ty.name(),
            format!("{:?}", t.spec.dims),
            t.nbytes,
            t.note.as_deref().unwrap_or("")
        );
    }
    println!(
        "total: {} bytes ({:.1} MB)",
        plan.file_size,
        plan.file_size as f64 / 1e6
    );
}
