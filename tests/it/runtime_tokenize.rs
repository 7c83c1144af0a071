//! Tokenization from GGUF metadata: agreement with the reference runs (llama.cpp and bitnet.cpp
//! prompt ids and generated text), with Python `sentencepiece`, byte-level BPE round trips and
//! splits, malformed metadata, and build time for full-size vocabularies.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::rng;
use bitconv::checkpoint::tokenizer::TokenType;
use bitconv::gguf::{GgufHeader, GgufWriter, MappedGguf, Value, ValueType};
use bitconv::runtime::tokenize::{GgufTokenizer, StreamDecoder, TokenizeError, TokenizerModel};

const PROMPT: &str = "The quick brown fox jumps over the lazy dog. Once upon a time";

/// Each reference GGUF with the logits record its run wrote.
const REFERENCE_RUNS: &[(&str, &str)] = &[
    (
        "tests/data/tiny/bitnet-cpp/from-fp16/ggml-model-i2_s.gguf",
        "tests/data/tiny/bitnet-cpp/from-fp16/i2_s.logits.json",
    ),
    (
        "tests/data/tiny/bitnet-cpp/from-fp16/ggml-model-f32.gguf",
        "tests/data/tiny/bitnet-cpp/from-fp16/f32.logits.json",
    ),
    (
        "tests/data/tiny/llama-cpp/tiny-tq2_0.gguf",
        "tests/data/tiny/llama-cpp/ml_mainline_tiny-tq2_0.logits.json",
    ),
    (
        "tests/data/tiny/llama-cpp/tiny-f32.gguf",
        "tests/data/tiny/llama-cpp/ml_mainline_tiny-f32.logits.json",
    ),
];

/// The SentencePiece GGUFs (both converters' metadata flavours).
const SPM_GGUFS: &[&str] = &[
    "tests/data/tiny/bitnet-cpp/from-fp16/ggml-model-i2_s.gguf",
    "tests/data/tiny/llama-cpp/tiny-tq2_0.gguf",
];

