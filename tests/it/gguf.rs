//! GGUF reader/writer: agreement with the reference dumps, byte-exact round trips, and bad input.

use crate::common;

use std::path::{Path, PathBuf};

use bitconv::gguf::{
    inspect, ErrorKind, GgmlType, GgufHeader, GgufWriter, MappedGguf, TensorSpec, Value, ValueType,
};
use proptest::prelude::*;

fn reference_ggufs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![common::tiny()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "gguf") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 9,
        "expected the reference GGUF files, found {out:?}"
    );
    out
}

/// The dump beside `x.gguf` is `x.dump.json`.
fn dump_for(p: &Path) -> Option<serde_json::Value> {
    let d = p.with_extension("dump.json");
    let text = std::fs::read_to_string(d).ok()?;
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn inspect_json_matches_every_reference_dump() {
    let mut compared = 0;
    for p in reference_ggufs() {
        let Some(dump) = dump_for(&p) else { continue };
        let g = MappedGguf::open(&p).unwrap();
        let ours = inspect::report_json(&g, true);
        for key in [
            "version",
            "n_tensors",
            "n_kv",
            "alignment",
            "data_start",
            "file_size",
            "kv",
        ] {
            assert_eq!(ours[key], dump[key], "{}: field {key}", p.display());
        }
        let (ot, dt) = (
            ours["tensors"].as_array().unwrap(),
            dump["tensors"].as_array().unwrap(),
        );
        assert_eq!(ot.len(), dt.len(), "{}", p.display());
        for (o, d) in ot.iter().zip(dt) {
            for (k, v) in d.as_object().unwrap() {
                assert_eq!(&o[k], v, "{}: tensor {} field {k}", p.display(), d["name"]);
            }
        }
        compared += 1;
    }
    // Every reference file but llama-cpp/tiny-f32.gguf has a dump.
    assert!(compared >= 8, "compared only {compared} dumps");
}

#[test]
fn cli_inspect_json_hash_matches_a_dump() {
    let p = common::tiny().join("bitnet-cpp/from-fp32/ggml-model-tl1.gguf");
    let out = common::bitconv()
        .args(["inspect", "--json", "--hash"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dump = dump_for(&p).unwrap();
    assert_eq!(ours["kv"], dump["kv"]);
    assert_eq!(
        ours["tensors"][2]["sha256_span"],
        dump["tensors"][2]["sha256_span"]
    );
    // TL1 exposes the hidden per-tensor scale.
    assert!(ours["tensors"][2]["scale"].as_f64().unwrap() > 0.0);
}

/// Writes a parsed file back out, copying each tensor's span.
fn rewrite(bytes: &[u8], h: &GgufHeader) -> Vec<u8> {
    let specs = h
        .tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let mut w = GgufWriter::new(Vec::new(), &h.kv, specs).unwrap();
    for t in &h.tensors {
        w.write_tensor(&t.name, h.tensor_bytes(bytes, t)).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn rewriting_every_reference_file_reproduces_it_byte_for_byte() {
    for p in reference_ggufs() {
        let bytes = std::fs::read(&p).unwrap();
        let h = GgufHeader::parse(&bytes, &p).unwrap();
        let out = rewrite(&bytes, &h);
        assert!(out == bytes, "{} differs after read+write", p.display());
    }
}

#[test]
fn tl_hidden_scale_is_exposed_and_outside_the_table() {
    let p = common::tiny().join("bitnet-cpp/from-fp32/ggml-model-tl2.gguf");
    let g = MappedGguf::open(&p).unwrap();
    let h = &g.header;
    assert!(h.tensors.iter().all(|t| !t.name.ends_with("_scale")));
    let t = h.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(t.ty, GgmlType::TL2);
    let s = g.ternary_scale(t).unwrap();
    // The same tensor's I2_S scale in the I2_S file of the same checkpoint.
    let i2 = MappedGguf::open(&common::tiny().join("bitnet-cpp/from-fp32/ggml-model-i2_s.gguf"))
        .unwrap();
    let ti = i2.header.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(s.to_bits(), i2.ternary_scale(ti).unwrap().to_bits());
}

fn all_value_kinds() -> Vec<(String, Value)> {
    vec![
        ("general.alignment".into(), Value::U32(64)),
        ("t.u8".into(), Value::U8(200)),
        ("t.i8".into(), Value::I8(-5)),
        ("t.u16".into(), Value::U16(65000)),
        ("t.i16".into(), Value::I16(-32000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(-1.5e-7)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.str".into(), Value::String("héllo ✓".into())),
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(std::f64::consts::PI)),
        ("t.arr_str".into(), Value::str_array(["a", "", "ccc"])),
        ("t.arr_empty".into(), Value::Array(ValueType::U16, vec![])),
        ("t.arr_f32".into(), Value::f32_array([1.0, -2.0])),
        (
            "t.arr_arr".into(),
            Value::Array(
                ValueType::Array,
                vec![
                    Value::i32_array([1, 2, 3]),
                    Value::Array(ValueType::I32, vec![]),
                ],
            ),
        ),
    ]
}

#[test]
fn every_value_type_and_odd_alignment_round_trips() {
    for align in [8u32, 32, 64, 4096] {
        let mut kv = all_value_kinds();
        kv[0].1 = Value::U32(align);
        // TL2's type id depends on the runtime the file is for; a BitNet architecture says it.
        kv.push((
            "general.architecture".into(),
            Value::String("bitnet".into()),
        ));
        let tensors = vec![
            TensorSpec {
                name: "a".into(),
                dims: vec![3],
                ty: GgmlType::F32,
            },
            TensorSpec {
                name: "b".into(),
                dims: vec![32, 2],
                ty: GgmlType::Q8_0,
            },
            TensorSpec {
                name: "c".into(),
                dims: vec![256, 2],
                ty: GgmlType::TL2,
            },
            TensorSpec {
                name: "d".into(),
                dims: vec![128, 1],
                ty: GgmlType::I2_S,
            },
        ];
        let mut w = GgufWriter::new(Vec::new(), &kv, tensors.clone()).unwrap();
        let sizes: Vec<u64> = w.tensors().iter().map(|t| t.nbytes).collect();
        for (i, n) in sizes.iter().enumerate() {
            // Write in awkward chunks to exercise streaming.
            let data: Vec<u8> = (0..*n)
                .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8))
                .collect();
            for chunk in data.chunks(7) {
                w.write_data(chunk).unwrap();
            }
        }
        let bytes = w.finish().unwrap();
        let h = GgufHeader::parse(&bytes, Path::new("mem")).unwrap();
        assert_eq!(h.alignment, align as u64);
        assert_eq!(h.kv, kv);
        assert_eq!(h.data_start % align as u64, 0);
        for (t, spec) in h.tensors.iter().zip(&tensors) {
            assert_eq!((&t.name, &t.dims, t.ty), (&spec.name, &spec.dims, spec.ty));
            assert_eq!(t.offset % align as u64, 0);
        }
        assert_eq!(rewrite(&bytes, &h), bytes);
    }
}

#[test]
fn zero_tensor_file_round_trips() {
    let kv = vec![(
        "general.architecture".to_string(),
        Value::String("bitnet".into()),
    )];
    let bytes = GgufWriter::new(Vec::new(), &kv, vec![])
        .unwrap()
        .finish()
        .unwrap();
    let h = GgufHeader::parse(&bytes, Path::new("mem")).unwrap();
    assert!(h.tensors.is_empty());
    assert_eq!(h.kv, kv);
    assert_eq!(rewrite(&bytes, &h), bytes);
    let empty = GgufWriter::new(Vec::new(), &[], vec![])
        .unwrap()
        .finish()
        .unwrap();
    let h = GgufHeader::parse(&empty, Path::new("mem")).unwrap();
    assert!(h.kv.is_empty() && h.tensors.is_empty());
}

#[test]
fn writer_refuses_wrong_lengths_and_order() {
    let t = vec![
        TensorSpec {
            name: "a".into(),
            dims: vec![4],
            ty: GgmlType::F32,
        },
        TensorSpec {
            name: "b".into(),
            dims: vec![4],
            ty: GgmlType::F32,
        },
    ];
    let mut w = GgufWriter::new(Vec::new(), &[], t.clone()).unwrap();
    assert!(w.write_tensor("b", &[0; 16]).is_err());
    assert!(w.write_tensor("a", &[0; 15]).is_err());
    let mut w = GgufWriter::new(Vec::new(), &[], t).unwrap();
    w.write_tensor("a", &[0; 16]).unwrap();
    assert!(
        w.finish().is_err(),
        "finishing with a tensor missing must fail"
    );
    let bad = vec![TensorSpec {
        name: "q".into(),
        dims: vec![33],
        ty: GgmlType::Q8_0,
    }];
    let err = GgufWriter::new(Vec::new(), &[], bad)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("q") && err.contains("multiple of 32"), "{err}");
}

fn arb_value(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<u32>().prop_map(|b| Value::F32(f32::from_bits(b))),
        any::<bool>().prop_map(Value::Bool),
        ".{0,20}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<u64>().prop_map(|b| Value::F64(f64::from_bits(b))),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => (arb_value(depth - 1), 0usize..5).prop_flat_map(|(proto, n)| {
            let t = proto.value_type();
            proptest::collection::vec(Just(proto), n).prop_map(move |items| Value::Array(t, items))
        }),
    ]
    .boxed()
}

