//! The matmuls of a forward pass, through the kernel table: the activations quantized (or
//! rounded) once per weight format, then every matrix of a group that shares an input in one
//! parallel loop over output rows, each task writing its own rows.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{sized, Emulation};
use crate::runtime::format::{FloatType, WeightFormat, QK8_0, QK_K};
use crate::runtime::kernels::{scalar, FloatOrder, Kernels, Q8kActs};
use crate::runtime::model::{Activation, Matrix, Store};

thread_local! {
    /// Per-thread scratch of a matmul chunk over a batch.
    static CHUNK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Activations prepared for one weight format: int8 (I2_S), Q8_K (TQ2_0), Q8_0, or f32
/// (rounded to f16 precision for ggml's F16 `vec_dot`).
#[derive(Default)]
pub(super) struct Acts {
    q: Vec<i8>,
    s: Vec<f32>,
    sum: Vec<i32>,
    d: Vec<f32>,
    bsum: Vec<i32>,
    xr: Vec<f32>,
}

/// Runs `f((t, rows))` for every token `t < n` and its rows (the items of `rows`), in parallel
/// for a batch.
fn per_token<I>(n: usize, rows: I, f: impl Fn((usize, I::Item)) + Sync + Send)
where
    I: IndexedParallelIterator,
{
    // A batch of fewer than four tokens stays on this thread, one token after another.
    let min = if n >= 4 { 1 } else { n.max(1) };
    rows.enumerate().with_min_len(min).for_each(f);
}

/// Quantizes (or rounds) the `n × k` activations `x` for weights of `format` into `a`.
#[allow(clippy::too_many_arguments)]
fn prepare(
    kern: &Kernels,
    a: &mut Acts,
    format: WeightFormat,
    x: &[f32],
    n: usize,
    k: usize,
    round: bool,
    rule: scalar::I8Scale,
) {
    match format {
        WeightFormat::I2s => {
            // Rows of whole 128-value blocks; the padding stays zero (see `WeightFormat::stride`).
            let kp = format.stride(k);
            let qv = sized(&mut a.q, n * kp);
            if kp != k {
                qv.fill(0);
            }
            let s = sized(&mut a.s, n);
            let sum = sized(&mut a.sum, n);
            let rows = qv.par_chunks_mut(kp).zip(s).zip(sum);
            per_token(n, rows, |(t, ((q, s), sum))| {
                (*s, *sum) = kern.quantize_i8s_with(&x[t * k..(t + 1) * k], &mut q[..k], rule);
            });
        }
        WeightFormat::Tq2 => {
            let q = sized(&mut a.q, n * k).par_chunks_mut(k);
            let d = sized(&mut a.d, n * k / QK_K).par_chunks_mut(k / QK_K);
            let bsum = sized(&mut a.bsum, n * k / 32).par_chunks_mut(k / 32);
            per_token(n, q.zip(d).zip(bsum), |(t, ((q, d), bsum))| {
                kern.quantize_q8k(&x[t * k..(t + 1) * k], q, d, bsum);
            });
        }
        WeightFormat::Q8_0 => {
            let q = sized(&mut a.q, n * k);
            let d = sized(&mut a.d, n * k / QK8_0);
            kern.quantize_q8_0(x, q, d);
        }
        WeightFormat::F16 | WeightFormat::F32 => {
            if round {
                let xr = sized(&mut a.xr, n * k);
                for (o, &v) in xr.iter_mut().zip(x) {
                    *o = scalar::round_f16(v);
                }
            }
        }
    }
}

/// `g[i] = act(g[i])·u[i]`, the gated FFN's activation: scalar::silu or scalar::relu_sqr, bit for bit,
/// with SiLU's exponentials through the kernel table (the C library's bits) a stack buffer at a
/// time.
fn gate(kern: &Kernels, act: Activation, g: &mut [f32], u: &[f32]) {
    debug_assert_eq!(g.len(), u.len());
    match act {
        Activation::Silu => {
            let mut e = [0.0f32; 64];
            for (g, u) in g.chunks_mut(64).zip(u.chunks(64)) {
                let e = &mut e[..g.len()];
                for (e, &x) in e.iter_mut().zip(g.iter()) {
                    *e = -x;
                }
                kern.exp(e);
                for ((g, &u), &e) in g.iter_mut().zip(u).zip(e.iter()) {
                    *g = scalar::silu_with(*g, e) * u;
                }
            }
        }
        Activation::Relu2 => {
            for (g, &u) in g.iter_mut().zip(u) {
                *g = scalar::relu_sqr(*g) * u;
            }
        }
    }
}

/// The scratch of [`MatmulCtx::run`], kept in the session so that it is allocated once:
/// the prepared activations, one slot per weight format, and for a batch the results of each
/// matrix of a group in the order the row chunks compute them (see [`MatmulCtx::run`]).
#[derive(Default)]
pub(super) struct MatmulBufs {
    acts: [Acts; WeightFormat::COUNT],
    stage: [Vec<f32>; MAX_GROUP],
}

/// One task of a matmul group's parallel loop: chunk `c` of matrix `i` (rows
/// `c·chunk_rows[i]..`), its slice of the results, and for the paired gate the same rows of
/// `up`'s.
type Task<'o> = (usize, usize, &'o mut [f32], Option<&'o mut [f32]>);

/// The task of chunk `c` (with its slice of the results) of matrix `i` of an unpaired group.
fn unpaired<'o>(i: usize) -> impl Fn((usize, &'o mut [f32])) -> Task<'o> + Send + Sync {
    move |(c, o)| (i, c, o, None)
}