fn open_tokenizer(path: &str) -> GgufTokenizer {
    let g = MappedGguf::open(Path::new(path)).unwrap();
    GgufTokenizer::from_gguf(&g.header).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn read_json(path: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Metadata → GGUF bytes (no tensors) → parsed header, the way a file would arrive.
fn header(kv: &[(&str, Value)]) -> GgufHeader {
    let kv: Vec<(String, Value)> = kv.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let bytes = GgufWriter::new(Vec::new(), &kv, vec![])
        .unwrap()
        .finish()
        .unwrap();
    GgufHeader::parse(&bytes, Path::new("<memory>")).unwrap()
}

fn types(ts: &[TokenType]) -> Value {
    Value::i32_array(ts.iter().map(|t| t.as_i32()))
}

// ---------------------------------------------------------------------------------------------
// The reference runs

#[test]
fn prompt_ids_match_the_reference_runs() {
    for (gguf, json) in REFERENCE_RUNS {
        let tok = open_tokenizer(gguf);
        let run = read_json(json);
        assert_eq!(run["prompt"].as_str().unwrap(), PROMPT);
        let want = ids_of(&run["prompt_ids"]);
        assert_eq!(tok.encode(PROMPT, true).unwrap(), want, "{gguf}");
        assert_eq!(tok.encode(PROMPT, false).unwrap(), want[1..], "{gguf}");
        assert_eq!(tok.model(), TokenizerModel::Llama);
        assert_eq!(
            (tok.bos(), tok.eos(), tok.add_bos()),
            (Some(1), Some(2), true)
        );
        assert!(!tok.add_eos());
        assert!(tok.is_eog(2) && !tok.is_eog(1));
        assert_eq!(tok.vocab_size(), run["n_vocab"].as_u64().unwrap() as usize);
    }
}

#[test]
fn generated_text_matches_the_reference_runs_byte_for_byte() {
    for (gguf, json) in REFERENCE_RUNS {
        let tok = open_tokenizer(gguf);
        let run = read_json(json);
        let gen = ids_of(&run["gen_ids"]);
        let want = unhex(run["gen_text_hex"].as_str().unwrap());
        // The reference text holds lone bytes from byte-fallback tokens (e.g. 0xD5).
        assert!(
            std::str::from_utf8(&want).is_err(),
            "{json}: expected partial UTF-8"
        );

        let bytes: Vec<u8> = gen.iter().flat_map(|&id| tok.token_bytes(id)).collect();
        assert_eq!(bytes, want, "{gguf}");
        let lossy = String::from_utf8_lossy(&want).into_owned();
        assert_eq!(tok.decode(&gen), lossy, "{gguf}");
        // The reference's own lossy rendering agrees.
        assert_eq!(run["gen_text"].as_str().unwrap(), lossy, "{json}");

        let mut stream = StreamDecoder::new();
        let mut printed = String::new();
        for &id in &gen {
            printed.push_str(&stream.push(&tok, id));
        }
        printed.push_str(&stream.finish());
        assert_eq!(printed, lossy, "{gguf}");
    }
}

#[test]
fn special_tokens_render_as_nothing_and_are_matched_literally() {
    for path in SPM_GGUFS {
        let tok = open_tokenizer(path);
        // <unk> is UNKNOWN (bitnet.cpp) or CONTROL (llama.cpp); both are special.
        for id in [0, 1, 2] {
            assert!(tok.is_special(id), "{path}: {id}");
            assert!(tok.token_bytes(id).is_empty());
        }
        // [PAD…] slots are UNUSED: not special, print nothing, not matched in text.
        assert_eq!(tok.token_type(1000), Some(TokenType::Unused));
        assert!(tok.token_bytes(1000).is_empty());
        assert!(tok.token_bytes(5000).is_empty(), "out of range");
        assert_eq!(tok.token_bytes(3 + 0x41), b"A");
        assert_eq!(tok.token_text(3 + 0x41), Some("<0x41>"));
        assert_eq!(tok.token_id("▁The"), Some(275));

        // Text that spells a control token becomes that token; the text after it gets the
        // space prefix again, as llama.cpp does after a special token.
        let ids = tok.encode("The<s>The", true).unwrap();
        assert_eq!(ids, [1, 275, 1, 275], "{path}");
        assert_eq!(tok.decode(&ids), " The The");
        assert_eq!(tok.decode_standalone(&ids), "The The");
        let pad = tok.encode("[PAD1]", false).unwrap();
        assert!(!pad.contains(&1000) && pad.len() > 1, "{path}: {pad:?}");
        // Empty text: just BOS.
        assert_eq!(tok.encode("", true).unwrap(), [1]);
        assert!(tok.encode("", false).unwrap().is_empty());
    }
}

#[test]
fn tokenizer_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GgufTokenizer>();
    assert_send_sync::<StreamDecoder>();
}

#[test]
fn stream_decoder_holds_incomplete_characters() {
    let tok = open_tokenizer(SPM_GGUFS[0]);
    let byte = |b: u8| 3 + b as u32;
    let mut s = tok.stream_decoder();
    // "日" = E6 97 A5, one byte token each.
    assert_eq!(s.push(&tok, byte(0xE6)), "");
    assert_eq!(s.pending(), [0xE6]);
    assert_eq!(s.push(&tok, byte(0x97)), "");
    assert_eq!(s.push(&tok, byte(0xA5)), "日");
    assert!(s.pending().is_empty());
    // A lone lead byte followed by a space can never complete: it becomes U+FFFD at once.
    assert_eq!(s.push(&tok, byte(0xD5)), "");
    assert_eq!(s.push(&tok, 275), "\u{FFFD} The");
    // A stray continuation byte is replaced immediately.
    assert_eq!(s.push(&tok, byte(0x80)), "\u{FFFD}");
    // An incomplete tail is flushed by finish.
    assert_eq!(s.push(&tok, byte(0xF0)), "");
    assert_eq!(s.push(&tok, byte(0x9F)), "");
    assert_eq!(s.finish(), "\u{FFFD}");
    assert!(s.pending().is_empty());

    // Streaming equals decoding for arbitrary id sequences.
    let mut rng = Lcg(7);
    for _ in 0..200 {
        let ids: Vec<u32> = (0..rng.below(30))
            .map(|_| rng.below(tok.vocab_size() as u64 + 3) as u32)
            .collect();
        let mut s = StreamDecoder::new();
        let mut out: String = ids.iter().map(|&id| s.push(&tok, id)).collect();
        out.push_str(&s.finish());
        assert_eq!(out, tok.decode(&ids), "{ids:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Python sentencepiece as an independent encoder

/// Runs `python3 -c script args…` with `input` on stdin, when python3 with the `sentencepiece`
/// package is available; `None` (with a message) otherwise.
fn python_sentencepiece(script: &str, args: &[&std::ffi::OsStr], input: &str) -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import sentencepiece"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        crate::common::cross_check_skipped(
            "python3 with the sentencepiece package is not available (pip install -r tests/requirements.txt)",
        );
        return None;
    }
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Some(String::from_utf8(o.stdout).unwrap())
}

const SP_SCRIPT: &str = r#"
import json, sys
import sentencepiece as spm
sp = spm.SentencePieceProcessor(model_file=sys.argv[1])
texts = json.loads(sys.stdin.read())
out = []
for t in texts:
    ids = sp.encode(t)
    out.append({"ids": ids, "decoded": sp.decode(ids)})
print(json.dumps(out))
"#;

/// Compares our encoding of every text (with BOS) against SentencePiece's (BOS id 1 prepended),
/// and our standalone decoding against SentencePiece's decoding.
fn check_against_sentencepiece(texts: &[String]) {
    let input = serde_json::to_string(texts).unwrap();
    let model = Path::new("tests/data/tiny/ckpt-fp16/tokenizer.model");
    let Some(out) = python_sentencepiece(SP_SCRIPT, &[model.as_os_str()], &input) else {
        return;
    };
    let results: serde_json::Value = serde_json::from_str(&out).unwrap();
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), texts.len());
    for path in SPM_GGUFS {
        let tok = open_tokenizer(path);
        let mut mismatches = Vec::new();
        for (text, r) in texts.iter().zip(results) {
            let mut want = vec![1u32];
            want.extend(ids_of(&r["ids"]));
            let ours = tok.encode(text, true).unwrap();
            if ours != want {
                mismatches.push(format!("{text:?}: ours {ours:?}, sentencepiece {want:?}"));
                continue;
            }
            let decoded = r["decoded"].as_str().unwrap();
            if tok.decode_standalone(&ours) != decoded {
                mismatches.push(format!(
                    "{text:?}: decoded {:?}, sentencepiece {decoded:?}",
                    tok.decode_standalone(&ours)
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{path}: {} of {} texts differ:\n{}",
            mismatches.len(),
            texts.len(),
            mismatches.join("\n")
        );
    }
}

#[test]
fn calibration_prompts_and_tricky_strings_match_sentencepiece() {
    let prompts = read_json("calibration/prompts.json");
    let mut texts: Vec<String> = prompts["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(texts.len() >= 4);
    for t in [
        "",
        " ",
        "   ",
        "a",
        " leading space",
        "trailing space ",
        "multiple   spaces  inside    here",
        "\n",
        "line one\nline two\n\nline four\n",
        "\tindented\twith tabs",
        "\r\nwindows line ends\r\n",
        "digits 0123456789 3.14159 1,000,000 2024-06-01",
        "héllo ✓ 日本",
        "emoji that need byte fallback: 🦀🎉👍🏽 ∑∞",
        "mixed: naïve café — “quotes” ‘single’ … «guillemets»",
        "Ελληνικά Русский עברית العربية हिन्दी",
        "The The The the the",
        "don't can't I'm we'll they've",
        "<0x41> [PAD1] [PAD1000] looks special but is not",
        "ALLCAPS and MiXeD CaSe",
        "punctuation!?;:,.()[]{}<>@#$%^&*_-+=|\\/~`\"'",
        "    def f(x):\n        return x * 2\n",
    ] {
        texts.push(t.to_string());
    }
    check_against_sentencepiece(&texts);
}

/// A small deterministic generator (no extra dependencies): the high bits of [`rng::Lcg`].
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        let mut g = rng::Lcg(self.0);
        let s = g.step();
        self.0 = s;
        s >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random strings over characters the tiny vocabulary knows (and some it must byte-encode),
/// and runs of its pieces, which make merges compete.
#[test]
fn random_strings_match_sentencepiece() {
    // Characters the tiny vocabulary knows, plus some it must byte-encode.
    let alphabet: Vec<char> =
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789   .,;:!?'\"-()\n\téü日✓🦀ñ"
            .chars()
            .collect();
    // Plus runs of the pieces themselves, to exercise competing merges.
    let tok = open_tokenizer(SPM_GGUFS[0]);
    let pieces: Vec<String> = (0..tok.vocab_size() as u32)
        .filter(|&id| tok.token_type(id) == Some(TokenType::Normal))
        .map(|id| tok.token_text(id).unwrap().replace('▁', " "))
        .collect();
    let mut rng = Lcg(0x5eed);
    let mut texts = Vec::new();
    for i in 0..600 {
        let len = 1 + rng.below(40) as usize;
        let s: String = if i % 2 == 0 {
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len() as u64) as usize])
                .collect()
        } else {
            (0..len / 4 + 1)
                .map(|_| pieces[rng.below(pieces.len() as u64) as usize].as_str())
                .collect()
        };
        texts.push(s);
    }
    check_against_sentencepiece(&texts);
}

