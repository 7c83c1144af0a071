//! GGUF reader: parses the header, the metadata and the tensor-info table from a byte slice
//! (normally a memory map) without trusting any count, length or offset in it.
//!
//! Every count read from the file is checked against the bytes that remain before anything is
//! allocated for it, so a header claiming 2^60 keys fails at once instead of exhausting memory.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use super::types::{pad_to, GgmlType, TypeIds};
use super::value::{LazyValue, Value, ValueType};
use super::{GGUF_MAGIC, MAX_DIMS};

/// What went wrong while reading a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file does not start with `GGUF`.
    BadMagic,
    /// A version other than 2 or 3.
    UnsupportedVersion(u32),
    /// The file ends inside a field.
    Truncated,
    /// A count or length larger than the file could hold.
    CountTooLarge(u64),
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A metadata value type tag that GGUF does not define.
    UnknownValueType(u32),
    /// A tensor type id missing from the type table.
    UnknownTensorType(u32),
    /// More than four dimensions, or a shape the type cannot hold.
    BadShape(String),
    /// A count beyond what bitconv reads (the count and the limit).
    OverLimit(u64, u64),
    /// A tensor type id this file's numbering does not let bitconv read (why).
    TypeId(String),
    /// `general.alignment` is not a positive power of two, or a tensor offset is not aligned.
    BadAlignment(u64),
    /// A tensor's data lies (partly) past the end of the file.
    OutOfBounds,
    /// Two tensors' data overlap.
    Overlap(String),
    /// A key or tensor name that occurs twice.
    Duplicate,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::BadMagic => write!(f, "not a GGUF file (bad magic)"),
            ErrorKind::UnsupportedVersion(v) => {
                write!(f, "unsupported GGUF version {v} (expected 2 or 3)")
            }
            ErrorKind::Truncated => write!(f, "file ends inside this field (truncated)"),
            ErrorKind::CountTooLarge(n) => {
                write!(f, "count or length {n} is larger than the file can hold")
            }
            ErrorKind::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            ErrorKind::UnknownValueType(t) => write!(f, "unknown metadata value type {t}"),
            ErrorKind::UnknownTensorType(t) => write!(f, "unknown tensor type id {t}"),
            ErrorKind::BadShape(s) => write!(f, "bad shape: {s}"),
            ErrorKind::TypeId(why) => write!(f, "{why}"),
            ErrorKind::OverLimit(n, limit) => {
                write!(f, "{n} is more than bitconv reads (at most {limit})")
            }
            ErrorKind::BadAlignment(a) => write!(f, "bad alignment {a}"),
            ErrorKind::OutOfBounds => write!(f, "tensor data extends past the end of the file"),
            ErrorKind::Overlap(other) => write!(f, "tensor data overlaps tensor {other}"),
            ErrorKind::Duplicate => write!(f, "duplicate name"),
        }
    }
}

/// A GGUF read error: the file, the field, the byte offset and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError {
    /// The file (or a label for in-memory data).
    pub file: PathBuf,
    /// The field being read, e.g. `header.n_kv` or `tensor_info[3] (blk.0.attn_q.weight).type`.
    pub field: String,
    /// Byte offset in the file where the field starts.
    pub offset: u64,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (at byte {}): {}",
            self.file.display(),
            self.field,
            self.offset,
            self.kind
        )
    }
}

impl std::error::Error for ReadError {}

/// One entry of the tensor-info table, plus what the reader derived from it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order (`ne0` first).
    pub dims: Vec<u64>,
    /// Tensor type.
    pub ty: GgmlType,
    /// The type id as stored in the file (TL2 is 39 or 42 depending on the runtime the file
    /// is for; see [`TypeIds`]).
    pub type_id: u32,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Bytes the tensor occupies (the fork's `ggml_nbytes`: for TL1/TL2 including the hidden
    /// scale slot, for I2_S including the scale tail).
    pub nbytes: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header: metadata in file order and the tensor table in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata, in file order.
    pub kv: Vec<(String, Value)>,
    /// Tensor infos, in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_start: u64,
    /// Size of the whole file.
    pub file_size: u64,
}

