//! The metadata keys of each output, in the order the reference converters write them
//! (FORMATS.md §2.5; the mainline order from `tests/data/tiny/llama-cpp/*.dump.json`).

use crate::arch::BitnetCppKeys;
use crate::checkpoint::tokenizer::TokenizerMeta;
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::gguf::Value;

use super::{ConvertError, ConvertOptions, Flavor, OutType};

/// Builds the whole metadata list for a conversion of a checkpoint directory.
pub(super) fn metadata(
    ck: &Checkpoint,
    opts: &ConvertOptions,
    general_name: &str,
    total_params: u64,
) -> Result<Vec<(String, Value)>, ConvertError> {
    let tok_flavor = opts.flavor();
    let meta = TokenizerMeta::from_dir(&ck.dir, tok_flavor, opts.tokenizer_pre.as_deref())
        .map_err(|e| ConvertError::Tokenizer(e.to_string()))?;
    Ok(metadata_for(
        &ck.config,
        opts.out_type,
        tok_flavor,
        general_name,
        total_params,
        &meta,
    ))
}

/// Appends the keys of bitconv's own to `kv`, a file's reference metadata, unless the target
/// is the 2024 reference's exact bytes: `bitconv.target` (the runtime the file is for, which
/// also says how its tensor type ids are numbered), `{arch}.hidden_activation` under the
/// architecture `kv` names (the FFN activation, which the 2024 runtimes take from the
/// architecture and the current ones ignore) and, for TL files, the kernel parameters the
/// tensors were packed with. Used by `convert` and `dummy`.
pub fn append_own_keys(
    kv: &mut Vec<(String, Value)>,
    cfg: &ModelConfig,
    target: crate::arch::Target,
    kernel_entries: &[crate::quant::layouts::params::KernelEntry],
) {
    use crate::quant::layouts::params;
    if target == crate::arch::Target::BitnetCpp2024 {
        return;
    }
    let arch_name = kv
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default()
        .to_owned();
    kv.push((
        crate::arch::TARGET_KEY.to_owned(),
        Value::String(target.name().to_owned()),
    ));
    kv.push((
        format!("{arch_name}.{}", crate::arch::HIDDEN_ACTIVATION),
        Value::String(cfg.activation.name().to_owned()),
    ));
    if !kernel_entries.is_empty() {
        kv.push((
            params::GGUF_KEY.to_string(),
            Value::String(params::emit_kernel_config_ini(kernel_entries)),
        ));
    }
}

/// What the runtimes users deploy to will compute wrongly for this model, in words, with what
/// to run to see it: today the activation that the current bitnet.cpp and mainline llama.cpp
/// apply to every BitNet FFN.
pub fn runtime_warnings(cfg: &ModelConfig) -> Vec<String> {
    use crate::arch::Target;
    let wrong: Vec<&str> = [Target::BitnetCpp, Target::LlamaCpp]
        .into_iter()
        .filter(|t| t.activation_for(cfg.arch) != cfg.activation)
        .map(|t| t.name())
        .collect();
    if wrong.is_empty() {
        return Vec::new();
    }
    vec![format!(
        "{} compute{} this {} model's FFN with {} although it is trained with {} (they ignore \
         {}.{}); bitconv and bitnet-cpp-2024 run it as trained. See what {} will do to it: \
         `bitconv validate FILE --as {}`",
        wrong.join(" and "),
        if wrong.len() == 1 { "s" } else { "" },
        cfg.arch,
        Target::BitnetCpp.activation_for(cfg.arch).name(),
        cfg.activation.name(),
        cfg.arch,
        crate::arch::HIDDEN_ACTIVATION,
        if wrong.len() == 1 { "it" } else { "they" },
        wrong[0]
    )]
}

