//! How the runtime holds a weight matrix in memory ([`WeightFormat`]), the element types of
//! float matrices ([`FloatType`]), and the block geometry the kernels walk.
//!
//! A leaf of `runtime`: it owns no number of its own. Block sizes come from the layout modules
//! of [`crate::quant::layouts`] (re-exported here under ggml's names for the kernels) and bytes
//! per row from the GGML type table ([`GgmlType::row_bytes`]) or the I2_S layout.

use crate::gguf::GgmlType;
use crate::quant::layouts::{i2s, tq2_0};

/// Values per block of the canonical I2_S layout.
pub use crate::quant::layouts::i2s::BLOCK_VALUES as I2S_BLOCK;
/// Bytes per Q8_0 block: an f16 scale, then 32 signed bytes.
pub use crate::quant::layouts::q8_0::BLOCK_BYTES as Q8_0_BLOCK_BYTES;
/// Values per Q8_0 block.
pub use crate::quant::layouts::q8_0::BLOCK_VALUES as QK8_0;
/// Bytes per TQ2_0 block: 64 code bytes, then an f16 scale.
pub use crate::quant::layouts::tq2_0::BLOCK_BYTES as TQ2_BLOCK_BYTES;
/// Values per Q8_K / TQ2_0 block (`QK_K`).
pub use crate::quant::layouts::tq2_0::BLOCK_VALUES as QK_K;

/// How a weight matrix is held in memory (and which kernel multiplies it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// Canonical I2_S rows (`K/4` bytes each, `K` rounded up to whole 128-value blocks) and one
    /// f32 scale; int8 activations.
    I2s,
    /// TQ2_0 blocks (66 bytes per 256 values); Q8_K activations.
    Tq2,
    /// Q8_0 blocks (34 bytes per 32 values); Q8_0 activations.
    Q8_0,
    /// IEEE half floats; f32 activations.
    F16,
    /// f32; f32 activations.
    F32,
}

impl WeightFormat {
    /// How many formats there are ([`WeightFormat::index`] is below it).
    pub const COUNT: usize = 5;

    /// A dense index of the format (`0..COUNT`), for per-format slots.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The GGML type whose rows this format holds (I2_S rows padded to whole blocks).
    pub fn ggml_type(self) -> GgmlType {
        match self {
            WeightFormat::I2s => GgmlType::I2_S,
            WeightFormat::Tq2 => GgmlType::TQ2_0,
            WeightFormat::Q8_0 => GgmlType::Q8_0,
            WeightFormat::F16 => GgmlType::F16,
            WeightFormat::F32 => GgmlType::F32,
        }
    }

    /// The element type of a float format.
    pub fn float_type(self) -> Option<FloatType> {
        match self {
            WeightFormat::F16 => Some(FloatType::F16),
            WeightFormat::F32 => Some(FloatType::F32),
            _ => None,
        }
    }

    /// Columns of one row as held in memory: `k`, except I2_S rows, which are padded to whole
    /// 128-value blocks ([`i2s::padded_cols`]; activations are padded with zeros to match).
    pub fn stride(self, k: usize) -> usize {
        match self {
            WeightFormat::I2s => i2s::padded_cols(k),
            _ => k,
        }
    }

    /// Bytes of one row of `k` values (`k` a multiple of the format's block size).
    pub fn row_bytes(self, k: usize) -> usize {
        match self {
            WeightFormat::I2s => i2s::padded_cols(k) / I2S_BLOCK * i2s::BLOCK_BYTES,
            _ => self
                .ggml_type()
                .row_bytes(k)
                .unwrap_or_else(|| panic!("{self:?} rows of {k} values are not whole blocks")),
        }
    }
}

/// The element type of a float matrix (weights or the KV cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    /// IEEE half, little-endian, 2 bytes.
    F16,
    /// IEEE single, little-endian, 4 bytes.
    F32,
}

impl FloatType {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            FloatType::F16 => 2,
            FloatType::F32 => 4,
        }
    }
}

/// The f16 bits of the scale that every block of the TQ2_0 bytes `w` has, if they all have the
/// same one (see [`crate::runtime::Kernels::tq2_dots`]).
pub fn tq2_shared_scale(w: &[u8]) -> Option<u16> {
    // The scale is a block's last two bytes.
    const AT: usize = tq2_0::BLOCK_BYTES - 2;
    let mut blocks = w.chunks_exact(tq2_0::BLOCK_BYTES);
    let scale = |b: &[u8]| u16::from_le_bytes([b[AT], b[AT + 1]]);
    let first = scale(blocks.next()?);
    blocks.all(|b| scale(b) == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_bytes_follow_the_layouts() {
        assert_eq!(WeightFormat::I2s.row_bytes(256), 64);
        assert_eq!(WeightFormat::I2s.row_bytes(200), 64);
        assert_eq!(WeightFormat::Tq2.row_bytes(512), 132);
        assert_eq!(WeightFormat::Q8_0.row_bytes(64), 68);
        assert_eq!(WeightFormat::F16.row_bytes(7), 14);
        assert_eq!(WeightFormat::F32.row_bytes(7), 28);
    }
}
