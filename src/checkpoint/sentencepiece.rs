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

// ---------------------------------------------------------------------------------------------
// Wire format

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_FIXED32: u8 = 5;

/// A cursor over one message's bytes. `base` is the absolute offset of `buf[0]` in the file,
/// so that errors report file offsets.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
    within: Within,
}

/// A decoded field value, borrowed from the input.
enum Field<'a> {
    Varint(u64),
    Fixed32([u8; 4]),
    Bytes {
        data: &'a [u8],
        offset: usize,
    },
    /// A fixed64 value or a group; bitconv reads no such field.
    Skipped,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], base: usize, within: Within) -> Reader<'a> {
        Reader {
            buf,
            pos: 0,
            base,
            within,
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn varint(&mut self) -> Result<u64, SpmErrorKind> {
        let start = self.offset();
        let mut value = 0u64;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(SpmErrorKind::TruncatedVarint {
                    offset: start,
                    within: self.within,
                });
            };
            self.pos += 1;
            // Bits past the 64th (possible only in the 10th byte) are dropped, as protobuf does.
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(SpmErrorKind::VarintTooLong {
            offset: start,
            within: self.within,
        })
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], SpmErrorKind> {
        let start = self.offset();
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        match rest.get(..N).and_then(|s| <[u8; N]>::try_from(s).ok()) {
            Some(v) => {
                self.pos += N;
                Ok(v)
            }
            None => Err(SpmErrorKind::TruncatedFixed {
                offset: start,
                width: N,
                within: self.within,
            }),
        }
    }

    fn length_delimited(&mut self) -> Result<(&'a [u8], usize), SpmErrorKind> {
        let start = self.offset();
        let len = self.varint()?;
        let available = self.buf.len() - self.pos.min(self.buf.len());
        match usize::try_from(len) {
            Ok(n) if n <= available => {
                let data_offset = self.offset();
                let data = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok((data, data_offset))
            }
            _ => Err(SpmErrorKind::LengthPastEnd {
                offset: start,
                len,
                available,
                within: self.within,
            }),
        }
    }

    /// Reads a tag: (field number, wire type, offset of the tag).
    fn tag(&mut self) -> Result<(u32, u8, usize), SpmErrorKind> {
        let start = self.offset();
        let tag = self.varint()?;
        let field = u32::try_from(tag >> 3)
            .ok()
            .filter(|&f| f != 0 && tag <= u64::from(u32::MAX));
        let Some(field) = field else {
            return Err(SpmErrorKind::InvalidFieldNumber {
                offset: start,
                tag,
                within: self.within,
            });
        };
        Ok((field, (tag & 7) as u8, start))
    }

    /// Reads the next field of the message, or `None` at its end.
    fn next_field(&mut self) -> Result<Option<(u32, u8, Field<'a>)>, SpmErrorKind> {
        if self.at_end() {
            return Ok(None);
        }
        let (field, wire, tag_offset) = self.tag()?;
        let value = match wire {
            WIRE_VARINT => Field::Varint(self.varint()?),
            WIRE_FIXED64 => {
                self.fixed::<8>()?;
                Field::Skipped
            }
            WIRE_LEN => {
                let (data, offset) = self.length_delimited()?;
                Field::Bytes { data, offset }
            }
            WIRE_START_GROUP => {
                self.skip_group(field, tag_offset)?;
                Field::Skipped
            }
            WIRE_END_GROUP => {
                return Err(SpmErrorKind::UnexpectedEndGroup {
                    offset: tag_offset,
                    field,
                    within: self.within,
                })
            }
            WIRE_FIXED32 => Field::Fixed32(self.fixed::<4>()?),
            other => {
                return Err(SpmErrorKind::InvalidWireType {
                    offset: tag_offset,
                    wire_type: other,
                    within: self.within,
                })
            }
        };
        Ok(Some((field, wire, value)))
    }

    /// Skips a group whose start tag (for `field`, at `start`) was just read, checking that
    /// nested groups close in order. The stack grows by one entry per start tag read, so it is
    /// bounded by the input size.
    fn skip_group(&mut self, field: u32, start: usize) -> Result<(), SpmErrorKind> {
        let mut open: Vec<(u32, usize)> = vec![(field, start)];
        while let Some(&(top, top_start)) = open.last() {
            if self.at_end() {
                return Err(SpmErrorKind::UnterminatedGroup {
                    offset: top_start,
                    field: top,
                    within: self.within,
                });
            }
            let (f, wire, tag_offset) = self.tag()?;
            match wire {
                WIRE_VARINT => {
                    self.varint()?;
                }
                WIRE_FIXED64 => {
                    self.fixed::<8>()?;
                }
                WIRE_LEN => {
                    self.length_delimited()?;
                }
                WIRE_START_GROUP => open.push((f, tag_offset)),
                WIRE_END_GROUP => {
                    if f != top {
                        return Err(SpmErrorKind::UnexpectedEndGroup {
                            offset: tag_offset,
                            field: f,
                            within: self.within,
                        });
                    }
                    open.pop();
                }
                WIRE_FIXED32 => {
                    self.fixed::<4>()?;
                }
                other => {
                    return Err(SpmErrorKind::InvalidWireType {
                        offset: tag_offset,
                        wire_type: other,
                        within: self.within,
                    })
                }
            }
        }
        Ok(())
    }
}

