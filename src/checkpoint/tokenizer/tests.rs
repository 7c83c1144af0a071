use super::*;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny");

fn tiny(rel: &str) -> PathBuf {
    Path::new(TINY).join(rel)
}

/// A GGUF metadata value as stored (floats kept as bits so comparisons are exact).
#[derive(Clone, Debug, PartialEq)]
enum Gv {
    Scalar { ty: u32, bits: u64 },
    Str(String),
    Arr { elem: u32, items: Vec<Gv> },
}

/// A minimal GGUF v3 reader for the KV section (test use only).
fn read_gguf_kvs(path: &Path) -> Vec<(String, Gv)> {
    struct Cur<'a> {
        b: &'a [u8],
        pos: usize,
    }
    impl Cur<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let s = &self.b[self.pos..self.pos + n];
            self.pos += n;
            s
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.take(4).try_into().unwrap())
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn string(&mut self) -> String {
            let n = self.u64() as usize;
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
        fn value(&mut self, ty: u32) -> Gv {
            let width = match ty {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                10..=12 => 8,
                8 => return Gv::Str(self.string()),
                9 => {
                    let elem = self.u32();
                    let n = self.u64() as usize;
                    let items = (0..n).map(|_| self.value(elem)).collect();
                    return Gv::Arr { elem, items };
                }
                other => panic!("bad GGUF type {other}"),
            };
            let mut buf = [0u8; 8];
            buf[..width].copy_from_slice(self.take(width));
            Gv::Scalar {
                ty,
                bits: u64::from_le_bytes(buf),
            }
        }
    }
    let bytes = std::fs::read(path).unwrap();
    let mut c = Cur { b: &bytes, pos: 0 };
    assert_eq!(c.take(4), b"GGUF");
    assert_eq!(c.u32(), 3);
    let _n_tensors = c.u64();
    let n_kv = c.u64();
    (0..n_kv)
        .map(|_| {
            let k = c.string();
            let ty = c.u32();
            (k, c.value(ty))
        })
        .collect()
}

fn to_gv(v: &GValue) -> Gv {
    let scalar = |ty, bits| Gv::Scalar { ty, bits };
    match v {
        GValue::String(s) => Gv::Str(s.clone()),
        GValue::U32(x) => scalar(4, u64::from(*x)),
        GValue::I32(i) => scalar(5, u64::from(*i as u32)),
        GValue::F32(f) => scalar(6, u64::from(f.to_bits())),
        GValue::Bool(b) => scalar(7, u64::from(*b)),
        GValue::Array(elem, items) => Gv::Arr {
            elem: *elem as u32,
            items: items.iter().map(to_gv).collect(),
        },
        other => panic!("tokenizer metadata never holds {other:?}"),
    }
}

fn tokenizer_kvs(gguf: &Path) -> Vec<(String, Gv)> {
    read_gguf_kvs(gguf)
        .into_iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .collect()
}

fn assert_same_as_reference(ckpt: &str, flavor: Flavor, gguf: &str) {
    let meta = TokenizerMeta::from_dir(&tiny(ckpt), flavor, None).unwrap();
    let ours: Vec<(String, Gv)> = meta
        .kv_entries()
        .iter()
        .map(|(k, v)| (k.clone(), to_gv(v)))
        .collect();
    let theirs = tokenizer_kvs(&tiny(gguf));
    let keys = |l: &[(String, Gv)]| l.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&ours), keys(&theirs), "key order for {gguf}");
    for ((k, a), (_, b)) in ours.iter().zip(&theirs) {
        assert!(a == b, "value of {k} differs from {gguf}");
    }
    assert!(meta.warnings.is_empty(), "{:?}", meta.warnings);
}

