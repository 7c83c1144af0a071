//! The golden of a checkpoint, read the way Hugging Face transformers reads it.
//!
//! Nothing here goes through the converter: the forward pass is [`crate::runtime::hf`] (Hugging
//! Face names, `config.json` semantics, rotate-half RoPE on q/k in their stored order, absmean
//! or packed weights), the prompts are tokenized by the checkpoint's own `tokenizer.json`
//! through the `tokenizers` crate, and the facts a file must agree with (hyperparameters, RoPE
//! frequencies, special tokens, vocabulary, merges, every projection's ternary codes) are read
//! from the checkpoint's own files. What it shares with the file's runtime is arithmetic only
//! (`runtime::kernels::scalar`).
//!
//! Besides logits, the golden keeps the residual stream of the first prompt at every block
//! boundary (and after every attention), so a file can be checked block by block: each of its
//! blocks is fed the golden's input to that block, and a float-order difference in one block
//! cannot compound through the ones after it (see [`super::blocks`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::runtime::hf::{HfActivation, HfError, HfModel, HfOptions, ProjectionDigest};

use super::{EncodedRows, GoldenPrompt, ValidateError};

/// The hyperparameters of a checkpoint as transformers interprets its `config.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RefConfig {
    /// `num_hidden_layers`.
    pub n_layer: usize,
    /// `hidden_size`.
    pub n_embd: usize,
    /// `intermediate_size`.
    pub n_ff: usize,
    /// `num_attention_heads`.
    pub n_head: usize,
    /// `num_key_value_heads`.
    pub n_head_kv: usize,
    /// `head_dim`.
    pub head_dim: usize,
    /// `vocab_size`.
    pub n_vocab: usize,
    /// `rms_norm_eps`.
    pub rms_eps: f32,
    /// The RoPE inverse frequencies (`rope_theta` and `rope_scaling` applied).
    pub inv_freq: Vec<f32>,
    /// `silu` or `relu2`.
    pub activation: String,
    /// Whether the LM head is the token embedding.
    pub tied: bool,
}

/// One projection's ternary content (see [`ProjectionDigest`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RefProjection {
    /// Block index.
    pub block: usize,
    /// `q`, `k`, `v`, `o`, `gate`, `up` or `down`.
    pub role: String,
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// sha256 of the sorted per-row code digests (the rows' order does not count).
    pub codes: String,
    /// The weight one code stands for.
    pub unit: f32,
}

/// What a checkpoint says, recorded in its golden for the checks that do not need logits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reference {
    /// How the checkpoint was read.
    pub reader: String,
    /// Hyperparameters.
    pub config: RefConfig,
    /// BOS id, if the tokenizer has one.
    pub bos_id: Option<u32>,
    /// Every id the checkpoint calls end of sequence.
    pub eos_ids: Vec<u32>,
    /// The token strings by id (`tokenizer.json`'s vocabulary and added tokens); ids the
    /// tokenizer does not define are empty strings.
    pub vocab: Vec<String>,
    /// sha256 of the BPE merges, one `left right` line each, when the tokenizer has merges.
    pub merges_sha256: Option<String>,
    /// Every projection.
    pub projections: Vec<RefProjection>,
    /// [`row_sketch`](crate::runtime::hf::row_sketch) of every token embedding row
    /// (`n_vocab × 5` values: norm, then four sketches).
    pub embedding: EncodedRows,
}

/// The digest of a projection as recorded in a golden.
pub fn codes_digest(d: &ProjectionDigest) -> String {
    let mut h = Sha256::new();
    for v in &d.row_hashes {
        h.update(v.to_le_bytes());
    }
    format!("{:x}", h.finalize())
}

/// sha256 of merges given as `left right` strings.
pub fn merges_digest<'a>(merges: impl Iterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for m in merges {
        h.update(m.as_bytes());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())
}

/// The checkpoint's tokenizer (`tokenizer.json`) and the special tokens its files name.
pub struct CheckpointTokenizer {
    file: PathBuf,
    inner: tokenizers::Tokenizer,
    /// BOS id.
    pub bos: Option<u32>,
    /// `add_bos_token` of `tokenizer_config.json`, if set.
    pub add_bos: Option<bool>,
    /// EOS ids.
    pub eos: Vec<u32>,
}

