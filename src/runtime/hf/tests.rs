//! The reader against the transformers goldens of the family fixtures and the numpy golden of
//! the tiny checkpoint, plus config refusals, the llama3 RoPE frequencies, the packed layout,
//! Q8_0 rounding and sharded checkpoints.

use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use super::weights::q8_0_round_trip;
use super::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn family(name: &str) -> PathBuf {
    root().join("tests/data/families").join(name)
}

/// One golden prompt: the tokens fed (prompt then greedy, truncated to the rows) and the rows.
struct GoldenPrompt {
    tokens: Vec<u32>,
    rows: Vec<Vec<f32>>,
}

struct Golden {
    min_cosine: f64,
    min_top1: f64,
    prompts: Vec<GoldenPrompt>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn load_golden(path: &Path) -> Golden {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("golden")).unwrap();
    assert_eq!(g["format"], "bitconv-golden");
    assert_eq!(g["model"]["kind"], "checkpoint", "{}", path.display());
    let tol = &g["tolerances"];
    let prompts = g["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let l = &p["logits"];
            assert_eq!(l["encoding"], "f32-le-base64");
            let (rows, cols) = (
                l["rows"].as_u64().unwrap() as usize,
                l["cols"].as_u64().unwrap() as usize,
            );
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(l["data"].as_str().unwrap())
                .unwrap();
            assert_eq!(bytes.len(), rows * cols * 4);
            let vals: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let mut tokens = ids(&p["token_ids"]);
            tokens.extend(ids(&p["greedy_ids"]));
            tokens.truncate(rows);
            GoldenPrompt {
                tokens,
                rows: vals.chunks_exact(cols).map(<[f32]>::to_vec).collect(),
            }
        })
        .collect();
    Golden {
        min_cosine: tol["min_cosine"].as_f64().unwrap(),
        min_top1: tol["min_top1_agreement"].as_f64().unwrap(),
        prompts,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

fn argmax(a: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in a.iter().enumerate() {
        if v > a[best] {
            best = i;
        }
    }
    best
}

/// Runs every golden prompt; returns (min row cosine, top-1 agreement, rows).
fn measure(model: &HfModel, golden: &Golden) -> (f64, f64, usize) {
    let (mut min_cos, mut agree, mut rows) = (f64::INFINITY, 0usize, 0usize);
    for p in &golden.prompts {
        let got = model.forward(&p.tokens).expect("forward");
        assert_eq!(got.len(), p.rows.len());
        for (g, want) in got.iter().zip(&p.rows) {
            assert_eq!(g.len(), want.len());
            min_cos = min_cos.min(cosine(g, want));
            agree += usize::from(argmax(g) == argmax(want));
            rows += 1;
        }
    }
    (min_cos, agree as f64 / rows as f64, rows)
}

fn check(ckpt: &Path, golden: &str, floor_cos: f64, floor_top1: f64) {
    let model = HfModel::open(ckpt, &HfOptions::default()).expect("open");
    let golden = load_golden(&root().join(golden));
    let (min_cos, top1, rows) = measure(&model, &golden);
    eprintln!(
        "{}: {rows} rows, min row cosine {min_cos:.7}, top-1 {top1:.4}",
        ckpt.display()
    );
    assert!(
        min_cos >= golden.min_cosine.max(floor_cos),
        "{}: min row cosine {min_cos}",
        ckpt.display()
    );
    assert!(
        top1 >= golden.min_top1.max(floor_top1),
        "{}: top-1 agreement {top1}",
        ckpt.display()
    );
}

#[test]
fn hf_bitnet_2b4t_packed_matches_transformers() {
    check(
        &family("bitnet-2b4t-packed"),
        "golden/families/bitnet-2b4t-packed.transformers.json",
        0.99,
        0.95,
    );
}

#[test]
fn hf_bitnet_2b4t_bf16_matches_transformers() {
    check(
        &family("bitnet-2b4t-bf16"),
        "golden/families/bitnet-2b4t-bf16.transformers.json",
        0.99,
        0.95,
    );
}

#[test]
fn hf_llama3_8b_matches_transformers() {
    check(
        &family("llama3-8b"),
        "golden/families/llama3-8b.transformers.json",
        0.99,
        0.95,
    );
}

#[test]
fn hf_falcon3_matches_transformers() {
    check(
        &family("falcon3"),
        "golden/families/falcon3.transformers.json",
        0.99,
        0.95,
    );
}

#[test]
fn hf_falcon_e_matches_transformers() {
    check(
        &family("falcon-e"),
        "golden/families/falcon-e.transformers.json",
        0.99,
        0.95,
    );
}

#[test]
fn hf_tiny_fp32_matches_numpy_golden() {
    // golden/tiny.numpy.json is a checkpoint-level reference (model.kind "checkpoint") made
    // from ckpt-fp32; its own tolerances apply (top-1 0.85: a random, untrained model).
    check(
        &root().join("tests/data/tiny/ckpt-fp32"),
        "golden/tiny.numpy.json",
        0.99,
        0.0,
    );
}

#[test]
fn hf_tiny_fp16_matches_numpy_golden() {
    check(
        &root().join("tests/data/tiny/ckpt-fp16"),
        "golden/tiny.numpy.json",
        0.99,
        0.0,
    );
}

#[test]
fn hf_packed_and_bf16_2b4t_agree() {
    // The packed codes and weight_scale are the absmean ternarization of the bf16 weights.
    let a = HfModel::open(&family("bitnet-2b4t-packed"), &HfOptions::default()).unwrap();
    let b = HfModel::open(&family("bitnet-2b4t-bf16"), &HfOptions::default()).unwrap();
    let tokens = [480, 5, 17, 42, 99, 3];
    let (la, lb) = (a.forward(&tokens).unwrap(), b.forward(&tokens).unwrap());
    for (x, y) in la.iter().zip(&lb) {
        assert!(cosine(x, y) > 0.99999, "{}", cosine(x, y));
    }
}

#[test]
fn hf_forward_is_embed_blocks_head() {
    let m = HfModel::open(&family("falcon3"), &HfOptions::default()).unwrap();
    let tokens = [480, 1, 2, 3];
    let trace = m.forward_traced(&tokens).unwrap();
    assert_eq!(trace.blocks.len(), m.n_layers());
    let mut x = m.embed(&tokens).unwrap();
    for i in 0..m.n_layers() {
        x = m.block(i, &x, tokens.len()).unwrap();
        assert_eq!(x, trace.blocks[i]);
    }
    let logits = m.head(&x, tokens.len()).unwrap();
    assert_eq!(logits.len(), tokens.len() * m.n_vocab());
    assert_eq!(logits[..m.n_vocab()], trace.logits[0][..]);
    // Causality: a prefix gives the same rows.
    let short = m.forward(&tokens[..2]).unwrap();
    for (a, b) in short.iter().zip(&trace.logits) {
        assert_eq!(a, b);
    }
    // Bad input is an error naming what it is checked against.
    let e = m.embed(&[487]).unwrap_err().to_string();
    assert!(e.contains("vocab_size"), "{e}");
    assert!(m.block(2, &x, tokens.len()).is_err());
    assert!(m.block(0, &x[1..], tokens.len()).is_err());
}

/// A temporary copy of a fixture whose config.json is edited by `edit`.
fn edited_copy(
    name: &str,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> tempfile::TempDir {
    let src = family(name);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn unsupported_field(dir: &Path) -> (String, String) {
    match HfModel::open(dir, &HfOptions::default()) {
        Err(HfError::Unsupported { field, value, .. }) => (field, value),
        Err(e) => panic!("expected Unsupported, got {e}"),
        Ok(_) => panic!("expected Unsupported, got a model"),
    }
}

#[test]
fn hf_attention_bias_is_refused_by_name() {
    let d = edited_copy("llama3-8b", |c| {
        c.insert("attention_bias".into(), Value::Bool(true));
    });
    let (field, value) = unsupported_field(d.path());
    assert_eq!((field.as_str(), value.as_str()), ("attention_bias", "true"));
    let msg = HfModel::open(d.path(), &HfOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("config.json") && msg.contains("attention_bias"),
        "{msg}"
    );
}

#[test]
fn hf_unknown_rope_type_is_refused_by_name() {
    let d = edited_copy("falcon3", |c| {
        c.insert(
            "rope_scaling".into(),
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
        );
    });
    let (field, value) = unsupported_field(d.path());
    assert_eq!(field, "rope_scaling.rope_type");
    assert!(value.contains("yarn"), "{value}");
}

#[test]
fn hf_other_unimplemented_fields_are_refused_by_name() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("mlp_bias", Value::Bool(true), "mlp_bias"),
        ("hidden_act", "gelu".into(), "hidden_act"),
        ("sliding_window", 4096.into(), "sliding_window"),
        ("partial_rotary_factor", 0.5.into(), "partial_rotary_factor"),
        (
            "quantization_config",
            serde_json::json!({"quant_method": "bitnet", "linear_class": "fancylinear"}),
            "quantization_config.linear_class",
        ),
        (
            "quantization_config",
            serde_json::json!({"quant_method": "gptq"}),
            "quantization_config.quant_method",
        ),
        (
            "quantization_config",
            serde_json::json!({"quant_method": "bitnet", "use_rms_norm": true}),
            "quantization_config.use_rms_norm",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "dynamic", "factor": 2.0}),
            "rope_scaling.type",
        ),
        (
            "architectures",
            serde_json::json!(["MistralForCausalLM"]),
            "architectures",
        ),
    ];
    for (key, value, want) in cases {
        let d = edited_copy("llama3-8b", |c| {
            c.insert(key.into(), value.clone());
        });
        let (field, _) = unsupported_field(d.path());
        assert_eq!(field, want, "{key} = {value}");
    }
    // A field without effect on the logits is ignored.
    let d = edited_copy("llama3-8b", |c| {
        c.insert("attention_dropout".into(), 0.1.into());
        c.insert("pretraining_tp".into(), 1.into());
    });
    HfModel::open(d.path(), &HfOptions::default()).unwrap();
}

