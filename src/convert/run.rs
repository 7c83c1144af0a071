//! Executes a [`Plan`]: reads each tensor from the memory-mapped checkpoint, quantizes it in
//! parallel row blocks and streams it into the GGUF writer, through a temporary file in the
//! target directory that is renamed over the target only when everything succeeded.
//!
//! Two stages overlap: this thread (with rayon's pool) makes the output bytes in pieces of
//! rows, each row read, fake-quantized and encoded straight into its place in the piece, while
//! a writer thread writes the finished pieces in order. A bounded channel and recycled buffers
//! keep at most [`PIPE_DEPTH`]` + 2` pieces alive. Float tensors whose bytes do not change (F32
//! in, F32 out) are written from the map as they are.
//!
//! Memory: float tensors and the fake-quantized outputs stream in pieces of rows, and the
//! source pages of each piece are released once it is made (once written, for bytes written
//! from the map); an I2_S/TL tensor is held once as one-byte codes plus its packed bytes (about
//! 1.25 bytes per weight of the largest single matrix), never the model.

use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::time::Instant;

use rayon::prelude::*;

use crate::checkpoint::tensors::Shard;
use crate::checkpoint::{Checkpoint, ScaleConvention, StDtype, TensorEntry};
use crate::gguf::{GgmlType, GgufWriter};
use crate::quant::absmean::absmean_src;
use crate::quant::dtype::{to_f32_into, SrcDtype};
use crate::quant::encode;
use crate::quant::layouts::codec::TernaryCodec;
use crate::quant::layouts::LayoutError;
use crate::quant::ternary::{find_non_finite_src, Ternarized};
use crate::util::AtomicFile;

use super::plan::{Plan, PlannedTensor, Source};
use super::{ConvertError, ConvertOptions};

/// Values per piece of streamed float work (a piece is whole rows, at least one).
const BLOCK_VALUES: usize = 1 << 20;

/// Pieces waiting for the writer thread; with the one it writes and the one being made, at most
/// `PIPE_DEPTH + 2` buffers exist.
const PIPE_DEPTH: usize = 2;

/// The file's buffer, for the small writes (header, padding, tails): pieces at least this large
/// go straight to the file, without a copy.
const WRITE_BUFFER: usize = 256 << 10;

/// Bytes of mapped source written per write call (its pages are released after each).
const MAPPED_PIECE: usize = 4 << 20;

/// Progress reporting (a bar on a terminal, nothing in a pipe).
pub trait Progress: Sync {
    /// A tensor starts.
    fn tensor(&self, _name: &str, _index: usize, _count: usize) {}
    /// `bytes` more bytes of input were processed.
    fn advance(&self, _bytes: u64) {}
}

impl Progress for () {}

/// What a conversion did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// The output file.
    pub output: String,
    /// Its size.
    pub bytes: u64,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of checkpoint tensor data read.
    pub input_bytes: u64,
    /// Wall time in seconds.
    pub seconds: f64,
}

fn st_to_src(t: &TensorEntry) -> Option<SrcDtype> {
    match t.dtype {
        StDtype::F32 => Some(SrcDtype::F32),
        StDtype::F16 => Some(SrcDtype::F16),
        StDtype::BF16 => Some(SrcDtype::BF16),
        _ => None,
    }
}

