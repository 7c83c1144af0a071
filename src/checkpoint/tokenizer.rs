//! Tokenizer metadata for GGUF: the `tokenizer.ggml.*` (and `tokenizer.chat_template*`) keys,
//! built from a Hugging Face checkpoint directory exactly as a reference converter builds them.
//!
//! Two reference converters are reproduced ([`Flavor`]); they differ in more than key names:
//!
//! * [`Flavor::BitnetCpp`]: bitnet.cpp's `convert-hf-to-gguf-bitnet.py` (BitNet `4645960`) with
//!   the gguf-py of its llama.cpp fork (`406a503`).
//! * [`Flavor::Mainline`]: mainline llama.cpp's `convert_hf_to_gguf.py` and gguf-py, as vendored
//!   by llama-cpp-python 0.3.36 (llama.cpp `0c1e57098`).
//!
//! # SentencePiece path (`tokenizer.model` present; 1bitLLM checkpoints)
//!
//! `tokenizer.ggml.model = "llama"`, `tokenizer.ggml.pre = "default"`, then tokens, scores and
//! types. A piece's type maps UNKNOWN → 2, CONTROL → 3, UNUSED → 5, BYTE → 6 and everything else
//! (NORMAL *and* USER_DEFINED) → 1 (NORMAL), because both converters ask `is_unknown`,
//! `is_control`, `is_unused`, `is_byte` and nothing else. The vocabulary size is `vocab_size`
//! of `config.json` (the piece count when absent). Then:
//!
//! * bitnet.cpp: the pieces in order; each key of `added_tokens.json` that is not already a
//!   token is appended (score -1000, USER_DEFINED; the ids in that file are ignored); the list is
//!   padded to the vocabulary size with `[PAD1]`, `[PAD2]`, … (numbered from 1; score -1000,
//!   UNUSED). A vocabulary smaller than the token list is an error.
//! * llama.cpp: every id starts as `[PAD{id}]` (numbered by id), score -10000, UNUSED; pieces
//!   fill their ids (pieces beyond the vocabulary size are dropped); `added_tokens.json` entries
//!   overwrite their ids (score -1000, USER_DEFINED); then every entry of
//!   `tokenizer_config.json`'s `added_tokens_decoder` overwrites its id with score -1000 and type
//!   CONTROL if it is `special` or looks special (`<|…|>`, `<｜…｜>`, `<unused…>`, `<pad>`,
//!   `<mask>`, `<2mass>`, `[@BOS@]`), else USER_DEFINED with `▁` replaced by a space. This is
//!   why mainline writes `<unk>` as CONTROL with score -1000 where bitnet.cpp writes UNKNOWN, 0.
//!
//! # GPT-2 / Llama-3 byte-level BPE path (`tokenizer.json` only; 2B-4T, Llama3, Falcon3)
//!
//! `tokenizer.ggml.model = "gpt2"`, `tokenizer.ggml.pre = <name>`, tokens and types (no scores),
//! then merges. The references read the vocabulary through transformers' `AutoTokenizer`, and
//! bitconv reproduces what transformers 4.57 builds from the files (checked against it on
//! hundreds of generated directories):
//!
//! * `tokenizers` ignores the ids stored with `added_tokens`: in file order, an added token
//!   whose content is already known keeps that id, any other takes the id after the model
//!   vocabulary's size (or after the largest added id). Files written by `tokenizers` store
//!   exactly these ids; a mismatch is reported in [`TokenizerMeta::warnings`].
//! * the fast tokenizer then re-adds every entry of `tokenizer_config.json`'s
//!   `added_tokens_decoder` (without one: every `added_tokens` entry) and each special-token
//!   attribute (`bos_token` … `mask_token`, `additional_special_tokens`,
//!   `extra_special_tokens`; without `added_tokens_decoder`, `special_tokens_map.json`
//!   overrides them) that it does not hold yet; a token is special if it was marked so or if an
//!   attribute names it. So a token named `pad_token` is CONTROL even when tokenizer.json says
//!   `"special": false`, and a named token missing from the vocabulary is appended.
//!
//! Tokens for ids `0..vocab_size` (`config.json`, else the vocabulary's length) follow: a missing
//! id becomes `[PAD{id}]` (USER_DEFINED for bitnet.cpp, UNUSED for llama.cpp); an added token is
//! CONTROL if special (llama.cpp: or if it looks special; otherwise USER_DEFINED with `▁` →
//! space), else USER_DEFINED; the rest are NORMAL. The references also round-trip added tokens
//! through the tokenizer (`decode(encode(t))`: bitnet.cpp's current converter for all of them,
//! llama.cpp for those with `normalized: false`); bitconv cannot run the tokenizer and writes the
//! content as stored, which is what that round trip gives for real vocabularies. Merges come
//! from `model.merges` (strings kept; `[a, b]` pairs become `"a b"` with spaces inside a part
//! written as U+0120), else from `merges.txt`. A byte-fallback (Llama-2 style) `tokenizer.json`
//! without `tokenizer.model` and non-BPE models are not supported.
//!
//! The reference converters pick `tokenizer.ggml.pre` by hashing the ids their tokenizer gives
//! a fixed text. bitconv does not run the tokenizer: it reads `tokenizer.json`'s own
//! `pre_tokenizer` definition and looks it up in [`crate::pretok`], the table the runtime
//! tokenizes with, so any vocabulary with a known definition is named (a tokenizer trained with
//! Llama-3's expression is `llama-bpe`; Falcon3 and Falcon-E, whose definition is Llama-3's, get
//! `llama-bpe` too, which both runtimes treat exactly as `falcon3`/`falcon_e`). A name given
//! with `--tokenizer-pre` wins (a warning when it splits differently from the definition). Either
//! name is checked against the names the target runtime knows. An unknown definition stops the
//! BPE path with [`TokenizerError::PreTokenizerUnknown`], which names the tokenizer, what was
//! not recognised and the flag.
//!
//! # Special vocabulary (gguf-py `SpecialVocab`)
//!
//! Special token ids come from exactly two places, in this order of precedence:
//! 1. `tokenizer_config.json`'s `bos_token`, `eos_token`, `unk_token`, `sep_token`, `pad_token`,
//!    `cls_token`, `mask_token` (a string or an object with `content`), resolved to an id by the
//!    first entry of **`tokenizer.json`'s `added_tokens`** with that content (so nothing is found
//!    without a `tokenizer.json`);
//! 2. `config.json`'s `bos_token_id`, `eos_token_id`, … for types still unset (llama.cpp also
//!    looks in `text_config`).
//!
//! Ids must be integers (a boolean counts as 0/1, as in Python), negative ids are an error, and
//! on the SentencePiece path ids not below the vocabulary size are skipped.
//! `special_tokens_map.json`, `generation_config.json` and the ids in the SentencePiece
//! `trainer_spec` are **not** consulted for the ids by either converter (only transformers reads
//! `special_tokens_map.json`, on the BPE path, for the token types above).
//! `add_bos_token` / `add_eos_token` (and every other `add_<type>_token` boolean) come from
//! `tokenizer_config.json`; llama.cpp first derives `add_bos` / `add_sep` / `add_eos` from
//! `tokenizer.json`'s post-processor (`TemplateProcessing`, `RobertaProcessing`, `ByteLevel`)
//! and lets `tokenizer_config.json` fill only the types it left unset, which is where its extra
//! `tokenizer.ggml.add_sep_token` comes from. The chat template is `tokenizer_config.json`'s
//! `chat_template` (llama.cpp falls back to `chat_template.jinja`, with
//! `additional_chat_templates/*.jinja`, or `chat_template.json`); llama.cpp also writes
//! `tokenizer.ggml.normalizer.lowercase` / `.strip_accents` from `tokenizer.json`'s normalizer.
//!
//! Written order (the insertion order of the Python dictionaries): merges; special ids in the
//! order they were first set (`tokenizer_config.json` types in the order bos, eos, unk, sep, pad,
//! cls, mask, then `config.json` in the same order); `add_*` flags in the order they were first
//! set; the chat template(s); the normalizer flags. Types without a gguf-py writer method are
//! dropped with a warning (bitnet.cpp: `add_*` other than bos/eos; llama.cpp: `cls` ids and
//! `add_*` other than bos/eos/sep).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::sentencepiece::{ModelProto, PieceType, SpmError};
use crate::pretok;

/// The largest vocabulary bitconv accepts (a guard against absurd `vocab_size` values; the
/// largest real vocabularies are around 262k).
pub const MAX_VOCAB: usize = 1 << 22;

pub use crate::arch::Flavor;

/// GGUF token types (`tokenizer.ggml.token_type` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum TokenType {
    /// An ordinary token.
    Normal = 1,
    /// The unknown token.
    Unknown = 2,
    /// A control token (BOS, EOS, chat markers …).
    Control = 3,
    /// A user-defined token, matched literally in text.
    UserDefined = 4,
    /// An unused slot (padding).
    Unused = 5,
    /// A byte-fallback token `<0xHH>`.
    Byte = 6,
}

impl TokenType {
    /// The value stored in the GGUF array.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// A typed GGUF metadata value for a tokenizer key.
#[derive(Clone, Debug, PartialEq)]
pub enum TokValue {
    /// GGUF `string`.
    Str(String),
    /// GGUF `uint32`.
    U32(u32),
    /// GGUF `bool`.
    Bool(bool),
    /// GGUF array of `string`.
    ArrStr(Vec<String>),
    /// GGUF array of `float32`.
    ArrF32(Vec<f32>),
    /// GGUF array of `int32`.
    ArrI32(Vec<i32>),
}

/// Errors building tokenizer metadata. Every variant names the file (or directory) concerned.
#[derive(Debug)]
pub enum TokenizerError {
    /// A file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A file's content cannot be used (what is wrong is spelled out).
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// `tokenizer.model` is malformed.
    SentencePiece(SpmError),
    /// The directory has neither `tokenizer.model` nor `tokenizer.json`.
    NoTokenizer {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// The tokenizer is of a kind bitconv does not convert yet.
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
    /// A BPE tokenizer needs a pre-tokenizer name, none was given and its probe hash is not
    /// in the table.
    PreTokenizerUnknown {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// Why its `pre_tokenizer` was not recognised.
        why: String,
    },
    /// The pre-tokenizer name given is not one the target runtime knows.
    UnknownPreName {
        /// The name given.
        name: String,
        /// The target.
        flavor: Flavor,
    },
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TokenizerError::Json { path, source } => {
                write!(f, "{}: invalid JSON: {source}", path.display())
            }
            TokenizerError::Invalid { path, what } => write!(f, "{}: {what}", path.display()),
            TokenizerError::SentencePiece(e) => write!(f, "{e}"),
            TokenizerError::NoTokenizer { dir } => write!(
                f,
                "{}: no tokenizer.model and no tokenizer.json, so there is no vocabulary to convert",
                dir.display()
            ),
            TokenizerError::Unsupported { path, what } => {
                write!(f, "{}: not supported: {what}", path.display())
            }
            TokenizerError::PreTokenizerUnknown { path, why } => write!(
                f,
                "{}: the BPE pre-tokenizer is not one bitconv recognises: {why}; name the \
                 llama.cpp pre-tokenizer with --tokenizer-pre NAME (bitconv runs: {})",
                path.display(),
                pretok::table_names()
            ),
            TokenizerError::UnknownPreName { name, flavor } => write!(
                f,
                "--tokenizer-pre {name:?} is not a pre-tokenizer {flavor} knows; known names: {}",
                pretok::known_names(*flavor).join(", ")
            ),
        }
    }
}

