//! Loading a GGUF model for the runtime: hyperparameters from the `<arch>.*` metadata keys and
//! the tensors of the `bitnet`, `bitnet-b1.58` (alias `bitnet-25`) and `llama` architectures.
//!
//! The file is memory-mapped. Weights are kept compact:
//!
//! | type in the file | held as |
//! |---|---|
//! | I2_S | the file's own bytes (canonical 128-value interleave, `K/4` bytes per row) + scale |
//! | TL1, TL2 | decoded once with the kernel parameters and re-packed as I2_S rows (2 bits per weight) |
//! | TQ2_0 | the file's own blocks |
//! | TQ1_0 | re-packed once as TQ2_0 blocks (same codes and block scales) |
//! | Q8_0, F16, F32 | the file's own bytes |
//!
//! By default ([`WeightMemory::Resident`]) every matrix a generated token reads whole (the
//! projections and the LM head) is then copied, in that form, into one anonymous region of
//! memory that asks the kernel for transparent huge pages (2 MiB): streaming weights through
//! 4 KiB pages of a file mapping costs a TLB walk every 4 KiB and stops the hardware
//! prefetchers at every page boundary; on the 2-core test machine the copy made the one-token
//! matmuls 12-30% faster (`bitconv bench --mmap` compares). [`WeightMemory::Mapped`] keeps them
//! in the mapping (no copy, pages shared with the page cache).
//!
//! Norm vectors (F32) are copied into small vectors. Anything the architecture does not use,
//! any missing tensor, wrong shape or unsupported type is an error naming the tensor.
//!
//! TL1/TL2 data can only be decoded with the `(BM, BK, bm)` tiling it was packed with. Files
//! bitconv writes record it (metadata key `bitconv.tl.kernel_config`, which bitnet.cpp ignores);
//! for files made elsewhere the loader takes, per shape, the entries of
//! [`LoadOptions::tl_params`] (`--kernel-config`), else `kernel_config_tl1.ini` /
//! `kernel_config_tl2.ini` / `kernel_config.ini` from the model's directory, else the built-in
//! tables matched by shape.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

use half::f16;
use rayon::prelude::*;

use crate::gguf::{GgmlType, MappedGguf};
use crate::quant::layouts::KernelEntry;

pub use crate::arch::{Activation, Arch};

use super::format::{WeightFormat, Q8_0_BLOCK_BYTES, QK8_0};
use super::RuntimeError;

mod binder;

use binder::{Binder, Role};

/// Options of [`Model::load`].
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Kernel parameters (`kernel_config.ini` sections, keyed by `m` = output rows and `k` =
    /// input columns) used to decode TL1/TL2 tensors. When empty and the file holds TL1/TL2
    /// tensors, the loader reads `kernel_config_tl1.ini` or `kernel_config_tl2.ini` (matching
    /// the tensor type), else `kernel_config.ini`, from the model's directory.
    pub tl_params: Vec<KernelEntry>,
    /// Validation mode: every projection is re-expressed as I2_S codes with one scale, so the
    /// forward pass applies bitnet.cpp's I2_S arithmetic whatever the file stores. TQ1_0/TQ2_0
    /// codes take their (common) block scale; F32/F16 projections, which hold fake-quantized
    /// weights, take `sign(x)` as codes and `max |x|` as scale. A projection that is not
    /// ternary is an error naming it. The logits then depend only on the file's ternary
    /// content, so files of every type can be checked against one golden.
    pub ternary_as_i2s: bool,
    /// Where the weights the forward pass streams are held.
    pub weights: WeightMemory,
    /// Runs the file as this runtime computes it (`validate --as`): the FFN activation it
    /// applies to the file's architecture ([`crate::arch::Target::activation_for`]), whatever
    /// the file's activation key says.
    pub run_as: Option<crate::arch::Target>,
}

