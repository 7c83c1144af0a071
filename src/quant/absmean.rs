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
mod tests {
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
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 11
        }
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
                SrcDtype::F16 => {
                    out.extend_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes())
                }
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
            127, 128, 129, 511, 512, 513, 4095, 4096, 4097, 16383, 32767, 32768, 32769, 65535,
            65536, 65537, 196_608, 131_072, 131_073, 262_144, 393_247,
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
}
