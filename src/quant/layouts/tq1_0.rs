//! TQ1_0: mainline ggml's 1.6875-bit ternary type (GGML type 34), as its
//! reference quantizer (`quantize_row_tq1_0_ref`, and gguf-py's numpy port
//! that `convert_hf_to_gguf.py --outtype tq1_0` runs) computes it.
//!
//! Blocks of 256 values, 54 bytes each: `qs[48]`, `qh[4]`, `d` (f16 LE).
//!
//! * `d = max|x|` over the block (f32, stored as f16 rounded to nearest
//!   even); `id = 1/d` (0 when `d == 0`); trit `t = round(x·id) + 1 ∈ {0,1,2}`
//!   with rounding half away from zero (C `lroundf`, numpy `np_roundf`).
//! * `qs[m]`, `m < 32`: trits of values `m, m+32, m+64, m+96, m+128`;
//!   `qs[32+m]`, `m < 16`: values `160+m, 176+m, 192+m, 208+m, 224+m`;
//!   `qh[j]`, `j < 4`: values `240+j, 244+j, 248+j, 252+j` and a fifth trit 0.
//!   The first value is the most significant trit: `q = Σ tᵢ·3^(4−i)`, stored
//!   as the byte `⌈q·256/243⌉`.
//! * Decoding trit `i` of byte `b`: `((b·3^i mod 256)·3) >> 8`.
//!
//! The quantizer takes real values: codes are recovered as
//! `round(x / max|x|)`, so fake-quantized weights (all nonzeros `±s`) give
//! their exact ternary codes and `d = f16(s)` for every block that is not all
//! zero (an all-zero block has `d = 0`). Non-finite inputs give unspecified
//! (but not panicking) output.

use half::f16;

use super::{
    block_trits, code_trits, pack_ternary_blocks, tail_scale, ternary_block_codes, BlockGeometry,
    Result,
};

super::block_layout!(Tq1_0, "TQ1_0", id 34, 256 values ("QK_K"), 54 bytes);

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Per-block scale `max|x|` (C `MAX(amax, fabsf(v))` order).
///
/// Eight lane maxima first, which the compiler vectorizes (`a > v ? a : v` is `maxps`): with no
/// NaN among the values every `|x|` is a non-negative number, so the maximum is one of them
/// whatever the order and the lanes give the bits of the sequential fold. A NaN (where the
/// order decides) or a length that is not a multiple of eight takes the fold itself.
pub(crate) fn block_amax(x: &[f32]) -> f32 {
    const LANES: usize = 8;
    let chunks = x.chunks_exact(LANES);
    if !chunks.remainder().is_empty() {
        return block_amax_in_order(x);
    }
    let mut m = [0.0f32; LANES];
    let mut nan = false;
    for c in chunks {
        for (m, &v) in m.iter_mut().zip(c) {
            let av = v.abs();
            nan |= av.is_nan();
            *m = if *m > av { *m } else { av };
        }
    }
    if nan {
        return block_amax_in_order(x);
    }
    block_amax_in_order(&m)
}

/// `max|x|` folded in order, as the C reference does.
fn block_amax_in_order(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |a, &v| {
        let av = v.abs();
        if a > av {
            a
        } else {
            av
        }
    })
}

#[inline]
fn pack5(q: u16) -> u8 {
    // ⌈q·256/243⌉ (243 = 3^5)
    (q * 256).div_ceil(243) as u8
}

fn quantize_block(x: &[f32], out: &mut [u8]) {
    let d = block_amax(x);
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut t = [0u8; BLOCK_VALUES];
    block_trits(x, id, &mut t);
    encode_block(&t, d, out);
}

