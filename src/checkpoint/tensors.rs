//! safetensors over memory maps: a single `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, with the index checked against the shards' own headers.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors};

use super::CheckpointError;

/// The storage dtypes bitconv reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum StDtype {
    /// float32
    F32,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// uint8 (packed ternary weights)
    U8,
    /// int8
    I8,
}

impl StDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StDtype::F32 => 4,
            StDtype::F16 | StDtype::BF16 => 2,
            StDtype::U8 | StDtype::I8 => 1,
        }
    }

    /// True for the floating-point dtypes.
    pub fn is_float(self) -> bool {
        matches!(self, StDtype::F32 | StDtype::F16 | StDtype::BF16)
    }
}

impl fmt::Display for StDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StDtype::F32 => "F32",
            StDtype::F16 => "F16",
            StDtype::BF16 => "BF16",
            StDtype::U8 => "U8",
            StDtype::I8 => "I8",
        })
    }
}

/// One tensor of a checkpoint: where its bytes are.
#[derive(Clone, Debug)]
pub struct TensorEntry {
    /// Hugging Face tensor name.
    pub name: String,
    /// Storage dtype.
    pub dtype: StDtype,
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    /// Index into [`SafetensorSet::shards`].
    pub shard: usize,
    /// Absolute byte range within the shard file.
    pub range: std::ops::Range<usize>,
}

impl TensorEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// One mapped shard file.
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    map: memmap2::Mmap,
}

impl Shard {
    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Tells the kernel that bytes `range` will not be read again soon, so their pages leave
    /// this process's resident set (they stay in the page cache). Keeps the resident memory of a
    /// conversion independent of the model's size. A no-op where unsupported.
    pub fn release(&self, range: std::ops::Range<usize>) {
        crate::util::release_pages(&self.map, range);
    }
}

/// All tensors of a checkpoint directory, in the order the reference converter visits them:
/// shards in file-name order, names sorted within each shard.
pub struct SafetensorSet {
    /// The mapped shard files.
    pub shards: Vec<Shard>,
    /// Every tensor, in visiting order.
    pub tensors: Vec<TensorEntry>,
    by_name: HashMap<String, usize>,
}

/// The index file's name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single-file checkpoint's name.
pub const SINGLE_FILE: &str = "model.safetensors";

