//! AVX2 + FMA + F16C kernels. Every function here is `unsafe` only because it needs those CPU
//! features: callers must have checked them (the table in `super` is built only then). Slice
//! lengths are checked by assertions at the top of each kernel, and all raw-pointer loads stay
//! inside the checked slices.
//!
//! The tile functions are generic over the number of weight rows `R` and tokens `T` they
//! compute at once; the AVX-512 table instantiates them again with larger tiles (it has 32
//! vector registers), which is why they are `#[inline]` and take their features from the
//! caller.
// Tiles are indexed by row and token in nested loops; iterators would obscure that.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::runtime::format::{I2S_BLOCK, Q8_0_BLOCK_BYTES, QK8_0, QK_K, TQ2_BLOCK_BYTES};
use crate::runtime::kernels::reference::{
    check_flash, check_float, check_i2s, check_q8_0, check_q8_0_acts, check_q8k, check_tq2,
    check_weighted, flash_f32_with,
};
use crate::runtime::kernels::scalar::{self, I8Scale};
use crate::runtime::kernels::{FloatOrder, FloatType, Q8kActs};

// ---------------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------------

/// Sum of the eight i32 lanes (exact, so the order does not matter).
///
/// # Safety
/// Needs AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// [`scalar::hsum8`]: `t_j = a_j + a_{j+4}`, then `(t0 + t2) + (t1 + t3)` (ggml's
/// `hsum_float_8`).
///
/// # Safety
/// Needs AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn hsum8(a: __m256) -> f32 {
    let t = _mm_add_ps(_mm256_extractf128_ps::<1>(a), _mm256_castps256_ps128(a));
    let s = _mm_add_ps(t, _mm_movehl_ps(t, t));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// [`scalar::reduce32`] of four accumulators (`acc[j]` lane `l` = slot `8j + l`).
///
/// # Safety
/// Needs AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn reduce32(acc: &[__m256; 4]) -> f32 {
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let t = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let mut a = [0.0f32; 4];
    _mm_storeu_ps(a.as_mut_ptr(), t);
    (a[0] + a[1]) + (a[2] + a[3])
}

// ---------------------------------------------------------------------------------------------
// I2_S × int8
// ---------------------------------------------------------------------------------------------

/// Codes of one group of 32 values from a block's 32 bytes: `(w >> S) & 3`.
///
/// # Safety
/// Needs AVX2.
#[inline(always)]
unsafe fn codes<const S: i32>(w: __m256i, m3: __m256i) -> __m256i {
    _mm256_and_si256(_mm256_srli_epi16::<S>(w), m3)
}

/// How far ahead the one-token kernels ask for weights (`prefetch_ahead`). Measured on Zen 3
/// (AVX2 only), one process alternating with and without: the F16 head's GEMV 17.1-17.2 ->
/// 19.0-19.6 GB/s on one thread (1-8 KiB ahead all gained; 2 KiB best); end to end with the
/// I2_S GEMV prefetching too, generation +9-12% (125M dummy), +3-11% (0.7B). Earlier
/// measurements on Zen 4 found no gain there, so the AVX-512 table's own kernels do not
/// prefetch.
pub(super) const PREFETCH_AHEAD: usize = 2048;

/// A hint to load the line [`PREFETCH_AHEAD`] bytes after `p` (no architectural effect; the
/// address may lie past the end of the weights).
///
/// # Safety
/// None beyond SSE: a prefetch never faults.
#[inline(always)]
unsafe fn prefetch_ahead(p: *const u8) {
    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD).cast());
}

/// Dot products of `R` I2_S rows (at `w`, `rb` bytes apart) with `T` token rows of int8
/// activations (at `q`, `k` apart), over `nb` blocks of 128 values: `vpmaddubsw` (codes are
/// unsigned, at most 3, so pair sums stay within ±768) summed in 16 bits over up to eight
/// blocks (±24576), then widened.
///
/// # Safety
/// Needs AVX2; `w` must hold `R` rows of `32·nb` bytes and `q` `T` rows of `128·nb` bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn i2s_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    nb: usize,
) -> [[i32; T]; R] {
    let m3 = _mm256_set1_epi8(3);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); T]; R];
    let mut b = 0;
    while b < nb {
        let end = (b + 8).min(nb);
        let mut a16 = [[_mm256_setzero_si256(); T]; R];
        for bb in b..end {
            if R == 1 && T == 1 && bb % 2 == 0 {
                // One row, one token (generation): a line ahead per 64 bytes.
                prefetch_ahead(w.add(32 * bb));
            }
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
                            a16[r][t] = _mm256_add_epi16(a16[r][t], _mm256_maddubs_epi16(c, qv[t]));
                        }
                    }
                }};
            }
            group!(0, 6);
            group!(1, 4);
            group!(2, 2);
            group!(3, 0);
        }
        for r in 0..R {
            for t in 0..T {
                acc[r][t] = _mm256_add_epi32(acc[r][t], _mm256_madd_epi16(a16[r][t], ones));
            }
        }
        b = end;
    }
    let mut out = [[0i32; T]; R];
    for r in 0..R {
        for t in 0..T {
            out[r][t] = hsum_i32(acc[r][t]);
        }
    }
    out
}

/// I2_S × int8 dot products (see `Kernels::i2s_dots`).
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn i2s_dots(w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
    let rows = check_i2s(w.len(), k, q.len(), n, out.len());
    let rb = k / 4;
    let (wp, qp, nb) = (w.as_ptr(), q.as_ptr(), k / I2S_BLOCK);
    tiled!(
        out,
        rows,
        n,
        1,
        2,
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
            (2, 4)
        ],
        |r, t, R, T| i2s_tile::<R, T>(wp.add(r * rb), rb, qp.add(t * k), k, nb)
    );
}

// ---------------------------------------------------------------------------------------------
// TQ2_0 × Q8_K
// ---------------------------------------------------------------------------------------------

