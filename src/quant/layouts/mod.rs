//! Byte layouts of ternary (1.58-bit) weights and of the small-block formats
//! that sit next to them in a GGUF file.
//!
//! # Conventions shared by every submodule
//!
//! * A weight matrix has shape `M × K`: `M` output rows (Hugging Face
//!   `out_features`, GGUF `ne1`) and `K` input columns (`in_features`, GGUF
//!   `ne0`). GGUF tensor-info dims are therefore `[K, M]`.
//! * Ternary codes are `i8` values in `{-1, 0, 1}`, stored row-major
//!   (`codes[row * K + col]`). Every packer checks the codes and reports the
//!   first value outside that set as [`LayoutError::InvalidCode`].
//! * Functions taking an `out: &mut [u8]` slice never allocate; the slice must
//!   have exactly the layout's byte size and is fully overwritten (padding
//!   included). On error the contents of `out` are unspecified.
//! * Sizes are the tensor's *own* bytes, as `ggml_nbytes` counts them. GGUF
//!   alignment padding and the hidden 32-byte scale slot that follows a TL1/TL2
//!   tensor belong to the GGUF writer; [`scale_slot`] builds that slot.
//!
//! # Submodules
//!
//! | module | format | source of truth |
//! |---|---|---|
//! | [`i2s`] | I2_S (type 36), 128-value / 32-byte interleave + f32 scale | bitnet.cpp fork, x86 `ACT_PARALLEL` layout |
//! | [`tl1`] | TL1 (type 38), pair-index nibbles in BM/BK/bm tiles | bitnet.cpp converter |
//! | [`tl2`] | TL2 (type 39/42), triple magnitudes + sign words + pair part | bitnet.cpp converter |
//! | [`tq1_0`] | TQ1_0 (type 34), 256-value blocks of base-3 bytes, 54 bytes | mainline ggml reference quantizer |
//! | [`tq2_0`] | TQ2_0 (type 35), 256-value blocks of 2-bit codes, 66 bytes | mainline ggml reference quantizer |
//! | [`q8_0`] | Q8_0 (type 8), 32-value blocks, f16 scale + 32 × i8 | ggml reference quantizer |
//! | [`codec`] | every ternary layout above as one value, for code that treats them alike | these modules |
//! | [`params`] | BM/BK/bm kernel parameters, `kernel_config.ini` | bitnet.cpp `setup_env.py` / codegen |

pub mod codec;
pub mod i2s;
pub mod params;
pub mod q8_0;
pub mod tl1;
pub mod tl2;
pub mod tq1_0;
pub mod tq2_0;

pub use params::{KernelEntry, TlLayout, TlParams};

/// The block geometry of a layout whose rows are whole blocks (Q8_0, TQ1_0, TQ2_0, I2_S),
/// defined once in the layout's own module, the way candle's `GgmlType` carries its block size
/// and type size. The GGUF type table (`gguf::types`), the converter's plan, the dummy writer
/// and the runtime take these numbers from here.
///
/// TL1 and TL2 have no fixed block (their tiles follow the kernel parameters); their modules
/// own `nbytes(m, k)` instead.
pub trait BlockGeometry {
    /// The type's name as ggml spells it (`"TQ2_0"`).
    const NAME: &'static str;
    /// The GGML type id written in tensor-info records.
    const TYPE_ID: u32;
    /// Values per block.
    const BLOCK_VALUES: usize;
    /// Bytes per block.
    const BLOCK_BYTES: usize;

    /// Bytes of `n` values stored as whole blocks (`n` a multiple of
    /// [`BLOCK_VALUES`](Self::BLOCK_VALUES)): `n / BLOCK_VALUES · BLOCK_BYTES`.
    fn blocks_bytes(n: usize) -> usize {
        n / Self::BLOCK_VALUES * Self::BLOCK_BYTES
    }

    /// Bytes of one row of `k` values (`k` a multiple of
    /// [`BLOCK_VALUES`](Self::BLOCK_VALUES)).
    fn row_bytes(k: usize) -> usize {
        Self::blocks_bytes(k)
    }

    /// Whether rows of `k` values are whole blocks.
    fn holds_row(k: usize) -> bool {
        k % Self::BLOCK_VALUES == 0
    }

