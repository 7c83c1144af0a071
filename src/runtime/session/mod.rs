//! The forward pass, with the arithmetic of the runtime that made the file's reference logits
//! (see [`super::kernels::scalar`] for each kernel): one obvious loop per operation around a table of
//! kernels, scalar (the reference) or SIMD (the same bits, faster).
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
//!   weights: activations rounded to f16), with [`scalar::dot_f32_ggml`]'s 32-slot order;
//! * several columns, [`Emulation::BitnetCpp`]: llamafile's tinyBLAS with f32 activations,
//!   8-lane order ([`scalar::dot_f32_lanes8`]); [`Emulation::LlamaCpp`]: still `vec_dot`;
//! * bitnet.cpp's attention: `K·q` through `vec_dot` with `q` rounded to f16, a softmax over
//!   the KV cells padded to a multiple of 32, then `V·p` — for a single query through
//!   `vec_dot` with the probabilities rounded to f16, for a batch through tinyBLAS with f32
//!   probabilities;
//! * mainline llama.cpp's attention: its CPU flash attention (online softmax, value
//!   accumulator rounded to f16 after every step).
//!
//! # Kernels and threads
//!
//! Every matmul and the attention products go through a [`Kernels`] table ([`super::kernels`]):
//! the scalar kernels of [`super::kernels::scalar`] (the reference) or a SIMD table chosen at run time,
//! which computes the same bits. Matmuls that share an input run as one parallel loop over
//! output rows (`q, k, v`; `gate, up` with the activation applied in the loop), attention over
//! (token, head) pairs, with rayon; each reduction is sequential, so results are identical for
//! any number of threads. A batch of tokens is one matrix-matrix product per weight matrix.
//! Buffers live in the session, so decoding allocates nothing once it runs.

use rayon::prelude::*;

use crate::gguf::GgmlType;

use super::kernels::{self, scalar, Kernels};
use super::model::Model;
use super::RuntimeError;

mod attention;
mod matmul;

use attention::{Attention, Cache};
use matmul::{MatmulBufs, MatmulCtx};

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
    /// Hugging Face transformers (`integrations/bitnet.py`), for validation against goldens it
    /// computed. The graph and the ternary arithmetic stay bitnet.cpp's; what changes is every
    /// rounding that decides an int8 activation the way transformers decides it, because on a
    /// small model one activation rounded the other way (a value within an ulp of half-way
    /// between two integers, which bf16 weights make common) moves every later logit by about
    /// 1e-4 in row cosine:
    /// * the int8 activation scale is `reciprocal(amax)·127` ([`scalar::I8Scale::Reciprocal`]);
    /// * RMSNorm's `mean(x²)` is torch's float32 mean ([`scalar::NormMean::Torch`]);
    /// * float weights (F16/F32 LM head) multiply f32 activations, never converted to f16;
    /// * attention as [`Emulation::BitnetCpp`] (exact f32 with a [`KvPrecision::F32`] cache,
    ///   which goes with this mode: transformers keeps keys and values in the model's dtype).
    ///
    /// `AutoBitLinear` (2B-4T) quantizes in float32, as this mode does; `BitLinear` (the
    /// Llama-architecture checkpoints) quantizes in the model's dtype, which a float64 golden
    /// makes float64, so ties there can still be broken the other way.
    Transformers,
}

impl Emulation {
    /// How this runtime evaluates the int8 activation scale of I2_S matmuls.
    pub fn i8_scale(self) -> scalar::I8Scale {
        match self {
            Emulation::Transformers => scalar::I8Scale::Reciprocal,
            Emulation::BitnetCpp | Emulation::LlamaCpp => scalar::I8Scale::Divide,
        }
    }