const TRAIN_SCRIPT: &str = r#"
import importlib, json, random, sys
import sentencepiece as spm
out_dir, vocab_size = sys.argv[1], int(sys.argv[2])
# Python's own sources: English prose in docstrings, code, and deep indentation.
mods = ["argparse", "collections", "dataclasses", "datetime", "decimal", "difflib", "enum",
        "functools", "inspect", "logging", "pathlib", "pickle", "pprint", "random", "statistics",
        "string", "subprocess", "tarfile", "textwrap", "typing", "zipfile"]
corpus = "\n".join(open(importlib.import_module(m).__file__, encoding="utf-8").read() for m in mods)
corpus += "\n" + "\n".join(["Ελληνικά κείμενα", "Русский текст", "日本語のテキスト", "naïve café déjà vu"] * 30)
lines = corpus.split("\n")
spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=out_dir + "/tokenizer",
    model_type="bpe", vocab_size=vocab_size, byte_fallback=True, character_coverage=0.9995,
    split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
    normalization_rule_name="identity", num_threads=1, minloglevel=2)
sp = spm.SentencePieceProcessor(model_file=out_dir + "/tokenizer.model")
rng = random.Random(1234)
texts = json.loads(sys.stdin.read())
for _ in range(1500):
    start = rng.randrange(len(corpus))
    texts.append(corpus[start:start + rng.randrange(1, 300)])
