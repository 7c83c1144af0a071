//! The conversion plan: which tensors go into the file, in which order, with which type and
//! size, and the metadata. Everything is decided and checked here, before a byte is written;
//! `--dry-run` prints the plan.

use std::collections::{BTreeSet, HashMap};

use crate::checkpoint::{map_name, Arch, Checkpoint, Mapped, ModelConfig, StDtype, TensorEntry};
use crate::gguf::{GgmlType, TensorSpec, Value};
use crate::quant::layouts::q8_0::Q8_0;
use crate::quant::layouts::{BlockGeometry, KernelEntry, TlParams};

use super::{projection_type, ConvertError, ConvertOptions, Flavor, OutType};

/// Where a planned tensor's data comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A float tensor converted to the output type (embeddings, norms, head).
    Float {
        /// HF tensor name.
        hf: String,
    },
    /// A latent full-precision projection, ternarized with the absmean rule.
    Latent {
        /// HF tensor name.
        hf: String,
    },
    /// A packed uint8 projection with its `weight_scale`.
    Packed {
        /// HF tensor name of the packed weight.
        hf: String,
        /// HF tensor name of its scale.
        scale: String,
    },
}

impl Source {
    /// The HF tensor holding the data.
    pub fn hf(&self) -> &str {
        match self {
            Source::Float { hf } | Source::Latent { hf } | Source::Packed { hf, .. } => hf,
        }
    }
}

/// One tensor of the output.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    /// GGUF name, dims (ggml order) and type.
    pub spec: TensorSpec,
    /// Where the data comes from.
    pub source: Source,
    /// Output rows (`M`, PyTorch dim 0; 1 for 1-D tensors).
    pub m: usize,
    /// Values per row (`K`).
    pub k: usize,
    /// TL1/TL2 kernel parameters.
    pub tl: Option<TlParams>,
    /// For `llama`: permute rows of q/k from rotate-half to interleaved order with this many
    /// heads.
    pub permute_heads: Option<usize>,
    /// Bytes in the data section (the type's byte size).
    pub nbytes: u64,
    /// A note for the plan (fallbacks, parameter origin).
    pub note: Option<String>,
}

/// The whole conversion plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The output type.
    pub out_type: OutType,
    /// The runtime the file is for.
    pub target: super::Target,
    /// The GGUF architecture.
    pub arch: Arch,
    /// Metadata in write order.
    pub kv: Vec<(String, Value)>,
    /// Tensors in write order.
    pub tensors: Vec<PlannedTensor>,
    /// TL kernel parameters used, one entry per distinct shape (what `kernel_config.ini` needs).
    pub kernel_entries: Vec<KernelEntry>,
    /// Size of the output file in bytes.
    pub file_size: u64,
}

impl Plan {
    /// The plan as JSON (what `--dry-run --json` prints).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let tensors: Vec<_> = self
            .tensors
            .iter()
            .map(|t| {
                json!({
                    "name": t.spec.name,
                    "source": t.source.hf(),
                    "type": t.spec.ty.name(),
                    "dims": t.spec.dims,
                    "bytes": t.nbytes,
                    "tl_params": t.tl.map(|p| json!({"bm": p.bm, "bk": p.bk, "bmm": p.bmm})),
                    "note": t.note,
                })
            })
            .collect();
        json!({
            "out_type": self.out_type.name(),
            "target": self.target.name(),
            "architecture": self.arch.name(),
            "n_kv": self.kv.len(),
            "n_tensors": self.tensors.len(),
            "file_size": self.file_size,
            "tensors": tensors,
        })
    }
}

/// The expected PyTorch shape of an HF tensor, from config.json.
fn expected_shape(cfg: &ModelConfig, gguf: &str, proj: Option<&str>) -> Option<Vec<usize>> {
    let h = cfg.hidden_size as usize;
    if let Some(p) = proj {
        let (o, i) = cfg.projection_shape(p)?;
        return Some(vec![o as usize, i as usize]);
    }
    let v = cfg.vocab_size as usize;
    if gguf == "token_embd.weight" || gguf == "output.weight" {
        return Some(vec![v, h]);
    }
    if gguf.ends_with("ffn_sub_norm.weight") {
        return Some(vec![cfg.intermediate_size as usize]);
    }
    if gguf.ends_with("attn_sub_norm.weight") {
        return Some(vec![(cfg.num_heads * cfg.head_dim) as usize]);
    }
    if gguf.ends_with("norm.weight") {
        return Some(vec![h]);
    }
    None
}

