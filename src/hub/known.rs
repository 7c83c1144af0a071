//! The repositories bitnet.cpp's `setup_env.py` knows (`SUPPORTED_HF_MODELS`), for
//! `bitconv fetch --list`, with the output types that apply to each, plus
//! `microsoft/bitnet-b1.58-2B-4T-bf16`: the 2B-4T master weights, which bitnet.cpp converts with
//! `utils/convert-helper-bitnet.py` instead of `setup_env.py`.
//!
//! Output types follow from the shapes recorded for each model:
//! - `tq1_0`/`tq2_0` need every ternary matrix's input dimension K to be a multiple of 256;
//! - `tl1`/`tl2` need kernel parameters for the model's own (M, K) shapes, which setup_env
//!   generates only for bitnet_b1_58-large, bitnet_b1_58-3B and Llama3-8B-1.58-100B-tokens
//!   (2B-4T and Falcon get another model's tables and fail); bitconv ships its own tables for
//!   the 2B-4T and Falcon3 shapes (`layouts/family-*`, `quant::layouts::params::family`);
//! - `i2_s`, `f16`, `f32` apply to every ternary model.
//!
//! The Falcon3 shapes were checked against tiiuae's `config.json` files on the Hub
//! (Falcon3-1B-Instruct-1.58bit, Falcon3-3B/7B/10B-Base-1.58bit and the full-precision
//! Falcon3-3B/7B-Instruct the instruct 1.58-bit models are quantized from): hidden 2048, FFN
//! 8192, 8 heads / 4 KV heads of 256, 18 layers (1B); hidden 3072, 12 / 4 heads of 256 with FFN
//! 9216, 22 layers (3B), FFN 23040, 28 layers (7B) or 40 layers (10B); vocabulary 131072. The
//! Falcon-E shapes could not be checked.

use crate::quant::out_type::{OutType, OUT_TYPES};

/// One known repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownRepo {
    /// `org/name` on the Hub.
    pub repo: &'static str,
    /// bitnet.cpp's local model name (its model directory and codegen key).
    pub local_name: &'static str,
    /// Checkpoint family: `bitnet` (1bitLLM, SiLU), `bitnet-b1.58` (2B-4T, relu²), `llama`
    /// (Llama3/Falcon3/Falcon-E, packed weights), `qwen3`/`gemma3` (embedding models).
    pub family: &'static str,
    /// The input widths K of its ternary matrices, as recorded (empty: not recorded). Types
    /// whose rows are whole blocks ([`OutType::row_block`]) apply only where every K fits.
    pub input_widths: &'static [usize],
    /// Whether kernel parameters for its TL shapes exist (bitnet.cpp's or bitconv's tables).
    pub tl_tables: bool,
    /// A caveat shown with the entry (empty when none).
    pub note: &'static str,
}

const FALCON_NOTE: &str = "shapes not recorded: tq1_0/tq2_0 unverified; no TL kernel tables \
                           for these shapes";

const fn falcon(repo: &'static str, local_name: &'static str) -> KnownRepo {
    KnownRepo {
        repo,
        local_name,
        family: "llama",
        input_widths: &[],
        tl_tables: false,
        note: FALCON_NOTE,
    }
}

/// Falcon3 1.58-bit models: K is a multiple of 256 in every size (hidden 2048 or 3072, FFN 8192,
/// 9216 or 23040), and bitconv's family tables hold their TL shapes.
const fn falcon3(
    repo: &'static str,
    local_name: &'static str,
    input_widths: &'static [usize],
    note: &'static str,
) -> KnownRepo {
    KnownRepo {
        repo,
        local_name,
        family: "llama",
        input_widths,
        tl_tables: true,
        note,
    }
}

const FALCON3_7B_WIDTHS: &[usize] = &[3072, 23040];
const FALCON3_3B_WIDTHS: &[usize] = &[3072, 9216];
const FALCON3_1B_WIDTHS: &[usize] = &[2048, 8192];
const FALCON3_7B_NOTE: &str =
    "K in {3072, 23040}: multiples of 256; TL from bitconv's table (layouts/family-Falcon3-7B-10B)";
