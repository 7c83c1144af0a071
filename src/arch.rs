//! The model architectures bitconv writes and runs, in one table ([`ARCHS`], one row an
//! architecture): their GGUF names and aliases, how a Hugging Face checkpoint of one is
//! recognised (`architectures[0]`, `hidden_act`) and how it names its tensors, the block (which
//! norms exist, activation, RoPE convention, head, tie default) and which of bitnet.cpp's
//! converters its metadata follows. The checkpoint reader, the converter, the dummy generator,
//! the GGUF reader and the runtime take these facts from here and compare no architecture by
//! name; what they do with a fact (the arithmetic, the key-order code) stays with them.
//!
//! The independent checkpoint reader behind the goldens (`runtime::hf`) does not use this table:
//! it keeps its own reading of checkpoints (`runtime::hf::HfArch`), so a misreading here cannot
//! pass validation.

use std::fmt;

/// A GGUF architecture (`general.architecture`). Its facts are its row of [`ARCHS`]
/// ([`Arch::info`]).
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

/// Everything bitconv knows about one architecture: a row of [`ARCHS`].
#[derive(Debug)]
pub struct ArchInfo {
    /// The architecture (rows are in the order of the enum).
    pub arch: Arch,
    /// The `general.architecture` string bitconv writes.
    pub name: &'static str,
    /// Other strings a file may carry for it (read, never written).
    pub aliases: &'static [&'static str],
    /// The name mainline llama.cpp's converter writes it under (mainline-flavoured files carry
    /// it). When it differs from `name`, mainline's runtime has no architecture of this name.
    pub mainline_name: &'static str,
    /// The models it is, in a word or two (`--arch` help, runtime verdicts).
    pub models: &'static str,
    /// The checkpoint family it is converted from, as `inspect` names it.
    pub family: &'static str,
    /// The Hugging Face class (`architectures[0]`, matched ignoring case) it is converted
    /// from; `dummy` writes it into its built-in tokenizer's `config.json`.
    pub hf_class: &'static str,
    /// Other classes converted as this architecture (not named in messages).
    pub hf_class_aliases: &'static [&'static str],
    /// The `hidden_act` (default `silu`) that selects this row among the rows of the same class;
    /// `None`: any.
    pub hf_hidden_act: Option<Activation>,
    /// `tie_word_embeddings` when `config.json` does not say.
    pub tied_by_default: bool,
    /// How its checkpoints name their tensors, and what each becomes.
    pub names: &'static HfNames,
    /// The block's sub-norms (`attn_sub_norm` before `o_proj`, `ffn_sub_norm` before
    /// `ffn_down`), with their Hugging Face names; `None`: it has none.
    pub sub_norms: Option<&'static SubNorms>,
    /// Whether a file may carry a separate `output.weight` (from the checkpoint's head tensor);
    /// otherwise the head is the embedding, and a checkpoint's head tensor is not converted.
    pub output: bool,
    /// The FFN gate activation the architecture implies (a file may name another in
    /// `{arch}.hidden_activation`).
    pub activation: Activation,
    /// The RoPE convention. [`RopeStyle::Normal`] means q/k rows are permuted from
    /// transformers' rotate-half order when converting ([`Arch::permutes_qk`]).
    pub rope: RopeStyle,
    /// The code path of bitnet.cpp's converters whose metadata keys and order files written
    /// for bitnet.cpp reproduce.
    pub bitnet_cpp_keys: BitnetCppKeys,
    /// Whether every file of this architecture holds a BitNet model, so that a type id 39–42 in
    /// one without `bitconv.target` is one bitnet.cpp's TL2 or the other's (no BitNet model is
    /// stored as MXFP4, NVFP4, Q1_0 or Q2_0).
    pub ternary_only: bool,
}

