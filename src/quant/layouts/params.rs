//! Kernel parameters of the TL1/TL2 layouts (`BM`, `BK`, `bm`) and bitnet.cpp's
//! `kernel_config.ini` format.
//!
//! bitnet.cpp's converter looks up the tiling of every ternary matrix by its
//! exact shape `(m, k)` (m = output rows `M`, k = input columns `K`) in
//! `include/kernel_config.ini`, which `setup_env.py` regenerates with the
//! code generators on every run. The values it passes to the generators are
//! hard-coded per model (FORMATS §1.4); they are stored here as data files in
//! `layouts/<table>.<tl1|tl2>.ini` and are what [`pretuned`] returns. The
//! committed `preset_kernels/*/kernel_config_*.ini` files of the repository
//! disagree with them in places and are *not* what the reference uses (the
//! code generator overwrites them); they are kept separately as
//! `layouts/preset-<model>.<tl1|tl2>.ini` and returned by [`preset`] for
//! reference only. One of them (`bitnet_b1_58-large` TL2, `bmm = 64`) is not
//! even valid for TL2.

use std::fmt;

use super::{LayoutError, Result};

/// Tiling parameters of a TL1/TL2 matrix, named as in `kernel_config.ini`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TlParams {
    /// `BM` (ini key `bm`): rows per outer tile. Must divide `M`.
    pub bm: usize,
    /// `BK` = `BY` (ini key `bk`): columns per outer tile.
    pub bk: usize,
    /// `bm` (ini key `bmm`): rows per inner tile; TL1: 32 or 64, TL2: 32.
    pub bmm: usize,
}

impl fmt::Display for TlParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BM={} BK={} bm={}", self.bm, self.bk, self.bmm)
    }
}

/// The two LUT layouts that take kernel parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlLayout {
    /// TL1 (ARM).
    Tl1,
    /// TL2 (x86).
    Tl2,
}

impl TlLayout {
    /// `"TL1"` or `"TL2"`.
    pub const fn name(self) -> &'static str {
        match self {
            TlLayout::Tl1 => "TL1",
            TlLayout::Tl2 => "TL2",
        }
    }

    /// Lower-case file suffix, `"tl1"` or `"tl2"`.
    pub const fn suffix(self) -> &'static str {
        match self {
            TlLayout::Tl1 => "tl1",
            TlLayout::Tl2 => "tl2",
        }
    }
}

impl fmt::Display for TlLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `[Kernels_i]` section: a shape and its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelEntry {
    /// Output rows `M` (ini key `m`).
    pub m: usize,
    /// Input columns `K` (ini key `k`).
    pub k: usize,
    /// Tiling (ini keys `bm`, `bk`, `bmm`).
    pub params: TlParams,
}

// ---------------------------------------------------------------------------
// kernel_config.ini parsing and emission
// ---------------------------------------------------------------------------

const KEYS: [&str; 5] = ["m", "k", "bm", "bk", "bmm"];

#[derive(Default)]
struct Section {
    name: String,
    header_line: usize,
    values: [Option<(usize, usize)>; 5], // (value, line)
}

fn config_err(line: usize, message: impl Into<String>) -> LayoutError {
    LayoutError::Config {
        line,
        message: message.into(),
    }
}

