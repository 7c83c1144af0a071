//! The integration tests, as one binary (one link of the crate instead of one per file): each
//! module is one area, as the files were. `runtime_alloc` stays a binary of its own, since it
//! installs a counting global allocator.
//!
//! Run one area with a filter: `cargo test --test it fetch::`.

#[path = "../common/mod.rs"]
mod common;

mod absmean_bench;
mod absmean_reference;
mod bench_cli;
mod checkpoint;
mod convert;
mod dummy;
mod families;
mod fetch;
mod gguf;
mod hub_concurrency;
mod hub_config;
mod hub_fetch;
mod hub_python;
mod layouts_reference;
mod layouts_roundtrip;
mod runtime_arch;
mod runtime_perf;
mod runtime_reference;
mod runtime_simd;
mod runtime_tokenize;
mod simd_kernels;
mod validate;
