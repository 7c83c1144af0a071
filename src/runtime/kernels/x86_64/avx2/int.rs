//! The integer matmuls of the AVX2 table: I2_S × int8, TQ2_0 × Q8_K, Q8_0 × Q8_0.

#![allow(clippy::needless_range_loop)]

use super::*;

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
pub(in crate::runtime::kernels::x86_64) const PREFETCH_AHEAD: usize = 2048;

/// A hint to load the line [`PREFETCH_AHEAD`] bytes after `p` (no architectural effect; the
/// address may lie past the end of the weights).
///
/// # Safety
/// None beyond SSE: a prefetch never faults.
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(p: *const u8) {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn i2s_tile<const R: usize, const T: usize>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn i2s_dots(
    w: &[u8],
    k: usize,
    q: &[i8],
    n: usize,
    out: &mut [i32],
) {
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
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn tq2_tile<
    const R: usize,
    const T: usize,
    const S: bool,
    const PF: bool,
>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn tq2_dots<const PF: bool>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn q8_0_tile<const R: usize, const T: usize>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn q8_0_dots(
    w: &[u8],
    k: usize,
    q: &[i8],
    d: &[f32],
    n: usize,
    out: &mut [f32],
) {
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
