//! The reference runtime against the logits that bitnet.cpp and mainline llama.cpp produced
//! for the files in `tests/data/tiny` (token ids come from the `.logits` files, so no tokenizer
//! is involved). Run with `--nocapture` to see the agreement numbers.

use std::path::{Path, PathBuf};

use bitconv::quant::layouts::params::parse_kernel_config_ini;
use bitconv::quant::layouts::KernelEntry;
use bitconv::runtime::{
    argmax, compare_rows, Agreement, Emulation, LoadOptions, LogitsFile, LogitsWanted, Matrix,
    Model, RuntimeError, Session, SessionOptions, WeightMemory,
};

fn tiny() -> PathBuf {
    Path::new("tests/data/tiny").to_path_buf()
}

fn bitnet_cpp(rel: &str) -> PathBuf {
    tiny().join("bitnet-cpp").join(rel)
}

fn llama_cpp(rel: &str) -> PathBuf {
    tiny().join("llama-cpp").join(rel)
}

fn kernel_config(name: &str) -> Vec<KernelEntry> {
    let text = std::fs::read_to_string(bitnet_cpp(name)).unwrap();
    parse_kernel_config_ini(&text).unwrap()
}

fn load(path: &Path, tl_params: Vec<KernelEntry>) -> Model {
    Model::load(
        path,
        &LoadOptions {
            tl_params,
            ..Default::default()
        },
    )
    .unwrap()
}

fn session<'m>(model: &'m Model, emulation: Option<Emulation>) -> Session<'m> {
    let mut opts = SessionOptions::for_model(model, 64);
    if let Some(e) = emulation {
        opts.emulation = e;
    }
    Session::with_options(model, opts)
}

/// Our logits for the reference run's positions.
struct Run {
    prompt: Vec<Vec<f32>>,
    gen: Vec<Vec<f32>>,
}

/// Prompt one token per step (or in one batch), then the reference's gen ids one per step.
fn run(model: &Model, lf: &LogitsFile, batched: bool, emulation: Option<Emulation>) -> Run {
    let mut s = session(model, emulation);
    let prompt = if batched {
        s.forward(&lf.prompt_tokens(), LogitsWanted::All).unwrap()
    } else {
        lf.prompt_tokens()
            .iter()
            .map(|&t| s.forward(&[t], LogitsWanted::Last).unwrap().remove(0))
            .collect()
    };
    let gen = lf
        .gen_tokens()
        .iter()
        .map(|&t| s.forward(&[t], LogitsWanted::Last).unwrap().remove(0))
        .collect();
    Run { prompt, gen }
}

/// Our own greedy continuation: prompt (batched or one token per step), then argmax, fed
/// back, as often as the reference generated.
fn greedy(model: &Model, lf: &LogitsFile, batched: bool, emulation: Option<Emulation>) -> Vec<i32> {
    let mut s = session(model, emulation);
    let mut last = if batched {
        s.forward(&lf.prompt_tokens(), LogitsWanted::Last)
            .unwrap()
            .remove(0)
    } else {
        let mut last = vec![];
        for &t in &lf.prompt_tokens() {
            last = s.forward(&[t], LogitsWanted::Last).unwrap().remove(0);
        }
        last
    };
    let mut ids = vec![];
    for _ in 0..lf.gen_ids.len() {
        let id = argmax(&last) as u32;
        ids.push(id as i32);
        last = s.forward(&[id], LogitsWanted::Last).unwrap().remove(0);
    }
    ids
}

fn agreement<'a>(ours: &[Vec<f32>], theirs: impl Iterator<Item = &'a [f32]>) -> Agreement {
    compare_rows(ours.iter().map(|r| &r[..]), theirs)
}

fn exact_rows(ours: &[Vec<f32>], theirs: &[&[f32]]) -> usize {
    ours.iter()
        .zip(theirs)
        .filter(|(a, b)| {
            a.iter()
                .map(|v| v.to_bits())
                .eq(b.iter().map(|v| v.to_bits()))
        })
        .count()
}

