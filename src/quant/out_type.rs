//! The output types of `bitconv convert` and `bitconv dummy` ([`OutType`], whose list is also
//! the command line's), and the one rule that decides how a ternary projection of a given shape
//! is written for each of them ([`projection_type`]).

use std::fmt;
use std::str::FromStr;

use crate::arch::{Flavor, Target};
use crate::gguf::GgmlType;
use crate::quant::layouts::tq1_0::Tq1_0;
use crate::quant::layouts::tq2_0::Tq2_0;
use crate::quant::layouts::{i2s, params, BlockGeometry, KernelEntry, TlLayout, TlParams};

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

impl OutType {
    /// The lower-case name used on the command line and in file names (`i2_s`, `tl1`, …).
    pub const fn name(self) -> &'static str {
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

    /// The TL kernel layout of a lookup-table type (its projections need kernel parameters).
    pub fn tl_layout(self) -> Option<TlLayout> {
        match self {
            OutType::Tl1 => Some(TlLayout::Tl1),
            OutType::Tl2 => Some(TlLayout::Tl2),
            _ => None,
        }
    }

    /// Values per block of a type whose rows must be whole blocks (TQ1_0 and TQ2_0: 256);
    /// rows of another width fall back to F16 ([`projection_type`]).
    pub fn row_block(self) -> Option<usize> {
        match self {
            OutType::Tq1_0 => Some(Tq1_0::BLOCK_VALUES),
            OutType::Tq2_0 => Some(Tq2_0::BLOCK_VALUES),
            _ => None,
        }
    }

    /// The runtime a file of this type is written for when none is named: mainline llama.cpp
    /// for mainline's types (its converter's metadata), the current bitnet.cpp for the rest.
    pub fn home_target(self) -> Target {
        match self.flavor() {
            Flavor::Mainline => Target::LlamaCpp,
            Flavor::BitnetCpp => Target::BitnetCpp,
        }
    }

    /// Whether `target` can load this type at all: mainline llama.cpp has none of bitnet.cpp's
    /// packed types.
    pub fn loads_on(self, target: Target) -> bool {
        !(target == Target::LlamaCpp && self.is_ternary() && self.flavor() == Flavor::BitnetCpp)
    }

    /// Whether the reference file went through `llama-quantize`, which appends
    /// `general.quantization_version` (I2_S: the reference converter writes F32, then quantizes).
    pub fn quantization_version(self) -> bool {
        self == OutType::I2S
    }

    /// The type of `token_embd.weight` (rows of `ne0` values) when the user named none.
    /// `quant_embd` is the reference's `--quant-embd`; `reproduce_reference` holds for the
    /// target whose bytes must equal the reference converter's; `has_output` says whether the
    /// model has a separate `output.weight`.
    pub fn embedding_type(
        self,
        quant_embd: bool,
        reproduce_reference: bool,
        has_output: bool,
        ne0: usize,
    ) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 if quant_embd => GgmlType::F16,
            OutType::F16 => GgmlType::F32,
            // The reference keeps TL files' embedding in F32 (F16 with --quant-embd). It is read
            // one row a token, so F16 halves its bytes at no cost the runtimes can see: every
            // target but the byte-for-byte reference gets F16.
            OutType::Tl1 | OutType::Tl2 if quant_embd || !reproduce_reference => GgmlType::F16,
            OutType::Tl1 | OutType::Tl2 => GgmlType::F32,
            // llama-quantize: the tied embedding doubles as the output and gets the output rule;
            // with a separate output tensor it is F16.
            OutType::I2S if quant_embd || has_output => GgmlType::F16,
            OutType::I2S => self.head_type(ne0),
            OutType::Tq1_0 | OutType::Tq2_0 => GgmlType::F16,
        }
    }

    /// The type of `output.weight` (rows of `ne0` values): llama-quantize's rule for I2_S
    /// (F16 where rows are whole 256-value blocks, else Q8_0).
    pub fn head_type(self, ne0: usize) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::I2S if ne0 % 256 == 0 => GgmlType::F16,
            OutType::I2S => GgmlType::Q8_0,
            _ => GgmlType::F16,
        }
    }

    /// The type of the other two-dimensional float tensors (norms are always F32).
    pub fn matrix_float_type(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            _ => GgmlType::F16,
        }
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

/// How one ternary projection of shape `M × K` is written for output `out`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionChoice {
    /// The tensor type.
    pub ty: GgmlType,
    /// TL kernel parameters (TL1/TL2).
    pub tl: Option<TlParams>,
    /// What the plan says about it (a fallback, where the parameters came from, a runtime that
    /// cannot run it).
    pub note: Option<String>,
    /// Whether the type is not the one asked for (TQ1_0/TQ2_0 rows that are not a multiple of
    /// 256 values are written as F16, as llama.cpp's converter does).
    pub fallback: bool,
}

/// The one rule for a ternary projection's type: the requested type where its layout holds
/// the shape, F16 for TQ1_0/TQ2_0 rows that are not a multiple of 256, an error where nothing
/// fits (I2_S needs `M·K` to be a multiple of 128; TL needs kernel parameters).
pub fn projection_type(
    out: OutType,
    kernel_config: Option<&[KernelEntry]>,
    model_name: &str,
    m: usize,
    k: usize,
) -> Result<ProjectionChoice, String> {
    let plain = |ty: GgmlType, note: Option<String>| ProjectionChoice {
        ty,
        tl: None,
        note,
        fallback: false,
    };
    if let Some(block) = out.row_block().filter(|b| k % b != 0) {
        return Ok(tq_fallback(out, block));
    }
    if let Some(layout) = out.tl_layout() {
        let (params, origin) = params::choose(kernel_config, model_name, layout, m, k)?;
        return Ok(ProjectionChoice {
            ty: out.weight_type(),
            tl: Some(params),
            note: Some(format!("{params} ({origin})")),
            fallback: false,
        });
    }
    Ok(match out {
        OutType::I2S if !i2s::is_lossless(m * k) => {
            return Err("I2_S needs M·K to be a multiple of 128".into())
        }
        OutType::I2S => plain(
            GgmlType::I2_S,
            GgmlType::I2_S.bitnet_cpp_limit(k as u64).map(String::from),
        ),
        _ => plain(out.weight_type(), None),
    })
}

/// TQ1_0/TQ2_0 rows that are not whole blocks of `block` values are written as F16, as
/// llama.cpp's converter does.
fn tq_fallback(out: OutType, block: usize) -> ProjectionChoice {
    ProjectionChoice {
        ty: GgmlType::F16,
        tl: None,
        note: Some(format!(
            "{} needs rows that are a multiple of {block} values; written as F16 (as llama.cpp's converter does)",
            out.weight_type()
        )),
        fallback: true,
    }
}
