//! Every SIMD kernel table this CPU can run against its scalar twin (the `reference` table) on
//! random shapes, including sizes that are not multiples of the vector width or of the block
//! sizes where the layout allows it. Integer kernels must agree exactly, float kernels bit for
//! bit (they reproduce the scalar summation order).

use bitconv::runtime::kernels::scalar as ops;
use bitconv::runtime::kernels::{
    self as simd, FloatOrder, FloatType, KernelChoice, Kernels, Q8kActs,
};
use half::f16;

use crate::common::rng::Rng;
use proptest::prelude::*;

fn tables() -> Vec<&'static Kernels> {
    simd::available()
        .into_iter()
        .filter(|k| !k.is_reference())
        .collect()
}

fn reference() -> &'static Kernels {
    Kernels::reference()
}

/// `n` values uniform in (-a, a), stored as `ty`.
fn float_bytes(g: &mut Rng, ty: FloatType, n: usize, a: f32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * ty.bytes());
    for _ in 0..n {
        let x = g.float(a);
        match ty {
            FloatType::F16 => out.extend(f16::from_f32(x).to_le_bytes()),
            FloatType::F32 => out.extend(x.to_le_bytes()),
        }
    }
    out
}

/// A buffer holding `bytes` at the returned offset, `skew` bytes past a 64-byte boundary.
fn placed(bytes: &[u8], skew: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; bytes.len() + 128];
    let at = (64 - buf.as_ptr() as usize % 64) % 64 + skew;
    buf[at..at + bytes.len()].copy_from_slice(bytes);
    (buf, at)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn this_machine_has_simd_tables() {
    let names: Vec<_> = simd::available().iter().map(|k| k.name()).collect();
    eprintln!(
        "kernel tables on this machine: {names:?}; auto = {}",
        simd::get(KernelChoice::Auto).unwrap().name()
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(names.contains(&"avx2"));
    }
}

/// `Kernels::exp` is the C library's `expf`, bit for bit, on every table: every 61st f32 of
/// `(−90, 90)` (the fast path's whole range and the slow path's edge), ±0, ±∞, NaN, the
/// overflow and underflow edges, and an odd-length slice (the scalar tail).
#[test]
fn exp_equals_the_library() {
    let mut xs: Vec<f32> = Vec::new();
    for sign in [0u32, 0x8000_0000] {
        let top = 90.0f32.to_bits();
        xs.extend((0..top).step_by(61).map(|b| f32::from_bits(b | sign)));
    }
    xs.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        88.72,
        88.73,
        -87.33,
        -103.3,
        -103.97,
        -104.0,
        -150.0,
        85.0,
        -85.0,
        84.99999,
    ]);
    xs.push(-1.5);
    let want: Vec<u32> = xs.iter().map(|x| x.exp().to_bits()).collect();
    for t in tables() {
        let mut got = xs.clone();
        t.exp(&mut got);
        let bad: Vec<_> = got
            .iter()
            .zip(&want)
            .zip(&xs)
            .filter(|((g, &w), _)| {
                !(g.to_bits() == w || (g.is_nan() && f32::from_bits(w).is_nan()))
            })
            .take(5)
            .map(|((g, w), x)| (*x, *g, f32::from_bits(*w)))
            .collect();
        assert!(bad.is_empty(), "{}: (x, got, libm) {bad:?}", t.name());
    }
}

