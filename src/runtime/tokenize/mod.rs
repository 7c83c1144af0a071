//! Tokenization rebuilt from a GGUF file's own `tokenizer.ggml.*` metadata, so that a GGUF
//! file alone is enough to run a model.
//!
//! Two vocabulary kinds are supported, the two that bitconv writes (see
//! [`crate::checkpoint::tokenizer`]):
//!
//! * `tokenizer.ggml.model = "llama"`: a SentencePiece BPE vocabulary (pieces with `▁` for
//!   spaces, scores, token types, `<0xHH>` byte-fallback tokens). llama.cpp tokenizes it by
//!   repeatedly merging the adjacent pair of symbols whose concatenation is a vocabulary piece
//!   with the highest score (leftmost first on ties). The equivalent Hugging Face BPE is built
//!   the standard way: every piece that is the concatenation of two other pieces yields the
//!   merges `(left, right)`, ranked by the piece's score (higher first) and then its id. The
//!   normalizer prepends `▁` (unless `tokenizer.ggml.add_space_prefix` is false) and turns
//!   spaces into `▁`; characters that are not pieces fall back to byte tokens.
//! * `tokenizer.ggml.model = "gpt2"`: a byte-level BPE (GPT-2, Llama-3, Falcon3, BitNet
//!   2B-4T) with `tokenizer.ggml.merges` strings `"left right"`. Text is split by the regular
//!   expressions llama.cpp associates with `tokenizer.ggml.pre` (one table with the exporter: [`crate::pretok`]), mapped
//!   to GPT-2's byte alphabet and merged by rank.
//!
//! In both, CONTROL and UNKNOWN tokens become special added tokens and USER_DEFINED tokens
//! ordinary added tokens, so their text is matched literally before the model runs (what
//! llama.cpp does with `parse_special = true`).
//!
//! Decoding does not go through the `tokenizers` crate: each token renders to bytes exactly as
//! llama.cpp's `token_to_piece` renders it without special tokens (NORMAL pieces with `▁` turned
//! back into spaces or mapped back from the byte alphabet, BYTE tokens as their byte,
//! USER_DEFINED tokens verbatim, CONTROL/UNKNOWN/UNUSED tokens as nothing). Byte-fallback
//! tokens can split a UTF-8 character across tokens, so [`GgufTokenizer::token_bytes`] returns
//! bytes and [`StreamDecoder`] holds incomplete sequences back until they are complete.
//!
//! Build a tokenizer from a mapped file with
//! `GgufTokenizer::from_gguf(&mapped.header)` (see [`crate::gguf::MappedGguf`]).

use std::collections::HashMap;

use crate::pretok;

mod build;

use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, NormalizerWrapper, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use crate::checkpoint::tokenizer::TokenType;
use crate::gguf::{GgufHeader, Value, ValueType};

/// `tokenizer.ggml.model`.
pub const KEY_MODEL: &str = "tokenizer.ggml.model";
/// `tokenizer.ggml.pre`.
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
/// `tokenizer.ggml.tokens`.
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
/// `tokenizer.ggml.scores`.
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
/// `tokenizer.ggml.token_type`.
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// `tokenizer.ggml.merges`.
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
/// `tokenizer.ggml.bos_token_id`.
pub const KEY_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
/// `tokenizer.ggml.eos_token_id`.
pub const KEY_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
/// `tokenizer.ggml.unknown_token_id`.
pub const KEY_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
/// `tokenizer.ggml.eot_token_id`.
pub const KEY_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
/// `tokenizer.ggml.eom_token_id`.
pub const KEY_EOM_ID: &str = "tokenizer.ggml.eom_token_id";
/// `tokenizer.ggml.add_bos_token`.
pub const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
/// `tokenizer.ggml.add_eos_token`.
pub const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
/// `tokenizer.ggml.add_space_prefix`.
pub const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// SentencePiece's meta symbol for a space.
const SPACE_MARK: char = '\u{2581}';

/// Token texts llama.cpp treats as end of generation besides the EOS token.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
];