    /// Checks that `n` values fill whole blocks: an [`LayoutError::InputLength`] naming the
    /// type otherwise.
    fn check_values(n: usize) -> Result<()> {
        if n % Self::BLOCK_VALUES != 0 {
            return Err(LayoutError::InputLength {
                what: format!(
                    "{} needs a multiple of {} values (each row's K % {} == 0)",
                    Self::NAME,
                    Self::BLOCK_VALUES,
                    Self::BLOCK_VALUES
                ),
                expected: n.div_ceil(Self::BLOCK_VALUES) * Self::BLOCK_VALUES,
                actual: n,
            });
        }
        Ok(())
    }

    /// What the byte size of `n` values is derived from, for error messages
    /// (`"TQ2_0 of 512 values (n/256·66)"`).
    fn size_note(n: usize) -> String {
        format!(
            "{} of {n} values (n/{}·{})",
            Self::NAME,
            Self::BLOCK_VALUES,
            Self::BLOCK_BYTES
        )
    }

    /// Checks that `n` values fill whole blocks and that `out` holds exactly their bytes.
    fn check_out(n: usize, out: &[u8]) -> Result<()> {
        Self::check_values(n)?;
        check_out_len(|| Self::size_note(n), out, Self::blocks_bytes(n))
    }

    /// Checks that `n` values fill whole blocks and that `data` holds at least their bytes.
    fn check_data(data: &[u8], n: usize) -> Result<()> {
        Self::check_values(n)?;
        check_data_len(|| Self::size_note(n), data, Self::blocks_bytes(n))
    }

    /// Encodes `values` (whole blocks) into `out` (exactly their bytes), one block at a time
    /// with `encode(block_values, block_bytes)`.
    fn quantize_blocks(
        values: &[f32],
        out: &mut [u8],
        encode: impl Fn(&[f32], &mut [u8]),
    ) -> Result<()> {
        Self::check_out(values.len(), out)?;
        for (x, o) in values
            .chunks_exact(Self::BLOCK_VALUES)
            .zip(out.chunks_exact_mut(Self::BLOCK_BYTES))
        {
            encode(x, o);
        }
        Ok(())
    }

    /// Decodes `n` values (whole blocks) from `data` (at least their bytes), one block at a
    /// time with `decode(block_bytes, block_values)`.
    fn dequantize_blocks(
        data: &[u8],
        n: usize,
        decode: impl Fn(&[u8], &mut [f32]),
    ) -> Result<Vec<f32>> {
        Self::check_data(data, n)?;
        let mut out = vec![0.0f32; n];
        for (blk, y) in data
            .chunks_exact(Self::BLOCK_BYTES)
            .zip(out.chunks_exact_mut(Self::BLOCK_VALUES))
        {
            decode(blk, y);
        }
        Ok(out)
    }
}

/// The geometry of a block layout and the module-level names that predate
/// [`BlockGeometry`] (`TYPE_ID`, `BLOCK_VALUES`, `BLOCK_BYTES`, `nbytes`), which read it.
macro_rules! block_layout {
    ($ty:ident, $name:literal, id $id:literal, $values:literal values ($qk:literal), $bytes:literal bytes) => {
        #[doc = concat!("The ", $name, " layout's block geometry.")]
        #[derive(Clone, Copy, Debug)]
        pub struct $ty;

        impl BlockGeometry for $ty {
            const NAME: &'static str = $name;
            const TYPE_ID: u32 = $id;
            const BLOCK_VALUES: usize = $values;
            const BLOCK_BYTES: usize = $bytes;
        }

        /// GGML type id.
        pub const TYPE_ID: u32 = $ty::TYPE_ID;
        #[doc = concat!("Values per block (`", $qk, "`).")]
        pub const BLOCK_VALUES: usize = $ty::BLOCK_VALUES;
        /// Bytes per block.
        pub const BLOCK_BYTES: usize = $ty::BLOCK_BYTES;

        #[doc = concat!(
                    "Bytes of `n` values (`n` a multiple of ", stringify!($values), "): `n/",
                    stringify!($values), " · ", stringify!($bytes), "`."
                )]
        pub fn nbytes(n: usize) -> usize {
            $ty::blocks_bytes(n)
        }
    };
}
pub(crate) use block_layout;