/// Byte-level equality (NaN payloads included), since `Value` compares floats by value.
fn same_bytes(a: &[(String, Value)]) -> Vec<u8> {
    GgufWriter::new(Vec::new(), a, vec![])
        .unwrap()
        .finish()
        .unwrap()
}

proptest! {
    #[test]
    fn random_metadata_round_trips(kv in proptest::collection::vec(("[a-z.]{1,12}", arb_value(2)), 0..12)) {
        let mut kv: Vec<(String, Value)> = kv;
        let mut seen = std::collections::HashSet::new();
        kv.retain(|(k, _)| seen.insert(k.clone()) && k != "general.alignment");
        let bytes = same_bytes(&kv);
        let h = GgufHeader::parse(&bytes, Path::new("mem")).unwrap();
        prop_assert_eq!(same_bytes(&h.kv), bytes);
    }

    #[test]
    fn truncations_and_corruptions_never_panic(cut in 0usize..2000, flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..8)) {
        let kv = all_value_kinds();
        let t = vec![TensorSpec { name: "w".into(), dims: vec![256, 2], ty: GgmlType::TL2 }];
        let mut w = GgufWriter::new(Vec::new(), &kv, t).unwrap();
        let n = w.tensors()[0].nbytes as usize;
        w.write_data(&vec![1u8; n]).unwrap();
        let mut bytes = w.finish().unwrap();
        for (i, b) in flips {
            if i < bytes.len() { bytes[i] = b; }
        }
        bytes.truncate(cut.min(bytes.len()));
        let _ = GgufHeader::parse(&bytes, Path::new("mem"));
    }
}

