//! Throughput of the absmean and ternarization paths on a large synthetic tensor.
//!
//! Not a timed assertion: run with
//! `cargo test --release --test it absmean_bench:: -- --ignored --nocapture`.

use std::time::Instant;

use crate::common::rng::Lcg;
use bitconv::quant::absmean::{absmean, absmean_src, AbsmeanMode};
use bitconv::quant::dtype::{to_f32_into, SrcDtype};
use bitconv::quant::ternary::{find_non_finite_src, Ternarized};
use rayon::prelude::*;

const N: usize = 50_000_000;

fn synthetic(n: usize) -> Vec<f32> {
    let mut g = Lcg(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            let s = g.step();
            let u = ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            u * u * u * 0.06 + u * 0.01
        })
        .collect()
}

fn time<T>(label: &str, values: usize, bytes: usize, mut f: impl FnMut() -> T) -> T {
    let _ = f(); // warm up (page cache, rayon pool)
    let reps = 3;
    let t = Instant::now();
    let mut out = None;
    for _ in 0..reps {
        out = Some(f());
    }
    let secs = t.elapsed().as_secs_f64() / reps as f64;
    eprintln!(
        "{label:40} {:8.1} ms  {:7.0} Mvalues/s  {:6.2} GB/s",
        secs * 1e3,
        values as f64 / secs / 1e6,
        bytes as f64 / secs / 1e9
    );
    out.unwrap()
}

#[test]
#[ignore = "throughput report; run explicitly"]
fn absmean_throughput_50m() {
    eprintln!("{N} values, {} rayon threads", rayon::current_num_threads());
    let vals = synthetic(N);
    let f32_bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let f16_bytes: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
        .collect();
    let bf16_bytes: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
        .collect();

    for (name, dtype, bytes) in [
        ("F32", SrcDtype::F32, &f32_bytes),
        ("F16", SrcDtype::F16, &f16_bytes),
        ("BF16", SrcDtype::BF16, &bf16_bytes),
    ] {
        for mode in [
            AbsmeanMode::Exact,
            AbsmeanMode::Torch { threads: 1 },
            AbsmeanMode::Torch { threads: 2 },
            AbsmeanMode::Torch { threads: 8 },
        ] {
            let m = time(
                &format!("absmean_src {name} {mode}"),
                N,
                bytes.len(),
                || absmean_src(dtype, bytes, mode),
            );
            eprintln!("{:40} = {m:.9e}", "");
        }
        time(
            &format!("find_non_finite_src {name}"),
            N,
            bytes.len(),
            || find_non_finite_src(dtype, bytes),
        );
    }

    time("absmean (f32 slice) exact", N, 4 * N, || {
        absmean(&vals, AbsmeanMode::Exact)
    });
    time("absmean (f32 slice) torch:2", N, 4 * N, || {
        absmean(&vals, AbsmeanMode::REFERENCE)
    });

    let t = Ternarized::new(absmean(&vals, AbsmeanMode::REFERENCE), SrcDtype::F32);
    let mut codes = vec![0i8; N];
    time("codes_into (rows of 4096, rayon)", N, 4 * N, || {
        codes
            .par_chunks_mut(4096)
            .zip(vals.par_chunks(4096))
            .for_each(|(c, v)| t.codes_into(v, c));
    });
    let mut out = vec![0f32; N];
    time("values_into (rows of 4096, rayon)", N, 4 * N, || {
        out.par_chunks_mut(4096)
            .zip(vals.par_chunks(4096))
            .for_each(|(o, v)| t.values_into(v, o));
    });
    let mut conv = vec![0f32; N];
    time("to_f32_into F16 (rayon)", N, 2 * N, || {
        conv.par_chunks_mut(4096)
            .zip(f16_bytes.par_chunks(8192))
            .for_each(|(o, b)| to_f32_into(SrcDtype::F16, b, o));
    });
}
