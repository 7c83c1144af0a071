//! Compiler capabilities the source depends on. The crate's MSRV is 1.85, but AVX-512 target
//! features and intrinsics are stable only since Rust 1.89: with an older compiler the AVX-512
//! kernel table is left out (`cfg(bitconv_avx512)` unset) and the AVX2 one is the fastest.

use std::process::Command;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(bitconv_avx512)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            // "rustc 1.95.0 (59807616e 2026-04-14)" or "rustc 1.97.0-nightly (…)".
            let v = s.split_whitespace().nth(1)?.to_string();
            v.split('.').nth(1)?.parse::<u32>().ok()
        });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=bitconv_avx512");
    }
}
