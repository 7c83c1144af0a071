//! AVX-512 kernels. Same contract as `avx2`: `unsafe` only for the CPU features.
//!
//! Every kernel here runs on 512-bit vectors. They were first left out because on Zen 4 they
//! were measured at half rate; on Zen 5 (EPYC Turin, AMD family 26, the machine measured
//! since, which earlier notes called Zen 4) `vpdpbusd`, `vfmadd`, `vcvtph2ps` and the logic
//! and add instructions retire as many 512-bit as 256-bit instructions per cycle: twice the
//! elements. (Zen 4 splits a 512-bit instruction in two: the same elements per second.) The
//! scalar orders are kept lane for lane, so the results are the same bits:
//! - I2_S and TQ2_0 (VNNI's `vpdpbusd`, unsigned × signed bytes summed into i32 lanes): two
//!   rows to a vector, one in each 256-bit half, each token's activations broadcast to both.
//!   The I2_S batch tile took half the time of the 256-bit one, the one-token kernel 20–30%
//!   less on weights in cache; TQ2_0 keeps its scalar twin's eight float lanes per row and
//!   block (one half each): one token 29 -> 38 GB/s in cache, batch tile 421 -> 262 µs
//!   (768×768, 128 tokens).
//! - Floats (`float.rs`: F16/F32 in ggml's and in llamafile's order) and Q8_0 for one token
//!   (`q8_0.rs`): ggml's 32 slots are two 512-bit accumulators (slots 0–15 and 16–31) whose
//!   lanes take the scalar slots' positions with the same fused multiply-adds, reduced in the
//!   scalar order; an order defined on eight lanes per row and token (llamafile's, Q8_0's)
//!   puts one row in each half of an accumulator and sums each half as `hsum8`.
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
//! The F16, Q8_0, I2_S and TQ2_0 one-token kernels also ask for the line [`FAR_AHEAD`] (8 KiB)
//! further on in each row at every line they read. Their vector work per line (a conversion and a fused
//! multiply-add per 16 values, or about a dozen instructions per pair of Q8_0 blocks) holds back
//! how far ahead the loads run: from memory, a one-thread F16 product in ggml's order read
//! 47 GiB/s without the hints against 58 GiB/s for a plain read of the same 49 MB, and 56 GiB/s
//! with them (the 125M model's head: 1.08 → 0.81 ms, of which the 512-bit vectors alone gave
//! little). Hints 0.5–2 KiB ahead were slower than none, 4 KiB about the same; 8 KiB cost nothing
//! measurable on F16 matrices in the L3 cache, about 10% on Q8_0 ones (against 30% gained from
//! memory). TQ2_0 (its per-block float step) gained too: the 0.7B model's generation, 1 thread,
//! 99–103 -> 106–112 tokens/s in four alternated pairs of processes, 2 threads +1 to +12% in
//! three; I2_S likewise, 101–114 -> 118–120 at 1 thread and 150–155 -> 158–170 at 2 in three
//! alternated rounds (hints 2 KiB ahead, the AVX2 table's distance, had made no difference).
//! F32 rows (two lines per step) were slower with them and take none.
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

use super::avx2::hsum8;

mod float;
mod q8_0;

pub(super) use float::float_dots;
pub(super) use q8_0::q8_0_dots;

/// How far ahead in a row (bytes) the one-token F16 and Q8_0 kernels ask for the next line
/// (see the module docs).
const FAR_AHEAD: usize = 8192;

/// Walks the `out.len()` rows of a one-token product as two streams (see the module docs):
/// `pair(r, half + r)` gives both rows' results for every `r < half`; an odd last row goes in
/// as both rows of a pair, and the copy is dropped. Every kernel's rows are independent, so
/// the pairing does not change any row's bits.
#[inline(always)]
fn two_streams<V>(out: &mut [V], mut pair: impl FnMut(usize, usize) -> [V; 2]) {
    let rows = out.len();
    let half = rows / 2;
    for r in 0..half {
        [out[r], out[half + r]] = pair(r, half + r);
    }
    if rows % 2 == 1 {
        let [v, _] = pair(rows - 1, rows - 1);
        out[rows - 1] = v;
    }
}

/// Two 32-byte pieces in one vector: `lo`'s in the low half, `hi`'s in the high (two rows'
/// blocks, side by side).
///
/// # Safety
/// Needs AVX-512 F; `lo` and `hi` must point to 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn pair256(lo: *const u8, hi: *const u8) -> __m512i {
    let l = _mm512_castsi256_si512(_mm256_loadu_si256(lo.cast()));
    _mm512_inserti64x4::<1>(l, _mm256_loadu_si256(hi.cast()))
}

