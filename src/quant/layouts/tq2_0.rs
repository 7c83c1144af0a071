//! TQ2_0: mainline ggml's 2-bit ternary type (GGML type 35), as its reference
//! quantizer (`quantize_row_tq2_0_ref`, and gguf-py's numpy port that
//! `convert_hf_to_gguf.py --outtype tq2_0` runs) computes it.
//!
//! Blocks of 256 values, 66 bytes each: `qs[64]`, then `d` (f16 LE).
//!
//! * `d = max|x|` over the block (f32, stored as f16 rounded to nearest
//!   even); `id = 1/d` (0 when `d == 0`); code `c = round(x·id) + 1 ∈ {0,1,2}`
//!   with rounding half away from zero.
//! * Byte `32·h + m` (`h < 2`, `m < 32`) holds the codes of values
//!   `128·h + m + 32·n` in bits `2n+1 : 2n`, `n = 0..4` (first value in the
//!   low bits).
//! * Dequantized value: `(c − 1)·d`.
//!
//! Non-finite inputs give unspecified (but not panicking) output.

use half::f16;

use super::tq1_0::block_amax;
use super::{
    block_trits, code_trits, pack_ternary_blocks, tail_scale, ternary_block_codes, BlockGeometry,
    LayoutError, Result,
};

super::block_layout!(Tq2_0, "TQ2_0", id 35, 256 values ("QK_K"), 66 bytes);

fn quantize_block(x: &[f32], out: &mut [u8]) {
    let d = block_amax(x);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut t = [0u8; BLOCK_VALUES];
    block_trits(x, id, &mut t);
    encode_block(&t, d, out);
}

/// One block from the codes `c[i] ∈ {0, 1, 2}` of its values and its scale. Each half is one
/// loop over contiguous codes, which the compiler vectorizes.
#[inline]
fn encode_block(c: &[u8; BLOCK_VALUES], d: f32, out: &mut [u8]) {
    for h in 0..2 {
        let c = &c[128 * h..128 * (h + 1)];
        for (m, o) in out[32 * h..32 * (h + 1)].iter_mut().enumerate() {
            *o = c[m] | c[m + 32] << 2 | c[m + 64] << 4 | c[m + 96] << 6;
        }
    }
    out[64..66].copy_from_slice(&f16::from_f32(d).to_le_bytes());
}

/// Quantizes `values` (row-major; length a multiple of 256, i.e. every row
/// has `K % 256 == 0`) into `out` (exactly [`nbytes`]`(values.len())` bytes).
pub fn quantize_into(values: &[f32], out: &mut [u8]) -> Result<()> {
    Tq2_0::quantize_blocks(values, out, quantize_block)
}

/// Packs ternary `codes` (row-major, values in `{-1, 0, 1}`, length a
/// multiple of 256) that share one `scale` into `out` (exactly
/// [`nbytes`]`(codes.len())` bytes): the bytes [`quantize_into`] gives for the
/// values `c·scale`, without computing or rounding them. For a positive
/// normal scale every block's codes are `c + 1` and `d = f16(scale)` (`0` for
/// an all-zero block); any other scale takes the quantizer itself.
pub fn pack_ternary_into(codes: &[i8], scale: f32, out: &mut [u8]) -> Result<()> {
    Tq2_0::check_out(codes.len(), out)?;
    pack_ternary_blocks(
        codes,
        scale,
        out,
        BLOCK_BYTES,
        |c, d, o| encode_block(&code_trits(c), d, o),
        quantize_block,
    )
}

/// Packs ternary `codes` (row-major, values in `{-1, 0, 1}`, length a
/// multiple of 256) with one scale per block, `scales[b]` for block `b`, into
/// `out` (exactly [`nbytes`]`(codes.len())` bytes): every block's codes are
/// `c + 1` and its `d` is `f16(scales[b])`, as they are stored (no rounding of
/// values). For blocks decoded from a file, whose scales are f16 values
/// widened ([`codes`], or TQ1_0's), this rebuilds the blocks bit for bit.
pub fn pack_block_codes_into(codes: &[i8], scales: &[f32], out: &mut [u8]) -> Result<()> {
    Tq2_0::check_out(codes.len(), out)?;
    super::check_codes(codes)?;
    let blocks = codes.len() / BLOCK_VALUES;
    if scales.len() != blocks {
        return Err(LayoutError::InputLength {
            what: format!("TQ2_0 block scales of {} values", codes.len()),
            expected: blocks,
            actual: scales.len(),
        });
    }
    for ((c, o), &d) in codes
        .chunks_exact(BLOCK_VALUES)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
        .zip(scales)
    {
        encode_block(&code_trits(c), d, o);
    }
    Ok(())
}

fn decode_block(blk: &[u8], mut f: impl FnMut(usize, u8)) {
    for h in 0..2 {
        for m in 0..32 {
            let b = blk[32 * h + m];
            for n in 0..4 {
                f(128 * h + m + 32 * n, (b >> (2 * n)) & 3);
            }
        }
    }
}

/// Dequantizes `n` values (a multiple of 256) from `data` (at least
/// [`nbytes`]`(n)` bytes): `(c − 1)·d` per value, as ggml does (code 3 gives
/// `2·d`, as in ggml).
pub fn dequantize(data: &[u8], n: usize) -> Result<Vec<f32>> {
    Tq2_0::dequantize_blocks(data, n, |blk, y| {
        let d = tail_scale(blk);
        decode_block(blk, |i, c| y[i] = (c as i32 - 1) as f32 * d);
    })
}

