//! Tests of `absmean`.

use super::*;
use proptest::prelude::*;

// --- independent references -------------------------------------------------------------

/// Little-endian base-2^32 natural number, for checking the exact mean independently.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Nat(Vec<u32>);

impl Nat {
    fn from_u64(v: u64) -> Nat {
        let mut n = Nat(vec![v as u32, (v >> 32) as u32]);
        n.trim();
        n
    }
    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }
    fn shl(&self, s: u32) -> Nat {
        let mut out = vec![0u32; (s / 32) as usize];
        let off = s % 32;
        let mut carry = 0u32;
        for &l in &self.0 {
            if off == 0 {
                out.push(l);
            } else {
                out.push((l << off) | carry);
                carry = l >> (32 - off);
            }
        }
        out.push(carry);
        let mut n = Nat(out);
        n.trim();
        n
    }
    fn add(&self, o: &Nat) -> Nat {
        let len = self.0.len().max(o.0.len()) + 1;
        let mut out = Vec::with_capacity(len);
        let mut carry = 0u64;
        for i in 0..len {
            let s = u64::from(*self.0.get(i).unwrap_or(&0))
                + u64::from(*o.0.get(i).unwrap_or(&0))
                + carry;
            out.push(s as u32);
            carry = s >> 32;
        }
        let mut n = Nat(out);
        n.trim();
        n
    }
    fn mul_small(&self, m: u64) -> Nat {
        let mut acc = Nat(vec![]);
        for (i, part) in [m as u32, (m >> 32) as u32].into_iter().enumerate() {
            let mut out = Vec::new();
            let mut carry = 0u64;
            for &l in &self.0 {
                let p = u64::from(l) * u64::from(part) + carry;
                out.push(p as u32);
                carry = p >> 32;
            }
            out.push(carry as u32);
            let mut t = Nat(out);
            t.trim();
            acc = acc.add(&t.shl(32 * i as u32));
        }
        acc
    }
    fn cmp(&self, o: &Nat) -> std::cmp::Ordering {
        self.0
            .len()
            .cmp(&o.0.len())
            .then_with(|| self.0.iter().rev().cmp(o.0.iter().rev()))
    }
}

/// `Σ|x|` as `I` with `Σ|x| = I · 2^-149`, directly from the definition of an f32's value.
fn exact_sum_nat(values: &[f32]) -> Nat {
    let mut s = Nat(vec![]);
    for &x in values {
        let b = x.to_bits() & 0x7fff_ffff;
        let e = b >> 23;
        let frac = u64::from(b & 0x7f_ffff);
        let (m, sh) = if e == 0 {
            (frac, 0)
        } else {
            (frac | 1 << 23, e - 1)
        };
        s = s.add(&Nat::from_u64(m).shl(sh));
    }
    s
}

/// Checks that `r` is the correctly rounded f32 of `I·2^-149 / n`: the true value lies
/// within the rounding interval of `r`, with ties going to an even significand.
fn is_correctly_rounded(r: f32, sum: &Nat, n: u64) -> bool {
    use std::cmp::Ordering::*;
    assert!(r.is_finite() && r >= 0.0);
    // Compare q = I / (n·2^149) with a dyadic d = a · 2^(k−151) (k ≥ 0 always below).
    // q ⋚ d  ⇔  I·4 ⋚ a·n·2^k.
    let cmp_with = |a: u64, k: u32| sum.shl(2).cmp(&Nat::from_u64(a).mul_small(n).shl(k));
    // Work in units of 2^-151 (a quarter of the smallest subnormal): r = 4·bits-derived.
    let b = r.to_bits();
    let e = b >> 23;
    let frac = u64::from(b & 0x7f_ffff);
    let (m, sh) = if e == 0 {
        (frac, 0u32)
    } else {
        (frac | 1 << 23, e - 1)
    };
    // r = m · 2^(sh − 149) = 4m · 2^(sh − 151); neighbours are (m ± 1) at the same scale,
    // except below a power of two where the lower neighbour is half a step away.
    if m == 0 {
        // r = 0: q must be ≤ half the smallest subnormal, with the tie going to 0 (even).
        return cmp_with(2, 0) != Greater;
    }
    let lower_half_step = m == 1 << 23 && e > 1;
    let (lo_a, lo_k) = if lower_half_step {
        (4 * m - 1, sh) // r − 2^(sh−151)·1 = midpoint to the previous float (spacing halves)
    } else {
        (4 * m - 2, sh)
    };
    let (hi_a, hi_k) = (4 * m + 2, sh);
    let even = m & 1 == 0;
    let lo = cmp_with(lo_a, lo_k);
    let hi = cmp_with(hi_a, hi_k);
    let lo_ok = lo == Greater || (lo == Equal && even);
    let hi_ok = hi == Less || (hi == Equal && even);
    lo_ok && hi_ok
}