/// Matmuls of one forward pass: kernel table, where the weights are, batch size, emulation.
#[derive(Clone, Copy)]
pub(super) struct MatmulCtx<'a> {
    pub kern: &'static Kernels,
    pub store: Store<'a>,
    pub n: usize,
    pub emu: Emulation,
}

/// At most this many matrices share one input in a matmul group.
const MAX_GROUP: usize = 3;

impl MatmulCtx<'_> {
    /// `outs[i] = ws[i]·x` for every matrix of the group (all with `K` columns; `x` holds
    /// `n × K` values, `outs[i]` gets `n × M_i`, token-major), in one parallel loop over chunks
    /// of output rows. With `act`, the group is `[gate, up]` and `outs[0]` receives
    /// `act(gate)·up`.
    ///
    /// Every task owns a contiguous slice of what it writes. For one token that is its rows of
    /// the output itself. For a batch, whose outputs are token-major, a chunk's rows of every
    /// token are not contiguous there: each task writes its chunk, a block of tokens at a time
    /// (`r·nt + t` per block, as the kernels produce it), into its own slice of a staging
    /// buffer, and a second parallel loop over blocks of tokens then writes every token's row
    /// of the output (the same one copy the results always took).
    pub(super) fn run(
        &self,
        ws: &[&Matrix],
        x: &[f32],
        bufs: &mut MatmulBufs,
        outs: &mut [&mut Vec<f32>],
        act: Option<Activation>,
    ) {
        let n = self.n;
        let k = ws[0].cols();
        debug_assert!(ws.len() <= MAX_GROUP && ws.len() == outs.len());
        debug_assert!(ws.iter().all(|w| w.cols() == k));
        debug_assert!(act.is_none() || (ws.len() == 2 && ws[0].rows() == ws[1].rows()));
        let x = &x[..n * k];
        // Float weights: ggml's vec_dot (activations first converted to the weight's type),
        // except that bitnet.cpp hands products over several tokens to llamafile's tinyBLAS
        // (f32 activations; it needs K % 8 == 0). Mainline llama.cpp was seen to keep vec_dot.
        // transformers multiplies in the model's dtype (f32 or wider): f32 activations here.
        let tiny_blas = (n > 1 && k % 8 == 0 && self.emu == Emulation::BitnetCpp)
            || self.emu == Emulation::Transformers;
        let rule = self.emu.i8_scale();
        let MatmulBufs { acts, stage } = bufs;
        let mut done = [false; WeightFormat::COUNT];
        for w in ws {
            let slot = w.format().index();
            if !done[slot] {
                done[slot] = true;
                let round = w.format() == WeightFormat::F16 && !tiny_blas;
                prepare(self.kern, &mut acts[slot], w.format(), x, n, k, round, rule);
            }
        }
        // Split the rows into chunks: a few per thread for balance, each big enough that the
        // scheduling cost stays small.
        let threads = rayon::current_num_threads().max(1);
        let work: usize = ws.iter().map(|w| w.rows() * w.row_bytes() * n).sum();
        // One token: at most 256 KiB of weights per chunk, or the last chunks of a large
        // matrix (an LM head of 49 MB came in 3 MB pieces) leave one thread streaming alone
        // while the other waits.
        let per_chunk = (work / (8 * threads)).max(32 << 10);
        let per_chunk = if n == 1 {
            per_chunk.min(256 << 10)
        } else {
            per_chunk
        };
        let chunk_rows: [usize; MAX_GROUP] = std::array::from_fn(|i| {
            ws.get(i).map_or(1, |w| {
                let r = (per_chunk / (w.row_bytes() * n).max(1)).max(4);
                r.div_ceil(4) * 4
            })
        });
        // A batch reaches the kernels in blocks of tokens whose activations fit the L1 cache,
        // a multiple of the kernel's token tile.
        let token_block: [usize; MAX_GROUP] = std::array::from_fn(|i| {
            ws.get(i).map_or(1, |w| {
                let tt = self.kern.token_tile(w.format());
                (16384 / k).clamp(tt, 8 * tt) / tt * tt
            })
        });
        let paired = act.is_some();
        let acts = &*acts;
        let job = |(i, c, out, up): Task<'_>| {
            let m = ws[i].rows();
            let r0 = c * chunk_rows[i];
            let r1 = (r0 + chunk_rows[i]).min(m);
            let acts_of = |w: &Matrix| &acts[w.format().index()];
            let combine = |g: &mut [f32], u: &[f32]| {
                if let Some(a) = act {
                    gate(self.kern, a, g, u);
                }
            };
            if n == 1 {
                self.rows(ws[i], acts_of(ws[i]), x, tiny_blas, r0..r1, 0..1, out);
                if let Some(up) = up {
                    self.rows(ws[1], acts_of(ws[1]), x, tiny_blas, r0..r1, 0..1, up);
                    combine(out, up);
                }
                return;
            }
            // A batch: `out` is this chunk's staging slice, token block after token block.
            let tb = token_block[i];
            let rr = r1 - r0;
            CHUNK.with_borrow_mut(|buf| {
                let mut t0 = 0;
                while t0 < n {
                    let t1 = (t0 + tb).min(n);
                    let a = &mut out[rr * t0..rr * t1];
                    self.rows(ws[i], acts_of(ws[i]), x, tiny_blas, r0..r1, t0..t1, a);
                    if paired {
                        let b = sized(buf, rr * (t1 - t0));
                        self.rows(ws[1], acts_of(ws[1]), x, tiny_blas, r0..r1, t0..t1, b);
                        combine(a, b);
                    }
                    t0 = t1;
                }
            });
        };
        // Where the tasks write: the outputs themselves for one token, else the staging
        // buffers (each `M_i × n`, chunk after chunk).
        let mut dest: [&mut [f32]; MAX_GROUP] = [&mut [], &mut [], &mut []];
        let mut up: &mut [f32] = &mut [];
        if n == 1 {
            for (i, (w, o)) in ws.iter().zip(outs.iter_mut()).enumerate() {
                let o = sized(o, w.rows());
                if paired && i == 1 {
                    up = o;
                } else {
                    dest[i] = o;
                }
            }
        } else {
            for (i, (w, s)) in ws.iter().zip(stage.iter_mut()).enumerate() {
                if !(paired && i == 1) {
                    dest[i] = sized(s, w.rows() * n);
                }
            }
        }
        let size = |i: usize| chunk_rows[i] * n;
        if paired && n == 1 {
            let [g, _, _] = dest;
            g.par_chunks_mut(size(0))
                .zip(up.par_chunks_mut(size(0)))
                .enumerate()
                .with_max_len(1)
                .map(|(c, (g, u))| (0, c, g, Some(u)))
                .for_each(job);
        } else {
            // (A batch's paired group too: `up`'s rows go to the task's scratch.)
            let [d0, d1, d2] = dest;
            d0.par_chunks_mut(size(0))
                .enumerate()
                .map(unpaired(0))
                .chain(d1.par_chunks_mut(size(1)).enumerate().map(unpaired(1)))
                .chain(d2.par_chunks_mut(size(2)).enumerate().map(unpaired(2)))
                .with_max_len(1)
                .for_each(job);
        }
        if n == 1 {
            return;
        }
        // A batch: every block of tokens takes its values from every chunk's staging slice.
        for (i, (w, o)) in ws.iter().zip(outs.iter_mut()).enumerate() {
            if paired && i == 1 {
                continue;
            }
            let (m, cr, tb) = (w.rows(), chunk_rows[i], token_block[i]);
            let staged = &stage[i][..m * n];
            sized(o, m * n)
                .par_chunks_mut(tb * m)
                .enumerate()
                .for_each(|(b, rows_out)| {
                    let t0 = b * tb;
                    let nt = rows_out.len() / m;
                    for r0 in (0..m).step_by(cr) {
                        let rr = cr.min(m - r0);
                        let block = &staged[r0 * n + rr * t0..][..rr * nt];
                        for (t, y) in rows_out.chunks_exact_mut(m).enumerate() {
                            for (r, v) in y[r0..r0 + rr].iter_mut().enumerate() {
                                *v = block[r * nt + t];
                            }
                        }
                    }
                });
        }
    }

    /// Rows `rows` of `w` times the prepared activations of tokens `toks` into `out`
    /// (`r·nt + t`, `nt` = the number of tokens).
    #[allow(clippy::too_many_arguments)]
    fn rows(
        &self,
        w: &Matrix,
        a: &Acts,
        x: &[f32],
        tiny_blas: bool,
        rows: std::ops::Range<usize>,
        toks: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let nt = toks.len();
        let k = w.cols();
        let rb = w.row_bytes();
        let data = &w.bytes(self.store)[rows.start * rb..rows.end * rb];
        let (t0, t1) = (toks.start, toks.end);
        match w.format() {
            WeightFormat::I2s => {
                let dots = as_i32_mut(out);
                let kp = w.format().stride(k);
                self.kern
                    .i2s_dots(data, kp, &a.q[t0 * kp..t1 * kp], nt, dots);
                let ws = w.scale();
                let (sums, scales) = (&a.sum[t0..t1], &a.s[t0..t1]);
                if nt == 1 {
                    // One token: one activation sum and scale for every row, a loop the compiler
                    // vectorizes (the same operations per value, so the same bits).
                    let (su, sa) = (sums[0], scales[0]);
                    for o in out.iter_mut() {
                        *o = scalar::i2s_epilogue(o.to_bits() as i32, su, sa, ws);
                    }
                } else {
                    for row in out.chunks_exact_mut(nt) {
                        for ((o, &su), &sa) in row.iter_mut().zip(sums).zip(scales) {
                            *o = scalar::i2s_epilogue(o.to_bits() as i32, su, sa, ws);
                        }
                    }
                }
            }
            WeightFormat::Tq2 => {
                let (nb, ns) = (k / QK_K, k / 32);
                let acts = Q8kActs {
                    q: &a.q[t0 * k..t1 * k],
                    d: &a.d[t0 * nb..t1 * nb],
                    bsum: &a.bsum[t0 * ns..t1 * ns],
                };
                self.kern
                    .tq2_dots(data, k, acts, w.tq2_shared_scale(), nt, out)
            }
            WeightFormat::Q8_0 => {
                let nb = k / QK8_0;
                self.kern.q8_0_dots(
                    data,
                    k,
                    &a.q[t0 * k..t1 * k],
                    &a.d[t0 * nb..t1 * nb],
                    nt,
                    out,
                )
            }
            WeightFormat::F16 | WeightFormat::F32 => {
                let ty = if w.format() == WeightFormat::F16 {
                    FloatType::F16
                } else {
                    FloatType::F32
                };
                let (order, xv) = if tiny_blas {
                    (FloatOrder::Lanes8, x)
                } else if w.format() == WeightFormat::F16 {
                    (FloatOrder::Ggml, &a.xr[..])
                } else {
                    (FloatOrder::Ggml, x)
                };
                self.kern
                    .float_dots(order, ty, data, rb, k, &xv[t0 * k..t1 * k], nt, out);
            }
        }
    }
}

