//! The reference table: the scalar twins of [`super::scalar`] applied row by row. This
//! is what every SIMD kernel is tested against.

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::{FloatOrder, FloatType, KernelChoice, Kernels, Q8kActs};
use crate::runtime::format::{I2S_BLOCK, Q8_0_BLOCK_BYTES, QK8_0, QK_K, TQ2_BLOCK_BYTES};
use crate::runtime::kernels::scalar::{self, I8Scale};

pub(super) static TABLE: Kernels = Kernels {
    name: "reference",
    choice: KernelChoice::Reference,
    i2s: i2s_dots,
    tq2: tq2_dots,
    q8_0: q8_0_dots,
    f16: f16_dots,
    f32: f32_dots,
    weighted_f16,
    weighted_f32,
    flash_f16,
    flash_f32,
    exp,
    rope,
    quantize_i8s,
    quantize_q8k,
    quantize_q8_0,
    tq2_tokens: 4,
};

/// Checks the shapes shared by every matmul kernel; returns the number of rows.
pub(crate) fn check_rows(
    w: usize,
    row_bytes: usize,
    q: usize,
    k: usize,
    n: usize,
    out: usize,
) -> usize {
    assert!(
        row_bytes > 0 && w % row_bytes == 0,
        "weights: {w} bytes are not whole rows of {row_bytes}"
    );
    let rows = w / row_bytes;
    assert_eq!(q, n * k, "activations: {q} values for {n} tokens of {k}");
    assert_eq!(
        out,
        rows * n,
        "output: {out} values for {rows} rows × {n} tokens"
    );
    rows
}

/// Checks the shapes of a float matmul; returns the number of rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn check_float(
    ty: FloatType,
    w: usize,
    stride: usize,
    k: usize,
    x: usize,
    n: usize,
    out: usize,
) -> usize {
    assert!(n > 0, "float matmul: no tokens");
    assert_eq!(x, n * k, "activations: {x} values for {n} tokens of {k}");
    assert_eq!(out % n, 0, "output: {out} values for {n} tokens");
    let rows = out / n;
    if rows > 0 {
        assert!(
            stride >= k * ty.bytes(),
            "stride {stride} shorter than a row"
        );
        assert!(
            (rows - 1) * stride + k * ty.bytes() <= w,
            "weights: {w} bytes for {rows} rows of stride {stride}"
        );
    }
    rows
}

/// Checks the shapes of a weighted sum; returns the number of rows.
pub(crate) fn check_weighted(
    ty: FloatType,
    v: usize,
    stride: usize,
    p: usize,
    out: usize,
    scratch: usize,
) -> usize {
    assert!(
        scratch >= 32 * out,
        "scratch: {scratch} values for {out} outputs"
    );
    if p > 0 {
        assert!(
            stride >= out * ty.bytes(),
            "stride {stride} shorter than a row"
        );
        assert!(
            (p - 1) * stride + out * ty.bytes() <= v,
            "values: {v} bytes for {p} rows of stride {stride}"
        );
    }
    p
}

/// Checks the shapes of flash attention over a cache of `ty` elements.
pub(crate) fn check_flash(
    ty: FloatType,
    q: usize,
    k: usize,
    v: usize,
    stride: usize,
    positions: usize,
    out: usize,
) {
    assert_eq!(q, out, "flash attention: query and output lengths");
    if positions > 0 {
        let row = out * ty.bytes();
        assert!(stride >= row, "stride {stride} shorter than a row");
        let need = (positions - 1) * stride + row;
        assert!(
            k >= need && v >= need,
            "flash attention: cache shorter than {positions} rows"
        );
    }
}

/// Checks the arguments of an I2_S kernel (see `Kernels::i2s_dots`); returns the number of rows.
pub(crate) fn check_i2s(w: usize, k: usize, q: usize, n: usize, out: usize) -> usize {
    assert!(
        k % I2S_BLOCK == 0,
        "I2_S rows need a multiple of 128 columns"
    );
    check_rows(w, k / 4, q, k, n, out)
}

/// Checks the arguments of a TQ2_0 kernel (see `Kernels::tq2_dots`); returns the number of rows.
pub(crate) fn check_tq2(
    w: usize,
    k: usize,
    q: usize,
    d: usize,
    bsum: usize,
    n: usize,
    out: usize,
) -> usize {
    assert!(k % QK_K == 0, "TQ2_0 rows need a multiple of 256 columns");
    let rows = check_rows(w, k / QK_K * TQ2_BLOCK_BYTES, q, k, n, out);
    assert_eq!(d, n * k / QK_K, "Q8_K scales");
    assert_eq!(bsum, n * k / 32, "Q8_K block sums");
    rows
}

