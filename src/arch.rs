//! The model architectures bitconv writes and runs, in one place: their GGUF names and
//! aliases, the FFN activation, the RoPE convention, sub-norms and the head. The checkpoint
//! reader, the converter, the dummy generator and the runtime all use this table.

use std::fmt;

/// A GGUF architecture (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Arch {
    /// `bitnet` (1bitLLM checkpoints): SiLU gate, attention and FFN sub-norms, head tied to
    /// `token_embd`.
    Bitnet,
    /// `bitnet-b1.58` (BitNet b1.58 2B-4T; also read as `bitnet-25`, the name of the first
    /// official 2B-4T file): ReLU² gate, sub-norms, GQA, `output.weight` if present, else tied.
    BitnetB158,
    /// `llama` (Llama3-8B-1.58, Falcon3, Falcon-E): no sub-norms, SiLU gate, q/k in the
    /// interleaved RoPE order, `output.weight` if present, else tied.
    Llama,
}

/// Every name a file may carry, first the one bitconv writes for each architecture.
const NAMES: [(&str, Arch); 4] = [
    ("bitnet", Arch::Bitnet),
    ("bitnet-b1.58", Arch::BitnetB158),
    ("llama", Arch::Llama),
    ("bitnet-25", Arch::BitnetB158),
];

impl Arch {
    /// The architecture for a `general.architecture` string (aliases included).
    pub fn from_name(name: &str) -> Option<Arch> {
        NAMES.iter().find(|(n, _)| *n == name).map(|&(_, a)| a)
    }

    /// The canonical `general.architecture` string.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .expect("every architecture has a name")
    }

    /// The name mainline llama.cpp gives the architecture: it has no `bitnet-b1.58` and writes
    /// BitNet b1.58 2B-4T as `bitnet` (the activation then travels in
    /// `bitnet.hidden_activation`, which this runtime follows).
    pub fn mainline_name(self) -> &'static str {
        match self {
            Arch::BitnetB158 => "bitnet",
            a => a.name(),
        }
    }

    /// The FFN gate activation.
    pub fn activation(self) -> Activation {
        match self {
            Arch::Bitnet | Arch::Llama => Activation::Silu,
            Arch::BitnetB158 => Activation::Relu2,
        }
    }

    /// The RoPE convention: NEOX for the BitNet architectures, interleaved for `llama`.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Bitnet | Arch::BitnetB158 => RopeStyle::Neox,
            Arch::Llama => RopeStyle::Normal,
        }
    }

    /// Whether blocks have `attn_sub_norm` / `ffn_sub_norm`.
    pub fn has_sub_norms(self) -> bool {
        !matches!(self, Arch::Llama)
    }

    /// Whether the file may carry a separate `output.weight` (else the head is tied).
    pub fn allows_output(self) -> bool {
        !matches!(self, Arch::Bitnet)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which reference converter's bytes a file reproduces (its metadata order, tokenizer
/// metadata and float types): the one pair of names for the converter and the tokenizer export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Flavor {
    /// bitnet.cpp's converter (`convert-hf-to-gguf-bitnet.py` with its llama.cpp fork's
    /// gguf-py, and llama-quantize for I2_S).
    BitnetCpp,
    /// Mainline llama.cpp's `convert_hf_to_gguf.py` with its gguf-py.
    Mainline,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::BitnetCpp => "bitnet.cpp",
            Flavor::Mainline => "llama.cpp",
        })
    }
}

/// The FFN gate activation: `act(gate(x)) · up(x)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Activation {
    /// `silu(g) = g / (1 + e^(−g))`.
    Silu,
    /// `relu(g)²` (`hidden_act: relu2`).
    Relu2,
}

impl Activation {
    /// The name `config.json`'s `hidden_act` and the `{arch}.hidden_activation` key use.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Relu2 => "relu2",
        }
    }

    /// The activation a `{arch}.hidden_activation` value names (`swish` is SiLU).
    pub fn from_name(name: &str) -> Option<Activation> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "relu2" => Some(Activation::Relu2),
            _ => None,
        }
    }
}

