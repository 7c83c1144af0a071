//! The checks of a file against a checkpoint's [`Reference`] and block states: facts first
//! (hyperparameters, RoPE frequencies, special tokens, vocabulary, merges, ternary codes), then
//! the forward pass block by block, each block fed the golden's input to it, so the first block
//! and sub-layer that disagrees is named and nothing compounds.

use crate::gguf::Value;
use crate::quant::layouts::i2s;
use crate::runtime::hf::{row_hash, row_sketch, HfModel, ProjectionDigest};
use crate::runtime::{argmax, cosine, KvPrecision, Model, Session, SessionOptions, WeightFormat};
use crate::runtime::{Emulation, Matrix};

use super::reference::{codes_digest, merges_digest, Reference};
use super::{GoldenPrompt, Report, ValidateError};

/// Largest relative error `‖file − golden‖ / ‖golden‖` of what one sub-layer adds to the
/// residual stream. Correct files of every fixture and random model measured at most 2e-3
/// (int8 activations at a rounding tie, summation order); a wrong RoPE, norm, activation, scale
/// or head layout moves it above 0.1.
pub const MAX_SUBLAYER_ERR: f64 = 0.02;
/// Largest relative error of the embedding rows (Q8_0 rounds to about 0.4 %).
pub const MAX_EMBD_ERR: f64 = 0.02;
/// Smallest cosine of the head's logits on the golden's last block output (a Q8_0 head gives
/// about 0.99999).
pub const MIN_HEAD_COSINE: f64 = 0.999;

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut n) = (0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        d += ((x - y) as f64).powi(2);
        n += (y as f64).powi(2);
    }
    if n == 0.0 {
        return if d == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (d / n).sqrt()
}

fn diff(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// The file's ternary codes of `m`, row by row, as a digest (validation mode: I2_S rows).
fn matrix_digest(model: &Model, m: &Matrix) -> Option<ProjectionDigest> {
    if m.format() != WeightFormat::I2s {
        return None;
    }
    let (rows, k) = (m.rows(), m.cols());
    let rb = m.format().row_bytes(k);
    let kp = m.format().stride(k);
    let data = model.matrix_data(m);
    let hashes = (0..rows)
        .map(|r| {
            let mut row = data[r * rb..(r + 1) * rb].to_vec();
            row.extend_from_slice(&[0u8; i2s::TAIL_BYTES]);
            let (codes, _) = i2s::unpack(&row, 1, kp).expect("a whole row");
            row_hash(&codes[..k])
        })
        .collect();
    Some(ProjectionDigest::new(rows, k, hashes, m.scale()))
}

fn gguf_strings(model: &Model, key: &str) -> Option<Vec<String>> {
    let v = model.gguf().header.get(key)?.as_array()?;
    Some(
        v.iter()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect(),
    )
}

fn gguf_u32(model: &Model, key: &str) -> Option<u32> {
    model
        .gguf()
        .header
        .get(key)
        .and_then(Value::as_u64)
        .map(|v| v as u32)
}

/// Largest difference of an embedding row's sketch, relative to the row's norm (a Q8_0 row
/// moves it by about 0.005; a different row by about 1).
pub const MAX_SKETCH_ERR: f32 = 0.1;

/// Compares every token embedding row of the file with the checkpoint's, by sketch.
fn check_embedding_rows(rep: &mut Report, model: &Model, r: &Reference) {
    let want = match r.embedding.decode() {
        Ok(w) => w,
        Err(e) => return rep.check("embedding rows", false, format!("golden: {e}")),
    };
    let e = model.tok_embd();
    let store = model.store();
    let mut row = vec![0f32; e.cols()];
    let mut bad = Vec::new();
    for (id, w) in want.iter().enumerate().take(e.rows()) {
        e.dequantize_row(store, id, &mut row);
        let got = row_sketch(&row);
        let tol = MAX_SKETCH_ERR * w[0].max(f32::MIN_POSITIVE);
        if got.iter().zip(w).any(|(a, b)| (a - b).abs() > tol) {
            bad.push(id);
        }
    }
    let n = want.len().min(e.rows());
    rep.check(
        "embedding rows",
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "{n} token embedding rows agree with the checkpoint's ({})",
                e.file_type()
            )
        } else {
            format!(
                "{} of {n} rows differ from the checkpoint's, first ids {:?}",
                bad.len(),
                &bad[..bad.len().min(8)]
            )
        },
    );
}

