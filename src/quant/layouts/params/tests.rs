//! Tests of `params`.

use super::*;

fn all_tables() -> Vec<(&'static str, TlLayout, &'static str)> {
    let mut v = Vec::new();
    for t in CODEGEN_TABLES {
        for l in [TlLayout::Tl1, TlLayout::Tl2] {
            v.push((t, l, codegen_ini(t, l).unwrap()));
        }
    }
    v
}

#[test]
fn embedded_tables_parse_roundtrip_and_validate() {
    for (t, l, text) in all_tables() {
        let e = parse_kernel_config_ini(text).unwrap();
        assert!(e.len() >= 3, "{t} {l}");
        assert_eq!(emit_kernel_config_ini(&e), text, "{t} {l}");
        for x in &e {
            match l {
                TlLayout::Tl1 => super::super::tl1::validate(x.m, x.k, &x.params).unwrap(),
                TlLayout::Tl2 => super::super::tl2::validate(x.m, x.k, &x.params).unwrap(),
            }
        }
    }
    for t in CODEGEN_TABLES {
        for l in [TlLayout::Tl1, TlLayout::Tl2] {
            let text = preset_ini(t, l).unwrap();
            let e = parse_kernel_config_ini(text).unwrap();
            assert_eq!(emit_kernel_config_ini(&e), text);
        }
    }
}

#[test]
fn family_tables_parse_roundtrip_and_validate() {
    for t in FAMILY_TABLES {
        for l in [TlLayout::Tl1, TlLayout::Tl2] {
            let text = family_ini(t, l).unwrap();
            let e = parse_kernel_config_ini(text).unwrap();
            assert_eq!(e.len(), 4, "{t} {l}");
            assert_eq!(emit_kernel_config_ini(&e), text, "{t} {l}");
            for x in &e {
                match l {
                    TlLayout::Tl1 => super::super::tl1::validate(x.m, x.k, &x.params).unwrap(),
                    TlLayout::Tl2 => {
                        super::super::tl2::validate(x.m, x.k, &x.params).unwrap();
                        super::super::tl2::check_work_buffer(x.m, x.k, &x.params).unwrap();
                    }
                }
            }
        }
    }
    // The real shapes resolve by model name (Llama3-8B through the codegen table).
    let shapes = [
        (
            "BitNet-b1.58-2B-4T",
            [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)],
        ),
        (
            "bitnet-b1.58-2B-4T-bf16",
            [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)],
        ),
        (
            "Falcon3-1B-Instruct-1.58bit",
            [(2048, 2048), (1024, 2048), (8192, 2048), (2048, 8192)],
        ),
        (
            "Falcon3-3B-1.58bit",
            [(3072, 3072), (1024, 3072), (9216, 3072), (3072, 9216)],
        ),
        (
            "Falcon3-10B-Instruct-1.58bit",
            [(3072, 3072), (1024, 3072), (23040, 3072), (3072, 23040)],
        ),
    ];
    for (model, s) in shapes {
        for (m, k) in s {
            for l in [TlLayout::Tl1, TlLayout::Tl2] {
                assert!(family(model, l, m, k).is_some(), "{model} {l} {m}x{k}");
            }
        }
    }
    for (m, k) in [(14336, 4096), (4096, 14336), (1024, 4096), (4096, 4096)] {
        for l in [TlLayout::Tl1, TlLayout::Tl2] {
            let p = pretuned("Llama3-8B-1.58-100B-tokens", l, m, k).unwrap();
            if l == TlLayout::Tl2 {
                super::super::tl2::check_work_buffer(m, k, &p).unwrap();
            }
        }
    }
}

#[test]
fn setup_env_values() {
    let p = |bm, bk, bmm| Some(TlParams { bm, bk, bmm });
    assert_eq!(
        pretuned("bitnet_b1_58-large", TlLayout::Tl1, 1536, 1536),
        p(128, 64, 64)
    );
    assert_eq!(
        pretuned("bitnet_b1_58-large", TlLayout::Tl2, 1536, 1536),
        p(128, 192, 32)
    );
    assert_eq!(
        pretuned("bitnet_b1_58-3B", TlLayout::Tl2, 3200, 8640),
        p(160, 96, 32)
    );
    assert_eq!(
        pretuned("BitNet-b1.58-2B-4T", TlLayout::Tl1, 8640, 3200),
        p(320, 64, 32)
    );
    assert_eq!(
        pretuned("BitNet-b1.58-2B-4T", TlLayout::Tl2, 2560, 6912),
        None
    );
    assert_eq!(
        pretuned("Falcon3-7B-1.58bit", TlLayout::Tl1, 4096, 14336),
        p(128, 64, 64)
    );
    assert_eq!(
        pretuned("Llama3-8B-1.58-100B-tokens", TlLayout::Tl2, 1024, 4096),
        p(256, 96, 32)
    );
    assert_eq!(pretuned("Falcon3-99B", TlLayout::Tl2, 1024, 4096), None);
    assert_eq!(
        pretuned("bitnet-embedding-270m", TlLayout::Tl2, 1024, 4096),
        None
    );
    // The preset differs from the effective value.
    assert_eq!(
        preset("bitnet_b1_58-large", TlLayout::Tl2, 4096, 1536),
        p(256, 96, 64)
    );
    assert_eq!(
        pretuned("bitnet_b1_58-large", TlLayout::Tl2, 4096, 1536),
        p(256, 96, 32)
    );
}