/// A literal, single-threaded transcription of the algorithm in [`AbsmeanMode::Torch`],
/// written for readability over the whole (absolute) run.
#[allow(clippy::needless_range_loop)] // index loops mirror the description
fn torch_chunksum_plain(x: &[f32]) -> f32 {
    let n = x.len();
    if n < 8 {
        let mut p = [0.0f32; 4];
        let groups = n / 4;
        for k in 0..4 {
            for i in 0..groups {
                p[k] += x[4 * i + k];
            }
        }
        for &y in &x[4 * groups..] {
            p[0] += y;
        }
        p[0] += p[1];
        p[0] += p[2];
        p[0] += p[3];
        return p[0];
    }
    let v = n / 8;
    let r = v / 4;
    let vector = |i: usize| &x[8 * i..8 * i + 8];
    let lg = if r <= 1 {
        0
    } else {
        (r as f64).log2().ceil() as u32
    };
    let l = (lg / 4).max(4);
    let b = 1usize << l;
    let mut acc = [[[0.0f32; 8]; 4]; 4];
    let mut row = 0usize;
    let add_row = |acc: &mut [[[f32; 8]; 4]; 4], row: usize| {
        for k in 0..4 {
            for lane in 0..8 {
                acc[0][k][lane] += vector(4 * row + k)[lane];
            }
        }
    };
    while r - row >= b {
        for _ in 0..b {
            add_row(&mut acc, row);
            row += 1;
        }
        for j in 1..4 {
            for k in 0..4 {
                for lane in 0..8 {
                    acc[j][k][lane] += acc[j - 1][k][lane];
                    acc[j - 1][k][lane] = 0.0;
                }
            }
            if row & ((b - 1) << (j as u32 * l)) != 0 {
                break;
            }
        }
    }
    while row < r {
        add_row(&mut acc, row);
        row += 1;
    }
    for j in 1..4 {
        for k in 0..4 {
            for lane in 0..8 {
                acc[0][k][lane] += acc[j][k][lane];
            }
        }
    }
    for i in 4 * r..v {
        for lane in 0..8 {
            acc[0][0][lane] += vector(i)[lane];
        }
    }
    for k in 1..4 {
        for lane in 0..8 {
            acc[0][0][lane] += acc[0][k][lane];
        }
    }
    let mut s = 0.0f32;
    for &y in &x[8 * v..] {
        s += y;
    }
    for lane in 0..8 {
        s += acc[0][0][lane];
    }
    s
}

fn torch_mean_plain(values: &[f32], threads: usize) -> f32 {
    let a: Vec<f32> = values.iter().map(|x| x.abs()).collect();
    let n = a.len();
    let mut slots = vec![0.0f32; threads];
    if n < 32768 || threads == 1 {
        slots[0] = torch_chunksum_plain(&a);
    } else {
        let chunks = threads.min(n.div_ceil(32768));
        let c = n.div_ceil(chunks);
        for (t, slot) in slots.iter_mut().enumerate().take(chunks) {
            let s = (t * c).min(n);
            let e = (s + c).min(n);
            *slot = torch_chunksum_plain(&a[s..e]);
        }
    }
    let s = 0.0 + torch_chunksum_plain(&slots);
    s / n as f32
}

fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut s = crate::test_rng::Lcg(seed);
    move || s.step() >> 11
}

/// Values like a weight matrix: mostly ~N(0, 0.02), some larger, signs random.
fn weights(n: usize, seed: u64) -> Vec<f32> {
    let mut r = lcg(seed);
    (0..n)
        .map(|_| {
            let u = (r() as f64 / (1u64 << 53) as f64) * 2.0 - 1.0;
            let w = (u * u * u * 0.06 + u * 0.01) as f32;
            if r() % 1000 == 0 {
                w * 40.0
            } else {
                w
            }
        })
        .collect()
}

fn to_bytes(dtype: SrcDtype, vals: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in vals {
        match dtype {
            SrcDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            SrcDtype::F16 => out.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes()),
            SrcDtype::BF16 => {
                out.extend_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes())
            }
        }
    }
    out
}

fn any_finite_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        // any finite bit pattern (huge range, both signs)
        any::<u32>().prop_map(|b| {
            let x = f32::from_bits(b);
            if x.is_finite() {
                x
            } else {
                f32::from_bits(b & 0xff7f_ffff)
            }
        }),
        // subnormals
        (0u32..0x80_0000, any::<bool>())
            .prop_map(|(b, s)| f32::from_bits(b | (u32::from(s) << 31))),
        // typical weights
        (-1.0f32..1.0).prop_map(|x| x * 0.05),
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::MAX),
    ]
}

// --- parsing -----------------------------------------------------------------------------

#[test]
fn mode_parse_and_display_roundtrip() {
    for m in [
        AbsmeanMode::Exact,
        AbsmeanMode::Torch { threads: 1 },
        AbsmeanMode::Torch { threads: 2 },
        AbsmeanMode::Torch { threads: 64 },
    ] {
        assert_eq!(m.to_string().parse::<AbsmeanMode>(), Ok(m));
    }
    assert_eq!("torch:2".parse(), Ok(AbsmeanMode::REFERENCE));
    assert_eq!("EXACT".parse(), Ok(AbsmeanMode::Exact));
    assert_eq!(AbsmeanMode::REFERENCE.to_string(), "torch:2");
    for bad in [
        "",
        "torch",
        "torch:",
        "torch:0",
        "torch:-1",
        "torch:+2",
        "torch:2x",
        "exact:1",
        "torc:2",
        "torch:99999999999999999999999",
    ] {
        let e = bad.parse::<AbsmeanMode>().unwrap_err();
        assert!(e.to_string().contains("torch:T"), "{bad}");
    }
}

proptest! {
    #[test]
    fn mode_roundtrip_prop(t in 1usize..100_000) {
        let m = AbsmeanMode::Torch { threads: t };
        prop_assert_eq!(m.to_string().parse::<AbsmeanMode>(), Ok(m));
    }
}

// --- exact mode --------------------------------------------------------------------------

