//! A runtime that executes the GGUF files bitconv writes (and those of bitnet.cpp and mainline
//! llama.cpp), so a conversion can be checked by running it.
//!
//! * [`model`]: opens a GGUF file over a memory map and binds its tensors to the
//!   `bitnet`, `bitnet-b1.58` and `llama` architectures. Ternary weights stay compact: I2_S,
//!   TQ2_0 and the float/Q8_0 tensors are read in place from the map; TL1/TL2 are re-packed
//!   once into I2_S rows and TQ1_0 into TQ2_0 blocks (the same bytes per weight).
//! * [`session`]: the forward pass that drives the kernel tables (the scalar reference table
//!   or a SIMD one), with a KV cache, whose arithmetic follows the CPU kernels of bitnet.cpp (int8 activations for I2_S/TL1/TL2) and mainline llama.cpp (Q8_K
//!   activations for TQ1_0/TQ2_0, flash attention), F16 KV cache, every reduction in a fixed
//!   order so results do not depend on the thread count. On the reference files it reproduces
//!   the reference logits bit for bit in most rows.
//! * [`kernels`]: the numeric kernels: the scalar reference twins ([`kernels::scalar`]) and
//!   the tables for AVX2, AVX-512 VNNI and NEON, bit-identical to them, chosen once per process
//!   at run time (`BITCONV_KERNEL=reference` forces the scalar ones).
//! * [`format`](mod@format): how weights are held in memory and the block geometry (from the layouts).
//! * [`bench`](mod@bench): end-to-end tokens/s against the memory-bandwidth bound (`bitconv bench`).
//! * [`logits`]: the `BNLG` logits files of the reference runs and comparisons of logit rows.
//! * [`hf`]: the independent reading of a Hugging Face checkpoint (transformers' semantics) that
//!   checkpoint goldens come from; it shares only [`kernels::scalar`] with the rest.

pub mod bench;
pub mod format;
pub mod hf;
pub mod kernels;
pub mod logits;
pub mod model;
pub mod session;
pub mod tokenize;

use std::path::PathBuf;

pub use format::WeightFormat;
pub use kernels::scalar::RopeStyle;
pub use kernels::{KernelChoice, Kernels};
pub use logits::{argmax, compare_rows, cosine, max_abs_diff, Agreement, LogitsFile};
pub use model::{Activation, Arch, Hparams, LoadOptions, Matrix, Model, WeightMemory};
pub use session::{BlockTrace, Emulation, KvPrecision, LogitsWanted, Session, SessionOptions};

/// Errors of the runtime. Every message names the file, tensor or metadata key involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model file could not be opened or is not valid GGUF.
    #[error("{0}")]
    Open(#[from] crate::gguf::reader::ReadError),
    /// An I/O error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `general.architecture` names an architecture the runtime does not execute.
    #[error("{}: unsupported architecture {arch:?} (supported: {})", file.display(), crate::arch::Arch::names_list())]
    UnsupportedArch {
        /// The model file.
        file: PathBuf,
        /// The architecture string.
        arch: String,
    },
    /// A metadata key is missing, has the wrong type or an invalid value.
    #[error("{}: metadata key {key}: {reason}", file.display())]
    Metadata {
        /// The model file.
        file: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the architecture needs is not in the file.
    #[error("{}: missing tensor {tensor}", file.display())]
    MissingTensor {
        /// The model file.
        file: PathBuf,
        /// The tensor name.
        tensor: String,
    },
    /// A tensor has the wrong shape, an unsupported type, bad data, or is not expected at all.
    #[error("{}: tensor {tensor}: {reason}", file.display())]
    Tensor {
        /// The model file.
        file: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A `kernel_config.ini` file could not be parsed.
    #[error("{}: {reason}", file.display())]
    KernelConfig {
        /// The ini file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A logits file is malformed.
    #[error("{}: {reason}", file.display())]
    Logits {
        /// The logits file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A forward pass was asked for something impossible (context full, bad token id, …).
    #[error("{0}")]
    Session(String),
}

impl From<crate::gguf::OpenError> for RuntimeError {
    fn from(e: crate::gguf::OpenError) -> Self {
        match e {
            crate::gguf::OpenError::Io { path, source } => RuntimeError::Io { path, source },
            crate::gguf::OpenError::Read(r) => RuntimeError::Open(r),
        }
    }
}
