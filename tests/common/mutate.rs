//! Injects one plausible conversion mistake into a correct GGUF file, so that tests can check
//! that `bitconv validate` catches it.
//!
//! [`inject`] reads the source with the crate's reader, changes one thing (a metadata value, the
//! rows or codes of a tensor, a tensor's presence) and writes the result with the crate's writer;
//! every other key and tensor keeps its bytes. Ternary tensors are edited through their decoded
//! codes and scale ([`ternary_codes`], [`pack_ternary`]) for I2_S, TL1, TL2, TQ1_0, TQ2_0 and
//! fake-quantized F16/F32; any other type is an `Err`.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use bitconv::gguf::{GgmlType, GgufWriter, MappedGguf, SizeRule, TensorInfo, TensorSpec, Value};
use bitconv::quant::layouts::{i2s, params, tl1, tl2, tq1_0, tq2_0, TlLayout, TlParams};

/// A conversion mistake [`inject`] can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mistake {
    /// `{arch}.rope.freq_base` doubled (absent: added as 20000, twice the runtime's default 10000).
    RopeTheta,
    /// `{arch}.attention.layer_norm_rms_epsilon` divided by 10 (above 3e-6) or multiplied by 10.
    RmsEps,
    /// `{arch}.attention.head_count_kv` set to `head_count` (halved if already equal).
    HeadCountKv,
    /// `llama` only: q/k rows put back from llama.cpp's interleaved RoPE order to HF's.
    RopePermutationMissing,
    /// Every ternary projection's scale `s` replaced by `1/s`.
    ScaleInverted,
    /// `{arch}.hidden_activation` silu <-> relu2, else the architecture bitnet <-> bitnet-b1.58.
    ActivationSwapped,
    /// `tokenizer.ggml.add_bos_token` set false (added if absent).
    BosOff,
    /// `tokenizer.ggml.eos_token_id` moved to the next id (mod vocab).
    SpecialTokenMoved,
    /// Tokens 300 and 301 (or the middle two) swapped, with their scores and types.
    VocabSwapped,
    /// The first two BPE merges swapped.
    MergesReordered,
    /// `output.weight` removed, so the runtime ties the head to `token_embd`.
    TiedHeadOnUntied,
    /// `blk.0.attn_sub_norm.weight` set to all ones (the runtime requires the tensor).
    SubNormDropped,
    /// The code at row 3, column 5 of `blk.0.ffn_up.weight` flipped (-1 -> 1, 0 -> 1, 1 -> -1).
    CodeFlipped,
    /// Rows 10 and 11 of `token_embd.weight` swapped.
    EmbeddingRowsSwapped,
}

/// Every mistake, in declaration order.
pub const ALL: &[Mistake] = &[
    Mistake::RopeTheta,
    Mistake::RmsEps,
    Mistake::HeadCountKv,
    Mistake::RopePermutationMissing,
    Mistake::ScaleInverted,
    Mistake::ActivationSwapped,
    Mistake::BosOff,
    Mistake::SpecialTokenMoved,
    Mistake::VocabSwapped,
    Mistake::MergesReordered,
    Mistake::TiedHeadOnUntied,
    Mistake::SubNormDropped,
    Mistake::CodeFlipped,
    Mistake::EmbeddingRowsSwapped,
];

/// Whether `name` is a ternary projection: `blk.N.P.weight` for P in attn_q, attn_k, attn_v,
/// attn_output, ffn_gate, ffn_up, ffn_down.
pub fn is_projection(name: &str) -> bool {
    let mut parts = name.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("blk"), Some(n), Some(p), Some("weight"), None)
            if n.parse::<usize>().is_ok()
                && ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
                    .contains(&p)
    )
}

/// Writes `src` with mistake `m` to `dst`: `Ok` describes what changed, `Err` says why the
/// mistake does not apply to this file (nothing is written then).
pub fn inject(src: &Path, dst: &Path, m: Mistake) -> Result<String, String> {
    let g = MappedGguf::open(src).map_err(|e| e.to_string())?;
    let mut e = Edit::new(&g);
    let what = e.apply(m)?;
    e.write(dst)?;
    Ok(what)
}

/// A copy of `src` with metadata key `key` set to `value` (added if absent), everything else
/// byte-identical: for hostile-value tests.
pub fn with_key(src: &Path, dst: &Path, key: &str, value: Value) -> Result<(), String> {
    let g = MappedGguf::open(src).map_err(|e| e.to_string())?;
    let mut e = Edit::new(&g);
    e.set(key, value);
    e.write(dst)
}