/// Parses a `kernel_config.ini` text into entries, in section order.
///
/// Follows Python `ConfigParser` (as bitnet.cpp reads the file) where it
/// matters: sections `[name]` (any name, `[Kernels_i]` by convention;
/// duplicates are an error), `key = value` or `key: value` lines with option
/// names case-insensitive and whitespace around keys and values ignored,
/// full-line comments starting with `#` or `;`, blank lines, and a `[DEFAULT]`
/// section whose options apply to every section that lacks them. Every
/// section needs integer `m`, `k`, `bm`, `bk`, `bmm`; other options are
/// ignored (the converter ignores them too). Not supported (error): options
/// before the first section, duplicate options, multi-line values, inline
/// comments. A leading byte-order mark and `\r\n` line ends are accepted.
/// Errors carry the 1-based line number.
///
/// The parameters are not validated against a layout here; use
/// [`super::tl1::validate`] / [`super::tl2::validate`].
pub fn parse_kernel_config_ini(text: &str) -> Result<Vec<KernelEntry>> {
    let mut sections: Vec<Section> = Vec::new();
    let mut default = Section {
        name: "DEFAULT".into(),
        ..Section::default()
    };
    let mut in_default = false;
    let mut have_section = false;

    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.starts_with('[') {
            let Some(close) = trimmed.rfind(']') else {
                return Err(config_err(
                    line_no,
                    format!("unterminated section header {trimmed:?}"),
                ));
            };
            if close != trimmed.len() - 1 {
                return Err(config_err(
                    line_no,
                    format!("unexpected text after section header {trimmed:?}"),
                ));
            }
            let name = &trimmed[1..close];
            if name.is_empty() {
                return Err(config_err(line_no, "empty section name"));
            }
            have_section = true;
            if name == "DEFAULT" {
                in_default = true;
                continue;
            }
            in_default = false;
            if let Some(prev) = sections.iter().find(|s| s.name == name) {
                return Err(config_err(
                    line_no,
                    format!(
                        "duplicate section [{name}] (first defined on line {})",
                        prev.header_line
                    ),
                ));
            }
            sections.push(Section {
                name: name.to_string(),
                header_line: line_no,
                values: [None; 5],
            });
            continue;
        }
        if raw.starts_with(|c: char| c.is_whitespace()) {
            return Err(config_err(
                line_no,
                format!("indented line {trimmed:?} (multi-line values are not supported)"),
            ));
        }
        if !have_section {
            return Err(config_err(
                line_no,
                format!("option line {trimmed:?} before the first [section] header"),
            ));
        }
        let Some(pos) = trimmed.find(['=', ':']) else {
            return Err(config_err(
                line_no,
                format!("expected `key = value`, got {trimmed:?}"),
            ));
        };
        let key = trimmed[..pos].trim().to_ascii_lowercase();
        let value = trimmed[pos + 1..].trim();
        if key.is_empty() {
            return Err(config_err(
                line_no,
                format!("empty option name in {trimmed:?}"),
            ));
        }
        let section = if in_default {
            &mut default
        } else {
            sections.last_mut().expect("have_section and not default")
        };
        let Some(slot) = KEYS.iter().position(|&k| k == key) else {
            continue; // unknown option: ignored, as the converter does
        };
        if let Some((_, first)) = section.values[slot] {
            return Err(config_err(
                line_no,
                format!(
                    "duplicate option {key:?} in section [{}] (first set on line {first})",
                    section.name
                ),
            ));
        }
        let parsed: usize = value.parse().map_err(|_| {
            config_err(
                line_no,
                format!(
                    "option {key:?} in section [{}] must be a non-negative integer, got {value:?}",
                    section.name
                ),
            )
        })?;
        section.values[slot] = Some((parsed, line_no));
    }

    let mut out = Vec::with_capacity(sections.len());
    for s in &sections {
        let mut v = [0usize; 5];
        for (j, key) in KEYS.iter().enumerate() {
            match s.values[j].or(default.values[j]) {
                Some((x, _)) => v[j] = x,
                None => {
                    return Err(config_err(
                        s.header_line,
                        format!("section [{}] has no option {key:?}", s.name),
                    ))
                }
            }
        }
        out.push(KernelEntry {
            m: v[0],
            k: v[1],
            params: TlParams {
                bm: v[2],
                bk: v[3],
                bmm: v[4],
            },
        });
    }
    Ok(out)
}

