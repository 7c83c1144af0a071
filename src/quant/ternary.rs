//! Absmean ternarization of a weight matrix, exactly as bitnet.cpp's converter computes it.
//!
//! FORMATS.md §2.2: with `m` the float32 absmean of the whole tensor
//! ([`super::absmean`]), every step in float32 with round-to-nearest-even:
//!
//! ```text
//! m  = max(m, 1e-5)                      (1e-5 as float32)
//! s  = 1 / m
//! T  = clamp(round_half_even(x · s), −1, 1)
//! Wq = T / s                             then cast to the output dtype (see below)
//! ```
//!
//! So every nonzero `Wq` is `±fl32(1 / s)` after the dtype cast; that magnitude is the
//! [`Ternarized::scale`], and it is also what I2_S and TL1/TL2 store as the tensor's scale
//! (their quantizers recover it as `max |Wq|` / the first nonzero `|Wq|`).
//!
//! Two details matter for byte-identical F32 output:
//!
//! * **Negative zero.** `round` keeps the sign, so a negative `x` with `|x·s| ≤ 0.5` gives
//!   `T = −0.0` and `Wq = −0.0` (bits `0x8000_0000`); the reference F32 files contain these.
//!   A ternary code alone (`−1, 0, +1`) cannot carry that sign: write F32/F16 values with
//!   [`Ternarized::value`] / [`fake_quant_into`], which look at `x`, not with
//!   [`fake_quant_value`].
//! * **Output dtype.** The converter casts `Wq` back to the dtype the tensor had when it
//!   reached the quantizer: an fp16 checkpoint gives fp16-rounded values (the scale is the
//!   fp16 rounding of `fl32(1/s)`), an fp32 one float32. bf16 checkpoints are cast to float32
//!   *before* quantization in both reference paths (`BitnetModel` and the bf16 preprocess
//!   helper), so their values stay float32 and are **not** rounded to bf16; see
//!   [`output_dtype`].
//!
//! Rounding is done without `round_ties_even`: for `y = x·s`, `clamp(round_half_even(y), −1, 1)`
//! is `+1` exactly when `y > 0.5`, `−1` exactly when `y < −0.5`, and `±0` otherwise (the tie
//! `0.5` rounds to the even `0`; `1.5` rounds to `2`, which clamps to `1`). The comparison form
//! vectorizes on every x86-64 level. A NaN `x` gives code 0; callers reject non-finite tensors
//! first with [`find_non_finite_src`] / [`find_non_finite`].

use std::fmt;

use rayon::prelude::*;

use super::absmean::{absmean_src, AbsmeanMode};
use super::dtype::{from_f32_round, SrcDtype};

/// The lower clamp applied to the absmean before taking its reciprocal (`1e-5` as float32).
pub const ABSMEAN_FLOOR: f32 = 1e-5;

/// The dtype the converter casts fake-quantized values to, for a tensor stored as `src`.
///
/// `F32 → F32`, `F16 → F16`, and `BF16 → F32` (bf16 weights are widened to float32 before
/// quantization in the reference, so the cast back is a no-op).
pub const fn output_dtype(src: SrcDtype) -> SrcDtype {
    match src {
        SrcDtype::F32 | SrcDtype::BF16 => SrcDtype::F32,
        SrcDtype::F16 => SrcDtype::F16,
    }
}

/// `s = fl32(1 / max(absmean, 1e-5))`, the multiplier applied to `x` before rounding.
///
/// A NaN `absmean` gives `1e5` (the clamp ignores NaN); reject non-finite tensors before.
pub fn inv_scale(absmean: f32) -> f32 {
    1.0 / absmean.max(ABSMEAN_FLOOR)
}

/// The stored magnitude of every nonzero fake-quantized value of a tensor stored as `dtype`:
/// `fl32(1 / s)` cast to [`output_dtype`]`(dtype)` and back.
///
/// This is the value an F32 GGUF holds (as `±scale`), and the I2_S / TL scale.
pub fn scale_for(absmean: f32, dtype: SrcDtype) -> f32 {
    from_f32_round(output_dtype(dtype), 1.0 / inv_scale(absmean))
}

/// The ternary code of `x` for multiplier `s` ([`inv_scale`]): `clamp(round_half_even(x·s),
/// −1, 1)` as `i8` (a negative zero becomes `0`).
#[inline(always)]
pub fn code_of(x: f32, s: f32) -> i8 {
    let y = x * s;
    i8::from(y > 0.5) - i8::from(y < -0.5)
}