/// A small valid file to corrupt.
fn small_file() -> Vec<u8> {
    let kv = vec![
        (
            "general.architecture".to_string(),
            Value::String("bitnet".into()),
        ),
        ("x".to_string(), Value::U32(7)),
    ];
    let t = vec![
        TensorSpec {
            name: "a".into(),
            dims: vec![8],
            ty: GgmlType::F32,
        },
        TensorSpec {
            name: "b".into(),
            dims: vec![8],
            ty: GgmlType::F32,
        },
    ];
    let mut w = GgufWriter::new(Vec::new(), &kv, t).unwrap();
    w.write_tensor("a", &[1; 32]).unwrap();
    w.write_tensor("b", &[2; 32]).unwrap();
    w.finish().unwrap()
}

fn parse_err(bytes: &[u8]) -> bitconv::gguf::ReadError {
    GgufHeader::parse(bytes, Path::new("bad.gguf")).unwrap_err()
}

/// Offsets into `small_file()`: header 24 bytes, then KV 0 (key len 8 + 20 + type 4 + str 8 + 6).
const KV1_START: usize = 24 + 8 + 20 + 4 + 8 + 6;
const TI_START: usize = KV1_START + 8 + 1 + 4 + 4;

#[test]
fn bad_magic_and_version() {
    let mut b = small_file();
    b[0] = b'X';
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::BadMagic);
    assert!(e.to_string().contains("bad.gguf") && e.to_string().contains("header.magic"));
    let mut b = small_file();
    b[4..8].copy_from_slice(&9u32.to_le_bytes());
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::UnsupportedVersion(9));
    assert!(e.to_string().contains("header.version"), "{e}");
}