const FALCON3_3B_NOTE: &str =
    "K in {3072, 9216}: multiples of 256; TL from bitconv's table (layouts/family-Falcon3-3B)";
const FALCON3_1B_NOTE: &str =
    "K in {2048, 8192}: multiples of 256; TL from bitconv's table (layouts/family-Falcon3-1B)";

static KNOWN: &[KnownRepo] = &[
    KnownRepo {
        repo: "1bitLLM/bitnet_b1_58-large",
        local_name: "bitnet_b1_58-large",
        family: "bitnet",
        input_widths: &[1536, 4096],
        tl_tables: true,
        note: "K in {1536, 4096}: all multiples of 256",
    },
    KnownRepo {
        repo: "1bitLLM/bitnet_b1_58-3B",
        local_name: "bitnet_b1_58-3B",
        family: "bitnet",
        input_widths: &[3200, 8640],
        tl_tables: true,
        note: "K in {3200, 8640}: not multiples of 256, so no tq1_0/tq2_0; i2_s: bitnet.cpp \
               cannot run I2_S rows of 8640 values (bitconv can; tl1/tl2 run there)",
    },
    KnownRepo {
        repo: "HF1BitLLM/Llama3-8B-1.58-100B-tokens",
        local_name: "Llama3-8B-1.58-100B-tokens",
        family: "llama",
        input_widths: &[4096, 14336],
        tl_tables: true,
        note: "K in {4096, 14336}: all multiples of 256",
    },
    falcon3(
        "tiiuae/Falcon3-7B-Instruct-1.58bit",
        "Falcon3-7B-Instruct-1.58bit",
        FALCON3_7B_WIDTHS,
        FALCON3_7B_NOTE,
    ),
    falcon3(
        "tiiuae/Falcon3-7B-1.58bit",
        "Falcon3-7B-1.58bit",
        FALCON3_7B_WIDTHS,
        FALCON3_7B_NOTE,
    ),
    falcon3(
        "tiiuae/Falcon3-10B-Instruct-1.58bit",
        "Falcon3-10B-Instruct-1.58bit",
        FALCON3_7B_WIDTHS,
        FALCON3_7B_NOTE,
    ),
    falcon3(
        "tiiuae/Falcon3-10B-1.58bit",
        "Falcon3-10B-1.58bit",
        FALCON3_7B_WIDTHS,
        FALCON3_7B_NOTE,
    ),
    falcon3(
        "tiiuae/Falcon3-3B-Instruct-1.58bit",
        "Falcon3-3B-Instruct-1.58bit",
        FALCON3_3B_WIDTHS,
        FALCON3_3B_NOTE,
    ),
    falcon3(
        "tiiuae/Falcon3-3B-1.58bit",
        "Falcon3-3B-1.58bit",
        FALCON3_3B_WIDTHS,
        FALCON3_3B_NOTE,
    ),
    falcon3(
        "tiiuae/Falcon3-1B-Instruct-1.58bit",
        "Falcon3-1B-Instruct-1.58bit",
        FALCON3_1B_WIDTHS,
        FALCON3_1B_NOTE,
    ),
    KnownRepo {
        repo: "microsoft/BitNet-b1.58-2B-4T",
        local_name: "BitNet-b1.58-2B-4T",
        family: "bitnet-b1.58",
        input_widths: &[2560, 6912],
        tl_tables: true,
        note: "K in {2560, 6912}: multiples of 256; TL from bitconv's table \
               (layouts/family-BitNet-b1.58-2B-4T)",
    },
    KnownRepo {
        repo: "microsoft/bitnet-b1.58-2B-4T-bf16",
        local_name: "bitnet-b1.58-2B-4T-bf16",
        family: "bitnet-b1.58",
        input_widths: &[2560, 6912],
        tl_tables: true,
        note: "bf16 master weights of BitNet-b1.58-2B-4T, ternarized (absmean) on conversion; \
               not in setup_env.py (bitnet.cpp: utils/convert-helper-bitnet.py); K in {2560, \
               6912}; TL from bitconv's table (layouts/family-BitNet-b1.58-2B-4T)",
    },
    falcon("tiiuae/Falcon-E-3B-Instruct", "Falcon-E-3B-Instruct"),
    falcon("tiiuae/Falcon-E-1B-Instruct", "Falcon-E-1B-Instruct"),
    falcon("tiiuae/Falcon-E-3B-Base", "Falcon-E-3B-Base"),
    falcon("tiiuae/Falcon-E-1B-Base", "Falcon-E-1B-Base"),
    KnownRepo {
        repo: "microsoft/bitnet-embedding-0.6b",
        local_name: "bitnet-embedding-0.6b",
        family: "qwen3",
        input_widths: &[],
        tl_tables: false,
        note: "embedding model (bitnet.cpp converts it with a separate script)",
    },
    KnownRepo {
        repo: "microsoft/bitnet-embedding-270m",
        local_name: "bitnet-embedding-270m",
        family: "gemma3",
        input_widths: &[],
        tl_tables: false,
        note: "embedding model (bitnet.cpp converts it with a separate script)",
    },
];

