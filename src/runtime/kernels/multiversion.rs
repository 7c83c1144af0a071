//! The one way the crate compiles portable code more than once for wider instruction sets:
//! [`multiversion!`](crate::runtime::kernels::multiversion) turns an `#[inline(always)]`
//! function into one that takes a kernel table and runs the build for that table's instruction
//! set (its [`KernelChoice`](super::KernelChoice)). The table is what decides, so
//! `BITCONV_KERNEL=reference` (or [`super::force_reference`]) runs the portable build of every
//! such function as well as the scalar twins of the table's own kernels, and a twin test can
//! run each build by passing each table of [`super::available`].
//!
//! Integer arithmetic is exact and Rust neither fuses nor reorders float operations
//! (`f32::mul_add` is a fused multiply-add in every build), so every build computes the same
//! bits; the wider ones are only faster.

/// Defines `fn name(kern: &Kernels, args…) -> ret` that runs `imp(args…)` compiled for the
/// instruction set of `kern`: AVX-512 (with the features the AVX-512 table requires), AVX2 (+FMA,
/// F16C) for the AVX2 table, the portable build otherwise (the reference table, NEON).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $imp:ident) => {
        $(#[$meta])*
        $vis fn $name(
            kern: &$crate::runtime::kernels::Kernels,
            $($arg: $ty),*
        ) -> $ret {
            #[allow(unused_imports)]
            use $crate::runtime::kernels::KernelChoice;
            match kern.choice() {
                #[cfg(all(target_arch = "x86_64", bitconv_avx512))]
                KernelChoice::Avx512 => {
                    #[target_feature(
                        enable = "avx512f,avx512dq,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
                    )]
                    unsafe fn build($($arg: $ty),*) -> $ret {
                        $imp($($arg),*)
                    }
                    // SAFETY: a table exists only on a CPU with the features it names.
                    unsafe { build($($arg),*) }
                }
                // `Avx512` reaches this arm only when the AVX-512 table is not built.
                #[cfg(target_arch = "x86_64")]
                #[allow(unreachable_patterns)]
                KernelChoice::Avx2 | KernelChoice::Avx512 => {
                    #[target_feature(enable = "avx2,fma,f16c")]
                    unsafe fn build($($arg: $ty),*) -> $ret {
                        $imp($($arg),*)
                    }
                    // SAFETY: as above (the AVX-512 table's CPU has AVX2, FMA and F16C too).
                    unsafe { build($($arg),*) }
                }
                _ => $imp($($arg),*),
            }
        }
    };
}

pub(crate) use multiversion;