/// Writes entries as bitnet.cpp's code generators do (Python
/// `ConfigParser.write`): for entry `i`, `[Kernels_i]`, then `m = …`, `k = …`,
/// `bm = …`, `bk = …`, `bmm = …`, one per line, and a blank line after each
/// section (so non-empty output ends with `"\n\n"`). No entries give `""`.
pub fn emit_kernel_config_ini(entries: &[KernelEntry]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(entries.len() * 64);
    for (i, e) in entries.iter().enumerate() {
        let _ = write!(
            s,
            "[Kernels_{i}]\nm = {}\nk = {}\nbm = {}\nbk = {}\nbmm = {}\n\n",
            e.m, e.k, e.params.bm, e.params.bk, e.params.bmm
        );
    }
    s
}

/// The first entry for exactly `(m, k)`, as the converter's lookup loop picks
/// it.
pub fn find_entry(entries: &[KernelEntry], m: usize, k: usize) -> Option<TlParams> {
    entries
        .iter()
        .find(|e| e.m == m && e.k == k)
        .map(|e| e.params)
}

// ---------------------------------------------------------------------------
// Built-in tables
// ---------------------------------------------------------------------------

/// Shape tables of bitnet.cpp's code generators (`--model` keys).
pub const CODEGEN_TABLES: [&str; 3] = [
    "bitnet_b1_58-large",
    "bitnet_b1_58-3B",
    "Llama3-8B-1.58-100B-tokens",
];

/// The `kernel_config.ini` that `setup_env.py` generates for a codegen table,
/// as embedded text.
pub fn codegen_ini(table: &str, layout: TlLayout) -> Option<&'static str> {
    Some(match (table, layout) {
        ("bitnet_b1_58-large", TlLayout::Tl1) => {
            include_str!("../../../layouts/bitnet_b1_58-large.tl1.ini")
        }
        ("bitnet_b1_58-large", TlLayout::Tl2) => {
            include_str!("../../../layouts/bitnet_b1_58-large.tl2.ini")
        }
        ("bitnet_b1_58-3B", TlLayout::Tl1) => {
            include_str!("../../../layouts/bitnet_b1_58-3B.tl1.ini")
        }
        ("bitnet_b1_58-3B", TlLayout::Tl2) => {
            include_str!("../../../layouts/bitnet_b1_58-3B.tl2.ini")
        }
        ("Llama3-8B-1.58-100B-tokens", TlLayout::Tl1) => {
            include_str!("../../../layouts/Llama3-8B-1.58-100B-tokens.tl1.ini")
        }
        ("Llama3-8B-1.58-100B-tokens", TlLayout::Tl2) => {
            include_str!("../../../layouts/Llama3-8B-1.58-100B-tokens.tl2.ini")
        }
        _ => return None,
    })
}

/// The committed `preset_kernels/<model>/kernel_config_<layout>.ini` of
/// bitnet.cpp, as embedded text. For reference only: `setup_env.py`
/// overwrites it with the codegen values ([`codegen_ini`]) before converting.
pub fn preset_ini(model: &str, layout: TlLayout) -> Option<&'static str> {
    Some(match (model, layout) {
        ("bitnet_b1_58-large", TlLayout::Tl1) => {
            include_str!("../../../layouts/preset-bitnet_b1_58-large.tl1.ini")
        }
        ("bitnet_b1_58-large", TlLayout::Tl2) => {
            include_str!("../../../layouts/preset-bitnet_b1_58-large.tl2.ini")
        }
        ("bitnet_b1_58-3B", TlLayout::Tl1) => {
            include_str!("../../../layouts/preset-bitnet_b1_58-3B.tl1.ini")
        }
        ("bitnet_b1_58-3B", TlLayout::Tl2) => {
            include_str!("../../../layouts/preset-bitnet_b1_58-3B.tl2.ini")
        }
        ("Llama3-8B-1.58-100B-tokens", TlLayout::Tl1) => {
            include_str!("../../../layouts/preset-Llama3-8B-1.58-100B-tokens.tl1.ini")
        }
        ("Llama3-8B-1.58-100B-tokens", TlLayout::Tl2) => {
            include_str!("../../../layouts/preset-Llama3-8B-1.58-100B-tokens.tl2.ini")
        }
        _ => return None,
    })
}