/// The f16 scale at `p` (little-endian).
///
/// # Safety
/// Needs F16C; `p` must point to two readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // F16C directly: `half`'s conversion checks the CPU features at run time on every call.
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

/// `R` TQ2_0 rows × `T` Q8_K tokens in ggml's lane order ([`scalar::dot_tq2_q8k`]): per block,
/// eight i32 lanes from `vpmaddubsw` summed in 16 bits and widened with `vpmaddwd`, converted,
/// multiplied by `d_y·d_x` and added. The activations' sums per 32 values are subtracted in
/// the 16-bit sums: each starts at `-sum` in the low half of its 32-bit lane and 0 in the high
/// half, which `vpmaddwd` then adds in (|sum| <= 4096 plus eight products within ±768: within
/// ±10240). That is one operation per token and block instead of one per row as well.
///
/// The 2 × 4 tile, the one prompts use, runs its integer part through [`tq2_block_2x4`]
/// (hand-allocated registers).
///
/// With `S`, every block has the scale with f16 bits `h` (see `Kernels::tq2_dots`): `d_y·d_x`
/// is then formed once per token and block for all rows (the same bits), and no row's scale
/// is loaded.
///
/// # Safety
/// Needs AVX2; `w` must hold `R` rows of `nb` blocks, `q`/`d`/`bsum` `T` tokens of `256·nb`
/// values, `nb` scales and `8·nb` sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tq2_tile<const R: usize, const T: usize, const S: bool, const PF: bool>(
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
    let ones = _mm256_set1_epi16(1);
    let low16 = _mm256_set1_epi32(0xffff);
    let dx_shared = _mm256_cvtph_ps(_mm_set1_epi16(h as i16));
    // The 2 × 4 tile, the one prompts use: integer part in assembly, float sums in memory.
    let hand = R == 2 && T == 4;
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for blk in 0..nb {
        if PF && R == 1 && T == 1 {
            // One row, one token (generation), as in `i2s_tile`.
            prefetch_ahead(w.add(blk * TQ2_BLOCK_BYTES));
        }
        let mut neg = [_mm256_setzero_si256(); T];
        for (t, v) in neg.iter_mut().enumerate() {
            let bs = _mm256_loadu_si256(bsum.add(t * (k / 32) + 8 * blk).cast());
            *v = _mm256_and_si256(_mm256_sub_epi32(_mm256_setzero_si256(), bs), low16);
        }
        let mut a16 = [neg; R];
        if hand {
            let a = tq2_block_2x4(
                w.add(blk * TQ2_BLOCK_BYTES),
                w.add(rb + blk * TQ2_BLOCK_BYTES),
                q.add(blk * QK_K),
                k,
                m3,
                std::array::from_fn(|t| neg[t]),
            );
            for r in 0..R {
                for t in 0..T {
                    a16[r][t] = a[r][t];
                }
            }
        } else {
            for half in 0..2 {
                macro_rules! group {
                    ($g:expr, $s:expr) => {{
                        let mut qv = [_mm256_setzero_si256(); T];
                        for (t, v) in qv.iter_mut().enumerate() {
                            *v = _mm256_loadu_si256(
                                q.add(t * k + blk * QK_K + 128 * half + 32 * $g).cast(),
                            );
                        }
                        for r in 0..R {
                            let wv = _mm256_loadu_si256(
                                w.add(r * rb + blk * TQ2_BLOCK_BYTES + 32 * half).cast(),
                            );
                            let c = codes::<$s>(wv, m3);
                            for t in 0..T {
                                a16[r][t] =
                                    _mm256_add_epi16(a16[r][t], _mm256_maddubs_epi16(c, qv[t]));
                            }
                        }
                    }};
                }
                group!(0, 0);
                group!(1, 2);
                group!(2, 4);
                group!(3, 6);
            }
        }
        let mut dx = [dx_shared; R];
        if !S {
            for (r, v) in dx.iter_mut().enumerate() {
                *v = _mm256_set1_ps(f16_at(w.add(r * rb + blk * TQ2_BLOCK_BYTES + 64)));
            }
        }
        for t in 0..T {
            let dy = _mm256_broadcast_ss(&*d.add(t * nb + blk));
            let once = _mm256_mul_ps(dy, dx_shared);
            for r in 0..R {
                let lanes = _mm256_madd_epi16(a16[r][t], ones);
                // d_y·d_x rounded to f32 (as the scalar product), in all lanes.
                let scale = if S { once } else { _mm256_mul_ps(dy, dx[r]) };
                let p = _mm256_mul_ps(_mm256_cvtepi32_ps(lanes), scale);
                if hand {
                    // The 2 × 4 tile's float sums stay in memory (volatile): otherwise the
                    // compiler keeps them in registers across the block loop and spills 16-bit
                    // sums in the inner loop instead (measured: 1.5-6% longer). Smaller tiles
                    // have registers enough, and for one row and token (generation) the
                    // round trip through memory each block would lengthen the dependency chain.
                    let a = std::ptr::read_volatile(&acc[r][t]);
                    std::ptr::write_volatile(&mut acc[r][t], _mm256_add_ps(p, a));
                } else {
                    acc[r][t] = _mm256_add_ps(p, acc[r][t]);
                }
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

/// Codes `(w >> SHIFT) & 3` of two rows' 32 bytes at `w0` and `w1`.
///
/// # Safety
/// Needs AVX2; both pointers must point to 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes_2<const SHIFT: i32>(w0: *const u8, w1: *const u8, m3: __m256i) -> [__m256i; 2] {
    [w0, w1].map(|p| codes::<SHIFT>(_mm256_loadu_si256(p.cast()), m3))
}

/// One group of 32 values of a 2 × 4 TQ2_0 tile: `vpmaddubsw` of the two rows' codes `c` with
/// the 32 activations at `q + OFF` of each token (tokens `k` bytes apart, `k3` = `3·k`), added
/// to the tile's 16-bit sums `a`. Written in assembly so that the eight sums stay in
/// registers: from intrinsics the compiler kept the four activation vectors in registers and
/// spilled sums to the stack in the inner loop instead (AVX2 has 16 vector registers); here
/// the activations are memory operands, read once per row.
///
/// # Safety
/// Needs AVX2; `q + t·k + OFF` must point to 32 readable bytes for `t < 4`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tq2_group_2x4<const OFF: usize>(
    c: [__m256i; 2],
    q: *const i8,
    k: usize,
    k3: usize,
    a: &mut [[__m256i; 4]; 2],
) {
    std::arch::asm!(
        "vpmaddubsw {x0}, {c0}, ymmword ptr [{q} + {off}]",
        "vpaddw {a00}, {a00}, {x0}",
        "vpmaddubsw {x1}, {c1}, ymmword ptr [{q} + {off}]",
        "vpaddw {a10}, {a10}, {x1}",
        "vpmaddubsw {x0}, {c0}, ymmword ptr [{q} + {k} + {off}]",
        "vpaddw {a01}, {a01}, {x0}",
        "vpmaddubsw {x1}, {c1}, ymmword ptr [{q} + {k} + {off}]",
        "vpaddw {a11}, {a11}, {x1}",
        "vpmaddubsw {x0}, {c0}, ymmword ptr [{q} + 2*{k} + {off}]",
        "vpaddw {a02}, {a02}, {x0}",
        "vpmaddubsw {x1}, {c1}, ymmword ptr [{q} + 2*{k} + {off}]",
        "vpaddw {a12}, {a12}, {x1}",
        "vpmaddubsw {x0}, {c0}, ymmword ptr [{q} + {k3} + {off}]",
        "vpaddw {a03}, {a03}, {x0}",
        "vpmaddubsw {x1}, {c1}, ymmword ptr [{q} + {k3} + {off}]",
        "vpaddw {a13}, {a13}, {x1}",
        off = const OFF,
        q = in(reg) q,
        k = in(reg) k,
        k3 = in(reg) k3,
        c0 = in(ymm_reg) c[0],
        c1 = in(ymm_reg) c[1],
        a00 = inout(ymm_reg) a[0][0],
        a01 = inout(ymm_reg) a[0][1],
        a02 = inout(ymm_reg) a[0][2],
        a03 = inout(ymm_reg) a[0][3],
        a10 = inout(ymm_reg) a[1][0],
        a11 = inout(ymm_reg) a[1][1],
        a12 = inout(ymm_reg) a[1][2],
        a13 = inout(ymm_reg) a[1][3],
        x0 = out(ymm_reg) _,
        x1 = out(ymm_reg) _,
        options(pure, readonly, nostack, preserves_flags),
    );
}

/// The integer part of one block of a 2 × 4 TQ2_0 tile (see [`tq2_group_2x4`]): `w0`/`w1`
/// point to the rows' 64 code bytes, `q` to token 0's 256 activations; the sums start at
/// `init` (the activation sums as [`tq2_tile`] folds them in).
///
/// # Safety
/// Needs AVX2; pointers as described, tokens `k` bytes apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tq2_block_2x4(
    w0: *const u8,
    w1: *const u8,
    q: *const i8,
    k: usize,
    m3: __m256i,
    init: [__m256i; 4],
) -> [[__m256i; 4]; 2] {
    let mut a = [init; 2];
    let k3 = 3 * k;
    for half in 0..2 {
        let (w0, w1, q) = (w0.add(32 * half), w1.add(32 * half), q.add(128 * half));
        tq2_group_2x4::<0>(codes_2::<0>(w0, w1, m3), q, k, k3, &mut a);
        tq2_group_2x4::<32>(codes_2::<2>(w0, w1, m3), q, k, k3, &mut a);
        tq2_group_2x4::<64>(codes_2::<4>(w0, w1, m3), q, k, k3, &mut a);
        tq2_group_2x4::<96>(codes_2::<6>(w0, w1, m3), q, k, k3, &mut a);
    }
    a
}