texts.append(corpus[:20000])
print(json.dumps([{"text": t, "ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in texts]))
"#;

/// A GGUF header holding the tokenizer metadata bitconv's converter writes for `dir`.
fn converted_header(dir: &Path, flavor: bitconv::checkpoint::tokenizer::Flavor) -> GgufHeader {
    use bitconv::checkpoint::tokenizer::TokenizerMeta;
    let kv = TokenizerMeta::from_dir(dir, flavor, None)
        .unwrap()
        .kv_entries();
    let bytes = GgufWriter::new(Vec::new(), &kv, vec![])
        .unwrap()
        .finish()
        .unwrap();
    GgufHeader::parse(&bytes, Path::new("<memory>")).unwrap()
}

/// A SentencePiece BPE model of realistic size, trained here on Python's own sources, goes
/// through bitconv's converter code (both flavours) into GGUF metadata; the tokenizer rebuilt
/// from it must encode every excerpt exactly as `sentencepiece` does.
#[test]
fn trained_sentencepiece_model_through_the_converter_matches_sentencepiece() {
    use bitconv::checkpoint::tokenizer::Flavor;
    let tmp = tempfile::tempdir().unwrap();
    let extra: Vec<&str> = vec![
        "",
        " ",
        "    ",
        "        return None\n",
        "\n\n\n",
        "héllo ✓ 日本 🦀",
        "digits 0123456789",
    ];
    let input = serde_json::to_string(&extra).unwrap();
    let args = [tmp.path().as_os_str(), std::ffi::OsStr::new("8000")];
    let Some(out) = python_sentencepiece(TRAIN_SCRIPT, &args, &input) else {
        return;
    };
    let cases: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cases = cases.as_array().unwrap();
    for flavor in [Flavor::BitnetCpp, Flavor::Mainline] {
        let h = converted_header(tmp.path(), flavor);
        let t0 = Instant::now();
        let tok = GgufTokenizer::from_gguf(&h).unwrap();
        eprintln!(
            "{flavor}: 8000-piece vocabulary built in {:?}",
            t0.elapsed()
        );
        assert_eq!(tok.vocab_size(), 8000);
        let mut mismatches = Vec::new();
        for c in cases {
            let text = c["text"].as_str().unwrap();
            let mut want = vec![1u32];
            want.extend(ids_of(&c["ids"]));
            let ours = tok.encode(text, true).unwrap();
            if ours != want {
                mismatches.push(format!(
                    "{text:?}:\n  ours {ours:?}\n  sentencepiece {want:?}"
                ));
            } else if tok.decode_standalone(&ours) != c["decoded"].as_str().unwrap() {
                mismatches.push(format!(
                    "{text:?}: decoded {:?}",
                    tok.decode_standalone(&ours)
                ));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{flavor}: {} of {} texts differ:\n{}",
            mismatches.len(),
            cases.len(),
            mismatches[..mismatches.len().min(10)].join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Byte-level BPE (`gpt2`)

/// GPT-2's byte alphabet, in byte order (written out independently of the module).
fn byte_chars() -> Vec<char> {
    let mut n = 0;
    (0..=255u8)
        .map(|b| {
            if (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE {
                char::from(b)
            } else {
                n += 1;
                char::from_u32(0xFF + n).unwrap()
            }
        })
        .collect()
}

/// Metadata of a hand-made byte-level vocabulary: 256 byte tokens, a few merges, three control
/// tokens and a user-defined one; and its tokens.
fn hand_vocab_kv(
    pre: &str,
    extra: &[(&'static str, Value)],
) -> (Vec<(&'static str, Value)>, Vec<String>) {
    let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    let mut tys = vec![TokenType::Normal; 256];
    let merges = [
        ("h", "e"),
        ("l", "l"),
        ("he", "ll"),
        ("hell", "o"),
        ("Ġ", "w"),
        ("o", "r"),
        ("Ġw", "or"),
        ("l", "d"),
        ("Ġwor", "ld"),
        ("1", "2"),
        ("12", "3"),
    ];
    for (a, b) in merges {
        tokens.push(format!("{a}{b}"));
        tys.push(TokenType::Normal);
    }
    // Only reachable when a whole pre-token is looked up (llama-bpe's ignore_merges).
    tokens.push("Ġunmerged".into());
    tys.push(TokenType::Normal);
    for (t, ty) in [
        ("<|begin_of_text|>", TokenType::Control),
        ("<|end_of_text|>", TokenType::Control),
        ("<|eot_id|>", TokenType::Control),
        ("<tool>", TokenType::UserDefined),
    ] {
        tokens.push(t.into());
        tys.push(ty);
    }
    let n = tokens.len() as u32;
    let mut kv = vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        ("tokenizer.ggml.tokens", Value::str_array(tokens.clone())),
        ("tokenizer.ggml.token_type", types(&tys)),
        (
            "tokenizer.ggml.merges",
            Value::str_array(merges.iter().map(|(a, b)| format!("{a} {b}"))),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(n - 4)),
        ("tokenizer.ggml.eos_token_id", Value::U32(n - 3)),
    ];
    kv.extend(extra.iter().cloned());
    (kv, tokens)
}

fn hand_vocab(pre: &str, extra: &[(&'static str, Value)]) -> (GgufHeader, Vec<String>) {
    let (kv, tokens) = hand_vocab_kv(pre, extra);
    (header(&kv), tokens)
}

#[test]
fn hand_made_byte_level_vocab_encodes_exactly() {
    let (h, tokens) = hand_vocab("llama-bpe", &[]);
    let tok = GgufTokenizer::from_gguf(&h).unwrap();
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
    assert_eq!(tok.model(), TokenizerModel::Gpt2);
    // llama-bpe adds BOS by default.
    assert!(tok.add_bos());
    assert_eq!(tok.bos(), Some(id("<|begin_of_text|>")));
    assert!(tok.is_eog(id("<|end_of_text|>")) && tok.is_eog(id("<|eot_id|>")));

    let ids = tok.encode("hello world", true).unwrap();
    assert_eq!(ids, [id("<|begin_of_text|>"), id("hello"), id("Ġworld")]);
    assert_eq!(tok.decode(&ids), "hello world");
    // Digits go in groups of up to three, each merged separately.
    assert_eq!(
        tok.encode("1231234", false).unwrap(),
        [id("123"), id("123"), id("4")]
    );
    // Special and user-defined tokens are matched literally; only the special one is skipped.
    let ids = tok
        .encode("<|begin_of_text|>hello<tool><|eot_id|>", false)
        .unwrap();
    assert_eq!(
        ids,
        [
            id("<|begin_of_text|>"),
            id("hello"),
            id("<tool>"),
            id("<|eot_id|>")
        ]
    );
    assert_eq!(tok.decode(&ids), "hello<tool>");
    // ignore_merges: a pre-token that is itself a token is emitted whole.
    assert_eq!(tok.encode(" unmerged", false).unwrap(), [id("Ġunmerged")]);

    // gpt-2 pre-tokenization: no BOS by default, digits stay together, no whole-word lookup.
    let (h, _) = hand_vocab("gpt-2", &[]);
    let tok = GgufTokenizer::from_gguf(&h).unwrap();
    assert!(!tok.add_bos());
    assert_eq!(
        tok.encode("hello world", true).unwrap(),
        [id("hello"), id("Ġworld")]
    );
    assert_eq!(
        tok.encode("1231234", false).unwrap(),
        [id("123"), id("123"), id("4")]
    );
    assert_eq!(tok.encode(" unmerged", false).unwrap().len(), 9);

    // Explicit flags win over the defaults.
    let (h, _) = hand_vocab(
        "llama-bpe",
        &[
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
        ],
    );
    let tok = GgufTokenizer::from_gguf(&h).unwrap();
    assert_eq!(
        tok.encode("hello", true).unwrap(),
        [id("hello"), id("<|end_of_text|>")]
    );
}

const ROUND_TRIP_TEXTS: &[&str] = &[
    "",
    "Hello, world!",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\n\n\n",
    "numbers 1234567890 and 3.14",
    "héllo ✓ 日本語のテキスト",
    "emoji 🦀🎉👍🏽👨‍👩‍👧",
    "Ελληνικά Русский עברית العربية हिन्दी",
    "don't I'm you'RE WE'LL",
    "\u{0}\u{1}\u{7f} control bytes",
    "mixed: naïve café — “quotes” …",
];

/// An empty BPE tokenizer with Llama-3's pre-tokenizer (the `tokenizer.json` spelling of its
/// expression, then the byte-level mapping) and a BPE trainer for `vocab_size` tokens over the
/// byte alphabet.
fn llama3_style_bpe(
    vocab_size: usize,
) -> (tokenizers::Tokenizer, tokenizers::models::TrainerWrapper) {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};
    let llama3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let pre = Sequence::new(vec![
        PreTokenizerWrapper::from(
            Split::new(
                SplitPattern::Regex(llama3.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .unwrap(),
        ),
        ByteLevel::new(false, false, false).into(),
    ]);
    let mut hf = Tokenizer::new(BPE::default());
    hf.with_pre_tokenizer(Some(pre));
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(1)
        .show_progress(false)
        .initial_alphabet(byte_chars().into_iter().collect())
        .build()
        .into();
    (hf, trainer)
}

#[test]
fn trained_byte_level_vocab_round_trips_and_agrees_with_tokenizers() {
    use tokenizers::AddedToken;
    let (mut hf, mut trainer) = llama3_style_bpe(600);
    let corpus: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "The quick brown fox {i} jumps over the lazy dog. Once upon a time, there was a \
                 tokenizer that didn't like 12345 numbers. héllo wörld 日本 {}",
                ROUND_TRIP_TEXTS[i % ROUND_TRIP_TEXTS.len()]
            )
        })
        .collect();
    hf.train(&mut trainer, corpus.iter()).unwrap();

    // Export: ids in order, merges as "a b", plus two control tokens.
    let vocab = hf.get_vocab(false);
    let mut tokens = vec![String::new(); vocab.len()];
    for (t, i) in &vocab {
        tokens[*i as usize] = t.clone();
    }
    let json: serde_json::Value = serde_json::from_str(&hf.to_string(false).unwrap()).unwrap();
    let merges: Vec<String> = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            other => other.as_str().unwrap().to_string(),
        })
        .collect();
    assert!(
        merges.len() > 200,
        "training produced {} merges",
        merges.len()
    );
    let mut tys = vec![TokenType::Normal; tokens.len()];
    for t in ["<|begin_of_text|>", "<|end_of_text|>"] {
        tokens.push(t.into());
        tys.push(TokenType::Control);
    }
    hf.add_special_tokens(
        ["<|begin_of_text|>", "<|end_of_text|>"].map(|t| AddedToken::from(t, true)),
    )
    .unwrap();
    let bos = tokens.len() as u32 - 2;
    let h = header(&[
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("llama-bpe".into())),
        ("tokenizer.ggml.tokens", Value::str_array(tokens.clone())),
        ("tokenizer.ggml.token_type", types(&tys)),
        ("tokenizer.ggml.merges", Value::str_array(merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(bos)),
        ("tokenizer.ggml.eos_token_id", Value::U32(bos + 1)),
    ]);
    let tok = GgufTokenizer::from_gguf(&h).unwrap();
    assert_eq!(tok.vocab_size(), tokens.len());

    let mut texts: Vec<String> = ROUND_TRIP_TEXTS.iter().map(|s| s.to_string()).collect();
    texts.extend(corpus.iter().take(3).cloned());
    // Random text over a wide range of code points.
    let mut rng = Lcg(99);
    for _ in 0..300 {
        let s: String = (0..rng.below(40))
            .filter_map(|_| {
                let c = match rng.below(4) {
                    0 => rng.below(0x80),
                    1 => 0x20,
                    2 => rng.below(0x3000),
                    _ => rng.below(0x1_0000) + 0x1_0000,
                };
                char::from_u32(c as u32)
            })
            .collect();
        texts.push(s);
    }
    for text in &texts {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids[0], bos);
        assert_eq!(&tok.decode(&ids), text, "{ids:?}");
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id)).collect();
        assert_eq!(bytes, text.as_bytes());
        // The trained tokenizer itself gives the same ids (the only difference, ignore_merges,
        // cannot change the result of merges learned by BPE training).
        let theirs = hf.encode(text.as_str(), false).unwrap();
        assert_eq!(&ids[1..], theirs.get_ids(), "{text:?}");
    }
    // Very long inputs, including pathological whitespace, encode without error.
    for text in [
        " ".repeat(100_000),
        "a \n".repeat(30_000),
        "9".repeat(50_000),
    ] {
        let ids = tok.encode(&text, false).unwrap();
        assert_eq!(tok.decode(&ids), text);
    }
}

fn splits(pre: &str, text: &str) -> Vec<String> {
    let (h, _) = hand_vocab(pre, &[]);
    GgufTokenizer::from_gguf(&h)
        .unwrap()
        .pre_tokenize(text)
        .unwrap()
}

#[test]
fn llama_bpe_splits_like_llama3() {
    let s = |t| splits("llama-bpe", t);
    // Numbers: groups of at most three digits, from the left.
    assert_eq!(s("1234567"), ["123", "456", "7"]);
    assert_eq!(s("x 2024!"), ["x", " ", "202", "4", "!"]);
    // Contractions split off, in either case.
    assert_eq!(s("don't"), ["don", "'t"]);
    assert_eq!(s("I'M HERE"), ["I", "'M", " HERE"]);
    assert_eq!(s("we'll"), ["we", "'ll"]);
    // A letter run takes one preceding non-letter, non-digit character (not a newline).
    assert_eq!(s("hello world"), ["hello", " world"]);
    assert_eq!(s("(hello)"), ["(hello", ")"]);
    // Whitespace before a word: all but the last space stand alone.
    assert_eq!(s("a   b"), ["a", "  ", " b"]);
    // Newlines gather with preceding whitespace; punctuation takes trailing newlines.
    assert_eq!(s("a\n\nb"), ["a", "\n\n", "b"]);
    assert_eq!(s("end.\n\nNext"), ["end", ".\n\n", "Next"]);
    assert_eq!(s("trailing  "), ["trailing", "  "]);
    // Unicode letters are letters.
    assert_eq!(s("héllo 日本"), ["héllo", " 日本"]);

    // falcon3 and falcon_e use the same split.
    assert_eq!(splits("falcon3", "1234567 don't"), s("1234567 don't"));
    assert_eq!(splits("falcon_e", "1234567 don't"), s("1234567 don't"));

    // GPT-2: digits stay together with a leading space, contractions are lower-case only.
    let g = |t| splits("gpt-2", t);
    assert_eq!(g("x 1234567"), ["x", " 1234567"]);
    assert_eq!(g("don't I'M"), ["don", "'t", " I", "'", "M"]);
    assert_eq!(g("a   b"), ["a", "  ", " b"]);

    // llama.cpp's "default": punctuation runs first, then GPT-2, digits, then groups of three.
    let d = |t| splits("default", t);
    assert_eq!(d("x 1234567"), ["x", " ", "123", "456", "7"]);
    assert_eq!(d("a, b!"), ["a", ",", " b", "!"]);
}

// ---------------------------------------------------------------------------------------------
// Malformed metadata

fn error_of(kv: &[(&str, Value)]) -> String {
    match GgufTokenizer::from_gguf(&header(kv)) {
        Ok(_) => panic!("expected an error for {kv:?}"),
        Err(e) => e.to_string(),
    }
}

fn tiny_llama_kv() -> Vec<(&'static str, Value)> {
    vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::str_array(["<unk>", "<s>", "</s>", "▁a", "a", "▁"]),
        ),
        (
            "tokenizer.ggml.scores",
            Value::f32_array([0.0, 0.0, 0.0, -1.0, -2.0, -3.0]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::i32_array([2, 3, 3, 1, 1, 1]),
        ),
    ]
}

fn replace(
    kv: &[(&'static str, Value)],
    key: &'static str,
    v: Option<Value>,
) -> Vec<(&'static str, Value)> {
    let mut out: Vec<_> = kv.iter().filter(|(k, _)| *k != key).cloned().collect();
    if let Some(v) = v {
        out.push((key, v));
    }
    out
}

#[test]
fn minimal_llama_metadata_works_with_defaults() {
    let tok = GgufTokenizer::from_gguf(&header(&tiny_llama_kv())).unwrap();
    assert_eq!(tok.encode("a a", true).unwrap(), [1, 3, 3]);
    assert_eq!(tok.decode_standalone(&[1, 3, 3]), "a a");
    // Without scores or types (llama.cpp's defaults: 0 and NORMAL) it still builds.
    let kv = replace(&tiny_llama_kv(), "tokenizer.ggml.scores", None);
    let kv = replace(&kv, "tokenizer.ggml.token_type", None);
    GgufTokenizer::from_gguf(&header(&kv)).unwrap();
    // add_space_prefix = false.
    let kv = replace(
        &tiny_llama_kv(),
        "tokenizer.ggml.add_space_prefix",
        Some(Value::Bool(false)),
    );
    let tok = GgufTokenizer::from_gguf(&header(&kv)).unwrap();
    assert_eq!(tok.encode("a a", false).unwrap(), [4, 3]);
}

#[test]
fn malformed_metadata_errors_name_the_key() {
    let base = tiny_llama_kv();
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (
            replace(&base, "tokenizer.ggml.tokens", None),
            "tokenizer.ggml.tokens",
        ),
        (
            replace(&base, "tokenizer.ggml.model", None),
            "tokenizer.ggml.model",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.model",
                Some(Value::String("bert".into())),
            ),
            "tokenizer.ggml.model",
        ),
        (
            replace(&base, "tokenizer.ggml.model", Some(Value::U32(1))),
            "tokenizer.ggml.model",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.token_type",
                Some(Value::i32_array([1, 1])),
            ),
            "tokenizer.ggml.token_type",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.token_type",
                Some(Value::i32_array([1, 1, 1, 1, 1, 9])),
            ),
            "tokenizer.ggml.token_type",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.token_type",
                Some(Value::str_array(["1", "1", "1", "1", "1", "1"])),
            ),
            "tokenizer.ggml.token_type",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.scores",
                Some(Value::f32_array([0.0])),
            ),
            "tokenizer.ggml.scores",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.tokens",
                Some(Value::str_array(Vec::<String>::new())),
            ),
            "tokenizer.ggml.tokens",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.tokens",
                Some(Value::i32_array([1, 2])),
            ),
            "tokenizer.ggml.tokens",
        ),
        (
            replace(
                &base,
                "tokenizer.ggml.tokens",
                Some(Value::str_array(["<unk>", "<s>", "</s>", "a", "a", "b"])),
            ),
            "tokenizer.ggml.tokens",
        ),
        (
            replace(&base, "tokenizer.ggml.bos_token_id", Some(Value::U32(6))),
            "tokenizer.ggml.bos_token_id",
        ),
        (
            replace(&base, "tokenizer.ggml.eos_token_id", Some(Value::I32(-1))),
            "tokenizer.ggml.eos_token_id",
        ),
        (
            replace(&base, "tokenizer.ggml.add_bos_token", Some(Value::U8(1))),
            "tokenizer.ggml.add_bos_token",
        ),
    ];
    for (kv, key) in cases {
        let e = error_of(&kv);
        assert!(e.contains(key), "error {e:?} does not name {key}");
    }

    // gpt2: unknown or missing pre, missing or broken merges, add_bos without a BOS id.
    let (kv, tokens) = hand_vocab_kv("llama-bpe", &[]);
    let e = error_of(&replace(
        &kv,
        "tokenizer.ggml.pre",
        Some(Value::String("klingon".into())),
    ));
    assert!(
        e.contains("tokenizer.ggml.pre") && e.contains("klingon"),
        "{e}"
    );
    assert!(e.contains("llama-bpe"), "lists the known names: {e}");
    let e = error_of(&replace(&kv, "tokenizer.ggml.pre", None));
    assert!(e.contains("tokenizer.ggml.pre"), "{e}");
    let e = error_of(&replace(&kv, "tokenizer.ggml.merges", None));
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = error_of(&replace(
        &kv,
        "tokenizer.ggml.merges",
        Some(Value::str_array(["h e", "nosplit"])),
    ));
    assert!(
        e.contains("tokenizer.ggml.merges") && e.contains("nosplit"),
        "{e}"
    );
    let e = error_of(&replace(
        &kv,
        "tokenizer.ggml.merges",
        Some(Value::str_array(["h e", "zzz qqq"])),
    ));
    assert!(e.contains("tokenizer.ggml.merges"), "{e}");
    let e = error_of(&replace(&kv, "tokenizer.ggml.bos_token_id", None));
    assert!(
        e.contains("tokenizer.ggml.add_bos_token") && e.contains("tokenizer.ggml.bos_token_id"),
        "{e}"
    );
    assert!(tokens.len() > 256);
}