impl std::error::Error for TokenizerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenizerError::Io { source, .. } => Some(source),
            TokenizerError::Json { source, .. } => Some(source),
            TokenizerError::SentencePiece(e) => Some(e),
            _ => None,
        }
    }
}

impl From<SpmError> for TokenizerError {
    fn from(e: SpmError) -> TokenizerError {
        TokenizerError::SentencePiece(e)
    }
}

/// Checks a pre-tokenizer name against the names the flavor's runtime knows
/// ([`pretok::known_names`]).
pub fn check_pre_name(flavor: Flavor, name: &str) -> Result<(), TokenizerError> {
    if pretok::known_names(flavor).contains(&name) {
        Ok(())
    } else {
        Err(TokenizerError::UnknownPreName {
            name: name.to_owned(),
            flavor,
        })
    }
}

/// The tokenizer metadata of a checkpoint, holding exactly what goes into the GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenizerMeta {
    /// The converter this metadata reproduces.
    pub flavor: Flavor,
    /// `tokenizer.ggml.model`: `"llama"` (SentencePiece) or `"gpt2"` (byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`, by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (SentencePiece path only).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` ([`TokenType`] values).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges` (BPE path only; `None` when there are none).
    pub merges: Option<Vec<String>>,
    /// The special-vocabulary entries in written order, with full key names:
    /// `tokenizer.ggml.bos_token_id` (and the other ids), `tokenizer.ggml.add_bos_token` (and
    /// the other flags), `tokenizer.chat_template*`, `tokenizer.ggml.normalizer.*`.
    pub special: Vec<(String, TokValue)>,
    /// What the reference converter would have logged as warnings (skipped ids, replaced
    /// tokens, types without a writer …), for the caller to show.
    pub warnings: Vec<String>,
}

impl TokenizerMeta {
    /// Builds the metadata from a checkpoint directory as `flavor`'s converter would.
    ///
    /// `tokenizer.model` selects the SentencePiece path; otherwise `tokenizer.json` must hold a
    /// byte-level BPE, and `pre` (the `--tokenizer-pre` value) names its pre-tokenizer. `pre` is
    /// ignored on the SentencePiece path, which always writes `"default"`.
    pub fn from_dir(
        dir: &Path,
        flavor: Flavor,
        pre: Option<&str>,
    ) -> Result<TokenizerMeta, TokenizerError> {
        let config_path = dir.join("config.json");
        let config = match read_json_opt(&config_path)? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(invalid(&config_path, "not a JSON object")),
        };
        let ctx = Ctx {
            dir,
            flavor,
            config: config.as_ref(),
            config_path: &config_path,
        };
        if dir.join("tokenizer.model").is_file() {
            return ctx.sentencepiece();
        }
        if dir.join("tokenizer.json").is_file() {
            return ctx.bpe(pre);
        }
        Err(TokenizerError::NoTokenizer {
            dir: dir.to_path_buf(),
        })
    }

    /// The full ordered list of tokenizer keys with typed values, as the reference converter
    /// writes them: `tokenizer.ggml.model`, `.pre`, `.tokens`, `.scores` (if any),
    /// `.token_type`, `.merges` (if any), then [`TokenizerMeta::special`]. Empty strings and
    /// empty arrays are left out, as gguf-py leaves them out.
    pub fn kv_entries(&self) -> Vec<(String, TokValue)> {
        let mut out = Vec::with_capacity(6 + self.special.len());
        let mut push = |k: &str, v: TokValue| out.push((k.to_owned(), v));
        if !self.model.is_empty() {
            push(KEY_MODEL, TokValue::Str(self.model.clone()));
        }
        if let Some(pre) = self.pre.as_ref().filter(|p| !p.is_empty()) {
            push(KEY_PRE, TokValue::Str(pre.clone()));
        }
        if !self.tokens.is_empty() {
            push(KEY_TOKENS, TokValue::ArrStr(self.tokens.clone()));
        }
        if let Some(s) = self.scores.as_ref().filter(|s| !s.is_empty()) {
            push(KEY_SCORES, TokValue::ArrF32(s.clone()));
        }
        if !self.token_types.is_empty() {
            push(KEY_TOKEN_TYPE, TokValue::ArrI32(self.token_types.clone()));
        }
        if let Some(m) = self.merges.as_ref().filter(|m| !m.is_empty()) {
            push(KEY_MERGES, TokValue::ArrStr(m.clone()));
        }
        out.extend(self.special.iter().cloned());
        out
    }
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
const KEY_CHAT_TEMPLATES: &str = "tokenizer.chat_templates";

/// The special-token types gguf-py's `SpecialVocab` looks for, in its order.
const SPECIAL_TYPES: &[&str] = &["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// The GGUF key for a special-token id of type `typ`, if the flavor's writer has one.
fn id_key(flavor: Flavor, typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        // gguf-py's spelling.
        "sep" => "tokenizer.ggml.seperator_token_id",
        "pad" => "tokenizer.ggml.padding_token_id",
        "cls" if flavor == Flavor::BitnetCpp => "tokenizer.ggml.cls_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

/// The GGUF key for an `add_<typ>_token` flag, if the flavor's writer has one.
fn add_key(flavor: Flavor, typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.add_bos_token",
        "eos" => "tokenizer.ggml.add_eos_token",
        "sep" if flavor == Flavor::Mainline => "tokenizer.ggml.add_sep_token",
        _ => return None,
    })
}

/// True for the added tokens llama.cpp's converter treats as control tokens even when they
/// are not marked `special`.
pub fn looks_special(token: &str) -> bool {
    matches!(token, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (token.starts_with("<|") && token.ends_with("|>"))
        || (token.starts_with("<｜") && token.ends_with("｜>"))
        || (token.starts_with("<unused") && token.ends_with('>'))
}

// ---------------------------------------------------------------------------------------------
// Building

/// What every path needs: the directory, the flavor, and `config.json`.
struct Ctx<'a> {
    dir: &'a Path,
    flavor: Flavor,
    config: Option<&'a Map<String, Value>>,
    config_path: &'a Path,
}