#[test]
fn exact_simple_values() {
    assert_eq!(absmean(&[1.0, -2.0, 3.0], AbsmeanMode::Exact), 2.0);
    assert_eq!(absmean(&[0.0, -0.0], AbsmeanMode::Exact), 0.0);
    assert_eq!(absmean(&[f32::MAX, f32::MAX], AbsmeanMode::Exact), f32::MAX);
    let tiny = f32::from_bits(1);
    assert_eq!(absmean(&[tiny, tiny], AbsmeanMode::Exact), tiny);
    // 1 subnormal step over 2 values: exactly half → ties to even (0).
    assert_eq!(absmean(&[tiny, 0.0], AbsmeanMode::Exact), 0.0);
    assert_eq!(absmean(&[tiny, tiny, tiny, 0.0], AbsmeanMode::Exact), tiny);
    assert!(absmean(&[], AbsmeanMode::Exact).is_nan());
    assert!(absmean(&[1.0, f32::NAN, f32::INFINITY], AbsmeanMode::Exact).is_nan());
    assert_eq!(
        absmean(&[1.0, f32::NEG_INFINITY], AbsmeanMode::Exact),
        f32::INFINITY
    );
    // (1 + 2^-23 + 1) / 2 = 1 + 2^-24: a tie between 1 and 1 + 2^-23 → even (1.0).
    let a = 1.0 + f32::EPSILON;
    assert_eq!(absmean(&[a, 1.0], AbsmeanMode::Exact), 1.0);
    // One more tiny value pushes it above the tie, still rounding to a value near 2/3.
    let third = absmean(&[1.0, 1.0, 0.0], AbsmeanMode::Exact);
    assert_eq!(third, (2.0f64 / 3.0) as f32);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn exact_is_correctly_rounded(v in prop::collection::vec(any_finite_f32(), 1..300)) {
        let r = absmean(&v, AbsmeanMode::Exact);
        let sum = exact_sum_nat(&v);
        prop_assert!(is_correctly_rounded(r, &sum, v.len() as u64), "r = {r:e}");
    }

    #[test]
    fn exact_is_correctly_rounded_narrow(
        v in prop::collection::vec((-1.0e-3f32..1.0e-3).prop_map(|x| x * x * x), 1..2000),
    ) {
        let r = absmean(&v, AbsmeanMode::Exact);
        prop_assert!(is_correctly_rounded(r, &exact_sum_nat(&v), v.len() as u64));
    }

    #[test]
    fn exact_ignores_blocking(
        v in prop::collection::vec(any_finite_f32(), 1..3000),
        par in 1usize..700,
        blk in 1usize..20,
    ) {
        let want = absmean(&v, AbsmeanMode::Exact).to_bits();
        prop_assert_eq!(exact_mean(&SliceSource(&v), par).to_bits(), want);
        let bytes = to_bytes(SrcDtype::F32, &v);
        let src = BytesSource::new(SrcDtype::F32, &bytes, 32 * blk);
        prop_assert_eq!(exact_mean(&src, par).to_bits(), want);
    }
}

