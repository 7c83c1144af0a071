//! The cache, laid out exactly like Python's `huggingface_hub`:
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>              content
//! <cache>/models--org--name/blobs/<etag>.incomplete   download in progress (resumable)
//! <cache>/models--org--name/snapshots/<commit>/<path> relative symlink to ../../blobs/<etag>
//! <cache>/models--org--name/refs/<revision>           the commit hash of a branch or tag
//! <cache>/.locks/models--org--name/<etag>.lock        flock()ed while a blob is written
//! ```
//!
//! Locks are `flock` locks on the same files Python's `filelock` uses, so bitconv and Python
//! processes exclude each other; a waiting process finds the blob complete once it gets the
//! lock. Refs and snapshot links are replaced atomically (temporary name, then rename).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::HubError;
use super::names::{is_commit_hash, relative_path_problem, repo_folder_name};

/// A unique suffix for temporary files (process id and a counter).
fn temp_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Paths and operations for one model repository in the cache.
#[derive(Clone, Debug)]
pub struct RepoCache {
    root: PathBuf,
    folder_name: String,
    folder: PathBuf,
}

/// A file found in a snapshot.
#[derive(Clone, Debug)]
pub struct CachedFile {
    /// Size of the blob.
    pub size: u64,
    /// The blob's name (the ETag) when the snapshot entry is a symlink into `blobs/`.
    pub etag: Option<String>,
    /// The resolved blob (or regular file) path.
    pub blob: PathBuf,
}

/// An exclusive lock on one blob; released when dropped.
#[derive(Debug)]
pub struct BlobLock {
    _file: File,
}

