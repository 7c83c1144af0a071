//! Scalar numeric kernels of the reference runtime, each written to reproduce one piece of the
//! arithmetic of the ggml CPU backend in bitnet.cpp and in mainline llama.cpp (x86 builds with
//! AVX2, FMA and F16C) in portable Rust, down to the order of floating-point operations.
//!
//! * Ternary × int8 (I2_S, TL1, TL2): per-token absmax activation quantization to int8, an exact
//!   integer dot product with the 2-bit codes, and the float epilogue of FORMATS.md §4.
//! * Ternary × Q8_K (TQ1_0, TQ2_0): mainline ggml's per-256-block activation quantization and
//!   its AVX2 dot product (eight int32 lanes per block, scaled and summed per lane).
//! * Q8_0 × Q8_0: eight int32 lanes per block, scaled and fused-multiply-added per lane.
//! * F16 and F32 weights: the two float orders ggml uses, its `vec_dot` kernels (32 slots,
//!   [`dot_f32_ggml`]) and llamafile's `tinyBLAS` (8 lanes, [`dot_f32_lanes8`]); the caller
//!   picks one as the reference runtime would.
//! * RMSNorm, RoPE, softmax and the FFN activations as ggml computes them.
//!
//! Every reduction runs in a fixed order that depends only on the data, never on the number of
//! threads. `f32::mul_add` is a true fused multiply-add on every platform, so the FMA-based
//! reductions give the same bits with or without hardware FMA (hardware FMA is only faster).
//!
//! These are the scalar twins: portable code compiled once, for the baseline target, which the
//! reference table ([`super::Kernels::reference`]) runs and every SIMD kernel is tested against.
//! Faster builds of them exist only as entries of the SIMD tables.

use half::f16;

use super::Kernels;

use crate::runtime::format::{I2S_BLOCK, Q8_0_BLOCK_BYTES, QK8_0, QK_K, TQ2_BLOCK_BYTES};

// ---------------------------------------------------------------------------------------------
// int8 activations for I2_S (bitnet.cpp `quantize_row_i8_s`)
// ---------------------------------------------------------------------------------------------

/// How the per-token int8 activation scale `127 / max|x|` is evaluated. The two ways give the
/// same value in about three rows out of four and differ by one ulp otherwise, which moves the
/// rounding of an activation that lies exactly (or within an ulp of) half-way between two
/// integers; each such activation changes every later logit of a small model by about 1e-4 in
/// row cosine, so validation at that precision must evaluate the scale as the reference did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum I8Scale {
    /// bitnet.cpp (`quantize_row_i8_s`): `amax = max(1e-5, max|x|)` in f64, then
    /// `s = (float)(127/amax)`, one correctly rounded division.
    #[default]
    Divide,
    /// Hugging Face transformers (`ActQuant`, `BitLinear.activation_quant` on float32): the
    /// scale is `127 / amax` with `amax` a float32 tensor clamped to `1e-5`, and torch evaluates
    /// a number divided by a tensor as `reciprocal(amax) · 127`: two float32 roundings.
    Reciprocal,
}

impl I8Scale {
    /// The scale for a row whose largest magnitude is `max_abs` (`max|x|`, before the 1e-5
    /// floor).
    #[inline]
    pub fn scale(self, max_abs: f32) -> f32 {
        match self {
            I8Scale::Divide => (127.0 / (max_abs as f64).max(1e-5)) as f32,
            I8Scale::Reciprocal => (1.0f32 / max_abs.max(1e-5f32)) * 127.0,
        }
    }
}

/// Quantizes one token's activations to int8 the way bitnet.cpp does before an I2_S matmul:
/// `amax = max(1e-5, max|x|)` in f64, `s = (float)(127/amax)`, `q = clamp(rne(x·s), −128, 127)`
/// with `x·s` an f32 product rounded half to even. Returns `(s, Σq)`.
pub fn quantize_i8s(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    quantize_i8s_with(x, q, I8Scale::Divide)
}

