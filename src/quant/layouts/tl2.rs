//! TL2: bitnet.cpp's x86 lookup-table layout (GGML type 39, 42 in the 2026
//! fork), as its Python converter writes it (FORMATS §3.4).
//!
//! With `BM`, `BK` (= `BY`) and `bm = 32` (`by = 192/bm = 6`), the columns are
//! split into a *three-part* `K3 = K − K % BK` and a *two-part*
//! `K2 = K % BK` (which must be a multiple of 32). The tensor is, in order:
//!
//! 1. **Magnitudes** (`M·K3/6` bytes). For a column triple the value
//!    `v = 9·w0 + 3·w1 + w2 ∈ [−13, 13]`; a byte holds `|v|` of two consecutive
//!    triples (6 columns), first in the high nibble. Loop nest `i0 < M/BM`,
//!    `i1 < K3/BK`, `i2 < BM/32`, `i3 < BK/6`, then a 32-byte chunk over the
//!    rows `i0·BM + i2·32 + rr` in the 8-row group order 0, 2, 1, 3 (chunk
//!    byte `8·G + u` is row `8·π(G) + u`, `π = [0, 2, 1, 3]`); first column
//!    `i1·BK + 6·i3`.
//! 2. **Signs** (`M·K3/24` bytes): loop nest `i0`, `i1`, `i2`, `i4 < BK/24`, then
//!    16 little-endian `u16` words `c = 0..16`; bit `15 − h` of word `c` is set
//!    iff `v < 0` for row `i0·BM + i2·32 + 16·(h mod 2) + c` and triple
//!    `i1·BK/3 + 8·i4 + ⌊h/2⌋`.
//! 3. **Two-part** (`M·K2/4` bytes): TL1-style pair indices
//!    `3·w0 + w1 + 4` of columns `K3 + 2p, K3 + 2p + 1`, two per byte (high
//!    nibble first), loop nest `i0 < M/BM`, `i1 < K2/32`, `i2 < BM/32`,
//!    `i3 < 8`, then a 32-row chunk in group order 0, 2, 1, 3; first column
//!    `K3 + 32·i1 + 4·i3`.
//! 4. **Zero padding** up to [`nbytes`] =
//!    `(K−256)·M/3·5/8 + 256·M/2·4/8` (integer operations left to right), the
//!    size `ggml_nbytes` gives the tensor. The per-tensor scale lives in the
//!    hidden 32-byte slot at `pad32(nbytes)` ([`super::scale_slot`]).
//!
//! The formula is only defined for `K ≥ 256` here (below it the first term
//! would be negative): such shapes are rejected. The content must also fit
//! into the formula's size, which in practice means `K2 ≤ 256`; [`validate`]
//! checks it exactly. `BK` must be a multiple of 24, because sign words cover
//! 8 triples.
//!
//! The reference kernels additionally need `K % BK ≤ K/16` (their work buffer
//! overflows otherwise); that bound does not affect the bytes and is checked
//! separately by [`check_work_buffer`] (the reference's own `tiny/` files
//! violate it: `K = 256`, `BK = 96`).

use std::ops::Range;

use rayon::prelude::*;

use super::{
    check_codes, check_codes_len, check_data_len, check_out_len, check_tile_shape, invalid_params,
    LayoutError, Result, TlParams,
};

const LAYOUT: &str = "TL2";

/// Inner row tile (`bm`), the only value TL2 supports.
pub const BMM: usize = 32;
/// Columns per magnitude byte (two triples).
const BY: usize = 6;
/// 8-row group order inside a 32-row chunk.
const PERM: [usize; 4] = [0, 2, 1, 3];

/// Balanced-ternary digits `(w0, w1, w2)` of `|v| = 0..=13`.
const MAG_DIGITS: [[i8; 3]; 14] = {
    let mut t = [[0i8; 3]; 14];
    let mut v = 0;
    while v < 14 {
        let mut x = v as i32;
        let mut d = 2;
        loop {
            let r = ((x % 3) + 3 + 1) % 3 - 1; // digit in {-1, 0, 1}
            t[v][d] = r as i8;
            x = (x - r) / 3;
            if d == 0 {
                break;
            }
            d -= 1;
        }
        v += 1;
    }
    t
};

