//! The arithmetic of one decoder block and of the head, in f32, as transformers' modules
//! compute it: RMSNorm (`w · (x · rsqrt(mean(x²) + eps))`), per-token int8 activations into
//! exact integer dot products with the ternary codes, rotate-half RoPE on the stored q/k order,
//! causal softmax attention scaled by `head_dim^-0.5` with GQA, optional sub-norms, and the
//! gated FFN.
//!
//! Parallelism: rayon over output rows in the matmuls (each row's codes are made once and
//! reused for every token) and over heads in the attention. Every reduction runs in a fixed
//! order, so results do not depend on the thread count.

use rayon::prelude::*;

use super::config::HfActivation;
use super::weights::{round_row, Projection, Store, TensorRef};
use super::{FloatRounding, HfError};
use crate::runtime::kernels::scalar::{self, I8Scale};

/// Rows of a weight matrix handled by one rayon task.
const ROWS_PER_TASK: usize = 16;

/// `n` tokens' activations quantized to int8 per token.
pub(super) struct QuantActs {
    pub k: usize,
    pub q: Vec<i8>,
    pub scale: Vec<f32>,
    /// `Σ q` of each row.
    pub sum: Vec<i32>,
}

impl QuantActs {
    /// `s = 127/max(max|x|, 1e-5)`, `q = clamp(round_half_even(x·s), −128, 127)` per row of
    /// `k` values (`rule` says how the division is rounded, see [`I8Scale`]).
    pub fn new(x: &[f32], k: usize, rule: I8Scale) -> QuantActs {
        let n = x.len() / k;
        let mut q = vec![0i8; n * k];
        let mut scale = vec![0.0f32; n];
        let mut sum = vec![0i32; n];
        for (((xr, qr), s), su) in x
            .chunks_exact(k)
            .zip(q.chunks_exact_mut(k))
            .zip(&mut scale)
            .zip(&mut sum)
        {
            *s = scalar::quantize_i8s_with(xr, qr, rule).0;
            *su = qr.iter().map(|&v| i32::from(v)).sum();
        }
        QuantActs { k, q, scale, sum }
    }

    fn n(&self) -> usize {
        self.scale.len()
    }

    fn row(&self, t: usize) -> &[i8] {
        &self.q[t * self.k..(t + 1) * self.k]
    }
}

/// The dot products of the matmuls and the attention, chosen once per process: AVX2 where the
/// CPU has it, portable code otherwise. Both give the same results (integer sums are exact; the
/// float ones add in the same lane order).
#[derive(Clone, Copy)]
pub(super) struct Dots {
    /// `Σ a·b` in f32 over eight lanes.
    pub f32: fn(&[f32], &[f32]) -> f32,
    /// Exact `Σ u·b` of unsigned codes `u ≤ 2` and int8 `b` (ternary `t = u − 1`, so
    /// `Σ t·b = Σ u·b − Σ b`).
    pub u8i8: fn(&[u8], &[i8]) -> i32,
}

impl Dots {
    pub fn get() -> Dots {
        static DOTS: std::sync::OnceLock<Dots> = std::sync::OnceLock::new();
        *DOTS.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                return Dots {
                    f32: avx2::dot_f32,
                    u8i8: avx2::dot_u8i8,
                };
            }
            Dots {
                f32: dot_f32,
                u8i8: dot_u8i8,
            }
        })
    }
}

