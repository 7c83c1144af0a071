//! Floating-point storage types of checkpoint tensors, and their conversion to `f32`.
//!
//! Safetensors data arrives as little-endian bytes, usually straight from an mmap, so nothing
//! here assumes alignment: every conversion reads through `from_le_bytes` on byte chunks, which
//! the compiler turns into plain (unaligned) vector loads.
//!
//! The conversions are exact: every `f16` and `bf16` value (including subnormals, infinities
//! and NaN payloads) has an `f32` representation, and the code below produces it bit for bit the
//! way IEEE 754 widening (and torch's `.float()`) does.

use std::fmt;

/// Storage type of a floating-point source tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SrcDtype {
    /// IEEE 754 binary32 (`F32` in safetensors).
    F32,
    /// IEEE 754 binary16 (`F16` in safetensors).
    F16,
    /// bfloat16: the upper 16 bits of a binary32 (`BF16` in safetensors).
    BF16,
}

impl SrcDtype {
    /// Bytes per stored value.
    pub const fn size(self) -> usize {
        match self {
            SrcDtype::F32 => 4,
            SrcDtype::F16 | SrcDtype::BF16 => 2,
        }
    }

    /// The safetensors spelling of the type (`F32`, `F16`, `BF16`).
    pub const fn name(self) -> &'static str {
        match self {
            SrcDtype::F32 => "F32",
            SrcDtype::F16 => "F16",
            SrcDtype::BF16 => "BF16",
        }
    }
}

impl fmt::Display for SrcDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Widens one binary16 bit pattern to the `f32` of the same value.
///
/// Branch-free so that loops over it vectorize: the exponent/mantissa field shifted into `f32`
/// position is `|h| · 2^-112` read as an `f32` (this holds for subnormal `h` too, which land on
/// `f32` subnormals), so one exact multiplication by `2^112` rescales it. Infinity and NaN
/// (exponent field 31) instead get the all-ones `f32` exponent, keeping the payload (a
/// signalling NaN stays signalling).
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    // Signed arithmetic: SSE2 has signed but no unsigned 32-bit compares.
    let h = i32::from(h);
    let sign = (h & 0x8000) << 16;
    let em = h & 0x7fff;
    let scaled = f32::from_bits((em << 13) as u32) * f32::from_bits(0x7780_0000); // 2^112
    let special = f32::from_bits(((em << 13) | 0x7f80_0000) as u32);
    let mag = if em >= 0x7c00 { special } else { scaled };
    f32::from_bits(mag.to_bits() | sign as u32)
}

/// Widens one bfloat16 bit pattern to the `f32` of the same value.
#[inline(always)]
pub fn bf16_bits_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Converts little-endian source values to `f32`, writing `out.len()` values.
///
/// `bytes` may be unaligned (it usually points into an mmap).
///
/// # Panics
/// If `bytes.len() != out.len() * dtype.size()`.
pub fn to_f32_into(dtype: SrcDtype, bytes: &[u8], out: &mut [f32]) {
    assert_eq!(
        bytes.len(),
        out.len() * dtype.size(),
        "to_f32_into: {} source bytes do not hold {} {dtype} values",
        bytes.len(),
        out.len()
    );
    match dtype {
        SrcDtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        SrcDtype::F16 => widen_u16(bytes, out, f16_bits_to_f32),
        SrcDtype::BF16 => widen_u16(bytes, out, bf16_bits_to_f32),
    }
}

/// Two passes per piece of [`U16_PIECE`] values: bytes to `u16` (a plain vectorized copy),
/// then `u16` to `f32`. Measured about twice as fast as one fused loop, which the compiler
/// does not vectorize as well.
fn widen_u16(bytes: &[u8], out: &mut [f32], widen: impl Fn(u16) -> f32) {
    let mut bits = [0u16; U16_PIECE];
    for (o, b) in out.chunks_mut(U16_PIECE).zip(bytes.chunks(2 * U16_PIECE)) {
        let bits = &mut bits[..o.len()];
        for (h, b) in bits.iter_mut().zip(b.chunks_exact(2)) {
            *h = u16::from_le_bytes([b[0], b[1]]);
        }
        for (o, &h) in o.iter_mut().zip(bits.iter()) {
            *o = widen(h);
        }
    }
}