/// Ternary codes (`c − 1`) of `n` values and the per-block scales `d` (f16
/// widened to f32). Code 3 never comes out of the quantizer and is reported
/// as [`LayoutError::InvalidData`].
pub fn codes(data: &[u8], n: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    let mut bad = None;
    let (codes, scales) = ternary_block_codes::<Tq2_0>(data, n, |b, blk, c| {
        decode_block(blk, |i, q| {
            if q == 3 {
                bad.get_or_insert(b * BLOCK_BYTES + (i / 128) * 32 + i % 32);
            }
            c[i] = q as i8 - 1;
        })
    })?;
    if let Some(offset) = bad {
        return Err(LayoutError::InvalidData {
            offset,
            reason: "TQ2_0 code 3 (the quantizer only writes 0, 1, 2)".into(),
        });
    }
    Ok((codes, scales))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::layouts::ternary_tests;

    /// Codes packed with their per-block scales decode to the same codes and scales.
    #[test]
    fn block_codes_round_trip() {
        let c: Vec<i8> = (0..512).map(|i| ((i * 5 + i / 7) % 3) as i8 - 1).collect();
        let scales = [f16::from_f32(0.25).to_f32(), f16::from_f32(0.5).to_f32()];
        let mut bytes = vec![0u8; 2 * BLOCK_BYTES];
        pack_block_codes_into(&c, &scales, &mut bytes).unwrap();
        let (back, s) = codes(&bytes, 512).unwrap();
        assert_eq!(back, c);
        assert_eq!(s, scales);
    }

    #[test]
    fn block_codes_pack_back_to_the_file_bytes() {
        let vals: Vec<f32> = (0..512)
            .map(|i| ((i * 5 + i / 7) % 3) as f32 - 1.0)
            .map(|v| v * if v > 0.0 { 0.3 } else { 0.7 })
            .collect();
        let mut bytes = vec![0u8; nbytes(512)];
        quantize_into(&vals, &mut bytes).unwrap();
        let (c, s) = codes(&bytes, 512).unwrap();
        let mut again = vec![0u8; nbytes(512)];
        pack_block_codes_into(&c, &s, &mut again).unwrap();
        assert_eq!(again, bytes);
        assert!(pack_block_codes_into(&c, &s[..1], &mut again).is_err());
    }

    #[test]
    fn bit_positions() {
        let mut vals = vec![0.0f32; 256];
        vals[0] = 2.0; // byte 0 bits 1:0 = 2
        vals[32] = -2.0; // byte 0 bits 3:2 = 0
        vals[128 + 97] = 1.0; // byte 33 bits 7:6 = round(0.5)+1 = 2
        let mut out = vec![0u8; 66];
        quantize_into(&vals, &mut out).unwrap();
        assert_eq!(out[0], 0b01_01_00_10);
        assert_eq!(out[33], 0b10_01_01_01);
        assert_eq!(&out[64..], &f16::from_f32(2.0).to_le_bytes());
        let (c, d) = codes(&out, 256).unwrap();
        assert_eq!((c[0], c[32], c[225], c[1]), (1, -1, 1, 0));
        assert_eq!(d, vec![2.0]);
        assert_eq!(dequantize(&out, 256).unwrap()[32], -2.0);
    }

    #[test]
    fn errors() {
        assert!(quantize_into(&[0.0; 300], &mut [0u8; 66]).is_err());
        assert!(codes(&[0xFFu8; 66], 256).is_err());
        assert!(codes(&[0u8; 65], 256).is_err());
    }

    const LAYOUT: ternary_tests::Layout = ternary_tests::Layout {
        nbytes,
        quantize_into,
        pack_ternary_into,
        codes,
    };

    #[test]
    fn ternary_packing_equals_quantizing_the_values() {
        // Blocks with nonzeros and an all-zero block.
        let mut codes: Vec<i8> = (0..1024).map(|i| ((i * 7 + i / 3) % 3) as i8 - 1).collect();
        codes[512..768].fill(0);
        ternary_tests::packing_equals_quantizing(&LAYOUT, &codes);
    }

    #[test]
    fn subnormal_block_maximum_keeps_signs() {
        ternary_tests::subnormal_block_maximum_keeps_signs(&LAYOUT);
    }

    /// The scalar quantizer this module had before the vectorized one: `round` per value and
    /// the in-order maximum.
    fn reference_block(x: &[f32], out: &mut [u8]) {
        let d = x
            .iter()
            .fold(0.0f32, |a, &v| if a > v.abs() { a } else { v.abs() });
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let c = |i: usize| ((x[i] * id).round() as i32).saturating_add(1).clamp(0, 2) as u8;
        for h in 0..2 {
            for m in 0..32 {
                out[32 * h + m] = (0..4).fold(0, |q, n| q | c(128 * h + m + 32 * n) << (2 * n));
            }
        }
        out[64..66].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    }

    #[test]
    fn quantizer_matches_the_scalar_one() {
        ternary_tests::quantize_matches_reference(&LAYOUT, reference_block);
    }
}