/// How a Hugging Face checkpoint names its tensors, and the GGUF name each becomes (FORMATS
/// §2.3). Block tensors are `{block}{layer}.{stem}.weight`.
#[derive(Debug)]
pub struct HfNames {
    /// The token embedding (`token_embd.weight`).
    pub embedding: &'static str,
    /// The final norm (`output_norm.weight`).
    pub final_norm: &'static str,
    /// The LM head (`output.weight`, where [`ArchInfo::output`] allows it).
    pub head: &'static str,
    /// The prefix of block tensors, before the layer number.
    pub block: &'static str,
    /// The norms before attention and before the FFN, required in every block: (Hugging Face
    /// stem, GGUF stem).
    pub norms: &'static [(&'static str, &'static str)],
    /// The seven ternary projections, required in every block: (Hugging Face stem, GGUF stem,
    /// role). The role (`q_proj`, …) is the projection's name for
    /// `ModelConfig::projection_shape` and the q/k permutation.
    pub projections: &'static [(&'static str, &'static str, &'static str)],
    /// Name suffixes of the buffers the converter drops (rotary caches, attention masks).
    pub dropped: &'static [&'static str],
}

/// The Hugging Face names of a block's sub-norms.
#[derive(Debug)]
pub struct SubNorms {
    /// `attn_sub_norm`, on the attention output before `o_proj`.
    pub attn: SubNormNames,
    /// `ffn_sub_norm`, on the gated FFN value before `down_proj`.
    pub ffn: SubNormNames,
}

/// The Hugging Face stems one sub-norm is read from.
#[derive(Debug)]
pub struct SubNormNames {
    /// The stems a checkpoint may use, preferred first: every block must have the first of
    /// them that any tensor of the checkpoint has (the last when none does). `dummy` writes
    /// the first.
    pub required: &'static [&'static str],
    /// Other stems converted as this sub-norm when present, never required.
    pub accepted: &'static [&'static str],
}

/// Which code path of bitnet.cpp's converters writes an architecture's metadata (keys and
/// their order); `convert::metadata_for` has the code of each. Mainline-flavoured files have
/// one order for every architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitnetCppKeys {
    /// `convert-hf-to-gguf-bitnet.py`'s `BitnetModel`: `vocab_size`, then linear RoPE scaling
    /// of 1, after the file type.
    Bitnet,
    /// The same script's `LlamaModel`: `vocab_size`, `rope.dimension_count`, then linear RoPE
    /// scaling when the config has it.
    Llama,
    /// `convert-ms-to-gguf-bitnet.py` (the official 2B-4T file): its own order, and the chat
    /// template it forces.
    Ms,
}

/// The tensor names of Llama-layout checkpoints (transformers' `LlamaForCausalLM` and
/// `BitNetForCausalLM`, 1bitLLM's remote code).
const LLAMA_NAMES: HfNames = HfNames {
    embedding: "model.embed_tokens.weight",
    final_norm: "model.norm.weight",
    head: "lm_head.weight",
    block: "model.layers.",
    norms: &[
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ],
    projections: &[
        ("self_attn.q_proj", "attn_q", "q_proj"),
        ("self_attn.k_proj", "attn_k", "k_proj"),
        ("self_attn.v_proj", "attn_v", "v_proj"),
        ("self_attn.o_proj", "attn_output", "o_proj"),
        ("mlp.gate_proj", "ffn_gate", "gate_proj"),
        ("mlp.up_proj", "ffn_up", "up_proj"),
        ("mlp.down_proj", "ffn_down", "down_proj"),
    ],
    dropped: &[
        ".rotary_emb.inv_freq",
        ".attention.masked_bias",
        ".attention.bias",
    ],
};

/// The sub-norms of the BitNet checkpoints: transformers' `BitNetForCausalLM` names, 1bitLLM's
/// (`inner_attn_ln`, `ffn_layernorm`), and older spellings.
const BITNET_SUB_NORMS: SubNorms = SubNorms {
    attn: SubNormNames {
        required: &["self_attn.attn_sub_norm", "self_attn.inner_attn_ln"],
        accepted: &["attention.attn_sub_norm"],
    },
    ffn: SubNormNames {
        required: &["mlp.ffn_sub_norm", "mlp.ffn_layernorm"],
        accepted: &["feed_forward.ffn_sub_norm"],
    },
};