/// TQ2_0 × Q8_K (see `Kernels::tq2_dots`): tiles of up to 2 rows × 4 tokens (measured on
/// Zen 3 at the 0.7B model's shapes in the runtime's token blocks: 10% faster than 2 × 3;
/// 3 × 3, 3 × 4 and one row × 4..8 tokens were slower). One-token products prefetch ahead if
/// `PF` (the AVX2 table; the AVX-512 table, which calls this for one token, does not).
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tq2_dots<const PF: bool>(
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
    macro_rules! run {
        ($s:expr, $h:expr) => {
            tiled!(
                out,
                rows,
                n,
                1,
                2,
                4,
                [
                    (1, 1),
                    (2, 1),
                    (1, 2),
                    (1, 3),
                    (1, 4),
                    (2, 2),
                    (2, 3),
                    (2, 4)
                ],
                |r, t, R, T| tq2_tile::<R, T, { $s }, PF>(
                    wp.add(r * rb),
                    rb,
                    qp.add(t * k),
                    dp.add(t * nb),
                    bp.add(t * (k / 32)),
                    k,
                    nb,
                    $h
                )
            )
        };
    }
    match shared {
        Some(h) => run!(true, h),
        None => run!(false, 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Q8_0 × Q8_0
// ---------------------------------------------------------------------------------------------

/// `R` Q8_0 rows × `T` Q8_0 tokens in ggml's order ([`scalar::dot_q8_0`]): eight i32 lanes of four
/// products per block (`vpmaddubsw` on |w| and sign-adjusted activations — exact because the
/// activations lie in ±127), converted and fused-multiply-added with `d_x·d_y`.
///
/// # Safety
/// Needs AVX2 and FMA; `w` must hold `R` rows of `nb` blocks, `q`/`d` `T` tokens.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0_tile<const R: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    q: *const i8,
    d: *const f32,
    k: usize,
    nb: usize,
) -> [[f32; T]; R] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for blk in 0..nb {
        let mut qv = [_mm256_setzero_si256(); T];
        let mut dy = [0.0f32; T];
        for t in 0..T {
            qv[t] = _mm256_loadu_si256(q.add(t * k + blk * QK8_0).cast());
            dy[t] = *d.add(t * nb + blk);
        }
        for r in 0..R {
            let p = w.add(r * rb + blk * Q8_0_BLOCK_BYTES);
            let dx = f16_at(p);
            let wv = _mm256_loadu_si256(p.add(2).cast());
            let ax = _mm256_sign_epi8(wv, wv);
            for t in 0..T {
                let sy = _mm256_sign_epi8(qv[t], wv);
                let lanes = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
                let scale = _mm256_set1_ps(dx * dy[t]);
                acc[r][t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes), acc[r][t]);
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

/// Q8_0 × Q8_0 (see `Kernels::q8_0_dots`).
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0_dots(w: &[u8], k: usize, q: &[i8], d: &[f32], n: usize, out: &mut [f32]) {
    let rows = check_q8_0(w.len(), k, q.len(), d.len(), n, out.len());
    let nb = k / QK8_0;
    let rb = nb * Q8_0_BLOCK_BYTES;
    let (wp, qp, dp) = (w.as_ptr(), q.as_ptr(), d.as_ptr());
    tiled!(
        out,
        rows,
        n,
        1,
        2,
        4,
        [
            (1, 1),
            (2, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 2),
            (2, 3),
            (2, 4)
        ],
        |r, t, R, T| q8_0_tile::<R, T>(wp.add(r * rb), rb, qp.add(t * k), dp.add(t * nb), k, nb)
    );
}

// ---------------------------------------------------------------------------------------------
// Float weights (F16 or F32) × f32 activations
// ---------------------------------------------------------------------------------------------

/// Eight elements at `p` widened to f32 (`H`: f16, else f32).
///
/// # Safety
/// Needs AVX and F16C; `p` must point to 8 readable elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load8<const H: bool>(p: *const u8) -> __m256 {
    if H {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    } else {
        _mm256_loadu_ps(p.cast())
    }
}

/// One element at `p` widened to f32.
///
/// # Safety
/// Needs F16C; `p` must point to one readable element.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn load1<const H: bool>(p: *const u8) -> f32 {
    if H {
        f16_at(p)
    } else {
        f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
    }
}

/// `R` rows × `T` tokens in ggml's 32-slot order ([`scalar::dot_f32_ggml`]). With `PF`, each
/// step first asks for the line [`PREFETCH_AHEAD`] bytes further on in each row.
///
/// # Safety
/// Needs AVX2, FMA, F16C; `w` must hold `R` rows of `k` elements `stride` bytes apart, `x`
/// `T` rows of `k` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ggml_tile<const H: bool, const R: usize, const T: usize, const PF: bool>(
    w: *const u8,
    stride: usize,
    x: *const f32,
    k: usize,
) -> [[f32; T]; R] {
    let eb = if H { 2 } else { 4 };
    let np = k & !31;
    let mut acc = [[[_mm256_setzero_ps(); 4]; T]; R];
    let mut i = 0;
    while i < np {
        if PF && H {
            // 32 values, one line of F16. F32 rows gained nothing from it (one or two lines
            // per step; TL2 dummies' F32 head, Zen 3).
            for r in 0..R {
                prefetch_ahead(w.add(r * stride + i * eb));
            }
        }
        let mut wv = [[_mm256_setzero_ps(); 4]; R];
        for (r, wr) in wv.iter_mut().enumerate() {
            for (j, v) in wr.iter_mut().enumerate() {
                *v = load8::<H>(w.add(r * stride + (i + 8 * j) * eb));
            }
        }
        for t in 0..T {
            for j in 0..4 {
                let xv = _mm256_loadu_ps(x.add(t * k + i + 8 * j));
                for r in 0..R {
                    acc[r][t][j] = _mm256_fmadd_ps(wv[r][j], xv, acc[r][t][j]);
                }
            }
        }
        i += 32;
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            let mut sum = reduce32(&acc[r][t]) as f64;
            for c in np..k {
                let a = load1::<H>(w.add(r * stride + c * eb));
                sum += (a * *x.add(t * k + c)) as f64;
            }
            out[r][t] = sum as f32;
        }
    }
    out
}

