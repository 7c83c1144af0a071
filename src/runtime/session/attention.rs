//! Attention over the KV cache for a batch of queries, one task per (token, head), through the
//! kernel table: bitnet.cpp's (`K·q` scores, a softmax, `V·p`) and mainline llama.cpp's flash
//! attention; and the cache itself (F16 or F32).

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{sized, KvPrecision};
use crate::runtime::format::FloatType;
use crate::runtime::kernels::{self, scalar, FloatOrder, Kernels};
use crate::runtime::Hparams;

thread_local! {
    /// Per-thread scratch of the attention tasks (a head's query, scores, accumulators).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(super) enum Cache {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Cache {
    pub(super) fn new(kv: KvPrecision, n: usize) -> Cache {
        match kv {
            KvPrecision::F16 => Cache::F16(vec![f16::ZERO; n]),
            KvPrecision::F32 => Cache::F32(vec![0.0; n]),
        }
    }

    pub(super) fn store(&mut self, at: usize, v: &[f32]) {
        match self {
            Cache::F16(c) => c[at..at + v.len()].convert_from_f32_slice(v),
            Cache::F32(c) => c[at..at + v.len()].copy_from_slice(v),
        }
    }

    fn ty(&self) -> FloatType {
        match self {
            Cache::F16(_) => FloatType::F16,
            Cache::F32(_) => FloatType::F32,
        }
    }

    /// The cache's bytes (little-endian elements, as the float kernels read them).
    fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: f16 and f32 are plain old data without padding; any byte view of them is
            // valid, and u8 has alignment 1.
            Cache::F16(c) => unsafe {
                std::slice::from_raw_parts(c.as_ptr().cast::<u8>(), 2 * c.len())
            },
            // SAFETY: as above.
            Cache::F32(c) => unsafe {
                std::slice::from_raw_parts(c.as_ptr().cast::<u8>(), 4 * c.len())
            },
        }
    }
}

/// The attention of one layer for a batch.
pub(super) struct Attention<'a> {
    pub kern: &'static Kernels,
    pub hp: &'a Hparams,
    pub pos: usize,
    pub n: usize,
    pub kc: &'a Cache,
    pub vc: &'a Cache,
}

