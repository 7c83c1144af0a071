//! The protobuf wire format of `tokenizer.model`: a bounds-checked cursor over one message and
//! the decoders of the fields bitconv reads (the table in the parent module).

use super::{
    ModelProto, ModelType, NormalizerSpec, Piece, PieceType, SpmErrorKind, TrainerSpec, Within,
};

pub(super) const WIRE_VARINT: u8 = 0;
pub(super) const WIRE_FIXED64: u8 = 1;
pub(super) const WIRE_LEN: u8 = 2;
pub(super) const WIRE_START_GROUP: u8 = 3;
pub(super) const WIRE_END_GROUP: u8 = 4;
pub(super) const WIRE_FIXED32: u8 = 5;

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

pub(super) fn parse_model(bytes: &[u8], model: &mut ModelProto) -> Result<(), SpmErrorKind> {
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
