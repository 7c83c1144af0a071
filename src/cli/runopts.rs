//! Options shared by the commands that run models.

use std::path::Path;

use anyhow::Context;
use bitconv::quant::layouts::{params, KernelEntry};
use bitconv::runtime::kernels::{self as simd, KernelChoice, Kernels};

/// Parses `--kernel-config FILE` if given.
pub fn load_tl_params(path: Option<&Path>) -> anyhow::Result<Vec<KernelEntry>> {
    match path {
        None => Ok(Vec::new()),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            params::parse_kernel_config_ini(&text).with_context(|| format!("{}", p.display()))
        }
    }
}

/// `-t` and `--kernel`, as the commands that run one model take them (`golden`, `validate`,
/// `run`).
#[derive(clap::Args)]
pub struct Runner {
    /// Worker threads [default: all cores].
    #[arg(short = 't', long)]
    threads: Option<usize>,
    /// Kernels: auto (the fastest this CPU runs), reference (the scalar twin of every kernel),
    /// avx2, avx512, neon [default: $BITCONV_KERNEL, else auto].
    #[arg(long, value_parser = parse_kernel)]
    kernel: Option<KernelChoice>,
}

impl Runner {
    /// Sizes the rayon pool and chooses the process-wide kernel table.
    pub fn init(&self) -> anyhow::Result<()> {
        super::init_threads(self.threads)?;
        init_kernel(self.kernel)?;
        Ok(())
    }
}

/// Parses a `--kernel` value.
pub fn parse_kernel(s: &str) -> Result<KernelChoice, String> {
    s.parse::<KernelChoice>().map_err(|e| e.to_string())
}

/// Chooses the process-wide kernel table from `--kernel` if given (else `BITCONV_KERNEL`, else
/// the fastest this CPU runs).
pub fn init_kernel(choice: Option<KernelChoice>) -> anyhow::Result<&'static Kernels> {
    Ok(match choice {
        Some(c) => simd::init(c)?,
        None => simd::kernels(),
    })
}

/// `MemAvailable` of this machine in bytes (`None` where unknown).
fn mem_available() -> Option<u128> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u128>().ok())
        })
        .map(|kb| kb * 1024)
}

/// Checks that a buffer of `bytes` asked for by `flag` fits in the available memory.
pub fn check_buffer(bytes: u128, flag: &str) -> anyhow::Result<()> {
    let limit = mem_available().unwrap_or(u64::MAX as u128);
    anyhow::ensure!(
        bytes <= limit,
        "{flag}: {:.1} GiB asked for, more than the {:.1} GiB of memory available",
        bytes as f64 / (1u64 << 30) as f64,
        limit as f64 / (1u64 << 30) as f64
    );
    Ok(())
}

/// Checks that a KV cache of `ctx` positions for `model` fits in the memory this machine has
/// available (`MemAvailable`), so a huge `--ctx` is an error naming `flag`, not an abort.
pub fn check_ctx(model: &bitconv::runtime::Model, ctx: usize, flag: &str) -> anyhow::Result<()> {
    let hp = model.hparams();
    // Keys and values, f32 at most, every layer.
    let bytes = (ctx as u128) * (hp.n_layer as u128) * (hp.n_head_kv * hp.head_dim) as u128 * 2 * 4;
    check_buffer(
        bytes,
        &format!("{flag} {ctx} (a KV cache of {ctx} positions)"),
    )
}
