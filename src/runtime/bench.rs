//! End-to-end speed of a model, in the manner of llama.cpp's `llama-bench` (which bitnet.cpp's
//! `e2e_benchmark.py` drives): prompt processing of `p` tokens in one batch and generation of
//! `n` tokens one at a time from an empty context, repeated, reported as tokens/s mean ± sd.
//!
//! Generation is bound by memory bandwidth: every weight matrix is read once per token. So the
//! report also measures, in the same run, the bytes a generated token reads
//! ([`bytes_per_token`]) and the time the machine takes just to read them:
//!
//! * **the bound**: right after every generation repetition, a plain multi-threaded sum reads
//!   the weights themselves, the very pages a generated token reads, in place (mapped file or
//!   the runtime's own buffers), once per token of the repetition, so the same bytes, the same
//!   number of times, for about as long, next to it in time. Its mean rate over the
//!   repetitions, divided by the bytes per token, is the generation bound, and generation is
//!   reported as a percentage of it. The bound is measured this way because on a virtual
//!   machine the bandwidth depends on where the host placed the memory and on what its
//!   neighbours do at the moment: separate processes running identical code read at 28 to
//!   60 GB/s, and a short pass catches bursts that a repetition of a hundred milliseconds
//!   averages out;
//! * for context, the best of a few passes over a fresh buffer much larger than the caches,
//!   once before and once after the tests (the machine's usual figure).

use std::time::Instant;

use rayon::prelude::*;

use super::format::WeightFormat;
use super::kernels::Kernels;
use super::model::Model;
use super::{LogitsWanted, RuntimeError, Session, SessionOptions};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Prompt tokens processed in one batch (0: skip).
    pub prompt: usize,
    /// Tokens generated one at a time (0: skip).
    pub gen: usize,
    /// Repetitions of each test (after one warm-up run).
    pub reps: usize,
    /// The kernel tables to measure, in order (the first is the one under test).
    pub kernels: Vec<&'static Kernels>,
    /// Bytes of the buffer for the bandwidth measurement (0: skip it).
    pub bandwidth_bytes: usize,
    /// Passes over that buffer; the best counts.
    pub bandwidth_passes: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            prompt: 512,
            gen: 128,
            reps: 5,
            kernels: vec![super::kernels::kernels()],
            bandwidth_bytes: 1 << 30,
            bandwidth_passes: 5,
        }
    }
}

/// Mean and standard deviation of a rate over repetitions.
#[derive(Clone, Debug, PartialEq)]
pub struct Rate {
    /// Tokens per repetition.
    pub tokens: usize,
    /// Tokens/s of each repetition.
    pub samples: Vec<f64>,
}

impl Rate {
    /// Mean tokens/s.
    pub fn mean(&self) -> f64 {
        self.samples.iter().sum::<f64>() / self.samples.len().max(1) as f64
    }

    /// Sample standard deviation of tokens/s (0 for fewer than two samples).
    pub fn sd(&self) -> f64 {
        let n = self.samples.len();
        if n < 2 {
            return 0.0;
        }
        let m = self.mean();
        (self.samples.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1) as f64).sqrt()
    }
}

/// The results of one kernel table.
#[derive(Clone, Debug)]
pub struct KernelResult {
    /// The table's name.
    pub kernel: &'static str,
    /// Prompt processing (`None` if skipped).
    pub pp: Option<Rate>,
    /// Generation (`None` if skipped).
    pub tg: Option<Rate>,
}

/// Read bandwidth of a fresh buffer, measured before and after the tests, in bytes/s (each the
/// best of the passes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bandwidth {
    /// Before the tests.
    pub before: f64,
    /// After the tests.
    pub after: f64,
}

impl Bandwidth {
    /// The mean of the two measurements.
    pub fn mean(&self) -> f64 {
        (self.before + self.after) / 2.0
    }

    /// Whether the two measurements differ by more than 15% (the machine was busy).
    pub fn unsteady(&self) -> bool {
        (self.before - self.after).abs() > 0.15 * self.before.max(self.after)
    }
}

/// A whole report.
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Worker threads.
    pub threads: usize,
    /// Read bandwidth of a fresh buffer (`None` if not measured).
    pub bandwidth: Option<Bandwidth>,
    /// Read rates of the weights a generated token reads, in place, in bytes/s: one sample
    /// after each generation repetition, each reading the weights once per generated token
    /// (`None` if not measured).
    pub weights_bandwidth: Option<Rate>,
    /// Bytes read per generated token.
    pub bytes_per_token: u64,
    /// One entry per kernel table, in the order asked.
    pub results: Vec<KernelResult>,
}

