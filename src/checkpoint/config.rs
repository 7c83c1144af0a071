//! `config.json` into a typed model description.
//!
//! The GGUF architecture is chosen from the checkpoint itself (FORMATS.md §7) by the table of
//! architectures ([`Arch::from_hf`]: `architectures[0]` and `hidden_act`): a `Bitnet…` /
//! `BitNet…` architecture with `hidden_act: silu` is the 1bitLLM family and becomes `bitnet`
//! (SiLU gate, tied head); with `relu2` it is the 2B-4T family and becomes `bitnet-b1.58`
//! (ReLU², optional untied head); `LlamaForCausalLM` with a bitnet `quantization_config`
//! (Llama3-8B-1.58, Falcon3, Falcon-E) becomes `llama`.

use std::path::Path;

use serde::Deserialize;

pub use crate::arch::{Activation, Arch};

use super::CheckpointError;

/// `quantization_config` of packed checkpoints.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq)]
pub struct QuantizationConfig {
    /// `bitnet` for the families bitconv reads.
    #[serde(default)]
    pub quant_method: Option<String>,
    /// `autobitlinear` (multiply by `weight_scale`) or `bitlinear` (divide; the default).
    #[serde(default)]
    pub linear_class: Option<String>,
    /// `offline` (packed weights) or `online` (master weights).
    #[serde(default)]
    pub quantization_mode: Option<String>,
}

/// The HF suffixes of the seven ternary projections of a block.
pub const PROJECTIONS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// How a packed checkpoint's `weight_scale` turns codes into weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ScaleConvention {
    /// `W = T · weight_scale` (transformers `AutoBitLinear`, 2B-4T).
    Multiply,
    /// `W = T / weight_scale` (transformers `BitLinear`, Llama3-8B-1.58 and Falcon).
    Divide,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architectures: Vec<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    hidden_act: Option<String>,
    hidden_size: Option<u64>,
    intermediate_size: Option<u64>,
    num_hidden_layers: Option<u64>,
    num_attention_heads: Option<u64>,
    #[serde(default)]
    num_key_value_heads: Option<u64>,
    #[serde(default)]
    head_dim: Option<u64>,
    vocab_size: Option<u64>,
    #[serde(default)]
    max_position_embeddings: Option<u64>,
    #[serde(default)]
    rope_theta: Option<f64>,
    #[serde(default)]
    rms_norm_eps: Option<f64>,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
    #[serde(default)]
    torch_dtype: Option<String>,
    #[serde(default)]
    bos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    #[serde(default)]
    pad_token_id: Option<serde_json::Value>,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    quantization_config: Option<QuantizationConfig>,
    #[serde(default)]
    attention_bias: Option<bool>,
    #[serde(default)]
    mlp_bias: Option<bool>,
    #[serde(default)]
    partial_rotary_factor: Option<f64>,
}

/// A model description read from `config.json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelConfig {
    /// `architectures[0]`.
    pub hf_architecture: String,
    /// `model_type`, if given.
    pub model_type: Option<String>,
    /// The GGUF architecture bitconv writes (its family is [`crate::arch::ArchInfo::family`]).
    pub arch: Arch,
    /// FFN activation.
    pub activation: Activation,
    /// `hidden_size`.
    pub hidden_size: u64,
    /// `intermediate_size`.
    pub intermediate_size: u64,
    /// `num_hidden_layers`.
    pub num_layers: u64,
    /// `num_attention_heads`.
    pub num_heads: u64,
    /// `num_key_value_heads` (defaults to `num_heads`).
    pub num_kv_heads: u64,
    /// Whether `num_key_value_heads` was present.
    pub has_kv_heads_key: bool,
    /// Head dimension (`head_dim`, or hidden / heads).
    pub head_dim: u64,
    /// Whether `head_dim` was present.
    pub has_head_dim_key: bool,
    /// `vocab_size`.
    pub vocab_size: u64,
    /// `max_position_embeddings`.
    pub context_length: Option<u64>,
    /// `rope_theta`.
    pub rope_theta: Option<f64>,
    /// `rms_norm_eps`.
    pub rms_norm_eps: Option<f64>,
    /// `tie_word_embeddings` (default: the architecture's
    /// [`crate::arch::ArchInfo::tied_by_default`]).
    pub tie_word_embeddings: bool,
    /// `torch_dtype`.
    pub torch_dtype: Option<String>,
    /// `bos_token_id` (first one if a list).
    pub bos_token_id: Option<u64>,
    /// `eos_token_id` (first one if a list).
    pub eos_token_id: Option<u64>,
    /// `pad_token_id`.
    pub pad_token_id: Option<u64>,
    /// Linear rope scaling factor, when the config asks for linear scaling.
    pub rope_linear_factor: Option<f64>,
    /// `quantization_config`, for packed checkpoints.
    pub quantization: Option<QuantizationConfig>,
}

fn first_id(v: &Option<serde_json::Value>) -> Option<u64> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|x| x.as_u64()),
        _ => None,
    }
}

