//! `bitconv bench FILE [-p 512] [-n 128] [-t 2] [-r 5] [--json] [--baseline reference]
//! [--against OTHER.gguf]...`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bitconv::quant::layouts::params::parse_kernel_config_ini;
use bitconv::runtime::bench::{self, BenchOptions, BenchReport, Rate};
use bitconv::runtime::kernels::{self as simd, KernelChoice};
use bitconv::runtime::{LoadOptions, Model, WeightMemory};
use serde_json::json;

/// Arguments of `bitconv bench`.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model.
    file: PathBuf,
    /// Prompt tokens, processed in one batch (0: skip the prompt test).
    #[arg(short = 'p', long = "prompt", default_value_t = 512)]
    prompt: usize,
    /// Tokens generated one at a time from an empty context (0: skip).
    #[arg(short = 'n', long = "gen", default_value_t = 128)]
    gen: usize,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "reps", default_value_t = 5)]
    reps: usize,
    /// Kernels: auto (the fastest this CPU runs), reference (scalar), avx2, avx512, neon
    /// [default: $BITCONV_KERNEL, else auto].
    #[arg(long, value_parser = super::runopts::parse_kernel)]
    kernel: Option<KernelChoice>,
    /// Also measure these kernels in the same run, for the ratio (e.g. `reference`).
    #[arg(long, value_parser = super::runopts::parse_kernel)]
    baseline: Vec<KernelChoice>,
    /// Also measure these models, alternated with FILE in one process (every repetition runs
    /// each in turn), and report their rates relative to FILE: the fair way to compare two
    /// files (e.g. the same model as I2_S and TQ2_0) on a machine whose pace drifts.
    #[arg(long, value_name = "OTHER")]
    against: Vec<PathBuf>,
    /// Read the weights in place from the file mapping instead of a resident copy on huge
    /// pages (the default; see `bitconv run --help`).
    #[arg(long)]
    mmap: bool,
    /// MiB of the buffer the read bandwidth is measured on (0: skip the measurement).
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    bandwidth_mib: usize,
    /// TL1/TL2 kernel parameters (kernel_config.ini) [default: found next to the model].
    #[arg(long, value_name = "FILE")]
    kernel_config: Option<PathBuf>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> super::Outcome {
    super::init_threads(a.threads)?;
    let kernels = super::runopts::init_kernel(a.kernel)?;
    let mut tables = vec![kernels];
    for &c in &a.baseline {
        let k = simd::get(c).ok_or(simd::KernelError::Unsupported(c))?;
        if !tables.iter().any(|t| std::ptr::eq(*t, k)) {
            tables.push(k);
        }
    }
    let mut load = LoadOptions::default();
    if a.mmap {
        load.weights = WeightMemory::Mapped;
    }
    if let Some(p) = &a.kernel_config {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        load.tl_params = parse_kernel_config_ini(&text)
            .with_context(|| format!("cannot parse {}", p.display()))?;
    }
    let model =
        Model::load(&a.file, &load).with_context(|| format!("cannot load {}", a.file.display()))?;
    let others = a
        .against
        .iter()
        .map(|p| Model::load(p, &load).with_context(|| format!("cannot load {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Sizes from the command line are checked before anything is allocated for them.
    for m in std::iter::once(&model).chain(&others) {
        super::runopts::check_ctx(m, a.prompt.max(a.gen).saturating_add(1), "-p/-n")?;
        let hp = m.hparams();
        // The prompt's activations and logits: a few rows of hidden, FFN and vocabulary width.
        let per_token = (4 * hp.n_embd + 3 * hp.n_ff + hp.n_vocab) as u128 * 4;
        super::runopts::check_buffer(per_token * a.prompt as u128, "-p")?;
    }
    super::runopts::check_buffer((a.bandwidth_mib as u128) << 20, "--bandwidth-mib")?;
    let opts = BenchOptions {
        prompt: a.prompt,
        gen: a.gen,
        reps: a.reps.max(1),
        kernels: tables,
        bandwidth_bytes: a.bandwidth_mib.saturating_mul(1 << 20),
        bandwidth_passes: 5,
    };
    let report = bench::run(&model, &opts)?;
    let alternated = if others.is_empty() {
        vec![]
    } else {
        let all: Vec<&Model> = std::iter::once(&model).chain(&others).collect();
        bench::alternate(&all, kernels, &opts)?
    };
    if a.json {
        let mut j = to_json(&a, &model, &report);
        if !alternated.is_empty() {
            j["alternated"] = alternated_json(&a, &model, &others, &alternated);
        }
        super::print_json(&j)?;
    } else {
        print_text(&a, &model, &report)?;
        if !alternated.is_empty() {
            print_alternated(&a, &model, &others, &alternated)?;
        }
    }
    Ok(true)
}

/// `x / y` of two rates' means.
fn ratio(x: &Option<Rate>, y: &Option<Rate>) -> Option<f64> {
    match (x, y) {
        (Some(x), Some(y)) if y.mean() > 0.0 => Some(x.mean() / y.mean()),
        _ => None,
    }
}

fn alternated_json(
    a: &Args,
    model: &Model,
    others: &[Model],
    r: &[bench::KernelResult],
) -> serde_json::Value {
    let files = std::iter::once((&a.file, model)).chain(a.against.iter().zip(others));
    let rows: Vec<_> = files
        .zip(r)
        .map(|((f, m), k)| {
            json!({
                "file": f.display().to_string(),
                "model": model_desc(m),
                "kernel": k.kernel,
                "pp": rate_json(&k.pp),
                "tg": rate_json(&k.tg),
                "pp_ratio": ratio(&k.pp, &r[0].pp),
                "tg_ratio": ratio(&k.tg, &r[0].tg),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

fn print_alternated(
    a: &Args,
    model: &Model,
    others: &[Model],
    r: &[bench::KernelResult],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nalternated in one process ({} kernels), relative to the first:",
        r[0].kernel
    )?;
    let pp = format!("pp{}", a.prompt);
    let tg = format!("tg{}", a.gen);
    writeln!(
        out,
        "| file | projections | {pp} tokens/s | ratio | {tg} tokens/s | ratio |"
    )?;
    writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: |")?;
    let proj = |m: &Model| {
        m.matrices()
            .next()
            .map_or("?".to_string(), |w| w.file_type().to_string())
    };
    let fmt_ratio = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let files = std::iter::once((&a.file, model)).chain(a.against.iter().zip(others));
    for ((f, m), k) in files.zip(r) {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            f.display(),
            proj(m),
            fmt_rate(&k.pp),
            fmt_ratio(ratio(&k.pp, &r[0].pp)),
            fmt_rate(&k.tg),
            fmt_ratio(ratio(&k.tg, &r[0].tg)),
        )?;
    }
    Ok(())
}

fn model_desc(model: &Model) -> String {
    let hp = model.hparams();
    let proj = model
        .matrices()
        .next()
        .map_or("?".to_string(), |m| m.file_type().to_string());
    format!(
        "{} (h{} ffn {} layers {} vocab {}, projections {}, head {})",
        hp.arch.name(),
        hp.n_embd,
        hp.n_ff,
        hp.n_layer,
        hp.n_vocab,
        proj,
        model.head().file_type()
    )
}

fn rate_json(r: &Option<Rate>) -> serde_json::Value {
    match r {
        None => serde_json::Value::Null,
        Some(r) => json!({
            "tokens": r.tokens,
            "mean": r.mean(),
            "sd": r.sd(),
            "samples": r.samples,
        }),
    }
}

fn to_json(a: &Args, model: &Model, r: &BenchReport) -> serde_json::Value {
    let results: Vec<_> = r
        .results
        .iter()
        .enumerate()
        .map(|(i, k)| {
            json!({
                "kernel": k.kernel,
                "pp": rate_json(&k.pp),
                "tg": rate_json(&k.tg),
                "tg_percent_of_bound": r.percent_of_bound(i),
            })
        })
        .collect();
    json!({
        "file": a.file.display().to_string(),
        "model": model_desc(model),
        "prompt": a.prompt,
        "gen": a.gen,
        "reps": a.reps,
        "threads": r.threads,
        "weights_memory": if model.resident_bytes() > 0 { "resident" } else { "mapped" },
        "resident_bytes": model.resident_bytes(),
        "resident_huge_page_bytes": model.resident_huge_page_bytes(),
        "read_bandwidth_bytes_per_s": r.bandwidth.map(|b| b.mean()),
        "read_bandwidth_before": r.bandwidth.map(|b| b.before),
        "read_bandwidth_after": r.bandwidth.map(|b| b.after),
        "weights_read_bandwidth_bytes_per_s": r.weights_bandwidth.as_ref().map(Rate::mean),
        "weights_read_bandwidth_sd": r.weights_bandwidth.as_ref().map(Rate::sd),
        "tg_buffer_bound_tokens_per_s": r.buffer_bound(),
        "bytes_per_token": r.bytes_per_token,
        "tg_bound_tokens_per_s": r.bound(),
        "results": results,
    })
}

fn fmt_rate(r: &Option<Rate>) -> String {
    match r {
        None => "-".into(),
        Some(r) => format!("{:.1} ± {:.1}", r.mean(), r.sd()),
    }
}

/// Where the weights are held, for the report.
fn weights_desc(model: &Model) -> String {
    let resident = model.resident_bytes();
    if resident == 0 {
        return "read in place from the file mapping".into();
    }
    let huge = match model.resident_huge_page_bytes() {
        Some(h) => format!("{:.1} MB of it on huge pages", h as f64 / 1e6),
        None => "huge pages unknown".into(),
    };
    format!("resident copy, {:.1} MB ({huge})", resident as f64 / 1e6)
}

fn print_text(a: &Args, model: &Model, r: &BenchReport) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "model: {}", a.file.display())?;
    writeln!(out, "       {}", model_desc(model))?;
    writeln!(out, "threads: {}, repetitions: {}", r.threads, a.reps)?;
    writeln!(out, "weights: {}", weights_desc(model))?;
    match r.bandwidth {
        Some(b) => {
            writeln!(
                out,
                "read bandwidth: {:.1} GB/s (best of 5 passes over {} MiB: {:.1} before the tests, {:.1} after)",
                b.mean() / 1e9,
                a.bandwidth_mib,
                b.before / 1e9,
                b.after / 1e9
            )?;
            if b.unsteady() {
                writeln!(
                    out,
                    "  (the two differ by more than 15%: the machine was busy)"
                )?;
            }
        }
        None => writeln!(out, "read bandwidth: not measured")?,
    }
    if let Some(w) = &r.weights_bandwidth {
        writeln!(
            out,
            "weights read in place: {:.1} ± {:.1} GB/s (after each generation run, once per token it generated)",
            w.mean() / 1e9,
            w.sd() / 1e9
        )?;
    }
    write!(
        out,
        "bytes per generated token: {:.1} MB",
        r.bytes_per_token as f64 / 1e6
    )?;
    match (r.bound(), r.buffer_bound()) {
        (Some(b), Some(f)) if r.weights_bandwidth.is_some() => writeln!(
            out,
            " -> generation bound {b:.1} tokens/s ({f:.1} with the buffer's bandwidth)"
        )?,
        (Some(b), _) => writeln!(out, " -> generation bound {b:.1} tokens/s")?,
        (None, _) => writeln!(out)?,
    }
    writeln!(out)?;
    let pp = format!("pp{}", a.prompt);
    let tg = format!("tg{}", a.gen);
    writeln!(
        out,
        "| kernel    | {pp:>8} tokens/s | {tg:>8} tokens/s | tg % of bound |"
    )?;
    writeln!(
        out,
        "| --------- | ----------------: | ----------------: | ------------: |"
    )?;
    for (i, k) in r.results.iter().enumerate() {
        let pct = r
            .percent_of_bound(i)
            .map_or("-".to_string(), |p| format!("{p:.1}%"));
        writeln!(
            out,
            "| {:<9} | {:>17} | {:>17} | {:>13} |",
            k.kernel,
            fmt_rate(&k.pp),
            fmt_rate(&k.tg),
            pct
        )?;
    }
    if r.results.len() > 1 {
        let first = &r.results[0];
        for other in &r.results[1..] {
            let times = |x: &Option<Rate>, y: &Option<Rate>| {
                ratio(x, y).map_or("-".to_string(), |v| format!("{v:.2}x"))
            };
            writeln!(
                out,
                "\n{} vs {}: prompt {}, generation {}",
                first.kernel,
                other.kernel,
                times(&first.pp, &other.pp),
                times(&first.tg, &other.tg)
            )?;
        }
    }
    Ok(())
}