/// [`quantize_i8s`] with the scale evaluated as `rule` says.
pub fn quantize_i8s_with(x: &[f32], q: &mut [i8], rule: I8Scale) -> (f32, i32) {
    debug_assert_eq!(x.len(), q.len());
    let mut max_abs = 0.0f32;
    for &v in x {
        max_abs = max_abs.max(v.abs());
    }
    let s = rule.scale(max_abs);
    let mut sum = 0i32;
    for (o, &v) in q.iter_mut().zip(x) {
        let r = (v * s).round_ties_even().clamp(-128.0, 127.0) as i32;
        *o = r as i8;
        sum += r;
    }
    (s, sum)
}

/// Integer dot product of one row of canonical I2_S codes (`K/4` bytes, `K % 128 == 0`)
/// with int8 activations: `Σ c·q` over the raw codes `c ∈ {0, 1, 2}` (code = ternary value
/// + 1), as the reference kernel computes it before subtracting `Σq`.
pub fn dot_i2s_codes(row: &[u8], q: &[i8]) -> i32 {
    debug_assert_eq!(row.len() * 4, q.len());
    // One i32 lane per byte position of a block (|lane| ≤ 1024 per block).
    let mut lanes = [0i32; 32];
    for (blk, qb) in row.chunks_exact(32).zip(q.chunks_exact(I2S_BLOCK)) {
        let (q0, rest) = qb.split_at(32);
        let (q1, rest) = rest.split_at(32);
        let (q2, q3) = rest.split_at(32);
        for g in 0..32 {
            let b = blk[g] as i32;
            lanes[g] += ((b >> 6) & 3) * q0[g] as i32
                + ((b >> 4) & 3) * q1[g] as i32
                + ((b >> 2) & 3) * q2[g] as i32
                + (b & 3) * q3[g] as i32;
        }
    }
    lanes.iter().sum()
}

/// The I2_S epilogue of bitnet.cpp's original kernel, evaluated left to right in f32:
/// `((float)dot − (float)Σq) / s · ws`.
#[inline]
pub fn i2s_epilogue(dot: i32, qsum: i32, act_scale: f32, weight_scale: f32) -> f32 {
    ((dot as f32) - (qsum as f32)) / act_scale * weight_scale
}

// ---------------------------------------------------------------------------------------------
// Q8_K activations and the TQ2_0 dot product (mainline ggml)
// ---------------------------------------------------------------------------------------------

/// Quantizes activations to Q8_K (`quantize_row_q8_K_ref`): per 256-value block, `max` is the
/// value of largest magnitude (first one on ties), `iscale = −127/max`,
/// `q = min(127, rne(iscale·x))`, `d = 1/iscale`; an all-zero block has `d = 0`, `q = 0`.
/// `x.len()` must be a multiple of 256; `d` receives one scale per block.
pub fn quantize_q8k(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    debug_assert_eq!(x.len(), q.len());
    debug_assert_eq!(x.len() / QK_K, d.len());
    for ((xb, qb), db) in x
        .chunks_exact(QK_K)
        .zip(q.chunks_exact_mut(QK_K))
        .zip(d.iter_mut())
    {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            let a = v.abs();
            if a > amax {
                amax = a;
                max = v;
            }
        }
        if amax == 0.0 {
            qb.fill(0);
            *db = 0.0;
            continue;
        }
        let iscale = -127.0f32 / max;
        for (o, &v) in qb.iter_mut().zip(xb) {
            let r = (iscale * v).round_ties_even() as i32;
            *o = r.min(127) as i8;
        }
        *db = 1.0 / iscale;
    }
}

