//! Streaming GGUF writer.
//!
//! The header, the metadata and the tensor-info table are written first: every tensor's type
//! and shape, hence its size and offset, is known up front. Tensor data then follows in table
//! order, in as many chunks as the producer likes, so no model is ever held in memory. The
//! writer checks that each tensor receives exactly its byte count and pads to the alignment.

use std::fmt;
use std::io::{self, Write};

use super::types::{pad_to, GgmlType, SizeError};
use super::value::Value;
use super::{GGUF_MAGIC, KEY_ALIGNMENT};

/// A tensor to be written: name, dims in ggml order, type.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Tensor name.
    pub name: String,
    /// Dimensions in ggml order (`ne0` first).
    pub dims: Vec<u64>,
    /// Tensor type.
    pub ty: GgmlType,
}

/// A planned tensor: its spec, where its data goes and how many bytes it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedTensor {
    /// What is written.
    pub spec: TensorSpec,
    /// Offset relative to the data section.
    pub offset: u64,
    /// Bytes of data the producer must supply.
    pub nbytes: u64,
}

/// A GGUF write error.
#[derive(Debug)]
pub enum WriteError {
    /// The underlying writer failed.
    Io(io::Error),
    /// A tensor's shape has no size for its type.
    Size {
        /// The tensor.
        tensor: String,
        /// Why.
        source: SizeError,
    },
    /// The producer supplied the wrong number of bytes, or wrote out of order.
    Protocol(String),
    /// `general.alignment` is not a positive power of two.
    BadAlignment(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Io(e) => write!(f, "write failed: {e}"),
            WriteError::Size { tensor, source } => write!(f, "tensor {tensor}: {source}"),
            WriteError::Protocol(s) => write!(f, "{s}"),
            WriteError::BadAlignment(s) => write!(f, "general.alignment: {s}"),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WriteError::Io(e) => Some(e),
            WriteError::Size { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// Computes offsets and sizes for `tensors` with the given alignment.
pub fn plan(tensors: Vec<TensorSpec>, alignment: u64) -> Result<Vec<PlannedTensor>, WriteError> {
    let mut offset = 0u64;
    let mut out = Vec::with_capacity(tensors.len());
    for spec in tensors {
        let nbytes = spec.ty.nbytes(&spec.dims).map_err(|e| WriteError::Size {
            tensor: spec.name.clone(),
            source: e,
        })?;
        out.push(PlannedTensor {
            spec,
            offset,
            nbytes,
        });
        offset = offset
            .checked_add(nbytes)
            .and_then(|end| super::types::checked_pad_to(end, alignment))
            .ok_or_else(|| WriteError::Size {
                tensor: out
                    .last()
                    .map(|t: &PlannedTensor| t.spec.name.clone())
                    .unwrap_or_default(),
                source: SizeError::Overflow,
            })?;
    }
    Ok(out)
}

/// The alignment a metadata list asks for (`general.alignment`, default 32).
pub fn alignment_of(kv: &[(String, Value)]) -> Result<u64, WriteError> {
    match kv.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
        None => Ok(32),
        Some((_, v)) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() => Ok(a),
            _ => Err(WriteError::BadAlignment(format!(
                "{v} is not a positive power of two"
            ))),
        },
    }
}

/// The size of the file [`GgufWriter`] writes for this metadata and these tensors.
pub fn file_size(kv: &[(String, Value)], tensors: Vec<TensorSpec>) -> Result<u64, WriteError> {
    let alignment = alignment_of(kv)?;
    let planned = plan(tensors, alignment)?;
    let data = planned
        .last()
        .map(|p| pad_to(p.offset + p.nbytes, alignment))
        .unwrap_or(0);
    Ok(header_size(kv, &planned, alignment) + data)
}

/// Bytes the header (up to the padded start of the data section) will take.
pub fn header_size(kv: &[(String, Value)], tensors: &[PlannedTensor], alignment: u64) -> u64 {
    let mut n = 4 + 4 + 8 + 8;
    for (k, v) in kv {
        n += 8 + k.len() as u64 + 4 + value_size(v);
    }
    for t in tensors {
        n += 8 + t.spec.name.len() as u64 + 4 + 8 * t.spec.dims.len() as u64 + 4 + 8;
    }
    pad_to(n, alignment)
}

fn value_size(v: &Value) -> u64 {
    match v {
        Value::String(s) => 8 + s.len() as u64,
        Value::Array(_, items) => 4 + 8 + items.iter().map(value_size).sum::<u64>(),
        Value::Lazy(l) => 12 + l.len,
        other => other.value_type().fixed_size().unwrap_or(0) as u64,
    }
}

/// Streams a GGUF file into `W`.
pub struct GgufWriter<W: Write> {
    w: W,
    alignment: u64,
    tensors: Vec<PlannedTensor>,
    /// Index of the tensor being written (== tensors.len() when all are done).
    current: usize,
    /// Bytes of the current tensor written so far.
    in_tensor: u64,
    /// Bytes written to `w` in total.
    pos: u64,
    data_start: u64,
}

impl<W: Write> GgufWriter<W> {
    /// Writes the header, metadata and tensor table, and pads to the data section.
    pub fn new(
        w: W,
        kv: &[(String, Value)],
        tensors: Vec<TensorSpec>,
    ) -> Result<GgufWriter<W>, WriteError> {
        let alignment = alignment_of(kv)?;
        let tensors = plan(tensors, alignment)?;
        let mut this = GgufWriter {
            w,
            alignment,
            tensors,
            current: 0,
            in_tensor: 0,
            pos: 0,
            data_start: 0,
        };
        this.put(GGUF_MAGIC)?;
        this.put(&3u32.to_le_bytes())?;
        this.put(&(this.tensors.len() as u64).to_le_bytes())?;
        this.put(&(kv.len() as u64).to_le_bytes())?;
        for (k, v) in kv {
            this.put_str(k)?;
            this.put(&(v.value_type() as u32).to_le_bytes())?;
            this.put_value(v)?;
        }
        // Type ids as the runtime the metadata names numbers them (TL2 is 42 for the current
        // bitnet.cpp, 39 in the 2024 reference).
        let type_ids = super::types::TypeIds::detect(kv);
        for i in 0..this.tensors.len() {
            let t = this.tensors[i].clone();
            this.put_str(&t.spec.name)?;
            this.put(&(t.spec.dims.len() as u32).to_le_bytes())?;
            for d in &t.spec.dims {
                this.put(&d.to_le_bytes())?;
            }
            this.put(&type_ids.id_of(t.spec.ty).to_le_bytes())?;
            this.put(&t.offset.to_le_bytes())?;
        }
        this.pad()?;
        this.data_start = this.pos;
        Ok(this)
    }