#[test]
fn tiny_bitnet_cpp_matches_reference_bit_for_bit() {
    for (ckpt, gguf) in [
        ("ckpt-fp16", "bitnet-cpp/from-fp16/ggml-model-f32.gguf"),
        ("ckpt-fp16", "bitnet-cpp/from-fp16/ggml-model-i2_s.gguf"),
        ("ckpt-fp32", "bitnet-cpp/from-fp32/ggml-model-f32.gguf"),
        ("ckpt-fp32", "bitnet-cpp/from-fp32/ggml-model-tl2.gguf"),
    ] {
        assert_same_as_reference(ckpt, Flavor::BitnetCpp, gguf);
    }
}

#[test]
fn tiny_llama_cpp_matches_reference_bit_for_bit() {
    for gguf in [
        "llama-cpp/tiny-f32.gguf",
        "llama-cpp/tiny-tq1_0.gguf",
        "llama-cpp/tiny-tq2_0.gguf",
    ] {
        assert_same_as_reference("ckpt-fp16", Flavor::Mainline, gguf);
    }
}

#[test]
fn tiny_key_order_per_flavor() {
    let order = |flavor| {
        TokenizerMeta::from_dir(&tiny("ckpt-fp16"), flavor, None)
            .unwrap()
            .kv_entries()
            .into_iter()
            .map(|(k, _)| k.trim_start_matches("tokenizer.ggml.").to_owned())
            .collect::<Vec<_>>()
    };
    let common = [
        "model",
        "pre",
        "tokens",
        "scores",
        "token_type",
        "bos_token_id",
        "eos_token_id",
        "unknown_token_id",
        "padding_token_id",
        "add_bos_token",
    ];
    let mut bitnet: Vec<&str> = common.to_vec();
    bitnet.push("add_eos_token");
    let mut llama: Vec<&str> = common.to_vec();
    llama.extend(["add_sep_token", "add_eos_token"]);
    assert_eq!(order(Flavor::BitnetCpp), bitnet);
    assert_eq!(order(Flavor::Mainline), llama);
}

#[test]
fn tiny_padding_and_types_differ_by_flavor() {
    let b = TokenizerMeta::from_dir(&tiny("ckpt-fp16"), Flavor::BitnetCpp, None).unwrap();
    let l = TokenizerMeta::from_dir(&tiny("ckpt-fp16"), Flavor::Mainline, None).unwrap();
    assert_eq!(b.tokens[1000..], ["[PAD1]", "[PAD2]"]);
    assert_eq!(l.tokens[1000..], ["[PAD1000]", "[PAD1001]"]);
    assert_eq!(b.scores.as_ref().unwrap()[1000..], [-1000.0, -1000.0]);
    assert_eq!(l.scores.as_ref().unwrap()[1000..], [-10000.0, -10000.0]);
    assert_eq!(b.token_types[..3], [2, 3, 3]);
    assert_eq!(l.token_types[..3], [3, 3, 3]);
    assert_eq!(b.scores.as_ref().unwrap()[..3], [0.0, 0.0, 0.0]);
    assert_eq!(l.scores.as_ref().unwrap()[..3], [-1000.0, -1000.0, -1000.0]);
    assert_eq!(b.model, "llama");
    assert_eq!(b.pre.as_deref(), Some("default"));
    assert!(b.merges.is_none());
}

// -----------------------------------------------------------------------------------------
// Synthetic checkpoints

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "bitconv-tok-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> &TempDir {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// Copies the tiny checkpoint's tokenizer files.
    fn with_tiny_tokenizer(&self) -> &TempDir {
        for f in [
            "config.json",
            "tokenizer.model",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            self.write(f, std::fs::read(tiny("ckpt-fp16").join(f)).unwrap());
        }
        self
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kv_map(meta: &TokenizerMeta) -> Vec<(String, GValue)> {
    meta.kv_entries()
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "tokenizer.ggml.tokens" | "tokenizer.ggml.scores" | "tokenizer.ggml.token_type"
            )
        })
        .collect()
}

fn s(k: &str, v: GValue) -> (String, GValue) {
    (k.to_owned(), v)
}

