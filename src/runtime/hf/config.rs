//! `config.json` read with transformers' semantics: the defaults of `LlamaConfig` /
//! `BitNetConfig`, the `quantization_config` of its bitnet quantizer, `head_dim`, GQA, RoPE
//! (`rope_scaling` or transformers 5's `rope_parameters`, types `default` and `llama3`).
//!
//! Every field that would change the computation and is not implemented is refused with
//! [`HfError::Unsupported`] naming it; fields without effect on the logits (dropout, cache,
//! token ids, `torch_dtype`, `pretraining_tp`, …) are ignored.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::HfError;

/// Which model definition the checkpoint follows (from `architectures[0]`). Its facts are its
/// row of [`HF_ARCHS`] ([`HfArch::info`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfArch {
    /// `BitnetForCausalLM`: the 1bitLLM remote code (LLaMA layout with BitLinear projections,
    /// latent weights, sub-norms `self_attn.inner_attn_ln` and `mlp.ffn_layernorm`).
    OneBitLlm,
    /// `BitNetForCausalLM`, `model_type` `bitnet` (microsoft 2B-4T): sub-norms
    /// `self_attn.attn_sub_norm` before `o_proj` and `mlp.ffn_sub_norm` before `down_proj`.
    BitNet,
    /// `LlamaForCausalLM` with `quantization_config.quant_method == "bitnet"` (HF1BitLLM
    /// Llama3-8B-1.58, Falcon3 1.58-bit, Falcon-E): no sub-norms.
    Llama,
}

/// What this reader knows of one model definition, read from transformers' (or the remote)
/// model code: a row of [`HF_ARCHS`]. It is the golden side's own table, written apart from
/// the converter's (`crate::arch`) on purpose: a misreading there must not be repeated here.
#[derive(Debug)]
pub struct HfArchInfo {
    /// The definition (rows are in the order of the enum).
    pub arch: HfArch,
    /// `architectures[0]`, exactly as the model code's class is spelled.
    pub class: &'static str,
    /// `rms_norm_eps` when the config does not say (the config class's default).
    pub default_rms_norm_eps: f64,
    /// `rope_theta` when the config does not say.
    pub default_rope_theta: f64,
    /// `hidden_act` when the config does not say.
    pub default_hidden_act: HfActivation,
    /// The tensors the model code declares, by name.
    pub tensors: &'static HfTensors,
    /// The sub-norms (attention before `o_proj`, FFN before `down_proj`) as the model code
    /// names them inside a layer (`self_attn.…`, `mlp.…`); `None`: it has none.
    pub sub_norms: Option<(&'static str, &'static str)>,
    /// Whether the projections are 1bitLLM's remote-code `BitLinear` (latent weights, no
    /// `quantization_config`) rather than transformers' bitnet quantizer's.
    pub remote_bitlinear: bool,
}

