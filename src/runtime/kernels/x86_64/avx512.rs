//! AVX-512 kernels: the integer dot products with VNNI's `vpdpbusd` (unsigned × signed bytes
//! summed into i32 lanes in one instruction) on 256-bit vectors, and every tile larger than in
//! the AVX2 table because AVX-512VL gives 32 vector registers. 512-bit vectors are not used:
//! on the CPUs tested (Zen 4) they run at half rate, and the float orders to reproduce are
//! defined on eight lanes. Same contract as `avx2`: `unsafe` only for the CPU features.
//!
//! The one-token kernels (I2_S, TQ2_0, Q8_0, F16/F32 in ggml's order) walk the rows they are given
//! as two streams: the first half of the rows and the second, one row of each at a time (tiles
//! of two rows whose "row stride" is half the rows). The two rows share every load of the
//! activations (and, for floats, two rows' independent sums hide the latency of the fused
//! multiply-adds), and the hardware prefetchers see two long sequential streams. Two adjacent
//! rows instead make each stream one row long, which the prefetchers miss: that is what made
//! the AVX2 table's two-row GEMV slower (see `tiled!`). Each row's sums are its own, so the
//! results are the same bits.
//!
//! Compiled only with Rust 1.89 or later (`cfg(bitconv_avx512)`, set by `build.rs`), where the
//! AVX-512 target features and intrinsics are stable; hence the MSRV lint is silenced here.
#![allow(clippy::incompatible_msrv)]
// Tiles are indexed by row and token in nested loops; iterators would obscure that.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::runtime::format::{I2S_BLOCK, Q8_0_BLOCK_BYTES, QK8_0, QK_K, TQ2_BLOCK_BYTES};
use crate::runtime::kernels::reference::{check_float, check_i2s, check_q8_0, check_tq2};
use crate::runtime::kernels::{FloatOrder, FloatType, Q8kActs};

use super::avx2::{ggml_tile, hsum8, hsum_i32, lanes8_tile, q8_0_tile};

/// `(w >> S) & 3`.
///
/// # Safety
/// Needs AVX2.
#[inline(always)]
unsafe fn codes<const S: i32>(w: __m256i, m3: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16::<S>(w), m3)
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

/// Two 32-byte pieces, `lo` in the low half of a 512-bit vector and `hi` in the high half.
///
/// # Safety
/// Needs AVX-512 F; both pointers must point to 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn pair256(lo: *const u8, hi: *const u8) -> __m512i {
    let l = _mm512_castsi256_si512(_mm256_loadu_si256(lo.cast()));
    _mm512_inserti64x4::<1>(l, _mm256_loadu_si256(hi.cast()))
}

/// The 32 bytes at `p` in both halves of a 512-bit vector.
///
/// # Safety
/// Needs AVX-512 F; `p` must point to 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn bcast256(p: *const u8) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(p.cast()))
}

/// `d_y·d_x` for the block at `blk` of two rows, rounded to f32 as the scalar product is: the
/// low eight lanes for the row at `w0`, the high eight for `w1` (both the shared scale `dx`
/// if `S`).
///
/// # Safety
/// Needs AVX-512 F and F16C; unless `S`, both rows must hold the block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tq2_pair_scale<const S: bool>(
    dy: __m512,
    dx: __m512,
    w0: *const u8,
    w1: *const u8,
    blk: usize,
) -> __m512 {
    if S {
        return _mm512_mul_ps(dy, dx);
    }
    let at = |w: *const u8| {
        let p = w.add(blk * TQ2_BLOCK_BYTES + 64);
        _mm_set1_epi16(i16::from_le_bytes([*p, *p.add(1)]))
    };
    let h = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(at(w0)), at(w1));
    _mm512_mul_ps(dy, _mm512_cvtph_ps(h))
}

