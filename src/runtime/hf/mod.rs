//! An independent forward pass over a Hugging Face checkpoint directory, read the way
//! transformers reads it, to produce golden logits for the GGUF files bitconv writes.
//!
//! It shares nothing with the converter: no [`crate::convert`], no [`crate::checkpoint`] name
//! mapping or tokenizer export, no packers, no GGUF. Only pure arithmetic comes from
//! [`crate::runtime::kernels::scalar`] (RMSNorm, SiLU, ReLU², int8 activation quantization, f16 rounding).
//!
//! Architectures ([`HfArch`]): 1bitLLM `BitnetForCausalLM`, microsoft `BitNetForCausalLM`
//! (2B-4T, sub-norms, ReLU²) and `LlamaForCausalLM` with a bitnet `quantization_config`
//! (Llama3-8B-1.58, Falcon3 1.58-bit, Falcon-E). Projections ([`LinearKind`]): latent float
//! weights ternarized per tensor by absmean (1bitLLM `BitLinear`, `AutoBitLinear` online),
//! or packed uint8 codes with `weight_scale` multiplied (`AutoBitLinear` offline) or divided
//! (`BitLinear`). Activations entering each projection are quantized per token to int8 and
//! multiplied with the ternary codes as exact integer dot products; everything else is f32.
//!
//! Memory: the safetensors files are memory-mapped and read a row at a time. No matrix is
//! widened to f32 or unpacked as a whole: each matmul task turns one weight row into i8 codes
//! (or one head row into f32) and uses it for all tokens. Beyond the map (file-backed pages the
//! kernel can drop), a call holds only activations: a block about
//! `n × (4·hidden + 3·intermediate)` floats plus int8 copies, the head `2 · n × vocab` floats.
//! Latent absmean scales are computed once per projection on first use (one extra read of that
//! tensor) and cached (one f32 each). On a 0.7B random checkpoint (1bitLLM-large shapes, F16,
//! 1.4 GB) three forward passes of 20, 40 and 60 tokens took about 2, 2 and 5 s on two shared
//! cores, with 11 MB of anonymous memory at the end (the mapped file is the rest of the RSS).
//! Nothing is cached between calls except those scales: every call re-derives the codes, so
//! repeated calls cost the same.
//!
//! ```no_run
//! use bitconv::runtime::hf::{HfModel, HfOptions};
//! let m = HfModel::open("ckpt".as_ref(), &HfOptions::default())?;
//! let logits = m.forward(&[1, 2, 3])?; // one row of n_vocab logits per position
//! # Ok::<(), bitconv::runtime::hf::HfError>(())
//! ```

mod config;
mod forward;
#[cfg(test)]
mod tests;
mod weights;

use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub use config::{
    rope_inv_freq, HfActivation, HfArch, HfArchInfo, HfConfig, HfTensors, LinearKind, RopeScaling,
    HF_ARCHS,
};

use crate::runtime::kernels::scalar::I8Scale;
use forward::{
    add_into, attention, float_matmul, gated, rms_norm_rows, rope_rows, ternary_matmul, QuantActs,
};
use weights::{round_row, Projection, Store};

/// Errors of the Hugging Face reader. Every message names the file, tensor or config field.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON or safetensors file is malformed.
    #[error("{}: {reason}", file.display())]
    Parse {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A config field is missing or invalid.
    #[error("{}: {field}: {reason}", file.display())]
    Config {
        /// `config.json`.
        file: PathBuf,
        /// The field (dotted path for nested ones, e.g. `rope_scaling.factor`).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A config field asks for computation this reader does not implement.
    #[error("{}: {field} = {value} is not supported by the Hugging Face reference forward pass", file.display())]
    Unsupported {
        /// `config.json`.
        file: PathBuf,
        /// The field (dotted path for nested ones, e.g. `rope_scaling.rope_type`).
        field: String,
        /// Its value.
        value: String,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("{}: missing tensor {tensor}", file.display())]
    MissingTensor {
        /// The safetensors file or index that was searched.
        file: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// A tensor has the wrong shape or dtype for the config.
    #[error("{}: tensor {tensor}: {reason}", file.display())]
    Tensor {
        /// The safetensors file.
        file: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A call's arguments do not fit the model (bad token id, wrong row length, …).
    #[error("{what}: {reason}")]
    Input {
        /// What was wrong (names the config field or tensor it is checked against).
        what: String,
        /// Why.
        reason: String,
    },
}

/// How the float weights of the token embedding or the LM head are rounded before use, so that
/// a golden can follow a GGUF file's own lossy storage of those (non-ternary) tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FloatRounding {
    /// As stored, widened exactly to f32.
    #[default]
    F32,
    /// Rounded to f16 (nearest even).
    F16,
    /// ggml's Q8_0 round trip along each row (blocks of 32): `d = amax/127`,
    /// `q = round(x · (1/d))` (half away from zero, as ggml's reference quantizer), value
    /// `q · f16(d)`. Needs `hidden_size % 32 == 0` (checked by [`HfModel::open`]).
    Q8_0,
}

/// Options of [`HfModel::open`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HfOptions {
    /// Rounding of `model.embed_tokens.weight` rows in [`HfModel::embed`].
    pub embd: FloatRounding,
    /// Rounding of the LM head rows (`lm_head.weight`, or the embedding when tied).
    pub head: FloatRounding,
}

/// The tensors of one decoder block.
struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    attn_sub_norm: Option<Vec<f32>>,
    ffn_sub_norm: Option<Vec<f32>>,
    q: Projection,
    k: Projection,
    v: Projection,
    o: Projection,
    gate: Projection,
    up: Projection,
    down: Projection,
}

