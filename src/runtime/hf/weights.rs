//! The checkpoint's tensors over memory maps (`model.safetensors`, or the shards named by
//! `model.safetensors.index.json`), decoded a row at a time: nothing is widened to f32 or
//! unpacked as a whole matrix.
//!
//! * Float rows (F32, F16, BF16) are widened on demand, optionally rounded as a GGUF file would
//!   store them ([`FloatRounding`]).
//! * Projection rows become ternary codes (i8) on demand: latent weights through the per-tensor
//!   absmean (the scale is computed once, on first use, and cached), packed uint8 weights as
//!   transformers' `unpack_weights` lays them out.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::{Dtype, SafeTensors};

use super::{FloatRounding, HfError};

/// Where one tensor lives.
#[derive(Clone, Debug)]
struct Loc {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// A safetensors file of the checkpoint and, when an index names the shards, the tensors the
/// index assigns to it.
type Shard = (String, Option<Vec<String>>);

/// The memory-mapped safetensors files of a checkpoint and their tensor tables.
pub(super) struct Store {
    /// What errors about a missing tensor name: the single file or the index.
    origin: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    tensors: HashMap<String, Loc>,
}

impl Store {
    /// How many tensors the checkpoint holds.
    pub(super) fn len(&self) -> usize {
        self.tensors.len()
    }
}

/// One tensor: its bytes in the map, dtype and shape.
#[derive(Clone, Copy)]
pub(super) struct TensorRef<'a> {
    pub name: &'a str,
    pub file: &'a Path,
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Maps `dir/model.safetensors` if it exists, else every shard of
    /// `dir/model.safetensors.index.json` (transformers' order of preference).
    pub fn open(dir: &Path) -> Result<Store, HfError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let (origin, names): (PathBuf, Vec<Shard>) = if single.exists() {
            (single, vec![("model.safetensors".into(), None)])
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| HfError::Parse {
                file: index.clone(),
                reason: e.to_string(),
            })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| HfError::Parse {
                    file: index.clone(),
                    reason: "no weight_map object".into(),
                })?;
            let mut by_file: Vec<Shard> = Vec::new();
            for (tensor, shard) in map {
                let shard = shard.as_str().ok_or_else(|| HfError::Parse {
                    file: index.clone(),
                    reason: format!("weight_map[{tensor:?}] is not a file name"),
                })?;
                if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                    return Err(HfError::Parse {
                        file: index.clone(),
                        reason: format!(
                            "weight_map[{tensor:?}] = {shard:?} is not a plain file name"
                        ),
                    });
                }
                match by_file.iter_mut().find(|(f, _)| f == shard) {
                    Some((_, Some(list))) => list.push(tensor.clone()),
                    _ => by_file.push((shard.to_string(), Some(vec![tensor.clone()]))),
                }
            }
            (index, by_file)
        } else {
            return Err(HfError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "neither model.safetensors nor model.safetensors.index.json exists",
                ),
            });
        };

        let mut files = Vec::new();
        let mut tensors = HashMap::new();
        for (name, wanted) in names {
            let path = dir.join(&name);
            let file = File::open(&path).map_err(io(&path))?;
            // SAFETY: the checkpoint is opened read-only; as for every memory-mapped reader,
            // the file must not be truncated while mapped.
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            let (header, meta) = SafeTensors::read_metadata(&map).map_err(|e| HfError::Parse {
                file: path.clone(),
                reason: format!("not a valid safetensors file: {e}"),
            })?;
            let base = 8 + header;
            let idx = files.len();
            for (tname, info) in meta.tensors() {
                // With an index, a tensor counts only in the shard the index names.
                if let Some(w) = &wanted {
                    if !w.contains(&tname) {
                        continue;
                    }
                }
                let loc = Loc {
                    file: idx,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: base + info.data_offsets.0,
                    end: base + info.data_offsets.1,
                };
                tensors.insert(tname, loc);
            }
            if let Some(w) = &wanted {
                if let Some(t) = w.iter().find(|t| !tensors.contains_key(*t)) {
                    return Err(HfError::MissingTensor {
                        file: path,
                        tensor: t.clone(),
                    });
                }
            }
            files.push((path, map));
        }
        Ok(Store {
            origin,
            files,
            tensors,
        })
    }

    /// Drops tensor `name`'s pages from this process's resident set (they stay in the page
    /// cache): reading a checkpoint through the map then holds one tensor's pages at a time,
    /// whatever the model's size. A no-op for an unknown name.
    pub fn release(&self, name: &str) {
        if let Some(loc) = self.tensors.get(name) {
            crate::util::release_pages(&self.files[loc.file].1, loc.start..loc.end);
        }
    }

    /// A tensor by name.
    pub fn get<'a>(&'a self, name: &'a str) -> Result<TensorRef<'a>, HfError> {
        let loc = self
            .tensors
            .get(name)
            .ok_or_else(|| HfError::MissingTensor {
                file: self.origin.clone(),
                tensor: name.to_string(),
            })?;
        let (path, map) = &self.files[loc.file];
        Ok(TensorRef {
            name,
            file: path,
            dtype: loc.dtype,
            shape: &loc.shape,
            bytes: &map[loc.start..loc.end],
        })
    }
}

