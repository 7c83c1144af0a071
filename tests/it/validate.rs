//! `bitconv golden`, `bitconv validate`, `convert --validate` and `bitconv run`.

use crate::common::{self, ok, s};

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::mutate::{self, Mistake};
use bitconv::gguf::{MappedGguf, Value};
use bitconv::runtime::tokenize::GgufTokenizer;
use bitconv::runtime::{Arch, LoadOptions, Model, RuntimeError};

fn bin(args: &[&str]) -> Output {
    common::bitconv().args(args).output().unwrap()
}

/// The tiny fp16 checkpoint in `<tmp>/tiny`.
fn tiny_dir() -> (tempfile::TempDir, PathBuf) {
    common::tiny_copy("ckpt-fp16")
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
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

/// The tiny checkpoint converted with `--validate` to `<tmp>/m.gguf` (its golden beside it).
fn converted_tiny() -> (tempfile::TempDir, PathBuf) {
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
    (tmp, out)
}

#[test]
fn a_flipped_weight_code_fails_and_names_the_tensor() {
    let (tmp, out) = converted_tiny();
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
    let (tmp, out) = converted_tiny();
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

// ---------------------------------------------------------------------------------------------
// tests/common/mutate.rs: every mistake changes exactly what it says and nothing else. (Whether
// `validate` catches each one is tested on top of the helper.)

/// `name` (`tiny` or a family fixture) converted to `q` in `tmp`.
fn converted(tmp: &Path, name: &str, q: &str) -> PathBuf {
    converted_as(tmp, name, q, &[])
}

/// [`converted`] with extra `convert` flags.
fn converted_as(tmp: &Path, name: &str, q: &str, extra: &[&str]) -> PathBuf {
    std::fs::create_dir_all(tmp).unwrap();
    let out = tmp.join(format!("{name}-{q}.gguf"));
    let dir = match name {
        "tiny" => common::tiny().join("ckpt-fp16"),
        f => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/families")
            .join(f),
    };
    let mut args = vec!["convert", s(&dir), "--quant", q, "-q", "-o", s(&out)];
    args.extend(extra);
    ok(&bin(&args));
    out
}

/// `m` injected into `src`: the mutant's path and the helper's description.
fn mutant(src: &Path, m: Mistake) -> (PathBuf, String) {
    let dst = src.with_extension(format!("{m:?}.gguf"));
    let what =
        mutate::inject(src, &dst, m).unwrap_or_else(|e| panic!("{m:?} on {}: {e}", src.display()));
    (dst, what)
}

fn load(p: &Path) -> Result<Model, RuntimeError> {
    let opts = LoadOptions {
        ternary_as_i2s: true,
        ..Default::default()
    };
    Model::load(p, &opts)
}

fn loads(p: &Path, what: &str) -> Model {
    load(p).unwrap_or_else(|e| panic!("{what}: the mutant does not load: {e}"))
}

fn kv(p: &Path, key: &str) -> Option<Value> {
    MappedGguf::open(p).unwrap().header.get(key).cloned()
}

/// The keys (added, removed or changed) and the tensors (other bytes, shape or type, or
/// removed) in which `b` differs from `a`.
fn changes(a: &Path, b: &Path) -> (Vec<String>, Vec<String>) {
    let (a, b) = (MappedGguf::open(a).unwrap(), MappedGguf::open(b).unwrap());
    let (a, ah, bh) = (&a, &a.header, &b.header);
    let mut keys: Vec<String> = (ah.kv.iter().filter(|(k, v)| bh.get(k) != Some(v)))
        .chain(bh.kv.iter().filter(|(k, _)| ah.get(k).is_none()))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    assert!(bh.tensors.iter().all(|t| ah.tensor(&t.name).is_some()));
    let tensors = (ah.tensors.iter())
        .filter(|t| match bh.tensor(&t.name) {
            None => true,
            Some(u) => (&u.dims, u.ty) != (&t.dims, t.ty) || b.tensor_bytes(u) != a.tensor_bytes(t),
        })
        .map(|t| t.name.clone())
        .collect();
    (keys, tensors)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Decoded codes and scale of tensor `name`.
fn codes(p: &Path, name: &str) -> (Vec<i8>, f32) {
    let g = MappedGguf::open(p).unwrap();
    mutate::ternary_codes(&g, g.header.tensor(name).unwrap()).unwrap()
}

#[test]
fn mutate_all_lists_every_mistake_once() {
    let set: std::collections::HashSet<_> = mutate::ALL.iter().collect();
    assert_eq!((set.len(), mutate::ALL.len()), (14, 14));
}

#[test]
fn mutate_metadata_mistakes_change_one_key() {
    let tmp = tempfile::tempdir().unwrap();
    let llama = converted(tmp.path(), "llama3-8b", "i2_s");
    let tiny = converted(tmp.path(), "tiny", "i2_s");
    let (rope, eps) = ("rope.freq_base", "attention.layer_norm_rms_epsilon");
    let (bos, eos) = (
        "tokenizer.ggml.add_bos_token",
        "tokenizer.ggml.eos_token_id",
    );
    for (src, m, key, want) in [
        (
            &llama,
            Mistake::RopeTheta,
            format!("llama.{rope}"),
            Value::F32(1e6),
        ),
        (
            &tiny,
            Mistake::RopeTheta,
            format!("bitnet.{rope}"),
            Value::F32(2e4),
        ),
        (
            &llama,
            Mistake::RmsEps,
            format!("llama.{eps}"),
            Value::F32(1e-6),
        ),
        (
            &tiny,
            Mistake::RmsEps,
            format!("bitnet.{eps}"),
            Value::F32(1e-6),
        ),
        // Absent in the llama file (added), true in tiny's.
        (&llama, Mistake::BosOff, bos.into(), Value::Bool(false)),
        (&tiny, Mistake::BosOff, bos.into(), Value::Bool(false)),
        // 486 + 1 wraps to 0 in the 487-token vocabulary.
        (
            &llama,
            Mistake::SpecialTokenMoved,
            eos.into(),
            Value::U32(0),
        ),
        (&tiny, Mistake::SpecialTokenMoved, eos.into(), Value::U32(3)),
    ] {
        let (mt, what) = mutant(src, m);
        assert_eq!(changes(src, &mt), (vec![key.clone()], vec![]), "{what}");
        assert_eq!(kv(&mt, &key), Some(want), "{what}");
        loads(&mt, &what);
    }
}

#[test]
fn mutate_head_count_kv_leaves_k_and_v_the_wrong_shape_so_the_file_does_not_load() {
    let tmp = tempfile::tempdir().unwrap();
    // GQA 8/2 -> 8; MHA 4/4 -> 2.
    for (name, key, want) in [
        ("llama3-8b", "llama.attention.head_count_kv", 8),
        ("tiny", "bitnet.attention.head_count_kv", 2),
    ] {
        let src = converted(tmp.path(), name, "i2_s");
        let (mt, what) = mutant(&src, Mistake::HeadCountKv);
        assert_eq!(changes(&src, &mt), (strings(&[key]), vec![]), "{what}");
        assert_eq!(kv(&mt, key), Some(Value::U32(want)));
        let err = load(&mt).unwrap_err().to_string();
        assert!(err.contains("blk.0.attn_k.weight"), "{err}");
    }
}

#[test]
fn mutate_tokenizer_mistakes_swap_two_entries() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llama3-8b", "tiny"] {
        let src = converted(tmp.path(), name, "i2_s");
        let (mt, what) = mutant(&src, Mistake::VocabSwapped);
        let (keys, tensors) = changes(&src, &mt);
        assert!(keys.contains(&"tokenizer.ggml.tokens".to_string()) && tensors.is_empty());
        for key in ["tokens", "scores", "token_type"] {
            let key = format!("tokenizer.ggml.{key}");
            let (Some(Value::Array(_, a)), Some(Value::Array(_, mut b))) =
                (kv(&src, &key), kv(&mt, &key))
            else {
                assert!(!keys.contains(&key));
                continue;
            };
            b.swap(300, 301);
            assert_eq!(a, b, "{what}: {key}");
        }
        let m = loads(&mt, &what);
        GgufTokenizer::from_gguf(&m.gguf().header).unwrap();
    }
    let llama = tmp.path().join("llama3-8b-i2_s.gguf");
    let (mt, what) = mutant(&llama, Mistake::MergesReordered);
    let key = "tokenizer.ggml.merges";
    assert_eq!(changes(&llama, &mt), (strings(&[key]), vec![]), "{what}");
    let (Some(Value::Array(_, a)), Some(Value::Array(_, mut b))) = (kv(&llama, key), kv(&mt, key))
    else {
        panic!("no merges")
    };
    b.swap(0, 1);
    assert_eq!(a, b);
    let m = loads(&mt, &what);
    GgufTokenizer::from_gguf(&m.gguf().header).unwrap();
}

#[test]
fn mutate_activation_swapped_renames_the_architecture_or_flips_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    // Files without `{arch}.hidden_activation` (the 2024 reference's bytes): the architecture
    // is renamed.
    for (name, from, to, arch) in [
        ("bitnet-2b4t-bf16", "bitnet-b1.58", "bitnet", Arch::Bitnet),
        ("tiny", "bitnet", "bitnet-b1.58", Arch::BitnetB158),
    ] {
        let src = converted_as(tmp.path(), name, "i2_s", &["--target", "bitnet-cpp-2024"]);
        let (mt, what) = mutant(&src, Mistake::ActivationSwapped);
        let (a, b) = (
            MappedGguf::open(&src).unwrap(),
            MappedGguf::open(&mt).unwrap(),
        );
        let renamed = |k: &str| match k.strip_prefix(&format!("{from}.")) {
            Some(rest) => format!("{to}.{rest}"),
            None => k.to_string(),
        };
        let want: Vec<_> = (a.header.kv.iter())
            .map(|(k, v)| match k.as_str() {
                "general.architecture" => (k.clone(), Value::String(to.into())),
                _ => (renamed(k), v.clone()),
            })
            .collect();
        assert_eq!(b.header.kv, want, "{what}");
        assert_eq!(changes(&src, &mt).1, Vec::<String>::new());
        assert_eq!(loads(&mt, &what).hparams().arch, arch);
    }
    // A file with `{arch}.hidden_activation`: only that key flips.
    let src = tmp.path().join("tiny-i2_s.gguf");
    let with_key = tmp.path().join("act.gguf");
    mutate::with_key(
        &src,
        &with_key,
        "bitnet.hidden_activation",
        Value::String("silu".into()),
    )
    .unwrap();
    let (mt, what) = mutant(&with_key, Mistake::ActivationSwapped);
    let key = "bitnet.hidden_activation";
    assert_eq!(changes(&with_key, &mt), (strings(&[key]), vec![]), "{what}");
    assert_eq!(kv(&mt, key), Some(Value::String("relu2".into())));
}

