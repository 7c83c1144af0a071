//! The GGML tensor type table, kept as data.
//!
//! Each row gives a type's numeric id as it appears in a GGUF tensor-info record, its name, its
//! block size (values per block), the bytes per block, and the rule that turns a shape into a
//! byte count. Besides mainline ggml's types the table carries bitnet.cpp's fork types
//! (I2_S 36, I8_S 37, TL1 38, TL2 39; FORMATS.md §3.1), whose byte counts follow the fork's
//! `ggml_nbytes` rather than the block rule.
//!
//! Id 39 is TL2 here (the fork's value, used by every bitnet.cpp file bitconv reads and writes);
//! upstream ggml later reused 39 for MXFP4.
//!
//! The layouts bitconv packs own their geometry: the rows of Q8_0, TQ1_0, TQ2_0 and I2_S take
//! their id, name and block numbers from [`BlockGeometry`], and the byte counts of I2_S, TL1
//! and TL2 come from `quant::layouts::{i2s, tl1, tl2}`. (I2_S, TL1 and TL2 keep the fork's
//! nominal block size and type size of 1.)

use std::fmt;

use crate::quant::layouts::codec::{self, TernaryCodec};
use crate::quant::layouts::i2s::I2s;
use crate::quant::layouts::q8_0::Q8_0;
use crate::quant::layouts::tq1_0::Tq1_0;
use crate::quant::layouts::tq2_0::Tq2_0;
use crate::quant::layouts::{i2s, tl1, tl2, BlockGeometry, SCALE_SLOT_BYTES};

/// How a tensor's byte count follows from its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeRule {
    /// `ne0` must be a multiple of the block size; bytes = `ne0 / block · type_size · ne1 · …`.
    Blocks,
    /// bitnet.cpp I2_S: `n/4` code bytes, then a 32-byte tail holding the f32 scale.
    I2S,
    /// bitnet.cpp TL1: `n/4` bytes, then a hidden 32-byte scale slot.
    Tl1,
    /// bitnet.cpp TL2: `(K−256)·M/3·5/8 + 256·M/2·4/8` bytes padded to 32, then a hidden
    /// 32-byte scale slot.
    Tl2,
}

/// One row of the type table.
#[derive(Clone, Copy, Debug)]
pub struct TypeInfo {
    /// The type.
    pub ty: GgmlType,
    /// The id written in tensor-info records.
    pub id: u32,
    /// The name ggml uses (`F32`, `Q8_0`, `I2_S`, …).
    pub name: &'static str,
    /// Values per block.
    pub block_size: u64,
    /// Bytes per block.
    pub type_size: u64,
    /// How the byte count is computed.
    pub rule: SizeRule,
}

macro_rules! ggml_types {
    ($( $variant:ident = $id:expr, $name:expr, $blk:expr, $ts:expr, $rule:ident; )*) => {
        /// A GGML tensor type known to bitconv.
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum GgmlType { $($variant),* }

        /// The type table: every type bitconv can read, in id order.
        pub static TYPE_TABLE: &[TypeInfo] = &[
            $(TypeInfo { ty: GgmlType::$variant, id: $id, name: $name, block_size: $blk,
                         type_size: $ts, rule: SizeRule::$rule },)*
        ];
    };
}

