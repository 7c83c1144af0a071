//! I2_S: bitnet.cpp's 2-bit ternary type (GGML type 36), canonical layout.
//!
//! The layout written by every bitnet.cpp Python converter, by an x86
//! `llama-quantize` built with `ACT_PARALLEL` (the default) and found in the
//! official `BitNet-b1.58-2B-4T` GGUF (FORMATS §3.2.3):
//!
//! * the `M × K` matrix is flattened row-major into `n = M·K` ternary values
//!   `t`, stored as 2-bit codes `c = t + 1` (`-1 → 0`, `0 → 1`, `+1 → 2`);
//! * blocks of 128 consecutive values become 32 bytes: byte `g` of a block
//!   holds values `g`, `32+g`, `64+g`, `96+g` of the block in bits 7:6, 5:4,
//!   3:2, 1:0;
//! * the code bytes fill `n/4` bytes, then the per-tensor scale follows as a
//!   little-endian f32 at byte `n/4`, then 28 bytes of tail (zeros here), for a
//!   total of `n/4 + 32` bytes.
//!
//! With `K % 128 == 0` (every supported model) each row occupies exactly
//! `K/4` contiguous bytes, so whole rows can be packed independently and in
//! parallel with [`pack_rows`].
//!
//! # Partial blocks (`n % 128 != 0`)
//!
//! The reference Python packer pads the last, partial block with code 1
//! (value 0), packs it, and truncates the code bytes to `n/4` (the scale sits
//! at `n/4`, where ggml expects it). [`pack_into`] does the same, so its
//! output is byte-compatible; but the truncation drops every value of the
//! partial block whose byte index `j mod 32` is `≥ (n mod 128)/4`, so such
//! tensors do not round-trip (and the reference kernels cannot use them). Use
//! [`is_lossless`] to reject them up front. [`unpack`] decodes lost positions
//! as 0.

use super::{
    check_codes, check_data_len, check_out_len, checked_n, BlockGeometry, LayoutError, Result,
};

/// The I2_S layout's block geometry: 128 values in 32 bytes. (A whole tensor also has the
/// 32-byte tail, see [`nbytes`].)
#[derive(Clone, Copy, Debug)]
pub struct I2s;

impl BlockGeometry for I2s {
    const NAME: &'static str = "I2_S";
    const TYPE_ID: u32 = 36;
    const BLOCK_VALUES: usize = 128;
    const BLOCK_BYTES: usize = 32;
}

/// Values per block.
pub const BLOCK_VALUES: usize = I2s::BLOCK_VALUES;
/// Bytes per block.
pub const BLOCK_BYTES: usize = I2s::BLOCK_BYTES;
/// Bytes after the codes: f32 scale + 28 bytes.
pub const TAIL_BYTES: usize = 32;

/// Code → ternary value; code 3 is never written and decodes to 0, as the
/// reference dequantizer does.
const DECODE: [i8; 4] = [-1, 0, 1, 0];

/// Total tensor bytes for an `M × K` matrix: `M·K/4 + 32` (`ggml_nbytes`).
/// (Saturates instead of overflowing for absurd shapes.)
pub const fn nbytes(m: usize, k: usize) -> usize {
    m.saturating_mul(k) / 4 + TAIL_BYTES
}

/// Byte offset of the f32 scale for `n` values: `n/4`.
pub const fn scale_offset(n: usize) -> usize {
    n / 4
}

/// `true` when `n` values survive the layout unchanged (`n % 128 == 0`).
pub const fn is_lossless(n: usize) -> bool {
    n % BLOCK_VALUES == 0
}

#[inline]
fn code(t: i8) -> u8 {
    // Valid codes were checked by the caller; mask keeps this branch-free.
    (t.wrapping_add(1) as u8) & 3
}

/// One 128-value block. Fixed-size arrays: no bounds checks, so the loop vectorizes.
#[inline]
fn pack_block(block: &[i8; BLOCK_VALUES], out: &mut [u8; BLOCK_BYTES]) {
    for g in 0..32 {
        out[g] = (code(block[g]) << 6)
            | (code(block[32 + g]) << 4)
            | (code(block[64 + g]) << 2)
            | code(block[96 + g]);
    }
}

