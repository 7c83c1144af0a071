//! f32 values to the little-endian bytes of F32 and F16 tensors, written into a caller's
//! slice (a row of a piece the converter streams), never through a new allocation.
//!
//! F16 goes through `half`'s slice conversion: eight values per F16C instruction where the CPU
//! has F16C (detected at run time, as `half::f16::from_f32` does for one value), its portable
//! rounding otherwise. Both round to nearest even, so the bytes are those of
//! `f16::from_f32(x)` value by value; a test checks that on every kind of value.

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::gguf::GgmlType;
use crate::quant::layouts::codec::TernaryCodec;
use crate::quant::layouts::{q8_0, LayoutError};

/// Values converted per step of [`f16_le_into`] (a stack buffer).
const F16_PIECE: usize = 512;

/// Writes `vals` as little-endian f32 into `out` (`4 · vals.len()` bytes).
///
/// # Panics
/// If `out` has the wrong length.
pub fn f32_le_into(vals: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), 4 * vals.len(), "f32_le_into: output length");
    for (o, v) in out.chunks_exact_mut(4).zip(vals) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes `vals` rounded to binary16 (nearest even, as `f16::from_f32`) as little-endian f16
/// into `out` (`2 · vals.len()` bytes).
///
/// # Panics
/// If `out` has the wrong length.
pub fn f16_le_into(vals: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), 2 * vals.len(), "f16_le_into: output length");
    let mut halves = [f16::ZERO; F16_PIECE];
    for (v, o) in vals.chunks(F16_PIECE).zip(out.chunks_mut(2 * F16_PIECE)) {
        let h = &mut halves[..v.len()];
        h.convert_from_f32_slice(v);
        for (o, h) in o.chunks_exact_mut(2).zip(h.iter()) {
            o.copy_from_slice(&h.to_bits().to_le_bytes());
        }
    }
}

/// Encodes f32 values (whole rows) as a row-block type into `out` (exactly their bytes): F32,
/// F16, Q8_0, or a ternary block layout (TQ1_0, TQ2_0) through its codec's quantizer. The
/// converter and the dummy generator write every such row through this.
///
/// # Panics
/// For a type that is none of these (the callers plan only these), or a wrong `out` length
/// for F32/F16.
pub fn values_into(ty: GgmlType, vals: &[f32], out: &mut [u8]) -> Result<(), LayoutError> {
    match ty {
        GgmlType::F32 => f32_le_into(vals, out),
        GgmlType::F16 => f16_le_into(vals, out),
        GgmlType::Q8_0 => q8_0::quantize_into(vals, out)?,
        other => match other.ternary_codec() {
            Some(TernaryCodec::Blocks(c)) => (c.quantize_into)(vals, out)?,
            _ => unreachable!("no row encoder for {other}"),
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values around every binary16 boundary: each f16, the f32s next to it and the midpoints
    /// to its neighbour (ties), plus random bit patterns, overflow, NaNs and infinities.
    fn hard_values() -> Vec<f32> {
        let mut v = Vec::new();
        for h in 0..=u16::MAX {
            let x = f16::from_bits(h).to_f32();
            let next = f16::from_bits(h.wrapping_add(1)).to_f32();
            v.push(x);
            if x.is_finite() {
                v.push(f32::from_bits(x.to_bits() + 1));
                v.push(f32::from_bits(x.to_bits().wrapping_sub(1)));
                if next.is_finite() {
                    v.push((x + next) / 2.0);
                }
            }
        }
        let mut rng = crate::test_rng::Rng::new(16);
        v.extend((0..100_000).map(|_| f32::from_bits(rng.next() as u32)));
        v.extend([
            65504.0,
            65519.99,
            65520.0,
            1e10,
            -1e-10,
            f32::MIN_POSITIVE,
            -0.0,
        ]);
        v.extend([f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0]);
        v
    }

    #[test]
    fn f16_slice_conversion_matches_from_f32_value_by_value() {
        let vals = hard_values();
        // Odd lengths and offsets: the 8-wide body, the 4-wide and scalar remainders.
        for (start, len) in [(0, vals.len()), (3, 1021), (5, 7), (1, 3), (0, 0)] {
            let v = &vals[start..start + len];
            let mut out = vec![0xAAu8; 2 * len];
            f16_le_into(v, &mut out);
            for (i, (o, &x)) in out.chunks_exact(2).zip(v).enumerate() {
                let want = f16::from_f32(x).to_bits();
                let got = u16::from_le_bytes([o[0], o[1]]);
                if f16::from_bits(want).is_nan() {
                    assert!(f16::from_bits(got).is_nan(), "{x:e} at {i}");
                } else {
                    assert_eq!(got, want, "{x:e} at {i}");
                }
            }
        }
    }

    #[test]
    fn f32_bytes_are_little_endian() {
        let vals = hard_values();
        let mut out = vec![0u8; 4 * vals.len()];
        f32_le_into(&vals, &mut out);
        for (o, x) in out.chunks_exact(4).zip(&vals) {
            assert_eq!(o, x.to_le_bytes());
        }
    }
}