/// The 32 bytes at `p` in both halves (a token's activations, for both rows of a pair).
///
/// # Safety
/// Needs AVX-512 F; `p` must point to 32 readable bytes.
#[inline]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn bcast256<P>(p: *const P) -> __m512i {
    _mm512_broadcast_i64x4(_mm256_loadu_si256(p.cast()))
}

/// The sums of the low and of the high eight i32 lanes of `a[0..4]`: `[Σ lo(a_j)]_j` and
/// `[Σ hi(a_j)]_j`, in 13 instructions (eight `hsum_i32` take 56).
///
/// # Safety
/// Needs AVX-512 F.
#[inline]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn hsum_halves4(a: [__m512i; 4]) -> ([i32; 4], [i32; 4]) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then [Σa, Σb, Σc, Σd] of its 4 lanes.
    let ab = _mm512_add_epi32(
        _mm512_unpacklo_epi32(a[0], a[1]),
        _mm512_unpackhi_epi32(a[0], a[1]),
    );
    let cd = _mm512_add_epi32(
        _mm512_unpacklo_epi32(a[2], a[3]),
        _mm512_unpackhi_epi32(a[2], a[3]),
    );
    let s = _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
    // 128-bit lanes 0 + 1 (the low half) and 2 + 3 (the high half).
    let s = _mm512_add_epi32(s, _mm512_shuffle_i32x4::<0b10_11_00_01>(s, s));
    let (mut lo, mut hi) = ([0i32; 4], [0i32; 4]);
    _mm_storeu_si128(lo.as_mut_ptr().cast(), _mm512_castsi512_si128(s));
    _mm_storeu_si128(hi.as_mut_ptr().cast(), _mm512_extracti32x4_epi32::<2>(s));
    (lo, hi)
}

/// `P` pairs of I2_S rows × `T` (1 to 4) int8 tokens with 512-bit `vpdpbusd` (exact i32
/// accumulation): pair `p` is rows `2p` (low half of each vector) and `2p + 1` (high half),
/// and each token's 32 activations of a group are broadcast to both halves, so one
/// instruction does the work of two 256-bit ones, and the insert that pairs the rows is
/// shared by `T` tokens. If `odd`, the tile has `2P − 1` rows: the last pair computes its one
/// row twice (results `[P − 1][1]` are that row's again, to be dropped).
///
/// `i2s_dots` takes 4 pairs × 4 tokens (16 accumulators). Measured on Zen 5 at 768×768 × 128
/// tokens and at the runtime's token blocks for the 0.7B model (1536×1536 × 8, 1536×4096 × 4):
/// 2 pairs × 8 tokens 16–31% slower, 3 × 6 and 4 × 5 4–12%, 3 × 8 and 4 × 8 (registers
/// spilled) 30–58% (all within 3% at 1536×4096 × 4, in tiles of 4 tokens), 5 × 4 the same.
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; `w` must hold `2P` (`2P − 1` if `odd`) rows of `32·nb`
/// bytes `rb` apart, `q` `T` rows of `128·nb` bytes `k` apart.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i2s_tile<const P: usize, const T: usize>(
    w: *const u8,
    rb: usize,
    odd: bool,
    q: *const i8,
    k: usize,
    nb: usize,
) -> [[[i32; T]; 2]; P] {
    let m3 = _mm512_set1_epi8(3);
    let lo: [*const u8; P] = std::array::from_fn(|p| w.add(2 * p * rb));
    let hi: [*const u8; P] = std::array::from_fn(|p| {
        if odd && p == P - 1 {
            lo[p]
        } else {
            lo[p].add(rb)
        }
    });
    let mut acc = [[_mm512_setzero_si512(); T]; P];
    for bb in 0..nb {
        let wv: [__m512i; P] =
            std::array::from_fn(|p| pair256(lo[p].add(32 * bb), hi[p].add(32 * bb)));
        macro_rules! group {
            ($g:expr, $s:expr) => {{
                let qv: [__m512i; T] =
                    std::array::from_fn(|t| bcast256(q.add(t * k + 128 * bb + 32 * $g)));
                for p in 0..P {
                    let c = _mm512_and_si512(_mm512_srli_epi16::<$s>(wv[p]), m3);
                    for t in 0..T {
                        acc[p][t] = _mm512_dpbusd_epi32(acc[p][t], c, qv[t]);
                    }
                }
            }};
        }
        group!(0, 6);
        group!(1, 4);
        group!(2, 2);
        group!(3, 0);
    }
    let mut out = [[[0i32; T]; 2]; P];
    for p in 0..P {
        let four =
            std::array::from_fn(|t| acc[p].get(t).copied().unwrap_or(_mm512_setzero_si512()));
        let (l, h) = hsum_halves4(four);
        out[p] = [std::array::from_fn(|t| l[t]), std::array::from_fn(|t| h[t])];
    }
    out
}

