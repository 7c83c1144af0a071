//! The ternary layouts as values: what the converter, the dummy generator and the runtime's
//! loader need from a packed ternary type, so that code handling every ternary type alike
//! dispatches on one [`TernaryCodec`] (from `GgmlType::ternary_codec`) instead of naming the
//! types. A new layout supplies its entry here through its own module's functions; code that
//! has a faster path for one type (the dummy generator streams I2_S rows and TL tiles, the
//! runtime reads I2_S and TQ2_0 in place) keeps it, and every other type takes the generic
//! path.

use rayon::prelude::*;

use super::{
    check_out_len, i2s, pad32, scale_slot, tl1, tl2, tq1_0, tq2_0, BlockGeometry, LayoutError,
    Result, TlLayout, TlParams, SCALE_SLOT_BYTES,
};

/// How a packed ternary type stores a matrix.
#[derive(Clone, Copy, Debug)]
pub enum TernaryCodec {
    /// Rows of whole blocks, each block with its own scale (TQ1_0, TQ2_0).
    Blocks(BlockCodec),
    /// The whole matrix in one packed body, then one scale for the tensor (I2_S, TL1, TL2).
    Whole(WholeCodec),
}

/// Codes and one scale per block.
pub type BlockCodes = (Vec<i8>, Vec<f32>);

/// A layout of rows of whole blocks, each with its own scale.
#[derive(Clone, Copy, Debug)]
pub struct BlockCodec {
    /// Values per block.
    pub block_values: usize,
    /// Bytes per block.
    pub block_bytes: usize,
    /// Quantizes values (whole blocks) as the reference quantizer does: each block scaled by
    /// its largest magnitude.
    pub quantize_into: fn(&[f32], &mut [u8]) -> Result<()>,
    /// Packs ternary codes sharing one scale: the bytes `quantize_into` gives for `code·scale`.
    pub pack_ternary_into: fn(&[i8], f32, &mut [u8]) -> Result<()>,
    /// The codes of `n` values and the scale of each block.
    pub codes: fn(&[u8], usize) -> Result<BlockCodes>,
}

/// Packs `M × K` codes (row-major) and the tensor's scale into the whole tensor's bytes, with
/// kernel parameters for a TL layout.
pub type PackWhole = fn(&[i8], usize, usize, Option<&TlParams>, f32, &mut [u8]) -> Result<()>;

/// Decodes the `M × K` codes of a whole tensor, with kernel parameters for a TL layout.
pub type UnpackWhole = fn(&[u8], usize, usize, Option<&TlParams>) -> Result<Vec<i8>>;

/// A layout that packs the whole `M × K` matrix and stores one scale after it.
#[derive(Clone, Copy, Debug)]
pub struct WholeCodec {
    /// The lookup-table kernel layout, for a type that needs kernel parameters.
    pub tl: Option<TlLayout>,
    /// Packs `M × K` codes (row-major) and the tensor's scale into `out`, the whole tensor as
    /// the type table sizes it.
    pub pack_into: PackWhole,
    /// Decodes the `M × K` codes (the scale is read from the file by the type table's
    /// `scale_offset`).
    pub unpack: UnpackWhole,
}

/// TQ1_0.
pub const TQ1_0: TernaryCodec = TernaryCodec::Blocks(BlockCodec {
    block_values: tq1_0::Tq1_0::BLOCK_VALUES,
    block_bytes: tq1_0::Tq1_0::BLOCK_BYTES,
    quantize_into: tq1_0::quantize_into,
    pack_ternary_into: tq1_0::pack_ternary_into,
    codes: tq1_0::codes,
});

/// TQ2_0.
pub const TQ2_0: TernaryCodec = TernaryCodec::Blocks(BlockCodec {
    block_values: tq2_0::Tq2_0::BLOCK_VALUES,
    block_bytes: tq2_0::Tq2_0::BLOCK_BYTES,
    quantize_into: tq2_0::quantize_into,
    pack_ternary_into: tq2_0::pack_ternary_into,
    codes: tq2_0::codes,
});

/// I2_S.
pub const I2_S: TernaryCodec = TernaryCodec::Whole(WholeCodec {
    tl: None,
    pack_into: i2s_pack,
    unpack: i2s_unpack,
});

/// TL1.
pub const TL1: TernaryCodec = TernaryCodec::Whole(WholeCodec {
    tl: Some(TlLayout::Tl1),
    pack_into: tl_pack::<1>,
    unpack: tl_unpack::<1>,
});

/// TL2.
pub const TL2: TernaryCodec = TernaryCodec::Whole(WholeCodec {
    tl: Some(TlLayout::Tl2),
    pack_into: tl_pack::<2>,
    unpack: tl_unpack::<2>,
});

impl TernaryCodec {
    /// The lookup-table layout of a type that needs kernel parameters.
    pub fn tl(&self) -> Option<TlLayout> {
        match self {
            TernaryCodec::Whole(w) => w.tl,
            TernaryCodec::Blocks(_) => None,
        }
    }
}

/// I2_S: whole 128-value blocks in parallel (each worker gets a multiple of 128 codes; the
/// converter only writes I2_S where `M·K` is a multiple of 128), then the tail with the scale.
fn i2s_pack(
    codes: &[i8],
    m: usize,
    k: usize,
    _tl: Option<&TlParams>,
    scale: f32,
    out: &mut [u8],
) -> Result<()> {
    let n = m * k;
    if codes.len() != n || n % i2s::BLOCK_VALUES != 0 {
        // The serial packer handles (and reports) every other case.
        return i2s::pack_into(codes, scale, out);
    }
    check_out_len(
        || format!("I2_S tensor of {n} values (n/4 + 32)"),
        out,
        i2s::nbytes(m, k),
    )?;
    let chunk = i2s::BLOCK_VALUES * 1024;
    out[..n / 4]
        .par_chunks_mut(chunk / 4)
        .zip(codes.par_chunks(chunk))
        .try_for_each(|(o, c)| i2s::pack_rows(c, o))?;
    i2s::write_tail(out, n, scale)
}