/// Errors building a tokenizer from GGUF metadata or encoding text with it.
#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    /// A required metadata key is absent.
    #[error("GGUF metadata key {key} is missing")]
    Missing {
        /// The key.
        key: String,
    },
    /// A metadata key has the wrong type or an invalid value.
    #[error("GGUF metadata key {key}: {problem}")]
    Malformed {
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `tokenizer.ggml.model` names a vocabulary kind this runtime does not implement.
    #[error("GGUF metadata key tokenizer.ggml.model = {0:?}: unsupported tokenizer model (supported: \"llama\", \"gpt2\")")]
    UnknownModel(String),
    /// `tokenizer.ggml.pre` names a pre-tokenizer this runtime does not know.
    #[error(
        "GGUF metadata key tokenizer.ggml.pre = {name:?}: unknown pre-tokenizer (known: {known})"
    )]
    UnknownPre {
        /// The value found.
        name: String,
        /// The values understood, comma-separated.
        known: String,
    },
    /// The `tokenizers` crate rejected the tokenizer assembled from the metadata.
    #[error("building the tokenizer from {key}: {message}")]
    Build {
        /// The key whose contents were being turned into the tokenizer part that failed.
        key: String,
        /// The `tokenizers` error.
        message: String,
    },
    /// Encoding failed (for example a split expression exceeded its backtracking limit).
    #[error("encoding failed: {0}")]
    Encode(String),
}

fn missing(key: &str) -> TokenizeError {
    TokenizeError::Missing {
        key: key.to_string(),
    }
}

fn malformed(key: &str, problem: impl Into<String>) -> TokenizeError {
    TokenizeError::Malformed {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn build_err(key: &str, e: impl std::fmt::Display) -> TokenizeError {
    TokenizeError::Build {
        key: key.to_string(),
        message: e.to_string(),
    }
}

/// The kind of vocabulary (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenizerModel {
    /// `"llama"`: SentencePiece BPE with scores and byte fallback.
    Llama,
    /// `"gpt2"`: byte-level BPE with merges.
    Gpt2,
}

/// A tokenizer rebuilt from GGUF metadata.
pub struct GgufTokenizer {
    model: TokenizerModel,
    pre: Option<&'static pretok::PreTokenizer>,
    inner: Tokenizer,
    /// The splitting part of the pre-tokenizer (gpt2 only), for [`GgufTokenizer::pre_tokenize`].
    splitter: Option<PreTokenizerSequence>,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    /// What each token prints as (llama.cpp's `token_to_piece` without special tokens).
    rendered: Vec<Box<[u8]>>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    eog: Vec<u32>,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("model", &self.model)
            .field("pre", &self.pre.map(|p| p.names[0]))
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Using

impl GgufTokenizer {
    /// Encodes `text` into token ids. With `add_special`, the BOS token is prepended when the
    /// metadata asks for it (`tokenizer.ggml.add_bos_token`) and EOS appended likewise. Text that
    /// spells a CONTROL, UNKNOWN or USER_DEFINED token is encoded as that token.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizeError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// The bytes token `id` prints as: a NORMAL piece's text (with `▁` as a space, or mapped back
    /// from the byte-level alphabet), a BYTE token's byte, a USER_DEFINED token's text, and
    /// nothing for CONTROL, UNKNOWN and UNUSED tokens or ids outside the vocabulary. The
    /// concatenation over a generated sequence is what llama.cpp prints for it.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.rendered
            .get(id as usize)
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }

    /// Decodes ids to text as a continuation: the concatenation of [`Self::token_bytes`]
    /// (special tokens skipped), with invalid or incomplete UTF-8 replaced by U+FFFD. Equal to
    /// everything a [`StreamDecoder`] returns for the same ids.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if let Some(b) = self.rendered.get(id as usize) {
                bytes.extend_from_slice(b);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Decodes ids as a complete text, the way SentencePiece's and Hugging Face's `decode` do:
    /// like [`Self::decode`], but for vocabularies whose encoder prepends a space
    /// (`add_space_prefix`), the one leading space that prefix produced is removed.
    pub fn decode_standalone(&self, ids: &[u32]) -> String {
        let text = self.decode(ids);
        if self.add_space_prefix && self.model == TokenizerModel::Llama {
            if let Some(rest) = text.strip_prefix(' ') {
                return rest.to_string();
            }
        }
        text
    }

    /// A decoder for printing generated tokens one at a time.
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new()
    }

    /// The pieces the pre-tokenizer splits `text` into before byte-level mapping and merges
    /// (special tokens are not looked for). SentencePiece vocabularies have no such split, so
    /// for them this is the whole text as one piece.
    pub fn pre_tokenize(&self, text: &str) -> Result<Vec<String>, TokenizeError> {
        let Some(splitter) = &self.splitter else {
            return Ok(vec![text.to_string()]);
        };
        let mut pts = PreTokenizedString::from(text);
        splitter
            .pre_tokenize(&mut pts)
            .map_err(|e| TokenizeError::Encode(e.to_string()))?;
        Ok(pts
            .get_splits(OffsetReferential::Original, OffsetType::None)
            .into_iter()
            .map(|(s, _, _)| s.to_string())
            .collect())
    }

    /// The vocabulary kind.
    pub fn model(&self) -> TokenizerModel {
        self.model
    }

    /// The pre-tokenizer of a `gpt2` vocabulary (`None` for `llama`).
    pub fn pre_tokenizer(&self) -> Option<&'static pretok::PreTokenizer> {
        self.pre
    }

    /// The BOS token id, if the vocabulary has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The EOS token id, if the vocabulary has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether `encode(_, true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(_, true)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    /// True for tokens that end generation: EOS, the EOT/EOM ids if set, and control tokens
    /// llama.cpp recognises by text (`<|eot_id|>`, `<|end_of_text|>`, `<|im_end|>`, …).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The number of tokens (`tokenizer.ggml.tokens` entries).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The token's text as stored in the GGUF file (`▁` and byte-level characters included).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The token's type.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// The id of a token given its stored text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// True for CONTROL and UNKNOWN tokens (those [`Self::decode`] skips besides UNUSED ones).
    pub fn is_special(&self, id: u32) -> bool {
        matches!(
            self.token_type(id),
            Some(TokenType::Control | TokenType::Unknown)
        )
    }
}