impl BenchReport {
    /// Generation tokens/s allowed by the bandwidth: `bandwidth / bytes_per_token`, with the
    /// weights' bandwidth where measured, else the buffer's.
    pub fn bound(&self) -> Option<f64> {
        self.weights_bandwidth
            .as_ref()
            .map(Rate::mean)
            .or(self.bandwidth.map(|b| b.mean()))
            .map(|b| b / self.bytes_per_token as f64)
    }

    /// The bound with the fresh buffer's bandwidth, for comparison.
    pub fn buffer_bound(&self) -> Option<f64> {
        self.bandwidth
            .map(|b| b.mean() / self.bytes_per_token as f64)
    }

    /// Generation speed of result `i` as a percentage of [`BenchReport::bound`].
    pub fn percent_of_bound(&self, i: usize) -> Option<f64> {
        let tg = self.results.get(i)?.tg.as_ref()?;
        Some(100.0 * tg.mean() / self.bound()?)
    }
}

/// Bytes one generated token reads from the weights: every projection of every block and the
/// LM head once, plus one row of the token embedding (in the formats held in memory: TL1/TL2
/// count as the I2_S rows they are re-packed into, TQ1_0 as TQ2_0). The KV cache is not
/// counted (it is small next to the weights for short contexts).
pub fn bytes_per_token(model: &Model) -> u64 {
    let whole: u64 = read_whole(model)
        .map(|m| (m.rows() * m.format().row_bytes(m.cols())) as u64)
        .sum();
    let e = model.tok_embd();
    whole + e.format().row_bytes(e.cols()) as u64
}

/// The matrices a generated token reads whole: every projection of every block, then the
/// LM head (the token embedding when tied).
fn read_whole(model: &Model) -> impl Iterator<Item = &super::Matrix> {
    model
        .layers
        .iter()
        .flat_map(super::model::Layer::projections)
        .chain([model.head()])
}

/// The memory a generated token reads, as the matrices hold it (see [`bytes_per_token`]), cut
/// into pieces of at most 256 KiB of whole words, for [`WeightsProbe`].
pub struct WeightsProbe<'m> {
    pieces: Vec<&'m [u64]>,
    bytes: usize,
}

impl<'m> WeightsProbe<'m> {
    /// The pieces of every projection and the head (the embedding row is left out: it is one
    /// row).
    pub fn new(model: &'m Model) -> WeightsProbe<'m> {
        let store = model.store();
        let mut pieces = vec![];
        let mut bytes = 0;
        for m in read_whole(model) {
            // SAFETY: every bit pattern is a valid u64; `align_to` returns the aligned middle.
            let (_, words, _) = unsafe { m.bytes(store).align_to::<u64>() };
            for p in words.chunks(32 << 10) {
                bytes += 8 * p.len();
                pieces.push(p);
            }
        }
        WeightsProbe { pieces, bytes }
    }

    /// Sums every piece with the current rayon pool, `passes` times over; the mean bytes/s
    /// of the whole run.
    pub fn measure(&self, passes: usize) -> f64 {
        let mut sink = 0u64;
        let t = Instant::now();
        for _ in 0..passes.max(1) {
            let s: u64 = self
                .pieces
                .par_iter()
                .map(|p| sum_words(p))
                .reduce(|| 0, u64::wrapping_add);
            sink = sink.wrapping_add(s);
        }
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        (self.bytes * passes.max(1)) as f64 / dt
    }
}

/// The bytes of weights a format holds per value (for reporting).
pub fn bits_per_weight(f: WeightFormat) -> f64 {
    8.0 * f.row_bytes(256 * 32) as f64 / (256.0 * 32.0)
}

/// A buffer much larger than the caches, for measuring read bandwidth with the current rayon
/// pool. Like the resident weights ([`super::WeightMemory::Resident`]) it asks for huge pages,
/// so that the two are read the same way.
pub struct BandwidthProbe {
    buf: Box<dyn std::ops::Deref<Target = [u64]> + Send + Sync>,
}

/// `words` u64 at byte offset `.1` of a huge-page mapping ([`super::model::huge_page_map`]).
struct HugeWords(memmap2::MmapMut, usize, usize);

impl std::ops::Deref for HugeWords {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        // SAFETY: the offset is 2 MiB-aligned within the mapping, which holds `8·self.2` bytes
        // from there; every bit pattern is a valid u64.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(self.1).cast::<u64>(), self.2) }
    }
}

