//! The float kernels of the AVX2 table: F16/F32 weights × f32 activations, and attention
//! (weighted sums of value rows, flash attention over an F16 or F32 cache).

#![allow(clippy::needless_range_loop)]

use super::*;

// ---------------------------------------------------------------------------------------------
// Float weights (F16 or F32) × f32 activations
// ---------------------------------------------------------------------------------------------

/// Eight elements at `p` widened to f32 (`H`: f16, else f32).
///
/// # Safety
/// Needs AVX and F16C; `p` must point to 8 readable elements.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::runtime::kernels::x86_64) unsafe fn load8<const H: bool>(p: *const u8) -> __m256 {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn load1<const H: bool>(p: *const u8) -> f32 {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn ggml_tile<
    const H: bool,
    const R: usize,
    const T: usize,
    const PF: bool,
>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn lanes8_tile<
    const H: bool,
    const R: usize,
    const T: usize,
>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn float_dots<const H: bool>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn weighted_slots<const H: bool, const S: usize>(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn weighted<const H: bool>(
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
pub(super) unsafe fn round_f16_1(v: f32) -> f32 {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn flash_f16(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn flash_f32(
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
