//! The matmul and attention kernels of the runtime, chosen once per process at run time in the
//! style of memchr: every instruction-set variant is compiled into the binary, the CPU is probed
//! once (`is_x86_feature_detected!` / `is_aarch64_feature_detected!`) and the chosen [`Kernels`]
//! table is kept in a `OnceLock`.
//!
//! | table | needs | integer dot products |
//! |---|---|---|
//! | `reference` | nothing | the scalar kernels of [`scalar`] |
//! | `avx2` | AVX2, FMA, F16C | `vpmaddubsw` with 16-bit partial sums |
//! | `avx512` | the above + AVX-512 F/BW/VL + VNNI | `vpdpbusd` on 256-bit vectors, 32 registers |
//! | `neon` | NEON (+ the dot-product extension when present) | `sdot` or `smull`/`sadalp` |
//!
//! Every kernel has a scalar twin in the `reference` table and computes **the same bits**:
//! the integer kernels are exact, and the float kernels reproduce the scalar summation order
//! lane for lane (ggml's 32-slot `vec_dot` order, llamafile's 8-lane order, the per-slot
//! accumulation of attention), with fused multiply-adds exactly where the scalar code fuses.
//! So the SIMD forward pass gives bit-identical logits to the scalar reference; the tests in
//! `tests/simd_kernels.rs` check every table this CPU can run against the reference on random
//! shapes.
//!
//! The choice: [`KernelChoice::Auto`] (the best table the CPU supports) unless the environment
//! variable `BITCONV_KERNEL` (`reference`, `auto`, `avx2`, `avx512`, `neon`) or a call to
//! [`init`] / [`force_reference`] made before the first use says otherwise. A session can also
//! take an explicit table ([`crate::runtime::Session::set_kernels`]), which is how benchmarks
//! measure both paths in one process.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::runtime::format::WeightFormat;
pub use crate::runtime::format::{tq2_shared_scale, FloatType};
use scalar::{I8Scale, RopeStyle};

mod multiversion;
mod reference;

pub(crate) use multiversion::multiversion;
pub mod scalar;

#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
mod aarch64;

/// The environment variable that chooses the kernel table when the program does not.
pub const ENV_VAR: &str = "BITCONV_KERNEL";

/// Which kernel table to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// The fastest table this CPU supports.
    #[default]
    Auto,
    /// The scalar reference kernels.
    Reference,
    /// x86-64 with AVX2, FMA and F16C.
    Avx2,
    /// x86-64 with AVX-512 (F, BW, VL) and VNNI, besides AVX2, FMA and F16C.
    Avx512,
    /// aarch64 NEON.
    Neon,
}

impl KernelChoice {
    /// Every choice, in the order of the names accepted by [`FromStr`].
    pub const ALL: [KernelChoice; 5] = [
        KernelChoice::Auto,
        KernelChoice::Reference,
        KernelChoice::Avx2,
        KernelChoice::Avx512,
        KernelChoice::Neon,
    ];

    /// The name used on the command line and in `BITCONV_KERNEL`.
    pub fn name(self) -> &'static str {
        match self {
            KernelChoice::Auto => "auto",
            KernelChoice::Reference => "reference",
            KernelChoice::Avx2 => "avx2",
            KernelChoice::Avx512 => "avx512",
            KernelChoice::Neon => "neon",
        }
    }
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelChoice {
    type Err = KernelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let t = if t == "scalar" { "reference".into() } else { t };
        KernelChoice::ALL
            .into_iter()
            .find(|c| c.name() == t)
            .ok_or_else(|| KernelError::Unknown(s.to_string()))
    }
}

/// Errors of the kernel choice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The name is not one of the choices.
    #[error("unknown kernel {0:?} (expected reference, auto, avx2, avx512 or neon)")]
    Unknown(String),
    /// The table needs instructions this CPU does not have.
    #[error("the {0} kernels need CPU features this machine does not have")]
    Unsupported(KernelChoice),
    /// The process already runs with another table.
    #[error("the kernel table is already chosen ({current}); cannot switch to {wanted}")]
    AlreadyChosen {
        /// The table in use.
        current: &'static str,
        /// The table asked for.
        wanted: &'static str,
    },
}