/// Compares a run with the file: every row's cosine ≥ `min_cos` (and max |Δ| ≤ `max_abs` when
/// given), prompt rows and gen rows. Prints the numbers.
fn check(name: &str, run: &Run, lf: &LogitsFile, min_cos: f64, max_abs: Option<f32>) {
    let p = agreement(&run.prompt, lf.prompt_rows());
    let g = agreement(&run.gen, lf.gen_rows());
    let pe = exact_rows(&run.prompt, &lf.prompt_rows().collect::<Vec<_>>());
    let ge = exact_rows(&run.gen, &lf.gen_rows().collect::<Vec<_>>());
    eprintln!("{name}\n  prompt: {p}, bit-identical {pe}\n  gen:    {g}, bit-identical {ge}");
    assert_eq!(p.rows, lf.prompt_ids.len(), "{name}: prompt rows");
    assert_eq!(g.rows, lf.gen_ids.len(), "{name}: gen rows");
    for (what, a) in [("prompt", p), ("gen", g)] {
        assert!(
            a.min_cosine >= min_cos,
            "{name}: {what} row {} has cosine {} < {min_cos}",
            a.worst_row,
            a.min_cosine
        );
        if let Some(m) = max_abs {
            assert!(
                a.max_abs_diff <= m,
                "{name}: {what} max |Δ| {} > {m}",
                a.max_abs_diff
            );
        }
    }
}

fn logits(path: PathBuf) -> LogitsFile {
    LogitsFile::read(&path).unwrap()
}

fn seq_case(model_rel: &str, logits_rel: &str, tl_params: Vec<KernelEntry>) {
    let model = load(&bitnet_cpp(model_rel), tl_params);
    let lf = &logits(bitnet_cpp(logits_rel));
    let r = run(&model, lf, false, None);
    check(
        &format!("{model_rel} one token per step vs {logits_rel}"),
        &r,
        lf,
        0.998,
        None,
    );
    let ids = greedy(&model, lf, false, None);
    assert_eq!(ids, lf.gen_ids, "{model_rel}: greedy continuation");
}

#[test]
fn i2s_from_fp16_one_token_per_step() {
    seq_case(
        "from-fp16/ggml-model-i2_s.gguf",
        "from-fp16/i2_s.seq.logits",
        vec![],
    );
}

#[test]
fn i2s_from_fp32_one_token_per_step() {
    seq_case(
        "from-fp32/ggml-model-i2_s.gguf",
        "from-fp32/i2_s.seq.logits",
        vec![],
    );
}

#[test]
fn tl2_one_token_per_step() {
    seq_case(
        "from-fp32/ggml-model-tl2.gguf",
        "from-fp32/tl2.seq.logits",
        kernel_config("kernel_config_tl2.ini"),
    );
}

#[test]
fn tl1_one_token_per_step_matches_i2s_logits() {
    seq_case(
        "from-fp32/ggml-model-tl1.gguf",
        "from-fp32/i2_s.seq.logits",
        kernel_config("kernel_config_tl1.ini"),
    );
}