#[test]
fn hf_llama3_rope_frequencies_follow_transformers() {
    // head_dim 8, theta 10000: inv_freq = 1, 0.1, 0.01, 0.001; wavelengths 2π/inv_freq =
    // 6.28, 62.8, 628.3, 6283.2. factor 8, low 1, high 4, original 64: low_freq_wavelen = 64,
    // high_freq_wavelen = 16. So 1 is kept (λ < 16), 0.01 and 0.001 are divided by 8
    // (λ > 64), and 0.1 (16 ≤ λ ≤ 64) is interpolated with
    // s = (64/62.83 − 1)/(4 − 1) = 0.006197, (1 − s)·0.1/8 + s·0.1 = 0.013043.
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64.0,
    };
    let got = rope_inv_freq(8, 10000.0, scaling);
    let s = (64.0 / (2.0 * std::f64::consts::PI / 0.1) - 1.0) / 3.0;
    let want = [
        1.0,
        (1.0 - s) * 0.1 / 8.0 + s * 0.1,
        0.01 / 8.0,
        0.001 / 8.0,
    ];
    assert!((want[1] - 0.013043).abs() < 1e-6, "{}", want[1]);
    for (g, w) in got.iter().zip(want) {
        assert!(((*g as f64) - w).abs() <= 1e-6 * w, "{got:?} vs {want:?}");
    }
    let plain = rope_inv_freq(8, 10000.0, RopeScaling::Default);
    for (g, w) in plain.iter().zip([1.0, 0.1, 0.01, 0.001]) {
        assert!(((*g as f64) - w).abs() <= 1e-6 * w, "{plain:?}");
    }

    // Read from config.json, it changes the model's frequencies.
    let d = edited_copy("llama3-8b", |c| {
        c.insert(
            "rope_scaling".into(),
            serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        );
    });
    let m = HfModel::open(d.path(), &HfOptions::default()).unwrap();
    let c = m.config();
    assert_eq!(c.rope_scaling, scaling);
    assert_eq!(c.inv_freq(), rope_inv_freq(64, 500000.0, scaling));
    assert_ne!(
        c.inv_freq(),
        rope_inv_freq(64, 500000.0, RopeScaling::Default)
    );

    // transformers 5 writes `rope_parameters`, theta inside.
    let d = edited_copy("llama3-8b", |c| {
        c.remove("rope_theta");
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "llama3", "rope_theta": 20000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}),
        );
    });
    let m = HfModel::open(d.path(), &HfOptions::default()).unwrap();
    assert_eq!(m.config().rope_theta, 20000.0);
    assert_eq!(m.config().rope_scaling, scaling);
    let d = edited_copy("llama3-8b", |c| {
        c.insert(
            "rope_parameters".into(),
            serde_json::json!({"rope_type": "dynamic", "factor": 2.0}),
        );
    });
    assert_eq!(unsupported_field(d.path()).0, "rope_parameters.rope_type");
}