/// Tensor bytes of an `M × K` TL2 matrix (`ggml_nbytes`, without the hidden
/// scale slot): `(K−256)·M/3·5/8 + 256·M/2·4/8`, integer operations left to
/// right. Errors when `K < 256` (the formula would go negative) or on
/// overflow.
pub fn nbytes(m: usize, k: usize) -> Result<usize> {
    let shape_err = |reason: &str| LayoutError::InvalidShape {
        layout: LAYOUT,
        m,
        k,
        reason: reason.into(),
    };
    if k < 256 {
        return Err(shape_err(
            "K must be at least 256 (the TL2 size formula (K−256)·M/3·5/8 + 256·M/2·4/8 would underflow)",
        ));
    }
    let overflow = || shape_err("TL2 size formula overflows usize");
    let a = (k - 256).checked_mul(m).ok_or_else(overflow)? / 3;
    let a = a.checked_mul(5).ok_or_else(overflow)? / 8;
    let b = 256usize.checked_mul(m).ok_or_else(overflow)? / 2;
    let b = b.checked_mul(4).ok_or_else(overflow)? / 8;
    a.checked_add(b).ok_or_else(overflow)
}

/// Column split `(K3, K2)` for `BK`: `K3 = K − K % BK`, `K2 = K % BK`.
pub const fn split_k(k: usize, bk: usize) -> (usize, usize) {
    (k - k % bk, k % bk)
}

/// Bytes actually occupied by magnitudes, signs and the two-part
/// (`M·K3/6 + M·K3/24 + M·K2/4`); the rest up to [`nbytes`] is zero padding.
pub fn content_bytes(m: usize, k: usize, params: &TlParams) -> usize {
    let (k3, k2) = split_k(k, params.bk.max(1));
    let mk3 = m.saturating_mul(k3);
    mk3 / 6 + mk3 / 24 + m.saturating_mul(k2) / 4
}

/// Checks that `params` give a valid TL2 layout for `M × K`:
/// `bm (bmm) == 32`, `BM` a positive multiple of 32 dividing `M`, `BK` a
/// positive multiple of 24 (hence of `by = 6`), `(K % BK) % 32 == 0`,
/// `K ≥ 256`, and magnitudes + signs + two-part fitting into [`nbytes`].
/// The kernels' work-buffer bound is [`check_work_buffer`].
pub fn validate(m: usize, k: usize, params: &TlParams) -> Result<()> {
    let bad = invalid_params(LAYOUT, m, k, params);
    check_tile_shape(LAYOUT, m, k)?;
    let size = nbytes(m, k)?;
    let TlParams { bm: big_m, bk, bmm } = *params;
    if bmm != BMM {
        return Err(bad(format!("bm (bmm) must be 32, got {bmm}")));
    }
    if big_m == 0 || big_m % BMM != 0 {
        return Err(bad(format!(
            "BM = {big_m} must be a positive multiple of 32"
        )));
    }
    if m % big_m != 0 {
        return Err(bad(format!("M = {m} is not a multiple of BM = {big_m}")));
    }
    if bk == 0 || bk % 24 != 0 {
        return Err(bad(format!(
            "BK = {bk} must be a positive multiple of 24 (6 columns per byte, 24 per sign word)"
        )));
    }
    let (_, k2) = split_k(k, bk);
    if k2 % 32 != 0 {
        return Err(bad(format!(
            "two-part width K % BK = {k2} is not a multiple of 32"
        )));
    }
    let content = content_bytes(m, k, params);
    if content > size {
        return Err(bad(format!(
            "packed content ({content} bytes, two-part width {k2}) exceeds the TL2 size formula ({size} bytes)"
        )));
    }
    Ok(())
}