/// Where [`Model::load`] keeps the matrices a token reads whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightMemory {
    /// Copied into one anonymous region backed by huge pages where the OS gives them (Linux
    /// transparent huge pages); falls back to the mapping if that memory cannot be had.
    #[default]
    Resident,
    /// Read in place from the file mapping (and converted layouts from ordinary heap memory).
    Mapped,
}

/// Hyperparameters read from the metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Hparams {
    /// The architecture.
    pub arch: Arch,
    /// The FFN activation: `{arch}.hidden_activation` where the file has it, else the
    /// architecture's; [`LoadOptions::run_as`] overrides both.
    pub activation: Activation,
    /// Vocabulary size (rows of `token_embd`).
    pub n_vocab: usize,
    /// Hidden size (`embedding_length`).
    pub n_embd: usize,
    /// FFN size (`feed_forward_length`).
    pub n_ff: usize,
    /// Number of blocks (`block_count`).
    pub n_layer: usize,
    /// Query heads (`attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`attention.head_count_kv`, default `n_head`).
    pub n_head_kv: usize,
    /// Dimension of one head (`attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    /// Rotated dimensions per head (`rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// Training context (`context_length`).
    pub n_ctx_train: usize,
    /// RoPE base (`rope.freq_base`, default 10000).
    pub rope_freq_base: f32,
    /// RoPE position scale: `1 / rope.scaling.factor` for linear scaling, else 1.
    pub rope_freq_scale: f32,
    /// RMSNorm epsilon (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
}

#[derive(Debug)]
enum Data {
    /// Absolute byte range in the mapped file.
    File(Range<usize>),
    /// Bytes converted at load time.
    Owned(Vec<u8>),
    /// Byte range in the model's resident copy.
    Resident(Range<usize>),
}

/// Where matrices' bytes live: the mapped file and the model's resident copy (empty when the
/// model has none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Store<'a> {
    file: &'a [u8],
    resident: &'a [u8],
}

/// A 2-D weight: `rows` outputs (`M`, GGUF `ne1`) × `cols` inputs (`K`, GGUF `ne0`).
#[derive(Debug)]
pub struct Matrix {
    name: String,
    rows: usize,
    cols: usize,
    file_type: GgmlType,
    format: WeightFormat,
    scale: f32,
    /// For TQ2_0-held weights whose blocks all have one scale: its f16 bits.
    tq2_shared_scale: Option<u16>,
    data: Data,
}

impl Matrix {
    /// The tensor name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Output rows `M`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input columns `K`.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The tensor type in the file.
    pub fn file_type(&self) -> GgmlType {
        self.file_type
    }

    /// How the weights are held in memory.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The per-tensor scale of ternary (I2_S-held) weights; 1 for other formats.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// For TQ2_0-held weights: the f16 bits of the scale every block has, if one does (files
    /// converted from BitNet checkpoints), which the batched kernels use (see
    /// [`crate::runtime::Kernels::tq2_dots`]).
    pub fn tq2_shared_scale(&self) -> Option<u16> {
        self.tq2_shared_scale
    }

    /// Bytes held in memory outside the file mapping (converted layouts, resident copies).
    pub fn owned_bytes(&self) -> usize {
        match &self.data {
            Data::File(_) => 0,
            Data::Owned(v) => v.len(),
            Data::Resident(r) => r.len(),
        }
    }

    /// Whether the bytes are in the model's resident copy ([`WeightMemory::Resident`]).
    pub fn is_resident(&self) -> bool {
        matches!(self.data, Data::Resident(_))
    }

    /// All rows' bytes (`rows · row_bytes`).
    pub(crate) fn bytes<'a>(&'a self, store: Store<'a>) -> &'a [u8] {
        match &self.data {
            Data::File(r) => &store.file[r.clone()],
            Data::Owned(v) => v,
            Data::Resident(r) => &store.resident[r.clone()],
        }
    }

    /// Bytes of one row.
    pub(crate) fn row_bytes(&self) -> usize {
        self.format.row_bytes(self.cols)
    }

