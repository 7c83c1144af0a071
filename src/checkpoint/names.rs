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

/// Maps a Hugging Face tensor name; `None` means no mapping knows the name. The names are the
/// architecture's ([`crate::arch::HfNames`], [`crate::arch::SubNorms`]).
pub fn map_name(hf: &str, arch: Arch) -> Option<Mapped> {
    let info = arch.info();
    let names = info.names;
    if names.dropped.iter().any(|d| hf.ends_with(d)) {
        return Some(Mapped::Dropped);
    }
    if let Some(base) = hf.strip_suffix(".weight_scale") {
        return Some(Mapped::WeightScale(format!("{base}.weight")));
    }
    if hf == names.embedding {
        return Some(tensor("token_embd.weight", None));
    }
    if hf == names.final_norm {
        return Some(tensor("output_norm.weight", None));
    }
    // Without an output tensor (`bitnet`: 1bitLLM models are tied) the head is not mapped.
    if hf == names.head && info.output {
        return Some(tensor("output.weight", None));
    }
    let rest = hf.strip_prefix(names.block)?;
    let (n, rest) = rest.split_once('.')?;
    let layer: u64 = n.parse().ok()?;
    let stem = rest.strip_suffix(".weight")?;
    for (hf_s, gguf_s, proj) in names.projections {
        if stem == *hf_s {
            return Some(tensor(&format!("blk.{layer}.{gguf_s}.weight"), Some(proj)));
        }
    }
    for (hf_s, gguf_s) in names.norms {
        if stem == *hf_s {
            return Some(tensor(&format!("blk.{layer}.{gguf_s}.weight"), None));
        }
    }
    if let Some(sub) = info.sub_norms {
        for (names, gguf_s) in [(&sub.attn, "attn_sub_norm"), (&sub.ffn, "ffn_sub_norm")] {
            if names.required.contains(&stem) || names.accepted.contains(&stem) {
                return Some(tensor(&format!("blk.{layer}.{gguf_s}.weight"), None));
            }
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
