//! The two export paths: SentencePiece (`tokenizer.model`) and byte-level BPE (`tokenizer.json`).

use super::*;

/// What every path needs: the directory, the flavor, and `config.json`.
pub(super) struct Ctx<'a> {
    pub(super) dir: &'a Path,
    pub(super) flavor: Flavor,
    pub(super) config: Option<&'a Map<String, Value>>,
    pub(super) config_path: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn sentencepiece(&self) -> Result<TokenizerMeta, TokenizerError> {
        let spm_path = self.dir.join("tokenizer.model");
        let spm = ModelProto::load(&spm_path)?;
        let mut warnings = Vec::new();
        let (tokens, scores, types) = match self.flavor {
            Flavor::BitnetCpp => self.spm_vocab_bitnet(&spm)?,
            Flavor::Mainline => self.spm_vocab_llama(&spm, &mut warnings)?,
        };
        let sv = SpecialVocab::load(self, false, Some(tokens.len()))?;
        let (special, merges, sv_warnings) = sv.finish()?;
        warnings.extend(sv_warnings);
        Ok(TokenizerMeta {
            flavor: self.flavor,
            model: "llama".into(),
            pre: Some("default".into()),
            tokens,
            scores: Some(scores),
            token_types: types.into_iter().map(TokenType::as_i32).collect(),
            merges,
            special,
            warnings,
        })
    }

    /// `config.json`'s value for the first of `keys` present, if any.
    pub(super) fn config_value(&self, keys: &[&str]) -> Option<&Value> {
        let cfg = self.config?;
        keys.iter().find_map(|k| cfg.get(*k))
    }

    pub(super) fn vocab_size_from(&self, v: &Value) -> Result<usize, TokenizerError> {
        let n = py_int(v).ok_or_else(|| {
            invalid(
                self.config_path,
                format!("vocab_size must be an integer, found {v}"),
            )
        })?;
        if n < 0 {
            return Err(invalid(
                self.config_path,
                format!("vocab_size must not be negative, found {n}"),
            ));
        }
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_VOCAB)
            .ok_or_else(|| {
                invalid(
                    self.config_path,
                    format!("vocab_size {n} is larger than bitconv's limit of {MAX_VOCAB}"),
                )
            })
    }

    /// bitnet.cpp: pieces, then new `added_tokens.json` keys, then `[PAD1]…` to `vocab_size`.
    pub(super) fn spm_vocab_bitnet(&self, spm: &ModelProto) -> Result<SpmVocab, TokenizerError> {
        let vocab_size = match self.config_value(&["vocab_size"]) {
            None => spm.pieces.len(),
            Some(v) => self.vocab_size_from(v)?,
        };
        let mut tokens: Vec<String> = Vec::with_capacity(vocab_size.max(spm.pieces.len()));
        let mut scores = Vec::with_capacity(tokens.capacity());
        let mut types = Vec::with_capacity(tokens.capacity());
        for p in &spm.pieces {
            tokens.push(p.piece.clone());
            scores.push(spm_score(p.score));
            types.push(spm_token_type(p.kind));
        }
        let added_path = self.dir.join("added_tokens.json");
        if let Some(added) = read_json_opt(&added_path)? {
            // The converter iterates the JSON object's keys (an array's elements would do too);
            // the ids in the file are not used.
            let names: Vec<String> = match &added {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => a
                    .iter()
                    .map(|k| {
                        k.as_str().map(str::to_owned).ok_or_else(|| {
                            invalid(&added_path, format!("added token {k} is not a string"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                _ => return Err(invalid(&added_path, "not a JSON object")),
            };
            let mut present: HashSet<String> = tokens.iter().cloned().collect();
            for name in names {
                if present.insert(name.clone()) {
                    tokens.push(name);
                    scores.push(-1000.0);
                    types.push(TokenType::UserDefined);
                }
            }
        }
        if vocab_size > tokens.len() {
            let pad = vocab_size - tokens.len();
            for i in 1..=pad {
                tokens.push(format!("[PAD{i}]"));
                scores.push(-1000.0);
                types.push(TokenType::Unused);
            }
        }
        if tokens.len() != vocab_size {
            return Err(invalid(
                self.config_path,
                format!(
                    "vocab_size {vocab_size} is smaller than the {} tokens of tokenizer.model \
                     and added_tokens.json",
                    tokens.len()
                ),
            ));
        }
        Ok((tokens, scores, types))
    }

    /// llama.cpp: `[PAD{id}]` everywhere, then pieces, `added_tokens.json`, and
    /// `added_tokens_decoder` overwrite their ids.
    pub(super) fn spm_vocab_llama(
        &self,
        spm: &ModelProto,
        warnings: &mut Vec<String>,
    ) -> Result<SpmVocab, TokenizerError> {
        let n_pieces = spm.pieces.len();
        // `find_hparam([...]) or sp.vocab_size()`: a missing, null or zero value means "the
        // piece count".
        let vocab_size = match self.config_value(&["vocab_size_per_layer_input", "vocab_size"]) {
            Some(v) if truthy(v) => self.vocab_size_from(v)?,
            _ => n_pieces,
        };
        let mut tokens: Vec<String> = (0..vocab_size).map(|i| format!("[PAD{i}]")).collect();
        let mut scores = vec![-10000.0f32; vocab_size];
        let mut types = vec![TokenType::Unused; vocab_size];
        for (id, p) in spm.pieces.iter().enumerate() {
            if id >= vocab_size {
                warnings.push(format!(
                    "ignoring tokenizer.model pieces from id {id}: beyond vocab_size {vocab_size}"
                ));
                break;
            }
            tokens[id] = p.piece.clone();
            scores[id] = spm_score(p.score);
            types[id] = spm_token_type(p.kind);
        }

        let added_path = self.dir.join("added_tokens.json");
        if let Some(added) = read_json_opt(&added_path)? {
            let Value::Object(map) = added else {
                return Err(invalid(&added_path, "not a JSON object"));
            };
            for (text, idv) in &map {
                let id = py_int(idv).ok_or_else(|| {
                    invalid(
                        &added_path,
                        format!("id of {text:?} must be an integer, found {idv}"),
                    )
                })?;
                let Some(id) = index_in(id, vocab_size, &added_path, text, warnings)? else {
                    continue;
                };
                tokens[id] = text.clone();
                scores[id] = -1000.0;
                types[id] = TokenType::UserDefined;
            }
        }

        let tc_path = self.dir.join("tokenizer_config.json");
        if let Some(tc) = read_json_opt(&tc_path)? {
            let Value::Object(tc) = tc else {
                return Err(invalid(&tc_path, "not a JSON object"));
            };
            let decoder = match tc.get("added_tokens_decoder") {
                None => None,
                Some(Value::Object(m)) => Some(m),
                Some(other) => {
                    return Err(invalid(
                        &tc_path,
                        format!("added_tokens_decoder must be an object, found {other}"),
                    ))
                }
            };
            for (key, data) in decoder.into_iter().flatten() {
                let id = parse_py_int(key).ok_or_else(|| {
                    invalid(
                        &tc_path,
                        format!("added_tokens_decoder key {key:?} is not an integer"),
                    )
                })?;
                let content = data.get("content").ok_or_else(|| {
                    invalid(
                        &tc_path,
                        format!("added_tokens_decoder[{key:?}] has no \"content\""),
                    )
                })?;
                let Some(id) = index_in(id, vocab_size, &tc_path, key, warnings)? else {
                    continue;
                };
                let Value::String(content) = content else {
                    return Err(invalid(
                        &tc_path,
                        format!("added_tokens_decoder[{key:?}].content is not a string"),
                    ));
                };
                if types[id] != TokenType::Unused && tokens[id] != *content {
                    warnings.push(format!(
                        "replacing token {id}: {:?} -> {content:?}",
                        tokens[id]
                    ));
                }
                let special = data.get("special").is_some_and(truthy);
                if special || looks_special(content) {
                    types[id] = TokenType::Control;
                    tokens[id] = content.clone();
                } else {
                    types[id] = TokenType::UserDefined;
                    tokens[id] = content.replace('\u{2581}', " ");
                }
                scores[id] = -1000.0;
            }
        }
        Ok((tokens, scores, types))
    }

    pub(super) fn bpe(&self, pre: Option<&str>) -> Result<TokenizerMeta, TokenizerError> {
        let path = self.dir.join("tokenizer.json");
        let tj = read_json_opt(&path)?.unwrap_or(Value::Null);
        let Some(model) = tj.get("model").and_then(Value::as_object) else {
            return Err(invalid(&path, "no \"model\" object"));
        };
        let model_type = model.get("type").and_then(Value::as_str).unwrap_or("");
        if model_type != "BPE" {
            return Err(TokenizerError::Unsupported {
                path,
                what: format!(
                    "a {model_type:?} tokenizer without tokenizer.model (only byte-level BPE \
                     tokenizer.json files are converted)"
                ),
            });
        }
        let decoder_type = tj
            .get("decoder")
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str);
        if model.get("byte_fallback").is_some_and(truthy) && decoder_type == Some("Sequence") {
            return Err(TokenizerError::Unsupported {
                path,
                what: "a Llama-style byte-fallback BPE tokenizer.json without tokenizer.model"
                    .into(),
            });
        }
        let recognised = pretok::recognise(tj.get("pre_tokenizer").unwrap_or(&Value::Null));
        let mut pre_warning = None;
        let pre = match (pre, recognised) {
            (None, Ok(found)) => {
                check_pre_name(self.flavor, found.name())?;
                found.name().to_owned()
            }
            (None, Err(why)) => {
                return Err(TokenizerError::PreTokenizerUnknown {
                    path,
                    why: why.to_string(),
                })
            }
            (Some(name), found) => {
                check_pre_name(self.flavor, name)?;
                if let (Ok(found), Some(given)) = (found, pretok::by_name(name)) {
                    if !found.same_behaviour(given) {
                        pre_warning = Some(format!(
                            "--tokenizer-pre {name}: {} defines the {} pre-tokenizer, which \
                             splits text differently; the runtime will not tokenize as the \
                             model was trained",
                            path.display(),
                            found.name()
                        ));
                    }
                }
                name.to_owned()
            }
        };

        let Some(vocab) = model.get("vocab").and_then(Value::as_object) else {
            return Err(invalid(&path, "model.vocab is not an object"));
        };
        let tc_path = self.dir.join("tokenizer_config.json");
        let tc = match read_json_opt(&tc_path)? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(invalid(&tc_path, "not a JSON object")),
        };
        let stm = read_json_opt(&self.dir.join("special_tokens_map.json"))?;
        let hf = HfVocab::load(&path, &tj, vocab, tc.as_ref(), stm.as_ref())?;
        let mut warnings = hf.warnings;
        warnings.extend(pre_warning);
        let content_to_id = hf.content_to_id;
        let reverse = hf.reverse;

        let vocab_size = match self.config_value(&["vocab_size"]) {
            Some(v) => self.vocab_size_from(v)?,
            None => content_to_id.len().min(MAX_VOCAB + 1),
        };
        if vocab_size > MAX_VOCAB {
            return Err(invalid(
                &path,
                format!("more than bitconv's limit of {MAX_VOCAB} tokens"),
            ));
        }
        let Some(&max_id) = content_to_id.values().max() else {
            return Err(invalid(&path, "the vocabulary is empty"));
        };
        if max_id >= vocab_size as u64 {
            return Err(invalid(
                &path,
                format!("token id {max_id} is not below vocab_size {vocab_size}"),
            ));
        }

        let mut tokens = Vec::with_capacity(vocab_size);
        let mut types = Vec::with_capacity(vocab_size);
        for i in 0..vocab_size as u64 {
            match reverse.get(&i) {
                None => {
                    tokens.push(format!("[PAD{i}]"));
                    types.push(match self.flavor {
                        Flavor::BitnetCpp => TokenType::UserDefined,
                        Flavor::Mainline => TokenType::Unused,
                    });
                }
                Some(tok) if hf.added_contents.contains(tok.as_str()) => {
                    let tok = tok.as_str();
                    let special = hf.added.get(&i).is_some_and(|t| t.special);
                    match self.flavor {
                        Flavor::BitnetCpp => {
                            tokens.push(tok.to_owned());
                            types.push(if special {
                                TokenType::Control
                            } else {
                                TokenType::UserDefined
                            });
                        }
                        Flavor::Mainline => {
                            if special || looks_special(tok) {
                                tokens.push(tok.to_owned());
                                types.push(TokenType::Control);
                            } else {
                                tokens.push(tok.replace('\u{2581}', " "));
                                types.push(TokenType::UserDefined);
                            }
                        }
                    }
                }
                Some(tok) => {
                    tokens.push(tok.clone());
                    types.push(TokenType::Normal);
                }
            }
        }

        let sv = SpecialVocab::load(self, true, None)?;
        let (special, merges, sv_warnings) = sv.finish()?;
        warnings.extend(sv_warnings);
        if let Some(m) = &merges {
            check_merges(m, &tokens, &self.dir.join("tokenizer.json"))?;
        }
        Ok(TokenizerMeta {
            flavor: self.flavor,
            model: "gpt2".into(),
            pre: Some(pre),
            tokens,
            scores: None,
            token_types: types.into_iter().map(TokenType::as_i32).collect(),
            merges,
            special,
            warnings,
        })
    }
}

pub(super) type SpmVocab = (Vec<String>, Vec<f32>, Vec<TokenType>);