#[test]
fn parse_features_and_errors() {
    let text = "# c\n[DEFAULT]\nBMM = 32\n\n[Kernels_0]\nM: 256\n  ; indented comment\nk=768\nBm = 256\nbk =128\nextra = x\n";
    let e = parse_kernel_config_ini(text).unwrap();
    assert_eq!(
        e,
        vec![KernelEntry {
            m: 256,
            k: 768,
            params: TlParams {
                bm: 256,
                bk: 128,
                bmm: 32
            }
        }]
    );
    let err = |t: &str| match parse_kernel_config_ini(t) {
        Err(LayoutError::Config { line, message }) => (line, message),
        other => panic!("expected config error, got {other:?}"),
    };
    assert_eq!(err("m = 1\n").0, 1);
    assert_eq!(err("[a]\nm = 1\nm = 2\n").0, 3);
    assert_eq!(err("[a]\nm = x\n").0, 2);
    assert_eq!(err("[a]\nm = 1\n[a]\n").0, 3);
    assert_eq!(err("[a]\nm = 1\n  2\n").0, 3);
    assert_eq!(err("[a]\nfoo\n").0, 2);
    assert_eq!(err("[a\n").0, 1);
    let (line, msg) = err("[a]\nm = 1\nk = 2\nbm = 3\nbk = 4\n");
    assert_eq!(line, 1);
    assert!(msg.contains("bmm"), "{msg}");
    assert_eq!(parse_kernel_config_ini("").unwrap(), vec![]);
    let crlf = "\u{feff}[K]\r\nm = 1\r\nk = 2\r\nbm = 3\r\nbk = 4\r\nbmm = 5\r\n";
    assert_eq!(parse_kernel_config_ini(crlf).unwrap()[0].params.bmm, 5);
    assert_eq!(emit_kernel_config_ini(&[]), "");
}

#[test]
fn derive_prefers_table_values_and_is_valid() {
    assert_eq!(
        derive_tl1(1536, 4096).unwrap(),
        TlParams {
            bm: 256,
            bk: 128,
            bmm: 32
        }
    );
    assert_eq!(
        derive_tl2(1536, 1536).unwrap(),
        TlParams {
            bm: 256,
            bk: 96,
            bmm: 32
        }
    );
    // 2B-4T shapes.
    for (m, k) in [(2560, 2560), (640, 2560), (6912, 2560), (2560, 6912)] {
        let p1 = derive_tl1(m, k).unwrap();
        super::super::tl1::validate(m, k, &p1).unwrap();
        let p2 = derive_tl2(m, k).unwrap();
        super::super::tl2::validate(m, k, &p2).unwrap();
        super::super::tl2::check_work_buffer(m, k, &p2).unwrap();
    }
    assert!(matches!(
        derive_tl2(256, 256),
        Err(LayoutError::NoParams { m: 256, k: 256, .. })
    ));
    assert!(derive_tl1(48, 256).is_err());
    assert!(derive_tl1(64, 258).is_err());
    assert!(derive_tl2(64, 128).is_err());
    for m in (32..=2048).step_by(32) {
        for k in (4..=1200).step_by(4) {
            if let Ok(p) = derive_tl1(m, k) {
                super::super::tl1::validate(m, k, &p).unwrap();
            }
        }
    }
}

#[test]
fn pick_bm_choices() {
    assert_eq!(pick_bm(1536, 32), Some(256));
    assert_eq!(pick_bm(3200, 32), Some(128));
    assert_eq!(pick_bm(96, 32), Some(96));
    assert_eq!(pick_bm(32 * 17 * 19, 32), Some(32));
    assert_eq!(pick_bm(64 * 641, 64), Some(64));
    assert_eq!(pick_bm(32 * 641, 32), Some(32));
    assert_eq!(pick_bm(1000, 32), None);
}