#[test]
fn exact_large_input_is_thread_independent_and_close_to_f64() {
    let v = weights(3_000_001, 7);
    let want = absmean(&v, AbsmeanMode::Exact);
    let f64_mean = v.iter().map(|x| f64::from(x.abs())).sum::<f64>() / v.len() as f64;
    assert!(((want as f64) - f64_mean).abs() <= f64_mean * 1e-7);
    for par in [1000, 4096, 65_537, 1 << 20, 1 << 23] {
        assert_eq!(exact_mean(&SliceSource(&v), par).to_bits(), want.to_bits());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let one = pool.install(|| absmean(&v, AbsmeanMode::Exact));
    assert_eq!(one.to_bits(), want.to_bits());
    assert!(is_correctly_rounded(
        want,
        &exact_sum_nat(&v),
        v.len() as u64
    ));
}

// --- torch mode --------------------------------------------------------------------------

#[test]
fn torch_one_chunk_is_torch_with_one_thread() {
    for (n, seed) in [
        (0, 1),
        (1, 2),
        (5, 3),
        (8, 4),
        (512, 5),
        (6912, 6),
        (40_000, 7),
    ] {
        let v = weights(n, seed);
        let want = absmean(&v, AbsmeanMode::Torch { threads: 1 });
        assert_eq!(torch_mean_one_chunk(&v).to_bits(), want.to_bits(), "n {n}");
        if n < TORCH_GRAIN {
            let two = absmean(&v, AbsmeanMode::Torch { threads: 2 });
            assert_eq!(torch_mean_one_chunk(&v).to_bits(), two.to_bits(), "n {n}");
        }
    }
}

#[test]
fn torch_small_cases_by_hand() {
    let t1 = AbsmeanMode::Torch { threads: 1 };
    let big = 1.0e8f32; // float32 spacing 8 here
                        // n = 5 < 8: p = [x0 + x4, x1, x2, x3], then ((p0 + p1) + p2) + p3; every 3 is lost
                        // (a pairwise sum would have kept 3 + 3 + 3 + 3 = 12).
    assert_eq!(absmean(&[big, 3.0, 3.0, 3.0, -3.0], t1), big / 5.0);
    // n = 8: one vector; r = 0 + lanes 0..7 in order, so the small lanes add up first.
    let v = [3.0, 3.0, 3.0, -3.0, big, 0.0, 0.0, 0.0];
    assert_eq!(absmean(&v, t1), (big + 16.0) / 8.0);
    // n = 9: the tail scalar x8 is added before the lanes, so each 3 is then lost.
    let v = [3.0, 3.0, 3.0, 3.0, 0.0, 0.0, 0.0, 0.0, big];
    assert_eq!(absmean(&v, t1), big / 9.0);
    assert!(absmean(&[], AbsmeanMode::Torch { threads: 2 }).is_nan());
}

#[test]
fn torch_matches_plain_transcription() {
    let mut rng = lcg(99);
    let mut sizes: Vec<usize> = (0..80).collect();
    sizes.extend([
        127, 128, 129, 511, 512, 513, 4095, 4096, 4097, 16383, 32767, 32768, 32769, 65535, 65536,
        65537, 196_608, 131_072, 131_073, 262_144, 393_247,
    ]);
    sizes.extend((0..12).map(|_| (rng() % 600_000) as usize));
    for &n in &sizes {
        let v = weights(n, n as u64);
        for t in [1, 2, 3, 4, 7, 8, 9, 12, 16, 33] {
            let plain = torch_mean_plain(&v, t);
            let mode = AbsmeanMode::Torch { threads: t };
            let ours = absmean(&v, mode);
            assert_eq!(ours.to_bits(), plain.to_bits(), "n = {n}, t = {t}");
        }
    }
}

#[test]
fn torch_superblocks_match_plain_for_large_level_power() {
    // One chunk of more than 2^19 rows (16.8M values) gives L = 5 (B = 32, super-blocks of
    // 32768 rows); 4.2M values of 8 super-blocks at L = 4 are covered as well.
    for (n, t) in [(4_200_000usize, 1usize), (16_777_216 + 4096 + 37, 1)] {
        let v = weights(n, 3);
        assert_eq!(level_power(n / 32), if n > 1 << 24 { 5 } else { 4 });
        let plain = torch_mean_plain(&v, t);
        let ours = absmean(&v, AbsmeanMode::Torch { threads: t });
        assert_eq!(ours.to_bits(), plain.to_bits(), "n = {n}");
        let bytes = to_bytes(SrcDtype::F32, &v);
        let src = absmean_src(SrcDtype::F32, &bytes, AbsmeanMode::Torch { threads: t });
        assert_eq!(src.to_bits(), plain.to_bits(), "src n = {n}");
    }
}

#[test]
fn torch_is_thread_sensitive_and_close_to_exact() {
    let v = weights(1 << 20, 5);
    let exact = absmean(&v, AbsmeanMode::Exact);
    let mut distinct = std::collections::BTreeSet::new();
    for t in 1..=16 {
        let m = absmean(&v, AbsmeanMode::Torch { threads: t });
        distinct.insert(m.to_bits());
        assert!((m - exact).abs() <= exact * 1e-5, "t = {t}");
    }
    assert!(distinct.len() > 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn torch_src_equals_slice(
        v in prop::collection::vec(any_finite_f32(), 0..2000),
        t in 1usize..12,
        blk in 1usize..10,
    ) {
        let mode = AbsmeanMode::Torch { threads: t };
        let want = absmean(&v, mode);
        let bytes = to_bytes(SrcDtype::F32, &v);
        let got = absmean_of(&BytesSource::new(SrcDtype::F32, &bytes, 32 * blk), mode);
        prop_assert_eq!(got.to_bits(), want.to_bits());
        prop_assert_eq!(torch_mean_plain(&v, t).to_bits(), want.to_bits());
    }

    #[test]
    fn src_dtypes_equal_converted_slice(
        v in prop::collection::vec(-70000.0f32..70000.0, 0..600),
        exact in any::<bool>(),
    ) {
        let mode = if exact { AbsmeanMode::Exact } else { AbsmeanMode::REFERENCE };
        for dtype in [SrcDtype::F32, SrcDtype::F16, SrcDtype::BF16] {
            let bytes = to_bytes(dtype, &v);
            let conv = crate::quant::dtype::to_f32_vec(dtype, &bytes);
            let want = absmean(&conv, mode);
            let got = absmean_src(dtype, &bytes, mode);
            prop_assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()));
        }
    }
}