impl SafetensorSet {
    /// Opens the safetensors files of a checkpoint directory: the index and its shards if an
    /// index exists, else `model.safetensors`, else every `*.safetensors` file in name order.
    pub fn open_dir(dir: &Path) -> Result<SafetensorSet, CheckpointError> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(&index);
        }
        let single = dir.join(SINGLE_FILE);
        if single.is_file() {
            return Self::open_files(&[single]);
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| CheckpointError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(CheckpointError::Missing {
                path: dir.to_path_buf(),
                what: "no model.safetensors, model.safetensors.index.json or *.safetensors file"
                    .into(),
            });
        }
        Self::open_files(&files)
    }

    /// Opens a sharded checkpoint through its index, checking that every shard exists, that
    /// each tensor the index names is in the shard it names, and that the shards hold no
    /// tensor the index does not list.
    pub fn open_index(index: &Path) -> Result<SafetensorSet, CheckpointError> {
        let text = std::fs::read_to_string(index).map_err(|e| CheckpointError::io(index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
                path: index.to_path_buf(),
                what: format!("not valid JSON: {e}"),
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| CheckpointError::Invalid {
                path: index.to_path_buf(),
                what: "no \"weight_map\" object".into(),
            })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| CheckpointError::Invalid {
                path: index.to_path_buf(),
                what: format!("weight_map[{name:?}] is not a string"),
            })?;
            check_relative(index, file)?;
            wanted.insert(name.clone(), file.to_string());
        }
        let mut files: Vec<String> = wanted.values().cloned().collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        for (f, p) in files.iter().zip(&paths) {
            if !p.is_file() {
                return Err(CheckpointError::Missing {
                    path: p.clone(),
                    what: format!("shard {f:?} named by {INDEX_FILE}"),
                });
            }
        }
        let set = Self::open_files(&paths)?;
        for (name, file) in &wanted {
            match set.get(name) {
                None => {
                    return Err(CheckpointError::Invalid {
                        path: index.to_path_buf(),
                        what: format!("tensor {name:?} is listed for shard {file:?} but that shard does not contain it"),
                    })
                }
                Some(t) => {
                    let actual = &set.shards[t.shard].path;
                    if actual != &dir.join(file) {
                        return Err(CheckpointError::Invalid {
                            path: index.to_path_buf(),
                            what: format!(
                                "tensor {name:?} is listed for shard {file:?} but found in {}",
                                actual.display()
                            ),
                        });
                    }
                }
            }
        }
        if let Some(extra) = set.tensors.iter().find(|t| !wanted.contains_key(&t.name)) {
            return Err(CheckpointError::Invalid {
                path: index.to_path_buf(),
                what: format!(
                    "shard {} holds tensor {:?} which the index does not list",
                    set.shards[extra.shard].path.display(),
                    extra.name
                ),
            });
        }
        Ok(set)
    }

    /// Opens the given safetensors files as one checkpoint.
    pub fn open_files(paths: &[PathBuf]) -> Result<SafetensorSet, CheckpointError> {
        let mut shards = Vec::with_capacity(paths.len());
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for (si, path) in paths.iter().enumerate() {
            let file = File::open(path).map_err(|e| CheckpointError::io(path, e))?;
            // SAFETY: read-only map of an input file that bitconv never modifies; the user must
            // not truncate it while bitconv runs (the usual memory-map contract).
            let map =
                unsafe { memmap2::Mmap::map(&file) }.map_err(|e| CheckpointError::io(path, e))?;
            let entries = parse_header(path, &map, si)?;
            for e in entries {
                if let Some(&prev) = by_name.get(&e.name) {
                    let p: &TensorEntry = &tensors[prev];
                    return Err(CheckpointError::Invalid {
                        path: path.clone(),
                        what: format!(
                            "tensor {:?} also occurs in {}",
                            e.name,
                            paths[p.shard].display()
                        ),
                    });
                }
                by_name.insert(e.name.clone(), tensors.len());
                tensors.push(e);
            }
            shards.push(Shard {
                path: path.clone(),
                map,
            });
        }
        Ok(SafetensorSet {
            shards,
            tensors,
            by_name,
        })
    }

    /// A tensor by its Hugging Face name.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's bytes.
    pub fn data(&self, t: &TensorEntry) -> &[u8] {
        &self.shards[t.shard].bytes()[t.range.clone()]
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.range.len() as u64).sum()
    }
}

/// Parses one safetensors header (validated by the safetensors crate: offsets must tile the
/// data section exactly) into entries sorted by name.
pub fn parse_header(
    path: &Path,
    bytes: &[u8],
    shard: usize,
) -> Result<Vec<TensorEntry>, CheckpointError> {
    let (n, meta) = SafeTensors::read_metadata(bytes).map_err(|e| CheckpointError::Invalid {
        path: path.to_path_buf(),
        what: format!("bad safetensors header: {e}"),
    })?;
    let base = 8 + n;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            Dtype::F32 => StDtype::F32,
            Dtype::F16 => StDtype::F16,
            Dtype::BF16 => StDtype::BF16,
            Dtype::U8 => StDtype::U8,
            Dtype::I8 => StDtype::I8,
            other => {
                return Err(CheckpointError::Invalid {
                    path: path.to_path_buf(),
                    what: format!(
                    "tensor {name:?} has dtype {other:?}; bitconv reads F32, F16, BF16, U8 and I8"
                ),
                })
            }
        };
        let (s, e) = info.data_offsets;
        out.push(TensorEntry {
            name,
            dtype,
            shape: info.shape.clone(),
            shard,
            range: base + s..base + e,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn check_relative(index: &Path, file: &str) -> Result<(), CheckpointError> {
    let p = Path::new(file);
    let ok = !file.is_empty()
        && !file.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(CheckpointError::Invalid {
            path: index.to_path_buf(),
            what: format!("shard name {file:?} is not a plain relative path"),
        })
    }
}
