//! Hugging Face → GGUF tensor names per architecture (FORMATS.md §2.3).

use super::config::Arch;

/// What a Hugging Face tensor becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// A GGUF tensor with this name; `proj` is the projection suffix (`q_proj`, …) for the
    /// ternary projections, `None` otherwise.
    Tensor {
        /// GGUF name.
        name: String,
        /// Projection kind, for ternary weights.
        proj: Option<&'static str>,
    },
    /// A tensor the converter drops (rotary caches, attention bias buffers).
    Dropped,
    /// A packed checkpoint's per-tensor `weight_scale` for the weight of this HF name.
    WeightScale(String),
}

const PROJECTIONS: &[(&str, &str, &str)] = &[
    ("self_attn.q_proj", "attn_q", "q_proj"),
    ("self_attn.k_proj", "attn_k", "k_proj"),
    ("self_attn.v_proj", "attn_v", "v_proj"),
    ("self_attn.o_proj", "attn_output", "o_proj"),
    ("mlp.gate_proj", "ffn_gate", "gate_proj"),
    ("mlp.up_proj", "ffn_up", "up_proj"),
    ("mlp.down_proj", "ffn_down", "down_proj"),
];

const NORMS: &[(&str, &str, bool)] = &[
    // (HF suffix, GGUF suffix, only for BitNet archs)
    ("input_layernorm", "attn_norm", false),
    ("post_attention_layernorm", "ffn_norm", false),
    ("self_attn.inner_attn_ln", "attn_sub_norm", true),
    ("self_attn.attn_sub_norm", "attn_sub_norm", true),
    ("attention.attn_sub_norm", "attn_sub_norm", true),
    ("mlp.ffn_layernorm", "ffn_sub_norm", true),
    ("mlp.ffn_sub_norm", "ffn_sub_norm", true),
    ("feed_forward.ffn_sub_norm", "ffn_sub_norm", true),
];

/// Maps a Hugging Face tensor name; `None` means no mapping knows the name.
pub fn map_name(hf: &str, arch: Arch) -> Option<Mapped> {
    if hf.ends_with(".rotary_emb.inv_freq")
        || hf.ends_with(".attention.masked_bias")
        || hf.ends_with(".attention.bias")
    {
        return Some(Mapped::Dropped);
    }
    if let Some(base) = hf.strip_suffix(".weight_scale") {
        return Some(Mapped::WeightScale(format!("{base}.weight")));
    }
    match hf {
        "model.embed_tokens.weight" => return Some(tensor("token_embd.weight", None)),
        "model.norm.weight" => return Some(tensor("output_norm.weight", None)),
        // The `bitnet` architecture has no output tensor (1bitLLM models are tied).
        "lm_head.weight" if arch != Arch::Bitnet => return Some(tensor("output.weight", None)),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, rest) = rest.split_once('.')?;
    let layer: u64 = n.parse().ok()?;
    let stem = rest.strip_suffix(".weight")?;
    for (hf_s, gguf_s, proj) in PROJECTIONS {
        if stem == *hf_s {
            return Some(tensor(&format!("blk.{layer}.{gguf_s}.weight"), Some(proj)));
        }
    }
    for (hf_s, gguf_s, bitnet_only) in NORMS {
        if stem == *hf_s && (!bitnet_only || arch != Arch::Llama) {
            return Some(tensor(&format!("blk.{layer}.{gguf_s}.weight"), None));
        }
    }
    None
}

fn tensor(name: &str, proj: Option<&'static str>) -> Mapped {
    Mapped::Tensor {
        name: name.to_string(),
        proj,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_reference_names() {
        let m = |s| map_name(s, Arch::Bitnet);
        assert_eq!(
            m("model.embed_tokens.weight"),
            Some(tensor("token_embd.weight", None))
        );
        assert_eq!(
            m("model.layers.10.self_attn.o_proj.weight"),
            Some(tensor("blk.10.attn_output.weight", Some("o_proj")))
        );
        assert_eq!(
            m("model.layers.0.self_attn.inner_attn_ln.weight"),
            Some(tensor("blk.0.attn_sub_norm.weight", None))
        );
        assert_eq!(
            map_name("model.layers.3.mlp.ffn_sub_norm.weight", Arch::BitnetB158),
            Some(tensor("blk.3.ffn_sub_norm.weight", None))
        );
        assert_eq!(
            m("model.layers.0.self_attn.rotary_emb.inv_freq"),
            Some(Mapped::Dropped)
        );
        assert_eq!(m("lm_head.weight"), None);
        assert_eq!(
            map_name("lm_head.weight", Arch::Llama),
            Some(tensor("output.weight", None))
        );
        assert_eq!(m("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(
            map_name("model.layers.0.mlp.ffn_sub_norm.weight", Arch::Llama),
            None
        );
        assert_eq!(
            m("model.layers.0.mlp.up_proj.weight_scale"),
            Some(Mapped::WeightScale(
                "model.layers.0.mlp.up_proj.weight".into()
            ))
        );
    }
}