impl Ctx<'_> {
    fn sentencepiece(&self) -> Result<TokenizerMeta, TokenizerError> {
        let spm_path = self.dir.join("tokenizer.model");
        let spm = ModelProto::load(&spm_path)?;
        let mut warnings = Vec::new();
        let (tokens, scores, types) = match self.flavor {
            Flavor::BitnetCpp => self.spm_vocab_bitnet(&spm)?,
            Flavor::Mainline => self.spm_vocab_llama(&spm, &mut warnings)?,
        };
        let sv = SpecialVocab::load(self, false, Some(tokens.len()))?;
        let (special, merges, sv_warnings) = sv.finish()?;
        warnings.extend(sv_warnings);
        Ok(TokenizerMeta {
            flavor: self.flavor,
            model: "llama".into(),
            pre: Some("default".into()),
            tokens,
            scores: Some(scores),
            token_types: types.into_iter().map(TokenType::as_i32).collect(),
            merges,
            special,
            warnings,
        })
    }

    /// `config.json`'s value for the first of `keys` present, if any.
    fn config_value(&self, keys: &[&str]) -> Option<&Value> {
        let cfg = self.config?;
        keys.iter().find_map(|k| cfg.get(*k))
    }

    fn vocab_size_from(&self, v: &Value) -> Result<usize, TokenizerError> {
        let n = py_int(v).ok_or_else(|| {
            invalid(
                self.config_path,
                format!("vocab_size must be an integer, found {v}"),
            )
        })?;
        if n < 0 {
            return Err(invalid(
                self.config_path,
                format!("vocab_size must not be negative, found {n}"),
            ));
        }
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_VOCAB)
            .ok_or_else(|| {
                invalid(
                    self.config_path,
                    format!("vocab_size {n} is larger than bitconv's limit of {MAX_VOCAB}"),
                )
            })
    }

    /// bitnet.cpp: pieces, then new `added_tokens.json` keys, then `[PAD1]…` to `vocab_size`.
    fn spm_vocab_bitnet(&self, spm: &ModelProto) -> Result<SpmVocab, TokenizerError> {
        let vocab_size = match self.config_value(&["vocab_size"]) {
            None => spm.pieces.len(),
            Some(v) => self.vocab_size_from(v)?,
        };
        let mut tokens: Vec<String> = Vec::with_capacity(vocab_size.max(spm.pieces.len()));
        let mut scores = Vec::with_capacity(tokens.capacity());
        let mut types = Vec::with_capacity(tokens.capacity());
        for p in &spm.pieces {
            tokens.push(p.piece.clone());
            scores.push(spm_score(p.score));
            types.push(spm_token_type(p.kind));
        }
        let added_path = self.dir.join("added_tokens.json");
        if let Some(added) = read_json_opt(&added_path)? {
            // The converter iterates the JSON object's keys (an array's elements would do too);
            // the ids in the file are not used.
            let names: Vec<String> = match &added {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => a
                    .iter()
                    .map(|k| {
                        k.as_str().map(str::to_owned).ok_or_else(|| {
                            invalid(&added_path, format!("added token {k} is not a string"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(invalid(&added_path, "not a JSON object")),
            };
            let mut present: HashSet<String> = tokens.iter().cloned().collect();
            for name in names {
                if present.insert(name.clone()) {
                    tokens.push(name);
                    scores.push(-1000.0);
                    types.push(TokenType::UserDefined);
                }
            }
        }
        if vocab_size > tokens.len() {
            let pad = vocab_size - tokens.len();
            for i in 1..=pad {
                tokens.push(format!("[PAD{i}]"));
                scores.push(-1000.0);
                types.push(TokenType::Unused);
            }
        }
        if tokens.len() != vocab_size {
            return Err(invalid(
                self.config_path,
                format!(
                    "vocab_size {vocab_size} is smaller than the {} tokens of tokenizer.model \
                     and added_tokens.json",
                    tokens.len()
                ),
            ));
        }
        Ok((tokens, scores, types))
    }

    /// llama.cpp: `[PAD{id}]` everywhere, then pieces, `added_tokens.json`, and
    /// `added_tokens_decoder` overwrite their ids.
    fn spm_vocab_llama(
        &self,
        spm: &ModelProto,
        warnings: &mut Vec<String>,
    ) -> Result<SpmVocab, TokenizerError> {
        let n_pieces = spm.pieces.len();
        // `find_hparam([...]) or sp.vocab_size()`: a missing, null or zero value means "the
        // piece count".
        let vocab_size = match self.config_value(&["vocab_size_per_layer_input", "vocab_size"]) {
            Some(v) if truthy(v) => self.vocab_size_from(v)?,
            _ => n_pieces,
        };
        let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
        let mut scores = vec![-10000.0f32; vocab_size];
        let mut types = vec![TokenType::Unused; vocab_size];
        for (id, p) in spm.pieces.iter().enumerate() {
            if id >= vocab_size {
                warnings.push(format!(
                    "ignoring tokenizer.model pieces from id {id}: beyond vocab_size {vocab_size}"
                ));
                break;
            }
            tokens[id] = p.piece.clone();
            scores[id] = spm_score(p.score);
            types[id] = spm_token_type(p.kind);
        }

        let added_path = self.dir.join("added_tokens.json");
        if let Some(added) = read_json_opt(&added_path)? {
            let Value::Object(map) = added else {
                return Err(invalid(&added_path, "not a JSON object"));
            };
            for (text, idv) in &map {
                let id = py_int(idv).ok_or_else(|| {
                    invalid(
                        &added_path,
                        format!("id of {text:?} must be an integer, found {idv}"),
                    )
                })?;
                let Some(id) = index_in(id, vocab_size, &added_path, text, warnings)? else {
                    continue;
                };
                tokens[id] = text.clone();
                scores[id] = -1000.0;
                types[id] = TokenType::UserDefined;
            }
        }

        let tc_path = self.dir.join("tokenizer_config.json");
        if let Some(tc) = read_json_opt(&tc_path)? {
            let Value::Object(tc) = tc else {
                return Err(invalid(&tc_path, "not a JSON object"));
            };
            let decoder = match tc.get("added_tokens_decoder") {
                None => None,
                Some(Value::Object(m)) => Some(m),
                Some(other) => {
                    return Err(invalid(
                        &tc_path,
                        format!("added_tokens_decoder must be an object, found {other}"),
                    ))
                }
            };
            for (key, data) in decoder.into_iter().flatten() {
                let id = parse_py_int(key).ok_or_else(|| {
                    invalid(
                        &tc_path,
                        format!("added_tokens_decoder key {key:?} is not an integer"),
                    )
                })?;
                let content = data.get("content").ok_or_else(|| {
                    invalid(
                        &tc_path,
                        format!("added_tokens_decoder[{key:?}] has no \"content\""),
                    )
                })?;
                let Some(id) = index_in(id, vocab_size, &tc_path, key, warnings)? else {
                    continue;
                };
                let Value::String(content) = content else {
                    return Err(invalid(
                        &tc_path,
                        format!("added_tokens_decoder[{key:?}].content is not a string"),
                    ));
                };
                if types[id] != TokenType::Unused && tokens[id] != *content {
                    warnings.push(format!(
                        "replacing token {id}: {:?} -> {content:?}",
                        tokens[id]
                    ));
                }
                let special = data.get("special").is_some_and(truthy);
                if special || looks_special(content) {
                    types[id] = TokenType::Control;
                    tokens[id] = content.clone();
                } else {
                    types[id] = TokenType::UserDefined;
                    tokens[id] = content.replace('\u{2581}', " ");
                }
                scores[id] = -1000.0;
            }
        }
        Ok((tokens, scores, types))
    }

    fn bpe(&self, pre: Option<&str>) -> Result<TokenizerMeta, TokenizerError> {
        let path = self.dir.join("tokenizer.json");
        let tj = read_json_opt(&path)?.unwrap_or(Value::Null);
        let Some(model) = tj.get("model").and_then(Value::as_object) else {
            return Err(invalid(&path, "no \"model\" object"));
        };
        let model_type = model.get("type").and_then(Value::as_str).unwrap_or("");
        if model_type != "BPE" {
            return Err(TokenizerError::Unsupported {
                path,
                what: format!(
                    "a {model_type:?} tokenizer without tokenizer.model (only byte-level BPE \
                     tokenizer.json files are converted)"
                ),
            });
        }
        let decoder_type = tj
            .get("decoder")
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str);
        if model.get("byte_fallback").is_some_and(truthy) && decoder_type == Some("Sequence") {
            return Err(TokenizerError::Unsupported {
                path,
                what: "a Llama-style byte-fallback BPE tokenizer.json without tokenizer.model"
                    .into(),
            });
        }
        let recognised = pretok::recognise(tj.get("pre_tokenizer").unwrap_or(&Value::Null));
        let mut pre_warning = None;
        let pre = match (pre, recognised) {
            (None, Ok(found)) => {
                check_pre_name(self.flavor, found.name())?;
                found.name().to_owned()
            }
            (None, Err(why)) => {
                return Err(TokenizerError::PreTokenizerUnknown {
                    path,
                    why: why.to_string(),
                })
            }
            (Some(name), found) => {
                check_pre_name(self.flavor, name)?;
                if let (Ok(found), Some(given)) = (found, pretok::by_name(name)) {
                    if !found.same_behaviour(given) {
                        pre_warning = Some(format!(
                            "--tokenizer-pre {name}: {} defines the {} pre-tokenizer, which \
                             splits text differently; the runtime will not tokenize as the \
                             model was trained",
                            path.display(),
                            found.name()
                        ));
                    }
                }
                name.to_owned()
            }
        };

        let Some(vocab) = model.get("vocab").and_then(Value::as_object) else {
            return Err(invalid(&path, "model.vocab is not an object"));
        };
        let tc_path = self.dir.join("tokenizer_config.json");
        let tc = match read_json_opt(&tc_path)? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(invalid(&tc_path, "not a JSON object")),
        };
        let stm = read_json_opt(&self.dir.join("special_tokens_map.json"))?;
        let hf = HfVocab::load(&path, &tj, vocab, tc.as_ref(), stm.as_ref())?;
        let mut warnings = hf.warnings;
        warnings.extend(pre_warning);
        let content_to_id = hf.content_to_id;
        let reverse = hf.reverse;

        let vocab_size = match self.config_value(&["vocab_size"]) {
            Some(v) => self.vocab_size_from(v)?,
            None => content_to_id.len().min(MAX_VOCAB + 1),
        };
        if vocab_size > MAX_VOCAB {
            return Err(invalid(
                &path,
                format!("more than bitconv's limit of {MAX_VOCAB} tokens"),
            ));
        }
        let Some(&max_id) = content_to_id.values().max() else {
            return Err(invalid(&path, "the vocabulary is empty"));
        };
        if max_id >= vocab_size as u64 {
            return Err(invalid(
                &path,
                format!("token id {max_id} is not below vocab_size {vocab_size}"),
            ));
        }

        let mut tokens = Vec::with_capacity(vocab_size);
        let mut types = Vec::with_capacity(vocab_size);
        for i in 0..vocab_size as u64 {
            match reverse.get(&i) {
                None => {
                    tokens.push(format!("[PAD{i}]"));
                    types.push(match self.flavor {
                        Flavor::BitnetCpp => TokenType::UserDefined,
                        Flavor::Mainline => TokenType::Unused,
                    });
                }
                Some(tok) if hf.added_contents.contains(tok.as_str()) => {
                    let tok = tok.as_str();
                    let special = hf.added.get(&i).is_some_and(|t| t.special);
                    match self.flavor {
                        Flavor::BitnetCpp => {
                            tokens.push(tok.to_owned());
                            types.push(if special {
                                TokenType::Control
                            } else {
                                TokenType::UserDefined
                            });
                        }
                        Flavor::Mainline => {
                            if special || looks_special(tok) {
                                tokens.push(tok.to_owned());
                                types.push(TokenType::Control);
                            } else {
                                tokens.push(tok.replace('\u{2581}', " "));
                                types.push(TokenType::UserDefined);
                            }
                        }
                    }
                }
                Some(tok) => {
                    tokens.push(tok.clone());
                    types.push(TokenType::Normal);
                }
            }
        }

        let sv = SpecialVocab::load(self, true, None)?;
        let (special, merges, sv_warnings) = sv.finish()?;
        warnings.extend(sv_warnings);
        if let Some(m) = &merges {
            check_merges(m, &tokens, &self.dir.join("tokenizer.json"))?;
        }
        Ok(TokenizerMeta {
            flavor: self.flavor,
            model: "gpt2".into(),
            pre: Some(pre),
            tokens,
            scores: None,
            token_types: types.into_iter().map(TokenType::as_i32).collect(),
            merges,
            special,
            warnings,
        })
    }
}

type SpmVocab = (Vec<String>, Vec<f32>, Vec<TokenType>);

// ---------------------------------------------------------------------------------------------
// The vocabulary as transformers' AutoTokenizer (4.57, fast) loads a tokenizer.json

/// An added token with the flags `tokenizers` compares (`AddedToken` equality).
#[derive(Clone, Debug, PartialEq, Eq)]
struct AddedTok {
    content: String,
    single_word: bool,
    lstrip: bool,
    rstrip: bool,
    normalized: bool,
    special: bool,
}

impl AddedTok {
    /// A token from its JSON form; missing flags take `AddedToken`'s defaults (`normalized`
    /// defaults to `!special`).
    fn from_json(v: &Value) -> Option<AddedTok> {
        let content = v.get("content")?.as_str()?.to_owned();
        let flag = |k: &str| v.get(k).map(truthy);
        let special = flag("special").unwrap_or(false);
        Some(AddedTok {
            content,
            single_word: flag("single_word").unwrap_or(false),
            lstrip: flag("lstrip").unwrap_or(false),
            rstrip: flag("rstrip").unwrap_or(false),
            normalized: flag("normalized").unwrap_or(!special),
            special,
        })
    }

    fn plain(content: &str, special: bool) -> AddedTok {
        AddedTok {
            content: content.to_owned(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: !special,
            special,
        }
    }
}

/// A special-token attribute value: a plain string or an `AddedToken`.
#[derive(Clone, Debug, PartialEq)]
enum SpecialAttr {
    Str(String),
    Tok(AddedTok),
}

impl SpecialAttr {
    fn content(&self) -> &str {
        match self {
            SpecialAttr::Str(s) => s,
            SpecialAttr::Tok(t) => &t.content,
        }
    }

    /// transformers' reading of a `tokenizer_config.json` / `special_tokens_map.json` value
    /// (`special` forces the flag, as `special_tokens_map.json` does).
    fn from_json(v: &Value, special: bool) -> Option<SpecialAttr> {
        match v {
            Value::String(s) => Some(SpecialAttr::Str(s.clone())),
            Value::Object(_) => AddedTok::from_json(v).map(|mut t| {
                if special {
                    t.special = true;
                }
                SpecialAttr::Tok(t)
            }),
            _ => None,
        }
    }
}

/// `tokenizers`' added vocabulary: content → id and id → token.
struct AddedVocab<'a> {
    model_ids: &'a HashMap<&'a str, u64>,
    model_len: u64,
    enc: HashMap<String, u64>,
    dec: HashMap<u64, AddedTok>,
}

impl AddedVocab<'_> {
    /// `AddedVocabulary::add_tokens` for one token: an empty or already identical token is
    /// skipped; a known content keeps its id; otherwise the id after the model vocabulary's
    /// size, or after the largest added id. Returns the id.
    fn add(&mut self, tok: AddedTok) -> Option<u64> {
        if tok.content.is_empty() || self.dec.values().any(|t| *t == tok) {
            return None;
        }
        let known = self
            .enc
            .get(&tok.content)
            .or_else(|| self.model_ids.get(tok.content.as_str()));
        let id = match (known, self.enc.values().max()) {
            (Some(&id), _) => id,
            (None, Some(&m)) if m >= self.model_len || self.model_len == 0 => m + 1,
            (None, _) => self.model_len,
        };
        self.enc.insert(tok.content.clone(), id);
        self.dec.insert(id, tok);
        Some(id)
    }
}

/// The vocabulary the reference converters see through `AutoTokenizer.from_pretrained`.
struct HfVocab {
    /// `tokenizer.vocab`: content → id, added tokens included.
    content_to_id: HashMap<String, u64>,
    /// id → content (the converters' `reverse_vocab`).
    reverse: HashMap<u64, String>,
    /// `added_tokens_decoder`: id → token.
    added: HashMap<u64, AddedTok>,
    /// `get_added_vocab()`'s contents.
    added_contents: HashSet<String>,
    warnings: Vec<String>,
}

/// transformers' special-token attributes, in its order.
const SPECIAL_ATTRS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

impl HfVocab {
    /// Emulates how `tokenizers` loads `tokenizer.json` (it ignores the ids stored with the
    /// added tokens and renumbers them) and how transformers' fast tokenizer then re-adds
    /// tokens: every entry of `tokenizer_config.json`'s `added_tokens_decoder` (or, without
    /// one, of `tokenizer.json`'s `added_tokens`), and the special-token attributes
    /// (`bos_token` … `mask_token`, `additional_special_tokens`, `extra_special_tokens`) it
    /// does not have yet, each marked special if it was or if it is named by an attribute.
    /// This is how a token named as a special token becomes special. Without
    /// `added_tokens_decoder`, `special_tokens_map.json` overrides the attributes
    /// (transformers' legacy path).
    fn load(
        path: &Path,
        tj: &Value,
        vocab: &Map<String, Value>,
        tc: Option<&Map<String, Value>>,
        stm: Option<&Value>,
    ) -> Result<HfVocab, TokenizerError> {
        let mut warnings = Vec::new();
        let mut model_ids: HashMap<&str, u64> = HashMap::with_capacity(vocab.len());
        let mut model_entries: Vec<(&str, u64)> = Vec::with_capacity(vocab.len());
        for (tok, idv) in vocab {
            let id = py_int(idv)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| {
                    invalid(path, format!("model.vocab[{tok:?}] = {idv} is not an id"))
                })?;
            model_ids.insert(tok, id);
            model_entries.push((tok, id));
        }
        let mut av = AddedVocab {
            model_ids: &model_ids,
            model_len: vocab.len() as u64,
            enc: HashMap::new(),
            dec: HashMap::new(),
        };

        // 1. tokenizers loads the added tokens in file order.
        let json_added: Vec<(Option<i128>, AddedTok)> = match tj.get("added_tokens") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|a| {
                    AddedTok::from_json(a)
                        .map(|t| (a.get("id").and_then(py_int), t))
                        .ok_or_else(|| invalid(path, format!("added token {a} has no content")))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(
                    path,
                    format!("added_tokens is not a list: {other}"),
                ))
            }
        };
        for (stored, tok) in &json_added {
            let content = tok.content.clone();
            if let Some(id) = av.add(tok.clone()) {
                if *stored != Some(i128::from(id)) {
                    warnings.push(format!(
                        "{}: added token {content:?} is stored with id {} but loads as id {id}",
                        path.display(),
                        stored.map_or("none".into(), |s| s.to_string())
                    ));
                }
            }
        }

        // 2. transformers' `added_tokens_decoder` and special-token attributes.
        // `decoder` is transformers' `added_tokens_decoder` (by index, later entries replacing
        // earlier ones), `by_content` its `added_tokens_map` (by content, filled in the same
        // pass, so it keeps entries whose index was taken over).
        let tc_decoder = tc.and_then(|m| m.get("added_tokens_decoder"));
        let mut decoder: std::collections::BTreeMap<i128, AddedTok> = Default::default();
        let mut by_content: HashMap<String, AddedTok> = HashMap::new();
        let legacy = tc_decoder.is_none();
        match tc_decoder {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let idx = parse_py_int(k).ok_or_else(|| {
                        invalid(
                            path,
                            format!("added_tokens_decoder key {k:?} is not an integer"),
                        )
                    })?;
                    let tok = AddedTok::from_json(v).ok_or_else(|| {
                        invalid(path, format!("added_tokens_decoder[{k:?}] is not a token"))
                    })?;
                    by_content.insert(tok.content.clone(), tok.clone());
                    decoder.insert(idx, tok);
                }
            }
            Some(other) => {
                return Err(invalid(
                    path,
                    format!("added_tokens_decoder must be an object, found {other}"),
                ))
            }
            None => {
                for (stored, tok) in &json_added {
                    by_content.insert(tok.content.clone(), tok.clone());
                    decoder.insert(stored.unwrap_or(0), tok.clone());
                }
            }
        }

        let tc_get = |k: &str| tc.and_then(|m| m.get(k));
        let mut attrs: Vec<(String, SpecialAttr)> = Vec::new();
        let mut additional: Vec<SpecialAttr> = Vec::new();
        for key in SPECIAL_ATTRS {
            if let Some(v) = tc_get(key).and_then(|v| SpecialAttr::from_json(v, false)) {
                attrs.push((key.to_string(), v));
            }
        }
        if let Some(Value::Array(list)) = tc_get("additional_special_tokens") {
            additional.extend(list.iter().filter_map(|v| SpecialAttr::from_json(v, false)));
        }
        if legacy {
            if let Some(Value::Object(m)) = stm {
                for (key, v) in m {
                    if key == "additional_special_tokens" {
                        if let Value::Array(list) = v {
                            for t in list.iter().filter_map(|t| SpecialAttr::from_json(t, true)) {
                                if !additional.contains(&t) {
                                    additional.push(t);
                                }
                            }
                        }
                    } else if SPECIAL_ATTRS.contains(&key.as_str()) {
                        let value = SpecialAttr::from_json(v, true);
                        attrs.retain(|(k, _)| k != key);
                        if let Some(value) = value {
                            attrs.push((key.clone(), value));
                        }
                    }
                }
                attrs.sort_by_key(|(k, _)| SPECIAL_ATTRS.iter().position(|a| a == k));
            }
        }
        // Attribute values naming a known added token become that token.
        if !by_content.is_empty() {
            for (_, v) in &mut attrs {
                if let Some(t) = by_content.get(v.content()) {
                    *v = SpecialAttr::Tok(t.clone());
                }
            }
        }
        // The fast tokenizer's `setdefault` of `pad_token` from tokenizer.json's padding
        // settings, when `pad_token` was not given at all.
        let pad_given = if legacy {
            stm.and_then(|m| m.get("pad_token")).is_some()
                || tc.is_some_and(|m| m.contains_key("pad_token"))
        } else {
            tc.is_some_and(|m| m.contains_key("pad_token"))
        };
        if !pad_given {
            if let Some(v) = tj
                .get("padding")
                .and_then(|p| p.get("pad_token"))
                .and_then(|v| SpecialAttr::from_json(v, false))
            {
                attrs.push(("pad_token".into(), v));
                attrs.sort_by_key(|(k, _)| SPECIAL_ATTRS.iter().position(|a| a == k));
            }
        }
        let mut extended: Vec<SpecialAttr> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let extra = match tc_get("extra_special_tokens") {
            Some(Value::Object(m)) => m
                .values()
                .filter_map(|v| SpecialAttr::from_json(v, false))
                .collect(),
            _ => Vec::new(),
        };
        for v in attrs
            .into_iter()
            .map(|(_, v)| v)
            .chain(additional)
            .chain(extra)
        {
            if seen.insert(v.content().to_owned()) {
                extended.push(v);
            }
        }
        let special_strings: HashSet<&str> = extended.iter().map(SpecialAttr::content).collect();

        // 3. The fast tokenizer re-adds every token of its `added_tokens_decoder` (it means to
        // skip those the backend already has, but compares them with the backend's ids, so
        // none is skipped), then the special-token attributes it does not know yet.
        let mut to_add: Vec<SpecialAttr> =
            decoder.values().cloned().map(SpecialAttr::Tok).collect();
        let encoder: HashSet<String> = av
            .enc
            .keys()
            .cloned()
            .chain(to_add.iter().map(|t| t.content().to_owned()))
            .collect();
        for v in &extended {
            let fresh = match v {
                // An AddedToken never equals a string, so it is always re-added.
                SpecialAttr::Tok(_) => !to_add.contains(v),
                SpecialAttr::Str(s) => !encoder.contains(s) && !to_add.contains(v),
            };
            if fresh {
                to_add.push(v.clone());
            }
        }
        for v in to_add {
            let tok = match v {
                SpecialAttr::Tok(mut t) => {
                    t.special = t.special || special_strings.contains(t.content.as_str());
                    t
                }
                SpecialAttr::Str(s) => {
                    let special = special_strings.contains(s.as_str());
                    AddedTok::plain(&s, special)
                }
            };
            av.add(tok);
        }

        // 4. `get_vocab()` and the converters' reverse map.
        let mut content_to_id: HashMap<String, u64> = model_entries
            .iter()
            .map(|&(t, id)| (t.to_owned(), id))
            .collect();
        for (t, &id) in &av.enc {
            content_to_id.insert(t.clone(), id);
        }
        let mut reverse: HashMap<u64, String> = HashMap::with_capacity(content_to_id.len());
        for &(tok, id) in &model_entries {
            if content_to_id.get(tok) == Some(&id) {
                reverse.insert(id, tok.to_owned());
            }
        }
        // On an id shared by a model token and an added token (only in hand-edited files,
        // where Python's result depends on hash order) the added token wins.
        for (&id, t) in &av.dec {
            reverse.insert(id, t.content.clone());
        }
        let added_contents = av.dec.values().map(|t| t.content.clone()).collect();
        Ok(HfVocab {
            content_to_id,
            reverse,
            added: av.dec,
            added_contents,
            warnings,
        })
    }
}