/// The parameter names of a model definition (`.weight` included outside the layers, left
/// out inside: a layer's tensor is `{layers}.{i}.{name}.weight`).
#[derive(Debug)]
pub struct HfTensors {
    /// The token embedding.
    pub embed: &'static str,
    /// The LM head, when the embedding is not tied.
    pub lm_head: &'static str,
    /// The final norm.
    pub final_norm: &'static str,
    /// The prefix of the layers' names.
    pub layers: &'static str,
    /// The norm before attention.
    pub attn_norm: &'static str,
    /// The norm before the FFN.
    pub ffn_norm: &'static str,
    /// The seven projections, in the order of [`crate::runtime::hf::HfModel::ROLES`]
    /// (`q`, `k`, `v`, `o`, `gate`, `up`, `down`).
    pub projections: [&'static str; 7],
}

/// The names transformers' `LlamaForCausalLM` and `BitNetForCausalLM` and 1bitLLM's remote
/// code share.
const LLAMA_TENSORS: HfTensors = HfTensors {
    embed: "model.embed_tokens.weight",
    lm_head: "lm_head.weight",
    final_norm: "model.norm.weight",
    layers: "model.layers",
    attn_norm: "input_layernorm",
    ffn_norm: "post_attention_layernorm",
    projections: [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ],
};

/// The model definitions this reader understands, in the order of [`HfArch`].
pub const HF_ARCHS: [HfArchInfo; 3] = [
    HfArchInfo {
        arch: HfArch::OneBitLlm,
        class: "BitnetForCausalLM",
        default_rms_norm_eps: 1e-6,
        default_rope_theta: 10000.0,
        default_hidden_act: HfActivation::Silu,
        tensors: &LLAMA_TENSORS,
        sub_norms: Some(("self_attn.inner_attn_ln", "mlp.ffn_layernorm")),
        remote_bitlinear: true,
    },
    HfArchInfo {
        arch: HfArch::BitNet,
        class: "BitNetForCausalLM",
        default_rms_norm_eps: 1e-5,
        default_rope_theta: 500000.0,
        default_hidden_act: HfActivation::Relu2,
        tensors: &LLAMA_TENSORS,
        sub_norms: Some(("self_attn.attn_sub_norm", "mlp.ffn_sub_norm")),
        remote_bitlinear: false,
    },
    HfArchInfo {
        arch: HfArch::Llama,
        class: "LlamaForCausalLM",
        default_rms_norm_eps: 1e-6,
        default_rope_theta: 10000.0,
        default_hidden_act: HfActivation::Silu,
        tensors: &LLAMA_TENSORS,
        sub_norms: None,
        remote_bitlinear: false,
    },
];

impl HfArch {
    /// Its row of [`HF_ARCHS`].
    pub fn info(self) -> &'static HfArchInfo {
        let row = &HF_ARCHS[self as usize];
        debug_assert_eq!(row.arch, self, "HF_ARCHS is in the order of HfArch");
        row
    }

    /// The definition of class `class` (`architectures[0]`, exact spelling).
    pub fn from_class(class: &str) -> Option<HfArch> {
        HF_ARCHS.iter().find(|r| r.class == class).map(|r| r.arch)
    }
}

/// The FFN gate activation (`hidden_act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfActivation {
    /// `silu` (also spelled `swish`): `x·σ(x)`.
    Silu,
    /// `relu2`: `max(x, 0)²`.
    Relu2,
}

/// RoPE frequency scaling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// `rope_scaling: null` or type `default`: `inv_freq[i] = θ^(−2i/d)`.
    Default,
    /// Type `linear`: every inverse frequency divided by `factor` (positions scaled).
    Linear {
        /// `factor`.
        factor: f64,
    },
    /// Type `llama3` (Llama 3.1), as transformers' `_compute_llama3_parameters`.
    Llama3 {
        /// `factor`.
        factor: f64,
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
        /// `original_max_position_embeddings`.
        original_max_position_embeddings: f64,
    },
}

/// How the seven projections of each block compute (transformers' `integrations/bitnet.py`
/// and 1bitLLM's `BitLinear`). All quantize the input per token to int8
/// (`s = 127/max(max|x|, 1e-5)`, `q = clamp(round(x·s), −128, 127)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearKind {
    /// 1bitLLM `BitLinear`: latent float weights ternarized at every call with the per-tensor
    /// absmean (`s = 1/max(mean|W|, 1e-5)`, `T = clamp(round(W·s), −1, 1)`, weight `T/s`).
    OneBitLlm,
    /// `AutoBitLinear` online (`linear_class: autobitlinear`, `quantization_mode: online`):
    /// the same absmean ternarization of latent weights (`WeightQuant`).
    AutoOnline,
    /// `AutoBitLinear` offline: packed uint8 codes, output multiplied by `weight_scale`.
    AutoOffline,
    /// `BitLinear` (`linear_class: bitlinear`, the default): packed uint8 codes, output
    /// divided by `weight_scale · input_scale`.
    BitLinear,
}

impl LinearKind {
    /// Whether the projection weights are stored packed (uint8, four codes a byte).
    pub fn packed(self) -> bool {
        matches!(self, LinearKind::AutoOffline | LinearKind::BitLinear)
    }
}

