//! The float kernels of the AVX-512 table on 512-bit vectors: F16/F32 weights × f32
//! activations in ggml's 32-slot order and in llamafile's 8-lane order, the same bits as the
//! scalar functions (the module docs of `avx512` say how the slots and lanes are laid out).

use std::arch::x86_64::*;

use crate::runtime::kernels::reference::check_float;
use crate::runtime::kernels::scalar;
use crate::runtime::kernels::{FloatOrder, FloatType};

use super::super::avx2::{self, lanes8_tile, load1};
use super::{two_streams, FAR_AHEAD};

/// Sixteen elements at `p` widened to f32 (`H`: f16, else f32).
///
/// # Safety
/// Needs AVX-512F; `p` must point to 16 readable elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load16<const H: bool>(p: *const u8) -> __m512 {
    if H {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    } else {
        _mm512_loadu_ps(p.cast())
    }
}

/// [`scalar::reduce32`] of the 32 slots held as `lo` (slots 0–15) and `hi` (slots 16–31):
/// `lo + hi` is `s_l + s_{16+l}` in lanes 0–7 and `s_{8+l} + s_{24+l}` in lanes 8–15, its two
/// 256-bit halves added are the scalar `v`, then `t_j = v_j + v_{j+4}` and
/// `(t0 + t1) + (t2 + t3)`.
///
/// # Safety
/// Needs AVX-512F.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn reduce32(lo: __m512, hi: __m512) -> f32 {
    let s = _mm512_add_ps(lo, hi);
    let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)));
    let v = _mm256_add_ps(_mm512_castps512_ps256(s), upper);
    let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    // Lane 0: t0 + t1, lane 2: t2 + t3.
    let p = _mm_add_ps(t, _mm_movehdup_ps(t));
    _mm_cvtss_f32(_mm_add_ss(p, _mm_movehl_ps(p, p)))
}

/// `R` rows × `T` tokens in ggml's 32-slot order ([`scalar::dot_f32_ggml`]) on 512-bit
/// vectors: slots 0–15 and 16–31 of each row and token are the lanes of two accumulators,
/// lane `l` taking positions `32i + l` (`32i + 16 + l`) with fused multiply-adds in
/// increasing `i`, as the scalar slot does; the `K mod 32` tail is added in f64 after
/// [`reduce32`]. With `PF` (and F16: 32 values are one line), each step first asks for the
/// line [`FAR_AHEAD`] bytes further on in each row.
///
/// # Safety
/// Needs AVX-512F; `w` must hold `R` rows of `k` elements `stride` bytes apart, `x` `T` rows
/// of `k` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn ggml_tile<const H: bool, const R: usize, const T: usize, const PF: bool>(
    w: *const u8,
    stride: usize,
    x: *const f32,
    k: usize,
) -> [[f32; T]; R] {
    let eb = if H { 2 } else { 4 };
    let np = k & !31;
    let mut acc = [[[_mm512_setzero_ps(); 2]; T]; R];
    let mut i = 0;
    while i < np {
        if PF && H {
            for r in 0..R {
                let p = w.add(r * stride + i * eb).wrapping_add(FAR_AHEAD);
                _mm_prefetch::<_MM_HINT_T0>(p.cast());
            }
        }
        let mut wv = [[_mm512_setzero_ps(); 2]; R];
        for (r, wr) in wv.iter_mut().enumerate() {
            for (j, v) in wr.iter_mut().enumerate() {
                *v = load16::<H>(w.add(r * stride + (i + 16 * j) * eb));
            }
        }
        for t in 0..T {
            for j in 0..2 {
                let xv = _mm512_loadu_ps(x.add(t * k + i + 16 * j));
                for r in 0..R {
                    acc[r][t][j] = _mm512_fmadd_ps(wv[r][j], xv, acc[r][t][j]);
                }
            }
        }
        i += 32;
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            let mut sum = reduce32(acc[r][t][0], acc[r][t][1]) as f64;
            for c in np..k {
                let a = load1::<H>(w.add(r * stride + c * eb));
                sum += (a * *x.add(t * k + c)) as f64;
            }
            out[r][t] = sum as f32;
        }
    }
    out
}