/// Models of `setup_env.py`'s `SUPPORTED_HF_MODELS` whose name starts with
/// `Llama` or `Falcon`; setup_env generates the Llama3-8B kernels for all of
/// them.
const LLAMA_FALCON_MODELS: [&str; 12] = [
    "Llama3-8B-1.58-100B-tokens",
    "Falcon3-7B-Instruct-1.58bit",
    "Falcon3-7B-1.58bit",
    "Falcon3-10B-Instruct-1.58bit",
    "Falcon3-10B-1.58bit",
    "Falcon3-3B-Instruct-1.58bit",
    "Falcon3-3B-1.58bit",
    "Falcon3-1B-Instruct-1.58bit",
    "Falcon-E-3B-Instruct",
    "Falcon-E-1B-Instruct",
    "Falcon-E-3B-Base",
    "Falcon-E-1B-Base",
];

/// The codegen table `setup_env.py` uses for a local model name (the
/// `model_name` of its table, or the model directory's base name): the
/// model's own table for `bitnet_b1_58-large` / `bitnet_b1_58-3B`, the 3B
/// table for `BitNet-b1.58-2B-4T`, the Llama3-8B table for the Llama/Falcon
/// models it lists, `None` (setup_env raises `NotImplementedError`) otherwise.
///
/// The 2B-4T and Falcon mappings generate kernels for another model's
/// shapes, so their real shapes are absent from the table — exactly the
/// reference's behaviour (its TL conversion of those models fails).
pub fn codegen_table_for(model_name: &str) -> Option<&'static str> {
    match model_name {
        "bitnet_b1_58-large" => Some("bitnet_b1_58-large"),
        "bitnet_b1_58-3B" | "BitNet-b1.58-2B-4T" => Some("bitnet_b1_58-3B"),
        n if LLAMA_FALCON_MODELS.contains(&n) => Some("Llama3-8B-1.58-100B-tokens"),
        _ => None,
    }
}

/// bitconv's own tables for the real shapes of the families bitnet.cpp's code
/// generators have no table for (issue 8): `layouts/family-<table>.tl{1,2}.ini`.
pub const FAMILY_TABLES: [&str; 4] = [
    "BitNet-b1.58-2B-4T",
    "Falcon3-1B",
    "Falcon3-3B",
    "Falcon3-7B-10B",
];

/// The embedded text of a family table ([`FAMILY_TABLES`]).
///
/// Shapes (`M × K` of q, k/v, gate/up, down): 2B-4T hidden 2560, FFN 6912,
/// 20 heads / 5 KV heads of 128; Falcon3-1B 2048 / 8192, 8 / 4 heads of 256;
/// Falcon3-3B 3072 / 9216, 12 / 4 heads of 256; Falcon3-7B and -10B 3072 /
/// 23040, 12 / 4 heads of 256. Parameters follow the codegen tables'
/// conventions (TL1 `BK = 128, bm = 32`; TL2 `BK = 96, bm = 32`; `BM` 256,
/// else 128); every entry is tested against the layout constraints and, for
/// TL2, the kernels' work-buffer bound. The Llama3-8B shapes are in the
/// codegen table `Llama3-8B-1.58-100B-tokens`.
pub fn family_ini(table: &str, layout: TlLayout) -> Option<&'static str> {
    Some(match (table, layout) {
        ("BitNet-b1.58-2B-4T", TlLayout::Tl1) => {
            include_str!("../../../layouts/family-BitNet-b1.58-2B-4T.tl1.ini")
        }
        ("BitNet-b1.58-2B-4T", TlLayout::Tl2) => {
            include_str!("../../../layouts/family-BitNet-b1.58-2B-4T.tl2.ini")
        }
        ("Falcon3-1B", TlLayout::Tl1) => {
            include_str!("../../../layouts/family-Falcon3-1B.tl1.ini")
        }
        ("Falcon3-1B", TlLayout::Tl2) => {
            include_str!("../../../layouts/family-Falcon3-1B.tl2.ini")
        }
        ("Falcon3-3B", TlLayout::Tl1) => {
            include_str!("../../../layouts/family-Falcon3-3B.tl1.ini")
        }
        ("Falcon3-3B", TlLayout::Tl2) => {
            include_str!("../../../layouts/family-Falcon3-3B.tl2.ini")
        }
        ("Falcon3-7B-10B", TlLayout::Tl1) => {
            include_str!("../../../layouts/family-Falcon3-7B-10B.tl1.ini")
        }
        ("Falcon3-7B-10B", TlLayout::Tl2) => {
            include_str!("../../../layouts/family-Falcon3-7B-10B.tl2.ini")
        }
        _ => return None,
    })
}