/// A piece score as the reference writes it: the float goes through a Python float (a
/// double), which turns a signalling NaN into a quiet one.
fn spm_score(score: f32) -> f32 {
    if score.is_nan() {
        f32::from_bits(score.to_bits() | 0x0040_0000)
    } else {
        score
    }
}

fn spm_token_type(kind: PieceType) -> TokenType {
    match kind {
        PieceType::Unknown => TokenType::Unknown,
        PieceType::Control => TokenType::Control,
        PieceType::Unused => TokenType::Unused,
        PieceType::Byte => TokenType::Byte,
        PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
    }
}

/// An id from `added_tokens.json` / `added_tokens_decoder` as an index: `None` (with a warning)
/// when it is not below the vocabulary size, an error when negative (Python would index from
/// the end).
fn index_in(
    id: i128,
    vocab_size: usize,
    path: &Path,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<usize>, TokenizerError> {
    if id < 0 {
        return Err(invalid(
            path,
            format!("token id {id} of {what:?} is negative"),
        ));
    }
    match usize::try_from(id) {
        Ok(i) if i < vocab_size => Ok(Some(i)),
        _ => {
            warnings.push(format!(
                "{}: ignoring token {id} ({what:?}): not below vocab_size {vocab_size}",
                path.display()
            ));
            Ok(None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gguf-py SpecialVocab

/// An insertion-ordered map (Python dict semantics: re-assigning keeps the position).
#[derive(Default)]
struct Ordered<T>(Vec<(String, T)>);

impl<T: Clone + PartialEq> Ordered<T> {
    fn get(&self, k: &str) -> Option<&T> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }

    fn set(&mut self, k: &str, v: T) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_owned(), v)),
        }
    }

    fn set_default(&mut self, k: &str, v: T) {
        if self.get(k).is_none() {
            self.0.push((k.to_owned(), v));
        }
    }
}

struct SpecialVocab<'a> {
    ctx: &'a Ctx<'a>,
    n_vocab: Option<usize>,
    load_merges: bool,
    types: Vec<String>,
    ids: Ordered<u64>,
    add: Ordered<bool>,
    merges: Vec<String>,
    chat_template: Option<Value>,
    lowercase: Option<bool>,
    strip_accents: Option<bool>,
    warnings: Vec<String>,
}

