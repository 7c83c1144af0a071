//! bitconv: Hugging Face 1.58-bit (ternary) checkpoints to GGUF files for bitnet.cpp and
//! llama.cpp, with a runtime that proves each file correct.
//!
//! The library is split the way the data flows:
//! - [`checkpoint`]: safetensors over mmap, `config.json`, tensor names, tokenizer export;
//! - [`gguf`]: a complete GGUF v3 reader and streaming writer with the type table as data;
//! - [`util`]: atomic output files and other small pieces.
#![deny(missing_docs)]

pub mod checkpoint;
pub mod convert;
pub mod dummy;
pub mod gguf;
pub mod hub;
pub mod quant;
pub mod runtime;
pub mod sample;
pub mod util;
pub mod validate;
