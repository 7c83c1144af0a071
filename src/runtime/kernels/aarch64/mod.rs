//! aarch64 kernel tables: NEON, with the dot-product extension (`sdot`) where present. The
//! attention kernels (flash attention over either cache among them) and the activation quantizers are the scalar ones (they are a small part
//! of the time, and aarch64 rounds to nearest even in one instruction).

use super::{reference as scalar, KernelChoice, Kernels};

mod neon;

static NEON: Kernels = Kernels {
    name: "neon",
    choice: KernelChoice::Neon,
    i2s: neon::i2s_dots_plain,
    tq2: neon::tq2_dots_plain,
    q8_0: neon::q8_0_dots_plain,
    f16: neon::f16_dots,
    f32: neon::f32_dots,
    weighted_f16: scalar::weighted_f16,
    weighted_f32: scalar::weighted_f32,
    flash_f16: scalar::flash_f16,
    flash_f32: scalar::flash_f32,
    exp: scalar::exp,
    rope: scalar::rope,
    quantize_i8s: scalar::quantize_i8s,
    quantize_q8k: scalar::quantize_q8k,
    quantize_q8_0: scalar::quantize_q8_0,
    tq2_tokens: 4,
};

static NEON_DOTPROD: Kernels = Kernels {
    name: "neon-dotprod",
    choice: KernelChoice::Neon,
    i2s: neon::i2s_dots_dot,
    tq2: neon::tq2_dots_dot,
    q8_0: neon::q8_0_dots_dot,
    f16: neon::f16_dots,
    f32: neon::f32_dots,
    weighted_f16: scalar::weighted_f16,
    weighted_f32: scalar::weighted_f32,
    flash_f16: scalar::flash_f16,
    flash_f32: scalar::flash_f32,
    exp: scalar::exp,
    rope: scalar::rope,
    quantize_i8s: scalar::quantize_i8s,
    quantize_q8k: scalar::quantize_q8k,
    quantize_q8_0: scalar::quantize_q8_0,
    tq2_tokens: 4,
};

fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

fn has_dotprod() -> bool {
    has_neon() && std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The best NEON table: with `sdot` if the CPU has the dot-product extension.
pub(super) fn neon() -> Option<&'static Kernels> {
    if has_dotprod() {
        Some(&NEON_DOTPROD)
    } else {
        has_neon().then_some(&NEON)
    }
}

/// Every NEON table this CPU runs.
pub(super) fn tables() -> Vec<&'static Kernels> {
    let mut v = vec![];
    if has_neon() {
        v.push(&NEON);
    }
    if has_dotprod() {
        v.push(&NEON_DOTPROD);
    }
    v
}
