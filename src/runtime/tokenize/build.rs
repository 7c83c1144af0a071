//! Reading the `tokenizer.ggml.*` metadata and building the tokenizer from it.

use super::*;

pub(super) fn get_str<'a>(h: &'a GgufHeader, key: &str) -> Result<Option<&'a str>, TokenizeError> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(malformed(
            key,
            format!("expected a string, found {}", v.value_type().short_name()),
        )),
    }
}

pub(super) fn get_bool(h: &GgufHeader, key: &str) -> Result<Option<bool>, TokenizeError> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(malformed(
            key,
            format!("expected a bool, found {}", v.value_type().short_name()),
        )),
    }
}

/// A token id; it must lie inside the vocabulary.
pub(super) fn get_id(
    h: &GgufHeader,
    key: &str,
    n_tokens: usize,
) -> Result<Option<u32>, TokenizeError> {
    let Some(v) = h.get(key) else {
        return Ok(None);
    };
    let id = v.as_u64().ok_or_else(|| {
        malformed(
            key,
            format!(
                "expected a non-negative integer, found {}",
                describe_value(v)
            ),
        )
    })?;
    if id >= n_tokens as u64 {
        return Err(malformed(
            key,
            format!("token id {id} is outside the vocabulary of {n_tokens} tokens"),
        ));
    }
    Ok(Some(id as u32))
}

pub(super) fn describe_value(v: &Value) -> String {
    match v {
        Value::String(s) if s.chars().count() > 40 => {
            format!("string {:?}…", s.chars().take(40).collect::<String>())
        }
        Value::String(s) => format!("string {s:?}"),
        Value::Array(t, items) => format!("array of {} {}", items.len(), t.short_name()),
        Value::Lazy(l) => format!(
            "{} of {} {} elements, more than bitconv decodes (arrays of at most {} elements, {} in all)",
            l.ty.short_name(),
            l.count,
            l.elem.short_name(),
            crate::gguf::ParseLimits::MODEL.array_items,
            crate::gguf::ParseLimits::MODEL.total_items
        ),
        other => format!("{} {:?}", other.value_type().short_name(), other),
    }
}

/// The items of an array value with the given element check.
pub(super) fn get_array<'a>(
    h: &'a GgufHeader,
    key: &str,
    what: &str,
    accept: impl Fn(ValueType) -> bool,
) -> Result<Option<&'a [Value]>, TokenizeError> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::Array(t, items)) if accept(*t) => Ok(Some(items)),
        Some(v) => Err(malformed(
            key,
            format!("expected an array of {what}, found {}", describe_value(v)),
        )),
    }
}