/// The arguments of an I2_S product (see `Kernels::i2s_dots`): `w` rows of `rb` bytes, `n`
/// tokens of `k` activations at `q`, `nb` blocks per row.
#[derive(Clone, Copy)]
struct I2s {
    w: *const u8,
    rb: usize,
    q: *const i8,
    k: usize,
    nb: usize,
    n: usize,
}

/// One tile of [`i2s_tile`] at rows `r..r + rr` (`rr` is `2P` or `2P − 1`) and tokens
/// `t..t + T`, stored at `out[row·n + token]`.
///
/// # Safety
/// As [`i2s_tile`], the rows and tokens inside `a`'s slices and `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i2s_tile_at<const P: usize, const T: usize>(
    a: I2s,
    (r, rr): (usize, usize),
    t: usize,
    out: &mut [i32],
) {
    let w = a.w.add(r * a.rb);
    let res = i2s_tile::<P, T>(w, a.rb, rr % 2 == 1, a.q.add(t * a.k), a.k, a.nb);
    for i in 0..rr {
        out[(r + i) * a.n + t..][..T].copy_from_slice(&res[i / 2][i % 2]);
    }
}

/// [`i2s_tile_at`] with `P = rr.div_ceil(2)` (1 to 4).
///
/// # Safety
/// As [`i2s_tile_at`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i2s_tile_rows<const T: usize>(a: I2s, rows: (usize, usize), t: usize, out: &mut [i32]) {
    match rows.1.div_ceil(2) {
        1 => i2s_tile_at::<1, T>(a, rows, t, out),
        2 => i2s_tile_at::<2, T>(a, rows, t, out),
        3 => i2s_tile_at::<3, T>(a, rows, t, out),
        4 => i2s_tile_at::<4, T>(a, rows, t, out),
        _ => unreachable!("I2_S tile of {} rows", rows.1),
    }
}

/// The sums of the low and of the high eight i32 lanes of `s`.
///
/// # Safety
/// Needs AVX-512 F.
#[inline]
#[target_feature(enable = "avx2,avx512f")]
unsafe fn hsum_halves(s: __m512i) -> [i32; 2] {
    // 128-bit lanes 0 + 1 and 2 + 3, then within each 128-bit lane.
    let s = _mm512_add_epi32(s, _mm512_shuffle_i32x4::<0b10_11_00_01>(s, s));
    let s = _mm512_add_epi32(s, _mm512_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm512_add_epi32(s, _mm512_shuffle_epi32::<0b10_11_00_01>(s));
    [
        _mm_cvtsi128_si32(_mm512_castsi512_si128(s)),
        _mm_cvtsi128_si32(_mm512_extracti32x4_epi32::<2>(s)),
    ]
}

/// Two I2_S rows × one token without shifts: `vpdpbusd` of the masked bytes `w & (3 << s)`
/// (exactly `2^s` times the codes, and `vpdpbusd` does not saturate) into one accumulator
/// per group, each divided back by its power of two (an exact arithmetic shift) at the end.
/// The row at `lo` is in the low half of every vector, the row at `hi` in the high half:
/// two vector instructions per 64 codes, instead of two per 32 on 256-bit vectors (and
/// three with shifts). Blocks alternate between two sets of accumulators, so that eight
/// dependency chains are in flight instead of four.
///
/// Measured and left out (Zen 5): four pairs per call reduced together, no faster; one row
/// per vector with 64-byte loads (two blocks) against a copy of the activations re-ordered
/// to match, 10% faster at 1536×4096 but 6–18% slower at 3072×768; prefetching ahead as
/// `avx2` does, no difference end to end (generation is bound by memory there).
///
/// # Safety
/// Needs AVX-512 F/BW/VL and VNNI; `lo` and `hi` must point to `32·nb` bytes, `q` to `128·nb`;
/// `nb` below 2^14 (so the scaled sums stay within i32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i2s_gemv_masked(lo: *const u8, hi: *const u8, q: *const i8, nb: usize) -> [i32; 2] {
    let masks = [
        _mm512_set1_epi8(0xc0u8 as i8),
        _mm512_set1_epi8(0x30),
        _mm512_set1_epi8(0x0c),
        _mm512_set1_epi8(0x03),
    ];
    let mut acc = [[_mm512_setzero_si512(); 4]; 2];
    macro_rules! block {
        ($set:expr, $bb:expr) => {{
            let bb = $bb;
            let wv = pair256(lo.add(32 * bb), hi.add(32 * bb));
            for g in 0..4 {
                let c = _mm512_and_si512(wv, masks[g]);
                let qv = bcast256(q.add(128 * bb + 32 * g));
                acc[$set][g] = _mm512_dpbusd_epi32(acc[$set][g], c, qv);
            }
        }};
    }
    let mut bb = 0;
    while bb + 2 <= nb {
        _mm_prefetch::<_MM_HINT_T0>(lo.wrapping_add(32 * bb + FAR_AHEAD).cast());
        _mm_prefetch::<_MM_HINT_T0>(hi.wrapping_add(32 * bb + FAR_AHEAD).cast());
        block!(0, bb);
        block!(1, bb + 1);
        bb += 2;
    }
    if bb < nb {
        block!(0, bb);
    }
    let a: [__m512i; 4] = std::array::from_fn(|g| _mm512_add_epi32(acc[0][g], acc[1][g]));
    hsum_halves(_mm512_add_epi32(
        _mm512_add_epi32(_mm512_srai_epi32::<6>(a[0]), _mm512_srai_epi32::<4>(a[1])),
        _mm512_add_epi32(_mm512_srai_epi32::<2>(a[2]), a[3]),
    ))
}

