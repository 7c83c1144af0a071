//! Hugging Face checkpoints: safetensors over mmap (single or sharded), `config.json` as a typed
//! model description, HF → GGUF tensor names, and tokenizer export.

pub mod config;
pub mod names;
pub mod sentencepiece;
pub mod tensors;
pub mod tokenizer;

use std::path::{Path, PathBuf};

use serde_json::json;

pub use config::{Activation, Arch, ModelConfig, ScaleConvention};
pub use names::{map_name, Mapped};
pub use tensors::{SafetensorSet, StDtype, TensorEntry};

/// Errors reading a checkpoint. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A required file is missing.
    #[error("{}: missing: {what}", path.display())]
    Missing {
        /// Where it was looked for.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// A file's content is invalid.
    #[error("{}: {what}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

impl CheckpointError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Tokenizer files a checkpoint directory may hold.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
];

/// An opened checkpoint directory.
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: ModelConfig,
    /// The tensors.
    pub tensors: SafetensorSet,
}

impl Checkpoint {
    /// Opens a checkpoint directory: `config.json` and the safetensors files.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        if !dir.is_dir() {
            return Err(CheckpointError::Missing {
                path: dir.to_path_buf(),
                what: "not a directory".into(),
            });
        }
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(CheckpointError::Missing {
                path: cfg_path,
                what: "config.json (every Hugging Face checkpoint has one)".into(),
            });
        }
        let config = ModelConfig::from_file(&cfg_path)?;
        let tensors = SafetensorSet::open_dir(dir)?;
        // Every layer has at least its seven projections: a layer count the checkpoint cannot
        // hold is an error before a plan is built for it.
        let n = tensors.tensors.len() as u64;
        if config.num_layers > n / 7 {
            return Err(CheckpointError::Invalid {
                path: cfg_path,
                what: format!(
                    "num_hidden_layers {} is more than the {n} tensors of the checkpoint can hold",
                    config.num_layers
                ),
            });
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            tensors,
        })
    }

    /// The tokenizer files present in the directory.
    pub fn tokenizer_files(&self) -> Vec<&'static str> {
        TOKENIZER_FILES
            .iter()
            .copied()
            .filter(|f| self.dir.join(f).is_file())
            .collect()
    }

    /// True when the checkpoint stores packed ternary weights (uint8 + `weight_scale`).
    pub fn is_packed(&self) -> bool {
        self.tensors
            .tensors
            .iter()
            .any(|t| t.name.ends_with(".weight_scale"))
    }

    /// The directory's name, which the reference converter writes as `general.name`.
    pub fn dir_name(&self) -> String {
        let canon = self.dir.canonicalize().unwrap_or_else(|_| self.dir.clone());
        canon
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    }

    /// Output types that apply to this checkpoint, with the reason for any that do not.
    pub fn applicable_types(&self) -> Vec<(&'static str, Result<(), String>)> {
        let c = &self.config;
        let shapes: Vec<(u64, u64)> = config::PROJECTIONS
            .iter()
            .filter_map(|s| c.projection_shape(s))
            .collect();
        let all = |pred: &dyn Fn(u64, u64) -> bool, why: &str| -> Result<(), String> {
            match shapes.iter().find(|&&(m, k)| !pred(m, k)) {
                None => Ok(()),
                Some((m, k)) => Err(format!("{why} (shape {m}x{k})")),
            }
        };
        vec![
            (
                "i2_s",
                all(&|m, k| (m * k) % 128 == 0, "M·K must be a multiple of 128"),
            ),
            (
                "tl1",
                all(
                    &|m, k| m % 32 == 0 && k % 64 == 0,
                    "needs M % 32 == 0 and K % 64 == 0",
                ),
            ),
            (
                "tl2",
                all(
                    &|m, k| m % 32 == 0 && k % 32 == 0 && k >= 256,
                    "needs M % 32 == 0, K % 32 == 0 and K >= 256",
                ),
            ),
            ("tq1_0", all(&|_, k| k % 256 == 0, "needs K % 256 == 0")),
            ("tq2_0", all(&|_, k| k % 256 == 0, "needs K % 256 == 0")),
            ("f16", Ok(())),
            ("f32", Ok(())),
        ]
    }

    /// A description for `bitconv inspect DIR`.
    pub fn describe(&self) -> serde_json::Value {
        let c = &self.config;
        let mut dtypes = std::collections::BTreeMap::<String, u64>::new();
        for t in &self.tensors.tensors {
            *dtypes.entry(t.dtype.to_string()).or_default() += 1;
        }
        let stored_params: u64 = self
            .tensors
            .tensors
            .iter()
            .filter(|t| !t.name.ends_with("weight_scale"))
            .map(|t| {
                let n = t.numel() as u64;
                if t.dtype == StDtype::U8 && self.is_packed() {
                    n * 4
                } else {
                    n
                }
            })
            .sum();
        let types: Vec<_> = self
            .applicable_types()
            .into_iter()
            .map(|(t, r)| match r {
                Ok(()) => json!({"type": t, "ok": true}),
                Err(why) => json!({"type": t, "ok": false, "why": why}),
            })
            .collect();
        json!({
            "dir": self.dir.display().to_string(),
            "hf_architecture": c.hf_architecture,
            "architecture": c.arch.name(),
            "family": c.arch.info().family,
            "activation": c.activation,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "layers": c.num_layers,
            "heads": c.num_heads,
            "kv_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "vocab_size": c.vocab_size,
            "tied_embeddings": c.tie_word_embeddings,
            "packed": self.is_packed(),
            "parameters": stored_params,
            "parameters_from_config": c.parameter_count(),
            "tensors": self.tensors.tensors.len(),
            "bytes": self.tensors.total_bytes(),
            "dtypes": dtypes,
            "shards": self.tensors.shards.iter().map(|s| s.path.display().to_string()).collect::<Vec<_>>(),
            "tokenizer_files": self.tokenizer_files(),
            "output_types": types,
        })
    }
}