#[test]
fn added_tokens_json_per_flavor() {
    let d = TempDir::new("added");
    d.with_tiny_tokenizer()
        .write(
            "config.json",
            r#"{"vocab_size": 1004, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 1003}"#,
        )
        .write(
            "added_tokens.json",
            r#"{"<extra>": 1000, "</s>": 2, "<x▁y>": 1001, "<|eot|>": 5000}"#,
        );
    let b = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap();
    assert_eq!(b.tokens[1000..], ["<extra>", "<x▁y>", "<|eot|>", "[PAD1]"]);
    assert_eq!(b.token_types[1000..], [4, 4, 4, 5]);
    assert_eq!(
        b.scores.as_ref().unwrap()[1000..],
        [-1000.0, -1000.0, -1000.0, -1000.0]
    );
    let l = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, None).unwrap();
    // "</s>" overwrites id 2 as USER_DEFINED, then added_tokens_decoder makes it CONTROL.
    assert_eq!(l.tokens[..3], ["<unk>", "<s>", "</s>"]);
    assert_eq!(l.token_types[..3], [3, 3, 3]);
    assert_eq!(
        l.tokens[1000..],
        ["<extra>", "<x▁y>", "[PAD1002]", "[PAD1003]"]
    );
    assert_eq!(l.token_types[1000..], [4, 4, 5, 5]);
    assert_eq!(
        l.scores.as_ref().unwrap()[1000..],
        [-1000.0, -1000.0, -10000.0, -10000.0]
    );
    assert!(
        l.warnings.iter().any(|w| w.contains("5000")),
        "{:?}",
        l.warnings
    );
    // Pad id 1003 is in range for both.
    assert!(kv_map(&b).contains(&s("tokenizer.ggml.padding_token_id", GValue::U32(1003))));
}

#[test]
fn vocab_smaller_than_tokens_is_an_error_for_bitnet_cpp() {
    let d = TempDir::new("small");
    d.with_tiny_tokenizer()
        .write("config.json", r#"{"vocab_size": 999}"#);
    let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
    assert!(e.to_string().contains("vocab_size 999"), "{e}");
    // llama.cpp drops the pieces beyond vocab_size with a warning.
    let l = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, None).unwrap();
    assert_eq!(l.tokens.len(), 999);
    assert!(!l.warnings.is_empty());
}