#[test]
fn mutate_tensor_mistakes_change_one_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let llama = converted(tmp.path(), "llama3-8b", "i2_s");
    let b158 = converted(tmp.path(), "bitnet-2b4t-bf16", "i2_s");

    let (mt, what) = mutant(&llama, Mistake::TiedHeadOnUntied);
    assert_eq!(changes(&llama, &mt), (vec![], strings(&["output.weight"])));
    assert!(MappedGguf::open(&mt)
        .unwrap()
        .header
        .tensor("output.weight")
        .is_none());
    assert!(loads(&mt, &what).is_tied());

    let (mt, what) = mutant(&b158, Mistake::SubNormDropped);
    let name = "blk.0.attn_sub_norm.weight";
    assert_eq!(changes(&b158, &mt), (vec![], strings(&[name])));
    let g = MappedGguf::open(&mt).unwrap();
    let ones = 1f32.to_le_bytes().repeat(512);
    assert_eq!(g.tensor_bytes(g.header.tensor(name).unwrap()), ones);
    loads(&mt, &what);

    // Embeddings of F16 (i2_s), F32 (tl1) and Q8_0, and the untouched head (tq2_0).
    let q8 = tmp.path().join("llama-q8-embd.gguf");
    let fix = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/families/llama3-8b");
    ok(&bin(&[
        "convert",
        s(&fix),
        "--token-embedding-type",
        "q8_0",
        "-q",
        "-o",
        s(&q8),
    ]));
    for src in [
        llama.clone(),
        converted(tmp.path(), "llama3-8b", "tl1"),
        converted(tmp.path(), "llama3-8b", "tq2_0"),
        q8,
    ] {
        let q = src.file_name().unwrap().to_string_lossy().into_owned();
        let (mt, what) = mutant(&src, Mistake::EmbeddingRowsSwapped);
        let name = "token_embd.weight";
        assert_eq!(changes(&src, &mt), (vec![], strings(&[name])), "{what}");
        let (a, b) = (loads(&src, &what), loads(&mt, &what));
        let (ea, eb) = (a.matrix_data(a.tok_embd()), b.matrix_data(b.tok_embd()));
        let rb = ea.len() / 487;
        let row = |e: &[u8], r: usize| e[r * rb..(r + 1) * rb].to_vec();
        assert_eq!(
            (row(eb, 10), row(eb, 11)),
            (row(ea, 11), row(ea, 10)),
            "{q}"
        );
        assert_ne!(row(ea, 10), row(ea, 11));
        assert_eq!(
            (&eb[..10 * rb], &eb[12 * rb..]),
            (&ea[..10 * rb], &ea[12 * rb..])
        );
    }
}