    /// How this runtime computes RMSNorm's mean of squares.
    pub fn norm_mean(self) -> scalar::NormMean {
        match self {
            Emulation::Transformers => scalar::NormMean::Torch,
            Emulation::BitnetCpp | Emulation::LlamaCpp => scalar::NormMean::Ggml,
        }
    }

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

/// Buffers reused from one forward pass to the next (grown when a batch is larger than any
/// before), so steady-state decoding allocates nothing.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    cur: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    g: Vec<f32>,
    u: Vec<f32>,
    tables: Vec<(f32, f32)>,
    normed: Vec<f32>,
    logits: Vec<f32>,
    /// The matmuls' scratch: prepared activations, one slot per weight format, and a
    /// batch's staged results.
    acts: MatmulBufs,
}

/// Resizes `v` to `len` (keeping its capacity) and returns it.
fn sized<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    v.resize(len, T::default());
    &mut v[..len]
}

/// One sequence being evaluated: the model, the KV cache and the current position.
pub struct Session<'m> {
    model: &'m Model,
    opts: SessionOptions,
    pos: usize,
    k_cache: Vec<Cache>,
    v_cache: Vec<Cache>,
    kernels: &'static Kernels,
    buf: Buffers,
}

impl<'m> Session<'m> {
    /// A session with the default options ([`SessionOptions::for_model`]).
    pub fn new(model: &'m Model, max_ctx: usize) -> Session<'m> {
        Session::with_options(model, SessionOptions::for_model(model, max_ctx))
    }

    /// A session with explicit options, using the process-wide kernel table
    /// ([`kernels::kernels`]).
    pub fn with_options(model: &'m Model, opts: SessionOptions) -> Session<'m> {
        let hp = model.hparams();
        let n = opts.max_ctx * hp.n_head_kv * hp.head_dim;
        Session {
            model,
            opts,
            pos: 0,
            k_cache: (0..hp.n_layer).map(|_| Cache::new(opts.kv, n)).collect(),
            v_cache: (0..hp.n_layer).map(|_| Cache::new(opts.kv, n)).collect(),
            kernels: kernels::kernels(),
            buf: Buffers::default(),
        }
    }

    /// Uses `kernels` for this session's matmuls and attention (for instance
    /// [`Kernels::reference`] to run the scalar path next to the SIMD one in one process).
    /// Every table gives the same bits.
    pub fn set_kernels(&mut self, kernels: &'static Kernels) {
        self.kernels = kernels;
    }

    /// The kernel table this session uses.
    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
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
        let n_vocab = self.model.hparams().n_vocab;
        let flat = self.forward_borrowed(tokens, want)?;
        Ok(flat.chunks_exact(n_vocab).map(<[f32]>::to_vec).collect())
    }

    /// As [`Session::forward`], but returns the rows concatenated in a buffer the session
    /// reuses: once the session has seen a batch of this size, a call allocates nothing.
    pub fn forward_borrowed(
        &mut self,
        tokens: &[u32],
        want: LogitsWanted,
    ) -> Result<&[f32], RuntimeError> {
        let hp = self.model.hparams();
        self.forward_checked(tokens)?;
        // Run on a worker of the current pool: the parallel loops inside then start without
        // a cross-thread hand-off each.
        let rows = if rayon::current_thread_index().is_some() {
            self.forward_inner(tokens, want, None)
        } else {
            let this = &mut *self;
            rayon::scope(|_| this.forward_inner(tokens, want, None))
        };
        Ok(&self.buf.logits[..rows * hp.n_vocab])
    }

    /// Runs `tokens` as one batch from position 0 (the session is reset first) and records the
    /// residual stream at every block boundary, for block-by-block validation.
    ///
    /// `states[0]` of the result is the embedding output (the input of block 0), `states[i + 1]`
    /// the output of block `i`, `mid[i]` block `i`'s stream after its attention (before its
    /// FFN); each is `n × n_embd`, token-major. With `inputs` (`n_layer + 1` such buffers, from
    /// another implementation), block `i` starts from `inputs[i]` instead of the previous
    /// block's output, and the head from `inputs[n_layer]`: every block is then compared on the
    /// same input, so a small difference cannot compound through the blocks after it. With
    /// `mid_inputs` (`n_layer` buffers), each block's FFN likewise starts from the given stream.
    pub fn forward_blocks(
        &mut self,
        tokens: &[u32],
        inputs: Option<&[Vec<f32>]>,
        mid_inputs: Option<&[Vec<f32>]>,
    ) -> Result<BlockTrace, RuntimeError> {
        let hp = self.model.hparams();
        let n = tokens.len();
        let want = n * hp.n_embd;
        for (what, v, count) in [
            ("block inputs", inputs, hp.n_layer + 1),
            ("FFN inputs", mid_inputs, hp.n_layer),
        ] {
            if let Some(v) = v {
                if v.len() != count || v.iter().any(|x| x.len() != want) {
                    return Err(RuntimeError::Session(format!(
                        "forward_blocks: expected {count} {what} of {want} values"
                    )));
                }
            }
        }
        self.reset();
        let mut tap = Tap {
            inputs,
            mid_inputs,
            trace: BlockTrace::default(),
        };
        self.forward_checked(tokens)?;
        let this = &mut *self;
        let rows = rayon::scope(|_| this.forward_inner(tokens, LogitsWanted::All, Some(&mut tap)));
        tap.trace.logits = self.buf.logits[..rows * hp.n_vocab]
            .chunks_exact(hp.n_vocab)
            .map(<[f32]>::to_vec)
            .collect();
        Ok(tap.trace)
    }

    /// The checks of [`Session::forward_borrowed`] on a batch.
    fn forward_checked(&self, tokens: &[u32]) -> Result<(), RuntimeError> {
        let hp = self.model.hparams();
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
        Ok(())
    }

    /// The forward pass proper; returns the number of logit rows written to `buf.logits`.
    fn forward_inner(
        &mut self,
        tokens: &[u32],
        want: LogitsWanted,
        mut tap: Option<&mut Tap<'_>>,
    ) -> usize {
        let model = self.model;
        let kern = self.kernels;
        let hp = model.hparams();
        let n = tokens.len();
        let store = model.store();
        let e = hp.n_embd;
        let q_dim = hp.n_head * hp.head_dim;
        let kv_dim = hp.n_head_kv * hp.head_dim;
        let eps = hp.rms_eps;
        let style = hp.arch.rope_style();
        let half_rot = hp.n_rot / 2;
        let emu = self.opts.emulation;
        let pos = self.pos;

        let b = &mut self.buf;
        let x = sized(&mut b.x, n * e);
        for (t, &tok) in tokens.iter().enumerate() {
            model
                .tok_embd()
                .dequantize_row(store, tok as usize, &mut x[t * e..(t + 1) * e]);
        }

        // RoPE tables per position.
        let tables = sized(&mut b.tables, n * half_rot);
        for (t, table) in tables.chunks_exact_mut(half_rot).enumerate() {
            scalar::rope_table(
                pos + t,
                hp.n_rot,
                hp.rope_freq_base,
                hp.rope_freq_scale,
                model.rope_freqs(),
                table,
            );
        }

        sized(&mut b.cur, n * e);
        sized(&mut b.q, n * q_dim);
        sized(&mut b.k, n * kv_dim);
        sized(&mut b.v, n * kv_dim);
        sized(&mut b.attn, n * q_dim);
        sized(&mut b.o, n * e);
        sized(&mut b.g, n * hp.n_ff);
        sized(&mut b.u, n * hp.n_ff);
        let nm = emu.norm_mean();
        for (il, layer) in model.layers.iter().enumerate() {
            if let Some(tap) = tap.as_deref_mut() {
                tap.enter(il, &mut b.x);
            }
            rms_norm_rows(&b.x, &layer.attn_norm, eps, nm, &mut b.cur, e);
            let mm = MatmulCtx {
                kern,
                store,
                n,
                emu,
            };
            mm.run(
                &[&layer.wq, &layer.wk, &layer.wv],
                &b.cur,
                &mut b.acts,
                &mut [&mut b.q, &mut b.k, &mut b.v],
                None,
            );
            for t in 0..n {
                let table = &b.tables[t * half_rot..(t + 1) * half_rot];
                kern.rope(
                    &mut b.q[t * q_dim..(t + 1) * q_dim],
                    table,
                    style,
                    hp.head_dim,
                );
                kern.rope(
                    &mut b.k[t * kv_dim..(t + 1) * kv_dim],
                    table,
                    style,
                    hp.head_dim,
                );
                let at = (pos + t) * kv_dim;
                self.k_cache[il].store(at, &b.k[t * kv_dim..(t + 1) * kv_dim]);
                self.v_cache[il].store(at, &b.v[t * kv_dim..(t + 1) * kv_dim]);
            }
            let att = Attention {
                kern,
                hp,
                pos,
                n,
                kc: &self.k_cache[il],
                vc: &self.v_cache[il],
            };
            match emu {
                Emulation::BitnetCpp | Emulation::Transformers => {
                    att.softmax_attention(&b.q, &mut b.attn)
                }
                Emulation::LlamaCpp => att.flash_attention(&b.q, &mut b.attn),
            }
            if let Some(w) = &layer.attn_sub_norm {
                rms_norm_rows_in_place(&mut b.attn, w, eps, nm, q_dim);
            }
            mm.run(&[&layer.wo], &b.attn, &mut b.acts, &mut [&mut b.o], None);
            for (xv, ov) in b.x.iter_mut().zip(&b.o) {
                *xv += *ov;
            }
            if let Some(tap) = tap.as_deref_mut() {
                tap.enter_mid(il, &mut b.x);
            }
            rms_norm_rows(&b.x, &layer.ffn_norm, eps, nm, &mut b.cur, e);
            // act(gate)·up is applied inside the parallel loop, into `g`.
            mm.run(
                &[&layer.w_gate, &layer.w_up],
                &b.cur,
                &mut b.acts,
                &mut [&mut b.g, &mut b.u],
                Some(hp.activation),
            );
            if let Some(w) = &layer.ffn_sub_norm {
                rms_norm_rows_in_place(&mut b.g, w, eps, nm, hp.n_ff);
            }
            mm.run(&[&layer.w_down], &b.g, &mut b.acts, &mut [&mut b.o], None);
            for (xv, dv) in b.x.iter_mut().zip(&b.o) {
                *xv += *dv;
            }
        }
        self.pos += n;
        if let Some(tap) = tap {
            tap.enter(model.layers.len(), &mut b.x);
        }

        let (first, rows) = match want {
            LogitsWanted::None => return 0,
            LogitsWanted::Last => (n - 1, 1),
            LogitsWanted::All => (0, n),
        };
        let normed = sized(&mut b.normed, rows * e);
        for (i, o) in normed.chunks_exact_mut(e).enumerate() {
            let t = first + i;
            let xt = &b.x[t * e..(t + 1) * e];
            let scale = scalar::rms_scale(xt, eps, nm);
            for ((o, &v), &g) in o.iter_mut().zip(xt).zip(model.output_norm()) {
                *o = (v * scale) * g;
            }
        }
        sized(&mut b.logits, rows * hp.n_vocab);
        let mm = MatmulCtx {
            kern,
            store,
            n: rows,
            emu,
        };
        mm.run(
            &[model.head()],
            &b.normed,
            &mut b.acts,
            &mut [&mut b.logits],
            None,
        );
        rows
    }
}

/// The residual stream of one batch at every block boundary ([`Session::forward_blocks`]).
#[derive(Clone, Debug, Default)]
pub struct BlockTrace {
    /// `n_layer + 1` buffers: the embedding output, then each block's output (`n × n_embd`).
    pub states: Vec<Vec<f32>>,
    /// Each block's stream after its attention and residual, before its FFN.
    pub mid: Vec<Vec<f32>>,
    /// The logits of every position.
    pub logits: Vec<Vec<f32>>,
}

/// What [`Session::forward_blocks`] records and replaces.
struct Tap<'a> {
    inputs: Option<&'a [Vec<f32>]>,
    mid_inputs: Option<&'a [Vec<f32>]>,
    trace: BlockTrace,
}