/// Errors of the layout functions. Every variant names the shape, parameter
/// or position that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The code or value slice does not hold exactly `M·K` (or the expected
    /// number of) elements.
    #[error("input has {actual} elements, expected {expected} ({what})")]
    InputLength {
        /// What the length was derived from, e.g. `"M×K = 256×768"`.
        what: String,
        /// Required element count.
        expected: usize,
        /// Element count received.
        actual: usize,
    },
    /// The output slice has the wrong size.
    #[error("output buffer has {actual} bytes, expected {expected} ({what})")]
    OutputLength {
        /// What the size was derived from.
        what: String,
        /// Required byte count.
        expected: usize,
        /// Byte count received.
        actual: usize,
    },
    /// The packed data to decode is shorter than the layout needs.
    #[error("packed data has {actual} bytes, need at least {expected} ({what})")]
    DataTooShort {
        /// What the size was derived from.
        what: String,
        /// Minimum byte count.
        expected: usize,
        /// Byte count received.
        actual: usize,
    },
    /// A ternary code is not in `{-1, 0, 1}`.
    #[error("ternary code {value} at index {index} is not -1, 0 or 1")]
    InvalidCode {
        /// Row-major element index.
        index: usize,
        /// The offending value.
        value: i8,
    },
    /// Packed bytes hold a value the layout can never produce.
    #[error("invalid packed data at byte {offset}: {reason}")]
    InvalidData {
        /// Byte offset inside the tensor data.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The matrix shape cannot be stored in this layout.
    #[error("shape M={m} K={k} is not valid for {layout}: {reason}")]
    InvalidShape {
        /// Layout name (`"I2_S"`, `"TL2"`, …).
        layout: &'static str,
        /// Output rows.
        m: usize,
        /// Input columns.
        k: usize,
        /// Which constraint fails.
        reason: String,
    },
    /// The kernel parameters do not fit the shape.
    #[error("kernel parameters {params} are not valid for {layout} shape M={m} K={k}: {reason}")]
    InvalidParams {
        /// Layout name (`"TL1"` or `"TL2"`).
        layout: &'static str,
        /// Output rows.
        m: usize,
        /// Input columns.
        k: usize,
        /// The rejected parameters.
        params: TlParams,
        /// Which constraint fails.
        reason: String,
    },
    /// No valid kernel parameters exist for a shape.
    #[error("no {layout} kernel parameters exist for shape M={m} K={k}: {reason}")]
    NoParams {
        /// Layout name.
        layout: &'static str,
        /// Output rows.
        m: usize,
        /// Input columns.
        k: usize,
        /// Why every candidate was rejected.
        reason: String,
    },
    /// A `kernel_config.ini` text could not be parsed.
    #[error("kernel config line {line}: {message}")]
    Config {
        /// 1-based line number (the line after the last one for errors found
        /// at end of input).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, LayoutError>;

/// Size of the hidden scale slot a GGUF writer places after every TL1/TL2
/// tensor (f32 scale, then 28 zero bytes), and of the I2_S tail.
pub const SCALE_SLOT_BYTES: usize = 32;

/// Rounds `n` up to a multiple of 32 (GGUF alignment in every reference file).
pub const fn pad32(n: usize) -> usize {
    n.div_ceil(32) * 32
}

/// The 32-byte hidden scale slot of a TL1/TL2 tensor: `scale` as
/// little-endian f32 followed by 28 zero bytes. The writer places it at
/// `pad32(nbytes)` after the tensor's start and advances the running offset by
/// `pad32(nbytes) + 32`.
pub fn scale_slot(scale: f32) -> [u8; SCALE_SLOT_BYTES] {
    let mut slot = [0u8; SCALE_SLOT_BYTES];
    slot[..4].copy_from_slice(&scale.to_le_bytes());
    slot
}

/// Ternarizes fake-quantized weights the way every reference packer prepares
/// them: `0` when `|x| < 1e-6`, otherwise the sign of `x`. NaN maps to `0`.
///
/// `out` must have the same length as `values`.
pub fn sign_codes(values: &[f32], out: &mut [i8]) -> Result<()> {
    if out.len() != values.len() {
        return Err(LayoutError::OutputLength {
            what: "one code per value".into(),
            expected: values.len(),
            actual: out.len(),
        });
    }
    for (o, &x) in out.iter_mut().zip(values) {
        *o = if x.abs() < 1e-6 || x.is_nan() {
            0
        } else if x > 0.0 {
            1
        } else {
            -1
        };
    }
    Ok(())
}

/// The block loop of TQ1_0's and TQ2_0's `pack_ternary_into` (after their length checks):
/// ternary `codes` sharing one `scale`, in blocks of 256 values and `block_bytes` bytes. For a
/// positive normal scale (with a normal reciprocal) each block is `encode(codes, d)` with
/// `d = scale` (`0` for an all-zero block), which is what the quantizer gives for `c·scale`
/// without computing or rounding the values; any other scale goes through `quantize` on the
/// values themselves.
pub(crate) fn pack_ternary_blocks(
    codes: &[i8],
    scale: f32,
    out: &mut [u8],
    block_bytes: usize,
    encode: impl Fn(&[i8], f32, &mut [u8]),
    quantize: impl Fn(&[f32], &mut [u8]),
) -> Result<()> {
    const BLOCK: usize = 256;
    check_codes(codes)?;
    let exact = scale > 0.0 && scale.is_normal() && (1.0 / scale).is_normal();
    let mut vals = [0f32; BLOCK];
    for (c, o) in codes
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(block_bytes))
    {
        if exact {
            let d = if c.iter().any(|&v| v != 0) {
                scale
            } else {
                0.0
            };
            encode(c, d, o);
        } else {
            for (v, &t) in vals.iter_mut().zip(c) {
                *v = t as f32 * scale;
            }
            quantize(&vals, o);
        }
    }
    Ok(())
}

/// The codes `clamp(round_away(x·id) + 1, 0, 2)` of a TQ1_0 / TQ2_0 block's values, as the
/// reference quantizers compute them, into `t`.
///
/// Without a rounding call: for `y = x·id`, `round_away(y)` is at least 1 exactly when
/// `y ≥ 0.5` and at most −1 exactly when `y ≤ −0.5`, and the clamp keeps only those two facts;
/// a NaN `y` (compares false) gives 1 as `NaN as i32 + 1` does, an infinite one 2 or 0 as the
/// saturating conversion does. The comparison form vectorizes.
#[inline]
pub(crate) fn block_trits(x: &[f32], id: f32, t: &mut [u8]) {
    for (t, &x) in t.iter_mut().zip(x) {
        let y = x * id;
        *t = 1 + u8::from(y >= 0.5) - u8::from(y <= -0.5);
    }
}

/// The codes `c + 1` of a block of checked ternary codes `c ∈ {−1, 0, 1}` (256 of them).
#[inline]
pub(crate) fn code_trits(c: &[i8]) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (t, &c) in t.iter_mut().zip(c) {
        *t = (c + 1) as u8;
    }
    t
}