#[test]
fn special_ids_from_config_only_without_tokenizer_json() {
    let d = TempDir::new("noj");
    d.with_tiny_tokenizer();
    std::fs::remove_file(d.0.join("tokenizer.json")).unwrap();
    d.write(
        "config.json",
        r#"{"vocab_size": 1002, "bos_token_id": 1, "eos_token_id": [2, 3], "pad_token_id": 5000, "unk_token_id": true}"#,
    );
    // special_tokens_map.json and generation_config.json are not consulted.
    d.write("special_tokens_map.json", r#"{"eos_token": "</s>"}"#)
        .write("generation_config.json", r#"{"eos_token_id": 2}"#);
    let b = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap();
    assert_eq!(
        kv_map(&b)[2..],
        [
            s("tokenizer.ggml.bos_token_id", GValue::U32(1)),
            // Python's bool is an int.
            s("tokenizer.ggml.unknown_token_id", GValue::U32(1)),
            s("tokenizer.ggml.add_bos_token", GValue::Bool(true)),
            s("tokenizer.ggml.add_eos_token", GValue::Bool(false)),
        ]
    );
    assert!(b.warnings.iter().any(|w| w.contains("5000")));
}

#[test]
fn negative_special_id_is_an_error() {
    let d = TempDir::new("neg");
    d.with_tiny_tokenizer()
        .write("config.json", r#"{"vocab_size": 1002, "pad_token_id": -1}"#);
    for flavor in [Flavor::BitnetCpp, Flavor::Mainline] {
        let e = TokenizerMeta::from_dir(&d.0, flavor, None).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        assert!(e.to_string().contains("pad"), "{e}");
    }
}

#[test]
fn chat_templates() {
    let d = TempDir::new("chat");
    d.with_tiny_tokenizer();
    let mut tc: Value =
        serde_json::from_slice(&std::fs::read(d.0.join("tokenizer_config.json")).unwrap()).unwrap();
    tc["chat_template"] = serde_json::json!([
        {"name": "tool use", "template": "T"},
        {"name": "default", "template": "D"},
        {"name": "rag", "template": ""},
    ]);
    d.write("tokenizer_config.json", tc.to_string());
    for flavor in [Flavor::BitnetCpp, Flavor::Mainline] {
        let m = TokenizerMeta::from_dir(&d.0, flavor, None).unwrap();
        let tail: Vec<_> = kv_map(&m)
            .into_iter()
            .filter(|(k, _)| k.starts_with("tokenizer.chat"))
            .collect();
        assert_eq!(
            tail,
            [
                s(
                    "tokenizer.chat_template.tool_use",
                    GValue::String("T".into())
                ),
                s(
                    "tokenizer.chat_templates",
                    GValue::str_array(["tool_use", "rag"])
                ),
                s("tokenizer.chat_template", GValue::String("D".into())),
            ]
        );
    }
    // llama.cpp falls back to chat_template.jinja when tokenizer_config has none.
    tc.as_object_mut().unwrap().remove("chat_template");
    d.write("tokenizer_config.json", tc.to_string())
        .write("chat_template.jinja", "{{ a }}\r\n{{ b }}");
    let l = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, None).unwrap();
    assert_eq!(
        l.special.last().unwrap(),
        &s(
            "tokenizer.chat_template",
            GValue::String("{{ a }}\n{{ b }}".into())
        )
    );
    let b = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap();
    assert!(!b
        .special
        .iter()
        .any(|(k, _)| k.starts_with("tokenizer.chat")));
}

// -----------------------------------------------------------------------------------------
// BPE path

fn bpe_dir(name: &str, merges: Value) -> TempDir {
    let d = TempDir::new(name);
    let tj = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 6, "content": "<|begin_of_text|>", "special": true, "normalized": false},
            {"id": 7, "content": "<|end_of_text|>", "special": true, "normalized": false},
            {"id": 8, "content": "<|reserved_0|>", "special": false, "normalized": false},
            {"id": 9, "content": "my▁word", "special": false, "normalized": false},
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel"},
        "post_processor": {
            "type": "Sequence",
            "processors": [
                {"type": "ByteLevel", "trim_offsets": false},
                {
                    "type": "TemplateProcessing",
                    "single": [
                        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}
                    ],
                    "pair": [
                        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                        {"Sequence": {"id": "B", "type_id": 1}}
                    ],
                    "special_tokens": {}
                }
            ]
        },
        "decoder": {"type": "ByteLevel"},
        "model": {
            "type": "BPE",
            "byte_fallback": false,
            "ignore_merges": true,
            "vocab": {"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġa": 5, "c d": 4},
            "merges": merges
        }
    });
    d.write("tokenizer.json", tj.to_string())
        .write(
            "tokenizer_config.json",
            r#"{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>", "chat_template": "{{ x }}"}"#,
        )
        .write(
            "config.json",
            r#"{"vocab_size": 12, "bos_token_id": 6, "eos_token_id": 7}"#,
        );
    d
}

