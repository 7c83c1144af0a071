//! The small deterministic generators of the tests and benchmarks, one copy each: [`Rng`]
//! (xorshift64*, with the helpers the tests draw from it), [`XorShift64`] (the plain 13/7/17
//! xorshift) and [`Lcg`] (Knuth's MMIX linear congruential step).
//!
//! The library's unit tests reach this file as `crate::test_rng` (compiled only under
//! `cfg(test)`); `tests/common` includes it as `common::rng` and `benches/kernels.rs` as `rng`,
//! both with `#[path]`.
#![allow(dead_code)]

/// xorshift64*. The state must not be zero: [`Rng::new`] makes it odd.
pub struct Rng(pub u64);

impl Rng {
    /// A generator seeded with `seed | 1`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1), 24 bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Approximately N(0, 1) (sum of four uniforms, rescaled).
    pub fn normal(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * 3.0f32.sqrt()
    }

    /// A random byte (the top 8 bits).
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// `n` values uniform in `lo..=hi`.
    pub fn i8s(&mut self, n: usize, lo: i32, hi: i32) -> Vec<i8> {
        (0..n)
            .map(|_| (lo + (self.next() % (hi - lo + 1) as u64) as i32) as i8)
            .collect()
    }

    /// Uniform in (-a, a).
    pub fn float(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }

    /// `n` values uniform in (-a, a).
    pub fn floats(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| self.float(a)).collect()
    }

    /// A finite f16 scale of either sign, as little-endian bytes.
    pub fn f16_scale(&mut self) -> [u8; 2] {
        let v = self.float(1.0);
        let v = if v.abs() < 1e-3 { 0.25 } else { v };
        half::f16::from_f32(v).to_le_bytes()
    }

    /// `n` bytes of I2_S-style 2-bit codes 0..=2 only (no code 3), as real files hold.
    pub fn ternary_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = 0u8;
                for s in 0..4 {
                    b |= ((self.next() % 3) as u8) << (2 * s);
                }
                b
            })
            .collect()
    }
}

/// The plain xorshift64 (shifts 13, 7, 17). The state must not be zero.
pub struct XorShift64(pub u64);

impl XorShift64 {
    /// The next state, which is also the output.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The linear congruential step of Knuth's MMIX (`s·6364136223846793005 + 1442695040888963407`).
/// Its low bits are weak: callers take the high ones.
pub struct Lcg(pub u64);

impl Lcg {
    /// Advances and returns the whole new state.
    pub fn step(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }
}