    /// Dequantizes row `r` into `out` (`cols` values). Supported for F32, F16 and Q8_0 (the
    /// embedding formats).
    pub(crate) fn dequantize_row(&self, store: Store<'_>, r: usize, out: &mut [f32]) {
        let rb = self.row_bytes();
        let row = &self.bytes(store)[r * rb..(r + 1) * rb];
        match self.format {
            WeightFormat::F32 => {
                for (o, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            WeightFormat::F16 => {
                for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            WeightFormat::Q8_0 => {
                for (ob, blk) in out
                    .chunks_exact_mut(QK8_0)
                    .zip(row.chunks_exact(Q8_0_BLOCK_BYTES))
                {
                    let d = f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                    for (o, &q) in ob.iter_mut().zip(&blk[2..]) {
                        *o = (q as i8) as f32 * d;
                    }
                }
            }
            WeightFormat::I2s | WeightFormat::Tq2 => {
                unreachable!("embedding rows are F32, F16 or Q8_0 (checked at load)")
            }
        }
    }
}

/// The tensors of one block.
#[derive(Debug)]
pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub attn_sub_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
    pub ffn_sub_norm: Option<Vec<f32>>,
}

impl Layer {
    /// The seven projections, in the order a token reads them.
    pub fn projections(&self) -> [&Matrix; 7] {
        [
            &self.wq,
            &self.wk,
            &self.wv,
            &self.wo,
            &self.w_gate,
            &self.w_up,
            &self.w_down,
        ]
    }

    /// As [`Layer::projections`], mutably.
    fn projections_mut(&mut self) -> [&mut Matrix; 7] {
        [
            &mut self.wq,
            &mut self.wk,
            &mut self.wv,
            &mut self.wo,
            &mut self.w_gate,
            &mut self.w_up,
            &mut self.w_down,
        ]
    }
}

/// A model ready to run: the mapped file, its hyperparameters and its bound tensors.
pub struct Model {
    gguf: MappedGguf,
    hparams: Hparams,
    tok_embd: Matrix,
    output: Option<Matrix>,
    output_norm: Vec<f32>,
    rope_freqs: Option<Vec<f32>>,
    pub(crate) layers: Vec<Layer>,
    /// The resident copy of the streamed matrices ([`WeightMemory::Resident`]).
    resident: Option<memmap2::Mmap>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.gguf.path())
            .field("hparams", &self.hparams)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Opens and binds a GGUF model. See the module docs for what is accepted.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model, RuntimeError> {
        let gguf = MappedGguf::open(path)?;
        let mut b = Binder {
            file: path.to_path_buf(),
            gguf: &gguf,
            used: HashSet::new(),
            tl_params: opts.tl_params.clone(),
            tl_file: Vec::new(),
            tl_loaded: false,
            ternary_as_i2s: opts.ternary_as_i2s,
        };
        let mut hparams = b.hparams()?;
        if let Some(t) = opts.run_as {
            hparams.activation = t.activation_for(hparams.arch);
        }
        let hp = &hparams;
        let q_dim = hp.n_head * hp.head_dim;
        let kv_dim = hp.n_head_kv * hp.head_dim;

        let tok_embd = b.matrix("token_embd.weight", hp.n_embd, hp.n_vocab, Role::Embedding)?;
        let output_norm = b.norm("output_norm.weight", hp.n_embd)?;
        let output = if hp.arch.allows_output() && b.has("output.weight") {
            Some(b.matrix("output.weight", hp.n_embd, hp.n_vocab, Role::Head)?)
        } else {
            None
        };
        let rope_freqs = if b.has("rope_freqs.weight") {
            Some(b.norm("rope_freqs.weight", hp.n_rot / 2)?)
        } else {
            None
        };

        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let sub = hp.arch.has_sub_norms();
            layers.push(Layer {
                attn_norm: b.norm(&n("attn_norm"), hp.n_embd)?,
                wq: b.matrix(&n("attn_q"), hp.n_embd, q_dim, Role::Projection)?,
                wk: b.matrix(&n("attn_k"), hp.n_embd, kv_dim, Role::Projection)?,
                wv: b.matrix(&n("attn_v"), hp.n_embd, kv_dim, Role::Projection)?,
                wo: b.matrix(&n("attn_output"), q_dim, hp.n_embd, Role::Projection)?,
                attn_sub_norm: if sub {
                    Some(b.norm(&n("attn_sub_norm"), q_dim)?)
                } else {
                    None
                },
                ffn_norm: b.norm(&n("ffn_norm"), hp.n_embd)?,
                w_gate: b.matrix(&n("ffn_gate"), hp.n_embd, hp.n_ff, Role::Projection)?,
                w_up: b.matrix(&n("ffn_up"), hp.n_embd, hp.n_ff, Role::Projection)?,
                w_down: b.matrix(&n("ffn_down"), hp.n_ff, hp.n_embd, Role::Projection)?,
                ffn_sub_norm: if sub {
                    Some(b.norm(&n("ffn_sub_norm"), hp.n_ff)?)
                } else {
                    None
                },
            });
        }
        if let Some(t) = gguf
            .header
            .tensors
            .iter()
            .find(|t| !b.used.contains(&t.name))
        {
            return Err(RuntimeError::Tensor {
                file: b.file.clone(),
                tensor: t.name.clone(),
                reason: format!(
                    "not used by architecture {} (unexpected or unsupported tensor)",
                    hp.arch.name()
                ),
            });
        }
        drop(b);
        let mut model = Model {
            gguf,
            hparams,
            tok_embd,
            output,
            output_norm,
            rope_freqs,
            layers,
            resident: None,
        };
        if opts.weights == WeightMemory::Resident {
            model.make_resident();
        }
        Ok(model)
    }