/// The f16 scale `d` that ends a TQ1_0 or TQ2_0 block, widened to f32.
pub(crate) fn tail_scale(blk: &[u8]) -> f32 {
    let n = blk.len();
    half::f16::from_le_bytes([blk[n - 2], blk[n - 1]]).to_f32()
}

/// The ternary codes of `n` values (whole blocks of the ternary block layout `G`) and the
/// blocks' scales ([`tail_scale`]): `decode(block_index, block_bytes, block_codes)` fills each
/// block's codes.
pub(crate) fn ternary_block_codes<G: BlockGeometry>(
    data: &[u8],
    n: usize,
    mut decode: impl FnMut(usize, &[u8], &mut [i8]),
) -> Result<(Vec<i8>, Vec<f32>)> {
    G::check_data(data, n)?;
    let mut codes = vec![0i8; n];
    let mut scales = Vec::with_capacity(n / G::BLOCK_VALUES);
    for (b, (blk, c)) in data
        .chunks_exact(G::BLOCK_BYTES)
        .zip(codes.chunks_exact_mut(G::BLOCK_VALUES))
        .enumerate()
    {
        scales.push(tail_scale(blk));
        decode(b, blk, c);
    }
    Ok((codes, scales))
}

/// Checks that every code is in `{-1, 0, 1}`; reports the first one that is
/// not.
#[inline]
pub fn check_codes(codes: &[i8]) -> Result<()> {
    // Branch-free scan first, locate only on failure.
    let bad = codes
        .iter()
        .fold(false, |acc, &c| acc | ((c as u8).wrapping_add(1) > 2));
    if !bad {
        return Ok(());
    }
    let (index, &value) = codes
        .iter()
        .enumerate()
        .find(|(_, &c)| !(-1..=1).contains(&c))
        .expect("a bad code was seen");
    Err(LayoutError::InvalidCode { index, value })
}

/// `m * k`, or an [`LayoutError::InvalidShape`] when it overflows.
pub(crate) fn checked_n(layout: &'static str, m: usize, k: usize) -> Result<usize> {
    m.checked_mul(k).ok_or_else(|| LayoutError::InvalidShape {
        layout,
        m,
        k,
        reason: "M·K overflows usize".into(),
    })
}