#[test]
fn tl1_tl2_i2s_hold_the_same_weights() {
    let i2s = load(&bitnet_cpp("from-fp32/ggml-model-i2_s.gguf"), vec![]);
    let tl1 = load(
        &bitnet_cpp("from-fp32/ggml-model-tl1.gguf"),
        kernel_config("kernel_config_tl1.ini"),
    );
    let tl2 = load(
        &bitnet_cpp("from-fp32/ggml-model-tl2.gguf"),
        kernel_config("kernel_config_tl2.ini"),
    );
    let tokens = [1u32, 275, 376, 265, 919];
    let a = session(&i2s, None)
        .forward(&tokens, LogitsWanted::All)
        .unwrap();
    let b = session(&tl1, None)
        .forward(&tokens, LogitsWanted::All)
        .unwrap();
    let c = session(&tl2, None)
        .forward(&tokens, LogitsWanted::All)
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn f32_one_token_per_step() {
    let model = load(&bitnet_cpp("from-fp16/ggml-model-f32.gguf"), vec![]);
    let lf = &logits(bitnet_cpp("from-fp16/f32.seq.logits"));
    let r = run(&model, lf, false, None);
    check("f32 one token per step", &r, lf, 0.99999, Some(0.05));
    assert_eq!(greedy(&model, lf, false, None), lf.gen_ids);
}

#[test]
fn i2s_batched_prompt() {
    let model = load(&bitnet_cpp("from-fp16/ggml-model-i2_s.gguf"), vec![]);
    let lf = &logits(bitnet_cpp("from-fp16/i2_s.logits"));
    let r = run(&model, lf, true, None);
    check("i2_s (fp16) batched prompt", &r, lf, 0.995, None);
    assert_eq!(greedy(&model, lf, true, None), lf.gen_ids);

    let model = load(&bitnet_cpp("from-fp32/ggml-model-i2_s.gguf"), vec![]);
    let lf = &logits(bitnet_cpp("from-fp32/i2_s.logits"));
    let r = run(&model, lf, true, None);
    check("i2_s (fp32) batched prompt", &r, lf, 0.995, None);
}

#[test]
fn f32_batched_prompt() {
    let model = load(&bitnet_cpp("from-fp16/ggml-model-f32.gguf"), vec![]);
    let lf = &logits(bitnet_cpp("from-fp16/f32.logits"));
    let r = run(&model, lf, true, None);
    check("f32 batched prompt", &r, lf, 0.99999, Some(0.05));
}

#[test]
fn mainline_tq2_0() {
    let model = load(&llama_cpp("tiny-tq2_0.gguf"), vec![]);
    assert_eq!(Emulation::for_model(&model), Emulation::LlamaCpp);
    // The reference processed the prompt in one batch (see the .json).
    let lf = &logits(llama_cpp("ml_mainline_tiny-tq2_0.logits"));
    let r = run(&model, lf, true, None);
    check("tq2_0 (mainline) batched prompt", &r, lf, 0.998, None);
    assert_eq!(greedy(&model, lf, true, None), lf.gen_ids);
    let r = run(&model, lf, false, None);
    check("tq2_0 (mainline) one token per step", &r, lf, 0.998, None);
}

#[test]
fn mainline_tq1_0_equals_tq2_0() {
    // Both files hold the same codes and block scales, so the logits are identical.
    let tq1 = load(&llama_cpp("tiny-tq1_0.gguf"), vec![]);
    let tq2 = load(&llama_cpp("tiny-tq2_0.gguf"), vec![]);
    let tokens = [1u32, 275, 376, 265, 919, 816];
    let a = session(&tq1, None)
        .forward(&tokens, LogitsWanted::All)
        .unwrap();
    let b = session(&tq2, None)
        .forward(&tokens, LogitsWanted::All)
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn mainline_f32() {
    let model = load(&llama_cpp("tiny-f32.gguf"), vec![]);
    let lf = &logits(llama_cpp("ml_mainline_tiny-f32.logits"));
    let r = run(&model, lf, true, Some(Emulation::LlamaCpp));
    check(
        "f32 (mainline emulation) batched prompt",
        &r,
        lf,
        0.99999,
        Some(0.05),
    );
    assert_eq!(
        greedy(&model, lf, true, Some(Emulation::LlamaCpp)),
        lf.gen_ids
    );
    // bitnet.cpp's arithmetic on the same file is as close as the fork is to mainline.
    let r = run(&model, lf, true, Some(Emulation::BitnetCpp));
    check(
        "f32 (bitnet.cpp emulation) batched prompt",
        &r,
        lf,
        0.99999,
        Some(0.1),
    );
}

fn bits(rows: &[Vec<f32>]) -> Vec<Vec<u32>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect()
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let i2s = load(&bitnet_cpp("from-fp16/ggml-model-i2_s.gguf"), vec![]);
    let f32m = load(&bitnet_cpp("from-fp16/ggml-model-f32.gguf"), vec![]);
    let tq2 = load(&llama_cpp("tiny-tq2_0.gguf"), vec![]);
    let tokens: Vec<u32> = vec![1, 275, 376, 265, 919, 816, 797, 902, 584, 874];
    let all = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = vec![];
            for m in [&i2s, &f32m, &tq2] {
                let mut s = session(m, None);
                out.push(bits(&s.forward(&tokens, LogitsWanted::All).unwrap()));
                out.push(bits(&s.forward(&[42], LogitsWanted::Last).unwrap()));
                let mut s = session(m, None);
                for &t in &tokens {
                    out.push(bits(&s.forward(&[t], LogitsWanted::Last).unwrap()));
                }
            }
            out
        })
    };
    assert_eq!(all(1), all(2));
}

#[test]
fn batch_and_steps_agree_closely() {
    // A batched prompt differs from single steps only where the reference runtime differs:
    // float order and f16 roundings in attention and in float matmuls over several tokens
    // (here the F16 LM head). Logits stay within the reference's own spread.
    let model = load(&bitnet_cpp("from-fp16/ggml-model-i2_s.gguf"), vec![]);
    let tokens: Vec<u32> = vec![1, 275, 376, 265, 919, 816, 797, 902];
    let batched = session(&model, None)
        .forward(&tokens, LogitsWanted::All)
        .unwrap();
    let mut s = session(&model, None);
    let steps: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| s.forward(&[t], LogitsWanted::Last).unwrap().remove(0))
        .collect();
    // Position 0 attends to itself only: only the LM head's float order differs.
    let first = compare_rows([&batched[0][..]], [&steps[0][..]]);
    assert!(
        first.min_cosine > 0.99999 && first.max_abs_diff < 0.02,
        "{first}"
    );
    let a = compare_rows(batched.iter().map(|r| &r[..]), steps.iter().map(|r| &r[..]));
    assert!(a.min_cosine > 0.995, "{a}");
    // `Last` returns the last row of `All`.
    let last = session(&model, None)
        .forward(&tokens, LogitsWanted::Last)
        .unwrap();
    assert_eq!(last.len(), 1);
    let all_last = batched.last().unwrap();
    assert!(compare_rows([&last[0][..]], [&all_last[..]]).min_cosine > 0.99999);
}