/// The reference kernels' work-buffer bound `K % BK ≤ K/16`. Violating it
/// does not change the bytes, but bitnet.cpp's TL2 kernels overflow their
/// buffer at run time.
pub fn check_work_buffer(m: usize, k: usize, params: &TlParams) -> Result<()> {
    if params.bk == 0 {
        return Err(LayoutError::InvalidParams {
            layout: LAYOUT,
            m,
            k,
            params: *params,
            reason: "BK must be positive".into(),
        });
    }
    let k2 = k % params.bk;
    if k2 > k / 16 {
        return Err(LayoutError::InvalidParams {
            layout: LAYOUT,
            m,
            k,
            params: *params,
            reason: format!(
                "K % BK = {k2} exceeds K/16 = {}: the reference TL2 kernels overflow their work buffer",
                k / 16
            ),
        });
    }
    Ok(())
}

#[inline]
fn triple(c: &[i8]) -> i8 {
    9 * c[0] + 3 * c[1] + c[2]
}

#[inline]
fn pair(a: i8, b: i8) -> u8 {
    (3 * a + b + 4) as u8
}

/// Visits the magnitude bytes in order: `(byte index, row-major index of the
/// first of the 6 columns)`.
#[inline]
fn for_each_magnitude(m: usize, k: usize, p: &TlParams, mut f: impl FnMut(usize, usize)) {
    let (k3, _) = split_k(k, p.bk);
    let mut o = 0;
    for i0 in 0..m / p.bm {
        for i1 in 0..k3 / p.bk {
            for i2 in 0..p.bm / BMM {
                let row0 = i0 * p.bm + i2 * BMM;
                for i3 in 0..p.bk / BY {
                    let col = i1 * p.bk + BY * i3;
                    for g in PERM {
                        for u in 0..8 {
                            f(o, (row0 + 8 * g + u) * k + col);
                            o += 1;
                        }
                    }
                }
            }
        }
    }
}

/// Visits the sign words in order: `(byte index of the word, row-major index
/// of the first column of triple 0 of row c, word index c)`; bit `15 − h`
/// refers to row `+16·(h mod 2)` and triple `+⌊h/2⌋`.
#[inline]
fn for_each_sign_word(
    m: usize,
    k: usize,
    p: &TlParams,
    start: usize,
    mut f: impl FnMut(usize, usize),
) {
    let (k3, _) = split_k(k, p.bk);
    let mut o = start;
    for i0 in 0..m / p.bm {
        for i1 in 0..k3 / p.bk {
            for i2 in 0..p.bm / BMM {
                let row0 = i0 * p.bm + i2 * BMM;
                for i4 in 0..p.bk / 24 {
                    let col = i1 * p.bk + 24 * i4;
                    for c in 0..16 {
                        f(o, (row0 + c) * k + col);
                        o += 2;
                    }
                }
            }
        }
    }
}

/// Visits the two-part bytes in order: `(byte index, row-major index of the
/// first of the 4 columns)`.
#[inline]
fn for_each_two_part(
    m: usize,
    k: usize,
    p: &TlParams,
    start: usize,
    mut f: impl FnMut(usize, usize),
) {
    let (k3, k2) = split_k(k, p.bk);
    let mut o = start;
    for i0 in 0..m / p.bm {
        for i1 in 0..k2 / 32 {
            for i2 in 0..p.bm / 32 {
                let row0 = i0 * p.bm + i2 * 32;
                for i3 in 0..8 {
                    let col = k3 + 32 * i1 + 4 * i3;
                    for g in PERM {
                        for u in 0..8 {
                            f(o, (row0 + 8 * g + u) * k + col);
                            o += 1;
                        }
                    }
                }
            }
        }
    }
}

/// The three packed parts of a TL2 tensor, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    /// Triple magnitudes (`M·K3/6` bytes).
    Magnitudes,
    /// Sign words (`M·K3/24` bytes).
    Signs,
    /// Two-part pair indices (`M·K2/4` bytes).
    TwoPart,
}

impl Region {
    /// All regions, in file order.
    pub const ALL: [Region; 3] = [Region::Magnitudes, Region::Signs, Region::TwoPart];
}