/// Checks that an `M × K` matrix can be tiled at all: both dimensions positive and `M·K` within
/// `usize`.
pub(crate) fn check_tile_shape(layout: &'static str, m: usize, k: usize) -> Result<()> {
    if m == 0 || k == 0 {
        return Err(LayoutError::InvalidShape {
            layout,
            m,
            k,
            reason: "M and K must be positive".into(),
        });
    }
    checked_n(layout, m, k).map(|_| ())
}

/// The [`LayoutError::InvalidParams`] of `params` for an `M × K` matrix, given its reason.
pub(crate) fn invalid_params(
    layout: &'static str,
    m: usize,
    k: usize,
    params: &TlParams,
) -> impl Fn(String) -> LayoutError {
    let params = *params;
    move |reason| LayoutError::InvalidParams {
        layout,
        m,
        k,
        params,
        reason,
    }
}

/// Checks `codes.len() == m * k` (with overflow detection).
pub(crate) fn check_codes_len(
    layout: &'static str,
    codes: &[i8],
    m: usize,
    k: usize,
) -> Result<()> {
    let n = checked_n(layout, m, k)?;
    if codes.len() != n {
        return Err(LayoutError::InputLength {
            what: format!("{layout} codes, M×K = {m}×{k}"),
            expected: n,
            actual: codes.len(),
        });
    }
    Ok(())
}

/// Checks that `out.len() == expected`.
pub(crate) fn check_out_len(
    what: impl FnOnce() -> String,
    out: &[u8],
    expected: usize,
) -> Result<()> {
    if out.len() != expected {
        return Err(LayoutError::OutputLength {
            what: what(),
            expected,
            actual: out.len(),
        });
    }
    Ok(())
}

/// Checks that `data.len() >= expected`.
pub(crate) fn check_data_len(
    what: impl FnOnce() -> String,
    data: &[u8],
    expected: usize,
) -> Result<()> {
    if data.len() < expected {
        return Err(LayoutError::DataTooShort {
            what: what(),
            expected,
            actual: data.len(),
        });
    }
    Ok(())
}

/// Round half away from zero, as C `roundf`/`lroundf` and gguf-py's
/// `np_roundf` do (Rust's `f32::round` has the same definition).
#[inline]
pub(crate) fn round_away(x: f32) -> f32 {
    x.round()
}

/// Tests shared by the ternary block layouts (TQ1_0, TQ2_0).
#[cfg(test)]
pub(crate) mod ternary_tests {
    use super::Result;

    /// A layout's `codes`: the codes and the block scales.
    type CodesFn = fn(&[u8], usize) -> Result<(Vec<i8>, Vec<f32>)>;

    /// A ternary block layout's entry points.
    pub(crate) struct Layout {
        pub nbytes: fn(usize) -> usize,
        pub quantize_into: fn(&[f32], &mut [u8]) -> Result<()>,
        pub pack_ternary_into: fn(&[i8], f32, &mut [u8]) -> Result<()>,
        pub codes: CodesFn,
    }

    /// Packing `codes` (a multiple of 256) with a scale gives the bytes of quantizing
    /// `code·scale`, for ordinary, tiny, huge and bad scales; codes outside −1..1 and a short
    /// output are errors.
    pub(crate) fn packing_equals_quantizing(l: &Layout, codes: &[i8]) {
        for scale in [
            0.05,
            0.1234,
            1.0,
            3e-38,
            1e-40,
            3e38,
            f32::MAX,
            0.0,
            -0.5,
            f32::NAN,
        ] {
            let vals: Vec<f32> = codes.iter().map(|&c| c as f32 * scale).collect();
            let mut want = vec![0u8; (l.nbytes)(codes.len())];
            (l.quantize_into)(&vals, &mut want).unwrap();
            let mut got = vec![0xAAu8; (l.nbytes)(codes.len())];
            (l.pack_ternary_into)(codes, scale, &mut got).unwrap();
            assert_eq!(got, want, "scale {scale}");
        }
        let block = (l.nbytes)(256);
        assert!((l.pack_ternary_into)(&[2i8; 256], 1.0, &mut vec![0u8; block]).is_err());
        assert!((l.pack_ternary_into)(&[0i8; 256], 1.0, &mut vec![0u8; block - 1]).is_err());
    }

