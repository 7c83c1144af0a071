//! Checkpoint → GGUF conversion: the plan (every tensor's output type and size, the metadata)
//! and the streaming writer that executes it.
//!
//! Output files follow what bitnet.cpp's pipeline writes for each type (FORMATS.md §1.3, §2.4,
//! §2.5): `f32`/`f16`/`tl1`/`tl2` as its Python converter writes them, `i2_s` as its converter's
//! F32 file passed through `llama-quantize … I2_S 1`; `tq1_0`/`tq2_0` as mainline llama.cpp's
//! converter writes them.

mod plan;
pub mod plan_kv;
mod run;

use std::path::PathBuf;

pub use crate::arch::Flavor;
pub use crate::quant::out_type::{OutType, ProjectionChoice, OUT_TYPES};
pub use plan::{float_type, plan, Plan, PlannedTensor, Source};
pub use plan_kv::metadata_for;
pub use run::{write, Progress, Summary};

pub use crate::arch::Target;
use crate::checkpoint::CheckpointError;
use crate::gguf::GgmlType;
use crate::quant::absmean::AbsmeanMode;
use crate::quant::layouts::{KernelEntry, LayoutError};

/// [`crate::quant::out_type::projection_type`] with the kernel parameters of `opts`: the one
/// rule for a ternary projection's type, for callers that hold [`ConvertOptions`].
pub fn projection_type(
    out: OutType,
    opts: &ConvertOptions,
    model_name: &str,
    m: usize,
    k: usize,
) -> Result<ProjectionChoice, String> {
    crate::quant::out_type::projection_type(out, opts.kernel_config.as_deref(), model_name, m, k)
}

/// Everything `bitconv convert` can be told.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    /// The output type.
    pub out_type: OutType,
    /// Token embedding as F16 (what setup_env's `--quant-embd` asks for).
    pub quant_embd: bool,
    /// Explicit token embedding type (F32, F16 or Q8_0), over every other rule.
    pub token_embedding_type: Option<GgmlType>,
    /// How the absmean is computed.
    pub absmean: AbsmeanMode,
    /// TL1/TL2 kernel parameters from a `kernel_config.ini`, over the built-in tables.
    pub kernel_config: Option<Vec<KernelEntry>>,
    /// The model name bitnet.cpp's tables are keyed by (default: the checkpoint directory's
    /// name, as setup_env uses it).
    pub model_name: Option<String>,
    /// `general.name` (default: the checkpoint directory's name, as the reference writes it).
    pub general_name: Option<String>,
    /// The BPE pre-tokenizer name, when it cannot be identified from the tokenizer.
    pub tokenizer_pre: Option<String>,
    /// The runtime the file is for (`None`: the output type's home, [`default_target`]).
    /// [`Target::BitnetCpp2024`] writes exactly the reference converter's bytes: no metadata
    /// keys of bitconv's own (TL files then do not record their kernel parameters, see
    /// [`crate::quant::layouts::params::GGUF_KEY`]).
    pub target: Option<Target>,
}

/// Refuses an output type the target runtime cannot load, in words a user can act on.
pub fn check_target(out: OutType, target: Target) -> Result<(), String> {
    if out.loads_on(target) {
        return Ok(());
    }
    let usable: Vec<&str> = OUT_TYPES
        .iter()
        .filter(|t| t.loads_on(target))
        .map(|t| t.name())
        .collect();
    Err(format!(
        "--quant {out} is a {} type that {} cannot load; for --target {} use one of {}, or write \
         {out} with --target {}",
        out.home_target().runtime_name(),
        target.runtime_name(),
        target.name(),
        usable.join(", "),
        out.home_target().name(),
    ))
}

/// Which reference converter's metadata a file for `target` follows: mainline's for the
/// llama-cpp target and for TQ1_0/TQ2_0 (mainline's types), bitnet.cpp's otherwise.
pub fn flavor_for(out: OutType, target: Target) -> Flavor {
    match target {
        Target::LlamaCpp => Flavor::Mainline,
        _ => out.flavor(),
    }
}

/// The runtime an output type is written for when none is named ([`OutType::home_target`]).
pub fn default_target(out: OutType) -> Target {
    out.home_target()
}

impl ConvertOptions {
    /// Defaults for an output type.
    pub fn new(out_type: OutType) -> ConvertOptions {
        ConvertOptions {
            out_type,
            quant_embd: false,
            token_embedding_type: None,
            absmean: AbsmeanMode::Exact,
            kernel_config: None,
            model_name: None,
            general_name: None,
            tokenizer_pre: None,
            target: None,
        }
    }

    /// The target: the one named, else the output type's home.
    pub fn target(&self) -> Target {
        self.target.unwrap_or(default_target(self.out_type))
    }

    /// Which reference converter's metadata the file follows ([`flavor_for`]).
    pub fn flavor(&self) -> Flavor {
        flavor_for(self.out_type, self.target())
    }
}

/// Conversion errors. Each names the file, tensor or key concerned.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The tokenizer could not be exported.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor's shape disagrees with config.json.
    #[error("{file}: tensor {tensor} has shape {actual:?}, but config.json implies {expected:?}")]
    Shape {
        /// The checkpoint file.
        file: PathBuf,
        /// HF tensor name.
        tensor: String,
        /// What config.json implies.
        expected: Vec<usize>,
        /// What the file holds.
        actual: Vec<usize>,
    },
    /// A tensor the model needs is absent.
    #[error("{dir}: tensor {tensor} is missing from the checkpoint")]
    MissingTensor {
        /// The checkpoint directory.
        dir: PathBuf,
        /// HF tensor name.
        tensor: String,
    },
    /// A tensor no mapping knows.
    #[error("{file}: tensor {tensor} is not part of the {arch} architecture (no HF→GGUF mapping knows it)")]
    UnknownTensor {
        /// The checkpoint file.
        file: PathBuf,
        /// HF tensor name.
        tensor: String,
        /// The architecture.
        arch: String,
    },
    /// A tensor holds NaN or Inf.
    #[error(
        "{file}: tensor {tensor} holds a non-finite value ({value}) at row {row}, column {col}"
    )]
    NonFinite {
        /// The checkpoint file.
        file: PathBuf,
        /// HF tensor name.
        tensor: String,
        /// Row of the first bad value.
        row: usize,
        /// Column of the first bad value.
        col: usize,
        /// The value.
        value: f32,
    },
    /// The output type cannot hold a tensor of this shape.
    #[error("tensor {tensor} ({m}×{k}): {reason}")]
    Unsupported {
        /// GGUF tensor name.
        tensor: String,
        /// Rows.
        m: usize,
        /// Columns.
        k: usize,
        /// Why.
        reason: String,
    },
    /// Packing failed.
    #[error("tensor {tensor}: {source}")]
    Layout {
        /// GGUF tensor name.
        tensor: String,
        /// The cause.
        source: LayoutError,
    },
    /// Writing the output failed.
    #[error("{}: {what}", path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// What failed.
        what: String,
    },
    /// The checkpoint is of a kind this conversion does not handle.
    #[error("{0}")]
    Other(String),
}
