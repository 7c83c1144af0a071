//! The absmean `mean(|W|)` of a weight tensor, as float32, in two flavours.
//!
//! BitNet's ternary fake-quantization (FORMATS.md §2.2) starts from `m = mean(|W|)` over the
//! whole tensor, computed by torch in float32, and clamps it to `1e-5` afterwards. The functions
//! here return `m` **before** that clamp; [`super::ternary`] applies it.
//!
//! * [`AbsmeanMode::Exact`] returns the correctly rounded float32 of the true mathematical mean
//!   `Σ|xᵢ| / N`. The sum is exact: every `|x|` is split into its 24-bit significand and its
//!   exponent, significands are added into one `u64` bin per exponent (several interleaved bin
//!   tables, to keep the adds independent), and the bins are folded into a 512-bit integer
//!   `I` with `Σ|xᵢ| = I · 2⁻¹⁴⁹`. Integer addition is associative, so the result does not depend
//!   on how the work is split between threads or blocks. One final long division by `N` and a
//!   round-to-nearest-even gives the float32 (subnormal results included).
//! * [`AbsmeanMode::Torch`] reproduces, bit for bit, torch 2.2's CPU float32 `mean` on an AVX2
//!   or non-AVX build run with `threads` intra-op threads: the thread partition of the run of
//!   `N` values, the per-thread cascade sum over rows of four 8-lane vectors, the sum of the
//!   per-thread slots, then `fl32(S / fl32(N))`. The bitnet.cpp reference files were made with
//!   2 threads; other thread counts move the result by an ulp or two in many tensors. See
//!   [`AbsmeanMode::Torch`] for the algorithm.
//!
//! Both modes can read the tensor straight from its little-endian source bytes
//! ([`absmean_src`]), converting a few thousand values at a time into a stack buffer, so memory
//! stays at a few tens of kilobytes per worker however large the tensor is. Work is spread over
//! rayon's pool only where that leaves the result unchanged (see the notes on each mode).
//!
//! Non-finite input is not an error here: like torch, a NaN anywhere gives NaN and an infinity
//! gives infinity (Torch mode can also overflow to infinity on huge finite values, as torch
//! does). Callers that must reject such tensors scan them first with
//! [`super::ternary::find_non_finite_src`].

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use super::dtype::{to_f32_into, SrcDtype};

/// How to compute the float32 absmean of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbsmeanMode {
    /// The correctly rounded float32 of the exact mean; independent of threads and order.
    Exact,
    /// Bit-exact emulation of torch 2.2's CPU float32 `mean` with `threads` intra-op threads
    /// (8-lane AVX2 / non-AVX builds; AVX-512 builds are not modelled).
    ///
    /// All additions are float32, round-to-nearest-even:
    ///
    /// 1. *Partition.* The tensor is one row-major run of `N` values. If `N < 32768` or
    ///    `threads == 1` it is one chunk; otherwise `T' = min(T, ⌈N/32768⌉)` chunks of
    ///    `c = ⌈N/T'⌉` consecutive values (the last one shorter). Chunk `t`'s sum goes to slot
    ///    `t` of `T` zero-initialised slots, and `S = 0 + chunksum(slots)`.
    /// 2. *chunksum of `n ≥ 8` values.* `V = ⌊n/8⌋` 8-lane vectors; the first `4·⌊V/4⌋` form
    ///    `R = ⌊V/4⌋` rows of 4 vectors. Accumulators `acc[0..4][0..4]` (8-lane). With
    ///    `L = max(4, ⌈log₂R⌉ div 4)` and `B = 2^L`: while at least `B` rows remain, add `B` rows
    ///    into level 0, then for `j = 1, 2, 3`: `acc[j] += acc[j−1]; acc[j−1] = 0`, stopping as
    ///    soon as `rows_consumed & ((B−1) << j·L) ≠ 0`. Remaining rows go into level 0; then
    ///    `acc[0] += acc[1]`, `+= acc[2]`, `+= acc[3]`; the leftover `V mod 4` vectors are added
    ///    into `acc[0][0]`, then `acc[0][0] += acc[0][1]`, `+= acc[0][2]`, `+= acc[0][3]`. The
    ///    result is `0`, plus the `n mod 8` tail scalars in order, plus lanes 0…7 of `acc[0][0]`
    ///    in order.
    /// 3. *chunksum of `n < 8` values.* `p[k]` = in-order sum of elements `4i+k` over full
    ///    groups of 4; the `n mod 4` leftovers are added into `p[0]`; then
    ///    `p[0] + p[1] + p[2] + p[3]`.
    ///
    /// The mean is `fl32(S / fl32(N))`.
    ///
    /// Parallel evaluation: the `T'` chunks are independent, and inside a chunk every
    /// "super-block" of `B³` rows starts and ends with levels 0–2 at zero and only adds its
    /// level-2 total into `acc[3]`. Super-block totals are computed in parallel and then added
    /// into `acc[3]` in order, which is the same sequence of float operations.
    Torch {
        /// Intra-op thread count torch ran with (`torch.get_num_threads()`), at least 1.
        threads: usize,
    },
}

