//! `bitconv convert`: byte equality with the reference files, the exact-mean variant, the
//! Python `gguf` cross-check, and bad input.

use crate::common::{self, tiny_copy};

use std::path::{Path, PathBuf};

use bitconv::gguf::{GgmlType, MappedGguf};
use bitconv::quant::layouts::{i2s, params, tl1, tl2, tq1_0, tq2_0};

fn convert(dir: &Path, args: &[&str]) -> (PathBuf, std::process::Output) {
    let out = dir.parent().unwrap().join(format!(
        "out-{}.gguf",
        args.join("_").replace(['/', ':'], "-")
    ));
    let o = common::bitconv()
        .arg("convert")
        .arg(dir)
        .args(args)
        .arg("-o")
        .arg(&out)
        .arg("--quiet")
        .output()
        .unwrap();
    (out, o)
}

fn convert_ok(dir: &Path, args: &[&str]) -> PathBuf {
    let (out, o) = convert(dir, args);
    assert!(
        o.status.success(),
        "convert {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Compares two GGUF files: identical header, identical tensor bytes, except I2_S tensors,
/// compared on their first n/4 + 4 bytes (the reference's 28 tail bytes are leftovers of
/// llama-quantize's work buffer).
fn assert_same_file(ours: &Path, reference: &Path) {
    let a = MappedGguf::open(ours).unwrap();
    let b = MappedGguf::open(reference).unwrap();
    assert_eq!(a.header.kv, b.header.kv, "metadata of {}", ours.display());
    assert_eq!(a.header.data_start, b.header.data_start);
    assert_eq!(
        a.bytes()[..a.header.data_start as usize],
        b.bytes()[..b.header.data_start as usize]
    );
    assert_eq!(a.header.tensors.len(), b.header.tensors.len());
    assert_eq!(a.header.file_size, b.header.file_size);
    for (ta, tb) in a.header.tensors.iter().zip(&b.header.tensors) {
        assert_eq!(ta, tb);
        let (da, db) = (a.tensor_bytes(ta), b.tensor_bytes(tb));
        let n = if ta.ty == GgmlType::I2_S {
            (ta.numel() / 4 + 4) as usize
        } else {
            da.len()
        };
        assert!(
            da[..n] == db[..n],
            "tensor {} differs from {}",
            ta.name,
            reference.display()
        );
        if ta.ty == GgmlType::I2_S {
            assert!(da[n..].iter().all(|&x| x == 0), "our I2_S tail is zeros");
        }
    }
}

fn reference(rel: &str) -> PathBuf {
    common::tiny().join(rel)
}

/// The target that writes exactly the reference converter's bytes.
const REF: [&str; 2] = ["--target", "bitnet-cpp-2024"];

#[test]
fn fp16_and_fp32_outputs_equal_bitnet_cpp_byte_for_byte() {
    for ck in ["fp16", "fp32"] {
        let (_tmp, dir) = tiny_copy(&format!("ckpt-{ck}"));
        let refdir = format!("bitnet-cpp/from-{ck}");
        let f32 = convert_ok(
            &dir,
            &["--quant", "f32", "--absmean", "torch:2", REF[0], REF[1]],
        );
        assert!(
            std::fs::read(&f32).unwrap()
                == std::fs::read(reference(&format!("{refdir}/ggml-model-f32.gguf"))).unwrap()
        );
        let i2s = convert_ok(
            &dir,
            &["--quant", "i2_s", "--absmean", "torch:2", REF[0], REF[1]],
        );
        assert_same_file(&i2s, &reference(&format!("{refdir}/ggml-model-i2_s.gguf")));
        // --quant-embd (setup_env's --token-embedding-type f16): identical for tiny.
        let i2s_qe = convert_ok(
            &dir,
            &[
                "--quant",
                "i2_s",
                "--absmean",
                "torch:2",
                "--quant-embd",
                REF[0],
                REF[1],
            ],
        );
        assert_same_file(
            &i2s_qe,
            &reference(&format!("{refdir}/ggml-model-i2_s.gguf")),
        );
    }
}

/// Converts `dir` to `tl` (`tl1`, `tl2`) with the reference's flags and kernel_config.ini, and
/// `extra`.
fn convert_tl_as_reference(dir: &Path, tl: &str, extra: &[&str]) -> PathBuf {
    let ini = reference(&format!("bitnet-cpp/kernel_config_{tl}.ini"));
    let mut args = vec![
        "--quant",
        tl,
        "--absmean",
        "torch:2",
        "--quant-embd",
        "--kernel-config",
        ini.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    convert_ok(dir, &args)
}

#[test]
fn tl1_and_tl2_equal_bitnet_cpp_byte_for_byte() {
    let (_tmp, dir) = tiny_copy("ckpt-fp32");
    for tl in ["tl1", "tl2"] {
        let out = convert_tl_as_reference(&dir, tl, &REF);
        let ours = std::fs::read(&out).unwrap();
        let theirs = std::fs::read(reference(&format!(
            "bitnet-cpp/from-fp32/ggml-model-{tl}.gguf"
        )))
        .unwrap();
        assert!(ours == theirs, "{tl} differs");
    }
}

/// For the current bitnet.cpp (the default target), a TL file records the runtime it is for,
/// its FFN activation and the kernel parameters it was packed with in keys after the
/// reference's, carries TL2 as type 42, and differs from the reference in nothing else; moved
/// away from every kernel_config.ini, it still runs and validates with no flag.
#[test]
fn tl_files_record_their_kernel_parameters() {
    let (_tmp, dir) = tiny_copy("ckpt-fp32");
    for tl in ["tl1", "tl2"] {
        let ini = reference(&format!("bitnet-cpp/kernel_config_{tl}.ini"));
        let out = convert_tl_as_reference(&dir, tl, &[]);
        let ours = MappedGguf::open(&out).unwrap();
        let theirs = MappedGguf::open(&reference(&format!(
            "bitnet-cpp/from-fp32/ggml-model-{tl}.gguf"
        )))
        .unwrap();
        let n = theirs.header.kv.len();
        assert_eq!(
            &ours.header.kv[..n],
            &theirs.header.kv[..],
            "{tl}: the reference's keys, in order"
        );
        let own: Vec<&str> = ours.header.kv[n..]
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            own,
            [
                bitconv::arch::TARGET_KEY,
                "bitnet.hidden_activation",
                params::GGUF_KEY
            ]
        );
        assert_eq!(
            ours.header.get(bitconv::arch::TARGET_KEY).unwrap().as_str(),
            Some("bitnet-cpp")
        );
        let last = ours.header.kv.last().unwrap();
        // The raw type id: TL2 is 42 for the current bitnet.cpp, 39 in the 2024 reference.
        for (a, b) in ours.header.tensors.iter().zip(&theirs.header.tensors) {
            match (tl, b.type_id) {
                ("tl2", 39) => assert_eq!(a.type_id, 42, "{}", a.name),
                _ => assert_eq!(a.type_id, b.type_id, "{}", a.name),
            }
        }
        let recorded = params::parse_kernel_config_ini(last.1.as_str().unwrap()).unwrap();
        let given =
            params::parse_kernel_config_ini(&std::fs::read_to_string(&ini).unwrap()).unwrap();
        for t in ours.header.tensors.iter().filter(|t| t.ty != GgmlType::F32) {
            if !matches!(t.ty, GgmlType::TL1 | GgmlType::TL2) {
                continue;
            }
            let (k, m) = (t.dims[0] as usize, t.dims[1] as usize);
            assert_eq!(
                params::find_entry(&recorded, m, k),
                params::find_entry(&given, m, k),
                "{tl} {}",
                t.name
            );
        }
        for (a, b) in ours.header.tensors.iter().zip(&theirs.header.tensors) {
            assert_eq!(a.ty, b.ty);
            assert!(ours.tensor_bytes(a) == theirs.tensor_bytes(b), "{}", a.name);
        }
        // Alone in a directory, no flag: golden, validate and run all load it.
        let alone = tempfile::tempdir().unwrap();
        let file = alone.path().join(format!("m-{tl}.gguf"));
        std::fs::copy(&out, &file).unwrap();
        for args in [
            vec![
                "golden".to_string(),
                s(&file),
                "-o".into(),
                format!("{}.golden.json", s(&file)),
            ],
            vec!["validate".to_string(), s(&file)],
            vec![
                "run".to_string(),
                s(&file),
                "-p".into(),
                "Once upon".into(),
                "-n".into(),
                "4".into(),
            ],
        ] {
            let o = common::bitconv().args(&args).output().unwrap();
            assert!(
                o.status.success(),
                "{tl}: {args:?}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn tq1_0_and_tq2_0_equal_llama_cpp_byte_for_byte() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    for tq in ["tq1_0", "tq2_0"] {
        let out = convert_ok(
            &dir,
            &["--quant", tq, "--absmean", "torch:2", REF[0], REF[1]],
        );
        let ours = std::fs::read(&out).unwrap();
        let refp = reference(&format!("llama-cpp/tiny-{tq}.gguf"));
        let theirs = std::fs::read(&refp).unwrap();
        assert!(ours == theirs, "{tq} differs");
    }
    // Written for mainline llama.cpp (the default target for TQ files): the same tensors and
    // the same keys as mainline's converter, then the keys of bitconv's own; f32 too.
    for q in ["tq1_0", "tq2_0", "f32"] {
        let out = convert_ok(
            &dir,
            &[
                "--quant",
                q,
                "--absmean",
                "torch:2",
                "--target",
                "llama-cpp",
            ],
        );
        let refp = reference(&format!("llama-cpp/tiny-{q}.gguf"));
        let (a, b) = (
            MappedGguf::open(&out).unwrap(),
            MappedGguf::open(&refp).unwrap(),
        );
        let n = b.header.kv.len();
        assert_eq!(&a.header.kv[..n], &b.header.kv[..], "{q}");
        let own: Vec<&str> = a.header.kv[n..].iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(own, [bitconv::arch::TARGET_KEY, "bitnet.hidden_activation"]);
        assert_eq!(a.header.tensors.len(), b.header.tensors.len());
        for (x, y) in a.header.tensors.iter().zip(&b.header.tensors) {
            assert_eq!((&x.name, &x.dims, x.ty), (&y.name, &y.dims, y.ty));
            assert!(a.tensor_bytes(x) == b.tensor_bytes(y), "{q} {}", x.name);
        }
    }
}

fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn exact_mean_differs_only_in_scales_within_2_ulp() {
    let (_tmp, dir) = tiny_copy("ckpt-fp32");
    let ini = reference("bitnet-cpp/kernel_config_tl2.ini");
    let cases: Vec<(Vec<&str>, PathBuf)> = vec![
        (
            vec!["--quant", "i2_s", REF[0], REF[1]],
            reference("bitnet-cpp/from-fp32/ggml-model-i2_s.gguf"),
        ),
        (
            vec!["--quant", "f32", REF[0], REF[1]],
            reference("bitnet-cpp/from-fp32/ggml-model-f32.gguf"),
        ),
        (
            vec![
                "--quant",
                "tl2",
                "--quant-embd",
                "--kernel-config",
                ini.to_str().unwrap(),
                REF[0],
                REF[1],
            ],
            reference("bitnet-cpp/from-fp32/ggml-model-tl2.gguf"),
        ),
    ];
    let mut differing = 0;
    for (args, refp) in cases {
        let out = convert_ok(&dir, &args);
        let a = MappedGguf::open(&out).unwrap();
        let b = MappedGguf::open(&refp).unwrap();
        assert_eq!(a.header.kv, b.header.kv);
        for (ta, tb) in a.header.tensors.iter().zip(&b.header.tensors) {
            assert_eq!(ta, tb);
            let (da, db) = (a.tensor_bytes(ta), b.tensor_bytes(tb));
            match ta.ty {
                GgmlType::I2_S | GgmlType::TL2 => {
                    let off = ta.ty.scale_offset(&ta.dims).unwrap() as usize;
                    assert!(da[..off] == db[..off], "{}: codes differ", ta.name);
                    let (sa, sb) = (a.ternary_scale(ta).unwrap(), b.ternary_scale(tb).unwrap());
                    assert!(ulps(sa, sb) <= 2, "{}: scale {sa} vs {sb}", ta.name);
                    differing += (sa != sb) as usize;
                }
                GgmlType::F32 => {
                    let fa: Vec<f32> = da
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    let fb: Vec<f32> = db
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect();
                    for (x, y) in fa.iter().zip(&fb) {
                        assert_eq!(x.signum(), y.signum(), "{}", ta.name);
                        assert_eq!(*x == 0.0, *y == 0.0, "{}: codes differ", ta.name);
                        assert!(ulps(*x, *y) <= 2, "{}: {x} vs {y}", ta.name);
                    }
                }
                _ => assert!(da == db, "{}", ta.name),
            }
        }
    }
    assert!(
        differing > 0,
        "the exact mean should differ from torch:2 somewhere (it does for 6 of 14 tensors)"
    );
}

#[test]
fn dry_run_sizes_equal_the_written_file() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    for q in ["i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32"] {
        let mut args = vec!["--quant", q, "--dry-run", "--json"];
        let ini;
        if q.starts_with("tl") {
            ini = reference(&format!("bitnet-cpp/kernel_config_{q}.ini"));
            args.extend(["--kernel-config", ini.to_str().unwrap()]);
        }
        let (out, o) = convert(&dir, &args);
        assert!(
            o.status.success(),
            "{q}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!out.exists(), "--dry-run wrote a file");
        let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        args.retain(|a| *a != "--dry-run" && *a != "--json");
        let written = convert_ok(&dir, &args);
        let g = MappedGguf::open(&written).unwrap();
        assert_eq!(
            plan["file_size"].as_u64().unwrap(),
            g.header.file_size,
            "{q}"
        );
        for (p, t) in plan["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&g.header.tensors)
        {
            assert_eq!(p["name"], t.name.as_str());
            assert_eq!(p["bytes"].as_u64().unwrap(), t.nbytes, "{q} {}", t.name);
            assert_eq!(p["type"], t.ty.name());
        }
    }
}

#[test]
fn tl_from_fp16_and_derived_parameters_round_trip() {
    // The reference cannot make TL files from fp16 checkpoints; bitconv can. Unpacking gives
    // the same codes as the I2_S file of the same checkpoint.
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    let i2s_path = convert_ok(&dir, &["--quant", "i2_s"]);
    let i2 = MappedGguf::open(&i2s_path).unwrap();
    let ini = reference("bitnet-cpp/kernel_config_tl2.ini");
    let emitted = dir.parent().unwrap().join("kernel_config.ini");
    for (q, extra) in [
        ("tl1", vec![]),
        ("tl2", vec!["--kernel-config", ini.to_str().unwrap()]),
    ] {
        let mut args = vec![
            "--quant",
            q,
            "--emit-kernel-config",
            emitted.to_str().unwrap(),
        ];
        args.extend(extra);
        let out = convert_ok(&dir, &args);
        let entries =
            params::parse_kernel_config_ini(&std::fs::read_to_string(&emitted).unwrap()).unwrap();
        let g = MappedGguf::open(&out).unwrap();
        for t in g.header.tensors.iter().filter(|t| t.ty.is_bitnet()) {
            let (k, m) = (t.dims[0] as usize, t.dims[1] as usize);
            let p = params::find_entry(&entries, m, k).expect("emitted ini covers every shape");
            let codes = if q == "tl1" {
                tl1::unpack(g.tensor_bytes(t), m, k, &p).unwrap()
            } else {
                tl2::unpack(g.tensor_bytes(t), m, k, &p).unwrap()
            };
            let ti = i2.header.tensor(&t.name).unwrap();
            let (c2, s2) = i2s::unpack(i2.tensor_bytes(ti), m, k).unwrap();
            assert_eq!(codes, c2, "{q} {}", t.name);
            assert_eq!(g.ternary_scale(t).unwrap(), s2);
        }
    }
}

/// Runs python3 with the `gguf` package; `None` (with a message) when either is missing.
fn python_gguf(script: &str, args: &[&Path]) -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import gguf, numpy"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        common::cross_check_skipped(
            "python3 with the gguf package is not available (pip install -r tests/requirements.txt)",
        );
        return None;
    }
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8(o.stdout).unwrap())
}

/// The Python `gguf` package (mainline llama.cpp's reader) reads files written for mainline
/// llama.cpp and dequantizes every ternary tensor to exactly our values.
#[test]
fn python_gguf_reads_our_files_and_dequantizes_like_our_unpack() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    let script = r#"
import sys, gguf, numpy as np
r = gguf.GGUFReader(sys.argv[1])
out = []
for t in r.tensors:
    if t.tensor_type.name in ("TQ1_0", "TQ2_0", "F16", "F32") and len(t.shape) == 2:
        v = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        out.append(t.name + " " + t.tensor_type.name + " " + str(v.size) + " " + v.tobytes().hex())
print("\n".join(out))
"#;
    // Files written for mainline llama.cpp (bitconv's own keys included).
    for q in ["tq1_0", "tq2_0", "f16", "f32"] {
        let path = convert_ok(&dir, &["--quant", q, "--target", "llama-cpp"]);
        let Some(text) = python_gguf(script, &[&path]) else {
            return;
        };
        let g = MappedGguf::open(&path).unwrap();
        let mut checked = 0;
        for line in text.lines() {
            let mut it = line.split(' ');
            let (name, ty, n, hex) = (
                it.next().unwrap(),
                it.next().unwrap(),
                it.next().unwrap(),
                it.next().unwrap(),
            );
            let n: usize = n.parse().unwrap();
            let theirs: Vec<f32> = (0..n)
                .map(|i| {
                    f32::from_le_bytes(
                        u32::from_str_radix(&hex[8 * i..8 * i + 8], 16)
                            .unwrap()
                            .swap_bytes()
                            .to_le_bytes(),
                    )
                })
                .collect();
            let t = g.header.tensor(name).unwrap();
            assert_eq!(t.ty.name(), ty);
            let data = g.tensor_bytes(t);
            let ours: Vec<f32> = match t.ty {
                GgmlType::TQ1_0 | GgmlType::TQ2_0 => {
                    let (codes, d) = if t.ty == GgmlType::TQ1_0 {
                        tq1_0::codes(data, n).unwrap()
                    } else {
                        tq2_0::codes(data, n).unwrap()
                    };
                    codes
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| c as f32 * d[i / 256])
                        .collect()
                }
                GgmlType::F16 => data
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                _ => data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            };
            assert_eq!(ours.len(), theirs.len());
            for (a, b) in ours.iter().zip(&theirs) {
                assert!(a == b, "{q} {name}: {a} vs {b}");
            }
            checked += t.name.contains("blk") as usize;
        }
        assert_eq!(checked, 14, "{q}: every ternary tensor was compared");
    }
}

