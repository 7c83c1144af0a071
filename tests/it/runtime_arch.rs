//! The runtime on small synthetic models written with bitconv's own GGUF writer, checked
//! against a naive f64 forward pass written here from the architecture description
//! (FORMATS.md §7): every architecture (`bitnet`, `bitnet-b1.58`, `llama`), GQA, partial
//! RoPE, untied heads, and every weight format the loader accepts. Also the loader's errors.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use bitconv::gguf::{GgmlType, GgufWriter, TensorSpec, Value};
use bitconv::quant::layouts::{self, i2s, params, q8_0, tl1, tl2, tq1_0, tq2_0, KernelEntry};
use bitconv::runtime::{
    compare_rows, Emulation, KvPrecision, LoadOptions, LogitsWanted, Model, RuntimeError, Session,
    SessionOptions,
};
use half::f16;

use crate::common::{self, rng::Rng};

// ---------------------------------------------------------------------------------------------
// Random models
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Config {
    arch: &'static str,
    n_embd: usize,
    n_ff: usize,
    n_layer: usize,
    n_head: usize,
    n_head_kv: usize,
    n_vocab: usize,
    n_rot: Option<usize>,
    rope_base: f32,
    untied: bool,
    /// Type of the seven projections.
    proj: GgmlType,
    /// Type of the embedding (and of an untied head).
    embd: GgmlType,
}

impl Config {
    fn tiny(arch: &'static str) -> Config {
        Config {
            arch,
            n_embd: 256,
            n_ff: 768,
            n_layer: 2,
            n_head: 4,
            n_head_kv: 4,
            n_vocab: 96,
            n_rot: None,
            rope_base: 10000.0,
            untied: false,
            proj: GgmlType::F32,
            embd: GgmlType::F32,
        }
    }

    fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    fn sub_norms(&self) -> bool {
        self.arch != "llama"
    }
}

/// A tensor as written, and the f32 values it stands for (what the naive pass uses).
struct Tensor {
    spec: TensorSpec,
    bytes: Vec<u8>,
    values: Vec<f32>,
}

/// Kernel parameters for TL1/TL2 shapes of [`Config::tiny`] (those of the reference files).
fn tl_entries(ty: GgmlType) -> Vec<KernelEntry> {
    let name = if ty == GgmlType::TL1 {
        "kernel_config_tl1.ini"
    } else {
        "kernel_config_tl2.ini"
    };
    let text = std::fs::read_to_string(Path::new("tests/data/tiny/bitnet-cpp").join(name)).unwrap();
    params::parse_kernel_config_ini(&text).unwrap()
}