/// Dot product of one TQ2_0 row (`K/256` blocks of 66 bytes) with Q8_K activations, in the
/// order of mainline ggml's AVX2 kernel: per block, eight int32 lane sums (lane `L` holds the
/// code·q products of values `128h + 32n + 4L .. +4` for `h < 2`, `n < 4`, minus `Σq` over
/// values `32L .. 32L+32`), each converted to f32, multiplied by `d_y·d_x` and added to its
/// lane; finally the eight lanes are summed as `hsum_float_8` does.
pub fn dot_tq2_q8k(row: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for ((blk, qb), &dy) in row
        .chunks_exact(TQ2_BLOCK_BYTES)
        .zip(q.chunks_exact(QK_K))
        .zip(d)
    {
        let dx = f16::from_le_bytes([blk[64], blk[65]]).to_f32();
        let scale = dy * dx;
        let mut lanes = [0i32; 8];
        for h in 0..2 {
            for m in 0..32 {
                let b = blk[32 * h + m] as i32;
                let lane = m / 4;
                for n in 0..4 {
                    let c = (b >> (2 * n)) & 3;
                    lanes[lane] += c * qb[128 * h + 32 * n + m] as i32;
                }
            }
        }
        for (lane, l) in lanes.iter_mut().enumerate() {
            let qsum: i32 = qb[32 * lane..32 * lane + 32]
                .iter()
                .map(|&v| v as i32)
                .sum();
            *l -= qsum;
        }
        for (a, &l) in acc.iter_mut().zip(&lanes) {
            *a += (l as f32) * scale;
        }
    }
    hsum8(&acc)
}

// ---------------------------------------------------------------------------------------------
// Q8_0
// ---------------------------------------------------------------------------------------------

/// Quantizes activations to Q8_0 blocks as ggml's AVX2 `quantize_row_q8_0` does:
/// `d = amax/127` (stored as f16), `id = 127/amax` (0 for an all-zero block),
/// `q = rne(x·id)`. Writes one f16 scale (widened) per 32 values into `d`.
pub fn quantize_q8_0(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), db) in x
        .chunks_exact(QK8_0)
        .zip(q.chunks_exact_mut(QK8_0))
        .zip(d.iter_mut())
    {
        let amax = xb.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        let dd = amax / 127.0;
        *db = f16::from_f32(dd).to_f32();
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        for (o, &v) in qb.iter_mut().zip(xb) {
            *o = (v * id).round_ties_even() as i32 as i8;
        }
    }
}

/// Dot product of one Q8_0 row with Q8_0 activations: per block eight int32 lanes of four
/// consecutive products, converted to f32 and fused-multiply-added with `d_x·d_y` into eight
/// f32 lanes; then [`hsum8`].
pub fn dot_q8_0(row: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for ((blk, qb), &dy) in row
        .chunks_exact(Q8_0_BLOCK_BYTES)
        .zip(q.chunks_exact(QK8_0))
        .zip(d)
    {
        let dx = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        let scale = dx * dy;
        for (lane, a) in acc.iter_mut().enumerate() {
            let mut s = 0i32;
            for e in 0..4 {
                let i = 4 * lane + e;
                s += (blk[2 + i] as i8 as i32) * (qb[i] as i32);
            }
            *a = scale.mul_add(s as f32, *a);
        }
    }
    hsum8(&acc)
}

// ---------------------------------------------------------------------------------------------
// Float dot products
// ---------------------------------------------------------------------------------------------

/// Horizontal sum of eight f32 lanes in the order of ggml's `hsum_float_8` (and llamafile's
/// `hsum`): `t[j] = a[j] + a[j+4]`, then `(t0 + t2) + (t1 + t3)`.
#[inline]
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let t0 = a[4] + a[0];
    let t1 = a[5] + a[1];
    let t2 = a[6] + a[2];
    let t3 = a[7] + a[3];
    (t0 + t2) + (t1 + t3)
}

/// Float dot product in the order of llamafile's `tinyBLAS` for `K % 8 == 0`: lane `j`
/// accumulates the products of positions `≡ j (mod 8)` with fused multiply-adds, then
/// [`hsum8`]. For other `K` the tail positions are fused into their lanes too (tinyBLAS would
/// not run; this keeps the function total).
pub fn dot_f32_lanes8(w: &[f32], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut acc = [0.0f32; 8];
    let mut wc = w.chunks_exact(8);
    let mut xc = x.chunks_exact(8);
    for (a8, b8) in (&mut wc).zip(&mut xc) {
        for j in 0..8 {
            acc[j] = a8[j].mul_add(b8[j], acc[j]);
        }
    }
    for (j, (&a, &b)) in wc.remainder().iter().zip(xc.remainder()).enumerate() {
        acc[j] = a.mul_add(b, acc[j]);
    }
    hsum8(&acc)
}