/// Checks what the file says against what the checkpoint says.
pub fn check_facts(rep: &mut Report, model: &Model, r: &Reference) {
    check_embedding_rows(rep, model, r);
    let hp = model.hparams();
    let c = &r.config;
    let mut bad = Vec::new();
    let mut cmp = |what: &str, file: String, ckpt: String| {
        if file != ckpt {
            bad.push(format!("{what}: file {file}, checkpoint {ckpt}"));
        }
    };
    cmp("layers", hp.n_layer.to_string(), c.n_layer.to_string());
    cmp("hidden size", hp.n_embd.to_string(), c.n_embd.to_string());
    cmp("FFN size", hp.n_ff.to_string(), c.n_ff.to_string());
    cmp("heads", hp.n_head.to_string(), c.n_head.to_string());
    cmp(
        "KV heads",
        hp.n_head_kv.to_string(),
        c.n_head_kv.to_string(),
    );
    cmp("head size", hp.head_dim.to_string(), c.head_dim.to_string());
    cmp("vocabulary", hp.n_vocab.to_string(), c.n_vocab.to_string());
    cmp(
        "activation",
        hp.activation.name().into(),
        c.activation.clone(),
    );
    cmp("tied head", model.is_tied().to_string(), c.tied.to_string());
    if (hp.rms_eps - c.rms_eps).abs() > c.rms_eps * 1e-3 {
        bad.push(format!(
            "RMS norm epsilon: file {:e}, checkpoint {:e}",
            hp.rms_eps, c.rms_eps
        ));
    }
    // The file's RoPE frequencies as its runtime computes them (ggml's rule).
    let half = hp.n_rot / 2;
    let theta_scale = hp.rope_freq_base.powf(-2.0 / hp.n_rot as f32);
    let mut worst: Option<(usize, f32, f32)> = None;
    for i in 0..half.max(c.inv_freq.len()) {
        let ff = model
            .rope_freqs()
            .and_then(|f| f.get(i))
            .copied()
            .unwrap_or(1.0);
        let file = (i < half).then(|| hp.rope_freq_scale * theta_scale.powi(i as i32) / ff);
        let ckpt = c.inv_freq.get(i).copied();
        let (Some(a), Some(b)) = (file, ckpt) else {
            worst = Some((i, file.unwrap_or(0.0), ckpt.unwrap_or(0.0)));
            break;
        };
        if ((a - b) / b).abs() > 1e-3 && worst.is_none() {
            worst = Some((i, a, b));
        }
    }
    if let Some((i, a, b)) = worst {
        bad.push(format!(
            "RoPE frequency {i}: file {a:e}, checkpoint {b:e} (rope_theta / rope_scaling)"
        ));
    }
    let ok = bad.is_empty();
    rep.check(
        "config",
        ok,
        if ok {
            "hyperparameters, activation and RoPE frequencies agree with config.json".into()
        } else {
            bad.join("; ")
        },
    );

    // Special tokens, vocabulary, merges.
    let mut bad = Vec::new();
    let file_bos = gguf_u32(model, "tokenizer.ggml.bos_token_id");
    if r.bos_id.is_some() && file_bos != r.bos_id {
        bad.push(format!(
            "BOS id: file {file_bos:?}, checkpoint {:?}",
            r.bos_id
        ));
    }
    if let Some(e) = gguf_u32(model, "tokenizer.ggml.eos_token_id") {
        if !r.eos_ids.is_empty() && !r.eos_ids.contains(&e) {
            bad.push(format!("EOS id: file {e}, checkpoint {:?}", r.eos_ids));
        }
    }
    match gguf_strings(model, "tokenizer.ggml.tokens") {
        None => bad.push("the file has no tokenizer.ggml.tokens".into()),
        Some(toks) => {
            let wrong: Vec<usize> = r
                .vocab
                .iter()
                .enumerate()
                .filter(|(i, v)| !v.is_empty() && toks.get(*i) != Some(*v))
                .map(|(i, _)| i)
                .collect();
            if !wrong.is_empty() {
                let show: Vec<String> = wrong
                    .iter()
                    .take(4)
                    .map(|&i| {
                        format!(
                            "id {i}: file {:?}, checkpoint {:?}",
                            toks.get(i).map(String::as_str).unwrap_or("<none>"),
                            r.vocab[i]
                        )
                    })
                    .collect();
                bad.push(format!(
                    "{} vocabulary entries differ ({})",
                    wrong.len(),
                    show.join(", ")
                ));
            }
        }
    }
    if let (Some(want), Some(m)) = (
        &r.merges_sha256,
        gguf_strings(model, "tokenizer.ggml.merges"),
    ) {
        if &merges_digest(m.iter().map(String::as_str)) != want {
            bad.push("the BPE merges differ from tokenizer.json's (content or order)".into());
        }
    }
    let ok = bad.is_empty();
    rep.check(
        "tokenizer",
        ok,
        if ok {
            format!(
                "special tokens, {} vocabulary entries{} agree with the checkpoint",
                r.vocab.iter().filter(|v| !v.is_empty()).count(),
                if r.merges_sha256.is_some() {
                    " and the merges"
                } else {
                    ""
                }
            )
        } else {
            bad.join("; ")
        },
    );

    // Ternary codes, projection by projection (rows in any order: Llama files store q/k rows
    // in the interleaved RoPE order).
    let mut bad = Vec::new();
    for p in &r.projections {
        let Some(layer) = model.layers.get(p.block) else {
            bad.push(format!("block {} is missing", p.block));
            continue;
        };
        // The reader's roles are in the order the runtime's projections are.
        let Some(i) = HfModel::ROLES.iter().position(|r| *r == p.role) else {
            bad.push(format!("block {}: unknown role {:?}", p.block, p.role));
            continue;
        };
        let m = layer.projections()[i];
        let where_ = format!("block {} {} ({})", p.block, p.role, m.name());
        let Some(dg) = matrix_digest(model, m) else {
            bad.push(format!("{where_}: not ternary"));
            continue;
        };
        if (dg.rows, dg.cols) != (p.rows, p.cols) {
            bad.push(format!(
                "{where_}: {}×{}, checkpoint {}×{}",
                dg.rows, dg.cols, p.rows, p.cols
            ));
        } else if codes_digest(&dg) != p.codes {
            bad.push(format!("{where_}: ternary codes differ"));
        } else if ((dg.unit - p.unit) / p.unit).abs() > 1e-3 {
            bad.push(format!(
                "{where_}: one code stands for {:e}, checkpoint {:e}",
                dg.unit, p.unit
            ));
        }
    }
    let ok = bad.is_empty();
    rep.check(
        "weights",
        ok,
        if ok {
            format!(
                "{} projections: ternary codes and scales agree with the checkpoint's",
                r.projections.len()
            )
        } else {
            let n = bad.len();
            bad.truncate(6);
            format!("{n} projections differ: {}", bad.join("; "))
        },
    );
}

