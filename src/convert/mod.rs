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

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use plan::{float_type, plan, projection_type, Plan, PlannedTensor, ProjectionChoice, Source};
pub use plan_kv::metadata_for;
pub use run::{write, Progress, Summary};

use crate::checkpoint::CheckpointError;
use crate::gguf::GgmlType;
use crate::quant::absmean::AbsmeanMode;
use crate::quant::layouts::{KernelEntry, LayoutError};

/// An output type of `bitconv convert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutType {
    /// bitnet.cpp I2_S (the default).
    I2S,
    /// bitnet.cpp TL1 (ARM LUT kernels).
    Tl1,
    /// bitnet.cpp TL2 (x86 LUT kernels).
    Tl2,
    /// llama.cpp TQ1_0.
    Tq1_0,
    /// llama.cpp TQ2_0.
    Tq2_0,
    /// Fake-quantized weights as F16.
    F16,
    /// Fake-quantized weights as F32.
    F32,
}

/// Every output type, in the order `--help` lists them.
pub const OUT_TYPES: [OutType; 7] = [
    OutType::I2S,
    OutType::Tl1,
    OutType::Tl2,
    OutType::Tq1_0,
    OutType::Tq2_0,
    OutType::F16,
    OutType::F32,
];

pub use crate::arch::Flavor;

impl OutType {
    /// The lower-case name used on the command line and in file names (`i2_s`, `tl1`, …).
    pub fn name(self) -> &'static str {
        match self {
            OutType::I2S => "i2_s",
            OutType::Tl1 => "tl1",
            OutType::Tl2 => "tl2",
            OutType::Tq1_0 => "tq1_0",
            OutType::Tq2_0 => "tq2_0",
            OutType::F16 => "f16",
            OutType::F32 => "f32",
        }
    }

    /// The GGML type of the ternary projections.
    pub fn weight_type(self) -> GgmlType {
        match self {
            OutType::I2S => GgmlType::I2_S,
            OutType::Tl1 => GgmlType::TL1,
            OutType::Tl2 => GgmlType::TL2,
            OutType::Tq1_0 => GgmlType::TQ1_0,
            OutType::Tq2_0 => GgmlType::TQ2_0,
            OutType::F16 => GgmlType::F16,
            OutType::F32 => GgmlType::F32,
        }
    }

    /// `general.file_type` as the reference writes it (llama ftype values of the old fork:
    /// F32 0, F16 1, TQ1_0 36, TQ2_0 37, TL1 38, TL2 39, I2_S 40).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Tq1_0 => 36,
            OutType::Tq2_0 => 37,
            OutType::Tl1 => 38,
            OutType::Tl2 => 39,
            OutType::I2S => 40,
        }
    }

    /// Which converter's file this type reproduces.
    pub fn flavor(self) -> Flavor {
        match self {
            OutType::Tq1_0 | OutType::Tq2_0 => Flavor::Mainline,
            _ => Flavor::BitnetCpp,
        }
    }

    /// True for the packed ternary layouts (not the float outputs).
    pub fn is_ternary(self) -> bool {
        !matches!(self, OutType::F16 | OutType::F32)
    }
}

impl fmt::Display for OutType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The command line's value list comes from [`OUT_TYPES`]: `--help` lists every type and
/// accepts each name with or without its underscore (`i2s`).
impl clap::ValueEnum for OutType {
    fn value_variants<'a>() -> &'a [Self] {
        &OUT_TYPES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let pv = clap::builder::PossibleValue::new(self.name());
        Some(match self {
            OutType::I2S => pv.alias("i2s"),
            OutType::Tq1_0 => pv.alias("tq10"),
            OutType::Tq2_0 => pv.alias("tq20"),
            _ => pv,
        })
    }
}

impl FromStr for OutType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        OUT_TYPES
            .iter()
            .copied()
            .find(|t| {
                t.name().eq_ignore_ascii_case(s)
                    || t.name().replace('_', "") == s.to_ascii_lowercase()
            })
            .ok_or_else(|| {
                format!(
                    "unknown output type {s:?}; choose one of {}",
                    OUT_TYPES.map(|t| t.name()).join(", ")
                )
            })
    }
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
    /// Write exactly the reference converter's bytes: no metadata keys of bitconv's own (TL
    /// files then do not record their kernel parameters, see
    /// [`crate::quant::layouts::params::GGUF_KEY`]).
    pub reference_bytes: bool,
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
            reference_bytes: false,
        }
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