/// The summation order of a float dot product (see [`scalar`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatOrder {
    /// ggml's `vec_dot` order: 32 slots (four accumulators of eight lanes) with fused
    /// multiply-adds, reduced as [`scalar::reduce32`], the `K mod 32` tail added in f64
    /// ([`scalar::dot_f32_ggml`]).
    Ggml,
    /// llamafile's tinyBLAS order: eight lanes with fused multiply-adds, the tail fused into the
    /// first lanes, reduced as [`scalar::hsum8`] ([`scalar::dot_f32_lanes8`]).
    Lanes8,
}

/// `i2s(w, k, q, n, out)`. Like every kernel type below: `unsafe` because SIMD entries need
/// CPU features (the caller must have detected them); lengths are checked by the kernel.
type I2sFn = unsafe fn(&[u8], usize, &[i8], usize, &mut [i32]);
/// `tq2(w, k, acts, shared, n, out)`.
type Tq2Fn = unsafe fn(&[u8], usize, Q8kActs<'_>, Option<u16>, usize, &mut [f32]);
/// `q8_0(w, k, q, d, n, out)`.
type Q80Fn = unsafe fn(&[u8], usize, &[i8], &[f32], usize, &mut [f32]);
/// `float(order, w, stride, k, x, n, out)`.
type FloatFn = unsafe fn(FloatOrder, &[u8], usize, usize, &[f32], usize, &mut [f32]);
/// `weighted(order, v, stride, p, out, scratch)`.
type WeightedFn = unsafe fn(FloatOrder, &[u8], usize, &[f32], &mut [f32], &mut [f32]);
/// `flash(q, k, v, stride, positions, scale, out)` (one entry per cache type).
type FlashFn = unsafe fn(&[f32], &[u8], &[u8], usize, usize, f32, &mut [f32]);
/// `exp(x)`: `expf` in place.
type ExpFn = unsafe fn(&mut [f32]);
/// `rope(x, table, style, head_dim)`.
type RopeFn = unsafe fn(&mut [f32], &[(f32, f32)], RopeStyle, usize);
/// `quantize_i8s(x, q, rule) -> (scale, Σq)`.
type QuantI8sFn = unsafe fn(&[f32], &mut [i8], I8Scale) -> (f32, i32);
/// `quantize_q8k(x, q, d, bsum)`.
type QuantQ8kFn = unsafe fn(&[f32], &mut [i8], &mut [f32], &mut [i32]);
/// `quantize_q8_0(x, q, d)`.
type QuantQ80Fn = unsafe fn(&[f32], &mut [i8], &mut [f32]);

/// The Q8_K activations of `n` tokens that [`Kernels::tq2_dots`] takes: per token `k` int8
/// values in `q`, `k/256` block scales in `d`, and in `bsum` the sums of every 32 values
/// ([`q8k_bsums`]), tokens one after another.
#[derive(Clone, Copy, Debug)]
pub struct Q8kActs<'a> {
    /// The int8 values.
    pub q: &'a [i8],
    /// One scale per 256 values.
    pub d: &'a [f32],
    /// One sum per 32 values.
    pub bsum: &'a [i32],
}

/// One set of kernels. The function pointers are `unsafe` because the SIMD variants need CPU
/// features; a table is only ever built after those features were detected, which is what
/// makes the safe methods below sound. Every kernel checks its slice lengths itself.
pub struct Kernels {
    name: &'static str,
    choice: KernelChoice,
    i2s: I2sFn,
    tq2: Tq2Fn,
    q8_0: Q80Fn,
    f16: FloatFn,
    f32: FloatFn,
    weighted_f16: WeightedFn,
    weighted_f32: WeightedFn,
    flash_f16: FlashFn,
    flash_f32: FlashFn,
    exp: ExpFn,
    rope: RopeFn,
    quantize_i8s: QuantI8sFn,
    quantize_q8k: QuantQ8kFn,
    quantize_q8_0: QuantQ80Fn,
    /// The tokens of the widest tile of `tq2` (see [`Kernels::token_tile`]).
    tq2_tokens: usize,
}

impl fmt::Debug for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kernels").field("name", &self.name).finish()
    }
}

impl Kernels {
    /// The table's name (`reference`, `avx2`, `avx512`, `neon`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The choice that names this table.
    pub fn choice(&self) -> KernelChoice {
        self.choice
    }

    /// Whether this is the scalar reference table.
    pub fn is_reference(&self) -> bool {
        self.choice == KernelChoice::Reference
    }

