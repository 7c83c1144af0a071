//! A minimal, defensive reader for SentencePiece `tokenizer.model` files.
//!
//! A `tokenizer.model` is a serialized protobuf `ModelProto` (proto2). bitconv needs only a
//! small part of it:
//!
//! | message | field | number | wire type |
//! |---|---|---|---|
//! | `ModelProto` | `pieces` (repeated `SentencePiece`) | 1 | length-delimited |
//! | `ModelProto` | `trainer_spec` (`TrainerSpec`) | 2 | length-delimited |
//! | `ModelProto` | `normalizer_spec` (`NormalizerSpec`) | 3 | length-delimited |
//! | `SentencePiece` | `piece` (string) | 1 | length-delimited |
//! | `SentencePiece` | `score` (float) | 2 | 32-bit |
//! | `SentencePiece` | `type` (enum, default `NORMAL` = 1) | 3 | varint |
//! | `TrainerSpec` | `model_type` (enum, default `UNIGRAM` = 1) | 3 | varint |
//! | `TrainerSpec` | `vocab_size` (int32, default 8000) | 4 | varint |
//! | `TrainerSpec` | `byte_fallback` (bool, default false) | 35 | varint |
//! | `TrainerSpec` | `unk_id`, `bos_id`, `eos_id`, `pad_id` (int32; 0, 1, 2, -1) | 40–43 | varint |
//! | `TrainerSpec` | `unk_piece`, `bos_piece`, `eos_piece`, `pad_piece` (string) | 45–48 | length-delimited |
//! | `NormalizerSpec` | `name` (string) | 1 | length-delimited |
//! | `NormalizerSpec` | `add_dummy_prefix`, `remove_extra_whitespaces`, `escape_whitespaces` (bool, default true) | 3, 4, 5 | varint |
//!
//! Every other field is skipped by its wire type (varint, 64-bit, length-delimited, 32-bit, and
//! groups, which are skipped with their nesting checked). As protobuf itself does, a known field
//! that arrives with an unexpected wire type is treated as an unknown field, a scalar that
//! appears twice keeps its last value, a sub-message that appears twice is merged, and an enum
//! value outside the enum leaves the field unchanged (proto2 closed enums).
//!
//! The reader never panics and never allocates from a length read from the file: every length
//! is checked against the bytes that remain before it is used, and the piece list grows only
//! as pieces are actually decoded. Errors name the file, the byte offset, and where in the
//! message the problem was found.
//!
//! [`ModelProto::validate`] applies the load-time checks of the `sentencepiece` library (so that
//! bitconv refuses the files the reference converters' `SentencePieceProcessor` refuses): no
//! empty piece, no piece defined twice, at most one `UNKNOWN` piece, byte pieces spelled
//! `<0xHH>` (upper-case hex) and present only with `byte_fallback`, and then exactly 256 of them.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The type of a piece (`SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum PieceType {
    /// `NORMAL` (1), the default.
    Normal = 1,
    /// `UNKNOWN` (2): the unknown-token piece.
    Unknown = 2,
    /// `CONTROL` (3): control symbols such as `<s>`.
    Control = 3,
    /// `USER_DEFINED` (4): user-defined symbols, always segmented as one piece.
    UserDefined = 4,
    /// `UNUSED` (5).
    Unused = 5,
    /// `BYTE` (6): byte-fallback pieces `<0x00>` … `<0xFF>`.
    Byte = 6,
}

impl PieceType {
    /// The enum value for a number, or `None` for a number outside the enum.
    pub fn from_i32(v: i32) -> Option<PieceType> {
        Some(match v {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => return None,
        })
    }

    /// The number stored in the file.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

/// The segmentation algorithm (`TrainerSpec.ModelType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ModelType {
    /// `UNIGRAM` (1), the default.
    Unigram = 1,
    /// `BPE` (2).
    Bpe = 2,
    /// `WORD` (3).
    Word = 3,
    /// `CHAR` (4).
    Char = 4,
}

impl ModelType {
    /// The enum value for a number, or `None` for a number outside the enum.
    pub fn from_i32(v: i32) -> Option<ModelType> {
        Some(match v {
            1 => ModelType::Unigram,
            2 => ModelType::Bpe,
            3 => ModelType::Word,
            4 => ModelType::Char,
            _ => return None,
        })
    }
}