/// The suffix of the key that records the FFN activation: `{arch}.hidden_activation`, the key
/// the runtimes' proposed fixes read (gguf-py's `Keys.LLM.HIDDEN_ACT`). Files without it get
/// their architecture's default ([`Arch::activation`]).
pub const HIDDEN_ACTIVATION: &str = "hidden_activation";

/// The key of bitconv's own that names the runtime a file was written for ([`Target::name`]):
/// it says how the file's tensor type ids are numbered, which the ids alone cannot.
pub const TARGET_KEY: &str = "bitconv.target";

/// A runtime a file is written for or run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Target {
    /// microsoft/BitNet as of 2026 (`16da220`, its llama.cpp fork `390c3077`).
    BitnetCpp,
    /// microsoft/BitNet as of 2024 (`4645960`, its llama.cpp fork `406a503`): the reference
    /// converter's bytes.
    BitnetCpp2024,
    /// Mainline llama.cpp (ggml-org).
    LlamaCpp,
}

/// Every target, in the order `--help` lists them.
pub const TARGETS: [Target; 3] = [Target::BitnetCpp, Target::BitnetCpp2024, Target::LlamaCpp];

impl Target {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Target::BitnetCpp => "bitnet-cpp",
            Target::BitnetCpp2024 => "bitnet-cpp-2024",
            Target::LlamaCpp => "llama-cpp",
        }
    }

    /// The runtime's name in messages (`mainline llama.cpp`).
    pub fn runtime_name(self) -> &'static str {
        match self {
            Target::BitnetCpp => "bitnet.cpp",
            Target::BitnetCpp2024 => "bitnet.cpp (2024)",
            Target::LlamaCpp => "mainline llama.cpp",
        }
    }

    /// The target a [`TARGET_KEY`] value names.
    pub fn from_name(name: &str) -> Option<Target> {
        TARGETS.into_iter().find(|t| t.name() == name)
    }

    /// The FFN activation this runtime computes for `arch`: the 2024 bitnet.cpp follows the
    /// architecture (ReLU² for `bitnet-b1.58`); the current bitnet.cpp and mainline llama.cpp
    /// build every BitNet graph with SiLU and read no activation key (microsoft/BitNet issues
    /// #588, #602; fixes proposed, not merged).
    pub fn activation_for(self, arch: Arch) -> Activation {
        match self {
            Target::BitnetCpp2024 => arch.activation(),
            Target::BitnetCpp | Target::LlamaCpp => Activation::Silu,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl clap::ValueEnum for Target {
    fn value_variants<'a>() -> &'a [Self] {
        &TARGETS
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// The rotary embedding convention of an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// GPT-NeoX style (ggml `NEOX`): dimension `i` pairs with `i + n_rot/2`. The BitNet
    /// architectures use it.
    Neox,
    /// Interleaved (ggml `NORMAL`): dimension `2i` pairs with `2i + 1`. `llama` uses it.
    Normal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_resolve() {
        for a in [Arch::Bitnet, Arch::BitnetB158, Arch::Llama] {
            assert_eq!(Arch::from_name(a.name()), Some(a));
        }
        assert_eq!(Arch::from_name("bitnet-25"), Some(Arch::BitnetB158));
        assert_eq!(Arch::BitnetB158.name(), "bitnet-b1.58");
        assert_eq!(Arch::from_name("mistral"), None);
    }

    #[test]
    fn activations_and_targets() {
        for a in [Activation::Silu, Activation::Relu2] {
            assert_eq!(Activation::from_name(a.name()), Some(a));
        }
        assert_eq!(Activation::from_name("gelu"), None);
        // What each runtime computes for 2B-4T: only the 2024 bitnet.cpp is right.
        assert_eq!(
            Target::BitnetCpp2024.activation_for(Arch::BitnetB158),
            Activation::Relu2
        );
        assert_eq!(
            Target::BitnetCpp.activation_for(Arch::BitnetB158),
            Activation::Silu
        );
        assert_eq!(
            Target::LlamaCpp.activation_for(Arch::BitnetB158),
            Activation::Silu
        );
        // 1bitLLM and Llama-style models are SiLU everywhere.
        for t in TARGETS {
            assert_eq!(t.activation_for(Arch::Bitnet), Activation::Silu);
            assert_eq!(t.activation_for(Arch::Llama), Activation::Silu);
        }
    }
}
