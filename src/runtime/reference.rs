//! The reference forward pass: scalar, one obvious loop per operation, with the arithmetic of
//! the runtime that made the file's reference logits (see [`super::ops`] for each kernel).
//!
//! A [`Session`] holds the KV cache of one sequence. [`Session::forward`] processes a batch of
//! tokens at the current position: a whole prompt at once, or one token per call in a decode
//! loop. Every activation is computed per token exactly as in the one-token path, except for
//! what the reference runtimes themselves do differently for a batch (below); attention within
//! a batch is causal.
//!
//! # Block
//!
//! `n = RMSNorm(x)·w_attn_norm`; `q, k, v` = ternary (or float) matmuls of `n`; RoPE on `q`
//! and `k` (NEOX pairs for the BitNet architectures, interleaved for `llama`); `k`, `v` stored
//! in the cache (rounded to f16 by default, as llama.cpp's cache is F16); attention with scale
//! `1/√head_dim`; `RMSNorm_sub` (BitNet architectures); `h = x + W_o·…`; then
//! `m = RMSNorm(h)·w_ffn_norm`, `a = act(W_gate·m)·(W_up·m)` (SiLU or ReLU²), `RMSNorm_sub`,
//! `x' = h + W_down·a`. Finally `RMSNorm` and the LM head.
//!
//! # Which kernel, which float order
//!
//! Ternary matmuls are exact integer dot products followed by a float epilogue, so only the
//! activation quantization and the epilogue matter (I2_S family: per-token int8 as bitnet.cpp;
//! TQ family: Q8_K blocks as mainline ggml). For float weights and for attention, ggml picks
//! different kernels, and hence different rounding, by the shape of the product; the choices
//! below were confirmed against the reference logits, which this pass then reproduces bit for
//! bit in most rows (see the tests):
//!
//! * one activation column (a decode step, or an LM head computing only the last row): ggml's
//!   `vec_dot` kernels, after converting the activations to the weight's vec-dot type (F16
//!   weights: activations rounded to f16), with [`ops::dot_f32_ggml`]'s 32-slot order;
//! * several columns, [`Emulation::BitnetCpp`]: llamafile's tinyBLAS with f32 activations,
//!   8-lane order ([`ops::dot_f32_lanes8`]); [`Emulation::LlamaCpp`]: still `vec_dot`;
//! * bitnet.cpp's attention: `K·q` through `vec_dot` with `q` rounded to f16, a softmax over
//!   the KV cells padded to a multiple of 32, then `V·p` — for a single query through
//!   `vec_dot` with the probabilities rounded to f16, for a batch through tinyBLAS with f32
//!   probabilities;
//! * mainline llama.cpp's attention: its CPU flash attention (online softmax, value
//!   accumulator rounded to f16 after every step).
//!
//! Matmuls run in parallel over output rows, attention over (token, head) pairs, with rayon;
//! each reduction is sequential, so results are identical for any number of threads.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::gguf::GgmlType;

use super::model::{Activation, Matrix, Model, WeightFormat};
use super::ops::{self, QK8_0, QK_K};
use super::RuntimeError;

/// Which logits [`Session::forward`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None (prompt prefill whose logits are not needed).
    None,
    /// The last token's row only.
    Last,
    /// One row per token of the batch.
    All,
}

/// Precision of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KvPrecision {
    /// IEEE half floats, llama.cpp's default (and what the reference logits were made with).
    #[default]
    F16,
    /// f32 (no rounding of keys and values).
    F32,
}

/// Whose arithmetic the session reproduces. The graph is the same; the runtimes differ in
/// their attention kernels and in the kernel they pick for float matmuls over several tokens
/// (see the module docs). Ternary matmuls follow the weight type, not this setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// bitnet.cpp's llama.cpp fork (2024): `K·q` products, a softmax over the (32-padded) KV
    /// cache, then `V·p` (probabilities rounded to the cache type for a single query).
    BitnetCpp,
    /// Mainline llama.cpp with flash attention (its CPU default): one pass over the cache with
    /// an online softmax and the value accumulator held in the cache type.
    LlamaCpp,
}