/// Writes the file `plan` describes to `out`.
pub fn write(
    ck: &Checkpoint,
    plan: &Plan,
    opts: &ConvertOptions,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Summary, ConvertError> {
    let start = Instant::now();
    let io_err = |what: String| ConvertError::Output {
        path: out.to_path_buf(),
        what,
    };
    let mut file =
        AtomicFile::create(out).map_err(|e| io_err(format!("cannot create the output: {e}")))?;
    let input_bytes;
    {
        let buf = BufWriter::with_capacity(WRITE_BUFFER, file.file());
        let specs = plan.tensors.iter().map(|t| t.spec.clone()).collect();
        let w = GgufWriter::new(buf, &plan.kv, specs).map_err(|e| io_err(e.to_string()))?;
        let (tx, rx) = sync_channel(PIPE_DEPTH);
        let (back, spare) = channel();
        input_bytes = std::thread::scope(|scope| {
            let writer = scope.spawn(move || write_pieces(w, rx, back, out));
            let mut pipe = Pipe { tx, spare };
            let made = (|| {
                let mut read = 0u64;
                for (i, t) in plan.tensors.iter().enumerate() {
                    progress.tensor(&t.spec.name, i, plan.tensors.len());
                    let entry = ck
                        .tensors
                        .get(t.source.hf())
                        .expect("planned tensors exist in the checkpoint");
                    read += entry.range.len() as u64;
                    write_tensor(ck, t, entry, opts, &mut pipe)?;
                    progress.advance(entry.range.len() as u64);
                }
                pipe.send(Piece::End)?;
                Ok(read)
            })();
            drop(pipe);
            let written = writer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // The writer's error explains a pipe that closed under this thread.
            written.and(made)
        })?;
    }
    let bytes = file
        .file()
        .metadata()
        .map_err(|e| io_err(e.to_string()))?
        .len();
    if bytes != plan.file_size {
        return Err(io_err(format!(
            "wrote {bytes} bytes but the plan says {}",
            plan.file_size
        )));
    }
    file.commit()
        .map_err(|e| io_err(format!("cannot finish the output: {e}")))?;
    Ok(Summary {
        output: out.display().to_string(),
        bytes,
        tensors: plan.tensors.len(),
        input_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

type Writer<'a> = GgufWriter<BufWriter<&'a mut std::fs::File>>;

/// What the writer thread gets, in file order.
enum Piece<'a> {
    /// Bytes made here; the buffer goes back to [`Pipe`] for reuse once written.
    Owned(Vec<u8>),
    /// Bytes of the mapped checkpoint written as they are; their pages are released after.
    Mapped(&'a Shard, Range<usize>),
    /// Everything was sent: finish the file.
    End,
}

/// The sending side of the writer thread.
struct Pipe<'a> {
    tx: SyncSender<Piece<'a>>,
    spare: Receiver<Vec<u8>>,
}

impl<'a> Pipe<'a> {
    /// A buffer of `n` bytes, one the writer is done with when there is one. Its contents
    /// are unspecified (whatever an earlier piece left): the encoders overwrite every byte.
    fn buffer(&self, n: usize) -> Vec<u8> {
        let mut b = self.spare.try_recv().unwrap_or_default();
        b.resize(n, 0);
        b
    }

    /// A [`buffer`](Self::buffer) of `n` zero bytes.
    fn zeroed(&self, n: usize) -> Vec<u8> {
        let mut b = self.buffer(n);
        b.fill(0);
        b
    }

    /// Queues a piece (blocks while [`PIPE_DEPTH`] pieces wait). An error means the writer
    /// stopped; its own error is what the conversion reports.
    fn send(&self, piece: Piece<'a>) -> Result<(), ConvertError> {
        self.tx
            .send(piece)
            .map_err(|_| ConvertError::Other("the output writer stopped".into()))
    }
}

/// The writer thread: writes the pieces in order, hands buffers back, and finishes the file
/// on [`Piece::End`]. Without it (the producer failed) the file is left unfinished and `Ok` is
/// returned: the producer's error is the one to report.
fn write_pieces(
    mut w: Writer,
    rx: Receiver<Piece>,
    back: Sender<Vec<u8>>,
    out: &Path,
) -> Result<(), ConvertError> {
    let err = |w: &Writer, e: crate::gguf::WriteError| ConvertError::Output {
        path: out.to_path_buf(),
        what: match w.current() {
            Some(t) => format!("tensor {}: {e}", t.spec.name),
            None => e.to_string(),
        },
    };
    for piece in rx {
        match piece {
            Piece::Owned(bytes) => {
                w.write_data(&bytes).map_err(|e| err(&w, e))?;
                let _ = back.send(bytes);
            }
            Piece::Mapped(shard, range) => {
                w.write_data(&shard.bytes()[range.clone()])
                    .map_err(|e| err(&w, e))?;
                shard.release(range);
            }
            Piece::End => {
                let mut buf = w.finish().map_err(|e| err_plain(out, e))?;
                return buf.flush().map_err(|e| err_plain(out, e));
            }
        }
    }
    Ok(())
}

fn err_plain(out: &Path, e: impl std::fmt::Display) -> ConvertError {
    ConvertError::Output {
        path: out.to_path_buf(),
        what: e.to_string(),
    }
}

fn write_tensor<'a>(
    ck: &'a Checkpoint,
    t: &PlannedTensor,
    entry: &TensorEntry,
    opts: &ConvertOptions,
    w: &mut Pipe<'a>,
) -> Result<(), ConvertError> {
    let data = ck.tensors.data(entry);
    let shard = &ck.tensors.shards[entry.shard];
    let file = shard.path.clone();
    let layout_err = |source: LayoutError| ConvertError::Layout {
        tensor: t.spec.name.clone(),
        source,
    };
    let non_finite = |dtype: SrcDtype| -> Result<(), ConvertError> {
        if let Some(i) = find_non_finite_src(dtype, data) {
            let mut v = [0f32];
            to_f32_into(
                dtype,
                &data[i * dtype.size()..(i + 1) * dtype.size()],
                &mut v,
            );
            return Err(ConvertError::NonFinite {
                file: file.clone(),
                tensor: entry.name.clone(),
                row: i / t.k,
                col: i % t.k,
                value: v[0],
            });
        }
        Ok(())
    };
    // The source bytes of rows `rows` (unpermuted rows of a float or latent tensor).
    let row_range = |rows: Range<usize>, size: usize| {
        entry.range.start + rows.start * t.k * size..entry.range.start + rows.end * t.k * size
    };

    let result = match &t.source {
        Source::Float { .. } => {
            let dtype = st_to_src(entry).expect("float source");
            let size = dtype.size();
            // The non-finite scan goes piece by piece, just before each piece is made, so the
            // tensor's pages are read once and leave the resident set as the pieces go; pieces
            // are scanned in order, so the first bad value is still the one named.
            let scan = |bytes: Range<usize>| -> Result<(), ConvertError> {
                let piece = &shard.bytes()[bytes.clone()];
                if find_non_finite_src(dtype, piece).is_some() {
                    non_finite(dtype)?;
                }
                Ok(())
            };
            if dtype == SrcDtype::F32 && t.spec.ty == GgmlType::F32 {
                // Little-endian f32 in and out: the mapped bytes are the tensor's bytes, written
                // from the map (the writer releases their pages).
                let r = entry.range.clone();
                for at in (r.start..r.end).step_by(MAPPED_PIECE) {
                    let piece = at..(at + MAPPED_PIECE).min(r.end);
                    scan(piece.clone())?;
                    w.send(Piece::Mapped(shard, piece))?;
                }
                return Ok(());
            }
            stream_rows(
                w,
                t.spec.ty,
                (t.m, t.k),
                |rows| scan(row_range(rows, size)),
                |r, _, vals| to_f32_into(dtype, &data[r * t.k * size..(r + 1) * t.k * size], vals),
                |rows| shard.release(row_range(rows, size)),
                &layout_err,
            )
        }
        Source::Latent { .. } => {
            let dtype = st_to_src(entry).expect("latent source is float");
            // One pass for the absmean, which is not finite exactly when a value is not (a
            // mean of finite magnitudes cannot overflow; torch's float sum can, and then the
            // scan finds nothing and the conversion goes on as before): only then the scan that
            // names the value.
            let absmean = absmean_src(dtype, data, opts.absmean);
            if !absmean.is_finite() {
                non_finite(dtype)?;
            }
            let tern = Ternarized::new(absmean, dtype);
            let release = |rows| shard.release(row_range(rows, dtype.size()));
            let src_rows = RowSource::Latent {
                data,
                dtype,
                k: t.k,
                tern,
                release: (t.permute_heads.is_none()).then_some(&release),
            };
            emit_ternary(t, &src_rows, tern.scale, w, &layout_err)
        }
        Source::Packed { scale, .. } => {
            let se = ck.tensors.get(scale).expect("planned scale exists");
            let ws = read_scalar(ck, se).ok_or_else(|| {
                ConvertError::Other(format!(
                    "{}: {} must be one finite, non-zero float",
                    ck.tensors.shards[se.shard].path.display(),
                    se.name
                ))
            })?;
            // Which way `weight_scale` applies, settled against transformers'
            // `integrations/bitnet.py` (5.23; same in 4.57): `AutoBitLinear` (offline, the
            // 2B-4T repo's `linear_class: autobitlinear`) computes
            // `output = F.linear(ActQuant(x), T) * self.weight_scale`, so W = T·ws;
            // `BitLinear` (the default class, Llama3-8B-1.58 / Falcon) computes
            // `y / (input_scale * weight_scale)` on the int8 product, so W = T/ws. The
            // transformers goldens of tests/families.rs check both.
            let scale = match ck.config.scale_convention() {
                ScaleConvention::Multiply => ws,
                ScaleConvention::Divide => 1.0 / ws,
            };
            let src_rows = RowSource::Packed {
                data,
                rows: t.m / 4,
                k: t.k,
            };
            emit_ternary(t, &src_rows, scale, w, &layout_err)
        }
    };
    shard.release(entry.range.clone());
    result
}

/// The single value of a `weight_scale` tensor, as f32.
fn read_scalar(ck: &Checkpoint, e: &TensorEntry) -> Option<f32> {
    if e.numel() != 1 {
        return None;
    }
    let dtype = st_to_src(e)?;
    let mut v = [0f32];
    to_f32_into(dtype, ck.tensors.data(e), &mut v);
    (v[0].is_finite() && v[0] != 0.0).then_some(v[0])
}

/// Reads ternary rows (codes and fake-quantized values) from either kind of source.
enum RowSource<'a> {
    Latent {
        data: &'a [u8],
        dtype: SrcDtype,
        k: usize,
        tern: Ternarized,
        /// Releases the pages of source rows that will not be read again (rows are read in
        /// order when nothing is permuted).
        release: Option<&'a (dyn Fn(Range<usize>) + Sync)>,
    },
    Packed {
        data: &'a [u8],
        /// Rows of the packed array (`M / 4`).
        rows: usize,
        k: usize,
    },
}

impl RowSource<'_> {
    /// Source rows `rows` were read for the last time.
    fn done(&self, rows: Range<usize>) {
        if let RowSource::Latent {
            release: Some(release),
            ..
        } = self
        {
            release(rows);
        }
    }

    /// Latent source row `r` widened to f32 into `scratch` (resized to K).
    fn latent_row(&self, r: usize, scratch: &mut Vec<f32>) {
        if let RowSource::Latent { data, dtype, k, .. } = *self {
            scratch.resize(k, 0.0);
            to_f32_into(
                dtype,
                &data[r * k * dtype.size()..(r + 1) * k * dtype.size()],
                scratch,
            );
        }
    }

    /// Codes of source row `r` into `out` (length K).
    fn codes(&self, r: usize, scratch: &mut Vec<f32>, out: &mut [i8]) {
        match *self {
            RowSource::Latent { tern, .. } => {
                self.latent_row(r, scratch);
                tern.codes_into(scratch, out);
            }
            RowSource::Packed { data, rows, k } => {
                // Row r of the unpacked (4R, C) matrix is bits 2i..2i+1 of packed row r mod R,
                // with i = r div R (transformers' unpack_weights).
                let (i, pr) = (r / rows, r % rows);
                let src = &data[pr * k..(pr + 1) * k];
                for (o, &b) in out.iter_mut().zip(src) {
                    *o = ((b >> (2 * i)) & 3) as i8 - 1;
                }
            }
        }
    }

    /// Fake-quantized values of source row `r` (what the F32/F16 files hold).
    fn values(
        &self,
        r: usize,
        scale: f32,
        scratch: &mut Vec<f32>,
        codes: &mut Vec<i8>,
        out: &mut [f32],
    ) {
        match *self {
            RowSource::Latent { tern, .. } => {
                self.latent_row(r, scratch);
                tern.values_into(scratch, out);
            }
            RowSource::Packed { k, .. } => {
                codes.resize(k, 0);
                self.codes(r, scratch, codes);
                for (o, &c) in out.iter_mut().zip(codes.iter()) {
                    *o = c as f32 * scale;
                }
            }
        }
    }
}