/// One block from the trits `t[i] ∈ {0, 1, 2}` of its values and its scale. Each group of
/// bytes is one loop over contiguous trits, which the compiler vectorizes.
#[inline]
fn encode_block(t: &[u8; BLOCK_VALUES], d: f32, out: &mut [u8]) {
    let w = |i: usize| u16::from(t[i]);
    for (m, o) in out[..32].iter_mut().enumerate() {
        *o = pack5(w(m) * 81 + w(m + 32) * 27 + w(m + 64) * 9 + w(m + 96) * 3 + w(m + 128));
    }
    for (m, o) in out[32..48].iter_mut().enumerate() {
        let i = 160 + m;
        *o = pack5(w(i) * 81 + w(i + 16) * 27 + w(i + 32) * 9 + w(i + 48) * 3 + w(i + 64));
    }
    for (j, o) in out[48..52].iter_mut().enumerate() {
        let i = 240 + j;
        *o = pack5((w(i) * 27 + w(i + 4) * 9 + w(i + 8) * 3 + w(i + 12)) * 3);
    }
    out[52..54].copy_from_slice(&f16::from_f32(d).to_le_bytes());
}

/// Packs ternary `codes` (row-major, values in `{-1, 0, 1}`, length a
/// multiple of 256) that share one `scale` into `out` (exactly
/// [`nbytes`]`(codes.len())` bytes): the bytes [`quantize_into`] gives for the
/// values `c·scale`, without computing or rounding them. For a positive
/// normal scale every block's trits are `c + 1` and `d = f16(scale)` (`0` for
/// an all-zero block); any other scale takes the quantizer itself.
pub fn pack_ternary_into(codes: &[i8], scale: f32, out: &mut [u8]) -> Result<()> {
    Tq1_0::check_out(codes.len(), out)?;
    pack_ternary_blocks(
        codes,
        scale,
        out,
        BLOCK_BYTES,
        |c, d, o| encode_block(&code_trits(c), d, o),
        quantize_block,
    )
}

/// Quantizes `values` (row-major; length a multiple of 256, i.e. every row
/// has `K % 256 == 0`) into `out` (exactly [`nbytes`]`(values.len())` bytes).
pub fn quantize_into(values: &[f32], out: &mut [u8]) -> Result<()> {
    Tq1_0::quantize_blocks(values, out, quantize_block)
}

#[inline]
fn trit_at(b: u8, i: usize) -> u8 {
    ((b.wrapping_mul(POW3[i]) as u16 * 3) >> 8) as u8
}

/// Calls `f(value index in block, trit 0..=2)` for every value of a block.
fn decode_block(blk: &[u8], mut f: impl FnMut(usize, u8)) {
    for (m, &b) in blk[..32].iter().enumerate() {
        for n in 0..5 {
            f(m + 32 * n, trit_at(b, n));
        }
    }
    for (m, &b) in blk[32..48].iter().enumerate() {
        for n in 0..5 {
            f(160 + m + 16 * n, trit_at(b, n));
        }
    }
    for (j, &b) in blk[48..52].iter().enumerate() {
        for n in 0..4 {
            f(240 + j + 4 * n, trit_at(b, n));
        }
    }
}

/// Dequantizes `n` values (a multiple of 256) from `data` (at least
/// [`nbytes`]`(n)` bytes): `(t − 1)·d` per value, as ggml does.
pub fn dequantize(data: &[u8], n: usize) -> Result<Vec<f32>> {
    Tq1_0::dequantize_blocks(data, n, |blk, y| {
        let d = tail_scale(blk);
        decode_block(blk, |i, t| y[i] = (t as i32 - 1) as f32 * d);
    })
}