#[test]
fn round_quotient_handles_extremes() {
    // Largest possible sum over many values, and the smallest non-zero.
    let mut big = Big::ZERO;
    big.add_shifted((1 << 24) - 1, 253);
    assert_eq!(round_quotient_to_f32(&big, 1), f32::MAX);
    let mut one = Big::ZERO;
    one.add_shifted(1, 0);
    assert_eq!(round_quotient_to_f32(&one, 1), f32::from_bits(1));
    assert_eq!(round_quotient_to_f32(&one, 2), 0.0);
    assert_eq!(round_quotient_to_f32(&one, u64::MAX), 0.0);
    let mut three = Big::ZERO;
    three.add_shifted(3, 0);
    assert_eq!(round_quotient_to_f32(&three, 2), f32::from_bits(2));
    // Sum of 2^40 copies of f32::MAX divided by 2^40.
    let mut huge = Big::ZERO;
    huge.add_shifted((1 << 24) - 1, 253 + 40);
    assert_eq!(round_quotient_to_f32(&huge, 1 << 40), f32::MAX);
}

/// The exact mean of `vals` through the bins alone (no `f64` fast path).
fn exact_by_bins(vals: &[f32]) -> f32 {
    let mut acc = ExactAcc::new();
    acc.add_bins(vals);
    acc.mean(vals.len())
}

#[test]
fn narrow_f64_blocks_equal_the_bins() {
    let mut rng = crate::test_rng::Rng::new(0xab5);
    let mut cases: Vec<Vec<f32>> = Vec::new();
    for scale in [1.0f32, 0.02, 1e-30, 1e-38, 1e30, 3e38 / 1024.0] {
        cases.push((0..8192).map(|_| rng.normal() * scale).collect());
        cases.push((0..4096).map(|_| rng.uniform() * scale).collect());
    }
    // Spreads at the limit and one past it, zeros, subnormals, the largest values.
    for spread in [0i32, 1, 18, 19, 20, 21, 40] {
        let mut v: Vec<f32> = (0..2048).map(|_| 1.0 + rng.uniform()).collect();
        v[7] = 2f32.powi(-spread) * (1.0 + rng.uniform());
        v[1500] = -2f32.powi(-spread);
        v[100] = 0.0;
        v[101] = -0.0;
        cases.push(v);
    }
    let mut sub: Vec<f32> = (0..1024).map(|i| f32::from_bits(i as u32 * 4099)).collect();
    sub[3] = f32::MIN_POSITIVE;
    cases.push(sub);
    cases.push(vec![0.0; 1024]);
    cases.push(vec![f32::MAX; 2048]);
    cases.push((0..3000).map(|i| (i as f32).sqrt() - 20.0).collect());
    for v in &cases {
        let want = exact_by_bins(v);
        assert_eq!(
            absmean(v, AbsmeanMode::Exact).to_bits(),
            want.to_bits(),
            "{:?}",
            &v[..4]
        );
    }
    // Non-finite values still reach the flags.
    let mut v = vec![0.5f32; 2048];
    v[1030] = f32::INFINITY;
    assert_eq!(absmean(&v, AbsmeanMode::Exact), f32::INFINITY);
    v[5] = f32::NAN;
    assert!(absmean(&v, AbsmeanMode::Exact).is_nan());
}