pub(super) fn get_str_array<'a>(
    h: &'a GgufHeader,
    key: &str,
) -> Result<Option<Vec<&'a str>>, TokenizeError> {
    let Some(items) = get_array(h, key, "strings", |t| t == ValueType::String)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .ok_or_else(|| malformed(key, format!("item {i} is not a string")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

pub(super) fn is_integer(t: ValueType) -> bool {
    matches!(
        t,
        ValueType::U8
            | ValueType::I8
            | ValueType::U16
            | ValueType::I16
            | ValueType::U32
            | ValueType::I32
            | ValueType::U64
            | ValueType::I64
    )
}

pub(super) fn as_i64(v: &Value) -> Option<i64> {
    match *v {
        Value::I8(x) => Some(x.into()),
        Value::I16(x) => Some(x.into()),
        Value::I32(x) => Some(x.into()),
        Value::I64(x) => Some(x),
        _ => v.as_u64().and_then(|x| i64::try_from(x).ok()),
    }
}

pub(super) fn check_len(key: &str, got: usize, n_tokens: usize) -> Result<(), TokenizeError> {
    if got != n_tokens {
        return Err(malformed(
            key,
            format!("has {got} entries but {KEY_TOKENS} has {n_tokens}"),
        ));
    }
    Ok(())
}

pub(super) fn token_type_from(v: i64) -> Option<TokenType> {
    Some(match v {
        1 => TokenType::Normal,
        2 => TokenType::Unknown,
        3 => TokenType::Control,
        4 => TokenType::UserDefined,
        5 => TokenType::Unused,
        6 => TokenType::Byte,
        _ => return None,
    })
}

/// The byte of a `<0xHH>` token.
pub(super) fn parse_byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte alphabet: the printable bytes stand for themselves, the others for the
/// characters from U+0100 on, in byte order. Returns the inverse map, indexed by code point
/// (U+0000..U+0143; `None` for characters outside the alphabet).
pub(super) fn byte_level_decoder() -> Vec<Option<u8>> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut map = vec![None; 0x144];
    let mut next = 0x100;
    for b in 0..=255u8 {
        if printable(b) {
            map[usize::from(b)] = Some(b);
        } else {
            map[next] = Some(b);
            next += 1;
        }
    }
    map
}

// ---------------------------------------------------------------------------------------------
// Building

impl GgufTokenizer {
    /// Builds the tokenizer described by a GGUF header's `tokenizer.ggml.*` metadata.
    ///
    /// Required: `tokenizer.ggml.model` (`"llama"` or `"gpt2"`) and `tokenizer.ggml.tokens`;
    /// for `gpt2` also `tokenizer.ggml.merges` and a known `tokenizer.ggml.pre`. Optional, with
    /// llama.cpp's defaults: `scores` (0), `token_type` (NORMAL), the BOS/EOS/UNK ids (1/2/0 for
    /// `llama`, none for `gpt2`), `add_bos_token` (true for `llama` and Llama-3-style `gpt2`),
    /// `add_eos_token` (false) and `add_space_prefix` (true for `llama`).
    pub fn from_gguf(header: &GgufHeader) -> Result<GgufTokenizer, TokenizeError> {
        let model_name = get_str(header, KEY_MODEL)?.ok_or_else(|| missing(KEY_MODEL))?;
        let model = match model_name {
            "llama" => TokenizerModel::Llama,
            "gpt2" => TokenizerModel::Gpt2,
            other => return Err(TokenizeError::UnknownModel(other.to_string())),
        };
        // The pre-tokenizer (gpt2 only); llama.cpp ignores the value for SentencePiece
        // vocabularies (it is "default").
        let pre = match model {
            TokenizerModel::Llama => None,
            TokenizerModel::Gpt2 => {
                let name = get_str(header, KEY_PRE)?.ok_or_else(|| missing(KEY_PRE))?;
                Some(
                    pretok::by_name(name).ok_or_else(|| TokenizeError::UnknownPre {
                        name: name.to_string(),
                        known: pretok::table_names(),
                    })?,
                )
            }
        };

        // Tokens: llama.cpp renames empty tokens and rejects duplicates.
        let raw_tokens = get_str_array(header, KEY_TOKENS)?.ok_or_else(|| missing(KEY_TOKENS))?;
        let n = raw_tokens.len();
        if n == 0 {
            return Err(malformed(KEY_TOKENS, "the vocabulary is empty"));
        }
        if u32::try_from(n).is_err() {
            return Err(malformed(
                KEY_TOKENS,
                format!("{n} tokens do not fit u32 ids"),
            ));
        }
        let tokens: Vec<String> = raw_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t.to_string()
                }
            })
            .collect();
        let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            if let Some(first) = vocab.insert(t.as_str(), i as u32) {
                return Err(malformed(
                    KEY_TOKENS,
                    format!("token {t:?} appears twice (ids {first} and {i})"),
                ));
            }
        }

        let types: Vec<TokenType> = match get_array(header, KEY_TOKEN_TYPE, "integers", is_integer)?
        {
            None => vec![TokenType::Normal; n],
            Some(items) => {
                check_len(KEY_TOKEN_TYPE, items.len(), n)?;
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        as_i64(v).and_then(token_type_from).ok_or_else(|| {
                            malformed(
                                KEY_TOKEN_TYPE,
                                format!(
                                    "item {i} ({}) is not a token type 1..=6",
                                    describe_value(v)
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            }
        };

        let (def_bos, def_eos, def_unk) = match model {
            TokenizerModel::Llama => (Some(1u32), Some(2u32), Some(0u32)),
            TokenizerModel::Gpt2 => (None, None, None),
        };
        let in_range = |d: Option<u32>| d.filter(|&d| (d as usize) < n);
        let bos = get_id(header, KEY_BOS_ID, n)?.or(in_range(def_bos));
        let eos = get_id(header, KEY_EOS_ID, n)?.or(in_range(def_eos));
        let unk = get_id(header, KEY_UNK_ID, n)?.or(in_range(def_unk));
        let add_bos = get_bool(header, KEY_ADD_BOS)?.unwrap_or(match pre {
            None => true,
            Some(p) => p.add_bos_default,
        });
        let add_eos = get_bool(header, KEY_ADD_EOS)?.unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(malformed(
                KEY_ADD_BOS,
                format!("is true but {KEY_BOS_ID} is not set"),
            ));
        }
        if add_eos && eos.is_none() {
            return Err(malformed(
                KEY_ADD_EOS,
                format!("is true but {KEY_EOS_ID} is not set"),
            ));
        }
        let add_space_prefix =
            get_bool(header, KEY_ADD_SPACE_PREFIX)?.unwrap_or(model == TokenizerModel::Llama);

        let mut eog: Vec<u32> = Vec::new();
        eog.extend(eos);
        eog.extend(get_id(header, KEY_EOT_ID, n)?);
        eog.extend(get_id(header, KEY_EOM_ID, n)?);
        for t in EOG_TEXTS {
            if let Some(&id) = vocab.get(t) {
                if matches!(
                    types[id as usize],
                    TokenType::Control | TokenType::UserDefined
                ) {
                    eog.push(id);
                }
            }
        }
        eog.sort_unstable();
        eog.dedup();

        let (mut inner, splitter) = match pre {
            None => {
                let scores = read_scores(header, n)?;
                let merges = spm_merges(&tokens, &types, &scores, &vocab);
                let bpe = bpe_model(
                    &tokens,
                    merges,
                    unk.map(|u| tokens[u as usize].clone()),
                    false,
                    KEY_TOKENS,
                )?;
                let replace = Replace::new(" ", SPACE_MARK.to_string())
                    .map_err(|e| build_err(KEY_ADD_SPACE_PREFIX, e))?;
                let mut parts: Vec<NormalizerWrapper> = Vec::new();
                if add_space_prefix {
                    parts.push(Prepend::new(SPACE_MARK.to_string()).into());
                }
                parts.push(replace.into());
                let mut tk = Tokenizer::new(bpe);
                tk.with_normalizer(Some(NormalizerSequence::new(parts)))
                    .map_err(|e| build_err(KEY_ADD_SPACE_PREFIX, e))?;
                (tk, None)
            }
            Some(spec) => {
                let merges = read_merges(header)?;
                let bpe = bpe_model(
                    &tokens,
                    merges,
                    unk.map(|u| tokens[u as usize].clone()),
                    spec.ignore_merges,
                    KEY_MERGES,
                )?;
                let splits = spec
                    .regexes
                    .iter()
                    .map(|re| {
                        Split::new(
                            SplitPattern::Regex(re.to_string()),
                            SplitDelimiterBehavior::Isolated,
                            false,
                        )
                        .map(PreTokenizerWrapper::from)
                        .map_err(|e| build_err(KEY_PRE, e))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let splitter = PreTokenizerSequence::new(splits.clone());
                let mut all = splits;
                all.push(ByteLevel::new(false, false, false).into());
                let mut tk = Tokenizer::new(bpe);
                tk.with_pre_tokenizer(Some(PreTokenizerSequence::new(all)));
                (tk, Some(splitter))
            }
        };

        // Added tokens: CONTROL and UNKNOWN are special (skipped in decoding), USER_DEFINED
        // ordinary; all are matched on the raw text.
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (t, ty) in tokens.iter().zip(&types) {
            match ty {
                TokenType::Control | TokenType::Unknown => {
                    special.push(AddedToken::from(t.clone(), true).normalized(false));
                }
                TokenType::UserDefined => {
                    user.push(AddedToken::from(t.clone(), false).normalized(false));
                }
                _ => {}
            }
        }
        inner
            .add_special_tokens(special)
            .map_err(|e| build_err(KEY_TOKEN_TYPE, e))?;
        inner
            .add_tokens(user)
            .map_err(|e| build_err(KEY_TOKEN_TYPE, e))?;

        let rendered = render_tokens(model, &tokens, &types);
        Ok(GgufTokenizer {
            model,
            pre,
            inner,
            splitter,
            tokens,
            types,
            rendered,
            bos,
            eos,
            add_bos,
            add_eos,
            add_space_prefix,
            eog,
        })
    }
}

/// `tokenizer.ggml.scores` as f32 (an f32 or i32 array, as llama.cpp accepts), zeros if absent.
pub(super) fn read_scores(h: &GgufHeader, n: usize) -> Result<Vec<f32>, TokenizeError> {
    let Some(items) = get_array(h, KEY_SCORES, "numbers", |t| {
        matches!(t, ValueType::F32 | ValueType::F64) || is_integer(t)
    })?
    else {
        return Ok(vec![0.0; n]);
    };
    check_len(KEY_SCORES, items.len(), n)?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| malformed(KEY_SCORES, format!("item {i} is not a number")))
        })
        .collect()
}

