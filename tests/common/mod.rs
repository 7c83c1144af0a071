//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod hub;
pub mod mock_hub;
pub mod mutate;
#[path = "../../src/test_rng.rs"]
pub mod rng;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The reference files copied from `shared/reference/tiny`.
pub fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny")
}

/// The built `bitconv` binary.
pub fn bitconv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitconv"))
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The stdout of a command that must have succeeded (else the test fails showing both
/// streams).
pub fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The hyperparameters a synthetic GGUF model states in its metadata.
pub struct Hparams {
    /// Blocks.
    pub n_layer: usize,
    /// `context_length`.
    pub n_ctx: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// FFN width.
    pub n_ff: usize,
    /// Attention heads.
    pub n_head: usize,
    /// KV heads.
    pub n_head_kv: usize,
    /// `rope.freq_base`.
    pub rope_base: f32,
}

/// The `{arch}.*` hyperparameter keys from `block_count` to `layer_norm_rms_epsilon` (1e-5), in
/// the order the synthetic models of the runtime tests write them.
pub fn hparams_kv(arch: &str, h: &Hparams) -> Vec<(String, bitconv::gguf::Value)> {
    use bitconv::gguf::Value;
    let a = arch;
    vec![
        (format!("{a}.block_count"), Value::U32(h.n_layer as u32)),
        (format!("{a}.context_length"), Value::U32(h.n_ctx as u32)),
        (format!("{a}.embedding_length"), Value::U32(h.n_embd as u32)),
        (
            format!("{a}.feed_forward_length"),
            Value::U32(h.n_ff as u32),
        ),
        (
            format!("{a}.attention.head_count"),
            Value::U32(h.n_head as u32),
        ),
        (
            format!("{a}.attention.head_count_kv"),
            Value::U32(h.n_head_kv as u32),
        ),
        (format!("{a}.rope.freq_base"), Value::F32(h.rope_base)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
    ]
}

/// Copies the files of `src` (not its subdirectories) into `dst`, creating `dst`.
pub fn copy_files(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
}

/// Copies the tiny checkpoint `which` (`ckpt-fp16`, `ckpt-fp32`) into `<tmp>/tiny`, the
/// directory name the reference converted (general.name is the directory's name).
pub fn tiny_copy(which: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    copy_files(&tiny().join(which), &dir);
    (tmp, dir)
}

/// Writes a random 1bitLLM-style checkpoint (`BitnetForCausalLM`, fp16 latent weights, tied
/// embedding, SiLU) of the given shape into `dir`, with the tiny checkpoint's tokenizer files
/// (vocabulary `vocab` ≥ 1002; ids past the tokenizer's pieces are padding). Streams tensor by
/// tensor; values are small uniform noise (norm weights around 1).
pub fn random_checkpoint(
    dir: &std::path::Path,
    hidden: usize,
    ff: usize,
    layers: usize,
    heads: usize,
    vocab: usize,
    seed: u64,
) {
    use std::io::Write;
    std::fs::create_dir_all(dir).unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, hidden]),
        ("model.norm.weight".into(), vec![hidden]),
    ];
    for l in 0..layers {
        let p = format!("model.layers.{l}.");
        for (n, s) in [
            ("input_layernorm", vec![hidden]),
            ("post_attention_layernorm", vec![hidden]),
            ("self_attn.inner_attn_ln", vec![hidden]),
            ("mlp.ffn_layernorm", vec![ff]),
            ("self_attn.q_proj", vec![hidden, hidden]),
            ("self_attn.k_proj", vec![hidden, hidden]),
            ("self_attn.v_proj", vec![hidden, hidden]),
            ("self_attn.o_proj", vec![hidden, hidden]),
            ("mlp.gate_proj", vec![ff, hidden]),
            ("mlp.up_proj", vec![ff, hidden]),
            ("mlp.down_proj", vec![hidden, ff]),
        ] {
            tensors.push((format!("{p}{n}.weight"), s));
        }
    }
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (n, s) in &tensors {
        let len = s.iter().product::<usize>() * 2;
        header.insert(
            n.clone(),
            serde_json::json!({"dtype": "F16", "shape": s, "data_offsets": [off, off + len]}),
        );
        off += len;
    }
    let mut hb = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while hb.len() % 8 != 0 {
        hb.push(b' ');
    }
    let f = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    let mut w = std::io::BufWriter::new(f);
    w.write_all(&(hb.len() as u64).to_le_bytes()).unwrap();
    w.write_all(&hb).unwrap();
    let mut x = rng::XorShift64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut next = move || (x.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
    let mut buf = Vec::new();
    for (_, s) in &tensors {
        buf.clear();
        for _ in 0..s.iter().product::<usize>() {
            let v = if s.len() == 1 {
                1.0 + 0.05 * next()
            } else {
                0.035 * next()
            };
            buf.extend_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
        w.write_all(&buf).unwrap();
    }
    w.flush().unwrap();
    let cfg = serde_json::json!({
        "architectures": ["BitnetForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": vocab,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "torch_dtype": "float16",
        "bos_token_id": 1, "eos_token_id": 2,
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    for t in [
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(tiny().join("ckpt-fp16").join(t), dir.join(t)).unwrap();
    }
}

/// Reports a cross-check that cannot run here: prints `SKIPPED: …` (visible in the test output),
/// and fails the test instead when `BITCONV_REQUIRE_CROSSCHECKS` is set (`.ci/run` sets it once
/// it has installed the Python peers, so a cross-check CI set up for never skips silently).
pub fn cross_check_skipped(why: &str) {
    assert!(
        std::env::var_os("BITCONV_REQUIRE_CROSSCHECKS").is_none(),
        "a required cross-check cannot run: {why}"
    );
    eprintln!("SKIPPED: {why}");
}
