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

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::gguf::GgmlType;

use super::format::{FloatType, WeightFormat, QK8_0, QK_K};
use super::kernels::{self, scalar, FloatOrder, Kernels, Q8kActs};
use super::model::{Activation, Matrix, Model, Store};
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

/// Activations prepared for one weight format: int8 (I2_S), Q8_K (TQ2_0), Q8_0, or f32
/// (rounded to f16 precision for ggml's F16 `vec_dot`).
#[derive(Default)]
struct Acts {
    q: Vec<i8>,
    s: Vec<f32>,
    sum: Vec<i32>,
    d: Vec<f32>,
    bsum: Vec<i32>,
    xr: Vec<f32>,
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
    /// Prepared activations, one slot per weight format.
    acts: [Acts; 5],
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
                Some(hp.arch.activation()),
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

thread_local! {
    /// Per-thread scratch of the parallel loops (attention rows, norm copies).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread scratch of a matmul chunk over a batch.
    static CHUNK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The attention of one layer for a batch.
struct Attention<'a> {
    kern: &'static Kernels,
    hp: &'a super::Hparams,
    pos: usize,
    n: usize,
    kc: &'a Cache,
    vc: &'a Cache,
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
    fn softmax_attention(&self, q: &[f32], out: &mut [f32]) {
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
    fn flash_attention(&self, q: &[f32], out: &mut [f32]) {
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

fn format_slot(f: WeightFormat) -> usize {
    match f {
        WeightFormat::I2s => 0,
        WeightFormat::Tq2 => 1,
        WeightFormat::Q8_0 => 2,
        WeightFormat::F16 => 3,
        WeightFormat::F32 => 4,
    }
}

/// Runs `f(t)` for every token `t < n`, in parallel for a batch.
fn per_token(n: usize, f: impl Fn(usize) + Sync + Send) {
    if n >= 4 {
        (0..n).into_par_iter().for_each(f);
    } else {
        (0..n).for_each(f);
    }
}

/// A pointer to a token-major buffer whose per-token rows are written by different tasks.
#[derive(Clone, Copy)]
struct Rows<T>(*mut T, usize);
// SAFETY: each task writes only its own token's row (see `Rows::row`).
unsafe impl<T> Send for Rows<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Rows<T> {}

impl<T> Rows<T> {
    fn new(v: &mut [T], width: usize) -> Rows<T> {
        Rows(v.as_mut_ptr(), width)
    }

    /// Row `t`.
    ///
    /// # Safety
    /// `t` must be in range and no other live reference may cover row `t`.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, t: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(t * self.1), self.1)
    }
}

/// Quantizes (or rounds) the `n × k` activations `x` for weights of `format` into `a`.
#[allow(clippy::too_many_arguments)]
fn prepare(
    kern: &Kernels,
    a: &mut Acts,
    format: WeightFormat,
    x: &[f32],
    n: usize,
    k: usize,
    round: bool,
    rule: scalar::I8Scale,
) {
    match format {
        WeightFormat::I2s => {
            // Rows of whole 128-value blocks; the padding stays zero (see `WeightFormat::stride`).
            let kp = format.stride(k);
            let qv = sized(&mut a.q, n * kp);
            if kp != k {
                qv.fill(0);
            }
            let q = Rows::new(qv, kp);
            let s = Rows::new(sized(&mut a.s, n), 1);
            let sum = Rows::new(sized(&mut a.sum, n), 1);
            // SAFETY: token `t` writes only its own rows of `q`, `s` and `sum`.
            per_token(n, |t| unsafe {
                let (sv, su) =
                    kern.quantize_i8s_with(&x[t * k..(t + 1) * k], &mut q.row(t)[..k], rule);
                s.row(t)[0] = sv;
                sum.row(t)[0] = su;
            });
        }
        WeightFormat::Tq2 => {
            let q = Rows::new(sized(&mut a.q, n * k), k);
            let d = Rows::new(sized(&mut a.d, n * k / QK_K), k / QK_K);
            let bsum = Rows::new(sized(&mut a.bsum, n * k / 32), k / 32);
            // SAFETY: token `t` writes only its own rows.
            per_token(n, |t| unsafe {
                kern.quantize_q8k(&x[t * k..(t + 1) * k], q.row(t), d.row(t), bsum.row(t));
            });
        }
        WeightFormat::Q8_0 => {
            let q = sized(&mut a.q, n * k);
            let d = sized(&mut a.d, n * k / QK8_0);
            kern.quantize_q8_0(x, q, d);
        }
        WeightFormat::F16 | WeightFormat::F32 => {
            if round {
                let xr = sized(&mut a.xr, n * k);
                for (o, &v) in xr.iter_mut().zip(x) {
                    *o = scalar::round_f16(v);
                }
            }
        }
    }
}

/// A raw pointer that may be shared between the tasks of one parallel loop, each of which
/// writes a disjoint range.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: only used to hand disjoint output ranges to the tasks of a parallel loop that ends
// before the borrowed buffers are used again.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

/// `g[i] = act(g[i])·u[i]`, the gated FFN's activation: scalar::silu or scalar::relu_sqr, bit for bit,
/// with SiLU's exponentials through the kernel table (the C library's bits) a stack buffer at a
/// time.
fn gate(kern: &Kernels, act: Activation, g: &mut [f32], u: &[f32]) {
    debug_assert_eq!(g.len(), u.len());
    match act {
        Activation::Silu => {
            let mut e = [0.0f32; 64];
            for (g, u) in g.chunks_mut(64).zip(u.chunks(64)) {
                let e = &mut e[..g.len()];
                for (e, &x) in e.iter_mut().zip(g.iter()) {
                    *e = -x;
                }
                kern.exp(e);
                for ((g, &u), &e) in g.iter_mut().zip(u).zip(e.iter()) {
                    *g = scalar::silu_with(*g, e) * u;
                }
            }
        }
        Activation::Relu2 => {
            for (g, &u) in g.iter_mut().zip(u) {
                *g = scalar::relu_sqr(*g) * u;
            }
        }
    }
}

/// Matmuls of one forward pass: kernel table, where the weights are, batch size, emulation.
#[derive(Clone, Copy)]
struct MatmulCtx<'a> {
    kern: &'static Kernels,
    store: Store<'a>,
    n: usize,
    emu: Emulation,
}

/// At most this many matrices share one input in a matmul group.
const MAX_GROUP: usize = 3;

impl MatmulCtx<'_> {
    /// `outs[i] = ws[i]·x` for every matrix of the group (all with `K` columns; `x` holds
    /// `n × K` values, `outs[i]` gets `n × M_i`, token-major), in one parallel loop over output
    /// rows. With `act`, the group is `[gate, up]` and `outs[0]` receives `act(gate)·up`.
    fn run(
        &self,
        ws: &[&Matrix],
        x: &[f32],
        acts: &mut [Acts; 5],
        outs: &mut [&mut Vec<f32>],
        act: Option<Activation>,
    ) {
        let n = self.n;
        let k = ws[0].cols();
        debug_assert!(ws.len() <= MAX_GROUP && ws.len() == outs.len());
        debug_assert!(ws.iter().all(|w| w.cols() == k));
        debug_assert!(act.is_none() || (ws.len() == 2 && ws[0].rows() == ws[1].rows()));
        let x = &x[..n * k];
        // Float weights: ggml's vec_dot (activations first converted to the weight's type),
        // except that bitnet.cpp hands products over several tokens to llamafile's tinyBLAS
        // (f32 activations; it needs K % 8 == 0). Mainline llama.cpp was seen to keep vec_dot.
        // transformers multiplies in the model's dtype (f32 or wider): f32 activations here.
        let tiny_blas = (n > 1 && k % 8 == 0 && self.emu == Emulation::BitnetCpp)
            || self.emu == Emulation::Transformers;
        let rule = self.emu.i8_scale();
        let mut done = [false; 5];
        for w in ws {
            let slot = format_slot(w.format());
            if !done[slot] {
                done[slot] = true;
                let round = w.format() == WeightFormat::F16 && !tiny_blas;
                prepare(self.kern, &mut acts[slot], w.format(), x, n, k, round, rule);
            }
        }
        // Every task writes its rows of each output (token-major, `n × M_i`) directly.
        let mut dest = [SharedOut(std::ptr::null_mut()); MAX_GROUP];
        for (i, (w, o)) in ws.iter().zip(outs.iter_mut()).enumerate() {
            dest[i] = SharedOut(sized(o, w.rows() * n).as_mut_ptr());
        }
        // Split the rows into chunks: a few per thread for balance, each big enough that the
        // scheduling cost stays small.
        let threads = rayon::current_num_threads().max(1);
        let work: usize = ws.iter().map(|w| w.rows() * w.row_bytes() * n).sum();
        // One token: at most 256 KiB of weights per chunk, or the last chunks of a large
        // matrix (an LM head of 49 MB came in 3 MB pieces) leave one thread streaming alone
        // while the other waits.
        let per_chunk = (work / (8 * threads)).max(32 << 10);
        let per_chunk = if n == 1 {
            per_chunk.min(256 << 10)
        } else {
            per_chunk
        };
        let chunk_rows: [usize; MAX_GROUP] = std::array::from_fn(|i| {
            ws.get(i).map_or(1, |w| {
                let r = (per_chunk / (w.row_bytes() * n).max(1)).max(4);
                r.div_ceil(4) * 4
            })
        });
        let paired = act.is_some();
        let n_chunks: [usize; MAX_GROUP] = std::array::from_fn(|i| match ws.get(i) {
            Some(w) if !(paired && i == 1) => w.rows().div_ceil(chunk_rows[i]),
            _ => 0,
        });
        let total_chunks: usize = n_chunks.iter().sum();
        let acts = &*acts;
        let dest = &dest;
        let job = |c: usize| {
            let (mut i, mut c) = (0, c);
            while c >= n_chunks[i] {
                c -= n_chunks[i];
                i += 1;
            }
            let m = ws[i].rows();
            let r0 = c * chunk_rows[i];
            let r1 = (r0 + chunk_rows[i]).min(m);
            let len = (r1 - r0) * n;
            let acts_of = |w: &Matrix| &acts[format_slot(w.format())];
            let combine = |g: &mut [f32], u: &[f32]| {
                if let Some(a) = act {
                    gate(self.kern, a, g, u);
                }
            };
            if n == 1 {
                // SAFETY: chunk `c` of matrix `i` owns rows r0..r1 of that matrix's output
                // (and of `up`'s, for the paired gate); no other task touches them.
                let out = unsafe { std::slice::from_raw_parts_mut(dest[i].0.add(r0), len) };
                self.rows(ws[i], acts_of(ws[i]), x, tiny_blas, r0..r1, 0..1, out);
                if paired {
                    // SAFETY: as above.
                    let up = unsafe { std::slice::from_raw_parts_mut(dest[1].0.add(r0), len) };
                    self.rows(ws[1], acts_of(ws[1]), x, tiny_blas, r0..r1, 0..1, up);
                    combine(out, up);
                }
                return;
            }
            // A batch: blocks of tokens whose activations fit the L1 cache, a multiple of the
            // kernel's token tile; each block is computed row-major (`r·nt + t`) in scratch,
            // then written transposed.
            let tt = self.kern.token_tile(ws[i].format());
            let tb = (16384 / k).clamp(tt, 8 * tt) / tt * tt;
            CHUNK.with_borrow_mut(|buf| {
                let buf = sized(buf, 2 * (r1 - r0) * tb);
                let mut t0 = 0;
                while t0 < n {
                    let t1 = (t0 + tb).min(n);
                    let nt = t1 - t0;
                    let (a, rest) = buf.split_at_mut((r1 - r0) * nt);
                    let b = &mut rest[..(r1 - r0) * nt];
                    self.rows(ws[i], acts_of(ws[i]), x, tiny_blas, r0..r1, t0..t1, a);
                    if paired {
                        self.rows(ws[1], acts_of(ws[1]), x, tiny_blas, r0..r1, t0..t1, b);
                        combine(a, b);
                    }
                    for t in 0..nt {
                        // SAFETY: row `t0 + t` of the output holds `m` values; this task owns
                        // columns r0..r1 of every row.
                        let y = unsafe {
                            std::slice::from_raw_parts_mut(
                                dest[i].0.add((t0 + t) * m + r0),
                                r1 - r0,
                            )
                        };
                        for (r, v) in y.iter_mut().enumerate() {
                            *v = a[r * nt + t];
                        }
                    }
                    t0 = t1;
                }
            });
        };
        if total_chunks == 1 {
            job(0);
        } else {
            (0..total_chunks)
                .into_par_iter()
                .with_max_len(1)
                .for_each(job);
        }
    }

    /// Rows `rows` of `w` times the prepared activations of tokens `toks` into `out`
    /// (`r·nt + t`, `nt` = the number of tokens).
    #[allow(clippy::too_many_arguments)]
    fn rows(
        &self,
        w: &Matrix,
        a: &Acts,
        x: &[f32],
        tiny_blas: bool,
        rows: std::ops::Range<usize>,
        toks: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let nt = toks.len();
        let k = w.cols();
        let rb = w.row_bytes();
        let data = &w.bytes(self.store)[rows.start * rb..rows.end * rb];
        let (t0, t1) = (toks.start, toks.end);
        match w.format() {
            WeightFormat::I2s => {
                let dots = as_i32_mut(out);
                let kp = w.format().stride(k);
                self.kern
                    .i2s_dots(data, kp, &a.q[t0 * kp..t1 * kp], nt, dots);
                let ws = w.scale();
                let (sums, scales) = (&a.sum[t0..t1], &a.s[t0..t1]);
                if nt == 1 {
                    // One token: one activation sum and scale for every row, a loop the compiler
                    // vectorizes (the same operations per value, so the same bits).
                    let (su, sa) = (sums[0], scales[0]);
                    for o in out.iter_mut() {
                        *o = scalar::i2s_epilogue(o.to_bits() as i32, su, sa, ws);
                    }
                } else {
                    for row in out.chunks_exact_mut(nt) {
                        for ((o, &su), &sa) in row.iter_mut().zip(sums).zip(scales) {
                            *o = scalar::i2s_epilogue(o.to_bits() as i32, su, sa, ws);
                        }
                    }
                }
            }
            WeightFormat::Tq2 => {
                let (nb, ns) = (k / QK_K, k / 32);
                let acts = Q8kActs {
                    q: &a.q[t0 * k..t1 * k],
                    d: &a.d[t0 * nb..t1 * nb],
                    bsum: &a.bsum[t0 * ns..t1 * ns],
                };
                self.kern
                    .tq2_dots(data, k, acts, w.tq2_shared_scale(), nt, out)
            }
            WeightFormat::Q8_0 => {
                let nb = k / QK8_0;
                self.kern.q8_0_dots(
                    data,
                    k,
                    &a.q[t0 * k..t1 * k],
                    &a.d[t0 * nb..t1 * nb],
                    nt,
                    out,
                )
            }
            WeightFormat::F16 | WeightFormat::F32 => {
                let ty = if w.format() == WeightFormat::F16 {
                    FloatType::F16
                } else {
                    FloatType::F32
                };
                let (order, xv) = if tiny_blas {
                    (FloatOrder::Lanes8, x)
                } else if w.format() == WeightFormat::F16 {
                    (FloatOrder::Ggml, &a.xr[..])
                } else {
                    (FloatOrder::Ggml, x)
                };
                self.kern
                    .float_dots(order, ty, data, rb, k, &xv[t0 * k..t1 * k], nt, out);
            }
        }
    }
}

/// Views f32 storage as i32 storage of the same length (the I2_S kernel writes its integer
/// dot products where the f32 results then go).
fn as_i32_mut(v: &mut [f32]) -> &mut [i32] {
    // SAFETY: f32 and i32 have the same size and alignment and every bit pattern is valid for
    // both; the returned slice borrows `v` exclusively.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<i32>(), v.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batched gate equals the scalar definitions bit for bit on every kernel table, for
    /// lengths that are not multiples of the buffer or the vector width and for values where the
    /// vector `expf` hands over to the library (|x| >= 85, infinities).
    #[test]
    fn gate_equals_the_scalar_activations() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut g0: Vec<f32> = (0..203)
            .map(|_| (next() % 20_001) as f32 / 1000.0 - 10.0)
            .collect();
        g0.extend([
            0.0,
            -0.0,
            85.5,
            -85.5,
            100.0,
            -100.0,
            1e-30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let u: Vec<f32> = (0..g0.len())
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        for act in [Activation::Silu, Activation::Relu2] {
            let want: Vec<u32> = g0
                .iter()
                .zip(&u)
                .map(|(&x, &u)| {
                    let a = match act {
                        Activation::Silu => scalar::silu(x),
                        Activation::Relu2 => scalar::relu_sqr(x),
                    };
                    (a * u).to_bits()
                })
                .collect();
            for kern in kernels::available() {
                for len in [0, 1, 7, 63, 64, 65, 130, g0.len()] {
                    let mut g = g0[..len].to_vec();
                    gate(kern, act, &mut g, &u[..len]);
                    let got: Vec<u32> = g.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want[..len], "{} {act:?} len {len}", kern.name());
                }
            }
        }
    }
}
