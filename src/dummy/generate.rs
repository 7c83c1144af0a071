//! The bytes of a dummy model's tensors: seeded per-row random streams, cut into pieces of
//! about 1 MB that generator threads make independently (see [`Cut`]), each packed with the
//! layout modules' own packers.

use super::{DummyTensor, Kind};
use crate::gguf::GgmlType;
use crate::quant::encode;
use crate::quant::layouts::codec::{TernaryCodec, WholeCodec};
use crate::quant::layouts::{i2s, pad32, scale_slot, tl1, tl2, LayoutError, TlLayout, TlParams};
use crate::runtime::kernels::multiversion;

/// SplitMix64: a tiny, well-distributed generator; one stream per row.
pub(super) struct Rng(u64);

impl Rng {
    #[inline(always)]
    pub(super) fn new(seed: u64, tensor: u64, row: u64) -> Rng {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.0 = r.0.wrapping_add(tensor.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let _ = r.next();
        r.0 = r.0.wrapping_add(row.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7));
        let _ = r.next();
        r
    }
    /// Moves past `n` outputs without computing them (the state only adds the increment).
    #[inline(always)]
    fn skip(&mut self, n: u64) {
        self.0 = self.0.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    #[inline(always)]
    pub(super) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Approximately standard normal (sum of four uniforms, variance-corrected).
    #[inline(always)]
    fn normal(&mut self) -> f32 {
        let s = self.unit() + self.unit() + self.unit() + self.unit();
        (s - 2.0) * 3f32.sqrt()
    }
}

/// The ternary value of one random byte: `0` below 102, `+1` below 179, `−1` above, so
/// P(0) ≈ 0.40 and P(+1) = P(−1) ≈ 0.30. Branch-free, so that a row decodes as vectors.
#[inline(always)]
fn ternary(b: u8) -> i8 {
    (b >= 102) as i8 - 2 * (b >= 179) as i8
}

/// Ternary codes of columns `c0..c0 + out.len()` of one row: column `c` is byte `c % 8`
/// (little-endian) of the row stream's output `c / 8`.
#[inline(always)]
fn ternary_cols(seed: u64, t: &DummyTensor, row: usize, c0: usize, out: &mut [i8]) {
    let mut rng = Rng::new(seed, t.index, row as u64);
    rng.skip((c0 / 8) as u64);
    let lead = c0 % 8;
    let mut out = out;
    if lead != 0 {
        let b = rng.next().to_le_bytes();
        let n = (8 - lead).min(out.len());
        for (o, &x) in out[..n].iter_mut().zip(&b[lead..]) {
            *o = ternary(x);
        }
        out = &mut out[n..];
    }
    fill_ternary(&mut rng, out);
}

/// Fills `out` with the ternary values of the stream's next `out.len()` bytes, 8 per output.
#[inline(always)]
fn fill_ternary(rng: &mut Rng, out: &mut [i8]) {
    // The raw bytes first, then one pass that decodes them in place.
    let mut chunks = out.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&rng.next().to_le_bytes().map(|x| x as i8));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let b = rng.next().to_le_bytes();
        for (o, &x) in rest.iter_mut().zip(&b) {
            *o = x as i8;
        }
    }
    for o in out.iter_mut() {
        *o = ternary(*o as u8);
    }
}

/// Ternary codes of one row.
#[inline(always)]
fn ternary_row(seed: u64, t: &DummyTensor, row: usize, out: &mut [i8]) {
    ternary_cols(seed, t, row, 0, out);
}

/// Float values of one row (norms, embeddings) or fake-quantized ternary values.
#[inline(always)]
fn value_row(seed: u64, t: &DummyTensor, row: usize, codes: &mut Vec<i8>, out: &mut [f32]) {
    match t.kind {
        Kind::Ternary { scale } => {
            codes.resize(out.len(), 0);
            ternary_row(seed, t, row, codes);
            for (o, &c) in out.iter_mut().zip(codes.iter()) {
                *o = c as f32 * scale;
            }
        }
        Kind::Norm => {
            let mut rng = Rng::new(seed, t.index, row as u64);
            for o in out {
                *o = 1.0 + 0.05 * (rng.unit() - 0.5);
            }
        }
        Kind::Embedding => {
            let mut rng = Rng::new(seed, t.index, row as u64);
            for o in out {
                *o = 0.02 * rng.normal();
            }
        }
    }
}