/// The family table for a model name: the 2B-4T repos (`BitNet-b1.58-2B-4T`,
/// `bitnet-b1.58-2B-4T-bf16`, any case) and the Falcon3 1.58-bit models by size.
pub fn family_table_for(model_name: &str) -> Option<&'static str> {
    let n = model_name.to_ascii_lowercase();
    if n.starts_with("bitnet-b1.58-2b-4t") {
        return Some("BitNet-b1.58-2B-4T");
    }
    if let Some(rest) = n.strip_prefix("falcon3-") {
        return Some(match rest.split('-').next()? {
            "1b" => "Falcon3-1B",
            "3b" => "Falcon3-3B",
            "7b" | "10b" => "Falcon3-7B-10B",
            _ => return None,
        });
    }
    None
}

/// bitconv's family-table value for `(m, k)` of a model ([`family_table_for`]).
pub fn family(model_name: &str, layout: TlLayout, m: usize, k: usize) -> Option<TlParams> {
    let text = family_ini(family_table_for(model_name)?, layout)?;
    find_entry(&embedded_entries(text), m, k)
}

/// Parsed entries of an embedded table (the embedded files are tested to
/// parse).
fn embedded_entries(text: &'static str) -> Vec<KernelEntry> {
    parse_kernel_config_ini(text).expect("embedded kernel config parses")
}

/// The parameters bitnet.cpp's `setup_env.py` flow would use for a matrix of
/// shape `m × k` of model `model_name` (see [`codegen_table_for`]), or `None`
/// when the reference has none (it would raise `NotImplementedError`).
pub fn pretuned(model_name: &str, layout: TlLayout, m: usize, k: usize) -> Option<TlParams> {
    let table = codegen_table_for(model_name)?;
    let text = codegen_ini(table, layout)?;
    find_entry(&embedded_entries(text), m, k)
}

/// The committed preset value for `(m, k)` of a model that has a
/// `preset_kernels` directory. Not what the reference converter uses; may be
/// invalid for the layout (large/TL2 `4096×1536` has `bmm = 64`).
pub fn preset(model_name: &str, layout: TlLayout, m: usize, k: usize) -> Option<TlParams> {
    let text = preset_ini(model_name, layout)?;
    find_entry(&embedded_entries(text), m, k)
}

/// The metadata key of bitconv's own namespace that records, in a TL1/TL2 file, the kernel
/// parameters every TL tensor was packed with (the text of a `kernel_config.ini`, one section
/// per shape). bitnet.cpp ignores keys it does not know; bitconv's runtime reads it, so a TL file
/// can be run and validated without side files or flags.
pub const GGUF_KEY: &str = "bitconv.tl.kernel_config";