ggml_types! {
    F32 = 0, "F32", 1, 4, Blocks;
    F16 = 1, "F16", 1, 2, Blocks;
    Q4_0 = 2, "Q4_0", 32, 18, Blocks;
    Q4_1 = 3, "Q4_1", 32, 20, Blocks;
    Q5_0 = 6, "Q5_0", 32, 22, Blocks;
    Q5_1 = 7, "Q5_1", 32, 24, Blocks;
    Q8_0 = Q8_0::TYPE_ID, Q8_0::NAME, Q8_0::BLOCK_VALUES as u64, Q8_0::BLOCK_BYTES as u64, Blocks;
    Q8_1 = 9, "Q8_1", 32, 36, Blocks;
    Q2_K = 10, "Q2_K", 256, 84, Blocks;
    Q3_K = 11, "Q3_K", 256, 110, Blocks;
    Q4_K = 12, "Q4_K", 256, 144, Blocks;
    Q5_K = 13, "Q5_K", 256, 176, Blocks;
    Q6_K = 14, "Q6_K", 256, 210, Blocks;
    Q8_K = 15, "Q8_K", 256, 292, Blocks;
    IQ2_XXS = 16, "IQ2_XXS", 256, 66, Blocks;
    IQ2_XS = 17, "IQ2_XS", 256, 74, Blocks;
    IQ3_XXS = 18, "IQ3_XXS", 256, 98, Blocks;
    IQ1_S = 19, "IQ1_S", 256, 50, Blocks;
    IQ4_NL = 20, "IQ4_NL", 32, 18, Blocks;
    IQ3_S = 21, "IQ3_S", 256, 110, Blocks;
    IQ2_S = 22, "IQ2_S", 256, 82, Blocks;
    IQ4_XS = 23, "IQ4_XS", 256, 136, Blocks;
    I8 = 24, "I8", 1, 1, Blocks;
    I16 = 25, "I16", 1, 2, Blocks;
    I32 = 26, "I32", 1, 4, Blocks;
    I64 = 27, "I64", 1, 8, Blocks;
    F64 = 28, "F64", 1, 8, Blocks;
    IQ1_M = 29, "IQ1_M", 256, 56, Blocks;
    BF16 = 30, "BF16", 1, 2, Blocks;
    TQ1_0 = Tq1_0::TYPE_ID, Tq1_0::NAME, Tq1_0::BLOCK_VALUES as u64, Tq1_0::BLOCK_BYTES as u64, Blocks;
    TQ2_0 = Tq2_0::TYPE_ID, Tq2_0::NAME, Tq2_0::BLOCK_VALUES as u64, Tq2_0::BLOCK_BYTES as u64, Blocks;
    I2_S = I2s::TYPE_ID, I2s::NAME, 1, 1, I2S;
    I8_S = 37, "I8_S", 1, 1, Blocks;
    TL1 = 38, "TL1", 1, 1, Tl1;
    TL2 = 39, "TL2", 1, 1, Tl2;
}

/// Why a shape has no byte size for a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// `ne0` is not a multiple of the type's block size.
    NotBlockMultiple {
        /// The type.
        ty: GgmlType,
        /// `ne0`.
        ne0: u64,
    },
    /// The byte count overflows u64.
    Overflow,
    /// The layout needs a 2-D shape (or a minimum width) it did not get.
    BadShape {
        /// The type.
        ty: GgmlType,
        /// What is wrong.
        why: &'static str,
    },
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::NotBlockMultiple { ty, ne0 } => write!(
                f,
                "{} needs the first dimension to be a multiple of {}, got {}",
                ty,
                ty.info().block_size,
                ne0
            ),
            SizeError::Overflow => write!(f, "byte size overflows 64 bits"),
            SizeError::BadShape { ty, why } => write!(f, "{ty}: {why}"),
        }
    }
}

impl std::error::Error for SizeError {}

/// Rounds `x` up to a multiple of `align` (a power of two or any positive number).
pub fn pad_to(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}

/// The raw TL2 payload size (before the 32-byte rounding and the scale slot), FORMATS.md §3.4,
/// as [`tl2::nbytes`] computes it. `None` when `K < 256` or the arithmetic overflows.
pub fn tl2_raw_bytes(m: u64, k: u64) -> Option<u64> {
    let b = tl2::nbytes(usize::try_from(m).ok()?, usize::try_from(k).ok()?).ok()?;
    u64::try_from(b).ok()
}

/// The TL1 payload of `n` values ([`tl1::nbytes`]), or `None` when it does not fit.
fn tl1_bytes(n: u64) -> Option<u64> {
    u64::try_from(tl1::nbytes(1, usize::try_from(n).ok()?)).ok()
}

/// An I2_S tensor of `n` values with its tail ([`i2s::nbytes`]), or `None` when it does not fit.
fn i2s_bytes(n: u64) -> Option<u64> {
    u64::try_from(i2s::nbytes(1, usize::try_from(n).ok()?)).ok()
}

/// [`pad_to`] that reports overflow.
pub fn checked_pad_to(x: u64, align: u64) -> Option<u64> {
    x.div_ceil(align).checked_mul(align)
}