/// A Hugging Face ternary checkpoint, memory-mapped, ready to run.
pub struct HfModel {
    dir: PathBuf,
    config: HfConfig,
    opts: HfOptions,
    store: Store,
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    head_name: &'static str,
    inv_freq: Vec<f32>,
    act_rule: I8Scale,
}

/// Everything [`HfModel::forward_traced`] computes.
#[derive(Clone, Debug, PartialEq)]
pub struct HfTrace {
    /// Logits, one row of `n_vocab` values per position.
    pub logits: Vec<Vec<f32>>,
    /// Each block's output, `n × hidden` values (token-major), block 0 first.
    pub blocks: Vec<Vec<f32>>,
}

/// What a projection holds, independent of how its rows are ordered: rows × cols, a digest of
/// the multiset of its rows' ternary codes (a Llama file stores q/k rows in another order than
/// the checkpoint), how many rows it has, and the value of one code.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ProjectionDigest {
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// FNV-1a digests of each row's codes, sorted.
    pub row_hashes: Vec<u64>,
    /// The weight one code `+1` stands for (the inverse absmean, or the packed scale).
    pub unit: f32,
}

impl ProjectionDigest {
    /// A digest from per-row hashes in any order.
    pub fn new(rows: usize, cols: usize, mut row_hashes: Vec<u64>, unit: f32) -> ProjectionDigest {
        row_hashes.sort_unstable();
        ProjectionDigest {
            rows,
            cols,
            row_hashes,
            unit,
        }
    }

    /// Rows of `self` without an equal row in `other` (multiset difference).
    pub fn rows_missing_from(&self, other: &ProjectionDigest) -> usize {
        let (mut i, mut j, mut missing) = (0, 0, 0);
        let (a, b) = (&self.row_hashes, &other.row_hashes);
        while i < a.len() {
            if j >= b.len() || a[i] < b[j] {
                missing += 1;
                i += 1;
            } else if a[i] > b[j] {
                j += 1;
            } else {
                i += 1;
                j += 1;
            }
        }
        missing
    }
}

/// Sketches per embedding row ([`row_sketch`]).
pub const SKETCHES: usize = 4;

