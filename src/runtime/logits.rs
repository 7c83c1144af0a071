//! Logits files ("BNLG" version 1, the format of the reference runs in `tests/data/tiny`) and
//! comparisons of logit rows.
//!
//! Layout, little endian:
//!
//! ```text
//! char[4] "BNLG"; u32 version = 1; u32 n_vocab; u32 n_prompt; u32 n_gen
//! i32 prompt_ids[n_prompt]               BOS included
//! i32 gen_ids[n_gen]                     greedy continuation
//! f32 prompt_logits[n_prompt][n_vocab]   row p = logits after position p
//! f32 gen_logits[n_gen][n_vocab]         row i = logits after feeding gen_ids[i]
//! ```

use std::path::Path;

use super::RuntimeError;

/// The magic bytes of a logits file.
pub const MAGIC: &[u8; 4] = b"BNLG";
/// The only version defined.
pub const VERSION: u32 = 1;

/// A logits file: the prompt, its greedy continuation and the logits of every position.
#[derive(Clone, Debug, PartialEq)]
pub struct LogitsFile {
    /// Vocabulary size (values per row).
    pub n_vocab: usize,
    /// Prompt token ids (BOS included).
    pub prompt_ids: Vec<i32>,
    /// Greedy continuation: `gen_ids[0]` = argmax of the last prompt row, `gen_ids[i+1]` =
    /// argmax of gen row `i`.
    pub gen_ids: Vec<i32>,
    /// `n_prompt × n_vocab` values, row-major.
    pub prompt_logits: Vec<f32>,
    /// `n_gen × n_vocab` values, row-major.
    pub gen_logits: Vec<f32>,
}

impl LogitsFile {
    /// Reads a logits file.
    pub fn read(path: &Path) -> Result<LogitsFile, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        LogitsFile::parse(&bytes).map_err(|reason| RuntimeError::Logits {
            file: path.to_path_buf(),
            reason,
        })
    }

    /// Parses the bytes of a logits file; the error says what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<LogitsFile, String> {
        if bytes.len() < 20 {
            return Err(format!(
                "{} bytes is too short for the 20-byte header",
                bytes.len()
            ));
        }
        if &bytes[..4] != MAGIC {
            return Err("not a logits file (magic is not \"BNLG\")".into());
        }
        let u = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let version = u(4);
        if version != VERSION {
            return Err(format!(
                "unsupported version {version} (expected {VERSION})"
            ));
        }
        let (n_vocab, n_prompt, n_gen) = (u(8) as usize, u(12) as usize, u(16) as usize);
        let expected = (n_prompt + n_gen)
            .checked_mul(n_vocab)
            .and_then(|v| v.checked_add(n_prompt + n_gen))
            .and_then(|v| v.checked_mul(4))
            .and_then(|v| v.checked_add(20))
            .ok_or("header counts overflow")?;
        if bytes.len() != expected {
            return Err(format!(
                "{} bytes, but n_vocab = {n_vocab}, n_prompt = {n_prompt}, n_gen = {n_gen} need {expected}",
                bytes.len()
            ));
        }
        let mut pos = 20;
        let mut words = |count: usize| {
            let s = &bytes[pos..pos + 4 * count];
            pos += 4 * count;
            s.chunks_exact(4)
                .map(|b| [b[0], b[1], b[2], b[3]])
                .collect::<Vec<[u8; 4]>>()
        };
        let prompt_ids = words(n_prompt)
            .into_iter()
            .map(i32::from_le_bytes)
            .collect();
        let gen_ids = words(n_gen).into_iter().map(i32::from_le_bytes).collect();
        let prompt_logits = words(n_prompt * n_vocab)
            .into_iter()
            .map(f32::from_le_bytes)
            .collect();
        let gen_logits = words(n_gen * n_vocab)
            .into_iter()
            .map(f32::from_le_bytes)
            .collect();
        Ok(LogitsFile {
            n_vocab,
            prompt_ids,
            gen_ids,
            prompt_logits,
            gen_logits,
        })
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            20 + 4 * (self.prompt_ids.len() + self.gen_ids.len())
                + 4 * (self.prompt_logits.len() + self.gen_logits.len()),
        );
        out.extend_from_slice(MAGIC);
        for v in [
            VERSION,
            self.n_vocab as u32,
            self.prompt_ids.len() as u32,
            self.gen_ids.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for id in self.prompt_ids.iter().chain(&self.gen_ids) {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for v in self.prompt_logits.iter().chain(&self.gen_logits) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Writes the file.
    pub fn write(&self, path: &Path) -> Result<(), RuntimeError> {
        std::fs::write(path, self.to_bytes()).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Prompt token ids as `u32` (negative ids, which no tokenizer produces, become 0).
    pub fn prompt_tokens(&self) -> Vec<u32> {
        self.prompt_ids.iter().map(|&i| i.max(0) as u32).collect()
    }

    /// Generated token ids as `u32`.
    pub fn gen_tokens(&self) -> Vec<u32> {
        self.gen_ids.iter().map(|&i| i.max(0) as u32).collect()
    }

    /// Logits after prompt position `p`.
    pub fn prompt_row(&self, p: usize) -> &[f32] {
        &self.prompt_logits[p * self.n_vocab..(p + 1) * self.n_vocab]
    }

    /// Logits after feeding `gen_ids[i]`.
    pub fn gen_row(&self, i: usize) -> &[f32] {
        &self.gen_logits[i * self.n_vocab..(i + 1) * self.n_vocab]
    }

    /// Every prompt row.
    pub fn prompt_rows(&self) -> impl Iterator<Item = &[f32]> {
        self.prompt_logits.chunks_exact(self.n_vocab.max(1))
    }

    /// Every gen row.
    pub fn gen_rows(&self) -> impl Iterator<Item = &[f32]> {
        self.gen_logits.chunks_exact(self.n_vocab.max(1))
    }
}

/// Index of the largest value (the first one on ties, as a greedy sampler picks it; NaN never
/// wins). 0 for an empty slice.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate().skip(1) {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Cosine similarity of two rows, computed in f64 (1 when both are zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Largest `|a_i − b_i|`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// How well two sets of rows agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Rows compared.
    pub rows: usize,
    /// The smallest row cosine.
    pub min_cosine: f64,
    /// The row with the smallest cosine.
    pub worst_row: usize,
    /// The largest absolute difference over all rows.
    pub max_abs_diff: f32,
    /// Rows whose argmax is the same.
    pub argmax_agree: usize,
}

impl std::fmt::Display for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows: min cos {:.7} (row {}), max |Δ| {:.4}, argmax {}/{}",
            self.rows,
            self.min_cosine,
            self.worst_row,
            self.max_abs_diff,
            self.argmax_agree,
            self.rows
        )
    }
}