impl<'a> SpecialVocab<'a> {
    fn load(
        ctx: &'a Ctx<'a>,
        load_merges: bool,
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab<'a>, TokenizerError> {
        let mut sv = SpecialVocab {
            ctx,
            n_vocab,
            load_merges,
            types: SPECIAL_TYPES.iter().map(|s| s.to_string()).collect(),
            ids: Ordered::default(),
            add: Ordered::default(),
            merges: Vec::new(),
            chat_template: None,
            lowercase: None,
            strip_accents: None,
            warnings: Vec::new(),
        };
        sv.load_tokenizer_files()?;
        sv.load_config()?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.load_merges_txt()?;
        }
        Ok(sv)
    }

    fn flavor(&self) -> Flavor {
        self.ctx.flavor
    }

    fn set_special_token(
        &mut self,
        typ: &str,
        tid: &Value,
        path: &Path,
    ) -> Result<(), TokenizerError> {
        let Some(id) = py_int(tid) else {
            return Ok(());
        };
        if id < 0 {
            return Err(invalid(
                path,
                format!("invalid value for special token type {typ}: {id}"),
            ));
        }
        let in_range = match self.n_vocab {
            None => true,
            Some(n) => id < n as i128,
        };
        if in_range {
            if self.ids.get(typ).is_none() {
                let id = u64::try_from(id).map_err(|_| {
                    invalid(
                        path,
                        format!("special token id {id} for {typ} is too large"),
                    )
                })?;
                self.ids.set(typ, id);
            }
        } else {
            self.warnings.push(format!(
                "special token type {typ}, id {id} out of range, must be under {} - skipping",
                self.n_vocab.unwrap_or(0)
            ));
        }
        Ok(())
    }

    fn load_tokenizer_files(&mut self) -> Result<(), TokenizerError> {
        let dir = self.ctx.dir;
        let tj_path = dir.join("tokenizer.json");
        let tokenizer = read_json_opt(&tj_path)?;
        let mut added_tokens: Vec<Value> = Vec::new();
        if let Some(tok) = &tokenizer {
            if self.load_merges {
                let merges = tok.get("model").and_then(|m| m.get("merges"));
                if let Some(Value::Array(list)) = merges {
                    if !list.is_empty() {
                        self.merges = convert_merges(list, &tj_path, &mut self.warnings)?;
                    }
                }
            }
            if self.flavor() == Flavor::Mainline {
                if let Some(n) = tok.get("normalizer").filter(|n| truthy(n)) {
                    self.parse_normalizer(n);
                }
            }
            if let Some(Value::Array(list)) = tok.get("added_tokens") {
                added_tokens = list.clone();
            }
        }

        let tc_path = dir.join("tokenizer_config.json");
        let mut tc: Option<Map<String, Value>> = match read_json_opt(&tc_path)? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(invalid(&tc_path, "not a JSON object")),
        };

        if self.flavor() == Flavor::Mainline {
            if let Some(tok) = tokenizer.as_ref().filter(|t| truthy(t)) {
                self.parse_post_processor(tok, &mut tc);
            }
        }
        let Some(tc) = tc else {
            return Ok(());
        };
        if self.flavor() == Flavor::Mainline && tc.is_empty() {
            return Ok(());
        }

        // Chat template.
        let chat_template = match self.flavor() {
            Flavor::BitnetCpp => tc.get("chat_template").cloned().unwrap_or(Value::Null),
            Flavor::Mainline => match tc.get("chat_template") {
                Some(v) => v.clone(),
                None => self.chat_template_files()?.unwrap_or(Value::Null),
            },
        };
        match chat_template {
            Value::Null => self.chat_template = None,
            v @ (Value::String(_) | Value::Array(_)) => self.chat_template = Some(v),
            _ => self.warnings.push(format!(
                "bad type for chat_template field in {} - ignoring",
                tc_path.display()
            )),
        }

        // add_<type>_token flags and <type>_token ids.
        let types = self.types.clone();
        for typ in &types {
            if let Some(Value::Bool(b)) = tc.get(&format!("add_{typ}_token")) {
                match self.flavor() {
                    Flavor::BitnetCpp => self.add.set(typ, *b),
                    Flavor::Mainline => match self.add.get(typ) {
                        None => self.add.set(typ, *b),
                        Some(prev) if prev != b => self.warnings.push(format!(
                            "mismatch between tokenizer_config add_{typ}_token({b}) and tokenizer \
                             post_processor<{typ}>({prev}) - opting for the latter"
                        )),
                        Some(_) => {}
                    },
                }
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s,
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s,
                    _ => continue,
                },
                _ => continue,
            };
            let found = added_tokens
                .iter()
                .find(|a| a.get("content").and_then(Value::as_str) == Some(content.as_str()))
                .map(|a| a.get("id").cloned().unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            self.set_special_token(typ, &found, &tc_path)?;
        }
        Ok(())
    }

    /// llama.cpp: `chat_template.jinja` (with `additional_chat_templates/*.jinja`), else
    /// `chat_template.json`'s `chat_template`.
    fn chat_template_files(&self) -> Result<Option<Value>, TokenizerError> {
        let dir = self.ctx.dir;
        let jinja = dir.join("chat_template.jinja");
        let json = dir.join("chat_template.json");
        if jinja.is_file() {
            let main = read_text(&jinja)?;
            let extra_dir = dir.join("additional_chat_templates");
            let mut extra: Vec<(String, PathBuf)> = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&extra_dir) {
                for entry in rd.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".jinja") && entry.path().is_file() {
                        let stem = match name.strip_suffix(".jinja") {
                            Some("") | None => name.clone(),
                            Some(s) => s.to_owned(),
                        };
                        extra.push((stem, entry.path()));
                    }
                }
            }
            if extra.is_empty() {
                return Ok(Some(Value::String(main)));
            }
            // Python lists the directory in file-system order; bitconv sorts by name.
            extra.sort();
            let mut list = vec![template_choice("default", main)];
            for (stem, path) in extra {
                list.push(template_choice(&stem, read_text(&path)?));
            }
            return Ok(Some(Value::Array(list)));
        }
        if json.is_file() {
            return match read_json_opt(&json)? {
                Some(Value::Object(m)) => Ok(m.get("chat_template").cloned()),
                _ => Err(invalid(&json, "not a JSON object")),
            };
        }
        Ok(None)
    }

    /// llama.cpp: the `Lowercase` / `StripAccents` / `BertNormalizer` flags, recursively
    /// through `Sequence`.
    fn parse_normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(Value::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.lowercase = (!v.is_null()).then(|| truthy(v));
                }
                if let Some(v) = n.get("strip_accents") {
                    self.strip_accents = (!v.is_null()).then(|| truthy(v));
                }
            }
            Some("Sequence") => {
                if let Some(Value::Array(list)) = n.get("normalizers") {
                    for inner in list {
                        self.parse_normalizer(inner);
                    }
                }
            }
            _ => {}
        }
    }

    /// llama.cpp's reading of `tokenizer.json`'s post-processor into `add_bos` / `add_eos` /
    /// `add_sep` (and, when tokens are implied, into `tokenizer_config` entries).
    fn parse_post_processor(&mut self, tok: &Value, tc: &mut Option<Map<String, Value>>) {
        let get = |tc: &Option<Map<String, Value>>, k: &str| {
            tc.as_ref()
                .and_then(|m| m.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let tc_truthy =
            |tc: &Option<Map<String, Value>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        let put = |tc: &mut Option<Map<String, Value>>, k: &str, v: &Value| {
            if let Some(m) = tc.as_mut() {
                m.insert(k.to_owned(), v.clone());
            }
        };
        let mut special_bos = get(tc, "bos_token");
        let mut special_cls = get(tc, "cls_token");
        let mut special_eos = get(tc, "eos_token");
        let mut special_sep = get(tc, "sep_token");
        if !truthy(&special_bos) && truthy(&special_cls) && tc_truthy(tc) {
            special_bos = special_cls.clone();
            put(tc, "bos_token", &special_bos);
        }
        if !truthy(&special_eos) && truthy(&special_sep) && tc_truthy(tc) {
            special_eos = special_sep.clone();
            put(tc, "eos_token", &special_eos);
        }
        let Some(pp) = tok.get("post_processor").filter(|p| truthy(p)) else {
            return;
        };
        let Some(pp_obj) = pp.as_object() else {
            return;
        };
        let processors: Vec<&Value> = match pp_obj.get("processors") {
            None => vec![pp],
            Some(Value::Array(list)) => list.iter().collect(),
            Some(_) => Vec::new(),
        };
        for processor in processors {
            match processor.get("type").and_then(Value::as_str) {
                Some("ByteLevel") => {
                    self.add.set_default("bos", false);
                    self.add.set_default("eos", false);
                }
                Some("RobertaProcessing") => {
                    self.add.set("bos", true);
                    self.add.set("eos", true);
                    self.add.set("sep", true);
                    if !truthy(&special_cls) && tc_truthy(tc) {
                        special_cls = first_of(processor.get("cls"), &special_bos);
                        put(tc, "cls_token", &special_cls);
                    }
                    if !truthy(&special_sep) && tc_truthy(tc) {
                        special_sep = first_of(processor.get("sep"), &special_eos);
                        put(tc, "sep_token", &special_sep);
                    }
                }
                Some("TemplateProcessing") => {
                    let single = array_or_empty(processor.get("single"));
                    let pair = array_or_empty(processor.get("pair"));
                    let mut special_first = Value::Null;
                    let mut special_last = Value::Null;
                    if single.len() > 1 {
                        special_first = special_token_id(&single[0]);
                        if truthy(&special_first) {
                            if !tc_truthy(tc) {
                                special_bos = special_first.clone();
                            } else if special_first != special_bos && special_first != special_cls {
                                if !truthy(&special_bos) {
                                    special_bos = special_first.clone();
                                    put(tc, "bos_token", &special_bos);
                                }
                                if !truthy(&special_cls) {
                                    special_cls = special_first.clone();
                                    put(tc, "cls_token", &special_cls);
                                }
                            }
                            let is_bos =
                                special_first == special_bos || special_first == special_cls;
                            if !is_bos {
                                self.warnings.push(format!(
                                    "unknown leading special token {special_first} in \
                                     TemplateProcessing<single>"
                                ));
                            }
                            self.add.set("bos", is_bos);
                        }
                        special_last = special_token_id(&single[single.len() - 1]);
                        if truthy(&special_last) {
                            if !tc_truthy(tc) {
                                special_eos = special_last.clone();
                            } else if special_last != special_eos {
                                if !self.types.iter().any(|t| t == "eot") {
                                    self.types.push("eot".into());
                                    put(tc, "eot_token", &special_eos);
                                } else if !self.types.iter().any(|t| t == "eom") {
                                    self.types.push("eom".into());
                                    put(tc, "eom_token", &special_eos);
                                } else {
                                    self.warnings.push(format!(
                                        "overriding EOS token {special_eos} with {special_last} \
                                         without EOT/EOM fallback"
                                    ));
                                }
                                special_eos = special_last.clone();
                                put(tc, "eos_token", &special_eos);
                            }
                            self.add.set("eos", special_last == special_eos);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(
                            truthy(&special_first) && special_token_id(&pair[0]) == special_first,
                        );
                        let drop_last = truthy(&special_last)
                            && special_token_id(&pair[pair.len() - 1]) == special_last;
                        let end = pair.len() - usize::from(drop_last);
                        let body: &[Value] = if start < end { &pair[start..end] } else { &[] };
                        if !body.is_empty() {
                            let a = sequence_id(&body[0]);
                            let b = sequence_id(&body[body.len() - 1]);
                            if a.as_deref() == Some("A")
                                && b.as_deref() == Some("B")
                                && body.len() > 2
                            {
                                let mid = &body[1..body.len() - 1];
                                let mut add_sep = false;
                                let e = special_token_id(&mid[0]);
                                if truthy(&e)
                                    && (e == special_sep || e == special_eos)
                                    && !truthy(&special_last)
                                {
                                    add_sep = true;
                                }
                                if mid.len() == 2 {
                                    let e2 = special_token_id(&mid[1]);
                                    if truthy(&e2) && (e2 == special_sep || e2 == special_eos) {
                                        add_sep = true;
                                    }
                                }
                                self.add.set("sep", add_sep);
                                if add_sep && !truthy(&special_sep) && tc_truthy(tc) {
                                    put(tc, "sep_token", &special_eos);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn load_config(&mut self) -> Result<(), TokenizerError> {
        let Some(cfg) = self.ctx.config else {
            return Ok(());
        };
        let path = self.ctx.config_path;
        let types = self.types.clone();
        for typ in &types {
            let key = format!("{typ}_token_id");
            let mut v = cfg.get(&key).cloned().unwrap_or(Value::Null);
            if self.flavor() == Flavor::Mainline && v.is_null() {
                if let Some(tc) = cfg.get("text_config") {
                    v = tc.get(&key).cloned().unwrap_or(Value::Null);
                }
            }
            self.set_special_token(typ, &v, path)?;
        }
        Ok(())
    }

    fn load_merges_txt(&mut self) -> Result<(), TokenizerError> {
        let path = self.ctx.dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text = read_text(&path)?;
        let mut lines = text.split('\n').peekable();
        let mut line_num = 0usize;
        if lines.peek().is_some_and(|l| py_strip(l).starts_with('#')) {
            lines.next();
            line_num = 1;
        }
        let mut merges = Vec::new();
        for line in lines {
            line_num += 1;
            let line = py_strip(line);
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split(py_isspace).filter(|p| !p.is_empty()).collect();
            if parts.len() != 2 {
                self.warnings.push(format!(
                    "merges.txt: line {line_num}: entry malformed, ignoring"
                ));
                continue;
            }
            merges.push(format!("{} {}", parts[0], parts[1]));
        }
        self.merges = merges;
        Ok(())
    }

    /// gguf-py's `add_to_gguf`: the special entries in written order, the merges, and the
    /// warnings.
    fn finish(mut self) -> Result<Finished, TokenizerError> {
        let flavor = self.flavor();
        let mut kv = KvList {
            flavor,
            path: self.ctx.dir.join("tokenizer_config.json"),
            entries: Vec::new(),
        };
        for (typ, id) in std::mem::take(&mut self.ids.0) {
            let Some(key) = id_key(flavor, &typ) else {
                self.warnings.push(format!(
                    "no handler for special token type {typ} with id {id} - skipping"
                ));
                continue;
            };
            let id = u32::try_from(id).map_err(|_| {
                invalid(
                    self.ctx.dir,
                    format!("special token id {id} for {typ} does not fit in 32 bits"),
                )
            })?;
            kv.push(key, TokValue::U32(id))?;
        }
        for (typ, value) in std::mem::take(&mut self.add.0) {
            let Some(key) = add_key(flavor, &typ) else {
                self.warnings.push(format!(
                    "no handler for add_{typ}_token with value {value} - skipping"
                ));
                continue;
            };
            kv.push(key, TokValue::Bool(value))?;
        }
        if let Some(ct) = self.chat_template.take() {
            add_chat_template(&mut kv, ct)?;
        }
        if flavor == Flavor::Mainline {
            if let Some(b) = self.lowercase {
                kv.push("tokenizer.ggml.normalizer.lowercase", TokValue::Bool(b))?;
            }
            if let Some(b) = self.strip_accents {
                kv.push("tokenizer.ggml.normalizer.strip_accents", TokValue::Bool(b))?;
            }
        }
        let merges = (!self.merges.is_empty()).then_some(self.merges);
        Ok((kv.entries, merges, self.warnings))
    }
}

/// The special entries, the merges, and the warnings.
type Finished = (Vec<(String, TokValue)>, Option<Vec<String>>, Vec<String>);

/// Key/value pairs with gguf-py's duplicate-key rule: the fork raises, mainline overwrites the
/// value in place. `path` (the file the chat templates come from) is named in errors.
struct KvList {
    flavor: Flavor,
    path: PathBuf,
    entries: Vec<(String, TokValue)>,
}

impl KvList {
    fn push(&mut self, key: &str, value: TokValue) -> Result<(), TokenizerError> {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            None => self.entries.push((key.to_owned(), value)),
            Some(slot) => match self.flavor {
                Flavor::Mainline => slot.1 = value,
                Flavor::BitnetCpp => {
                    return Err(invalid(&self.path, format!("duplicated key name {key:?}")))
                }
            },
        }
        Ok(())
    }

    /// gguf-py's `add_string`: empty strings are not written.
    fn push_str(&mut self, key: &str, value: &Value) -> Result<(), TokenizerError> {
        match value {
            Value::String(s) if s.is_empty() => Ok(()),
            Value::String(s) => self.push(key, TokValue::Str(s.clone())),
            v if !truthy(v) => Ok(()),
            v => Err(invalid(
                &self.path,
                format!("chat template {v} is not a string"),
            )),
        }
    }
}

/// gguf-py's `add_chat_template`: a string, or a list of `{name, template}` choices written as
/// `tokenizer.chat_template.<name>` keys, a `tokenizer.chat_templates` name list, and the
/// `default` choice as `tokenizer.chat_template`.
fn add_chat_template(kv: &mut KvList, ct: Value) -> Result<(), TokenizerError> {
    let choices = match ct {
        Value::Array(choices) => choices,
        other => return kv.push_str(KEY_CHAT_TEMPLATE, &other),
    };
    let mut default: Option<Value> = None;
    // Python collects the names in a set (arbitrary order); bitconv keeps first-seen order.
    let mut names: Vec<String> = Vec::new();
    for choice in &choices {
        let Some(obj) = choice.as_object() else {
            return Err(invalid(
                &kv.path,
                format!("chat template entry {choice} is not an object"),
            ));
        };
        let name = match obj.get("name") {
            None => "",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(invalid(
                    &kv.path,
                    format!("chat template name {other} is not a string"),
                ))
            }
        };
        let template = obj.get("template").cloned().unwrap_or(Value::Null);
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if name.is_empty() || template.is_null() {
            continue;
        }
        if name == "default" {
            default = Some(template);
        } else {
            if !names.contains(&name) {
                names.push(name.clone());
            }
            kv.push_str(&format!("{KEY_CHAT_TEMPLATE}.{name}"), &template)?;
        }
    }
    if !names.is_empty() {
        kv.push(KEY_CHAT_TEMPLATES, TokValue::ArrStr(names))?;
    }
    match default {
        Some(t) => kv.push_str(KEY_CHAT_TEMPLATE, &t),
        None => Ok(()),
    }
}

/// `model.merges` of `tokenizer.json` as GGUF merge strings.
/// Every merge must join two tokens of the vocabulary (the `tokenizers` library refuses a file
/// whose merges do not); an error names the file, the merge and the missing token.
fn check_merges(merges: &[String], tokens: &[String], path: &Path) -> Result<(), TokenizerError> {
    let vocab: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    for (i, m) in merges.iter().enumerate() {
        let Some((a, b)) = m.split_once(' ') else {
            return Err(invalid(
                path,
                format!("merge {i} ({m:?}) is not two tokens"),
            ));
        };
        for part in [a, b] {
            // A space inside a part was written as U+0120 (see `convert_merges`).
            if !vocab.contains(part) && !vocab.contains(part.replace('\u{0120}', " ").as_str()) {
                return Err(invalid(
                    path,
                    format!("merge {i} ({m:?}) names {part:?}, which is not in the vocabulary"),
                ));
            }
        }
    }
    Ok(())
}

fn convert_merges(
    list: &[Value],
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, TokenizerError> {
    let bad = || invalid(path, "unknown tokenizer merges format");
    match &list[0] {
        Value::String(_) => list
            .iter()
            .map(|m| m.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Value::Array(first) if first.len() == 2 && first[0].is_string() => {
            let mut spaces = false;
            let mut out = Vec::with_capacity(list.len());
            for pair in list {
                let parts = pair.as_array().ok_or_else(bad)?;
                let mut merged = String::new();
                for (i, part) in parts.iter().enumerate() {
                    let s = part.as_str().ok_or_else(bad)?;
                    if i > 0 {
                        merged.push(' ');
                    }
                    for c in s.chars() {
                        if c == ' ' {
                            spaces = true;
                            merged.push('\u{0120}');
                        } else {
                            merged.push(c);
                        }
                    }
                }
                out.push(merged);
            }
            if spaces {
                warnings.push("spaces in merges detected, encoding as 'Ġ' (U+0120)".into());
            }
            Ok(out)
        }
        _ => Err(bad()),
    }
}

fn template_choice(name: &str, template: String) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(name.into()));
    m.insert("template".into(), Value::String(template));
    Value::Object(m)
}

fn special_token_id(v: &Value) -> Value {
    v.get("SpecialToken")
        .and_then(|s| s.get("id"))
        .cloned()
        .unwrap_or(Value::Null)
}

fn sequence_id(v: &Value) -> Option<String> {
    v.get("Sequence")
        .and_then(|s| s.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn array_or_empty(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// Python's `processor.get(key, [default])[0]`.
fn first_of(v: Option<&Value>, default: &Value) -> Value {
    match v {
        None => default.clone(),
        Some(Value::Array(a)) => a.first().cloned().unwrap_or(Value::Null),
        Some(Value::String(s)) => s
            .chars()
            .next()
            .map(|c| Value::String(c.to_string()))
            .unwrap_or(Value::Null),
        Some(_) => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------------
// Python value semantics and file helpers

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The value as a Python `int` (`bool` included, as `isinstance(x, int)` holds for it).
fn py_int(v: &Value) -> Option<i128> {
    match v {
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    }
}

/// Python's `int(s)` for a decimal string: surrounding whitespace, a sign, and single
/// underscores between digits are allowed.
fn parse_py_int(s: &str) -> Option<i128> {
    let t = py_strip(s);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let v: i128 = digits.replace('_', "").parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Python's `str.isspace` for one character.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
fn py_strip(s: &str) -> &str {
    s.trim_matches(py_isspace)
}

fn invalid(path: &Path, what: impl Into<String>) -> TokenizerError {
    TokenizerError::Invalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// Reads and parses a JSON file, or `None` when it is not a file.
fn read_json_opt(path: &Path) -> Result<Option<Value>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| TokenizerError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads a UTF-8 text file the way Python's text mode does (universal newlines: `\r\n` and
/// `\r` become `\n`).
fn read_text(path: &Path) -> Result<String, TokenizerError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        invalid(
            path,
            format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    Ok(if text.contains('\r') {
        text.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny");

    fn tiny(rel: &str) -> PathBuf {
        Path::new(TINY).join(rel)
    }

    /// A GGUF metadata value as stored (floats kept as bits so comparisons are exact).
    #[derive(Clone, Debug, PartialEq)]
    enum Gv {
        Scalar { ty: u32, bits: u64 },
        Str(String),
        Arr { elem: u32, items: Vec<Gv> },
    }

    /// A minimal GGUF v3 reader for the KV section (test use only).
    fn read_gguf_kvs(path: &Path) -> Vec<(String, Gv)> {
        struct Cur<'a> {
            b: &'a [u8],
            pos: usize,
        }
        impl Cur<'_> {
            fn take(&mut self, n: usize) -> &[u8] {
                let s = &self.b[self.pos..self.pos + n];
                self.pos += n;
                s
            }
            fn u32(&mut self) -> u32 {
                u32::from_le_bytes(self.take(4).try_into().unwrap())
            }
            fn u64(&mut self) -> u64 {
                u64::from_le_bytes(self.take(8).try_into().unwrap())
            }
            fn string(&mut self) -> String {
                let n = self.u64() as usize;
                String::from_utf8(self.take(n).to_vec()).unwrap()
            }
            fn value(&mut self, ty: u32) -> Gv {
                let width = match ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => return Gv::Str(self.string()),
                    9 => {
                        let elem = self.u32();
                        let n = self.u64() as usize;
                        let items = (0..n).map(|_| self.value(elem)).collect();
                        return Gv::Arr { elem, items };
                    }
                    other => panic!("bad GGUF type {other}"),
                };
                let mut buf = [0u8; 8];
                buf[..width].copy_from_slice(self.take(width));
                Gv::Scalar {
                    ty,
                    bits: u64::from_le_bytes(buf),
                }
            }
        }
        let bytes = std::fs::read(path).unwrap();
        let mut c = Cur { b: &bytes, pos: 0 };
        assert_eq!(c.take(4), b"GGUF");
        assert_eq!(c.u32(), 3);
        let _n_tensors = c.u64();
        let n_kv = c.u64();
        (0..n_kv)
            .map(|_| {
                let k = c.string();
                let ty = c.u32();
                (k, c.value(ty))
            })
            .collect()
    }

    fn to_gv(v: &TokValue) -> Gv {
        let arr = |elem, items: Vec<Gv>| Gv::Arr { elem, items };
        match v {
            TokValue::Str(s) => Gv::Str(s.clone()),
            TokValue::U32(x) => Gv::Scalar {
                ty: 4,
                bits: u64::from(*x),
            },
            TokValue::Bool(b) => Gv::Scalar {
                ty: 7,
                bits: u64::from(*b),
            },
            TokValue::ArrStr(a) => arr(8, a.iter().map(|s| Gv::Str(s.clone())).collect()),
            TokValue::ArrF32(a) => arr(
                6,
                a.iter()
                    .map(|f| Gv::Scalar {
                        ty: 6,
                        bits: u64::from(f.to_bits()),
                    })
                    .collect(),
            ),
            TokValue::ArrI32(a) => arr(
                5,
                a.iter()
                    .map(|i| Gv::Scalar {
                        ty: 5,
                        bits: u64::from(*i as u32),
                    })
                    .collect(),
            ),
        }
    }

    fn tokenizer_kvs(gguf: &Path) -> Vec<(String, Gv)> {
        read_gguf_kvs(gguf)
            .into_iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .collect()
    }

    fn assert_same_as_reference(ckpt: &str, flavor: Flavor, gguf: &str) {
        let meta = TokenizerMeta::from_dir(&tiny(ckpt), flavor, None).unwrap();
        let ours: Vec<(String, Gv)> = meta
            .kv_entries()
            .iter()
            .map(|(k, v)| (k.clone(), to_gv(v)))
            .collect();
        let theirs = tokenizer_kvs(&tiny(gguf));
        let keys = |l: &[(String, Gv)]| l.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&theirs), "key order for {gguf}");
        for ((k, a), (_, b)) in ours.iter().zip(&theirs) {
            assert!(a == b, "value of {k} differs from {gguf}");
        }
        assert!(meta.warnings.is_empty(), "{:?}", meta.warnings);
    }

    #[test]
    fn tiny_bitnet_cpp_matches_reference_bit_for_bit() {
        for (ckpt, gguf) in [
            ("ckpt-fp16", "bitnet-cpp/from-fp16/ggml-model-f32.gguf"),
            ("ckpt-fp16", "bitnet-cpp/from-fp16/ggml-model-i2_s.gguf"),
            ("ckpt-fp32", "bitnet-cpp/from-fp32/ggml-model-f32.gguf"),
            ("ckpt-fp32", "bitnet-cpp/from-fp32/ggml-model-tl2.gguf"),
        ] {
            assert_same_as_reference(ckpt, Flavor::BitnetCpp, gguf);
        }
    }

    #[test]
    fn tiny_llama_cpp_matches_reference_bit_for_bit() {
        for gguf in [
            "llama-cpp/tiny-f32.gguf",
            "llama-cpp/tiny-tq1_0.gguf",
            "llama-cpp/tiny-tq2_0.gguf",
        ] {
            assert_same_as_reference("ckpt-fp16", Flavor::Mainline, gguf);
        }
    }

    #[test]
    fn tiny_key_order_per_flavor() {
        let order = |flavor| {
            TokenizerMeta::from_dir(&tiny("ckpt-fp16"), flavor, None)
                .unwrap()
                .kv_entries()
                .into_iter()
                .map(|(k, _)| k.trim_start_matches("tokenizer.ggml.").to_owned())
                .collect::<Vec<_>>()
        };
        let common = [
            "model",
            "pre",
            "tokens",
            "scores",
            "token_type",
            "bos_token_id",
            "eos_token_id",
            "unknown_token_id",
            "padding_token_id",
            "add_bos_token",
        ];
        let mut bitnet: Vec<&str> = common.to_vec();
        bitnet.push("add_eos_token");
        let mut llama: Vec<&str> = common.to_vec();
        llama.extend(["add_sep_token", "add_eos_token"]);
        assert_eq!(order(Flavor::BitnetCpp), bitnet);
        assert_eq!(order(Flavor::Mainline), llama);
    }

    #[test]
    fn tiny_padding_and_types_differ_by_flavor() {
        let b = TokenizerMeta::from_dir(&tiny("ckpt-fp16"), Flavor::BitnetCpp, None).unwrap();
        let l = TokenizerMeta::from_dir(&tiny("ckpt-fp16"), Flavor::Mainline, None).unwrap();
        assert_eq!(b.tokens[1000..], ["[PAD1]", "[PAD2]"]);
        assert_eq!(l.tokens[1000..], ["[PAD1000]", "[PAD1001]"]);
        assert_eq!(b.scores.as_ref().unwrap()[1000..], [-1000.0, -1000.0]);
        assert_eq!(l.scores.as_ref().unwrap()[1000..], [-10000.0, -10000.0]);
        assert_eq!(b.token_types[..3], [2, 3, 3]);
        assert_eq!(l.token_types[..3], [3, 3, 3]);
        assert_eq!(b.scores.as_ref().unwrap()[..3], [0.0, 0.0, 0.0]);
        assert_eq!(l.scores.as_ref().unwrap()[..3], [-1000.0, -1000.0, -1000.0]);
        assert_eq!(b.model, "llama");
        assert_eq!(b.pre.as_deref(), Some("default"));
        assert!(b.merges.is_none());
    }

    // -----------------------------------------------------------------------------------------
    // Synthetic checkpoints

    /// A scratch directory removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "bitconv-tok-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }

        fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> &TempDir {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
            self
        }

        /// Copies the tiny checkpoint's tokenizer files.
        fn with_tiny_tokenizer(&self) -> &TempDir {
            for f in [
                "config.json",
                "tokenizer.model",
                "tokenizer.json",
                "tokenizer_config.json",
            ] {
                self.write(f, std::fs::read(tiny("ckpt-fp16").join(f)).unwrap());
            }
            self
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn kv_map(meta: &TokenizerMeta) -> Vec<(String, TokValue)> {
        meta.kv_entries()
            .into_iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "tokenizer.ggml.tokens" | "tokenizer.ggml.scores" | "tokenizer.ggml.token_type"
                )
            })
            .collect()
    }

    fn s(k: &str, v: TokValue) -> (String, TokValue) {
        (k.to_owned(), v)
    }

    #[test]
    fn added_tokens_json_per_flavor() {
        let d = TempDir::new("added");
        d.with_tiny_tokenizer()
            .write(
                "config.json",
                r#"{"vocab_size": 1004, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 1003}"#,
            )
            .write(
                "added_tokens.json",
                r#"{"<extra>": 1000, "</s>": 2, "<x▁y>": 1001, "<|eot|>": 5000}"#,
            );
        let b = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap();
        assert_eq!(b.tokens[1000..], ["<extra>", "<x▁y>", "<|eot|>", "[PAD1]"]);
        assert_eq!(b.token_types[1000..], [4, 4, 4, 5]);
        assert_eq!(
            b.scores.as_ref().unwrap()[1000..],
            [-1000.0, -1000.0, -1000.0, -1000.0]
        );
        let l = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, None).unwrap();
        // "</s>" overwrites id 2 as USER_DEFINED, then added_tokens_decoder makes it CONTROL.
        assert_eq!(l.tokens[..3], ["<unk>", "<s>", "</s>"]);
        assert_eq!(l.token_types[..3], [3, 3, 3]);
        assert_eq!(
            l.tokens[1000..],
            ["<extra>", "<x▁y>", "[PAD1002]", "[PAD1003]"]
        );
        assert_eq!(l.token_types[1000..], [4, 4, 5, 5]);
        assert_eq!(
            l.scores.as_ref().unwrap()[1000..],
            [-1000.0, -1000.0, -10000.0, -10000.0]
        );
        assert!(
            l.warnings.iter().any(|w| w.contains("5000")),
            "{:?}",
            l.warnings
        );
        // Pad id 1003 is in range for both.
        assert!(kv_map(&b).contains(&s("tokenizer.ggml.padding_token_id", TokValue::U32(1003))));
    }

    #[test]
    fn vocab_smaller_than_tokens_is_an_error_for_bitnet_cpp() {
        let d = TempDir::new("small");
        d.with_tiny_tokenizer()
            .write("config.json", r#"{"vocab_size": 999}"#);
        let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
        assert!(e.to_string().contains("vocab_size 999"), "{e}");
        // llama.cpp drops the pieces beyond vocab_size with a warning.
        let l = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, None).unwrap();
        assert_eq!(l.tokens.len(), 999);
        assert!(!l.warnings.is_empty());
    }

    #[test]
    fn special_ids_from_config_only_without_tokenizer_json() {
        let d = TempDir::new("noj");
        d.with_tiny_tokenizer();
        std::fs::remove_file(d.0.join("tokenizer.json")).unwrap();
        d.write(
            "config.json",
            r#"{"vocab_size": 1002, "bos_token_id": 1, "eos_token_id": [2, 3], "pad_token_id": 5000, "unk_token_id": true}"#,
        );
        // special_tokens_map.json and generation_config.json are not consulted.
        d.write("special_tokens_map.json", r#"{"eos_token": "</s>"}"#)
            .write("generation_config.json", r#"{"eos_token_id": 2}"#);
        let b = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap();
        assert_eq!(
            kv_map(&b)[2..],
            [
                s("tokenizer.ggml.bos_token_id", TokValue::U32(1)),
                // Python's bool is an int.
                s("tokenizer.ggml.unknown_token_id", TokValue::U32(1)),
                s("tokenizer.ggml.add_bos_token", TokValue::Bool(true)),
                s("tokenizer.ggml.add_eos_token", TokValue::Bool(false)),
            ]
        );
        assert!(b.warnings.iter().any(|w| w.contains("5000")));
    }

    #[test]
    fn negative_special_id_is_an_error() {
        let d = TempDir::new("neg");
        d.with_tiny_tokenizer()
            .write("config.json", r#"{"vocab_size": 1002, "pad_token_id": -1}"#);
        for flavor in [Flavor::BitnetCpp, Flavor::Mainline] {
            let e = TokenizerMeta::from_dir(&d.0, flavor, None).unwrap_err();
            assert!(e.to_string().contains("config.json"), "{e}");
            assert!(e.to_string().contains("pad"), "{e}");
        }
    }

    #[test]
    fn chat_templates() {
        let d = TempDir::new("chat");
        d.with_tiny_tokenizer();
        let mut tc: Value =
            serde_json::from_slice(&std::fs::read(d.0.join("tokenizer_config.json")).unwrap())
                .unwrap();
        tc["chat_template"] = serde_json::json!([
            {"name": "tool use", "template": "T"},
            {"name": "default", "template": "D"},
            {"name": "rag", "template": ""},
        ]);
        d.write("tokenizer_config.json", tc.to_string());
        for flavor in [Flavor::BitnetCpp, Flavor::Mainline] {
            let m = TokenizerMeta::from_dir(&d.0, flavor, None).unwrap();
            let tail: Vec<_> = kv_map(&m)
                .into_iter()
                .filter(|(k, _)| k.starts_with("tokenizer.chat"))
                .collect();
            assert_eq!(
                tail,
                [
                    s(
                        "tokenizer.chat_template.tool_use",
                        TokValue::Str("T".into())
                    ),
                    s(
                        "tokenizer.chat_templates",
                        TokValue::ArrStr(vec!["tool_use".into(), "rag".into()])
                    ),
                    s("tokenizer.chat_template", TokValue::Str("D".into())),
                ]
            );
        }
        // llama.cpp falls back to chat_template.jinja when tokenizer_config has none.
        tc.as_object_mut().unwrap().remove("chat_template");
        d.write("tokenizer_config.json", tc.to_string())
            .write("chat_template.jinja", "{{ a }}\r\n{{ b }}");
        let l = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, None).unwrap();
        assert_eq!(
            l.special.last().unwrap(),
            &s(
                "tokenizer.chat_template",
                TokValue::Str("{{ a }}\n{{ b }}".into())
            )
        );
        let b = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap();
        assert!(!b
            .special
            .iter()
            .any(|(k, _)| k.starts_with("tokenizer.chat")));
    }

    // -----------------------------------------------------------------------------------------
    // BPE path

    fn bpe_dir(name: &str, merges: Value) -> TempDir {
        let d = TempDir::new(name);
        let tj = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 6, "content": "<|begin_of_text|>", "special": true, "normalized": false},
                {"id": 7, "content": "<|end_of_text|>", "special": true, "normalized": false},
                {"id": 8, "content": "<|reserved_0|>", "special": false, "normalized": false},
                {"id": 9, "content": "my▁word", "special": false, "normalized": false},
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel"},
            "post_processor": {
                "type": "Sequence",
                "processors": [
                    {"type": "ByteLevel", "trim_offsets": false},
                    {
                        "type": "TemplateProcessing",
                        "single": [
                            {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                            {"Sequence": {"id": "A", "type_id": 0}}
                        ],
                        "pair": [
                            {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                            {"Sequence": {"id": "A", "type_id": 0}},
                            {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                            {"Sequence": {"id": "B", "type_id": 1}}
                        ],
                        "special_tokens": {}
                    }
                ]
            },
            "decoder": {"type": "ByteLevel"},
            "model": {
                "type": "BPE",
                "byte_fallback": false,
                "ignore_merges": true,
                "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġa": 5, "c d": 4},
                "merges": merges
            }
        });
        d.write("tokenizer.json", tj.to_string())
            .write(
                "tokenizer_config.json",
                r#"{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": "{{ x }}"}"#,
            )
            .write(
                "config.json",
                r#"{"vocab_size": 12, "bos_token_id": 6, "eos_token_id": 7}"#,
            );
        d
    }

    #[test]
    fn bpe_without_pre_names_the_flag() {
        let d = bpe_dir("nopre", serde_json::json!(["a b"]));
        let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
        assert!(
            matches!(e, TokenizerError::PreTokenizerUnknown { .. }),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.contains("--tokenizer-pre"), "{msg}");
        assert!(msg.contains("tokenizer.json"), "{msg}");
        let e = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, Some("no-such-pre")).unwrap_err();
        assert!(matches!(e, TokenizerError::UnknownPreName { .. }));
        assert!(e.to_string().contains("llama-bpe"));
    }

    #[test]
    fn bpe_bitnet_cpp() {
        let d = bpe_dir("bpeb", serde_json::json!(["a b", "Ġ a"]));
        let m = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("llama-bpe")).unwrap();
        assert_eq!(m.model, "gpt2");
        assert_eq!(m.pre.as_deref(), Some("llama-bpe"));
        assert!(m.scores.is_none());
        assert_eq!(
            m.tokens,
            [
                "a",
                "b",
                "ab",
                "Ġ",
                "c d",
                "Ġa",
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|reserved_0|>",
                "my▁word",
                "[PAD10]",
                "[PAD11]"
            ]
        );
        assert_eq!(m.token_types, [1, 1, 1, 1, 1, 1, 3, 3, 4, 4, 4, 4]);
        assert_eq!(
            kv_map(&m),
            [
                s("tokenizer.ggml.model", TokValue::Str("gpt2".into())),
                s("tokenizer.ggml.pre", TokValue::Str("llama-bpe".into())),
                s(
                    "tokenizer.ggml.merges",
                    TokValue::ArrStr(vec!["a b".into(), "Ġ a".into()])
                ),
                s("tokenizer.ggml.bos_token_id", TokValue::U32(6)),
                s("tokenizer.ggml.eos_token_id", TokValue::U32(7)),
                s("tokenizer.chat_template", TokValue::Str("{{ x }}".into())),
            ]
        );
    }

    #[test]
    fn bpe_llama_cpp_pair_merges_and_post_processor() {
        let d = bpe_dir(
            "bpel",
            serde_json::json!([["a", "b"], ["Ġ", "a"], ["c d", "a"]]),
        );
        let m = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, Some("llama-bpe")).unwrap();
        assert_eq!(
            m.tokens[8..],
            ["<|reserved_0|>", "my word", "[PAD10]", "[PAD11]"]
        );
        assert_eq!(m.token_types, [1, 1, 1, 1, 1, 1, 3, 3, 3, 4, 5, 5]);
        assert_eq!(
            kv_map(&m),
            [
                s("tokenizer.ggml.model", TokValue::Str("gpt2".into())),
                s("tokenizer.ggml.pre", TokValue::Str("llama-bpe".into())),
                s(
                    "tokenizer.ggml.merges",
                    TokValue::ArrStr(vec!["a b".into(), "Ġ a".into(), "cĠd a".into()])
                ),
                s("tokenizer.ggml.bos_token_id", TokValue::U32(6)),
                s("tokenizer.ggml.eos_token_id", TokValue::U32(7)),
                s("tokenizer.ggml.add_bos_token", TokValue::Bool(true)),
                s("tokenizer.ggml.add_eos_token", TokValue::Bool(false)),
                s("tokenizer.ggml.add_sep_token", TokValue::Bool(false)),
                s("tokenizer.chat_template", TokValue::Str("{{ x }}".into())),
            ]
        );
    }

    #[test]
    fn bpe_merges_txt_fallback_and_bad_merges() {
        let d = bpe_dir("bpetxt", serde_json::json!([]));
        d.write(
            "merges.txt",
            "#version: 0.2\r\na b\r\n\r\nbad line here\nĠ  a \n",
        );
        let m = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("gpt-2")).unwrap();
        assert_eq!(m.merges, Some(vec!["a b".into(), "Ġ a".into()]));
        assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
        let d = bpe_dir("bpebad", serde_json::json!([1, 2]));
        let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("gpt-2")).unwrap_err();
        assert!(
            e.to_string().contains("unknown tokenizer merges format"),
            "{e}"
        );
    }

    /// Checked against the reference converters running transformers 4.57: `tokenizers`
    /// renumbers added tokens, a token named by `pad_token` becomes special, a special token
    /// missing from the vocabulary is appended, and `SpecialVocab` still resolves the pad id
    /// from the id stored in tokenizer.json.
    #[test]
    fn bpe_ids_and_special_flags_as_transformers_loads_them() {
        let d = TempDir::new("bpehf");
        let tj = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 7, "content": "<|x|>", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": "plain", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": false},
                {"id": 1, "content": "b", "single_word": false, "lstrip": false,
                 "rstrip": false, "normalized": false, "special": false}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel"},
            "post_processor": null,
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "byte_fallback": false,
                      "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}
        });
        d.write("tokenizer.json", tj.to_string())
            .write(
                "tokenizer_config.json",
                r#"{"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "plain", "eos_token": "<new>"}"#,
            )
            .write("config.json", r#"{"vocab_size": 7}"#);
        for (flavor, pad_type) in [(Flavor::BitnetCpp, 4), (Flavor::Mainline, 5)] {
            let m = TokenizerMeta::from_dir(&d.0, flavor, Some("llama-bpe")).unwrap();
            assert_eq!(
                m.tokens,
                ["a", "b", "ab", "<|x|>", "plain", "<new>", "[PAD6]"]
            );
            assert_eq!(m.token_types, [1, 4, 1, 3, 3, 3, pad_type]);
            assert_eq!(
                kv_map(&m)[2..],
                [
                    s(
                        "tokenizer.ggml.merges",
                        TokValue::ArrStr(vec!["a b".into()])
                    ),
                    s("tokenizer.ggml.padding_token_id", TokValue::U32(3)),
                ]
            );
            assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
        }
    }

    #[test]
    fn missing_tokenizer_and_unsupported_kinds() {
        let d = TempDir::new("none");
        d.write("config.json", "{}");
        let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
        assert!(matches!(e, TokenizerError::NoTokenizer { .. }));
        // A tokenizer.json of the tiny checkpoint alone is a Llama-style byte-fallback BPE.
        let d = TempDir::new("llamahf");
        d.write(
            "tokenizer.json",
            std::fs::read(tiny("ckpt-fp16/tokenizer.json")).unwrap(),
        );
        let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("llama-bpe")).unwrap_err();
        assert!(matches!(e, TokenizerError::Unsupported { .. }), "{e}");
    }

    #[test]
    fn malformed_tokenizer_model_is_reported_with_its_path() {
        let d = TempDir::new("badspm");
        d.with_tiny_tokenizer();
        let mut bytes = std::fs::read(tiny("ckpt-fp16/tokenizer.model")).unwrap();
        bytes.truncate(bytes.len() / 2);
        d.write("tokenizer.model", &bytes);
        let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
        assert!(matches!(e, TokenizerError::SentencePiece(_)));
        assert!(e.to_string().contains("tokenizer.model"), "{e}");
    }

    #[test]
    fn signalling_nan_scores_are_quieted_like_python() {
        let snan = f32::from_bits(0x7fb4_0000);
        assert_eq!(spm_score(snan).to_bits(), 0x7ff4_0000);
        assert_eq!(spm_score(-740.0), -740.0);
        assert_eq!(spm_score(f32::NEG_INFINITY), f32::NEG_INFINITY);
    }

    #[test]
    fn python_helpers() {
        assert_eq!(parse_py_int(" 12 "), Some(12));
        assert_eq!(parse_py_int("+1_000"), Some(1000));
        assert_eq!(parse_py_int("-3"), Some(-3));
        assert_eq!(parse_py_int("1__0"), None);
        assert_eq!(parse_py_int("0x10"), None);
        assert!(looks_special("<|eot_id|>"));
        assert!(looks_special("<｜end▁of▁sentence｜>"));
        assert!(looks_special("<unused12>"));
        assert!(!looks_special("<s>"));
        assert!(py_isspace('\u{1f}'));
        assert!(!truthy(&Value::Null) && truthy(&serde_json::json!(1)));
        assert!(check_pre_name(Flavor::Mainline, "llama-bpe").is_ok());
        assert!(check_pre_name(Flavor::BitnetCpp, "falcon_e").is_ok());
        assert!(check_pre_name(Flavor::BitnetCpp, "qwen35").is_err());
    }
}
