//! AVX-512 kernels. Same contract as `avx2`: `unsafe` only for the CPU features.
//!
//! The I2_S and TQ2_0 dot products use VNNI's `vpdpbusd` (unsigned × signed bytes summed into
//! i32 lanes in one instruction) on 256-bit vectors, with every tile larger than in the AVX2
//! table because AVX-512VL gives 32 vector registers. The float kernels (`float.rs`: F16/F32
//! in ggml's and in llamafile's order) and Q8_0 for one token (`q8_0.rs`) use 512-bit vectors.
//! Those were first left out because on Zen 4 they were measured at half rate; on Zen 5 (EPYC
//! Turin, family 26, the machine measured since) `vfmadd`, `vcvtph2ps`, `vpdpbusd` and the
//! logic and add instructions retire as many 512-bit as 256-bit instructions per cycle, twice
//! the elements. The scalar orders are kept lane for lane, so the results are the same bits:
//! ggml's 32 slots are two 512-bit accumulators (slots 0–15 and 16–31) whose lanes take the
//! scalar slots' positions with the same fused multiply-adds, reduced in the scalar order; an
//! order defined on eight lanes per row and token (llamafile's, Q8_0's) puts one row in each
//! half of an accumulator, a pair of rows per vector, and sums each half as `hsum8`.
//!
//! The one-token kernels walk the rows they are given as long sequential streams: two (I2_S,
//! TQ2_0, F16/F32 in ggml's order: the first half of the rows and the second, one row of each
//! at a time, as tiles of two rows whose "row stride" is half the rows) or four (Q8_0 and the
//! 8-lane order, whose pairs of rows need two vectors in flight to hide the latency of the
//! fused multiply-adds: rows `r`, `q + r`, `2q + r`, `3q + r` for a quarter `q` of the rows).
//! The rows share every load of the activations, and the hardware prefetchers see a few long
//! streams. Adjacent rows instead make each stream one row long, which the prefetchers miss:
//! that is what made the AVX2 table's two-row GEMV slower (see `tiled!`), and two streams of
//! four adjacent rows took 4.4 ms for the 8-lane order over a 98 MB F16 matrix against 2.5 ms
//! with four streams. Each row's sums are its own, so the results are the same bits.
//!
//! The F16 and Q8_0 one-token kernels also ask for the line [`FAR_AHEAD`] (8 KiB) further on
//! in each row at every line they read. Their vector work per line (a conversion and a fused
//! multiply-add per 16 values, or about a dozen instructions per pair of Q8_0 blocks) holds back
//! how far ahead the loads run: from memory, a one-thread F16 product in ggml's order read
//! 47 GiB/s without the hints against 58 GiB/s for a plain read of the same 49 MB, and 56 GiB/s
//! with them (the 125M model's head: 1.08 → 0.81 ms, of which the 512-bit vectors alone gave
//! little). Hints 0.5–2 KiB ahead were slower than none, 4 KiB about the same; 8 KiB cost nothing
//! measurable on F16 matrices in the L3 cache, about 10% on Q8_0 ones (against 30% gained from
//! memory). F32 rows (two lines per step) were slower with them and take none.
//!
//! F32 rows for one token in ggml's order that do not start on 64-byte boundaries (the
//! pointer or the stride) go to the AVX2 tile: 64-byte loads that straddle two lines made the
//! 512-bit kernel a quarter slower from memory. The model's resident copy starts every matrix
//! on a 64-byte boundary.
//!
//! Compiled only with Rust 1.89 or later (`cfg(bitconv_avx512)`, set by `build.rs`), where the
//! AVX-512 target features and intrinsics are stable; hence the MSRV lint is silenced here.
#![allow(clippy::incompatible_msrv)]
// Tiles are indexed by row and token in nested loops; iterators would obscure that.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::runtime::format::{I2S_BLOCK, QK_K, TQ2_BLOCK_BYTES};
use crate::runtime::kernels::reference::{check_i2s, check_tq2};
use crate::runtime::kernels::Q8kActs;

use super::avx2::{hsum8, hsum_i32};

mod float;
mod q8_0;

pub(super) use float::float_dots;
pub(super) use q8_0::q8_0_dots;

/// How far ahead in a row (bytes) the one-token F16 and Q8_0 kernels ask for the next line
/// (see the module docs).
const FAR_AHEAD: usize = 8192;

/// `(w >> S) & 3`.
///
/// # Safety
/// Needs AVX2.
#[inline(always)]
unsafe fn codes<const S: i32>(w: __m256i, m3: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16::<S>(w), m3)
}