fn json_file(path: &Path) -> Result<Option<serde_json::Value>, ValidateError> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| ValidateError::Tokenize(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ValidateError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// A special token given as a string or as `{"content": …}`.
fn token_text(v: &serde_json::Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(|c| c.as_str()))
}

fn ids_of(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl CheckpointTokenizer {
    /// Opens `DIR/tokenizer.json` with `tokenizer_config.json`, `config.json` and
    /// `generation_config.json` for the special tokens.
    pub fn open(dir: &Path) -> Result<CheckpointTokenizer, ValidateError> {
        let mut file = dir.join("tokenizer.json");
        let tc = json_file(&dir.join("tokenizer_config.json"))?;
        let class = tc
            .as_ref()
            .and_then(|c| c.get("tokenizer_class"))
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let spm = dir.join("tokenizer.model");
        let (mut inner, from_model) = if file.is_file() {
            let t = tokenizers::Tokenizer::from_file(&file)
                .map_err(|e| ValidateError::Tokenize(format!("{}: {e}", file.display())))?;
            (t, false)
        } else if spm.is_file() {
            file = spm;
            (sentencepiece_bpe(&file)?, true)
        } else {
            return Err(ValidateError::Tokenize(format!(
                "{}: no tokenizer.json or tokenizer.model: the golden tokenizes the prompts with \
                 the checkpoint's own tokenizer",
                dir.display()
            )));
        };
        if from_model || matches!(class, "LlamaTokenizer" | "LlamaTokenizerFast") {
            // transformers' Llama tokenizer keeps only the BPE model of tokenizer.json and sets
            // its own pipeline: no normalizer, a Metaspace pre-tokenizer that prepends "▁"
            // ("always" with legacy behaviour, "first" without it; "never" when
            // add_prefix_space is false).
            use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
            let get = |k: &str| tc.as_ref().and_then(|c| c.get(k)).and_then(|v| v.as_bool());
            let scheme = match (get("add_prefix_space").unwrap_or(true), get("legacy")) {
                (false, _) => PrependScheme::Never,
                (true, Some(true)) => PrependScheme::Always,
                (true, _) => PrependScheme::First,
            };
            let _ = inner.with_normalizer(None::<tokenizers::NormalizerWrapper>);
            let _ = inner.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
        }
        let cfg = json_file(&dir.join("config.json"))?;
        let gen = json_file(&dir.join("generation_config.json"))?;
        let id_of_text = |key: &str| -> Option<u32> {
            let t = tc.as_ref()?.get(key).and_then(token_text)?;
            inner.token_to_id(t)
        };
        let bos = id_of_text("bos_token").or_else(|| {
            ids_of(cfg.as_ref().and_then(|c| c.get("bos_token_id")))
                .first()
                .copied()
        });
        let mut eos: Vec<u32> = Vec::new();
        eos.extend(id_of_text("eos_token"));
        for src in [&cfg, &gen] {
            eos.extend(ids_of(src.as_ref().and_then(|c| c.get("eos_token_id"))));
        }
        eos.sort_unstable();
        eos.dedup();
        let add_bos = tc
            .as_ref()
            .and_then(|c| c.get("add_bos_token"))
            .and_then(|v| v.as_bool())
            // transformers' Llama tokenizer adds BOS unless told otherwise.
            .or(from_model.then_some(true));
        let bos = bos.or_else(|| from_model.then(|| inner.token_to_id("<s>")).flatten());
        Ok(CheckpointTokenizer {
            file,
            inner,
            bos,
            add_bos,
            eos,
        })
    }

    /// Token ids of `text` as transformers' tokenizer call gives them (special tokens added by
    /// the tokenizer's post-processor; BOS added when `add_bos_token` asks for it and the
    /// post-processor did not).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ValidateError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ValidateError::Tokenize(format!("{}: {e}", self.file.display())))?;
        let mut ids = enc.get_ids().to_vec();
        if let (Some(true), Some(b)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&b) {
                ids.insert(0, b);
            }
        }
        Ok(ids)
    }

    /// The token strings by id, `n` entries (undefined ids empty).
    pub fn vocab(&self, n: usize) -> Vec<String> {
        let mut v = vec![String::new(); n];
        for (tok, id) in self.inner.get_vocab(true) {
            if let Some(slot) = v.get_mut(id as usize) {
                *slot = tok;
            }
        }
        v
    }

    /// The digest of the BPE merges, if the model is BPE with merges.
    pub fn merges_sha256(&self) -> Result<Option<String>, ValidateError> {
        if self.file.extension().is_some_and(|e| e == "model") {
            return Ok(None); // a SentencePiece model stores no merges
        }
        let text = std::fs::read_to_string(&self.file).map_err(|e| ValidateError::Io {
            path: self.file.clone(),
            source: e,
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ValidateError::Tokenize(format!("{}: {e}", self.file.display())))?;
        let Some(merges) = v.pointer("/model/merges").and_then(|m| m.as_array()) else {
            return Ok(None);
        };
        if merges.is_empty() {
            return Ok(None);
        }
        let lines: Vec<String> = merges
            .iter()
            .map(|m| match m {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(p) => p
                    .iter()
                    .map(|x| x.as_str().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => String::new(),
            })
            .collect();
        Ok(Some(merges_digest(lines.iter().map(String::as_str))))
    }
}

/// A BPE `tokenizer.model` as transformers turns it into a tokenizer when no `tokenizer.json`
/// exists: every piece with its position as id; merges from every split of a piece into two
/// pieces of the vocabulary, ordered by the merged piece's id, then the lengths of the two
/// parts; byte fallback, unknown pieces fused; control pieces special. (The pre-tokenizer is set
/// by the caller, as for Llama tokenizers.)
fn sentencepiece_bpe(path: &Path) -> Result<tokenizers::Tokenizer, ValidateError> {
    use crate::checkpoint::sentencepiece::{ModelProto, ModelType, PieceType};
    let bad = |e: String| ValidateError::Tokenize(format!("{}: {e}", path.display()));
    let proto = ModelProto::load(path).map_err(|e| bad(e.to_string()))?;
    if proto.trainer_spec.model_type != ModelType::Bpe {
        return Err(bad(format!(
            "a {:?} SentencePiece model; only BPE models are read without tokenizer.json",
            proto.trainer_spec.model_type
        )));
    }
    if proto.pieces.is_empty() {
        return Err(bad("the model has no pieces".into()));
    }
    let mut vocab: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
    for (i, p) in proto.pieces.iter().enumerate() {
        vocab.insert(p.piece.clone(), i as u32);
    }
    // (merged id, left length, right length, left id, right id, left, right)
    let mut merges: Vec<(u32, usize, usize, u32, u32, String, String)> = Vec::new();
    for p in &proto.pieces {
        let id = vocab[&p.piece];
        let mut local = Vec::new();
        for (cut, _) in p.piece.char_indices().skip(1) {
            let (l, r) = p.piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((
                    id,
                    l.chars().count(),
                    r.chars().count(),
                    li,
                    ri,
                    l.to_string(),
                    r.to_string(),
                ));
            }
        }
        local.sort_by_key(|m| (m.3, m.4));
        merges.extend(local);
    }
    // A stable sort on (merged id, left length, right length), as Python's sorted.
    merges.sort_by_key(|m| (m.0, m.1, m.2));
    let merges: Vec<(String, String)> = merges.into_iter().map(|m| (m.5, m.6)).collect();
    let bpe = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut t = tokenizers::Tokenizer::new(bpe);
    let special: Vec<tokenizers::AddedToken> = proto
        .pieces
        .iter()
        .filter(|p| matches!(p.kind, PieceType::Control | PieceType::Unknown))
        .map(|p| tokenizers::AddedToken::from(p.piece.clone(), true))
        .collect();
    let _ = t.add_special_tokens(special);
    Ok(t)
}