impl ModelConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig, CheckpointError> {
        let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parses config JSON; `path` names the file in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<ModelConfig, CheckpointError> {
        let invalid = |what: String| CheckpointError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| invalid(format!("not a valid config: {e}")))?;
        let need = |v: Option<u64>, key: &str| {
            v.filter(|&x| x > 0).ok_or_else(|| {
                invalid(format!(
                    "key \"{key}\" is missing or not a positive integer"
                ))
            })
        };
        // Fields that change the computation and that no GGUF file of these architectures can
        // express: refused by name, never ignored.
        for (key, on) in [
            ("attention_bias", raw.attention_bias),
            ("mlp_bias", raw.mlp_bias),
        ] {
            if on == Some(true) {
                return Err(invalid(format!(
                    "{key}: true is not supported (the ternary architectures have no biases)"
                )));
            }
        }
        if let Some(p) = raw.partial_rotary_factor.filter(|&p| p != 1.0) {
            return Err(invalid(format!(
                "partial_rotary_factor: {p} is not supported (RoPE over the whole head only)"
            )));
        }
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let intermediate_size = need(raw.intermediate_size, "intermediate_size")?;
        let num_layers = need(raw.num_hidden_layers, "num_hidden_layers")?;
        let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let vocab_size = need(raw.vocab_size, "vocab_size")?;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(invalid(format!(
                "num_key_value_heads {num_kv_heads} does not divide num_attention_heads {num_heads}"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(invalid(format!(
                        "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"
                    )));
                }
                hidden_size / num_heads
            }
        };
        let hf_architecture = raw
            .architectures
            .first()
            .cloned()
            .ok_or_else(|| invalid("key \"architectures\" is missing or empty".into()))?;
        let act = raw.hidden_act.as_deref().unwrap_or("silu");
        let activation = Activation::from_name(act).ok_or_else(|| {
            invalid(format!(
                "hidden_act {act:?} is not supported ({})",
                Activation::names_list()
            ))
        })?;
        let arch = Arch::from_hf(&hf_architecture, activation).ok_or_else(|| {
            invalid(format!(
                "architecture {hf_architecture:?} is not a ternary family bitconv knows ({})",
                Arch::hf_classes_list()
            ))
        })?;
        // RoPE scaling: linear is written as a frequency scale; every other type changes the
        // frequencies in ways the file cannot express yet, so it is refused, never ignored.
        let rope_linear_factor = match raw.rope_scaling.as_ref() {
            None | Some(serde_json::Value::Null) => None,
            Some(rs) => {
                let ty = rs
                    .get("rope_type")
                    .or_else(|| rs.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("default");
                match ty {
                    "default" => None,
                    "linear" => {
                        Some(rs.get("factor").and_then(|f| f.as_f64()).ok_or_else(|| {
                            invalid("rope_scaling.factor: missing or not a number".into())
                        })?)
                    }
                    other => {
                        return Err(invalid(format!(
                            "rope_scaling.rope_type {other:?} is not supported by the converter \
                             (only linear scaling can be written); converting without it would \
                             give the unscaled model"
                        )))
                    }
                }
            }
        };
        let tie = raw
            .tie_word_embeddings
            .unwrap_or(arch.info().tied_by_default);
        Ok(ModelConfig {
            hf_architecture,
            model_type: raw.model_type,
            arch,
            activation,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            has_kv_heads_key: raw.num_key_value_heads.is_some(),
            head_dim,
            has_head_dim_key: raw.head_dim.is_some(),
            vocab_size,
            context_length: raw.max_position_embeddings,
            rope_theta: raw.rope_theta,
            rms_norm_eps: raw.rms_norm_eps,
            tie_word_embeddings: tie,
            torch_dtype: raw.torch_dtype,
            bos_token_id: first_id(&raw.bos_token_id),
            eos_token_id: first_id(&raw.eos_token_id),
            pad_token_id: first_id(&raw.pad_token_id),
            rope_linear_factor,
            quantization: raw.quantization_config,
        })
    }

    /// For packed checkpoints: how `weight_scale` applies, from `quantization_config.linear_class`
    /// (transformers' `integrations/bitnet.py`: `autobitlinear` multiplies, `bitlinear`, the
    /// default, divides).
    pub fn scale_convention(&self) -> ScaleConvention {
        let class = self
            .quantization
            .as_ref()
            .and_then(|q| q.linear_class.as_deref())
            .unwrap_or("bitlinear");
        if class.eq_ignore_ascii_case("autobitlinear") {
            ScaleConvention::Multiply
        } else {
            ScaleConvention::Divide
        }
    }

    /// Expected (out, in) shape of each projection, by HF suffix.
    pub fn projection_shape(&self, suffix: &str) -> Option<(u64, u64)> {
        let h = self.hidden_size;
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let f = self.intermediate_size;
        Some(match suffix {
            "q_proj" => (q, h),
            "k_proj" | "v_proj" => (kv, h),
            "o_proj" => (h, q),
            "gate_proj" | "up_proj" => (f, h),
            "down_proj" => (h, f),
            _ => return None,
        })
    }

    /// Parameter count implied by the config (embeddings, projections, norms, untied head).
    pub fn parameter_count(&self) -> u64 {
        let h = self.hidden_size;
        let per_layer: u64 = PROJECTIONS
            .iter()
            .filter_map(|s| self.projection_shape(s))
            .map(|(o, i)| o * i)
            .sum::<u64>()
            + 2 * h
            + if self.arch.has_sub_norms() {
                h + self.intermediate_size
            } else {
                0
            };
        let emb = self.vocab_size * h;
        emb + self.num_layers * per_layer + h + if self.tie_word_embeddings { 0 } else { emb }
    }
}