/// Writes the ternary code (`−1, 0, +1`) of every `src[i]` into `out_codes[i]`.
///
/// `absmean` is the whole tensor's value from [`super::absmean`] (before the clamp); callers
/// may split a tensor into row chunks and call this on each chunk, in parallel.
///
/// # Panics
/// If the slices differ in length.
pub fn ternarize_into(src: &[f32], absmean: f32, out_codes: &mut [i8]) {
    assert_eq!(
        src.len(),
        out_codes.len(),
        "ternarize_into: length mismatch"
    );
    let s = inv_scale(absmean);
    for (o, &x) in out_codes.iter_mut().zip(src) {
        *o = code_of(x, s);
    }
}

/// The fake-quantized value of a code: `code · scale` (so `+0.0` for code 0).
///
/// The reference writes `−0.0` where a negative input rounded to zero; this function cannot
/// know that. Use [`Ternarized::value`] or [`fake_quant_into`] when the sign of zero matters
/// (F32/F16 output).
#[inline]
pub fn fake_quant_value(code: i8, scale: f32) -> f32 {
    match code {
        0 => 0.0,
        c if c > 0 => scale,
        _ => -scale,
    }
}

/// Writes the fake-quantized value of every `src[i]` (as the reference stores it, `−0.0`
/// included) into `out[i]`, for a tensor stored as `dtype` with the given absmean.
///
/// # Panics
/// If the slices differ in length.
pub fn fake_quant_into(src: &[f32], absmean: f32, dtype: SrcDtype, out: &mut [f32]) {
    Ternarized::new(absmean, dtype).values_into(src, out);
}

/// Everything needed to ternarize one tensor: its absmean and the derived multiplier and scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ternarized {
    /// The stored magnitude of the nonzero fake-quantized values ([`scale_for`]): what an
    /// F32 GGUF holds as `±scale` and what I2_S / TL1 / TL2 store as the tensor scale.
    pub scale: f32,
    /// The multiplier `s = fl32(1 / max(absmean, 1e-5))` applied before rounding.
    pub inv_scale: f32,
    /// The tensor's float32 absmean before the `1e-5` clamp.
    pub absmean: f32,
    /// The dtype the fake-quantized values were cast to ([`output_dtype`] of the source).
    pub out_dtype: SrcDtype,
}

impl Ternarized {
    /// Derives multiplier and scale from a tensor's absmean and its source dtype.
    pub fn new(absmean: f32, src_dtype: SrcDtype) -> Self {
        Ternarized {
            scale: scale_for(absmean, src_dtype),
            inv_scale: inv_scale(absmean),
            absmean,
            out_dtype: output_dtype(src_dtype),
        }
    }

    /// Checks a source tensor for non-finite values, computes its absmean with `mode` (bounded
    /// memory, see [`absmean_src`]) and derives multiplier and scale.
    ///
    /// # Errors
    /// [`NonFinite`] naming the first NaN or infinity in row-major order.
    ///
    /// # Panics
    /// If `bytes.len()` is not a multiple of `dtype.size()`.
    pub fn from_src(dtype: SrcDtype, bytes: &[u8], mode: AbsmeanMode) -> Result<Self, NonFinite> {
        if let Some(index) = find_non_finite_src(dtype, bytes) {
            let mut v = [0.0f32];
            let size = dtype.size();
            super::dtype::to_f32_into(dtype, &bytes[index * size..(index + 1) * size], &mut v);
            return Err(NonFinite { index, value: v[0] });
        }
        Ok(Ternarized::new(absmean_src(dtype, bytes, mode), dtype))
    }

    /// The ternary code of `x` ([`code_of`]).
    #[inline(always)]
    pub fn code(&self, x: f32) -> i8 {
        code_of(x, self.inv_scale)
    }

    /// The fake-quantized value of `x` as the reference stores it: `±scale` for codes `±1`,
    /// and a zero with the sign of `x` for code 0.
    #[inline(always)]
    pub fn value(&self, x: f32) -> f32 {
        let y = x * self.inv_scale;
        let mag = if y.abs() > 0.5 { self.scale } else { 0.0 };
        mag.copysign(x)
    }

