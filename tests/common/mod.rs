//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod mock_hub;
pub mod mutate;

use std::path::PathBuf;
use std::process::Command;

/// The reference files copied from `shared/reference/tiny`.
pub fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny")
}

/// The built `bitconv` binary.
pub fn bitconv() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bitconv"))
}