struct Edit<'a> {
    g: &'a MappedGguf,
    kv: Vec<(String, Value)>,
    /// New bytes of the tensors that change.
    data: HashMap<String, Vec<u8>>,
    removed: Option<String>,
}

impl<'a> Edit<'a> {
    /// An edit of `g` that changes nothing yet.
    fn new(g: &'a MappedGguf) -> Edit<'a> {
        Edit {
            g,
            kv: g.header.kv.clone(),
            data: HashMap::new(),
            removed: None,
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn req(&self, key: &str) -> Result<&Value, String> {
        self.get(key)
            .ok_or_else(|| format!("the file has no {key}"))
    }

    fn set(&mut self, key: &str, v: Value) {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.kv.push((key.to_string(), v)),
        }
    }

    fn arch(&self) -> Result<String, String> {
        let v = self.req("general.architecture")?;
        Ok(v.as_str()
            .ok_or("general.architecture is not a string")?
            .into())
    }

    fn num(&self, key: &str) -> Result<f64, String> {
        self.req(key)?
            .as_f64()
            .ok_or_else(|| format!("{key} is not a number"))
    }

    /// Sets a numeric key to `x` in the type it already has.
    fn set_num(&mut self, key: &str, x: f64) -> Result<String, String> {
        let old = self.req(key)?.clone();
        let new = match old {
            Value::F32(_) => Value::F32(x as f32),
            Value::F64(_) => Value::F64(x),
            Value::U32(_) => Value::U32(x as u32),
            Value::I32(_) => Value::I32(x as i32),
            Value::U64(_) => Value::U64(x as u64),
            Value::I64(_) => Value::I64(x as i64),
            other => return Err(format!("{key} has unsupported type {other}")),
        };
        let what = format!("{key}: {old} -> {new}");
        self.set(key, new);
        Ok(what)
    }

    fn tensor(&self, name: &str) -> Result<&'a TensorInfo, String> {
        self.g
            .header
            .tensor(name)
            .ok_or_else(|| format!("the file has no tensor {name}"))
    }

    fn apply(&mut self, m: Mistake) -> Result<String, String> {
        let (g, arch) = (self.g, self.arch()?);
        let k = |s: &str| format!("{arch}.{s}");
        match m {
            Mistake::RopeTheta => {
                let key = k("rope.freq_base");
                if self.get(&key).is_none() {
                    // The runtime's default; added, then doubled like a value that is there.
                    self.set(&key, Value::F32(10000.0));
                }
                self.set_num(&key, 2.0 * self.num(&key)?)
            }
            Mistake::RmsEps => {
                let key = k("attention.layer_norm_rms_epsilon");
                let v = self.num(&key)?;
                self.set_num(&key, if v > 3e-6 { v / 10.0 } else { v * 10.0 })
            }
            Mistake::HeadCountKv => {
                let (key, heads) = (k("attention.head_count_kv"), k("attention.head_count"));
                if self.get(&key).is_none() {
                    self.set(&key, self.req(&heads)?.clone()); // the runtime's default
                }
                let (heads, kv) = (self.num(&heads)?, self.num(&key)?);
                match heads {
                    _ if kv != heads => self.set_num(&key, heads),
                    _ if heads % 2.0 == 0.0 => self.set_num(&key, heads / 2.0),
                    _ => Err(format!("head_count {heads} cannot be halved")),
                }
            }
            Mistake::RopePermutationMissing => {
                if arch != "llama" {
                    return Err(format!(
                        "architecture {arch}: no RoPE permutation (only llama)"
                    ));
                }
                let heads = self.num(&k("attention.head_count"))? as usize;
                let kv_heads = self
                    .get(&k("attention.head_count_kv"))
                    .and_then(Value::as_u64)
                    .map_or(heads, |v| v as usize);
                let mut names = Vec::new();
                for t in &g.header.tensors {
                    let n = if t.name.ends_with(".attn_q.weight") {
                        heads
                    } else if t.name.ends_with(".attn_k.weight") {
                        kv_heads
                    } else {
                        continue;
                    };
                    let d = t.dims[1] as usize / n;
                    // llama.cpp put HF row h·d + s·d/2 + i at h·d + 2i + s; undo it.
                    let bytes = permute_rows(g, t, |r| {
                        let (h, w) = (r / d, r % d);
                        h * d + 2 * (w % (d / 2)) + w / (d / 2)
                    })?;
                    self.data.insert(t.name.clone(), bytes);
                    names.push(t.name.clone());
                }
                if names.is_empty() {
                    return Err("no attn_q/attn_k tensors".into());
                }
                Ok(format!("rows of {} back in HF order", names.join(", ")))
            }
            Mistake::ScaleInverted => {
                let mut n = 0;
                for t in g.header.tensors.iter().filter(|t| is_projection(&t.name)) {
                    let (codes, s) = ternary_codes(g, t)?;
                    let bytes = pack_ternary(g, t, &codes, 1.0 / s)?;
                    self.data.insert(t.name.clone(), bytes);
                    n += 1;
                }
                if n == 0 {
                    return Err("no ternary projections".into());
                }
                Ok(format!("scale s -> 1/s in {n} ternary projections"))
            }
            Mistake::ActivationSwapped => {
                let key = k("hidden_activation");
                if let Some(v) = self.get(&key) {
                    let new = match v.as_str() {
                        Some("silu") => "relu2",
                        Some("relu2") => "silu",
                        _ => return Err(format!("{key} is {v}, neither silu nor relu2")),
                    };
                    let what = format!("{key}: {v} -> {new:?}");
                    self.set(&key, Value::String(new.into()));
                    return Ok(what);
                }
                let new = match arch.as_str() {
                    "bitnet" => "bitnet-b1.58",
                    "bitnet-b1.58" | "bitnet-25" => "bitnet",
                    _ => return Err(format!("architecture {arch} has no activation to swap")),
                };
                let prefix = format!("{arch}.");
                for (key, _) in self.kv.iter_mut() {
                    if let Some(rest) = key.strip_prefix(&prefix) {
                        *key = format!("{new}.{rest}");
                    }
                }
                self.set("general.architecture", Value::String(new.into()));
                Ok(format!("architecture {arch} -> {new}, keys renamed"))
            }
            Mistake::BosOff => {
                let key = "tokenizer.ggml.add_bos_token";
                let old = self.get(key).cloned();
                if old == Some(Value::Bool(false)) {
                    return Err(format!("{key} is already false"));
                }
                self.set(key, Value::Bool(false));
                Ok(format!(
                    "{key}: {} -> false",
                    old.map_or("absent".into(), |v| v.to_string())
                ))
            }
            Mistake::SpecialTokenMoved => {
                let n = self.array("tokenizer.ggml.tokens")?.len() as f64;
                let key = "tokenizer.ggml.eos_token_id";
                self.set_num(key, (self.num(key)? + 1.0) % n)
            }
            Mistake::VocabSwapped => {
                let n = self.array("tokenizer.ggml.tokens")?.len();
                if n < 2 {
                    return Err("fewer than two tokens".into());
                }
                let (a, b) = if n > 301 {
                    (300, 301)
                } else {
                    (n / 2 - 1, n / 2)
                };
                for key in ["tokens", "scores", "token_type"] {
                    let key = format!("tokenizer.ggml.{key}");
                    if let Some((_, Value::Array(_, items))) =
                        self.kv.iter_mut().find(|(k, _)| *k == key)
                    {
                        if items.len() == n {
                            items.swap(a, b);
                        }
                    }
                }
                let t = self.array("tokenizer.ggml.tokens")?;
                Ok(format!(
                    "tokens {a} and {b} swapped (now {} and {})",
                    t[a], t[b]
                ))
            }
            Mistake::MergesReordered => {
                let key = "tokenizer.ggml.merges";
                match self.kv.iter_mut().find(|(k, _)| k == key) {
                    Some((_, Value::Array(_, items))) if items.len() >= 2 => {
                        items.swap(0, 1);
                        Ok(format!("{key}: {} and {} swapped", items[1], items[0]))
                    }
                    _ => Err("the file has fewer than two merges".into()),
                }
            }
            Mistake::TiedHeadOnUntied => {
                self.tensor("output.weight")?;
                self.removed = Some("output.weight".into());
                Ok("output.weight removed (head tied to token_embd)".into())
            }
            Mistake::SubNormDropped => {
                let t = self.tensor("blk.0.attn_sub_norm.weight")?;
                if t.ty != GgmlType::F32 {
                    return Err(format!("{} is {}, not F32", t.name, t.ty));
                }
                let ones = 1f32.to_le_bytes().repeat(t.numel() as usize);
                if ones == g.tensor_bytes(t) {
                    return Err(format!("{} is already all ones", t.name));
                }
                self.data.insert(t.name.clone(), ones);
                Ok(format!("{} set to 1.0", t.name))
            }
            Mistake::CodeFlipped => {
                let t = self.tensor("blk.0.ffn_up.weight")?;
                let (mut codes, s) = ternary_codes(g, t)?;
                let i = 3 * t.dims[0] as usize + 5;
                let old = codes[i];
                codes[i] = if old == 1 { -1 } else { 1 };
                let bytes = pack_ternary(g, t, &codes, s)?;
                self.data.insert(t.name.clone(), bytes);
                Ok(format!("{} row 3 column 5: {old} -> {}", t.name, codes[i]))
            }
            Mistake::EmbeddingRowsSwapped => {
                let t = self.tensor("token_embd.weight")?;
                let bytes = permute_rows(g, t, |r| match r {
                    10 => 11,
                    11 => 10,
                    r => r,
                })?;
                if bytes == g.tensor_bytes(t) {
                    return Err("rows 10 and 11 of token_embd.weight are equal".into());
                }
                self.data.insert(t.name.clone(), bytes);
                Ok("token_embd.weight rows 10 and 11 swapped".into())
            }
        }
    }

    fn array(&self, key: &str) -> Result<&[Value], String> {
        self.req(key)?
            .as_array()
            .ok_or_else(|| format!("{key} is not an array"))
    }

    fn write(&self, dst: &Path) -> Result<(), String> {
        let g = self.g;
        let keep: Vec<&TensorInfo> = (g.header.tensors.iter())
            .filter(|t| self.removed.as_ref() != Some(&t.name))
            .collect();
        let specs = (keep.iter())
            .map(|t| TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            })
            .collect();
        let err = |e: &dyn std::fmt::Display| format!("{}: {e}", dst.display());
        let f = File::create(dst).map_err(|e| err(&e))?;
        let mut w = GgufWriter::new(BufWriter::new(f), &self.kv, specs).map_err(|e| err(&e))?;
        for t in keep {
            let bytes = self
                .data
                .get(&t.name)
                .map_or(g.tensor_bytes(t), Vec::as_slice);
            w.write_tensor(&t.name, bytes).map_err(|e| err(&e))?;
        }
        w.finish().map(drop).map_err(|e| err(&e))
    }
}