#[test]
fn truncated_header() {
    let b = small_file();
    for cut in [0, 3, 10, 20, KV1_START + 3, TI_START + 5] {
        let e = parse_err(&b[..cut]);
        assert!(
            matches!(
                e.kind,
                ErrorKind::Truncated | ErrorKind::CountTooLarge(_) | ErrorKind::BadMagic
            ),
            "cut {cut}: {e}"
        );
    }
    let e = parse_err(&b[..TI_START + 5]);
    assert!(e.to_string().contains("tensor_info[0]"), "{e}");
}

#[test]
fn huge_counts_fail_without_allocating() {
    for (at, field) in [(8, "header.n_tensors"), (16, "header.n_kv")] {
        let mut b = small_file();
        b[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let e = parse_err(&b);
        assert_eq!(e.kind, ErrorKind::CountTooLarge(1 << 60));
        assert!(e.to_string().contains(field), "{e}");
    }
    // An array claiming 2^60 elements.
    let kv = vec![("arr".to_string(), Value::i32_array([1, 2]))];
    let mut b = same_bytes(&kv);
    let count_at = 24 + 8 + 3 + 4 + 4;
    b[count_at..count_at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::CountTooLarge(1 << 60));
    assert!(e.to_string().contains("kv[0] (arr)"), "{e}");
}

#[test]
fn string_longer_than_file() {
    let mut b = small_file();
    b[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::CountTooLarge(1 << 40));
    assert!(e.to_string().contains("kv[0].key"), "{e}");
}

#[test]
fn invalid_utf8_key() {
    let mut b = small_file();
    b[32] = 0xff;
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::InvalidUtf8);
    assert!(e.to_string().contains("kv[0].key"), "{e}");
}

#[test]
fn unknown_value_type() {
    let mut b = small_file();
    b[KV1_START + 9..KV1_START + 13].copy_from_slice(&77u32.to_le_bytes());
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::UnknownValueType(77));
    assert!(e.to_string().contains("kv[1] (x).type"), "{e}");
}

/// Byte offset of tensor info `i`'s type field in `small_file()` (names are one byte, 1 dim).
fn ti_type_at(i: usize) -> usize {
    TI_START + i * (8 + 1 + 4 + 8 + 4 + 8) + 8 + 1 + 4 + 8
}

#[test]
fn unknown_tensor_type_names_the_tensor_and_id() {
    let mut b = small_file();
    let at = ti_type_at(1);
    b[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::UnknownTensorType(99));
    let s = e.to_string();
    assert!(s.contains("tensor_info[1] (b)") && s.contains("99"), "{s}");
}

#[test]
fn offsets_past_the_end_and_overlaps() {
    let mut b = small_file();
    let at = ti_type_at(1) + 4;
    b[at..at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::OutOfBounds);
    assert!(e.to_string().contains("tensor_info[1] (b).offset"), "{e}");

    let mut b = small_file();
    b[at..at + 8].copy_from_slice(&0u64.to_le_bytes());
    let e = parse_err(&b);
    assert_eq!(e.kind, ErrorKind::Overlap("a".into()));
    assert!(e.to_string().contains("(b)"), "{e}");

    let mut b = small_file();
    b[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(parse_err(&b).kind, ErrorKind::BadAlignment(u64::MAX));
    b[at..at + 8].copy_from_slice(&(u64::MAX - 31).to_le_bytes());
    assert_eq!(parse_err(&b).kind, ErrorKind::OutOfBounds);
}

#[test]
fn truncated_data_section() {
    let b = small_file();
    let e = parse_err(&b[..b.len() - 1]);
    assert_eq!(e.kind, ErrorKind::OutOfBounds);
}

#[test]
fn cli_reports_bad_files_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.gguf");
    let mut b = small_file();
    let at = ti_type_at(0);
    b[at..at + 4].copy_from_slice(&1234u32.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let out = common::bitconv().arg("inspect").arg(&p).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.gguf")
            && err.contains("tensor_info[0] (a).type")
            && err.contains("1234"),
        "{err}"
    );
}