fn encode(
    name: &str,
    ty: GgmlType,
    k: usize,
    m: usize,
    rng: &mut Rng,
    ternary_scale: f32,
) -> Tensor {
    let n = k * m;
    let dims = if m == 1 {
        vec![k as u64]
    } else {
        vec![k as u64, m as u64]
    };
    let spec = TensorSpec {
        name: name.into(),
        dims,
        ty,
    };
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 => {
            let std = if m == 1 { 0.0 } else { 1.0 / (k as f32).sqrt() };
            let raw: Vec<f32> = (0..n)
                .map(|_| {
                    if m == 1 {
                        1.0 + 0.1 * rng.normal()
                    } else {
                        std * rng.normal()
                    }
                })
                .collect();
            match ty {
                GgmlType::F32 => Tensor {
                    spec,
                    bytes: raw.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    values: raw,
                },
                GgmlType::F16 => Tensor {
                    spec,
                    bytes: raw
                        .iter()
                        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                        .collect(),
                    values: raw.iter().map(|&v| f16::from_f32(v).to_f32()).collect(),
                },
                _ => {
                    let mut bytes = vec![0u8; q8_0::nbytes(n)];
                    q8_0::quantize_into(&raw, &mut bytes).unwrap();
                    let values = q8_0::dequantize(&bytes, n).unwrap();
                    Tensor {
                        spec,
                        bytes,
                        values,
                    }
                }
            }
        }
        _ => {
            let codes: Vec<i8> = (0..n).map(|_| (rng.next() % 3) as i8 - 1).collect();
            let s = ternary_scale;
            let fake: Vec<f32> = codes.iter().map(|&c| c as f32 * s).collect();
            let (bytes, values) = match ty {
                GgmlType::I2_S => {
                    let mut out = vec![0u8; i2s::nbytes(n, 1)];
                    i2s::pack_into(&codes, s, &mut out).unwrap();
                    (out, fake)
                }
                GgmlType::TL1 | GgmlType::TL2 => {
                    let p = params::find_entry(&tl_entries(ty), m, k).unwrap();
                    let mut out = if ty == GgmlType::TL1 {
                        let mut out = vec![0u8; tl1::nbytes(m, k)];
                        tl1::pack_into(&codes, m, k, &p, &mut out).unwrap();
                        out
                    } else {
                        let mut out = vec![0u8; tl2::nbytes(m, k).unwrap()];
                        tl2::pack_into(&codes, m, k, &p, &mut out).unwrap();
                        out
                    };
                    out.resize(layouts::pad32(out.len()), 0);
                    out.extend_from_slice(&layouts::scale_slot(s));
                    (out, fake)
                }
                GgmlType::TQ2_0 => {
                    let mut out = vec![0u8; tq2_0::nbytes(n)];
                    tq2_0::quantize_into(&fake, &mut out).unwrap();
                    let v = tq2_0::dequantize(&out, n).unwrap();
                    (out, v)
                }
                GgmlType::TQ1_0 => {
                    let mut out = vec![0u8; tq1_0::nbytes(n)];
                    tq1_0::quantize_into(&fake, &mut out).unwrap();
                    let v = tq1_0::dequantize(&out, n).unwrap();
                    (out, v)
                }
                other => panic!("no encoder for {other}"),
            };
            Tensor {
                spec,
                bytes,
                values,
            }
        }
    }
}

/// The model's tensors in file order.
fn make_tensors(c: &Config, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed | 1);
    let (e, f) = (c.n_embd, c.n_ff);
    let qd = c.n_head * c.head_dim();
    let kvd = c.n_head_kv * c.head_dim();
    let mut t = vec![encode(
        "token_embd.weight",
        c.embd,
        e,
        c.n_vocab,
        &mut rng,
        0.0,
    )];
    // Embedding rows about N(0, 1).
    if c.embd == GgmlType::F32 {
        let last = t.last_mut().unwrap();
        for v in last.values.iter_mut() {
            *v *= (e as f32).sqrt();
        }
        last.bytes = last.values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    let norm = |name: String, n: usize, rng: &mut Rng| encode(&name, GgmlType::F32, n, 1, rng, 0.0);
    for i in 0..c.n_layer {
        let nm = |s: &str| format!("blk.{i}.{s}.weight");
        let scale = |rng: &mut Rng, k: usize| (0.8 + 0.4 * rng.uniform()) / (k as f32).sqrt() * 1.2;
        t.push(norm(nm("attn_norm"), e, &mut rng));
        let s = scale(&mut rng, e);
        t.push(encode(&nm("attn_q"), c.proj, e, qd, &mut rng, s));
        let s = scale(&mut rng, e);
        t.push(encode(&nm("attn_k"), c.proj, e, kvd, &mut rng, s));
        let s = scale(&mut rng, e);
        t.push(encode(&nm("attn_v"), c.proj, e, kvd, &mut rng, s));
        let s = scale(&mut rng, qd);
        t.push(encode(&nm("attn_output"), c.proj, qd, e, &mut rng, s));
        if c.sub_norms() {
            t.push(norm(nm("attn_sub_norm"), qd, &mut rng));
        }
        t.push(norm(nm("ffn_norm"), e, &mut rng));
        let s = scale(&mut rng, e);
        t.push(encode(&nm("ffn_gate"), c.proj, e, f, &mut rng, s));
        let s = scale(&mut rng, e);
        t.push(encode(&nm("ffn_up"), c.proj, e, f, &mut rng, s));
        let s = scale(&mut rng, f);
        t.push(encode(&nm("ffn_down"), c.proj, f, e, &mut rng, s));
        if c.sub_norms() {
            t.push(norm(nm("ffn_sub_norm"), f, &mut rng));
        }
    }
    t.push(norm("output_norm.weight".into(), e, &mut rng));
    if c.untied {
        t.push(encode("output.weight", c.embd, e, c.n_vocab, &mut rng, 0.0));
    }
    t
}