impl AbsmeanMode {
    /// The mode that reproduces the bitnet.cpp reference files (`torch:2`).
    pub const REFERENCE: AbsmeanMode = AbsmeanMode::Torch { threads: 2 };
}

impl Default for AbsmeanMode {
    /// [`AbsmeanMode::Exact`]: the same result on every machine and thread count. The
    /// reference's own float32 mean is not reproducible across machines; use
    /// [`AbsmeanMode::REFERENCE`] (`torch:2`) to match files made on a 2-core machine.
    fn default() -> Self {
        AbsmeanMode::Exact
    }
}

impl fmt::Display for AbsmeanMode {
    /// Formats as `exact` or `torch:T`, the spelling [`FromStr`] accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbsmeanMode::Exact => f.write_str("exact"),
            AbsmeanMode::Torch { threads } => write!(f, "torch:{threads}"),
        }
    }
}

/// Error from parsing an [`AbsmeanMode`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseAbsmeanModeError(String);

impl fmt::Display for ParseAbsmeanModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid absmean mode `{}`: expected `exact` or `torch:T` with T a thread count ≥ 1",
            self.0
        )
    }
}

impl std::error::Error for ParseAbsmeanModeError {}

impl FromStr for AbsmeanMode {
    type Err = ParseAbsmeanModeError;

    /// Parses `exact` or `torch:T` (`T` a decimal integer ≥ 1), ASCII case-insensitively
    /// for the keyword.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseAbsmeanModeError(s.to_owned());
        let t = s.trim();
        if t.eq_ignore_ascii_case("exact") {
            return Ok(AbsmeanMode::Exact);
        }
        let (head, tail) = t.split_once(':').ok_or_else(err)?;
        if !head.eq_ignore_ascii_case("torch") || !tail.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        match tail.parse::<usize>() {
            Ok(threads) if threads >= 1 => Ok(AbsmeanMode::Torch { threads }),
            _ => Err(err()),
        }
    }
}

/// `mean(|x|)` over `values` as float32, before the `1e-5` clamp.
///
/// An empty slice gives NaN (as torch's mean of an empty tensor does).
///
/// # Panics
/// If `mode` is `Torch { threads: 0 }`.
pub fn absmean(values: &[f32], mode: AbsmeanMode) -> f32 {
    absmean_of(&SliceSource(values), mode)
}

/// torch's CPU float32 `mean(|x|)` of `values` summed as one chunk: what torch computes for a
/// tensor of fewer than 32768 values whatever its thread count (and for any size with one
/// thread), for instance `x.pow(2).mean(-1)` over one row of a model's hidden state in
/// transformers' RMSNorm. Equal to `absmean(values, AbsmeanMode::Torch { threads: 1 })`, without
/// allocating (for `values.len() < 131072`).
pub fn torch_mean_one_chunk(values: &[f32]) -> f32 {
    // One thread: the chunk sum goes to the only slot, and `0 + slot` is the slot (≥ 0).
    chunk_sum(&SliceSource(values), 0, values.len()) / values.len() as f32
}