/// Two TQ2_0 rows (`w0`, `w1`) × one Q8_K token in one 512-bit pass: the rows' 32-byte
/// halves of a block side by side, the activations of a group in both halves, and per
/// group `vpdpbusd` of the masked bytes `w & (3 << 2g)` (exactly `4^g` times the codes),
/// divided back by the power of four (an exact arithmetic shift) at the block's end, less
/// the activations' sums per 32 values. The low eight i32 lanes are row `w0`'s lanes of
/// `avx2::tq2_tile`, the high eight `w1`'s, so the float step per block (convert, times
/// `d_y·d_x`, add) is the scalar twin's, lane for lane, for both rows at once.
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; `w0` and `w1` must hold `nb` blocks (they may be the
/// same row), `q`/`d`/`bsum` one token's `256·nb` values, `nb` scales and `8·nb` sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tq2_gemv_pair<const S: bool>(
    w0: *const u8,
    w1: *const u8,
    q: *const i8,
    d: *const f32,
    bsum: *const i32,
    nb: usize,
    h: u16,
) -> [f32; 2] {
    let masks = [
        _mm512_set1_epi8(0x03),
        _mm512_set1_epi8(0x0c),
        _mm512_set1_epi8(0x30),
        _mm512_set1_epi8(0xc0u8 as i8),
    ];
    let dx = _mm512_cvtph_ps(_mm256_set1_epi16(h as i16));
    let mut acc = _mm512_setzero_ps();
    for blk in 0..nb {
        let mut a = [_mm512_setzero_si512(); 4];
        for half in 0..2 {
            let off = blk * TQ2_BLOCK_BYTES + 32 * half;
            let wv = pair256(w0.add(off), w1.add(off));
            for g in 0..4 {
                let qv = bcast256(q.add(blk * QK_K + 128 * half + 32 * g).cast());
                a[g] = _mm512_dpbusd_epi32(a[g], _mm512_and_si512(wv, masks[g]), qv);
            }
        }
        let sum = _mm512_add_epi32(
            _mm512_add_epi32(a[0], _mm512_srai_epi32::<2>(a[1])),
            _mm512_add_epi32(_mm512_srai_epi32::<4>(a[2]), _mm512_srai_epi32::<6>(a[3])),
        );
        let lanes = _mm512_sub_epi32(sum, bcast256(bsum.add(8 * blk).cast()));
        let dy = _mm512_set1_ps(*d.add(blk));
        let scale = tq2_pair_scale::<S>(dy, dx, w0, w1, blk);
        acc = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(lanes), scale), acc);
    }
    halves_hsum8(acc)
}

/// The two rows' dot products of a 512-bit pair accumulator: [`hsum8`] of the low eight lanes
/// and of the high eight.
///
/// # Safety
/// Needs AVX-512 F.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn halves_hsum8(acc: __m512) -> [f32; 2] {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
    [hsum8(_mm512_castps512_ps256(acc)), hsum8(hi)]
}