#[test]
fn session_limits_and_reset() {
    let model = load(&bitnet_cpp("from-fp16/ggml-model-i2_s.gguf"), vec![]);
    let mut s = Session::new(&model, 4);
    assert!(matches!(
        s.forward(&[], LogitsWanted::Last),
        Err(RuntimeError::Session(_))
    ));
    let err = s.forward(&[5000], LogitsWanted::Last).unwrap_err();
    assert!(err.to_string().contains("5000"), "{err}");
    let first = s.forward(&[1, 275], LogitsWanted::All).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].len(), 1002);
    assert_eq!(s.position(), 2);
    let err = s.forward(&[1, 2, 3], LogitsWanted::None).unwrap_err();
    assert!(err.to_string().contains("context full"), "{err}");
    assert_eq!(s.forward(&[3], LogitsWanted::None).unwrap().len(), 0);
    s.reset();
    assert_eq!(s.position(), 0);
    assert_eq!(s.forward(&[1, 275], LogitsWanted::All).unwrap(), first);
}

#[test]
fn model_facts() {
    let model = load(&bitnet_cpp("from-fp16/ggml-model-i2_s.gguf"), vec![]);
    let hp = model.hparams();
    assert_eq!(
        (
            hp.n_vocab,
            hp.n_embd,
            hp.n_ff,
            hp.n_layer,
            hp.n_head,
            hp.n_head_kv
        ),
        (1002, 256, 768, 2, 4, 4)
    );
    assert_eq!((hp.head_dim, hp.n_rot, hp.n_ctx_train), (64, 64, 2048));
    assert_eq!(hp.rope_freq_base, 10000.0);
    assert!(model.is_tied());
    assert_eq!(model.head().name(), "token_embd.weight");
    // By default every projection and the (tied) head are copied into the resident region,
    // 64-byte aligned each; besides that only the norms are held.
    let norms = 4 * (256 * 2 * 3 + 768 * 2 + 256);
    let projections = 2 * (4 * 256 * 256 + 3 * 256 * 768) / 4;
    let head = 1002 * 256 * 2;
    assert_eq!(model.resident_bytes(), projections + head);
    assert!(model.matrices().all(Matrix::is_resident));
    assert_eq!(model.heap_bytes(), norms + projections + head);
    // Read in place, nothing but the norms is copied out of the map for an I2_S file.
    let mapped = Model::load(
        &bitnet_cpp("from-fp16/ggml-model-i2_s.gguf"),
        &LoadOptions {
            weights: WeightMemory::Mapped,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(mapped.resident_bytes(), 0);
    assert!(!mapped.matrices().any(Matrix::is_resident));
    assert_eq!(mapped.heap_bytes(), norms);
    assert_eq!(mapped.resident_huge_page_bytes(), None);
}

/// The resident copy holds the same bytes as the mapping: every matrix, and the logits of a
/// prompt and a few generated tokens, are identical either way, for a file whose projections
/// are converted at load (TL2) and one read as stored (I2_S).
#[test]
fn resident_weights_equal_mapped() {
    for (file, ini) in [
        ("from-fp16/ggml-model-i2_s.gguf", None),
        (
            "from-fp32/ggml-model-tl2.gguf",
            Some("kernel_config_tl2.ini"),
        ),
    ] {
        let tl = ini.map(kernel_config).unwrap_or_default();
        let load = |weights| {
            Model::load(
                &bitnet_cpp(file),
                &LoadOptions {
                    tl_params: tl.clone(),
                    weights,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let (res, map) = (load(WeightMemory::Resident), load(WeightMemory::Mapped));
        assert!(res.resident_bytes() > 0 && map.resident_bytes() == 0);
        for (a, b) in res.matrices().zip(map.matrices()) {
            assert_eq!(a.name(), b.name());
            assert!(
                res.matrix_data(a) == map.matrix_data(b),
                "{file}: {}",
                a.name()
            );
        }
        let run = |m: &Model| {
            let mut s = session(m, None);
            let mut rows = s.forward(&[1, 275, 376, 265], LogitsWanted::All).unwrap();
            for t in [919, 42, 7] {
                rows.extend(s.forward(&[t], LogitsWanted::Last).unwrap());
            }
            rows.concat()
        };
        let (a, b) = (run(&res), run(&map));
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{file}: logits differ"
        );
    }
}