/// Most tensors a header may declare (real models have a few thousand).
pub const MAX_TENSORS: u64 = 1 << 17;
/// Most metadata entries a header may declare.
pub const MAX_KV: u64 = 1 << 16;
/// ggml's limit on a tensor name, in bytes (`GGML_MAX_NAME` less its terminating zero).
pub const MAX_TENSOR_NAME: u64 = 63;

/// How much of the metadata is decoded while a header is read. A string or array beyond these
/// limits is checked and kept as [`Value::Lazy`] (its place in the file), so memory follows what
/// is decoded, not what the header claims: a decoded array element costs about 32 bytes however
/// small it is in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// Arrays of more elements stay in the file.
    pub array_items: u64,
    /// Strings of more bytes stay in the file.
    pub string_bytes: u64,
    /// Array elements decoded over the whole header; arrays beyond it stay in the file.
    pub total_items: u64,
}

impl ParseLimits {
    /// For running a model: everything decoded up to 8 Mi elements an array and 16 Mi in all
    /// (the largest vocabularies need about 1 Mi).
    pub const MODEL: ParseLimits = ParseLimits {
        array_items: 1 << 23,
        string_bytes: u64::MAX,
        total_items: 1 << 24,
    };
    /// For reports: small values decoded, large ones previewed from the file on demand.
    pub const REPORT: ParseLimits = ParseLimits {
        array_items: 64,
        string_bytes: 4096,
        total_items: 1 << 16,
    };
}

impl GgufHeader {
    /// Parses a whole GGUF file held in `bytes` with [`ParseLimits::MODEL`]; `file` names it in
    /// errors.
    pub fn parse(bytes: &[u8], file: &Path) -> Result<GgufHeader, ReadError> {
        GgufHeader::parse_with(bytes, file, ParseLimits::MODEL, None)
    }

    /// Decodes the first `max` elements of a value left in the file (the first `max` bytes of a
    /// string, cut back to a character boundary) from `bytes`, the file it was read from.
    pub fn decode_lazy(
        bytes: &[u8],
        file: &Path,
        lazy: &LazyValue,
        max: usize,
    ) -> Result<Value, ReadError> {
        let mut c = Cursor {
            bytes,
            pos: lazy.offset as usize,
            file,
            limits: ParseLimits::REPORT,
            decoded: 0,
            release: None,
        };
        if lazy.offset > bytes.len() as u64 {
            return Err(c.err_at(0, "lazy value", ErrorKind::Truncated));
        }
        if lazy.ty == ValueType::String {
            let n = (lazy.count.min(max as u64) as usize).min(c.remaining());
            let s = &bytes[c.pos..c.pos + n];
            let text = match std::str::from_utf8(s) {
                Ok(t) => t,
                Err(e) => std::str::from_utf8(&s[..e.valid_up_to()]).unwrap_or_default(),
            };
            return Ok(Value::String(text.to_owned()));
        }
        let n = lazy.count.min(max as u64);
        let mut items = Vec::with_capacity(n as usize);
        for _ in 0..n {
            items.push(c.value(lazy.elem, "lazy value", 1)?);
        }
        Ok(Value::Array(lazy.elem, items))
    }

