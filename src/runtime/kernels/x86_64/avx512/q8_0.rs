//! Q8_0 × Q8_0 for one token on 512-bit vectors (see the module docs of `avx512`).

use std::arch::x86_64::*;

use crate::runtime::format::{Q8_0_BLOCK_BYTES, QK8_0};
use crate::runtime::kernels::reference::check_q8_0;

use super::super::avx2::q8_0_tile;
use super::{bcast256, halves_hsum8, pair256, FAR_AHEAD};

/// `P` pairs of Q8_0 rows × one Q8_0 token in ggml's order
/// ([`scalar::dot_q8_0`](crate::runtime::kernels::scalar::dot_q8_0)): pair `p` is the row at
/// byte `p·step` of `w` in lanes 0–7 and the row `off` bytes further in lanes 8–15. Per block,
/// each lane's four products come from `vpdpbusd` on |w| and the activations negated where
/// `w < 0` (the same i32 as `avx2::q8_0_tile`'s `vpmaddubsw` + `vpmaddwd`: |w| ≤ 128 and the
/// activations lie in ±127), converted, and fused-multiply-added with `d_x·d_y` (each row's
/// scale in its half, multiplied in f32 as the scalar product). Each block first asks for the
/// line [`FAR_AHEAD`] bytes further on in each row.
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; `w` must hold the `2P` rows of `nb` blocks, `q`/`d` one
/// token's `32·nb` values and `nb` scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_pairs<const P: usize>(
    w: *const u8,
    step: usize,
    off: usize,
    q: *const i8,
    d: *const f32,
    nb: usize,
) -> [[f32; P]; 2] {
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); P];
    for blk in 0..nb {
        let qv = bcast256(q.add(blk * QK8_0));
        let dy = _mm512_set1_ps(*d.add(blk));
        for p in 0..P {
            let a = w.add(p * step + blk * Q8_0_BLOCK_BYTES);
            let b = a.add(off);
            _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(FAR_AHEAD).cast());
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(FAR_AHEAD).cast());
            let wv = pair256(a.add(2), b.add(2));
            let ax = _mm512_abs_epi8(wv);
            let sy = _mm512_mask_sub_epi8(qv, _mm512_movepi8_mask(wv), zero, qv);
            let lanes = _mm512_dpbusd_epi32(zero, ax, sy);
            let h = _mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm_set1_epi16(i16::from_le_bytes([*a, *a.add(1)]))),
                _mm_set1_epi16(i16::from_le_bytes([*b, *b.add(1)])),
            );
            let scale = _mm512_mul_ps(_mm512_cvtph_ps(h), dy);
            acc[p] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(lanes), acc[p]);
        }
    }
    let mut out = [[0.0f32; P]; 2];
    for p in 0..P {
        [out[0][p], out[1][p]] = halves_hsum8(acc[p]);
    }
    out
}

/// Q8_0 × Q8_0 (see `Kernels::q8_0_dots`): one token with [`q8_0_pairs`]; a batch with the
/// AVX2 kernel.
///
/// # Safety
/// Needs AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(in crate::runtime::kernels::x86_64) unsafe fn q8_0_dots(
    w: &[u8],
    k: usize,
    q: &[i8],
    d: &[f32],
    n: usize,
    out: &mut [f32],
) {
    if n != 1 {
        return super::super::avx2::q8_0_dots(w, k, q, d, n, out);
    }
    let rows = check_q8_0(w.len(), k, q.len(), d.len(), n, out.len());
    let nb = k / QK8_0;
    let rb = nb * Q8_0_BLOCK_BYTES;
    let (wp, qp, dp) = (w.as_ptr(), q.as_ptr(), d.as_ptr());
    // Four streams, rows `s·quarter + r` (s < 4) as the pairs (0, 2) and (1, 3): two
    // accumulators in flight. The rows left over one at a time.
    let quarter = rows / 4;
    for r in 0..quarter {
        let [lo, hi] = q8_0_pairs::<2>(wp.add(r * rb), quarter * rb, 2 * quarter * rb, qp, dp, nb);
        for p in 0..2 {
            out[p * quarter + r] = lo[p];
            out[(2 + p) * quarter + r] = hi[p];
        }
    }
    for r in 4 * quarter..rows {
        let [[v]] = q8_0_tile::<1, 1>(wp.add(r * rb), rb, qp, dp, k, nb);
        out[r] = v;
    }
}