fn metadata(c: &Config) -> Vec<(String, Value)> {
    let a = c.arch;
    let mut kv = vec![("general.architecture".to_string(), Value::String(a.into()))];
    kv.extend(common::hparams_kv(
        a,
        &common::Hparams {
            n_layer: c.n_layer,
            n_ctx: 256,
            n_embd: c.n_embd,
            n_ff: c.n_ff,
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            rope_base: c.rope_base,
        },
    ));
    kv.push((format!("{a}.vocab_size"), Value::U32(c.n_vocab as u32)));
    if let Some(r) = c.n_rot {
        kv.push((format!("{a}.rope.dimension_count"), Value::U32(r as u32)));
    }
    kv
}

fn write(path: &Path, kv: &[(String, Value)], tensors: &[Tensor]) {
    let specs = tensors.iter().map(|t| t.spec.clone()).collect();
    let mut w = GgufWriter::new(BufWriter::new(File::create(path).unwrap()), kv, specs).unwrap();
    for t in tensors {
        w.write_tensor(&t.spec.name, &t.bytes).unwrap();
    }
    w.finish().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Naive f64 forward pass
// ---------------------------------------------------------------------------------------------

struct Naive<'a> {
    c: &'a Config,
    t: &'a [Tensor],
    keys: Vec<Vec<Vec<f64>>>,
    vals: Vec<Vec<Vec<f64>>>,
}

