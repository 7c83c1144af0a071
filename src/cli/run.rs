//! `bitconv run FILE -p PROMPT`: generates text with the built-in runtime.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bitconv::runtime::tokenize::GgufTokenizer;
use bitconv::runtime::{LoadOptions, LogitsWanted, Model, Session, SessionOptions, WeightMemory};
use bitconv::sample::Sampler;

/// Arguments of `bitconv run`.
#[derive(clap::Args)]
pub struct Args {
    /// A GGUF file.
    file: PathBuf,
    /// The prompt.
    #[arg(short, long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 64)]
    n_predict: usize,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    temp: f32,
    /// Sample from the k most likely tokens only (0: all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches p.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Kernels: auto (the fastest this CPU runs), reference (the scalar twin of every kernel),
    /// avx2, avx512, neon [default: $BITCONV_KERNEL, else auto].
    #[arg(long, value_parser = super::runopts::parse_kernel)]
    kernel: Option<bitconv::runtime::KernelChoice>,
    /// Read the weights in place from the file mapping. By default the matrices a token reads
    /// are copied into memory backed by huge pages, which streams them faster.
    #[arg(long)]
    mmap: bool,
    /// TL1/TL2 kernel parameters (kernel_config.ini) for TL files that do not record their own.
    #[arg(long, value_name = "FILE")]
    kernel_config: Option<PathBuf>,
    /// Context size.
    #[arg(short = 'c', long, default_value_t = 2048)]
    ctx: usize,
    /// Print the prompt's token ids and timings on stderr.
    #[arg(short, long)]
    verbose: bool,
}

pub fn run(a: Args) -> super::Outcome {
    super::init_threads(a.threads)?;
    super::runopts::init_kernel(a.kernel)?;
    let load = LoadOptions {
        weights: if a.mmap {
            WeightMemory::Mapped
        } else {
            WeightMemory::Resident
        },
        tl_params: super::runopts::load_tl_params(a.kernel_config.as_deref())?,
        ..LoadOptions::default()
    };
    let model =
        Model::load(&a.file, &load).with_context(|| format!("cannot load {}", a.file.display()))?;
    let tok = GgufTokenizer::from_gguf(&model.gguf().header)
        .with_context(|| format!("{}: tokenizer", a.file.display()))?;
    let ids = tok
        .encode(&a.prompt, true)
        .context("cannot tokenize the prompt")?;
    anyhow::ensure!(!ids.is_empty(), "the prompt is empty");
    anyhow::ensure!(
        ids.len() + a.n_predict <= a.ctx,
        "prompt ({} tokens) + -n {} exceed the context of {} (-c)",
        ids.len(),
        a.n_predict,
        a.ctx
    );
    super::runopts::check_ctx(&model, a.ctx, "--ctx")?;
    if a.verbose {
        eprintln!("prompt tokens: {ids:?}");
    }
    let mut session = Session::with_options(&model, SessionOptions::for_model(&model, a.ctx));
    let mut sampler = Sampler::new(a.temp, a.top_k, a.top_p, a.seed);
    let start = std::time::Instant::now();
    let mut logits = session
        .forward(&ids, LogitsWanted::Last)?
        .pop()
        .expect("one row");
    let prompt_time = start.elapsed();
    let mut out = std::io::stdout().lock();
    let mut dec = tok.stream_decoder();
    let gen_start = std::time::Instant::now();
    let mut generated = 0;
    for _ in 0..a.n_predict {
        let next = sampler.sample(&logits);
        if tok.is_eog(next) {
            break;
        }
        out.write_all(dec.push(&tok, next).as_bytes())?;
        out.flush()?;
        generated += 1;
        logits = session
            .forward(&[next], LogitsWanted::Last)?
            .pop()
            .expect("one row");
    }
    out.write_all(dec.finish().as_bytes())?;
    writeln!(out)?;
    if a.verbose {
        let g = gen_start.elapsed().as_secs_f64();
        eprintln!(
            "prompt: {} tokens in {:.3}s; generation: {generated} tokens in {g:.3}s ({:.1} tokens/s)",
            ids.len(),
            prompt_time.as_secs_f64(),
            generated as f64 / g.max(1e-9)
        );
    }
    Ok(true)
}
