//! Dummy models of every bitnet.cpp size and every output type, for layout and kernel testing
//! (FORMATS.md §5), generated in constant memory.
//!
//! Weights are seeded and reproducible: every row of every tensor has its own random stream,
//! derived from `(seed, tensor index, row)`, so a file is the same whatever the thread count and
//! any row block can be generated on its own. Ternary weights have about 40% zeros and a
//! per-tensor scale; norms are near 1; the token embedding is small Gaussian noise. A built-in
//! 1000-piece SentencePiece vocabulary (padded to the model's vocab size) makes the files
//! runnable: they generate nonsense, but not one repeated token.
//!
//! Tensors are produced one row block at a time, in parallel, and streamed into the GGUF writer;
//! TL2, whose magnitudes, signs and two-part regions each span the whole tensor, regenerates the
//! rows once per region instead of holding the tensor.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use rayon::prelude::*;

use crate::checkpoint::tokenizer::{Flavor as TokFlavor, TokenizerMeta};
use crate::checkpoint::{map_name, Activation, Arch, Family, Mapped, ModelConfig};
use crate::convert::{float_type, metadata_for, ConvertOptions, Flavor, OutType, Progress};
use crate::gguf::{GgmlType, GgufWriter, TensorSpec, Value};
use crate::quant::layouts::{
    i2s, pad32, params, q8_0, scale_slot, tl1, tl2, tq1_0, tq2_0, KernelEntry, LayoutError,
    TlLayout, TlParams,
};
use crate::util::AtomicFile;

/// A model size of bitnet.cpp's dummy generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Name (`125M`, `7B`, …).
    pub name: &'static str,
    /// Hidden size.
    pub hidden: usize,
    /// FFN intermediate size.
    pub intermediate: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads (= KV heads in the reference generator).
    pub heads: usize,
}

/// The sizes of `generate-dummy-bitnet-model.py` (FORMATS.md §5).
pub const SIZES: &[Size] = &[
    Size {
        name: "125M",
        hidden: 768,
        intermediate: 3072,
        layers: 11,
        heads: 12,
    },
    Size {
        name: "350M",
        hidden: 1024,
        intermediate: 3072,
        layers: 24,
        heads: 16,
    },
    Size {
        name: "1B",
        hidden: 2048,
        intermediate: 3584,
        layers: 24,
        heads: 32,
    },
    Size {
        name: "1.5B",
        hidden: 1536,
        intermediate: 9216,
        layers: 28,
        heads: 32,
    },
    Size {
        name: "2.7B",
        hidden: 3072,
        intermediate: 7680,
        layers: 24,
        heads: 32,
    },
    Size {
        name: "3.8B",
        hidden: 3840,
        intermediate: 8192,
        layers: 24,
        heads: 32,
    },
    Size {
        name: "7B",
        hidden: 4096,
        intermediate: 12032,
        layers: 32,
        heads: 32,
    },
    Size {
        name: "13B",
        hidden: 5120,
        intermediate: 13824,
        layers: 40,
        heads: 40,
    },
    Size {
        name: "30B",
        hidden: 6656,
        intermediate: 16384,
        layers: 60,
        heads: 52,
    },
    Size {
        name: "70B",
        hidden: 8192,
        intermediate: 24576,
        layers: 80,
        heads: 64,
    },
    Size {
        name: "100B",
        hidden: 8192,
        intermediate: 45568,
        layers: 72,
        heads: 64,
    },
];

/// The vocabulary size of the reference dummies (LLaMA-2's 32000 + 2 added tokens).
pub const DEFAULT_VOCAB: usize = 32002;

/// Looks a size up by name (case-insensitive).
pub fn size(name: &str) -> Option<Size> {
    SIZES
        .iter()
        .copied()
        .find(|s| s.name.eq_ignore_ascii_case(name))
}

/// Everything a dummy model is made of.
#[derive(Clone, Debug)]
pub struct DummySpec {
    /// Architecture.
    pub arch: Arch,
    /// Hidden size.
    pub hidden: usize,
    /// FFN size.
    pub intermediate: usize,
    /// Layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Vocabulary size (at least the built-in vocabulary's 1000 pieces).
    pub vocab: usize,
    /// Output type.
    pub out_type: OutType,
    /// Seed.
    pub seed: u64,
    /// `general.name`.
    pub name: String,
    /// TL kernel parameters from a `kernel_config.ini`, over derived ones.
    pub kernel_config: Option<Vec<KernelEntry>>,
}

