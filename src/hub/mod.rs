//! The Hugging Face Hub client behind `bitconv fetch REPO`.
//!
//! [`snapshot`] resolves a revision (branch, tag or commit) to a commit, selects the files a
//! conversion needs ([`conversion_files`]), and brings them into the cache with the exact layout
//! of Python's `huggingface_hub` (see [`cache`]), so a cache filled by either is used by the
//! other. Downloads resume from `blobs/<etag>.incomplete` with a `Range` request, LFS files are
//! verified against their sha256, transient failures are retried with exponential backoff, and
//! concurrent fetches of the same files (threads, bitconv or Python processes) wait for each
//! other on `flock` locks.
//!
//! Offline ([`HubConfig::offline`]), a complete cached snapshot is used without any network
//! call; online, a failure to reach the Hub falls back to a complete cached snapshot with a
//! warning.
//!
//! Security: every file name of a listing is checked before anything is written (no `..`,
//! absolute paths, backslashes, control characters), commit hashes and ETags are validated
//! before they name paths, and the token is sent only to the endpoint's own origin (redirects
//! are followed by hand; a CDN on another host never sees it). The token never appears in
//! `Debug` output, errors, messages, or the cache.
//!
//! The HTTP layer is our own on `ureq` rather than the `hf-hub` crate: no `hf-hub` version
//! verifies content, reads `HF_HUB_OFFLINE`/`HF_HUB_CACHE`/`HF_TOKEN`, waits on a busy lock
//! instead of failing, or resumes plain HTTP downloads in its current generation.

pub mod cache;
pub mod config;
mod download;
pub mod error;
mod http;
pub mod known;
pub mod names;
mod url;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub use config::{is_truthy, process_env, HubConfig, HubFlags, RetryPolicy, Token, TokenSource};
pub use error::HubError;
pub use known::{find_known, known_repos, KnownRepo};

use cache::RepoCache;
use download::{Ctx, Ui};
use http::Client;
use names::{validate_commit, validate_listing, validate_repo_id, validate_revision};

/// Decides which repository files to fetch (the argument is the repository-relative path).
pub type FileFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The files a conversion needs: `config.json`, `generation_config.json`, the tokenizer files
/// (`tokenizer.json`, `tokenizer.model`, `tokenizer_config.json`, `special_tokens_map.json`,
/// `added_tokens.json`, `chat_template.jinja`, `chat_template.json`), the weights
/// (`*.safetensors`) and `model.safetensors.index.json`; top-level files only.
pub fn conversion_files(path: &str) -> bool {
    if path.contains('/') {
        return false;
    }
    matches!(
        path,
        "config.json"
            | "generation_config.json"
            | "tokenizer.json"
            | "tokenizer.model"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "added_tokens.json"
            | "chat_template.jinja"
            | "chat_template.json"
            | "model.safetensors.index.json"
    ) || (path.ends_with(".safetensors") && path.len() > ".safetensors".len())
}

/// How [`snapshot`] behaves.
#[derive(Clone)]
pub struct FetchOptions {
    /// Which files to fetch (default [`conversion_files`]).
    pub filter: FileFilter,
    /// No messages at all on stderr (errors are still returned).
    pub quiet: bool,
    /// Progress bars on stderr (hidden automatically when stderr is not a terminal).
    pub progress: bool,
    /// Files downloaded at once (at least 1).
    pub downloads: usize,
    /// Re-hash cached blobs against their ETag (sha256 for LFS files, git blob id for files
    /// stored in git; slow for large models) and download again any that differ.
    pub verify_cached: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            filter: Arc::new(conversion_files),
            quiet: false,
            progress: true,
            verify_cached: false,
            downloads: 4,
        }
    }
}

impl fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchOptions")
            .field("quiet", &self.quiet)
            .field("progress", &self.progress)
            .field("verify_cached", &self.verify_cached)
            .field("downloads", &self.downloads)
            .finish_non_exhaustive()
    }
}

/// One file of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedFile {
    /// Repository-relative path (`/`-separated).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// The content's sha256 (lowercase hex): computed when downloaded now, else the LFS ETag
    /// of the cached blob; `None` for cached small (git-stored) files.
    pub sha256: Option<String>,
    /// Whether the content was already in the cache.
    pub from_cache: bool,
}

