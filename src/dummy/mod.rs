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
//! Tensors are produced in pieces of about 1 MB (row blocks, or a row tile's part of a region)
//! by worker threads while the calling thread writes the finished pieces in order, so generating
//! and writing overlap and at most a few pieces are ever in memory (module `ordered`). TL2, whose
//! magnitudes, signs and two-part regions each span the whole tensor, regenerates the columns a
//! region reads once per region instead of holding the tensor.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::checkpoint::tokenizer::TokenizerMeta;
use crate::checkpoint::{map_name, Activation, Arch, Family, Mapped, ModelConfig};
use crate::convert::{float_type, metadata_for, ConvertOptions, Flavor, OutType, Progress};
use crate::gguf::{GgmlType, GgufWriter, TensorSpec, Value};
use crate::quant::layouts::{
    i2s, pad32, params, q8_0, scale_slot, tl1, tl2, tq1_0, tq2_0, KernelEntry, LayoutError,
    TlParams,
};
use crate::runtime::kernels::{self, multiversion};
use crate::util::AtomicFile;

mod ordered;

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
    // Not in the reference generator: bitnet_b1_58-3B's real shape, whose FFN width (8640) is
    // not a multiple of 128, so tests and benchmarks reach rows that start inside I2_S blocks.
    Size {
        name: "3B",
        hidden: 3200,
        intermediate: 8640,
        layers: 26,
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
    #[inline(always)]
    fn new(seed: u64, tensor: u64, row: u64) -> Rng {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.0 = r.0.wrapping_add(tensor.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let _ = r.next();
        r.0 = r.0.wrapping_add(row.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
        let _ = r.next();
        r
    }
    /// Moves past `n` outputs without computing them (the state only adds the increment).
    #[inline(always)]
    fn skip(&mut self, n: u64) {
        self.0 = self.0.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    #[inline(always)]
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately standard normal (sum of four uniforms, variance-corrected).
    #[inline(always)]
    fn normal(&mut self) -> f32 {
        let s = self.unit() + self.unit() + self.unit() + self.unit();
        (s - 2.0) * 3f32.sqrt()
    }
}

/// The ternary value of one random byte: `0` below 102, `+1` below 179, `−1` above, so
/// P(0) ≈ 0.40 and P(+1) = P(−1) ≈ 0.30. Branch-free, so that a row decodes as vectors.
#[inline(always)]
fn ternary(b: u8) -> i8 {
    (b >= 102) as i8 - 2 * (b >= 179) as i8
}

/// Ternary codes of columns `c0..c0 + out.len()` of one row: column `c` is byte `c % 8`
/// (little-endian) of the row stream's output `c / 8`.
#[inline(always)]
fn ternary_cols(seed: u64, t: &DummyTensor, row: usize, c0: usize, out: &mut [i8]) {
    let mut rng = Rng::new(seed, t.index, row as u64);
    rng.skip((c0 / 8) as u64);
    let lead = c0 % 8;
    let mut out = out;
    if lead != 0 {
        let b = rng.next().to_le_bytes();
        let n = (8 - lead).min(out.len());
        for (o, &x) in out[..n].iter_mut().zip(&b[lead..]) {
            *o = ternary(x);
        }
        out = &mut out[n..];
    }
    fill_ternary(&mut rng, out);
}

/// Fills `out` with the ternary values of the stream's next `out.len()` bytes, 8 per output.
#[inline(always)]
fn fill_ternary(rng: &mut Rng, out: &mut [i8]) {
    // The raw bytes first, then one pass that decodes them in place.
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&rng.next().to_le_bytes().map(|x| x as i8));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let b = rng.next().to_le_bytes();
        for (o, &x) in rest.iter_mut().zip(&b) {
            *o = x as i8;
        }
    }
    for o in out.iter_mut() {
        *o = ternary(*o as u8);
    }
}

/// Ternary codes of one row.
#[inline(always)]
fn ternary_row(seed: u64, t: &DummyTensor, row: usize, out: &mut [i8]) {
    ternary_cols(seed, t, row, 0, out);
}

/// Float values of one row (norms, embeddings) or fake-quantized ternary values.
#[inline(always)]
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
    let f = flavor;
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
    // A bound far above any model (the largest dummy size has 80 layers, hidden 8192): the plan
    // holds a few entries per layer, and the file would be larger than any disk.
    const MAX_LAYERS: usize = 4096;
    const MAX_WIDTH: usize = 1 << 20;
    if s.layers > MAX_LAYERS {
        return Err(DummyError::Shape(format!(
            "--layers {} is more than {MAX_LAYERS}",
            s.layers
        )));
    }
    if s.hidden > MAX_WIDTH || s.intermediate > MAX_WIDTH || s.vocab > MAX_WIDTH * 4 {
        return Err(DummyError::Shape(format!(
            "hidden {}, intermediate {}, vocab {}: larger than any model ({MAX_WIDTH} values per \
             row, {} tokens at most)",
            s.hidden,
            s.intermediate,
            s.vocab,
            MAX_WIDTH * 4
        )));
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
    let mut opts = ConvertOptions::new(out);
    opts.kernel_config = s.kernel_config.clone();
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
            // The converter's rule for a projection's type (one rule for both writers).
            let choice = crate::convert::projection_type(out, &opts, &s.name, m, k)
                .map_err(|e| DummyError::Shape(format!("tensor {name} ({m}×{k}): {e}")))?;
            if let Some(p) = choice.tl {
                tl = Some(p);
                if !kernel_entries.iter().any(|e| e.m == m && e.k == k) {
                    kernel_entries.push(KernelEntry { m, k, params: p });
                }
            }
            let ty = choice.ty;
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
    let mut kv = metadata_for(&cfg, out, &s.name, parameters, &meta);
    if !kernel_entries.is_empty() {
        kv.push((
            params::GGUF_KEY.to_string(),
            Value::String(params::emit_kernel_config_ini(&kernel_entries)),
        ));
    }
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

/// Output bytes per piece that the generators aim at: large writes, small buffers.
const PIECE_BYTES: usize = 1 << 20;

/// The writer's buffer, for the small writes (header, padding, tails): pieces of at least this
/// size go straight to the file.
const WRITE_BUFFER: usize = 256 << 10;

/// How a tensor's bytes are cut into pieces, in file order.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Blocks of `rows` rows (the last one may be shorter); for I2_S then the 32-byte tail.
    Rows { rows: usize, blocks: usize },
    /// For each of `regions` regions in file order (TL1: one, the whole tile; TL2: the
    /// non-empty ones), every row tile's part; then the padding and the scale slot.
    Tiles {
        p: TlParams,
        tiles: usize,
        regions: usize,
    },
}

fn cut(t: &DummyTensor) -> Cut {
    match t.spec.ty {
        GgmlType::TL1 | GgmlType::TL2 => {
            let p = t.tl.expect("TL tensors have parameters");
            let regions = if t.spec.ty == GgmlType::TL1 {
                1
            } else {
                tl2_regions(t.k, &p).count()
            };
            Cut::Tiles {
                p,
                tiles: t.m / p.bm,
                regions,
            }
        }
        _ => {
            let rows = rows_per_block(t);
            Cut::Rows {
                rows,
                blocks: t.m.div_ceil(rows),
            }
        }
    }
}

/// Pieces of a tensor.
fn pieces(t: &DummyTensor) -> usize {
    match cut(t) {
        Cut::Rows { blocks, .. } => blocks + usize::from(t.spec.ty == GgmlType::I2_S),
        Cut::Tiles { tiles, regions, .. } => regions * tiles + 1,
    }
}

/// The non-empty regions of a TL2 row tile, in file order.
fn tl2_regions(k: usize, p: &TlParams) -> impl Iterator<Item = tl2::Region> + '_ {
    tl2::Region::ALL
        .into_iter()
        .filter(move |&r| !tl2::region_range(p.bm, k, p, r).is_empty())
}