/// Every ternary type: decoding and re-packing gives the file's bytes, and flipping a code
/// changes exactly that code.
#[test]
fn mutate_code_flipped_changes_one_code_in_every_ternary_type() {
    let tmp = tempfile::tempdir().unwrap();
    let up = "blk.0.ffn_up.weight";
    let mut files: Vec<PathBuf> = ["i2_s", "tl1", "tl2", "tq1_0", "tq2_0", "f16", "f32"]
        .iter()
        .map(|q| converted(tmp.path(), "llama3-8b", q))
        .collect();
    // bitnet.cpp's and llama.cpp's own files, copied (the mutant goes beside its source).
    for f in [
        "bitnet-cpp/from-fp16/ggml-model-i2_s.gguf",
        "bitnet-cpp/from-fp16/ggml-model-f32.gguf",
        "llama-cpp/tiny-tq1_0.gguf",
        "llama-cpp/tiny-tq2_0.gguf",
        "llama-cpp/tiny-f32.gguf",
    ] {
        let dst = tmp.path().join(f.replace('/', "-"));
        std::fs::copy(common::tiny().join(f), &dst).unwrap();
        files.push(dst);
    }
    for src in files {
        let q = src.file_name().unwrap().to_string_lossy().into_owned();
        let g = MappedGguf::open(&src).unwrap();
        for t in g
            .header
            .tensors
            .iter()
            .filter(|t| mutate::is_projection(&t.name))
        {
            let (c, s) = mutate::ternary_codes(&g, t).unwrap();
            let again = mutate::pack_ternary(&g, t, &c, s).unwrap();
            assert!(
                again == g.tensor_bytes(t),
                "{q}: {} does not round-trip",
                t.name
            );
        }
        let (mt, what) = mutant(&src, Mistake::CodeFlipped);
        assert_eq!(changes(&src, &mt), (vec![], strings(&[up])), "{what}");
        let ((a, sa), (b, sb)) = (codes(&src, up), codes(&mt, up));
        let k = g.header.tensor(up).unwrap().dims[0] as usize;
        let diff: Vec<_> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        assert_eq!((diff, sa), (vec![3 * k + 5], sb), "{q}: {what}");
        assert_eq!(b[3 * k + 5], if a[3 * k + 5] == 1 { -1 } else { 1 });
        // The files differ only inside that tensor's bytes.
        let (fa, fb) = (std::fs::read(&src).unwrap(), std::fs::read(&mt).unwrap());
        let t = g.header.tensor(up).unwrap();
        let span = g.header.data_start + t.offset..g.header.data_start + t.offset + t.nbytes;
        assert_eq!(fa.len(), fb.len(), "{q}");
        assert!((0..fa.len()).all(|i| fa[i] == fb[i] || span.contains(&(i as u64))));
        loads(&mt, &what);
    }
}