    /// The scalar reference table.
    pub fn reference() -> &'static Kernels {
        &reference::TABLE
    }

    /// How many tokens the widest tile of the `format` kernel takes at once: a batch is best
    /// handed over in blocks of a multiple of it, or the last tile of every block runs short
    /// (4 tokens to a kernel of 3-token tiles is a 3-token tile plus a 1-token one). The
    /// results do not depend on it.
    pub fn token_tile(&self, format: WeightFormat) -> usize {
        match format {
            WeightFormat::Tq2 => self.tq2_tokens,
            _ => 4,
        }
    }

    /// Integer dot products of canonical I2_S rows with int8 activations.
    ///
    /// `w` holds `rows` rows of `k/4` bytes (`k % 128 == 0`), `q` holds `n` tokens of `k`
    /// values; `out[r·n + t] = Σ_j c(r, j)·q[t·k + j]` over the raw codes `c ∈ {0..3}`
    /// ([`scalar::dot_i2s_codes`]). Exact.
    pub fn i2s_dots(&self, w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
        // SAFETY: the table exists only if the CPU has the features its kernels need.
        unsafe { (self.i2s)(w, k, q, n, out) }
    }

    /// TQ2_0 rows times Q8_K activations ([`scalar::dot_tq2_q8k`], bit for bit).
    ///
    /// `w` holds `rows` rows of `k/256` blocks of 66 bytes; `acts` the activations of `n`
    /// tokens; `out[r·n + t]`. `shared` is `Some(h)` when every block of `w` has the
    /// scale with f16 bits `h` ([`tq2_shared_scale`]; files converted from BitNet checkpoints
    /// have one absmean scale per tensor): batched kernels then form `d_y·d_x` once per token
    /// and block instead of once per row too. The results are the same bits either way; a
    /// wrong `Some` gives wrong results (checked in debug builds), never undefined behaviour.
    pub fn tq2_dots(
        &self,
        w: &[u8],
        k: usize,
        acts: Q8kActs<'_>,
        shared: Option<u16>,
        n: usize,
        out: &mut [f32],
    ) {
        debug_assert!(
            shared.is_none() || tq2_shared_scale(w) == shared,
            "TQ2_0 rows do not all have the scale promised"
        );
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.tq2)(w, k, acts, shared, n, out) }
    }

    /// Q8_0 rows times Q8_0 activations ([`scalar::dot_q8_0`], bit for bit). Activations
    /// must lie in `[-127, 127]` (what [`scalar::quantize_q8_0`] produces); `out[r·n + t]`.
    pub fn q8_0_dots(&self, w: &[u8], k: usize, q: &[i8], d: &[f32], n: usize, out: &mut [f32]) {
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.q8_0)(w, k, q, d, n, out) }
    }

    /// Float dot products: `rows = out.len() / n` rows of `k` elements of type `ty`, row `r`
    /// starting at byte `r·stride` of `w`, with `n` activation vectors of `k` f32 values;
    /// `out[r·n + t]` in the summation order `order` (bit for bit as
    /// [`scalar::dot_f32_ggml`] / [`scalar::dot_f32_lanes8`] after widening the row).
    #[allow(clippy::too_many_arguments)]
    pub fn float_dots(
        &self,
        order: FloatOrder,
        ty: FloatType,
        w: &[u8],
        stride: usize,
        k: usize,
        x: &[f32],
        n: usize,
        out: &mut [f32],
    ) {
        let f = match ty {
            FloatType::F16 => self.f16,
            FloatType::F32 => self.f32,
        };
        // SAFETY: as in `i2s_dots`.
        unsafe { f(order, w, stride, k, x, n, out) }
    }

    /// Attention's weighted sum of value rows: `out[d] = Σ_j p[j]·v_j[d]` over the rows
    /// `j < p.len()` (row `j` at byte `j·stride` of `v`, `out.len()` elements of type `ty`),
    /// accumulated per slot `j mod S` with fused multiply-adds in increasing `j`, `S = 32`
    /// reduced as [`scalar::reduce32`] ([`FloatOrder::Ggml`]) or `S = 8` reduced as
    /// [`scalar::hsum8`] ([`FloatOrder::Lanes8`]). `scratch` must hold `32·out.len()`
    /// values.
    #[allow(clippy::too_many_arguments)]
    pub fn weighted_sum(
        &self,
        order: FloatOrder,
        ty: FloatType,
        v: &[u8],
        stride: usize,
        p: &[f32],
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        let f = match ty {
            FloatType::F16 => self.weighted_f16,
            FloatType::F32 => self.weighted_f32,
        };
        // SAFETY: as in `i2s_dots`.
        unsafe { f(order, v, stride, p, out, scratch) }
    }

    /// Mainline llama.cpp's CPU flash attention for one query over an F16 cache: `q` (already
    /// rounded to f16 precision, `out.len()` values), key and value rows `j < positions` at
    /// byte `j·stride` of `k` and `v`; see the reference session for the recurrence.
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attention_f16(
        &self,
        q: &[f32],
        k: &[u8],
        v: &[u8],
        stride: usize,
        positions: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.flash_f16)(q, k, v, stride, positions, scale, out) }
    }

    /// The same flash attention over an F32 cache (no roundings: `q` as it is, the value
    /// accumulator in f32), with the key dot products in ggml's 32-slot order.
    #[allow(clippy::too_many_arguments)]
    pub fn flash_attention_f32(
        &self,
        q: &[f32],
        k: &[u8],
        v: &[u8],
        stride: usize,
        positions: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.flash_f32)(q, k, v, stride, positions, scale, out) }
    }
}