/// `(K, M)` of a 2-D tensor.
fn km(t: &TensorInfo) -> Result<(usize, usize), String> {
    match t.dims.as_slice() {
        [k, m] => Ok((*k as usize, *m as usize)),
        d => Err(format!("{}: dims {d:?} are not 2-D", t.name)),
    }
}

/// The TL1/TL2 parameters a tensor was packed with: the file's `bitconv.tl.kernel_config`,
/// else the built-in table for its shape (as the runtime looks them up).
fn tl_params(g: &MappedGguf, t: &TensorInfo, m: usize, k: usize) -> Result<TlParams, String> {
    let layout = match t.ty {
        GgmlType::TL1 => TlLayout::Tl1,
        _ => TlLayout::Tl2,
    };
    if let Some(text) = g.header.get(params::GGUF_KEY).and_then(Value::as_str) {
        let entries = params::parse_kernel_config_ini(text).map_err(|e| e.to_string())?;
        if let Some(p) = params::find_entry(&entries, m, k) {
            return Ok(p);
        }
    }
    let name = g.header.get("general.name").and_then(Value::as_str);
    params::table_by_shape(name.unwrap_or(""), layout, m, k)
        .map(|(p, _)| p)
        .ok_or_else(|| format!("{}: no {layout} kernel parameters for {m}x{k}", t.name))
}