/// Values per piece in [`widen_u16`].
const U16_PIECE: usize = 1024;

/// Converts a whole little-endian source buffer to a new `Vec<f32>`.
///
/// # Panics
/// If `bytes.len()` is not a multiple of `dtype.size()`.
pub fn to_f32_vec(dtype: SrcDtype, bytes: &[u8]) -> Vec<f32> {
    assert_eq!(
        bytes.len() % dtype.size(),
        0,
        "to_f32_vec: {} bytes is not a whole number of {dtype} values",
        bytes.len()
    );
    let mut out = vec![0.0; bytes.len() / dtype.size()];
    to_f32_into(dtype, bytes, &mut out);
    out
}

/// The value `x` takes after a cast to `dtype` and back to `f32`.
///
/// Identity for [`SrcDtype::F32`]; IEEE round-to-nearest-even to binary16 (overflowing to
/// ±infinity, with gradual underflow) for [`SrcDtype::F16`]; round-to-nearest-even to bfloat16
/// for [`SrcDtype::BF16`]. This is what torch's `tensor.to(dtype).float()` gives.
pub fn from_f32_round(dtype: SrcDtype, x: f32) -> f32 {
    match dtype {
        SrcDtype::F32 => x,
        SrcDtype::F16 => half::f16::from_f32(x).to_f32(),
        SrcDtype::BF16 => half::bf16::from_f32(x).to_f32(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_matches_half_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let ours = f16_bits_to_f32(h);
            let theirs = half::f16::from_bits(h).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{h:#06x}");
                assert_eq!(ours.to_bits() & 0x8000_0000, theirs.to_bits() & 0x8000_0000);
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn bf16_widening_matches_half_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let ours = bf16_bits_to_f32(h);
            let theirs = half::bf16::from_bits(h).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan());
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{h:#06x}");
            }
        }
    }

    #[test]
    fn to_f32_into_reads_unaligned_little_endian() {
        let vals = [1.5f32, -0.0, f32::MIN_POSITIVE / 8.0, 65504.0, -3.25e-7];
        let mut buf = vec![0u8; 1];
        for v in vals {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = [0.0f32; 5];
        to_f32_into(SrcDtype::F32, &buf[1..], &mut out);
        for (a, b) in out.iter().zip(vals) {
            assert_eq!(a.to_bits(), b.to_bits());
        }

        let mut buf16 = vec![0u8; 1];
        let mut bufbf = vec![0u8; 1];
        for v in vals {
            buf16.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
            bufbf.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
        }
        to_f32_into(SrcDtype::F16, &buf16[1..], &mut out);
        for (a, b) in out.iter().zip(vals) {
            assert_eq!(a.to_bits(), from_f32_round(SrcDtype::F16, b).to_bits());
        }
        to_f32_into(SrcDtype::BF16, &bufbf[1..], &mut out);
        for (a, b) in out.iter().zip(vals) {
            assert_eq!(a.to_bits(), from_f32_round(SrcDtype::BF16, b).to_bits());
        }
    }

    #[test]
    fn from_f32_round_is_round_half_even() {
        // 1 + 2^-11 is exactly halfway between two f16 values: ties go to the even one (1.0).
        let tie = 1.0 + f32::powi(2.0, -11);
        assert_eq!(from_f32_round(SrcDtype::F16, tie), 1.0);
        let tie_up = 1.0 + 3.0 * f32::powi(2.0, -11);
        assert_eq!(
            from_f32_round(SrcDtype::F16, tie_up),
            1.0 + f32::powi(2.0, -9)
        );
        // bf16 keeps 8 significant bits.
        let tie = 1.0 + f32::powi(2.0, -8);
        assert_eq!(from_f32_round(SrcDtype::BF16, tie), 1.0);
        assert_eq!(from_f32_round(SrcDtype::F32, tie), tie);
        assert_eq!(from_f32_round(SrcDtype::F16, 1e6), f32::INFINITY);
    }
}