#[test]
fn damaged_reference_metadata_never_panics() {
    let g = MappedGguf::open(Path::new(SPM_GGUFS[1])).unwrap();
    let keys: Vec<String> = g
        .header
        .kv
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("tokenizer."))
        .collect();
    let junk = [
        None,
        Some(Value::U32(7)),
        Some(Value::I32(-3)),
        Some(Value::String("gpt2".into())),
        Some(Value::Bool(true)),
        Some(Value::Array(ValueType::String, vec![])),
        Some(Value::Array(ValueType::F32, vec![])),
        Some(Value::str_array(["a b", "c"])),
        Some(Value::i32_array([0, 1, 2])),
    ];
    let mut errors = HashSet::new();
    for key in &keys {
        for j in &junk {
            let mut h = g.header.clone();
            h.kv.retain(|(k, _)| k != key);
            if let Some(v) = j {
                h.kv.push((key.clone(), v.clone()));
            }
            if let Err(e) = GgufTokenizer::from_gguf(&h) {
                let _: &TokenizeError = &e;
                errors.insert(e.to_string());
            }
        }
    }
    assert!(errors.len() > 10, "{errors:?}");
}

// ---------------------------------------------------------------------------------------------
// Full-size vocabularies

/// A 32k SentencePiece and a 128k byte-level BPE vocabulary build from GGUF metadata and
/// round-trip a long text (build and encoding times are printed).
#[test]
fn full_size_vocabularies_build_and_round_trip() {
    let mut rng = Lcg(1);

    // A 32k SentencePiece vocabulary: specials, 256 byte tokens, then pieces that are
    // concatenations of earlier pieces, scored by rank.
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut tys = vec![TokenType::Unknown, TokenType::Control, TokenType::Control];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        tys.push(TokenType::Byte);
    }
    let first = tokens.len();
    let mut seen: HashSet<String> = HashSet::new();
    for c in "▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'éü".chars() {
        seen.insert(c.to_string());
        tokens.push(c.to_string());
    }
    let chars = tokens.len() - first;
    while tokens.len() < 32000 {
        // Grow an earlier piece by a character or (less often) by another piece.
        let a = &tokens[first + rng.below((tokens.len() - first) as u64) as usize];
        let b = if rng.below(4) == 0 {
            &tokens[first + rng.below((tokens.len() - first) as u64) as usize]
        } else {
            &tokens[first + rng.below(chars as u64) as usize]
        };
        let t = format!("{a}{b}");
        if t.chars().count() <= 16 && seen.insert(t.clone()) {
            tokens.push(t);
        }
    }
    tys.resize(tokens.len(), TokenType::Normal);
    let scores: Vec<f32> = (0..tokens.len())
        .map(|i| if i < first { 0.0 } else { -(i as f32) })
        .collect();
    let h = header(&[
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.tokens", Value::str_array(tokens.clone())),
        ("tokenizer.ggml.scores", Value::f32_array(scores)),
        ("tokenizer.ggml.token_type", types(&tys)),
    ]);
    let t0 = Instant::now();
    let tok = GgufTokenizer::from_gguf(&h).unwrap();
    let spm = t0.elapsed();
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(2000);
    let t0 = Instant::now();
    let ids = tok.encode(&text, true).unwrap();
    let spm_encode = t0.elapsed();
    assert_eq!(tok.decode_standalone(&ids), text);

    // A 128k byte-level vocabulary: 256 byte tokens, merges of earlier tokens, 256 control
    // tokens at the end (Llama-3's layout).
    let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
    let mut seen: HashSet<String> = tokens.iter().cloned().collect();
    let mut merges = Vec::new();
    let letters: Vec<usize> = "ĠabcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        .chars()
        .map(|c| tokens.iter().position(|t| *t == c.to_string()).unwrap())
        .collect();
    let mut pool = letters.clone();
    while tokens.len() < 128_000 - 256 {
        let a = pool[rng.below(pool.len() as u64) as usize];
        let b = if rng.below(4) == 0 {
            pool[rng.below(pool.len() as u64) as usize]
        } else {
            letters[rng.below(letters.len() as u64) as usize]
        };
        let t = format!("{}{}", tokens[a], tokens[b]);
        if t.chars().count() <= 16 && seen.insert(t.clone()) {
            merges.push(format!("{} {}", tokens[a], tokens[b]));
            pool.push(tokens.len());
            tokens.push(t);
        }
    }
    let mut tys = vec![TokenType::Normal; tokens.len()];
    for i in 0..256 {
        tokens.push(format!("<|reserved_special_token_{i}|>"));
        tys.push(TokenType::Control);
    }
    let h = header(&[
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("llama-bpe".into())),
        ("tokenizer.ggml.tokens", Value::str_array(tokens.clone())),
        ("tokenizer.ggml.token_type", types(&tys)),
        ("tokenizer.ggml.merges", Value::str_array(merges)),
        ("tokenizer.ggml.bos_token_id", Value::U32(127_744)),
    ]);
    let t0 = Instant::now();
    let tok = GgufTokenizer::from_gguf(&h).unwrap();
    let bpe = t0.elapsed();
    let t0 = Instant::now();
    let ids = tok.encode(&text, true).unwrap();
    let bpe_encode = t0.elapsed();
    assert_eq!(tok.decode(&ids), text);
    eprintln!(
        "build: 32k SentencePiece {spm:?}, 128k byte-level BPE {bpe:?}; \
         encoding {} bytes: {spm_encode:?} / {bpe_encode:?}",
        text.len()
    );
    // The build times are printed, not asserted: speed belongs to benchmarks, and a loaded
    // test machine must not fail a correct build.
}

