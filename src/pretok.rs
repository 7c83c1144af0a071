//! Byte-level BPE pre-tokenizers: one table, read by the exporter (which name goes into
//! `tokenizer.ggml.pre`) and by the runtime (how text is split before the merges).
//!
//! A pre-tokenizer is recognised from its *definition*, the `pre_tokenizer` object of
//! `tokenizer.json`: the chain of steps (a `Sequence` is flattened) with the settings that change
//! the pieces (split expressions and their behaviour, byte-level prefix space and built-in
//! expression, digit and punctuation splitting). Settings that only move offsets
//! (`trim_offsets`) are ignored. Nothing is run: two tokenizers with the same definition get
//! the same name whatever their vocabularies, so a small tokenizer trained with Llama-3's
//! expression is `llama-bpe` exactly like Llama-3's own.
//!
//! Several llama.cpp names share one behaviour (`llama-bpe`, `falcon3`, `falcon_e` all split
//! with Llama-3's expression and emit whole-token pieces without merging). For a definition
//! the exporter writes the entry's first name, which every runtime bitconv targets knows; a
//! name given with `--tokenizer-pre` is written as given once the target runtime is known to
//! accept it ([`known_names`]).
//!
//! The runtime side of an entry is the list of expressions llama.cpp applies for the name, one
//! after the other (matches and the text between them both become pieces), and two flags:
//! whether a piece that is itself a token skips the merges, and whether BOS is added when the
//! file does not say.

use serde_json::Value;

use crate::arch::Flavor;

