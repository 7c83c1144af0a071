//! gguf-py's special vocabulary: special ids, `add_*` flags, chat templates and merges, in written order.

use super::*;

/// An insertion-ordered map (Python dict semantics: re-assigning keeps the position).
#[derive(Default)]
pub(super) struct Ordered<T>(Vec<(String, T)>);

impl<T: Clone + PartialEq> Ordered<T> {
    pub(super) fn get(&self, k: &str) -> Option<&T> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }

    pub(super) fn set(&mut self, k: &str, v: T) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_owned(), v)),
        }
    }

    pub(super) fn set_default(&mut self, k: &str, v: T) {
        if self.get(k).is_none() {
            self.0.push((k.to_owned(), v));
        }
    }
}

pub(super) struct SpecialVocab<'a> {
    pub(super) ctx: &'a Ctx<'a>,
    pub(super) n_vocab: Option<usize>,
    pub(super) load_merges: bool,
    pub(super) types: Vec<String>,
    pub(super) ids: Ordered<u64>,
    pub(super) add: Ordered<bool>,
    pub(super) merges: Vec<String>,
    pub(super) chat_template: Option<Value>,
    pub(super) lowercase: Option<bool>,
    pub(super) strip_accents: Option<bool>,
    pub(super) warnings: Vec<String>,
}

