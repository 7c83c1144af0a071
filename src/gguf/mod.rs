//! GGUF v3: a reader that trusts nothing in the file, a streaming writer, the tensor type
//! table, metadata values, and the report that `bitconv inspect` prints.
//!
//! bitnet.cpp's TL1/TL2 files carry a per-tensor f32 scale in a hidden 32-byte slot after each
//! weight that is left out of the tensor count and the tensor-info table (FORMATS.md §3.5). The
//! type table counts that slot in the tensor's byte size, so such files read like any other and
//! [`GgufHeader::ternary_scale`] exposes the scale.

pub mod compat;
pub mod inspect;
pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use reader::{ErrorKind, GgufHeader, ParseLimits, ReadError, TensorInfo};
pub use types::{GgmlType, SizeRule, TypeIds, TypeInfo, TYPE_TABLE};
pub use value::{LazyValue, Value, ValueType};
pub use writer::{GgufWriter, PlannedTensor, TensorSpec, WriteError};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// ggml's dimension limit.
pub const MAX_DIMS: usize = 4;
/// The metadata key that sets the data alignment.
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// A GGUF file mapped into memory with its parsed header.
pub struct MappedGguf {
    path: PathBuf,
    map: memmap2::Mmap,
    /// The parsed header.
    pub header: GgufHeader,
}

/// Errors opening a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or mapped.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid GGUF file.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl MappedGguf {
    /// Maps and parses a GGUF file.
    ///
    /// The map assumes nobody truncates or rewrites the file while it is open (the usual
    /// contract of memory-mapped inputs; bitconv never writes a file it is reading).
    pub fn open(path: &Path) -> Result<MappedGguf, OpenError> {
        MappedGguf::open_with(path, reader::ParseLimits::MODEL)
    }

    /// Maps a file for a report: only small metadata values are decoded
    /// ([`reader::ParseLimits::REPORT`]), large ones stay in the file ([`Value::Lazy`]) and
    /// the pages checked inside them are dropped as the reader passes, so memory stays small
    /// whatever the header claims.
    pub fn open_for_report(path: &Path) -> Result<MappedGguf, OpenError> {
        MappedGguf::open_with(path, reader::ParseLimits::REPORT)
    }

    fn open_with(path: &Path, limits: reader::ParseLimits) -> Result<MappedGguf, OpenError> {
        let io = |source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: read-only map; see the contract of `open`.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        let release = |r: std::ops::Range<usize>| crate::util::release_pages(&map, r);
        let header = GgufHeader::parse_with(&map, path, limits, Some(&release))?;
        Ok(MappedGguf {
            path: path.to_path_buf(),
            map,
            header,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All bytes of the file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The data span of a tensor.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        self.header.tensor_bytes(&self.map, t)
    }

    /// The per-tensor scale of an I2_S/TL1/TL2 tensor.
    pub fn ternary_scale(&self, t: &TensorInfo) -> Option<f32> {
        self.header.ternary_scale(&self.map, t)
    }
}