/// One vocabulary entry (`ModelProto.SentencePiece`).
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    /// The piece text (`▁` stands for a space).
    pub piece: String,
    /// The score (log probability for unigram, negative merge rank for BPE).
    pub score: f32,
    /// The piece type.
    pub kind: PieceType,
}

/// The part of `TrainerSpec` bitconv reads. Defaults are the proto defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainerSpec {
    /// `model_type` (3), default `UNIGRAM`.
    pub model_type: ModelType,
    /// `vocab_size` (4), default 8000.
    pub vocab_size: i32,
    /// `byte_fallback` (35), default false.
    pub byte_fallback: bool,
    /// `unk_id` (40), default 0.
    pub unk_id: i32,
    /// `bos_id` (41), default 1.
    pub bos_id: i32,
    /// `eos_id` (42), default 2.
    pub eos_id: i32,
    /// `pad_id` (43), default -1 (none).
    pub pad_id: i32,
    /// `unk_piece` (45), default `<unk>`.
    pub unk_piece: String,
    /// `bos_piece` (46), default `<s>`.
    pub bos_piece: String,
    /// `eos_piece` (47), default `</s>`.
    pub eos_piece: String,
    /// `pad_piece` (48), default `<pad>`.
    pub pad_piece: String,
}

impl Default for TrainerSpec {
    fn default() -> TrainerSpec {
        TrainerSpec {
            model_type: ModelType::Unigram,
            vocab_size: 8000,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_piece: "<unk>".into(),
            bos_piece: "<s>".into(),
            eos_piece: "</s>".into(),
            pad_piece: "<pad>".into(),
        }
    }
}

/// The part of `NormalizerSpec` bitconv reads. Defaults are the proto defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct NormalizerSpec {
    /// `name` (1), e.g. `nmt_nfkc` or `identity`; empty when absent.
    pub name: String,
    /// `add_dummy_prefix` (3), default true.
    pub add_dummy_prefix: bool,
    /// `remove_extra_whitespaces` (4), default true.
    pub remove_extra_whitespaces: bool,
    /// `escape_whitespaces` (5), default true.
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> NormalizerSpec {
        NormalizerSpec {
            name: String::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// A decoded `tokenizer.model` (`ModelProto`), reduced to what bitconv needs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ModelProto {
    /// The vocabulary, in id order.
    pub pieces: Vec<Piece>,
    /// The trainer settings.
    pub trainer_spec: TrainerSpec,
    /// The normalizer settings.
    pub normalizer_spec: NormalizerSpec,
}

/// Where in the message tree a wire-format problem was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Within {
    /// The top-level `ModelProto`.
    Model,
    /// `pieces[i]`.
    Piece(usize),
    /// `trainer_spec`.
    TrainerSpec,
    /// `normalizer_spec`.
    NormalizerSpec,
}

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Within::Model => f.write_str("ModelProto"),
            Within::Piece(i) => write!(f, "pieces[{i}]"),
            Within::TrainerSpec => f.write_str("trainer_spec"),
            Within::NormalizerSpec => f.write_str("normalizer_spec"),
        }
    }
}

