//! Fuzzes the safetensors header loader: any byte string must load or fail with an error naming
//! the file, never panic, and loaded tensors must lie inside the buffer.
#![no_main]

use std::path::Path;

use bitconv::checkpoint::tensors::parse_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_header(Path::new("fuzz.safetensors"), data, 0) {
        Ok(entries) => {
            for e in entries {
                assert!(e.range.end <= data.len());
                assert_eq!(e.range.len(), e.numel() * e.dtype.size());
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.safetensors")),
    }
});
