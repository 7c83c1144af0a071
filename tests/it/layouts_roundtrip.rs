//! Property tests of the ternary layouts: `unpack(pack(t)) == t` for random
//! valid shapes and parameters, and errors (never panics) for invalid ones.

use bitconv::quant::layouts::{i2s, params, q8_0, tl1, tl2, tq1_0, tq2_0, LayoutError, TlParams};
use proptest::prelude::*;

fn codes_strategy(n: usize) -> impl Strategy<Value = Vec<i8>> {
    proptest::collection::vec(-1i8..=1, n)
}

/// Shapes and codes with `M·K % 128 == 0`.
fn i2s_case() -> impl Strategy<Value = (usize, usize, Vec<i8>)> {
    prop_oneof![
        (1usize..=5, 1usize..=4).prop_map(|(m, j)| (m, 128 * j)),
        (1usize..=4, 1usize..=6).prop_map(|(a, j)| (4 * a, 32 * j)),
    ]
    .prop_flat_map(|(m, k)| (Just(m), Just(k), codes_strategy(m * k)))
}

/// Valid TL1 shapes: bm ∈ {32, 64}, BM = a·bm, M = b·BM, BK = c·by, K = d·BK.
fn tl1_case() -> impl Strategy<Value = (usize, usize, TlParams, Vec<i8>)> {
    (
        prop_oneof![Just(32usize), Just(64)],
        1usize..=3,
        1usize..=2,
        1usize..=4,
        1usize..=3,
    )
        .prop_flat_map(|(bmm, a, b, c, d)| {
            let big_m = a * bmm;
            let m = b * big_m;
            let bk = c * (256 / bmm);
            let k = d * bk;
            let p = TlParams { bm: big_m, bk, bmm };
            (Just(m), Just(k), Just(p), codes_strategy(m * k))
        })
}

/// TL2 shapes: BM = 32·a, M = b·BM, BK = 24·c, K = d·BK + 32·e with
/// 32·e < BK (two-part), filtered to valid layouts (K ≥ 256, content fits).
fn tl2_case() -> impl Strategy<Value = (usize, usize, TlParams, Vec<i8>)> {
    (1usize..=3, 1usize..=2, 1usize..=12, 0usize..=4, 0usize..=8)
        .prop_filter_map("invalid TL2 shape", |(a, b, c, d, e)| {
            let big_m = 32 * a;
            let m = b * big_m;
            let bk = 24 * c;
            let k2 = 32 * e;
            if k2 >= bk {
                return None;
            }
            let k = d * bk + k2;
            let p = TlParams {
                bm: big_m,
                bk,
                bmm: 32,
            };
            tl2::validate(m, k, &p).ok().map(|_| (m, k, p))
        })
        .prop_flat_map(|(m, k, p)| (Just(m), Just(k), Just(p), codes_strategy(m * k)))
}