/// Checks the arguments of a Q8_0 kernel (see `Kernels::q8_0_dots`); returns the number of rows.
pub(crate) fn check_q8_0(w: usize, k: usize, q: usize, d: usize, n: usize, out: usize) -> usize {
    assert!(k % QK8_0 == 0, "Q8_0 rows need a multiple of 32 columns");
    let rows = check_rows(w, k / QK8_0 * Q8_0_BLOCK_BYTES, q, k, n, out);
    assert_eq!(d, n * k / QK8_0, "Q8_0 scales");
    rows
}

thread_local! {
    static ROW: RefCell<(Vec<f32>, Vec<f16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
unsafe fn i2s_dots(w: &[u8], k: usize, q: &[i8], n: usize, out: &mut [i32]) {
    check_i2s(w.len(), k, q.len(), n, out.len());
    for (row, o) in w.chunks_exact(k / 4).zip(out.chunks_exact_mut(n)) {
        for (t, v) in o.iter_mut().enumerate() {
            *v = scalar::dot_i2s_codes(row, &q[t * k..(t + 1) * k]);
        }
    }
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
unsafe fn tq2_dots(
    w: &[u8],
    k: usize,
    acts: Q8kActs<'_>,
    _shared: Option<u16>,
    n: usize,
    out: &mut [f32],
) {
    let Q8kActs { q, d, bsum } = acts;
    check_tq2(w.len(), k, q.len(), d.len(), bsum.len(), n, out.len());
    let nb = k / QK_K;
    for (row, o) in w
        .chunks_exact(nb * TQ2_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(n))
    {
        for (t, v) in o.iter_mut().enumerate() {
            *v = scalar::dot_tq2_q8k(row, &q[t * k..(t + 1) * k], &d[t * nb..(t + 1) * nb]);
        }
    }
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
unsafe fn q8_0_dots(w: &[u8], k: usize, q: &[i8], d: &[f32], n: usize, out: &mut [f32]) {
    check_q8_0(w.len(), k, q.len(), d.len(), n, out.len());
    let nb = k / QK8_0;
    for (row, o) in w
        .chunks_exact(nb * Q8_0_BLOCK_BYTES)
        .zip(out.chunks_exact_mut(n))
    {
        for (t, v) in o.iter_mut().enumerate() {
            *v = scalar::dot_q8_0(row, &q[t * k..(t + 1) * k], &d[t * nb..(t + 1) * nb]);
        }
    }
}

/// Widens row bytes of type `ty` into `out`.
fn widen(ty: FloatType, bytes: &[u8], out: &mut [f32], hbuf: &mut [f16]) {
    match ty {
        FloatType::F16 => {
            for (o, b) in hbuf.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]);
            }
            hbuf.convert_to_f32_slice(out);
        }
        FloatType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn float_dots(
    ty: FloatType,
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    check_float(ty, w.len(), stride, k, x.len(), n, out.len());
    ROW.with_borrow_mut(|(wbuf, hbuf)| {
        wbuf.resize(k, 0.0);
        hbuf.resize(k, f16::ZERO);
        for (r, o) in out.chunks_exact_mut(n).enumerate() {
            let at = r * stride;
            widen(ty, &w[at..at + k * ty.bytes()], wbuf, hbuf);
            for (t, v) in o.iter_mut().enumerate() {
                let xt = &x[t * k..(t + 1) * k];
                *v = match order {
                    FloatOrder::Ggml => scalar::dot_f32_ggml(wbuf, xt),
                    FloatOrder::Lanes8 => scalar::dot_f32_lanes8(wbuf, xt),
                };
            }
        }
    });
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
#[allow(clippy::too_many_arguments)]
unsafe fn f16_dots(
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    float_dots(FloatType::F16, order, w, stride, k, x, n, out)
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
#[allow(clippy::too_many_arguments)]
unsafe fn f32_dots(
    order: FloatOrder,
    w: &[u8],
    stride: usize,
    k: usize,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) {
    float_dots(FloatType::F32, order, w, stride, k, x, n, out)
}

fn weighted(
    ty: FloatType,
    order: FloatOrder,
    v: &[u8],
    stride: usize,
    p: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    check_weighted(ty, v.len(), stride, p.len(), out.len(), scratch.len());
    let hd = out.len();
    let slots = match order {
        FloatOrder::Ggml => 32,
        FloatOrder::Lanes8 => 8,
    };
    let acc = &mut scratch[..slots * hd];
    acc.fill(0.0);
    ROW.with_borrow_mut(|(vbuf, hbuf)| {
        vbuf.resize(hd, 0.0);
        hbuf.resize(hd, f16::ZERO);
        for (j, &pj) in p.iter().enumerate() {
            widen(ty, &v[j * stride..j * stride + hd * ty.bytes()], vbuf, hbuf);
            let slot = j % slots;
            for (d, &vv) in vbuf.iter().enumerate() {
                let a = &mut acc[d * slots + slot];
                *a = vv.mul_add(pj, *a);
            }
        }
    });
    for (d, o) in out.iter_mut().enumerate() {
        let a = &acc[d * slots..(d + 1) * slots];
        *o = match order {
            FloatOrder::Ggml => scalar::reduce32(a.try_into().expect("32 slots")),
            FloatOrder::Lanes8 => scalar::hsum8(a.try_into().expect("8 slots")),
        };
    }
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
pub(super) unsafe fn weighted_f16(
    order: FloatOrder,
    v: &[u8],
    stride: usize,
    p: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    weighted(FloatType::F16, order, v, stride, p, out, scratch)
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
pub(super) unsafe fn weighted_f32(
    order: FloatOrder,
    v: &[u8],
    stride: usize,
    p: &[f32],
    out: &mut [f32],
    scratch: &mut [f32],
) {
    weighted(FloatType::F32, order, v, stride, p, out, scratch)
}

/// Flash attention over an F16 cache, exactly as the reference session computed it.
pub(crate) fn flash_f16_scalar(
    q: &[f32],
    k: &[u8],
    v: &[u8],
    stride: usize,
    positions: usize,
    scale: f32,
    out: &mut [f32],
) {
    check_flash(
        FloatType::F16,
        q.len(),
        k.len(),
        v.len(),
        stride,
        positions,
        out.len(),
    );
    let hd = out.len();
    ROW.with_borrow_mut(|(buf, hbuf)| {
        buf.resize(2 * hd, 0.0);
        hbuf.resize(hd, f16::ZERO);
        let (kbuf, acc) = buf.split_at_mut(hd);
        acc.fill(0.0);
        let mut m = f32::NEG_INFINITY;
        let mut sum = 0.0f32;
        for j in 0..positions {
            widen(
                FloatType::F16,
                &k[j * stride..j * stride + 2 * hd],
                kbuf,
                hbuf,
            );
            let s = scalar::dot_f32_ggml(kbuf, q) * scale;
            let mut ms = 1.0f32;
            let mut vs = 1.0f32;
            if s > m {
                let m_old = m;
                m = s;
                ms = (m_old - m).exp();
                for a in acc.iter_mut() {
                    *a = scalar::round_f16(*a * ms);
                }
            } else {
                vs = (s - m).exp();
            }
            widen(
                FloatType::F16,
                &v[j * stride..j * stride + 2 * hd],
                kbuf,
                hbuf,
            );
            for (a, &vv) in acc.iter_mut().zip(kbuf.iter()) {
                *a = scalar::round_f16(vv.mul_add(vs, *a));
            }
            sum = sum.mul_add(ms, vs);
        }
        let inv = 1.0f32 / sum;
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = a * inv;
        }
    });
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
pub(super) unsafe fn flash_f16(
    q: &[f32],
    k: &[u8],
    v: &[u8],
    stride: usize,
    positions: usize,
    scale: f32,
    out: &mut [f32],
) {
    flash_f16_scalar(q, k, v, stride, positions, scale, out)
}

/// Flash attention over an F32 cache (no roundings), the recurrence of [`flash_f16_scalar`]:
/// `s = (K_j·q)·scale` with `dot(K_j bytes, q, scratch)` in ggml's 32-slot order, the value
/// accumulator updated with fused multiply-adds, `S = S·ms + vs` (fused), `out = acc · (1/S)`.
/// Every table's entry is this body with its own dot product (the same bits); `dot` gets `hd`
/// values of scratch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn flash_f32_with(
    dot: impl Fn(&[u8], &[f32], &mut [f32]) -> f32,
    q: &[f32],
    k: &[u8],
    v: &[u8],
    stride: usize,
    positions: usize,
    scale: f32,
    out: &mut [f32],
) {
    check_flash(
        FloatType::F32,
        q.len(),
        k.len(),
        v.len(),
        stride,
        positions,
        out.len(),
    );
    let hd = out.len();
    FLASH.with_borrow_mut(|buf| {
        buf.resize(3 * hd, 0.0);
        let (acc, rest) = buf.split_at_mut(hd);
        let (vbuf, kbuf) = rest.split_at_mut(hd);
        acc.fill(0.0);
        let mut m = f32::NEG_INFINITY;
        let mut sum = 0.0f32;
        for j in 0..positions {
            let row = j * stride..j * stride + 4 * hd;
            let s = dot(&k[row.clone()], q, kbuf) * scale;
            let mut ms = 1.0f32;
            let mut vs = 1.0f32;
            if s > m {
                let m_old = m;
                m = s;
                ms = (m_old - m).exp();
                for a in acc.iter_mut() {
                    *a *= ms;
                }
            } else {
                vs = (s - m).exp();
            }
            widen(FloatType::F32, &v[row], vbuf, &mut []);
            for (a, &vv) in acc.iter_mut().zip(vbuf.iter()) {
                *a = vv.mul_add(vs, *a);
            }
            sum = sum.mul_add(ms, vs);
        }
        let inv = 1.0f32 / sum;
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = a * inv;
        }
    });
}

thread_local! {
    /// The accumulator and rows of [`flash_f32_with`] (apart from `ROW`, which a table's dot
    /// product may use).
    static FLASH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// # Safety
/// None: `unsafe` only to match the table's function type (SIMD entries need CPU
/// features). Lengths are checked.
pub(super) unsafe fn flash_f32(
    q: &[f32],
    k: &[u8],
    v: &[u8],
    stride: usize,
    positions: usize,
    scale: f32,
    out: &mut [f32],
) {
    let dot = |row: &[u8], q: &[f32], kbuf: &mut [f32]| {
        widen(FloatType::F32, row, kbuf, &mut []);
        scalar::dot_f32_ggml(kbuf, q)
    };
    flash_f32_with(dot, q, k, v, stride, positions, scale, out)
}

/// # Safety
/// None: `unsafe` only to match the table's function type.
pub(super) unsafe fn exp(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// # Safety
/// None: `unsafe` only to match the table's function type.
pub(super) unsafe fn rope(
    x: &mut [f32],
    table: &[(f32, f32)],
    style: scalar::RopeStyle,
    hd: usize,
) {
    scalar::rope_heads(x, table, style, hd)
}

/// # Safety
/// None: `unsafe` only to match the table's function type.
pub(super) unsafe fn quantize_i8s(x: &[f32], q: &mut [i8], rule: I8Scale) -> (f32, i32) {
    assert_eq!(x.len(), q.len(), "quantize_i8s: lengths");
    scalar::quantize_i8s_with(x, q, rule)
}

/// # Safety
/// None: `unsafe` only to match the table's function type.
pub(super) unsafe fn quantize_q8k(x: &[f32], q: &mut [i8], d: &mut [f32], bsum: &mut [i32]) {
    check_q8k(x.len(), q.len(), d.len(), bsum.len());
    scalar::quantize_q8k(x, q, d);
    super::q8k_bsums(q, bsum);
}

/// # Safety
/// None: `unsafe` only to match the table's function type.
pub(super) unsafe fn quantize_q8_0(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    check_q8_0_acts(x.len(), q.len(), d.len());
    scalar::quantize_q8_0(x, q, d);
}

/// Checks the lengths of a Q8_K quantization.
pub(crate) fn check_q8k(x: usize, q: usize, d: usize, bsum: usize) {
    assert!(x % QK_K == 0 && q == x, "quantize_q8k: {x} values into {q}");
    assert_eq!(d, x / QK_K, "quantize_q8k: scales");
    assert_eq!(bsum, x / 32, "quantize_q8k: block sums");
}

/// Checks the lengths of a Q8_0 quantization.
pub(crate) fn check_q8_0_acts(x: usize, q: usize, d: usize) {
    assert!(
        x % QK8_0 == 0 && q == x,
        "quantize_q8_0: {x} values into {q}"
    );
    assert_eq!(d, x / QK8_0, "quantize_q8_0: scales");
}