impl KnownRepo {
    /// The output types that apply: every type, less those whose rows must be whole blocks
    /// unless every recorded K is, and less the TL types without kernel tables.
    pub fn output_types(&self) -> Vec<&'static str> {
        OUT_TYPES
            .iter()
            .filter(|t| self.applies(**t))
            .map(|t| t.name())
            .collect()
    }

    /// Whether output type `t` applies to this model.
    pub fn applies(&self, t: OutType) -> bool {
        let rows_fit = t.row_block().is_none_or(|b| {
            !self.input_widths.is_empty() && self.input_widths.iter().all(|k| k % b == 0)
        });
        rows_fit && (t.tl_layout().is_none() || self.tl_tables)
    }
}

/// The repositories bitnet.cpp's `setup_env.py` supports, in its order, with the 2B-4T bf16
/// master weights after the packed 2B-4T repository.
pub fn known_repos() -> &'static [KnownRepo] {
    KNOWN
}

/// The known entry for `repo` (exact `org/name`, case-insensitive).
pub fn find_known(repo: &str) -> Option<&'static KnownRepo> {
    KNOWN.iter().find(|k| k.repo.eq_ignore_ascii_case(repo))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ternary input dimensions K recorded in FORMATS §8 decide TQ eligibility.
    #[test]
    fn tq_matches_shapes() {
        let shapes: &[(&str, &[u32])] = &[
            ("1bitLLM/bitnet_b1_58-large", &[1536, 4096]),
            ("1bitLLM/bitnet_b1_58-3B", &[3200, 8640]),
            ("HF1BitLLM/Llama3-8B-1.58-100B-tokens", &[4096, 14336]),
            ("microsoft/BitNet-b1.58-2B-4T", &[2560, 6912]),
            ("microsoft/bitnet-b1.58-2B-4T-bf16", &[2560, 6912]),
            ("tiiuae/Falcon3-1B-Instruct-1.58bit", &[2048, 8192]),
            ("tiiuae/Falcon3-3B-1.58bit", &[3072, 9216]),
            ("tiiuae/Falcon3-3B-Instruct-1.58bit", &[3072, 9216]),
            ("tiiuae/Falcon3-7B-1.58bit", &[3072, 23040]),
            ("tiiuae/Falcon3-10B-Instruct-1.58bit", &[3072, 23040]),
        ];
        for (repo, ks) in shapes {
            let k = find_known(repo).unwrap();
            let fits = ks.iter().all(|k| k % 256 == 0);
            assert_eq!(k.output_types().contains(&"tq1_0"), fits, "{repo}");
            assert_eq!(k.output_types().contains(&"tq2_0"), fits, "{repo}");
        }
        assert_eq!(known_repos().len(), 18);
        for k in known_repos() {
            assert!(k.repo.ends_with(k.local_name), "{}", k.repo);
        }
    }
}