/// Llama-3's split expression as llama.cpp runs it: the contractions of the original
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)` spelled out with explicit case classes.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's split expression.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's split expression as llama.cpp runs it (Llama-3's with single digits).
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama-3's split expression as `tokenizer.json` files store it.
const HF_LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split expression as `tokenizer.json` files store it.
const HF_QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// One step of a pre-tokenizer definition, with the settings that change the pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `Split` by a regular expression (`pattern.Regex`) or a literal (`pattern.String`).
    Split {
        /// The expression or literal, as stored.
        pattern: String,
        /// Whether the pattern is a regular expression.
        regex: bool,
        /// `behavior` (`Isolated`, `Removed`, `MergedWithPrevious`, …).
        behavior: String,
        /// `invert`.
        invert: bool,
    },
    /// `ByteLevel`.
    ByteLevel {
        /// `add_prefix_space`.
        add_prefix_space: bool,
        /// `use_regex` (GPT-2's expression built in; true when absent).
        use_regex: bool,
    },
    /// `Digits`.
    Digits {
        /// `individual_digits`.
        individual: bool,
    },
    /// `Punctuation` with its `behavior`.
    Punctuation {
        /// `behavior` (`Isolated` when absent).
        behavior: String,
    },
}

/// A definition in the table: steps as `tokenizer.json` spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Def {
    /// `Split` by this expression, isolated, not inverted.
    SplitIsolated(&'static str),
    /// `ByteLevel` without prefix space; `true` when GPT-2's expression is built in.
    ByteLevel(bool),
    /// `Digits` (`true`: one digit a piece).
    Digits(bool),
    /// `Punctuation` with `Contiguous` behaviour.
    PunctuationContiguous,
}

impl Def {
    fn matches(self, step: &Step) -> bool {
        match (self, step) {
            (
                Def::SplitIsolated(p),
                Step::Split {
                    pattern,
                    regex: true,
                    behavior,
                    invert: false,
                },
            ) => pattern == p && behavior == "Isolated",
            (
                Def::ByteLevel(r),
                Step::ByteLevel {
                    add_prefix_space: false,
                    use_regex,
                },
            ) => *use_regex == r,
            (Def::Digits(i), Step::Digits { individual }) => *individual == i,
            (Def::PunctuationContiguous, Step::Punctuation { behavior }) => {
                behavior == "Contiguous"
            }
            _ => false,
        }
    }
}

/// One pre-tokenizer: its names, the definitions it is recognised from and what the runtime
/// does for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreTokenizer {
    /// The `tokenizer.ggml.pre` names that select it; the first is the one bitconv writes.
    pub names: &'static [&'static str],
    /// The `tokenizer.json` definitions recognised as this pre-tokenizer (none: selected by
    /// name only).
    defs: &'static [&'static [Def]],
    /// The split expressions the runtime applies, in order.
    pub regexes: &'static [&'static str],
    /// llama.cpp's `ignore_merges`: a piece that is a token is emitted whole.
    pub ignore_merges: bool,
    /// llama.cpp's default for `tokenizer.ggml.add_bos_token` when the key is absent.
    pub add_bos_default: bool,
}

impl PreTokenizer {
    /// The name bitconv writes for this pre-tokenizer.
    pub fn name(&self) -> &'static str {
        self.names[0]
    }

    /// Whether two entries split text the same way.
    pub fn same_behaviour(&self, other: &PreTokenizer) -> bool {
        self.regexes == other.regexes
            && self.ignore_merges == other.ignore_merges
            && self.add_bos_default == other.add_bos_default
    }
}

/// The pre-tokenizers bitconv recognises and runs, with llama.cpp's names, expressions and
/// flags (`llama-vocab.cpp`). `falcon_e`, which bitnet.cpp's converter writes for Falcon-Edge
/// and mainline llama.cpp does not know, behaves as `falcon3` (as ik_llama.cpp and bitnet.cpp
/// run it).
///
/// GPT-2's expression is the original one; llama.cpp drops its final `|\s+`, which changes
/// nothing once the text between matches is kept as pieces too. The Llama-3 expression differs
/// from `tokenizer.json`'s only for `'ſ` (U+017F), which `(?i:'s)` matches and llama.cpp's
/// spelled-out form does not; llama.cpp's form is used.
pub const TABLE: &[PreTokenizer] = &[
    PreTokenizer {
        names: &[
            "llama-bpe",
            "llama3",
            "llama-v3",
            "falcon3",
            "falcon_e",
            "falcon-h1",
        ],
        defs: &[&[Def::SplitIsolated(HF_LLAMA3), Def::ByteLevel(false)]],
        regexes: &[RE_LLAMA3],
        ignore_merges: true,
        add_bos_default: true,
    },
    PreTokenizer {
        names: &["gpt-2", "phi-2", "mpt", "olmo"],
        defs: &[&[Def::ByteLevel(true)]],
        regexes: &[RE_GPT2],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizer {
        names: &["default"],
        defs: &[],
        regexes: &[
            r"[\p{P}\$\+<=>\^~\|]+",
            RE_GPT2,
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizer {
        names: &["falcon"],
        defs: &[&[
            Def::PunctuationContiguous,
            Def::ByteLevel(true),
            Def::Digits(false),
            Def::SplitIsolated("[0-9][0-9][0-9]"),
        ]],
        regexes: &[r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, r"[0-9][0-9][0-9]"],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizer {
        names: &["starcoder", "refact", "command-r", "smollm"],
        defs: &[&[Def::Digits(true), Def::ByteLevel(true)]],
        regexes: &[r"\p{N}", RE_GPT2],
        ignore_merges: false,
        add_bos_default: false,
    },
    PreTokenizer {
        names: &["qwen2", "stablelm2", "deepseek-r1-qwen"],
        defs: &[&[Def::SplitIsolated(HF_QWEN2), Def::ByteLevel(false)]],
        regexes: &[RE_QWEN2],
        ignore_merges: false,
        add_bos_default: false,
    },
];

/// The entry a `tokenizer.ggml.pre` name selects.
pub fn by_name(name: &str) -> Option<&'static PreTokenizer> {
    TABLE.iter().find(|p| p.names.contains(&name))
}

/// Every name in [`TABLE`], comma-separated (for error messages).
pub fn table_names() -> String {
    TABLE
        .iter()
        .flat_map(|p| p.names.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a `pre_tokenizer` definition was not recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unrecognised {
    /// The object cannot be read as pre-tokenizer steps (the problem).
    Malformed(String),
    /// A step of a kind bitconv does not model (`Metaspace`, `Whitespace`, …).
    UnknownStep(String),
    /// Every step is understood but the chain is none of the table's (a summary of it).
    NoMatch(String),
}

impl std::fmt::Display for Unrecognised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unrecognised::Malformed(p) => write!(f, "its pre_tokenizer {p}"),
            Unrecognised::UnknownStep(t) => {
                write!(
                    f,
                    "its pre_tokenizer has a {t:?} step, which bitconv does not model"
                )
            }
            Unrecognised::NoMatch(s) => write!(
                f,
                "its pre_tokenizer ({s}) is none of the definitions bitconv knows ({})",
                TABLE
                    .iter()
                    .filter(|p| !p.defs.is_empty())
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Reads a `tokenizer.json` `pre_tokenizer` value into its steps (`Sequence` flattened; `null`
/// is no step).
pub fn steps(value: &Value) -> Result<Vec<Step>, Unrecognised> {
    let mut out = Vec::new();
    collect(value, &mut out, 0)?;
    Ok(out)
}

fn collect(value: &Value, out: &mut Vec<Step>, depth: usize) -> Result<(), Unrecognised> {
    if value.is_null() {
        return Ok(());
    }
    if depth > 8 {
        return Err(Unrecognised::Malformed("nests Sequences too deeply".into()));
    }
    let Some(obj) = value.as_object() else {
        return Err(Unrecognised::Malformed("is not an object".into()));
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
    let flag = |k: &str, default: bool| -> Result<bool, Unrecognised> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Unrecognised::Malformed(format!(
                "has a {kind} step whose {k} is not a boolean"
            ))),
        }
    };
    let text = |k: &str, default: &str| -> Result<String, Unrecognised> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Unrecognised::Malformed(format!(
                "has a {kind} step whose {k} is not a string"
            ))),
        }
    };
    match kind {
        "Sequence" => {
            let Some(list) = obj.get("pretokenizers").and_then(Value::as_array) else {
                return Err(Unrecognised::Malformed(
                    "has a Sequence without a pretokenizers list".into(),
                ));
            };
            for v in list {
                collect(v, out, depth + 1)?;
            }
        }
        "Split" => {
            let pat = obj.get("pattern").and_then(Value::as_object);
            let (pattern, regex) = match pat {
                Some(p) if p.get("Regex").is_some_and(Value::is_string) => {
                    (p["Regex"].as_str().unwrap_or_default().to_owned(), true)
                }
                Some(p) if p.get("String").is_some_and(Value::is_string) => {
                    (p["String"].as_str().unwrap_or_default().to_owned(), false)
                }
                _ => {
                    return Err(Unrecognised::Malformed(
                        "has a Split step without a Regex or String pattern".into(),
                    ))
                }
            };
            out.push(Step::Split {
                pattern,
                regex,
                behavior: text("behavior", "Isolated")?,
                invert: flag("invert", false)?,
            });
        }
        "ByteLevel" => out.push(Step::ByteLevel {
            add_prefix_space: flag("add_prefix_space", true)?,
            use_regex: flag("use_regex", true)?,
        }),
        "Digits" => out.push(Step::Digits {
            individual: flag("individual_digits", false)?,
        }),
        "Punctuation" => out.push(Step::Punctuation {
            behavior: text("behavior", "Isolated")?,
        }),
        other => return Err(Unrecognised::UnknownStep(other.to_owned())),
    }
    Ok(())
}

/// A short description of steps for messages: `Split(regex …) → ByteLevel(prefix space: no,
/// GPT-2 expression: no)`.
pub fn describe(steps: &[Step]) -> String {
    if steps.is_empty() {
        return "no steps".into();
    }
    steps
        .iter()
        .map(|s| match s {
            Step::Split {
                pattern,
                regex,
                behavior,
                invert,
            } => {
                let shown: String = pattern.chars().take(40).collect();
                let more = if pattern.chars().count() > 40 {
                    "…"
                } else {
                    ""
                };
                format!(
                    "Split({} {shown:?}{more}, {behavior}{})",
                    if *regex { "regex" } else { "literal" },
                    if *invert { ", inverted" } else { "" }
                )
            }
            Step::ByteLevel {
                add_prefix_space,
                use_regex,
            } => format!(
                "ByteLevel(prefix space: {}, GPT-2 expression: {})",
                yes(*add_prefix_space),
                yes(*use_regex)
            ),
            Step::Digits { individual } => format!("Digits(individual: {})", yes(*individual)),
            Step::Punctuation { behavior } => format!("Punctuation({behavior})"),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The table entry whose definition is exactly these steps.
pub fn recognise_steps(steps: &[Step]) -> Option<&'static PreTokenizer> {
    TABLE.iter().find(|p| {
        p.defs.iter().any(|d| {
            d.len() == steps.len() && d.iter().zip(steps).all(|(def, step)| def.matches(step))
        })
    })
}

/// The table entry a `tokenizer.json` `pre_tokenizer` value defines.
pub fn recognise(value: &Value) -> Result<&'static PreTokenizer, Unrecognised> {
    let steps = steps(value)?;
    recognise_steps(&steps).ok_or_else(|| Unrecognised::NoMatch(describe(&steps)))
}

/// The pre-tokenizer names a runtime flavor recognises (a name outside this list makes the
/// runtime refuse the file or fall back to its default splitting).
pub fn known_names(flavor: Flavor) -> &'static [&'static str] {
    match flavor {
        Flavor::BitnetCpp => NAMES_BITNET_CPP,
        Flavor::Mainline => NAMES_LLAMA_CPP,
    }
}

/// Pre-tokenizer names the runtime of bitnet.cpp's llama.cpp fork (`406a503`) recognises, plus
/// the names bitnet.cpp's current converter can write (`bert-bge`, `falcon3`, `falcon_e`).
const NAMES_BITNET_CPP: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "deepseek-llm",
    "deepseek-coder",
    "falcon",
    "mpt",
    "starcoder",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "jina-v1-en",
    "jina-v2-es",
    "jina-v2-de",
    "jina-v2-code",
    "refact",
    "command-r",
    "qwen2",
    "stablelm2",
    "olmo",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "chatglm-bpe",
    "viking",
    "jais",
    "tekken",
    "smollm",
    "codeshell",
    "bloom",
    "gpt3-finnish",
    "exaone",
    "chameleon",
    "bert-bge",
    "falcon3",
    "falcon_e",
];