/// Float dot product in the order of ggml's AVX2 `ggml_vec_dot_f32` / `ggml_vec_dot_f16`
/// (after both operands are widened to f32): four accumulators of eight lanes take positions
/// `32i + 8j + l` with fused multiply-adds; they are reduced as `(a0 + a2) + (a1 + a3)`, the
/// two 128-bit halves added, then the four values summed pairwise `(t0 + t1) + (t2 + t3)`;
/// the `n mod 32` tail products are added one by one in f64.
pub fn dot_f32_ggml(x: &[f32], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let np = x.len() & !31;
    let mut s = [[0.0f32; 8]; 4];
    for (xc, yc) in x[..np].chunks_exact(32).zip(y[..np].chunks_exact(32)) {
        for (j, sj) in s.iter_mut().enumerate() {
            for (l, a) in sj.iter_mut().enumerate() {
                *a = xc[8 * j + l].mul_add(yc[8 * j + l], *a);
            }
        }
    }
    let mut sum = reduce32(s.as_flattened().try_into().expect("32 slots")) as f64;
    for (a, b) in x[np..].iter().zip(&y[np..]) {
        sum += (a * b) as f64;
    }
    sum as f32
}

/// The reduction of [`dot_f32_ggml`]'s 32 slots (slot `8j + l` = accumulator `j`, lane `l`):
/// `(a0 + a2) + (a1 + a3)` lane-wise, the two 4-lane halves added, then `(t0 + t1) + (t2 + t3)`.
#[inline]
pub fn reduce32(s: &[f32; 32]) -> f32 {
    let v: [f32; 8] = std::array::from_fn(|l| (s[l] + s[16 + l]) + (s[8 + l] + s[24 + l]));
    let t: [f32; 4] = std::array::from_fn(|j| v[j] + v[j + 4]);
    (t[0] + t[1]) + (t[2] + t[3])
}

/// How RMSNorm's `mean(x²)` is computed (the rest of the norm is the same everywhere:
/// `scale = 1/sqrtf(mean + eps)`, `y = (x·scale)·w`, all f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NormMean {
    /// ggml: each square rounded to f32, summed in f64 in order, `mean = (float)(Σ/n)`.
    #[default]
    Ggml,
    /// torch (transformers' RMSNorm: `x.float().pow(2).mean(-1)`): the squares rounded to f32
    /// and averaged by torch's float32 `mean` ([`crate::quant::absmean::torch_mean_one_chunk`]).
    /// The two means differ by an ulp in some rows, which moves the scale by an ulp there.
    Torch,
}

/// RMSNorm as ggml computes it: `Σ x²` with each square rounded to f32 and summed in f64,
/// `mean = (float)(Σ/n)`, `scale = 1/sqrtf(mean + eps)`, `y = (x·scale)·w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, y: &mut [f32]) {
    let scale = rms_scale(x, eps, NormMean::Ggml);
    for ((o, &v), &g) in y.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * g;
    }
}

/// `1/sqrtf(mean(x²) + eps)` with the mean computed as `mean` says. [`NormMean::Torch`] writes
/// the squares into `SQUARES`, a per-thread buffer, so that it allocates only while that buffer
/// grows.
pub fn rms_scale(x: &[f32], eps: f32, mean: NormMean) -> f32 {
    let m = match mean {
        NormMean::Ggml => {
            let mut sum = 0.0f64;
            for &v in x {
                sum += (v * v) as f64;
            }
            (sum / x.len() as f64) as f32
        }
        NormMean::Torch => SQUARES.with_borrow_mut(|sq| {
            sq.clear();
            sq.extend(x.iter().map(|v| v * v));
            crate::quant::absmean::torch_mean_one_chunk(sq)
        }),
    };
    1.0f32 / (m + eps).sqrt()
}