#[test]
fn hf_unpack_follows_transformers_layout() {
    // transformers' unpack_weights docstring: packed [[0b10100001, 0b00011000],
    // [0b10010000, 0b00001010]] unpacks to rows [0,-1], [-1,1], [-1,1], [-1,1], [1,0], [0,-1],
    // [1,-1], [1,-1] (bits 1:0 are rows 0..P, bits 3:2 rows P..2P, …).
    let dir = tempfile::tempdir().unwrap();
    let packed: Vec<u8> = vec![0b1010_0001, 0b0001_1000, 0b1001_0000, 0b0000_1010];
    let scale = 1.0f32.to_le_bytes().to_vec();
    let data = vec![
        (
            "w.weight".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![2, 2], &packed)
                .unwrap(),
        ),
        (
            "w.weight_scale".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &scale).unwrap(),
        ),
    ];
    safetensors::serialize_to_file(data, None, &dir.path().join("model.safetensors")).unwrap();
    let store = weights::Store::open(dir.path()).unwrap();
    let p = Projection::new(&store, "w.weight".into(), 8, 2, true, true).unwrap();
    let t = store.get("w.weight").unwrap();
    assert_eq!(p.epilogue(&t), weights::Epilogue::Div(1.0));
    let want = [
        [0, -1],
        [-1, 1],
        [-1, 1],
        [-1, 1],
        [1, 0],
        [0, -1],
        [1, -1],
        [1, -1],
    ];
    let (mut buf, mut codes) = ([0.0f32; 2], [0i8; 2]);
    for (r, w) in want.iter().enumerate() {
        p.row_codes(&t, r, &mut buf, &mut codes);
        assert_eq!(&codes, w, "row {r}");
    }
    // A packed shape that does not match the config is an error naming the tensor.
    let e = Projection::new(&store, "w.weight".into(), 12, 2, true, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("w.weight") && e.contains("shape"), "{e}");
}