/// Views f32 storage as i32 storage of the same length (the I2_S kernel writes its integer
/// dot products where the f32 results then go).
fn as_i32_mut(v: &mut [f32]) -> &mut [i32] {
    // SAFETY: f32 and i32 have the same size and alignment and every bit pattern is valid for
    // both; the returned slice borrows `v` exclusively.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<i32>(), v.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::kernels;

    /// The batched gate equals the scalar definitions bit for bit on every kernel table, for
    /// lengths that are not multiples of the buffer or the vector width and for values where the
    /// vector `expf` hands over to the library (|x| >= 85, infinities).
    #[test]
    fn gate_equals_the_scalar_activations() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut g0: Vec<f32> = (0..203)
            .map(|_| (next() % 20_001) as f32 / 1000.0 - 10.0)
            .collect();
        g0.extend([
            0.0,
            -0.0,
            85.5,
            -85.5,
            100.0,
            -100.0,
            1e-30,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]);
        let u: Vec<f32> = (0..g0.len())
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        for act in [Activation::Silu, Activation::Relu2] {
            let want: Vec<u32> = g0
                .iter()
                .zip(&u)
                .map(|(&x, &u)| {
                    let a = match act {
                        Activation::Silu => scalar::silu(x),
                        Activation::Relu2 => scalar::relu_sqr(x),
                    };
                    (a * u).to_bits()
                })
                .collect();
            for kern in kernels::available() {
                for len in [0, 1, 7, 63, 64, 65, 130, g0.len()] {
                    let mut g = g0[..len].to_vec();
                    gate(kern, act, &mut g, &u[..len]);
                    let got: Vec<u32> = g.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want[..len], "{} {act:?} len {len}", kern.name());
                }
            }
        }
    }
}