impl Tap<'_> {
    /// Between block `i`'s attention and its FFN: records, then replaces with the given stream.
    fn enter_mid(&mut self, i: usize, x: &mut [f32]) {
        self.trace.mid.push(x.to_vec());
        if let Some(m) = self.mid_inputs {
            x.copy_from_slice(&m[i]);
        }
    }

    /// At the boundary before block `i` (or the head, `i = n_layer`): records the stream the
    /// file computed, then replaces it with the given input, if any.
    fn enter(&mut self, i: usize, x: &mut [f32]) {
        self.trace.states.push(x.to_vec());
        if let Some(inp) = self.inputs {
            x.copy_from_slice(&inp[i]);
        }
    }
}

/// The RMSNorm scales `1/sqrt(mean(x²) + eps)` of up to eight rows of `width` values, with the
/// arithmetic of [`scalar::rms_scale`]; for [`scalar::NormMean::Ggml`] (each row's squares summed in
/// f64 in order) the rows' sums are interleaved so that their dependent additions overlap.
#[allow(clippy::needless_range_loop)]
fn rms_scales(x: &[f32], width: usize, eps: f32, mean: scalar::NormMean) -> [f32; 8] {
    let rows = x.len() / width;
    debug_assert!(rows <= 8 && rows * width == x.len());
    if mean != scalar::NormMean::Ggml {
        return std::array::from_fn(|j| {
            if j < rows {
                scalar::rms_scale(&x[j * width..(j + 1) * width], eps, mean)
            } else {
                0.0
            }
        });
    }
    let mut sums = [0.0f64; 8];
    if rows == 8 {
        // Column by column across the eight rows: independent chains, each in its own order.
        let r: [&[f32]; 8] = std::array::from_fn(|j| &x[j * width..(j + 1) * width]);
        for i in 0..width {
            for j in 0..8 {
                let v = r[j][i];
                sums[j] += (v * v) as f64;
            }
        }
    } else {
        for (j, row) in x.chunks_exact(width).enumerate() {
            for &v in row {
                sums[j] += (v * v) as f64;
            }
        }
    }
    std::array::from_fn(|j| {
        let mean = (sums[j] / width as f64) as f32;
        1.0f32 / (mean + eps).sqrt()
    })
}