    /// [`ternarize_into`] with this tensor's multiplier.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn codes_into(&self, src: &[f32], out_codes: &mut [i8]) {
        assert_eq!(src.len(), out_codes.len(), "codes_into: length mismatch");
        let s = self.inv_scale;
        for (o, &x) in out_codes.iter_mut().zip(src) {
            *o = code_of(x, s);
        }
    }

    /// Writes [`Ternarized::value`] of every `src[i]` into `out[i]`.
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn values_into(&self, src: &[f32], out: &mut [f32]) {
        assert_eq!(src.len(), out.len(), "values_into: length mismatch");
        for (o, &x) in out.iter_mut().zip(src) {
            *o = self.value(x);
        }
    }
}

/// A NaN or infinity found in a tensor that is about to be ternarized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFinite {
    /// Row-major index of the first non-finite value.
    pub index: usize,
    /// That value (NaN or ±infinity).
    pub value: f32,
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "non-finite value {} at flat index {}",
            self.value, self.index
        )
    }
}

impl std::error::Error for NonFinite {}

/// Values per parallel task of the non-finite scans.
const SCAN_BLOCK: usize = 1 << 16;

/// Row-major index of the first NaN or infinity in `values`, if any.
pub fn find_non_finite(values: &[f32]) -> Option<usize> {
    values
        .par_chunks(SCAN_BLOCK)
        .enumerate()
        .find_map_first(|(ci, chunk)| {
            // Branch-free "any" first (vectorizes), the exact position only on a hit.
            let any = chunk.iter().fold(false, |a, x| a | !x.is_finite());
            if any {
                chunk
                    .iter()
                    .position(|x| !x.is_finite())
                    .map(|i| ci * SCAN_BLOCK + i)
            } else {
                None
            }
        })
}

/// Row-major index of the first NaN or infinity in a tensor of little-endian `dtype` bytes
/// (unaligned is fine), if any. Looks at exponent bits only; no conversion.
///
/// # Panics
/// If `bytes.len()` is not a multiple of `dtype.size()`.
pub fn find_non_finite_src(dtype: SrcDtype, bytes: &[u8]) -> Option<usize> {
    let size = dtype.size();
    assert_eq!(
        bytes.len() % size,
        0,
        "find_non_finite_src: {} bytes is not a whole number of {dtype} values",
        bytes.len()
    );
    bytes
        .par_chunks(SCAN_BLOCK * size)
        .enumerate()
        .find_map_first(|(ci, chunk)| first_special(dtype, chunk).map(|i| ci * SCAN_BLOCK + i))
}