/// Every built-in table (`(name, embedded ini)`) for a layout, the one whose name matches
/// `model_name` (bitnet.cpp's codegen mapping or bitconv's family mapping) first, then the
/// codegen tables, then the family tables, in a fixed order.
fn tables_for(model_name: &str, layout: TlLayout) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    let named = [
        codegen_table_for(model_name).and_then(|t| Some((t, codegen_ini(t, layout)?))),
        family_table_for(model_name).and_then(|t| Some((t, family_ini(t, layout)?))),
    ];
    let all = CODEGEN_TABLES
        .iter()
        .filter_map(|&t| Some((t, codegen_ini(t, layout)?)))
        .chain(
            FAMILY_TABLES
                .iter()
                .filter_map(|&t| Some((t, family_ini(t, layout)?))),
        );
    for t in named.into_iter().flatten().chain(all) {
        if !out.iter().any(|(n, _)| *n == t.0) {
            out.push(t);
        }
    }
    out
}

/// The built-in table entry for shape `(m, k)`, matched by shape: the table named by
/// `model_name` wins when it has the shape (the name only breaks ties); otherwise the first
/// table that has it. Returns the parameters and the table's name.
pub fn table_by_shape(
    model_name: &str,
    layout: TlLayout,
    m: usize,
    k: usize,
) -> Option<(TlParams, &'static str)> {
    tables_for(model_name, layout)
        .into_iter()
        .find_map(|(name, text)| Some((find_entry(&embedded_entries(text), m, k)?, name)))
}

/// Checks parameters against a layout's constraints for shape `(m, k)`.
pub fn check_for(layout: TlLayout, m: usize, k: usize, p: &TlParams) -> Result<()> {
    match layout {
        TlLayout::Tl1 => super::tl1::validate(m, k, p),
        TlLayout::Tl2 => super::tl2::validate(m, k, p),
    }
}

/// The parameters a TL1/TL2 matrix of shape `(m, k)` is packed with, and where they came from
/// (for the plan): explicit entries (`--kernel-config`) first, then the built-in tables matched
/// by shape ([`table_by_shape`]), then parameters derived for the shape. Every choice is checked
/// against the layout. The one rule for every writer (convert, dummy).
pub fn choose(
    explicit: Option<&[KernelEntry]>,
    model_name: &str,
    layout: TlLayout,
    m: usize,
    k: usize,
) -> std::result::Result<(TlParams, String), String> {
    let check = |p: TlParams| check_for(layout, m, k, &p).map_err(|e| e.to_string());
    if let Some(p) = explicit.and_then(|e| find_entry(e, m, k)) {
        check(p)?;
        return Ok((p, "from --kernel-config".into()));
    }
    if let Some((p, table)) = table_by_shape(model_name, layout, m, k) {
        check(p)?;
        return Ok((p, format!("built-in table {table}")));
    }
    let derived = match layout {
        TlLayout::Tl1 => derive_tl1(m, k),
        TlLayout::Tl2 => derive_tl2(m, k),
    };
    match derived {
        Ok(p) => Ok((p, "derived".into())),
        Err(e) => Err(format!(
            "{e}; no {layout} parameters fit this shape (give them with --kernel-config FILE, or use i2_s)"
        )),
    }
}

// ---------------------------------------------------------------------------
// Derivation for arbitrary shapes
// ---------------------------------------------------------------------------

/// Outer row tiles tried first (the values of the pretuned tables).
const PREFERRED_BM: [usize; 4] = [256, 128, 160, 320];

/// Picks `BM`: a preferred value if it divides `m` and is a multiple of `bmm`,
/// else the largest multiple of `bmm` dividing `m` that is at most 512
/// (`bmm` itself when nothing larger fits).
fn pick_bm(m: usize, bmm: usize) -> Option<usize> {
    if m == 0 || bmm == 0 || m % bmm != 0 {
        return None;
    }
    if let Some(&bm) = PREFERRED_BM
        .iter()
        .find(|&&bm| bm % bmm == 0 && m % bm == 0)
    {
        return Some(bm);
    }
    let mut t = m.min(512.max(bmm)) / bmm * bmm;
    while t > bmm && m % t != 0 {
        t -= bmm;
    }
    Some(t)
}

