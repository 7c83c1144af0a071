//! Checkpoint reading: single and sharded safetensors, the index check, config.json, bad input.

use crate::common;

use std::path::Path;

use bitconv::checkpoint::{Arch, Checkpoint, CheckpointError, SafetensorSet, StDtype};

/// A tensor to serialize: name, dtype string, shape, bytes.
type StTensor<'a> = (&'a str, &'a str, Vec<usize>, Vec<u8>);

/// Serializes tensors as a safetensors file.
fn write_st(path: &Path, tensors: &[StTensor]) {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    let mut data = Vec::new();
    for (name, dt, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dt, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
        data.extend_from_slice(bytes);
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

#[test]
fn opens_the_tiny_checkpoint() {
    let ck = Checkpoint::open(&common::tiny().join("ckpt-fp32")).unwrap();
    assert_eq!(ck.config.arch, Arch::Bitnet);
    assert_eq!(ck.config.hidden_size, 256);
    assert_eq!(ck.config.head_dim, 64);
    assert_eq!(ck.tensors.tensors.len(), 24);
    assert!(ck.tensors.tensors.iter().all(|t| t.dtype == StDtype::F32));
    // Visiting order is the sorted HF names, as the reference converter sees them.
    let names: Vec<_> = ck.tensors.tensors.iter().map(|t| t.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(ck.config.parameter_count(), 1963776);
}

/// Splits the tiny fp16 checkpoint into two shards with an index.
fn sharded_copy(dir: &Path) -> serde_json::Map<String, serde_json::Value> {
    let src = common::tiny().join("ckpt-fp16");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let set = SafetensorSet::open_dir(&src).unwrap();
    let mut parts: [Vec<StTensor>; 2] = [vec![], vec![]];
    let mut map = serde_json::Map::new();
    for (i, t) in set.tensors.iter().enumerate() {
        let p = i % 2;
        parts[p].push((&t.name, "F16", t.shape.clone(), set.data(t).to_vec()));
        map.insert(
            t.name.clone(),
            format!("model-0000{}-of-00002.safetensors", p + 1).into(),
        );
    }
    for (p, part) in parts.iter().enumerate() {
        write_st(
            &dir.join(format!("model-0000{}-of-00002.safetensors", p + 1)),
            part,
        );
    }
    map
}

fn write_index(dir: &Path, map: &serde_json::Map<String, serde_json::Value>) {
    let idx = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_reads_like_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let map = sharded_copy(dir.path());
    write_index(dir.path(), &map);
    let sharded = Checkpoint::open(dir.path()).unwrap();
    let single = SafetensorSet::open_dir(&common::tiny().join("ckpt-fp16")).unwrap();
    assert_eq!(sharded.tensors.shards.len(), 2);
    assert_eq!(sharded.tensors.tensors.len(), single.tensors.len());
    for t in &single.tensors {
        let s = sharded.tensors.get(&t.name).unwrap();
        assert_eq!(sharded.tensors.data(s), single.data(t), "{}", t.name);
        assert_eq!(s.shape, t.shape);
    }
}

fn open_err(dir: &Path) -> String {
    match Checkpoint::open(dir) {
        Ok(_) => panic!("expected an error for {}", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn index_naming_a_missing_shard() {
    let dir = tempfile::tempdir().unwrap();
    let mut map = sharded_copy(dir.path());
    map.insert(
        "model.extra.weight".into(),
        "model-00003-of-00003.safetensors".into(),
    );
    write_index(dir.path(), &map);
    let e = open_err(dir.path());
    assert!(
        e.contains("model-00003-of-00003.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn index_disagreeing_with_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let mut map = sharded_copy(dir.path());
    // A tensor attributed to the wrong shard.
    let (name, file) = map
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let other = if file.as_str().unwrap().contains("00001") {
        "model-00002-of-00002.safetensors"
    } else {
        "model-00001-of-00002.safetensors"
    };
    map.insert(name.clone(), other.into());
    write_index(dir.path(), &map);
    let e = open_err(dir.path());
    assert!(e.contains(&name) && e.contains("index.json"), "{e}");
    // A tensor the index does not list.
    map.insert(name.clone(), file);
    let dropped = map.keys().nth(3).unwrap().clone();
    map.remove(&dropped);
    write_index(dir.path(), &map);
    let e = open_err(dir.path());
    assert!(e.contains(&dropped) && e.contains("does not list"), "{e}");
    // A tensor listed in the index that no shard holds.
    map.insert(dropped.clone(), "model-00001-of-00002.safetensors".into());
    map.insert(
        "model.ghost.weight".into(),
        "model-00001-of-00002.safetensors".into(),
    );
    write_index(dir.path(), &map);
    let e = open_err(dir.path());
    assert!(e.contains("model.ghost.weight"), "{e}");
    // A shard name that leaves the directory.
    map.remove("model.ghost.weight");
    map.insert(dropped, "../escape.safetensors".into());
    write_index(dir.path(), &map);
    let e = open_err(dir.path());
    assert!(
        e.contains("../escape.safetensors") && e.contains("plain relative path"),
        "{e}"
    );
}

#[test]
fn safetensors_header_that_lies_about_offsets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::tiny().join("ckpt-fp16/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let p = dir.path().join("model.safetensors");
    // Offsets claim 64 bytes but 32 are present.
    let header = br#"{"a":{"dtype":"F32","shape":[16],"data_offsets":[0,64]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0u8; 32]);
    std::fs::write(&p, &b).unwrap();
    let e = open_err(dir.path());
    assert!(
        e.contains("model.safetensors") && e.contains("header"),
        "{e}"
    );
    // A header length beyond the file.
    let mut b2 = (1u64 << 40).to_le_bytes().to_vec();
    b2.extend_from_slice(b"{}");
    std::fs::write(&p, &b2).unwrap();
    let e = open_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");
    // Overlapping tensors.
    let header = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
    let mut b3 = (header.len() as u64).to_le_bytes().to_vec();
    b3.extend_from_slice(header);
    b3.extend_from_slice(&[0u8; 24]);
    std::fs::write(&p, &b3).unwrap();
    assert!(open_err(dir.path()).contains("model.safetensors"));
}

#[test]
fn unsupported_dtype_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::tiny().join("ckpt-fp16/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    write_st(
        &dir.path().join("model.safetensors"),
        &[("model.norm.weight", "I32", vec![2], vec![0; 8])],
    );
    let e = open_err(dir.path());
    assert!(e.contains("model.norm.weight") && e.contains("I32"), "{e}");
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::tiny().join("ckpt-fp16/config.json")).unwrap(),
    )
    .unwrap();
    for (key, val, expect) in [
        ("hidden_size", serde_json::Value::Null, "hidden_size"),
        (
            "architectures",
            serde_json::json!(["GPT2LMHeadModel"]),
            "GPT2LMHeadModel",
        ),
        ("hidden_act", serde_json::json!("gelu"), "gelu"),
        (
            "num_key_value_heads",
            serde_json::json!(3),
            "num_key_value_heads",
        ),
    ] {
        let mut c = cfg.clone();
        c[key] = val;
        std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
        let e = match bitconv::checkpoint::ModelConfig::from_file(&dir.path().join("config.json")) {
            Ok(_) => panic!("{key}: expected an error"),
            Err(e) => e,
        };
        assert!(matches!(e, CheckpointError::Invalid { .. }));
        let s = e.to_string();
        assert!(s.contains("config.json") && s.contains(expect), "{s}");
    }
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    assert!(bitconv::checkpoint::ModelConfig::from_file(&dir.path().join("config.json")).is_err());
}

#[test]
fn missing_config_and_missing_weights() {
    let dir = tempfile::tempdir().unwrap();
    let e = open_err(dir.path());
    assert!(e.contains("config.json"), "{e}");
    std::fs::copy(
        common::tiny().join("ckpt-fp16/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let e = open_err(dir.path());
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn cli_inspect_dir_json() {
    let out = common::bitconv()
        .args(["inspect", "--json"])
        .arg(common::tiny().join("ckpt-fp32"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], "bitnet");
    assert_eq!(v["parameters"], 1963776);
    assert_eq!(v["dtypes"]["F32"], 24);
    assert!(v["tokenizer_files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "tokenizer.model"));
}