/// `R` rows × `T` tokens in llamafile's 8-lane order ([`scalar::dot_f32_lanes8`]).
///
/// # Safety
/// As [`ggml_tile`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn lanes8_tile<const H: bool, const R: usize, const T: usize>(
    w: *const u8,
    stride: usize,
    x: *const f32,
    k: usize,
) -> [[f32; T]; R] {
    let eb = if H { 2 } else { 4 };
    let np = k & !7;
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut i = 0;
    while i < np {
        let mut wv = [_mm256_setzero_ps(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = load8::<H>(w.add(r * stride + i * eb));
        }
        for t in 0..T {
            let xv = _mm256_loadu_ps(x.add(t * k + i));
            for r in 0..R {
                acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
        i += 8;
    }
    let mut out = [[0.0f32; T]; R];
    for r in 0..R {
        for t in 0..T {
            let mut a = [0.0f32; 8];
            _mm256_storeu_ps(a.as_mut_ptr(), acc[r][t]);
            for (j, c) in (np..k).enumerate() {
                let wv = load1::<H>(w.add(r * stride + c * eb));
                a[j] = wv.mul_add(*x.add(t * k + c), a[j]);
            }
            out[r][t] = scalar::hsum8(&a);
        }
    }
    out
}

/// F16 (`H`) or F32 weights × f32 activations.
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
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
    float_dots_body!(
        order,
        w,
        stride,
        k,
        x,
        n,
        out,
        true,
        2,
        [(1, 1), (2, 1)],
        3,
        4,
        [
            (1, 1),
            (2, 1),
            (3, 1),
            (1, 2),
            (1, 3),
            (1, 4),
            (2, 2),
            (2, 3),
            (2, 4),
            (3, 2),
            (3, 3),
            (3, 4)
        ]
    )
}

// ---------------------------------------------------------------------------------------------
// Attention
// ---------------------------------------------------------------------------------------------

/// The weighted sum of value rows with `S` slots (see `Kernels::weighted_sum`): slot by slot,
/// 64 output values at a time held in registers while the slot's rows are accumulated in
/// increasing order, then the slots reduced in the scalar order.
///
/// # Safety
/// Needs AVX2, FMA and F16C; lengths checked by the caller.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn weighted_slots<const H: bool, const S: usize>(
    v: *const u8,
    stride: usize,
    p: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let eb = if H { 2 } else { 4 };
    let hd = out.len();
    let hv = hd & !7;
    let sp = scratch.as_mut_ptr();
    for s in 0..S {
        let mut d0 = 0;
        while d0 < hv {
            let width = (hv - d0).min(64) / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut j = s;
            while j < p.len() {
                let pj = _mm256_set1_ps(p[j]);
                let row = v.add(j * stride + d0 * eb);
                for (i, a) in acc.iter_mut().enumerate().take(width) {
                    *a = _mm256_fmadd_ps(load8::<H>(row.add(8 * i * eb)), pj, *a);
                }
                j += S;
            }
            for (i, a) in acc.iter().enumerate().take(width) {
                _mm256_storeu_ps(sp.add(s * hd + d0 + 8 * i), *a);
            }
            d0 += 8 * width;
        }
        for d in hv..hd {
            let mut a = 0.0f32;
            let mut j = s;
            while j < p.len() {
                a = load1::<H>(v.add(j * stride + d * eb)).mul_add(p[j], a);
                j += S;
            }
            *sp.add(s * hd + d) = a;
        }
    }
    let slot = |s: usize, d: usize| _mm256_loadu_ps(sp.add(s * hd + d));
    let mut d = 0;
    while d < hv {
        let r = if S == 32 {
            let mut vv = [_mm256_setzero_ps(); 8];
            for (l, o) in vv.iter_mut().enumerate() {
                *o = _mm256_add_ps(
                    _mm256_add_ps(slot(l, d), slot(16 + l, d)),
                    _mm256_add_ps(slot(8 + l, d), slot(24 + l, d)),
                );
            }
            let t: [__m256; 4] = std::array::from_fn(|j| _mm256_add_ps(vv[j], vv[j + 4]));
            _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]))
        } else {
            let t: [__m256; 4] = std::array::from_fn(|j| _mm256_add_ps(slot(j + 4, d), slot(j, d)));
            _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]))
        };
        _mm256_storeu_ps(out.as_mut_ptr().add(d), r);
        d += 8;
    }
    for (d, o) in out.iter_mut().enumerate().skip(hv) {
        let a: [f32; S] = std::array::from_fn(|s| *sp.add(s * hd + d));
        *o = if S == 32 {
            scalar::reduce32(a.as_slice().try_into().expect("32"))
        } else {
            scalar::hsum8(a.as_slice().try_into().expect("8"))
        };
    }
}