/// protobuf reads int32 and enum fields as a varint truncated to 32 bits.
fn as_int32(v: u64) -> i32 {
    v as u32 as i32
}

fn parse_model(bytes: &[u8], model: &mut ModelProto) -> Result<(), SpmErrorKind> {
    let mut r = Reader::new(bytes, 0, Within::Model);
    while let Some((field, _, value)) = r.next_field()? {
        match (field, value) {
            (1, Field::Bytes { data, offset }) => {
                let index = model.pieces.len();
                model.pieces.push(parse_piece(data, offset, index)?);
            }
            (2, Field::Bytes { data, offset }) => {
                parse_trainer(data, offset, &mut model.trainer_spec)?;
            }
            (3, Field::Bytes { data, offset }) => {
                parse_normalizer(data, offset, &mut model.normalizer_spec)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_piece(bytes: &[u8], base: usize, index: usize) -> Result<Piece, SpmErrorKind> {
    let mut piece = Piece {
        piece: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    let mut r = Reader::new(bytes, base, Within::Piece(index));
    while let Some((field, _, value)) = r.next_field()? {
        match (field, value) {
            (1, Field::Bytes { data, offset }) => {
                piece.piece = std::str::from_utf8(data)
                    .map_err(|_| SpmErrorKind::InvalidUtf8Piece { index, offset })?
                    .to_owned();
            }
            (2, Field::Fixed32(b)) => piece.score = f32::from_le_bytes(b),
            (3, Field::Varint(v)) => {
                if let Some(kind) = PieceType::from_i32(as_int32(v)) {
                    piece.kind = kind;
                }
            }
            _ => {}
        }
    }
    Ok(piece)
}

fn parse_trainer(bytes: &[u8], base: usize, spec: &mut TrainerSpec) -> Result<(), SpmErrorKind> {
    let mut r = Reader::new(bytes, base, Within::TrainerSpec);
    while let Some((field, _, value)) = r.next_field()? {
        match (field, value) {
            (3, Field::Varint(v)) => {
                if let Some(t) = ModelType::from_i32(as_int32(v)) {
                    spec.model_type = t;
                }
            }
            (4, Field::Varint(v)) => spec.vocab_size = as_int32(v),
            (35, Field::Varint(v)) => spec.byte_fallback = v != 0,
            (40, Field::Varint(v)) => spec.unk_id = as_int32(v),
            (41, Field::Varint(v)) => spec.bos_id = as_int32(v),
            (42, Field::Varint(v)) => spec.eos_id = as_int32(v),
            (43, Field::Varint(v)) => spec.pad_id = as_int32(v),
            (45, Field::Bytes { data, .. }) => spec.unk_piece = lossy(data),
            (46, Field::Bytes { data, .. }) => spec.bos_piece = lossy(data),
            (47, Field::Bytes { data, .. }) => spec.eos_piece = lossy(data),
            (48, Field::Bytes { data, .. }) => spec.pad_piece = lossy(data),
            _ => {}
        }
    }
    Ok(())
}

fn parse_normalizer(
    bytes: &[u8],
    base: usize,
    spec: &mut NormalizerSpec,
) -> Result<(), SpmErrorKind> {
    let mut r = Reader::new(bytes, base, Within::NormalizerSpec);
    while let Some((field, _, value)) = r.next_field()? {
        match (field, value) {
            (1, Field::Bytes { data, .. }) => spec.name = lossy(data),
            (3, Field::Varint(v)) => spec.add_dummy_prefix = v != 0,
            (4, Field::Varint(v)) => spec.remove_extra_whitespaces = v != 0,
            (5, Field::Varint(v)) => spec.escape_whitespaces = v != 0,
            _ => {}
        }
    }
    Ok(())
}

/// Informational strings (not pieces) are kept even if they are not UTF-8.
fn lossy(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY_MODEL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/tiny/ckpt-fp16/tokenizer.model"
    );

    fn p() -> &'static Path {
        Path::new("test.model")
    }

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn tag(field: u32, wire: u8, out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | u64::from(wire), out);
    }

    fn len_field(field: u32, data: &[u8], out: &mut Vec<u8>) {
        tag(field, WIRE_LEN, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    fn piece_msg(text: &[u8], score: Option<f32>, kind: Option<u64>) -> Vec<u8> {
        let mut m = Vec::new();
        len_field(1, text, &mut m);
        if let Some(s) = score {
            tag(2, WIRE_FIXED32, &mut m);
            m.extend_from_slice(&s.to_le_bytes());
        }
        if let Some(k) = kind {
            tag(3, WIRE_VARINT, &mut m);
            varint(k, &mut m);
        }
        m
    }

    #[test]
    fn tiny_model_decodes() {
        let m = ModelProto::load(Path::new(TINY_MODEL)).unwrap();
        assert_eq!(m.pieces.len(), 1000);
        assert_eq!(m.pieces[0].piece, "<unk>");
        assert_eq!(m.pieces[0].kind, PieceType::Unknown);
        assert_eq!(m.pieces[1].piece, "<s>");
        assert_eq!(m.pieces[1].kind, PieceType::Control);
        assert_eq!(m.pieces[2].kind, PieceType::Control);
        assert_eq!(m.pieces[3].piece, "<0x00>");
        assert_eq!(m.pieces[3].kind, PieceType::Byte);
        assert_eq!(m.pieces[999].piece, "%");
        assert_eq!(m.pieces[999].score, -740.0);
        assert_eq!(m.trainer_spec.model_type, ModelType::Bpe);
        assert_eq!(m.trainer_spec.vocab_size, 1000);
        assert!(m.trainer_spec.byte_fallback);
        assert_eq!(
            (
                m.trainer_spec.unk_id,
                m.trainer_spec.bos_id,
                m.trainer_spec.eos_id,
                m.trainer_spec.pad_id
            ),
            (0, 1, 2, -1)
        );
        assert_eq!(m.normalizer_spec.name, "identity");
        assert!(m.normalizer_spec.add_dummy_prefix);
        assert!(!m.normalizer_spec.remove_extra_whitespaces);
    }

    #[test]
    fn defaults_and_unknown_fields() {
        let mut b = Vec::new();
        // Unknown fields of every wire type before, between and after pieces.
        tag(9, WIRE_VARINT, &mut b);
        varint(u64::MAX, &mut b);
        tag(10, WIRE_FIXED64, &mut b);
        b.extend_from_slice(&[1; 8]);
        tag(11, WIRE_FIXED32, &mut b);
        b.extend_from_slice(&[2; 4]);
        len_field(12, b"whatever", &mut b);
        tag(13, WIRE_START_GROUP, &mut b);
        tag(14, WIRE_START_GROUP, &mut b);
        tag(1, WIRE_VARINT, &mut b);
        varint(5, &mut b);
        tag(14, WIRE_END_GROUP, &mut b);
        tag(13, WIRE_END_GROUP, &mut b);
        len_field(1, &piece_msg(b"a", None, None), &mut b);
        // type 9 is outside the enum: keeps the default NORMAL; type given as a length field
        // (wrong wire type) is an unknown field.
        let mut pm = piece_msg("▁b".as_bytes(), Some(-1.5), Some(9));
        len_field(3, b"xx", &mut pm);
        len_field(1, &pm, &mut b);
        len_field(1, &piece_msg(b"c", None, Some(3)), &mut b);
        let m = ModelProto::parse(&b, p()).unwrap();
        assert_eq!(m.pieces.len(), 3);
        assert_eq!(m.pieces[0].score, 0.0);
        assert_eq!(m.pieces[0].kind, PieceType::Normal);
        assert_eq!(m.pieces[1].piece, "▁b");
        assert_eq!(m.pieces[1].score, -1.5);
        assert_eq!(m.pieces[1].kind, PieceType::Normal);
        assert_eq!(m.pieces[2].kind, PieceType::Control);
        assert_eq!(m.trainer_spec, TrainerSpec::default());
        assert_eq!(m.normalizer_spec, NormalizerSpec::default());
    }

    #[test]
    fn sub_messages_merge() {
        let mut ts1 = Vec::new();
        tag(3, WIRE_VARINT, &mut ts1);
        varint(2, &mut ts1);
        let mut ts2 = Vec::new();
        tag(35, WIRE_VARINT, &mut ts2);
        varint(1, &mut ts2);
        tag(43, WIRE_VARINT, &mut ts2);
        varint(u64::MAX, &mut ts2); // -1 as int32
        let mut b = Vec::new();
        len_field(2, &ts1, &mut b);
        len_field(2, &ts2, &mut b);
        let m = ModelProto::parse(&b, p()).unwrap();
        assert_eq!(m.trainer_spec.model_type, ModelType::Bpe);
        assert!(m.trainer_spec.byte_fallback);
        assert_eq!(m.trainer_spec.pad_id, -1);
    }

    fn kind_of(bytes: &[u8]) -> SpmErrorKind {
        ModelProto::parse(bytes, p()).unwrap_err().kind
    }

    #[test]
    fn malformed_wire_data() {
        // Truncated varint (tag byte with continuation bit, then nothing).
        assert!(matches!(
            kind_of(&[0x80]),
            SpmErrorKind::TruncatedVarint { offset: 0, .. }
        ));
        // Varint of 11 bytes.
        assert!(matches!(
            kind_of(&[0xff; 11]),
            SpmErrorKind::VarintTooLong { .. }
        ));
        // Length past the end.
        let e = kind_of(&[0x0a, 0x05, b'a']);
        assert!(matches!(
            e,
            SpmErrorKind::LengthPastEnd {
                len: 5,
                available: 1,
                ..
            }
        ));
        // A huge length must not allocate.
        let mut b = vec![0x0a];
        varint(u64::MAX >> 1, &mut b);
        assert!(matches!(kind_of(&b), SpmErrorKind::LengthPastEnd { .. }));
        // Truncated fixed32 / fixed64.
        assert!(matches!(
            kind_of(&[0x15, 1, 2]),
            SpmErrorKind::TruncatedFixed { width: 4, .. }
        ));
        assert!(matches!(
            kind_of(&[0x11, 1, 2]),
            SpmErrorKind::TruncatedFixed { width: 8, .. }
        ));
        // Wire types 6 and 7, field number 0.
        assert!(matches!(
            kind_of(&[0x0e]),
            SpmErrorKind::InvalidWireType { wire_type: 6, .. }
        ));
        assert!(matches!(
            kind_of(&[0x00]),
            SpmErrorKind::InvalidFieldNumber { .. }
        ));
        // Groups: stray end, unterminated, mismatched.
        assert!(matches!(
            kind_of(&[0x0c]),
            SpmErrorKind::UnexpectedEndGroup { field: 1, .. }
        ));
        assert!(matches!(
            kind_of(&[0x0b]),
            SpmErrorKind::UnterminatedGroup { field: 1, .. }
        ));
        assert!(matches!(
            kind_of(&[0x0b, 0x14]),
            SpmErrorKind::UnexpectedEndGroup { field: 2, .. }
        ));
        // Errors inside a piece name the piece.
        let mut b = Vec::new();
        len_field(1, &piece_msg(b"ok", None, None), &mut b);
        len_field(1, &[0x15, 0x00], &mut b);
        let e = ModelProto::parse(&b, p()).unwrap_err();
        assert!(matches!(
            e.kind,
            SpmErrorKind::TruncatedFixed {
                within: Within::Piece(1),
                ..
            }
        ));
        let msg = e.to_string();
        assert!(msg.starts_with("test.model: "), "{msg}");
        assert!(msg.contains("pieces[1]"), "{msg}");
    }

    #[test]
    fn invalid_utf8_piece() {
        let mut b = Vec::new();
        len_field(1, &piece_msg(b"fine", None, None), &mut b);
        len_field(1, &piece_msg(b"\xff\xfe", None, None), &mut b);
        let e = ModelProto::parse(&b, p()).unwrap_err();
        assert!(matches!(
            e.kind,
            SpmErrorKind::InvalidUtf8Piece { index: 1, .. }
        ));
        assert!(e.to_string().contains("invalid UTF-8 piece at index 1"));
    }

    fn model(pieces: &[(&str, PieceType)], byte_fallback: bool) -> ModelProto {
        ModelProto {
            pieces: pieces
                .iter()
                .map(|&(s, kind)| Piece {
                    piece: s.into(),
                    score: 0.0,
                    kind,
                })
                .collect(),
            trainer_spec: TrainerSpec {
                byte_fallback,
                ..TrainerSpec::default()
            },
            normalizer_spec: NormalizerSpec::default(),
        }
    }

    #[test]
    fn validation_matches_sentencepiece() {
        use PieceType::*;
        let v = |m: ModelProto| m.validate(p()).map_err(|e| e.kind);
        assert!(v(model(&[("<unk>", Unknown), ("a", Normal)], false)).is_ok());
        // No UNKNOWN piece at all: sentencepiece refuses to load it ("unk is not defined",
        // checked with the Python package), and an empty model is not initialized.
        assert!(matches!(
            v(model(&[("a", Normal)], false)),
            Err(SpmErrorKind::NoUnknown { pieces: 1 })
        ));
        assert!(matches!(
            v(model(&[], false)),
            Err(SpmErrorKind::NoUnknown { pieces: 0 })
        ));
        assert!(matches!(
            v(model(&[("<unk>", Unknown), ("", Normal)], false)),
            Err(SpmErrorKind::EmptyPiece { index: 1 })
        ));
        assert!(matches!(
            v(model(
                &[("a", Normal), ("b", Control), ("a", Control)],
                false
            )),
            Err(SpmErrorKind::DuplicatePiece {
                index: 2,
                first: 0,
                ..
            })
        ));
        assert!(matches!(
            v(model(&[("<unk>", Unknown), ("<u2>", Unknown)], false)),
            Err(SpmErrorKind::DuplicateUnknown { index: 1, first: 0 })
        ));
        assert!(matches!(
            v(model(&[("<0x00>", Byte)], false)),
            Err(SpmErrorKind::UnexpectedBytePiece { index: 0, .. })
        ));
        assert!(matches!(
            v(model(&[("<0x0a>", Byte)], true)),
            Err(SpmErrorKind::InvalidBytePiece { index: 0, .. })
        ));
        assert!(matches!(
            v(model(&[("<0x0A>", Byte)], true)),
            Err(SpmErrorKind::BytePieceCount { found: 1 })
        ));
        let names: Vec<String> = (0..=255u8).map(|b| format!("<0x{b:02X}>")).collect();
        let mut all: Vec<(&str, PieceType)> = vec![("<unk>", Unknown)];
        all.extend(names.iter().map(|s| (s.as_str(), Byte)));
        assert!(v(model(&all, true)).is_ok());
        assert_eq!(byte_piece_value("<0xFF>"), Some(255));
        assert_eq!(byte_piece_value("<0x0>"), None);
    }

    #[test]
    fn truncations_of_the_real_model_never_panic() {
        let bytes = std::fs::read(TINY_MODEL).unwrap();
        for cut in (0..bytes.len()).step_by(7) {
            let _ = ModelProto::parse(&bytes[..cut], p()).and_then(|m| m.validate(p()));
        }
    }

    /// A small deterministic fuzz loop: random byte mutations of the real model must give a
    /// model or an error, never a panic.
    #[test]
    fn random_mutations_never_panic() {
        let bytes = std::fs::read(TINY_MODEL).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut ok, mut failed) = (0u32, 0u32);
        for _ in 0..3000 {
            let mut b = bytes.clone();
            let edits = 1 + (next() % 8) as usize;
            for _ in 0..edits {
                let i = (next() % b.len() as u64) as usize;
                match next() % 4 {
                    0 => b[i] = next() as u8,
                    1 => b[i] ^= 1 << (next() % 8),
                    2 => b.truncate(i.max(1)),
                    _ => b.insert(i, next() as u8),
                }
            }
            match ModelProto::parse(&b, p()).and_then(|m| m.validate(p()).map(|_| m)) {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.to_string().starts_with("test.model: "));
                    failed += 1;
                }
            }
        }
        assert_eq!(ok + failed, 3000);
        assert!(failed > 0);
    }
}