/// Exact `Σ u·b` (portable): see [`Dots::u8i8`].
#[inline(always)]
pub(super) fn dot_u8i8(u: &[u8], b: &[i8]) -> i32 {
    debug_assert_eq!(u.len(), b.len());
    u.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// `Σ a·b` in f32: eight lanes, added pairwise at the end, then the tail.
#[inline(always)]
pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::dot_u8i8`] with AVX2: 32 pairs per step through `vpmaddubsw` (each i16 sum
    /// of two products is at most 2·2·128 in magnitude, so exact), widened by `vpmaddwd`.
    pub fn dot_u8i8(u: &[u8], b: &[i8]) -> i32 {
        assert!(is_x86_feature_detected!("avx2") && u.len() == b.len());
        // SAFETY: AVX2 is present (checked above, cached by std).
        unsafe { dot_u8i8_avx2(u, b) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn dot_u8i8_avx2(u: &[u8], b: &[i8]) -> i32 {
        let n = u.len() / 32 * 32;
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i < n {
            // SAFETY: i + 32 <= n <= len of both slices; unaligned loads.
            let (vu, vb) = unsafe {
                (
                    _mm256_loadu_si256(u.as_ptr().add(i).cast()),
                    _mm256_loadu_si256(b.as_ptr().add(i).cast()),
                )
            };
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(vu, vb), ones);
            acc = _mm256_add_epi32(acc, p);
            i += 32;
        }
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256(acc, 1),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s) + super::dot_u8i8(&u[n..], &b[n..])
    }

    /// [`super::dot_f32`] compiled for AVX2 (the same lane order, so the same result).
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        assert!(is_x86_feature_detected!("avx2"));
        // SAFETY: AVX2 is present (checked above, cached by std).
        unsafe { dot_f32_avx2(a, b) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
        super::dot_f32(a, b)
    }
}

/// Transposes a `rows × n` matrix into `n × rows`.
fn transpose(m: &[f32], rows: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m.len()];
    for r in 0..rows {
        for t in 0..n {
            out[t * rows + r] = m[r * n + t];
        }
    }
    out
}

/// `y = x · Wᵀ` for a ternary projection: `n × in` quantized activations to `n × out` floats.
pub(super) fn ternary_matmul(
    store: &Store,
    p: &Projection,
    acts: &QuantActs,
) -> Result<Vec<f32>, HfError> {
    let t = store.get(&p.name)?;
    debug_assert_eq!(acts.k, p.cols);
    let n = acts.n();
    let epi = p.epilogue(&t);
    let dot = Dots::get().u8i8;
    let want_hashes = !p.has_row_hashes();
    let mut rm = vec![0.0f32; p.rows * n];
    let mut hashes = vec![0u64; if want_hashes { p.rows } else { 0 }];
    let hash_chunks: Vec<&mut [u64]> = if want_hashes {
        hashes.chunks_mut(ROWS_PER_TASK).collect()
    } else {
        Vec::new()
    };
    let mut hash_chunks: Vec<Option<&mut [u64]>> = hash_chunks.into_iter().map(Some).collect();
    hash_chunks.resize_with(p.rows.div_ceil(ROWS_PER_TASK), || None);
    rm.par_chunks_mut(n * ROWS_PER_TASK)
        .zip(hash_chunks.par_iter_mut())
        .enumerate()
        .for_each_init(
            || (vec![0.0f32; p.cols], vec![0i8; p.cols], vec![0u8; p.cols]),
            |(buf, codes, ucodes), (ci, (chunk, hc))| {
                for (j, out) in chunk.chunks_mut(n).enumerate() {
                    p.row_codes(&t, ci * ROWS_PER_TASK + j, buf, codes);
                    if let Some(h) = hc.as_deref_mut() {
                        h[j] = super::row_hash(codes);
                    }
                    for (u, &c) in ucodes.iter_mut().zip(codes.iter()) {
                        *u = (c + 1) as u8;
                    }
                    for (tok, o) in out.iter_mut().enumerate() {
                        let d = dot(ucodes, acts.row(tok)) - acts.sum[tok];
                        *o = epi.apply(d, acts.scale[tok]);
                    }
                }
            },
        );
    if want_hashes {
        p.set_row_hashes(hashes);
    }
    store.release(&p.name);
    Ok(transpose(&rm, p.rows, n))
}

/// `y = x · Wᵀ` for a float matrix (`rows × k`, e.g. the LM head), each weight row widened and
/// rounded as `how` says: `n × k` to `n × rows`.
pub(super) fn float_matmul(t: &TensorRef<'_>, how: FloatRounding, x: &[f32], k: usize) -> Vec<f32> {
    let rows = t.shape[0];
    let n = x.len() / k;
    let dot = Dots::get().f32;
    let mut rm = vec![0.0f32; rows * n];
    rm.par_chunks_mut(n * ROWS_PER_TASK)
        .enumerate()
        .for_each_init(
            || vec![0.0f32; k],
            |w, (ci, chunk)| {
                for (j, out) in chunk.chunks_mut(n).enumerate() {
                    t.read_f32((ci * ROWS_PER_TASK + j) * k, w);
                    round_row(w, how);
                    for (tok, o) in out.iter_mut().enumerate() {
                        *o = dot(w, &x[tok * k..(tok + 1) * k]);
                    }
                }
            },
        );
    transpose(&rm, rows, n)
}

/// RMSNorm of every `w.len()`-wide row of `x` (transformers' `LlamaRMSNorm` in f32).
pub(super) fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let k = w.len();
    let mut y = vec![0.0f32; x.len()];
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(k)) {
        scalar::rms_norm(xr, w, eps, yr);
    }
    y
}

/// Rotate-half RoPE in place on `n` rows of `heads·head_dim` values, row `t` at position `t`:
/// dimension `i` pairs with `i + head_dim/2`, angle `fl32(t · inv_freq[i])`,
/// `x'ᵢ = xᵢ·cos − xᵢ₊ₕ·sin`, `x'ᵢ₊ₕ = xᵢ₊ₕ·cos + xᵢ·sin`.
pub(super) fn rope_rows(x: &mut [f32], n: usize, head_dim: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    let width = x.len() / n.max(1);
    for (pos, row) in x.chunks_exact_mut(width).enumerate() {
        let table: Vec<(f32, f32)> = inv_freq
            .iter()
            .map(|&f| {
                let a = (pos as f32 * f) as f64;
                (a.cos() as f32, a.sin() as f32)
            })
            .collect();
        for head in row.chunks_exact_mut(head_dim) {
            for (i, &(c, s)) in table.iter().enumerate() {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
        }
    }
}

/// Causal softmax attention with GQA over `n` positions: `q` is `n × (heads·hd)`, `k` and `v`
/// `n × (kv_heads·hd)`; query head `h` reads KV head `h / (heads/kv_heads)` (transformers'
/// `repeat_kv`). Scores `q·k · hd^-0.5`, softmax in f32. Returns `n × (heads·hd)`.
pub(super) fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
) -> Vec<f32> {
    let group = heads / kv_heads;
    let scale = (hd as f64).powf(-0.5) as f32;
    let (qw, kw) = (heads * hd, kv_heads * hd);
    let dot = Dots::get().f32;
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let kh = h / group;
            let mut out = vec![0.0f32; n * hd];
            let mut p = vec![0.0f32; n];
            for t in 0..n {
                let qr = &q[t * qw + h * hd..t * qw + (h + 1) * hd];
                let mut max = f32::NEG_INFINITY;
                for (s, ps) in p.iter_mut().enumerate().take(t + 1) {
                    *ps = dot(qr, &k[s * kw + kh * hd..s * kw + (kh + 1) * hd]) * scale;
                    max = max.max(*ps);
                }
                let mut sum = 0.0f32;
                for ps in p.iter_mut().take(t + 1) {
                    *ps = (*ps - max).exp();
                    sum += *ps;
                }
                let o = &mut out[t * hd..(t + 1) * hd];
                for (s, &ps) in p.iter().enumerate().take(t + 1) {
                    let w = ps / sum;
                    let vr = &v[s * kw + kh * hd..s * kw + (kh + 1) * hd];
                    for (oo, &vv) in o.iter_mut().zip(vr) {
                        *oo += w * vv;
                    }
                }
            }
            out
        })
        .collect();
    let mut y = vec![0.0f32; n * qw];
    for (h, ph) in per_head.iter().enumerate() {
        for t in 0..n {
            y[t * qw + h * hd..t * qw + (h + 1) * hd].copy_from_slice(&ph[t * hd..(t + 1) * hd]);
        }
    }
    y
}

/// `act(gate) · up`, element by element, into `gate`.
pub(super) fn gated(gate: &mut [f32], up: &[f32], act: HfActivation) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let a = match act {
            HfActivation::Silu => scalar::silu(*g),
            HfActivation::Relu2 => scalar::relu_sqr(*g),
        };
        *g = a * u;
    }
}

/// `x += y`.
pub(super) fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
