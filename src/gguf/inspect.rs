//! The report `bitconv inspect FILE.gguf` prints: header, every key with type and value, every
//! tensor with type, dims, offset, byte span and optionally the sha256 of that span.
//!
//! The JSON form uses the field names of the reference dumps in `tests/data/tiny/**/*.dump.json`
//! (arrays abbreviated to their first 16 items), so the two can be compared directly.

use std::fmt::Write as _;

use rayon::prelude::*;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use super::{GgmlType, GgufHeader, LazyValue, MappedGguf, Value, ValueType};

/// How many leading array items reports show.
pub const ARRAY_PREVIEW: usize = 16;

/// Bytes of a long string a report shows.
const STRING_PREVIEW: usize = 1 << 16;

/// The leading items (or bytes) of a value the header left in the file; a long string ends
/// with a note of its full length.
fn preview(g: &MappedGguf, l: &LazyValue) -> Value {
    let max = if l.ty == ValueType::String {
        STRING_PREVIEW
    } else {
        ARRAY_PREVIEW
    };
    match GgufHeader::decode_lazy(g.bytes(), g.path(), l, max) {
        Ok(Value::String(mut t)) => {
            if (t.len() as u64) < l.count {
                let _ = write!(t, " … ({} bytes)", l.count);
            }
            Value::String(t)
        }
        Ok(v) => v,
        Err(e) => Value::String(format!("<cannot decode: {e}>")),
    }
}

/// A metadata value as the JSON report shows it (arrays abbreviated).
fn value_json(g: &MappedGguf, v: &Value) -> Json {
    match v {
        Value::Lazy(l) => {
            let mut j = preview(g, l).to_json(Some(ARRAY_PREVIEW));
            if let Some(n) = j.get_mut("n") {
                *n = json!(l.count);
            }
            j
        }
        v => v.to_json(Some(ARRAY_PREVIEW)),
    }
}

/// Hex sha256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Builds the JSON report; with `hash`, each tensor gets `sha256_span`.
pub fn report_json(g: &MappedGguf, hash: bool) -> Json {
    let h = &g.header;
    let kv: Vec<Json> = h
        .kv
        .iter()
        .map(|(k, v)| json!({"key": k, "type": v.value_type().short_name(), "value": value_json(g, v)}))
        .collect();
    let hashes: Vec<Option<String>> = if hash {
        h.tensors
            .par_iter()
            .map(|t| Some(sha256_hex(g.tensor_bytes(t))))
            .collect()
    } else {
        vec![None; h.tensors.len()]
    };
    let tensors: Vec<Json> = h
        .tensors
        .iter()
        .zip(hashes)
        .map(|(t, sha)| {
            let mut m = Map::new();
            m.insert("name".into(), json!(t.name));
            m.insert("dims".into(), json!(t.dims));
            m.insert("type_id".into(), json!(t.type_id));
            m.insert("type".into(), json!(t.ty.name()));
            m.insert("offset".into(), json!(t.offset));
            m.insert("span".into(), json!(t.nbytes));
            if let Some(sha) = sha {
                m.insert("sha256_span".into(), json!(sha));
            }
            if let Some(s) = g.ternary_scale(t) {
                m.insert("scale".into(), json!(s as f64));
            }
            if let Some(why) = t.dims.first().and_then(|&k| t.ty.bitnet_cpp_limit(k)) {
                m.insert("bitnet_cpp".into(), json!(why));
            }
            Json::Object(m)
        })
        .collect();
    json!({
        "version": h.version,
        "n_tensors": h.tensors.len(),
        "n_kv": h.kv.len(),
        "alignment": h.alignment,
        "data_start": h.data_start,
        "file_size": h.file_size,
        "kv": kv,
        "tensors": tensors,
        "runtimes": super::compat::verdicts(h),
    })
}

/// Renders the report as text.
pub fn report_text(g: &MappedGguf, hash: bool) -> String {
    let h = &g.header;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}\nGGUF v{}  tensors={}  kv={}  alignment={}  data_start={}  file_size={}",
        g.path().display(),
        h.version,
        h.tensors.len(),
        h.kv.len(),
        h.alignment,
        h.data_start,
        h.file_size
    );
    for (k, v) in &h.kv {
        let shown = match v {
            Value::Lazy(l) => match preview(g, l) {
                Value::Array(t, items) => {
                    let mut text = format!("[{} x {}]", t.short_name(), l.count);
                    for (i, it) in items.iter().take(6).enumerate() {
                        let _ = write!(text, "{}{it}", if i == 0 { " " } else { ", " });
                    }
                    text.push_str(", ...");
                    text
                }
                other => other.to_string(),
            },
            v => v.to_string(),
        };
        let _ = writeln!(
            s,
            "  {:<45} {:<5} {}",
            k,
            v.value_type().short_name(),
            shown
        );
    }
    let _ = writeln!(
        s,
        "  {:<32} {:<6} {:<26} {:>12} {:>10}  {}",
        "tensor",
        "type",
        "dims(ggml order)",
        "offset",
        "span",
        if hash { "sha256[:16]" } else { "scale" }
    );
    for t in &h.tensors {
        let extra = if hash {
            sha256_hex(g.tensor_bytes(t))[..16].to_string()
        } else {
            g.ternary_scale(t)
                .map(|x| format!("{x:e}"))
                .unwrap_or_default()
        };
        let _ = writeln!(
            s,
            "  {:<32} {:<6} {:<26} {:>12} {:>10}  {}",
            t.name,
            t.ty.name(),
            format!("{:?}", t.dims),
            t.offset,
            t.nbytes,
            extra
        );
    }
    let limited = h
        .tensors
        .iter()
        .filter(|t| {
            t.dims
                .first()
                .is_some_and(|&k| t.ty.bitnet_cpp_limit(k).is_some())
        })
        .count();
    if limited > 0 {
        let _ = writeln!(
            s,
            "note: {limited} tensors: {}",
            GgmlType::I2_S.bitnet_cpp_limit(1).unwrap_or_default()
        );
    }
    let _ = writeln!(s, "runtimes:");
    for line in super::compat::lines(&super::compat::verdicts(h)) {
        let _ = writeln!(s, "  {line}");
    }
    s
}