impl BandwidthProbe {
    /// Allocates and touches `bytes` (at least 8 KiB).
    pub fn new(bytes: usize) -> BandwidthProbe {
        let words = (bytes / 8).max(1 << 10);
        let fill = |buf: &mut [u64]| {
            buf.par_chunks_mut(1 << 16).enumerate().for_each(|(i, c)| {
                c.iter_mut()
                    .enumerate()
                    .for_each(|(j, v)| *v = (i ^ j) as u64)
            });
        };
        if let Some((mut map, skip)) = super::model::huge_page_map(words * 8) {
            // SAFETY: as in `HugeWords::deref`, mutably; nothing else refers to the mapping.
            fill(unsafe {
                std::slice::from_raw_parts_mut(map.as_mut_ptr().add(skip).cast::<u64>(), words)
            });
            return BandwidthProbe {
                buf: Box::new(HugeWords(map, skip, words)),
            };
        }
        let mut buf = vec![0u64; words];
        fill(&mut buf);
        BandwidthProbe { buf: Box::new(buf) }
    }

    /// Every thread sums its share of the buffer, `passes` times; returns the best bytes/s.
    pub fn measure(&self, passes: usize) -> f64 {
        let words = self.buf.len();
        let threads = rayon::current_num_threads().max(1);
        let chunk = words.div_ceil(threads);
        let mut best = 0.0f64;
        let mut sink = 0u64;
        for _ in 0..passes.max(1) {
            let t = Instant::now();
            let s: u64 = self
                .buf
                .par_chunks(chunk)
                .with_max_len(1)
                .map(sum_words)
                .sum();
            let dt = t.elapsed().as_secs_f64();
            sink = sink.wrapping_add(s);
            best = best.max((words * 8) as f64 / dt);
        }
        std::hint::black_box(sink);
        best
    }
}

/// Read bandwidth with the current rayon pool over a buffer of `bytes`: the best of `passes`.
pub fn read_bandwidth(bytes: usize, passes: usize) -> f64 {
    BandwidthProbe::new(bytes).measure(passes)
}

/// Sums words with eight independent accumulators (so the loop is bound by loads, not adds).
fn sum_words(c: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut it = c.chunks_exact(8);
    for w in &mut it {
        for (a, &v) in acc.iter_mut().zip(w) {
            *a = a.wrapping_add(v);
        }
    }
    let tail: u64 = it.remainder().iter().fold(0, |a, &v| a.wrapping_add(v));
    acc.iter().fold(tail, |a, &v| a.wrapping_add(v))
}

/// A deterministic sequence of token ids (no tokenizer needed; the speed does not depend on
/// them), skipping the first few ids, which are usually special.
fn tokens(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let lo = 3.min(n_vocab - 1);
            (lo as u64 + s % (n_vocab - lo) as u64) as u32
        })
        .collect()
}

/// Tokens/s of one batch of `toks` from an empty context.
fn prompt_rate(s: &mut Session, toks: &[u32]) -> Result<f64, RuntimeError> {
    s.reset();
    let t = Instant::now();
    s.forward_borrowed(toks, LogitsWanted::Last)?;
    Ok(toks.len() as f64 / t.elapsed().as_secs_f64())
}

/// Tokens/s of `toks` fed one at a time from an empty context.
fn gen_rate(s: &mut Session, toks: &[u32]) -> Result<f64, RuntimeError> {
    s.reset();
    let t = Instant::now();
    for &tok in toks {
        s.forward_borrowed(&[tok], LogitsWanted::Last)?;
    }
    Ok(toks.len() as f64 / t.elapsed().as_secs_f64())
}

/// Times the prompt and generation tests of one kernel table.
fn measure(
    model: &Model,
    kernels: &'static Kernels,
    opts: &BenchOptions,
    between: &mut dyn FnMut(),
) -> Result<KernelResult, RuntimeError> {
    Ok(measure_models(&[model], kernels, opts, between)?.remove(0))
}

/// The prompt and generation tests of several models with one kernel table, alternated: each
/// repetition runs every model in turn, so that a change in the machine's pace (another
/// tenant, the host's memory phase) falls on all of them alike and their ratios hold. One
/// result per model, in order; `opts.kernels` is not used.
pub fn alternate(
    models: &[&Model],
    kernels: &'static Kernels,
    opts: &BenchOptions,
) -> Result<Vec<KernelResult>, RuntimeError> {
    measure_models(models, kernels, opts, &mut || {})
}

