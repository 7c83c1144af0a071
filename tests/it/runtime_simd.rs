//! End to end: the forward pass with every SIMD kernel table this CPU runs against the scalar
//! reference table, on the tiny reference files of bitnet.cpp and mainline llama.cpp: batched
//! prompts, one-token steps and greedy continuations must give the same logits, bit for bit
//! (the kernels reproduce the scalar summation orders, so the documented bound is zero).

use std::path::{Path, PathBuf};

use bitconv::quant::layouts::params::parse_kernel_config_ini;
use bitconv::runtime::kernels::{self as simd, Kernels};
use bitconv::runtime::{
    argmax, compare_rows, KvPrecision, LoadOptions, LogitsWanted, Model, Session, SessionOptions,
};

fn tiny(rel: &str) -> PathBuf {
    Path::new("tests/data/tiny").join(rel)
}

fn load(rel: &str, ini: Option<&str>) -> Model {
    let tl_params = ini
        .map(|i| parse_kernel_config_ini(&std::fs::read_to_string(tiny(i)).unwrap()).unwrap())
        .unwrap_or_default();
    Model::load(
        &tiny(rel),
        &LoadOptions {
            tl_params,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Everything a session produces for a prompt: the batched prompt's logits, then `gen` greedy
/// steps' logits, then the same prompt one token per step.
fn trace(model: &Model, kernels: &'static Kernels, kv: KvPrecision) -> (Vec<Vec<f32>>, Vec<u32>) {
    let prompt: Vec<u32> = vec![1, 275, 376, 265, 919, 816, 797, 902, 584, 874, 33, 417];
    let mut opts = SessionOptions::for_model(model, 64);
    opts.kv = kv;
    let mut s = Session::with_options(model, opts);
    s.set_kernels(kernels);
    let mut rows = s.forward(&prompt, LogitsWanted::All).unwrap();
    let mut ids = vec![];
    for _ in 0..12 {
        let id = argmax(rows.last().unwrap()) as u32;
        ids.push(id);
        rows.extend(s.forward(&[id], LogitsWanted::Last).unwrap());
    }
    s.reset();
    for &t in &prompt {
        rows.extend(s.forward(&[t], LogitsWanted::Last).unwrap());
    }
    (rows, ids)
}

fn check(rel: &str, ini: Option<&str>) {
    check_model(rel, &load(rel, ini));
}

fn check_model(rel: &str, model: &Model) {
    for kv in [KvPrecision::F16, KvPrecision::F32] {
        let (want, want_ids) = trace(model, Kernels::reference(), kv);
        for k in simd::available().into_iter().filter(|k| !k.is_reference()) {
            let (got, ids) = trace(model, k, kv);
            let a = compare_rows(got.iter().map(|r| &r[..]), want.iter().map(|r| &r[..]));
            eprintln!("{rel} {kv:?}: {} vs reference: {a}", k.name());
            assert_eq!(ids, want_ids, "{rel}: {} greedy continuation", k.name());
            assert_eq!(a.max_abs_diff, 0.0, "{rel}: {}", k.name());
            for (g, w) in got.iter().zip(&want) {
                let gb: Vec<u32> = g.iter().map(|v| v.to_bits()).collect();
                let wb: Vec<u32> = w.iter().map(|v| v.to_bits()).collect();
                assert!(gb == wb, "{rel}: {} logits differ in bits", k.name());
            }
        }
    }
}

#[test]
fn i2s_files() {
    check("bitnet-cpp/from-fp16/ggml-model-i2_s.gguf", None);
    check("bitnet-cpp/from-fp32/ggml-model-i2_s.gguf", None);
}

#[test]
fn tl1_tl2_files() {
    check(
        "bitnet-cpp/from-fp32/ggml-model-tl1.gguf",
        Some("bitnet-cpp/kernel_config_tl1.ini"),
    );
    check(
        "bitnet-cpp/from-fp32/ggml-model-tl2.gguf",
        Some("bitnet-cpp/kernel_config_tl2.ini"),
    );
}

/// A random model whose FFN width (320) is not a multiple of 128, written by `dummy` as I2_S and
/// as F32 (the same ternary weights): in the I2_S file the rows of `ffn_down` start inside
/// 128-value blocks. The runtime holds them row-aligned and zero-padded; every kernel table must
/// agree with the scalar one bit for bit, and the logits must agree with the F32 file's, which is
/// run with f32 arithmetic on unpadded rows (only the int8 activations differ).
#[test]
fn i2s_rows_inside_blocks() {
    use bitconv::checkpoint::Arch;
    use bitconv::convert::OutType;
    use bitconv::dummy::{self, DummySpec};
    let dir = tempfile::tempdir().unwrap();
    let make = |out_type: OutType| {
        let spec = DummySpec {
            arch: Arch::Bitnet,
            hidden: 256,
            intermediate: 320,
            layers: 2,
            heads: 4,
            kv_heads: 4,
            vocab: 1002,
            out_type,
            seed: 7,
            name: "k320".into(),
            kernel_config: None,
            target: None,
        };
        let path = dir.path().join(format!("k320-{out_type}.gguf"));
        dummy::write(&spec, &dummy::plan(&spec).unwrap(), &path, &()).unwrap();
        path
    };
    let i2s = Model::load(&make(OutType::I2S), &LoadOptions::default()).unwrap();
    let down = i2s
        .matrices()
        .find(|m| m.name() == "blk.0.ffn_down.weight")
        .unwrap();
    assert_eq!((down.rows(), down.cols()), (256, 320));
    check_model("k320 i2_s", &i2s);
    let f32m = Model::load(&make(OutType::F32), &LoadOptions::default()).unwrap();
    let (a, _) = trace(&i2s, Kernels::reference(), KvPrecision::F32);
    let (b, _) = trace(&f32m, Kernels::reference(), KvPrecision::F32);
    let n = 12; // the batched prompt's rows
    let agree = compare_rows(a[..n].iter().map(|r| &r[..]), b[..n].iter().map(|r| &r[..]));
    eprintln!("k320 i2_s vs f32: {agree}");
    assert!(agree.min_cosine > 0.99, "i2_s vs f32: {agree}");
}

#[test]
fn float_files() {
    check("bitnet-cpp/from-fp16/ggml-model-f32.gguf", None);
    check("llama-cpp/tiny-f32.gguf", None);
}

#[test]
fn tq_files() {
    check("llama-cpp/tiny-tq2_0.gguf", None);
    check("llama-cpp/tiny-tq1_0.gguf", None);
}

/// The command line: `bitconv run --kernel reference` and `--kernel auto` print the same greedy
/// text, and an unknown kernel name is a usage error (exit 2) naming the flag.
#[test]
fn run_command_kernel_flag() {
    let bin = env!("CARGO_BIN_EXE_bitconv");
    let file = tiny("bitnet-cpp/from-fp16/ggml-model-i2_s.gguf");
    let text = |k: &str| {
        let o = std::process::Command::new(bin)
            .args([
                "run",
                file.to_str().unwrap(),
                "-p",
                "Once upon a time",
                "-n",
                "12",
            ])
            .args(["--temp", "0", "--kernel", k, "-t", "2"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{k}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let reference = text("reference");
    assert!(
        reference.trim().len() > "Once upon a time".len(),
        "{reference:?}"
    );
    assert_eq!(text("auto"), reference);
    let o = std::process::Command::new(bin)
        .args(["run", file.to_str().unwrap(), "-p", "x", "--kernel", "sse9"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--kernel"));
}