#[test]
fn mutate_scale_inverted_keeps_the_codes() {
    let tmp = tempfile::tempdir().unwrap();
    for q in ["i2_s", "tl2", "tq2_0", "f16", "f32"] {
        let src = converted(tmp.path(), "llama3-8b", q);
        let (mt, what) = mutant(&src, Mistake::ScaleInverted);
        let projections: Vec<String> = (MappedGguf::open(&src).unwrap().header.tensors.iter())
            .map(|t| t.name.clone())
            .filter(|n| mutate::is_projection(n))
            .collect();
        assert_eq!(projections.len(), 14);
        assert_eq!(changes(&src, &mt), (vec![], projections.clone()), "{what}");
        for name in &projections {
            let ((a, sa), (b, sb)) = (codes(&src, name), codes(&mt, name));
            assert!(a == b, "{q}: codes of {name} changed");
            // TQ2_0 and F16 hold the scale as f16.
            assert!(
                (sb * sa - 1.0).abs() < 1e-3,
                "{q}: {name} scale {sa} -> {sb}"
            );
        }
        loads(&mt, &what);
    }
}

#[test]
fn mutate_rope_permutation_missing_undoes_the_llama_permutation() {
    let tmp = tempfile::tempdir().unwrap();
    for q in ["i2_s", "tq2_0", "f32"] {
        let src = converted(tmp.path(), "llama3-8b", q);
        let (mt, what) = mutant(&src, Mistake::RopePermutationMissing);
        let names = ["attn_q", "attn_k"]
            .iter()
            .flat_map(|p| (0..2).map(move |i| format!("blk.{i}.{p}.weight")));
        let mut names: Vec<String> = names.collect();
        let (keys, mut tensors) = changes(&src, &mt);
        names.sort();
        tensors.sort();
        assert_eq!((keys, tensors), (vec![], names.clone()), "{what}");
        for name in &names {
            // The converter's permutation (GGUF row h·d + 2j + t <- HF row h·d + t·d/2 + j)
            // applied to the mutant gives the file back.
            let heads = if name.contains("attn_q") { 8 } else { 2 };
            let ((a, sa), (b, sb)) = (codes(&src, name), codes(&mt, name));
            let (k, m) = (512, a.len() / 512);
            let d = m / heads;
            let from = |r: usize| r / d * d + r % d % 2 * (d / 2) + r % d / 2;
            let permuted: Vec<i8> = (0..m)
                .flat_map(|r| &b[from(r) * k..][..k])
                .copied()
                .collect();
            assert!(permuted == a && sa == sb, "{q}: {name}");
        }
        loads(&mt, &what);
    }
}