/// Compares rows pairwise (stops at the shorter sequence).
pub fn compare_rows<'a, 'b>(
    a: impl IntoIterator<Item = &'a [f32]>,
    b: impl IntoIterator<Item = &'b [f32]>,
) -> Agreement {
    let mut g = Agreement {
        rows: 0,
        min_cosine: 1.0,
        worst_row: 0,
        max_abs_diff: 0.0,
        argmax_agree: 0,
    };
    for (i, (x, y)) in a.into_iter().zip(b).enumerate() {
        let c = cosine(x, y);
        if c < g.min_cosine || g.rows == 0 {
            g.min_cosine = c;
            g.worst_row = i;
        }
        g.max_abs_diff = g.max_abs_diff.max(max_abs_diff(x, y));
        if argmax(x) == argmax(y) {
            g.argmax_agree += 1;
        }
        g.rows += 1;
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let f = LogitsFile {
            n_vocab: 3,
            prompt_ids: vec![1, 2],
            gen_ids: vec![0],
            prompt_logits: vec![0.0, 1.0, 2.0, 3.0, -1.0, 0.5],
            gen_logits: vec![9.0, 8.0, 7.0],
        };
        let bytes = f.to_bytes();
        assert_eq!(LogitsFile::parse(&bytes).unwrap(), f);
        assert_eq!(f.prompt_row(1), &[3.0, -1.0, 0.5]);
        assert!(LogitsFile::parse(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(LogitsFile::parse(&bad).unwrap_err().contains("magic"));
    }

    #[test]
    fn comparisons() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-12);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 0.0]), 2.0);
        let a = [[1.0f32, 2.0], [0.0, 1.0]];
        let b = [[1.0f32, 2.0], [1.0, 0.0]];
        let g = compare_rows(a.iter().map(|r| &r[..]), b.iter().map(|r| &r[..]));
        assert_eq!((g.rows, g.worst_row, g.argmax_agree), (2, 1, 1));
        assert_eq!(g.min_cosine, 0.0);
    }
}