/// Output bytes per piece that the generators aim at: large writes, small buffers.
const PIECE_BYTES: usize = 1 << 20;

/// How a tensor's bytes are cut into pieces, in file order.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Blocks of `rows` rows (the last one may be shorter); for I2_S then the 32-byte tail.
    Rows { rows: usize, blocks: usize },
    /// For each of `regions` regions in file order (TL1: one, the whole tile; TL2: the
    /// non-empty ones), every row tile's part; then the padding and the scale slot.
    Tiles {
        p: TlParams,
        tiles: usize,
        regions: usize,
    },
    /// The whole tensor in one piece, through its layout's codec: any whole-matrix layout
    /// without a streamed cut of its own.
    Whole(WholeCodec),
}

fn cut(t: &DummyTensor) -> Cut {
    let codec = t.spec.ty.ternary_codec();
    match codec.and_then(|c| c.tl()) {
        Some(layout) => {
            let p = t.tl.expect("TL tensors have parameters");
            let regions = if layout == TlLayout::Tl1 {
                1
            } else {
                tl2_regions(t.k, &p).count()
            };
            Cut::Tiles {
                p,
                tiles: t.m / p.bm,
                regions,
            }
        }
        None => match codec {
            Some(TernaryCodec::Whole(c)) if t.spec.ty != GgmlType::I2_S => Cut::Whole(c),
            _ => {
                let rows = rows_per_block(t);
                Cut::Rows {
                    rows,
                    blocks: t.m.div_ceil(rows),
                }
            }
        },
    }
}

/// Pieces of a tensor.
pub(super) fn pieces(t: &DummyTensor) -> usize {
    match cut(t) {
        Cut::Rows { blocks, .. } => blocks + usize::from(t.spec.ty == GgmlType::I2_S),
        Cut::Tiles { tiles, regions, .. } => regions * tiles + 1,
        Cut::Whole(_) => 1,
    }
}

/// The non-empty regions of a TL2 row tile, in file order.
fn tl2_regions(k: usize, p: &TlParams) -> impl Iterator<Item = tl2::Region> + '_ {
    tl2::Region::ALL
        .into_iter()
        .filter(move |&r| !tl2::region_range(p.bm, k, p, r).is_empty())
}

/// Bytes of one row of a row-cut tensor: the type table's row size for the block types; for
/// I2_S, whose rows may share a byte, what `k` codes take (rounded up).
fn row_bytes(ty: GgmlType, k: usize) -> usize {
    if ty == GgmlType::I2_S {
        return (k * i2s::BLOCK_BYTES).div_ceil(i2s::BLOCK_VALUES);
    }
    ty.row_bytes(k)
        .unwrap_or_else(|| unreachable!("dummy tensors are never {ty} rows of {k} values"))
}

/// Rows whose I2_S codes fill whole 128-value blocks.
fn i2s_rows_unit(k: usize) -> usize {
    i2s::BLOCK_VALUES / gcd(k, i2s::BLOCK_VALUES)
}