/// A row's norm and its dot products with [`SKETCHES`] fixed ±1 vectors (signs from a hash of
/// the sketch and column index): enough to tell rows apart (two different rows' sketches differ
/// by about their norm) while a rounding of the row (Q8_0, F16) moves them by about the rounding
/// error's norm.
pub fn row_sketch(row: &[f32]) -> [f32; SKETCHES + 1] {
    let mut out = [0f64; SKETCHES + 1];
    for (j, &v) in row.iter().enumerate() {
        let v = v as f64;
        out[0] += v * v;
        for (k, o) in out[1..].iter_mut().enumerate() {
            let h = (j as u64 ^ ((k as u64 + 1) << 40)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            if (h >> 63) == 0 {
                *o += v;
            } else {
                *o -= v;
            }
        }
    }
    out[0] = out[0].sqrt();
    out.map(|x| x as f32)
}

/// FNV-1a over a row of ternary codes (`-1, 0, 1`).
pub fn row_hash(codes: &[i8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in codes {
        h ^= c as u8 as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl HfModel {
    /// Opens a checkpoint directory: parses `config.json`, maps the safetensors file(s) and
    /// checks every tensor the architecture needs (presence, dtype, shape) without reading
    /// the weights.
    pub fn open(dir: &Path, opts: &HfOptions) -> Result<HfModel, HfError> {
        let config = HfConfig::from_file(&dir.join("config.json"))?;
        let store = Store::open(dir)?;
        let c = &config;
        let (h, inter) = (c.hidden_size, c.intermediate_size);

        let names = c.arch.info().tensors;
        let embed = store.get(names.embed)?;
        embed.expect_float()?;
        embed.expect_shape(&[c.vocab_size, h])?;
        let head_name = if c.tie_word_embeddings {
            names.embed
        } else {
            let t = store.get(names.lm_head).map_err(|e| match e {
                HfError::MissingTensor { file, tensor } => HfError::MissingTensor {
                    file,
                    tensor: format!("{tensor} (tie_word_embeddings is false)"),
                },
                e => e,
            })?;
            t.expect_float()?;
            t.expect_shape(&[c.vocab_size, h])?;
            names.lm_head
        };
        for (how, what) in [(opts.embd, names.embed), (opts.head, head_name)] {
            if how == FloatRounding::Q8_0 && h % 32 != 0 {
                return Err(store.get(what)?.err(format!(
                    "rows of {h} values cannot be rounded as Q8_0 (blocks of 32)"
                )));
            }
        }

        let norm = |name: String, len: usize| -> Result<Vec<f32>, HfError> {
            let t = store.get(&name)?;
            t.expect_shape(&[len])?;
            t.read_all_f32()
        };
        let sub_names = c.arch.info().sub_norms;
        let packed = c.linear.packed();
        let divide = c.linear == LinearKind::BitLinear;
        // Every layer has at least its seven projections: a count the checkpoint cannot hold is
        // an error before anything is allocated for it.
        if c.num_hidden_layers > store.len() / 7 {
            return Err(HfError::Config {
                file: dir.join("config.json"),
                field: "num_hidden_layers".into(),
                reason: format!(
                    "{} layers, but the checkpoint holds only {} tensors",
                    c.num_hidden_layers,
                    store.len()
                ),
            });
        }
        let [q, k, v, o, gate, up, down] = names.projections;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("{}.{i}", names.layers);
            let proj = |name: &str, rows: usize, cols: usize| {
                Projection::new(
                    &store,
                    format!("{p}.{name}.weight"),
                    rows,
                    cols,
                    packed,
                    divide,
                )
            };
            layers.push(Layer {
                attn_norm: norm(format!("{p}.{}.weight", names.attn_norm), h)?,
                ffn_norm: norm(format!("{p}.{}.weight", names.ffn_norm), h)?,
                attn_sub_norm: match sub_names {
                    Some((a, _)) => Some(norm(format!("{p}.{a}.weight"), c.q_dim())?),
                    None => None,
                },
                ffn_sub_norm: match sub_names {
                    Some((_, f)) => Some(norm(format!("{p}.{f}.weight"), inter)?),
                    None => None,
                },
                q: proj(q, c.q_dim(), h)?,
                k: proj(k, c.kv_dim(), h)?,
                v: proj(v, c.kv_dim(), h)?,
                o: proj(o, h, c.q_dim())?,
                gate: proj(gate, inter, h)?,
                up: proj(up, inter, h)?,
                down: proj(down, h, inter)?,
            });
        }
        let final_norm = norm(names.final_norm.into(), h)?;
        // transformers' AutoBitLinear / 1bitLLM quantize activations in float32, where torch
        // evaluates `127 / amax` as `reciprocal(amax)·127`; BitLinear in the model's dtype
        // (float64 for the goldens): one correctly rounded division.
        let act_rule = match c.linear {
            LinearKind::BitLinear => I8Scale::Divide,
            _ => I8Scale::Reciprocal,
        };
        Ok(HfModel {
            dir: dir.to_path_buf(),
            inv_freq: config.inv_freq(),
            config,
            opts: *opts,
            store,
            layers,
            final_norm,
            head_name,
            act_rule,
        })
    }

    /// The parsed `config.json`.
    pub fn config(&self) -> &HfConfig {
        &self.config
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `num_hidden_layers`.
    pub fn n_layers(&self) -> usize {
        self.config.num_hidden_layers
    }

    /// `hidden_size`.
    pub fn hidden(&self) -> usize {
        self.config.hidden_size
    }

    /// `vocab_size`.
    pub fn n_vocab(&self) -> usize {
        self.config.vocab_size
    }

    fn check_rows(&self, what: &str, x: &[f32], n: usize, width: usize) -> Result<(), HfError> {
        if x.len() != n * width || n == 0 {
            return Err(HfError::Input {
                what: what.to_string(),
                reason: format!(
                    "{} values for {n} rows of hidden_size {width} (need n ≥ 1 and n × hidden_size)",
                    x.len()
                ),
            });
        }
        Ok(())
    }

    /// Embedding lookup: `n × hidden`, token-major, rows rounded as [`HfOptions::embd`] says.
    pub fn embed(&self, tokens: &[u32]) -> Result<Vec<f32>, HfError> {
        let embed = self.config.arch.info().tensors.embed;
        let t = self.store.get(embed)?;
        let h = self.hidden();
        let mut x = vec![0.0f32; tokens.len() * h];
        for (&id, row) in tokens.iter().zip(x.chunks_exact_mut(h)) {
            if id as usize >= self.n_vocab() {
                return Err(HfError::Input {
                    what: embed.to_string(),
                    reason: format!("token id {id} is not below vocab_size {}", self.n_vocab()),
                });
            }
            t.read_f32(id as usize * h, row);
            round_row(row, self.opts.embd);
        }
        Ok(x)
    }

    /// Decoder block `i` on `n` positions starting at position 0 (causal attention over all
    /// `n` rows, RoPE positions `0..n`): input `n × hidden`, output `n × hidden` (residual
    /// included).
    pub fn block(&self, i: usize, x: &[f32], n: usize) -> Result<Vec<f32>, HfError> {
        Ok(self.block_traced(i, x, n)?.1)
    }

    /// [`HfModel::block`], also returning the stream after the attention and its residual
    /// (before the FFN): `(mid, out)`.
    pub fn block_traced(
        &self,
        i: usize,
        x: &[f32],
        n: usize,
    ) -> Result<(Vec<f32>, Vec<f32>), HfError> {
        self.block_seqs(i, x, &[n])
    }

    /// [`HfModel::block_traced`] on several independent sequences at once: `x` holds their
    /// rows one sequence after the other (`seqs` gives their lengths; each starts at position
    /// 0 and attends only to itself). The projections read each weight row once for all of
    /// them.
    pub fn block_seqs(
        &self,
        i: usize,
        x: &[f32],
        seqs: &[usize],
    ) -> Result<(Vec<f32>, Vec<f32>), HfError> {
        let n: usize = seqs.iter().sum();
        let c = &self.config;
        let layer = self.layers.get(i).ok_or_else(|| HfError::Input {
            what: "num_hidden_layers".into(),
            reason: format!(
                "block {i} does not exist (the model has {})",
                self.n_layers()
            ),
        })?;
        let layers = c.arch.info().tensors.layers;
        self.check_rows(&format!("{layers}.{i} input"), x, n, c.hidden_size)?;
        let eps = c.rms_norm_eps;
        let st = &self.store;

        // Attention: x + o_proj(sub_norm(attn(rope(q), rope(k), v))).
        let hn = rms_norm_rows(x, &layer.attn_norm, eps);
        let a = QuantActs::new(&hn, c.hidden_size, self.act_rule);
        let mut q = ternary_matmul(st, &layer.q, &a)?;
        let mut k = ternary_matmul(st, &layer.k, &a)?;
        let v = ternary_matmul(st, &layer.v, &a)?;
        let (qw, kw) = (c.q_dim(), c.kv_dim());
        let mut att = Vec::with_capacity(n * qw);
        let mut start = 0;
        for &len in seqs {
            let (qs, ks) = (
                start * qw..(start + len) * qw,
                start * kw..(start + len) * kw,
            );
            rope_rows(&mut q[qs.clone()], len, c.head_dim, &self.inv_freq);
            rope_rows(&mut k[ks.clone()], len, c.head_dim, &self.inv_freq);
            att.extend(attention(
                &q[qs],
                &k[ks.clone()],
                &v[ks],
                len,
                c.num_attention_heads,
                c.num_key_value_heads,
                c.head_dim,
            ));
            start += len;
        }
        if let Some(w) = &layer.attn_sub_norm {
            att = rms_norm_rows(&att, w, eps);
        }
        let a = QuantActs::new(&att, c.q_dim(), self.act_rule);
        let o = ternary_matmul(st, &layer.o, &a)?;
        let mut x1 = x.to_vec();
        add_into(&mut x1, &o);
        let mid = x1.clone();

        // FFN: x1 + down_proj(sub_norm(act(gate(m)) · up(m))), m = post_attention_layernorm(x1).
        let m = rms_norm_rows(&x1, &layer.ffn_norm, eps);
        let a = QuantActs::new(&m, c.hidden_size, self.act_rule);
        let mut g = ternary_matmul(st, &layer.gate, &a)?;
        let u = ternary_matmul(st, &layer.up, &a)?;
        gated(&mut g, &u, c.hidden_act);
        if let Some(w) = &layer.ffn_sub_norm {
            g = rms_norm_rows(&g, w, eps);
        }
        let a = QuantActs::new(&g, c.intermediate_size, self.act_rule);
        let d = ternary_matmul(st, &layer.down, &a)?;
        add_into(&mut x1, &d);
        Ok((mid, x1))
    }

    /// A digest of block `i`'s projection `role` (`q`, `k`, `v`, `o`, `gate`, `up`, `down`):
    /// the ternary codes row by row, and the value one code stands for.
    pub fn projection_digest(&self, i: usize, role: &str) -> Result<ProjectionDigest, HfError> {
        let layer = self.layers.get(i).ok_or_else(|| HfError::Input {
            what: "num_hidden_layers".into(),
            reason: format!("block {i} does not exist"),
        })?;
        let p = match role {
            "q" => &layer.q,
            "k" => &layer.k,
            "v" => &layer.v,
            "o" => &layer.o,
            "gate" => &layer.gate,
            "up" => &layer.up,
            "down" => &layer.down,
            _ => {
                return Err(HfError::Input {
                    what: "projection".into(),
                    reason: format!("unknown role {role:?}"),
                })
            }
        };
        let t = self.store.get(&p.name)?;
        let unit = p.epilogue(&t).unit();
        if let Some(h) = p.row_hashes() {
            return Ok(ProjectionDigest::new(p.rows, p.cols, h, unit));
        }
        let hashes: Vec<u64> = (0..p.rows)
            .into_par_iter()
            .map_init(
                || (vec![0.0f32; p.cols], vec![0i8; p.cols]),
                |(buf, codes), r| {
                    p.row_codes(&t, r, buf, codes);
                    row_hash(codes)
                },
            )
            .collect();
        self.store.release(&p.name);
        Ok(ProjectionDigest::new(p.rows, p.cols, hashes, unit))
    }

    /// [`row_sketch`] of every row of the token embedding, as stored (no rounding).
    pub fn embedding_sketches(&self) -> Result<Vec<[f32; SKETCHES + 1]>, HfError> {
        let embed = self.config.arch.info().tensors.embed;
        let t = self.store.get(embed)?;
        let h = self.hidden();
        let out = (0..self.n_vocab())
            .into_par_iter()
            .map_init(
                || vec![0.0f32; h],
                |row, id| {
                    t.read_f32(id * h, row);
                    row_sketch(row)
                },
            )
            .collect();
        self.store.release(embed);
        Ok(out)
    }

    /// The checkpoint's own names and roles of every projection, block by block.
    pub const ROLES: [&'static str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

    /// Final norm (`model.norm.weight`) and LM head (`lm_head.weight`, or the embedding when
    /// `tie_word_embeddings`), rows rounded as [`HfOptions::head`] says: `n × hidden` to
    /// `n × vocab`.
    pub fn head(&self, x: &[f32], n: usize) -> Result<Vec<f32>, HfError> {
        self.check_rows("head input", x, n, self.hidden())?;
        let hn = rms_norm_rows(x, &self.final_norm, self.config.rms_norm_eps);
        let t = self.store.get(self.head_name)?;
        let out = float_matmul(&t, self.opts.head, &hn, self.hidden());
        self.store.release(self.head_name);
        Ok(out)
    }

    /// Embedding, every block, head: one row of `n_vocab` logits per position.
    pub fn forward(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, HfError> {
        Ok(self.run(tokens, false)?.logits)
    }

    /// [`HfModel::forward`], also returning every block's output.
    pub fn forward_traced(&self, tokens: &[u32]) -> Result<HfTrace, HfError> {
        self.run(tokens, true)
    }

    fn run(&self, tokens: &[u32], keep: bool) -> Result<HfTrace, HfError> {
        let n = tokens.len();
        if n == 0 {
            return Err(HfError::Input {
                what: "tokens".into(),
                reason: "no tokens to run".into(),
            });
        }
        let mut x = self.embed(tokens)?;
        let mut blocks = Vec::new();
        for i in 0..self.n_layers() {
            x = self.block(i, &x, n)?;
            if keep {
                blocks.push(x.clone());
            }
        }
        let logits = self.head(&x, n)?;
        Ok(HfTrace {
            logits: logits
                .chunks_exact(self.n_vocab())
                .map(<[f32]>::to_vec)
                .collect(),
            blocks,
        })
    }
}