#[test]
fn hf_q8_0_round_trip() {
    let mut row: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
    let orig = row.clone();
    q8_0_round_trip(&mut row);
    for (b, (r, o)) in row.chunks(32).zip(orig.chunks(32)).enumerate() {
        let amax = o.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = half::f16::from_f32(amax / 127.0).to_f32();
        for (&x, &y) in r.iter().zip(o) {
            let q = x / d;
            assert_eq!(q, q.round(), "block {b}: {x} is not a multiple of d");
            assert!(q.abs() <= 127.0);
            assert!((x - y).abs() <= 0.5 * d + amax * 1e-3, "{x} vs {y}");
        }
    }
    let mut zeros = [0.0f32; 32];
    q8_0_round_trip(&mut zeros);
    assert_eq!(zeros, [0.0; 32]);
    let mut one = [0.0f32; 32];
    one[3] = 2.5;
    q8_0_round_trip(&mut one);
    assert_eq!(one[3], 127.0 * half::f16::from_f32(2.5 / 127.0).to_f32());
}

#[test]
fn hf_rounding_options_change_the_head_and_embedding() {
    let dir = family("falcon-e");
    let tokens = [480, 7, 8];
    let plain = HfModel::open(&dir, &HfOptions::default()).unwrap();
    let q8 = HfModel::open(
        &dir,
        &HfOptions {
            embd: FloatRounding::Q8_0,
            head: FloatRounding::F16,
        },
    )
    .unwrap();
    assert_ne!(plain.embed(&tokens).unwrap(), q8.embed(&tokens).unwrap());
    let (a, b) = (
        plain.forward(&tokens).unwrap(),
        q8.forward(&tokens).unwrap(),
    );
    for (x, y) in a.iter().zip(&b) {
        assert_ne!(x, y);
        assert!(cosine(x, y) > 0.999, "{}", cosine(x, y));
    }
}

