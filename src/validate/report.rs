//! The validation report: each check, the per-prompt logit comparisons, and the metrics they
//! use (KL divergence, perplexity).

use serde::Serialize;

/// One check of a validation.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Details.
    pub detail: String,
    /// Reported, not required (logit comparisons where block states decide).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub informational: bool,
}

/// Agreement of one prompt's rows.
#[derive(Clone, Debug, Serialize)]
pub struct PromptStats {
    /// Prompt text.
    pub text: String,
    /// Rows compared.
    pub rows: usize,
    /// Minimum row cosine.
    pub min_cosine: f64,
    /// Maximum absolute difference.
    pub max_abs_diff: f32,
    /// Share of rows with the same argmax.
    pub top1_agreement: f64,
    /// Greedy tokens that matched before the first difference.
    pub greedy_matched: usize,
    /// Greedy tokens in the golden.
    pub greedy_len: usize,
    /// Mean KL divergence of the file's next-token distributions from the golden's (nats).
    pub mean_kl: f64,
    /// Its 99th percentile over rows.
    pub p99_kl: f64,
    /// Perplexity of the file on the fed tokens.
    pub perplexity_file: f64,
    /// Perplexity of the golden on the same tokens.
    pub perplexity_golden: f64,
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    row.iter().map(|&v| v as f64 - lse).collect()
}

/// Mean and 99th percentile over rows of `KL(golden ‖ file)`, as llama.cpp's
/// `llama-perplexity --kl-divergence` reports them.
pub fn kl_stats(golden: &[Vec<f32>], file: &[Vec<f32>]) -> (f64, f64) {
    let mut kls: Vec<f64> = golden
        .iter()
        .zip(file)
        .map(|(g, f)| {
            let (lp, lq) = (log_softmax(g), log_softmax(f));
            lp.iter()
                .zip(&lq)
                .map(|(&a, &b)| a.exp() * (a - b))
                .sum::<f64>()
                .max(0.0)
        })
        .collect();
    if kls.is_empty() {
        return (0.0, 0.0);
    }
    let mean = kls.iter().sum::<f64>() / kls.len() as f64;
    kls.sort_by(f64::total_cmp);
    let idx = ((kls.len() as f64 * 0.99).ceil() as usize).clamp(1, kls.len()) - 1;
    (mean, kls[idx])
}

/// Perplexity of `rows` (row `t` predicts `tokens[t + 1]`) on the tokens they predict.
pub fn perplexity(rows: &[Vec<f32>], tokens: &[u32]) -> f64 {
    let mut nll = 0.0;
    let mut n = 0usize;
    for (t, row) in rows.iter().enumerate() {
        let Some(&next) = tokens.get(t + 1) else {
            break;
        };
        nll -= log_softmax(row)[next as usize];
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        (nll / n as f64).exp()
    }
}

/// The outcome of a validation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The file.
    pub file: String,
    /// The golden.
    pub golden: String,
    /// Overall verdict.
    pub pass: bool,
    /// The arithmetic the file was run with ([`arithmetic_for`](super::arithmetic_for) the golden's producer).
    pub arithmetic: String,
    /// Every check.
    pub checks: Vec<Check>,
    /// Per-prompt agreement.
    pub prompts: Vec<PromptStats>,
    /// What the file was compared with: the golden's producer and source.
    pub against: String,
    /// Over every compared row of every prompt: mean KL divergence, the largest per-prompt
    /// 99th percentile, top-1 agreement.
    pub overall: Option<Overall>,
    /// With `--as`: the runtime the file was run as and the FFN activation that gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as: Option<String>,
}

/// Logit agreement over all prompts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overall {
    /// Rows compared.
    pub rows: usize,
    /// Mean KL divergence per row (nats).
    pub mean_kl: f64,
    /// The largest per-prompt 99th percentile.
    pub p99_kl: f64,
    /// Share of rows whose argmax agrees.
    pub top1_agreement: f64,
}

impl Report {
    pub(super) fn check(&mut self, name: &str, ok: bool, detail: String) {
        self.pass &= ok;
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
            informational: false,
        });
    }

    /// A check that is reported but cannot fail the file.
    pub(super) fn inform(&mut self, name: &str, ok: bool, detail: String) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail,
            informational: true,
        });
    }
}