impl Emulation {
    /// The runtime a model's files belong to: mainline llama.cpp for files with TQ1_0/TQ2_0
    /// weights (only mainline has those types), bitnet.cpp otherwise.
    pub fn for_model(model: &Model) -> Emulation {
        let tq = model
            .matrices()
            .any(|m| matches!(m.file_type(), GgmlType::TQ1_0 | GgmlType::TQ2_0));
        if tq {
            Emulation::LlamaCpp
        } else {
            Emulation::BitnetCpp
        }
    }
}

/// Options of a [`Session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionOptions {
    /// Positions the KV cache holds.
    pub max_ctx: usize,
    /// KV cache precision.
    pub kv: KvPrecision,
    /// Whose arithmetic to reproduce.
    pub emulation: Emulation,
}

impl SessionOptions {
    /// The defaults for a model: an F16 cache of `max_ctx` positions and
    /// [`Emulation::for_model`].
    pub fn for_model(model: &Model, max_ctx: usize) -> SessionOptions {
        SessionOptions {
            max_ctx,
            kv: KvPrecision::F16,
            emulation: Emulation::for_model(model),
        }
    }
}

enum Cache {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl Cache {
    fn new(kv: KvPrecision, n: usize) -> Cache {
        match kv {
            KvPrecision::F16 => Cache::F16(vec![f16::ZERO; n]),
            KvPrecision::F32 => Cache::F32(vec![0.0; n]),
        }
    }

    fn store(&mut self, at: usize, v: &[f32]) {
        match self {
            Cache::F16(c) => c[at..at + v.len()].convert_from_f32_slice(v),
            Cache::F32(c) => c[at..at + v.len()].copy_from_slice(v),
        }
    }

    fn load(&self, at: usize, out: &mut [f32]) {
        match self {
            Cache::F16(c) => {
                let len = out.len();
                c[at..at + len].convert_to_f32_slice(out);
            }
            Cache::F32(c) => out.copy_from_slice(&c[at..at + out.len()]),
        }
    }
}

/// One sequence being evaluated: the model, the KV cache and the current position.
pub struct Session<'m> {
    model: &'m Model,
    opts: SessionOptions,
    pos: usize,
    k_cache: Vec<Cache>,
    v_cache: Vec<Cache>,
}