/// I2_S × int8 (see `Kernels::i2s_dots`).
///
/// # Safety
/// Needs AVX2, FMA, F16C, AVX-512 F/BW/VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn i2s_dots(w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
    let rows = check_i2s(w.len(), k, q.len(), n, out.len());
    let (rb, nb) = (k / 4, k / I2S_BLOCK);
    let a = I2s {
        w: w.as_ptr(),
        rb,
        q: q.as_ptr(),
        k,
        nb,
        n,
    };
    if n == 1 && nb < 1 << 14 {
        two_streams(&mut out[..rows], |lo, hi| {
            i2s_gemv_masked(a.w.add(lo * rb), a.w.add(hi * rb), a.q, nb)
        });
        return;
    }
    // Tiles of up to `2·PAIRS` rows × `TOKENS` tokens, smaller at the edges.
    const PAIRS: usize = 4;
    const TOKENS: usize = 4;
    let mut r = 0;
    while r < rows {
        let rr = (2 * PAIRS).min(rows - r);
        let mut t = 0;
        while t < n {
            let tt = TOKENS.min(n - t);
            match tt {
                1 => i2s_tile_rows::<1>(a, (r, rr), t, out),
                2 => i2s_tile_rows::<2>(a, (r, rr), t, out),
                3 => i2s_tile_rows::<3>(a, (r, rr), t, out),
                4 => i2s_tile_rows::<4>(a, (r, rr), t, out),
                _ => unreachable!("I2_S tile of {tt} tokens"),
            }
            t += tt;
        }
        r += rr;
    }
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
            _mm_prefetch::<_MM_HINT_T0>(w0.wrapping_add(off + FAR_AHEAD).cast());
            _mm_prefetch::<_MM_HINT_T0>(w1.wrapping_add(off + FAR_AHEAD).cast());
            let wv = pair256(w0.add(off), w1.add(off));
            for g in 0..4 {
                let qv = bcast256(q.add(blk * QK_K + 128 * half + 32 * g));
                a[g] = _mm512_dpbusd_epi32(a[g], _mm512_and_si512(wv, masks[g]), qv);
            }
        }
        let sum = _mm512_add_epi32(
            _mm512_add_epi32(a[0], _mm512_srai_epi32::<2>(a[1])),
            _mm512_add_epi32(_mm512_srai_epi32::<4>(a[2]), _mm512_srai_epi32::<6>(a[3])),
        );
        let lanes = _mm512_sub_epi32(sum, bcast256(bsum.add(8 * blk)));
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

/// TQ2_0 × one Q8_K token over `out.len()` rows as [`two_streams`] of [`tq2_gemv_pair`].
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
    two_streams(out, |lo, hi| {
        tq2_gemv_pair::<S>(w.add(lo * rb), w.add(hi * rb), q, d, bsum, nb, h)
    });
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
            let bs = bcast256(bsum.add(t * (k / 32) + 8 * blk));
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
                    *v = bcast256(q.add(t * k + blk * QK_K + 128 * half + 32 * g));
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
        // One token: masked `vpdpbusd` on pairs of rows in two streams (the batch tile, with
        // shifts instead of masks, is slower for one token).
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
