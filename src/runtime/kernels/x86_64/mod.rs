//! x86-64 kernel tables: AVX2 (+FMA, F16C) and AVX-512 with VNNI, each built only after the
//! CPU (and OS) were found to support it. The AVX-512 table needs Rust 1.89 to compile (see
//! `build.rs`); with an older compiler it is left out.

use super::{KernelChoice, Kernels};

/// Runs a tile function over all rows × tokens of a matmul: `$gemv` rows at a time for one
/// token, `$rmax × $tmax` tiles for a batch, smaller tiles at the edges.
///
/// The one-token kernels all take a single row at a time (`$gemv` = 1). A matrix-vector
/// product is bound by memory bandwidth, and the hardware prefetchers reach it only if each
/// thread reads one sequential stream: on the machine measured, a two-thread F16 GEMV over four
/// interleaved 1.5 KiB rows read 20 GB/s against 34 GB/s one row at a time, and decoding the
/// 0.7B model ran at 67 tokens/s with two 1 KiB I2_S rows side by side against 92–95 with one.
/// The activations stay in L1 either way. `$combos` lists every
/// `(R, T)` shape that can occur (so only those are instantiated); the result of one tile is
/// `[[_; T]; R]`, stored at `out[(r + i)·n + t + j]`.
macro_rules! tiled {
    ($out:ident, $rows:expr, $n:expr, $gemv:expr, $rmax:literal, $tmax:literal,
     [$(($RR:literal, $TT:literal)),* $(,)?], |$r:ident, $t:ident, $R:ident, $T:ident| $call:expr) => {{
        let rows: usize = $rows;
        let n: usize = $n;
        let mut $r = 0usize;
        while $r < rows {
            let rr = (if n == 1 { $gemv } else { $rmax } as usize).min(rows - $r);
            let mut $t = 0usize;
            while $t < n {
                let tt = ($tmax as usize).min(n - $t);
                match (rr, tt) {
                    $(
                        ($RR, $TT) => {
                            #[allow(dead_code)]
                            const $R: usize = $RR;
                            #[allow(dead_code)]
                            const $T: usize = $TT;
                            let res: [[_; $TT]; $RR] = $call;
                            for (i, row) in res.iter().enumerate() {
                                for (j, v) in row.iter().enumerate() {
                                    $out[($r + i) * n + $t + j] = *v;
                                }
                            }
                        }
                    )*
                    _ => unreachable!("tile {}×{} not instantiated", rr, tt),
                }
                $t += tt;
            }
            $r += rr;
        }
    }};
}

/// Float dot products (see `Kernels::float_dots`), the body of a function generic over
/// `const H: bool` (F16 weights if true, else F32): tiles of `$gr` rows × 1 token in ggml's
/// order (prefetching ahead in each row if `$pf`, see `avx2::ggml_tile`), `$lr × $lt` in the
/// 8-lane order.
macro_rules! float_dots_body {
    ($order:ident, $w:ident, $stride:ident, $k:ident, $x:ident, $n:ident, $out:ident, $pf:literal,
     $gr:literal, [$($gc:tt)*], $lr:literal, $lt:literal, [$($lc:tt)*]) => {{
        let ty = if H { FloatType::F16 } else { FloatType::F32 };
        let rows = check_float(ty, $w.len(), $stride, $k, $x.len(), $n, $out.len());
        let (wp, xp) = ($w.as_ptr(), $x.as_ptr());
        match $order {
            FloatOrder::Ggml => {
                // One token at a time (ggml's vec_dot has no batch tiling).
                tiled!($out, rows, $n, 1, $gr, 1, [$($gc)*], |r, t, R, T| {
                    ggml_tile::<H, R, T, $pf>(wp.add(r * $stride), $stride, xp.add(t * $k), $k)
                });
            }
            FloatOrder::Lanes8 => {
                tiled!($out, rows, $n, $lr, $lr, $lt, [$($lc)*], |r, t, R, T| {
                    lanes8_tile::<H, R, T>(wp.add(r * $stride), $stride, xp.add(t * $k), $k)
                });
            }
        }
    }};
}

mod avx2;
#[cfg(bitconv_avx512)]
mod avx512;

static AVX2: Kernels = Kernels {
    name: "avx2",
    choice: KernelChoice::Avx2,
    i2s: avx2::i2s_dots,
    tq2: avx2::tq2_dots::<true>,
    q8_0: avx2::q8_0_dots,
    f16: avx2::float_dots::<true>,
    f32: avx2::float_dots::<false>,
    weighted_f16: avx2::weighted::<true>,
    weighted_f32: avx2::weighted::<false>,
    flash_f16: avx2::flash_f16,
    flash_f32: avx2::flash_f32,
    exp: avx2::exp,
    rope: avx2::rope,
    quantize_i8s: avx2::quantize_i8s,
    quantize_q8k: avx2::quantize_q8k,
    quantize_q8_0: avx2::quantize_q8_0,
    tq2_tokens: 4,
};

#[cfg(bitconv_avx512)]
static AVX512: Kernels = Kernels {
    name: "avx512",
    choice: KernelChoice::Avx512,
    i2s: avx512::i2s_dots,
    tq2: avx512::tq2_dots,
    q8_0: avx512::q8_0_dots,
    f16: avx512::float_dots::<true>,
    f32: avx512::float_dots::<false>,
    weighted_f16: avx2::weighted::<true>,
    weighted_f32: avx2::weighted::<false>,
    flash_f16: avx2::flash_f16,
    flash_f32: avx2::flash_f32,
    exp: avx2::exp,
    rope: avx2::rope,
    quantize_i8s: avx2::quantize_i8s,
    quantize_q8k: avx2::quantize_q8k,
    quantize_q8_0: avx2::quantize_q8_0,
    tq2_tokens: 3,
};

fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(bitconv_avx512)]
fn has_avx512() -> bool {
    has_avx2()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

/// Whether the AVX2 and AVX-512 tables compute `expf` eight at a time here (see
/// `avx2::exp`).
pub(super) fn vector_expf() -> bool {
    has_avx2() && avx2::vector_expf_matches_library()
}

/// The AVX2 table, if the CPU has AVX2, FMA and F16C.
pub(super) fn avx2() -> Option<&'static Kernels> {
    has_avx2().then_some(&AVX2)
}

/// The AVX-512 VNNI table, if the CPU has it (and the compiler could build it).
pub(super) fn avx512() -> Option<&'static Kernels> {
    #[cfg(bitconv_avx512)]
    return has_avx512().then_some(&AVX512);
    #[cfg(not(bitconv_avx512))]
    None
}
