//! Options shared by the commands that run models.

use std::path::Path;

use anyhow::Context;
use bitconv::quant::layouts::{params, KernelEntry};
use bitconv::runtime::simd::{self, KernelChoice, Kernels};

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