impl RepoCache {
    /// The cache of `repo` (already validated) under `cache_dir`.
    pub fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        let folder_name = repo_folder_name(repo);
        RepoCache {
            root: cache_dir.to_path_buf(),
            folder: cache_dir.join(&folder_name),
            folder_name,
        }
    }

    /// `<cache>/models--org--name`.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// `blobs/<etag>`.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.folder.join("blobs").join(etag)
    }

    /// `blobs/<etag>.incomplete`.
    pub fn incomplete_path(&self, etag: &str) -> PathBuf {
        self.folder.join("blobs").join(format!("{etag}.incomplete"))
    }

    /// `<cache>/.locks/models--org--name/<etag>.lock`.
    pub fn lock_path(&self, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(&self.folder_name)
            .join(format!("{etag}.lock"))
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.folder.join("snapshots").join(commit)
    }

    /// `snapshots/<commit>/<file>` (file already validated).
    pub fn pointer_path(&self, commit: &str, file: &str) -> PathBuf {
        let mut p = self.snapshot_dir(commit);
        for comp in file.split('/') {
            p.push(comp);
        }
        p
    }

    /// `refs/<revision>` (revision already validated).
    pub fn ref_path(&self, revision: &str) -> PathBuf {
        let mut p = self.folder.join("refs");
        for comp in revision.split('/') {
            p.push(comp);
        }
        p
    }

    /// The commit a cached ref points to, or the revision itself when it is a commit hash.
    /// `Ok(None)` when there is no such ref; an error when the ref file is not a commit hash.
    pub fn resolve_revision(&self, revision: &str) -> Result<Option<String>, HubError> {
        if is_commit_hash(revision) {
            return Ok(Some(revision.to_owned()));
        }
        let path = self.ref_path(revision);
        match fs::read_to_string(&path) {
            Ok(s) => {
                let commit = s.trim();
                if is_commit_hash(commit) {
                    Ok(Some(commit.to_owned()))
                } else {
                    Err(HubError::io(
                        path,
                        io::Error::new(io::ErrorKind::InvalidData, "ref is not a commit hash"),
                    ))
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HubError::io(path, e)),
        }
    }

    /// Writes `refs/<revision>` = commit, atomically, unless it already says so. Nothing is
    /// written when the revision is the commit itself (as in Python).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        if revision == commit {
            return Ok(());
        }
        let path = self.ref_path(revision);
        if fs::read_to_string(&path).is_ok_and(|s| s.trim() == commit) {
            return Ok(());
        }
        let dir = path.parent().expect("ref path has a parent");
        fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        let tmp = dir.join(format!(".ref.{}", temp_suffix()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(commit.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            HubError::io(&path, e)
        })
    }

    /// The file `file` of snapshot `commit`, if present and its blob exists.
    pub fn cached_file(&self, commit: &str, file: &str) -> Option<CachedFile> {
        let pointer = self.pointer_path(commit, file);
        let meta = fs::metadata(&pointer).ok()?;
        if !meta.is_file() {
            return None;
        }
        let etag = fs::read_link(&pointer).ok().and_then(|target| {
            let in_blobs = target.parent().and_then(Path::file_name) == Some("blobs".as_ref());
            let name = target.file_name()?.to_str()?.to_owned();
            in_blobs.then_some(name)
        });
        let blob = match &etag {
            Some(e) => self.blob_path(e),
            None => pointer,
        };
        Some(CachedFile {
            size: meta.len(),
            etag,
            blob,
        })
    }

    /// Whether `snapshots/<commit>/<file>` exists as an entry (even dangling).
    pub fn pointer_exists(&self, commit: &str, file: &str) -> bool {
        fs::symlink_metadata(self.pointer_path(commit, file)).is_ok()
    }

    /// All files of a snapshot (repository-relative, `/`-separated), including dangling links.
    pub fn snapshot_files(&self, commit: &str) -> Result<Vec<String>, HubError> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let rel = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                let ft = entry.file_type()?;
                if ft.is_dir() {
                    walk(&entry.path(), &rel, out)?;
                } else if !(name.starts_with('.') && name.ends_with(".tmp")) {
                    out.push(rel);
                }
            }
            Ok(())
        }
        let dir = self.snapshot_dir(commit);
        let mut out = Vec::new();
        walk(&dir, "", &mut out).map_err(|e| HubError::io(&dir, e))?;
        out.sort();
        Ok(out)
    }

    /// The file list of `trees/<commit>.json`, the listing cache newer Python versions write
    /// beside the snapshots, if present and readable.
    pub fn python_tree_listing(&self, commit: &str) -> Option<Vec<String>> {
        let path = self.folder.join("trees").join(format!("{commit}.json"));
        let text = fs::read_to_string(path).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        if value.get("format_version")?.as_u64()? != 1 {
            return None;
        }
        let files = value.get("files")?.as_object()?;
        let names: Vec<String> = files.keys().cloned().collect();
        names
            .iter()
            .all(|n| relative_path_problem(n).is_none())
            .then_some(names)
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative symlink (replacing
    /// an existing entry atomically). Where symlinks are unavailable the blob is copied.
    pub fn link_pointer(&self, commit: &str, file: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.pointer_path(commit, file);
        let depth = file.split('/').count() + 1; // file's directories + <commit> + snapshots
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        if fs::read_link(&pointer).is_ok_and(|t| t == target) {
            return Ok(());
        }
        let dir = pointer.parent().expect("pointer has a parent");
        fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        let name = pointer
            .file_name()
            .expect("pointer has a name")
            .to_string_lossy();
        let tmp = dir.join(format!(".{name}.{}", temp_suffix()));
        let result = make_link(&target, &self.blob_path(etag), &tmp)
            .and_then(|()| fs::rename(&tmp, &pointer));
        result.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            HubError::io(&pointer, e)
        })
    }

    /// Takes the exclusive lock of blob `etag`, waiting as long as another process (bitconv or
    /// Python) holds it. `waiting` is called once if the lock is busy. With a `timeout`, gives up
    /// after that long without the lock.
    pub fn lock_blob(
        &self,
        etag: &str,
        timeout: Option<Duration>,
        mut waiting: impl FnMut(&Path),
    ) -> Result<BlobLock, HubError> {
        let path = self.lock_path(etag);
        let dir = path.parent().expect("lock has a parent");
        fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        let start = Instant::now();
        let mut told = false;
        let mut pause = Duration::from_millis(10);
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| HubError::io(&path, e))?;
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => {
                    // The name must still lead to the inode we locked (someone may have
                    // deleted the lock file in between); otherwise start over.
                    if same_file(&file, &path) {
                        return Ok(BlobLock { _file: file });
                    }
                }
                Err(fs4::TryLockError::WouldBlock) => {}
                Err(fs4::TryLockError::Error(e)) => return Err(HubError::io(&path, e)),
            }
            drop(file);
            if !told {
                told = true;
                waiting(&path);
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Err(HubError::io(
                    &path,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "timed out waiting for another process downloading this file",
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, at: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, at)
}

#[cfg(windows)]
fn make_link(target: &Path, blob: &Path, at: &Path) -> io::Result<()> {
    // Symlinks need developer mode or privileges on Windows; copy like Python does then.
    std::os::windows::fs::symlink_file(target, at).or_else(|_| fs::copy(blob, at).map(|_| ()))
}

#[cfg(not(any(unix, windows)))]
fn make_link(_target: &Path, blob: &Path, at: &Path) -> io::Result<()> {
    fs::copy(blob, at).map(|_| ())
}