/// What is wrong with a `tokenizer.model`.
#[derive(Debug)]
pub enum SpmErrorKind {
    /// The file could not be read.
    Io(std::io::Error),
    /// No piece is the unknown piece (an empty model has none).
    NoUnknown {
        /// Pieces in the model.
        pieces: usize,
    },
    /// The input ended inside a varint.
    TruncatedVarint {
        /// Byte offset where the varint starts.
        offset: usize,
        /// The message being decoded.
        within: Within,
    },
    /// A varint ran over 10 bytes.
    VarintTooLong {
        /// Byte offset where the varint starts.
        offset: usize,
        /// The message being decoded.
        within: Within,
    },
    /// A length-delimited field claims more bytes than remain.
    LengthPastEnd {
        /// Byte offset of the length prefix.
        offset: usize,
        /// The claimed length.
        len: u64,
        /// The bytes that remain after the prefix.
        available: usize,
        /// The message being decoded.
        within: Within,
    },
    /// The input ended inside a fixed-width (32- or 64-bit) value.
    TruncatedFixed {
        /// Byte offset of the value.
        offset: usize,
        /// Its width in bytes (4 or 8).
        width: usize,
        /// The message being decoded.
        within: Within,
    },
    /// A tag carries wire type 6 or 7, which do not exist.
    InvalidWireType {
        /// Byte offset of the tag.
        offset: usize,
        /// The wire type.
        wire_type: u8,
        /// The message being decoded.
        within: Within,
    },
    /// A tag carries field number 0 or does not fit in 32 bits.
    InvalidFieldNumber {
        /// Byte offset of the tag.
        offset: usize,
        /// The raw tag value.
        tag: u64,
        /// The message being decoded.
        within: Within,
    },
    /// An end-group tag without a matching start-group tag.
    UnexpectedEndGroup {
        /// Byte offset of the tag.
        offset: usize,
        /// Its field number.
        field: u32,
        /// The message being decoded.
        within: Within,
    },
    /// A group that is never closed.
    UnterminatedGroup {
        /// Byte offset of the start-group tag.
        offset: usize,
        /// Its field number.
        field: u32,
        /// The message being decoded.
        within: Within,
    },
    /// A piece's text is not valid UTF-8.
    InvalidUtf8Piece {
        /// The piece index (token id).
        index: usize,
        /// Byte offset of the string.
        offset: usize,
    },
    /// A piece's text is empty (`sentencepiece` refuses such models).
    EmptyPiece {
        /// The piece index.
        index: usize,
    },
    /// The same piece text appears twice.
    DuplicatePiece {
        /// The later index.
        index: usize,
        /// The earlier index.
        first: usize,
        /// The text.
        piece: String,
    },
    /// More than one piece has type `UNKNOWN`.
    DuplicateUnknown {
        /// The later index.
        index: usize,
        /// The earlier index.
        first: usize,
    },
    /// A `BYTE` piece is not spelled `<0xHH>` with upper-case hex digits.
    InvalidBytePiece {
        /// The piece index.
        index: usize,
        /// The text.
        piece: String,
    },
    /// A `BYTE` piece exists although `trainer_spec.byte_fallback` is false.
    UnexpectedBytePiece {
        /// The piece index.
        index: usize,
        /// The text.
        piece: String,
    },
    /// `byte_fallback` is true but the model does not have exactly 256 byte pieces.
    BytePieceCount {
        /// How many `BYTE` pieces there are.
        found: usize,
    },
}

/// An error reading a `tokenizer.model`, naming the file.
#[derive(Debug)]
pub struct SpmError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub kind: SpmErrorKind,
}

impl fmt::Display for SpmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        match &self.kind {
            SpmErrorKind::Io(e) => write!(f, "{e}"),
            SpmErrorKind::TruncatedVarint { offset, within } => {
                write!(f, "truncated varint at byte {offset} (in {within})")
            }
            SpmErrorKind::VarintTooLong { offset, within } => {
                write!(f, "varint longer than 10 bytes at byte {offset} (in {within})")
            }
            SpmErrorKind::LengthPastEnd {
                offset,
                len,
                available,
                within,
            } => write!(
                f,
                "length {len} at byte {offset} runs past the end ({available} bytes remain, in {within})"
            ),
            SpmErrorKind::TruncatedFixed {
                offset,
                width,
                within,
            } => write!(
                f,
                "truncated {}-bit value at byte {offset} (in {within})",
                width * 8
            ),
            SpmErrorKind::InvalidWireType {
                offset,
                wire_type,
                within,
            } => write!(
                f,
                "invalid wire type {wire_type} at byte {offset} (in {within})"
            ),
            SpmErrorKind::InvalidFieldNumber {
                offset,
                tag,
                within,
            } => write!(
                f,
                "invalid field number in tag {tag} at byte {offset} (in {within})"
            ),
            SpmErrorKind::UnexpectedEndGroup {
                offset,
                field,
                within,
            } => write!(
                f,
                "end-group tag for field {field} without a start at byte {offset} (in {within})"
            ),
            SpmErrorKind::UnterminatedGroup {
                offset,
                field,
                within,
            } => write!(
                f,
                "group for field {field} starting at byte {offset} is never closed (in {within})"
            ),
            SpmErrorKind::InvalidUtf8Piece { index, offset } => {
                write!(f, "invalid UTF-8 piece at index {index} (byte {offset})")
            }
            SpmErrorKind::EmptyPiece { index } => write!(f, "empty piece at index {index}"),
            SpmErrorKind::NoUnknown { pieces } => write!(
                f,
                "no unknown piece among {pieces} pieces: not a usable SentencePiece model \
                 (SentencePiece refuses it too)"
            ),
            SpmErrorKind::DuplicatePiece {
                index,
                first,
                piece,
            } => write!(
                f,
                "piece {piece:?} at index {index} is already defined at index {first}"
            ),
            SpmErrorKind::DuplicateUnknown { index, first } => write!(
                f,
                "second UNKNOWN piece at index {index} (the first is at index {first})"
            ),
            SpmErrorKind::InvalidBytePiece { index, piece } => write!(
                f,
                "byte piece {piece:?} at index {index} is not of the form <0xHH>"
            ),
            SpmErrorKind::UnexpectedBytePiece { index, piece } => write!(
                f,
                "byte piece {piece:?} at index {index} although trainer_spec.byte_fallback is false"
            ),
            SpmErrorKind::BytePieceCount { found } => write!(
                f,
                "trainer_spec.byte_fallback is true but there are {found} byte pieces, not 256"
            ),
        }
    }
}