/// On x86-64 with FMA and glibc (this project's machines), the SIMD tables compute `expf` in
/// vector lanes: if the self-check ever rejects it, attention silently loses its vector `expf`,
/// which this test makes loud.
#[test]
fn expf_is_vectorized_on_x86_64_glibc() {
    eprintln!("vector expf: {}", simd::vector_expf());
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(simd::vector_expf());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Shapes past one tile of every table (the AVX-512 one takes up to 8 rows × 4 tokens,
    /// in pairs of rows): all row and token remainders, odd block counts, many tokens.
    #[test]
    fn i2s_dots_equal_reference(rows in 1usize..27, n in 1usize..20, blocks in 1usize..8, seed: u64) {
        let mut g = Rng::new(seed);
        let k = 128 * blocks;
        // Any byte: codes 0..=3 (3 is never written but must still be computed the same).
        let w = g.bytes(rows * k / 4);
        let q = g.i8s(n * k, -128, 127);
        let mut want = vec![0i32; rows * n];
        reference().i2s_dots(&w, k, &q, n, &mut want);
        for t in tables() {
            let mut got = vec![0i32; rows * n];
            t.i2s_dots(&w, k, &q, n, &mut got);
            prop_assert_eq!(&got, &want, "{}", t.name());
        }
    }

    /// Random scales per block, or one scale for all (as converted BitNet files have), which
    /// the SIMD tables are told (`shared`) and the reference is not.
    #[test]
    fn tq2_dots_equal_reference(
        rows in 1usize..20,
        n in 1usize..6,
        blocks in 1usize..4,
        uniform: bool,
        seed: u64,
    ) {
        let mut g = Rng::new(seed);
        let k = 256 * blocks;
        let one = g.f16_scale();
        let mut w = vec![];
        for _ in 0..rows * blocks {
            w.extend(g.bytes(64));
            w.extend(if uniform { one } else { g.f16_scale() });
        }
        let shared = simd::tq2_shared_scale(&w);
        if uniform {
            prop_assert_eq!(shared, Some(u16::from_le_bytes(one)));
        }
        let x = g.floats(n * k, 3.0);
        let mut q = vec![0i8; n * k];
        let mut d = vec![0f32; n * blocks];
        ops::quantize_q8k(&x, &mut q, &mut d);
        let mut bsum = vec![0i32; n * k / 32];
        simd::q8k_bsums(&q, &mut bsum);
        let mut want = vec![0f32; rows * n];
        let acts = Q8kActs { q: &q, d: &d, bsum: &bsum };
        reference().tq2_dots(&w, k, acts, None, n, &mut want);
        // The scalar twin itself against the plain definition.
        for r in 0..rows {
            for t in 0..n {
                let row = &w[r * blocks * 66..(r + 1) * blocks * 66];
                let v = ops::dot_tq2_q8k(row, &q[t * k..(t + 1) * k], &d[t * blocks..(t + 1) * blocks]);
                prop_assert_eq!(v.to_bits(), want[r * n + t].to_bits());
            }
        }
        for t in tables() {
            let mut got = vec![0f32; rows * n];
            t.tq2_dots(&w, k, acts, shared, n, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{} shared {:?}", t.name(), shared);
        }
    }

    #[test]
    fn tq2_dots_any_activation_bytes(rows in 1usize..5, n in 1usize..5, seed: u64) {
        // Codes are at most 3, so even -128 activations are exact.
        let mut g = Rng::new(seed);
        let k = 256;
        let mut w = vec![];
        for _ in 0..rows {
            w.extend(g.bytes(64));
            w.extend(g.f16_scale());
        }
        let q = g.i8s(n * k, -128, 127);
        let d = g.floats(n, 0.1);
        let mut bsum = vec![0i32; n * k / 32];
        simd::q8k_bsums(&q, &mut bsum);
        let mut want = vec![0f32; rows * n];
        let acts = Q8kActs { q: &q, d: &d, bsum: &bsum };
        reference().tq2_dots(&w, k, acts, None, n, &mut want);
        for t in tables() {
            let mut got = vec![0f32; rows * n];
            t.tq2_dots(&w, k, acts, simd::tq2_shared_scale(&w), n, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{}", t.name());
        }
    }

    #[test]
    fn q8_0_dots_equal_reference(rows in 1usize..9, n in 1usize..7, blocks in 1usize..9, seed: u64) {
        let mut g = Rng::new(seed);
        let k = 32 * blocks;
        let mut w = vec![];
        for _ in 0..rows * blocks {
            w.extend(g.f16_scale());
            w.extend(g.bytes(32)); // includes -128
        }
        // Activations as the Q8_0 quantizer makes them: within ±127.
        let q = g.i8s(n * k, -127, 127);
        let d = g.floats(n * blocks, 0.05);
        let mut want = vec![0f32; rows * n];
        reference().q8_0_dots(&w, k, &q, &d, n, &mut want);
        for t in tables() {
            let mut got = vec![0f32; rows * n];
            t.q8_0_dots(&w, k, &q, &d, n, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{}", t.name());
        }
    }

    #[test]
    fn float_dots_equal_reference(
        rows in 1usize..10,
        n in 1usize..7,
        k in 1usize..140,
        pad in 0usize..9,
        half in any::<bool>(),
        lanes8 in any::<bool>(),
        seed: u64,
    ) {
        let mut g = Rng::new(seed);
        let ty = if half { FloatType::F16 } else { FloatType::F32 };
        let order = if lanes8 { FloatOrder::Lanes8 } else { FloatOrder::Ggml };
        let stride = (k + pad) * ty.bytes();
        let w = float_bytes(&mut g, ty, (rows - 1) * (k + pad) + k, 2.0);
        let x = g.floats(n * k, 2.0);
        let mut want = vec![0f32; rows * n];
        reference().float_dots(order, ty, &w, stride, k, &x, n, &mut want);
        for t in tables() {
            let mut got = vec![0f32; rows * n];
            t.float_dots(order, ty, &w, stride, k, &x, n, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{} {:?} {:?}", t.name(), ty, order);
        }
    }

    /// One token over many rows (the one-token kernels walk the rows as two or four streams,
    /// with the rows left over one at a time), rows that may start on a cache line with a
    /// stride of whole lines (the AVX-512 F32 kernel's 64-byte loads) or `skew` bytes off it,
    /// and K on either side of multiples of 8, 32 and 64.
    #[test]
    fn one_token_float_dots_equal_reference(
        rows in 1usize..70,
        k in prop_oneof![1usize..300, (1usize..6).prop_map(|m| 64 * m), (1usize..6).prop_map(|m| 64 * m - 32)],
        pad in 0usize..20,
        lines in any::<bool>(),
        skew in prop_oneof![Just(0usize), 1usize..64],
        half in any::<bool>(),
        lanes8 in any::<bool>(),
        seed: u64,
    ) {
        let mut g = Rng::new(seed);
        let ty = if half { FloatType::F16 } else { FloatType::F32 };
        let order = if lanes8 { FloatOrder::Lanes8 } else { FloatOrder::Ggml };
        let mut stride = (k + pad) * ty.bytes();
        if lines {
            stride = stride.next_multiple_of(64);
        }
        let len = (rows - 1) * stride + k * ty.bytes();
        let bytes = float_bytes(&mut g, ty, len.div_ceil(ty.bytes()), 2.0);
        let (buf, at) = placed(&bytes[..len], skew);
        let w = &buf[at..at + len];
        let x = g.floats(k, 2.0);
        let mut want = vec![0f32; rows];
        reference().float_dots(order, ty, w, stride, k, &x, 1, &mut want);
        for t in tables() {
            let mut got = vec![0f32; rows];
            t.float_dots(order, ty, w, stride, k, &x, 1, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{} {:?} {:?}", t.name(), ty, order);
        }
    }

    /// [`one_token_float_dots_equal_reference`] for Q8_0.
    #[test]
    fn one_token_q8_0_dots_equal_reference(
        rows in 1usize..70,
        blocks in 1usize..13,
        skew in 0usize..64,
        seed: u64,
    ) {
        let mut g = Rng::new(seed);
        let k = 32 * blocks;
        let mut bytes = vec![];
        for _ in 0..rows * blocks {
            bytes.extend(g.f16_scale());
            bytes.extend(g.bytes(32));
        }
        let (buf, at) = placed(&bytes, skew);
        let w = &buf[at..at + bytes.len()];
        let q = g.i8s(k, -127, 127);
        let d = g.floats(blocks, 0.05);
        let mut want = vec![0f32; rows];
        reference().q8_0_dots(w, k, &q, &d, 1, &mut want);
        for t in tables() {
            let mut got = vec![0f32; rows];
            t.q8_0_dots(w, k, &q, &d, 1, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{}", t.name());
        }
    }

    #[test]
    fn weighted_sums_equal_reference(
        p in 0usize..80,
        hd in 1usize..100,
        pad in 0usize..5,
        half in any::<bool>(),
        lanes8 in any::<bool>(),
        seed: u64,
    ) {
        let mut g = Rng::new(seed);
        let ty = if half { FloatType::F16 } else { FloatType::F32 };
        let order = if lanes8 { FloatOrder::Lanes8 } else { FloatOrder::Ggml };
        let stride = (hd + pad) * ty.bytes();
        let v = float_bytes(&mut g, ty, p.max(1) * (hd + pad), 3.0);
        let probs: Vec<f32> = (0..p).map(|_| g.float(1.0).abs()).collect();
        let mut want = vec![0f32; hd];
        let mut scratch = vec![0f32; 32 * hd];
        reference().weighted_sum(order, ty, &v, stride, &probs, &mut want, &mut scratch);
        for t in tables() {
            let mut got = vec![7f32; hd];
            t.weighted_sum(order, ty, &v, stride, &probs, &mut got, &mut scratch);
            prop_assert_eq!(bits(&got), bits(&want), "{} {:?} {:?}", t.name(), ty, order);
        }
    }

    /// Several rounds of the SIMD kernel's 64 keys, and the head sizes it keeps in registers.
    #[test]
    fn flash_attention_equals_reference(
        positions in 1usize..200,
        hd in prop_oneof![Just(64usize), Just(96), Just(128), 1usize..140],
        pad in 0usize..5,
        seed: u64,
    ) {
        let mut g = Rng::new(seed);
        let stride = 2 * (hd + pad);
        let cache = |g: &mut Rng| -> Vec<u8> {
            (0..positions * (hd + pad)).flat_map(|_| f16::from_f32(g.float(2.0)).to_le_bytes()).collect()
        };
        let k = cache(&mut g);
        let v = cache(&mut g);
        let q: Vec<f32> = (0..hd).map(|_| ops::round_f16(g.float(2.0))).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let mut want = vec![0f32; hd];
        reference().flash_attention_f16(&q, &k, &v, stride, positions, scale, &mut want);
        for t in tables() {
            let mut got = vec![0f32; hd];
            t.flash_attention_f16(&q, &k, &v, stride, positions, scale, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{}", t.name());
        }
    }
}

proptest! {
    /// Flash attention over an F32 cache: every table's entry against the reference one.
    #[test]
    fn flash_attention_f32_equals_reference(
        positions in 1usize..200,
        hd in prop_oneof![Just(64usize), Just(128), 1usize..140],
        pad in 0usize..5,
        seed: u64,
    ) {
        let mut g = Rng::new(seed);
        let stride = 4 * (hd + pad);
        let cache = |g: &mut Rng| -> Vec<u8> {
            (0..positions * (hd + pad)).flat_map(|_| g.float(2.0).to_le_bytes()).collect()
        };
        let k = cache(&mut g);
        let v = cache(&mut g);
        let q: Vec<f32> = (0..hd).map(|_| g.float(2.0)).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let mut want = vec![0f32; hd];
        reference().flash_attention_f32(&q, &k, &v, stride, positions, scale, &mut want);
        for t in tables() {
            let mut got = vec![0f32; hd];
            t.flash_attention_f32(&q, &k, &v, stride, positions, scale, &mut got);
            prop_assert_eq!(bits(&got), bits(&want), "{}", t.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Both scale rules, on rows with exact halves of the maximum (ties that the rule decides).
    #[test]
    fn i8s_quantization_equals_reference(k in 1usize..300, a in 1e-3f32..50.0, seed: u64) {
        let mut g = Rng::new(seed);
        let mut x = g.floats(k, a);
        let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for i in (0..k).step_by(7) {
            x[i] = m / 2.0 * if i % 2 == 0 { 1.0 } else { -1.0 };
        }
        for rule in [ops::I8Scale::Divide, ops::I8Scale::Reciprocal] {
            let mut want = vec![0i8; k];
            let ws = ops::quantize_i8s_with(&x, &mut want, rule);
            let mut r = vec![0i8; k];
            prop_assert_eq!(reference().quantize_i8s_with(&x, &mut r, rule), ws);
            prop_assert_eq!(&r, &want);
            for t in tables() {
                let mut got = vec![0i8; k];
                let gs = t.quantize_i8s_with(&x, &mut got, rule);
                prop_assert_eq!(gs.0.to_bits(), ws.0.to_bits(), "{}", t.name());
                prop_assert_eq!(gs.1, ws.1, "{}", t.name());
                prop_assert_eq!(&got, &want, "{} {:?}", t.name(), rule);
            }
        }
    }
}

#[test]
fn i2s_reference_twin_matches_ternary_definition() {
    // The scalar twin itself: codes·q − Σq equals the ternary dot product.
    let mut g = Rng::new(99);
    let (rows, k) = (3, 384);
    let codes: Vec<i8> = (0..rows * k).map(|_| (g.next() % 3) as i8 - 1).collect();
    let mut packed = vec![0u8; rows * k / 4];
    bitconv::quant::layouts::i2s::pack_rows(&codes, &mut packed).unwrap();
    let q = g.i8s(k, -128, 127);
    let qsum: i32 = q.iter().map(|&v| v as i32).sum();
    let mut out = vec![0i32; rows];
    for t in simd::available() {
        t.i2s_dots(&packed, k, &q, 1, &mut out);
        for r in 0..rows {
            let want: i32 = (0..k).map(|j| codes[r * k + j] as i32 * q[j] as i32).sum();
            assert_eq!(out[r] - qsum, want, "{} row {r}", t.name());
        }
    }
}

#[test]
fn large_k_does_not_overflow_16_bit_partial_sums() {
    // All codes 3 and all activations -128: the worst case for the 16-bit partial sums of
    // the AVX2 kernels, over many blocks.
    let k = 128 * 40;
    let w = vec![0xffu8; 2 * k / 4];
    let q = vec![-128i8; 3 * k];
    let mut want = vec![0i32; 6];
    reference().i2s_dots(&w, k, &q, 3, &mut want);
    assert_eq!(want[0], -3 * 128 * k as i32);
    for t in tables() {
        let mut got = vec![0i32; 6];
        t.i2s_dots(&w, k, &q, 3, &mut got);
        assert_eq!(got, want, "{}", t.name());
    }
}

#[test]
fn one_token_at_the_masked_kernels_block_limit() {
    // One token, all codes 3 and all activations -128 (the largest sums), with 2^14 − 1 blocks
    // (the most the AVX-512 one-token kernel takes, for its scaled sums) and 2^14 (where it
    // hands over to the tiles); three rows, so one is left over from the pairs of rows.
    for blocks in [(1 << 14) - 1, 1 << 14] {
        let k = 128 * blocks;
        let w = vec![0xffu8; 3 * k / 4];
        let q = vec![-128i8; k];
        let mut want = vec![0i32; 3];
        reference().i2s_dots(&w, k, &q, 1, &mut want);
        assert_eq!(want[0], -3 * 128 * k as i32);
        for t in tables() {
            let mut got = vec![0i32; 3];
            t.i2s_dots(&w, k, &q, 1, &mut got);
            assert_eq!(got, want, "{} {blocks} blocks", t.name());
        }
    }
}

/// `Kernels::rope` rotates like `ops::rope_apply` head by head, bit for bit, in both styles,
/// with a partial rotation (`n_rot < head_dim`) and at positions far enough out that the
/// angles are large (where an unfused rotation differs in the last bits).
#[test]
fn rope_equals_the_scalar_rotation() {
    let mut rng = Rng::new(0x5eed_f0be);
    for (head_dim, n_rot, heads) in [(64, 64, 12), (96, 96, 3), (128, 64, 2), (2, 2, 5)] {
        for style in [ops::RopeStyle::Neox, ops::RopeStyle::Normal] {
            for pos in [0usize, 1, 37, 4095] {
                let mut table = vec![(0.0f32, 0.0f32); n_rot / 2];
                ops::rope_table(pos, n_rot, 10_000.0, 1.0, None, &mut table);
                let x = rng.floats(heads * head_dim, 8.0);
                let mut want = x.clone();
                for h in want.chunks_exact_mut(head_dim) {
                    ops::rope_apply(h, &table, style);
                }
                for t in tables() {
                    let mut got = x.clone();
                    t.rope(&mut got, &table, style, head_dim);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{}: rope {style:?} hd {head_dim} n_rot {n_rot} pos {pos}",
                        t.name()
                    );
                }
            }
        }
    }
}
