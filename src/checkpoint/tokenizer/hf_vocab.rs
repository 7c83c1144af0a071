//! The vocabulary as transformers' fast tokenizer loads a `tokenizer.json` (added tokens, special attributes).

use super::*;

/// An added token with the flags `tokenizers` compares (`AddedToken` equality).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AddedTok {
    pub(super) content: String,
    pub(super) single_word: bool,
    pub(super) lstrip: bool,
    pub(super) rstrip: bool,
    pub(super) normalized: bool,
    pub(super) special: bool,
}

impl AddedTok {
    /// A token from its JSON form; missing flags take `AddedToken`'s defaults (`normalized`
    /// defaults to `!special`).
    pub(super) fn from_json(v: &Value) -> Option<AddedTok> {
        let content = v.get("content")?.as_str()?.to_owned();
        let flag = |k: &str| v.get(k).map(truthy);
        let special = flag("special").unwrap_or(false);
        Some(AddedTok {
            content,
            single_word: flag("single_word").unwrap_or(false),
            lstrip: flag("lstrip").unwrap_or(false),
            rstrip: flag("rstrip").unwrap_or(false),
            normalized: flag("normalized").unwrap_or(!special),
            special,
        })
    }

    pub(super) fn plain(content: &str, special: bool) -> AddedTok {
        AddedTok {
            content: content.to_owned(),
            single_word: false,
            lstrip: false,
            rstrip: false,
            normalized: !special,
            special,
        }
    }
}

/// A special-token attribute value: a plain string or an `AddedToken`.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum SpecialAttr {
    Str(String),
    Tok(AddedTok),
}

impl SpecialAttr {
    pub(super) fn content(&self) -> &str {
        match self {
            SpecialAttr::Str(s) => s,
            SpecialAttr::Tok(t) => &t.content,
        }
    }

    /// transformers' reading of a `tokenizer_config.json` / `special_tokens_map.json` value
    /// (`special` forces the flag, as `special_tokens_map.json` does).
    pub(super) fn from_json(v: &Value, special: bool) -> Option<SpecialAttr> {
        match v {
            Value::String(s) => Some(SpecialAttr::Str(s.clone())),
            Value::Object(_) => AddedTok::from_json(v).map(|mut t| {
                if special {
                    t.special = true;
                }
                SpecialAttr::Tok(t)
            }),
            _ => None,
        }
    }
}

/// `tokenizers`' added vocabulary: content → id and id → token.
pub(super) struct AddedVocab<'a> {
    pub(super) model_ids: &'a HashMap<&'a str, u64>,
    pub(super) model_len: u64,
    pub(super) enc: HashMap<String, u64>,
    pub(super) dec: HashMap<u64, AddedTok>,
}

impl AddedVocab<'_> {
    /// `AddedVocabulary::add_tokens` for one token: an empty or already identical token is
    /// skipped; a known content keeps its id; otherwise the id after the model vocabulary's
    /// size, or after the largest added id. Returns the id.
    pub(super) fn add(&mut self, tok: AddedTok) -> Option<u64> {
        if tok.content.is_empty() || self.dec.values().any(|t| *t == tok) {
            return None;
        }
        let known = self
            .enc
            .get(&tok.content)
            .or_else(|| self.model_ids.get(tok.content.as_str()));
        let id = match (known, self.enc.values().max()) {
            (Some(&id), _) => id,
            (None, Some(&m)) if m >= self.model_len || self.model_len == 0 => m + 1,
            (None, _) => self.model_len,
        };
        self.enc.insert(tok.content.clone(), id);
        self.dec.insert(id, tok);
        Some(id)
    }
}

/// The vocabulary the reference converters see through `AutoTokenizer.from_pretrained`.
pub(super) struct HfVocab {
    /// `tokenizer.vocab`: content → id, added tokens included.
    pub(super) content_to_id: HashMap<String, u64>,
    /// id → content (the converters' `reverse_vocab`).
    pub(super) reverse: HashMap<u64, String>,
    /// `added_tokens_decoder`: id → token.
    pub(super) added: HashMap<u64, AddedTok>,
    /// `get_added_vocab()`'s contents.
    pub(super) added_contents: HashSet<String>,
    pub(super) warnings: Vec<String>,
}

/// transformers' special-token attributes, in its order.
pub(super) const SPECIAL_ATTRS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