impl GgmlType {
    /// Why bitnet.cpp cannot run a tensor of this type with rows of `k` values, if it cannot
    /// (bitconv's runtime can): its I2_S kernels walk each row in whole 128-value blocks.
    pub fn bitnet_cpp_limit(self, k: u64) -> Option<&'static str> {
        (self == GgmlType::I2_S && k % 128 != 0).then_some(
            "bitnet.cpp cannot run I2_S rows that are not a multiple of 128 values (bitconv can; \
             tl1/tl2 run there)",
        )
    }

    /// How a packed ternary type stores a matrix ([`TernaryCodec`]), for the code that treats
    /// every ternary type alike; `None` for the other types.
    pub fn ternary_codec(self) -> Option<TernaryCodec> {
        match self {
            GgmlType::I2_S => Some(codec::I2_S),
            GgmlType::TL1 => Some(codec::TL1),
            GgmlType::TL2 => Some(codec::TL2),
            GgmlType::TQ1_0 => Some(codec::TQ1_0),
            GgmlType::TQ2_0 => Some(codec::TQ2_0),
            _ => None,
        }
    }

    /// This type's row of the table.
    pub fn info(self) -> &'static TypeInfo {
        // The table is in declaration order, so the enum discriminant indexes it.
        &TYPE_TABLE[self as usize]
    }

    /// Looks a type up by its numeric id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPE_TABLE.iter().find(|t| t.id == id).map(|t| t.ty)
    }

    /// Looks a type up by name, case-insensitively (`i2_s`, `Q8_0`, …).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TYPE_TABLE
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
            .map(|t| t.ty)
    }

    /// The numeric id.
    pub fn id(self) -> u32 {
        self.info().id
    }

    /// The ggml name.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// True for the ternary layouts whose data carries (or is followed by) one f32 scale.
    pub fn is_bitnet(self) -> bool {
        matches!(self, GgmlType::I2_S | GgmlType::TL1 | GgmlType::TL2)
    }

    /// True for TL1/TL2, whose scale lives in a hidden 32-byte slot after the padded data.
    pub fn has_hidden_scale(self) -> bool {
        matches!(self, GgmlType::TL1 | GgmlType::TL2)
    }

    /// Bytes of one row of `k` values for the block-rule types (`k / block · type_size`), or
    /// `None` where rows are not whole blocks: `k` not a multiple of the block size, or a
    /// bitnet.cpp layout (I2_S, TL1, TL2), whose packing spans the whole tensor.
    pub fn row_bytes(self, k: usize) -> Option<usize> {
        let info = self.info();
        let (block, size) = (info.block_size as usize, info.type_size as usize);
        (info.rule == SizeRule::Blocks && k % block == 0).then(|| k / block * size)
    }

    /// Bytes the tensor occupies in the data section, as the fork's `ggml_nbytes` counts them
    /// (for TL1/TL2 this includes the hidden scale slot). `dims` are in ggml order (`ne0` first).
    pub fn nbytes(self, dims: &[u64]) -> Result<u64, SizeError> {
        let info = self.info();
        let n = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or(SizeError::Overflow)?;
        match info.rule {
            SizeRule::Blocks => {
                let ne0 = dims.first().copied().unwrap_or(1);
                if ne0 % info.block_size != 0 {
                    return Err(SizeError::NotBlockMultiple { ty: self, ne0 });
                }
                (n / info.block_size)
                    .checked_mul(info.type_size)
                    .ok_or(SizeError::Overflow)
            }
            SizeRule::I2S => i2s_bytes(n).ok_or(SizeError::Overflow),
            SizeRule::Tl1 => tl1_bytes(n)
                .and_then(|b| b.checked_add(SCALE_SLOT_BYTES as u64))
                .ok_or(SizeError::Overflow),
            SizeRule::Tl2 => {
                let (k, m) = self.km(dims)?;
                let raw = tl2_raw_bytes(m, k).ok_or(SizeError::BadShape {
                    ty: self,
                    why: "TL2 needs at least 256 columns",
                })?;
                checked_pad_to(raw, 32)
                    .and_then(|p| p.checked_add(SCALE_SLOT_BYTES as u64))
                    .ok_or(SizeError::Overflow)
            }
        }
    }

    /// For TL1/TL2: the bytes of the weight data proper, before padding and the scale slot.
    /// For other types: the same as [`nbytes`](Self::nbytes).
    pub fn data_bytes(self, dims: &[u64]) -> Result<u64, SizeError> {
        match self.info().rule {
            SizeRule::Tl1 => {
                let n = dims
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .ok_or(SizeError::Overflow)?;
                tl1_bytes(n).ok_or(SizeError::Overflow)
            }
            SizeRule::Tl2 => {
                let (k, m) = self.km(dims)?;
                tl2_raw_bytes(m, k).ok_or(SizeError::BadShape {
                    ty: self,
                    why: "TL2 needs at least 256 columns",
                })
            }
            _ => self.nbytes(dims),
        }
    }

    /// Byte offset of the f32 scale relative to the tensor's start, for the ternary layouts.
    pub fn scale_offset(self, dims: &[u64]) -> Option<u64> {
        let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
        match self.info().rule {
            SizeRule::I2S => u64::try_from(i2s::scale_offset(usize::try_from(n).ok()?)).ok(),
            SizeRule::Tl1 | SizeRule::Tl2 => checked_pad_to(self.data_bytes(dims).ok()?, 32),
            SizeRule::Blocks => None,
        }
    }

    fn km(self, dims: &[u64]) -> Result<(u64, u64), SizeError> {
        match dims {
            [k, m] => Ok((*k, *m)),
            [k] => Ok((*k, 1)),
            _ => Err(SizeError::BadShape {
                ty: self,
                why: "the layout needs a 2-D tensor",
            }),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order_and_ids_unique() {
        for (i, row) in TYPE_TABLE.iter().enumerate() {
            assert_eq!(row.ty as usize, i);
            assert_eq!(GgmlType::from_id(row.id), Some(row.ty));
            assert_eq!(GgmlType::from_name(row.name), Some(row.ty));
        }
    }

    #[test]
    fn bitnet_sizes_match_the_reference_spans() {
        // Spans from tests/data/tiny/bitnet-cpp/from-fp32/*.dump.json.
        assert_eq!(GgmlType::I2_S.nbytes(&[768, 256]).unwrap(), 49184);
        assert_eq!(GgmlType::TL1.nbytes(&[768, 256]).unwrap(), 49184);
        assert_eq!(GgmlType::TL2.nbytes(&[768, 256]).unwrap(), 43744);
        assert_eq!(GgmlType::TL2.nbytes(&[256, 768]).unwrap(), 49184);
        assert_eq!(GgmlType::TL2.nbytes(&[256, 256]).unwrap(), 16416);
        assert_eq!(GgmlType::TQ2_0.nbytes(&[768, 256]).unwrap(), 50688);
        assert_eq!(GgmlType::TL2.scale_offset(&[768, 256]), Some(43712));
        assert_eq!(GgmlType::I2_S.scale_offset(&[768, 256]), Some(49152));
    }

    #[test]
    fn block_rule_rejects_partial_blocks() {
        assert!(GgmlType::Q8_0.nbytes(&[33, 2]).is_err());
        assert!(GgmlType::TL2.nbytes(&[128, 2]).is_err());
        assert!(GgmlType::F32.nbytes(&[u64::MAX, 2]).is_err());
    }
}

/// How a file numbers its tensor types. Ids 0–38 mean the same in every runtime bitconv knows
/// (36–38, I2_S, I8_S and TL1, exist only in bitnet.cpp's forks); 39–42 do not: 39 is TL2 in
/// bitnet.cpp's 2024 fork and MXFP4 in the current runtimes, 42 is TL2 in the current
/// bitnet.cpp and Q2_0 in mainline llama.cpp, 40 and 41 are NVFP4 and Q1_0. A reader must
/// decide by what the file says, never by the id alone ([`TypeIds::detect`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeIds {
    /// bitnet.cpp 2024 (llama.cpp fork `406a503`): TL2 is 39.
    Bitnet2024,
    /// bitnet.cpp 2026 (llama.cpp fork `390c3077`): TL2 is 42.
    Bitnet2026,
    /// A BitNet architecture with nothing else said: TL2 is 39 or 42 (no BitNet model is
    /// stored in MXFP4 or Q2_0).
    BitnetEither,
    /// Mainline llama.cpp: 39 MXFP4, 41 Q1_0, 42 Q2_0, none of which bitconv runs.
    Mainline,
    /// Nothing says: 39–42 are refused as ambiguous.
    Undecided,
}