/// Byte range of `region` in an `M × K` tensor packed with `params` (which
/// [`validate`] accepted). For a row tile (`m` = `BM` or a multiple of it)
/// the ranges are those of the tile packed on its own.
pub fn region_range(m: usize, k: usize, params: &TlParams, region: Region) -> Range<usize> {
    let (k3, k2) = split_k(k, params.bk);
    let (mag, sign, two) = (m * k3 / 6, m * k3 / 24, m * k2 / 4);
    match region {
        Region::Magnitudes => 0..mag,
        Region::Signs => mag..mag + sign,
        Region::TwoPart => mag + sign..mag + sign + two,
    }
}

/// Packs one `region` of `codes` (`M × K`, row-major, values in `{-1,0,1}`)
/// into `out` (exactly [`region_range`]`(m, k, params, region).len()` bytes):
/// the bytes [`pack_into`] writes at that range. A caller that streams a
/// tensor in file order can pack each row tile's regions separately.
pub fn pack_region_into(
    codes: &[i8],
    m: usize,
    k: usize,
    params: &TlParams,
    region: Region,
    out: &mut [u8],
) -> Result<()> {
    validate(m, k, params)?;
    check_codes_len(LAYOUT, codes, m, k)?;
    check_out_len(
        || format!("TL2 {m}×{k} {region:?} region"),
        out,
        region_range(m, k, params, region).len(),
    )?;
    check_codes(codes)?;
    pack_region(codes, m, k, params, region, out);
    Ok(())
}

/// [`pack_region_into`] after the checks.
fn pack_region(
    codes: &[i8],
    m: usize,
    k: usize,
    params: &TlParams,
    region: Region,
    out: &mut [u8],
) {
    match region {
        Region::Magnitudes => for_each_magnitude(m, k, params, |o, i| {
            let c: &[i8; 6] = codes[i..i + 6].try_into().expect("6 columns");
            let (v0, v1) = (triple(&c[..3]), triple(&c[3..]));
            out[o] = (v0.unsigned_abs() << 4) | v1.unsigned_abs();
        }),
        Region::Signs => for_each_sign_word(m, k, params, 0, |o, i| {
            // Bit 15 − h: row +16·(h mod 2), triple ⌊h/2⌋ of the 8 triples (24 columns).
            let rows: [&[i8; 24]; 2] =
                [0, 16 * k].map(|r| codes[i + r..i + r + 24].try_into().expect("24 columns"));
            let mut word = 0u16;
            for h in 0..16 {
                let c = &rows[h % 2][3 * (h / 2)..3 * (h / 2) + 3];
                // The sign bit, without a branch (random signs defeat the predictor).
                let negative = (triple(c) as u8 >> 7) as u16;
                word |= negative << (15 - h);
            }
            out[o..o + 2].copy_from_slice(&word.to_le_bytes());
        }),
        Region::TwoPart => for_each_two_part(m, k, params, 0, |o, i| {
            let c: &[i8; 4] = codes[i..i + 4].try_into().expect("4 columns");
            out[o] = (pair(c[0], c[1]) << 4) | pair(c[2], c[3]);
        }),
    }
}

/// Packs `codes` (`M × K`, row-major, values in `{-1,0,1}`) into `out`
/// (exactly [`nbytes`]`(m, k)` bytes, padding zero-filled) with `params`.
pub fn pack_into(
    codes: &[i8],
    m: usize,
    k: usize,
    params: &TlParams,
    out: &mut [u8],
) -> Result<()> {
    validate(m, k, params)?;
    check_codes_len(LAYOUT, codes, m, k)?;
    let size = nbytes(m, k)?;
    check_out_len(|| format!("TL2 {m}×{k} (size formula)"), out, size)?;
    check_codes(codes)?;
    // Each region is the same region of every BM-row tile, one after the other (the test
    // `regions_of_tiles_equal_the_whole`), so the tiles of all three regions are packed as
    // independent tasks, in parallel.
    let bm = params.bm;
    let mut tasks = Vec::new();
    let mut rest = &mut out[..];
    for region in Region::ALL {
        let (reg, after) = rest.split_at_mut(region_range(m, k, params, region).len());
        rest = after;
        let tile = region_range(bm, k, params, region).len();
        if tile * (m / bm) == reg.len() && tile > 0 {
            let tiles = reg.chunks_mut(tile).zip(codes.chunks(bm * k));
            tasks.extend(tiles.map(|(o, c)| (region, bm, o, c)));
        } else if !reg.is_empty() {
            tasks.push((region, m, reg, codes));
        }
    }
    rest.fill(0);
    tasks
        .into_par_iter()
        .for_each(|(region, rows, o, c)| pack_region(c, rows, k, params, region, o));
    Ok(())
}