impl HfVocab {
    /// Emulates how `tokenizers` loads `tokenizer.json` (it ignores the ids stored with the
    /// added tokens and renumbers them) and how transformers' fast tokenizer then re-adds
    /// tokens: every entry of `tokenizer_config.json`'s `added_tokens_decoder` (or, without
    /// one, of `tokenizer.json`'s `added_tokens`), and the special-token attributes
    /// (`bos_token` … `mask_token`, `additional_special_tokens`, `extra_special_tokens`) it
    /// does not have yet, each marked special if it was or if it is named by an attribute.
    /// This is how a token named as a special token becomes special. Without
    /// `added_tokens_decoder`, `special_tokens_map.json` overrides the attributes
    /// (transformers' legacy path).
    pub(super) fn load(
        path: &Path,
        tj: &Value,
        vocab: &Map<String, Value>,
        tc: Option<&Map<String, Value>>,
        stm: Option<&Value>,
    ) -> Result<HfVocab, TokenizerError> {
        let mut warnings = Vec::new();
        let mut model_ids: HashMap<&str, u64> = HashMap::with_capacity(vocab.len());
        let mut model_entries: Vec<(&str, u64)> = Vec::with_capacity(vocab.len());
        for (tok, idv) in vocab {
            let id = py_int(idv)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| {
                    invalid(path, format!("model.vocab[{tok:?}] = {idv} is not an id"))
                })?;
            model_ids.insert(tok, id);
            model_entries.push((tok, id));
        }
        let mut av = AddedVocab {
            model_ids: &model_ids,
            model_len: vocab.len() as u64,
            enc: HashMap::new(),
            dec: HashMap::new(),
        };

        // 1. tokenizers loads the added tokens in file order.
        let json_added: Vec<(Option<i128>, AddedTok)> = match tj.get("added_tokens") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|a| {
                    AddedTok::from_json(a)
                        .map(|t| (a.get("id").and_then(py_int), t))
                        .ok_or_else(|| invalid(path, format!("added token {a} has no content")))
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(invalid(
                    path,
                    format!("added_tokens is not a list: {other}"),
                ))
            }
        };
        for (stored, tok) in &json_added {
            let content = tok.content.clone();
            if let Some(id) = av.add(tok.clone()) {
                if *stored != Some(i128::from(id)) {
                    warnings.push(format!(
                        "{}: added token {content:?} is stored with id {} but loads as id {id}",
                        path.display(),
                        stored.map_or("none".into(), |s| s.to_string())
                    ));
                }
            }
        }

        // 2. transformers' `added_tokens_decoder` and special-token attributes.
        // `decoder` is transformers' `added_tokens_decoder` (by index, later entries replacing
        // earlier ones), `by_content` its `added_tokens_map` (by content, filled in the same
        // pass, so it keeps entries whose index was taken over).
        let tc_decoder = tc.and_then(|m| m.get("added_tokens_decoder"));
        let mut decoder: std::collections::BTreeMap<i128, AddedTok> = Default::default();
        let mut by_content: HashMap<String, AddedTok> = HashMap::new();
        let legacy = tc_decoder.is_none();
        match tc_decoder {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let idx = parse_py_int(k).ok_or_else(|| {
                        invalid(
                            path,
                            format!("added_tokens_decoder key {k:?} is not an integer"),
                        )
                    })?;
                    let tok = AddedTok::from_json(v).ok_or_else(|| {
                        invalid(path, format!("added_tokens_decoder[{k:?}] is not a token"))
                    })?;
                    by_content.insert(tok.content.clone(), tok.clone());
                    decoder.insert(idx, tok);
                }
            }
            Some(other) => {
                return Err(invalid(
                    path,
                    format!("added_tokens_decoder must be an object, found {other}"),
                ))
            }
            None => {
                for (stored, tok) in &json_added {
                    by_content.insert(tok.content.clone(), tok.clone());
                    decoder.insert(stored.unwrap_or(0), tok.clone());
                }
            }
        }

        let tc_get = |k: &str| tc.and_then(|m| m.get(k));
        let mut attrs: Vec<(String, SpecialAttr)> = Vec::new();
        let mut additional: Vec<SpecialAttr> = Vec::new();
        for key in SPECIAL_ATTRS {
            if let Some(v) = tc_get(key).and_then(|v| SpecialAttr::from_json(v, false)) {
                attrs.push((key.to_string(), v));
            }
        }
        if let Some(Value::Array(list)) = tc_get("additional_special_tokens") {
            additional.extend(list.iter().filter_map(|v| SpecialAttr::from_json(v, false)));
        }
        if legacy {
            if let Some(Value::Object(m)) = stm {
                for (key, v) in m {
                    if key == "additional_special_tokens" {
                        if let Value::Array(list) = v {
                            for t in list.iter().filter_map(|t| SpecialAttr::from_json(t, true)) {
                                if !additional.contains(&t) {
                                    additional.push(t);
                                }
                            }
                        }
                    } else if SPECIAL_ATTRS.contains(&key.as_str()) {
                        let value = SpecialAttr::from_json(v, true);
                        attrs.retain(|(k, _)| k != key);
                        if let Some(value) = value {
                            attrs.push((key.clone(), value));
                        }
                    }
                }
                attrs.sort_by_key(|(k, _)| SPECIAL_ATTRS.iter().position(|a| a == k));
            }
        }
        // Attribute values naming a known added token become that token.
        if !by_content.is_empty() {
            for (_, v) in &mut attrs {
                if let Some(t) = by_content.get(v.content()) {
                    *v = SpecialAttr::Tok(t.clone());
                }
            }
        }
        // The fast tokenizer's `setdefault` of `pad_token` from tokenizer.json's padding
        // settings, when `pad_token` was not given at all.
        let pad_given = if legacy {
            stm.and_then(|m| m.get("pad_token")).is_some()
                || tc.is_some_and(|m| m.contains_key("pad_token"))
        } else {
            tc.is_some_and(|m| m.contains_key("pad_token"))
        };
        if !pad_given {
            if let Some(v) = tj
                .get("padding")
                .and_then(|p| p.get("pad_token"))
                .and_then(|v| SpecialAttr::from_json(v, false))
            {
                attrs.push(("pad_token".into(), v));
                attrs.sort_by_key(|(k, _)| SPECIAL_ATTRS.iter().position(|a| a == k));
            }
        }
        let mut extended: Vec<SpecialAttr> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let extra = match tc_get("extra_special_tokens") {
            Some(Value::Object(m)) => m
                .values()
                .filter_map(|v| SpecialAttr::from_json(v, false))
                .collect(),
            _ => Vec::new(),
        };
        for v in attrs
            .into_iter()
            .map(|(_, v)| v)
            .chain(additional)
            .chain(extra)
        {
            if seen.insert(v.content().to_owned()) {
                extended.push(v);
            }
        }
        let special_strings: HashSet<&str> = extended.iter().map(SpecialAttr::content).collect();

        // 3. The fast tokenizer re-adds every token of its `added_tokens_decoder` (it means to
        // skip those the backend already has, but compares them with the backend's ids, so
        // none is skipped), then the special-token attributes it does not know yet.
        let mut to_add: Vec<SpecialAttr> =
            decoder.values().cloned().map(SpecialAttr::Tok).collect();
        let encoder: HashSet<String> = av
            .enc
            .keys()
            .cloned()
            .chain(to_add.iter().map(|t| t.content().to_owned()))
            .collect();
        for v in &extended {
            let fresh = match v {
                // An AddedToken never equals a string, so it is always re-added.
                SpecialAttr::Tok(_) => !to_add.contains(v),
                SpecialAttr::Str(s) => !encoder.contains(s) && !to_add.contains(v),
            };
            if fresh {
                to_add.push(v.clone());
            }
        }
        for v in to_add {
            let tok = match v {
                SpecialAttr::Tok(mut t) => {
                    t.special = t.special || special_strings.contains(t.content.as_str());
                    t
                }
                SpecialAttr::Str(s) => {
                    let special = special_strings.contains(s.as_str());
                    AddedTok::plain(&s, special)
                }
            };
            av.add(tok);
        }

        // 4. `get_vocab()` and the converters' reverse map.
        let mut content_to_id: HashMap<String, u64> = model_entries
            .iter()
            .map(|&(t, id)| (t.to_owned(), id))
            .collect();
        for (t, &id) in &av.enc {
            content_to_id.insert(t.clone(), id);
        }
        let mut reverse: HashMap<u64, String> = HashMap::with_capacity(content_to_id.len());
        for &(tok, id) in &model_entries {
            if content_to_id.get(tok) == Some(&id) {
                reverse.insert(id, tok.to_owned());
            }
        }
        // On an id shared by a model token and an added token (only in hand-edited files,
        // where Python's result depends on hash order) the added token wins.
        for (&id, t) in &av.dec {
            reverse.insert(id, t.content.clone());
        }
        let added_contents = av.dec.values().map(|t| t.content.clone()).collect();
        Ok(HfVocab {
            content_to_id,
            reverse,
            added: av.dec,
            added_contents,
            warnings,
        })
    }
}