/// Derives valid TL1 parameters for any shape TL1 can hold.
///
/// Candidates `(BK, bm)` are tried in the order the tables use them —
/// `(128, 32)`, `(64, 64)`, `(64, 32)`, `(128, 64)` — then other `BK` that are
/// multiples of `by = 256 / bm` dividing `K` (largest ≤ 256 first); `BM` is
/// chosen as in the tables (256, 128, 160, 320 when they divide `M`),
/// otherwise the largest multiple of `bm` dividing `M` up to 512. Errors when
/// `M % 32 != 0` or `K` has no admissible `BK` (`K % 4 != 0`).
pub fn derive_tl1(m: usize, k: usize) -> Result<TlParams> {
    let no = |reason: String| LayoutError::NoParams {
        layout: "TL1",
        m,
        k,
        reason,
    };
    if m == 0 || k == 0 {
        return Err(no("M and K must be positive".into()));
    }
    if m % 32 != 0 {
        return Err(no("M must be a multiple of 32 (bm is 32 or 64)".into()));
    }
    let mut candidates: Vec<(usize, usize)> = vec![(128, 32), (64, 64), (64, 32), (128, 64)];
    for bmm in [32usize, 64] {
        let by = 256 / bmm;
        let mut bk = 256usize.min(k) / by * by;
        while bk >= by {
            candidates.push((bk, bmm));
            bk -= by;
        }
    }
    for (bk, bmm) in candidates {
        if k % bk != 0 || m % bmm != 0 {
            continue;
        }
        if let Some(bm) = pick_bm(m, bmm) {
            let p = TlParams { bm, bk, bmm };
            if super::tl1::validate(m, k, &p).is_ok() {
                return Ok(p);
            }
        }
    }
    Err(no(
        "K needs a divisor BK that is a multiple of 8 (bm = 32) or 4 (bm = 64)".into(),
    ))
}

/// Derives valid TL2 parameters for any shape TL2 can hold, honouring the
/// kernel's work-buffer bound ([`super::tl2::check_work_buffer`]).
///
/// `bm` is 32; `BK` is tried as 96, 192, then every other multiple of 24 up
/// to `K` in increasing order, keeping the first with `(K % BK) % 32 == 0`,
/// `K % BK <= K / 16` and a valid layout; `BM` is 256, 128, 160 or 320 when
/// one divides `M`, otherwise the largest multiple of 32 dividing `M` up to
/// 512. Errors when `M % 32 != 0`, `K < 256`, or no `BK` satisfies the
/// constraints (for example `K = 256`, where only a `BK` dividing 256 would
/// do and none is a multiple of 24).
pub fn derive_tl2(m: usize, k: usize) -> Result<TlParams> {
    let no = |reason: String| LayoutError::NoParams {
        layout: "TL2",
        m,
        k,
        reason,
    };
    if m == 0 || k == 0 {
        return Err(no("M and K must be positive".into()));
    }
    if m % 32 != 0 {
        return Err(no("M must be a multiple of 32 (bm is 32)".into()));
    }
    if k < 256 {
        return Err(no("K must be at least 256 (size formula)".into()));
    }
    let bm = pick_bm(m, 32).expect("m % 32 == 0");
    let candidates = [96usize, 192]
        .into_iter()
        .chain((24..=k).step_by(24).filter(|&b| b != 96 && b != 192));
    for bk in candidates {
        if bk > k {
            continue;
        }
        let p = TlParams { bm, bk, bmm: 32 };
        if super::tl2::validate(m, k, &p).is_ok() && super::tl2::check_work_buffer(m, k, &p).is_ok()
        {
            return Ok(p);
        }
    }
    Err(no(
        "no BK (multiple of 24) gives K % BK a multiple of 32 that is at most K/16".into(),
    ))
}

#[cfg(test)]
mod tests;
