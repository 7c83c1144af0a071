//! Byte equality of the ternary layouts with the reference files in
//! `tests/data/tiny` (bitnet.cpp's and mainline llama.cpp's outputs for the
//! tiny synthetic checkpoint).
//!
//! Files read (paths relative to `tests/data/tiny`):
//! `bitnet-cpp/kernel_config_tl{1,2}.ini`,
//! `bitnet-cpp/from-fp32/ggml-model-{f32,i2_s,tl1,tl2}.{gguf,dump.json}`,
//! `bitnet-cpp/from-fp16/ggml-model-{f32,i2_s}.{gguf,dump.json}`,
//! `llama-cpp/tiny-f32.{gguf,dump.txt}`, `llama-cpp/tiny-tq{1,2}_0.{gguf,dump.json}`.
//!
//! No GGUF parser is involved: tensor positions come from the dumps
//! (`data_start + offset`, `span`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bitconv::quant::layouts::{
    i2s, pad32, params, scale_slot, sign_codes, tl1, tl2, tq1_0, tq2_0, TlParams,
};

/// Reference data directory, relative to the crate root.
const DATA_DIR: &str = "tests/data/tiny";

fn data_path(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(DATA_DIR)
        .join(rel);
    assert!(
        p.exists(),
        "reference file {} is missing (copy the tiny reference set into {DATA_DIR})",
        p.display()
    );
    p
}

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(data_path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn read_text(rel: &str) -> String {
    std::fs::read_to_string(data_path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

#[derive(Debug, Clone)]
struct TensorInfo {
    dims: Vec<usize>,
    ty: String,
    /// Absolute file offset of the tensor data.
    start: usize,
    span: usize,
}

/// A GGUF file with the tensor table of its dump.
struct Gguf {
    bytes: Vec<u8>,
    tensors: BTreeMap<String, TensorInfo>,
}

impl Gguf {
    /// Loads `<stem>.gguf` with positions from `<stem>.dump.json`.
    fn with_json(stem: &str) -> Gguf {
        let json: serde_json::Value =
            serde_json::from_str(&read_text(&format!("{stem}.dump.json"))).expect("dump json");
        let data_start = json["data_start"].as_u64().expect("data_start") as usize;
        let mut tensors = BTreeMap::new();
        for t in json["tensors"].as_array().expect("tensors") {
            let info = TensorInfo {
                dims: t["dims"]
                    .as_array()
                    .expect("dims")
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
                ty: t["type"].as_str().unwrap().to_string(),
                start: data_start + t["offset"].as_u64().unwrap() as usize,
                span: t["span"].as_u64().unwrap() as usize,
            };
            tensors.insert(t["name"].as_str().unwrap().to_string(), info);
        }
        Gguf {
            bytes: read(&format!("{stem}.gguf")),
            tensors,
        }
    }

    /// Loads `<stem>.gguf` with positions from `<stem>.dump.txt` (first line
    /// `… data_start=N …`, tensor lines `name TYPE [d0, d1] offset span …`).
    fn with_txt(stem: &str) -> Gguf {
        let text = read_text(&format!("{stem}.dump.txt"));
        let first = text.lines().next().expect("header line");
        let data_start: usize = first
            .split_whitespace()
            .find_map(|w| w.strip_prefix("data_start="))
            .expect("data_start")
            .parse()
            .unwrap();
        let mut tensors = BTreeMap::new();
        let mut in_tensors = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with("tensor ") {
                in_tensors = true;
                continue;
            }
            if !in_tensors || t.is_empty() {
                continue;
            }
            let (name, rest) = t.split_once(char::is_whitespace).unwrap();
            let rest = rest.trim_start();
            let (ty, rest) = rest.split_once(char::is_whitespace).unwrap();
            let open = rest.find('[').unwrap();
            let close = rest.find(']').unwrap();
            let dims = rest[open + 1..close]
                .split(',')
                .map(|d| d.trim().parse().unwrap())
                .collect();
            let mut nums = rest[close + 1..].split_whitespace();
            let offset: usize = nums.next().unwrap().parse().unwrap();
            let span: usize = nums.next().unwrap().parse().unwrap();
            tensors.insert(
                name.to_string(),
                TensorInfo {
                    dims,
                    ty: ty.to_string(),
                    start: data_start + offset,
                    span,
                },
            );
        }
        Gguf {
            bytes: read(&format!("{stem}.gguf")),
            tensors,
        }
    }

    fn info(&self, name: &str) -> &TensorInfo {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("tensor {name} not in dump"))
    }

    fn span(&self, name: &str) -> &[u8] {
        let t = self.info(name);
        &self.bytes[t.start..t.start + t.span]
    }

    /// F32 tensor values, with `(m, k)` from dims `[K, M]`.
    fn f32_matrix(&self, name: &str) -> (Vec<f32>, usize, usize) {
        let t = self.info(name);
        assert_eq!(t.ty, "F32", "{name}");
        let (k, m) = (t.dims[0], t.dims[1]);
        let raw = &self.bytes[t.start..t.start + 4 * m * k];
        let v = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        (v, m, k)
    }

    fn ternary_names(&self) -> Vec<String> {
        let names: Vec<String> = self
            .tensors
            .keys()
            .filter(|n| is_ternary(n))
            .cloned()
            .collect();
        assert_eq!(names.len(), 14, "7 projections × 2 blocks");
        names
    }
}

fn is_ternary(name: &str) -> bool {
    [
        "ffn_down",
        "ffn_gate",
        "ffn_up",
        "attn_q",
        "attn_k",
        "attn_v",
        "attn_output",
    ]
    .iter()
    .any(|p| name.ends_with(&format!(".{p}.weight")))
}

/// Codes (sign, 0 below 1e-6) and scale (|first nonzero|, 1e-5 if none).
fn codes_and_scale(values: &[f32]) -> (Vec<i8>, f32) {
    let mut codes = vec![0i8; values.len()];
    sign_codes(values, &mut codes).unwrap();
    let scale = values
        .iter()
        .find(|x| x.abs() >= 1e-6)
        .map(|x| x.abs())
        .unwrap_or(1e-5);
    (codes, scale)
}

fn kernel_params(rel: &str) -> Vec<params::KernelEntry> {
    params::parse_kernel_config_ini(&read_text(rel)).unwrap()
}

fn lookup(entries: &[params::KernelEntry], m: usize, k: usize) -> TlParams {
    params::find_entry(entries, m, k).unwrap_or_else(|| panic!("no kernel entry for {m}×{k}"))
}

// ---------------------------------------------------------------------------

#[test]
fn kernel_config_emitter_reproduces_reference_files() {
    for rel in [
        "bitnet-cpp/kernel_config_tl1.ini",
        "bitnet-cpp/kernel_config_tl2.ini",
    ] {
        let text = read_text(rel);
        let entries = params::parse_kernel_config_ini(&text).unwrap();
        assert_eq!(entries.len(), 3, "{rel}");
        assert_eq!(params::emit_kernel_config_ini(&entries), text, "{rel}");
    }
}

fn check_i2s(dir: &str) {
    let f32f = Gguf::with_json(&format!("{dir}/ggml-model-f32"));
    let refr = Gguf::with_json(&format!("{dir}/ggml-model-i2_s"));
    for name in f32f.ternary_names() {
        let (values, m, k) = f32f.f32_matrix(&name);
        let (codes, scale) = codes_and_scale(&values);
        let info = refr.info(&name);
        assert_eq!(info.ty, "I2_S", "{name}");
        assert_eq!(info.dims, vec![k, m], "{name}");
        assert_eq!(info.span, pad32(i2s::nbytes(m, k)), "{name}");
        let mut out = vec![0u8; i2s::nbytes(m, k)];
        i2s::pack_into(&codes, scale, &mut out).unwrap();
        let n = m * k;
        let reference = refr.span(&name);
        assert!(
            out[..n / 4 + 4] == reference[..n / 4 + 4],
            "{dir} {name}: I2_S codes+scale differ"
        );
        // Unpacking the reference gives the F32 file's signs and scale.
        let (back, s) = i2s::unpack(reference, m, k).unwrap();
        assert_eq!(back, codes, "{dir} {name}: unpacked codes");
        assert_eq!(s.to_bits(), scale.to_bits(), "{dir} {name}: scale");
    }
}

#[test]
fn i2s_matches_reference_from_fp32() {
    check_i2s("bitnet-cpp/from-fp32");
}

#[test]
fn i2s_matches_reference_from_fp16() {
    check_i2s("bitnet-cpp/from-fp16");
}

#[test]
fn tl1_matches_reference() {
    let f32f = Gguf::with_json("bitnet-cpp/from-fp32/ggml-model-f32");
    let refr = Gguf::with_json("bitnet-cpp/from-fp32/ggml-model-tl1");
    let entries = kernel_params("bitnet-cpp/kernel_config_tl1.ini");
    for name in f32f.ternary_names() {
        let (values, m, k) = f32f.f32_matrix(&name);
        let (codes, scale) = codes_and_scale(&values);
        let p = lookup(&entries, m, k);
        let info = refr.info(&name);
        assert_eq!(info.ty, "TL1", "{name}");
        assert_eq!(info.dims, vec![k, m], "{name}");
        let nb = tl1::nbytes(m, k);
        assert_eq!(info.span, pad32(nb) + 32, "{name}");
        let mut expected = vec![0u8; pad32(nb) + 32];
        tl1::pack_into(&codes, m, k, &p, &mut expected[..nb]).unwrap();
        expected[pad32(nb)..].copy_from_slice(&scale_slot(scale));
        let reference = refr.span(&name);
        assert!(
            expected == reference,
            "{name}: TL1 span (data, padding, scale slot) differs"
        );
        assert_eq!(
            tl1::unpack(reference, m, k, &p).unwrap(),
            codes,
            "{name}: unpacked"
        );
    }
}

#[test]
fn tl2_matches_reference() {
    let f32f = Gguf::with_json("bitnet-cpp/from-fp32/ggml-model-f32");
    let refr = Gguf::with_json("bitnet-cpp/from-fp32/ggml-model-tl2");
    let entries = kernel_params("bitnet-cpp/kernel_config_tl2.ini");
    for name in f32f.ternary_names() {
        let (values, m, k) = f32f.f32_matrix(&name);
        let (codes, scale) = codes_and_scale(&values);
        let p = lookup(&entries, m, k);
        let info = refr.info(&name);
        assert_eq!(info.ty, "TL2", "{name}");
        assert_eq!(info.dims, vec![k, m], "{name}");
        let nb = tl2::nbytes(m, k).unwrap();
        assert_eq!(info.span, pad32(nb) + 32, "{name}");
        let mut expected = vec![0u8; pad32(nb) + 32];
        tl2::pack_into(&codes, m, k, &p, &mut expected[..nb]).unwrap();
        expected[pad32(nb)..].copy_from_slice(&scale_slot(scale));
        let reference = refr.span(&name);
        assert!(
            expected == reference,
            "{name}: TL2 span (data, padding, scale slot) differs"
        );
        assert_eq!(
            tl2::unpack(reference, m, k, &p).unwrap(),
            codes,
            "{name}: unpacked"
        );
    }
}

type Quantize = fn(&[f32], &mut [u8]) -> bitconv::quant::layouts::Result<()>;
type Codes = fn(&[u8], usize) -> bitconv::quant::layouts::Result<(Vec<i8>, Vec<f32>)>;

fn check_tq(stem: &str, ty: &str, nbytes: fn(usize) -> usize, quantize: Quantize, codes_of: Codes) {
    let f32f = Gguf::with_txt("llama-cpp/tiny-f32");
    let refr = Gguf::with_json(stem);
    let mut seen = 0;
    for (name, info) in &refr.tensors {
        if info.ty != ty {
            continue;
        }
        assert!(is_ternary(name), "{name} is {ty} but not a projection");
        seen += 1;
        let (values, m, k) = f32f.f32_matrix(name);
        assert_eq!(info.dims, vec![k, m], "{name}");
        let n = m * k;
        let nb = nbytes(n);
        assert_eq!(info.span, pad32(nb), "{name}");
        let mut expected = vec![0u8; pad32(nb)];
        quantize(&values, &mut expected[..nb]).unwrap();
        let reference = refr.span(name);
        assert!(expected == reference, "{name}: {ty} span differs");
        // Codes are the signs of the F32 values; d is max|x| of each block.
        let (codes, d) = codes_of(reference, n).unwrap();
        let (signs, _) = codes_and_scale(&values);
        assert_eq!(codes, signs, "{name}: {ty} codes");
        for (b, &db) in d.iter().enumerate() {
            let amax = values[b * 256..(b + 1) * 256]
                .iter()
                .fold(0f32, |a, x| a.max(x.abs()));
            assert_eq!(db, half::f16::from_f32(amax).to_f32(), "{name} block {b}");
        }
    }
    assert_eq!(seen, 14, "{stem}: number of {ty} tensors");
}

#[test]
fn tq1_0_matches_mainline() {
    check_tq(
        "llama-cpp/tiny-tq1_0",
        "TQ1_0",
        tq1_0::nbytes,
        tq1_0::quantize_into,
        tq1_0::codes,
    );
}

#[test]
fn tq2_0_matches_mainline() {
    check_tq(
        "llama-cpp/tiny-tq2_0",
        "TQ2_0",
        tq2_0::nbytes,
        tq2_0::quantize_into,
        tq2_0::codes,
    );
}