/// [`pack_block`] over slices of exactly one block.
#[inline]
fn pack_block_slice(block: &[i8], out: &mut [u8]) {
    pack_block(
        block.try_into().expect("a whole block"),
        out.try_into().expect("a whole block"),
    );
}

/// Packs a run of whole 128-value blocks (for example a range of whole rows
/// when `K % 128 == 0`): `codes.len()` must be a multiple of 128 and
/// `out.len() == codes.len() / 4`. Writes only code bytes; finish the tensor
/// with [`write_tail`].
///
/// For rows `r0..r1` of an `M × K` matrix pass `codes[r0·K..r1·K]` and
/// `out[r0·K/4..r1·K/4]`; chunks may be packed in parallel.
// Inlined, so that a caller compiled for wider vectors packs with them.
#[inline(always)]
pub fn pack_rows(codes: &[i8], out: &mut [u8]) -> Result<()> {
    if codes.len() % BLOCK_VALUES != 0 {
        return Err(LayoutError::InputLength {
            what: "I2_S row chunk must hold a whole number of 128-value blocks".into(),
            expected: codes.len().div_ceil(BLOCK_VALUES) * BLOCK_VALUES,
            actual: codes.len(),
        });
    }
    check_out_len(
        || "I2_S code bytes of the chunk (codes/4)".into(),
        out,
        codes.len() / 4,
    )?;
    check_codes(codes)?;
    for (blk, ob) in codes
        .chunks_exact(BLOCK_VALUES)
        .zip(out.chunks_exact_mut(BLOCK_BYTES))
    {
        pack_block_slice(blk, ob);
    }
    Ok(())
}

/// Columns of one row held row-aligned in memory: `K` rounded up to whole 128-value blocks.
///
/// The file layout flattens `M·K` values, so when `K % 128 != 0` (bitnet_b1_58-3B's
/// `ffn_down`, K = 8640) rows start inside blocks. A runtime that multiplies row by row keeps each
/// row padded with zeros to this width ([`pack_rows_padded`]) and pads the activations with zeros
/// to match, which adds nothing to any dot product.
pub const fn padded_cols(k: usize) -> usize {
    k.div_ceil(BLOCK_VALUES) * BLOCK_VALUES
}

/// Packs an `M × K` matrix of ternary values (row-major, `codes.len() == M·K`) into rows of
/// [`padded_cols`]`(K) / 4` bytes each, every row padded with zeros (code 1). With
/// `K % 128 == 0` this is exactly [`pack_rows`].
pub fn pack_rows_padded(codes: &[i8], k: usize) -> Result<Vec<u8>> {
    let kp = padded_cols(k);
    if k == 0 || codes.len() % k != 0 {
        return Err(LayoutError::InputLength {
            what: format!("I2_S rows of {k} values"),
            expected: codes.len().div_ceil(k.max(1)) * k,
            actual: codes.len(),
        });
    }
    let m = codes.len() / k;
    let mut out = vec![0u8; m * kp / 4];
    if kp == k {
        pack_rows(codes, &mut out)?;
        return Ok(out);
    }
    let mut row = vec![0i8; kp];
    for (src, dst) in codes.chunks_exact(k).zip(out.chunks_exact_mut(kp / 4)) {
        row[..k].copy_from_slice(src);
        pack_rows(&row, dst)?;
    }
    Ok(out)
}

/// Writes the 32-byte tail of a tensor of `n` values: `scale` (f32 LE) at
/// `n/4`, zeros after it. `data` is the whole tensor (`n/4 + 32` bytes).
pub fn write_tail(data: &mut [u8], n: usize, scale: f32) -> Result<()> {
    check_out_len(
        || format!("I2_S tensor of {n} values (n/4 + 32)"),
        data,
        n / 4 + TAIL_BYTES,
    )?;
    let off = scale_offset(n);
    data[off..off + 4].copy_from_slice(&scale.to_le_bytes());
    data[off + 4..].fill(0);
    Ok(())
}