fn i2s_unpack(data: &[u8], m: usize, k: usize, _tl: Option<&TlParams>) -> Result<Vec<i8>> {
    i2s::unpack(data, m, k).map(|(codes, _)| codes)
}

fn tl_params<'p>(
    layout: &'static str,
    m: usize,
    k: usize,
    tl: Option<&'p TlParams>,
) -> Result<&'p TlParams> {
    tl.ok_or_else(|| LayoutError::InvalidShape {
        layout,
        m,
        k,
        reason: "no kernel parameters given".into(),
    })
}

/// TL1 (`L = 1`) or TL2 (`L = 2`): the packed body, zeros to 32 bytes, the 32-byte scale slot.
fn tl_pack<const L: u8>(
    codes: &[i8],
    m: usize,
    k: usize,
    tl: Option<&TlParams>,
    scale: f32,
    out: &mut [u8],
) -> Result<()> {
    let (name, raw) = if L == 1 {
        ("TL1", tl1::nbytes(m, k))
    } else {
        ("TL2", tl2::nbytes(m, k)?)
    };
    let p = tl_params(name, m, k, tl)?;
    let slot = pad32(raw);
    check_out_len(
        || format!("{name} {m}×{k} with its scale slot"),
        out,
        slot + SCALE_SLOT_BYTES,
    )?;
    if L == 1 {
        tl1::pack_into(codes, m, k, p, &mut out[..raw])?;
    } else {
        tl2::pack_into(codes, m, k, p, &mut out[..raw])?;
    }
    out[raw..slot].fill(0);
    out[slot..].copy_from_slice(&scale_slot(scale));
    Ok(())
}

fn tl_unpack<const L: u8>(
    data: &[u8],
    m: usize,
    k: usize,
    tl: Option<&TlParams>,
) -> Result<Vec<i8>> {
    if L == 1 {
        tl1::unpack(data, m, k, tl_params("TL1", m, k, tl)?)
    } else {
        tl2::unpack(data, m, k, tl_params("TL2", m, k, tl)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn random_codes(n: usize, seed: u64) -> Vec<i8> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| (r.next() % 3) as i8 - 1).collect()
    }

    /// Each whole-matrix codec gives the bytes of its layout's own packer, with the scale
    /// where the type table says it is, and decodes them back.
    #[test]
    fn whole_codecs_pack_as_their_layouts_and_round_trip() {
        let (m, k) = (256, 512);
        let codes = random_codes(m * k, 7);
        let scale = 0.375f32;
        let mut want = vec![0u8; i2s::nbytes(m, k)];
        i2s::pack_into(&codes, scale, &mut want).unwrap();
        let TernaryCodec::Whole(c) = I2_S else {
            panic!("I2_S is whole")
        };
        let mut got = vec![0xAAu8; want.len()];
        (c.pack_into)(&codes, m, k, None, scale, &mut got).unwrap();
        assert_eq!(got, want);
        assert_eq!((c.unpack)(&got, m, k, None).unwrap(), codes);

        for (codec, layout) in [(TL1, TlLayout::Tl1), (TL2, TlLayout::Tl2)] {
            let TernaryCodec::Whole(c) = codec else {
                panic!("TL is whole")
            };
            assert_eq!(c.tl, Some(layout));
            let (p, _) = super::super::params::choose(None, "", layout, m, k).unwrap();
            let raw = if layout == TlLayout::Tl1 {
                tl1::nbytes(m, k)
            } else {
                tl2::nbytes(m, k).unwrap()
            };
            let mut body = vec![0u8; raw];
            if layout == TlLayout::Tl1 {
                tl1::pack_into(&codes, m, k, &p, &mut body).unwrap();
            } else {
                tl2::pack_into(&codes, m, k, &p, &mut body).unwrap();
            }
            let mut got = vec![0xAAu8; pad32(raw) + SCALE_SLOT_BYTES];
            (c.pack_into)(&codes, m, k, Some(&p), scale, &mut got).unwrap();
            assert_eq!(&got[..raw], &body[..], "{layout:?}");
            assert!(got[raw..pad32(raw)].iter().all(|&b| b == 0));
            assert_eq!(&got[pad32(raw)..], &scale_slot(scale));
            assert_eq!((c.unpack)(&got, m, k, Some(&p)).unwrap(), codes);
            assert!((c.pack_into)(&codes, m, k, None, scale, &mut got).is_err());
        }
    }

    /// Each block codec is its layout's functions.
    #[test]
    fn block_codecs_round_trip() {
        let codes = random_codes(4 * 256, 9);
        for codec in [TQ1_0, TQ2_0] {
            let TernaryCodec::Blocks(c) = codec else {
                panic!("TQ is blocks")
            };
            let mut out = vec![0u8; codes.len() / c.block_values * c.block_bytes];
            (c.pack_ternary_into)(&codes, 0.5, &mut out).unwrap();
            let (back, scales) = (c.codes)(&out, codes.len()).unwrap();
            assert_eq!(back, codes);
            assert!(scales.iter().all(|&d| d == 0.5));
            let vals: Vec<f32> = codes.iter().map(|&x| x as f32 * 0.5).collect();
            let mut q = vec![0u8; out.len()];
            (c.quantize_into)(&vals, &mut q).unwrap();
            assert_eq!(q, out);
        }
    }
}