    /// The planned tensors, with offsets and byte counts.
    pub fn tensors(&self) -> &[PlannedTensor] {
        &self.tensors
    }

    /// Absolute offset of the data section.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The tensor that the next bytes belong to, if any remain.
    pub fn current(&self) -> Option<&PlannedTensor> {
        self.tensors.get(self.current)
    }

    /// Appends bytes of the current tensor. A tensor may be written in any number of chunks;
    /// when its last byte arrives the padding is written and the next tensor begins.
    pub fn write_data(&mut self, mut chunk: &[u8]) -> Result<(), WriteError> {
        while !chunk.is_empty() {
            let Some(t) = self.tensors.get(self.current) else {
                return Err(WriteError::Protocol(format!(
                    "{} bytes of data left over after the last tensor",
                    chunk.len()
                )));
            };
            let want = (t.nbytes - self.in_tensor).min(chunk.len() as u64) as usize;
            let (now, rest) = chunk.split_at(want);
            self.put(now)?;
            self.in_tensor += want as u64;
            chunk = rest;
            self.finish_tensor_if_full()?;
        }
        Ok(())
    }

    /// Writes one whole tensor, checking its name and length.
    pub fn write_tensor(&mut self, name: &str, data: &[u8]) -> Result<(), WriteError> {
        let Some(t) = self.tensors.get(self.current) else {
            return Err(WriteError::Protocol(format!(
                "tensor {name}: every planned tensor was already written"
            )));
        };
        if t.spec.name != name || self.in_tensor != 0 || data.len() as u64 != t.nbytes {
            return Err(WriteError::Protocol(format!(
                "tensor {name}: expected {} with {} bytes next, got {} bytes{}",
                t.spec.name,
                t.nbytes,
                data.len(),
                if self.in_tensor != 0 {
                    " while the previous tensor was unfinished"
                } else {
                    ""
                }
            )));
        }
        self.write_data(data)
    }

    /// Checks that every tensor was written in full and returns the inner writer (flushed).
    pub fn finish(mut self) -> Result<W, WriteError> {
        // Zero-byte tensors need no data; finish them.
        self.finish_tensor_if_full()?;
        if let Some(t) = self.tensors.get(self.current) {
            return Err(WriteError::Protocol(format!(
                "tensor {} got {} of {} bytes before the file was finished",
                t.spec.name, self.in_tensor, t.nbytes
            )));
        }
        self.w.flush()?;
        Ok(self.w)
    }

    fn finish_tensor_if_full(&mut self) -> Result<(), WriteError> {
        while let Some(t) = self.tensors.get(self.current) {
            if self.in_tensor < t.nbytes {
                break;
            }
            // Every tensor, the last one included, is padded to the alignment (as gguf-py does).
            self.pad()?;
            self.current += 1;
            self.in_tensor = 0;
        }
        Ok(())
    }

    fn put(&mut self, b: &[u8]) -> Result<(), WriteError> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn put_str(&mut self, s: &str) -> Result<(), WriteError> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s.as_bytes())
    }

    fn pad(&mut self) -> Result<(), WriteError> {
        const ZEROS: [u8; 64] = [0; 64];
        let mut n = pad_to(self.pos, self.alignment) - self.pos;
        while n > 0 {
            let k = n.min(64) as usize;
            self.put(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }

    fn put_value(&mut self, v: &Value) -> Result<(), WriteError> {
        match v {
            Value::U8(x) => self.put(&[*x]),
            Value::I8(x) => self.put(&x.to_le_bytes()),
            Value::U16(x) => self.put(&x.to_le_bytes()),
            Value::I16(x) => self.put(&x.to_le_bytes()),
            Value::U32(x) => self.put(&x.to_le_bytes()),
            Value::I32(x) => self.put(&x.to_le_bytes()),
            Value::F32(x) => self.put(&x.to_le_bytes()),
            Value::Bool(x) => self.put(&[*x as u8]),
            Value::String(s) => self.put_str(s),
            Value::U64(x) => self.put(&x.to_le_bytes()),
            Value::I64(x) => self.put(&x.to_le_bytes()),
            Value::F64(x) => self.put(&x.to_le_bytes()),
            Value::Lazy(l) => Err(WriteError::Protocol(format!(
                "a {} of {} elements that was not decoded from its file cannot be written",
                l.ty.short_name(),
                l.count
            ))),
            Value::Array(et, items) => {
                self.put(&(*et as u32).to_le_bytes())?;
                self.put(&(items.len() as u64).to_le_bytes())?;
                for it in items {
                    if it.value_type() != *et {
                        return Err(WriteError::Protocol(format!(
                            "array of {} holds a {}",
                            et.short_name(),
                            it.value_type().short_name()
                        )));
                    }
                    self.put_value(it)?;
                }
                Ok(())
            }
        }
    }
}
