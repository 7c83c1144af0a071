//! The golden file format (`golden/FORMAT.md`): who made a golden, the model facts, the
//! tolerances, and each prompt's token ids and logits.

use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::{reference, ValidateError};

/// Who made a golden.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Producer {
    /// Implementation.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Free text.
    #[serde(default)]
    pub details: String,
}

/// What a golden describes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GoldenModel {
    /// Model name.
    pub name: String,
    /// Where it came from.
    pub source: String,
    /// `checkpoint` or `gguf`.
    pub kind: String,
    /// sha256 of the GGUF file (kind `gguf`).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Architecture.
    pub arch: String,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// The arithmetic, for people.
    #[serde(default)]
    pub weights: String,
}

/// What a check requires.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tolerances {
    /// Minimum cosine similarity of every compared row.
    pub min_cosine: f64,
    /// Maximum absolute difference of any logit, when set.
    pub max_abs_diff: Option<f32>,
    /// Minimum share of rows whose argmax agrees.
    pub min_top1_agreement: f64,
    /// Whether the greedy continuation must be the same.
    pub greedy_must_match: bool,
    /// Largest mean KL divergence per prompt (nats), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mean_kl: Option<f64>,
}

/// Logit rows as base64 little-endian f32.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EncodedRows {
    /// `f32-le-base64`.
    pub encoding: String,
    /// Rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// The data.
    pub data: String,
}

impl EncodedRows {
    /// Encodes rows of equal length.
    pub fn encode(rows: &[Vec<f32>]) -> EncodedRows {
        let cols = rows.first().map_or(0, |r| r.len());
        let bytes: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        EncodedRows {
            encoding: "f32-le-base64".into(),
            rows: rows.len(),
            cols,
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Decodes the rows.
    pub fn decode(&self) -> Result<Vec<Vec<f32>>, String> {
        if self.encoding != "f32-le-base64" {
            return Err(format!("unknown logits encoding {:?}", self.encoding));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.data.as_bytes())
            .map_err(|e| format!("logits data: {e}"))?;
        if bytes.len() != self.rows * self.cols * 4 {
            return Err(format!(
                "logits data holds {} bytes, {} rows × {} cols need {}",
                bytes.len(),
                self.rows,
                self.cols,
                self.rows * self.cols * 4
            ));
        }
        let vals: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(vals.chunks(self.cols.max(1)).map(|r| r.to_vec()).collect())
    }
}

/// One prompt of a golden.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GoldenPrompt {
    /// Prompt text.
    pub text: String,
    /// Token ids, BOS included.
    pub token_ids: Vec<u32>,
    /// Greedy continuation.
    pub greedy_ids: Vec<u32>,
    /// Its text.
    #[serde(default)]
    pub greedy_text: String,
    /// `sequential` or `batched`.
    #[serde(default)]
    pub mode: String,
    /// Rows: one per prompt position, then one per greedy token fed.
    #[serde(default)]
    pub logits: Option<EncodedRows>,
    /// The residual stream at every block boundary for the prompt's tokens (checkpoint goldens,
    /// first prompt): `n_layer + 1` rows of `n × n_embd` values, the embedding output first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<EncodedRows>,
    /// Each block's stream after its attention (`n_layer` rows of `n × n_embd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<EncodedRows>,
}

/// A digest of one projection's ternary content.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TensorDigest {
    /// GGUF tensor name.
    pub name: String,
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// sha256 of the codes as canonical I2_S rows (independent of the file's layout).
    pub codes_sha256: String,
    /// The scale.
    pub scale: f32,
}

/// A golden file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Golden {
    /// `bitconv-golden`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// Who made it.
    pub producer: Producer,
    /// What it describes.
    pub model: GoldenModel,
    /// What validation requires.
    pub tolerances: Tolerances,
    /// The prompts.
    pub prompts: Vec<GoldenPrompt>,
    /// Digests of the ternary projections, when the producer recorded them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorDigest>>,
    /// What the checkpoint says (checkpoint goldens computed by bitconv): the facts a file must
    /// agree with. With it, the block states of the prompts decide, and logit comparisons are
    /// reported but do not fail a file (a deep random model amplifies float-order differences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<reference::Reference>,
}

impl Golden {
    /// Reads and checks a golden file.
    pub fn read(path: &Path) -> Result<Golden, ValidateError> {
        let text = std::fs::read_to_string(path).map_err(|e| ValidateError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let g: Golden = serde_json::from_str(&text).map_err(|e| ValidateError::Golden {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
        if g.format != "bitconv-golden" || g.version != 1 {
            return Err(ValidateError::Golden {
                path: path.to_path_buf(),
                what: format!(
                    "format {:?} version {} (expected bitconv-golden 1)",
                    g.format, g.version
                ),
            });
        }
        for (i, p) in g.prompts.iter().enumerate() {
            if let Some(l) = &p.logits {
                let want = p.token_ids.len() + p.greedy_ids.len();
                if l.rows > want || l.cols != g.model.n_vocab {
                    return Err(ValidateError::Golden {
                        path: path.to_path_buf(),
                        what: format!(
                            "prompt {i}: {} rows of {} logits, expected at most {want} rows of n_vocab {}",
                            l.rows, l.cols, g.model.n_vocab
                        ),
                    });
                }
            }
        }
        Ok(g)
    }

    /// Writes the golden as JSON.
    pub fn write(&self, path: &Path) -> Result<(), ValidateError> {
        use std::io::Write;
        let io = |e| ValidateError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let mut f = crate::util::AtomicFile::create(path).map_err(io)?;
        let text = serde_json::to_string_pretty(self).expect("goldens serialize");
        f.file().write_all(text.as_bytes()).map_err(io)?;
        f.commit().map_err(io)
    }
}