#[test]
fn hf_sharded_checkpoint_reads_like_one_file() {
    let src = family("llama3-8b");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let dir = tempfile::tempdir().unwrap();
    let mut map = serde_json::Map::new();
    for (i, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let shard = format!("model-{:05}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = chunk
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.path().join(&shard)).unwrap();
        for n in chunk {
            map.insert(n.clone(), Value::String(shard.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let tokens = [480, 11, 12, 13];
    let one = HfModel::open(&src, &HfOptions::default()).unwrap();
    let two = HfModel::open(dir.path(), &HfOptions::default()).unwrap();
    assert_eq!(one.forward(&tokens).unwrap(), two.forward(&tokens).unwrap());

    // A tensor the index names but its shard lacks is an error naming both.
    map.insert(
        "model.extra.weight".into(),
        "model-00001-of-00002.safetensors".into(),
    );
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let e = HfModel::open(dir.path(), &HfOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("model.extra.weight") && e.contains("model-00001-of-00002"),
        "{e}"
    );
}

#[test]
fn hf_missing_untied_head_is_named() {
    let d = edited_copy("bitnet-2b4t-packed", |c| {
        c.insert("tie_word_embeddings".into(), Value::Bool(false));
    });
    let e = HfModel::open(d.path(), &HfOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("lm_head.weight") && e.contains("tie_word_embeddings"),
        "{e}"
    );
}

#[test]
fn hf_dispatched_dots_equal_portable_ones() {
    let d = forward::Dots::get();
    let mut state = 12345u32;
    let mut next = move || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (state >> 16) as i32
    };
    for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 100, 512, 1537] {
        let a: Vec<i8> = (0..len).map(|_| (next() % 3 - 1) as i8).collect();
        let b: Vec<i8> = (0..len).map(|_| (next() % 256 - 128) as i8).collect();
        let want: i32 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum();
        let u: Vec<u8> = a.iter().map(|&x| (x + 1) as u8).collect();
        let sum_b: i32 = b.iter().map(|&y| i32::from(y)).sum();
        assert_eq!((d.u8i8)(&u, &b) - sum_b, want, "len {len}");
        assert_eq!(forward::dot_u8i8(&u, &b) - sum_b, want, "len {len}");
        // The extreme the AVX2 pairing must hold exactly: every code 2, every activation -128.
        let (u2, b2) = (vec![2u8; len], vec![-128i8; len]);
        assert_eq!((d.u8i8)(&u2, &b2), -256 * len as i32, "len {len}");
        let fa: Vec<f32> = (0..len).map(|_| next() as f32 / 7.0 - 2000.0).collect();
        let fb: Vec<f32> = (0..len).map(|_| next() as f32 / 13.0 - 1000.0).collect();
        assert_eq!(
            (d.f32)(&fa, &fb).to_bits(),
            forward::dot_f32(&fa, &fb).to_bits()
        );
    }
}

/// Writes a random latent-weight checkpoint in the layout of 1bitLLM/bitnet_b1_58-large
/// (`BitnetForCausalLM`, hidden 1536, intermediate 4096, 24 layers, 16 heads, vocab 32002, tied
/// head), F16, streaming the tensors to disk (about 1.5 GB).
fn write_large_random(dir: &Path) {
    use std::io::Write;
    let (h, inter, layers, vocab) = (1536usize, 4096usize, 24usize, 32002usize);
    let cfg = serde_json::json!({
        "architectures": ["BitnetForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": vocab,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "input_bits": 8, "weight_bits": 1, "torch_dtype": "float16"
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut specs: Vec<(String, Vec<usize>, f32, f32)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, h], 0.0, 0.5)];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (n, shape) in [
            ("input_layernorm", vec![h]),
            ("post_attention_layernorm", vec![h]),
            ("self_attn.inner_attn_ln", vec![h]),
            ("mlp.ffn_layernorm", vec![inter]),
        ] {
            specs.push((format!("{p}.{n}.weight"), shape, 1.0, 0.1));
        }
        for (n, shape) in [
            ("self_attn.q_proj", vec![h, h]),
            ("self_attn.k_proj", vec![h, h]),
            ("self_attn.v_proj", vec![h, h]),
            ("self_attn.o_proj", vec![h, h]),
            ("mlp.gate_proj", vec![inter, h]),
            ("mlp.up_proj", vec![inter, h]),
            ("mlp.down_proj", vec![h, inter]),
        ] {
            specs.push((format!("{p}.{n}.weight"), shape, 0.0, 0.05));
        }
    }
    specs.push(("model.norm.weight".into(), vec![h], 1.0, 0.1));
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, shape, _, _) in &specs {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [off, off + bytes]}),
        );
        off += bytes;
    }
    let mut text = Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let f = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    w.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    w.write_all(text.as_bytes()).unwrap();
    let mut rng = crate::test_rng::Rng(0x9E37_79B9_7F4A_7C15);
    let mut buf = Vec::with_capacity(1 << 20);
    for (_, shape, mean, spread) in &specs {
        let mut left = shape.iter().product::<usize>();
        while left > 0 {
            buf.clear();
            for _ in 0..left.min(1 << 19) {
                // Uniform in [−1, 1), scaled.
                let u = rng.uniform();
                let v = mean + spread * (2.0 * u - 1.0) * 1.7;
                buf.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
            }
            left -= left.min(1 << 19);
            w.write_all(&buf).unwrap();
        }
    }
    w.flush().unwrap();
}