/// The metadata list for a model described by `cfg` written as `out` in `flavor`'s
/// conventions, with the tokenizer keys of `tokenizer` (which must be of that flavor). Used by
/// `convert` and `dummy`.
pub fn metadata_for(
    cfg: &ModelConfig,
    out: OutType,
    flavor: Flavor,
    general_name: &str,
    total_params: u64,
    tokenizer: &TokenizerMeta,
) -> Vec<(String, Value)> {
    let keys = cfg.arch.info().bitnet_cpp_keys;
    if flavor == Flavor::BitnetCpp && keys == BitnetCppKeys::Ms {
        return metadata_ms_b158(cfg, out, general_name, tokenizer);
    }
    let a = match flavor {
        Flavor::Mainline => cfg.arch.mainline_name(),
        Flavor::BitnetCpp => cfg.arch.name(),
    };
    let mut kv: Vec<(String, Value)> = Vec::new();
    let mut put = |k: String, v: Value| kv.push((k, v));
    let u32v = |x: u64| Value::U32(x as u32);

    put("general.architecture".into(), Value::String(a.into()));
    if flavor == Flavor::Mainline {
        put("general.type".into(), Value::String("model".into()));
    }
    put("general.name".into(), Value::String(general_name.into()));
    if flavor == Flavor::Mainline {
        put(
            "general.size_label".into(),
            Value::String(size_label(total_params)),
        );
    }
    put(format!("{a}.block_count"), u32v(cfg.num_layers));
    if let Some(c) = cfg.context_length {
        put(format!("{a}.context_length"), u32v(c));
    }
    put(format!("{a}.embedding_length"), u32v(cfg.hidden_size));
    put(
        format!("{a}.feed_forward_length"),
        u32v(cfg.intermediate_size),
    );
    put(format!("{a}.attention.head_count"), u32v(cfg.num_heads));
    if cfg.has_kv_heads_key || flavor == Flavor::Mainline {
        put(
            format!("{a}.attention.head_count_kv"),
            u32v(cfg.num_kv_heads),
        );
    }
    if let Some(t) = cfg.rope_theta {
        put(format!("{a}.rope.freq_base"), Value::F32(t as f32));
    }
    if let Some(e) = cfg.rms_norm_eps {
        put(
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(e as f32),
        );
    }
    if flavor == Flavor::Mainline {
        put(format!("{a}.attention.key_length"), u32v(cfg.head_dim));
        put(format!("{a}.attention.value_length"), u32v(cfg.head_dim));
    }
    put("general.file_type".into(), Value::U32(out.file_type()));
    match (flavor, keys) {
        (Flavor::Mainline, _) => {
            put(
                format!("{a}.rope.scaling.type"),
                Value::String("linear".into()),
            );
            put(format!("{a}.rope.scaling.factor"), Value::F32(1.0));
            put("general.quantization_version".into(), Value::U32(2));
        }
        (Flavor::BitnetCpp, BitnetCppKeys::Bitnet) => {
            put(format!("{a}.vocab_size"), u32v(cfg.vocab_size));
            put(
                format!("{a}.rope.scaling.type"),
                Value::String("linear".into()),
            );
            put(format!("{a}.rope.scaling.factor"), Value::F32(1.0));
        }
        // (`Ms` files were written above.)
        (Flavor::BitnetCpp, BitnetCppKeys::Llama | BitnetCppKeys::Ms) => {
            put(format!("{a}.vocab_size"), u32v(cfg.vocab_size));
            put(format!("{a}.rope.dimension_count"), u32v(cfg.head_dim));
            if let Some(f) = cfg.rope_linear_factor {
                put(
                    format!("{a}.rope.scaling.type"),
                    Value::String("linear".into()),
                );
                put(format!("{a}.rope.scaling.factor"), Value::F32(f as f32));
            }
        }
    }

    for (k, v) in tokenizer.kv_entries() {
        kv.push((k, v));
    }
    // llama-quantize appends the quantization version to the file it rewrites.
    if out.quantization_version() {
        kv.push(("general.quantization_version".into(), Value::U32(2)));
    }
    kv
}