impl Kernels {
    /// `x[i] = expf(x[i])`, bit for bit as the C library's `expf` (what `f32::exp` calls), which
    /// ggml's softmax and flash attention call.
    pub fn exp(&self, x: &mut [f32]) {
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.exp)(x) }
    }

    /// Rotary embedding of every head (`head_dim` values each) of one token's `x` with a table
    /// of `n_rot/2` (cos, sin) pairs ([`scalar::rope_apply`], bit for bit: the SIMD
    /// tables only make its fused multiply-adds instructions instead of library calls).
    ///
    /// # Panics
    /// If `x.len()` is not a multiple of `head_dim` or the table rotates more than a head.
    pub fn rope(&self, x: &mut [f32], table: &[(f32, f32)], style: RopeStyle, head_dim: usize) {
        assert!(
            head_dim > 0 && x.len() % head_dim == 0 && 2 * table.len() <= head_dim,
            "rope: {} values, heads of {head_dim}, {} table pairs",
            x.len(),
            table.len()
        );
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.rope)(x, table, style, head_dim) }
    }

    /// bitnet.cpp's int8 activation quantization of one token
    /// ([`scalar::quantize_i8s`], bit for bit): returns the scale and `Σq`.
    pub fn quantize_i8s(&self, x: &[f32], q: &mut [i8]) -> (f32, i32) {
        self.quantize_i8s_with(x, q, I8Scale::Divide)
    }

    /// [`Self::quantize_i8s`] with the scale evaluated as `rule` says
    /// ([`scalar::quantize_i8s_with`], bit for bit).
    pub fn quantize_i8s_with(&self, x: &[f32], q: &mut [i8], rule: I8Scale) -> (f32, i32) {
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.quantize_i8s)(x, q, rule) }
    }

    /// Q8_K quantization ([`scalar::quantize_q8k`], bit for bit) of `x` (a multiple of 256
    /// values) with the sums per 32 values ([`q8k_bsums`]).
    pub fn quantize_q8k(&self, x: &[f32], q: &mut [i8], d: &mut [f32], bsum: &mut [i32]) {
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.quantize_q8k)(x, q, d, bsum) }
    }

    /// Q8_0 quantization ([`scalar::quantize_q8_0`], bit for bit) of `x` (a multiple of 32
    /// values).
    pub fn quantize_q8_0(&self, x: &[f32], q: &mut [i8], d: &mut [f32]) {
        // SAFETY: as in `i2s_dots`.
        unsafe { (self.quantize_q8_0)(x, q, d) }
    }
}

/// Sums of Q8_K activations per 32 values, the `bsum` argument of [`Kernels::tq2_dots`]:
/// `bsum[i] = Σ q[32·i .. 32·i + 32]`.
pub fn q8k_bsums(q: &[i8], bsum: &mut [i32]) {
    assert_eq!(q.len(), 32 * bsum.len(), "q8k_bsums: lengths");
    for (o, c) in bsum.iter_mut().zip(q.chunks_exact(32)) {
        *o = c.iter().map(|&v| v as i32).sum();
    }
}