/// A revision of a repository, complete in the cache.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Repository id.
    pub repo: String,
    /// The revision asked for.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// `<cache>/models--org--name/snapshots/<commit>`.
    pub dir: PathBuf,
    /// The fetched files, in listing order.
    pub files: Vec<FetchedFile>,
    /// Whether it was served from the cache without the Hub (offline, or after a failure).
    pub from_cache_only: bool,
    /// Warnings (already printed on stderr unless quiet).
    pub warnings: Vec<String>,
}

impl Snapshot {
    /// The local path of a repository file.
    pub fn path(&self, file: &str) -> PathBuf {
        let mut p = self.dir.clone();
        for comp in file.split('/') {
            p.push(comp);
        }
        p
    }
}

/// Fetches the files of `repo` at `revision` (branch, tag or commit) selected by
/// `opts.filter` into the cache and returns the snapshot.
pub fn snapshot(
    cfg: &HubConfig,
    repo: &str,
    revision: &str,
    opts: &FetchOptions,
) -> Result<Snapshot, HubError> {
    validate_repo_id(repo)?;
    validate_revision(revision)?;
    let cache = RepoCache::new(&cfg.cache_dir, repo);
    let ui = Ui::new(opts.quiet, opts.progress);

    if cfg.offline {
        return cached_snapshot(
            &cache,
            repo,
            revision,
            opts,
            "offline mode (--offline or HF_HUB_OFFLINE) is on: run without --offline to \
             download it",
        );
    }

    let client = Client::new(cfg);
    let stop = AtomicBool::new(false);
    let ctx = Ctx {
        cfg,
        client: &client,
        cache: &cache,
        repo,
        ui: &ui,
        stop: &stop,
    };
    let listing = match ctx.listing(revision) {
        Ok(l) => l,
        Err(e) if e.allows_cache_fallback() => {
            let hint = format!("the Hub could not be used: {e}");
            return match cached_snapshot(&cache, repo, revision, opts, &hint) {
                Ok(mut snap) => {
                    let warning = format!(
                        "warning: {e}; using the cached snapshot {} of {repo}",
                        snap.commit
                    );
                    ui.message(&warning);
                    snap.warnings.push(warning);
                    Ok(snap)
                }
                Err(_) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };

    validate_commit(repo, &listing.sha)?;
    validate_listing(repo, &listing.files)?;
    let commit = listing.sha;
    let selected: Vec<&String> = listing.files.iter().filter(|f| (opts.filter)(f)).collect();
    if selected.is_empty() {
        return Err(HubError::NothingToFetch {
            repo: repo.to_owned(),
            revision: commit,
            listed: listing.files.len(),
        });
    }

    let files = fetch_files(&ctx, &commit, &selected, opts)?;
    cache.write_ref(revision, &commit)?;
    Ok(Snapshot {
        repo: repo.to_owned(),
        revision: revision.to_owned(),
        dir: cache.snapshot_dir(&commit),
        commit,
        files,
        from_cache_only: false,
        warnings: Vec::new(),
    })
}

/// Fetches `files` of `commit`, up to `opts.downloads` at once (each on its own thread, taking
/// the next file of the list when it is done), and returns them in list order. After a failure
/// no new file is started and the downloads under way stop at their next read (their bytes stay
/// in the cache to be resumed); the error of the first file in list order that failed on its
/// own is returned.
fn fetch_files(
    ctx: &Ctx<'_>,
    commit: &str,
    files: &[&String],
    opts: &FetchOptions,
) -> Result<Vec<FetchedFile>, HubError> {
    let workers = opts.downloads.clamp(1, files.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<Result<FetchedFile, HubError>>>> =
        files.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= files.len() || ctx.stop.load(Ordering::SeqCst) {
            break;
        }
        let r = ctx.fetch_file(commit, files[i], opts.verify_cached);
        if matches!(&r, Err(e) if !matches!(e, HubError::Stopped { .. })) {
            ctx.stop.store(true, Ordering::SeqCst);
        }
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    }
    let mut out = Vec::with_capacity(files.len());
    let (mut first_error, mut first_stopped) = (None, None);
    for r in results {
        match r.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(f)) => out.push(f),
            Some(Err(e @ HubError::Stopped { .. })) => {
                first_stopped.get_or_insert(e);
            }
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            // Not started: a file had failed by then (its error is collected).
            None => {}
        }
    }
    match first_error.or(first_stopped) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// Serves `revision` from the cache alone. The snapshot must be complete: every selected file
/// it lists must resolve, and the files a conversion cannot do without must be there (all files
/// of Python's `trees/<commit>.json` listing when present; otherwise `config.json`, the weights
/// — every shard named by `model.safetensors.index.json` — and a tokenizer).
fn cached_snapshot(
    cache: &RepoCache,
    repo: &str,
    revision: &str,
    opts: &FetchOptions,
    hint: &str,
) -> Result<Snapshot, HubError> {
    let not_cached = |missing: Vec<String>| HubError::NotCached {
        repo: repo.to_owned(),
        revision: revision.to_owned(),
        missing,
        cache: cache.folder().to_path_buf(),
        hint: hint.to_owned(),
    };
    let commit = cache
        .resolve_revision(revision)?
        .ok_or_else(|| not_cached(vec![format!("refs/{revision}")]))?;
    let dir = cache.snapshot_dir(&commit);
    if !dir.is_dir() {
        return Err(not_cached(vec![format!("snapshots/{commit}")]));
    }
    let present = cache.snapshot_files(&commit)?;
    let filter = &opts.filter;
    let mut files = Vec::new();
    let mut missing = Vec::new();
    for name in present.iter().filter(|n| filter(n)) {
        match cache.cached_file(&commit, name) {
            Some(c) => files.push(FetchedFile {
                path: name.clone(),
                size: c.size,
                sha256: c.etag.filter(|e| names::is_sha256_hex(e)),
                from_cache: true,
            }),
            None => missing.push(name.clone()),
        }
    }
    let have = |n: &str| files.iter().any(|f| f.path == n);
    let required: Vec<String> = match cache.python_tree_listing(&commit) {
        Some(list) => list.into_iter().filter(|n| filter(n)).collect(),
        None => {
            let mut req = Vec::new();
            if filter("config.json") {
                req.push("config.json".to_owned());
            }
            let index = "model.safetensors.index.json";
            if have(index) {
                for shard in index_shards(&cache.pointer_path(&commit, index)) {
                    if filter(&shard) && !req.contains(&shard) {
                        req.push(shard);
                    }
                }
            } else if filter("model.safetensors")
                && !files.iter().any(|f| f.path.ends_with(".safetensors"))
            {
                req.push("model.safetensors".to_owned());
            }
            let tokenizers = ["tokenizer.json", "tokenizer.model"];
            if tokenizers.iter().any(|t| filter(t)) && !tokenizers.iter().any(|t| have(t)) {
                req.push("tokenizer.json or tokenizer.model".to_owned());
            }
            req
        }
    };
    for r in required {
        if !have(&r) && !missing.contains(&r) {
            missing.push(r);
        }
    }
    if !missing.is_empty() {
        return Err(not_cached(missing));
    }
    Ok(Snapshot {
        repo: repo.to_owned(),
        revision: revision.to_owned(),
        commit,
        dir,
        files,
        from_cache_only: true,
        warnings: Vec::new(),
    })
}

/// The shard names of a `model.safetensors.index.json` (`weight_map` values), safe names only.
fn index_shards(path: &std::path::Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    let mut shards: Vec<String> = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str())
                .filter(|s| names::relative_path_problem(s).is_none())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    shards.sort();
    shards.dedup();
    shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter() {
        for yes in [
            "config.json",
            "tokenizer.model",
            "model.safetensors",
            "model-00001-of-00003.safetensors",
            "model.safetensors.index.json",
        ] {
            assert!(conversion_files(yes), "{yes}");
        }
        for no in [
            "README.md",
            "pytorch_model.bin",
            ".gitattributes",
            "onnx/model.safetensors",
            ".safetensors",
            "original/config.json",
        ] {
            assert!(!conversion_files(no), "{no}");
        }
    }
}