#[test]
fn mutate_not_applicable_is_an_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let b158 = converted(tmp.path(), "bitnet-2b4t-bf16", "i2_s");
    let tiny = converted(tmp.path(), "tiny", "i2_s");
    let llama = converted(tmp.path(), "llama3-8b", "i2_s");
    // Without the activation key, `llama` has no other architecture to be renamed to.
    let llama_2024 = converted_as(
        &tmp.path().join("ref"),
        "llama3-8b",
        "i2_s",
        &["--target", "bitnet-cpp-2024"],
    );
    for (src, m) in [
        (&tiny, Mistake::RopePermutationMissing),
        (&b158, Mistake::RopePermutationMissing),
        (&llama_2024, Mistake::ActivationSwapped),
        (&tiny, Mistake::MergesReordered),
        (&tiny, Mistake::TiedHeadOnUntied),
        (&b158, Mistake::TiedHeadOnUntied),
        (&llama, Mistake::SubNormDropped),
    ] {
        let dst = tmp.path().join("never.gguf");
        let e = mutate::inject(src, &dst, m);
        assert!(
            e.is_err() && !dst.exists(),
            "{m:?} on {}: {e:?}",
            src.display()
        );
    }
    // A tensor that is not ternary is not decoded as if it were.
    let g = MappedGguf::open(&llama).unwrap();
    let e = mutate::ternary_codes(&g, g.header.tensor("token_embd.weight").unwrap());
    assert!(e.unwrap_err().contains("neither 0 nor"));
}

/// The check that must catch each mistake (validation may fail other checks too).
fn catcher(m: Mistake) -> &'static str {
    match m {
        Mistake::RopeTheta | Mistake::RmsEps | Mistake::ActivationSwapped => "config",
        Mistake::TiedHeadOnUntied => "config",
        Mistake::HeadCountKv => "load",
        Mistake::RopePermutationMissing | Mistake::SubNormDropped => "blocks",
        Mistake::ScaleInverted | Mistake::CodeFlipped => "weights",
        Mistake::BosOff => "tokens",
        Mistake::SpecialTokenMoved | Mistake::VocabSwapped | Mistake::MergesReordered => {
            "tokenizer"
        }
        Mistake::EmbeddingRowsSwapped => "embedding rows",
    }
}