fn assert_fails(o: &std::process::Output, out: &Path, needles: &[&str]) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2, stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "no output file after a failure");
    let dir = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

/// Rewrites the checkpoint's safetensors with `f` applied to the (name, dtype, shape, bytes)
/// list.
fn edit_tensors(dir: &Path, f: impl FnOnce(&mut Vec<(String, String, Vec<usize>, Vec<u8>)>)) {
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut list: Vec<(String, String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                format!("{:?}", v.dtype()),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    f(&mut list);
    let mut header = serde_json::Map::new();
    let mut off = 0;
    for (n, d, s, b) in &list {
        header.insert(
            n.clone(),
            serde_json::json!({"dtype": d, "shape": s, "data_offsets": [off, off + b.len()]}),
        );
        off += b.len();
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    for (_, _, _, b) in &list {
        out.extend_from_slice(b);
    }
    std::fs::write(p, out).unwrap();
}

#[test]
fn config_disagreeing_with_tensors() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    edit_config(&dir, |c| c["intermediate_size"] = 512.into());
    let (out, o) = convert(&dir, &["--quant", "i2_s"]);
    assert_fails(
        &o,
        &out,
        &["model.safetensors", "mlp.down_proj.weight", "[256, 512]"],
    );
}

#[test]
fn missing_tensor() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    edit_tensors(&dir, |l| {
        l.retain(|t| t.0 != "model.layers.1.mlp.up_proj.weight")
    });
    let (out, o) = convert(&dir, &["--quant", "i2_s"]);
    assert_fails(&o, &out, &["model.layers.1.mlp.up_proj.weight", "missing"]);
}

