//! Fuzzes the GGUF reader: any byte string must parse or fail with an error, never panic, and
//! whatever parses must give in-bounds tensor spans and scales.
#![no_main]

use std::path::Path;

use bitconv::gguf::GgufHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = GgufHeader::parse(data, Path::new("fuzz.gguf")) {
        for t in &h.tensors {
            let span = h.tensor_bytes(data, t);
            assert_eq!(span.len() as u64, t.nbytes);
            let _ = h.ternary_scale(data, t);
        }
        let _ = bitconv::gguf::writer::plan(
            h.tensors
                .iter()
                .map(|t| bitconv::gguf::TensorSpec {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ty: t.ty,
                })
                .collect(),
            h.alignment,
        );
    }
});
