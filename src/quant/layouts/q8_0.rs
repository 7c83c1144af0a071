//! Q8_0: ggml's 8-bit block type (GGML type 8), as the reference quantizer
//! (`quantize_row_q8_0_ref`, which `llama-quantize` uses, and gguf-py's numpy
//! port) computes it.
//!
//! Blocks of 32 values, 34 bytes each: `d` (f16 LE), then 32 × `i8`.
//!
//! * `d = max|x| / 127` in f32 (stored as f16, round to nearest even);
//!   `id = 1/d` in f32 (0 when `d == 0`); `q = round(x·id)` with rounding half
//!   away from zero (C `roundf`), using the unrounded f32 `id`.
//! * Dequantized value: `q · f32(f16 d)`.
//!
//! In bitnet.cpp's I2_S flow `llama-quantize` stores a tied `token_embd` as
//! Q8_0 when `n_embd % 256 != 0`. Non-finite inputs give unspecified (but not
//! panicking) output.

use half::f16;

use super::tq1_0::block_amax;
use super::{round_away, BlockGeometry, Result};

super::block_layout!(Q8_0, "Q8_0", id 8, 32 values ("QK8_0"), 34 bytes);

/// Quantizes `values` (row-major; length a multiple of 32) into `out`
/// (exactly [`nbytes`]`(values.len())` bytes).
pub fn quantize_into(values: &[f32], out: &mut [u8]) -> Result<()> {
    Q8_0::quantize_blocks(values, out, |x, o| {
        let amax = block_amax(x);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        o[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
        for (q, &v) in o[2..].iter_mut().zip(x) {
            *q = (round_away(v * id) as i8) as u8;
        }
    })
}

/// Dequantizes `n` values (a multiple of 32) from `data` (at least
/// [`nbytes`]`(n)` bytes).
pub fn dequantize(data: &[u8], n: usize) -> Result<Vec<f32>> {
    Q8_0::dequantize_blocks(data, n, |blk, y| {
        let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        for (v, &q) in y.iter_mut().zip(&blk[2..]) {
            *v = (q as i8) as f32 * d;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_block() {
        let mut x = [0.0f32; 32];
        x[0] = 1.27;
        x[1] = -1.27;
        x[2] = 0.005; // 0.5 → rounds away from zero to 1
        x[3] = -0.005;
        x[4] = 0.0049;
        let mut out = [0u8; 34];
        quantize_into(&x, &mut out).unwrap();
        let d = 1.27f32 / 127.0;
        assert_eq!(&out[..2], &f16::from_f32(d).to_le_bytes());
        let id = 1.0 / d;
        assert_eq!(out[2] as i8, 127);
        assert_eq!(out[3] as i8, -127);
        assert_eq!(out[4] as i8, (0.005f32 * id).round() as i8);
        assert_eq!(out[5] as i8, -(out[4] as i8));
        assert_eq!(out[6] as i8, (0.0049f32 * id).round() as i8);
        let y = dequantize(&out, 32).unwrap();
        assert_eq!(y[0], 127.0 * f16::from_f32(d).to_f32());
    }

    #[test]
    fn ties_round_away() {
        // amax = 127 → d = 1, id = 1 exactly: 2.5 → 3, -2.5 → -3, 0.5 → 1.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.5;
        let mut out = [0u8; 34];
        quantize_into(&x, &mut out).unwrap();
        assert_eq!([out[3] as i8, out[4] as i8, out[5] as i8], [3, -3, 1]);
    }

    #[test]
    fn zero_block_and_errors() {
        let mut out = [0xFFu8; 34];
        quantize_into(&[0.0; 32], &mut out).unwrap();
        assert!(out.iter().all(|&b| b == 0));
        assert!(quantize_into(&[0.0; 31], &mut [0u8; 34]).is_err());
        assert!(dequantize(&[0u8; 33], 32).is_err());
    }
}
