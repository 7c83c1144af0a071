//! Which runtime can load a file and compute it as its model was trained, with the reason where
//! not: the answer `inspect` and the convert/fetch summaries give. Facts (microsoft/BitNet 2024
//! `4645960` and 2026 `16da220` with their llama.cpp forks, mainline llama.cpp as of 2026):
//!
//! - type ids: TL2 is 39 in the 2024 fork and 42 in the current one; mainline knows neither
//!   TL1/TL2 nor I2_S, and reads 39 as MXFP4 and 42 as Q2_0 ([`super::TypeIds`]);
//! - bitnet.cpp's I2_S kernels walk rows in whole 128-value blocks;
//! - mainline has no `bitnet-b1.58` architecture (it writes 2B-4T as `bitnet`);
//! - the FFN activation: the 2024 fork follows the architecture (ReLU² for `bitnet-b1.58`),
//!   the current fork and mainline apply SiLU to every BitNet graph and read no key;
//! - the current bitnet.cpp's default build leaves the TL1/TL2 kernels out.

use crate::arch::{Activation, Arch, Target, HIDDEN_ACTIVATION};

use super::{GgmlType, GgufHeader};

/// One runtime's verdict on a file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// The runtime (`bitconv`, or a [`Target`] name).
    pub runtime: &'static str,
    /// Whether it loads the file.
    pub loads: bool,
    /// Whether, loaded, it computes the model as trained.
    pub correct: bool,
    /// Why not, or what to know (empty when there is nothing to say).
    pub why: String,
}

/// The verdict of bitconv and of each target runtime on a parsed header.
pub fn verdicts(h: &GgufHeader) -> Vec<Verdict> {
    let arch_name = h
        .get("general.architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let arch = Arch::from_name(arch_name);
    let declared = h
        .get(&format!("{arch_name}.{HIDDEN_ACTIVATION}"))
        .and_then(|v| v.as_str())
        .and_then(Activation::from_name);
    let trained = declared.or(arch.map(Arch::activation));
    let has = |ty: GgmlType| h.tensors.iter().any(|t| t.ty == ty);
    let id_of_tl2 = h
        .tensors
        .iter()
        .find(|t| t.ty == GgmlType::TL2)
        .map(|t| t.type_id);
    let i2s_limit = h.tensors.iter().find(|t| {
        t.dims
            .first()
            .is_some_and(|&k| t.ty.bitnet_cpp_limit(k).is_some())
    });

    let mut out = vec![Verdict {
        runtime: "bitconv",
        loads: arch.is_some(),
        correct: arch.is_some(),
        why: match arch {
            Some(_) => String::new(),
            None => format!("architecture {arch_name:?} is not one bitconv runs"),
        },
    }];
    for target in [Target::BitnetCpp2024, Target::BitnetCpp, Target::LlamaCpp] {
        let mut no_load = Vec::new();
        let mut wrong = Vec::new();
        let mut notes = Vec::new();
        match target {
            Target::LlamaCpp => {
                for info in crate::gguf::TYPE_TABLE.iter().filter(|i| i.ty.is_bitnet()) {
                    if has(info.ty) {
                        no_load.push(format!("{} is not a mainline type", info.name));
                    }
                }
                if let Some(a) = arch.filter(|a| a.mainline_name() != a.name()) {
                    no_load.push(format!(
                        "it has no {} architecture (files bitconv writes for it name {} `{}`)",
                        a.name(),
                        a.info().models,
                        a.mainline_name()
                    ));
                }
            }
            Target::BitnetCpp | Target::BitnetCpp2024 => {
                let want = if target == Target::BitnetCpp { 42 } else { 39 };
                if let Some(id) = id_of_tl2.filter(|&id| id != want) {
                    no_load.push(format!(
                        "its TL2 is type {want}; this file stores type {id} (write with --target {target})"
                    ));
                }
                if let Some(t) = i2s_limit {
                    no_load.push(format!(
                        "{}: I2_S rows of {} values are not a multiple of 128",
                        t.name, t.dims[0]
                    ));
                }
                if target == Target::BitnetCpp && (has(GgmlType::TL1) || has(GgmlType::TL2)) {
                    notes.push(
                        "TL kernels need a build with BITNET_X86_TL2/BITNET_ARM_TL1 on".into(),
                    );
                }
            }
        }
        if let (Some(a), Some(t)) = (arch, trained) {
            let computed = target.activation_for(a);
            if computed != t {
                wrong.push(format!(
                    "it computes the FFN with {} instead of {}",
                    computed.name(),
                    t.name()
                ));
            }
        }
        let loads = no_load.is_empty() && arch.is_some();
        let why = if !loads {
            no_load.join("; ")
        } else {
            wrong
                .iter()
                .chain(&notes)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        };
        out.push(Verdict {
            runtime: target.name(),
            loads,
            correct: loads && wrong.is_empty(),
            why,
        });
    }
    out
}

/// The verdicts as report lines, one a runtime.
pub fn lines(verdicts: &[Verdict]) -> Vec<String> {
    verdicts
        .iter()
        .map(|v| {
            let state = match (v.loads, v.correct) {
                (true, true) => "runs it",
                (true, false) => "loads it, computes it wrong",
                (false, _) => "cannot load it",
            };
            if v.why.is_empty() {
                format!("{:<16} {state}", v.runtime)
            } else {
                format!("{:<16} {state}: {}", v.runtime, v.why)
            }
        })
        .collect()
}