impl<'m> Session<'m> {
    /// A session with the default options ([`SessionOptions::for_model`]).
    pub fn new(model: &'m Model, max_ctx: usize) -> Session<'m> {
        Session::with_options(model, SessionOptions::for_model(model, max_ctx))
    }

    /// A session with explicit options.
    pub fn with_options(model: &'m Model, opts: SessionOptions) -> Session<'m> {
        let hp = model.hparams();
        let n = opts.max_ctx * hp.n_head_kv * hp.head_dim;
        Session {
            model,
            opts,
            pos: 0,
            k_cache: (0..hp.n_layer).map(|_| Cache::new(opts.kv, n)).collect(),
            v_cache: (0..hp.n_layer).map(|_| Cache::new(opts.kv, n)).collect(),
        }
    }

    /// The model.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Tokens processed so far (the position of the next token).
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The session's options.
    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// Forgets the sequence (the cache contents become irrelevant; positions restart at 0).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Processes `tokens` at the current position and returns the logits asked for (rows of
    /// `n_vocab` values, in token order).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        want: LogitsWanted,
    ) -> Result<Vec<Vec<f32>>, RuntimeError> {
        let model = self.model;
        let hp = model.hparams();
        let n = tokens.len();
        if n == 0 {
            return Err(RuntimeError::Session("forward: empty batch".into()));
        }
        if self.pos + n > self.opts.max_ctx {
            return Err(RuntimeError::Session(format!(
                "context full: {} tokens at position {} exceed the {} positions of the cache",
                n, self.pos, self.opts.max_ctx
            )));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= hp.n_vocab) {
            return Err(RuntimeError::Session(format!(
                "token id {t} is out of range (vocabulary of {})",
                hp.n_vocab
            )));
        }
        let file = model.file_bytes();
        let e = hp.n_embd;
        let q_dim = hp.n_head * hp.head_dim;
        let kv_dim = hp.n_head_kv * hp.head_dim;
        let eps = hp.rms_eps;
        let style = hp.arch.rope_style();

        let mut x = vec![0.0f32; n * e];
        for (t, &tok) in tokens.iter().enumerate() {
            model
                .tok_embd()
                .dequantize_row(file, tok as usize, &mut x[t * e..(t + 1) * e]);
        }

        // RoPE tables per position.
        let mut tables = vec![(0.0f32, 0.0f32); n * hp.n_rot / 2];
        for t in 0..n {
            ops::rope_table(
                self.pos + t,
                hp.n_rot,
                hp.rope_freq_base,
                hp.rope_freq_scale,
                model.rope_freqs(),
                &mut tables[t * hp.n_rot / 2..(t + 1) * hp.n_rot / 2],
            );
        }

        let emu = self.opts.emulation;
        let mut cur = vec![0.0f32; n * e];
        for (il, layer) in model.layers.iter().enumerate() {
            for t in 0..n {
                ops::rms_norm(
                    &x[t * e..(t + 1) * e],
                    &layer.attn_norm,
                    eps,
                    &mut cur[t * e..(t + 1) * e],
                );
            }
            let mut q = matmul(model, &layer.wq, &cur, n, emu);
            let mut k = matmul(model, &layer.wk, &cur, n, emu);
            let v = matmul(model, &layer.wv, &cur, n, emu);
            for t in 0..n {
                let table = &tables[t * hp.n_rot / 2..(t + 1) * hp.n_rot / 2];
                for h in q[t * q_dim..(t + 1) * q_dim].chunks_exact_mut(hp.head_dim) {
                    ops::rope_apply(h, table, style);
                }
                for h in k[t * kv_dim..(t + 1) * kv_dim].chunks_exact_mut(hp.head_dim) {
                    ops::rope_apply(h, table, style);
                }
                let at = (self.pos + t) * kv_dim;
                self.k_cache[il].store(at, &k[t * kv_dim..(t + 1) * kv_dim]);
                self.v_cache[il].store(at, &v[t * kv_dim..(t + 1) * kv_dim]);
            }
            let mut attn = match self.opts.emulation {
                Emulation::BitnetCpp => self.attention(il, &q, n),
                Emulation::LlamaCpp => self.flash_attention(il, &q, n),
            };
            if let Some(w) = &layer.attn_sub_norm {
                for t in 0..n {
                    let row = attn[t * q_dim..(t + 1) * q_dim].to_vec();
                    ops::rms_norm(&row, w, eps, &mut attn[t * q_dim..(t + 1) * q_dim]);
                }
            }
            let o = matmul(model, &layer.wo, &attn, n, emu);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += *ov;
            }
            for t in 0..n {
                ops::rms_norm(
                    &x[t * e..(t + 1) * e],
                    &layer.ffn_norm,
                    eps,
                    &mut cur[t * e..(t + 1) * e],
                );
            }
            let mut g = matmul(model, &layer.w_gate, &cur, n, emu);
            let u = matmul(model, &layer.w_up, &cur, n, emu);
            let act = hp.arch.activation();
            for (gv, &uv) in g.iter_mut().zip(&u) {
                let a = match act {
                    Activation::Silu => ops::silu(*gv),
                    Activation::ReluSqr => ops::relu_sqr(*gv),
                };
                *gv = a * uv;
            }
            if let Some(w) = &layer.ffn_sub_norm {
                let f = hp.n_ff;
                for t in 0..n {
                    let row = g[t * f..(t + 1) * f].to_vec();
                    ops::rms_norm(&row, w, eps, &mut g[t * f..(t + 1) * f]);
                }
            }
            let d = matmul(model, &layer.w_down, &g, n, emu);
            for (xv, dv) in x.iter_mut().zip(&d) {
                *xv += *dv;
            }
        }
        self.pos += n;

        let rows: Vec<usize> = match want {
            LogitsWanted::None => vec![],
            LogitsWanted::Last => vec![n - 1],
            LogitsWanted::All => (0..n).collect(),
        };
        if rows.is_empty() {
            return Ok(vec![]);
        }
        let mut normed = vec![0.0f32; rows.len() * e];
        for (i, &t) in rows.iter().enumerate() {
            ops::rms_norm(
                &x[t * e..(t + 1) * e],
                model.output_norm(),
                eps,
                &mut normed[i * e..(i + 1) * e],
            );
        }
        let logits = matmul(model, model.head(), &normed, rows.len(), emu);
        Ok(logits
            .chunks_exact(hp.n_vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Mainline llama.cpp's CPU flash attention, one (token, head) at a time: `q` converted to
    /// the cache type, then for each visible position in order `s = (K_j·q)·scale`, an online
    /// softmax (`M`, `S`) and the value accumulator updated in the cache type:
    /// `acc = acc·e^(M_old − M)` on a new maximum, `acc += V_j·e^(s − M)` (fused, then
    /// rounded), `S = S·ms + vs` (fused); finally `out = acc · (1/S)`.
    fn flash_attention(&self, il: usize, q: &[f32], n: usize) -> Vec<f32> {
        let hp = self.model.hparams();
        let hd = hp.head_dim;
        let q_dim = hp.n_head * hd;
        let kv_dim = hp.n_head_kv * hd;
        let group = hp.n_head / hp.n_head_kv;
        let kq_scale = 1.0f32 / (hd as f32).sqrt();
        let kc = &self.k_cache[il];
        let vc = &self.v_cache[il];
        let f16_cache = matches!(kc, Cache::F16(_));
        let mut out = vec![0.0f32; n * q_dim];
        out.par_chunks_mut(hd).enumerate().for_each_init(
            || (vec![0.0f32; hd], vec![0.0f32; hd], vec![0.0f32; hd]),
            |(qbuf, kbuf, acc), (i, o)| {
                let t = i / hp.n_head;
                let h = i % hp.n_head;
                let g = h / group;
                let p = self.pos + t;
                qbuf.copy_from_slice(&q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd]);
                if f16_cache {
                    round_f16_slice(qbuf);
                }
                acc.fill(0.0);
                let mut m = f32::NEG_INFINITY;
                let mut sum = 0.0f32;
                for j in 0..=p {
                    kc.load(j * kv_dim + g * hd, kbuf);
                    let s = ops::dot_f32_ggml(kbuf, qbuf) * kq_scale;
                    let mut ms = 1.0f32;
                    let mut vs = 1.0f32;
                    if s > m {
                        let m_old = m;
                        m = s;
                        ms = (m_old - m).exp();
                        for a in acc.iter_mut() {
                            *a *= ms;
                        }
                        if f16_cache {
                            round_f16_slice(acc);
                        }
                    } else {
                        vs = (s - m).exp();
                    }
                    vc.load(j * kv_dim + g * hd, kbuf);
                    for (a, &v) in acc.iter_mut().zip(kbuf.iter()) {
                        *a = v.mul_add(vs, *a);
                    }
                    if f16_cache {
                        round_f16_slice(acc);
                    }
                    sum = sum.mul_add(ms, vs);
                }
                let inv = 1.0f32 / sum;
                for (od, &a) in o.iter_mut().zip(acc.iter()) {
                    *od = a * inv;
                }
            },
        );
        out
    }

    /// Causal attention of the batch's queries (already rotated; the batch's keys and values
    /// are in the cache) over every cached position up to each token's own.
    fn attention(&self, il: usize, q: &[f32], n: usize) -> Vec<f32> {
        let hp = self.model.hparams();
        let hd = hp.head_dim;
        let q_dim = hp.n_head * hd;
        let kv_dim = hp.n_head_kv * hd;
        let group = hp.n_head / hp.n_head_kv;
        let used = self.pos + n;
        // ggml pads the number of KV cells it looks at to a multiple of 32; the padding is
        // masked (−∞ → probability 0) but takes part in the softmax's grouped sum.
        let n_kv = used.div_ceil(32).max(1) * 32;
        let kq_scale = 1.0f32 / (hd as f32).sqrt();
        let batched = n > 1;
        let kc = &self.k_cache[il];
        let vc = &self.v_cache[il];
        let f16_cache = matches!(kc, Cache::F16(_));
        // One task per (token, head): scores, softmax, weighted sum of values.
        let mut out = vec![0.0f32; n * q_dim];
        out.par_chunks_mut(hd).enumerate().for_each_init(
            || (vec![0.0f32; hd], vec![0.0f32; hd], vec![0.0f32; n_kv]),
            |(qbuf, kbuf, scores), (i, o)| {
                let t = i / hp.n_head;
                let h = i % hp.n_head;
                let g = h / group;
                let p = self.pos + t;
                // K·q: ggml's vec_dot path, which converts q to the cache's type.
                qbuf.copy_from_slice(&q[t * q_dim + h * hd..t * q_dim + (h + 1) * hd]);
                if f16_cache {
                    round_f16_slice(qbuf);
                }
                for (j, s) in scores.iter_mut().enumerate() {
                    if j > p {
                        *s = f32::NEG_INFINITY;
                        continue;
                    }
                    kc.load(j * kv_dim + g * hd, kbuf);
                    *s = ops::dot_f32_ggml(kbuf, qbuf) * kq_scale;
                }
                ops::softmax(scores);
                // Σ_j p_j · V_j: one query goes through ggml's vec_dot path (probabilities
                // converted to the cache's type, 32 slots over positions); a batch goes
                // through tinyBLAS (f32 probabilities, 8 lanes over positions).
                let probs = &mut scores[..p + 1];
                if batched {
                    let mut acc = vec![[0.0f32; 8]; hd];
                    for (j, &pj) in probs.iter().enumerate() {
                        vc.load(j * kv_dim + g * hd, kbuf);
                        let lane = j % 8;
                        for (a, &vv) in acc.iter_mut().zip(kbuf.iter()) {
                            a[lane] = vv.mul_add(pj, a[lane]);
                        }
                    }
                    for (od, a) in o.iter_mut().zip(&acc) {
                        *od = ops::hsum8(a);
                    }
                } else {
                    if f16_cache {
                        round_f16_slice(probs);
                    }
                    let mut acc = vec![[0.0f32; 32]; hd];
                    for (j, &pj) in probs.iter().enumerate() {
                        vc.load(j * kv_dim + g * hd, kbuf);
                        let slot = j % 32;
                        for (a, &vv) in acc.iter_mut().zip(kbuf.iter()) {
                            a[slot] = vv.mul_add(pj, a[slot]);
                        }
                    }
                    for (od, a) in o.iter_mut().zip(&acc) {
                        *od = ops::reduce32(a);
                    }
                }
            },
        );
        out
    }
}

fn round_f16_slice(x: &mut [f32]) {
    for v in x {
        *v = ops::round_f16(*v);
    }
}

/// Token activations prepared for one weight format.
enum Prepared {
    I8s {
        q: Vec<i8>,
        s: Vec<f32>,
        sum: Vec<i32>,
    },
    Q8k {
        q: Vec<i8>,
        d: Vec<f32>,
    },
    Q8_0 {
        q: Vec<i8>,
        d: Vec<f32>,
    },
    F32,
}

fn prepare(w: &Matrix, x: &[f32], n: usize) -> Prepared {
    let k = w.cols();
    match w.format() {
        WeightFormat::I2s => {
            let mut q = vec![0i8; n * k];
            let mut s = vec![0.0f32; n];
            let mut sum = vec![0i32; n];
            for t in 0..n {
                let (st, su) =
                    ops::quantize_i8s(&x[t * k..(t + 1) * k], &mut q[t * k..(t + 1) * k]);
                s[t] = st;
                sum[t] = su;
            }
            Prepared::I8s { q, s, sum }
        }
        WeightFormat::Tq2 => {
            let mut q = vec![0i8; n * k];
            let mut d = vec![0.0f32; n * k / QK_K];
            ops::quantize_q8k(x, &mut q, &mut d);
            Prepared::Q8k { q, d }
        }
        WeightFormat::Q8_0 => {
            let mut q = vec![0i8; n * k];
            let mut d = vec![0.0f32; n * k / QK8_0];
            ops::quantize_q8_0(x, &mut q, &mut d);
            Prepared::Q8_0 { q, d }
        }
        WeightFormat::F16 | WeightFormat::F32 => Prepared::F32,
    }
}

/// `y = W·x` for `n` tokens (`x`: `n × K` row-major) → `n × M` row-major.
fn matmul(model: &Model, w: &Matrix, x: &[f32], n: usize, emu: Emulation) -> Vec<f32> {
    let (m, k) = (w.rows(), w.cols());
    debug_assert_eq!(x.len(), n * k);
    let file = model.file_bytes();
    let data = w.bytes(file);
    let rb = w.row_bytes();
    let prep = prepare(w, x, n);
    let ws = w.scale();
    let format = w.format();
    // Float weights: ggml's vec_dot (activations first converted to the weight's type), except
    // that bitnet.cpp hands products over several tokens to llamafile's tinyBLAS (f32
    // activations; it needs K % 8 == 0). Mainline llama.cpp was seen to keep vec_dot.
    let tiny_blas = n > 1 && k % 8 == 0 && emu == Emulation::BitnetCpp;
    let rounded;
    let xv: &[f32] = if format == WeightFormat::F16 && !tiny_blas {
        rounded = x.iter().map(|&v| ops::round_f16(v)).collect::<Vec<f32>>();
        &rounded
    } else {
        x
    };
    // Row-major over weight rows: tmp[r·n + t].
    let mut tmp = vec![0.0f32; m * n];
    tmp.par_chunks_mut(n)
        .enumerate()
        .with_min_len(8)
        .for_each_init(
            || (vec![0.0f32; k], vec![f16::ZERO; k]),
            |(wbuf, hbuf), (r, out)| {
                let row = &data[r * rb..(r + 1) * rb];
                match &prep {
                    Prepared::I8s { q, s, sum } => {
                        for (t, o) in out.iter_mut().enumerate() {
                            let dot = ops::dot_i2s_codes(row, &q[t * k..(t + 1) * k]);
                            *o = ops::i2s_epilogue(dot, sum[t], s[t], ws);
                        }
                    }
                    Prepared::Q8k { q, d } => {
                        let nb = k / QK_K;
                        for (t, o) in out.iter_mut().enumerate() {
                            *o = ops::dot_tq2_q8k(
                                row,
                                &q[t * k..(t + 1) * k],
                                &d[t * nb..(t + 1) * nb],
                            );
                        }
                    }
                    Prepared::Q8_0 { q, d } => {
                        let nb = k / QK8_0;
                        for (t, o) in out.iter_mut().enumerate() {
                            *o = ops::dot_q8_0(
                                row,
                                &q[t * k..(t + 1) * k],
                                &d[t * nb..(t + 1) * nb],
                            );
                        }
                    }
                    Prepared::F32 => {
                        if format == WeightFormat::F16 {
                            for (o, b) in hbuf.iter_mut().zip(row.chunks_exact(2)) {
                                *o = f16::from_le_bytes([b[0], b[1]]);
                            }
                            hbuf.convert_to_f32_slice(wbuf);
                        } else {
                            for (o, b) in wbuf.iter_mut().zip(row.chunks_exact(4)) {
                                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                            }
                        }
                        for (t, o) in out.iter_mut().enumerate() {
                            *o = if tiny_blas {
                                ops::dot_f32_lanes8(wbuf, &xv[t * k..(t + 1) * k])
                            } else {
                                ops::dot_f32_ggml(wbuf, &xv[t * k..(t + 1) * k])
                            };
                        }
                    }
                }
            },
        );
    let mut y = vec![0.0f32; n * m];
    for r in 0..m {
        for t in 0..n {
            y[t * m + r] = tmp[r * n + t];
        }
    }
    y
}