/// The prompt test (one warm-up, then `opts.reps` repetitions, each running every model in
/// turn, every other one in reverse order), then the generation test likewise, `between` after
/// every generation run.
fn measure_models(
    models: &[&Model],
    kernels: &'static Kernels,
    opts: &BenchOptions,
    between: &mut dyn FnMut(),
) -> Result<Vec<KernelResult>, RuntimeError> {
    let ctx = opts.prompt.max(opts.gen).max(1);
    let mut sessions: Vec<Session> = models
        .iter()
        .map(|m| {
            let mut s = Session::with_options(m, SessionOptions::for_model(m, ctx));
            s.set_kernels(kernels);
            s
        })
        .collect();
    let mut test = |n: usize,
                    seed: u64,
                    rate: RateFn,
                    after: &mut dyn FnMut()|
     -> Result<Vec<Option<Rate>>, RuntimeError> {
        if n == 0 {
            return Ok(vec![None; models.len()]);
        }
        let toks: Vec<Vec<u32>> = models
            .iter()
            .map(|m| tokens(n, m.hparams().n_vocab, seed))
            .collect();
        let mut samples = vec![vec![]; models.len()];
        for rep in 0..=opts.reps {
            for j in 0..models.len() {
                // Every other repetition in reverse order (A B C, C B A, ...), so that no model
                // always runs first (after the others' weights have left the caches) or last.
                let i = if rep % 2 == 0 {
                    j
                } else {
                    models.len() - 1 - j
                };
                let r = rate(&mut sessions[i], &toks[i])?;
                if rep > 0 {
                    samples[i].push(r);
                }
                after();
            }
        }
        Ok(samples
            .into_iter()
            .map(|samples| Some(Rate { tokens: n, samples }))
            .collect())
    };
    let pp = test(opts.prompt, 1, prompt_rate, &mut || {})?;
    let tg = test(opts.gen, 2, gen_rate, between)?;
    Ok(pp
        .into_iter()
        .zip(tg)
        .map(|(pp, tg)| KernelResult {
            kernel: kernels.name(),
            pp,
            tg,
        })
        .collect())
}

/// [`prompt_rate`] or [`gen_rate`].
type RateFn = fn(&mut Session, &[u32]) -> Result<f64, RuntimeError>;

/// Runs the benchmark in the current rayon pool (size it with `-t` first).
pub fn run(model: &Model, opts: &BenchOptions) -> Result<BenchReport, RuntimeError> {
    let probe = (opts.bandwidth_bytes > 0).then(|| BandwidthProbe::new(opts.bandwidth_bytes));
    let before = probe.as_ref().map(|p| p.measure(opts.bandwidth_passes));
    let weights = (opts.bandwidth_passes > 0).then(|| WeightsProbe::new(model));
    let mut samples = vec![];
    let mut results = vec![];
    for &k in &opts.kernels {
        let mut between = || {
            if let Some(w) = &weights {
                samples.push(w.measure(opts.gen));
            }
        };
        results.push(measure(model, k, opts, &mut between)?);
    }
    if let Some(w) = weights.as_ref().filter(|_| samples.is_empty()) {
        // No generation test: a few passes on their own.
        samples.extend((0..opts.bandwidth_passes).map(|_| w.measure(1)));
    }
    let bandwidth = probe.map(|p| Bandwidth {
        before: before.unwrap_or(0.0),
        after: p.measure(opts.bandwidth_passes),
    });
    Ok(BenchReport {
        threads: rayon::current_num_threads(),
        bandwidth,
        weights_bandwidth: weights.map(|_| Rate {
            tokens: opts.gen,
            samples,
        }),
        bytes_per_token: bytes_per_token(model),
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_statistics() {
        let r = Rate {
            tokens: 1,
            samples: vec![1.0, 2.0, 3.0],
        };
        assert_eq!(r.mean(), 2.0);
        assert_eq!(r.sd(), 1.0);
    }

    #[test]
    fn token_ids_stay_in_range() {
        assert!(tokens(1000, 10, 3).iter().all(|&t| (3..10).contains(&t)));
        assert!(tokens(10, 1, 3).iter().all(|&t| t == 0));
    }

    #[test]
    fn word_sum() {
        let v: Vec<u64> = (0..1003).collect();
        assert_eq!(sum_words(&v), 1002 * 1003 / 2);
    }
}