/// A count too large for the file names its own field and byte: `n_tensors` sits at byte 8,
/// `n_kv` at byte 16 (issue: the two offsets were swapped).
#[test]
fn oversized_header_counts_name_their_own_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for (n_tensors, n_kv, want) in [
        (1u64 << 40, 0u64, "header.n_tensors (at byte 8)"),
        (0, 1 << 40, "header.n_kv (at byte 16)"),
    ] {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend([0u8; 64]);
        let p = dir.path().join("bad.gguf");
        std::fs::write(&p, &b).unwrap();
        let e = bitconv::gguf::MappedGguf::open(&p)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(want), "{e}");
    }
}

/// A closed stdout (`bitconv inspect F | head`) ends the process quietly: no panic message.
#[test]
#[cfg(unix)]
fn closed_stdout_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    let f = common::tiny().join("bitnet-cpp/from-fp16/ggml-model-i2_s.gguf");
    for args in [vec!["inspect"], vec!["inspect", "--json"]] {
        let mut child = common::bitconv()
            .args(&args)
            .arg(&f)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is printed
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            o.status.success() || o.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?} {err}",
            o.status
        );
    }
}

/// An error's cause is printed once, not once per layer that wraps it.
#[test]
fn error_causes_are_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.gguf");
    for args in [
        vec!["inspect", missing.to_str().unwrap()],
        vec!["run", missing.to_str().unwrap(), "-p", "x"],
    ] {
        let o = common::bitconv().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.matches("os error 2").count(), 1, "{args:?}: {err}");
    }
}

/// A GGUF header of one metadata array: `count` elements of type `elem` (a u8 array's bytes are
/// left as a hole, so the file is sparse), or of one-byte strings when `elem` is 8.
fn one_array_file(path: &std::path::Path, elem: u32, count: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(b"GGUF").unwrap();
    f.write_all(&3u32.to_le_bytes()).unwrap();
    f.write_all(&0u64.to_le_bytes()).unwrap(); // tensors
    f.write_all(&1u64.to_le_bytes()).unwrap(); // kv
    let key = b"hostile.array";
    f.write_all(&(key.len() as u64).to_le_bytes()).unwrap();
    f.write_all(key).unwrap();
    f.write_all(&9u32.to_le_bytes()).unwrap();
    f.write_all(&elem.to_le_bytes()).unwrap();
    f.write_all(&count.to_le_bytes()).unwrap();
    if elem == 8 {
        for i in 0..count {
            f.write_all(&1u64.to_le_bytes()).unwrap();
            f.write_all(&[b'a' + (i % 26) as u8]).unwrap();
        }
        f.flush().unwrap();
    } else {
        let file = f.into_inner().unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len + count).unwrap();
    }
}

/// Runs bitconv with its address space limited to `limit` bytes (`ulimit -v`), stdout and
/// stderr to files; returns the exit code, stderr and bitconv's peak RSS in KiB.
///
/// The peak comes from `/usr/bin/time` (None without it): a process forked from this test
/// binary counts the test's own resident pages until it execs, so the test cannot measure its
/// child directly; `time` is a small process whose child starts from nothing.
fn run_limited(args: &[&std::ffi::OsStr], limit: u64) -> (Option<i32>, String, Option<i64>) {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let err_path = tmp.path().join("stderr");
    let rss_path = tmp.path().join("rss");
    let timer = Path::new("/usr/bin/time");
    let mut cmd = if timer.is_file() {
        let mut c = std::process::Command::new(timer);
        c.args(["-f", "%M", "-o"])
            .arg(&rss_path)
            .arg(env!("CARGO_BIN_EXE_bitconv"));
        c
    } else {
        common::bitconv()
    };
    cmd.args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let r = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &r) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = cmd.status().unwrap();
    let rss = std::fs::read_to_string(&rss_path)
        .ok()
        .and_then(|t| t.lines().last().and_then(|l| l.trim().parse().ok()));
    let err = std::fs::read_to_string(&err_path).unwrap();
    // /usr/bin/time adds a line when the command fails; keep bitconv's own output.
    let err = err
        .lines()
        .filter(|l| !l.starts_with("Command exited with non-zero status"))
        .collect::<Vec<_>>()
        .join("\n");
    (status.code(), err, rss)
}

