//! Golden files and validation: what a correct model computes on the calibration prompts, and
//! the check of a GGUF file against it (`golden/FORMAT.md` documents the format).
//!
//! Validation runs the file through the reference runtime in validation mode
//! ([`LoadOptions::ternary_as_i2s`]): every projection is re-expressed as ternary codes and one
//! scale and multiplied with bitnet.cpp's I2_S arithmetic, so the logits depend only on what the
//! file stores, whatever its type. Besides the logits, a golden computed by bitconv records a
//! digest of every projection's ternary codes and its scale, which catches a single flipped
//! weight that logits alone could miss.

pub mod blocks;
mod golden;
pub mod reference;
mod report;

pub use golden::{
    EncodedRows, Golden, GoldenModel, GoldenPrompt, Producer, TensorDigest, Tolerances,
};
pub use report::{kl_stats, perplexity, Check, Overall, PromptStats, Report};

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::quant::layouts::KernelEntry;
use crate::runtime::tokenize::GgufTokenizer;
use crate::runtime::{
    argmax, cosine, max_abs_diff, Emulation, KvPrecision, LoadOptions, LogitsWanted, Model,
    Session, SessionOptions, WeightFormat,
};

/// The calibration prompts built into the binary (`calibration/prompts.json`).
pub const CALIBRATION: &str = include_str!("../../calibration/prompts.json");

/// The prompts and the greedy length of the built-in calibration set.
pub fn calibration_prompts() -> (Vec<String>, usize) {
    #[derive(Deserialize)]
    struct C {
        prompts: Vec<String>,
        greedy_tokens: usize,
    }
    let c: C = serde_json::from_str(CALIBRATION).expect("calibration/prompts.json is valid");
    (c.prompts, c.greedy_tokens)
}

/// Errors reading, computing or checking goldens (a failed check is not an error: see
/// [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A golden file is malformed.
    #[error("{}: not a valid golden file: {what}", path.display())]
    Golden {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The model could not be run.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The checkpoint could not be converted for the golden.
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
    /// Tokenization failed.
    #[error("{0}")]
    Tokenize(String),
    /// The checkpoint could not be read as transformers reads it.
    #[error(transparent)]
    Reference(#[from] crate::runtime::hf::HfError),
}

/// Options of golden computation and validation.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// TL1/TL2 kernel parameters.
    pub tl_params: Vec<KernelEntry>,
    /// Run the file as this runtime would (`validate --as`).
    pub run_as: Option<crate::arch::Target>,
}

fn load_for_validation(
    path: &Path,
    opts: &RunOptions,
) -> Result<Model, crate::runtime::RuntimeError> {
    Model::load(
        path,
        &LoadOptions {
            tl_params: opts.tl_params.clone(),
            ternary_as_i2s: true,
            // Read in place: a copy would double the memory for nothing.
            weights: crate::runtime::WeightMemory::Mapped,
            run_as: opts.run_as,
        },
    )
}

/// The arithmetic a file is run with to compare it with a golden made by `producer`.
///
/// A golden from Hugging Face transformers gets [`Emulation::Transformers`] with an f32 KV
/// cache: the golden keeps keys and values in its own (float64) dtype and rounds its int8
/// activations with torch's arithmetic. Measured on the issue-8 fixtures' F32 files (min row
/// cosine against their transformers goldens): bitnet.cpp's arithmetic with an f16 cache 0.99974
/// (2B-4T), 0.99985 (Falcon3), 0.99986 (Llama3-8B); an f32 cache and torch's activation scale
/// 0.99985, 1.0, 0.99991; all of [`Emulation::Transformers`] 1.0, 1.0, 0.99991 (Llama3-8B's
/// `BitLinear` quantizes in the golden's float64). Every difference traced was one int8
/// activation at a tie (`x·s` exactly 63.5 in real arithmetic) rounded the other way; rounding
/// that one the other way in transformers' forward pass reproduced our logits. Every other golden
/// (bitnet.cpp's, llama.cpp's, bitconv's own, the numpy reference) is compared with bitnet.cpp's
/// arithmetic and an f16 cache, as before.
pub fn arithmetic_for(producer: &Producer) -> (Emulation, KvPrecision) {
    if producer.name == "transformers" || producer.name == CHECKPOINT_PRODUCER {
        (Emulation::Transformers, KvPrecision::F32)
    } else {
        (Emulation::BitnetCpp, KvPrecision::F16)
    }
}