/// Maps an output row to its source row: identity, or for llama's q/k the rotate-half →
/// interleaved permutation within each head (new row `2j+t` ← old row `t·d/2 + j`).
fn source_row(r: usize, permute: Option<usize>, m: usize) -> usize {
    match permute {
        None => r,
        Some(heads) => {
            let d = m / heads;
            let (h, w) = (r / d, r % d);
            let (j, t) = (w / 2, w % 2);
            h * d + t * (d / 2) + j
        }
    }
}

fn emit_ternary<'a>(
    t: &PlannedTensor,
    src: &RowSource,
    scale: f32,
    w: &mut Pipe<'a>,
    layout_err: &dyn Fn(LayoutError) -> ConvertError,
) -> Result<(), ConvertError> {
    let (m, k) = (t.m, t.k);
    let codec = t.spec.ty.ternary_codec();
    match codec {
        Some(TernaryCodec::Whole(c)) => {
            let mut codes = vec![0i8; m * k];
            codes
                .par_chunks_mut(k)
                .enumerate()
                .for_each_init(Vec::new, |scratch, (r, row)| {
                    src.codes(source_row(r, t.permute_heads, m), scratch, row);
                });
            let mut bytes = w.zeroed(t.nbytes as usize);
            (c.pack_into)(&codes, m, k, t.tl.as_ref(), scale, &mut bytes).map_err(layout_err)?;
            w.send(Piece::Owned(bytes))
        }
        _ => {
            // Float or block outputs: stream pieces of rows of fake-quantized values.
            stream_rows(
                w,
                t.spec.ty,
                (m, k),
                |_| Ok(()),
                |r, (s, c), row| src.values(source_row(r, t.permute_heads, m), scale, s, c, row),
                |rows| src.done(rows),
                layout_err,
            )
        }
    }
}

