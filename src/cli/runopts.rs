//! Options shared by the commands that run models.

use std::path::Path;

use anyhow::Context;
use bitconv::quant::layouts::{params, KernelEntry};

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