/// Index of the first value of `chunk` whose exponent field is all ones.
fn first_special(dtype: SrcDtype, chunk: &[u8]) -> Option<usize> {
    fn scan<const N: usize>(chunk: &[u8], special: impl Fn([u8; N]) -> bool) -> Option<usize> {
        let arr = |b: &[u8]| -> [u8; N] { b.try_into().expect("chunks_exact") };
        let any = chunk
            .chunks_exact(N)
            .fold(false, |a, b| a | special(arr(b)));
        if any {
            chunk.chunks_exact(N).position(|b| special(arr(b)))
        } else {
            None
        }
    }
    match dtype {
        SrcDtype::F32 => scan::<4>(chunk, |b| {
            u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000
        }),
        SrcDtype::F16 => scan::<2>(chunk, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
        SrcDtype::BF16 => scan::<2>(chunk, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The formula of FORMATS.md §2.2 written with `round_ties_even` and `clamp`, as torch does.
    fn reference_value(x: f32, absmean: f32, dtype: SrcDtype) -> (i8, f32) {
        let m = absmean.max(1e-5);
        let s = 1.0 / m;
        let t = (x * s).round_ties_even().clamp(-1.0, 1.0);
        let wq = t / s;
        (t as i8, from_f32_round(output_dtype(dtype), wq))
    }

    #[test]
    fn ties_and_clamp() {
        // absmean 1 → s = 1.
        let cases = [
            (0.5f32, 0i8),
            (-0.5, 0),
            (0.500_000_06, 1),
            (-0.500_000_06, -1),
            (1.5, 1),
            (2.5, 1),
            (-7.0, -1),
            (0.0, 0),
            (-0.0, 0),
            (f32::MAX, 1),
            (f32::NAN, 0),
        ];
        for (x, want) in cases {
            assert_eq!(code_of(x, inv_scale(1.0)), want, "{x}");
        }
        let t = Ternarized::new(1.0, SrcDtype::F32);
        assert_eq!(t.value(-0.25).to_bits(), 0x8000_0000);
        assert_eq!(t.value(0.25).to_bits(), 0);
        assert_eq!(t.value(-0.0).to_bits(), 0x8000_0000);
        assert_eq!(t.value(-0.75), -1.0);
        assert_eq!(fake_quant_value(-1, 0.25), -0.25);
        assert_eq!(fake_quant_value(0, 0.25).to_bits(), 0);
    }

    #[test]
    fn floor_and_dtypes() {
        assert_eq!(inv_scale(0.0), 1.0 / 1e-5f32);
        assert_eq!(scale_for(0.0, SrcDtype::F32), 1.0 / (1.0 / 1e-5f32));
        // fp16: the scale is rounded to binary16 (here to a subnormal).
        let s16 = scale_for(0.0, SrcDtype::F16);
        assert_eq!(s16, half::f16::from_f32(1.0 / (1.0 / 1e-5f32)).to_f32());
        // bf16 sources stay float32.
        assert_eq!(
            scale_for(0.1, SrcDtype::BF16),
            scale_for(0.1, SrcDtype::F32)
        );
        assert_eq!(output_dtype(SrcDtype::BF16), SrcDtype::F32);
    }

    proptest! {
        #[test]
        fn matches_torch_formula(
            xs in prop::collection::vec(-1.0f32..1.0, 1..200),
            absmean in prop_oneof![0.0f32..1.0, 0.0f32..1e-4, Just(0.0f32)],
            f16 in any::<bool>(),
        ) {
            let dtype = if f16 { SrcDtype::F16 } else { SrcDtype::F32 };
            let t = Ternarized::new(absmean, dtype);
            let mut codes = vec![0i8; xs.len()];
            ternarize_into(&xs, absmean, &mut codes);
            let mut vals = vec![0f32; xs.len()];
            fake_quant_into(&xs, absmean, dtype, &mut vals);
            for (i, &x) in xs.iter().enumerate() {
                let (c, v) = reference_value(x, absmean, dtype);
                prop_assert_eq!(codes[i], c);
                prop_assert_eq!(t.code(x), c);
                prop_assert_eq!(vals[i].to_bits(), v.to_bits(), "x = {}", x);
                if c != 0 {
                    prop_assert_eq!(fake_quant_value(c, t.scale).to_bits(), v.to_bits());
                }
            }
        }

        #[test]
        fn codes_at_the_rounding_edges(absmean in 1e-6f32..10.0, k in -3i32..=3) {
            // Values right at and around ±0.5/s and ±1.5/s.
            let s = inv_scale(absmean);
            let base = (k as f32 * 0.5) / s;
            for x in [base, f32::from_bits(base.to_bits() + 1), f32::from_bits(base.to_bits().saturating_sub(1))] {
                prop_assert_eq!(code_of(x, s), reference_value(x, absmean, SrcDtype::F32).0);
            }
        }
    }

    #[test]
    fn non_finite_scans() {
        let mut v = vec![0.5f32; 200_000];
        assert_eq!(find_non_finite(&v), None);
        v[150_001] = f32::NEG_INFINITY;
        v[190_000] = f32::NAN;
        assert_eq!(find_non_finite(&v), Some(150_001));
        for dtype in [SrcDtype::F32, SrcDtype::F16, SrcDtype::BF16] {
            let mut bytes = vec![0u8; 1];
            for &x in &v {
                match dtype {
                    SrcDtype::F32 => bytes.extend_from_slice(&x.to_le_bytes()),
                    SrcDtype::F16 => {
                        bytes.extend_from_slice(&half::f16::from_f32(x).to_bits().to_le_bytes())
                    }
                    SrcDtype::BF16 => {
                        bytes.extend_from_slice(&half::bf16::from_f32(x).to_bits().to_le_bytes())
                    }
                }
            }
            let b = &bytes[1..];
            assert_eq!(find_non_finite_src(dtype, b), Some(150_001), "{dtype}");
            let err = Ternarized::from_src(dtype, b, AbsmeanMode::Exact).unwrap_err();
            assert_eq!(err.index, 150_001);
            assert_eq!(err.value, f32::NEG_INFINITY);
            assert!(err.to_string().contains("150001"));
            let clean = &b[..150_000 * dtype.size()];
            assert_eq!(find_non_finite_src(dtype, clean), None);
            let t = Ternarized::from_src(dtype, clean, AbsmeanMode::Exact).unwrap();
            assert_eq!(t.absmean, 0.5);
        }
        // f16: 65504 is finite, 65520 rounds to infinity in the source.
        assert_eq!(
            find_non_finite_src(SrcDtype::F16, &half::f16::MAX.to_bits().to_le_bytes()),
            None
        );
    }
}