/// A byte-level BPE of 1,000 tokens trained here with Llama-3's pre-tokenizer (a vocabulary no
/// published model has): the converter names it `llama-bpe` from its `pre_tokenizer` definition
/// alone, for both runtimes, and the runtime, reading nothing but the GGUF metadata, encodes
/// text as the `tokenizers` library encodes it with the tokenizer.json itself.
#[test]
fn small_llama3_style_bpe_is_recognised_by_its_definition() {
    use bitconv::checkpoint::tokenizer::{Flavor, TokenizerMeta};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::AddedToken;
    let (mut hf, mut trainer) = llama3_style_bpe(999);
    hf.with_decoder(Some(ByteLevel::default()));
    let corpus: Vec<&str> = include_str!("../../docs/FORMATS.md").lines().collect();
    hf.train(&mut trainer, corpus.iter()).unwrap();
    hf.add_special_tokens([AddedToken::from("<|begin_of_text|>", true)])
        .unwrap();
    assert_eq!(hf.get_vocab_size(true), 1000);

    let tmp = tempfile::tempdir().unwrap();
    hf.save(tmp.path().join("tokenizer.json"), false).unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<|begin_of_text|>", "add_bos_token": false}"#,
    )
    .unwrap();
    for flavor in [Flavor::BitnetCpp, Flavor::Mainline] {
        let meta = TokenizerMeta::from_dir(tmp.path(), flavor, None).unwrap();
        assert_eq!(meta.pre.as_deref(), Some("llama-bpe"), "{flavor}");
        assert_eq!(meta.tokens.len(), 1000);
        let tok = GgufTokenizer::from_gguf(&converted_header(tmp.path(), flavor)).unwrap();
        assert_eq!(tok.pre_tokenizer().unwrap().name(), "llama-bpe");
        let mut texts: Vec<String> = ROUND_TRIP_TEXTS.iter().map(|s| s.to_string()).collect();
        texts.extend(corpus.iter().take(200).map(|s| s.to_string()));
        for text in &texts {
            let ours = tok.encode(text, false).unwrap();
            let theirs = hf.encode(text.as_str(), false).unwrap();
            assert_eq!(ours, theirs.get_ids(), "{flavor}: {text:?}");
        }
    }
}

