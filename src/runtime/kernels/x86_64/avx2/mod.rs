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

mod elementwise;
mod float;
mod int;

pub(super) use elementwise::*;
pub(super) use float::*;
pub(super) use int::*;

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
