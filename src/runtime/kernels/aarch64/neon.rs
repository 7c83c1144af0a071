//! NEON kernels, kept simple: one row × one token at a time, the integer dot products through
//! `sdot` (dot-product extension, via `asm!` because its intrinsic is not stable) or through
//! `smull` + pairwise widening adds, which give the same i32 lanes (each the sum of four
//! consecutive byte products, exact). Float kernels widen F16 rows with `half` (hardware
//! conversion where present) and reproduce the scalar orders with 4-lane vectors. Every
//! function is `unsafe` only for the CPU features (NEON is part of the aarch64 baseline;
//! `sdot` needs `dotprod`), lengths are checked by assertions, and all loads stay inside the
//! checked slices.
// Tiles are indexed by row and token in nested loops; iterators would obscure that.
#![allow(clippy::needless_range_loop)]

use std::arch::aarch64::*;
use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::runtime::format::{I2S_BLOCK, Q8_0_BLOCK_BYTES, QK8_0, QK_K, TQ2_BLOCK_BYTES};
use crate::runtime::kernels::reference::{check_float, check_i2s, check_q8_0, check_tq2};
use crate::runtime::kernels::scalar::{self};
use crate::runtime::kernels::{FloatOrder, FloatType, Q8kActs};

/// `acc + Σ a·b` per group of four bytes, with `sdot`.
///
/// # Safety
/// Needs the dot-product extension.
#[inline]
#[target_feature(enable = "neon,dotprod")]
unsafe fn sdot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    std::arch::asm!(
        "sdot {0:v}.4s, {1:v}.16b, {2:v}.16b",
        inout(vreg) acc,
        in(vreg) a,
        in(vreg) b,
        options(pure, nomem, nostack)
    );
    acc
}

/// `acc + Σ a·b` per group of four bytes (`DOT`: `sdot`, else `smull` and pairwise adds; the
/// products of two bytes fit 16 bits, so both are exact and give the same lanes).
///
/// # Safety
/// `DOT` needs the dot-product extension.
#[inline(always)]
unsafe fn dot4<const DOT: bool>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    if DOT {
        sdot(acc, a, b)
    } else {
        let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
        let hi = vpaddlq_s16(vmull_high_s8(a, b));
        vaddq_s32(acc, vpaddq_s32(lo, hi))
    }
}

/// `(w >> s) & 3` for a shift of 0, 2, 4 or 6, as signed bytes.
///
/// # Safety
/// Needs NEON.
#[inline(always)]
unsafe fn codes(w: uint8x16_t, s: u32) -> int8x16_t {
    let m3 = vdupq_n_u8(3);
    let v = match s {
        6 => vshrq_n_u8::<6>(w),
        4 => vshrq_n_u8::<4>(w),
        2 => vshrq_n_u8::<2>(w),
        _ => w,
    };
    vreinterpretq_s8_u8(vandq_u8(v, m3))
}

/// [`scalar::hsum8`] of lanes `lo` (0–3) and `hi` (4–7).
///
/// # Safety
/// Needs NEON.
#[inline(always)]
unsafe fn hsum8(lo: float32x4_t, hi: float32x4_t) -> f32 {
    let t = vaddq_f32(hi, lo);
    let u = vadd_f32(vget_low_f32(t), vget_high_f32(t));
    vget_lane_f32::<0>(u) + vget_lane_f32::<1>(u)
}

/// The f16 at `p`.
///
/// # Safety
/// `p` must point to two readable bytes.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    f16::from_bits(u16::from_le_bytes([*p, *p.add(1)])).to_f32()
}

// ---------------------------------------------------------------------------------------------
// I2_S
// ---------------------------------------------------------------------------------------------

/// Shared body of the I2_S kernels.
///
/// # Safety
/// Needs NEON, and the dot-product extension for `DOT`.
#[inline(always)]
unsafe fn i2s_body<const DOT: bool>(w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
    check_i2s(w.len(), k, q.len(), n, out.len());
    let rb = k / 4;
    for (row, o) in w.chunks_exact(rb).zip(out.chunks_exact_mut(n)) {
        for (t, v) in o.iter_mut().enumerate() {
            let qt = q.as_ptr().add(t * k);
            let mut acc = vdupq_n_s32(0);
            for b in 0..k / I2S_BLOCK {
                let w0 = vld1q_u8(row.as_ptr().add(32 * b));
                let w1 = vld1q_u8(row.as_ptr().add(32 * b + 16));
                for g in 0..4 {
                    let s = 6 - 2 * g as u32;
                    let qp = qt.add(128 * b + 32 * g);
                    acc = dot4::<DOT>(acc, codes(w0, s), vld1q_s8(qp));
                    acc = dot4::<DOT>(acc, codes(w1, s), vld1q_s8(qp.add(16)));
                }
            }
            *v = vaddvq_s32(acc);
        }
    }
}

/// I2_S × int8 with `smull`.
///
/// # Safety
/// Needs NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn i2s_dots_plain(w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
    i2s_body::<false>(w, k, q, n, out)
}

