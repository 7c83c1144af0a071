//! Absmean fake-quantization against bitnet.cpp's reference F32 files, bit for bit.
//!
//! Reads every ternary projection of `tests/data/tiny/ckpt-fp{32,16}/model.safetensors`,
//! fake-quantizes it with the torch:2 absmean, and compares every value with the matching
//! tensor of `tests/data/tiny/bitnet-cpp/from-fp{32,16}/ggml-model-f32.gguf` (located through
//! the `dump.json` beside it). Also checks the I2_S scale bytes, and how the exact and torch:1
//! means relate to the reference.

use std::collections::BTreeMap;
use std::path::Path;

use bitconv::quant::absmean::{absmean_src, AbsmeanMode};
use bitconv::quant::dtype::{to_f32_vec, SrcDtype};
use bitconv::quant::ternary::{find_non_finite_src, Ternarized};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const DATA: &str = "tests/data/tiny";

const PROJECTIONS: [(&str, &str); 7] = [
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
];

/// `model.layers.N.<proj>` → `blk.N.<gguf>`, or `None` for non-ternary tensors.
fn gguf_name(hf: &str) -> Option<String> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let (_, g) = PROJECTIONS.iter().find(|(h, _)| *h == tail)?;
    Some(format!("blk.{layer}.{g}"))
}

/// One tensor of a reference GGUF: dims (ggml order) and its absolute byte range.
struct RefTensor {
    dims: Vec<u64>,
    type_name: String,
    start: usize,
}

fn read_dump(path: &Path) -> BTreeMap<String, RefTensor> {
    let j: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let data_start = j["data_start"].as_u64().unwrap() as usize;
    j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_owned();
            let dims = t["dims"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap())
                .collect();
            let type_name = t["type"].as_str().unwrap().to_owned();
            let start = data_start + t["offset"].as_u64().unwrap() as usize;
            (
                name,
                RefTensor {
                    dims,
                    type_name,
                    start,
                },
            )
        })
        .collect()
}

fn src_dtype(d: Dtype) -> SrcDtype {
    match d {
        Dtype::F32 => SrcDtype::F32,
        Dtype::F16 => SrcDtype::F16,
        Dtype::BF16 => SrcDtype::BF16,
        other => panic!("unexpected dtype {other:?}"),
    }
}

fn ulps(a: f32, b: f32) -> u32 {
    assert!(a > 0.0 && b > 0.0);
    a.to_bits().abs_diff(b.to_bits())
}

#[derive(Default, Debug)]
struct Summary {
    tensors: usize,
    values: usize,
    /// Tensors whose exact absmean differs from the torch:2 one.
    exact_mean_differs: usize,
    /// Tensors whose scale (after the dtype cast) differs between exact and torch:2.
    exact_differs: usize,
    /// Tensors whose torch:1 absmean differs from the torch:2 one.
    torch1_mean_differs: usize,
    /// Tensors whose scale differs between torch:1 and torch:2.
    torch1_differs: usize,
}

