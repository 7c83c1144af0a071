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

use crate::checkpoint::tokenizer::TokenizerMeta;
use crate::checkpoint::{map_name, Arch, Mapped, ModelConfig};
use crate::convert::{float_type, metadata_for, ConvertOptions, Flavor, OutType, Progress};
use crate::gguf::{GgufWriter, TensorSpec, Value};
use crate::quant::layouts::{KernelEntry, LayoutError, TlParams};
use crate::runtime::kernels;
use crate::util::AtomicFile;

mod generate;
mod ordered;

use generate::{piece, pieces, Rng, Scratch};

/// The writer's buffer, for the small writes (header, padding, tails): pieces of at least this
/// size go straight to the file.
const WRITE_BUFFER: usize = 256 << 10;

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
    /// The runtime the file is for (`None`: the output type's home, as for `convert`).
    pub target: Option<crate::arch::Target>,
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

/// The HF tensor names of a checkpoint of this architecture, with PyTorch shapes: its names
/// ([`crate::arch::HfNames`]), the first spelling of each sub-norm, and a head when it is not
/// tied ([`has_output`]).
fn hf_tensors(s: &DummySpec, cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let info = s.arch.info();
    let names = info.names;
    let (h, f) = (s.hidden, s.intermediate);
    let q = s.heads * (h / s.heads);
    let mut v = vec![
        (names.embedding.to_string(), vec![s.vocab, h]),
        (names.final_norm.to_string(), vec![h]),
    ];
    if has_output(s.arch) {
        v.push((names.head.into(), vec![s.vocab, h]));
    }
    for l in 0..s.layers {
        let p = format!("{}{l}.", names.block);
        let mut add = |n: &str, shape: Vec<usize>| v.push((format!("{p}{n}.weight"), shape));
        for (n, _) in names.norms {
            add(n, vec![h]);
        }
        for (n, _, role) in names.projections {
            let (o, i) = cfg.projection_shape(role).expect("every role has a shape");
            add(n, vec![o as usize, i as usize]);
        }
        if let Some(sub) = info.sub_norms {
            add(sub.attn.required[0], vec![q]);
            add(sub.ffn.required[0], vec![f]);
        }
    }
    v.sort();
    v
}

/// Whether a dummy of `arch` has a separate head: when the architecture allows one and does not
/// tie it by default.
fn has_output(arch: Arch) -> bool {
    arch.allows_output() && !arch.info().tied_by_default
}

fn model_config(s: &DummySpec) -> ModelConfig {
    let info = s.arch.info();
    ModelConfig {
        hf_architecture: info.hf_class.into(),
        model_type: None,
        arch: s.arch,
        activation: info.activation,
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
        tie_word_embeddings: !has_output(s.arch),
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
    if let Some(t) = s.target {
        crate::convert::check_target(s.out_type, t).map_err(DummyError::Shape)?;
    }
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
    opts.target = s.target;
    opts.kernel_config = s.kernel_config.clone();
    let mut tensors = Vec::new();
    let mut kernel_entries: Vec<KernelEntry> = Vec::new();
    let mut parameters = 0u64;
    for (index, (hf, shape)) in hf_tensors(s, &cfg).into_iter().enumerate() {
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
            let ty = float_type(&name, shape.len(), k, out, &opts, has_output(s.arch));
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
    let flavor = opts.flavor();
    let meta = tokenizer(&cfg, flavor)?;
    let mut kv = metadata_for(&cfg, out, flavor, &s.name, parameters, &meta);
    crate::convert::plan_kv::append_own_keys(&mut kv, &cfg, opts.target(), &kernel_entries);
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