/// Decodes an `M × K` TL2 tensor packed with `params`. `data` needs at least
/// the packed content ([`content_bytes`]); padding and anything after it are
/// ignored. Magnitudes above 13 and pair indices above 8 are reported as
/// [`LayoutError::InvalidData`].
pub fn unpack(data: &[u8], m: usize, k: usize, params: &TlParams) -> Result<Vec<i8>> {
    validate(m, k, params)?;
    let content = content_bytes(m, k, params);
    check_data_len(|| format!("TL2 {m}×{k} packed content"), data, content)?;
    let (k3, _) = split_k(k, params.bk);
    let mag_len = m * k3 / 6;
    let sign_len = m * k3 / 24;
    let mut codes = vec![0i8; m * k];
    let mut bad: Option<(usize, &'static str)> = None;

    for_each_magnitude(m, k, params, |o, i| {
        let b = data[o];
        let (hi, lo) = ((b >> 4) as usize, (b & 15) as usize);
        if hi > 13 || lo > 13 {
            bad.get_or_insert((o, "TL2 triple magnitude above 13"));
            return;
        }
        codes[i..i + 3].copy_from_slice(&MAG_DIGITS[hi]);
        codes[i + 3..i + 6].copy_from_slice(&MAG_DIGITS[lo]);
    });
    for_each_sign_word(m, k, params, mag_len, |o, i| {
        let word = u16::from_le_bytes([data[o], data[o + 1]]);
        if word == 0 {
            return;
        }
        for h in 0..16 {
            if word & (1 << (15 - h)) != 0 {
                let idx = i + 16 * (h % 2) * k + 3 * (h / 2);
                for c in &mut codes[idx..idx + 3] {
                    *c = -*c;
                }
            }
        }
    });
    for_each_two_part(m, k, params, mag_len + sign_len, |o, i| {
        let b = data[o];
        let (hi, lo) = (b >> 4, b & 15);
        if hi > 8 || lo > 8 {
            bad.get_or_insert((o, "TL2 two-part pair index above 8"));
            return;
        }
        codes[i] = (hi / 3) as i8 - 1;
        codes[i + 1] = (hi % 3) as i8 - 1;
        codes[i + 2] = (lo / 3) as i8 - 1;
        codes[i + 3] = (lo % 3) as i8 - 1;
    });
    if let Some((offset, what)) = bad {
        return Err(LayoutError::InvalidData {
            offset,
            reason: format!("{what} in byte {:#04x}", data[offset]),
        });
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bm: usize, bk: usize) -> TlParams {
        TlParams { bm, bk, bmm: 32 }
    }

    #[test]
    fn digits_table() {
        for (v, d) in MAG_DIGITS.iter().enumerate() {
            assert_eq!(9 * d[0] as i32 + 3 * d[1] as i32 + d[2] as i32, v as i32);
        }
    }

    #[test]
    fn size_formula() {
        assert_eq!(nbytes(256, 768).unwrap(), 43690);
        assert_eq!(nbytes(768, 256).unwrap(), 49152);
        assert_eq!(nbytes(256, 256).unwrap(), 16384);
        assert!(nbytes(256, 255).is_err());
        assert!(nbytes(usize::MAX / 2, 1024).is_err());
    }

    #[test]
    fn validation() {
        assert!(validate(256, 768, &p(128, 96)).is_ok());
        assert!(validate(256, 256, &p(128, 96)).is_ok());
        assert!(check_work_buffer(256, 256, &p(128, 96)).is_err());
        assert!(check_work_buffer(1536, 4096, &p(256, 96)).is_ok());
        assert!(validate(256, 256, &p(128, 90)).is_err()); // not multiple of 24
        assert!(validate(288, 256, &p(96, 96)).is_ok());
        assert!(validate(256, 256, &p(80, 96)).is_err());
        assert!(validate(
            256,
            256,
            &TlParams {
                bm: 128,
                bk: 96,
                bmm: 64
            }
        )
        .is_err());
        assert!(validate(256, 272, &p(128, 96)).is_err()); // K % BK = 80
        assert!(validate(64, 200, &p(64, 96)).is_err()); // K < 256
                                                         // K = 288 with BK = 24·… such that K2 = 288 is impossible (K2 < BK);
                                                         // BK = 600 > K: everything is two-part, K2 = 576 > 256 → too big.
        assert!(validate(32, 576, &p(32, 600)).is_err());
        // BK > K but two-part fits: K = 256, BK = 264 → K3 = 0, K2 = 256.
        assert!(validate(32, 256, &p(32, 264)).is_ok());
    }

    #[test]
    fn two_part_only_roundtrip() {
        // BK > K: no three-part, all 256 columns in the two-part.
        let (m, k) = (64, 256);
        let params = p(32, 264);
        let codes: Vec<i8> = (0..m * k)
            .map(|i| ((i * 11 + i / 13) % 3) as i8 - 1)
            .collect();
        let mut out = vec![0u8; nbytes(m, k).unwrap()];
        pack_into(&codes, m, k, &params, &mut out).unwrap();
        assert_eq!(content_bytes(m, k, &params), out.len());
        assert_eq!(unpack(&out, m, k, &params).unwrap(), codes);
    }

    #[test]
    fn sign_word_bits() {
        // M = 32, K = 288, BK = 288 → three-part only, one sign chunk per 24 cols.
        let (m, k) = (32, 288);
        let mut codes = vec![0i8; m * k];
        // Row 17 (h odd, c = 1), triple 3 (h = 7): bit 15 − 7 = 8 of word 1.
        codes[17 * k + 9] = -1;
        let params = p(32, 288);
        let mut out = vec![0u8; nbytes(m, k).unwrap()];
        pack_into(&codes, m, k, &params, &mut out).unwrap();
        let sign_start = m * k / 6;
        let word1 = u16::from_le_bytes([out[sign_start + 2], out[sign_start + 3]]);
        assert_eq!(word1, 1 << 8);
        assert_eq!(unpack(&out, m, k, &params).unwrap(), codes);
    }

    #[test]
    fn regions_of_tiles_equal_the_whole() {
        // Three-part and two-part columns (K = 1568, BK = 96: K2 = 32); two row tiles.
        let (m, k) = (64, 1568);
        let params = p(32, 96);
        let codes: Vec<i8> = (0..m * k)
            .map(|i| ((i * 7 + i / 11) % 3) as i8 - 1)
            .collect();
        let mut whole = vec![0u8; nbytes(m, k).unwrap()];
        pack_into(&codes, m, k, &params, &mut whole).unwrap();
        let mut streamed = Vec::new();
        for region in Region::ALL {
            for tile in codes.chunks(32 * k) {
                let mut part = vec![0xAAu8; region_range(32, k, &params, region).len()];
                pack_region_into(tile, 32, k, &params, region, &mut part).unwrap();
                streamed.extend_from_slice(&part);
            }
        }
        assert_eq!(streamed.len(), content_bytes(m, k, &params));
        assert_eq!(&whole[..streamed.len()], &streamed[..]);
        assert!(whole[streamed.len()..].iter().all(|&b| b == 0));
        assert!(pack_region_into(&codes, m, k, &params, Region::Signs, &mut [0u8; 3]).is_err());
    }
}