    /// Copies every projection and the head into one huge-page region (see the module docs);
    /// leaves the model as it is if that memory cannot be had.
    fn make_resident(&mut self) {
        const ALIGN: usize = 64;
        let mut ms: Vec<&mut Matrix> = self
            .layers
            .iter_mut()
            .flat_map(Layer::projections_mut)
            .collect();
        // The head: `output`, or the embedding when tied (an untied embedding is read one row
        // per token and stays where it is).
        match self.output.as_mut() {
            Some(h) => ms.push(h),
            None => ms.push(&mut self.tok_embd),
        }
        let mut offsets = Vec::with_capacity(ms.len());
        let mut total = 0usize;
        for m in &ms {
            offsets.push(total);
            total += (m.rows * m.row_bytes()).div_ceil(ALIGN) * ALIGN;
        }
        if total == 0 {
            return;
        }
        let Some((mut region, skip)) = huge_page_map(total) else {
            return;
        };
        {
            let file = self.gguf.bytes();
            let store = Store {
                file,
                resident: &[],
            };
            let mut rest = &mut region[skip..skip + total];
            let mut pieces = Vec::with_capacity(ms.len());
            for (i, m) in ms.iter().enumerate() {
                let end = offsets.get(i + 1).copied().unwrap_or(total) - offsets[i];
                let (piece, tail) = rest.split_at_mut(end);
                pieces.push((piece, m.bytes(store)));
                rest = tail;
            }
            pieces
                .into_par_iter()
                .for_each(|(dst, src)| dst[..src.len()].copy_from_slice(src));
        }
        let Ok(region) = region.make_read_only() else {
            return;
        };
        for (m, off) in ms.into_iter().zip(offsets) {
            let len = m.rows * m.row_bytes();
            m.data = Data::Resident(skip + off..skip + off + len);
        }
        self.resident = Some(region);
    }

    /// Bytes of the resident copy ([`WeightMemory::Resident`]; 0 when the weights are read
    /// from the mapping).
    pub fn resident_bytes(&self) -> usize {
        self.matrices()
            .filter(|m| m.is_resident())
            .map(Matrix::owned_bytes)
            .sum()
    }