/// Turns generated tokens into printable text one token at a time.
///
/// Byte-fallback tokens and byte-level pieces can end in the middle of a UTF-8 character; such
/// an incomplete tail is held until the next tokens complete it. Bytes that can never become
/// valid UTF-8 come out as U+FFFD, exactly as [`String::from_utf8_lossy`] would replace them in
/// the whole output, so the concatenation of everything returned (including [`Self::finish`])
/// equals [`GgufTokenizer::decode`] of all the ids.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    invalid: usize,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    /// Adds the bytes of token `id` and returns the text that is now complete.
    pub fn push(&mut self, tokenizer: &GgufTokenizer, id: u32) -> String {
        match tokenizer.rendered.get(id as usize) {
            Some(b) => self.push_bytes(b),
            None => self.push_bytes(&[]),
        }
    }

    /// Adds raw bytes (for example from [`GgufTokenizer::token_bytes`]) and returns the text
    /// that is now complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = start + e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[start..valid])
                            .expect("valid_up_to marks valid UTF-8"),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.invalid += 1;
                            start = valid + bad;
                        }
                        None => {
                            // An incomplete character at the end: wait for more bytes.
                            start = valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// How many byte sequences were not valid UTF-8 and came out as U+FFFD so far.
    pub fn invalid_sequences(&self) -> usize {
        self.invalid
    }

    /// The bytes held back because they may start an incomplete character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: returns the held-back bytes as text (U+FFFD for an incomplete
    /// character) and empties the decoder.
    pub fn finish(&mut self) -> String {
        if !self.pending.is_empty() {
            self.invalid += 1;
        }
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