/// Weighted sum of F16 (`H`) or F32 value rows.
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn weighted<const H: bool>(
    order: FloatOrder,
    v: &[u8],
    stride: usize,
    p: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    let ty = if H { FloatType::F16 } else { FloatType::F32 };
    check_weighted(ty, v.len(), stride, p.len(), out.len(), scratch.len());
    match order {
        FloatOrder::Ggml => weighted_slots::<H, 32>(v.as_ptr(), stride, p, out, scratch),
        FloatOrder::Lanes8 => weighted_slots::<H, 8>(v.as_ptr(), stride, p, out, scratch),
    }
}

/// Rounds one f32 value to f16 precision with F16C ([`scalar::round_f16`]).
///
/// # Safety
/// Needs F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_f16_1(v: f32) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(
        _mm_set_ss(v),
    )))
}

/// Rounds eight f32 values to f16 precision (round to nearest even, as `half` does).
///
/// # Safety
/// Needs AVX and F16C.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_f16_8(v: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v))
}

/// Keys handled per round of [`flash_f16`]: their scores and exponentials live on the stack.
const FLASH_KEYS: usize = 64;

/// Flash attention over an F16 cache (see `Kernels::flash_attention_f16`): the scalar
/// recurrence, same bits, in rounds of [`FLASH_KEYS`] keys. Each round first computes the
/// scores of its keys (two rows at a time), then walks them in order for the running maximum
/// and the argument of the one `expf` per key (`m_old − m` when a key raises the maximum,
/// `s − m` otherwise), takes those exponentials together ([`exp`]), and only then adds the
/// value rows: the exponentials no longer wait on the
/// accumulator, and for head sizes 64, 96 and 128 the accumulator stays in registers
/// ([`flash_values`]); it is rounded to f16 precision after every update as the scalar
/// code does.
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn flash_f16(
    q: &[f32],
    k: &[u8],
    v: &[u8],
    stride: usize,
    positions: usize,
    scale: f32,
    out: &mut [f32],
) {
    check_flash(
        FloatType::F16,
        q.len(),
        k.len(),
        v.len(),
        stride,
        positions,
        out.len(),
    );
    let hd = out.len();
    out.fill(0.0);
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    let mut e = [0f32; FLASH_KEYS];
    let mut raised = [false; FLASH_KEYS];
    let mut j0 = 0;
    while j0 < positions {
        let nj = FLASH_KEYS.min(positions - j0);
        let kp = k.as_ptr().add(j0 * stride);
        let mut j = 0;
        while j + 2 <= nj {
            let [[a], [b]] =
                ggml_tile::<true, 2, 1, false>(kp.add(j * stride), stride, q.as_ptr(), hd);
            e[j] = a * scale;
            e[j + 1] = b * scale;
            j += 2;
        }
        if j < nj {
            let [[a]] = ggml_tile::<true, 1, 1, false>(kp.add(j * stride), stride, q.as_ptr(), hd);
            e[j] = a * scale;
        }
        for (x, up) in e[..nj].iter_mut().zip(&mut raised[..nj]) {
            let s = *x;
            *up = s > m;
            if *up {
                let m_old = m;
                m = s;
                *x = m_old - m;
            } else {
                *x = s - m;
            }
        }
        exp(&mut e[..nj]);
        let vp = v.as_ptr().add(j0 * stride);
        let (e, raised) = (&e[..nj], &raised[..nj]);
        match hd {
            64 => flash_values::<8>(out, vp, stride, e, raised, &mut sum),
            96 => flash_values::<12>(out, vp, stride, e, raised, &mut sum),
            128 => flash_values::<16>(out, vp, stride, e, raised, &mut sum),
            _ => flash_values_any(out, vp, stride, e, raised, &mut sum),
        }
        j0 += nj;
    }
    let inv = 1.0f32 / sum;
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// Flash attention over an F32 cache: the scalar recurrence
/// ([`flash_f32_with`](crate::runtime::kernels::reference::flash_f32_with)) compiled with AVX2
/// and FMA, the key dot products by [`ggml_tile`].
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn flash_f32(
    q: &[f32],
    k: &[u8],
    v: &[u8],
    stride: usize,
    positions: usize,
    scale: f32,
    out: &mut [f32],
) {
    let dot = |row: &[u8], q: &[f32], _: &mut [f32]| {
        debug_assert_eq!(row.len(), 4 * q.len());
        // SAFETY: the CPU has AVX2 (this function's contract); `row` holds one row of
        // `q.len()` f32 values.
        let [[s]] = unsafe {
            ggml_tile::<false, 1, 1, false>(row.as_ptr(), row.len(), q.as_ptr(), q.len())
        };
        s
    };
    flash_f32_with(dot, q, k, v, stride, positions, scale, out)
}

/// The value half of a [`flash_f16`] round for a head of `8·NV` values, the accumulator in
/// registers: for each key `j` (row at byte `j·stride` of `v`), if it `raised` the maximum,
/// the accumulator is scaled by `e[j]` and the row added with weight 1, else the row is added
/// with weight `e[j]`; every result is rounded to f16 precision; `sum` follows.
///
/// # Safety
/// Needs AVX2, FMA and F16C; `acc` holds `8·NV` values, `v` the rows of `e.len()` keys.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn flash_values<const NV: usize>(
    acc: &mut [f32],
    v: *const u8,
    stride: usize,
    e: &[f32],
    raised: &[bool],
    sum: &mut f32,
) {
    assert_eq!(acc.len(), 8 * NV);
    let mut a: [__m256; NV] = std::array::from_fn(|i| _mm256_loadu_ps(acc.as_ptr().add(8 * i)));
    let mut s = *sum;
    for (j, (&ej, &up)) in e.iter().zip(raised).enumerate() {
        let (ms, vs) = if up { (ej, 1.0f32) } else { (1.0f32, ej) };
        if up {
            let msv = _mm256_set1_ps(ms);
            for x in a.iter_mut() {
                *x = round_f16_8(_mm256_mul_ps(*x, msv));
            }
        }
        let vsv = _mm256_set1_ps(vs);
        let row = v.add(j * stride);
        for (i, x) in a.iter_mut().enumerate() {
            *x = round_f16_8(_mm256_fmadd_ps(load8::<true>(row.add(16 * i)), vsv, *x));
        }
        s = s.mul_add(ms, vs);
    }
    for (i, x) in a.iter().enumerate() {
        _mm256_storeu_ps(acc.as_mut_ptr().add(8 * i), *x);
    }
    *sum = s;
}