/// Dummy generation errors.
#[derive(Debug, thiserror::Error)]
pub enum DummyError {
    /// The requested shape is invalid or no layout can hold it.
    #[error("{0}")]
    Shape(String),
    /// A tensor's layout rejected it.
    #[error("tensor {tensor}: {source}")]
    Layout {
        /// Tensor.
        tensor: String,
        /// Cause.
        source: LayoutError,
    },
    /// Writing failed.
    #[error("{}: {what}", path.display())]
    Output {
        /// The output.
        path: PathBuf,
        /// What failed.
        what: String,
    },
}

/// Where a dummy tensor's values come from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Ternary { scale: f32 },
    Norm,
    Embedding,
}

/// One tensor of the plan.
#[derive(Clone, Debug)]
pub struct DummyTensor {
    /// Name, dims, type.
    pub spec: TensorSpec,
    /// Rows.
    pub m: usize,
    /// Columns.
    pub k: usize,
    /// TL parameters.
    pub tl: Option<TlParams>,
    /// Bytes.
    pub nbytes: u64,
    kind: Kind,
    index: u64,
}

/// The dummy plan: metadata and tensors.
#[derive(Clone, Debug)]
pub struct DummyPlan {
    /// Metadata in write order.
    pub kv: Vec<(String, Value)>,
    /// Tensors in write order.
    pub tensors: Vec<DummyTensor>,
    /// TL parameters per distinct shape (for `--emit-kernel-config`).
    pub kernel_entries: Vec<KernelEntry>,
    /// File size.
    pub file_size: u64,
    /// Parameter count.
    pub parameters: u64,
}

impl DummyPlan {
    /// The plan as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "n_kv": self.kv.len(),
            "n_tensors": self.tensors.len(),
            "parameters": self.parameters,
            "file_size": self.file_size,
            "tensors": self.tensors.iter().map(|t| serde_json::json!({
                "name": t.spec.name, "type": t.spec.ty.name(), "dims": t.spec.dims, "bytes": t.nbytes,
                "tl_params": t.tl.map(|p| serde_json::json!({"bm": p.bm, "bk": p.bk, "bmm": p.bmm})),
            })).collect::<Vec<_>>(),
        })
    }
}

/// SplitMix64: a tiny, well-distributed generator; one stream per row.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, tensor: u64, row: u64) -> Rng {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.0 = r.0.wrapping_add(tensor.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let _ = r.next();
        r.0 = r.0.wrapping_add(row.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
        let _ = r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately standard normal (sum of four uniforms, variance-corrected).
    fn normal(&mut self) -> f32 {
        let s = self.unit() + self.unit() + self.unit() + self.unit();
        (s - 2.0) * 3f32.sqrt()
    }
}

/// Ternary codes of one row: P(0) ≈ 0.40, P(+1) = P(−1) ≈ 0.30.
fn ternary_row(seed: u64, t: &DummyTensor, row: usize, out: &mut [i8]) {
    let mut rng = Rng::new(seed, t.index, row as u64);
    for chunk in out.chunks_mut(8) {
        let bits = rng.next();
        for (j, o) in chunk.iter_mut().enumerate() {
            let b = (bits >> (8 * j)) as u8;
            *o = if b < 102 {
                0
            } else if b < 179 {
                1
            } else {
                -1
            };
        }
    }
}

/// Float values of one row (norms, embeddings) or fake-quantized ternary values.
fn value_row(seed: u64, t: &DummyTensor, row: usize, codes: &mut Vec<i8>, out: &mut [f32]) {
    match t.kind {
        Kind::Ternary { scale } => {
            codes.resize(out.len(), 0);
            ternary_row(seed, t, row, codes);
            for (o, &c) in out.iter_mut().zip(codes.iter()) {
                *o = c as f32 * scale;
            }
        }
        Kind::Norm => {
            let mut rng = Rng::new(seed, t.index, row as u64);
            for o in out {
                *o = 1.0 + 0.05 * (rng.unit() - 0.5);
            }
        }
        Kind::Embedding => {
            let mut rng = Rng::new(seed, t.index, row as u64);
            for o in out {
                *o = 0.02 * rng.normal();
            }
        }
    }
}