/// Metadata arrays are not decoded one enum per element: `inspect` of a header holding 2^26
/// u8 or 2^23 strings stays under 64 MiB of peak RSS (decoded, they took about 32 and 56
/// bytes an element: 2.1 GB and 470 MB), previews the first items and gives the full count;
/// under `ulimit -v 4000000`, `run` and `validate` on the same files exit 2 with an error naming
/// the key, and a sparse 4 KiB file claiming 2^34 elements is an error naming the count.
#[test]
fn huge_metadata_arrays_cost_no_memory_and_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = tmp.path().join("bytes.gguf");
    let strings = tmp.path().join("strings.gguf");
    one_array_file(&bytes, 0, 1 << 26);
    one_array_file(&strings, 8, 1 << 23);
    let gb4 = 4_000_000 * 1024;
    for (f, n, first) in [(&bytes, 1u64 << 26, "0"), (&strings, 1 << 23, "\"a\"")] {
        let (code, err, rss_kib) =
            run_limited(&["inspect".as_ref(), f.as_os_str(), "--json".as_ref()], gb4);
        assert_eq!(code, Some(0), "{err}");
        match rss_kib {
            Some(kib) => assert!(kib < 64 * 1024, "inspect peak RSS {kib} KiB"),
            // Visible, not fatal: the exit codes above are still checked.
            None => eprintln!("SKIPPED: the peak-RSS check needs /usr/bin/time"),
        }
        let o = common::bitconv()
            .args(["inspect", "--json"])
            .arg(f)
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["kv"][0]["value"]["n"], n);
        assert_eq!(j["kv"][0]["value"]["first"][0].to_string(), first);
        for cmd in ["run", "validate"] {
            let os = std::ffi::OsStr::new;
            let mut args = vec![os(cmd), f.as_os_str()];
            if cmd == "run" {
                args.extend([os("-p"), os("x")]);
            }
            let (code, err, _) = run_limited(&args, gb4);
            assert_eq!(code, Some(2), "{cmd}: {err}");
            assert!(err.contains("bitconv: error"), "{cmd}: {err}");
            assert!(
                !err.contains("panicked") && !err.contains("memory allocation"),
                "{err}"
            );
        }
    }
    // A 4 KiB sparse file that claims 2^34 elements (`validate` stops earlier: no golden).
    let claim = tmp.path().join("claim.gguf");
    one_array_file(&claim, 0, 4096);
    let mut b = std::fs::read(&claim).unwrap();
    let at = b.len() - 4096 - 8;
    b[at..at + 8].copy_from_slice(&(1u64 << 34).to_le_bytes());
    std::fs::write(&claim, &b).unwrap();
    for cmd in ["inspect", "run", "validate"] {
        let os = std::ffi::OsStr::new;
        let mut args = vec![os(cmd), claim.as_os_str()];
        if cmd == "run" {
            args.extend([os("-p"), os("x")]);
        }
        let (code, err, _) = run_limited(&args, gb4);
        assert_eq!(code, Some(2), "{cmd}: {err}");
        assert!(
            cmd == "validate" || err.contains("17179869184"),
            "{cmd}: {err}"
        );
    }
}