/// `tokenizer.ggml.merges`, each `"left right"` split at the first space after the first byte
/// (as llama.cpp splits them).
pub(super) fn read_merges(h: &GgufHeader) -> Result<Vec<(String, String)>, TokenizeError> {
    let items = get_str_array(h, KEY_MERGES)?.ok_or_else(|| missing(KEY_MERGES))?;
    items
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let split = m
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(p, _)| p);
            match split {
                Some(p) if p + 1 < m.len() => Ok((m[..p].to_string(), m[p + 1..].to_string())),
                _ => Err(malformed(
                    KEY_MERGES,
                    format!("item {i} ({m:?}) is not two tokens separated by a space"),
                )),
            }
        })
        .collect()
}

/// Merges equivalent to SentencePiece BPE: for every piece that can result from a merge, each
/// way of cutting it into two pieces, ranked by the piece's score (higher first), then its id,
/// then the length of the left part.
///
/// Merge results and parts are NORMAL and USER_DEFINED pieces. CONTROL, UNKNOWN, BYTE and
/// UNUSED pieces (`<s>`, `<0x41>`, `[PAD1]`) are never merge results: llama.cpp would merge
/// into any piece, but these are not spelled by the characters of ordinary pieces.
///
/// One difference remains in principle: SentencePiece and llama.cpp break ties between equal
/// scores by position (leftmost first), a ranked merge list by rank. Pieces of SentencePiece
/// BPE vocabularies have distinct scores, so this only matters for hand-made vocabularies.
pub(super) fn spm_merges(
    tokens: &[String],
    types: &[TokenType],
    scores: &[f32],
    vocab: &HashMap<&str, u32>,
) -> Vec<(String, String)> {
    let mergeable = |id: u32| {
        matches!(
            types[id as usize],
            TokenType::Normal | TokenType::UserDefined
        )
    };
    // (score, piece id, left length, left id, right id)
    let mut found: Vec<(f32, u32, usize, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        let id = id as u32;
        if !mergeable(id) {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                if mergeable(li) && mergeable(ri) {
                    found.push((scores[id as usize], id, cut, li, ri));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    found
        .into_iter()
        .map(|(_, _, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
        .collect()
}

pub(super) fn bpe_model(
    tokens: &[String],
    merges: Vec<(String, String)>,
    unk: Option<String>,
    ignore_merges: bool,
    merges_key: &str,
) -> Result<BPE, TokenizeError> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut b = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true)
        .ignore_merges(ignore_merges);
    if let Some(u) = unk {
        b = b.unk_token(u);
    }
    b.build().map_err(|e| build_err(merges_key, e))
}

/// What each token prints as, following llama.cpp's `token_to_piece` with `special = false`.
pub(super) fn render_tokens(
    model: TokenizerModel,
    tokens: &[String],
    types: &[TokenType],
) -> Vec<Box<[u8]>> {
    let byte_level = (model == TokenizerModel::Gpt2).then(byte_level_decoder);
    tokens
        .iter()
        .zip(types)
        .map(|(t, ty)| -> Box<[u8]> {
            match ty {
                TokenType::Control | TokenType::Unknown | TokenType::Unused => Box::new([]),
                TokenType::UserDefined => t.as_bytes().into(),
                TokenType::Byte => match parse_byte_token(t) {
                    Some(b) => Box::new([b]),
                    None => t.as_bytes().into(),
                },
                TokenType::Normal => match &byte_level {
                    None => t.replace(SPACE_MARK, " ").into_bytes().into(),
                    Some(map) => {
                        let mut out = Vec::with_capacity(t.len());
                        for c in t.chars() {
                            match map.get(c as usize).copied().flatten() {
                                Some(b) => out.push(b),
                                None => {
                                    let mut buf = [0u8; 4];
                                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                                }
                            }
                        }
                        out.into()
                    }
                },
            }
        })
        .collect()
}