/// The HF tensor names of a checkpoint of this architecture, with PyTorch shapes.
fn hf_tensors(s: &DummySpec) -> Vec<(String, Vec<usize>)> {
    let (h, f) = (s.hidden, s.intermediate);
    let hd = h / s.heads;
    let (q, kv) = (s.heads * hd, s.kv_heads * hd);
    let mut v = vec![
        ("model.embed_tokens.weight".to_string(), vec![s.vocab, h]),
        ("model.norm.weight".to_string(), vec![h]),
    ];
    if s.arch == Arch::Llama {
        v.push(("lm_head.weight".into(), vec![s.vocab, h]));
    }
    for l in 0..s.layers {
        let p = format!("model.layers.{l}.");
        let mut add = |n: &str, shape: Vec<usize>| v.push((format!("{p}{n}"), shape));
        add("input_layernorm.weight", vec![h]);
        add("post_attention_layernorm.weight", vec![h]);
        add("self_attn.q_proj.weight", vec![q, h]);
        add("self_attn.k_proj.weight", vec![kv, h]);
        add("self_attn.v_proj.weight", vec![kv, h]);
        add("self_attn.o_proj.weight", vec![h, q]);
        add("mlp.gate_proj.weight", vec![f, h]);
        add("mlp.up_proj.weight", vec![f, h]);
        add("mlp.down_proj.weight", vec![h, f]);
        if s.arch != Arch::Llama {
            add("self_attn.attn_sub_norm.weight", vec![q]);
            add("mlp.ffn_sub_norm.weight", vec![f]);
        }
    }
    v.sort();
    v
}

fn model_config(s: &DummySpec) -> ModelConfig {
    let (activation, family, hf) = match s.arch {
        Arch::Bitnet => (Activation::Silu, Family::OneBitLlm, "BitnetForCausalLM"),
        Arch::BitnetB158 => (Activation::Relu2, Family::BitNet2B4T, "BitNetForCausalLM"),
        Arch::Llama => (Activation::Silu, Family::LlamaTernary, "LlamaForCausalLM"),
    };
    ModelConfig {
        hf_architecture: hf.into(),
        model_type: None,
        arch: s.arch,
        family,
        activation,
        hidden_size: s.hidden as u64,
        intermediate_size: s.intermediate as u64,
        num_layers: s.layers as u64,
        num_heads: s.heads as u64,
        num_kv_heads: s.kv_heads as u64,
        has_kv_heads_key: true,
        head_dim: (s.hidden / s.heads) as u64,
        has_head_dim_key: false,
        vocab_size: s.vocab as u64,
        context_length: Some(2048),
        rope_theta: Some(10000.0),
        rms_norm_eps: Some(1e-5),
        tie_word_embeddings: s.arch != Arch::Llama,
        torch_dtype: Some("float32".into()),
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        pad_token_id: None,
        rope_linear_factor: None,
        quantization: None,
    }
}

/// The built-in tokenizer's metadata, padded to `vocab` entries.
fn tokenizer(cfg: &ModelConfig, flavor: Flavor) -> Result<TokenizerMeta, DummyError> {
    let dir =
        tempfile::tempdir().map_err(|e| DummyError::Shape(format!("temporary directory: {e}")))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.path().join(name), bytes)
            .map_err(|e| DummyError::Shape(format!("temporary directory: {e}")))
    };
    write("tokenizer.model", include_bytes!("tokenizer.model"))?;
    write(
        "tokenizer_config.json",
        include_bytes!("tokenizer_config.json"),
    )?;
    write(
        "special_tokens_map.json",
        include_bytes!("special_tokens_map.json"),
    )?;
    let config = serde_json::json!({
        "architectures": [cfg.hf_architecture], "vocab_size": cfg.vocab_size,
        "bos_token_id": 1, "eos_token_id": 2,
    });
    write("config.json", config.to_string().as_bytes())?;
    let f = match flavor {
        Flavor::BitnetCpp => TokFlavor::BitnetCpp,
        Flavor::Mainline => TokFlavor::LlamaCpp,
    };
    TokenizerMeta::from_dir(dir.path(), f, None)
        .map_err(|e| DummyError::Shape(format!("built-in tokenizer: {e}")))
}