#[test]
fn bpe_without_pre_names_the_flag() {
    let d = bpe_dir("nopre", serde_json::json!(["a b"]));
    let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
    assert!(
        matches!(e, TokenizerError::PreTokenizerUnknown { .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("--tokenizer-pre"), "{msg}");
    assert!(msg.contains("tokenizer.json"), "{msg}");
    let e = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, Some("no-such-pre")).unwrap_err();
    assert!(matches!(e, TokenizerError::UnknownPreName { .. }));
    assert!(e.to_string().contains("llama-bpe"));
}

#[test]
fn bpe_bitnet_cpp() {
    let d = bpe_dir("bpeb", serde_json::json!(["a b", "Ġ a"]));
    let m = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("llama-bpe")).unwrap();
    assert_eq!(m.model, "gpt2");
    assert_eq!(m.pre.as_deref(), Some("llama-bpe"));
    assert!(m.scores.is_none());
    assert_eq!(
        m.tokens,
        [
            "a",
            "b",
            "ab",
            "Ġ",
            "c d",
            "Ġa",
            "<|begin_of_text|>",
            "<|end_of_text|>",
            "<|reserved_0|>",
            "my▁word",
            "[PAD10]",
            "[PAD11]"
        ]
    );
    assert_eq!(m.token_types, [1, 1, 1, 1, 1, 1, 3, 3, 4, 4, 4, 4]);
    assert_eq!(
        kv_map(&m),
        [
            s("tokenizer.ggml.model", GValue::String("gpt2".into())),
            s("tokenizer.ggml.pre", GValue::String("llama-bpe".into())),
            s("tokenizer.ggml.merges", GValue::str_array(["a b", "Ġ a"])),
            s("tokenizer.ggml.bos_token_id", GValue::U32(6)),
            s("tokenizer.ggml.eos_token_id", GValue::U32(7)),
            s("tokenizer.chat_template", GValue::String("{{ x }}".into())),
        ]
    );
}

#[test]
fn bpe_llama_cpp_pair_merges_and_post_processor() {
    let d = bpe_dir(
        "bpel",
        serde_json::json!([["a", "b"], ["Ġ", "a"], ["c d", "a"]]),
    );
    let m = TokenizerMeta::from_dir(&d.0, Flavor::Mainline, Some("llama-bpe")).unwrap();
    assert_eq!(
        m.tokens[8..],
        ["<|reserved_0|>", "my word", "[PAD10]", "[PAD11]"]
    );
    assert_eq!(m.token_types, [1, 1, 1, 1, 1, 1, 3, 3, 3, 4, 5, 5]);
    assert_eq!(
        kv_map(&m),
        [
            s("tokenizer.ggml.model", GValue::String("gpt2".into())),
            s("tokenizer.ggml.pre", GValue::String("llama-bpe".into())),
            s(
                "tokenizer.ggml.merges",
                GValue::str_array(["a b", "Ġ a", "cĠd a"])
            ),
            s("tokenizer.ggml.bos_token_id", GValue::U32(6)),
            s("tokenizer.ggml.eos_token_id", GValue::U32(7)),
            s("tokenizer.ggml.add_bos_token", GValue::Bool(true)),
            s("tokenizer.ggml.add_eos_token", GValue::Bool(false)),
            s("tokenizer.ggml.add_sep_token", GValue::Bool(false)),
            s("tokenizer.chat_template", GValue::String("{{ x }}".into())),
        ]
    );
}

#[test]
fn bpe_merges_txt_fallback_and_bad_merges() {
    let d = bpe_dir("bpetxt", serde_json::json!([]));
    d.write(
        "merges.txt",
        "#version: 0.2\r\na b\r\n\r\nbad line here\nĠ  a \n",
    );
    let m = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("gpt-2")).unwrap();
    assert_eq!(m.merges, Some(vec!["a b".into(), "Ġ a".into()]));
    assert_eq!(m.warnings.len(), 1, "{:?}", m.warnings);
    let d = bpe_dir("bpebad", serde_json::json!([1, 2]));
    let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("gpt-2")).unwrap_err();
    assert!(
        e.to_string().contains("unknown tokenizer merges format"),
        "{e}"
    );
}