/// Per-thread scratch of [`RowSource::values`].
type RowScratch = (Vec<f32>, Vec<i8>);

/// Streams an M×K tensor of a type whose rows are whole blocks (F32, F16, Q8_0, TQ1_0, TQ2_0)
/// in pieces of about [`BLOCK_VALUES`] values: `check(rows)` first, then rows in parallel,
/// each made by `row(r, scratch, values)` and encoded straight into its place in a recycled
/// buffer; `done(rows)` follows each piece sent.
fn stream_rows(
    w: &mut Pipe,
    ty: GgmlType,
    (m, k): (usize, usize),
    check: impl Fn(Range<usize>) -> Result<(), ConvertError>,
    row: impl Fn(usize, &mut RowScratch, &mut [f32]) + Sync,
    done: impl Fn(Range<usize>),
    layout_err: &dyn Fn(LayoutError) -> ConvertError,
) -> Result<(), ConvertError> {
    let row_bytes = ty
        .row_bytes(k)
        .expect("planned float and TQ rows are whole blocks")
        .max(1);
    let rows_per_piece = (BLOCK_VALUES / k.max(1)).max(1);
    for r0 in (0..m).step_by(rows_per_piece) {
        let r1 = (r0 + rows_per_piece).min(m);
        check(r0..r1)?;
        let mut buf = w.buffer((r1 - r0) * row_bytes);
        buf.par_chunks_mut(row_bytes)
            .enumerate()
            .try_for_each_init(
                || (RowScratch::default(), Vec::new()),
                |(scratch, vals), (i, out)| {
                    vals.resize(k, 0f32);
                    row(r0 + i, scratch, vals);
                    encode::values_into(ty, vals, out)
                },
            )
            .map_err(layout_err)?;
        w.send(Piece::Owned(buf))?;
        done(r0..r1);
    }
    Ok(())
}