/// A parsed `config.json`, with transformers' defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct HfConfig {
    /// The `config.json` path (named in errors).
    pub file: PathBuf,
    /// `architectures[0]`.
    pub architecture: String,
    /// The model definition it selects.
    pub arch: HfArch,
    /// `model_type` (informative).
    pub model_type: String,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `intermediate_size`.
    pub intermediate_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (default: `num_attention_heads`).
    pub num_key_value_heads: usize,
    /// `head_dim` (default: `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `rms_norm_eps` (default 1e-6 for Llama-type configs, 1e-5 for `bitnet`).
    pub rms_norm_eps: f32,
    /// `rope_theta` (default 10000, 500000 for `bitnet`).
    pub rope_theta: f64,
    /// `rope_scaling` / `rope_parameters`.
    pub rope_scaling: RopeScaling,
    /// `hidden_act`.
    pub hidden_act: HfActivation,
    /// `tie_word_embeddings` (default false).
    pub tie_word_embeddings: bool,
    /// How the projections compute (from the architecture and `quantization_config`).
    pub linear: LinearKind,
}

/// Typed access to the fields of one JSON object, every error naming the field.
struct Fields<'a> {
    file: &'a Path,
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn name(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> HfError {
        HfError::Config {
            file: self.file.to_path_buf(),
            field: self.name(key),
            reason: reason.into(),
        }
    }

    fn unsupported(&self, key: &str, value: impl Into<String>) -> HfError {
        HfError::Unsupported {
            file: self.file.to_path_buf(),
            field: self.name(key),
            value: value.into(),
        }
    }

    /// The value, `None` when absent or `null`.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize_opt(&self, key: &str) -> Result<Option<usize>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn usize_req(&self, key: &str) -> Result<usize, HfError> {
        let v = self
            .usize_opt(key)?
            .ok_or_else(|| self.bad(key, "missing"))?;
        if v == 0 {
            return Err(self.bad(key, "must be positive"));
        }
        Ok(v)
    }

    fn f64_opt(&self, key: &str) -> Result<Option<f64>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("expected a number, got {v}"))),
        }
    }

    fn f64_req(&self, key: &str) -> Result<f64, HfError> {
        self.f64_opt(key)?
            .ok_or_else(|| self.bad(key, "missing (required by this rope type)"))
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, HfError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad(key, format!("expected true or false, got {v}"))),
        }
    }

    fn str_opt(&self, key: &str) -> Result<Option<&'a str>, HfError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(key, format!("expected a string, got {v}"))),
        }
    }
}