/// `mean(|x|)` over a tensor given as little-endian `dtype` bytes, before the `1e-5` clamp.
///
/// The same value as `absmean(&to_f32_vec(dtype, bytes), mode)`, but converting only
/// [`SRC_BLOCK`] values at a time per worker, so memory does not grow with the tensor. `bytes`
/// may be unaligned (e.g. a slice of an mmap'd safetensors file).
///
/// # Panics
/// If `bytes.len()` is not a multiple of `dtype.size()`, or `mode` is `Torch { threads: 0 }`.
pub fn absmean_src(dtype: SrcDtype, bytes: &[u8], mode: AbsmeanMode) -> f32 {
    assert_eq!(
        bytes.len() % dtype.size(),
        0,
        "absmean_src: {} bytes is not a whole number of {dtype} values",
        bytes.len()
    );
    absmean_of(&BytesSource::new(dtype, bytes, SRC_BLOCK), mode)
}

/// Values converted per step by [`absmean_src`] (a multiple of 32).
pub const SRC_BLOCK: usize = 8192;

fn absmean_of<S: Source>(src: &S, mode: AbsmeanMode) -> f32 {
    match mode {
        AbsmeanMode::Exact => exact_mean(src, EXACT_PAR_BLOCK),
        AbsmeanMode::Torch { threads } => torch_mean(src, threads),
    }
}

// ---------------------------------------------------------------------------------------------
// Sources of values

/// Something that can hand out a tensor's values as `f32`, in order, block by block.
trait Source: Sync {
    /// Number of values.
    fn len(&self) -> usize;
    /// Calls `f` on consecutive blocks covering values `start..end` in order. Every block but
    /// the last has a length that is a multiple of 32.
    fn for_each_block<F: FnMut(&[f32])>(&self, start: usize, end: usize, f: F);
}

/// Values already in memory as `f32`.
struct SliceSource<'a>(&'a [f32]);

impl Source for SliceSource<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn for_each_block<F: FnMut(&[f32])>(&self, start: usize, end: usize, mut f: F) {
        if start < end {
            f(&self.0[start..end]);
        }
    }
}

/// Largest conversion block a [`BytesSource`] may use.
const MAX_BLOCK: usize = 8192;

/// Little-endian source bytes, converted `block` values at a time into a stack buffer.
struct BytesSource<'a> {
    dtype: SrcDtype,
    bytes: &'a [u8],
    block: usize,
}

impl<'a> BytesSource<'a> {
    fn new(dtype: SrcDtype, bytes: &'a [u8], block: usize) -> Self {
        assert!(block > 0 && block % 32 == 0 && block <= MAX_BLOCK);
        BytesSource {
            dtype,
            bytes,
            block,
        }
    }
}