/// Pre-tokenizer names mainline llama.cpp's runtime (`0c1e57098`) recognises.
const NAMES_LLAMA_CPP: &[&str] = &[
    "default",
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "spark2_5",
    "youtu",
    "falcon",
    "mpt",
    "starcoder",
    "gpt-2",
    "phi-2",
    "jina-es",
    "jina-de",
    "gigachat",
    "jina-v2-es",
    "jina-v2-de",
    "a.x-4.0",
    "mellum",
    "modern-bert",
    "jais-2",
    "gemma4",
    "granite-embed-multi-311m",
    "sarvam-moe",
    "jina-v1-en",
    "jina-v2-code",
    "roberta-bpe",
    "whitespace",
    "refact",
    "command-r",
    "qwen2",
    "deepseek-r1-qwen",
    "kormo",
    "f2llmv2",
    "qwen35",
    "stablelm2",
    "olmo",
    "dbrx",
    "smaug-bpe",
    "poro-chat",
    "chatglm-bpe",
    "glm4",
    "glm5",
    "viking",
    "jais",
    "tekken",
    "smollm",
    "codeshell",
    "bloom",
    "gpt3-finnish",
    "exaone",
    "exaone4",
    "exaone-moe",
    "chameleon",
    "minerva-7b",
    "megrez",
    "gpt-4o",
    "llama4",
    "kanana2",
    "talkie",
    "granite-embed-multi-97m",
    "tiny_aya",
    "cohere2moe",
    "superbpe",
    "trillion",
    "granite-docling",
    "bailingmoe",
    "bailingmoe2",
    "llada-moe",
    "seed-coder",
    "hunyuan",
    "hunyuan-dense",
    "hy_v4",
    "joyai-llm",
    "kimi-k2",
    "ufakzeka",
    "grok-2",
    "afmoe",
    "laguna",
    "minimax-m2",
    "solar-open",
    "mellum2",
    "minicpm5",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn llama3_def() -> Value {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": HF_LLAMA3}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]})
    }

    #[test]
    fn definitions_are_recognised() {
        assert_eq!(recognise(&llama3_def()).unwrap().name(), "llama-bpe");
        let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true});
        assert_eq!(recognise(&gpt2).unwrap().name(), "gpt-2");
        let qwen = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": HF_QWEN2}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}
        ]});
        assert_eq!(recognise(&qwen).unwrap().name(), "qwen2");
        let falcon = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Punctuation", "behavior": "Contiguous"},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            {"type": "Digits", "individual_digits": false},
            {"type": "Split", "pattern": {"Regex": "[0-9][0-9][0-9]"}, "behavior": "Isolated", "invert": false}
        ]});
        assert_eq!(recognise(&falcon).unwrap().name(), "falcon");
        let star = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
        ]});
        assert_eq!(recognise(&star).unwrap().name(), "starcoder");
    }

    #[test]
    fn settings_that_change_pieces_are_not_ignored() {
        // Prefix space on: another tokenizer.
        let mut v = llama3_def();
        v["pretokenizers"][1]["add_prefix_space"] = json!(true);
        assert!(matches!(recognise(&v), Err(Unrecognised::NoMatch(_))));
        // One character of the expression changed.
        let mut v = llama3_def();
        v["pretokenizers"][0]["pattern"]["Regex"] = json!(HF_LLAMA3.replace("{1,3}", "{1,4}"));
        assert!(matches!(recognise(&v), Err(Unrecognised::NoMatch(_))));
        // Removed instead of isolated.
        let mut v = llama3_def();
        v["pretokenizers"][0]["behavior"] = json!("Removed");
        assert!(recognise(&v).is_err());
        // A literal, not an expression.
        let mut v = llama3_def();
        v["pretokenizers"][0]["pattern"] = json!({"String": HF_LLAMA3});
        assert!(recognise(&v).is_err());
        // The order of steps matters.
        let mut v = llama3_def();
        v["pretokenizers"].as_array_mut().unwrap().reverse();
        assert!(recognise(&v).is_err());
        // trim_offsets only moves offsets.
        let mut v = llama3_def();
        v["pretokenizers"][1]["trim_offsets"] = json!(false);
        assert_eq!(recognise(&v).unwrap().name(), "llama-bpe");
        // Nested sequences are flattened.
        let v = json!({"type": "Sequence", "pretokenizers": [llama3_def()]});
        assert_eq!(recognise(&v).unwrap().name(), "llama-bpe");
    }

    #[test]
    fn unknown_and_malformed_definitions() {
        let meta = json!({"type": "Metaspace", "replacement": "\u{2581}"});
        let e = recognise(&meta).unwrap_err();
        assert_eq!(e, Unrecognised::UnknownStep("Metaspace".into()));
        assert!(e.to_string().contains("Metaspace"));
        assert!(matches!(
            recognise(&json!(3)),
            Err(Unrecognised::Malformed(_))
        ));
        assert!(matches!(
            recognise(&Value::Null),
            Err(Unrecognised::NoMatch(_))
        ));
        let bad = json!({"type": "ByteLevel", "use_regex": "yes"});
        assert!(matches!(recognise(&bad), Err(Unrecognised::Malformed(_))));
        let mut deep = llama3_def();
        for _ in 0..20 {
            deep = json!({"type": "Sequence", "pretokenizers": [deep]});
        }
        assert!(matches!(recognise(&deep), Err(Unrecognised::Malformed(_))));
    }

    #[test]
    fn names_and_runtimes() {
        for p in TABLE {
            for n in p.names {
                assert_eq!(by_name(n), Some(p), "{n} in one entry only");
            }
        }
        // What bitconv writes for a recognised definition is known to every runtime it targets.
        for p in TABLE.iter().filter(|p| !p.defs.is_empty()) {
            for f in [Flavor::BitnetCpp, Flavor::Mainline] {
                assert!(known_names(f).contains(&p.name()), "{} for {f}", p.name());
            }
        }
        assert!(known_names(Flavor::BitnetCpp).contains(&"falcon_e"));
        assert!(!known_names(Flavor::Mainline).contains(&"falcon_e"));
        assert!(by_name("falcon3")
            .unwrap()
            .same_behaviour(by_name("llama-bpe").unwrap()));
        assert!(!by_name("qwen2")
            .unwrap()
            .same_behaviour(by_name("llama-bpe").unwrap()));
    }
}