/// The f16 at `p` widened, in all eight lanes.
///
/// # Safety
/// Needs AVX2 and F16C; `p` must point to two readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_bcast(p: *const u8) -> __m256 {
    let h = _mm_set1_epi16(i16::from_le_bytes([*p, *p.add(1)]));
    _mm256_cvtph_ps(h)
}

/// `R` I2_S rows × `T` int8 tokens with `vpdpbusd` (exact i32 accumulation).
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; pointers as in `avx2::i2s_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i2s_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    nb: usize,
) -> [[i32; T]; R] {
    let m3 = _mm256_set1_epi8(3);
    let mut acc = [[_mm256_setzero_si256(); T]; R];
    for bb in 0..nb {
        let mut wv = [_mm256_setzero_si256(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = _mm256_loadu_si256(w.add(r * rb + 32 * bb).cast());
        }
        macro_rules! group {
            ($g:expr, $s:expr) => {{
                let mut qv = [_mm256_setzero_si256(); T];
                for (t, v) in qv.iter_mut().enumerate() {
                    *v = _mm256_loadu_si256(q.add(t * k + 128 * bb + 32 * $g).cast());
                }
                for r in 0..R {
                    let c = codes::<$s>(wv[r], m3);
                    for t in 0..T {
                        acc[r][t] = _mm256_dpbusd_epi32(acc[r][t], c, qv[t]);
                    }
                }
            }};
        }
        group!(0, 6);
        group!(1, 4);
        group!(2, 2);
        group!(3, 0);
    }
    let mut out = [[0i32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum_i32(acc[r][t]);
        }
    }
    out
}

/// `R` I2_S rows × one token without shifts: `vpdpbusd` of the masked bytes `w & (3 << s)`
/// (exactly `2^s` times the codes, and `vpdpbusd` does not saturate) into one accumulator
/// per group and row, each divided back by its power of two (an exact arithmetic shift) at
/// the end. Two vector instructions per 32 codes instead of three.
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; pointers as in `avx2::i2s_tile` with `T = 1`; `nb` below
/// 2^14 (so the scaled sums stay within i32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i2s_gemv_masked<const R: usize>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    nb: usize,
) -> [[i32; 1]; R] {
    let masks = [
        _mm256_set1_epi8(0xc0u8 as i8),
        _mm256_set1_epi8(0x30),
        _mm256_set1_epi8(0x0c),
        _mm256_set1_epi8(0x03),
    ];
    let mut acc = [[_mm256_setzero_si256(); 4]; R];
    for bb in 0..nb {
        let qv: [__m256i; 4] =
            std::array::from_fn(|g| _mm256_loadu_si256(q.add(128 * bb + 32 * g).cast()));
        for r in 0..R {
            let wv = _mm256_loadu_si256(w.add(r * rb + 32 * bb).cast());
            for g in 0..4 {
                acc[r][g] = _mm256_dpbusd_epi32(acc[r][g], _mm256_and_si256(wv, masks[g]), qv[g]);
            }
        }
    }
    let mut out = [[0i32; 1]; R];
    for r in 0..R {
        let s = _mm256_add_epi32(
            _mm256_add_epi32(
                _mm256_srai_epi32::<6>(acc[r][0]),
                _mm256_srai_epi32::<4>(acc[r][1]),
            ),
            _mm256_add_epi32(_mm256_srai_epi32::<2>(acc[r][2]), acc[r][3]),
        );
        out[r][0] = hsum_i32(s);
    }
    out
}

/// I2_S × int8 (see `Kernels::i2s_dots`).
///
/// # Safety
/// Needs AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn i2s_dots(w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
    let rows = check_i2s(w.len(), k, q.len(), n, out.len());
    let rb = k / 4;
    let (wp, qp, nb) = (w.as_ptr(), q.as_ptr(), k / I2S_BLOCK);
    if n == 1 && nb < 1 << 14 {
        // Two streams: rows `r` and `half + r` together (see the module docs).
        let half = rows / 2;
        for r in 0..half {
            let [[a], [b]] = i2s_gemv_masked::<2>(wp.add(r * rb), half * rb, qp, nb);
            out[r] = a;
            out[half + r] = b;
        }
        if rows % 2 == 1 {
            let [[v]] = i2s_gemv_masked::<1>(wp.add((rows - 1) * rb), rb, qp, nb);
            out[rows - 1] = v;
        }
        return;
    }
    tiled!(
        out,
        rows,
        n,
        4,
        4,
        4,
        [
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 2),
            (2, 3),
            (2, 4),
            (3, 2),
            (3, 3),
            (3, 4),
            (4, 2),
            (4, 3),
            (4, 4)
        ],
        |r, t, R, T| i2s_tile::<R, T>(wp.add(r * rb), rb, qp.add(t * k), k, nb)
    );
}

/// `R` TQ2_0 rows (`stride` bytes apart) × one Q8_K token, as `i2s_gemv_masked`: per block
/// and row, `vpdpbusd` of the masked bytes `w & (3 << 2g)` (exactly `4^g` times the codes of
/// group `g`) into one accumulator per group, each divided back by its power of four (an exact
/// arithmetic shift), summed and less the activations' sums per 32 values: the same eight i32
/// lanes as `avx2::tq2_tile`, two vector instructions per 32 codes instead of four. The float
/// step per block is `avx2::tq2_tile`'s.
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; `w` must hold `R` rows of `nb` blocks, `q`/`d`/`bsum` one
/// token's `256·nb` values, `nb` scales and `8·nb` sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tq2_gemv_masked<const R: usize, const S: bool>(
    w: *const u8,
    stride: usize,
    q: *const i8,
    d: *const f32,
    bsum: *const i32,
    nb: usize,
    h: u16,
) -> [f32; R] {
    let masks = [
        _mm256_set1_epi8(0x03),
        _mm256_set1_epi8(0x0c),
        _mm256_set1_epi8(0x30),
        _mm256_set1_epi8(0xc0u8 as i8),
    ];
    let dx_shared = _mm256_cvtph_ps(_mm_set1_epi16(h as i16));
    let mut acc = [_mm256_setzero_ps(); R];
    for blk in 0..nb {
        let mut a = [[_mm256_setzero_si256(); 4]; R];
        for half in 0..2 {
            let qv: [__m256i; 4] = std::array::from_fn(|g| {
                _mm256_loadu_si256(q.add(blk * QK_K + 128 * half + 32 * g).cast())
            });
            for r in 0..R {
                let wv = _mm256_loadu_si256(
                    w.add(r * stride + blk * TQ2_BLOCK_BYTES + 32 * half).cast(),
                );
                for g in 0..4 {
                    a[r][g] = _mm256_dpbusd_epi32(a[r][g], _mm256_and_si256(wv, masks[g]), qv[g]);
                }
            }
        }
        let bs = _mm256_loadu_si256(bsum.add(8 * blk).cast());
        let dy = _mm256_broadcast_ss(&*d.add(blk));
        let once = _mm256_mul_ps(dy, dx_shared);
        for r in 0..R {
            let sum = _mm256_add_epi32(
                _mm256_add_epi32(a[r][0], _mm256_srai_epi32::<2>(a[r][1])),
                _mm256_add_epi32(
                    _mm256_srai_epi32::<4>(a[r][2]),
                    _mm256_srai_epi32::<6>(a[r][3]),
                ),
            );
            let lanes = _mm256_sub_epi32(sum, bs);
            // d_y·d_x rounded to f32 (as the scalar product), in all lanes.
            let scale = if S {
                once
            } else {
                _mm256_mul_ps(
                    dy,
                    f16_bcast(w.add(r * stride + blk * TQ2_BLOCK_BYTES + 64)),
                )
            };
            acc[r] = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(lanes), scale), acc[r]);
        }
    }
    std::array::from_fn(|r| hsum8(acc[r]))
}

/// TQ2_0 × one Q8_K token over `rows` rows as two streams (see the module docs).
///
/// # Safety
/// As [`tq2_gemv_masked`], `w` holding `rows` rows of `rb` bytes, `out` `rows` values.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tq2_gemv<const S: bool>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    d: *const f32,
    bsum: *const i32,
    nb: usize,
    h: u16,
    out: &mut [f32],
) {
    let rows = out.len();
    let half = rows / 2;
    for r in 0..half {
        let [a, b] = tq2_gemv_masked::<2, S>(w.add(r * rb), half * rb, q, d, bsum, nb, h);
        out[r] = a;
        out[half + r] = b;
    }
    if rows % 2 == 1 {
        let [v] = tq2_gemv_masked::<1, S>(w.add((rows - 1) * rb), rb, q, d, bsum, nb, h);
        out[rows - 1] = v;
    }
}

/// `R` TQ2_0 rows × `T` Q8_K tokens with `vpdpbusd`; lanes as in `avx2::tq2_tile`. The
/// integer lanes of a block stay in registers; the float sums across blocks live in `acc`,
/// which the compiler may keep in memory: that frees registers for a larger tile (the code
/// extraction is shared by `T` tokens, the activations by `R` rows).
///
/// `shared` is `Some(h)` when every block of the rows has the scale with f16 bits `h` (see
/// `Kernels::tq2_dots`). Then `d_y·d_x` is the same product for every row, and it is
/// computed once per token and block instead of once per row as well (the same bits), and
/// no row's scale is loaded or widened: 6% less time per product at the models' shapes.
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; pointers as in `avx2::tq2_tile`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tq2_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    d: *const f32,
    bsum: *const i32,
    k: usize,
    nb: usize,
    shared: Option<u16>,
) -> [[f32; T]; R] {
    match shared {
        Some(h) => tq2_tile_with::<R, T, true>(w, rb, q, d, bsum, k, nb, h),
        None => tq2_tile_with::<R, T, false>(w, rb, q, d, bsum, k, nb, 0),
    }
}

/// [`tq2_tile`], with the shared scale `h` (f16 bits) if `S`.
///
/// # Safety
/// As [`tq2_tile`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tq2_tile_with<const R: usize, const T: usize, const S: bool>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    d: *const f32,
    bsum: *const i32,
    k: usize,
    nb: usize,
    h: u16,
) -> [[f32; T]; R] {
    let m3 = _mm256_set1_epi8(3);
    let dx_shared = _mm256_cvtph_ps(_mm_set1_epi16(h as i16));
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for blk in 0..nb {
        let mut lanes = [[_mm256_setzero_si256(); T]; R];
        for t in 0..T {
            let bs = _mm256_loadu_si256(bsum.add(t * (k / 32) + 8 * blk).cast());
            for l in lanes.iter_mut() {
                l[t] = _mm256_sub_epi32(l[t], bs);
            }
        }
        for h in 0..2 {
            let mut wv = [_mm256_setzero_si256(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_si256(w.add(r * rb + blk * TQ2_BLOCK_BYTES + 32 * h).cast());
            }
            macro_rules! group {
                ($g:expr, $s:expr) => {{
                    let mut qv = [_mm256_setzero_si256(); T];
                    for (t, v) in qv.iter_mut().enumerate() {
                        *v = _mm256_loadu_si256(
                            q.add(t * k + blk * QK_K + 128 * h + 32 * $g).cast(),
                        );
                    }
                    for r in 0..R {
                        let c = codes::<$s>(wv[r], m3);
                        for t in 0..T {
                            lanes[r][t] = _mm256_dpbusd_epi32(lanes[r][t], c, qv[t]);
                        }
                    }
                }};
            }
            group!(0, 0);
            group!(1, 2);
            group!(2, 4);
            group!(3, 6);
        }
        let mut dx = [dx_shared; R];
        if !S {
            for (r, v) in dx.iter_mut().enumerate() {
                *v = f16_bcast(w.add(r * rb + blk * TQ2_BLOCK_BYTES + 64));
            }
        }
        for t in 0..T {
            let dy = _mm256_broadcast_ss(&*d.add(t * nb + blk));
            let once = _mm256_mul_ps(dy, dx_shared);
            for r in 0..R {
                // d_y·d_x rounded to f32 (as the scalar product), in all lanes.
                let scale = if S { once } else { _mm256_mul_ps(dy, dx[r]) };
                acc[r][t] = _mm256_add_ps(
                    _mm256_mul_ps(_mm256_cvtepi32_ps(lanes[r][t]), scale),
                    acc[r][t],
                );
            }
        }
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum8(acc[r][t]);
        }
    }
    out
}

/// TQ2_0 × Q8_K (see `Kernels::tq2_dots`).
///
/// # Safety
/// Needs AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn tq2_dots(
    w: &[u8],
    k: usize,
    acts: Q8kActs<'_>,
    shared: Option<u16>,
    n: usize,
    out: &mut [f32],
) {
    let Q8kActs { q, d, bsum } = acts;
    let rows = check_tq2(w.len(), k, q.len(), d.len(), bsum.len(), n, out.len());
    let nb = k / QK_K;
    let rb = nb * TQ2_BLOCK_BYTES;
    let (wp, qp, dp, bp) = (w.as_ptr(), q.as_ptr(), d.as_ptr(), bsum.as_ptr());
    if n == 1 {
        // One token: masked `vpdpbusd` in two streams (the AVX-512 tile with shifts was slower
        // than the AVX2 GEMV here, 44 against 38 µs for 3072×768 on Zen 4).
        match shared {
            Some(h) => tq2_gemv::<true>(wp, rb, qp, dp, bp, nb, h, out),
            None => tq2_gemv::<false>(wp, rb, qp, dp, bp, nb, 0, out),
        }
        return;
    }
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
        |r, t, R, T| tq2_tile::<R, T>(
            wp.add(r * rb),
            rb,
            qp.add(t * k),
            dp.add(t * nb),
            bp.add(t * (k / 32)),
            k,
            nb,
            shared
        )
    );
}