    /// Parses with explicit limits. `release`, when given, is called with byte ranges the
    /// reader has finished checking inside large undecoded values, so that a caller holding a
    /// file mapping can drop those pages.
    pub fn parse_with(
        bytes: &[u8],
        file: &Path,
        limits: ParseLimits,
        release: Option<&dyn Fn(std::ops::Range<usize>)>,
    ) -> Result<GgufHeader, ReadError> {
        let mut c = Cursor {
            bytes,
            pos: 0,
            file,
            limits,
            decoded: 0,
            release,
        };
        let magic = c.take(4, "header.magic")?;
        if magic != GGUF_MAGIC {
            return Err(c.err_at(0, "header.magic", ErrorKind::BadMagic));
        }
        let version = c.u32("header.version")?;
        if version != 2 && version != 3 {
            return Err(c.err_at(4, "header.version", ErrorKind::UnsupportedVersion(version)));
        }
        let n_tensors = c.u64("header.n_tensors")?;
        let n_kv = c.u64("header.n_kv")?;
        // Each KV takes at least 8 (key len) + 4 (type) + 1 bytes; each tensor info at least
        // 8 + 4 + 4 + 8.
        c.check_count(n_kv, 13, "header.n_kv", 8)?;
        c.check_count(n_tensors, 24, "header.n_tensors", 16)?;
        if n_tensors > MAX_TENSORS {
            return Err(c.err_at(
                8,
                "header.n_tensors",
                ErrorKind::OverLimit(n_tensors, MAX_TENSORS),
            ));
        }
        if n_kv > MAX_KV {
            return Err(c.err_at(16, "header.n_kv", ErrorKind::OverLimit(n_kv, MAX_KV)));
        }

        let mut kv = Vec::with_capacity(n_kv as usize);
        let mut seen = HashSet::new();
        for i in 0..n_kv {
            let start = c.pos;
            let key = c.string(&format!("kv[{i}].key"))?;
            let field = format!("kv[{i}] ({key})");
            let tag_pos = c.pos;
            let tag = c.u32(&format!("{field}.type"))?;
            let vt = ValueType::from_u32(tag).ok_or_else(|| {
                c.err_at(
                    tag_pos,
                    &format!("{field}.type"),
                    ErrorKind::UnknownValueType(tag),
                )
            })?;
            let value = c.value(vt, &field, 0)?;
            if !seen.insert(key.clone()) {
                return Err(c.err_at(start, &field, ErrorKind::Duplicate));
            }
            kv.push((key, value));
        }

        let mut alignment = 32u64;
        if let Some((i, (_, v))) = kv
            .iter()
            .enumerate()
            .find(|(_, (k, _))| k == super::KEY_ALIGNMENT)
        {
            let a = match v {
                Value::U32(a) => *a as u64,
                other => other.as_u64().unwrap_or(0),
            };
            if a == 0 || !a.is_power_of_two() {
                return Err(c.err_at(
                    0,
                    &format!("kv[{i}] (general.alignment)"),
                    ErrorKind::BadAlignment(a),
                ));
            }
            alignment = a;
        }

        let type_ids = TypeIds::detect(&kv);
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut names = HashSet::new();
        for i in 0..n_tensors {
            let start = c.pos;
            let len = c.peek_u64().unwrap_or(0);
            if len > MAX_TENSOR_NAME {
                return Err(c.err_at(
                    start,
                    &format!("tensor_info[{i}].name"),
                    ErrorKind::OverLimit(len, MAX_TENSOR_NAME),
                ));
            }
            let name = c.string(&format!("tensor_info[{i}].name"))?;
            let field = format!("tensor_info[{i}] ({name})");
            let nd_pos = c.pos;
            let n_dims = c.u32(&format!("{field}.n_dims"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(c.err_at(
                    nd_pos,
                    &format!("{field}.n_dims"),
                    ErrorKind::BadShape(format!("{n_dims} dimensions, at most {MAX_DIMS}")),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(c.u64(&format!("{field}.dims[{d}]"))?);
            }
            let ty_pos = c.pos;
            let ty_id = c.u32(&format!("{field}.type"))?;
            let ty = type_ids.type_of(ty_id).map_err(|why| {
                let kind = if GgmlType::from_id(ty_id).is_none() && !(39..=42).contains(&ty_id) {
                    ErrorKind::UnknownTensorType(ty_id)
                } else {
                    ErrorKind::TypeId(why)
                };
                c.err_at(ty_pos, &format!("{field}.type"), kind)
            })?;
            let off_pos = c.pos;
            let offset = c.u64(&format!("{field}.offset"))?;
            let nbytes = ty.nbytes(&dims).map_err(|e| {
                c.err_at(
                    nd_pos,
                    &format!("{field}.dims"),
                    ErrorKind::BadShape(e.to_string()),
                )
            })?;
            if offset % alignment != 0 {
                return Err(c.err_at(
                    off_pos,
                    &format!("{field}.offset"),
                    ErrorKind::BadAlignment(offset),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(c.err_at(start, &field, ErrorKind::Duplicate));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                type_id: ty_id,
                offset,
                nbytes,
            });
        }

        let data_start = pad_to(c.pos as u64, alignment);
        let file_size = bytes.len() as u64;
        let data_len = file_size.saturating_sub(data_start);
        if !tensors.is_empty() && data_start > file_size {
            return Err(c.err_at(c.pos, "data section", ErrorKind::Truncated));
        }
        // Bounds, then overlaps (in offset order).
        for (i, t) in tensors.iter().enumerate() {
            let end = t.offset.checked_add(t.nbytes);
            if end.is_none_or(|e| e > data_len) {
                return Err(c.err_at(
                    data_start.saturating_add(t.offset) as usize,
                    &format!("tensor_info[{i}] ({}).offset", t.name),
                    ErrorKind::OutOfBounds,
                ));
            }
        }
        let mut order: Vec<usize> = (0..tensors.len()).collect();
        order.sort_by_key(|&i| tensors[i].offset);
        for w in order.windows(2) {
            let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
            if a.offset + a.nbytes > b.offset {
                return Err(c.err_at(
                    (data_start + b.offset) as usize,
                    &format!("tensor_info[{}] ({}).offset", w[1], b.name),
                    ErrorKind::Overlap(a.name.clone()),
                ));
            }
        }

        Ok(GgufHeader {
            version,
            kv,
            tensors,
            alignment,
            data_start,
            file_size,
        })
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor (its whole span) within `file_bytes`, the same bytes the header was
    /// parsed from.
    pub fn tensor_bytes<'a>(&self, file_bytes: &'a [u8], t: &TensorInfo) -> &'a [u8] {
        let start = (self.data_start + t.offset) as usize;
        &file_bytes[start..start + t.nbytes as usize]
    }

    /// The per-tensor f32 scale of an I2_S, TL1 or TL2 tensor. For TL1/TL2 this is the hidden
    /// `<name>_scale` slot that bitnet.cpp's writer leaves out of the tensor table.
    pub fn ternary_scale(&self, file_bytes: &[u8], t: &TensorInfo) -> Option<f32> {
        let off = t.ty.scale_offset(&t.dims)? as usize;
        let data = self.tensor_bytes(file_bytes, t);
        let b = data.get(off..off + 4)?;
        Some(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    file: &'a Path,
    limits: ParseLimits,
    /// Array elements decoded so far.
    decoded: u64,
    release: Option<&'a dyn Fn(std::ops::Range<usize>)>,
}

impl<'a> Cursor<'a> {
    fn err_at(&self, offset: usize, field: &str, kind: ErrorKind) -> ReadError {
        ReadError {
            file: self.file.to_path_buf(),
            field: field.to_string(),
            offset: offset as u64,
            kind,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn peek_u64(&self) -> Option<u64> {
        let b = self.bytes.get(self.pos..self.pos + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Lets the caller drop the pages of `*mark..self.pos` once they add up to 4 MiB (or at
    /// the end, `all`), and moves the mark.
    fn release_from(&self, mark: &mut usize, all: bool) {
        if let Some(f) = self.release {
            if self.pos - *mark >= 1 << 22 || (all && self.pos > *mark) {
                f(*mark..self.pos);
                *mark = self.pos;
            }
        }
    }

    /// Checks a value of type `vt` and moves past it without decoding it (nothing allocated).
    fn skip(&mut self, vt: ValueType, field: &str, depth: usize) -> Result<(), ReadError> {
        match vt {
            ValueType::String => {
                let start = self.pos;
                let len = self.u64(field)?;
                if len > self.remaining() as u64 {
                    return Err(self.err_at(start, field, ErrorKind::CountTooLarge(len)));
                }
                let bytes = self.take(len as usize, field)?;
                if std::str::from_utf8(bytes).is_err() {
                    return Err(self.err_at(start, field, ErrorKind::InvalidUtf8));
                }
            }
            ValueType::Bool => {
                let pos = self.pos;
                let b = self.array::<1>(field)?[0];
                if b > 1 {
                    return Err(self.err_at(
                        pos,
                        field,
                        ErrorKind::BadShape(format!("bool byte {b} is neither 0 nor 1")),
                    ));
                }
            }
            ValueType::Array => {
                let (et, n) = self.array_head(field, depth)?;
                self.skip_items(et, n, field, depth)?;
            }
            fixed => {
                let size = fixed.fixed_size().unwrap_or(1);
                self.take(size, field)?;
            }
        }
        Ok(())
    }

    /// Skips `n` elements of type `et` (the count already checked against the file).
    fn skip_items(
        &mut self,
        et: ValueType,
        n: u64,
        field: &str,
        depth: usize,
    ) -> Result<(), ReadError> {
        let mut mark = self.pos;
        match et.fixed_size() {
            Some(size) if et != ValueType::Bool => {
                self.take(n as usize * size, field)?;
                mark = self.pos;
            }
            _ => {
                for _ in 0..n {
                    self.skip(et, field, depth + 1)?;
                    self.release_from(&mut mark, false);
                }
            }
        }
        self.release_from(&mut mark, true);
        Ok(())
    }

    /// Reads an array's element type and count and checks the count against the file.
    fn array_head(&mut self, field: &str, depth: usize) -> Result<(ValueType, u64), ReadError> {
        let tag_pos = self.pos;
        let tag = self.u32(field)?;
        let et = ValueType::from_u32(tag)
            .ok_or_else(|| self.err_at(tag_pos, field, ErrorKind::UnknownValueType(tag)))?;
        if depth >= 8 {
            return Err(self.err_at(
                tag_pos,
                field,
                ErrorKind::BadShape("arrays nested deeper than 8 levels".into()),
            ));
        }
        let n = self.u64(field)?;
        self.check_count(n, et.min_size() as u64, field, 8)?;
        Ok((et, n))
    }

    /// Fails unless `count` items of at least `min_size` bytes each fit in what remains; the
    /// error points `back` bytes before the cursor, where the count was read. Every allocation
    /// sized by a count from the file passes through here first.
    fn check_count(
        &self,
        count: u64,
        min_size: u64,
        field: &str,
        back: usize,
    ) -> Result<(), ReadError> {
        if count.saturating_mul(min_size) > self.remaining() as u64 {
            return Err(self.err_at(
                self.pos.saturating_sub(back),
                field,
                ErrorKind::CountTooLarge(count),
            ));
        }
        Ok(())
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], ReadError> {
        if n > self.remaining() {
            return Err(self.err_at(self.pos, field, ErrorKind::Truncated));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], ReadError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, field: &str) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &str) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    fn string(&mut self, field: &str) -> Result<String, ReadError> {
        let start = self.pos;
        let len = self.u64(field)?;
        if len > self.remaining() as u64 {
            return Err(self.err_at(start, field, ErrorKind::CountTooLarge(len)));
        }
        let bytes = self.take(len as usize, field)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => Err(self.err_at(start, field, ErrorKind::InvalidUtf8)),
        }
    }

    fn value(&mut self, vt: ValueType, field: &str, depth: usize) -> Result<Value, ReadError> {
        Ok(match vt {
            ValueType::U8 => Value::U8(self.array::<1>(field)?[0]),
            ValueType::I8 => Value::I8(self.array::<1>(field)?[0] as i8),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(field)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(field)?)),
            ValueType::U32 => Value::U32(self.u32(field)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(field)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(field)?)),
            ValueType::Bool => {
                let pos = self.pos;
                match self.array::<1>(field)?[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(self.err_at(
                            pos,
                            field,
                            ErrorKind::BadShape(format!("bool byte {b} is neither 0 nor 1")),
                        ))
                    }
                }
            }
            ValueType::String => {
                let len = self.peek_u64().unwrap_or(0);
                if len > self.limits.string_bytes {
                    let start = self.pos;
                    self.skip(ValueType::String, field, depth)?;
                    return Ok(Value::Lazy(LazyValue {
                        ty: ValueType::String,
                        elem: ValueType::U8,
                        count: len,
                        offset: start as u64 + 8,
                        len,
                    }));
                }
                Value::String(self.string(field)?)
            }
            ValueType::U64 => Value::U64(self.u64(field)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(field)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(field)?)),
            ValueType::Array => {
                let (et, n) = self.array_head(field, depth)?;
                if n > self.limits.array_items
                    || self.decoded.saturating_add(n) > self.limits.total_items
                {
                    let start = self.pos;
                    self.skip_items(et, n, field, depth)?;
                    return Ok(Value::Lazy(LazyValue {
                        ty: ValueType::Array,
                        elem: et,
                        count: n,
                        offset: start as u64,
                        len: (self.pos - start) as u64,
                    }));
                }
                self.decoded += n;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(et, field, depth + 1)?);
                }
                Value::Array(et, items)
            }
        })
    }
}