/// Bytes of one row of a row-cut tensor.
fn row_bytes(ty: GgmlType, k: usize) -> usize {
    match ty {
        GgmlType::I2_S => k.div_ceil(4),
        GgmlType::F32 => 4 * k,
        GgmlType::F16 => 2 * k,
        GgmlType::Q8_0 => q8_0::nbytes(k),
        GgmlType::TQ1_0 => tq1_0::nbytes(k),
        GgmlType::TQ2_0 => tq2_0::nbytes(k),
        other => unreachable!("dummy tensors are never {other} cut into rows"),
    }
}

/// Rows whose I2_S codes fill whole 128-value blocks.
fn i2s_rows_unit(k: usize) -> usize {
    128 / gcd(k, 128)
}

/// Rows per block, about [`PIECE_BYTES`] of output.
fn rows_per_block(t: &DummyTensor) -> usize {
    let mut r = (PIECE_BYTES / row_bytes(t.spec.ty, t.k).max(1)).max(1);
    if t.spec.ty == GgmlType::I2_S {
        // Whole 128-value blocks per row block.
        let unit = i2s_rows_unit(t.k);
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

fn ternary_scale(t: &DummyTensor) -> f32 {
    match t.kind {
        Kind::Ternary { scale } => scale,
        _ => unreachable!("{} is not ternary", t.spec.name),
    }
}

/// A generator thread's buffers, reused from piece to piece. `codes` only ever holds ternary
/// values.
#[derive(Default)]
struct Scratch {
    codes: Vec<i8>,
    vals: Vec<f32>,
    halves: Vec<f16>,
}

/// Writes the planned model to `out`.
///
/// Generator threads (as many as rayon's pool has) make the pieces of the tensors, about 1 MB
/// each, while this thread writes them in order; a bounded window of pieces in flight keeps the
/// memory constant (`ordered::run`).
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
        let buf = BufWriter::with_capacity(WRITE_BUFFER, file.file());
        let specs = plan.tensors.iter().map(|t| t.spec.clone()).collect();
        let mut w = GgufWriter::new(buf, &plan.kv, specs).map_err(|e| io(e.to_string()))?;
        let jobs = plan
            .tensors
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..pieces(t)).map(move |j| (i, j)));
        let threads = rayon::current_num_threads();
        let kern = kernels::kernels();
        let mut current = usize::MAX;
        ordered::run(
            jobs,
            threads,
            2 * threads + 2,
            |&(i, j), scratch: &mut Scratch, buf| {
                let t = &plan.tensors[i];
                piece(kern, s.seed, t, j, scratch, buf).map_err(|source| DummyError::Layout {
                    tensor: t.spec.name.clone(),
                    source,
                })
            },
            |&(i, _), bytes| {
                let t = &plan.tensors[i];
                if i != current {
                    progress.tensor(&t.spec.name, i, plan.tensors.len());
                    current = i;
                }
                progress.advance(bytes.len() as u64);
                w.write_data(bytes)
                    .map_err(|e| io(format!("tensor {}: {e}", t.spec.name)))
            },
        )?;
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