impl TypeIds {
    /// Decides from the metadata: bitconv's own `bitconv.target` key, else the architecture
    /// (one of [`crate::arch::ArchInfo::ternary_only`]: `bitnet`, `bitnet-b1.58` and its alias
    /// `bitnet-25`), else undecided.
    pub fn detect(kv: &[(String, super::Value)]) -> TypeIds {
        let get = |key: &str| {
            kv.iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.as_str())
        };
        match get(crate::arch::TARGET_KEY).and_then(crate::arch::Target::from_name) {
            Some(crate::arch::Target::BitnetCpp) => return TypeIds::Bitnet2026,
            Some(crate::arch::Target::BitnetCpp2024) => return TypeIds::Bitnet2024,
            Some(crate::arch::Target::LlamaCpp) => return TypeIds::Mainline,
            None => {}
        }
        match get("general.architecture").and_then(crate::arch::Arch::from_name) {
            Some(a) if a.info().ternary_only => TypeIds::BitnetEither,
            _ => TypeIds::Undecided,
        }
    }

    /// The id this numbering stores `ty` under.
    pub fn id_of(self, ty: GgmlType) -> u32 {
        match (self, ty) {
            (TypeIds::Bitnet2026, GgmlType::TL2) => 42,
            _ => ty.id(),
        }
    }

    /// The type an id names in this numbering, or why it cannot be read.
    pub fn type_of(self, id: u32) -> Result<GgmlType, String> {
        use TypeIds::*;
        let not_run = |what: &str| Err(format!("type {id} is {what}, which bitconv does not run"));
        match (self, id) {
            (Bitnet2024 | BitnetEither, 39) | (Bitnet2026 | BitnetEither, 42) => Ok(GgmlType::TL2),
            (Bitnet2026 | Mainline, 39) => not_run("MXFP4 in the current runtimes"),
            (Bitnet2026 | Mainline | BitnetEither | Undecided, 40) => {
                not_run("NVFP4 in the current runtimes")
            }
            (Bitnet2026 | Mainline | BitnetEither | Undecided, 41) => {
                not_run("Q1_0 in the current runtimes")
            }
            (Mainline, 42) => not_run("Q2_0 in mainline llama.cpp (groups of 64)"),
            (Mainline, 36..=38) => Err(format!(
                "type {id} is a bitnet.cpp type (I2_S, I8_S, TL1) in a file written for mainline \
                 llama.cpp, which does not define it"
            )),
            (Undecided, 39) => Err(
                "type 39 is TL2 in bitnet.cpp's 2024 fork and MXFP4 in the current runtimes, and \
                 nothing in the file says which runtime it is for (files bitconv writes say so in \
                 bitconv.target)"
                    .into(),
            ),
            (Undecided, 42) => Err(
                "type 42 is TL2 in the current bitnet.cpp and Q2_0 in mainline llama.cpp, and \
                 nothing in the file says which runtime it is for (files bitconv writes say so in \
                 bitconv.target)"
                    .into(),
            ),
            (Bitnet2024, 40..=42) => Err(format!("type {id} does not exist in bitnet.cpp 2024")),
            (_, id) => GgmlType::from_id(id).ok_or_else(|| format!("unknown tensor type id {id}")),
        }
    }
}