/// [`flash_values`] for any head size, the accumulator in memory.
///
/// # Safety
/// Needs AVX2, FMA and F16C; `v` holds the rows of `e.len()` keys of `acc.len()` values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn flash_values_any(
    acc: &mut [f32],
    v: *const u8,
    stride: usize,
    e: &[f32],
    raised: &[bool],
    sum: &mut f32,
) {
    let hd = acc.len();
    let hv = hd & !7;
    let acc = acc.as_mut_ptr();
    for (j, (&ej, &up)) in e.iter().zip(raised).enumerate() {
        let (ms, vs) = if up { (ej, 1.0f32) } else { (1.0f32, ej) };
        if up {
            let msv = _mm256_set1_ps(ms);
            let mut d = 0;
            while d < hv {
                let a = _mm256_mul_ps(_mm256_loadu_ps(acc.add(d)), msv);
                _mm256_storeu_ps(acc.add(d), round_f16_8(a));
                d += 8;
            }
            for d in hv..hd {
                *acc.add(d) = round_f16_1(*acc.add(d) * ms);
            }
        }
        let vsv = _mm256_set1_ps(vs);
        let row = v.add(j * stride);
        let mut d = 0;
        while d < hv {
            let a = _mm256_fmadd_ps(
                load8::<true>(row.add(2 * d)),
                vsv,
                _mm256_loadu_ps(acc.add(d)),
            );
            _mm256_storeu_ps(acc.add(d), round_f16_8(a));
            d += 8;
        }
        for d in hv..hd {
            *acc.add(d) = round_f16_1(f16_at(row.add(2 * d)).mul_add(vs, *acc.add(d)));
        }
        *sum = sum.mul_add(ms, vs);
    }
}