#[test]
fn nan_and_inf_weights() {
    for (bits, shown) in [(0x7e00u16, "NaN"), (0x7c00u16, "inf")] {
        for q in ["i2_s", "f32"] {
            let (_tmp, dir) = tiny_copy("ckpt-fp16");
            edit_tensors(&dir, |l| {
                let t = l
                    .iter_mut()
                    .find(|t| t.0 == "model.layers.0.self_attn.k_proj.weight")
                    .unwrap();
                let at = 2 * (3 * 256 + 7);
                t.3[at..at + 2].copy_from_slice(&bits.to_le_bytes());
            });
            let (out, o) = convert(&dir, &["--quant", q]);
            assert_fails(
                &o,
                &out,
                &[
                    "model.layers.0.self_attn.k_proj.weight",
                    "row 3, column 7",
                    shown,
                ],
            );
        }
    }
}

#[test]
fn nan_and_inf_in_float_tensors() {
    // A float tensor: the F16 and F32 sources encoded row by row (to i2_s) and the F32 bytes
    // written from the map (fp32 to f32), all scanned piece by piece.
    for (ckpt, q) in [
        ("ckpt-fp16", "i2_s"),
        ("ckpt-fp32", "f32"),
        ("ckpt-fp32", "i2_s"),
    ] {
        for (bits, shown) in [(0x7fc0_0000u32, "NaN"), (0xff80_0000u32, "inf")] {
            let (_tmp, dir) = tiny_copy(ckpt);
            edit_tensors(&dir, |l| {
                let t = l
                    .iter_mut()
                    .find(|t| t.0 == "model.embed_tokens.weight")
                    .unwrap();
                let k = t.2[1];
                let at = 5 * k + 11;
                if t.1 == "F16" {
                    let h = if shown == "NaN" { 0x7e00u16 } else { 0xfc00 };
                    t.3[2 * at..2 * at + 2].copy_from_slice(&h.to_le_bytes());
                } else {
                    t.3[4 * at..4 * at + 4].copy_from_slice(&bits.to_le_bytes());
                }
            });
            let (out, o) = convert(&dir, &["--quant", q]);
            assert_fails(
                &o,
                &out,
                &["model.embed_tokens.weight", "row 5, column 11", shown],
            );
        }
    }
}