    /// Blocks of 256 values that exercise every path of a block quantizer: ordinary values,
    /// fake-quantized ones (`±s`, `±0`), exact ties at `±d/2`, values next to them, all zeros,
    /// subnormal and huge maxima, infinities and NaNs at various places.
    pub(crate) fn hard_blocks() -> Vec<f32> {
        let mut rng = crate::test_rng::Rng::new(0x7e57);
        let mut v = Vec::new();
        for b in 0..64 {
            let mut blk: Vec<f32> = (0..256).map(|_| rng.normal() * 0.02).collect();
            match b % 16 {
                0 => blk.iter_mut().for_each(|x| *x = 0.0),
                1 => {
                    // fake-quantized, with negative zeros
                    for x in &mut blk {
                        *x = match rng.next() % 4 {
                            0 => 0.037,
                            1 => -0.037,
                            2 => 0.0,
                            _ => -0.0,
                        };
                    }
                }
                2 => {
                    // ties at ±d/2 and their neighbours
                    blk[0] = 2.0;
                    for (i, x) in blk.iter_mut().enumerate().skip(1) {
                        let t = [1.0f32, -1.0, 3.0, -3.0][i % 4];
                        *x = match i % 3 {
                            0 => t,
                            1 => f32::from_bits(t.to_bits() + 1),
                            _ => f32::from_bits(t.to_bits() - 1),
                        };
                    }
                }
                3 => blk.iter_mut().for_each(|x| *x *= 1e-39),
                4 => blk.iter_mut().for_each(|x| *x *= 1e38),
                5 => blk[(rng.next() % 256) as usize] = f32::NAN,
                6 => blk[(rng.next() % 256) as usize] = f32::INFINITY,
                7 => blk[(rng.next() % 256) as usize] = f32::NEG_INFINITY,
                8 => {
                    blk[3] = f32::NAN;
                    blk[200] = 5.0;
                    blk[201] = f32::NAN;
                }
                9 => blk[255] = -f32::MAX,
                10 => blk.iter_mut().for_each(|x| *x = f32::NAN),
                11 => blk
                    .iter_mut()
                    .for_each(|x| *x = f32::from_bits(rng.next() as u32)),
                _ => {}
            }
            v.extend(blk);
        }
        v
    }

    /// The layout's `quantize_into` gives, block for block, the bytes of `reference` (the
    /// scalar quantizer it replaced) on [`hard_blocks`].
    pub(crate) fn quantize_matches_reference(l: &Layout, reference: fn(&[f32], &mut [u8])) {
        let vals = hard_blocks();
        let mut got = vec![0u8; (l.nbytes)(vals.len())];
        (l.quantize_into)(&vals, &mut got).unwrap();
        let block = (l.nbytes)(256);
        for (i, (x, o)) in vals.chunks(256).zip(got.chunks(block)).enumerate() {
            let mut want = vec![0u8; block];
            reference(x, &mut want);
            assert_eq!(o, &want[..], "block {i}");
        }
    }

    /// A block whose largest magnitude is subnormal (`1/max` is infinite: `±x·id = ±inf`,
    /// `0·id = NaN`) still keeps the signs of its values.
    pub(crate) fn subnormal_block_maximum_keeps_signs(l: &Layout) {
        let mut vals = vec![0.0f32; 256];
        vals[0] = 1e-40;
        vals[1] = -1e-40;
        let mut out = vec![0u8; (l.nbytes)(256)];
        (l.quantize_into)(&vals, &mut out).unwrap();
        let (c, _) = (l.codes)(&out, 256).unwrap();
        assert_eq!(&c[..3], &[1, -1, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad32_values() {
        assert_eq!(pad32(0), 0);
        assert_eq!(pad32(1), 32);
        assert_eq!(pad32(32), 32);
        assert_eq!(pad32(43690), 43712);
    }

    #[test]
    fn scale_slot_layout() {
        let s = scale_slot(0.5);
        assert_eq!(&s[..4], &0.5f32.to_le_bytes());
        assert!(s[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn sign_codes_threshold() {
        let v = [0.0, 1e-7, -1e-7, 1e-6, -1e-6, 0.3, -2.0, f32::NAN];
        let mut c = [9i8; 8];
        sign_codes(&v, &mut c).unwrap();
        assert_eq!(c, [0, 0, 0, 1, -1, 1, -1, 0]);
        assert!(sign_codes(&v, &mut [0i8; 3]).is_err());
    }

    #[test]
    fn check_codes_reports_first_bad() {
        assert!(check_codes(&[-1, 0, 1, 1]).is_ok());
        assert_eq!(
            check_codes(&[0, 1, 2, -2]),
            Err(LayoutError::InvalidCode { index: 2, value: 2 })
        );
        assert_eq!(
            check_codes(&[0, i8::MIN]),
            Err(LayoutError::InvalidCode {
                index: 1,
                value: i8::MIN
            })
        );
    }
}