/// Packs `codes` (`n = M·K` ternary values, row-major) and `scale` into `out`,
/// which must be exactly `n/4 + 32` bytes ([`nbytes`]). The tail after the
/// scale is zero-filled. See the module docs for `n % 128 != 0`.
pub fn pack_into(codes: &[i8], scale: f32, out: &mut [u8]) -> Result<()> {
    let n = codes.len();
    check_out_len(
        || format!("I2_S tensor of {n} values (n/4 + 32)"),
        out,
        n / 4 + TAIL_BYTES,
    )?;
    check_codes(codes)?;
    let full = n / BLOCK_VALUES;
    let (body, _) = out.split_at_mut(n / 4);
    let (full_codes, rest_codes) = codes.split_at(full * BLOCK_VALUES);
    let (full_out, rest_out) = body.split_at_mut(full * BLOCK_BYTES);
    for (blk, ob) in full_codes
        .chunks_exact(BLOCK_VALUES)
        .zip(full_out.chunks_exact_mut(BLOCK_BYTES))
    {
        pack_block_slice(blk, ob);
    }
    if !rest_codes.is_empty() {
        let mut padded = [0i8; BLOCK_VALUES];
        padded[..rest_codes.len()].copy_from_slice(rest_codes);
        let mut tmp = [0u8; BLOCK_BYTES];
        pack_block(&padded, &mut tmp);
        let keep = rest_out.len();
        rest_out.copy_from_slice(&tmp[..keep]);
    }
    write_tail(out, n, scale)
}

/// Reads the scale of an `M × K` tensor (f32 at `M·K/4`).
pub fn scale(data: &[u8], m: usize, k: usize) -> Result<f32> {
    let n = checked_n("I2_S", m, k)?;
    let off = scale_offset(n);
    check_data_len(
        || format!("I2_S {m}×{k}: codes and scale (n/4 + 4)"),
        data,
        off + 4,
    )?;
    Ok(f32::from_le_bytes(
        data[off..off + 4].try_into().expect("4 bytes"),
    ))
}

/// Decodes `M × K` codes and the scale. `data` must hold at least the code
/// bytes and the scale (`M·K/4 + 4` bytes); the tail and anything after it
/// are ignored. Code 3 decodes to 0 (as the reference dequantizer does).
pub fn unpack(data: &[u8], m: usize, k: usize) -> Result<(Vec<i8>, f32)> {
    let n = checked_n("I2_S", m, k)?;
    let s = scale(data, m, k)?;
    let mut codes = vec![0i8; n];
    let full = n / BLOCK_VALUES;
    let body = &data[..n / 4];
    for (ob, blk) in codes
        .chunks_exact_mut(BLOCK_VALUES)
        .zip(body.chunks_exact(BLOCK_BYTES))
    {
        unpack_block(blk, ob);
    }
    let rest = n - full * BLOCK_VALUES;
    if rest > 0 {
        let avail = &body[full * BLOCK_BYTES..];
        let mut tmp = [0x55u8; BLOCK_BYTES]; // all code 1 = value 0
        tmp[..avail.len()].copy_from_slice(avail);
        let mut vals = [0i8; BLOCK_VALUES];
        unpack_block(&tmp, &mut vals);
        codes[full * BLOCK_VALUES..].copy_from_slice(&vals[..rest]);
    }
    Ok((codes, s))
}