#[test]
fn unknown_tensor_name() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    edit_tensors(&dir, |l| {
        l.push((
            "model.layers.0.mlp.extra_proj.weight".into(),
            "F16".into(),
            vec![4],
            vec![0; 8],
        ))
    });
    let (out, o) = convert(&dir, &["--quant", "i2_s"]);
    assert_fails(
        &o,
        &out,
        &["model.layers.0.mlp.extra_proj.weight", "no HF→GGUF mapping"],
    );
}

#[test]
fn shape_no_tl_parameters_fit() {
    // K = 256 has no TL2 parameters within the kernel's work-buffer bound, and none is given.
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    let (out, o) = convert(&dir, &["--quant", "tl2"]);
    assert_fails(&o, &out, &["TL2", "256", "--kernel-config"]);
}

#[test]
fn unwritable_output_path() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    let out = dir.join("no-such-dir").join("x.gguf");
    let o = common::bitconv()
        .arg("convert")
        .arg(&dir)
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("x.gguf") && err.contains("cannot create"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn failure_leaves_an_existing_target_untouched() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    let target = dir.parent().unwrap().join("existing.gguf");
    std::fs::write(&target, b"precious").unwrap();
    edit_tensors(&dir, |l| {
        let t = l
            .iter_mut()
            .find(|t| t.0 == "model.layers.1.mlp.down_proj.weight")
            .unwrap();
        t.3[0..2].copy_from_slice(&0x7e00u16.to_le_bytes());
    });
    let o = common::bitconv()
        .arg("convert")
        .arg(&dir)
        .arg("-o")
        .arg(&target)
        .arg("-q")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
}