multiversion! {
    /// Makes piece `j` of tensor `t` (see [`Cut`]) into `out`, which holds an earlier piece,
    /// with the build of [`piece_imp`] for `kern`'s instruction set: integer arithmetic is
    /// exact and no float operation is fused or reordered, so every build makes the same bytes;
    /// the wider vectors (AVX-512 multiplies 64-bit lanes, which the generator's mixing needs)
    /// are faster.
    fn piece(
        seed: u64,
        t: &DummyTensor,
        j: usize,
        s: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Result<(), LayoutError> = piece_imp
}

#[inline(always)]
fn piece_imp(
    seed: u64,
    t: &DummyTensor,
    j: usize,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), LayoutError> {
    let k = t.k;
    match cut(t) {
        Cut::Tiles { p, tiles, regions } if j == regions * tiles => {
            // Zero padding to the size formula, then the 32-byte aligned scale slot.
            let (raw, content) = if t.spec.ty == GgmlType::TL1 {
                (tl1::nbytes(t.m, k), tl1::nbytes(t.m, k))
            } else {
                (tl2::nbytes(t.m, k)?, tl2::content_bytes(t.m, k, &p))
            };
            out.clear();
            out.resize(pad32(raw) - content, 0);
            out.extend_from_slice(&scale_slot(ternary_scale(t)));
            Ok(())
        }
        Cut::Tiles { p, tiles, .. } => {
            let (region, tile) = (j / tiles, j % tiles);
            let rows = tile * p.bm..(tile + 1) * p.bm;
            // Columns a region does not read may hold older codes.
            s.codes.resize(p.bm * k, 0);
            if t.spec.ty == GgmlType::TL1 {
                for (r, row) in rows.zip(s.codes.chunks_exact_mut(k)) {
                    ternary_row(seed, t, r, row);
                }
                resize_for_overwrite(out, tl1::nbytes(p.bm, k));
                return tl1::pack_into(&s.codes, p.bm, k, &p, out);
            }
            let region = tl2_regions(k, &p).nth(region).expect("a non-empty region");
            // Magnitudes and signs read the three-part columns, the two-part the others.
            let (k3, _) = tl2::split_k(k, p.bk);
            let cols = if region == tl2::Region::TwoPart {
                k3..k
            } else {
                0..k3
            };
            for (r, row) in rows.zip(s.codes.chunks_exact_mut(k)) {
                ternary_cols(seed, t, r, cols.start, &mut row[cols.clone()]);
            }
            resize_for_overwrite(out, tl2::region_range(p.bm, k, &p, region).len());
            tl2::pack_region_into(&s.codes, p.bm, k, &p, region, out)
        }
        Cut::Rows { blocks, .. } if j == blocks => {
            // I2_S: the scale, then zeros to 32 bytes.
            out.clear();
            out.extend_from_slice(&ternary_scale(t).to_le_bytes());
            out.resize(i2s::TAIL_BYTES, 0);
            Ok(())
        }
        Cut::Rows { rows, .. } => {
            let r0 = j * rows;
            block_bytes(seed, t, r0, (r0 + rows).min(t.m), s, out)
        }
    }
}

/// Gives `out` length `n` for a caller that then writes every byte: the bytes of the earlier
/// piece that a reused buffer holds are kept rather than zeroed (only growth is zeroed).
fn resize_for_overwrite(out: &mut Vec<u8>, n: usize) {
    out.resize(n, 0);
}

/// The bytes of rows `r0..r1` of a tensor cut into rows.
#[inline(always)]
fn block_bytes(
    seed: u64,
    t: &DummyTensor,
    r0: usize,
    r1: usize,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), LayoutError> {
    let (k, ty) = (t.k, t.spec.ty);
    if ty == GgmlType::I2_S {
        // Groups of rows that fill whole 128-value blocks (one row when K % 128 == 0).
        let unit = i2s_rows_unit(k);
        resize_for_overwrite(out, (r1 - r0) * k / 4);
        s.codes.resize(unit * k, 0);
        for (g, o) in (r0..r1)
            .step_by(unit)
            .zip(out.chunks_exact_mut(unit * k / 4))
        {
            for (r, row) in (g..).zip(s.codes.chunks_exact_mut(k)) {
                ternary_row(seed, t, r, row);
            }
            i2s::pack_rows(&s.codes, o)?;
        }
        return Ok(());
    }
    let rb = row_bytes(ty, k);
    resize_for_overwrite(out, (r1 - r0) * rb);
    for (r, o) in (r0..r1).zip(out.chunks_exact_mut(rb)) {
        if let (GgmlType::TQ1_0 | GgmlType::TQ2_0, Kind::Ternary { scale }) = (ty, t.kind) {
            // The codes directly: what quantizing the values codes·scale gives.
            s.codes.resize(k, 0);
            ternary_row(seed, t, r, &mut s.codes);
            if ty == GgmlType::TQ1_0 {
                tq1_0::pack_ternary_into(&s.codes, scale, o)?;
            } else {
                tq2_0::pack_ternary_into(&s.codes, scale, o)?;
            }
            continue;
        }
        s.vals.resize(k, 0.0);
        value_row(seed, t, r, &mut s.codes, &mut s.vals);
        match ty {
            GgmlType::F32 => {
                for (o, v) in o.chunks_exact_mut(4).zip(&s.vals) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            GgmlType::F16 => {
                s.halves.resize(k, f16::ZERO);
                s.halves.convert_from_f32_slice(&s.vals);
                for (o, h) in o.chunks_exact_mut(2).zip(&s.halves) {
                    o.copy_from_slice(&h.to_le_bytes());
                }
            }
            GgmlType::Q8_0 => q8_0::quantize_into(&s.vals, o)?,
            GgmlType::TQ1_0 => tq1_0::quantize_into(&s.vals, o)?,
            GgmlType::TQ2_0 => tq2_0::quantize_into(&s.vals, o)?,
            other => unreachable!("dummy tensors are never {other}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes as the first version computed them: one byte at a time, with branches.
    fn ternary_row_reference(seed: u64, t: &DummyTensor, row: usize, out: &mut [i8]) {
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

    fn tensor(index: u64, k: usize) -> DummyTensor {
        DummyTensor {
            spec: TensorSpec {
                name: "t".into(),
                dims: vec![k as u64, 4],
                ty: GgmlType::I2_S,
            },
            m: 4,
            k,
            tl: None,
            nbytes: 0,
            kind: Kind::Ternary { scale: 0.1 },
            index,
        }
    }

    #[test]
    fn every_byte_decodes_as_before() {
        for b in 0..=255u8 {
            let want = if b < 102 {
                0
            } else if b < 179 {
                1
            } else {
                -1
            };
            assert_eq!(ternary(b), want, "byte {b}");
        }
    }

    #[test]
    fn rows_and_column_ranges_equal_the_reference() {
        for (seed, index, k) in [(0, 0, 4096), (7, 3, 157), (u64::MAX, 12, 8), (1, 1, 3)] {
            let t = tensor(index, k);
            for row in [0, 1, 1000] {
                let mut want = vec![0i8; k];
                ternary_row_reference(seed, &t, row, &mut want);
                let mut got = vec![9i8; k];
                ternary_row(seed, &t, row, &mut got);
                assert_eq!(got, want, "seed {seed} tensor {index} row {row}");
                // Any column range, aligned to the stream's 8-byte outputs or not.
                for c0 in [0, 1, 5, 8, 13, k / 2, k - 1]
                    .into_iter()
                    .filter(|&c| c < k)
                {
                    for len in [0, 1, 7, 8, 9, 100] {
                        let c1 = (c0 + len).min(k);
                        let mut part = vec![9i8; c1 - c0];
                        ternary_cols(seed, &t, row, c0, &mut part);
                        assert_eq!(part, want[c0..c1], "columns {c0}..{c1}");
                    }
                }
            }
        }
    }

    #[test]
    fn about_forty_percent_zeros() {
        let t = tensor(5, 1 << 16);
        let mut codes = vec![0i8; 1 << 16];
        ternary_row(3, &t, 0, &mut codes);
        let share = |v: i8| codes.iter().filter(|&&c| c == v).count() as f64 / codes.len() as f64;
        assert!((share(0) - 102.0 / 256.0).abs() < 0.01);
        assert!((share(1) - 77.0 / 256.0).abs() < 0.01);
        assert!((share(-1) - 77.0 / 256.0).abs() < 0.01);
    }

    #[test]
    fn the_baseline_build_makes_the_same_pieces() {
        // `piece` runs the build of each table this CPU has; `piece_imp` inlined here is the
        // baseline one. Small shapes with K % 128 != 0, a TL2 two-part region and TQ's F16 fallback.
        for (hidden, ffn, heads, quant) in [
            (160, 480, 5, "i2_s"),
            (256, 768, 4, "tl1"),
            (384, 1568, 6, "tl2"),
            (256, 768, 4, "tq1_0"),
            (384, 1152, 6, "tq2_0"),
            (256, 768, 4, "f16"),
            (256, 768, 4, "f32"),
        ] {
            let spec = DummySpec {
                arch: Arch::Bitnet,
                hidden,
                intermediate: ffn,
                layers: 1,
                heads,
                kv_heads: heads,
                vocab: 1000,
                out_type: quant.parse().unwrap(),
                seed: 11,
                name: "test".into(),
                kernel_config: None,
            };
            let plan = plan(&spec).unwrap();
            let (mut wide, mut base) = (Scratch::default(), Scratch::default());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for kern in kernels::available() {
                for t in &plan.tensors {
                    for j in 0..pieces(t) {
                        piece(kern, spec.seed, t, j, &mut wide, &mut a).unwrap();
                        piece_imp(spec.seed, t, j, &mut base, &mut b).unwrap();
                        assert!(a == b, "{} {quant} {} piece {j}", kern.name(), t.spec.name);
                    }
                }
            }
        }
    }
}