/// Every injected conversion mistake fails validation against the checkpoint's independent
/// golden (exit 1), and the check that catches it is named; the correct file passes. Each
/// mistake applies to at least one of the fixtures (tiny: bitnet arch, SentencePiece; 2B-4T:
/// bitnet-b1.58, GQA, ReLU²; Llama3-8B: llama arch, permuted q/k, untied head, BPE merges).
#[test]
fn injected_mistakes_fail_validation_and_name_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let mut caught = std::collections::HashSet::new();
    for name in ["tiny", "bitnet-2b4t-bf16", "llama3-8b"] {
        let file = converted(tmp.path(), name, "i2_s");
        let dir = match name {
            "tiny" => common::tiny().join("ckpt-fp16"),
            f => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/families")
                .join(f),
        };
        let g = tmp.path().join(format!("{name}.golden.json"));
        ok(&bin(&["golden", s(&dir), "-o", s(&g)]));
        ok(&bin(&["validate", s(&file), "--golden", s(&g)]));
        for &m in mutate::ALL {
            let dst = tmp.path().join(format!("{name}-{m:?}.gguf"));
            if mutate::inject(&file, &dst, m).is_err() {
                continue; // not applicable to this fixture
            }
            let o = bin(&["validate", s(&dst), "--golden", s(&g), "--json"]);
            assert_eq!(
                o.status.code(),
                Some(1),
                "{name} {m:?}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let failing: Vec<&str> = rep["checks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["ok"] == false && c.get("informational").is_none())
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            eprintln!("{name} {m:?}: failing {failing:?}");
            assert!(
                failing.iter().any(|c| c.starts_with(catcher(m))),
                "{name} {m:?}: expected {:?} among the failing checks {failing:?}",
                catcher(m)
            );
            caught.insert(m);
            std::fs::remove_file(&dst).unwrap();
        }
    }
    for m in mutate::ALL {
        assert!(caught.contains(m), "{m:?} applied to no fixture");
    }
}

/// Hidden size 384 (not a multiple of 256): the tied embedding is written as Q8_0, as
/// bitnet.cpp does. The golden reads the checkpoint's own embedding; the file's rounding is
/// checked against its own bound, so the correct file passes, at convert time and later with
/// plain `validate OUT`.
#[test]
fn q8_0_tied_embedding_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("h384");
    common::random_checkpoint(&dir, 384, 1024, 2, 6, 1002, 384);
    let out = tmp.path().join("h384.gguf");
    ok(&bin(&[
        "convert",
        s(&dir),
        "--quant",
        "i2_s",
        "-q",
        "-o",
        s(&out),
        "--validate",
    ]));
    let g = MappedGguf::open(&out).unwrap();
    let e = g.header.tensor("token_embd.weight").unwrap();
    assert_eq!(e.ty, bitconv::gguf::GgmlType::Q8_0);
    ok(&bin(&["validate", s(&out)]));
}

/// bitnet_b1_58-3B's widths (hidden 3200, FFN 8640: `ffn_down` rows start inside I2_S blocks,
/// and the tied embedding is Q8_0), two layers: i2_s, tl1 and tl2 convert and validate against
/// the checkpoint, then `golden` from the file, `validate` against it and `run` work without
/// flags or side files.
#[test]
fn bitnet_3b_widths_convert_validate_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w3b");
    common::random_checkpoint(&dir, 3200, 8640, 2, 32, 1002, 3);
    for q in ["i2_s", "tl1", "tl2"] {
        let out = tmp.path().join(format!("w3b-{q}.gguf"));
        ok(&bin(&[
            "convert",
            s(&dir),
            "--quant",
            q,
            "-q",
            "-o",
            s(&out),
            "--validate",
        ]));
        let g = tmp.path().join(format!("w3b-{q}.file-golden.json"));
        ok(&bin(&["golden", s(&out), "-o", s(&g)]));
        ok(&bin(&["validate", s(&out), "--golden", s(&g)]));
        let text = ok(&bin(&["run", s(&out), "-p", "Once upon a time", "-n", "4"]));
        assert!(!text.is_empty(), "{q}: run printed nothing");
    }
}