/// The table for `choice` if this CPU can run it (`Auto`: the best one).
pub fn get(choice: KernelChoice) -> Option<&'static Kernels> {
    match choice {
        KernelChoice::Reference => Some(Kernels::reference()),
        KernelChoice::Auto => Some(best()),
        #[cfg(target_arch = "x86_64")]
        KernelChoice::Avx2 => x86_64::avx2(),
        #[cfg(target_arch = "x86_64")]
        KernelChoice::Avx512 => x86_64::avx512(),
        #[cfg(target_arch = "aarch64")]
        KernelChoice::Neon => aarch64::neon(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Asks the CPU to start loading the first `width` bytes of each of the `rows` rows of `bytes`
/// that start `stride` bytes apart, one hint per 64-byte line, in order (a hint only: no
/// result changes, and nothing happens off x86-64). For reads the hardware prefetchers miss,
/// such as one head's slice of every cached key: the loads then overlap instead of waiting on
/// each other.
pub fn prefetch_rows(bytes: &[u8], stride: usize, rows: usize, width: usize) {
    #[cfg(target_arch = "x86_64")]
    for r in 0..rows {
        let start = r * stride;
        let end = (start + width).min(bytes.len());
        let mut at = start;
        while at < end {
            // SAFETY: `at` is inside `bytes`; a prefetch hint reads nothing architecturally.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    bytes.as_ptr().add(at).cast(),
                )
            };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, stride, rows, width);
}

/// Whether the SIMD tables compute `expf` in vector lanes (x86-64 with AVX2 and FMA, and a C
/// library whose `expf` they reproduce bit for bit, checked once per process) rather than by
/// calling the library. Either way [`Kernels::exp`] gives the library's bits.
pub fn vector_expf() -> bool {
    #[cfg(target_arch = "x86_64")]
    return x86_64::vector_expf();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Every table this CPU can run, the reference first (on aarch64 both NEON variants when the
/// CPU has the dot-product extension).
pub fn available() -> Vec<&'static Kernels> {
    #[allow(unused_mut)]
    let mut v = vec![Kernels::reference()];
    #[cfg(target_arch = "x86_64")]
    v.extend(x86_64::avx2());
    #[cfg(target_arch = "x86_64")]
    v.extend(x86_64::avx512());
    #[cfg(target_arch = "aarch64")]
    v.extend(aarch64::tables());
    v
}

fn best() -> &'static Kernels {
    for c in [KernelChoice::Avx512, KernelChoice::Avx2, KernelChoice::Neon] {
        if let Some(k) = get(c) {
            return k;
        }
    }
    Kernels::reference()
}

static SELECTED: OnceLock<&'static Kernels> = OnceLock::new();

/// The process-wide table: on first use, the one named by `BITCONV_KERNEL` if set (an unknown
/// or unsupported name falls back to `auto` with a warning on stderr), else the best one.
pub fn kernels() -> &'static Kernels {
    SELECTED.get_or_init(|| match std::env::var(ENV_VAR) {
        Ok(v) if !v.trim().is_empty() => match v.parse::<KernelChoice>() {
            Ok(c) => get(c).unwrap_or_else(|| {
                eprintln!(
                    "bitconv: warning: {ENV_VAR}={v}: {}; using auto",
                    KernelError::Unsupported(c)
                );
                best()
            }),
            Err(e) => {
                eprintln!("bitconv: warning: {ENV_VAR}: {e}; using auto");
                best()
            }
        },
        _ => best(),
    })
}

/// Chooses the process-wide table (a command-line `--kernel` flag, which takes precedence over
/// `BITCONV_KERNEL`). Call it before the first forward pass; choosing the table already in use
/// again is fine, switching afterwards is an error.
pub fn init(choice: KernelChoice) -> Result<&'static Kernels, KernelError> {
    let want = get(choice).ok_or(KernelError::Unsupported(choice))?;
    let got = *SELECTED.get_or_init(|| want);
    if std::ptr::eq(got, want) {
        Ok(got)
    } else {
        Err(KernelError::AlreadyChosen {
            current: got.name,
            wanted: want.name,
        })
    }
}

/// Forces the scalar reference kernels for the whole process (`init(KernelChoice::Reference)`).
pub fn force_reference() -> Result<&'static Kernels, KernelError> {
    init(KernelChoice::Reference)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in KernelChoice::ALL {
            assert_eq!(c.name().parse::<KernelChoice>().unwrap(), c);
        }
        assert_eq!(
            "Scalar".parse::<KernelChoice>().unwrap(),
            KernelChoice::Reference
        );
        assert!("sse9".parse::<KernelChoice>().is_err());
    }

    #[test]
    fn reference_is_always_available() {
        let a = available();
        assert_eq!(a[0].name(), "reference");
        assert!(get(KernelChoice::Auto).is_some());
    }
}
