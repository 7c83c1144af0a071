//! TL1: bitnet.cpp's ARM lookup-table layout (GGML type 38), as its Python
//! converter writes it (FORMATS §3.3).
//!
//! * Pair index: for row `r` and column pair `(2p, 2p+1)`,
//!   `idx = 3·w[r,2p] + w[r,2p+1] + 4 ∈ 0..=8`.
//! * Bytes hold two consecutive pair indices (4 consecutive columns), first
//!   pair in the high nibble, ordered by the loop nest (outermost first)
//!   `i0 < M/BM`, `i1 < K/BK`, `i2 < BM/bm`, `i3 < BK/by`, `r16 < bm/16`,
//!   `k4 < by/4`, `r < 16`, with `by = 256/bm`, row
//!   `i0·BM + i2·bm + 16·r16 + r` and first column `i1·BK + i3·by + 4·k4`.
//! * Size `M·K/4` bytes ([`nbytes`]). The per-tensor scale is not part of the
//!   tensor: the GGUF writer puts it in a hidden 32-byte slot after the
//!   32-padded data ([`super::scale_slot`]).
//!
//! Rows `i0·BM .. (i0+1)·BM` map to the contiguous byte range
//! `i0·BM·K/4 .. (i0+1)·BM·K/4`, so a caller can pack row tiles in parallel by
//! calling [`pack_into`] on each tile with `m = BM` (or any multiple of it).

use super::{
    check_codes, check_codes_len, check_data_len, check_out_len, check_tile_shape, invalid_params,
    LayoutError, Result, TlParams,
};

const LAYOUT: &str = "TL1";

/// Tensor bytes of an `M × K` TL1 matrix: `M·K/4` (without the hidden scale
/// slot). Saturates instead of overflowing for absurd shapes.
pub const fn nbytes(m: usize, k: usize) -> usize {
    m.saturating_mul(k) / 4
}

/// Checks that `params` tile an `M × K` matrix: `M, K > 0`, `bm ∈ {32, 64}`
/// (`bmm`), `BM % bm == 0`, `M % BM == 0`, `BK % (256/bm) == 0`,
/// `K % BK == 0`.
pub fn validate(m: usize, k: usize, params: &TlParams) -> Result<()> {
    let bad = invalid_params(LAYOUT, m, k, params);
    check_tile_shape(LAYOUT, m, k)?;
    let TlParams { bm: big_m, bk, bmm } = *params;
    if bmm != 32 && bmm != 64 {
        return Err(bad(format!("bm (bmm) must be 32 or 64, got {bmm}")));
    }
    if big_m == 0 || big_m % bmm != 0 {
        return Err(bad(format!(
            "BM = {big_m} must be a positive multiple of bm = {bmm}"
        )));
    }
    if m % big_m != 0 {
        return Err(bad(format!("M = {m} is not a multiple of BM = {big_m}")));
    }
    let by = 256 / bmm;
    if bk == 0 || bk % by != 0 {
        return Err(bad(format!(
            "BK = {bk} must be a positive multiple of by = 256/bm = {by}"
        )));
    }
    if k % bk != 0 {
        return Err(bad(format!("K = {k} is not a multiple of BK = {bk}")));
    }
    Ok(())
}

#[inline]
fn pair(a: i8, b: i8) -> u8 {
    (3 * a + b + 4) as u8
}