/// Eight elements of the row at `a` in lanes 0–7 and eight of the row at `b` in lanes 8–15,
/// widened to f32.
///
/// # Safety
/// Needs AVX-512F; `a` and `b` must each point to 8 readable elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load8x2<const H: bool>(a: *const u8, b: *const u8) -> __m512 {
    if H {
        let lo = _mm256_castsi128_si256(_mm_loadu_si128(a.cast()));
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(lo, _mm_loadu_si128(b.cast())))
    } else {
        let lo = _mm512_castpd256_pd512(_mm256_loadu_pd(a.cast()));
        _mm512_castpd_ps(_mm512_insertf64x4::<1>(lo, _mm256_loadu_pd(b.cast())))
    }
}

/// The eight values at `x` in both halves.
///
/// # Safety
/// Needs AVX-512F; `x` must point to 8 readable values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn bcast8(x: *const f32) -> __m512 {
    _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(x.cast())))
}

/// `P` pairs of rows × `T` tokens in llamafile's 8-lane order ([`scalar::dot_f32_lanes8`]):
/// pair `p` is the row at byte `p·step` of `w` in lanes 0–7 of one accumulator per token and
/// the row `off` bytes further in lanes 8–15, lane `l` of each half taking its row's positions
/// `≡ l (mod 8)` with fused multiply-adds as the scalar lane does; the `K mod 8` tail is fused
/// into the first lanes, then each half is summed as [`scalar::hsum8`]. Returns
/// `[low rows, high rows]`. With `PF` (and F16), each 32 values first ask for the line
/// [`FAR_AHEAD`] bytes further on in each row.
///
/// # Safety
/// Needs AVX-512F; `w` must hold the `2P` rows of `k` elements, `x` `T` rows of `k` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn lanes8_pairs<const H: bool, const P: usize, const T: usize, const PF: bool>(
    w: *const u8,
    step: usize,
    off: usize,
    x: *const f32,
    k: usize,
) -> [[[f32; T]; P]; 2] {
    let eb = if H { 2 } else { 4 };
    let np = k & !7;
    let mut acc = [[_mm512_setzero_ps(); T]; P];
    let mut i = 0;
    while i < np {
        if PF && H && i % 32 == 0 {
            for p in 0..P {
                let a = w.add(p * step + i * eb);
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(FAR_AHEAD).cast());
                _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(off + FAR_AHEAD).cast());
            }
        }
        let mut wv = [_mm512_setzero_ps(); P];
        for (p, v) in wv.iter_mut().enumerate() {
            let a = w.add(p * step + i * eb);
            *v = load8x2::<H>(a, a.add(off));
        }
        for t in 0..T {
            let xv = bcast8(x.add(t * k + i));
            for p in 0..P {
                acc[p][t] = _mm512_fmadd_ps(wv[p], xv, acc[p][t]);
            }
        }
        i += 8;
    }
    let mut out = [[[0.0f32; T]; P]; 2];
    for p in 0..P {
        for t in 0..T {
            let mut a = [0.0f32; 16];
            _mm512_storeu_ps(a.as_mut_ptr(), acc[p][t]);
            for (h, lanes) in a.chunks_exact_mut(8).enumerate() {
                let row = w.add(p * step + h * off);
                for (j, c) in (np..k).enumerate() {
                    let wv = load1::<H>(row.add(c * eb));
                    lanes[j] = wv.mul_add(*x.add(t * k + c), lanes[j]);
                }
                let lanes: &[f32; 8] = (&*lanes).try_into().expect("8 lanes");
                out[h][p][t] = scalar::hsum8(lanes);
            }
        }
    }
    out
}