// ---------------------------------------------------------------------------------------------
// expf
// ---------------------------------------------------------------------------------------------

/// glibc's `expf` (since 2.27; the variant its ifunc picks on CPUs with FMA): `x·32/ln 2`
/// split as `k + r` with a shift constant, `2^(k/32)` from a table of 32 doubles with `k/32`'s
/// integer part added to the exponent bits, `2^(r/32)` from a cubic, all in double, then
/// rounded to f32 once. These are its constants (bit patterns of doubles).
const EXPF_TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// `32/ln 2`.
const EXPF_INV_LN2_N: u64 = 0x40471547652b82fe;
/// `1.5·2^52`: adding it rounds to an integer in the low mantissa bits.
const EXPF_SHIFT: u64 = 0x4338000000000000;
/// The cubic's coefficients of `r³`, `r²` and `r` (scaled for `r` in units of 1/32).
const EXPF_POLY: [u64; 3] = [0x3ebc6af84b912394, 0x3f2ebfce50fac4f3, 0x3f962e42ff0c52d6];
/// `|x|` from here on (85.0, as f32 bits) takes glibc's slow path: ±∞, NaN, overflow and
/// underflow; such lanes are left to the library.
const EXPF_SLOW: i32 = 0x42b0_0000;

/// glibc's `expf` of four values, in double lanes (see [`EXPF_TABLE`]): exactly its result for
/// every `|x| < 85`, provided the library in use is that version.
///
/// # Safety
/// Needs AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn expf4(x: __m128) -> __m128 {
    let inv = _mm256_set1_pd(f64::from_bits(EXPF_INV_LN2_N));
    let shift = _mm256_set1_pd(f64::from_bits(EXPF_SHIFT));
    let xd = _mm256_cvtps_pd(x);
    let z = _mm256_fmadd_pd(inv, xd, shift);
    let ki = _mm256_castpd_si256(z);
    let kd = _mm256_sub_pd(z, shift);
    let r = _mm256_fmsub_pd(inv, xd, kd);
    let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    let t = _mm256_i64gather_epi64::<8>(EXPF_TABLE.as_ptr().cast(), idx);
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    let [c0, c1, c2] = EXPF_POLY.map(|c| _mm256_set1_pd(f64::from_bits(c)));
    let p = _mm256_fmadd_pd(r, c0, c1);
    let r2 = _mm256_mul_pd(r, r);
    let y = _mm256_fmadd_pd(r, c2, _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(p, r2, y);
    _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
}

/// `x[i] = expf(x[i])` for eight values at `x`, bit for bit as the library (see [`expf4`]):
/// `−∞` gives `+0` as glibc does, other lanes with `|x| ≥ 85` call the library.
///
/// # Safety
/// Needs AVX2 and FMA; `x` must point to eight values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn expf8(x: *mut f32) {
    let v = _mm256_loadu_ps(x);
    let bits = _mm256_castps_si256(v);
    let abs = _mm256_and_si256(bits, _mm256_set1_epi32(0x7fff_ffff));
    let slow = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(EXPF_SLOW - 1));
    let lo = expf4(_mm256_castps256_ps128(v));
    let hi = expf4(_mm256_extractf128_ps::<1>(v));
    let e = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(lo), hi);
    let neg_inf = _mm256_cmpeq_epi32(bits, _mm256_set1_epi32(0xff80_0000u32 as i32));
    let e = _mm256_andnot_ps(_mm256_castsi256_ps(neg_inf), e);
    let rest = _mm256_andnot_si256(neg_inf, slow);
    _mm256_storeu_ps(x, e);
    let mask = _mm256_movemask_ps(_mm256_castsi256_ps(rest));
    if mask != 0 {
        let v: [f32; 8] = std::mem::transmute(v);
        for (i, &xi) in v.iter().enumerate() {
            if mask & (1 << i) != 0 {
                *x.add(i) = xi.exp();
            }
        }
    }
}

/// Whether [`expf8`] gives the library's bits here: checked once per process on values spread
/// over `(−85, 85)` and on bit patterns of a pseudo-random walk. Another `expf` (another glibc,
/// another libc, the non-FMA variant) fails the check and the kernels call the library instead.
pub(super) fn vector_expf_matches_library() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let mut probe: Vec<f32> = (0..4096)
            .map(|i| -85.0 + i as f32 * (170.0 / 4096.0))
            .collect();
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        while probe.len() < 8192 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let v = f32::from_bits(s as u32);
            if v.abs() < 85.0 {
                probe.push(v);
            }
        }
        probe.extend([0.0, -0.0, 1e-30, -1e-30, f32::NEG_INFINITY, 84.99, -84.99]);
        probe.truncate(probe.len() / 8 * 8);
        let mut got = probe.clone();
        for c in got.chunks_exact_mut(8) {
            // SAFETY: only reached from kernels of tables that need AVX2 and FMA.
            unsafe { expf8(c.as_mut_ptr()) };
        }
        got.iter()
            .zip(&probe)
            .all(|(g, p)| g.to_bits() == p.exp().to_bits())
    })
}

/// Rotary embedding (see `Kernels::rope`): the scalar code, compiled with FMA so that its fused
/// multiply-adds are instructions rather than calls into the C library (which cost more than
/// the rest of the rotation).
///
/// # Safety
/// Needs FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rope(
    x: &mut [f32],
    table: &[(f32, f32)],
    style: scalar::RopeStyle,
    hd: usize,
) {
    scalar::rope_heads(x, table, style, hd)
}