impl<'a> Naive<'a> {
    fn new(c: &'a Config, t: &'a [Tensor]) -> Naive<'a> {
        Naive {
            c,
            t,
            keys: vec![vec![]; c.n_layer],
            vals: vec![vec![]; c.n_layer],
        }
    }

    fn w(&self, name: &str) -> &'a [f32] {
        &self
            .t
            .iter()
            .find(|t| t.spec.name == name)
            .unwrap_or_else(|| panic!("{name}"))
            .values
    }

    fn matvec(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let w = self.w(name);
        let k = x.len();
        w.chunks_exact(k)
            .map(|row| row.iter().zip(x).map(|(&a, &b)| a as f64 * b).sum())
            .collect()
    }

    fn norm(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let w = self.w(name);
        let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + 1e-5f32 as f64).sqrt();
        x.iter().zip(w).map(|(&v, &g)| v * s * g as f64).collect()
    }

    fn rope(&self, x: &mut [f64], pos: usize) {
        let c = self.c;
        let hd = c.head_dim();
        let r = c.n_rot.unwrap_or(hd);
        for head in x.chunks_exact_mut(hd) {
            for i in 0..r / 2 {
                let theta = pos as f64 * (c.rope_base as f64).powf(-2.0 * i as f64 / r as f64);
                let (a, b) = if c.arch == "llama" {
                    (2 * i, 2 * i + 1)
                } else {
                    (i, i + r / 2)
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * theta.cos() - x1 * theta.sin();
                head[b] = x0 * theta.sin() + x1 * theta.cos();
            }
        }
    }

    fn step(&mut self, tok: usize) -> Vec<f64> {
        let c = self.c;
        let (e, hd) = (c.n_embd, c.head_dim());
        let pos = self.keys[0].len();
        let embd = self.w("token_embd.weight");
        let mut x: Vec<f64> = embd[tok * e..(tok + 1) * e]
            .iter()
            .map(|&v| v as f64)
            .collect();
        for l in 0..c.n_layer {
            let nm = |s: &str| format!("blk.{l}.{s}.weight");
            let n = self.norm(&nm("attn_norm"), &x);
            let mut q = self.matvec(&nm("attn_q"), &n);
            let mut k = self.matvec(&nm("attn_k"), &n);
            let v = self.matvec(&nm("attn_v"), &n);
            self.rope(&mut q, pos);
            self.rope(&mut k, pos);
            self.keys[l].push(k);
            self.vals[l].push(v);
            let mut out = vec![0.0f64; c.n_head * hd];
            for h in 0..c.n_head {
                let g = h / (c.n_head / c.n_head_kv);
                let qh = &q[h * hd..(h + 1) * hd];
                let scores: Vec<f64> = self.keys[l]
                    .iter()
                    .map(|kj| {
                        qh.iter()
                            .zip(&kj[g * hd..(g + 1) * hd])
                            .map(|(a, b)| a * b)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let ex: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = ex.iter().sum();
                for (p, vj) in ex.iter().zip(&self.vals[l]) {
                    for d in 0..hd {
                        out[h * hd + d] += p / z * vj[g * hd + d];
                    }
                }
            }
            if c.sub_norms() {
                out = self.norm(&nm("attn_sub_norm"), &out);
            }
            let o = self.matvec(&nm("attn_output"), &out);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
            let m = self.norm(&nm("ffn_norm"), &x);
            let g = self.matvec(&nm("ffn_gate"), &m);
            let u = self.matvec(&nm("ffn_up"), &m);
            let mut a: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| {
                    let act = if c.arch == "bitnet-b1.58" {
                        g.max(0.0) * g.max(0.0)
                    } else {
                        g / (1.0 + (-g).exp())
                    };
                    act * u
                })
                .collect();
            if c.sub_norms() {
                a = self.norm(&nm("ffn_sub_norm"), &a);
            }
            let d = self.matvec(&nm("ffn_down"), &a);
            for (xv, dv) in x.iter_mut().zip(&d) {
                *xv += dv;
            }
        }
        let h = self.norm("output_norm.weight", &x);
        let head = if c.untied {
            "output.weight"
        } else {
            "token_embd.weight"
        };
        self.matvec(head, &h)
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

const TOKENS: [u32; 7] = [1, 17, 42, 5, 88, 63, 9];

fn build(c: &Config, seed: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<Tensor>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.gguf", c.arch));
    let tensors = make_tensors(c, seed);
    write(&path, &metadata(c), &tensors);
    (dir, path, tensors)
}

/// Our logits (one token per step and batched) against the naive pass: min row cosine.
fn agreement_with_naive(c: &Config, tl: Vec<KernelEntry>, emulation: Emulation) -> (f64, f64) {
    let (_dir, path, tensors) = build(c, 7);
    let model = Model::load(
        &path,
        &LoadOptions {
            tl_params: tl,
            ..Default::default()
        },
    )
    .unwrap();
    let mut naive = Naive::new(c, &tensors);
    let want: Vec<Vec<f32>> = TOKENS
        .iter()
        .map(|&t| naive.step(t as usize).iter().map(|&v| v as f32).collect())
        .collect();
    let opts = SessionOptions {
        max_ctx: 16,
        kv: KvPrecision::F32,
        emulation,
    };
    let mut s = Session::with_options(&model, opts);
    let steps: Vec<Vec<f32>> = TOKENS
        .iter()
        .map(|&t| s.forward(&[t], LogitsWanted::Last).unwrap().remove(0))
        .collect();
    let batched = Session::with_options(&model, opts)
        .forward(&TOKENS, LogitsWanted::All)
        .unwrap();
    let a = compare_rows(steps.iter().map(|r| &r[..]), want.iter().map(|r| &r[..]));
    let b = compare_rows(batched.iter().map(|r| &r[..]), want.iter().map(|r| &r[..]));
    eprintln!(
        "{} {:?} proj {}: steps {a}; batched {b}",
        c.arch, emulation, c.proj
    );
    (a.min_cosine, b.min_cosine)
}

#[test]
fn every_architecture_matches_a_naive_f64_pass() {
    let mut cases = vec![];
    let mut c = Config::tiny("bitnet");
    c.n_head_kv = 2; // GQA
    cases.push(c);
    let mut c = Config::tiny("bitnet-b1.58");
    c.untied = true;
    c.n_head_kv = 1;
    cases.push(c);
    let mut c = Config::tiny("llama");
    c.n_head_kv = 2;
    c.n_rot = Some(32); // partial rotary: half of each 64-wide head
    c.rope_base = 500000.0;
    c.untied = true;
    cases.push(c);
    for c in cases {
        for emu in [Emulation::BitnetCpp, Emulation::LlamaCpp] {
            let (steps, batched) = agreement_with_naive(&c, vec![], emu);
            assert!(steps > 0.99999, "{}: {steps}", c.arch);
            assert!(batched > 0.99999, "{}: {batched}", c.arch);
        }
    }
}

#[test]
fn every_weight_format_matches_a_naive_f64_pass() {
    // Ternary and Q8_0 formats quantize activations (int8 / Q8_K / Q8_0), so they agree with
    // the float pass only to that precision.
    for (proj, min_cos) in [
        (GgmlType::F16, 0.9999),
        (GgmlType::Q8_0, 0.999),
        (GgmlType::I2_S, 0.99),
        (GgmlType::TL1, 0.99),
        (GgmlType::TL2, 0.99),
        (GgmlType::TQ2_0, 0.99),
        (GgmlType::TQ1_0, 0.99),
    ] {
        let mut c = Config::tiny("bitnet");
        c.proj = proj;
        c.embd = if proj == GgmlType::Q8_0 {
            GgmlType::Q8_0
        } else {
            GgmlType::F16
        };
        let tl = if matches!(proj, GgmlType::TL1 | GgmlType::TL2) {
            tl_entries(proj)
        } else {
            vec![]
        };
        let (steps, batched) = agreement_with_naive(&c, tl, Emulation::BitnetCpp);
        assert!(steps > min_cos, "{proj}: {steps}");
        assert!(batched > min_cos, "{proj}: {batched}");
    }
}

#[test]
fn gqa_equals_mha_with_repeated_kv_heads() {
    // A GQA model and the MHA model whose K/V rows repeat each KV head for its query heads
    // compute the same numbers, bit for bit.
    let mut c = Config::tiny("bitnet-b1.58");
    c.proj = GgmlType::I2_S;
    c.embd = GgmlType::F16;
    c.n_head_kv = 2;
    let (_d1, gqa_path, tensors) = build(&c, 11);
    let hd = c.head_dim();
    let group = c.n_head / c.n_head_kv;
    let mut mha_tensors = vec![];
    for t in tensors {
        let is_kv =
            t.spec.name.ends_with("attn_k.weight") || t.spec.name.ends_with("attn_v.weight");
        if !is_kv {
            mha_tensors.push(t);
            continue;
        }
        let (codes, scale) = i2s::unpack(&t.bytes, c.n_head_kv * hd, c.n_embd).unwrap();
        let row = c.n_embd;
        let mut rep = Vec::with_capacity(codes.len() * group);
        for g in 0..c.n_head_kv {
            for _ in 0..group {
                rep.extend_from_slice(&codes[g * hd * row..(g + 1) * hd * row]);
            }
        }
        let mut bytes = vec![0u8; i2s::nbytes(rep.len(), 1)];
        i2s::pack_into(&rep, scale, &mut bytes).unwrap();
        mha_tensors.push(Tensor {
            spec: TensorSpec {
                name: t.spec.name.clone(),
                dims: vec![c.n_embd as u64, (c.n_head * hd) as u64],
                ty: GgmlType::I2_S,
            },
            bytes,
            values: vec![],
        });
    }
    let mut mc = c.clone();
    mc.n_head_kv = c.n_head;
    let dir = tempfile::tempdir().unwrap();
    let mha_path = dir.path().join("mha.gguf");
    write(&mha_path, &metadata(&mc), &mha_tensors);
    let gqa = Model::load(&gqa_path, &LoadOptions::default()).unwrap();
    let mha = Model::load(&mha_path, &LoadOptions::default()).unwrap();
    for emu in [Emulation::BitnetCpp, Emulation::LlamaCpp] {
        let run = |m: &Model| {
            let mut o = SessionOptions::for_model(m, 16);
            o.emulation = emu;
            let mut s = Session::with_options(m, o);
            let mut out = s.forward(&TOKENS[..4], LogitsWanted::All).unwrap();
            for &t in &TOKENS[4..] {
                out.extend(s.forward(&[t], LogitsWanted::Last).unwrap());
            }
            out
        };
        assert_eq!(run(&gqa), run(&mha), "{emu:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Loader errors
// ---------------------------------------------------------------------------------------------

fn load_err(kv: &[(String, Value)], tensors: &[Tensor]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    write(&path, kv, tensors);
    let err = Model::load(&path, &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.gguf"), "{msg}");
    msg
}

#[test]
fn loader_errors_name_the_tensor_or_key() {
    let c = Config::tiny("bitnet");
    let tensors = make_tensors(&c, 3);
    let kv = metadata(&c);

    let mut kv2 = kv.clone();
    kv2[0].1 = Value::String("gpt2".into());
    let msg = load_err(&kv2, &tensors);
    assert!(msg.contains("unsupported architecture \"gpt2\""), "{msg}");

    let kv2: Vec<_> = kv
        .iter()
        .filter(|(k, _)| k != "bitnet.block_count")
        .cloned()
        .collect();
    let msg = load_err(&kv2, &tensors);
    assert!(
        msg.contains("bitnet.block_count") && msg.contains("missing"),
        "{msg}"
    );

    let mut kv2 = kv.clone();
    kv2.retain(|(k, _)| !k.ends_with("vocab_size"));
    kv2.push(("bitnet.vocab_size".into(), Value::U32(97)));
    let msg = load_err(&kv2, &tensors);
    assert!(
        msg.contains("bitnet.vocab_size") && msg.contains("97"),
        "{msg}"
    );

    let t2: Vec<Tensor> = make_tensors(&c, 3)
        .into_iter()
        .filter(|t| t.spec.name != "blk.1.ffn_sub_norm.weight")
        .collect();
    let msg = load_err(&kv, &t2);
    assert!(
        msg.contains("missing tensor blk.1.ffn_sub_norm.weight"),
        "{msg}"
    );

    let mut t2 = make_tensors(&c, 3);
    t2.push(encode(
        "blk.0.attn_q.bias",
        GgmlType::F32,
        256,
        1,
        &mut Rng(5),
        0.0,
    ));
    let msg = load_err(&kv, &t2);
    assert!(
        msg.contains("blk.0.attn_q.bias") && msg.contains("not used"),
        "{msg}"
    );

    // `bitnet` is tied: an output tensor is unexpected.
    let mut t2 = make_tensors(&c, 3);
    t2.push(encode(
        "output.weight",
        GgmlType::F16,
        256,
        96,
        &mut Rng(5),
        0.0,
    ));
    let msg = load_err(&kv, &t2);
    assert!(msg.contains("output.weight"), "{msg}");

    // Wrong shape.
    let mut t2 = make_tensors(&c, 3);
    let i = t2
        .iter()
        .position(|t| t.spec.name == "blk.0.attn_q.weight")
        .unwrap();
    t2[i] = encode(
        "blk.0.attn_q.weight",
        GgmlType::F32,
        256,
        128,
        &mut Rng(5),
        0.0,
    );
    let msg = load_err(&kv, &t2);
    assert!(
        msg.contains("blk.0.attn_q.weight") && msg.contains("[256, 256]"),
        "{msg}"
    );

    // Unsupported type for the role.
    let mut c2 = c.clone();
    c2.embd = GgmlType::F16;
    let mut t2 = make_tensors(&c2, 3);
    t2[0] = encode(
        "token_embd.weight",
        GgmlType::I2_S,
        256,
        96,
        &mut Rng(5),
        0.5,
    );
    let msg = load_err(&kv, &t2);
    assert!(
        msg.contains("token_embd.weight") && msg.contains("I2_S"),
        "{msg}"
    );
}

#[test]
fn tl_files_need_kernel_parameters() {
    let path = Path::new("tests/data/tiny/bitnet-cpp/from-fp32/ggml-model-tl2.gguf");
    let err = Model::load(path, &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RuntimeError::Tensor { .. }), "{msg}");
    assert!(
        msg.contains("TL2") && msg.contains("m = 256, k = 256"),
        "{msg}"
    );
    assert!(msg.contains("blk.0.attn_q.weight"), "{msg}");

    // Without tl_params, a kernel_config_tl2.ini next to the model is used.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("m.gguf");
    std::fs::copy(path, &copy).unwrap();
    std::fs::copy(
        "tests/data/tiny/bitnet-cpp/kernel_config_tl2.ini",
        dir.path().join("kernel_config_tl2.ini"),
    )
    .unwrap();
    Model::load(&copy, &LoadOptions::default()).unwrap();

    // Wrong parameters: the decoder rejects the data or the shape, naming the tensor.
    let tl1 = tl_entries(GgmlType::TL1);
    let err = Model::load(
        path,
        &LoadOptions {
            tl_params: tl1,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("TL2"), "{err}");
}