    /// How much of the resident copy the OS backs with huge pages right now (Linux:
    /// `AnonHugePages` of its mapping in `/proc/self/smaps`); `None` where that cannot be read.
    pub fn resident_huge_page_bytes(&self) -> Option<u64> {
        let region = self.resident.as_ref()?;
        let text = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let (lo, hi) = (
            region.as_ptr() as usize,
            region.as_ptr() as usize + region.len(),
        );
        // The advice splits the mapping into several areas: sum those inside the region.
        let mut inside = false;
        let mut total = None;
        for line in text.lines() {
            let head = line.split(' ').next().unwrap_or("");
            if let Some((a, b)) = head.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = a >= lo && b <= hi;
                    continue;
                }
            }
            if let (true, Some(v)) = (inside, line.strip_prefix("AnonHugePages:")) {
                let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
                *total.get_or_insert(0) += kb * 1024;
            }
        }
        total
    }

    /// Where the matrices' bytes are.
    pub(crate) fn store(&self) -> Store<'_> {
        Store {
            file: self.gguf.bytes(),
            resident: self.resident.as_deref().unwrap_or(&[]),
        }
    }

    /// The model file's path.
    pub fn path(&self) -> &Path {
        self.gguf.path()
    }

    /// The mapped file (header and bytes).
    pub fn gguf(&self) -> &MappedGguf {
        &self.gguf
    }

    /// The hyperparameters.
    pub fn hparams(&self) -> &Hparams {
        &self.hparams
    }

    /// The token embedding (`n_vocab` rows × `n_embd`).
    pub fn tok_embd(&self) -> &Matrix {
        &self.tok_embd
    }

    /// The LM head: `output.weight`, or `token_embd.weight` when the head is tied.
    pub fn head(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.tok_embd)
    }

    /// Whether the LM head is tied to the token embedding.
    pub fn is_tied(&self) -> bool {
        self.output.is_none()
    }

    /// The final norm's weights.
    pub fn output_norm(&self) -> &[f32] {
        &self.output_norm
    }

    /// RoPE frequency factors (`rope_freqs.weight`), if the file has them.
    pub fn rope_freqs(&self) -> Option<&[f32]> {
        self.rope_freqs.as_deref()
    }

    /// The bytes of a matrix in its [`WeightFormat`] (canonical I2_S rows for ternary
    /// projections loaded with [`LoadOptions::ternary_as_i2s`]).
    pub fn matrix_data<'a>(&'a self, m: &'a Matrix) -> &'a [u8] {
        m.bytes(self.store())
    }

    /// Every weight matrix, in block order, then the embedding and an untied head.
    pub fn matrices(&self) -> impl Iterator<Item = &Matrix> {
        self.layers
            .iter()
            .flat_map(Layer::projections)
            .chain(std::iter::once(&self.tok_embd))
            .chain(self.output.iter())
    }

    /// Bytes held in memory besides the mapping: converted weights, the resident copy and norm
    /// vectors.
    pub fn heap_bytes(&self) -> usize {
        let norms: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attn_norm.len()
                    + l.ffn_norm.len()
                    + l.attn_sub_norm.as_ref().map_or(0, Vec::len)
                    + l.ffn_sub_norm.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>()
            + self.output_norm.len();
        self.matrices().map(Matrix::owned_bytes).sum::<usize>() + 4 * norms
    }
}

/// Anonymous memory for `len` bytes starting on a 2 MiB boundary, advised for transparent huge
/// pages: the mapping (over-allocated by 2 MiB) and the offset of the aligned start. The advice
/// is only advice: without huge pages the memory is ordinary.
pub(crate) fn huge_page_map(len: usize) -> Option<(memmap2::MmapMut, usize)> {
    const HUGE: usize = 2 << 20;
    let map = memmap2::MmapOptions::new()
        .len(len + HUGE)
        .map_anon()
        .ok()?;
    let skip = (HUGE - map.as_ptr() as usize % HUGE) % HUGE;
    #[cfg(target_os = "linux")]
    let _ = map.advise_range(memmap2::Advice::HugePage, skip, len);
    Some((map, skip))
}