/// Positions of the first prompt whose block states a checkpoint golden records.
pub const BLOCK_TOKENS: usize = 64;

/// What [`compute`] returns: the prompts (logits, and block states for the first) and the
/// facts.
pub struct Computed {
    /// One per prompt.
    pub prompts: Vec<GoldenPrompt>,
    /// The facts.
    pub reference: Reference,
}

fn hf_err(e: HfError) -> ValidateError {
    ValidateError::Reference(e)
}

/// Reads the checkpoint in `dir` as transformers does and computes the golden's prompts and
/// facts. Prompt 0 also records its block states.
pub fn compute(dir: &Path, prompts: &[String]) -> Result<Computed, ValidateError> {
    let hf = HfModel::open(dir, &HfOptions::default()).map_err(hf_err)?;
    let tok = CheckpointTokenizer::open(dir)?;
    let c = hf.config();
    let n_vocab = c.vocab_size;
    // Every prompt in one pass over the weights: the sequences are concatenated for the
    // projections and attend only to themselves.
    let mut all_ids = Vec::new();
    let mut lens = Vec::new();
    for text in prompts {
        let ids = tok.encode(text)?;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ValidateError::Tokenize(format!(
                "{}: prompt {text:?} has token id {bad}, not below vocab_size {n_vocab}",
                dir.display()
            )));
        }
        if ids.is_empty() {
            return Err(ValidateError::Tokenize(format!(
                "{}: prompt {text:?} has no tokens",
                dir.display()
            )));
        }
        lens.push(ids.len());
        all_ids.extend(ids);
    }
    let h = hf.hidden();
    // Block states of the first prompt's first BLOCK_TOKENS positions (causal, so a prefix is
    // a complete check of its own): bounded golden size whatever the text's length.
    let first = lens.first().copied().unwrap_or(0).min(BLOCK_TOKENS) * h;
    let mut states = Vec::new();
    let mut mids = Vec::new();
    let mut x = if all_ids.is_empty() {
        Vec::new()
    } else {
        hf.embed(&all_ids).map_err(hf_err)?
    };
    if !all_ids.is_empty() {
        states.push(x[..first].to_vec());
        for i in 0..hf.n_layers() {
            let (m, o) = hf.block_seqs(i, &x, &lens).map_err(hf_err)?;
            mids.push(m[..first].to_vec());
            states.push(o[..first].to_vec());
            x = o;
        }
    }
    let logits = if all_ids.is_empty() {
        Vec::new()
    } else {
        hf.head(&x, all_ids.len()).map_err(hf_err)?
    };
    let mut out = Vec::new();
    let mut start = 0;
    for (pi, (text, &len)) in prompts.iter().zip(&lens).enumerate() {
        let rows: Vec<Vec<f32>> = logits[start * n_vocab..(start + len) * n_vocab]
            .chunks_exact(n_vocab)
            .map(<[f32]>::to_vec)
            .collect();
        out.push(GoldenPrompt {
            text: text.clone(),
            token_ids: all_ids[start..start + len].to_vec(),
            greedy_ids: Vec::new(),
            greedy_text: String::new(),
            mode: "batched".into(),
            logits: Some(EncodedRows::encode(&rows)),
            blocks: (pi == 0).then(|| EncodedRows::encode(&states)),
            mid: (pi == 0).then(|| EncodedRows::encode(&mids)),
        });
        start += len;
    }
    let mut projections = Vec::new();
    for i in 0..hf.n_layers() {
        for role in HfModel::ROLES {
            let d = hf.projection_digest(i, role).map_err(hf_err)?;
            projections.push(RefProjection {
                block: i,
                role: role.to_string(),
                rows: d.rows,
                cols: d.cols,
                codes: codes_digest(&d),
                unit: d.unit,
            });
        }
    }
    let reference = Reference {
        reader: "bitconv's reading of the checkpoint as transformers reads it (config.json, \
                 safetensors, tokenizer.json)"
            .into(),
        config: RefConfig {
            n_layer: c.num_hidden_layers,
            n_embd: c.hidden_size,
            n_ff: c.intermediate_size,
            n_head: c.num_attention_heads,
            n_head_kv: c.num_key_value_heads,
            head_dim: c.head_dim,
            n_vocab,
            rms_eps: c.rms_norm_eps,
            inv_freq: c.inv_freq(),
            activation: match c.hidden_act {
                HfActivation::Silu => "silu",
                HfActivation::Relu2 => "relu2",
            }
            .into(),
            tied: c.tie_word_embeddings,
        },
        bos_id: tok.bos,
        eos_ids: tok.eos.clone(),
        vocab: tok.vocab(n_vocab),
        merges_sha256: tok.merges_sha256()?,
        projections,
        embedding: EncodedRows::encode(
            &hf.embedding_sketches()
                .map_err(hf_err)?
                .iter()
                .map(|s| s.to_vec())
                .collect::<Vec<_>>(),
        ),
    };
    Ok(Computed {
        prompts: out,
        reference,
    })
}