/// TQ2_0 × one Q8_K token over `rows` rows as two streams (see the module docs): rows `r` and
/// `half + r` in one [`tq2_gemv_pair`]; an odd last row paired with itself.
///
/// # Safety
/// As [`tq2_gemv_pair`], `w` holding `rows` rows of `rb` bytes, `out` `rows` values.
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
        let [a, b] = tq2_gemv_pair::<S>(w.add(r * rb), w.add((half + r) * rb), q, d, bsum, nb, h);
        out[r] = a;
        out[half + r] = b;
    }
    if rows % 2 == 1 {
        let last = w.add((rows - 1) * rb);
        out[rows - 1] = tq2_gemv_pair::<S>(last, last, q, d, bsum, nb, h)[0];
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

/// `R` TQ2_0 rows × `T` Q8_K tokens: [`tq2_gemv_pair`]'s pairing (two rows side by side in
/// 512-bit vectors, the activations in both halves) with `codes` extraction shared by the
/// `T` tokens and the activations by the rows; an odd last row is paired with itself and the
/// copy dropped. The same lanes and float steps as `avx2::tq2_tile`.
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; pointers as in `avx2::tq2_tile`.
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
    let pairs = R.div_ceil(2);
    let row = |p: usize, i: usize| w.add((2 * p + i).min(R - 1) * rb);
    let m3 = _mm512_set1_epi8(3);
    let dx = _mm512_cvtph_ps(_mm256_set1_epi16(h as i16));
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    for blk in 0..nb {
        let mut lanes = [[_mm512_setzero_si512(); T]; R];
        for t in 0..T {
            let bs = bcast256(bsum.add(t * (k / 32) + 8 * blk).cast());
            for l in lanes.iter_mut().take(pairs) {
                l[t] = _mm512_sub_epi32(l[t], bs);
            }
        }
        for half in 0..2 {
            let off = blk * TQ2_BLOCK_BYTES + 32 * half;
            let mut wv = [_mm512_setzero_si512(); R];
            for p in 0..pairs {
                wv[p] = pair256(row(p, 0).add(off), row(p, 1).add(off));
            }
            for g in 0..4 {
                let mut qv = [_mm512_setzero_si512(); T];
                for (t, v) in qv.iter_mut().enumerate() {
                    *v = bcast256(q.add(t * k + blk * QK_K + 128 * half + 32 * g).cast());
                }
                for p in 0..pairs {
                    let c = match g {
                        0 => _mm512_and_si512(wv[p], m3),
                        1 => _mm512_and_si512(_mm512_srli_epi16::<2>(wv[p]), m3),
                        2 => _mm512_and_si512(_mm512_srli_epi16::<4>(wv[p]), m3),
                        _ => _mm512_and_si512(_mm512_srli_epi16::<6>(wv[p]), m3),
                    };
                    for t in 0..T {
                        lanes[p][t] = _mm512_dpbusd_epi32(lanes[p][t], c, qv[t]);
                    }
                }
            }
        }
        for t in 0..T {
            let dy = _mm512_set1_ps(*d.add(t * nb + blk));
            for p in 0..pairs {
                let scale = tq2_pair_scale::<S>(dy, dx, row(p, 0), row(p, 1), blk);
                acc[p][t] = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_cvtepi32_ps(lanes[p][t]), scale),
                    acc[p][t],
                );
            }
        }
    }
    let mut out = [[0.0f32; T]; R];
    for p in 0..pairs {
        for t in 0..T {
            let [a, b] = halves_hsum8(acc[p][t]);
            out[2 * p][t] = a;
            if 2 * p + 1 < R {
                out[2 * p + 1][t] = b;
            }
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
        8,
        3,
        [
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 1),
            (5, 1),
            (6, 1),
            (7, 1),
            (8, 1),
            (1, 2),
            (2, 2),
            (3, 2),
            (4, 2),
            (5, 2),
            (6, 2),
            (7, 2),
            (8, 2),
            (1, 3),
            (2, 3),
            (3, 3),
            (4, 3),
            (5, 3),
            (6, 3),
            (7, 3),
            (8, 3)
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

/// Q8_0 × Q8_0 (see `Kernels::q8_0_dots`): the AVX2 kernel, except that one token's rows are
/// walked as two streams (see the module docs) with its two-row tile. (`vpdpbusd` instead of
/// `vpmaddubsw` + `vpmaddwd` was slower here: one block per accumulator.)
///
/// # Safety
/// Needs AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn q8_0_dots(w: &[u8], k: usize, q: &[i8], d: &[f32], n: usize, out: &mut [f32]) {
    if n != 1 {
        return super::avx2::q8_0_dots(w, k, q, d, n, out);
    }
    let rows = check_q8_0(w.len(), k, q.len(), d.len(), n, out.len());
    let nb = k / QK8_0;
    let rb = nb * Q8_0_BLOCK_BYTES;
    let (wp, qp, dp) = (w.as_ptr(), q.as_ptr(), d.as_ptr());
    let half = rows / 2;
    for r in 0..half {
        let [[a], [b]] = q8_0_tile::<2, 1>(wp.add(r * rb), half * rb, qp, dp, k, nb);
        out[r] = a;
        out[half + r] = b;
    }
    if rows % 2 == 1 {
        let [[v]] = q8_0_tile::<1, 1>(wp.add((rows - 1) * rb), rb, qp, dp, k, nb);
        out[rows - 1] = v;
    }
}

/// F16 (`H`) or F32 weights × f32 activations with the AVX2 tiles, larger.
///
/// # Safety
/// Needs AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn float_dots<const H: bool>(
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    if n == 1 && order == FloatOrder::Ggml {
        // One token: two streams (see the module docs), rows `r` and `half + r`.
        let ty = if H { FloatType::F16 } else { FloatType::F32 };
        let rows = check_float(ty, w.len(), stride, k, x.len(), n, out.len());
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let half = rows / 2;
        for r in 0..half {
            let [[a], [b]] = ggml_tile::<H, 2, 1, false>(wp.add(r * stride), half * stride, xp, k);
            out[r] = a;
            out[half + r] = b;
        }
        if rows % 2 == 1 {
            let [[v]] = ggml_tile::<H, 1, 1, false>(wp.add((rows - 1) * stride), stride, xp, k);
            out[rows - 1] = v;
        }
        return;
    }
    float_dots_body!(
        order,
        w,
        stride,
        k,
        x,
        n,
        out,
        false,
        4,
        [(1, 1), (2, 1), (3, 1), (4, 1)],
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
        ]
    )
}