/// The ternary codes (row-major, `M·K`) and the per-tensor scale of a projection. TQ1_0/TQ2_0
/// blocks must share one scale; F16/F32 values must be `0` or `±max|x|`.
pub fn ternary_codes(g: &MappedGguf, t: &TensorInfo) -> Result<(Vec<i8>, f32), String> {
    let (k, m) = km(t)?;
    let (n, data) = (m * k, g.tensor_bytes(t));
    let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", t.name);
    let scale = || g.ternary_scale(t).ok_or_else(|| bad(&"no scale"));
    match t.ty {
        GgmlType::I2_S => i2s::unpack(data, m, k).map_err(|e| bad(&e)),
        GgmlType::TL1 => Ok((
            tl1::unpack(data, m, k, &tl_params(g, t, m, k)?).map_err(|e| bad(&e))?,
            scale()?,
        )),
        GgmlType::TL2 => Ok((
            tl2::unpack(data, m, k, &tl_params(g, t, m, k)?).map_err(|e| bad(&e))?,
            scale()?,
        )),
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => {
            let (codes, d) = if t.ty == GgmlType::TQ1_0 {
                tq1_0::codes(data, n)
            } else {
                tq2_0::codes(data, n)
            }
            .map_err(|e| bad(&e))?;
            let s = d.iter().fold(0f32, |a, &b| a.max(b.abs()));
            for (blk, &db) in codes.chunks_exact(256).zip(&d) {
                if blk.iter().any(|&c| c != 0) && db != s {
                    return Err(bad(&format!("block scales {db} and {s} differ")));
                }
            }
            Ok((codes, s))
        }
        GgmlType::F32 | GgmlType::F16 => {
            let vals: Vec<f32> = if t.ty == GgmlType::F32 {
                let f = |c: &[u8]| f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                data.chunks_exact(4).map(f).collect()
            } else {
                let f = |c: &[u8]| half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                data.chunks_exact(2).map(f).collect()
            };
            let s = vals.iter().fold(0f32, |a, &b| a.max(b.abs()));
            let code = |&x: &f32| match x {
                _ if x == 0.0 => Ok(0),
                _ if x.abs() == s => Ok(x.signum() as i8),
                _ => Err(bad(&format!("value {x} is neither 0 nor ±{s}"))),
            };
            Ok((vals.iter().map(code).collect::<Result<_, _>>()?, s))
        }
        other => Err(bad(&format!("type {other} is not supported"))),
    }
}

