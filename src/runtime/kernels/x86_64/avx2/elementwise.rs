//! The element-wise kernels of the AVX2 table: `expf` (vectorized where it reproduces the C
//! library), RoPE, and the activation quantizers (int8, Q8_K, Q8_0).

#![allow(clippy::needless_range_loop)]

use super::*;

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
pub(in crate::runtime::kernels::x86_64) fn vector_expf_matches_library() -> bool {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn rope(
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
pub(in crate::runtime::kernels::x86_64) unsafe fn exp(x: &mut [f32]) {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn quantize_i8s(
    x: &[f32],
    q: &mut [i8],
    rule: I8Scale,
) -> (f32, i32) {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn quantize_q8k(
    x: &[f32],
    q: &mut [i8],
    d: &mut [f32],
    bsum: &mut [i32],
) {
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
pub(in crate::runtime::kernels::x86_64) unsafe fn quantize_q8_0(
    x: &[f32],
    q: &mut [i8],
    d: &mut [f32],
) {
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