/// Plans a dummy model: checks the shape, picks every tensor's type and parameters.
pub fn plan(s: &DummySpec) -> Result<DummyPlan, DummyError> {
    if s.hidden == 0 || s.heads == 0 || s.kv_heads == 0 || s.layers == 0 || s.intermediate == 0 {
        return Err(DummyError::Shape(
            "hidden, intermediate, layers, heads and kv-heads must be positive".into(),
        ));
    }
    if s.hidden % s.heads != 0 {
        return Err(DummyError::Shape(format!(
            "hidden {} is not a multiple of heads {}",
            s.hidden, s.heads
        )));
    }
    if s.heads % s.kv_heads != 0 {
        return Err(DummyError::Shape(format!(
            "kv-heads {} does not divide heads {}",
            s.kv_heads, s.heads
        )));
    }
    if s.vocab < 1000 {
        return Err(DummyError::Shape(format!(
            "vocab {} is smaller than the built-in vocabulary (1000 pieces)",
            s.vocab
        )));
    }
    let cfg = model_config(s);
    let out = s.out_type;
    let opts = ConvertOptions::new(out);
    let mut tensors = Vec::new();
    let mut kernel_entries: Vec<KernelEntry> = Vec::new();
    let mut parameters = 0u64;
    for (index, (hf, shape)) in hf_tensors(s).into_iter().enumerate() {
        let Some(Mapped::Tensor { name, proj }) = map_name(&hf, s.arch) else {
            unreachable!("dummy names are all mapped: {hf}");
        };
        let (m, k) = if shape.len() == 1 {
            (1, shape[0])
        } else {
            (shape[0], shape[1])
        };
        parameters += (m * k) as u64;
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let mut tl = None;
        let (ty, kind) = if proj.is_some() {
            // Per-tensor scales in the range real absmeans take.
            let mut rng = Rng::new(s.seed, index as u64, u64::MAX);
            let scale = 0.05 + 0.1 * rng.unit();
            let ty = match out {
                OutType::Tq1_0 | OutType::Tq2_0 if k % 256 != 0 => GgmlType::F16,
                OutType::I2S if (m * k) % 128 != 0 => {
                    return Err(DummyError::Shape(format!(
                        "tensor {name} ({m}×{k}): I2_S needs M·K to be a multiple of 128"
                    )))
                }
                OutType::Tl1 | OutType::Tl2 => {
                    let layout = if out == OutType::Tl1 {
                        TlLayout::Tl1
                    } else {
                        TlLayout::Tl2
                    };
                    let p = s
                        .kernel_config
                        .as_ref()
                        .and_then(|e| params::find_entry(e, m, k))
                        .map(Ok)
                        .unwrap_or_else(|| match layout {
                            TlLayout::Tl1 => params::derive_tl1(m, k),
                            TlLayout::Tl2 => params::derive_tl2(m, k),
                        })
                        .map_err(|e| DummyError::Shape(format!("tensor {name} ({m}×{k}): {e}")))?;
                    let check = match layout {
                        TlLayout::Tl1 => tl1::validate(m, k, &p),
                        TlLayout::Tl2 => tl2::validate(m, k, &p),
                    };
                    check
                        .map_err(|e| DummyError::Shape(format!("tensor {name} ({m}×{k}): {e}")))?;
                    tl = Some(p);
                    if !kernel_entries.iter().any(|e| e.m == m && e.k == k) {
                        kernel_entries.push(KernelEntry { m, k, params: p });
                    }
                    out.weight_type()
                }
                _ => out.weight_type(),
            };
            (ty, Kind::Ternary { scale })
        } else {
            let ty = float_type(&name, shape.len(), k, out, &opts, s.arch == Arch::Llama);
            let kind = if shape.len() == 1 {
                Kind::Norm
            } else {
                Kind::Embedding
            };
            (ty, kind)
        };
        let nbytes = ty
            .nbytes(&dims)
            .map_err(|e| DummyError::Shape(format!("tensor {name} ({m}×{k}) as {ty}: {e}")))?;
        tensors.push(DummyTensor {
            spec: TensorSpec { name, dims, ty },
            m,
            k,
            tl,
            nbytes,
            kind,
            index: index as u64,
        });
    }
    let meta = tokenizer(&cfg, out.flavor())?;
    let kv = metadata_for(&cfg, out, &s.name, parameters, &meta);
    let specs: Vec<TensorSpec> = tensors.iter().map(|t| t.spec.clone()).collect();
    let file_size =
        crate::gguf::writer::file_size(&kv, specs).map_err(|e| DummyError::Shape(e.to_string()))?;
    Ok(DummyPlan {
        kv,
        tensors,
        kernel_entries,
        file_size,
        parameters,
    })
}