/// F16 (`H`) or F32 weights × f32 activations (see `Kernels::float_dots`).
///
/// # Safety
/// Needs AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(in crate::runtime::kernels::x86_64) unsafe fn float_dots<const H: bool>(
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let ty = if H { FloatType::F16 } else { FloatType::F32 };
    let rows = check_float(ty, w.len(), stride, k, x.len(), n, out.len());
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    match order {
        FloatOrder::Ggml if n == 1 && !H && (wp as usize | stride) % 64 != 0 => {
            // F32 rows off the cache lines: every 64-byte load would straddle two (30% slower
            // than the AVX2 tile's 32-byte loads on a 49 MB matrix). Two streams of that tile.
            two_streams(&mut out[..rows], |lo, hi| {
                let [[a], [b]] = avx2::ggml_tile::<H, 2, 1, false>(
                    wp.add(lo * stride),
                    (hi - lo) * stride,
                    xp,
                    k,
                );
                [a, b]
            });
        }
        FloatOrder::Ggml if n == 1 => {
            // Two streams (see the module docs), rows `r` and `half + r`.
            two_streams(&mut out[..rows], |lo, hi| {
                let [[a], [b]] =
                    ggml_tile::<H, 2, 1, true>(wp.add(lo * stride), (hi - lo) * stride, xp, k);
                [a, b]
            });
        }
        FloatOrder::Ggml => {
            tiled!(
                out,
                rows,
                n,
                1,
                4,
                3,
                [
                    (1, 1),
                    (2, 1),
                    (3, 1),
                    (4, 1),
                    (1, 2),
                    (2, 2),
                    (3, 2),
                    (4, 2),
                    (1, 3),
                    (2, 3),
                    (3, 3),
                    (4, 3)
                ],
                |r, t, R, T| ggml_tile::<H, R, T, false>(
                    wp.add(r * stride),
                    stride,
                    xp.add(t * k),
                    k
                )
            );
        }
        FloatOrder::Lanes8 if n == 1 => {
            // Four streams, rows `s·quarter + r` (s < 4) as the pairs (0, 2) and (1, 3): two
            // accumulators in flight. The rows left over one at a time.
            let quarter = rows / 4;
            for r in 0..quarter {
                let [lo, hi] = lanes8_pairs::<H, 2, 1, true>(
                    wp.add(r * stride),
                    quarter * stride,
                    2 * quarter * stride,
                    xp,
                    k,
                );
                for p in 0..2 {
                    out[p * quarter + r] = lo[p][0];
                    out[(2 + p) * quarter + r] = hi[p][0];
                }
            }
            for r in 4 * quarter..rows {
                let [[v]] = lanes8_tile::<H, 1, 1>(wp.add(r * stride), stride, xp, k);
                out[r] = v;
            }
        }
        FloatOrder::Lanes8 => {
            // Tiles of up to four pairs of adjacent rows × four tokens; an odd last row with
            // the AVX2 tile.
            let mut r = 0;
            while r + 1 < rows {
                let np = ((rows - r) / 2).min(4);
                let mut t = 0;
                while t < n {
                    let nt = (n - t).min(4);
                    macro_rules! tile {
                        ($(($P:literal, $T:literal)),*) => {
                            match (np, nt) {
                                $(($P, $T) => {
                                    let [lo, hi] = lanes8_pairs::<H, $P, $T, false>(
                                        wp.add(r * stride),
                                        2 * stride,
                                        stride,
                                        xp.add(t * k),
                                        k,
                                    );
                                    for p in 0..$P {
                                        for j in 0..$T {
                                            out[(r + 2 * p) * n + t + j] = lo[p][j];
                                            out[(r + 2 * p + 1) * n + t + j] = hi[p][j];
                                        }
                                    }
                                })*
                                _ => unreachable!("tile {}×{} not instantiated", np, nt),
                            }
                        };
                    }
                    tile!(
                        (1, 1),
                        (1, 2),
                        (1, 3),
                        (1, 4),
                        (2, 1),
                        (2, 2),
                        (2, 3),
                        (2, 4),
                        (3, 1),
                        (3, 2),
                        (3, 3),
                        (3, 4),
                        (4, 1),
                        (4, 2),
                        (4, 3),
                        (4, 4)
                    );
                    t += nt;
                }
                r += 2 * np;
            }
            if r < rows {
                let last = &mut out[r * n..];
                let row = wp.add(r * stride);
                tiled!(
                    last,
                    1,
                    n,
                    1,
                    1,
                    4,
                    [(1, 1), (1, 2), (1, 3), (1, 4)],
                    |_r, t, R, T| lanes8_tile::<H, R, T>(row, stride, xp.add(t * k), k)
                );
            }
        }
    }
}
