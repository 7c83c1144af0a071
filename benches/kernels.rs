//! `cargo bench --bench kernels`: every kernel of every table this CPU runs against its scalar
//! twin (the `reference` table), single-threaded, at the shapes of the 125M and 0.7B models.
//! Throughput is in weight bytes read (GEMV) or multiply-adds (GEMM, "elements").
//!
//! Filter with criterion's usual argument, e.g. `cargo bench --bench kernels -- i2s`.
//!
//! On a shared, loaded machine set `BITCONV_BENCH_CLOCK=cpu` to time with the benchmark
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) instead of the wall clock, so time slices
//! given to other processes do not count.

use std::hint::black_box;
use std::time::Duration;

use bitconv::runtime::kernels::scalar as ops;
use bitconv::runtime::kernels::{self as simd, FloatOrder, FloatType, Kernels, Q8kActs};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use half::f16;

#[path = "../src/test_rng.rs"]
mod rng;

use rng::Rng;

fn tables() -> Vec<&'static Kernels> {
    simd::available()
}

/// `bytes` in a buffer at an offset on a 64-byte boundary, as the model's resident copy of its
/// matrices places them (a `Vec` of this size starts 16 bytes past one): the returned buffer and
/// offset.
fn on_lines(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; bytes.len() + 64];
    let at = (64 - buf.as_ptr() as usize % 64) % 64;
    buf[at..at + bytes.len()].copy_from_slice(bytes);
    (buf, at)
}

/// Int8 activations of `n` tokens of `k` values.
fn i8_acts(g: &mut Rng, n: usize, k: usize) -> Vec<i8> {
    let x = g.floats(n * k, 1.0);
    let mut q = vec![0i8; n * k];
    for (qt, xt) in q.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
        ops::quantize_i8s(xt, qt);
    }
    q
}

fn i2s<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = Rng(1);
    for &(m, k, n) in &[
        (3072usize, 768usize, 1usize),
        (1536, 4096, 1),
        (768, 768, 128),
        (1536, 1536, 8),
        (1536, 4096, 4),
    ] {
        let w = g.ternary_bytes(m * k / 4);
        let q = i8_acts(&mut g, n, k);
        let mut out = vec![0i32; m * n];
        let mut grp = c.benchmark_group(format!("i2s_{m}x{k}_n{n}"));
        if n == 1 {
            grp.throughput(Throughput::Bytes(w.len() as u64));
        } else {
            grp.throughput(Throughput::Elements((m * k * n) as u64));
        }
        for t in tables() {
            grp.bench_function(BenchmarkId::from_parameter(t.name()), |b| {
                b.iter(|| t.i2s_dots(black_box(&w), k, black_box(&q), n, &mut out))
            });
        }
        grp.finish();
    }
}

fn tq2<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = Rng(2);
    for &(m, k, n) in &[(3072usize, 768usize, 1usize), (768, 768, 128)] {
        let nb = k / 256;
        let mut w = vec![];
        for _ in 0..m * nb {
            w.extend(g.ternary_bytes(64));
            w.extend(f16::from_f32(0.05).to_le_bytes());
        }
        let x = g.floats(n * k, 1.0);
        let mut q = vec![0i8; n * k];
        let mut d = vec![0f32; n * nb];
        ops::quantize_q8k(&x, &mut q, &mut d);
        let mut bsum = vec![0i32; n * k / 32];
        simd::q8k_bsums(&q, &mut bsum);
        let mut out = vec![0f32; m * n];
        // One scale for the whole matrix, as converted files have.
        let shared = simd::tq2_shared_scale(&w);
        let mut grp = c.benchmark_group(format!("tq2_{m}x{k}_n{n}"));
        if n == 1 {
            grp.throughput(Throughput::Bytes(w.len() as u64));
        } else {
            grp.throughput(Throughput::Elements((m * k * n) as u64));
        }
        for t in tables() {
            grp.bench_function(BenchmarkId::from_parameter(t.name()), |b| {
                let acts = Q8kActs {
                    q: &q,
                    d: &d,
                    bsum: &bsum,
                };
                b.iter(|| t.tq2_dots(black_box(&w), k, acts, shared, n, &mut out))
            });
        }
        grp.finish();
    }
}

fn q8_0<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = Rng(3);
    // 32002×1536 is the Q8_0 head of a 0.7B file (52 MB): a memory-bound case.
    for &(m, k) in &[(4096usize, 768usize), (32002, 1536)] {
        let nb = k / 32;
        let mut w = vec![];
        for _ in 0..m * nb {
            w.extend(f16::from_f32(0.01).to_le_bytes());
            w.extend((0..32).map(|_| (g.next() % 255) as u8));
        }
        let (buf, at) = on_lines(&w);
        let w = &buf[at..at + w.len()];
        let x = g.floats(k, 1.0);
        let mut q = vec![0i8; k];
        let mut d = vec![0f32; nb];
        ops::quantize_q8_0(&x, &mut q, &mut d);
        let mut out = vec![0f32; m];
        let mut grp = c.benchmark_group(format!("q8_0_{m}x{k}_n1"));
        grp.throughput(Throughput::Bytes(w.len() as u64));
        if w.len() > 16 << 20 {
            grp.sample_size(10).measurement_time(Duration::from_secs(4));
        }
        for t in tables() {
            grp.bench_function(BenchmarkId::from_parameter(t.name()), |b| {
                b.iter(|| t.q8_0_dots(black_box(w), k, &q, &d, 1, &mut out))
            });
        }
        grp.finish();
    }
}