impl<'a> TensorRef<'a> {
    pub fn err(&self, reason: impl Into<String>) -> HfError {
        HfError::Tensor {
            file: self.file.to_path_buf(),
            tensor: self.name.to_string(),
            reason: reason.into(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks the shape exactly.
    pub fn expect_shape(&self, want: &[usize]) -> Result<(), HfError> {
        if self.shape != want {
            return Err(self.err(format!(
                "shape {:?}, expected {want:?} from config.json",
                self.shape
            )));
        }
        Ok(())
    }

    /// Checks the dtype is a float one this reader decodes.
    pub fn expect_float(&self) -> Result<(), HfError> {
        match self.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => Ok(()),
            d => Err(self.err(format!(
                "dtype {d:?}, expected a float tensor (F32, F16 or BF16)"
            ))),
        }
    }

    /// Widens `out.len()` values starting at element `offset` to f32 (exactly).
    pub fn read_f32(&self, offset: usize, out: &mut [f32]) {
        match self.dtype {
            Dtype::F32 => {
                let b = &self.bytes[offset * 4..(offset + out.len()) * 4];
                for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::F16 => {
                let b = &self.bytes[offset * 2..(offset + out.len()) * 2];
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
            Dtype::BF16 => {
                let b = &self.bytes[offset * 2..(offset + out.len()) * 2];
                for (o, c) in out.iter_mut().zip(b.chunks_exact(2)) {
                    *o = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
                }
            }
            d => unreachable!("read_f32 on {d:?}: callers check expect_float"),
        }
    }

    /// The whole (small) tensor widened to f32.
    pub fn read_all_f32(&self) -> Result<Vec<f32>, HfError> {
        self.expect_float()?;
        let mut v = vec![0.0; self.numel()];
        self.read_f32(0, &mut v);
        Ok(v)
    }
}

/// Rounds one row of a float tensor as a GGUF file would store it.
pub(super) fn round_row(row: &mut [f32], how: FloatRounding) {
    match how {
        FloatRounding::F32 => {}
        FloatRounding::F16 => {
            for v in row.iter_mut() {
                *v = crate::runtime::kernels::scalar::round_f16(*v);
            }
        }
        FloatRounding::Q8_0 => q8_0_round_trip(row),
    }
}

/// Q8_0 round trip (ggml's reference quantizer, blocks of 32 along the row):
/// `d = amax/127`, `q = round(x·(1/d))` (half away from zero), value `q · f16(d)`.
/// The row length must be a multiple of 32 (checked at open).
pub(super) fn q8_0_round_trip(row: &mut [f32]) {
    for block in row.chunks_mut(32) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let d16 = half::f16::from_f32(d).to_f32();
        for v in block.iter_mut() {
            *v = (*v * id).round() * d16;
        }
    }
}

/// How a projection's output is rescaled from the integer dot product `Σ T·q`
/// (`s_x` = the token's activation scale).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Epilogue {
    /// `dot / s_x · m` (AutoBitLinear: `F.linear(x_q/s_x, T·m)`).
    Mul(f32),
    /// `dot / (s_x · d)` (BitLinear: `y / (input_scale · weight_scale)`).
    Div(f32),
}

impl Epilogue {
    /// The weight value one code `+1` stands for.
    pub fn unit(self) -> f32 {
        match self {
            Epilogue::Mul(m) => m,
            Epilogue::Div(d) => 1.0 / d,
        }
    }

    #[inline]
    pub fn apply(self, dot: i32, act_scale: f32) -> f32 {
        match self {
            Epilogue::Mul(m) => dot as f32 / act_scale * m,
            Epilogue::Div(d) => dot as f32 / (act_scale * d),
        }
    }
}

/// Where a projection's codes come from.
#[derive(Debug)]
enum Codes {
    /// Latent float weights, ternarized per tensor by absmean; the scale
    /// `s = 1/max(mean|W|, 1e-5)` (f32) is computed on first use.
    Latent { scale: OnceLock<f32> },
    /// Packed uint8 `[out/4, in]` (transformers' `pack_weights` layout) with its epilogue.
    Packed { epilogue: Epilogue },
}

/// One BitLinear projection (`out × in`), read from the map row by row.
#[derive(Debug)]
pub(super) struct Projection {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    codes: Codes,
    /// Each row's [`super::row_hash`], kept by the first matmul that decodes every row.
    hashes: OnceLock<Vec<u64>>,
}

impl Projection {
    /// Checks the tensor(s) of projection `name` (`….weight`) against the config's shape and
    /// linear kind.
    pub fn new(
        store: &Store,
        name: String,
        rows: usize,
        cols: usize,
        packed: bool,
        divide: bool,
    ) -> Result<Projection, HfError> {
        let t = store.get(&name)?;
        let codes = if packed {
            if t.dtype != Dtype::U8 {
                return Err(t.err(format!(
                    "dtype {:?}: quantization_config asks for packed uint8 weights (BitLinear / AutoBitLinear offline)",
                    t.dtype
                )));
            }
            if rows % 4 != 0 {
                return Err(t.err(format!(
                    "{rows} output rows cannot be packed four to a byte"
                )));
            }
            t.expect_shape(&[rows / 4, cols])?;
            let sname = format!("{}_scale", name);
            let s = store.get(&sname)?;
            if s.numel() != 1 || s.shape.len() > 1 {
                return Err(s.err(format!("shape {:?}, expected [1] or []", s.shape)));
            }
            let ws = s.read_all_f32()?[0];
            if !ws.is_finite() || ws == 0.0 {
                return Err(s.err(format!("weight scale {ws} is not a finite nonzero number")));
            }
            Codes::Packed {
                epilogue: if divide {
                    Epilogue::Div(ws)
                } else {
                    Epilogue::Mul(ws)
                },
            }
        } else {
            if t.dtype == Dtype::U8 {
                return Err(t.err(
                    "packed uint8 weights, but quantization_config asks for latent float weights (online quantization)",
                ));
            }
            t.expect_float()?;
            t.expect_shape(&[rows, cols])?;
            Codes::Latent {
                scale: OnceLock::new(),
            }
        };
        Ok(Projection {
            name,
            rows,
            cols,
            codes,
            hashes: OnceLock::new(),
        })
    }

    /// The rows' code digests, if a matmul recorded them.
    pub fn row_hashes(&self) -> Option<Vec<u64>> {
        self.hashes.get().cloned()
    }

    /// Records the rows' code digests (the first time only).
    pub fn set_row_hashes(&self, h: Vec<u64>) {
        let _ = self.hashes.set(h);
    }

    /// Whether the rows' digests are recorded.
    pub fn has_row_hashes(&self) -> bool {
        self.hashes.get().is_some()
    }

    /// The epilogue, computing the absmean scale of latent weights on first use.
    pub fn epilogue(&self, t: &TensorRef<'_>) -> Epilogue {
        match &self.codes {
            Codes::Packed { epilogue } => *epilogue,
            Codes::Latent { scale } => {
                let s = *scale.get_or_init(|| absmean_scale(t, self.rows, self.cols));
                // WeightQuant: the effective weight is T / s.
                Epilogue::Mul(1.0f32 / s)
            }
        }
    }

    /// Row `r`'s ternary codes into `out` (`cols` values); `buf` is scratch of `cols` floats.
    /// Call [`Projection::epilogue`] first (it fixes the latent scale).
    pub fn row_codes(&self, t: &TensorRef<'_>, r: usize, buf: &mut [f32], out: &mut [i8]) {
        let k = self.cols;
        match &self.codes {
            Codes::Latent { scale } => {
                let s = *scale.get().expect("epilogue() computes the scale first");
                t.read_f32(r * k, buf);
                // clamp(round_half_even(w·s), −1, 1) is 1 above ½, −1 below −½, else 0.
                for (o, &w) in out.iter_mut().zip(buf.iter()) {
                    let x = w * s;
                    *o = i8::from(x > 0.5) - i8::from(x < -0.5);
                }
            }
            Codes::Packed { .. } => {
                // unpack_weights: row block i (rows i·P … i·P+P−1) sits in bits 2i+1:2i of
                // packed row r − i·P; code c stands for c − 1.
                let p = self.rows / 4;
                let (block, pr) = (r / p, r % p);
                let bytes = &t.bytes[pr * k..(pr + 1) * k];
                let shift = 2 * block as u32;
                for (o, &b) in out.iter_mut().zip(bytes) {
                    *o = ((b >> shift) & 3) as i8 - 1;
                }
            }
        }
    }
}

/// transformers' `WeightQuant` scale: `s = 1/max(mean|W|, 1e-5)` in f32. The mean is taken in
/// f64 (torch sums in f32 in an order that depends on its thread count; the codes agree, the
/// scale may differ by an ulp).
fn absmean_scale(t: &TensorRef<'_>, rows: usize, cols: usize) -> f32 {
    let sums: Vec<f64> = (0..rows)
        .into_par_iter()
        .map_init(
            || vec![0.0f32; cols],
            |buf, r| {
                t.read_f32(r * cols, buf);
                buf.iter().map(|v| v.abs() as f64).sum::<f64>()
            },
        )
        .collect();
    let total: f64 = sums.iter().sum();
    let m = ((total / (rows * cols) as f64) as f32).max(1e-5);
    1.0f32 / m
}