/// A `pre_tokenizer` bitconv does not know is a clear error naming the tokenizer file, what was
/// not recognised and the flag, for a definition one setting away from a known one and for a
/// step kind bitconv does not model; `--tokenizer-pre` still converts it, and a name that splits
/// differently from the definition is warned about.
#[test]
fn unknown_pre_tokenizer_definitions_are_clear_errors() {
    use bitconv::checkpoint::tokenizer::{Flavor, TokenizerMeta};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/families/llama3-8b");
    let tmp = tempfile::tempdir().unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let tj = tmp.path().join("tokenizer.json");
    let orig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tj).unwrap()).unwrap();
    let mut prefix = orig.clone();
    prefix["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true.into();
    let mut meta_space = orig.clone();
    meta_space["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "▁"});
    for (v, says) in [(prefix, "prefix space: yes"), (meta_space, "Metaspace")] {
        std::fs::write(&tj, v.to_string()).unwrap();
        let e = TokenizerMeta::from_dir(tmp.path(), Flavor::BitnetCpp, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        assert!(e.contains("--tokenizer-pre"), "{e}");
        assert!(e.contains(says), "{e}");
        let named = TokenizerMeta::from_dir(tmp.path(), Flavor::BitnetCpp, Some("llama-bpe"));
        assert_eq!(named.unwrap().pre.as_deref(), Some("llama-bpe"));
    }
    std::fs::write(&tj, orig.to_string()).unwrap();
    let m = TokenizerMeta::from_dir(tmp.path(), Flavor::BitnetCpp, Some("qwen2")).unwrap();
    assert_eq!(m.pre.as_deref(), Some("qwen2"));
    assert!(
        m.warnings
            .iter()
            .any(|w| w.contains("qwen2") && w.contains("llama-bpe")),
        "{:?}",
        m.warnings
    );
    let m = TokenizerMeta::from_dir(tmp.path(), Flavor::BitnetCpp, Some("falcon_e")).unwrap();
    assert_eq!(m.pre.as_deref(), Some("falcon_e"));
    assert!(
        m.warnings.iter().all(|w| !w.contains("falcon_e")),
        "{:?}",
        m.warnings
    );
}

/// The decoder counts the byte sequences it had to show as U+FFFD, so `run` can say why they
/// appear: a stray continuation byte, an impossible lead byte, and a character cut off at the end.
#[test]
fn stream_decoder_counts_invalid_sequences() {
    let mut d = StreamDecoder::new();
    assert_eq!(d.push_bytes("héllo".as_bytes()), "héllo");
    assert_eq!(d.invalid_sequences(), 0);
    assert_eq!(d.push_bytes(&[0x80, b'a', 0xff]), "\u{fffd}a\u{fffd}");
    assert_eq!(d.invalid_sequences(), 2);
    assert_eq!(d.push_bytes(&[0xe2, 0x82]), "");
    assert_eq!(d.finish(), "\u{fffd}");
    assert_eq!(d.invalid_sequences(), 3);
}