/// The architectures, in the order of [`Arch`]: the one place their facts are written.
pub const ARCHS: [ArchInfo; 3] = [
    ArchInfo {
        arch: Arch::Bitnet,
        name: "bitnet",
        aliases: &[],
        mainline_name: "bitnet",
        models: "1bitLLM",
        family: "1bitLLM (bitnet_b1_58)",
        hf_class: "BitnetForCausalLM",
        hf_class_aliases: &[],
        hf_hidden_act: Some(Activation::Silu),
        tied_by_default: true,
        names: &LLAMA_NAMES,
        sub_norms: Some(&BITNET_SUB_NORMS),
        output: false,
        activation: Activation::Silu,
        rope: RopeStyle::Neox,
        bitnet_cpp_keys: BitnetCppKeys::Bitnet,
        ternary_only: true,
    },
    ArchInfo {
        arch: Arch::BitnetB158,
        name: "bitnet-b1.58",
        aliases: &["bitnet-25"],
        mainline_name: "bitnet",
        models: "2B-4T",
        family: "BitNet b1.58 2B-4T",
        hf_class: "BitNetForCausalLM",
        hf_class_aliases: &[],
        hf_hidden_act: Some(Activation::Relu2),
        tied_by_default: true,
        names: &LLAMA_NAMES,
        sub_norms: Some(&BITNET_SUB_NORMS),
        output: true,
        activation: Activation::Relu2,
        rope: RopeStyle::Neox,
        bitnet_cpp_keys: BitnetCppKeys::Ms,
        ternary_only: true,
    },
    ArchInfo {
        arch: Arch::Llama,
        name: "llama",
        aliases: &[],
        mainline_name: "llama",
        models: "Llama/Falcon",
        family: "Llama/Falcon 1.58-bit",
        hf_class: "LlamaForCausalLM",
        hf_class_aliases: &["MistralForCausalLM"],
        hf_hidden_act: None,
        tied_by_default: false,
        names: &LLAMA_NAMES,
        sub_norms: None,
        output: true,
        activation: Activation::Silu,
        rope: RopeStyle::Normal,
        bitnet_cpp_keys: BitnetCppKeys::Llama,
        ternary_only: false,
    },
];

impl Arch {
    /// Every architecture, in the order of [`ARCHS`].
    pub fn all() -> impl Iterator<Item = Arch> {
        ARCHS.iter().map(|r| r.arch)
    }