impl HfConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<HfConfig, HfError> {
        let text = std::fs::read_to_string(path).map_err(|source| HfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| HfError::Parse {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        HfConfig::from_json(path, &value)
    }

    /// Checks a parsed `config.json` (`file` is only named in errors).
    pub fn from_json(file: &Path, value: &Value) -> Result<HfConfig, HfError> {
        let obj = value.as_object().ok_or_else(|| HfError::Parse {
            file: file.to_path_buf(),
            reason: "not a JSON object".into(),
        })?;
        let f = Fields {
            file,
            obj,
            prefix: "",
        };
        let architecture = match f.get("architectures") {
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            Some(v) => return Err(f.unsupported("architectures", v.to_string())),
            None => return Err(f.bad("architectures", "missing")),
        };
        let arch = HfArch::from_class(&architecture).ok_or_else(|| {
            f.unsupported("architectures", format!("[{:?}]", architecture.as_str()))
        })?;
        let defaults = arch.info();
        let model_type = f.str_opt("model_type")?.unwrap_or_default().to_string();

        let hidden_size = f.usize_req("hidden_size")?;
        let intermediate_size = f.usize_req("intermediate_size")?;
        let num_hidden_layers = f.usize_req("num_hidden_layers")?;
        let num_attention_heads = f.usize_req("num_attention_heads")?;
        let vocab_size = f.usize_req("vocab_size")?;
        let num_key_value_heads = f
            .usize_opt("num_key_value_heads")?
            .unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(f.bad(
                "num_key_value_heads",
                format!("{num_key_value_heads} does not divide num_attention_heads {num_attention_heads}"),
            ));
        }
        let head_dim = match f.usize_opt("head_dim")? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(f.bad(
                        "head_dim",
                        format!("absent, and hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}"),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(f.bad(
                "head_dim",
                format!("{head_dim} is not a positive even number"),
            ));
        }
        let rms_norm_eps = f
            .f64_opt("rms_norm_eps")?
            .unwrap_or(defaults.default_rms_norm_eps) as f32;
        let hidden_act = match f.str_opt("hidden_act")? {
            None => defaults.default_hidden_act,
            Some("silu" | "swish") => HfActivation::Silu,
            Some("relu2") => HfActivation::Relu2,
            Some(other) => return Err(f.unsupported("hidden_act", format!("{other:?}"))),
        };
        let tie_word_embeddings = f.bool_or("tie_word_embeddings", false)?;

        // Fields that change the computation and are not implemented.
        for key in ["attention_bias", "mlp_bias"] {
            if f.bool_or(key, false)? {
                return Err(f.unsupported(key, "true"));
            }
        }
        if let Some(v) = f.get("sliding_window") {
            if f.bool_or("use_sliding_window", true)? {
                return Err(f.unsupported("sliding_window", v.to_string()));
            }
        }
        if let Some(p) = f.f64_opt("partial_rotary_factor")? {
            if p != 1.0 {
                return Err(f.unsupported("partial_rotary_factor", p.to_string()));
            }
        }

        let (rope_theta, rope_scaling) = rope(&f, defaults.default_rope_theta)?;
        let linear = linear_kind(&f, arch)?;
        Ok(HfConfig {
            file: file.to_path_buf(),
            architecture,
            arch,
            model_type,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size,
            rms_norm_eps,
            rope_theta,
            rope_scaling,
            hidden_act,
            tie_word_embeddings,
            linear,
        })
    }

    /// `num_attention_heads · head_dim`: the width of `q_proj`'s output and `o_proj`'s input.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// `num_key_value_heads · head_dim`: the width of `k_proj`'s and `v_proj`'s outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// The `head_dim/2` inverse frequencies of the rotary embedding.
    pub fn inv_freq(&self) -> Vec<f32> {
        rope_inv_freq(self.head_dim, self.rope_theta, self.rope_scaling)
    }
}

/// `rope_theta` and the scaling. transformers 5 writes `rope_parameters` (theta inside);
/// earlier versions `rope_theta` and `rope_scaling`. The rope type is `rope_type`, or `type`
/// in older files.
fn rope(f: &Fields<'_>, default_theta: f64) -> Result<(f64, RopeScaling), HfError> {
    let top_theta = f.f64_opt("rope_theta")?;
    let (key, params) = match (f.get("rope_parameters"), f.get("rope_scaling")) {
        (Some(p), _) => ("rope_parameters", p),
        (None, Some(s)) => ("rope_scaling", s),
        (None, None) => return Ok((top_theta.unwrap_or(default_theta), RopeScaling::Default)),
    };
    let obj = params
        .as_object()
        .ok_or_else(|| f.unsupported(key, params.to_string()))?;
    let p = Fields {
        file: f.file,
        obj,
        prefix: key,
    };
    let theta = p
        .f64_opt("rope_theta")?
        .or(top_theta)
        .unwrap_or(default_theta);
    if theta <= 0.0 {
        return Err(p.bad("rope_theta", format!("{theta} is not positive")));
    }
    if let Some(pr) = p.f64_opt("partial_rotary_factor")? {
        if pr != 1.0 {
            return Err(p.unsupported("partial_rotary_factor", pr.to_string()));
        }
    }
    let type_key = if p.get("rope_type").is_some() {
        "rope_type"
    } else {
        "type"
    };
    let scaling = match p.str_opt(type_key)? {
        // A per-layer-type dictionary (no type of its own) is not a Llama rope.
        None if obj.values().any(Value::is_object) => {
            return Err(f.unsupported(key, params.to_string()));
        }
        None | Some("default") => RopeScaling::Default,
        Some("llama3") => {
            let factor = p.f64_req("factor")?;
            let low_freq_factor = p.f64_req("low_freq_factor")?;
            let high_freq_factor = p.f64_req("high_freq_factor")?;
            let original_max_position_embeddings = p.f64_req("original_max_position_embeddings")?;
            if factor <= 0.0 {
                return Err(p.bad("factor", format!("{factor} is not positive")));
            }
            if original_max_position_embeddings <= 0.0 {
                return Err(p.bad("original_max_position_embeddings", "must be positive"));
            }
            if high_freq_factor == low_freq_factor {
                return Err(p.bad(
                    "high_freq_factor",
                    "equals low_freq_factor (division by zero)",
                ));
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }
        }
        Some("linear") => {
            let factor = p.f64_req("factor")?;
            if factor <= 0.0 {
                return Err(p.bad("factor", format!("{factor} is not positive")));
            }
            RopeScaling::Linear { factor }
        }
        Some(other) => return Err(p.unsupported(type_key, format!("{other:?}"))),
    };
    Ok((theta, scaling))
}

/// The projection arithmetic, from the architecture and `quantization_config` as transformers'
/// bitnet quantizer reads it (`BitNetQuantConfig`: `linear_class` default `bitlinear`,
/// `quantization_mode` default `offline`, `use_rms_norm` default false).
fn linear_kind(f: &Fields<'_>, arch: HfArch) -> Result<LinearKind, HfError> {
    let qc = f.get("quantization_config");
    if arch.info().remote_bitlinear {
        if let Some(v) = qc {
            return Err(f.unsupported("quantization_config", v.to_string()));
        }
        // 1bitLLM's BitLinear: activations to `input_bits`, weights ternary (`weight_bits` 1).
        if let Some(b) = f.usize_opt("input_bits")? {
            if b != 8 {
                return Err(f.unsupported("input_bits", b.to_string()));
            }
        }
        if let Some(b) = f.usize_opt("weight_bits")? {
            if b != 1 {
                return Err(f.unsupported("weight_bits", b.to_string()));
            }
        }
        return Ok(LinearKind::OneBitLlm);
    }
    let Some(qc) = qc else {
        return Err(f.unsupported(
            "quantization_config",
            "missing (a float checkpoint, not a ternary one)",
        ));
    };
    let obj = qc
        .as_object()
        .ok_or_else(|| f.unsupported("quantization_config", qc.to_string()))?;
    let q = Fields {
        file: f.file,
        obj,
        prefix: "quantization_config",
    };
    match q.str_opt("quant_method")? {
        Some("bitnet") => {}
        other => {
            return Err(q.unsupported("quant_method", format!("{other:?}")));
        }
    }
    if q.bool_or("use_rms_norm", false)? {
        return Err(q.unsupported("use_rms_norm", "true"));
    }
    if let Some(m) = q.get("modules_to_not_convert") {
        let only_head = m
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str() == Some("lm_head")));
        if !only_head {
            return Err(q.unsupported("modules_to_not_convert", m.to_string()));
        }
    }
    let online = match q.str_opt("quantization_mode")? {
        None | Some("offline") => false,
        Some("online") => true,
        Some(other) => return Err(q.unsupported("quantization_mode", format!("{other:?}"))),
    };
    match q.str_opt("linear_class")? {
        None | Some("bitlinear") => Ok(LinearKind::BitLinear),
        Some("autobitlinear") if online => Ok(LinearKind::AutoOnline),
        Some("autobitlinear") => Ok(LinearKind::AutoOffline),
        Some(other) => Err(q.unsupported("linear_class", format!("{other:?}"))),
    }
}

