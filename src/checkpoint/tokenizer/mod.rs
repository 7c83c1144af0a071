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
use crate::gguf::Value as GValue;
use crate::pretok;

mod hf_vocab;
mod paths;
mod py;
mod special;
#[cfg(test)]
mod tests;

use hf_vocab::*;
use paths::*;
use py::*;
use special::*;

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
    pub special: Vec<(String, GValue)>,
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
    pub fn kv_entries(&self) -> Vec<(String, GValue)> {
        let mut out = Vec::with_capacity(6 + self.special.len());
        let mut push = |k: &str, v: GValue| out.push((k.to_owned(), v));
        if !self.model.is_empty() {
            push(KEY_MODEL, GValue::String(self.model.clone()));
        }
        if let Some(pre) = self.pre.as_ref().filter(|p| !p.is_empty()) {
            push(KEY_PRE, GValue::String(pre.clone()));
        }
        if !self.tokens.is_empty() {
            push(KEY_TOKENS, GValue::str_array(self.tokens.clone()));
        }
        if let Some(s) = self.scores.as_ref().filter(|s| !s.is_empty()) {
            push(KEY_SCORES, GValue::f32_array(s.clone()));
        }
        if !self.token_types.is_empty() {
            push(KEY_TOKEN_TYPE, GValue::i32_array(self.token_types.clone()));
        }
        if let Some(m) = self.merges.as_ref().filter(|m| !m.is_empty()) {
            push(KEY_MERGES, GValue::str_array(m.clone()));
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