    /// Its row of [`ARCHS`].
    pub fn info(self) -> &'static ArchInfo {
        let row = &ARCHS[self as usize];
        debug_assert_eq!(row.arch, self, "ARCHS is in the order of Arch");
        row
    }

    /// The architecture for a `general.architecture` string (aliases included).
    pub fn from_name(name: &str) -> Option<Arch> {
        ARCHS
            .iter()
            .find(|r| r.name == name || r.aliases.contains(&name))
            .map(|r| r.arch)
    }

    /// The canonical names, `, `-separated (for messages listing what is supported).
    pub fn names_list() -> String {
        ARCHS.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
    }

    /// The architecture a checkpoint of Hugging Face class `class` (`architectures[0]`, any
    /// case) with FFN activation `act` is converted as: the first row whose class or alias it
    /// is and whose `hidden_act` condition it meets.
    pub fn from_hf(class: &str, act: Activation) -> Option<Arch> {
        ARCHS
            .iter()
            .find(|r| {
                (r.hf_class.eq_ignore_ascii_case(class)
                    || r.hf_class_aliases
                        .iter()
                        .any(|c| c.eq_ignore_ascii_case(class)))
                    && r.hf_hidden_act.is_none_or(|a| a == act)
            })
            .map(|r| r.arch)
    }

    /// The Hugging Face classes the rows name, `, `-separated (for messages).
    pub fn hf_classes_list() -> String {
        ARCHS
            .iter()
            .map(|r| r.hf_class)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The canonical `general.architecture` string.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The name mainline llama.cpp gives the architecture: it has no `bitnet-b1.58` and writes
    /// BitNet b1.58 2B-4T as `bitnet` (the activation then travels in
    /// `bitnet.hidden_activation`, which this runtime follows).
    pub fn mainline_name(self) -> &'static str {
        self.info().mainline_name
    }

    /// The FFN gate activation.
    pub fn activation(self) -> Activation {
        self.info().activation
    }

    /// The RoPE convention: NEOX for the BitNet architectures, interleaved for `llama`.
    pub fn rope_style(self) -> RopeStyle {
        self.info().rope
    }

    /// Whether conversion permutes the rows of q and k from transformers' rotate-half order to
    /// the interleaved order, which it does for the architectures with [`RopeStyle::Normal`].
    pub fn permutes_qk(self) -> bool {
        self.rope_style() == RopeStyle::Normal
    }

    /// Whether blocks have `attn_sub_norm` / `ffn_sub_norm`.
    pub fn has_sub_norms(self) -> bool {
        self.info().sub_norms.is_some()
    }

    /// Whether the file may carry a separate `output.weight` (else the head is tied).
    pub fn allows_output(self) -> bool {
        self.info().output
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

/// Every activation, in the order messages list them.
pub const ACTIVATIONS: [Activation; 2] = [Activation::Silu, Activation::Relu2];

impl Activation {
    /// The names of [`ACTIVATIONS`] for messages: `silu or relu2`.
    pub fn names_list() -> String {
        ACTIVATIONS.map(Activation::name).join(" or ")
    }

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
            assert_eq!(a.info().arch, a);
            assert_eq!(Arch::from_name(a.name()), Some(a));
        }
        assert_eq!(Arch::all().count(), ARCHS.len());
        for (i, row) in ARCHS.iter().enumerate() {
            assert_eq!(
                row.arch as usize, i,
                "{}: ARCHS is in the order of Arch",
                row.name
            );
            assert_eq!(row.names.projections.len(), 7, "{}", row.name);
            if let Some(sub) = row.sub_norms {
                assert!(!sub.attn.required.is_empty() && !sub.ffn.required.is_empty());
            }
        }
        assert_eq!(Arch::names_list(), "bitnet, bitnet-b1.58, llama");
        assert_eq!(Arch::from_name("bitnet-25"), Some(Arch::BitnetB158));
        assert_eq!(Arch::BitnetB158.name(), "bitnet-b1.58");
        assert_eq!(Arch::from_name("mistral"), None);
    }

    #[test]
    fn checkpoints_select_their_architecture() {
        use Activation::*;
        assert_eq!(Arch::from_hf("BitnetForCausalLM", Silu), Some(Arch::Bitnet));
        assert_eq!(Arch::from_hf("BitNetForCausalLM", Silu), Some(Arch::Bitnet));
        assert_eq!(
            Arch::from_hf("bitnetforcausallm", Relu2),
            Some(Arch::BitnetB158)
        );
        assert_eq!(Arch::from_hf("LlamaForCausalLM", Relu2), Some(Arch::Llama));
        assert_eq!(Arch::from_hf("MistralForCausalLM", Silu), Some(Arch::Llama));
        assert_eq!(Arch::from_hf("GPT2LMHeadModel", Silu), None);
        assert_eq!(
            Arch::hf_classes_list(),
            "BitnetForCausalLM, BitNetForCausalLM, LlamaForCausalLM"
        );
        assert!(Arch::Llama.permutes_qk());
        assert!(!Arch::Bitnet.permutes_qk() && !Arch::BitnetB158.permutes_qk());
    }

    #[test]
    fn activations_and_targets() {
        for a in ACTIVATIONS {
            assert_eq!(Activation::from_name(a.name()), Some(a));
        }
        assert_eq!(Activation::names_list(), "silu or relu2");
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