/// Rows per block, about [`PIECE_BYTES`] of output.
fn rows_per_block(t: &DummyTensor) -> usize {
    let mut r = (PIECE_BYTES / row_bytes(t.spec.ty, t.k).max(1)).max(1);
    if t.spec.ty == GgmlType::I2_S {
        // Whole 128-value blocks per row block.
        let unit = i2s_rows_unit(t.k);
        r = r.div_ceil(unit) * unit;
    }
    r.min(t.m)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn ternary_scale(t: &DummyTensor) -> f32 {
    match t.kind {
        Kind::Ternary { scale } => scale,
        _ => unreachable!("{} is not ternary", t.spec.name),
    }
}

/// A generator thread's buffers, reused from piece to piece. `codes` only ever holds ternary
/// values.
#[derive(Default)]
pub(super) struct Scratch {
    codes: Vec<i8>,
    vals: Vec<f32>,
}

multiversion! {
    /// Makes piece `j` of tensor `t` (see [`Cut`]) into `out`, which holds an earlier piece,
    /// with the build of [`piece_imp`] for `kern`'s instruction set: integer arithmetic is
    /// exact and no float operation is fused or reordered, so every build makes the same bytes;
    /// the wider vectors (AVX-512 multiplies 64-bit lanes, which the generator's mixing needs)
    /// are faster.
    pub(super) fn piece(
        seed: u64,
        t: &DummyTensor,
        j: usize,
        s: &mut Scratch,
        out: &mut Vec<u8>,
    ) -> Result<(), LayoutError> = piece_imp
}

#[inline(always)]
fn piece_imp(
    seed: u64,
    t: &DummyTensor,
    j: usize,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), LayoutError> {
    let k = t.k;
    match cut(t) {
        Cut::Whole(c) => whole_bytes(seed, t, &c, s, out),
        Cut::Tiles { p, tiles, regions } if j == regions * tiles => {
            // Zero padding to the size formula, then the 32-byte aligned scale slot.
            let (raw, content) = if t.spec.ty == GgmlType::TL1 {
                (tl1::nbytes(t.m, k), tl1::nbytes(t.m, k))
            } else {
                (tl2::nbytes(t.m, k)?, tl2::content_bytes(t.m, k, &p))
            };
            out.clear();
            out.resize(pad32(raw) - content, 0);
            out.extend_from_slice(&scale_slot(ternary_scale(t)));
            Ok(())
        }
        Cut::Tiles { p, tiles, .. } => {
            let (region, tile) = (j / tiles, j % tiles);
            let rows = tile * p.bm..(tile + 1) * p.bm;
            // Columns a region does not read may hold older codes.
            s.codes.resize(p.bm * k, 0);
            if t.spec.ty == GgmlType::TL1 {
                for (r, row) in rows.zip(s.codes.chunks_exact_mut(k)) {
                    ternary_row(seed, t, r, row);
                }
                resize_for_overwrite(out, tl1::nbytes(p.bm, k));
                return tl1::pack_into(&s.codes, p.bm, k, &p, out);
            }
            let region = tl2_regions(k, &p).nth(region).expect("a non-empty region");
            // Magnitudes and signs read the three-part columns, the two-part the others.
            let (k3, _) = tl2::split_k(k, p.bk);
            let cols = if region == tl2::Region::TwoPart {
                k3..k
            } else {
                0..k3
            };
            for (r, row) in rows.zip(s.codes.chunks_exact_mut(k)) {
                ternary_cols(seed, t, r, cols.start, &mut row[cols.clone()]);
            }
            resize_for_overwrite(out, tl2::region_range(p.bm, k, &p, region).len());
            tl2::pack_region_into(&s.codes, p.bm, k, &p, region, out)
        }
        Cut::Rows { blocks, .. } if j == blocks => {
            // I2_S: the scale, then zeros to 32 bytes.
            out.clear();
            out.extend_from_slice(&ternary_scale(t).to_le_bytes());
            out.resize(i2s::TAIL_BYTES, 0);
            Ok(())
        }
        Cut::Rows { rows, .. } => {
            let r0 = j * rows;
            block_bytes(seed, t, r0, (r0 + rows).min(t.m), s, out)
        }
    }
}

/// The bytes of a whole tensor through its layout's codec.
#[inline(always)]
fn whole_bytes(
    seed: u64,
    t: &DummyTensor,
    c: &WholeCodec,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), LayoutError> {
    s.codes.resize(t.m * t.k, 0);
    for (r, row) in s.codes.chunks_exact_mut(t.k).enumerate() {
        ternary_row(seed, t, r, row);
    }
    resize_for_overwrite(out, t.nbytes as usize);
    (c.pack_into)(&s.codes, t.m, t.k, t.tl.as_ref(), ternary_scale(t), out)
}

/// Gives `out` length `n` for a caller that then writes every byte: the bytes of the earlier
/// piece that a reused buffer holds are kept rather than zeroed (only growth is zeroed).
fn resize_for_overwrite(out: &mut Vec<u8>, n: usize) {
    out.resize(n, 0);
}

/// The bytes of rows `r0..r1` of a tensor cut into rows.
#[inline(always)]
fn block_bytes(
    seed: u64,
    t: &DummyTensor,
    r0: usize,
    r1: usize,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<(), LayoutError> {
    let (k, ty) = (t.k, t.spec.ty);
    if ty == GgmlType::I2_S {
        // Groups of rows that fill whole 128-value blocks (one row when K % 128 == 0).
        let unit = i2s_rows_unit(k);
        resize_for_overwrite(out, (r1 - r0) * k / 4);
        s.codes.resize(unit * k, 0);
        for (g, o) in (r0..r1)
            .step_by(unit)
            .zip(out.chunks_exact_mut(unit * k / 4))
        {
            for (r, row) in (g..).zip(s.codes.chunks_exact_mut(k)) {
                ternary_row(seed, t, r, row);
            }
            i2s::pack_rows(&s.codes, o)?;
        }
        return Ok(());
    }
    let rb = row_bytes(ty, k);
    let codec = ty.ternary_codec();
    resize_for_overwrite(out, (r1 - r0) * rb);
    for (r, o) in (r0..r1).zip(out.chunks_exact_mut(rb)) {
        if let (Some(TernaryCodec::Blocks(c)), Kind::Ternary { scale }) = (codec, t.kind) {
            // The codes directly: what quantizing the values codes·scale gives.
            s.codes.resize(k, 0);
            ternary_row(seed, t, r, &mut s.codes);
            (c.pack_ternary_into)(&s.codes, scale, o)?;
            continue;
        }
        s.vals.resize(k, 0.0);
        value_row(seed, t, r, &mut s.codes, &mut s.vals);
        encode::values_into(ty, &s.vals, o)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{plan, DummySpec};
    use super::*;
    use crate::checkpoint::Arch;
    use crate::gguf::TensorSpec;
    use crate::runtime::kernels;

    /// The codes as the first version computed them: one byte at a time, with branches.
    fn ternary_row_reference(seed: u64, t: &DummyTensor, row: usize, out: &mut [i8]) {
        let mut rng = Rng::new(seed, t.index, row as u64);
        for chunk in out.chunks_mut(8) {
            let bits = rng.next();
            for (j, o) in chunk.iter_mut().enumerate() {
                let b = (bits >> (8 * j)) as u8;
                *o = if b < 102 {
                    0
                } else if b < 179 {
                    1
                } else {
                    -1
                };
            }
        }
    }

    fn tensor(index: u64, k: usize) -> DummyTensor {
        DummyTensor {
            spec: TensorSpec {
                name: "t".into(),
                dims: vec![k as u64, 4],
                ty: GgmlType::I2_S,
            },
            m: 4,
            k,
            tl: None,
            nbytes: 0,
            kind: Kind::Ternary { scale: 0.1 },
            index,
        }
    }

    #[test]
    fn every_byte_decodes_as_before() {
        for b in 0..=255u8 {
            let want = if b < 102 {
                0
            } else if b < 179 {
                1
            } else {
                -1
            };
            assert_eq!(ternary(b), want, "byte {b}");
        }
    }

    #[test]
    fn rows_and_column_ranges_equal_the_reference() {
        for (seed, index, k) in [(0, 0, 4096), (7, 3, 157), (u64::MAX, 12, 8), (1, 1, 3)] {
            let t = tensor(index, k);
            for row in [0, 1, 1000] {
                let mut want = vec![0i8; k];
                ternary_row_reference(seed, &t, row, &mut want);
                let mut got = vec![9i8; k];
                ternary_row(seed, &t, row, &mut got);
                assert_eq!(got, want, "seed {seed} tensor {index} row {row}");
                // Any column range, aligned to the stream's 8-byte outputs or not.
                for c0 in [0, 1, 5, 8, 13, k / 2, k - 1]
                    .into_iter()
                    .filter(|&c| c < k)
                {
                    for len in [0, 1, 7, 8, 9, 100] {
                        let c1 = (c0 + len).min(k);
                        let mut part = vec![9i8; c1 - c0];
                        ternary_cols(seed, &t, row, c0, &mut part);
                        assert_eq!(part, want[c0..c1], "columns {c0}..{c1}");
                    }
                }
            }
        }
    }

    #[test]
    fn about_forty_percent_zeros() {
        let t = tensor(5, 1 << 16);
        let mut codes = vec![0i8; 1 << 16];
        ternary_row(3, &t, 0, &mut codes);
        let share = |v: i8| codes.iter().filter(|&&c| c == v).count() as f64 / codes.len() as f64;
        assert!((share(0) - 102.0 / 256.0).abs() < 0.01);
        assert!((share(1) - 77.0 / 256.0).abs() < 0.01);
        assert!((share(-1) - 77.0 / 256.0).abs() < 0.01);
    }

    /// A one-layer model of the given widths.
    fn small_spec(hidden: usize, ffn: usize, heads: usize, quant: &str, seed: u64) -> DummySpec {
        DummySpec {
            arch: Arch::Bitnet,
            hidden,
            intermediate: ffn,
            layers: 1,
            heads,
            kv_heads: heads,
            vocab: 1000,
            out_type: quant.parse().unwrap(),
            seed,
            name: "test".into(),
            kernel_config: None,
            target: None,
        }
    }

    /// The generic path a whole-matrix layout without a streamed cut of its own takes (one
    /// piece, through the codec) makes the bytes of the streamed cuts of I2_S rows and TL tiles.
    #[test]
    fn the_codec_path_makes_the_streamed_bytes() {
        for (hidden, ffn, heads, quant) in [
            (160, 480, 5, "i2_s"),
            (256, 768, 4, "tl1"),
            (384, 1568, 6, "tl2"),
        ] {
            let spec = small_spec(hidden, ffn, heads, quant, 5);
            let plan = plan(&spec).unwrap();
            let mut s = Scratch::default();
            let (mut piece_buf, mut whole) = (Vec::new(), Vec::new());
            let mut checked = 0;
            for t in &plan.tensors {
                let Some(TernaryCodec::Whole(c)) = t.spec.ty.ternary_codec() else {
                    continue;
                };
                let mut streamed = Vec::new();
                for j in 0..pieces(t) {
                    piece_imp(spec.seed, t, j, &mut s, &mut piece_buf).unwrap();
                    streamed.extend_from_slice(&piece_buf);
                }
                whole_bytes(spec.seed, t, &c, &mut s, &mut whole).unwrap();
                assert!(streamed == whole, "{quant} {}", t.spec.name);
                checked += 1;
            }
            assert!(checked > 0, "{quant}");
        }
    }

    #[test]
    fn the_baseline_build_makes_the_same_pieces() {
        // `piece` runs the build of each table this CPU has; `piece_imp` inlined here is the
        // baseline one. Small shapes with K % 128 != 0, a TL2 two-part region and TQ's F16 fallback.
        for (hidden, ffn, heads, quant) in [
            (160, 480, 5, "i2_s"),
            (256, 768, 4, "tl1"),
            (384, 1568, 6, "tl2"),
            (256, 768, 4, "tq1_0"),
            (384, 1152, 6, "tq2_0"),
            (256, 768, 4, "f16"),
            (256, 768, 4, "f32"),
        ] {
            let spec = small_spec(hidden, ffn, heads, quant, 11);
            let plan = plan(&spec).unwrap();
            let (mut wide, mut base) = (Scratch::default(), Scratch::default());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for kern in kernels::available() {
                for t in &plan.tensors {
                    for j in 0..pieces(t) {
                        piece(kern, spec.seed, t, j, &mut wide, &mut a).unwrap();
                        piece_imp(spec.seed, t, j, &mut base, &mut b).unwrap();
                        assert!(a == b, "{} {quant} {} piece {j}", kern.name(), t.spec.name);
                    }
                }
            }
        }
    }
}
