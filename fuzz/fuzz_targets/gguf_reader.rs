//! Fuzzes the GGUF reader: any byte string must parse or fail with an error, never panic, in
//! both modes (a model's limits and a report's, where large values stay in the file), and
//! whatever parses must give in-bounds tensor spans and scales, previews of every value left in
//! the file, and type ids read back as the writer numbers them.
#![no_main]

use std::path::Path;

use bitconv::gguf::{GgufHeader, ParseLimits, TypeIds, Value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = Path::new("fuzz.gguf");
    if let Ok(h) = GgufHeader::parse_with(data, file, ParseLimits::REPORT, None) {
        for (_, v) in &h.kv {
            if let Value::Lazy(l) = v {
                let _ = GgufHeader::decode_lazy(data, file, l, 16);
            }
        }
    }
    if let Ok(h) = GgufHeader::parse(data, file) {
        let ids = TypeIds::detect(&h.kv);
        for t in &h.tensors {
            let span = h.tensor_bytes(data, t);
            assert_eq!(span.len() as u64, t.nbytes);
            let _ = h.ternary_scale(data, t);
            assert_eq!(ids.type_of(ids.id_of(t.ty)), Ok(t.ty));
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