/// Timing on a 0.7B model (ignored: writes 1.5 GB). Run with
/// `cargo test --lib hf_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn hf_speed_large_random() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    write_large_random(dir.path());
    eprintln!(
        "wrote the checkpoint in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let t0 = std::time::Instant::now();
    let m = HfModel::open(dir.path(), &HfOptions::default()).unwrap();
    eprintln!("open: {:.2} s", t0.elapsed().as_secs_f64());
    for n in [20usize, 40, 60] {
        let tokens: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 1) % 32002).collect();
        let t0 = std::time::Instant::now();
        let logits = m.forward(&tokens).unwrap();
        assert_eq!(logits.len(), n);
        assert!(logits.iter().flatten().all(|v| v.is_finite()));
        eprintln!("forward of {n} tokens: {:.2} s", t0.elapsed().as_secs_f64());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for l in status
        .lines()
        .filter(|l| l.starts_with("VmHWM") || l.starts_with("RssAnon") || l.starts_with("RssFile"))
    {
        eprintln!("{l}");
    }
}

#[test]
fn hf_linear_rope_scaling_divides_every_frequency() {
    use super::config::{rope_inv_freq, RopeScaling};
    let plain = rope_inv_freq(64, 10000.0, RopeScaling::Default);
    let scaled = rope_inv_freq(64, 10000.0, RopeScaling::Linear { factor: 4.0 });
    for (a, b) in plain.iter().zip(&scaled) {
        assert_eq!(*b, (*a as f64 / 4.0) as f32);
    }
}