/// What a dummy run wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DummySummary {
    /// Output file.
    pub output: String,
    /// Bytes written.
    pub bytes: u64,
    /// Tensors.
    pub tensors: usize,
    /// Parameters.
    pub parameters: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Rows per generated block, about 1M values.
fn rows_per_block(t: &DummyTensor) -> usize {
    let mut r = ((1usize << 20) / t.k.max(1)).max(1);
    if t.spec.ty == GgmlType::I2_S {
        // Whole 128-value blocks per row block.
        let unit = 128 / gcd(t.k, 128);
        r = r.div_ceil(unit) * unit;
    }
    r.min(t.m)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Writes the planned model to `out`.
pub fn write(
    s: &DummySpec,
    plan: &DummyPlan,
    out: &Path,
    progress: &dyn Progress,
) -> Result<DummySummary, DummyError> {
    let start = Instant::now();
    let io = |what: String| DummyError::Output {
        path: out.to_path_buf(),
        what,
    };
    let mut file =
        AtomicFile::create(out).map_err(|e| io(format!("cannot create the output: {e}")))?;
    {
        let buf = BufWriter::with_capacity(8 << 20, file.file());
        let specs = plan.tensors.iter().map(|t| t.spec.clone()).collect();
        let mut w = GgufWriter::new(buf, &plan.kv, specs).map_err(|e| io(e.to_string()))?;
        for (i, t) in plan.tensors.iter().enumerate() {
            progress.tensor(&t.spec.name, i, plan.tensors.len());
            let mut put = |bytes: &[u8]| -> Result<(), DummyError> {
                progress.advance(bytes.len() as u64);
                w.write_data(bytes)
                    .map_err(|e| io(format!("tensor {}: {e}", t.spec.name)))
            };
            write_tensor(s.seed, t, &mut put)?;
        }
        let mut buf = w.finish().map_err(|e| io(e.to_string()))?;
        buf.flush().map_err(|e| io(e.to_string()))?;
    }
    let bytes = file.file().metadata().map_err(|e| io(e.to_string()))?.len();
    if bytes != plan.file_size {
        return Err(io(format!(
            "wrote {bytes} bytes but the plan says {}",
            plan.file_size
        )));
    }
    file.commit()
        .map_err(|e| io(format!("cannot finish the output: {e}")))?;
    Ok(DummySummary {
        output: out.display().to_string(),
        bytes,
        tensors: plan.tensors.len(),
        parameters: plan.parameters,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Blocks generated in parallel before they are written in order.
const PARALLEL_BLOCKS: usize = 8;

fn write_tensor(
    seed: u64,
    t: &DummyTensor,
    put: &mut dyn FnMut(&[u8]) -> Result<(), DummyError>,
) -> Result<(), DummyError> {
    let lerr = |source: LayoutError| DummyError::Layout {
        tensor: t.spec.name.clone(),
        source,
    };
    let (m, k) = (t.m, t.k);
    match t.spec.ty {
        GgmlType::TL1 | GgmlType::TL2 => {
            let p = t.tl.expect("TL tensors have parameters");
            let scale = match t.kind {
                Kind::Ternary { scale } => scale,
                _ => unreachable!(),
            };
            let tiles: Vec<usize> = (0..m / p.bm).collect();
            let tile_bytes = |tile: usize| -> Result<Vec<u8>, LayoutError> {
                let mut codes = vec![0i8; p.bm * k];
                for (r, row) in codes.chunks_mut(k).enumerate() {
                    ternary_row(seed, t, tile * p.bm + r, row);
                }
                if t.spec.ty == GgmlType::TL1 {
                    let mut b = vec![0u8; tl1::nbytes(p.bm, k)];
                    tl1::pack_into(&codes, p.bm, k, &p, &mut b)?;
                    Ok(b)
                } else {
                    let mut b = vec![0u8; tl2::nbytes(p.bm, k)?];
                    tl2::pack_into(&codes, p.bm, k, &p, &mut b)?;
                    Ok(b)
                }
            };
            let raw = if t.spec.ty == GgmlType::TL1 {
                tl1::nbytes(m, k)
            } else {
                tl2::nbytes(m, k).map_err(lerr)?
            };
            // TL1 tiles are contiguous; TL2 has three regions (magnitudes, signs, two-part),
            // each ordered by tile, so its tiles are generated once per region.
            let regions: Vec<(usize, usize)> = if t.spec.ty == GgmlType::TL1 {
                vec![(0, tl1::nbytes(p.bm, k))]
            } else {
                let (k3, k2) = tl2::split_k(k, p.bk);
                let (mag, sign, two) = (p.bm * k3 / 6, p.bm * k3 / 24, p.bm * k2 / 4);
                vec![(0, mag), (mag, sign), (mag + sign, two)]
            };
            let mut written = 0usize;
            for (off, len) in regions {
                if len == 0 {
                    continue;
                }
                for group in tiles.chunks(PARALLEL_BLOCKS) {
                    let parts: Vec<Vec<u8>> = group
                        .par_iter()
                        .map(|&tile| tile_bytes(tile).map(|b| b[off..off + len].to_vec()))
                        .collect::<Result<_, _>>()
                        .map_err(lerr)?;
                    for part in parts {
                        written += part.len();
                        put(&part)?;
                    }
                }
            }
            // Zero padding to the size formula, then the 32-byte aligned scale slot.
            let mut tail = vec![0u8; pad32(raw) - written];
            tail.extend_from_slice(&scale_slot(scale));
            put(&tail)
        }
        ty => {
            let rows = rows_per_block(t);
            let blocks: Vec<(usize, usize)> = (0..m)
                .step_by(rows)
                .map(|r0| (r0, (r0 + rows).min(m)))
                .collect();
            for group in blocks.chunks(PARALLEL_BLOCKS) {
                let parts: Vec<Vec<u8>> = group
                    .par_iter()
                    .map(|&(r0, r1)| block_bytes(seed, t, ty, r0, r1))
                    .collect::<Result<_, _>>()
                    .map_err(lerr)?;
                for part in parts {
                    put(&part)?;
                }
            }
            if ty == GgmlType::I2_S {
                let scale = match t.kind {
                    Kind::Ternary { scale } => scale,
                    _ => unreachable!(),
                };
                let mut tail = [0u8; 32];
                tail[..4].copy_from_slice(&scale.to_le_bytes());
                put(&tail)?;
            }
            Ok(())
        }
    }
}

/// The bytes of rows `r0..r1` of a non-TL tensor.
fn block_bytes(
    seed: u64,
    t: &DummyTensor,
    ty: GgmlType,
    r0: usize,
    r1: usize,
) -> Result<Vec<u8>, LayoutError> {
    let k = t.k;
    let n = (r1 - r0) * k;
    if ty == GgmlType::I2_S {
        let mut codes = vec![0i8; n];
        for (i, row) in codes.chunks_mut(k).enumerate() {
            ternary_row(seed, t, r0 + i, row);
        }
        let mut out = vec![0u8; n / 4];
        i2s::pack_rows(&codes, &mut out)?;
        return Ok(out);
    }
    let mut vals = vec![0f32; n];
    let mut codes = Vec::new();
    for (i, row) in vals.chunks_mut(k).enumerate() {
        value_row(seed, t, r0 + i, &mut codes, row);
    }
    Ok(match ty {
        GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => vals
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        GgmlType::Q8_0 => {
            let mut o = vec![0u8; q8_0::nbytes(n)];
            q8_0::quantize_into(&vals, &mut o)?;
            o
        }
        GgmlType::TQ1_0 => {
            let mut o = vec![0u8; tq1_0::nbytes(n)];
            tq1_0::quantize_into(&vals, &mut o)?;
            o
        }
        GgmlType::TQ2_0 => {
            let mut o = vec![0u8; tq2_0::nbytes(n)];
            tq2_0::quantize_into(&vals, &mut o)?;
            o
        }
        other => unreachable!("dummy tensors are never {other}"),
    })
}