#[test]
fn default_output_name_and_json_summary() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    let o = common::bitconv()
        .arg("convert")
        .arg(&dir)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["out_type"], "i2_s");
    let out = dir.join("ggml-model-i2_s.gguf");
    assert!(out.is_file());
    assert_eq!(
        v["bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    assert!(o.stderr.is_empty(), "no progress output in a pipe");
}

/// Writes a packed (uint8 + weight_scale) copy of the tiny fp32 checkpoint, as 2B-4T and the
/// Llama/Falcon 1.58-bit repos store weights: packed row r holds rows r, R+r, 2R+r, 3R+r in
/// bits 1:0, 3:2, 5:4, 7:6, code = t + 1.
fn packed_copy(linear_class: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    use bitconv::quant::absmean::{absmean_src, AbsmeanMode};
    use bitconv::quant::dtype::{to_f32_vec, SrcDtype};
    use bitconv::quant::ternary::Ternarized;
    let (tmp, latent) = tiny_copy("ckpt-fp32");
    let packed = tmp.path().join("packed");
    std::fs::create_dir(&packed).unwrap();
    for f in [
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "config.json",
    ] {
        std::fs::copy(latent.join(f), packed.join(f)).unwrap();
    }
    edit_config(&packed, |c| {
        c["quantization_config"] = serde_json::json!({"quant_method": "bitnet", "linear_class": linear_class, "quantization_mode": "offline"});
    });
    std::fs::copy(
        latent.join("model.safetensors"),
        packed.join("model.safetensors"),
    )
    .unwrap();
    edit_tensors(&packed, |l| {
        let mut extra = Vec::new();
        for t in l.iter_mut() {
            if !t.0.ends_with("_proj.weight") {
                continue;
            }
            let (m, k) = (t.2[0], t.2[1]);
            let am = absmean_src(SrcDtype::F32, &t.3, AbsmeanMode::REFERENCE);
            let tern = Ternarized::new(am, SrcDtype::F32);
            let vals = to_f32_vec(SrcDtype::F32, &t.3);
            let mut codes = vec![0i8; m * k];
            tern.codes_into(&vals, &mut codes);
            let r = m / 4;
            let mut bytes = vec![0u8; r * k];
            for i in 0..4 {
                for row in 0..r {
                    for c in 0..k {
                        bytes[row * k + c] |= ((codes[(i * r + row) * k + c] + 1) as u8) << (2 * i);
                    }
                }
            }
            let ws = if linear_class == "autobitlinear" {
                tern.scale
            } else {
                1.0 / tern.scale
            };
            extra.push((
                t.0.replace(".weight", ".weight_scale"),
                "F32".to_string(),
                vec![1],
                ws.to_le_bytes().to_vec(),
            ));
            *t = (t.0.clone(), "U8".into(), vec![r, k], bytes);
        }
        l.extend(extra);
        l.sort_by(|a, b| a.0.cmp(&b.0));
    });
    (tmp, latent, packed)
}

#[test]
fn packed_checkpoints_convert_to_the_same_ternary_tensors() {
    for class in ["autobitlinear", "bitlinear"] {
        let (_tmp, latent, packed) = packed_copy(class);
        let a = convert_ok(&latent, &["--quant", "i2_s", "--absmean", "torch:2"]);
        let b = convert_ok(&packed, &["--quant", "i2_s"]);
        let (ga, gb) = (MappedGguf::open(&a).unwrap(), MappedGguf::open(&b).unwrap());
        assert_eq!(ga.header.tensors, gb.header.tensors);
        for (ta, tb) in ga.header.tensors.iter().zip(&gb.header.tensors) {
            let (da, db) = (ga.tensor_bytes(ta), gb.tensor_bytes(tb));
            if ta.ty == GgmlType::I2_S {
                let n = (ta.numel() / 4) as usize;
                assert!(da[..n] == db[..n], "{class}: codes of {} differ", ta.name);
                let (sa, sb) = (ga.ternary_scale(ta).unwrap(), gb.ternary_scale(tb).unwrap());
                if class == "autobitlinear" {
                    assert_eq!(
                        sa.to_bits(),
                        sb.to_bits(),
                        "{}: W = T·weight_scale",
                        ta.name
                    );
                } else {
                    assert!(
                        ulps(sa, sb) <= 1,
                        "{}: W = T/weight_scale: {sa} vs {sb}",
                        ta.name
                    );
                }
            } else {
                assert!(da == db, "{class}: {}", ta.name);
            }
        }
    }
}

#[test]
fn packed_weight_without_scale_is_an_error() {
    let (_tmp, _latent, packed) = packed_copy("autobitlinear");
    edit_tensors(&packed, |l| {
        l.retain(|t| t.0 != "model.layers.1.self_attn.v_proj.weight_scale")
    });
    let (out, o) = convert(&packed, &["--quant", "i2_s"]);
    assert_fails(
        &o,
        &out,
        &["model.layers.1.self_attn.v_proj.weight_scale", "missing"],
    );
}

#[test]
fn bf16_checkpoints_convert_to_tl1_and_tl2() {
    // The reference TL path asserts on float32 scales; bitconv takes bf16 master weights too.
    let (_tmp, dir) = tiny_copy("ckpt-fp32");
    edit_tensors(&dir, |l| {
        for t in l.iter_mut() {
            let bf: Vec<u8> = t
                .3
                .chunks_exact(4)
                .flat_map(|c| {
                    half::bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()
                })
                .collect();
            t.1 = "BF16".into();
            t.3 = bf;
        }
    });
    let i2 = MappedGguf::open(&convert_ok(&dir, &["--quant", "i2_s"])).unwrap();
    let ini = reference("bitnet-cpp/kernel_config_tl2.ini");
    for (q, extra) in [
        ("tl1", vec![]),
        ("tl2", vec!["--kernel-config", ini.to_str().unwrap()]),
    ] {
        let emitted = dir.parent().unwrap().join(format!("{q}.ini"));
        let mut args = vec![
            "--quant",
            q,
            "--emit-kernel-config",
            emitted.to_str().unwrap(),
        ];
        args.extend(extra);
        let g = MappedGguf::open(&convert_ok(&dir, &args)).unwrap();
        let entries =
            params::parse_kernel_config_ini(&std::fs::read_to_string(&emitted).unwrap()).unwrap();
        for t in g.header.tensors.iter().filter(|t| t.ty.is_bitnet()) {
            let (k, m) = (t.dims[0] as usize, t.dims[1] as usize);
            let p = params::find_entry(&entries, m, k).unwrap();
            let codes = if q == "tl1" {
                tl1::unpack(g.tensor_bytes(t), m, k, &p).unwrap()
            } else {
                tl2::unpack(g.tensor_bytes(t), m, k, &p).unwrap()
            };
            let ti = i2.header.tensor(&t.name).unwrap();
            assert_eq!(
                codes,
                i2s::unpack(i2.tensor_bytes(ti), m, k).unwrap().0,
                "{q} {}",
                t.name
            );
            assert_eq!(g.ternary_scale(t), i2.ternary_scale(ti));
        }
    }
}

/// A config value that changes the computation and is not implemented is a clear error naming
/// the field, in `convert` and in `golden` (the independent reading refuses it too); a
/// `rope_scaling` of type `llama3` is implemented by the golden and refused by the converter
/// (it cannot write it), never silently ignored.
#[test]
fn unsupported_config_values_are_refused_by_name() {
    for (field, value, convert_err, golden_err) in [
        ("attention_bias", "true", "attention_bias", "attention_bias"),
        ("mlp_bias", "true", "mlp_bias", "mlp_bias"),
        (
            "rope_scaling",
            r#"{"rope_type": "yarn", "factor": 4.0}"#,
            "rope_scaling",
            "rope_scaling",
        ),
        (
            "rope_scaling",
            r#"{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
            "rope_scaling",
            "",
        ),
    ] {
        let (_tmp, dir) = tiny_copy("ckpt-fp16");
        let cfg_path = dir.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
        cfg[field] = serde_json::from_str(value).unwrap();
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let (out, o) = convert(&dir, &["--quant", "i2_s"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{field}={value}: {err}");
        assert!(err.contains(convert_err), "{field}={value}: {err}");
        assert!(!out.exists());
        let g = dir.parent().unwrap().join("g.json");
        let o = common::bitconv()
            .args(["golden", &s(&dir), "-o", &s(&g)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        if golden_err.is_empty() {
            assert!(
                o.status.success(),
                "{field}={value}: the golden implements it: {err}"
            );
        } else {
            assert_eq!(o.status.code(), Some(2), "{field}={value}: {err}");
            assert!(err.contains(golden_err), "{field}={value}: {err}");
        }
    }
}

/// An empty `tokenizer.model` (a valid, empty protobuf) is an error naming the file, as
/// SentencePiece refuses it, not a model whose vocabulary is all padding.
#[test]
fn empty_tokenizer_model_is_an_error_naming_the_file() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    std::fs::write(dir.join("tokenizer.model"), b"").unwrap();
    let (out, o) = convert(&dir, &["--quant", "i2_s"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("tokenizer.model") && err.contains("unknown piece"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Layer counts the input cannot hold are errors before any plan is built (no allocation in
/// proportion to a number in a file or on the command line): `num_hidden_layers` 10^7 in
/// `convert --dry-run`, `dummy --layers 2^40 --dry-run`.
#[test]
fn huge_layer_counts_are_refused_before_planning() {
    let (_tmp, dir) = tiny_copy("ckpt-fp16");
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["num_hidden_layers"] = 10_000_000.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let (_, o) = convert(&dir, &["--dry-run"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("num_hidden_layers 10000000"), "{err}");
    let o = common::bitconv()
        .args(["dummy", "--layers", "1099511627776", "--dry-run"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--layers 1099511627776"), "{err}");
}