#[cfg(test)]
mod type_id_tests {
    use super::*;
    use crate::gguf::Value;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn the_same_id_reads_by_what_the_file_says() {
        let b158 = TypeIds::detect(&kv(&[("general.architecture", "bitnet-b1.58")]));
        assert_eq!(b158, TypeIds::BitnetEither);
        assert_eq!(b158.type_of(42), Ok(GgmlType::TL2));
        assert_eq!(b158.type_of(39), Ok(GgmlType::TL2));
        let llama = TypeIds::detect(&kv(&[("general.architecture", "llama")]));
        assert_eq!(llama, TypeIds::Undecided);
        for id in [39, 42] {
            let e = llama.type_of(id).unwrap_err();
            assert!(e.contains("TL2") && e.contains("bitconv.target"), "{e}");
        }
        let ours = TypeIds::detect(&kv(&[
            ("general.architecture", "llama"),
            ("bitconv.target", "bitnet-cpp"),
        ]));
        assert_eq!(ours, TypeIds::Bitnet2026);
        assert_eq!(ours.type_of(42), Ok(GgmlType::TL2));
        assert!(ours.type_of(39).unwrap_err().contains("MXFP4"));
        let main = TypeIds::detect(&kv(&[("bitconv.target", "llama-cpp")]));
        assert!(main.type_of(42).unwrap_err().contains("Q2_0"));
        assert!(main.type_of(36).is_err());
        assert_eq!(main.type_of(35), Ok(GgmlType::TQ2_0));
        // Every numbering reads what it writes.
        for n in [
            TypeIds::Bitnet2024,
            TypeIds::Bitnet2026,
            TypeIds::BitnetEither,
        ] {
            for t in TYPE_TABLE {
                assert_eq!(n.type_of(n.id_of(t.ty)), Ok(t.ty), "{n:?} {}", t.name);
            }
        }
        assert_eq!(TypeIds::Bitnet2024.id_of(GgmlType::TL2), 39);
        assert_eq!(TypeIds::Bitnet2026.id_of(GgmlType::TL2), 42);
        // The ids every runtime shares read the same everywhere.
        for n in [TypeIds::Undecided, TypeIds::Mainline] {
            for id in [0, 1, 8, 34, 35] {
                assert_eq!(n.type_of(id), GgmlType::from_id(id).ok_or_else(String::new));
            }
        }
    }
}