/// Runs the file block by block on the golden's block inputs of one prompt and checks the
/// embedding, every attention and FFN sub-layer, and the head.
pub fn check_blocks(
    rep: &mut Report,
    model: &Model,
    p: &GoldenPrompt,
    golden_path: &std::path::Path,
) -> Result<(), ValidateError> {
    let (Some(b), Some(m), Some(l)) = (&p.blocks, &p.mid, &p.logits) else {
        return Ok(());
    };
    let bad = |what: String| ValidateError::Golden {
        path: golden_path.to_path_buf(),
        what,
    };
    let states = b.decode().map_err(&bad)?;
    let mids = m.decode().map_err(&bad)?;
    let logits = l.decode().map_err(&bad)?;
    let hp = model.hparams();
    // The states cover the first `n` positions of the prompt (at most `BLOCK_TOKENS`).
    let n = states.first().map_or(0, |s| s.len() / hp.n_embd.max(1));
    if n == 0
        || n > p.token_ids.len()
        || states.len() != hp.n_layer + 1
        || mids.len() != hp.n_layer
        || states.iter().chain(&mids).any(|s| s.len() != n * hp.n_embd)
    {
        rep.check(
            "blocks",
            false,
            format!(
                "the golden's block states do not fit the file ({} layers of {} × {})",
                hp.n_layer, n, hp.n_embd
            ),
        );
        return Ok(());
    }
    let mut s = Session::with_options(
        model,
        SessionOptions {
            max_ctx: n,
            kv: KvPrecision::F32,
            emulation: Emulation::Transformers,
        },
    );
    let trace = s.forward_blocks(&p.token_ids[..n], Some(&states), Some(&mids))?;
    let e = rel_err(&trace.states[0], &states[0]);
    rep.check(
        "embedding",
        e <= MAX_EMBD_ERR,
        format!("rows of the prompt's tokens: relative error {e:.2e} (need ≤ {MAX_EMBD_ERR})"),
    );
    let mut first_bad: Option<String> = None;
    let mut worst = (0f64, String::new());
    for i in 0..hp.n_layer {
        let (inp, gm, go) = (&states[i], &mids[i], &states[i + 1]);
        let (fm, fo) = (&trace.mid[i], &trace.states[i + 1]);
        let attn = rel_err(&diff(fm, inp), &diff(gm, inp));
        // The FFN ran on the golden's stream after the attention (`gm`), not the file's.
        let ffn = rel_err(&diff(fo, gm), &diff(go, gm));
        for (what, err) in [("attention", attn), ("FFN", ffn)] {
            if err > worst.0 || worst.1.is_empty() {
                worst = (err, format!("block {i} {what}"));
            }
            if err > MAX_SUBLAYER_ERR && first_bad.is_none() {
                first_bad = Some(format!(
                    "block {i} {what}: relative error {err:.3e} (need ≤ {MAX_SUBLAYER_ERR})"
                ));
            }
        }
    }
    rep.check(
        "blocks",
        first_bad.is_none(),
        match first_bad {
            Some(b) => format!("first disagreement: {b}"),
            None => format!(
                "{} blocks, each on the golden's input: largest relative error {:.2e} ({})",
                hp.n_layer, worst.0, worst.1
            ),
        },
    );
    let mut min_cos = f64::INFINITY;
    let mut agree = 0;
    for (a, b) in trace.logits.iter().zip(&logits) {
        min_cos = min_cos.min(cosine(a, b));
        agree += (argmax(a) == argmax(b)) as usize;
    }
    rep.check(
        "head",
        min_cos >= MIN_HEAD_COSINE,
        format!(
            "logits on the golden's last block output: min row cosine {min_cos:.6} (need ≥ \
             {MIN_HEAD_COSINE}), top-1 {agree}/{n}"
        ),
    );
    Ok(())
}