/// `x[i] = expf(x[i])` (see `Kernels::exp`): eight at a time in double lanes when that gives
/// the library's bits on this machine ([`vector_expf_matches_library`]), else the library.
///
/// # Safety
/// Needs AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn exp(x: &mut [f32]) {
    if !vector_expf_matches_library() {
        x.iter_mut().for_each(|v| *v = v.exp());
        return;
    }
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        expf8(c.as_mut_ptr());
    }
    for v in chunks.into_remainder() {
        *v = v.exp();
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantizers
// ---------------------------------------------------------------------------------------------

/// `round_ties_even(v)`, NaN mapped to 0 (as Rust's `as i32` does), clamped to `[lo, hi]`,
/// as i32 lanes (exact: the values are integral by then).
///
/// # Safety
/// Needs AVX.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn round_clamp(v: __m256, lo: __m256, hi: __m256) -> __m256i {
    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
    let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(r, r));
    _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi))
}

/// Packs 32 i32 lanes (in range) into 32 bytes in order.
///
/// # Safety
/// Needs AVX2; `out` must point to 32 writable bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack_store(v: [__m256i; 4], out: *mut i8) {
    let ab = _mm256_packs_epi32(v[0], v[1]);
    let cd = _mm256_packs_epi32(v[2], v[3]);
    let abcd = _mm256_packs_epi16(ab, cd);
    let fixed = _mm256_permutevar8x32_epi32(abcd, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(out.cast(), fixed);
}

/// Largest |x| of `n8` (multiple of 8) values at `x`, NaN ignored, starting from 0.
///
/// # Safety
/// Needs AVX; `x` must hold `n8` values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn abs_max(x: *const f32, n8: usize) -> f32 {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    let mut i = 0;
    while i < n8 {
        // max(a, b) returns b when a is NaN: NaN inputs are skipped, as the scalar code does.
        m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x.add(i)), abs), m);
        i += 8;
    }
    let mut a = [0.0f32; 8];
    _mm256_storeu_ps(a.as_mut_ptr(), m);
    a.iter()
        .fold(0.0f32, |acc, &v| if v > acc { v } else { acc })
}

/// bitnet.cpp's int8 quantization of one token ([`scalar::quantize_i8s_with`], bit for bit).
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_i8s(x: &[f32], q: &mut [i8], rule: I8Scale) -> (f32, i32) {
    assert_eq!(x.len(), q.len(), "quantize_i8s: lengths");
    let n = x.len();
    let n8 = n & !7;
    let mut max_abs = abs_max(x.as_ptr(), n8);
    for &v in &x[n8..] {
        max_abs = max_abs.max(v.abs());
    }
    let s = rule.scale(max_abs);
    let (lo, hi, sv) = (
        _mm256_set1_ps(-128.0),
        _mm256_set1_ps(127.0),
        _mm256_set1_ps(s),
    );
    let n32 = n & !31;
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i < n32 {
        let v: [__m256i; 4] = std::array::from_fn(|j| {
            round_clamp(
                _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(i + 8 * j)), sv),
                lo,
                hi,
            )
        });
        acc = _mm256_add_epi32(
            acc,
            _mm256_add_epi32(_mm256_add_epi32(v[0], v[1]), _mm256_add_epi32(v[2], v[3])),
        );
        pack_store(v, q.as_mut_ptr().add(i));
        i += 32;
    }
    let mut sum = hsum_i32(acc);
    for (o, &v) in q[n32..].iter_mut().zip(&x[n32..]) {
        let r = (v * s).round_ties_even().clamp(-128.0, 127.0) as i32;
        *o = r as i8;
        sum += r;
    }
    (s, sum)
}

/// Q8_K quantization with the sums per 32 values ([`scalar::quantize_q8k`], bit for bit).
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_q8k(x: &[f32], q: &mut [i8], d: &mut [f32], bsum: &mut [i32]) {
    check_q8k(x.len(), q.len(), d.len(), bsum.len());
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    for (b, db) in d.iter_mut().enumerate() {
        let xb = x.as_ptr().add(b * QK_K);
        let qb = q.as_mut_ptr().add(b * QK_K);
        let amax = abs_max(xb, QK_K);
        if amax == 0.0 {
            std::ptr::write_bytes(qb, 0, QK_K);
            bsum[8 * b..8 * b + 8].fill(0);
            *db = 0.0;
            continue;
        }
        // The value of largest magnitude, the first one on ties.
        let target = _mm256_set1_ps(amax);
        let mut max = 0.0f32;
        for j in 0..QK_K / 8 {
            let v = _mm256_loadu_ps(xb.add(8 * j));
            let hit =
                _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_and_ps(v, abs), target));
            if hit != 0 {
                max = *xb.add(8 * j + hit.trailing_zeros() as usize);
                break;
            }
        }
        let iscale = -127.0f32 / max;
        let isv = _mm256_set1_ps(iscale);
        for g in 0..QK_K / 32 {
            let v: [__m256i; 4] = std::array::from_fn(|j| {
                round_clamp(
                    _mm256_mul_ps(isv, _mm256_loadu_ps(xb.add(32 * g + 8 * j))),
                    lo,
                    hi,
                )
            });
            bsum[8 * b + g] = hsum_i32(_mm256_add_epi32(
                _mm256_add_epi32(v[0], v[1]),
                _mm256_add_epi32(v[2], v[3]),
            ));
            pack_store(v, qb.add(32 * g));
        }
        *db = 1.0 / iscale;
    }
}

/// Q8_0 quantization ([`scalar::quantize_q8_0`], bit for bit).
///
/// # Safety
/// Needs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_q8_0(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    check_q8_0_acts(x.len(), q.len(), d.len());
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    for (b, db) in d.iter_mut().enumerate() {
        let xb = x.as_ptr().add(b * QK8_0);
        let amax = abs_max(xb, QK8_0);
        *db = round_f16_1(amax / 127.0);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let idv = _mm256_set1_ps(id);
        let v: [__m256i; 4] = std::array::from_fn(|j| {
            round_clamp(_mm256_mul_ps(_mm256_loadu_ps(xb.add(8 * j)), idv), lo, hi)
        });
        pack_store(v, q.as_mut_ptr().add(b * QK8_0));
    }
}