fn session(model: &Model, ctx: usize, (emulation, kv): (Emulation, KvPrecision)) -> Session<'_> {
    Session::with_options(
        model,
        SessionOptions {
            max_ctx: ctx,
            kv,
            emulation,
        },
    )
}

/// bitconv's own goldens: bitnet.cpp's arithmetic with an f16 cache.
const OWN: (Emulation, KvPrecision) = (Emulation::BitnetCpp, KvPrecision::F16);

/// Digests of every ternary projection of a model loaded in validation mode.
pub fn digests(model: &Model) -> Vec<TensorDigest> {
    let mut out: Vec<TensorDigest> = model
        .matrices()
        .filter(|m| m.format() == WeightFormat::I2s)
        .map(|m| TensorDigest {
            name: m.name().to_string(),
            rows: m.rows(),
            cols: m.cols(),
            codes_sha256: format!("{:x}", Sha256::digest(model.matrix_data(m))),
            scale: m.scale(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Runs `tokens` one at a time and returns one logits row per token.
fn sequential_rows(
    model: &Model,
    tokens: &[u32],
    arith: (Emulation, KvPrecision),
) -> Result<Vec<Vec<f32>>, ValidateError> {
    let mut s = session(model, tokens.len().max(1), arith);
    let mut rows = Vec::with_capacity(tokens.len());
    for &t in tokens {
        let mut r = s.forward(&[t], LogitsWanted::Last)?;
        rows.push(r.pop().expect("one row"));
    }
    Ok(rows)
}

/// Computes a golden by running `model_path` (a GGUF file) through the reference runtime in
/// validation mode.
fn compute(
    model_path: &Path,
    opts: &RunOptions,
    prompts: &[String],
    n_greedy: usize,
) -> Result<(Vec<GoldenPrompt>, Vec<TensorDigest>, String, usize), ValidateError> {
    let model = load_for_validation(model_path, opts)?;
    let tok = GgufTokenizer::from_gguf(&model.gguf().header)
        .map_err(|e| ValidateError::Tokenize(e.to_string()))?;
    let mut out = Vec::new();
    for text in prompts {
        let ids = tok
            .encode(text, true)
            .map_err(|e| ValidateError::Tokenize(e.to_string()))?;
        let mut s = session(&model, ids.len() + n_greedy + 1, OWN);
        let mut rows = Vec::new();
        for &t in &ids {
            rows.push(s.forward(&[t], LogitsWanted::Last)?.pop().expect("one row"));
        }
        let mut greedy = Vec::new();
        for _ in 0..n_greedy {
            let next = argmax(rows.last().expect("a prompt row")) as u32;
            greedy.push(next);
            rows.push(
                s.forward(&[next], LogitsWanted::Last)?
                    .pop()
                    .expect("one row"),
            );
        }
        let greedy_text = String::from_utf8_lossy(
            &greedy
                .iter()
                .flat_map(|&g| tok.token_bytes(g))
                .collect::<Vec<u8>>(),
        )
        .into_owned();
        out.push(GoldenPrompt {
            text: text.clone(),
            token_ids: ids,
            greedy_ids: greedy,
            greedy_text,
            mode: "sequential".into(),
            logits: Some(EncodedRows::encode(&rows)),
            blocks: None,
            mid: None,
        });
    }
    let arch = model.hparams().arch.name().to_string();
    let n_vocab = model.hparams().n_vocab;
    Ok((out, digests(&model), arch, n_vocab))
}

fn producer(details: &str) -> Producer {
    Producer {
        name: "bitconv".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        details: details.into(),
    }
}

/// Tolerances of goldens bitconv computes: files of every type converted from the same
/// checkpoint differ only in the embedding/head precision and (with `--absmean`) in scales by a
/// few ulp, which moves int8 roundings: the reference's own runs of one file spread to cosine
/// 0.9986 (FORMATS: from-fp16 vs from-fp32), so 0.995 leaves room while wrong arithmetic falls
/// far below (no activation quantization: 0.993; wrong rope or norms: < 0.92).
pub const COMPUTED_TOLERANCES: Tolerances = Tolerances {
    min_cosine: 0.995,
    max_abs_diff: None,
    min_top1_agreement: 0.85,
    greedy_must_match: false,
    max_mean_kl: None,
};

/// A golden from one GGUF file (kind `gguf`; its sha256 is recorded and checked).
pub fn golden_from_gguf(
    path: &Path,
    opts: &RunOptions,
    prompts: &[String],
    n_greedy: usize,
) -> Result<Golden, ValidateError> {
    let (ps, tensors, arch, n_vocab) = compute(path, opts, prompts, n_greedy)?;
    let sha = crate::util::sha256_file(path).map_err(|e| ValidateError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    Ok(Golden {
        format: "bitconv-golden".into(),
        version: 1,
        producer: producer(
            "reference runtime, I2_S arithmetic on the file's ternary codes, one token per step",
        ),
        model: GoldenModel {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: path.display().to_string(),
            kind: "gguf".into(),
            sha256: Some(sha),
            arch,
            n_vocab,
            weights: "ternary".into(),
        },
        tolerances: Tolerances {
            // The same file through the same arithmetic: only thread-independent, so exact.
            min_cosine: 0.99999,
            max_abs_diff: Some(1e-3),
            min_top1_agreement: 1.0,
            greedy_must_match: true,
            max_mean_kl: None,
        },
        prompts: ps,
        tensors: Some(tensors),
        reference: None,
    })
}

/// The producer name of checkpoint goldens ([`golden_from_checkpoint`]).
pub const CHECKPOINT_PRODUCER: &str = "bitconv-checkpoint-reader";

/// A golden from a checkpoint directory (kind `checkpoint`), computed by reading the checkpoint
/// the way transformers reads it ([`reference`](mod@reference)), independently of the converter: logits of
/// every prompt, block states of the first, and the facts a file must agree with. Greedy
/// continuations are not recorded (`n_greedy` is ignored).
pub fn golden_from_checkpoint(
    dir: &Path,
    _opts: &RunOptions,
    prompts: &[String],
    _n_greedy: usize,
) -> Result<Golden, ValidateError> {
    let c = reference::compute(dir, prompts)?;
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let arch = c.reference.config.activation.clone();
    Ok(Golden {
        format: "bitconv-golden".into(),
        version: 1,
        producer: Producer {
            name: CHECKPOINT_PRODUCER.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            details: "config.json and safetensors read as transformers reads them (Hugging Face \
                      names, rotate-half RoPE, absmean or packed ternary weights, int8 \
                      activations, f32), prompts tokenized by the checkpoint's own tokenizer; \
                      shares only arithmetic with the converter and the GGUF runtime"
                .into(),
        },
        model: GoldenModel {
            name,
            source: dir.display().to_string(),
            kind: "checkpoint".into(),
            sha256: None,
            arch: format!("checkpoint ({arch} FFN)"),
            n_vocab: c.reference.config.n_vocab,
            weights: "ternary".into(),
        },
        tolerances: COMPUTED_TOLERANCES,
        prompts: c.prompts,
        tensors: None,
        reference: Some(c.reference),
    })
}

/// Where `convert --validate` and `fetch` write the golden of `file`: `FILE.golden.json`
/// beside it (what a plain `validate FILE` reads).
pub fn golden_path_for(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".golden.json");
    PathBuf::from(s)
}

/// The check after a conversion, one call for `convert --validate` and `fetch`: the golden of
/// checkpoint `dir` (its independent reading), written beside `file` ([`golden_path_for`]),
/// then the validation of `file` against it.
pub fn check_conversion(
    dir: &Path,
    file: &Path,
    tl_params: &[KernelEntry],
) -> Result<Report, ValidateError> {
    let (prompts, n) = calibration_prompts();
    let opts = RunOptions {
        tl_params: tl_params.to_vec(),
        run_as: None,
    };
    let golden = golden_from_checkpoint(dir, &opts, &prompts, n)?;
    let gpath = golden_path_for(file);
    golden.write(&gpath)?;
    validate(file, &golden, &gpath, &opts)
}

/// Validates a GGUF file against a golden.
pub fn validate(
    file: &Path,
    golden: &Golden,
    golden_path: &Path,
    opts: &RunOptions,
) -> Result<Report, ValidateError> {
    let mut rep = Report {
        file: file.display().to_string(),
        golden: golden_path.display().to_string(),
        pass: true,
        ..Report::default()
    };
    if let Some(want) = &golden.model.sha256 {
        match crate::util::sha256_file(file) {
            Ok(got) => {
                rep.check("sha256", &got == want, format!("file {got}, golden {want}"));
            }
            Err(e) => rep.check("sha256", false, format!("cannot read the file: {e}")),
        }
    }
    let model = match load_for_validation(file, opts) {
        Ok(m) => m,
        Err(e) => {
            rep.check("load", false, format!("the file cannot be run: {e}"));
            return Ok(rep);
        }
    };
    let hp = model.hparams();
    rep.run_as = opts.run_as.map(|t| {
        format!(
            "{t} (its FFN applies {} to this {} file)",
            hp.activation.name(),
            hp.arch
        )
    });
    rep.check(
        "vocabulary",
        hp.n_vocab == golden.model.n_vocab,
        format!("file {}, golden {}", hp.n_vocab, golden.model.n_vocab),
    );
    if hp.n_vocab != golden.model.n_vocab {
        return Ok(rep);
    }
    if let Some(want) = &golden.tensors {
        let have = digests(&model);
        let mut bad = Vec::new();
        for w in want {
            match have.iter().find(|h| h.name == w.name) {
                None => bad.push(format!("{}: missing", w.name)),
                Some(h) if (h.rows, h.cols) != (w.rows, w.cols) => bad.push(format!(
                    "{}: shape {}×{}, golden {}×{}",
                    w.name, h.rows, h.cols, w.rows, w.cols
                )),
                Some(h) if h.codes_sha256 != w.codes_sha256 => {
                    bad.push(format!("{}: ternary codes differ", w.name))
                }
                Some(h) if (h.scale - w.scale).abs() > w.scale.abs() * 1e-3 => bad.push(format!(
                    "{}: scale {} vs golden {}",
                    w.name, h.scale, w.scale
                )),
                Some(_) => {}
            }
        }
        for h in &have {
            if !want.iter().any(|w| w.name == h.name) {
                bad.push(format!("{}: not in the golden", h.name));
            }
        }
        let detail = if bad.is_empty() {
            format!("{} projections: codes and scales agree", want.len())
        } else {
            bad.join("; ")
        };
        rep.check("weights", bad.is_empty(), detail);
    }
    if let Some(r) = &golden.reference {
        blocks::check_facts(&mut rep, &model, r);
    }
    let tok = GgufTokenizer::from_gguf(&model.gguf().header).ok();
    let tol = golden.tolerances;
    let decides = golden.reference.is_none();
    let arith = arithmetic_for(&golden.producer);
    rep.arithmetic = format!("{:?} emulation, {:?} KV cache", arith.0, arith.1);
    rep.against = format!(
        "{} golden by {} {} ({}) from {}",
        golden.model.kind,
        golden.producer.name,
        golden.producer.version,
        golden.producer.details,
        golden.model.source
    );
    for p in &golden.prompts {
        if let Some(tok) = &tok {
            if let Ok(ids) = tok.encode(&p.text, true) {
                rep.check(
                    "tokens",
                    ids == p.token_ids,
                    if ids == p.token_ids {
                        format!("{} prompt tokens agree", ids.len())
                    } else {
                        format!(
                            "prompt {:?}: file tokenizes to {:?}, golden {:?}",
                            p.text, ids, p.token_ids
                        )
                    },
                );
            }
        }
        blocks::check_blocks(&mut rep, &model, p, golden_path)?;
        let Some(enc) = &p.logits else { continue };
        let want = enc.decode().map_err(|what| ValidateError::Golden {
            path: golden_path.to_path_buf(),
            what,
        })?;
        let mut feed = p.token_ids.clone();
        feed.extend(&p.greedy_ids);
        feed.truncate(want.len());
        // A golden computed in one batch (checkpoint goldens) is compared with the file run in
        // one batch; the others with one token per step, as they were made.
        let got = if p.mode == "batched" && !feed.is_empty() {
            session(&model, feed.len(), arith).forward(&feed, LogitsWanted::All)?
        } else {
            sequential_rows(&model, &feed, arith)?
        };
        let n = got.len();
        let mut min_cos = f64::INFINITY;
        let mut max_abs = 0f32;
        let mut agree = 0usize;
        for (a, b) in got.iter().zip(&want) {
            min_cos = min_cos.min(cosine(a, b));
            max_abs = max_abs.max(max_abs_diff(a, b));
            agree += (argmax(a) == argmax(b)) as usize;
        }
        let top1 = agree as f64 / n.max(1) as f64;
        let kl = kl_stats(&want[..n], &got);
        let ppl = |rows: &[Vec<f32>]| perplexity(rows, &feed);
        let (ppl_file, ppl_golden) = (ppl(&got), ppl(&want[..n]));
        let start = p.token_ids.len().saturating_sub(1);
        let greedy_matched = p
            .greedy_ids
            .iter()
            .enumerate()
            .take_while(|(i, &g)| got.get(start + i).is_some_and(|r| argmax(r) as u32 == g))
            .count();
        let label = |s: &str| format!("{s} ({:?})", truncate(&p.text, 32));
        let mut out = std::mem::take(&mut rep);
        let mut check = |name: &str, ok: bool, detail: String| {
            if decides {
                out.check(name, ok, detail)
            } else {
                out.inform(name, ok, detail)
            }
        };
        check(
            &label("KL divergence"),
            tol.max_mean_kl.is_none_or(|m| kl.0 <= m),
            format!(
                "mean {:.3e}, p99 {:.3e} nats per row{}; perplexity file {ppl_file:.3}, golden \
                 {ppl_golden:.3}",
                kl.0,
                kl.1,
                tol.max_mean_kl
                    .map(|m| format!(" (need mean ≤ {m})"))
                    .unwrap_or_default()
            ),
        );
        check(
            &label("cosine"),
            min_cos >= tol.min_cosine,
            format!(
                "min row cosine {min_cos:.7} (need ≥ {}) over {n} rows",
                tol.min_cosine
            ),
        );
        if let Some(m) = tol.max_abs_diff {
            check(
                &label("max |Δ|"),
                max_abs <= m,
                format!("{max_abs:.4} (need ≤ {m})"),
            );
        }
        check(
            &label("top-1"),
            top1 >= tol.min_top1_agreement,
            format!(
                "{agree}/{n} rows agree (need ≥ {:.0}%)",
                tol.min_top1_agreement * 100.0
            ),
        );
        if tol.greedy_must_match {
            check(
                &label("greedy"),
                greedy_matched == p.greedy_ids.len(),
                format!(
                    "{greedy_matched}/{} greedy tokens agree",
                    p.greedy_ids.len()
                ),
            );
        }
        rep = out;
        rep.prompts.push(PromptStats {
            text: p.text.clone(),
            rows: n,
            min_cosine: min_cos,
            max_abs_diff: max_abs,
            top1_agreement: top1,
            greedy_matched,
            greedy_len: p.greedy_ids.len(),
            mean_kl: kl.0,
            p99_kl: kl.1,
            perplexity_file: ppl_file,
            perplexity_golden: ppl_golden,
        });
    }
    if !rep.prompts.is_empty() {
        let rows: usize = rep.prompts.iter().map(|p| p.rows).sum();
        let w = |f: &dyn Fn(&PromptStats) -> f64| {
            rep.prompts
                .iter()
                .map(|p| f(p) * p.rows as f64)
                .sum::<f64>()
                / rows.max(1) as f64
        };
        rep.overall = Some(Overall {
            rows,
            mean_kl: w(&|p| p.mean_kl),
            p99_kl: rep.prompts.iter().map(|p| p.p99_kl).fold(0.0, f64::max),
            top1_agreement: w(&|p| p.top1_agreement),
        });
    }
    Ok(rep)
}

fn truncate(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() {
        format!("{t}…")
    } else {
        t
    }
}