/// Visits every output byte in layout order with the row-major index of its
/// first code (`row·K + col`; the byte covers `col..col+4`).
#[inline]
fn for_each_byte(m: usize, k: usize, p: &TlParams, mut f: impl FnMut(usize, usize)) {
    let TlParams { bm: big_m, bk, bmm } = *p;
    let by = 256 / bmm;
    let mut o = 0;
    for i0 in 0..m / big_m {
        for i1 in 0..k / bk {
            for i2 in 0..big_m / bmm {
                for i3 in 0..bk / by {
                    for r16 in 0..bmm / 16 {
                        let row0 = i0 * big_m + i2 * bmm + r16 * 16;
                        for k4 in 0..by / 4 {
                            let col = i1 * bk + i3 * by + 4 * k4;
                            let mut idx = row0 * k + col;
                            for _ in 0..16 {
                                f(o, idx);
                                o += 1;
                                idx += k;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Packs `codes` (`M × K`, row-major, values in `{-1,0,1}`) into `out`
/// (exactly [`nbytes`]`(m, k)` bytes) with tiling `params`.
pub fn pack_into(
    codes: &[i8],
    m: usize,
    k: usize,
    params: &TlParams,
    out: &mut [u8],
) -> Result<()> {
    validate(m, k, params)?;
    check_codes_len(LAYOUT, codes, m, k)?;
    check_out_len(|| format!("TL1 {m}×{k} (M·K/4)"), out, nbytes(m, k))?;
    check_codes(codes)?;
    for_each_byte(m, k, params, |o, i| {
        let c = &codes[i..i + 4];
        out[o] = (pair(c[0], c[1]) << 4) | pair(c[2], c[3]);
    });
    Ok(())
}

/// Decodes an `M × K` TL1 tensor packed with `params`. `data` needs at least
/// [`nbytes`]`(m, k)` bytes; anything after is ignored. A nibble above 8 is
/// reported as [`LayoutError::InvalidData`].
pub fn unpack(data: &[u8], m: usize, k: usize, params: &TlParams) -> Result<Vec<i8>> {
    validate(m, k, params)?;
    let n = m * k;
    check_data_len(|| format!("TL1 {m}×{k} (M·K/4)"), data, nbytes(m, k))?;
    let mut codes = vec![0i8; n];
    let mut bad: Option<usize> = None;
    for_each_byte(m, k, params, |o, i| {
        let b = data[o];
        let (hi, lo) = (b >> 4, b & 15);
        if hi > 8 || lo > 8 {
            bad.get_or_insert(o);
            return;
        }
        codes[i] = (hi / 3) as i8 - 1;
        codes[i + 1] = (hi % 3) as i8 - 1;
        codes[i + 2] = (lo / 3) as i8 - 1;
        codes[i + 3] = (lo % 3) as i8 - 1;
    });
    if let Some(offset) = bad {
        return Err(LayoutError::InvalidData {
            offset,
            reason: format!(
                "TL1 pair index nibble above 8 in byte {:#04x}",
                data[offset]
            ),
        });
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(bm: usize, bk: usize, bmm: usize) -> TlParams {
        TlParams { bm, bk, bmm }
    }

    #[test]
    fn first_bytes_follow_the_loop_nest() {
        // M = 32, K = 8, BM = 32, BK = 8, bm = 32 → by = 8, by/4 = 2.
        let (m, k) = (32, 8);
        let codes: Vec<i8> = (0..m * k)
            .map(|i| ((i * 5 + i / 7) % 3) as i8 - 1)
            .collect();
        let mut out = vec![0u8; nbytes(m, k)];
        pack_into(&codes, m, k, &p(32, 8, 32), &mut out).unwrap();
        let w = |r: usize, c: usize| codes[r * k + c];
        let byte =
            |r: usize, c: usize| (pair(w(r, c), w(r, c + 1)) << 4) | pair(w(r, c + 2), w(r, c + 3));
        for r in 0..16 {
            // r16 = 0, k4 = 0: rows 0..16 at column 0
            assert_eq!(out[r], byte(r, 0));
            // r16 = 0, k4 = 1: rows 0..16 at column 4
            assert_eq!(out[16 + r], byte(r, 4));
            // r16 = 1, k4 = 0: rows 16..32 at column 0
            assert_eq!(out[32 + r], byte(16 + r, 0));
        }
        assert_eq!(unpack(&out, m, k, &p(32, 8, 32)).unwrap(), codes);
    }

    #[test]
    fn validation() {
        assert!(validate(256, 256, &p(128, 64, 64)).is_ok());
        assert!(validate(256, 256, &p(128, 64, 48)).is_err());
        assert!(validate(256, 256, &p(96, 64, 32)).is_err());
        assert!(validate(256, 256, &p(128, 60, 32)).is_err());
        assert!(validate(256, 260, &p(128, 4, 64)).is_ok());
        assert!(validate(256, 256, &p(0, 64, 32)).is_err());
        assert!(validate(0, 256, &p(128, 64, 32)).is_err());
        assert!(validate(256, 192, &p(128, 128, 32)).is_err());
    }

    #[test]
    fn invalid_nibble() {
        let data = vec![0x9Fu8; nbytes(32, 8)];
        assert!(matches!(
            unpack(&data, 32, 8, &p(32, 8, 32)),
            Err(LayoutError::InvalidData { offset: 0, .. })
        ));
    }
}