fn check_checkpoint(ckpt: &str, reference: &str) -> Summary {
    let root = Path::new(DATA);
    let st_bytes = std::fs::read(root.join(ckpt).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&st_bytes).unwrap();
    let ref_dir = root.join("bitnet-cpp").join(reference);
    let f32_gguf = std::fs::read(ref_dir.join("ggml-model-f32.gguf")).unwrap();
    let f32_dump = read_dump(&ref_dir.join("ggml-model-f32.dump.json"));
    let i2s_gguf = std::fs::read(ref_dir.join("ggml-model-i2_s.gguf")).unwrap();
    let i2s_dump = read_dump(&ref_dir.join("ggml-model-i2_s.dump.json"));

    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    let mut sum = Summary::default();
    for hf in &names {
        let Some(gg) = gguf_name(hf) else { continue };
        let view = st.tensor(hf).unwrap();
        let dtype = src_dtype(view.dtype());
        let bytes = view.data();
        let shape = view.shape();
        assert_eq!(shape.len(), 2, "{hf}");
        let (m, k) = (shape[0], shape[1]);
        let n = m * k;

        let rt = &f32_dump[&gg];
        assert_eq!(rt.type_name, "F32", "{gg}");
        assert_eq!(rt.dims, vec![k as u64, m as u64], "{gg}");
        let want: Vec<u32> = f32_gguf[rt.start..rt.start + 4 * n]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();

        assert_eq!(find_non_finite_src(dtype, bytes), None);
        let t2 = Ternarized::from_src(dtype, bytes, AbsmeanMode::Torch { threads: 2 }).unwrap();
        let x = to_f32_vec(dtype, bytes);
        let mut got = vec![0f32; n];
        t2.values_into(&x, &mut got);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                *w,
                "{ckpt} {hf} → {gg}: value {i} (row {}, col {}) is {g:e} ({:#010x}), reference \
                 {:e} ({w:#010x}); absmean {:e}, scale {:e}",
                i / k,
                i % k,
                g.to_bits(),
                f32::from_bits(*w),
                t2.absmean,
                t2.scale,
            );
        }

        // The I2_S file (llama-quantize on that F32 file) stores the same scale at n/4.
        let it = &i2s_dump[&gg];
        assert_eq!(it.type_name, "I2_S", "{gg}");
        let at = it.start + n / 4;
        let i2s_scale = f32::from_le_bytes(i2s_gguf[at..at + 4].try_into().unwrap());
        assert_eq!(i2s_scale.to_bits(), t2.scale.to_bits(), "{gg} I2_S scale");

        // Exact mean: same codes, scale within 2 ulp.
        let te = Ternarized::new(absmean_src(dtype, bytes, AbsmeanMode::Exact), dtype);
        let mut c2 = vec![0i8; n];
        let mut ce = vec![0i8; n];
        t2.codes_into(&x, &mut c2);
        te.codes_into(&x, &mut ce);
        assert!(c2 == ce, "{gg}: exact mean changes a ternary code");
        let d = ulps(te.scale, t2.scale);
        assert!(d <= 2, "{gg}: exact scale {} ulp from torch:2", d);
        sum.exact_differs += usize::from(te.scale != t2.scale);
        sum.exact_mean_differs += usize::from(te.absmean != t2.absmean);
        let t1 = Ternarized::new(
            absmean_src(dtype, bytes, AbsmeanMode::Torch { threads: 1 }),
            dtype,
        );
        sum.torch1_differs += usize::from(t1.scale != t2.scale);
        sum.torch1_mean_differs += usize::from(t1.absmean != t2.absmean);
        eprintln!(
            "{ckpt:9} {gg:22} n={n:6} absmean torch2={:.9e} exact={:+}ulp torch1={:+}ulp \
             scale={:.9e} exact-scale {}",
            t2.absmean,
            te.absmean.to_bits() as i64 - t2.absmean.to_bits() as i64,
            t1.absmean.to_bits() as i64 - t2.absmean.to_bits() as i64,
            t2.scale,
            if te.scale == t2.scale {
                "same"
            } else {
                "differs"
            },
        );
        sum.tensors += 1;
        sum.values += n;
    }
    sum
}

#[test]
fn fp32_checkpoint_matches_reference_f32_gguf() {
    let s = check_checkpoint("ckpt-fp32", "from-fp32");
    eprintln!("fp32: {s:?}");
    assert_eq!(s.tensors, 14);
    assert!(
        s.torch1_differs > 0,
        "torch:1 should differ from torch:2 somewhere"
    );
}

#[test]
fn fp16_checkpoint_matches_reference_f32_gguf() {
    let s = check_checkpoint("ckpt-fp16", "from-fp16");
    eprintln!("fp16: {s:?}");
    assert_eq!(s.tensors, 14);
}