/// The bytes of tensor `t` holding `codes` with `scale`, in `t`'s type (the inverse of
/// [`ternary_codes`]; bytes outside the codes and the scale are kept from the file).
pub fn pack_ternary(
    g: &MappedGguf,
    t: &TensorInfo,
    codes: &[i8],
    scale: f32,
) -> Result<Vec<u8>, String> {
    let (k, m) = km(t)?;
    let mut out = g.tensor_bytes(t).to_vec();
    let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", t.name);
    match t.ty {
        GgmlType::I2_S => i2s::pack_into(codes, scale, &mut out),
        GgmlType::TL1 => tl1::pack_into(
            codes,
            m,
            k,
            &tl_params(g, t, m, k)?,
            &mut out[..tl1::nbytes(m, k)],
        ),
        GgmlType::TL2 => {
            let len = tl2::nbytes(m, k).map_err(|e| bad(&e))?;
            tl2::pack_into(codes, m, k, &tl_params(g, t, m, k)?, &mut out[..len])
        }
        GgmlType::TQ1_0 => tq1_0::pack_ternary_into(codes, scale, &mut out),
        GgmlType::TQ2_0 => tq2_0::pack_ternary_into(codes, scale, &mut out),
        // A zero stays the zero it was (bitnet.cpp writes -0.0 for some).
        GgmlType::F32 => {
            for (o, &c) in out.chunks_exact_mut(4).zip(codes) {
                if c != 0 || f32::from_le_bytes([o[0], o[1], o[2], o[3]]) != 0.0 {
                    o.copy_from_slice(&(c as f32 * scale).to_le_bytes());
                }
            }
            Ok(())
        }
        GgmlType::F16 => {
            for (o, &c) in out.chunks_exact_mut(2).zip(codes) {
                if c != 0 || half::f16::from_le_bytes([o[0], o[1]]).to_f32() != 0.0 {
                    o.copy_from_slice(&half::f16::from_f32(c as f32 * scale).to_le_bytes());
                }
            }
            Ok(())
        }
        other => return Err(bad(&format!("type {other} is not supported"))),
    }
    .map_err(|e| bad(&e))?;
    // The scale of I2_S/TL1/TL2, and the rest of the tail as it was (bitnet.cpp's is not zero).
    if let Some(off) = t.ty.scale_offset(&t.dims).map(|o| o as usize) {
        out[off + 4..].copy_from_slice(&g.tensor_bytes(t)[off + 4..]);
        out[off..off + 4].copy_from_slice(&scale.to_le_bytes());
    }
    Ok(out)
}

/// The bytes of `t` with row `r` taken from row `from(r)`: whole rows of bytes for block
/// types (F32, F16, Q8_0, TQ2_0, …), decoded codes for I2_S/TL1/TL2.
fn permute_rows(
    g: &MappedGguf,
    t: &TensorInfo,
    from: impl Fn(usize) -> usize,
) -> Result<Vec<u8>, String> {
    let (k, m) = km(t)?;
    let data = g.tensor_bytes(t);
    if t.ty.info().rule == SizeRule::Blocks {
        let rb = data.len() / m;
        return Ok((0..m)
            .flat_map(|r| &data[from(r) * rb..][..rb])
            .copied()
            .collect());
    }
    let (codes, s) = ternary_codes(g, t)?;
    let rows: Vec<i8> = (0..m)
        .flat_map(|r| &codes[from(r) * k..][..k])
        .copied()
        .collect();
    pack_ternary(g, t, &rows, s)
}