/// Type 42 is TL2 for the current bitnet.cpp and Q2_0 for mainline llama.cpp. A TL2 file
/// (written for bitnet-cpp: type 42) relabelled as architecture `llama`, with nothing left that
/// says which runtime it is for, is refused by `run`, `validate` and `inspect` with an error
/// naming both readings, never read as Q2_0 or TL2 garbage; the original file runs.
#[test]
fn type_42_under_llama_with_nothing_said_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/families/bitnet-2b4t-packed");
    let src = tmp.path().join("tl2.gguf");
    let o = common::bitconv()
        .arg("convert")
        .arg(&fixture)
        .args(["--quant", "tl2", "-q", "-o"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = bitconv::gguf::MappedGguf::open(&src).unwrap();
    assert!(g.header.tensors.iter().any(|t| t.type_id == 42));
    // Relabel: the architecture and its keys renamed, bitconv's keys dropped.
    let kv: Vec<(String, Value)> = g
        .header
        .kv
        .iter()
        .filter(|(k, _)| !k.starts_with("bitconv."))
        .map(|(k, v)| match k.as_str() {
            "general.architecture" => (k.clone(), Value::String("llama".into())),
            _ => (k.replace("bitnet-b1.58.", "llama."), v.clone()),
        })
        .collect();
    let specs = g
        .header
        .tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let mut w = GgufWriter::new(Vec::new(), &kv, specs).unwrap();
    for t in &g.header.tensors {
        w.write_data(g.tensor_bytes(t)).unwrap();
    }
    let mut bytes = w.finish().unwrap();
    // The writer numbers TL2 as the 2024 fork did (39) when nothing says otherwise; put the
    // current id back, as the original file had it.
    let mut patched = 0;
    for t in &g.header.tensors {
        let mut pat = (t.name.len() as u64).to_le_bytes().to_vec();
        pat.extend_from_slice(t.name.as_bytes());
        let at = bytes
            .windows(pat.len())
            .position(|w| w == pat.as_slice())
            .unwrap();
        let ty_at = at + pat.len() + 4 + 8 * t.dims.len();
        let id = u32::from_le_bytes(bytes[ty_at..ty_at + 4].try_into().unwrap());
        assert_eq!(id, t.ty.id());
        if t.type_id == 42 {
            bytes[ty_at..ty_at + 4].copy_from_slice(&42u32.to_le_bytes());
            patched += 1;
        }
    }
    assert!(patched > 0);
    let relabelled = tmp.path().join("llama-42.gguf");
    std::fs::write(&relabelled, &bytes).unwrap();
    for args in [
        vec!["run", "-p", "x", "-n", "1"],
        vec!["inspect"],
        vec!["golden", "-o", "/dev/null"],
    ] {
        let o = common::bitconv()
            .arg(args[0])
            .arg(&relabelled)
            .args(&args[1..])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("type 42") && err.contains("TL2") && err.contains("Q2_0"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let o = common::bitconv()
        .arg("run")
        .arg(&src)
        .args(["-p", "x", "-n", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The sweep of the hostile-input issue under `ulimit -v 4000000`: sizes that come from a
/// config (10^7 and 2^40 layers) or a GGUF header (`block_count` 2^31) make `convert --dry-run`,
/// `golden`, `run` and `validate` exit 2 with an error naming the field, never abort.
#[test]
fn hostile_sizes_exit_2_under_a_4_gb_address_space() {
    let os = std::ffi::OsStr::new;
    let gb4 = 4_000_000 * 1024;
    let (tmp, dir) = common::tiny_copy("ckpt-fp16");
    let cfg_path = dir.join("config.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    for layers in [10_000_000u64, 1 << 40] {
        let mut c = cfg.clone();
        c["num_hidden_layers"] = layers.into();
        std::fs::write(&cfg_path, c.to_string()).unwrap();
        for args in [
            vec![os("convert"), dir.as_os_str(), os("--dry-run")],
            vec![os("golden"), dir.as_os_str(), os("-o"), os("/dev/null")],
        ] {
            let (code, err, _) = run_limited(&args, gb4);
            assert_eq!(code, Some(2), "{args:?} {layers}: {err}");
            assert!(
                err.contains("num_hidden_layers") || err.contains("layers"),
                "{args:?}: {err}"
            );
        }
    }
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    // A model whose header claims 2^31 blocks.
    let good = tmp.path().join("good.gguf");
    let o = common::bitconv()
        .arg("convert")
        .arg(&dir)
        .args(["-q", "-o"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(o.status.success());
    let bad = tmp.path().join("blocks.gguf");
    common::mutate::with_key(&good, &bad, "bitnet.block_count", Value::U32(1 << 31)).unwrap();
    for args in [
        vec![os("run"), bad.as_os_str(), os("-p"), os("x")],
        vec![os("golden"), bad.as_os_str(), os("-o"), os("/dev/null")],
        vec![os("inspect"), bad.as_os_str()],
    ] {
        let (code, err, _) = run_limited(&args, gb4);
        if args[0] == "inspect" {
            assert_eq!(code, Some(0), "inspect only reports: {err}");
            continue;
        }
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("block_count"), "{args:?}: {err}");
    }
}