/// The rotary inverse frequencies as transformers computes them in float32:
/// `inv_freq[i] = 1 / θ^(fl32(2i)/d)`, then, for `llama3`, with `λ = 2π/inv_freq`,
/// `L = original/low_freq_factor`, `H = original/high_freq_factor`:
/// `λ > L` → `inv_freq/factor`; `λ < H` → unchanged; otherwise
/// `(1 − s)·inv_freq/factor + s·inv_freq` with `s = (original/λ − low)/(high − low)`.
pub fn rope_inv_freq(head_dim: usize, theta: f64, scaling: RopeScaling) -> Vec<f32> {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let e = (2 * i) as f32 / head_dim as f32;
            let inv = 1.0f32 / (theta.powf(e as f64) as f32);
            match scaling {
                RopeScaling::Default => inv,
                RopeScaling::Linear { factor } => (inv as f64 / factor) as f32,
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings: old,
                } => {
                    let inv = inv as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / inv;
                    let low_wavelen = old / low_freq_factor;
                    let high_wavelen = old / high_freq_factor;
                    let v = if wavelen > low_wavelen {
                        inv / factor
                    } else if wavelen < high_wavelen {
                        inv
                    } else {
                        let s = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - s) * inv / factor + s * inv
                    };
                    v as f32
                }
            }
        })
        .collect()
}