/// Checked against the reference converters running transformers 4.57: `tokenizers`
/// renumbers added tokens, a token named by `pad_token` becomes special, a special token
/// missing from the vocabulary is appended, and `SpecialVocab` still resolves the pad id
/// from the id stored in tokenizer.json.
#[test]
fn bpe_ids_and_special_flags_as_transformers_loads_them() {
    let d = TempDir::new("bpehf");
    let tj = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 7, "content": "<|x|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true},
            {"id": 3, "content": "plain", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": false},
            {"id": 1, "content": "b", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": false}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel"},
        "post_processor": null,
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "byte_fallback": false,
                  "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}
    });
    d.write("tokenizer.json", tj.to_string())
        .write(
            "tokenizer_config.json",
            r#"{"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "plain", "eos_token": "<new>"}"#,
        )
        .write("config.json", r#"{"vocab_size": 7}"#);
    for (flavor, pad_type) in [(Flavor::BitnetCpp, 4), (Flavor::Mainline, 5)] {
        let m = TokenizerMeta::from_dir(&d.0, flavor, Some("llama-bpe")).unwrap();
        assert_eq!(
            m.tokens,
            ["a", "b", "ab", "<|x|>", "plain", "<new>", "[PAD6]"]
        );
        assert_eq!(m.token_types, [1, 4, 1, 3, 3, 3, pad_type]);
        assert_eq!(
            kv_map(&m)[2..],
            [
                s("tokenizer.ggml.merges", GValue::str_array(["a b"])),
                s("tokenizer.ggml.padding_token_id", GValue::U32(3)),
            ]
        );
        assert_eq!(m.warnings.len(), 2, "{:?}", m.warnings);
    }
}

#[test]
fn missing_tokenizer_and_unsupported_kinds() {
    let d = TempDir::new("none");
    d.write("config.json", "{}");
    let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
    assert!(matches!(e, TokenizerError::NoTokenizer { .. }));
    // A tokenizer.json of the tiny checkpoint alone is a Llama-style byte-fallback BPE.
    let d = TempDir::new("llamahf");
    d.write(
        "tokenizer.json",
        std::fs::read(tiny("ckpt-fp16/tokenizer.json")).unwrap(),
    );
    let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, Some("llama-bpe")).unwrap_err();
    assert!(matches!(e, TokenizerError::Unsupported { .. }), "{e}");
}

#[test]
fn malformed_tokenizer_model_is_reported_with_its_path() {
    let d = TempDir::new("badspm");
    d.with_tiny_tokenizer();
    let mut bytes = std::fs::read(tiny("ckpt-fp16/tokenizer.model")).unwrap();
    bytes.truncate(bytes.len() / 2);
    d.write("tokenizer.model", &bytes);
    let e = TokenizerMeta::from_dir(&d.0, Flavor::BitnetCpp, None).unwrap_err();
    assert!(matches!(e, TokenizerError::SentencePiece(_)));
    assert!(e.to_string().contains("tokenizer.model"), "{e}");
}

#[test]
fn signalling_nan_scores_are_quieted_like_python() {
    let snan = f32::from_bits(0x7fb4_0000);
    assert_eq!(spm_score(snan).to_bits(), 0x7ff4_0000);
    assert_eq!(spm_score(-740.0), -740.0);
    assert_eq!(spm_score(f32::NEG_INFINITY), f32::NEG_INFINITY);
}

#[test]
fn python_helpers() {
    assert_eq!(parse_py_int(" 12 "), Some(12));
    assert_eq!(parse_py_int("+1_000"), Some(1000));
    assert_eq!(parse_py_int("-3"), Some(-3));
    assert_eq!(parse_py_int("1__0"), None);
    assert_eq!(parse_py_int("0x10"), None);
    assert!(looks_special("<|eot_id|>"));
    assert!(looks_special("<｜end▁of▁sentence｜>"));
    assert!(looks_special("<unused12>"));
    assert!(!looks_special("<s>"));
    assert!(py_isspace('\u{1f}'));
    assert!(!truthy(&Value::Null) && truthy(&serde_json::json!(1)));
    assert!(check_pre_name(Flavor::Mainline, "llama-bpe").is_ok());
    assert!(check_pre_name(Flavor::BitnetCpp, "falcon_e").is_ok());
    assert!(check_pre_name(Flavor::BitnetCpp, "qwen35").is_err());
}