impl<'a> SpecialVocab<'a> {
    pub(super) fn load(
        ctx: &'a Ctx<'a>,
        load_merges: bool,
        n_vocab: Option<usize>,
    ) -> Result<SpecialVocab<'a>, TokenizerError> {
        let mut sv = SpecialVocab {
            ctx,
            n_vocab,
            load_merges,
            types: SPECIAL_TYPES.iter().map(|s| s.to_string()).collect(),
            ids: Ordered::default(),
            add: Ordered::default(),
            merges: Vec::new(),
            chat_template: None,
            lowercase: None,
            strip_accents: None,
            warnings: Vec::new(),
        };
        sv.load_tokenizer_files()?;
        sv.load_config()?;
        if sv.load_merges && sv.merges.is_empty() {
            sv.load_merges_txt()?;
        }
        Ok(sv)
    }

    pub(super) fn flavor(&self) -> Flavor {
        self.ctx.flavor
    }

    pub(super) fn set_special_token(
        &mut self,
        typ: &str,
        tid: &Value,
        path: &Path,
    ) -> Result<(), TokenizerError> {
        let Some(id) = py_int(tid) else {
            return Ok(());
        };
        if id < 0 {
            return Err(invalid(
                path,
                format!("invalid value for special token type {typ}: {id}"),
            ));
        }
        let in_range = match self.n_vocab {
            None => true,
            Some(n) => id < n as i128,
        };
        if in_range {
            if self.ids.get(typ).is_none() {
                let id = u64::try_from(id).map_err(|_| {
                    invalid(
                        path,
                        format!("special token id {id} for {typ} is too large"),
                    )
                })?;
                self.ids.set(typ, id);
            }
        } else {
            self.warnings.push(format!(
                "special token type {typ}, id {id} out of range, must be under {} - skipping",
                self.n_vocab.unwrap_or(0)
            ));
        }
        Ok(())
    }

    pub(super) fn load_tokenizer_files(&mut self) -> Result<(), TokenizerError> {
        let dir = self.ctx.dir;
        let tj_path = dir.join("tokenizer.json");
        let tokenizer = read_json_opt(&tj_path)?;
        let mut added_tokens: Vec<Value> = Vec::new();
        if let Some(tok) = &tokenizer {
            if self.load_merges {
                let merges = tok.get("model").and_then(|m| m.get("merges"));
                if let Some(Value::Array(list)) = merges {
                    if !list.is_empty() {
                        self.merges = convert_merges(list, &tj_path, &mut self.warnings)?;
                    }
                }
            }
            if self.flavor() == Flavor::Mainline {
                if let Some(n) = tok.get("normalizer").filter(|n| truthy(n)) {
                    self.parse_normalizer(n);
                }
            }
            if let Some(Value::Array(list)) = tok.get("added_tokens") {
                added_tokens = list.clone();
            }
        }

        let tc_path = dir.join("tokenizer_config.json");
        let mut tc: Option<Map<String, Value>> = match read_json_opt(&tc_path)? {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(invalid(&tc_path, "not a JSON object")),
        };

        if self.flavor() == Flavor::Mainline {
            if let Some(tok) = tokenizer.as_ref().filter(|t| truthy(t)) {
                self.parse_post_processor(tok, &mut tc);
            }
        }
        let Some(tc) = tc else {
            return Ok(());
        };
        if self.flavor() == Flavor::Mainline && tc.is_empty() {
            return Ok(());
        }

        // Chat template.
        let chat_template = match self.flavor() {
            Flavor::BitnetCpp => tc.get("chat_template").cloned().unwrap_or(Value::Null),
            Flavor::Mainline => match tc.get("chat_template") {
                Some(v) => v.clone(),
                None => self.chat_template_files()?.unwrap_or(Value::Null),
            },
        };
        match chat_template {
            Value::Null => self.chat_template = None,
            v @ (Value::String(_) | Value::Array(_)) => self.chat_template = Some(v),
            _ => self.warnings.push(format!(
                "bad type for chat_template field in {} - ignoring",
                tc_path.display()
            )),
        }

        // add_<type>_token flags and <type>_token ids.
        let types = self.types.clone();
        for typ in &types {
            if let Some(Value::Bool(b)) = tc.get(&format!("add_{typ}_token")) {
                match self.flavor() {
                    Flavor::BitnetCpp => self.add.set(typ, *b),
                    Flavor::Mainline => match self.add.get(typ) {
                        None => self.add.set(typ, *b),
                        Some(prev) if prev != b => self.warnings.push(format!(
                            "mismatch between tokenizer_config add_{typ}_token({b}) and tokenizer \
                             post_processor<{typ}>({prev}) - opting for the latter"
                        )),
                        Some(_) => {}
                    },
                }
            }
            let content = match tc.get(&format!("{typ}_token")) {
                Some(Value::String(s)) => s,
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => s,
                    _ => continue,
                },
                _ => continue,
            };
            let found = added_tokens
                .iter()
                .find(|a| a.get("content").and_then(Value::as_str) == Some(content.as_str()))
                .map(|a| a.get("id").cloned().unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            self.set_special_token(typ, &found, &tc_path)?;
        }
        Ok(())
    }

    /// llama.cpp: `chat_template.jinja` (with `additional_chat_templates/*.jinja`), else
    /// `chat_template.json`'s `chat_template`.
    pub(super) fn chat_template_files(&self) -> Result<Option<Value>, TokenizerError> {
        let dir = self.ctx.dir;
        let jinja = dir.join("chat_template.jinja");
        let json = dir.join("chat_template.json");
        if jinja.is_file() {
            let main = read_text(&jinja)?;
            let extra_dir = dir.join("additional_chat_templates");
            let mut extra: Vec<(String, PathBuf)> = Vec::new();
            if let Ok(rd) = std::fs::read_dir(&extra_dir) {
                for entry in rd.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".jinja") && entry.path().is_file() {
                        let stem = match name.strip_suffix(".jinja") {
                            Some("") | None => name.clone(),
                            Some(s) => s.to_owned(),
                        };
                        extra.push((stem, entry.path()));
                    }
                }
            }
            if extra.is_empty() {
                return Ok(Some(Value::String(main)));
            }
            // Python lists the directory in file-system order; bitconv sorts by name.
            extra.sort();
            let mut list = vec![template_choice("default", main)];
            for (stem, path) in extra {
                list.push(template_choice(&stem, read_text(&path)?));
            }
            return Ok(Some(Value::Array(list)));
        }
        if json.is_file() {
            return match read_json_opt(&json)? {
                Some(Value::Object(m)) => Ok(m.get("chat_template").cloned()),
                _ => Err(invalid(&json, "not a JSON object")),
            };
        }
        Ok(None)
    }

    /// llama.cpp: the `Lowercase` / `StripAccents` / `BertNormalizer` flags, recursively
    /// through `Sequence`.
    pub(super) fn parse_normalizer(&mut self, n: &Value) {
        match n.get("type").and_then(Value::as_str) {
            Some("Lowercase") => self.lowercase = Some(true),
            Some("StripAccents") => self.strip_accents = Some(true),
            Some("BertNormalizer") => {
                if let Some(v) = n.get("lowercase") {
                    self.lowercase = (!v.is_null()).then(|| truthy(v));
                }
                if let Some(v) = n.get("strip_accents") {
                    self.strip_accents = (!v.is_null()).then(|| truthy(v));
                }
            }
            Some("Sequence") => {
                if let Some(Value::Array(list)) = n.get("normalizers") {
                    for inner in list {
                        self.parse_normalizer(inner);
                    }
                }
            }
            _ => {}
        }
    }

    /// llama.cpp's reading of `tokenizer.json`'s post-processor into `add_bos` / `add_eos` /
    /// `add_sep` (and, when tokens are implied, into `tokenizer_config` entries).
    pub(super) fn parse_post_processor(
        &mut self,
        tok: &Value,
        tc: &mut Option<Map<String, Value>>,
    ) {
        let get = |tc: &Option<Map<String, Value>>, k: &str| {
            tc.as_ref()
                .and_then(|m| m.get(k))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let tc_truthy =
            |tc: &Option<Map<String, Value>>| tc.as_ref().is_some_and(|m| !m.is_empty());
        let put = |tc: &mut Option<Map<String, Value>>, k: &str, v: &Value| {
            if let Some(m) = tc.as_mut() {
                m.insert(k.to_owned(), v.clone());
            }
        };
        let mut special_bos = get(tc, "bos_token");
        let mut special_cls = get(tc, "cls_token");
        let mut special_eos = get(tc, "eos_token");
        let mut special_sep = get(tc, "sep_token");
        if !truthy(&special_bos) && truthy(&special_cls) && tc_truthy(tc) {
            special_bos = special_cls.clone();
            put(tc, "bos_token", &special_bos);
        }
        if !truthy(&special_eos) && truthy(&special_sep) && tc_truthy(tc) {
            special_eos = special_sep.clone();
            put(tc, "eos_token", &special_eos);
        }
        let Some(pp) = tok.get("post_processor").filter(|p| truthy(p)) else {
            return;
        };
        let Some(pp_obj) = pp.as_object() else {
            return;
        };
        let processors: Vec<&Value> = match pp_obj.get("processors") {
            None => vec![pp],
            Some(Value::Array(list)) => list.iter().collect(),
            Some(_) => Vec::new(),
        };
        for processor in processors {
            match processor.get("type").and_then(Value::as_str) {
                Some("ByteLevel") => {
                    self.add.set_default("bos", false);
                    self.add.set_default("eos", false);
                }
                Some("RobertaProcessing") => {
                    self.add.set("bos", true);
                    self.add.set("eos", true);
                    self.add.set("sep", true);
                    if !truthy(&special_cls) && tc_truthy(tc) {
                        special_cls = first_of(processor.get("cls"), &special_bos);
                        put(tc, "cls_token", &special_cls);
                    }
                    if !truthy(&special_sep) && tc_truthy(tc) {
                        special_sep = first_of(processor.get("sep"), &special_eos);
                        put(tc, "sep_token", &special_sep);
                    }
                }
                Some("TemplateProcessing") => {
                    let single = array_or_empty(processor.get("single"));
                    let pair = array_or_empty(processor.get("pair"));
                    let mut special_first = Value::Null;
                    let mut special_last = Value::Null;
                    if single.len() > 1 {
                        special_first = special_token_id(&single[0]);
                        if truthy(&special_first) {
                            if !tc_truthy(tc) {
                                special_bos = special_first.clone();
                            } else if special_first != special_bos && special_first != special_cls {
                                if !truthy(&special_bos) {
                                    special_bos = special_first.clone();
                                    put(tc, "bos_token", &special_bos);
                                }
                                if !truthy(&special_cls) {
                                    special_cls = special_first.clone();
                                    put(tc, "cls_token", &special_cls);
                                }
                            }
                            let is_bos =
                                special_first == special_bos || special_first == special_cls;
                            if !is_bos {
                                self.warnings.push(format!(
                                    "unknown leading special token {special_first} in \
                                     TemplateProcessing<single>"
                                ));
                            }
                            self.add.set("bos", is_bos);
                        }
                        special_last = special_token_id(&single[single.len() - 1]);
                        if truthy(&special_last) {
                            if !tc_truthy(tc) {
                                special_eos = special_last.clone();
                            } else if special_last != special_eos {
                                if !self.types.iter().any(|t| t == "eot") {
                                    self.types.push("eot".into());
                                    put(tc, "eot_token", &special_eos);
                                } else if !self.types.iter().any(|t| t == "eom") {
                                    self.types.push("eom".into());
                                    put(tc, "eom_token", &special_eos);
                                } else {
                                    self.warnings.push(format!(
                                        "overriding EOS token {special_eos} with {special_last} \
                                         without EOT/EOM fallback"
                                    ));
                                }
                                special_eos = special_last.clone();
                                put(tc, "eos_token", &special_eos);
                            }
                            self.add.set("eos", special_last == special_eos);
                        }
                    }
                    if !pair.is_empty() {
                        let start = usize::from(
                            truthy(&special_first) && special_token_id(&pair[0]) == special_first,
                        );
                        let drop_last = truthy(&special_last)
                            && special_token_id(&pair[pair.len() - 1]) == special_last;
                        let end = pair.len() - usize::from(drop_last);
                        let body: &[Value] = if start < end { &pair[start..end] } else { &[] };
                        if !body.is_empty() {
                            let a = sequence_id(&body[0]);
                            let b = sequence_id(&body[body.len() - 1]);
                            if a.as_deref() == Some("A")
                                && b.as_deref() == Some("B")
                                && body.len() > 2
                            {
                                let mid = &body[1..body.len() - 1];
                                let mut add_sep = false;
                                let e = special_token_id(&mid[0]);
                                if truthy(&e)
                                    && (e == special_sep || e == special_eos)
                                    && !truthy(&special_last)
                                {
                                    add_sep = true;
                                }
                                if mid.len() == 2 {
                                    let e2 = special_token_id(&mid[1]);
                                    if truthy(&e2) && (e2 == special_sep || e2 == special_eos) {
                                        add_sep = true;
                                    }
                                }
                                self.add.set("sep", add_sep);
                                if add_sep && !truthy(&special_sep) && tc_truthy(tc) {
                                    put(tc, "sep_token", &special_eos);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    pub(super) fn load_config(&mut self) -> Result<(), TokenizerError> {
        let Some(cfg) = self.ctx.config else {
            return Ok(());
        };
        let path = self.ctx.config_path;
        let types = self.types.clone();
        for typ in &types {
            let key = format!("{typ}_token_id");
            let mut v = cfg.get(&key).cloned().unwrap_or(Value::Null);
            if self.flavor() == Flavor::Mainline && v.is_null() {
                if let Some(tc) = cfg.get("text_config") {
                    v = tc.get(&key).cloned().unwrap_or(Value::Null);
                }
            }
            self.set_special_token(typ, &v, path)?;
        }
        Ok(())
    }

    pub(super) fn load_merges_txt(&mut self) -> Result<(), TokenizerError> {
        let path = self.ctx.dir.join("merges.txt");
        if !path.is_file() {
            return Ok(());
        }
        let text = read_text(&path)?;
        let mut lines = text.split('\n').peekable();
        let mut line_num = 0usize;
        if lines.peek().is_some_and(|l| py_strip(l).starts_with('#')) {
            lines.next();
            line_num = 1;
        }
        let mut merges = Vec::new();
        for line in lines {
            line_num += 1;
            let line = py_strip(line);
            if line.is_empty() {
                continue;
            }
            let parts: Vec<&str> = line.split(py_isspace).filter(|p| !p.is_empty()).collect();
            if parts.len() != 2 {
                self.warnings.push(format!(
                    "merges.txt: line {line_num}: entry malformed, ignoring"
                ));
                continue;
            }
            merges.push(format!("{} {}", parts[0], parts[1]));
        }
        self.merges = merges;
        Ok(())
    }

    /// gguf-py's `add_to_gguf`: the special entries in written order, the merges, and the
    /// warnings.
    pub(super) fn finish(mut self) -> Result<Finished, TokenizerError> {
        let flavor = self.flavor();
        let mut kv = KvList {
            flavor,
            path: self.ctx.dir.join("tokenizer_config.json"),
            entries: Vec::new(),
        };
        for (typ, id) in std::mem::take(&mut self.ids.0) {
            let Some(key) = id_key(flavor, &typ) else {
                self.warnings.push(format!(
                    "no handler for special token type {typ} with id {id} - skipping"
                ));
                continue;
            };
            let id = u32::try_from(id).map_err(|_| {
                invalid(
                    self.ctx.dir,
                    format!("special token id {id} for {typ} does not fit in 32 bits"),
                )
            })?;
            kv.push(key, GValue::U32(id))?;
        }
        for (typ, value) in std::mem::take(&mut self.add.0) {
            let Some(key) = add_key(flavor, &typ) else {
                self.warnings.push(format!(
                    "no handler for add_{typ}_token with value {value} - skipping"
                ));
                continue;
            };
            kv.push(key, GValue::Bool(value))?;
        }
        if let Some(ct) = self.chat_template.take() {
            add_chat_template(&mut kv, ct)?;
        }
        if flavor == Flavor::Mainline {
            if let Some(b) = self.lowercase {
                kv.push("tokenizer.ggml.normalizer.lowercase", GValue::Bool(b))?;
            }
            if let Some(b) = self.strip_accents {
                kv.push("tokenizer.ggml.normalizer.strip_accents", GValue::Bool(b))?;
            }
        }
        let merges = (!self.merges.is_empty()).then_some(self.merges);
        Ok((kv.entries, merges, self.warnings))
    }
}

/// The special entries, the merges, and the warnings.
pub(super) type Finished = (Vec<(String, GValue)>, Option<Vec<String>>, Vec<String>);

/// Key/value pairs with gguf-py's duplicate-key rule: the fork raises, mainline overwrites the
/// value in place. `path` (the file the chat templates come from) is named in errors.
pub(super) struct KvList {
    pub(super) flavor: Flavor,
    pub(super) path: PathBuf,
    pub(super) entries: Vec<(String, GValue)>,
}

impl KvList {
    pub(super) fn push(&mut self, key: &str, value: GValue) -> Result<(), TokenizerError> {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            None => self.entries.push((key.to_owned(), value)),
            Some(slot) => match self.flavor {
                Flavor::Mainline => slot.1 = value,
                Flavor::BitnetCpp => {
                    return Err(invalid(&self.path, format!("duplicated key name {key:?}")))
                }
            },
        }
        Ok(())
    }

    /// gguf-py's `add_string`: empty strings are not written.
    pub(super) fn push_str(&mut self, key: &str, value: &Value) -> Result<(), TokenizerError> {
        match value {
            Value::String(s) if s.is_empty() => Ok(()),
            Value::String(s) => self.push(key, GValue::String(s.clone())),
            v if !truthy(v) => Ok(()),
            v => Err(invalid(
                &self.path,
                format!("chat template {v} is not a string"),
            )),
        }
    }
}

/// gguf-py's `add_chat_template`: a string, or a list of `{name, template}` choices written as
/// `tokenizer.chat_template.<name>` keys, a `tokenizer.chat_templates` name list, and the
/// `default` choice as `tokenizer.chat_template`.
pub(super) fn add_chat_template(kv: &mut KvList, ct: Value) -> Result<(), TokenizerError> {
    let choices = match ct {
        Value::Array(choices) => choices,
        other => return kv.push_str(KEY_CHAT_TEMPLATE, &other),
    };
    let mut default: Option<Value> = None;
    // Python collects the names in a set (arbitrary order); bitconv keeps first-seen order.
    let mut names: Vec<String> = Vec::new();
    for choice in &choices {
        let Some(obj) = choice.as_object() else {
            return Err(invalid(
                &kv.path,
                format!("chat template entry {choice} is not an object"),
            ));
        };
        let name = match obj.get("name") {
            None => "",
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                return Err(invalid(
                    &kv.path,
                    format!("chat template name {other} is not a string"),
                ))
            }
        };
        let template = obj.get("template").cloned().unwrap_or(Value::Null);
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if name.is_empty() || template.is_null() {
            continue;
        }
        if name == "default" {
            default = Some(template);
        } else {
            if !names.contains(&name) {
                names.push(name.clone());
            }
            kv.push_str(&format!("{KEY_CHAT_TEMPLATE}.{name}"), &template)?;
        }
    }
    if !names.is_empty() {
        kv.push(KEY_CHAT_TEMPLATES, GValue::str_array(names))?;
    }
    match default {
        Some(t) => kv.push_str(KEY_CHAT_TEMPLATE, &t),
        None => Ok(()),
    }
}

/// `model.merges` of `tokenizer.json` as GGUF merge strings.
/// Every merge must join two tokens of the vocabulary (the `tokenizers` library refuses a file
/// whose merges do not); an error names the file, the merge and the missing token.
pub(super) fn check_merges(
    merges: &[String],
    tokens: &[String],
    path: &Path,
) -> Result<(), TokenizerError> {
    let vocab: std::collections::HashSet<&str> = tokens.iter().map(String::as_str).collect();
    for (i, m) in merges.iter().enumerate() {
        let Some((a, b)) = m.split_once(' ') else {
            return Err(invalid(
                path,
                format!("merge {i} ({m:?}) is not two tokens"),
            ));
        };
        for part in [a, b] {
            // A space inside a part was written as U+0120 (see `convert_merges`).
            if !vocab.contains(part) && !vocab.contains(part.replace('\u{0120}', " ").as_str()) {
                return Err(invalid(
                    path,
                    format!("merge {i} ({m:?}) names {part:?}, which is not in the vocabulary"),
                ));
            }
        }
    }
    Ok(())
}

pub(super) fn convert_merges(
    list: &[Value],
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, TokenizerError> {
    let bad = || invalid(path, "unknown tokenizer merges format");
    match &list[0] {
        Value::String(_) => list
            .iter()
            .map(|m| m.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        Value::Array(first) if first.len() == 2 && first[0].is_string() => {
            let mut spaces = false;
            let mut out = Vec::with_capacity(list.len());
            for pair in list {
                let parts = pair.as_array().ok_or_else(bad)?;
                let mut merged = String::new();
                for (i, part) in parts.iter().enumerate() {
                    let s = part.as_str().ok_or_else(bad)?;
                    if i > 0 {
                        merged.push(' ');
                    }
                    for c in s.chars() {
                        if c == ' ' {
                            spaces = true;
                            merged.push('\u{0120}');
                        } else {
                            merged.push(c);
                        }
                    }
                }
                out.push(merged);
            }
            if spaces {
                warnings.push("spaces in merges detected, encoding as 'Ġ' (U+0120)".into());
            }
            Ok(out)
        }
        _ => Err(bad()),
    }
}

pub(super) fn template_choice(name: &str, template: String) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(name.into()));
    m.insert("template".into(), Value::String(template));
    Value::Object(m)
}

pub(super) fn special_token_id(v: &Value) -> Value {
    v.get("SpecialToken")
        .and_then(|s| s.get("id"))
        .cloned()
        .unwrap_or(Value::Null)
}

pub(super) fn sequence_id(v: &Value) -> Option<String> {
    v.get("Sequence")
        .and_then(|s| s.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

pub(super) fn array_or_empty(v: Option<&Value>) -> Vec<Value> {
    match v {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    }
}

/// Python's `processor.get(key, [default])[0]`.
pub(super) fn first_of(v: Option<&Value>, default: &Value) -> Value {
    match v {
        None => default.clone(),
        Some(Value::Array(a)) => a.first().cloned().unwrap_or(Value::Null),
        Some(Value::String(s)) => s
            .chars()
            .next()
            .map(|c| Value::String(c.to_string()))
            .unwrap_or(Value::Null),
        Some(_) => Value::Null,
    }
}