thread_local! {
    /// Scratch of [`rms_scale`] with [`NormMean::Torch`].
    static SQUARES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub use crate::arch::RopeStyle;

/// Per-position rotation table as ggml builds it: `theta_scale = base^(−2/n_rot)` (f32
/// `powf`), `θ₀ = pos`, `θᵢ₊₁ = θᵢ·theta_scale` by repeated f32 multiplication, each angle
/// divided by its frequency factor (if any) and multiplied by `freq_scale`; `cos`/`sin` in f32.
/// Writes `n_rot/2` (cos, sin) pairs.
pub fn rope_table(
    pos: usize,
    n_rot: usize,
    base: f32,
    freq_scale: f32,
    freq_factors: Option<&[f32]>,
    out: &mut [(f32, f32)],
) {
    let theta_scale = base.powf(-2.0 / n_rot as f32);
    let mut theta = pos as f32;
    for (i, o) in out.iter_mut().enumerate().take(n_rot / 2) {
        let ff = freq_factors.map_or(1.0, |f| f[i]);
        let t = freq_scale * (theta / ff);
        *o = (t.cos(), t.sin());
        theta *= theta_scale;
    }
}

/// Rotates the first `n_rot` dimensions of one head in place with a table from
/// [`rope_table`]; dimensions past `n_rot` are left alone. Each pair becomes
/// `(x0·cos − x1·sin, x0·sin + x1·cos)` with the first product of each expression fused into
/// the addition (`fma(x0, cos, −x1·sin)`, `fma(x0, sin, x1·cos)`), which is how the reference
/// binaries were compiled (C floating-point contraction): it reproduces their logits bit for
/// bit where the unfused form does not.
///
/// Always inlined, so that a caller compiled with FMA (the x86-64 tables' `rope`) gets the
/// instruction rather than a call into the C library's `fmaf`.
#[inline(always)]
pub fn rope_apply(x: &mut [f32], table: &[(f32, f32)], style: RopeStyle) {
    let half = table.len();
    for (i, &(c, s)) in table.iter().enumerate() {
        let (a, b) = match style {
            RopeStyle::Neox => (i, i + half),
            RopeStyle::Normal => (2 * i, 2 * i + 1),
        };
        let x0 = x[a];
        let x1 = x[b];
        x[a] = x0.mul_add(c, -(x1 * s));
        x[b] = x0.mul_add(s, x1 * c);
    }
}

/// [`rope_apply`] on every `head_dim`-slice of `x` (all heads of one token); always inlined,
/// as [`rope_apply`].
#[inline(always)]
pub fn rope_heads(x: &mut [f32], table: &[(f32, f32)], style: RopeStyle, head_dim: usize) {
    for h in x.chunks_exact_mut(head_dim) {
        rope_apply(h, table, style);
    }
}

/// SiLU in f32: `x / (1 + e^(−x))`.
#[inline]
pub fn silu(x: f32) -> f32 {
    silu_with(x, (-x).exp())
}

/// [`silu`] given `e = e^(−x)` (computed elsewhere, e.g. many at a time by a kernel table).
#[inline]
pub fn silu_with(x: f32, e: f32) -> f32 {
    x / (1.0 + e)
}

/// Squared ReLU in f32: `max(x, 0)²`.
#[inline]
pub fn relu_sqr(x: f32) -> f32 {
    let r = if x > 0.0 { x } else { 0.0 };
    r * r
}

/// In-place softmax of already scaled and masked scores as ggml computes it: `max` first,
/// `e = exp(x − max)` in f32 (`expf` through `kern`, bit for bit the C library's), the sum
/// accumulated in f64 over groups of eight (each group summed in f32 in the [`hsum8`] order,
/// as the AVX2 kernel does) and the remainder one by one, then every value multiplied by
/// `(float)(1/sum)`.
pub fn softmax(kern: &Kernels, x: &mut [f32]) {
    let max = x
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for v in x.iter_mut() {
        *v -= max;
    }
    kern.exp(x);
    let mut sum = 0.0f64;
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        sum += hsum8(c.try_into().expect("8 values")) as f64;
    }
    for &e in chunks.remainder() {
        sum += e as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Rounds an f32 to f16 precision (round to nearest even), as ggml's F16 conversions do.
#[inline]
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i8s_quantization_rounds_half_even_and_floors_amax() {
        let x = [0.0f32; 4];
        let mut q = [1i8; 4];
        let (s, sum) = quantize_i8s(&x, &mut q);
        assert_eq!(s, (127.0f64 / 1e-5) as f32);
        assert_eq!((q, sum), ([0; 4], 0));
        // amax = 127 → s = 1: 0.5 → 0, 1.5 → 2, -2.5 → -2.
        let x = [127.0f32, 0.5, 1.5, -2.5];
        let (s, sum) = quantize_i8s(&x, &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [127, 0, 2, -2]);
        assert_eq!(sum, 127);
    }

    #[test]
    fn i8s_scale_rules() {
        // 127/3 = 42.333…: one division rounds to 42.333332, 1/3 then ·127 to 42.333336.
        assert_eq!(I8Scale::Divide.scale(3.0), 42.333332);
        assert_eq!(I8Scale::Reciprocal.scale(3.0), 42.333336);
        assert_ne!(I8Scale::Divide.scale(3.0), I8Scale::Reciprocal.scale(3.0));
        // Equal where the reciprocal is exact, and both floor amax at 1e-5.
        assert_eq!(I8Scale::Divide.scale(2.0), I8Scale::Reciprocal.scale(2.0));
        assert_eq!(I8Scale::Divide.scale(0.0), (127.0f64 / 1e-5) as f32);
        assert_eq!(I8Scale::Reciprocal.scale(0.0), (1.0 / 1e-5f32) * 127.0);
        // An activation at exactly half the row's maximum: 63.5 (→ 64) with one division,
        // 63.499996 (→ 63) through the reciprocal.
        let a = 1.002006f32;
        let x = [a, a / 2.0];
        let mut q = [0i8; 2];
        assert_eq!(quantize_i8s(&x, &mut q), (126.74574, 127 + 64));
        assert_eq!(q, [127, 64]);
        let (s, sum) = quantize_i8s_with(&x, &mut q, I8Scale::Reciprocal);
        assert_eq!((s, sum, q), (126.745735, 127 + 63, [127, 63]));
    }

    #[test]
    fn rms_scale_means() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let g = rms_scale(&x, 1e-5, NormMean::Ggml);
        let t = rms_scale(&x, 1e-5, NormMean::Torch);
        let sq: Vec<f32> = x.iter().map(|v| v * v).collect();
        let tm = crate::quant::absmean::absmean(
            &sq,
            crate::quant::absmean::AbsmeanMode::Torch { threads: 1 },
        );
        assert_eq!(t, 1.0 / (tm + 1e-5).sqrt());
        assert!((g - t).abs() <= 2.0 * f32::EPSILON * g);
    }

    #[test]
    fn i2s_dot_matches_ternary_sum() {
        let codes: Vec<i8> = (0..256).map(|i| ((i * 7 + i / 3) % 3) as i8 - 1).collect();
        let mut packed = vec![0u8; 256 / 4 + 32];
        crate::quant::layouts::i2s::pack_into(&codes, 1.0, &mut packed).unwrap();
        let q: Vec<i8> = (0..256).map(|i| ((i * 13) % 255) as i8).collect();
        let qsum: i32 = q.iter().map(|&v| v as i32).sum();
        let want: i32 = codes
            .iter()
            .zip(&q)
            .map(|(&c, &v)| c as i32 * v as i32)
            .sum();
        assert_eq!(dot_i2s_codes(&packed[..64], &q) - qsum, want);
    }

    #[test]
    fn q8k_sign_convention() {
        let mut x = vec![0.0f32; 256];
        x[3] = 2.0;
        x[4] = -1.0;
        let mut q = vec![0i8; 256];
        let mut d = [0.0f32];
        quantize_q8k(&x, &mut q, &mut d);
        // max is +2 → iscale = −63.5 → q = −127 for 2.0, 64 (rne of 63.5) for −1.0.
        assert_eq!((q[3], q[4]), (-127, 64));
        assert_eq!(d[0], 1.0 / -63.5);
    }

    #[test]
    fn hsum_order() {
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        assert_eq!(hsum8(&a), 36.0);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [
            1.0f32,
            2.0,
            3.0,
            f32::NEG_INFINITY,
            0.5,
            0.1,
            0.2,
            0.3,
            0.4,
            0.9,
        ];
        softmax(Kernels::reference(), &mut x);
        assert_eq!(x[3], 0.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