impl Source for BytesSource<'_> {
    fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    fn for_each_block<F: FnMut(&[f32])>(&self, start: usize, end: usize, mut f: F) {
        let mut buf = [0.0f32; MAX_BLOCK];
        let size = self.dtype.size();
        let mut i = start;
        while i < end {
            let n = self.block.min(end - i);
            let out = &mut buf[..n];
            to_f32_into(self.dtype, &self.bytes[i * size..(i + n) * size], out);
            f(out);
            i += n;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exact mode

/// Values per parallel task in exact mode.
const EXACT_PAR_BLOCK: usize = 1 << 18;

/// Flush the bins into the big integer after this many values (keeps every `u64` bin far from
/// overflow: each add is below 2^24).
const EXACT_FLUSH: u64 = 1 << 36;

/// Values per block of [`ExactAcc::add_narrow`].
const NARROW_BLOCK: usize = 1024;

/// Widest spread of binary exponents [`ExactAcc::add_narrow`] takes: 24 significant bits + 19
/// + 10 bits of count = 53, an `f64`'s significand.
const NARROW_SPREAD: u32 = 19;

/// Number of interleaved bin tables.
const LANES: usize = 4;

/// Exact accumulator of `Σ|x|`.
struct ExactAcc {
    /// `bins[l][e]` = sum of the 24-bit significands of values with biased exponent `e`
    /// (significand without the implicit bit for `e = 0`). Entry 255 collects non-finite
    /// values and is cleared after every block.
    bins: Box<[[u64; 256]; LANES]>,
    pending: u64,
    total: Big,
    nan: bool,
    inf: bool,
}

impl ExactAcc {
    fn new() -> Self {
        ExactAcc {
            bins: Box::new([[0; 256]; LANES]),
            pending: 0,
            total: Big::ZERO,
            nan: false,
            inf: false,
        }
    }

    fn add(&mut self, vals: &[f32]) {
        let mut blocks = vals.chunks_exact(NARROW_BLOCK);
        for b in &mut blocks {
            if !self.add_narrow(b) {
                self.add_bins(b);
            }
        }
        if !blocks.remainder().is_empty() {
            self.add_bins(blocks.remainder());
        }
    }

    /// Adds a block of [`NARROW_BLOCK`] values whose nonzero magnitudes span at most
    /// [`NARROW_SPREAD`] binary exponents, through an `f64` sum that is exact: every value is a
    /// multiple of the smallest one's unit in the last place, and 2^10 values of at most
    /// 24 + 19 bits above that unit sum to below 2^53 units, so every partial sum, in any order,
    /// is an `f64`. The compiler vectorizes both loops, unlike the bins. Returns `false`, having
    /// added nothing, for a wider block or one with a NaN or infinity (the bins take those).
    fn add_narrow(&mut self, b: &[f32]) -> bool {
        // Exponent fields, subnormals counted as 1 (their unit is that of exponent 1); zeros
        // take no part in the minimum.
        let (mut lo, mut hi) = (255u32, 0u32);
        for &x in b {
            let bits = x.to_bits() & 0x7fff_ffff;
            let e = (bits >> 23).max(1);
            hi = hi.max(e);
            lo = lo.min(if bits == 0 { 255 } else { e });
        }
        if hi == 255 {
            return false;
        }
        if lo > hi {
            return true; // all zeros
        }
        if hi - lo > NARROW_SPREAD {
            return false;
        }
        let mut sums = [0f64; 4];
        for q in b.chunks_exact(4) {
            for (s, &x) in sums.iter_mut().zip(q) {
                *s += f64::from(x.abs());
            }
        }
        let sum = (sums[0] + sums[1]) + (sums[2] + sums[3]);
        // sum = m · 2^(e − 1075) with a 53-bit m (a normal f64: at least 2^-149); in units of
        // 2^-149 that is m · 2^(e − 926), an integer, so a negative shift drops only zeros.
        let bits = sum.to_bits();
        let m = (bits & ((1 << 52) - 1)) | (1 << 52);
        let shift = ((bits >> 52) & 0x7ff) as i64 - 926;
        if shift >= 0 {
            self.total.add_shifted(m, shift as u32);
        } else {
            self.total.add_shifted(m >> -shift, 0);
        }
        true
    }

    /// Adds values to the exponent bins (any values, non-finite ones flagged).
    fn add_bins(&mut self, vals: &[f32]) {
        #[inline(always)]
        fn bin(table: &mut [u64; 256], x: f32) {
            let b = x.to_bits() & 0x7fff_ffff;
            let e = (b >> 23) as usize & 0xff;
            let m = (b & 0x7f_ffff) | (u32::from(e != 0) << 23);
            table[e] += u64::from(m);
        }
        let mut quads = vals.chunks_exact(LANES);
        let [t0, t1, t2, t3] = &mut *self.bins;
        for q in &mut quads {
            bin(t0, q[0]);
            bin(t1, q[1]);
            bin(t2, q[2]);
            bin(t3, q[3]);
        }
        for &x in quads.remainder() {
            bin(t0, x);
        }
        if self.bins.iter().any(|t| t[255] != 0) {
            for t in self.bins.iter_mut() {
                t[255] = 0;
            }
            for &x in vals {
                self.nan |= x.is_nan();
                self.inf |= x.is_infinite();
            }
        }
        self.pending += vals.len() as u64;
        if self.pending >= EXACT_FLUSH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for table in self.bins.iter_mut() {
            for (e, v) in table.iter_mut().enumerate() {
                if *v != 0 {
                    // Value of significand m at biased exponent e is m · 2^(max(e,1) − 150).
                    self.total.add_shifted(*v, e.saturating_sub(1) as u32);
                    *v = 0;
                }
            }
        }
        self.pending = 0;
    }

    fn merge(mut self, mut other: ExactAcc) -> ExactAcc {
        self.flush();
        other.flush();
        self.total.add(&other.total);
        self.nan |= other.nan;
        self.inf |= other.inf;
        self
    }

    /// The correctly rounded float32 of `Σ|x| / n`.
    fn mean(mut self, n: usize) -> f32 {
        self.flush();
        if self.nan || n == 0 {
            return f32::NAN;
        }
        if self.inf {
            return f32::INFINITY;
        }
        round_quotient_to_f32(&self.total, n as u64)
    }
}

fn exact_mean<S: Source>(src: &S, par_block: usize) -> f32 {
    let n = src.len();
    let tasks = n.div_ceil(par_block);
    let acc = (0..tasks)
        .into_par_iter()
        .fold(ExactAcc::new, |mut acc, i| {
            let start = i * par_block;
            let end = (start + par_block).min(n);
            src.for_each_block(start, end, |b| acc.add(b));
            acc
        })
        .reduce(ExactAcc::new, ExactAcc::merge);
    acc.mean(n)
}

/// Unsigned 512-bit integer, little-endian `u64` limbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Big([u64; 8]);

impl Big {
    const ZERO: Big = Big([0; 8]);

    /// `self += v << shift` (`shift < 448`).
    fn add_shifted(&mut self, v: u64, shift: u32) {
        let limb = (shift / 64) as usize;
        let wide = u128::from(v) << (shift % 64);
        let mut carry = 0u128;
        for (k, part) in [wide as u64, (wide >> 64) as u64].into_iter().enumerate() {
            let s = u128::from(self.0[limb + k]) + u128::from(part) + carry;
            self.0[limb + k] = s as u64;
            carry = s >> 64;
        }
        let mut i = limb + 2;
        while carry != 0 {
            let s = u128::from(self.0[i]) + carry;
            self.0[i] = s as u64;
            carry = s >> 64;
            i += 1;
        }
    }

    fn add(&mut self, other: &Big) {
        let mut carry = 0u128;
        for (a, b) in self.0.iter_mut().zip(other.0) {
            let s = u128::from(*a) + u128::from(b) + carry;
            *a = s as u64;
            carry = s >> 64;
        }
        debug_assert_eq!(carry, 0);
    }

    fn is_zero(&self) -> bool {
        self.0.iter().all(|&l| l == 0)
    }

    /// Number of significant bits (0 for zero).
    fn bit_len(&self) -> u32 {
        for i in (0..8).rev() {
            if self.0[i] != 0 {
                return 64 * i as u32 + 64 - self.0[i].leading_zeros();
            }
        }
        0
    }

    fn bit(&self, i: u32) -> bool {
        (self.0[(i / 64) as usize] >> (i % 64)) & 1 == 1
    }

    /// Whether any of the bits below `i` is set.
    fn any_below(&self, i: u32) -> bool {
        let limb = (i / 64) as usize;
        self.0[..limb].iter().any(|&l| l != 0) || self.0[limb] & ((1u64 << (i % 64)) - 1) != 0
    }

    /// Bits `i..i+64` as a `u64`.
    fn bits_from(&self, i: u32) -> u64 {
        let limb = (i / 64) as usize;
        let off = i % 64;
        let lo = self.0[limb] >> off;
        let hi = if off == 0 || limb + 1 >= 8 {
            0
        } else {
            self.0[limb + 1] << (64 - off)
        };
        lo | hi
    }

    /// `(self << 64·limbs) / d` and the remainder; the shifted value must fit.
    fn shl_limbs_div(&self, limbs: usize, d: u64) -> (Big, u64) {
        let mut shifted = [0u64; 8];
        shifted[limbs..].copy_from_slice(&self.0[..8 - limbs]);
        debug_assert!(self.0[8 - limbs..].iter().all(|&l| l == 0));
        let mut q = [0u64; 8];
        let mut rem = 0u128;
        for i in (0..8).rev() {
            let cur = (rem << 64) | u128::from(shifted[i]);
            q[i] = (cur / u128::from(d)) as u64;
            rem = cur % u128::from(d);
        }
        (Big(q), rem as u64)
    }
}

/// Correctly rounded (nearest, ties to even) float32 of `sum · 2⁻¹⁴⁹ / n`, `n ≥ 1`.
fn round_quotient_to_f32(sum: &Big, n: u64) -> f32 {
    if sum.is_zero() {
        return 0.0;
    }
    // Q = ⌊sum · 2^128 / n⌋ has at least 64 significant bits, so its bits and the remainder
    // carry everything the rounding needs. value ≈ Q · 2^SCALE.
    const SCALE: i32 = -149 - 128;
    let (q, rem) = sum.shl_limbs_div(2, n);
    let msb = q.bit_len() as i32 - 1;
    let exp = msb + SCALE; // value in [2^exp, 2^(exp+1))
    let ulp = (exp - 23).max(-149); // float32 spacing there (subnormal floor 2^-149)
    let drop = (ulp - SCALE) as u32; // ≥ 41
    let mut mant = q.bits_from(drop);
    let round = q.bit(drop - 1);
    let sticky = rem != 0 || q.any_below(drop - 1);
    if round && (sticky || mant & 1 == 1) {
        mant += 1;
    }
    // mant ≤ 2^24 and ulp ≥ -149: exact in f64, and representable in f32 (the mean never
    // exceeds the largest |x|).
    (mant as f64 * 2f64.powi(ulp)) as f32
}

// ---------------------------------------------------------------------------------------------
// Torch mode

/// torch's `at::internal::GRAIN_SIZE`: below this many values a reduction runs on one thread.
const TORCH_GRAIN: usize = 32768;

fn torch_mean<S: Source>(src: &S, threads: usize) -> f32 {
    let s = torch_sum(src, threads);
    s / src.len() as f32
}

/// The thread partition: `(number of chunks, chunk length)`.
fn torch_partition(n: usize, threads: usize) -> (usize, usize) {
    if n < TORCH_GRAIN || threads == 1 {
        (1, n)
    } else {
        let chunks = threads.min(n.div_ceil(TORCH_GRAIN));
        (chunks, n.div_ceil(chunks))
    }
}

/// torch's float32 `sum(|x|)` with `threads` intra-op threads.
fn torch_sum<S: Source>(src: &S, threads: usize) -> f32 {
    assert!(threads >= 1, "torch absmean needs at least one thread");
    let n = src.len();
    let (chunks, c) = torch_partition(n, threads);
    let sums: Vec<f32> = (0..chunks)
        .into_par_iter()
        .map(|t| {
            let start = (t * c).min(n);
            let end = (start + c).min(n);
            chunk_sum(src, start, end)
        })
        .collect();
    let mut slots = vec![0.0f32; threads];
    slots[..chunks].copy_from_slice(&sums);
    0.0 + chunk_sum(&SliceSource(&slots), 0, threads)
}

/// `⌈log₂ r⌉`, with 0 for `r ≤ 1`.
fn ceil_log2(r: usize) -> u32 {
    if r <= 1 {
        0
    } else {
        usize::BITS - (r - 1).leading_zeros()
    }
}

/// The cascade's level power `L` for `rows` rows.
fn level_power(rows: usize) -> u32 {
    (ceil_log2(rows) / 4).max(4)
}

/// Lanes of one row: 4 vectors of 8 lanes, vector `k` lane `i` at index `8k + i`.
const ROW: usize = 32;

/// The multi-level accumulator of torch's cascade sum, fed one row (32 values) at a time.
struct Cascade {
    acc: [[f32; ROW]; 4],
    /// Rows consumed so far.
    rows: usize,
    /// Level power `L`.
    l: u32,
    /// Rows that go through the cascade (`⌊R/B⌋·B`); later rows only go into level 0.
    cascade_rows: usize,
}

impl Cascade {
    fn new(l: u32, cascade_rows: usize) -> Self {
        Cascade {
            acc: [[0.0; ROW]; 4],
            rows: 0,
            l,
            cascade_rows,
        }
    }

    /// Adds `|x|` of whole rows (`data.len()` a multiple of 32) into level 0, cascading after
    /// every `B` rows of the cascade region.
    fn feed(&mut self, data: &[f32]) {
        debug_assert_eq!(data.len() % ROW, 0);
        let b = 1usize << self.l;
        let mut rest = data;
        while !rest.is_empty() {
            let avail = rest.len() / ROW;
            let in_cascade = self.rows < self.cascade_rows;
            let take = if in_cascade {
                avail.min(b - (self.rows & (b - 1)))
            } else {
                avail
            };
            let (now, later) = rest.split_at(take * ROW);
            let acc0 = &mut self.acc[0];
            for row in now.chunks_exact(ROW) {
                for (a, &x) in acc0.iter_mut().zip(row) {
                    *a += x.abs();
                }
            }
            self.rows += take;
            rest = later;
            if in_cascade && self.rows & (b - 1) == 0 {
                self.cascade();
            }
        }
    }

    fn cascade(&mut self) {
        let mask = (1usize << self.l) - 1;
        for j in 1..4 {
            let (lo, hi) = self.acc.split_at_mut(j);
            for (a, &x) in hi[0].iter_mut().zip(&lo[j - 1]) {
                *a += x;
            }
            lo[j - 1] = [0.0; ROW];
            if self.rows & (mask << (j as u32 * self.l)) != 0 {
                break;
            }
        }
    }

    /// Ends the chunk: folds the levels, adds the leftover vectors (`len` a multiple of 8,
    /// below 32) and the tail scalars (below 8), and returns the chunk sum.
    fn finish(mut self, leftover: &[f32], tail: &[f32]) -> f32 {
        for j in 1..4 {
            let (lo, hi) = self.acc.split_at_mut(j);
            for (a, &x) in lo[0].iter_mut().zip(&hi[0]) {
                *a += x;
            }
        }
        let acc = &mut self.acc[0];
        for v in leftover.chunks_exact(8) {
            for (a, &x) in acc[..8].iter_mut().zip(v) {
                *a += x.abs();
            }
        }
        for k in 1..4 {
            for i in 0..8 {
                acc[i] += acc[8 * k + i];
            }
        }
        let mut r = 0.0f32;
        for &x in tail {
            r += x.abs();
        }
        for &x in &acc[..8] {
            r += x;
        }
        r
    }
}

/// torch's float32 sum of `|x|` over values `start..end` of one thread's chunk.
fn chunk_sum<S: Source>(src: &S, start: usize, end: usize) -> f32 {
    let n = end - start;
    if n < 8 {
        let mut vals = [0.0f32; 8];
        let mut k = 0;
        src.for_each_block(start, end, |b| {
            vals[k..k + b.len()].copy_from_slice(b);
            k += b.len();
        });
        let mut p = [0.0f32; 4];
        let full = n / 4 * 4;
        for (i, &x) in vals[..full].iter().enumerate() {
            p[i % 4] += x.abs();
        }
        for &x in &vals[full..n] {
            p[0] += x.abs();
        }
        return ((p[0] + p[1]) + p[2]) + p[3];
    }

    let v = n / 8;
    let rows = v / 4;
    let l = level_power(rows);
    let b = 1usize << l;
    let cascade_rows = rows / b * b;
    // Super-blocks of B³ rows start and end with levels 0..2 empty.
    let sb_rows = 1usize << (3 * l);
    let n_sb = rows / sb_rows;
    let sb_len = sb_rows * ROW;

    let totals: Vec<[f32; ROW]> = (0..n_sb)
        .into_par_iter()
        .map(|k| {
            let mut c = Cascade::new(l, sb_rows);
            let s = start + k * sb_len;
            src.for_each_block(s, s + sb_len, |blk| c.feed(blk));
            debug_assert!(c.acc[..3].iter().all(|a| a.iter().all(|&x| x == 0.0)));
            c.acc[3]
        })
        .collect();

    let mut c = Cascade::new(l, cascade_rows);
    for t in &totals {
        for (a, &x) in c.acc[3].iter_mut().zip(t) {
            *a += x;
        }
    }
    c.rows = n_sb * sb_rows;
    let rows_end = start + rows * ROW;
    src.for_each_block(start + n_sb * sb_len, rows_end, |blk| c.feed(blk));

    let mut rest = [0.0f32; ROW];
    let n_rest = end - rows_end;
    let mut k = 0;
    src.for_each_block(rows_end, end, |blk| {
        rest[k..k + blk.len()].copy_from_slice(blk);
        k += blk.len();
    });
    let vec_end = (v - rows * 4) * 8;
    c.finish(&rest[..vec_end], &rest[vec_end..n_rest])
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests;