/// I2_S × int8 with `sdot`.
///
/// # Safety
/// Needs NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn i2s_dots_dot(w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
    i2s_body::<true>(w, k, q, n, out)
}

// ---------------------------------------------------------------------------------------------
// TQ2_0 × Q8_K
// ---------------------------------------------------------------------------------------------

/// Shared body of the TQ2_0 kernels.
///
/// # Safety
/// Needs NEON, and the dot-product extension for `DOT`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tq2_body<const DOT: bool>(
    w: &[u8],
    k: usize,
    q: &[i8],
    d: &[f32],
    bsum: &[i32],
    n: usize,
    out: &mut [f32],
) {
    check_tq2(w.len(), k, q.len(), d.len(), bsum.len(), n, out.len());
    let nb = k / QK_K;
    for (row, o) in w
        .chunks_exact(nb * TQ2_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(n))
    {
        for (t, v) in o.iter_mut().enumerate() {
            let mut acc_lo = vdupq_n_f32(0.0);
            let mut acc_hi = vdupq_n_f32(0.0);
            for blk in 0..nb {
                let bp = row.as_ptr().add(blk * TQ2_BLOCK_BYTES);
                let bs = bsum.as_ptr().add(t * (k / 32) + 8 * blk);
                let mut lo = vnegq_s32(vld1q_s32(bs));
                let mut hi = vnegq_s32(vld1q_s32(bs.add(4)));
                for h in 0..2 {
                    let w0 = vld1q_u8(bp.add(32 * h));
                    let w1 = vld1q_u8(bp.add(32 * h + 16));
                    for g in 0..4 {
                        let qp = q.as_ptr().add(t * k + blk * QK_K + 128 * h + 32 * g);
                        let s = 2 * g as u32;
                        lo = dot4::<DOT>(lo, codes(w0, s), vld1q_s8(qp));
                        hi = dot4::<DOT>(hi, codes(w1, s), vld1q_s8(qp.add(16)));
                    }
                }
                let scale = vdupq_n_f32(d[t * nb + blk] * f16_at(bp.add(64)));
                acc_lo = vaddq_f32(vmulq_f32(vcvtq_f32_s32(lo), scale), acc_lo);
                acc_hi = vaddq_f32(vmulq_f32(vcvtq_f32_s32(hi), scale), acc_hi);
            }
            *v = hsum8(acc_lo, acc_hi);
        }
    }
}

/// TQ2_0 × Q8_K with `smull`.
///
/// # Safety
/// Needs NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn tq2_dots_plain(
    w: &[u8],
    k: usize,
    acts: Q8kActs<'_>,
    _shared: Option<u16>,
    n: usize,
    out: &mut [f32],
) {
    let Q8kActs { q, d, bsum } = acts;
    tq2_body::<false>(w, k, q, d, bsum, n, out)
}

/// TQ2_0 × Q8_K with `sdot`.
///
/// # Safety
/// Needs NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn tq2_dots_dot(
    w: &[u8],
    k: usize,
    acts: Q8kActs<'_>,
    _shared: Option<u16>,
    n: usize,
    out: &mut [f32],
) {
    let Q8kActs { q, d, bsum } = acts;
    tq2_body::<true>(w, k, q, d, bsum, n, out)
}

// ---------------------------------------------------------------------------------------------
// Q8_0 × Q8_0
// ---------------------------------------------------------------------------------------------

/// Shared body of the Q8_0 kernels.
///
/// # Safety
/// Needs NEON, and the dot-product extension for `DOT`.
#[inline(always)]
unsafe fn q8_0_body<const DOT: bool>(
    w: &[u8],
    k: usize,
    q: &[i8],
    d: &[f32],
    n: usize,
    out: &mut [f32],
) {
    check_q8_0(w.len(), k, q.len(), d.len(), n, out.len());
    let nb = k / QK8_0;
    for (row, o) in w
        .chunks_exact(nb * Q8_0_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(n))
    {
        for (t, v) in o.iter_mut().enumerate() {
            let mut acc_lo = vdupq_n_f32(0.0);
            let mut acc_hi = vdupq_n_f32(0.0);
            for blk in 0..nb {
                let bp = row.as_ptr().add(blk * Q8_0_BLOCK_BYTES);
                let qp = q.as_ptr().add(t * k + blk * QK8_0);
                let zero = vdupq_n_s32(0);
                let lo = dot4::<DOT>(zero, vld1q_s8(bp.add(2).cast()), vld1q_s8(qp));
                let hi = dot4::<DOT>(zero, vld1q_s8(bp.add(18).cast()), vld1q_s8(qp.add(16)));
                let scale = vdupq_n_f32(f16_at(bp) * d[t * nb + blk]);
                acc_lo = vfmaq_f32(acc_lo, scale, vcvtq_f32_s32(lo));
                acc_hi = vfmaq_f32(acc_hi, scale, vcvtq_f32_s32(hi));
            }
            *v = hsum8(acc_lo, acc_hi);
        }
    }
}

