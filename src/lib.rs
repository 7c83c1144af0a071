//! bitconv: Hugging Face 1.58-bit (ternary) checkpoints to GGUF files for bitnet.cpp and
//! llama.cpp, with a runtime that proves each file correct.
//!
//! The map of the code (what each module owns, what depends on what, where each kind of change
//! goes) is `docs/ARCHITECTURE.md`; the byte layouts, formulas and metadata keys the code cites
//! as "FORMATS §n" are in `docs/FORMATS.md`. The library is split the way the data flows:
//! - [`arch`]: the architectures (names, activation, RoPE, sub-norms, head) in one table;
//! - [`checkpoint`]: safetensors over mmap, `config.json`, tensor names, tokenizer export;
//! - [`quant`]: absmean ternarization and one module per on-disk layout (pack and unpack);
//! - [`convert`]: the plan of a conversion and the streaming writer that executes it;
//! - [`dummy`]: random models of every size and type in constant memory;
//! - [`gguf`]: a complete GGUF v3 reader and streaming writer with the type table as data;
//! - [`runtime`]: runs GGUF files (scalar reference kernels, SIMD twins, the session), and
//!   [`runtime::hf`], the independent reading of a checkpoint that goldens come from;
//! - [`validate`]: goldens and the checks of a file against them;
//! - [`hub`]: the Hugging Face Hub client and cache behind `fetch`;
//! - [`pretok`]: the byte-level BPE pre-tokenizers, recognised from their definition and run;
//! - [`sample`]: token sampling; [`util`]: atomic output files and other small pieces.
#![deny(missing_docs)]

pub mod arch;
pub mod checkpoint;
pub mod convert;
pub mod dummy;
pub mod gguf;
pub mod hub;
pub mod pretok;
pub mod quant;
pub mod runtime;
pub mod sample;
#[cfg(test)]
pub(crate) mod test_rng;
pub mod util;
pub mod validate;