/// HF names every layer must have: the architecture's norms and projections, then its
/// sub-norms (of each, the spelling [`crate::arch::SubNormNames::required`] picks from `present`).
fn required_layer_tensors(arch: Arch, present: &BTreeSet<&str>) -> Vec<String> {
    let info = arch.info();
    let names = info.names;
    let mut v: Vec<String> = (names.norms.iter().map(|(hf, _)| *hf))
        .chain(names.projections.iter().map(|(hf, _, _)| *hf))
        .map(|s| format!("{s}.weight"))
        .collect();
    if let Some(sub) = info.sub_norms {
        for names in [&sub.attn, &sub.ffn] {
            let spelled = |s: &&&str| present.iter().any(|n| n.ends_with(&format!("{s}.weight")));
            let pick = (names.required.iter().find(spelled))
                .or(names.required.last())
                .expect("a sub-norm has a name");
            v.push(format!("{pick}.weight"));
        }
    }
    v
}

/// Builds the plan for converting `ck` with `opts`.
pub fn plan(ck: &Checkpoint, opts: &ConvertOptions) -> Result<Plan, ConvertError> {
    let cfg = &ck.config;
    let out = opts.out_type;
    let arch = cfg.arch;
    let packed = ck.is_packed();
    let file_of = |t: &TensorEntry| ck.tensors.shards[t.shard].path.clone();
    super::check_target(out, opts.target()).map_err(ConvertError::Other)?;

    // Map every checkpoint tensor; refuse names no mapping knows.
    let mut mapped: Vec<(&TensorEntry, String, Option<&'static str>)> = Vec::new();
    let mut scales: HashMap<String, &TensorEntry> = HashMap::new();
    for t in &ck.tensors.tensors {
        match map_name(&t.name, arch) {
            Some(Mapped::Tensor { name, proj }) => mapped.push((t, name, proj)),
            Some(Mapped::Dropped) => {}
            Some(Mapped::WeightScale(w)) => {
                scales.insert(w, t);
            }
            None => {
                return Err(ConvertError::UnknownTensor {
                    file: file_of(t),
                    tensor: t.name.clone(),
                    arch: arch.name().into(),
                })
            }
        }
    }

    // Every required tensor must be present.
    let present: BTreeSet<&str> = ck.tensors.tensors.iter().map(|t| t.name.as_str()).collect();
    let names = arch.info().names;
    let mut required = vec![names.embedding.to_string(), names.final_norm.to_string()];
    let per_layer = required_layer_tensors(arch, &present);
    for l in 0..cfg.num_layers {
        for s in &per_layer {
            required.push(format!("{}{l}.{s}", names.block));
        }
    }
    if !cfg.tie_word_embeddings && arch.allows_output() {
        required.push(names.head.into());
    }
    for r in &required {
        if !present.contains(r.as_str()) {
            return Err(ConvertError::MissingTensor {
                dir: ck.dir.clone(),
                tensor: r.clone(),
            });
        }
    }
    let has_output = present.contains(names.head) && arch.allows_output();

    let model_name = opts.model_name.clone().unwrap_or_else(|| ck.dir_name());
    let mut tensors = Vec::with_capacity(mapped.len());
    let mut kernel_entries: Vec<KernelEntry> = Vec::new();
    for (t, name, proj) in mapped {
        // Layers beyond num_hidden_layers are a config/checkpoint disagreement.
        if let Some(l) = name.strip_prefix("blk.").and_then(|r| r.split('.').next()) {
            if l.parse::<u64>().map_or(true, |l| l >= cfg.num_layers) {
                return Err(ConvertError::UnknownTensor {
                    file: file_of(t),
                    tensor: format!(
                        "{} (layer {l}, but num_hidden_layers is {})",
                        t.name, cfg.num_layers
                    ),
                    arch: arch.name().into(),
                });
            }
        }
        let mut shape = t.shape.clone();
        let is_packed = proj.is_some() && packed && t.dtype == StDtype::U8;
        if is_packed {
            // Packed (R, C) holds (4R, C) ternary values.
            if shape.len() == 2 {
                shape[0] *= 4;
            }
        }
        if let Some(exp) = expected_shape(cfg, &name, proj) {
            if exp != shape {
                return Err(ConvertError::Shape {
                    file: file_of(t),
                    tensor: if is_packed {
                        format!(
                            "{} (packed uint8, 4 rows per byte: {shape:?} ternary values)",
                            t.name
                        )
                    } else {
                        t.name.clone()
                    },
                    expected: exp,
                    actual: t.shape.clone(),
                });
            }
        }
        let (m, k) = match shape.as_slice() {
            [k] => (1, *k),
            [m, k] => (*m, *k),
            _ => {
                return Err(ConvertError::Unsupported {
                    tensor: name,
                    m: 0,
                    k: 0,
                    reason: format!("{}-dimensional tensors are not supported", shape.len()),
                })
            }
        };
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        let mut note = None;
        let mut tl = None;
        let (ty, source) = if let Some(p) = proj {
            let source = if t.dtype.is_float() {
                Source::Latent { hf: t.name.clone() }
            } else if t.dtype == StDtype::U8 {
                let scale = scales
                    .get(&t.name)
                    .ok_or_else(|| ConvertError::MissingTensor {
                        dir: ck.dir.clone(),
                        tensor: format!("{}_scale (the packed weight {} needs it)", t.name, t.name),
                    })?;
                Source::Packed {
                    hf: t.name.clone(),
                    scale: scale.name.clone(),
                }
            } else {
                return Err(ConvertError::Other(format!(
                    "{}: tensor {} is {} — projections must be float or packed uint8",
                    file_of(t).display(),
                    t.name,
                    t.dtype
                )));
            };
            let _ = p;
            let choice = projection_type(out, opts, &model_name, m, k).map_err(|reason| {
                ConvertError::Unsupported {
                    tensor: name.clone(),
                    m,
                    k,
                    reason,
                }
            })?;
            note = choice.note;
            tl = choice.tl;
            if let Some(params) = choice.tl {
                if !kernel_entries.iter().any(|e| e.m == m && e.k == k) {
                    kernel_entries.push(KernelEntry { m, k, params });
                }
            }
            let ty = choice.ty;
            (ty, source)
        } else {
            let ty = float_type(&name, shape.len(), k, out, opts, has_output);
            if ty == GgmlType::Q8_0 && !Q8_0::holds_row(k) {
                return Err(ConvertError::Unsupported {
                    tensor: name,
                    m,
                    k,
                    reason: format!(
                        "Q8_0 needs rows that are a multiple of {}",
                        Q8_0::BLOCK_VALUES
                    ),
                });
            }
            if !t.dtype.is_float() {
                return Err(ConvertError::Other(format!(
                    "{}: tensor {} is {}, expected a float tensor",
                    file_of(t).display(),
                    t.name,
                    t.dtype
                )));
            }
            (ty, Source::Float { hf: t.name.clone() })
        };
        let permute_heads = if arch.permutes_qk() {
            match proj {
                Some("q_proj") => Some(cfg.num_heads as usize),
                Some("k_proj") => Some(cfg.num_kv_heads as usize),
                _ => None,
            }
        } else {
            None
        };
        let nbytes = ty.nbytes(&dims).map_err(|e| ConvertError::Unsupported {
            tensor: name.clone(),
            m,
            k,
            reason: e.to_string(),
        })?;
        tensors.push(PlannedTensor {
            spec: TensorSpec { name, dims, ty },
            source,
            m,
            k,
            tl,
            permute_heads,
            nbytes,
            note,
        });
    }

    let total_params: u64 = tensors.iter().map(|t| (t.m * t.k) as u64).sum();
    let general_name = opts
        .general_name
        .clone()
        .unwrap_or_else(|| match opts.flavor() {
            Flavor::BitnetCpp => ck.dir_name(),
            Flavor::Mainline => title_case(&ck.dir_name()),
        });
    let mut kv = super::plan_kv::metadata(ck, opts, &general_name, total_params)?;
    super::plan_kv::append_own_keys(&mut kv, &ck.config, opts.target(), &kernel_entries);
    let specs: Vec<TensorSpec> = tensors.iter().map(|t| t.spec.clone()).collect();
    let file_size = crate::gguf::writer::file_size(&kv, specs)
        .map_err(|e| ConvertError::Other(e.to_string()))?;
    Ok(Plan {
        out_type: out,
        target: opts.target(),
        arch,
        kv,
        tensors,
        kernel_entries,
        file_size,
    })
}

/// The GGML type of a non-projection tensor `gguf` (GGUF name) with `n_dims` dimensions and
/// rows of `ne0` values, for output `out`; `has_output` says whether the model has a separate
/// `output.weight`.
pub fn float_type(
    gguf: &str,
    n_dims: usize,
    ne0: usize,
    out: OutType,
    opts: &ConvertOptions,
    has_output: bool,
) -> GgmlType {
    if n_dims < 2 || gguf.ends_with("_norm.weight") {
        return GgmlType::F32;
    }
    if gguf == "token_embd.weight" {
        if let Some(t) = opts.token_embedding_type {
            return t;
        }
        let reproduce = opts.target() == super::Target::BitnetCpp2024;
        return out.embedding_type(opts.quant_embd, reproduce, has_output, ne0);
    }
    if gguf == "output.weight" {
        return out.head_type(ne0);
    }
    out.matrix_float_type()
}

/// `tiny` → `Tiny`, `bitnet_b1_58-large` → `Bitnet_b1_58 Large` (mainline's naming heuristic).
fn title_case(s: &str) -> String {
    s.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
