//! Binding a GGUF file's metadata and tensors for [`Model::load`](super::Model::load): the
//! hyperparameters from the `<arch>.*` keys, each matrix in the [`WeightFormat`] it is held in
//! (re-packing TL1/TL2 and TQ1_0, and every projection in validation mode), and the TL kernel
//! parameters that decoding needs.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{Arch, Data, Hparams, Matrix};
use crate::gguf::{GgmlType, MappedGguf, TensorInfo, Value};
use crate::quant::layouts::codec::TernaryCodec;
use crate::quant::layouts::{self, i2s, params, tq2_0, KernelEntry};
use crate::runtime::format::{tq2_shared_scale, WeightFormat, QK_K, TQ2_BLOCK_BYTES};
use crate::runtime::RuntimeError;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Projection,
    Embedding,
    Head,
}

pub(super) struct Binder<'g> {
    pub file: PathBuf,
    pub gguf: &'g MappedGguf,
    pub used: HashSet<String>,
    pub tl_params: Vec<KernelEntry>,
    /// Kernel parameters recorded in the file ([`params::GGUF_KEY`]).
    pub tl_file: Vec<KernelEntry>,
    pub tl_loaded: bool,
    pub ternary_as_i2s: bool,
}

impl Binder<'_> {
    /// The ternary codes and single scale of a projection stored as TQ1_0/TQ2_0 (block scales
    /// must agree) or as float values (fake-quantized: one magnitude besides zero).
    fn ternary_codes(
        &self,
        name: &str,
        t: &crate::gguf::TensorInfo,
        m: usize,
        k: usize,
    ) -> Result<(Vec<i8>, f32), RuntimeError> {
        let bytes = self.gguf.tensor_bytes(t);
        let n = m * k;
        let bad = |why: String| self.tensor_err(name, why);
        if let Some(TernaryCodec::Blocks(c)) = t.ty.ternary_codec() {
            let (codes, d) = (c.codes)(bytes, n).map_err(|e| bad(e.to_string()))?;
            let scale = d.iter().fold(0f32, |a, &b| a.max(b.abs()));
            for (b, (blk, &db)) in codes.chunks_exact(c.block_values).zip(&d).enumerate() {
                if blk.iter().any(|&c| c != 0) && db.abs() != scale {
                    return Err(bad(format!(
                        "block {b} has scale {db}, others {scale}: not one ternary scale per tensor"
                    )));
                }
            }
            return Ok((codes, scale));
        }
        match t.ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0 => {
                let vals: Vec<f32> = match t.ty {
                    GgmlType::F32 => bytes[..4 * n]
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                    GgmlType::F16 => bytes[..2 * n]
                        .chunks_exact(2)
                        .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                        .collect(),
                    _ => crate::quant::layouts::q8_0::dequantize(bytes, n)
                        .map_err(|e| bad(e.to_string()))?,
                };
                let scale = vals.iter().fold(0f32, |a, &b| a.max(b.abs()));
                let mut codes = vec![0i8; n];
                for (i, (&x, c)) in vals.iter().zip(codes.iter_mut()).enumerate() {
                    if x.abs() < 1e-6 {
                        continue;
                    }
                    if (x.abs() - scale).abs() > scale * 1e-3 {
                        return Err(bad(format!(
                            "value {x} at row {}, column {} is neither 0 nor ±{scale}: the weights are not ternary",
                            i / k,
                            i % k
                        )));
                    }
                    *c = if x > 0.0 { 1 } else { -1 };
                }
                Ok((codes, scale))
            }
            other => Err(bad(format!("{other} is not a ternary layout"))),
        }
    }

    fn meta_err(&self, key: &str, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Metadata {
            file: self.file.clone(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn tensor_err(&self, tensor: &str, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::Tensor {
            file: self.file.clone(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    fn value(&self, key: &str) -> Option<&Value> {
        self.gguf.header.get(key)
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>, RuntimeError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(x) => usize::try_from(x)
                    .map(Some)
                    .map_err(|_| self.meta_err(key, format!("value {x} is too large"))),
                None => Err(self.meta_err(key, format!("expected an integer, found {v}"))),
            },
        }
    }

    fn req_usize(&self, key: &str) -> Result<usize, RuntimeError> {
        self.opt_usize(key)?
            .ok_or_else(|| self.meta_err(key, "required key is missing"))
    }

    fn req_positive(&self, key: &str) -> Result<usize, RuntimeError> {
        match self.req_usize(key)? {
            0 => Err(self.meta_err(key, "must be positive")),
            v => Ok(v),
        }
    }

    fn opt_f32(&self, key: &str) -> Result<Option<f32>, RuntimeError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) => Ok(Some(x as f32)),
                None => Err(self.meta_err(key, format!("expected a number, found {v}"))),
            },
        }
    }

    pub(super) fn hparams(&mut self) -> Result<Hparams, RuntimeError> {
        let arch_key = "general.architecture";
        let arch_s = self
            .value(arch_key)
            .ok_or_else(|| self.meta_err(arch_key, "required key is missing"))?
            .as_str()
            .ok_or_else(|| self.meta_err(arch_key, "expected a string"))?
            .to_string();
        let arch = Arch::from_name(&arch_s).ok_or_else(|| RuntimeError::UnsupportedArch {
            file: self.file.clone(),
            arch: arch_s.clone(),
        })?;
        let k = |s: &str| format!("{arch_s}.{s}");
        let n_layer = self.req_usize(&k("block_count"))?;
        // Every block has at least its seven projections: a count the file cannot hold is an
        // error before anything is allocated for it.
        let tensors = self.gguf.header.tensors.len();
        if n_layer > tensors / 7 {
            return Err(self.meta_err(
                &k("block_count"),
                format!("{n_layer} blocks, but the file holds only {tensors} tensors"),
            ));
        }
        let n_embd = self.req_positive(&k("embedding_length"))?;
        let n_ff = self.req_positive(&k("feed_forward_length"))?;
        let n_head = self.req_positive(&k("attention.head_count"))?;
        let n_head_kv = self
            .opt_usize(&k("attention.head_count_kv"))?
            .unwrap_or(n_head);
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(self.meta_err(
                &k("attention.head_count_kv"),
                format!("{n_head_kv} does not divide head_count {n_head}"),
            ));
        }
        let head_dim = match self.opt_usize(&k("attention.key_length"))? {
            Some(d) => d,
            None => {
                if n_embd % n_head != 0 {
                    return Err(self.meta_err(
                        &k("attention.head_count"),
                        format!("{n_head} heads do not divide embedding_length {n_embd}"),
                    ));
                }
                n_embd / n_head
            }
        };
        if let Some(v) = self.opt_usize(&k("attention.value_length"))? {
            if v != head_dim {
                return Err(self.meta_err(
                    &k("attention.value_length"),
                    format!("{v} differs from the key length {head_dim} (not supported)"),
                ));
            }
        }
        let n_rot = self
            .opt_usize(&k("rope.dimension_count"))?
            .unwrap_or(head_dim);
        if n_rot % 2 != 0 || n_rot > head_dim || n_rot == 0 {
            return Err(self.meta_err(
                &k("rope.dimension_count"),
                format!("{n_rot} must be even, positive and at most the head size {head_dim}"),
            ));
        }
        let n_ctx_train = self.req_usize(&k("context_length"))?;
        let rope_freq_base = self.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
        let rms_key = k("attention.layer_norm_rms_epsilon");
        let rms_eps = self
            .opt_f32(&rms_key)?
            .ok_or_else(|| self.meta_err(&rms_key, "required key is missing"))?;

        let scaling_key = k("rope.scaling.type");
        let mut rope_freq_scale = 1.0f32;
        let scaling = match self.value(&scaling_key) {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| self.meta_err(&scaling_key, "expected a string"))?
                    .to_string(),
            ),
        };
        match scaling.as_deref() {
            None | Some("none") => {
                if let Some(f) = self.opt_f32(&k("rope.scale_linear"))? {
                    if f != 0.0 {
                        rope_freq_scale = 1.0 / f;
                    }
                }
            }
            Some("linear") => {
                if let Some(f) = self.opt_f32(&k("rope.scaling.factor"))? {
                    if f != 0.0 {
                        rope_freq_scale = 1.0 / f;
                    }
                }
            }
            Some(other) => {
                return Err(self.meta_err(
                    &scaling_key,
                    format!("rope scaling {other:?} is not supported (none or linear)"),
                ))
            }
        }

        let act_key = k(crate::arch::HIDDEN_ACTIVATION);
        let activation = match self.value(&act_key) {
            None => arch.activation(),
            Some(v) => {
                let name = v
                    .as_str()
                    .ok_or_else(|| self.meta_err(&act_key, "expected a string"))?;
                crate::arch::Activation::from_name(name).ok_or_else(|| {
                    self.meta_err(
                        &act_key,
                        format!(
                            "activation {name:?} is not supported ({})",
                            crate::arch::Activation::names_list()
                        ),
                    )
                })?
            }
        };

        let embd = self.tensor("token_embd.weight")?;
        let n_vocab = match embd.dims.as_slice() {
            [d0, d1] if *d0 as usize == n_embd => *d1 as usize,
            d => {
                return Err(self.tensor_err(
                    "token_embd.weight",
                    format!("dims {d:?}, expected [{n_embd}, n_vocab]"),
                ))
            }
        };
        if let Some(v) = self.opt_usize(&k("vocab_size"))? {
            if v != n_vocab {
                return Err(self.meta_err(
                    &k("vocab_size"),
                    format!("{v} differs from the {n_vocab} rows of token_embd.weight"),
                ));
            }
        }
        Ok(Hparams {
            arch,
            activation,
            n_vocab,
            n_embd,
            n_ff,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            n_ctx_train,
            rope_freq_base,
            rope_freq_scale,
            rms_eps,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.gguf.header.tensor(name).is_some()
    }

    fn tensor(&self, name: &str) -> Result<&TensorInfo, RuntimeError> {
        self.gguf
            .header
            .tensor(name)
            .ok_or_else(|| RuntimeError::MissingTensor {
                file: self.file.clone(),
                tensor: name.to_string(),
            })
    }

    fn abs_range(&self, t: &TensorInfo, len: usize) -> Range<usize> {
        let start = (self.gguf.header.data_start + t.offset) as usize;
        start..start + len
    }

    pub(super) fn norm(&mut self, name: &str, n: usize) -> Result<Vec<f32>, RuntimeError> {
        let t = self.tensor(name)?.clone();
        if t.dims != [n as u64] {
            return Err(self.tensor_err(name, format!("dims {:?}, expected [{n}]", t.dims)));
        }
        if t.ty != GgmlType::F32 {
            return Err(self.tensor_err(name, format!("type {}, expected F32", t.ty)));
        }
        let bytes = self.gguf.tensor_bytes(&t);
        let v = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        self.used.insert(name.to_string());
        Ok(v)
    }

    pub(super) fn matrix(
        &mut self,
        name: &str,
        k: usize,
        m: usize,
        role: Role,
    ) -> Result<Matrix, RuntimeError> {
        let t = self.tensor(name)?.clone();
        if t.dims != [k as u64, m as u64] {
            return Err(self.tensor_err(
                name,
                format!(
                    "dims {:?}, expected [{k}, {m}] (ggml order: inputs, outputs)",
                    t.dims
                ),
            ));
        }
        // Projections: every ternary layout, and float or Q8_0 values (fake-quantized).
        let floats = [GgmlType::Q8_0, GgmlType::F16, GgmlType::F32];
        let codec = t.ty.ternary_codec();
        let ok = floats.contains(&t.ty) || (role == Role::Projection && codec.is_some());
        if !ok {
            let mut names: Vec<&str> = Vec::new();
            if role == Role::Projection {
                names.extend(
                    crate::gguf::TYPE_TABLE
                        .iter()
                        .filter(|i| i.ty.ternary_codec().is_some())
                        .map(|i| i.name),
                );
            }
            names.extend(floats.iter().map(|t| t.name()));
            return Err(self.tensor_err(
                name,
                format!(
                    "type {} is not supported here (expected one of {})",
                    t.ty,
                    names.join(", ")
                ),
            ));
        }
        let mut scale = 1.0f32;
        if self.ternary_as_i2s
            && role == Role::Projection
            && !matches!(codec, Some(TernaryCodec::Whole(_)))
        {
            let (codes, s) = self.ternary_codes(name, &t, m, k)?;
            let out = i2s::pack_rows_padded(&codes, k)
                .map_err(|e| self.tensor_err(name, format!("re-packing as I2_S: {e}")))?;
            self.used.insert(name.to_string());
            return Ok(Matrix {
                name: name.to_string(),
                rows: m,
                cols: k,
                file_type: t.ty,
                format: WeightFormat::I2s,
                scale: s,
                tq2_shared_scale: None,
                data: Data::Owned(out),
            });
        }
        let (format, data) = match (t.ty, codec) {
            (GgmlType::I2_S, _) => {
                scale = self
                    .gguf
                    .ternary_scale(&t)
                    .ok_or_else(|| self.tensor_err(name, "no room for the I2_S scale"))?;
                if k % i2s::BLOCK_VALUES == 0 {
                    (WeightFormat::I2s, Data::File(self.abs_range(&t, m * k / 4)))
                } else {
                    // Rows start inside blocks in the file: held row-aligned, zero-padded.
                    let (codes, _) = i2s::unpack(self.gguf.tensor_bytes(&t), m, k)
                        .map_err(|e| self.tensor_err(name, e.to_string()))?;
                    let out = i2s::pack_rows_padded(&codes, k)
                        .map_err(|e| self.tensor_err(name, format!("re-packing as I2_S: {e}")))?;
                    (WeightFormat::I2s, Data::Owned(out))
                }
            }
            (GgmlType::TQ2_0, _) => (
                WeightFormat::Tq2,
                Data::File(self.abs_range(&t, t.nbytes as usize)),
            ),
            (GgmlType::Q8_0, _) => (
                WeightFormat::Q8_0,
                Data::File(self.abs_range(&t, t.nbytes as usize)),
            ),
            (GgmlType::F16, _) => (
                WeightFormat::F16,
                Data::File(self.abs_range(&t, t.nbytes as usize)),
            ),
            (GgmlType::F32, _) => (
                WeightFormat::F32,
                Data::File(self.abs_range(&t, t.nbytes as usize)),
            ),
            // Any other whole-matrix layout (TL1, TL2) is held as I2_S rows.
            (_, Some(TernaryCodec::Whole(c))) => {
                scale = self
                    .gguf
                    .ternary_scale(&t)
                    .ok_or_else(|| self.tensor_err(name, "no room for the tensor's scale"))?;
                let p =
                    c.tl.map(|layout| self.tl_params_for(name, layout, m, k))
                        .transpose()?;
                let codes = (c.unpack)(self.gguf.tensor_bytes(&t), m, k, p.as_ref()).map_err(
                    |e| match p {
                        Some(p) => self.tensor_err(name, format!("decoding with {p}: {e}")),
                        None => self.tensor_err(name, e.to_string()),
                    },
                )?;
                let out = i2s::pack_rows_padded(&codes, k)
                    .map_err(|e| self.tensor_err(name, format!("re-packing as I2_S: {e}")))?;
                (WeightFormat::I2s, Data::Owned(out))
            }
            // Any other block layout (TQ1_0): 256-value blocks as TQ2_0 blocks with their
            // scales; other block sizes as I2_S rows with their one scale.
            (_, Some(TernaryCodec::Blocks(c))) => {
                if c.block_values == QK_K {
                    let (codes, scales) = (c.codes)(self.gguf.tensor_bytes(&t), m * k)
                        .map_err(|e| self.tensor_err(name, e.to_string()))?;
                    let mut out = vec![0u8; codes.len() / QK_K * TQ2_BLOCK_BYTES];
                    tq2_0::pack_block_codes_into(&codes, &scales, &mut out)
                        .map_err(|e| self.tensor_err(name, format!("re-packing as TQ2_0: {e}")))?;
                    (WeightFormat::Tq2, Data::Owned(out))
                } else {
                    let (codes, s) = self.ternary_codes(name, &t, m, k)?;
                    scale = s;
                    let out = i2s::pack_rows_padded(&codes, k)
                        .map_err(|e| self.tensor_err(name, format!("re-packing as I2_S: {e}")))?;
                    (WeightFormat::I2s, Data::Owned(out))
                }
            }
            (_, None) => unreachable!("type checked above"),
        };
        self.used.insert(name.to_string());
        let tq2_shared_scale = match (&data, format) {
            (Data::File(_), WeightFormat::Tq2) => tq2_shared_scale(self.gguf.tensor_bytes(&t)),
            (Data::Owned(v), WeightFormat::Tq2) => tq2_shared_scale(v),
            _ => None,
        };
        Ok(Matrix {
            name: name.to_string(),
            rows: m,
            cols: k,
            file_type: t.ty,
            format,
            scale,
            tq2_shared_scale,
            data,
        })
    }

    fn tl_params_for(
        &mut self,
        name: &str,
        layout: params::TlLayout,
        m: usize,
        k: usize,
    ) -> Result<layouts::TlParams, RuntimeError> {
        if !self.tl_loaded {
            self.tl_loaded = true;
            self.tl_file = self.recorded_tl_params()?;
            if self.tl_params.is_empty() {
                self.tl_params = self.tl_params_beside(layout)?;
            }
        }
        // What the file records of its own packing; then what the user gave; then the built-in
        // tables matched by shape (the file's general.name only breaks ties).
        if let Some(p) = params::find_entry(&self.tl_file, m, k) {
            return Ok(p);
        }
        if let Some(p) = params::find_entry(&self.tl_params, m, k) {
            return Ok(p);
        }
        let model_name = self
            .value("general.name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if let Some((p, _)) = params::table_by_shape(&model_name, layout, m, k) {
            return Ok(p);
        }
        Err(self.tensor_err(
            name,
            format!(
                "{} needs kernel parameters for m = {m}, k = {k}: the file does not record them \
                 ({} absent) and no built-in table has this shape; give the kernel_config.ini \
                 the file was made with, with --kernel-config FILE",
                layout.name(),
                params::GGUF_KEY
            ),
        ))
    }

    /// The kernel parameters the file records ([`params::GGUF_KEY`]), if any.
    fn recorded_tl_params(&self) -> Result<Vec<KernelEntry>, RuntimeError> {
        let Some(v) = self.value(params::GGUF_KEY) else {
            return Ok(Vec::new());
        };
        let text = v
            .as_str()
            .ok_or_else(|| self.meta_err(params::GGUF_KEY, "expected a string"))?;
        params::parse_kernel_config_ini(text)
            .map_err(|e| self.meta_err(params::GGUF_KEY, e.to_string()))
    }

    /// `kernel_config_tl1.ini` / `kernel_config_tl2.ini` / `kernel_config.ini` beside the file.
    fn tl_params_beside(&self, layout: params::TlLayout) -> Result<Vec<KernelEntry>, RuntimeError> {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        let first = format!("kernel_config_{}.ini", layout.suffix());
        for cand in [first.as_str(), "kernel_config.ini"] {
            let p = dir.join(cand);
            if let Ok(text) = std::fs::read_to_string(&p) {
                return params::parse_kernel_config_ini(&text).map_err(|e| {
                    RuntimeError::KernelConfig {
                        file: p.clone(),
                        reason: e.to_string(),
                    }
                });
            }
        }
        Ok(Vec::new())
    }
}