/// Ternary codes (`t − 1 ∈ {-1, 0, 1}`) of `n` values and the per-block
/// scales `d` (f16 widened to f32, one per 256 values).
pub fn codes(data: &[u8], n: usize) -> Result<(Vec<i8>, Vec<f32>)> {
    ternary_block_codes::<Tq1_0>(data, n, |_, blk, c| {
        decode_block(blk, |i, t| c[i] = t as i8 - 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::layouts::ternary_tests;

    #[test]
    fn all_trit_bytes_decode() {
        // Every 5-trit number survives the ⌈q·256/243⌉ encoding.
        for q in 0..243u16 {
            let b = pack5(q);
            let mut back = 0u16;
            for i in 0..5 {
                back = back * 3 + trit_at(b, i) as u16;
            }
            assert_eq!(back, q);
        }
    }

    #[test]
    fn roundtrip_fake_quantized() {
        let s = 0.037f32;
        let codes_in: Vec<i8> = (0..512).map(|i| ((i * 7 + i / 3) % 3) as i8 - 1).collect();
        let mut vals: Vec<f32> = codes_in.iter().map(|&c| c as f32 * s).collect();
        vals[256..].fill(0.0);
        let mut out = vec![0u8; nbytes(512)];
        quantize_into(&vals, &mut out).unwrap();
        let (c, d) = codes(&out, 512).unwrap();
        assert_eq!(&c[..256], &codes_in[..256]);
        assert!(c[256..].iter().all(|&x| x == 0));
        assert_eq!(d, vec![f16::from_f32(s).to_f32(), 0.0]);
        let deq = dequantize(&out, 512).unwrap();
        assert_eq!(deq[0], codes_in[0] as f32 * f16::from_f32(s).to_f32());
    }

    #[test]
    fn rounding_half_away_from_zero() {
        let mut vals = vec![0.0f32; 256];
        vals[0] = 1.0;
        vals[1] = 0.5; // → 1
        vals[2] = -0.5; // → -1
        vals[3] = 0.49; // → 0
        let mut out = vec![0u8; 54];
        quantize_into(&vals, &mut out).unwrap();
        let (c, _) = codes(&out, 256).unwrap();
        assert_eq!(&c[..4], &[1, 1, -1, 0]);
    }

    #[test]
    fn errors() {
        assert!(quantize_into(&[0.0; 100], &mut [0u8; 54]).is_err());
        assert!(quantize_into(&[0.0; 256], &mut [0u8; 53]).is_err());
        assert!(codes(&[0u8; 53], 256).is_err());
        assert!(dequantize(&[0u8; 54], 255).is_err());
        let mut out = [0u8; 54];
        quantize_into(&[f32::NAN; 256], &mut out).unwrap();
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
        let mut codes: Vec<i8> = (0..1024).map(|i| ((i * 5 + i / 7) % 3) as i8 - 1).collect();
        codes[256..512].fill(0);
        ternary_tests::packing_equals_quantizing(&LAYOUT, &codes);
    }

    #[test]
    fn subnormal_block_maximum_keeps_signs() {
        ternary_tests::subnormal_block_maximum_keeps_signs(&LAYOUT);
    }

    /// The scalar quantizer this module had before the vectorized one: `round` per value and
    /// the in-order maximum.
    #[allow(clippy::needless_range_loop)]
    fn reference_block(x: &[f32], out: &mut [u8]) {
        let d = block_amax_in_order(x);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let t = |i: usize| (x[i] * id).round() as i32;
        let t = |i: usize| t(i).saturating_add(1).clamp(0, 2) as u16;
        for m in 0..32 {
            out[m] = pack5((0..5).fold(0, |q, n| q * 3 + t(m + 32 * n)));
        }
        for m in 0..16 {
            out[32 + m] = pack5((0..5).fold(0, |q, n| q * 3 + t(160 + m + 16 * n)));
        }
        for j in 0..4 {
            out[48 + j] = pack5((0..4).fold(0, |q, n| q * 3 + t(240 + j + 4 * n)) * 3);
        }
        out[52..54].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    }

    #[test]
    fn quantizer_matches_the_scalar_one() {
        ternary_tests::quantize_matches_reference(&LAYOUT, reference_block);
        // The lane maximum against the in-order one on every block, and on a short slice.
        for x in ternary_tests::hard_blocks().chunks(256) {
            assert_eq!(block_amax(x).to_bits(), block_amax_in_order(x).to_bits());
        }
        assert_eq!(block_amax(&[0.5, -3.0, 1.0]), 3.0);
    }
}