impl std::error::Error for SpmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            SpmErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl ModelProto {
    /// Reads, decodes and validates a `tokenizer.model` file.
    pub fn load(path: &Path) -> Result<ModelProto, SpmError> {
        let bytes = std::fs::read(path).map_err(|e| SpmError {
            path: path.to_path_buf(),
            kind: SpmErrorKind::Io(e),
        })?;
        let model = ModelProto::parse(&bytes, path)?;
        model.validate(path)?;
        Ok(model)
    }

    /// Decodes the bytes of a `tokenizer.model` (no semantic validation; see
    /// [`ModelProto::validate`]). `path` is used only in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<ModelProto, SpmError> {
        let mut model = ModelProto::default();
        parse_model(bytes, &mut model).map_err(|kind| SpmError {
            path: path.to_path_buf(),
            kind,
        })?;
        Ok(model)
    }

    /// Applies the checks the `sentencepiece` library makes when it loads a model. `path` is
    /// used only in error messages.
    pub fn validate(&self, path: &Path) -> Result<(), SpmError> {
        let err = |kind| SpmError {
            path: path.to_path_buf(),
            kind,
        };
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(self.pieces.len());
        let mut unknown: Option<usize> = None;
        let mut bytes = 0usize;
        for (index, p) in self.pieces.iter().enumerate() {
            if p.piece.is_empty() {
                return Err(err(SpmErrorKind::EmptyPiece { index }));
            }
            if let Some(&first) = seen.get(p.piece.as_str()) {
                return Err(err(SpmErrorKind::DuplicatePiece {
                    index,
                    first,
                    piece: p.piece.clone(),
                }));
            }
            seen.insert(&p.piece, index);
            match p.kind {
                PieceType::Unknown => {
                    if let Some(first) = unknown {
                        return Err(err(SpmErrorKind::DuplicateUnknown { index, first }));
                    }
                    unknown = Some(index);
                }
                PieceType::Byte => {
                    if !self.trainer_spec.byte_fallback {
                        return Err(err(SpmErrorKind::UnexpectedBytePiece {
                            index,
                            piece: p.piece.clone(),
                        }));
                    }
                    if byte_piece_value(&p.piece).is_none() {
                        return Err(err(SpmErrorKind::InvalidBytePiece {
                            index,
                            piece: p.piece.clone(),
                        }));
                    }
                    bytes += 1;
                }
                _ => {}
            }
        }
        if self.trainer_spec.byte_fallback && bytes != 256 {
            return Err(err(SpmErrorKind::BytePieceCount { found: bytes }));
        }
        if unknown.is_none() {
            // SentencePiece itself refuses such a model ("unk is not defined"); an empty file,
            // a valid empty protobuf, is one.
            return Err(err(SpmErrorKind::NoUnknown {
                pieces: self.pieces.len(),
            }));
        }
        Ok(())
    }
}

/// The byte a `<0xHH>` piece stands for (upper-case hex digits only, as `sentencepiece`
/// spells them), or `None`.
pub fn byte_piece_value(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    let b = hex.as_bytes();
    if b.len() != 2 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

mod wire;

use wire::parse_model;

#[cfg(test)]
mod tests;