/// A piece score as the reference writes it: the float goes through a Python float (a
/// double), which turns a signalling NaN into a quiet one.
pub(super) fn spm_score(score: f32) -> f32 {
    if score.is_nan() {
        f32::from_bits(score.to_bits() | 0x0040_0000)
    } else {
        score
    }
}

pub(super) fn spm_token_type(kind: PieceType) -> TokenType {
    match kind {
        PieceType::Unknown => TokenType::Unknown,
        PieceType::Control => TokenType::Control,
        PieceType::Unused => TokenType::Unused,
        PieceType::Byte => TokenType::Byte,
        PieceType::Normal | PieceType::UserDefined => TokenType::Normal,
    }
}

/// An id from `added_tokens.json` / `added_tokens_decoder` as an index: `None` (with a warning)
/// when it is not below the vocabulary size, an error when negative (Python would index from
/// the end).
pub(super) fn index_in(
    id: i128,
    vocab_size: usize,
    path: &Path,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<usize>, TokenizerError> {
    if id < 0 {
        return Err(invalid(
            path,
            format!("token id {id} of {what:?} is negative"),
        ));
    }
    match usize::try_from(id) {
        Ok(i) if i < vocab_size => Ok(Some(i)),
        _ => {
            warnings.push(format!(
                "{}: ignoring token {id} ({what:?}): not below vocab_size {vocab_size}",
                path.display()
            ));
            Ok(None)
        }
    }
}