impl Attention<'_> {
    /// bitnet.cpp's attention: causal attention of the batch's queries (already rotated; the
    /// batch's keys and values are in the cache) over every cached position up to each
    /// token's own. One task per (token, head): `K·q` scores through ggml's `vec_dot` (q
    /// converted to the cache's type), a softmax over the KV cells padded to a multiple of 32
    /// (the padding is masked, −∞ → probability 0, but takes part in the softmax's grouped
    /// sum), then `Σ_j p_j·V_j`: one query through ggml's `vec_dot` (probabilities converted
    /// to the cache's type, 32 slots over positions), a batch through tinyBLAS (f32
    /// probabilities, 8 lanes over positions).
    pub(super) fn softmax_attention(&self, q: &[f32], out: &mut [f32]) {
        let hd = self.hp.head_dim;
        let n_kv = (self.pos + self.n).div_ceil(32).max(1) * 32;
        let kq_scale = 1.0f32 / (hd as f32).sqrt();
        let batched = self.n > 1;
        let ty = self.kc.ty();
        let stride = self.hp.n_head_kv * hd * ty.bytes();
        let kern = self.kern;
        self.per_head(q, out, n_kv + 32 * hd, |p, kh, vh, qh, o, s| {
            let (scores, acc) = s.split_at_mut(n_kv);
            kern.float_dots(
                FloatOrder::Ggml,
                ty,
                kh,
                stride,
                hd,
                qh,
                1,
                &mut scores[..p + 1],
            );
            for v in &mut scores[..p + 1] {
                *v *= kq_scale;
            }
            scores[p + 1..].fill(f32::NEG_INFINITY);
            scalar::softmax(kern, scores);
            let probs = &mut scores[..p + 1];
            let order = if batched {
                FloatOrder::Lanes8
            } else {
                if ty == FloatType::F16 {
                    round_f16_slice(probs);
                }
                FloatOrder::Ggml
            };
            kern.weighted_sum(order, ty, vh, stride, probs, o, acc);
        });
    }

    /// Mainline llama.cpp's CPU flash attention, one (token, head) at a time: `q` converted to
    /// the cache type, then for each visible position in order `s = (K_j·q)·scale`, an online
    /// softmax (`M`, `S`) and the value accumulator updated in the cache type:
    /// `acc = acc·e^(M_old − M)` on a new maximum, `acc += V_j·e^(s − M)` (fused, then
    /// rounded), `S = S·ms + vs` (fused); finally `out = acc · (1/S)`.
    pub(super) fn flash_attention(&self, q: &[f32], out: &mut [f32]) {
        let hd = self.hp.head_dim;
        let kq_scale = 1.0f32 / (hd as f32).sqrt();
        let ty = self.kc.ty();
        let stride = self.hp.n_head_kv * hd * ty.bytes();
        let kern = self.kern;
        self.per_head(q, out, 0, |p, kh, vh, qh, o, _| match ty {
            FloatType::F16 => kern.flash_attention_f16(qh, kh, vh, stride, p + 1, kq_scale, o),
            FloatType::F32 => kern.flash_attention_f32(qh, kh, vh, stride, p + 1, kq_scale, o),
        });
    }

    /// Runs `f(p, kh, vh, qh, o, scratch)` in parallel for every (token, head) slice `o` of
    /// `out` (`head_dim` values): `p` the token's position, `kh` / `vh` the K and V cache bytes
    /// from its head's KV group on (rows `n_head_kv · head_dim` elements apart), `qh` the head's
    /// query, rounded to f16 precision for an F16 cache (ggml converts it to the cache's type),
    /// `scratch` `extra` values of this worker's scratch.
    ///
    /// A batch is one task per (token, head). One token is one task per thread, each a run of
    /// heads, which first asks for its heads' slices of every cached key and value row
    /// ([`kernels::prefetch_rows`]): between two tokens the weights have gone through the caches,
    /// so those rows come from memory, and one head's slice per row (128 bytes of 1.5 KiB or
    /// more) is a pattern the hardware prefetchers miss: loaded head by head they arrived a
    /// few at a time. Measured on the 125M model (positions 0-31): attention per token 386 ->
    /// 286 µs on one thread, about 10% less on two.
    fn per_head(
        &self,
        q: &[f32],
        out: &mut [f32],
        extra: usize,
        f: impl Fn(usize, &[u8], &[u8], &[f32], &mut [f32], &mut [f32]) + Sync + Send,
    ) {
        let hp = self.hp;
        let hd = hp.head_dim;
        let q_dim = hp.n_head * hd;
        let group = hp.n_head / hp.n_head_kv;
        let ty = self.kc.ty();
        let eb = ty.bytes();
        let stride = hp.n_head_kv * hd * eb;
        let (kb, vb) = (self.kc.bytes(), self.vc.bytes());
        let per_task = if self.n == 1 {
            hp.n_head.div_ceil(rayon::current_num_threads().max(1))
        } else {
            1
        };
        out[..self.n * q_dim]
            .par_chunks_mut(hd * per_task)
            .enumerate()
            .for_each(|(c, heads)| {
                let i0 = c * per_task;
                if self.n == 1 {
                    let g0 = i0 / group;
                    let g1 = (i0 + heads.len() / hd - 1) / group + 1;
                    let (from, width) = (g0 * hd * eb, (g1 - g0) * hd * eb);
                    kernels::prefetch_rows(&kb[from..], stride, self.pos + 1, width);
                    kernels::prefetch_rows(&vb[from..], stride, self.pos + 1, width);
                }
                for (j, o) in heads.chunks_exact_mut(hd).enumerate() {
                    let i = i0 + j;
                    let t = i / hp.n_head;
                    let h = i % hp.n_head;
                    let g = h / group;
                    SCRATCH.with_borrow_mut(|s| {
                        let s = sized(s, hd + extra);
                        let (qh, rest) = s.split_at_mut(hd);
                        qh.copy_from_slice(&q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd]);
                        if ty == FloatType::F16 {
                            round_f16_slice(qh);
                        }
                        let (kh, vh) = (&kb[g * hd * eb..], &vb[g * hd * eb..]);
                        f(self.pos + t, kh, vh, qh, o, rest);
                    });
                }
            });
    }
}

fn round_f16_slice(x: &mut [f32]) {
    for v in x {
        *v = scalar::round_f16(*v);
    }
}