fn floats<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = Rng(4);
    // The F16 head of the 125M model (one token, ggml order) is 49 MB: a memory-bound case.
    for &(ty, order, m, k, n) in &[
        (
            FloatType::F16,
            FloatOrder::Ggml,
            32002usize,
            768usize,
            1usize,
        ),
        // The 0.7B model's (98 MB).
        (FloatType::F16, FloatOrder::Ggml, 32002, 1536, 1),
        (FloatType::F16, FloatOrder::Ggml, 4096, 768, 1),
        (FloatType::F32, FloatOrder::Ggml, 4096, 768, 1),
        // A prompt in ggml's order (mainline llama.cpp), and one token in llamafile's (the
        // transformers emulation's head).
        (FloatType::F16, FloatOrder::Ggml, 4096, 768, 16),
        (FloatType::F16, FloatOrder::Lanes8, 4096, 768, 1),
        (FloatType::F16, FloatOrder::Lanes8, 32002, 768, 1),
        (FloatType::F16, FloatOrder::Lanes8, 4096, 768, 16),
    ] {
        let eb = ty.bytes();
        let w: Vec<u8> = g
            .floats(m * k, 1.0)
            .into_iter()
            .flat_map(|v| match ty {
                FloatType::F16 => f16::from_f32(v).to_le_bytes().to_vec(),
                FloatType::F32 => v.to_le_bytes().to_vec(),
            })
            .collect();
        let (buf, at) = on_lines(&w);
        let w = &buf[at..at + w.len()];
        let x: Vec<f32> = g
            .floats(n * k, 1.0)
            .into_iter()
            .map(ops::round_f16)
            .collect();
        let mut out = vec![0f32; m * n];
        let mut grp = c.benchmark_group(format!("{ty:?}_{order:?}_{m}x{k}_n{n}"));
        grp.throughput(Throughput::Bytes((m * k * eb) as u64));
        if m * k * eb > 16 << 20 {
            grp.sample_size(10).measurement_time(Duration::from_secs(4));
        }
        for t in tables() {
            grp.bench_function(BenchmarkId::from_parameter(t.name()), |b| {
                b.iter(|| t.float_dots(order, ty, black_box(w), k * eb, k, &x, n, &mut out))
            });
        }
        grp.finish();
    }
}

fn attention<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = Rng(5);
    let (positions, hd) = (512usize, 64usize);
    // One head of an F16 cache with 12 heads per row.
    let stride = 12 * hd * 2;
    let cache = |g: &mut Rng| -> Vec<u8> {
        (0..positions * 12 * hd)
            .flat_map(|_| f16::from_f32(g.float(1.0)).to_le_bytes())
            .collect()
    };
    let (k, v) = (cache(&mut g), cache(&mut g));
    let q: Vec<f32> = g.floats(hd, 1.0).into_iter().map(ops::round_f16).collect();
    let p: Vec<f32> = g.floats(positions, 1.0).into_iter().map(f32::abs).collect();
    let mut out = vec![0f32; hd];
    let mut scores = vec![0f32; positions];
    let mut scratch = vec![0f32; 32 * hd];
    let mut grp = c.benchmark_group(format!("attention_{positions}x{hd}"));
    grp.throughput(Throughput::Elements((positions * hd) as u64));
    for t in tables() {
        grp.bench_function(BenchmarkId::new("scores", t.name()), |b| {
            b.iter(|| {
                t.float_dots(
                    FloatOrder::Ggml,
                    FloatType::F16,
                    &k,
                    stride,
                    hd,
                    &q,
                    1,
                    &mut scores,
                )
            })
        });
        for order in [FloatOrder::Ggml, FloatOrder::Lanes8] {
            grp.bench_function(
                BenchmarkId::new(format!("weighted_{order:?}"), t.name()),
                |b| {
                    b.iter(|| {
                        t.weighted_sum(
                            order,
                            FloatType::F16,
                            &v,
                            stride,
                            &p,
                            &mut out,
                            &mut scratch,
                        )
                    })
                },
            );
        }
        grp.bench_function(BenchmarkId::new("flash", t.name()), |b| {
            b.iter(|| t.flash_attention_f16(&q, &k, &v, stride, positions, 0.125, &mut out))
        });
    }
    grp.finish();
}

/// The calling thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The benchmark thread's on-CPU time, as a criterion measurement.
struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = Duration;

    fn start(&self) -> u64 {
        cpu_ns()
    }
    fn end(&self, i: u64) -> Duration {
        Duration::from_nanos(cpu_ns() - i)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

fn configured<M: Measurement>(c: Criterion<M>) -> Criterion<M> {
    c.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

fn main() {
    if std::env::var("BITCONV_BENCH_CLOCK").as_deref() == Ok("cpu") {
        let mut c = configured(Criterion::default().with_measurement(CpuTime));
        run_all(&mut c);
        c.final_summary();
    } else {
        let mut c = configured(Criterion::default());
        run_all(&mut c);
        c.final_summary();
    }
}

fn run_all<M: Measurement>(c: &mut Criterion<M>) {
    i2s(c);
    tq2(c);
    q8_0(c);
    floats(c);
    attention(c);
}