/// Q8_0 × Q8_0 with `smull`.
///
/// # Safety
/// Needs NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_0_dots_plain(
    w: &[u8],
    k: usize,
    q: &[i8],
    d: &[f32],
    n: usize,
    out: &mut [f32],
) {
    q8_0_body::<false>(w, k, q, d, n, out)
}

/// Q8_0 × Q8_0 with `sdot`.
///
/// # Safety
/// Needs NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
pub(super) unsafe fn q8_0_dots_dot(
    w: &[u8],
    k: usize,
    q: &[i8],
    d: &[f32],
    n: usize,
    out: &mut [f32],
) {
    q8_0_body::<true>(w, k, q, d, n, out)
}

// ---------------------------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------------------------

thread_local! {
    static ROW: RefCell<(Vec<f32>, Vec<f16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// [`scalar::dot_f32_ggml`] with eight 4-lane accumulators (`acc[m]` lane `l` = slot `4m + l`).
///
/// # Safety
/// Needs NEON; `x` must be at least as long as `w`.
#[inline(always)]
unsafe fn dot_ggml(w: &[f32], x: &[f32]) -> f32 {
    let k = w.len();
    let np = k & !31;
    let mut acc = [vdupq_n_f32(0.0); 8];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut i = 0;
    while i < np {
        for (m, a) in acc.iter_mut().enumerate() {
            *a = vfmaq_f32(
                *a,
                vld1q_f32(wp.add(i + 4 * m)),
                vld1q_f32(xp.add(i + 4 * m)),
            );
        }
        i += 32;
    }
    // Slots l and l+4 of scalar::reduce32's `v` are in acc[0..] lanes and acc[1..] lanes.
    let v_lo = vaddq_f32(vaddq_f32(acc[0], acc[4]), vaddq_f32(acc[2], acc[6]));
    let v_hi = vaddq_f32(vaddq_f32(acc[1], acc[5]), vaddq_f32(acc[3], acc[7]));
    let t = vaddq_f32(v_lo, v_hi);
    let p = vpaddq_f32(t, t);
    let mut sum = (vgetq_lane_f32::<0>(p) + vgetq_lane_f32::<1>(p)) as f64;
    for c in np..k {
        sum += (w[c] * x[c]) as f64;
    }
    sum as f32
}

/// [`scalar::dot_f32_lanes8`] with two 4-lane accumulators.
///
/// # Safety
/// Needs NEON; `x` must be at least as long as `w`.
#[inline(always)]
unsafe fn dot_lanes8(w: &[f32], x: &[f32]) -> f32 {
    let k = w.len();
    let np = k & !7;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut lo = vdupq_n_f32(0.0);
    let mut hi = vdupq_n_f32(0.0);
    let mut i = 0;
    while i < np {
        lo = vfmaq_f32(lo, vld1q_f32(wp.add(i)), vld1q_f32(xp.add(i)));
        hi = vfmaq_f32(hi, vld1q_f32(wp.add(i + 4)), vld1q_f32(xp.add(i + 4)));
        i += 8;
    }
    let mut a = [0.0f32; 8];
    vst1q_f32(a.as_mut_ptr(), lo);
    vst1q_f32(a.as_mut_ptr().add(4), hi);
    for (j, c) in (np..k).enumerate() {
        a[j] = w[c].mul_add(x[c], a[j]);
    }
    scalar::hsum8(&a)
}

/// Shared body of the float kernels.
///
/// # Safety
/// Needs NEON.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn float_body(
    ty: FloatType,
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    check_float(ty, w.len(), stride, k, x.len(), n, out.len());
    ROW.with_borrow_mut(|(wbuf, hbuf)| {
        wbuf.resize(k, 0.0);
        hbuf.resize(k, f16::ZERO);
        for (r, o) in out.chunks_exact_mut(n).enumerate() {
            let bytes = &w[r * stride..r * stride + k * ty.bytes()];
            match ty {
                FloatType::F16 => {
                    for (h, b) in hbuf.iter_mut().zip(bytes.chunks_exact(2)) {
                        *h = f16::from_le_bytes([b[0], b[1]]);
                    }
                    hbuf.convert_to_f32_slice(wbuf);
                }
                FloatType::F32 => {
                    for (v, b) in wbuf.iter_mut().zip(bytes.chunks_exact(4)) {
                        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
            }
            for (t, v) in o.iter_mut().enumerate() {
                let xt = &x[t * k..(t + 1) * k];
                *v = match order {
                    FloatOrder::Ggml => dot_ggml(wbuf, xt),
                    FloatOrder::Lanes8 => dot_lanes8(wbuf, xt),
                };
            }
        }
    });
}

/// F16 weights × f32 activations.
///
/// # Safety
/// Needs NEON.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn f16_dots(
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    float_body(FloatType::F16, order, w, stride, k, x, n, out)
}

/// F32 weights × f32 activations.
///
/// # Safety
/// Needs NEON.
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn f32_dots(
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    float_body(FloatType::F32, order, w, stride, k, x, n, out)
}
