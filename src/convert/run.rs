//! Executes a [`Plan`]: reads each tensor from the memory-mapped checkpoint, quantizes it in
//! parallel row blocks and streams it into the GGUF writer, through a temporary file in the
//! target directory that is renamed over the target only when everything succeeded.
//!
//! Memory: float tensors are converted in blocks of rows; a ternary tensor is held once as
//! one-byte codes plus its packed bytes (about 1.25 bytes per weight of the largest single
//! matrix), never the model.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use half::f16;
use rayon::prelude::*;

use crate::checkpoint::{Checkpoint, ScaleConvention, StDtype, TensorEntry};
use crate::gguf::{GgmlType, GgufWriter};
use crate::quant::absmean::absmean_src;
use crate::quant::dtype::{to_f32_into, SrcDtype};
use crate::quant::layouts::codec::TernaryCodec;
use crate::quant::layouts::q8_0::Q8_0;
use crate::quant::layouts::{q8_0, BlockGeometry, LayoutError};
use crate::quant::ternary::{find_non_finite_src, Ternarized};
use crate::util::AtomicFile;

use super::plan::{Plan, PlannedTensor, Source};
use super::{ConvertError, ConvertOptions};

/// Values per row block of streamed float work.
const BLOCK_VALUES: usize = 1 << 20;

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
        let buf = BufWriter::with_capacity(8 << 20, file.file());
        let specs = plan.tensors.iter().map(|t| t.spec.clone()).collect();
        let mut w = GgufWriter::new(buf, &plan.kv, specs).map_err(|e| io_err(e.to_string()))?;
        let mut read = 0u64;
        for (i, t) in plan.tensors.iter().enumerate() {
            progress.tensor(&t.spec.name, i, plan.tensors.len());
            let entry = ck
                .tensors
                .get(t.source.hf())
                .expect("planned tensors exist in the checkpoint");
            read += entry.range.len() as u64;
            write_tensor(ck, t, entry, opts, &mut w, out)?;
            ck.tensors.shards[entry.shard].release(entry.range.clone());
            progress.advance(entry.range.len() as u64);
        }
        input_bytes = read;
        let mut buf = w.finish().map_err(|e| io_err(e.to_string()))?;
        buf.flush().map_err(|e| io_err(e.to_string()))?;
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

/// Appends bytes of the current tensor to the writer.
type Put<'p> = dyn Fn(&mut Writer, &[u8]) -> Result<(), ConvertError> + 'p;

fn write_tensor(
    ck: &Checkpoint,
    t: &PlannedTensor,
    entry: &TensorEntry,
    opts: &ConvertOptions,
    w: &mut Writer,
    out: &Path,
) -> Result<(), ConvertError> {
    let data = ck.tensors.data(entry);
    let file = ck.tensors.shards[entry.shard].path.clone();
    let put = |w: &mut Writer, bytes: &[u8]| {
        w.write_data(bytes).map_err(|e| ConvertError::Output {
            path: out.to_path_buf(),
            what: format!("tensor {}: {e}", t.spec.name),
        })
    };
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
    let rows_per_block = (BLOCK_VALUES / t.k.max(1)).max(1);

    match &t.source {
        Source::Float { .. } => {
            let dtype = st_to_src(entry).expect("float source");
            non_finite(dtype)?;
            let mut vals = Vec::new();
            for r0 in (0..t.m).step_by(rows_per_block) {
                let r1 = (r0 + rows_per_block).min(t.m);
                vals.resize((r1 - r0) * t.k, 0f32);
                to_f32_into(
                    dtype,
                    &data[r0 * t.k * dtype.size()..r1 * t.k * dtype.size()],
                    &mut vals,
                );
                let bytes = encode_float(t.spec.ty, t.spec.ty.ternary_codec(), &vals)
                    .map_err(layout_err)?;
                put(w, &bytes)?;
            }
            Ok(())
        }
        Source::Latent { .. } => {
            let dtype = st_to_src(entry).expect("latent source is float");
            non_finite(dtype)?;
            let tern = Ternarized::new(absmean_src(dtype, data, opts.absmean), dtype);
            let src_rows = RowSource::Latent {
                data,
                dtype,
                k: t.k,
                tern,
            };
            emit_ternary(t, &src_rows, tern.scale, w, &put, &layout_err)
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
            emit_ternary(t, &src_rows, scale, w, &put, &layout_err)
        }
    }
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
    },
    Packed {
        data: &'a [u8],
        /// Rows of the packed array (`M / 4`).
        rows: usize,
        k: usize,
    },
}

impl RowSource<'_> {
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

fn emit_ternary(
    t: &PlannedTensor,
    src: &RowSource,
    scale: f32,
    w: &mut Writer,
    put: &Put,
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
            let mut bytes = vec![0u8; t.nbytes as usize];
            (c.pack_into)(&codes, m, k, t.tl.as_ref(), scale, &mut bytes).map_err(layout_err)?;
            put(w, &bytes)
        }
        _ => {
            // Float or block outputs: stream blocks of rows of fake-quantized values.
            let rows_per_block = (BLOCK_VALUES / k.max(1)).max(1);
            let mut vals = Vec::new();
            for r0 in (0..m).step_by(rows_per_block) {
                let r1 = (r0 + rows_per_block).min(m);
                vals.resize((r1 - r0) * k, 0f32);
                vals.par_chunks_mut(k).enumerate().for_each_init(
                    || (Vec::new(), Vec::new()),
                    |(s, c), (i, row)| {
                        src.values(source_row(r0 + i, t.permute_heads, m), scale, s, c, row);
                    },
                );
                let bytes = encode_float(t.spec.ty, codec, &vals).map_err(layout_err)?;
                put(w, &bytes)?;
            }
            Ok(())
        }
    }
}

/// Encodes f32 values (whole rows) as F32, F16, Q8_0 or a ternary block layout (`codec`).
fn encode_float(
    ty: GgmlType,
    codec: Option<TernaryCodec>,
    vals: &[f32],
) -> Result<Vec<u8>, LayoutError> {
    const PAR: usize = 1 << 16;
    if let Some(TernaryCodec::Blocks(c)) = codec {
        return block_encode(vals, c.block_values, c.block_bytes, c.quantize_into);
    }
    Ok(match ty {
        GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => {
            let mut out = vec![0u8; vals.len() * 2];
            out.par_chunks_mut(PAR * 2)
                .zip(vals.par_chunks(PAR))
                .for_each(|(o, v)| {
                    for (b, x) in o.chunks_exact_mut(2).zip(v) {
                        b.copy_from_slice(&f16::from_f32(*x).to_le_bytes());
                    }
                });
            out
        }
        GgmlType::Q8_0 => block_encode(
            vals,
            Q8_0::BLOCK_VALUES,
            Q8_0::BLOCK_BYTES,
            q8_0::quantize_into,
        )?,
        other => unreachable!("no float encoder for {other}"),
    })
}

/// Encodes whole rows in whole blocks of `block` values and `block_bytes` bytes with the
/// layout's quantizer `f`, in parallel.
fn block_encode(
    vals: &[f32],
    block: usize,
    block_bytes: usize,
    f: fn(&[f32], &mut [u8]) -> Result<(), LayoutError>,
) -> Result<Vec<u8>, LayoutError> {
    let per = 1024 * block;
    let mut out = vec![0u8; vals.len() / block * block_bytes];
    out.par_chunks_mut(per / block * block_bytes)
        .zip(vals.par_chunks(per))
        .try_for_each(|(o, v)| f(v, o))?;
    Ok(out)
}