/// Bad input: a corrupt golden, a checkpoint without tokenizer files, a text that is empty or
/// not UTF-8: each a clear error naming the file, exit 2. (A golden for another model:
/// `another_models_golden_fails`.) And `--text` validates on the user's own text.
#[test]
fn bad_validation_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let file = converted(tmp.path(), "tiny", "i2_s");
    let ck = common::tiny().join("ckpt-fp16");
    let two = |o: &Output, want: &str| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let bad = tmp.path().join("corrupt.json");
    std::fs::write(&bad, "{\"format\": \"bitconv-golden\", \"version\": 1").unwrap();
    two(
        &bin(&["validate", s(&file), "--golden", s(&bad)]),
        "corrupt.json",
    );
    let notok = tmp.path().join("notok");
    std::fs::create_dir(&notok).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(ck.join(f), notok.join(f)).unwrap();
    }
    let g = tmp.path().join("g.json");
    two(&bin(&["golden", s(&notok), "-o", s(&g)]), "tokenizer.json");
    assert!(!g.exists());
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, " \n").unwrap();
    two(
        &bin(&[
            "validate",
            s(&file),
            "--checkpoint",
            s(&ck),
            "--text",
            s(&empty),
        ]),
        "empty.txt: the text is empty",
    );
    let binary = tmp.path().join("binary.txt");
    std::fs::write(&binary, [0xffu8, 0xfe, 0x00]).unwrap();
    two(
        &bin(&[
            "validate",
            s(&file),
            "--checkpoint",
            s(&ck),
            "--text",
            s(&binary),
        ]),
        "binary.txt: not UTF-8",
    );
    let text = tmp.path().join("story.txt");
    std::fs::write(&text, "Once upon a time there was a quick brown fox.").unwrap();
    let rep = ok(&bin(&[
        "validate",
        s(&file),
        "--checkpoint",
        s(&ck),
        "--text",
        s(&text),
    ]));
    assert!(rep.contains("KL divergence (\"Once upon a time"), "{rep}");
    assert!(rep.contains("[ ok ] blocks"), "{rep}");
}

/// A checkpoint with only `tokenizer.model` (no `tokenizer.json`) is tokenized the way
/// transformers builds its Llama tokenizer from the SentencePiece model: the same ids as from
/// `tokenizer.json` and as the numpy golden's (checked against transformers 5.25 by hand).
#[test]
fn golden_from_tokenizer_model_alone_tokenizes_like_tokenizer_json() {
    let tmp = tempfile::tempdir().unwrap();
    let spm = tmp.path().join("spm");
    std::fs::create_dir(&spm).unwrap();
    let ck = common::tiny().join("ckpt-fp16");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(ck.join(f), spm.join(f)).unwrap();
    }
    let read = |p: &Path| -> Vec<Vec<u64>> {
        let g: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        g["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p["token_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect()
            })
            .collect()
    };
    let (a, b) = (tmp.path().join("a.json"), tmp.path().join("b.json"));
    ok(&bin(&["golden", s(&spm), "-o", s(&a)]));
    ok(&bin(&["golden", s(&ck), "-o", s(&b)]));
    let (ids_model, ids_json) = (read(&a), read(&b));
    assert_eq!(ids_model, ids_json);
    assert_eq!(ids_model[0], read(&golden("tiny.numpy.json"))[0]);
    // And a file converted from the checkpoint validates against it.
    let file = converted(tmp.path(), "tiny", "i2_s");
    ok(&bin(&["validate", s(&file), "--golden", s(&a)]));
}

/// Counts from a file or the command line are checked before anything is allocated for them:
/// a `block_count` of 2^31, `run --ctx` 2^31, `bench -p` 10^9 and `--bandwidth-mib` 10^9 are
/// clear errors (exit 2) naming the key or the flag, never an abort.
#[test]
fn huge_counts_are_errors_not_aborts() {
    let tmp = tempfile::tempdir().unwrap();
    let file = converted(tmp.path(), "tiny", "i2_s");
    let bad = tmp.path().join("blocks.gguf");
    mutate::with_key(&file, &bad, "bitnet.block_count", Value::U32(1 << 31)).unwrap();
    for args in [
        vec!["run", s(&bad), "-p", "Hi", "-n", "1"],
        vec!["golden", s(&bad), "-o", "/dev/null/never"],
    ] {
        let o = bin(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("block_count"), "{args:?}: {err}");
    }
    for (args, want) in [
        (
            vec!["run", s(&file), "-p", "Hi", "-n", "1", "-c", "2147483648"],
            "--ctx 2147483648",
        ),
        (
            vec!["bench", s(&file), "-p", "1000000000", "-n", "0", "-r", "1"],
            "-p",
        ),
        (
            vec![
                "bench",
                s(&file),
                "-p",
                "8",
                "-n",
                "2",
                "--bandwidth-mib",
                "1000000000",
            ],
            "--bandwidth-mib",
        ),
    ] {
        let o = bin(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(want) && err.contains("available"),
            "{args:?}: {err}"
        );
    }
}
