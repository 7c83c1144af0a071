//! `bitconv golden`, `bitconv validate`, `convert --validate` and `bitconv run`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use bitconv::gguf::MappedGguf;

fn bin(args: &[&str]) -> Output {
    common::bitconv().args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The tiny fp16 checkpoint in `<tmp>/tiny`.
fn tiny_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(common::tiny().join("ckpt-fp16")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    (tmp, dir)
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn failed(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected 'validation failed' (1)\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn every_converted_type_passes_the_checkpoint_golden_and_the_independent_numpy_golden() {
    let (tmp, dir) = tiny_dir();
    let g = tmp.path().join("tiny.golden.json");
    ok(&bin(&["golden", s(&dir), "-o", s(&g)]));
    let tl2_ini = common::tiny().join("bitnet-cpp/kernel_config_tl2.ini");
    let tl1_ini = tmp.path().join("tl1.ini");
    for q in ["i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32"] {
        let out = tmp.path().join(format!("tiny-{q}.gguf"));
        let mut args = vec!["convert", s(&dir), "--quant", q, "-q", "-o", s(&out)];
        let ini = match q {
            "tl1" => Some(tl1_ini.as_path()),
            "tl2" => Some(tl2_ini.as_path()),
            _ => None,
        };
        if q == "tl1" {
            args.extend(["--emit-kernel-config", s(&tl1_ini)]);
        } else if q == "tl2" {
            args.extend(["--kernel-config", s(&tl2_ini)]);
        }
        ok(&bin(&args));
        for gold in [g.clone(), golden("tiny.numpy.json")] {
            let mut v = vec!["validate", s(&out), "--golden", s(&gold), "--json"];
            if let Some(i) = ini {
                v.extend(["--kernel-config", s(i)]);
            }
            let rep: serde_json::Value = serde_json::from_str(&ok(&bin(&v))).unwrap();
            assert_eq!(rep["pass"], true, "{q} vs {}", gold.display());
        }
    }
}

#[test]
fn reference_goldens_from_bitnet_cpp_and_llama_cpp() {
    let (tmp, dir) = tiny_dir();
    // Our i2_s from the fp16 checkpoint against bitnet.cpp's own logits: cosine ≥ 0.998 and
    // the same 16 greedy tokens.
    let out = tmp.path().join("i2s.gguf");
    ok(&bin(&["convert", s(&dir), "-q", "-o", s(&out)]));
    let rep: serde_json::Value = serde_json::from_str(&ok(&bin(&[
        "validate",
        s(&out),
        "--golden",
        s(&golden("tiny.bitnet-cpp.i2_s.json")),
        "--json",
    ])))
    .unwrap();
    assert_eq!(rep["pass"], true);
    assert_eq!(rep["prompts"][0]["greedy_matched"], 16);
    assert!(rep["prompts"][0]["min_cosine"].as_f64().unwrap() >= 0.998);
    // bitnet.cpp's and llama.cpp's own files against the goldens converted from their logits.
    for (file, g) in [
        (
            "bitnet-cpp/from-fp16/ggml-model-i2_s.gguf",
            "tiny.bitnet-cpp.i2_s.json",
        ),
        ("llama-cpp/tiny-tq2_0.gguf", "tiny.llama-cpp.tq2_0.json"),
    ] {
        let f = common::tiny().join(file);
        ok(&bin(&["validate", s(&f), "--golden", s(&golden(g))]));
    }
}

#[test]
fn a_flipped_weight_code_fails_and_names_the_tensor() {
    let (tmp, dir) = tiny_dir();
    let out = tmp.path().join("m.gguf");
    ok(&bin(&[
        "convert",
        s(&dir),
        "--validate",
        "-q",
        "-o",
        s(&out),
    ]));
    let g = tmp.path().join("m.gguf.golden.json");
    assert!(g.is_file(), "convert --validate writes OUT.golden.json");
    // Flip one 2-bit code of blk.1.ffn_up.weight: code 0 (-1) <-> 2 (+1), or 1 (0) -> 2.
    let (at, name) = {
        let m = MappedGguf::open(&out).unwrap();
        let t = m.header.tensor("blk.1.ffn_up.weight").unwrap().clone();
        ((m.header.data_start + t.offset + 1000) as usize, t.name)
    };
    let mut bytes = std::fs::read(&out).unwrap();
    let c = (bytes[at] >> 6) & 3;
    let flipped = if c == 2 { 0 } else { 2 };
    bytes[at] = (bytes[at] & 0x3f) | (flipped << 6);
    let bad = tmp.path().join("flipped.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let text = failed(&bin(&["validate", s(&bad), "--golden", s(&g)]));
    assert!(
        text.contains("FAIL") && text.contains(&name) && text.contains("codes differ"),
        "{text}"
    );
}

#[test]
fn a_truncated_file_fails_with_a_clear_report() {
    let (tmp, dir) = tiny_dir();
    let out = tmp.path().join("m.gguf");
    ok(&bin(&[
        "convert",
        s(&dir),
        "--validate",
        "-q",
        "-o",
        s(&out),
    ]));
    let bytes = std::fs::read(&out).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let text = failed(&bin(&[
        "validate",
        s(&cut),
        "--golden",
        &format!("{}.golden.json", out.display()),
    ]));
    assert!(
        text.contains("load") && text.contains("cut.gguf") && text.contains("past the end"),
        "{text}"
    );
}

#[test]
fn another_models_golden_fails() {
    let (tmp, dir) = tiny_dir();
    let out = tmp.path().join("m.gguf");
    ok(&bin(&["convert", s(&dir), "-q", "-o", s(&out)]));
    // A random model with the tiny model's shapes and vocabulary size.
    let other = tmp.path().join("other.gguf");
    ok(&bin(&[
        "dummy",
        "--size",
        "custom",
        "--hidden",
        "256",
        "--intermediate",
        "768",
        "--layers",
        "2",
        "--heads",
        "4",
        "--vocab",
        "1002",
        "-q",
        "-o",
        s(&other),
    ]));
    let g = tmp.path().join("other.golden.json");
    ok(&bin(&["golden", s(&other), "-o", s(&g), "-n", "4"]));
    let text = failed(&bin(&["validate", s(&out), "--golden", s(&g)]));
    assert!(text.contains("FAIL"), "{text}");
    assert!(
        text.contains("sha256") && text.contains("codes differ"),
        "{text}"
    );
    // And the golden of a GGUF passes for that very file (sha256 recorded and checked).
    ok(&bin(&["validate", s(&other), "--golden", s(&g)]));
}

#[test]
fn validate_json_and_exit_codes() {
    let (tmp, dir) = tiny_dir();
    let out = tmp.path().join("m.gguf");
    ok(&bin(&["convert", s(&dir), "-q", "-o", s(&out)]));
    // No golden beside the file: could not run (2), with advice.
    let o = bin(&["validate", s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bitconv golden"));
    // A malformed golden: 2, naming the file.
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{\"format\": 1}").unwrap();
    let o = bin(&["validate", s(&out), "--golden", s(&bad)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.json"));
}

#[test]
fn run_prints_the_text_of_the_reference_greedy_ids() {
    let (tmp, dir) = tiny_dir();
    let out = tmp.path().join("m.gguf");
    ok(&bin(&["convert", s(&dir), "-q", "-o", s(&out)]));
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::tiny().join("bitnet-cpp/from-fp16/i2_s.seq.logits.json"))
            .unwrap(),
    )
    .unwrap();
    let o = bin(&[
        "run",
        s(&out),
        "-p",
        meta["prompt"].as_str().unwrap(),
        "-n",
        "16",
    ]);
    let text = ok(&o);
    assert_eq!(
        text.trim_end_matches('\n'),
        meta["gen_text"].as_str().unwrap()
    );
}

#[test]
fn seeded_sampling_is_reproducible() {
    let f = common::tiny().join("bitnet-cpp/from-fp16/ggml-model-i2_s.gguf");
    let run = |seed: &str| {
        ok(&bin(&[
            "run",
            s(&f),
            "-p",
            "Once upon a time",
            "-n",
            "12",
            "--temp",
            "3",
            "--top-k",
            "0",
            "--top-p",
            "1",
            "--seed",
            seed,
        ]))
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}