/// Fake-quantized blocks: codes and one positive scale per 256 values.
fn tq_case() -> impl Strategy<Value = (Vec<i8>, Vec<f32>)> {
    (1usize..=4).prop_flat_map(|blocks| {
        (
            codes_strategy(256 * blocks),
            proptest::collection::vec(1e-4f32..10.0, blocks),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn i2s_roundtrip((m, k, codes) in i2s_case(), scale in 1e-6f32..100.0) {
        let mut out = vec![0u8; i2s::nbytes(m, k)];
        i2s::pack_into(&codes, scale, &mut out).unwrap();
        let (back, s) = i2s::unpack(&out, m, k).unwrap();
        prop_assert_eq!(back, codes);
        prop_assert_eq!(s.to_bits(), scale.to_bits());
        prop_assert!(out[m * k / 4 + 4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn i2s_partial_blocks_keep_surviving_values(
        codes in (1usize..700).prop_flat_map(codes_strategy)
    ) {
        let n = codes.len();
        let mut out = vec![0u8; n / 4 + 32];
        i2s::pack_into(&codes, 1.0, &mut out).unwrap();
        let (back, _) = i2s::unpack(&out, 1, n).unwrap();
        let full = n / 128 * 128;
        prop_assert_eq!(&back[..full], &codes[..full]);
        let kept = (n - full) / 4; // bytes of the partial block that survive
        for j in 0..n - full {
            let expect = if j % 32 < kept { codes[full + j] } else { 0 };
            prop_assert_eq!(back[full + j], expect, "value {} of the partial block", j);
        }
        prop_assert_eq!(i2s::is_lossless(n), n % 128 == 0);
    }

    #[test]
    fn i2s_row_chunks_equal_whole((m, k, codes) in i2s_case()) {
        prop_assume!(k % 128 == 0);
        let mut whole = vec![0u8; i2s::nbytes(m, k)];
        i2s::pack_into(&codes, 0.5, &mut whole).unwrap();
        let mut parts = vec![0u8; i2s::nbytes(m, k)];
        for r in 0..m {
            i2s::pack_rows(&codes[r * k..(r + 1) * k], &mut parts[r * k / 4..(r + 1) * k / 4]).unwrap();
        }
        i2s::write_tail(&mut parts, m * k, 0.5).unwrap();
        prop_assert_eq!(whole, parts);
    }

    #[test]
    fn tl1_roundtrip((m, k, p, codes) in tl1_case()) {
        tl1::validate(m, k, &p).unwrap();
        let mut out = vec![0u8; tl1::nbytes(m, k)];
        tl1::pack_into(&codes, m, k, &p, &mut out).unwrap();
        prop_assert!(out.iter().all(|&b| (b >> 4) <= 8 && (b & 15) <= 8));
        prop_assert_eq!(tl1::unpack(&out, m, k, &p).unwrap(), codes.clone());
        // Row tiles pack independently into contiguous byte ranges.
        let tile = p.bm * k;
        let mut tiled = vec![0u8; out.len()];
        for (c, o) in codes.chunks(tile).zip(tiled.chunks_mut(tile / 4)) {
            tl1::pack_into(c, p.bm, k, &p, o).unwrap();
        }
        prop_assert_eq!(tiled, out);
    }

    #[test]
    fn tl2_roundtrip((m, k, p, codes) in tl2_case()) {
        let nb = tl2::nbytes(m, k).unwrap();
        let mut out = vec![0xEEu8; nb];
        tl2::pack_into(&codes, m, k, &p, &mut out).unwrap();
        let content = tl2::content_bytes(m, k, &p);
        prop_assert!(out[content..].iter().all(|&b| b == 0));
        prop_assert_eq!(tl2::unpack(&out, m, k, &p).unwrap(), codes);
    }

    #[test]
    fn tq1_0_roundtrip((codes, scales) in tq_case()) {
        let values: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 * scales[i / 256])
            .collect();
        let mut out = vec![0u8; tq1_0::nbytes(values.len())];
        tq1_0::quantize_into(&values, &mut out).unwrap();
        let (back, d) = tq1_0::codes(&out, values.len()).unwrap();
        prop_assert_eq!(&back, &codes);
        for (b, &db) in d.iter().enumerate() {
            let any = codes[b * 256..(b + 1) * 256].iter().any(|&c| c != 0);
            let expect = if any { half::f16::from_f32(scales[b]).to_f32() } else { 0.0 };
            prop_assert_eq!(db, expect);
        }
        let deq = tq1_0::dequantize(&out, values.len()).unwrap();
        for (i, &y) in deq.iter().enumerate() {
            prop_assert_eq!(y, codes[i] as f32 * d[i / 256]);
        }
    }

    #[test]
    fn tq2_0_roundtrip((codes, scales) in tq_case()) {
        let values: Vec<f32> = codes
            .iter()
            .enumerate()
            .map(|(i, &c)| c as f32 * scales[i / 256])
            .collect();
        let mut out = vec![0u8; tq2_0::nbytes(values.len())];
        tq2_0::quantize_into(&values, &mut out).unwrap();
        let (back, d) = tq2_0::codes(&out, values.len()).unwrap();
        prop_assert_eq!(&back, &codes);
        let deq = tq2_0::dequantize(&out, values.len()).unwrap();
        for (i, &y) in deq.iter().enumerate() {
            prop_assert_eq!(y, codes[i] as f32 * d[i / 256]);
        }
    }

    #[test]
    fn tq_arbitrary_values_round_to_nearest_trit(
        values in (1usize..=3).prop_flat_map(|b| proptest::collection::vec(-5.0f32..5.0, 256 * b))
    ) {
        let mut o1 = vec![0u8; tq1_0::nbytes(values.len())];
        let mut o2 = vec![0u8; tq2_0::nbytes(values.len())];
        tq1_0::quantize_into(&values, &mut o1).unwrap();
        tq2_0::quantize_into(&values, &mut o2).unwrap();
        let (c1, _) = tq1_0::codes(&o1, values.len()).unwrap();
        let (c2, _) = tq2_0::codes(&o2, values.len()).unwrap();
        prop_assert_eq!(&c1, &c2);
        for (blk, cb) in values.chunks(256).zip(c1.chunks(256)) {
            let amax = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
            let id = if amax != 0.0 { 1.0 / amax } else { 0.0 };
            for (&x, &c) in blk.iter().zip(cb) {
                prop_assert_eq!(c, (x * id).round() as i8);
            }
        }
    }

    #[test]
    fn q8_0_error_bound(
        values in (1usize..=4).prop_flat_map(|b| proptest::collection::vec(-100.0f32..100.0, 32 * b))
    ) {
        let mut out = vec![0u8; q8_0::nbytes(values.len())];
        q8_0::quantize_into(&values, &mut out).unwrap();
        let deq = q8_0::dequantize(&out, values.len()).unwrap();
        for (blk, yb) in values.chunks(32).zip(deq.chunks(32)) {
            let amax = blk.iter().fold(0f32, |a, x| a.max(x.abs()));
            let d = amax / 127.0;
            let d16 = half::f16::from_f32(d).to_f32();
            let bound = d * 0.5001 + 127.0 * (d - d16).abs() + 1e-6;
            for (&x, &y) in blk.iter().zip(yb) {
                prop_assert!((x - y).abs() <= bound, "x={} y={} bound={}", x, y, bound);
            }
        }
    }

    /// Arbitrary shapes and parameters: packing and unpacking return errors
    /// or succeed, never panic; success exactly when `validate` accepts.
    #[test]
    fn tl_arbitrary_params_never_panic(
        m in 0usize..200, k in 0usize..700,
        bm in 0usize..300, bk in 0usize..300, bmm in prop_oneof![Just(0usize), Just(16), Just(32), Just(48), Just(64), Just(128)],
    ) {
        let p = TlParams { bm, bk, bmm };
        let codes = vec![0i8; m * k];

        let ok1 = tl1::validate(m, k, &p).is_ok();
        let mut out1 = vec![0u8; tl1::nbytes(m, k)];
        prop_assert_eq!(tl1::pack_into(&codes, m, k, &p, &mut out1).is_ok(), ok1);
        prop_assert_eq!(tl1::unpack(&out1, m, k, &p).is_ok(), ok1);

        let ok2 = tl2::validate(m, k, &p).is_ok();
        let mut out2 = vec![0u8; tl2::nbytes(m, k).unwrap_or(0)];
        prop_assert_eq!(tl2::pack_into(&codes, m, k, &p, &mut out2).is_ok(), ok2);
        prop_assert_eq!(tl2::unpack(&out2, m, k, &p).is_ok(), ok2);
        let _ = tl2::check_work_buffer(m, k, &p);
    }

    /// Random bytes: unpack either decodes or reports invalid data.
    #[test]
    fn unpack_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let p1 = TlParams { bm: 32, bk: 8, bmm: 32 };
        let _ = tl1::unpack(&bytes, 32, 64, &p1);
        let p2 = TlParams { bm: 32, bk: 96, bmm: 32 };
        let _ = tl2::unpack(&bytes, 32, 256, &p2);
        let _ = i2s::unpack(&bytes, 8, 128);
        let _ = tq1_0::codes(&bytes, 256);
        let _ = tq1_0::dequantize(&bytes, 512);
        let _ = tq2_0::codes(&bytes, 256);
        let _ = tq2_0::dequantize(&bytes, 256);
        let _ = q8_0::dequantize(&bytes, 64);
    }

    #[test]
    fn derived_params_are_valid(mm in 1usize..=96, kk in 1usize..=1024) {
        let (m, k) = (32 * mm, 4 * kk);
        // bm = 32 needs K % 8 == 0; bm = 64 needs M % 64 == 0 (and K % 4 == 0).
        match params::derive_tl1(m, k) {
            Ok(p) => prop_assert!(tl1::validate(m, k, &p).is_ok()),
            Err(e) => prop_assert!(k % 8 != 0 && m % 64 != 0, "{e}"),
        }
        match params::derive_tl2(m, k) {
            Ok(p) => {
                prop_assert!(tl2::validate(m, k, &p).is_ok());
                prop_assert!(tl2::check_work_buffer(m, k, &p).is_ok());
                prop_assert_eq!(p.bmm, 32);
            }
            Err(e) => {
                let named = matches!(&e, LayoutError::NoParams { m: em, k: ek, .. } if *em == m && *ek == k);
                prop_assert!(named, "{e}");
            }
        }
    }
}

#[test]
fn derive_tl1_succeeds_whenever_possible() {
    // bm = 32 (by = 8) needs K % 8 == 0; bm = 64 (by = 4) needs M % 64 == 0.
    for m in (32..=1024).step_by(32) {
        for k in (4..=2048).step_by(4) {
            match params::derive_tl1(m, k) {
                Ok(p) => tl1::validate(m, k, &p).unwrap(),
                Err(_) => assert!(k % 8 != 0 && m % 64 != 0, "{m}×{k}"),
            }
        }
    }
}

#[test]
fn invalid_codes_are_errors() {
    let mut codes = vec![0i8; 256 * 256];
    codes[1000] = -2;
    let expect = LayoutError::InvalidCode {
        index: 1000,
        value: -2,
    };
    let mut out = vec![0u8; i2s::nbytes(256, 256)];
    assert_eq!(i2s::pack_into(&codes, 1.0, &mut out), Err(expect.clone()));
    let p1 = TlParams {
        bm: 128,
        bk: 64,
        bmm: 64,
    };
    let mut out = vec![0u8; tl1::nbytes(256, 256)];
    assert_eq!(
        tl1::pack_into(&codes, 256, 256, &p1, &mut out),
        Err(expect.clone())
    );
    let p2 = TlParams {
        bm: 128,
        bk: 96,
        bmm: 32,
    };
    let mut out = vec![0u8; tl2::nbytes(256, 256).unwrap()];
    assert_eq!(tl2::pack_into(&codes, 256, 256, &p2, &mut out), Err(expect));
}

#[test]
fn wrong_lengths_are_errors() {
    let p = TlParams {
        bm: 128,
        bk: 96,
        bmm: 32,
    };
    let codes = vec![0i8; 256 * 256];
    let mut short = vec![0u8; 100];
    assert!(matches!(
        tl2::pack_into(&codes, 256, 256, &p, &mut short),
        Err(LayoutError::OutputLength { .. })
    ));
    assert!(matches!(
        tl2::pack_into(&codes[1..], 256, 256, &p, &mut short),
        Err(LayoutError::InputLength { .. })
    ));
    assert!(matches!(
        tl2::unpack(&short, 256, 256, &p),
        Err(LayoutError::DataTooShort { .. })
    ));
    assert!(matches!(
        tl1::pack_into(&codes, usize::MAX, 2, &p, &mut short),
        Err(LayoutError::InvalidShape { .. }) | Err(LayoutError::InvalidParams { .. })
    ));
}