#[inline]
fn unpack_block(blk: &[u8], out: &mut [i8]) {
    for g in 0..32 {
        let b = blk[g];
        out[g] = DECODE[(b >> 6) as usize];
        out[32 + g] = DECODE[((b >> 4) & 3) as usize];
        out[64 + g] = DECODE[((b >> 2) & 3) as usize];
        out[96 + g] = DECODE[(b & 3) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_rows_hold_each_row_then_zeros() {
        // 3 rows of 200 values: the file layout would start row 1 inside block 1.
        let (m, k) = (3usize, 200usize);
        let codes: Vec<i8> = (0..m * k)
            .map(|i| ((i * 7 + i / 5) % 3) as i8 - 1)
            .collect();
        let out = pack_rows_padded(&codes, k).unwrap();
        assert_eq!(padded_cols(k), 256);
        assert_eq!(out.len(), m * 256 / 4);
        for r in 0..m {
            let mut blk = vec![0u8; 64 + TAIL_BYTES];
            blk[..64].copy_from_slice(&out[r * 64..(r + 1) * 64]);
            let (back, _) = unpack(&blk, 1, 256).unwrap();
            assert_eq!(&back[..k], &codes[r * k..(r + 1) * k], "row {r}");
            assert!(back[k..].iter().all(|&v| v == 0), "row {r} padding");
        }
        // Whole blocks: the same bytes as pack_rows.
        let mut direct = vec![0u8; 2 * 256 / 4];
        pack_rows(&codes[..512], &mut direct).unwrap();
        assert_eq!(pack_rows_padded(&codes[..512], 256).unwrap(), direct);
    }

    #[test]
    fn block_interleave() {
        let mut codes = vec![0i8; 128];
        codes[0] = 1; // byte 0 bits 7:6 = 2
        codes[32] = -1; // byte 0 bits 5:4 = 0
        codes[97] = 1; // byte 1 bits 1:0 = 2
        let mut out = vec![0u8; nbytes(1, 128)];
        pack_into(&codes, 0.25, &mut out).unwrap();
        assert_eq!(out[0], 0b10_00_01_01);
        assert_eq!(out[1], 0b01_01_01_10);
        assert_eq!(out[2], 0x55);
        assert_eq!(&out[32..36], &0.25f32.to_le_bytes());
        assert!(out[36..].iter().all(|&b| b == 0));
        let (back, s) = unpack(&out, 1, 128).unwrap();
        assert_eq!(back, codes);
        assert_eq!(s, 0.25);
    }

    #[test]
    fn rows_equal_whole() {
        let (m, k) = (6, 256);
        let codes: Vec<i8> = (0..m * k)
            .map(|i| ((i * 7 + i / 5) % 3) as i8 - 1)
            .collect();
        let mut whole = vec![0u8; nbytes(m, k)];
        pack_into(&codes, 1.5, &mut whole).unwrap();
        let mut parts = vec![0xAAu8; nbytes(m, k)];
        for r in (0..m).step_by(2) {
            pack_rows(
                &codes[r * k..(r + 2) * k],
                &mut parts[r * k / 4..(r + 2) * k / 4],
            )
            .unwrap();
        }
        write_tail(&mut parts, m * k, 1.5).unwrap();
        assert_eq!(whole, parts);
    }

    #[test]
    fn partial_block_matches_python_truncation() {
        // n = 160: one full block, then 32 values of which only 8 bytes survive.
        let codes: Vec<i8> = (0..160).map(|i| (i % 3) as i8 - 1).collect();
        let mut out = vec![0u8; 160 / 4 + 32];
        pack_into(&codes, 1.0, &mut out).unwrap();
        // Byte 32+g holds value 128+g in bits 7:6 and padding code 1 below.
        for g in 0..8 {
            let c = (codes[128 + g] + 1) as u8;
            assert_eq!(out[32 + g], (c << 6) | 0b01_01_01);
        }
        assert_eq!(&out[40..44], &1.0f32.to_le_bytes());
        let (back, _) = unpack(&out, 1, 160).unwrap();
        assert_eq!(&back[..136], &codes[..136]);
        assert!(back[136..].iter().all(|&c| c == 0));
        assert!(!is_lossless(160));
    }

    #[test]
    fn errors() {
        let mut out = vec![0u8; 64];
        assert!(matches!(
            pack_into(&[0i8; 128], 1.0, &mut out[..63]),
            Err(LayoutError::OutputLength { .. })
        ));
        let mut bad = vec![0i8; 128];
        bad[77] = 2;
        assert_eq!(
            pack_into(&bad, 1.0, &mut out),
            Err(LayoutError::InvalidCode {
                index: 77,
                value: 2
            })
        );
        assert!(pack_rows(&[0i8; 100], &mut [0u8; 25]).is_err());
        assert!(unpack(&[0u8; 35], 1, 128).is_err());
        assert!(unpack(&[0u8; 36], 1, 128).is_ok());
        assert!(unpack(&[], usize::MAX, 2).is_err());
    }

    #[test]
    fn code3_decodes_to_zero() {
        let mut data = vec![0xFFu8; 36];
        data[32..36].copy_from_slice(&2.0f32.to_le_bytes());
        let (c, _) = unpack(&data, 1, 128).unwrap();
        assert!(c.iter().all(|&x| x == 0));
    }
}