/// RMSNorm of every `width`-row of `x` into `y` (as [`scalar::rms_norm`]), eight rows at a time,
/// in parallel for batches.
fn rms_norm_rows(
    x: &[f32],
    w: &[f32],
    eps: f32,
    mean: scalar::NormMean,
    y: &mut [f32],
    width: usize,
) {
    let y = &mut y[..x.len()];
    let group = |(o, xs): (&mut [f32], &[f32])| {
        let sc = rms_scales(xs, width, eps, mean);
        for ((orow, xrow), &scale) in o
            .chunks_exact_mut(width)
            .zip(xs.chunks_exact(width))
            .zip(&sc)
        {
            for ((o, &v), &g) in orow.iter_mut().zip(xrow).zip(w) {
                *o = (v * scale) * g;
            }
        }
    };
    if x.len() >= 16 * width {
        y.par_chunks_mut(8 * width)
            .zip(x.par_chunks(8 * width))
            .for_each(group);
    } else {
        y.chunks_mut(8 * width)
            .zip(x.chunks(8 * width))
            .for_each(group);
    }
}

/// RMSNorm of every `width`-row of `x`, in place.
fn rms_norm_rows_in_place(
    x: &mut [f32],
    w: &[f32],
    eps: f32,
    mean: scalar::NormMean,
    width: usize,
) {
    let group = |xs: &mut [f32]| {
        let sc = rms_scales(xs, width, eps, mean);
        for (row, &scale) in xs.chunks_exact_mut(width).zip(&sc) {
            for (v, &g) in row.iter_mut().zip(w) {
                *v = (*v * scale) * g;
            }
        }
    };
    if x.len() >= 16 * width {
        x.par_chunks_mut(8 * width).for_each(group);
    } else {
        x.chunks_mut(8 * width).for_each(group);
    }
}