/// The chat template `convert-ms-to-gguf-bitnet.py` forces for BitNet b1.58 2B-4T (the
/// official GGUF carries it; bitnet.cpp's runtime recognises `BITNET` in it).
pub const B158_CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}{% if message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\\n\\nBITNETAssistant: ' + eos_token }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";

/// `bitnet-b1.58` for bitnet.cpp: the key order of the official 2B-4T GGUF, written by
/// `convert-ms-to-gguf-bitnet.py` (FORMATS.md §2.5): arch, name, vocab_size, context_length,
/// embedding_length, block_count, feed_forward_length, rope.dimension_count, head_count,
/// head_count_kv, `tokenizer.ggml.add_bos_token = true`, rms eps, rope.freq_base, file_type,
/// then the vocabulary and the special vocabulary with the constant chat template.
///
/// Deviation from the official file, on purpose: `tokenizer.ggml.pre` is written after
/// `tokenizer.ggml.model` (the official file has none, so llama.cpp falls back to the
/// `default` pre-tokenizer, which splits text differently from Llama-3's).
fn metadata_ms_b158(
    cfg: &ModelConfig,
    out: OutType,
    general_name: &str,
    tokenizer: &TokenizerMeta,
) -> Vec<(String, Value)> {
    let a = cfg.arch.name();
    let u32v = |x: u64| Value::U32(x as u32);
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(a.into())),
        ("general.name".into(), Value::String(general_name.into())),
        (format!("{a}.vocab_size"), u32v(cfg.vocab_size)),
    ];
    if let Some(c) = cfg.context_length {
        kv.push((format!("{a}.context_length"), u32v(c)));
    }
    kv.push((format!("{a}.embedding_length"), u32v(cfg.hidden_size)));
    kv.push((format!("{a}.block_count"), u32v(cfg.num_layers)));
    kv.push((
        format!("{a}.feed_forward_length"),
        u32v(cfg.intermediate_size),
    ));
    // The runtime asserts rope.dimension_count == head_dim; the ms converter's hidden/heads is
    // the same number for every released model.
    kv.push((format!("{a}.rope.dimension_count"), u32v(cfg.head_dim)));
    kv.push((format!("{a}.attention.head_count"), u32v(cfg.num_heads)));
    kv.push((
        format!("{a}.attention.head_count_kv"),
        u32v(cfg.num_kv_heads),
    ));
    kv.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)));
    if let Some(e) = cfg.rms_norm_eps {
        kv.push((
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(e as f32),
        ));
    }
    if let Some(t) = cfg.rope_theta {
        kv.push((format!("{a}.rope.freq_base"), Value::F32(t as f32)));
    }
    kv.push(("general.file_type".into(), Value::U32(out.file_type())));
    let mut template_written = false;
    for (k, v) in tokenizer.kv_entries() {
        match k.as_str() {
            "tokenizer.ggml.add_bos_token" => continue,
            "tokenizer.chat_template" => {
                if !template_written {
                    kv.push((k, Value::String(B158_CHAT_TEMPLATE.into())));
                    template_written = true;
                }
            }
            _ if k.starts_with("tokenizer.chat_template") => continue,
            _ => kv.push((k, v)),
        }
    }
    if !template_written {
        kv.push((
            "tokenizer.chat_template".into(),
            Value::String(B158_CHAT_TEMPLATE.into()),
        ));
    }
    if out.quantization_version() {
        kv.push(("general.quantization_version".into(), Value::U32(2)));
    }
    kv
}

/// llama.cpp's size label: the parameter count with a K/M/B/T suffix and at least two
/// significant digits (`1963776` → `2.0M`, `7e8` → `700M`).
pub fn size_label(n: u64) -> String {
    let n = n as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round() as u64);
    let digits = digits.trim_start_matches('0').len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::size_label;

    #[test]
    fn size_labels() {
        assert_eq!(size_label(1_963_776), "2.0M");
        assert_eq!(size_label(728_000_000), "728M");
        assert_eq!(size_label(3_320_000_000), "3.3B");
        assert_eq!(size_label(125_000_000), "125M");
    }
}
