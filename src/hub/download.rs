//! The wire protocol: the revision listing, per-file metadata (`HEAD …/resolve/<commit>/<file>`)
//! and resumable, verified downloads into `blobs/<etag>.incomplete`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::cache::RepoCache;
use super::config::HubConfig;
use super::error::HubError;
use super::http::{is_transient, is_transient_status, retry_after, Client, Failure, Method, Reply};
use super::names::{
    is_git_blob_id, is_sha256_hex, normalize_etag, percent_encode, validate_commit, validate_etag,
};
use super::FetchedFile;
use crate::util::LineProgress;

/// Messages and progress bars on stderr (bars hide themselves off-terminal). Several files
/// may be downloading at once: their bars share one [`MultiProgress`], and messages are
/// printed above them.
pub(crate) struct Ui {
    pub quiet: bool,
    pub progress: bool,
    bars: MultiProgress,
}

impl Ui {
    pub fn new(quiet: bool, progress: bool) -> Ui {
        Ui {
            quiet,
            progress,
            bars: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        }
    }

    /// Prints a line on stderr unless quiet.
    pub fn message(&self, text: &str) {
        if !self.quiet {
            self.bars.suspend(|| eprintln!("{text}"));
        }
    }

    /// A byte progress bar for one file (nothing when quiet or disabled; lines off-terminal).
    fn bar(&self, file: &str, size: Option<u64>) -> FileBar {
        if self.quiet || !self.progress {
            return FileBar::Bar(ProgressBar::hidden());
        }
        if !std::io::stderr().is_terminal() {
            return FileBar::Lines(LineProgress::new(&format!("downloading {file}"), size));
        }
        let bar = self
            .bars
            .add(size.map_or_else(ProgressBar::no_length, ProgressBar::new));
        let template = if size.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}"
        } else {
            "{msg} {spinner} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file.to_owned());
        FileBar::Bar(bar)
    }
}

/// One file's progress: a bar on a terminal, lines elsewhere.
enum FileBar {
    Bar(ProgressBar),
    Lines(LineProgress),
}

impl FileBar {
    fn set_position(&self, pos: u64) {
        match self {
            FileBar::Bar(b) => b.set_position(pos),
            FileBar::Lines(l) => l.set_position(pos),
        }
    }

    fn finish_and_clear(&self) {
        match self {
            FileBar::Bar(b) => b.finish_and_clear(),
            FileBar::Lines(l) => l.finish(),
        }
    }
}

/// What one request is about, for errors.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a HubConfig,
    pub client: &'a Client,
    pub cache: &'a RepoCache,
    pub repo: &'a str,
    pub ui: &'a Ui,
    /// Set when a file of the snapshot failed: downloads under way stop at their next read.
    pub stop: &'a AtomicBool,
}

/// The revision listing: commit and file names.
pub(crate) struct Listing {
    pub sha: String,
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    siblings: Option<Vec<Sibling>>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

/// Metadata of one file from `HEAD …/resolve/<commit>/<file>`.
pub(crate) struct FileMeta {
    pub etag: String,
    pub size: Option<u64>,
    pub commit: Option<String>,
}

type Attempt<T> = Result<T, (Failure<HubError>, bool)>;

fn transient<T>(detail: String, status: Option<u16>, progressed: bool) -> Attempt<T> {
    Err((
        Failure::Transient {
            detail,
            status,
            retry_after: None,
        },
        progressed,
    ))
}

fn fatal<T>(e: HubError) -> Attempt<T> {
    Err((Failure::Fatal(Box::new(e)), false))
}

impl Ctx<'_> {
    fn file_url(&self, commit: &str, file: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.cfg.endpoint,
            self.repo,
            commit,
            percent_encode(file, true)
        )
    }

    /// The error for a non-success status (`what` names the request for generic errors).
    fn status_error(
        &self,
        reply: &Reply,
        revision: &str,
        file: Option<&str>,
        what: &str,
    ) -> Failure<HubError> {
        let status = reply.status();
        let code = reply.header("x-error-code").map(|c| self.client.scrub(c));
        let message = reply
            .header("x-error-message")
            .map(|m| self.client.scrub(m));
        let repo = self.repo.to_owned();
        let err = match (status, code.as_deref()) {
            (_, Some("RevisionNotFound")) => HubError::RevisionNotFound {
                repo,
                revision: revision.to_owned(),
            },
            (_, Some("EntryNotFound")) if file.is_some() => HubError::FileNotFound {
                repo,
                revision: revision.to_owned(),
                file: file.unwrap_or_default().to_owned(),
            },
            (_, Some("RepoNotFound")) => HubError::RepoNotFound {
                repo,
                endpoint: self.cfg.endpoint.clone(),
            },
            (401 | 403, _) => HubError::Unauthorized {
                repo,
                file: file.map(str::to_owned),
                status,
                code,
                token_sent: reply.token_sent,
            },
            (404, _) => match file {
                Some(f) => HubError::FileNotFound {
                    repo,
                    revision: revision.to_owned(),
                    file: f.to_owned(),
                },
                None => HubError::RepoOrRevisionNotFound {
                    repo,
                    revision: revision.to_owned(),
                },
            },
            (s, _) if is_transient_status(s) => {
                return Failure::Transient {
                    detail: format!(
                        "HTTP {s} from {what}{}",
                        message.map(|m| format!(": {m}")).unwrap_or_default()
                    ),
                    status: Some(s),
                    retry_after: retry_after(reply),
                }
            }
            (s, _) => HubError::Http {
                repo,
                file: file.map(str::to_owned),
                status: s,
                what: what.to_owned(),
                message,
            },
        };
        Failure::Fatal(Box::new(err))
    }

    fn exhausted(
        &self,
        file: Option<&str>,
        what: &str,
    ) -> impl FnOnce(u32, String, Option<u16>) -> HubError + '_ {
        let file = file.map(str::to_owned);
        let what = what.to_owned();
        move |attempts, detail, status| match status {
            Some(status) => HubError::Http {
                repo: self.repo.to_owned(),
                file,
                status,
                what: format!("{what} after {attempts} attempts"),
                message: None,
            },
            None => HubError::Network {
                repo: self.repo.to_owned(),
                file,
                attempts,
                detail,
            },
        }
    }

    fn network_failure<T>(&self, err: ureq::Error, file: Option<&str>, what: &str) -> Attempt<T> {
        let detail = self.client.scrub(&format!("{what}: {err}"));
        if is_transient(&err) {
            transient(detail, None, false)
        } else {
            fatal(HubError::Network {
                repo: self.repo.to_owned(),
                file: file.map(str::to_owned),
                attempts: 1,
                detail,
            })
        }
    }

    /// `GET {endpoint}/api/models/{repo}/revision/{revision}` → commit and file names.
    pub fn listing(&self, revision: &str) -> Result<Listing, HubError> {
        let url = format!(
            "{}/api/models/{}/revision/{}",
            self.cfg.endpoint,
            self.repo,
            percent_encode(revision, false)
        );
        let what = "the repository listing";
        let text = self.client.retrying(
            |_| {
                let reply = match self.client.send(Method::Get, &url, None, false) {
                    Ok(r) => r,
                    Err(e) => return self.network_failure(e, None, what),
                };
                if reply.status() != 200 {
                    return Err((self.status_error(&reply, revision, None, what), false));
                }
                match reply.text() {
                    Ok(t) => Ok(t),
                    Err(e) => self.network_failure(e, None, what),
                }
            },
            self.exhausted(None, what),
        )?;
        let bad = |detail: String| HubError::BadResponse {
            repo: self.repo.to_owned(),
            file: None,
            detail,
        };
        let info: RepoInfo = serde_json::from_str(&text)
            .map_err(|e| bad(format!("the listing is not the expected JSON: {e}")))?;
        let sha = info
            .sha
            .ok_or_else(|| bad("the listing has no commit hash (`sha`)".into()))?;
        let siblings = info
            .siblings
            .ok_or_else(|| bad("the listing has no file list (`siblings`)".into()))?;
        Ok(Listing {
            sha,
            files: siblings.into_iter().map(|s| s.rfilename).collect(),
        })
    }

    /// `HEAD …/resolve/<commit>/<file>`: ETag (`X-Linked-Etag` first), size (`X-Linked-Size`,
    /// else `Content-Length` of a non-redirect answer) and `X-Repo-Commit`.
    pub fn file_meta(&self, commit: &str, file: &str) -> Result<FileMeta, HubError> {
        let url = self.file_url(commit, file);
        let what = "the file metadata request";
        let reply = self.client.retrying(
            |_| {
                let reply = match self.client.send(Method::Head, &url, None, true) {
                    Ok(r) => r,
                    Err(e) => return self.network_failure(e, Some(file), what),
                };
                if reply.is_redirect() || (200..300).contains(&reply.status()) {
                    Ok(reply)
                } else {
                    Err((self.status_error(&reply, commit, Some(file), what), false))
                }
            },
            self.exhausted(Some(file), what),
        )?;
        let bad = |detail: &str| HubError::BadResponse {
            repo: self.repo.to_owned(),
            file: Some(file.to_owned()),
            detail: detail.to_owned(),
        };
        let etag = reply
            .header("x-linked-etag")
            .or_else(|| reply.header("etag"))
            .map(normalize_etag)
            .ok_or_else(|| bad("no ETag header for the file"))?;
        validate_etag(self.repo, &etag)?;
        let size_header = match reply.header("x-linked-size") {
            Some(v) => Some(v),
            None if !reply.is_redirect() => reply.header("content-length"),
            None => None,
        };
        let size = match size_header {
            Some(v) => Some(
                v.parse::<u64>()
                    .map_err(|_| bad("the file size header is not a number"))?,
            ),
            None => None,
        };
        let remote_commit = reply.header("x-repo-commit").map(str::to_owned);
        if let Some(c) = &remote_commit {
            validate_commit(self.repo, c)?;
        }
        Ok(FileMeta {
            etag,
            size,
            commit: remote_commit,
        })
    }

    /// Brings `file` of `commit` into the cache and links it into the snapshot.
    pub fn fetch_file(
        &self,
        commit: &str,
        file: &str,
        verify_cached: bool,
    ) -> Result<FetchedFile, HubError> {
        if let Some(c) = self.cache.cached_file(commit, file) {
            let known = c.etag.clone().filter(|e| is_sha256_hex(e));
            let ok = match (&c.etag, verify_cached) {
                (Some(e), true) if is_sha256_hex(e) => &sha256_file(&c.blob)? == e,
                (Some(e), true) if is_git_blob_id(e) => &git_blob_id_file(&c.blob)? == e,
                _ => true,
            };
            if ok {
                return Ok(FetchedFile {
                    path: file.to_owned(),
                    size: c.size,
                    sha256: known,
                    from_cache: true,
                });
            }
            self.ui.message(&format!(
                "{}: cached {file} does not match its ETag (sha256 or git blob id); downloading it again",
                self.repo
            ));
            let _ = fs::remove_file(&c.blob);
        }

        let meta = self.file_meta(commit, file)?;
        if let Some(c) = &meta.commit {
            if c != commit {
                return Err(HubError::BadResponse {
                    repo: self.repo.to_owned(),
                    file: Some(file.to_owned()),
                    detail: format!("the Hub answered for commit {c}, expected {commit}"),
                });
            }
        }
        let etag = meta.etag.as_str();
        let known = is_sha256_hex(etag).then(|| etag.to_owned());
        let blob = self.cache.blob_path(etag);
        let blob_ok = |size: Option<u64>| {
            fs::metadata(&blob).is_ok_and(|m| m.is_file() && size.is_none_or(|s| m.len() == s))
        };

        let mut downloaded = None;
        if !blob_ok(meta.size) {
            let _lock = self.cache.lock_blob(etag, None, |lock| {
                self.ui.message(&format!(
                    "{}: waiting for another download of {file} to finish (lock {})",
                    self.repo,
                    lock.display()
                ))
            })?;
            if !blob_ok(meta.size) {
                if blob.exists() {
                    fs::remove_file(&blob).map_err(|e| HubError::io(&blob, e))?;
                }
                downloaded = Some(self.download_blob(commit, file, &meta)?);
            }
        }
        self.cache.link_pointer(commit, file, etag)?;
        let size = fs::metadata(&blob)
            .map_err(|e| HubError::io(&blob, e))?
            .len();
        Ok(FetchedFile {
            path: file.to_owned(),
            size,
            from_cache: downloaded.is_none(),
            sha256: downloaded.or(known),
        })
    }

    /// Downloads into `blobs/<etag>.incomplete` (resuming what is there with a `Range`
    /// request), verifies size and the ETag (the sha256 of LFS files, the git blob id of files
    /// stored in git), then renames to `blobs/<etag>`.
    /// Returns the sha256 of the content. The caller holds the blob lock.
    fn download_blob(&self, commit: &str, file: &str, meta: &FileMeta) -> Result<String, HubError> {
        let etag = meta.etag.as_str();
        let inc = self.cache.incomplete_path(etag);
        let blobs = inc.parent().expect("blob dir");
        fs::create_dir_all(blobs).map_err(|e| HubError::io(blobs, e))?;
        let url = self.file_url(commit, file);
        let io_err = |e: io::Error| HubError::io(&inc, e);
        let mut restarted = false;
        loop {
            let mut out = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&inc)
                .map_err(io_err)?;
            let mut have = out.metadata().map_err(io_err)?.len();
            if meta.size.is_some_and(|s| have > s) {
                out.set_len(0).map_err(io_err)?;
                have = 0;
            }
            let mut hasher = Sha256::new();
            if have > 0 {
                out.seek(SeekFrom::Start(0)).map_err(io_err)?;
                let copied = io::copy(&mut (&mut out).take(have), &mut HashWriter(&mut hasher))
                    .map_err(io_err)?;
                if copied != have {
                    return Err(io_err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "partial download shrank while reading it",
                    )));
                }
            }
            out.seek(SeekFrom::End(0)).map_err(io_err)?;
            let resumed_from = have;
            if resumed_from > 0 && !self.ui.quiet {
                self.ui.message(&format!(
                    "{}: resuming {file} at byte {resumed_from}",
                    self.repo
                ));
            }
            let bar = self.ui.bar(file, meta.size);
            bar.set_position(have);

            let what = "the file download";
            let result = self.client.retrying(
                |_| {
                    let before = have;
                    let range = (have > 0).then_some(have);
                    let reply = match self.client.send(Method::Get, &url, range, false) {
                        Ok(r) => r,
                        Err(e) => return self.network_failure(e, Some(file), what),
                    };
                    let status = reply.status();
                    match status {
                        206 => {
                            let start = reply
                                .header("content-range")
                                .and_then(parse_content_range_start);
                            if start != Some(have) {
                                restart(&mut out, &mut hasher, &mut have)
                                    .map_err(|e| (Failure::Fatal(Box::new(io_err(e))), false))?;
                                return transient(
                                    "the server answered a different byte range".into(),
                                    None,
                                    false,
                                );
                            }
                        }
                        200 => {
                            if have > 0 {
                                restart(&mut out, &mut hasher, &mut have)
                                    .map_err(|e| (Failure::Fatal(Box::new(io_err(e))), false))?;
                                bar.set_position(0);
                            }
                        }
                        416 if meta.size == Some(have) => return Ok(()),
                        416 => {
                            restart(&mut out, &mut hasher, &mut have)
                                .map_err(|e| (Failure::Fatal(Box::new(io_err(e))), false))?;
                            return transient("HTTP 416 for the resume range".into(), None, false);
                        }
                        _ => {
                            return Err((
                                self.status_error(&reply, commit, Some(file), what),
                                false,
                            ))
                        }
                    }
                    let mut body = reply.into_reader();
                    let mut buf = vec![0u8; 256 << 10];
                    loop {
                        if self.stop.load(Ordering::SeqCst) {
                            return fatal(HubError::Stopped {
                                repo: self.repo.to_owned(),
                                file: file.to_owned(),
                            });
                        }
                        let n = match body.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => {
                                return transient(
                                    format!("connection lost after {have} bytes: {e}"),
                                    None,
                                    have > before,
                                )
                            }
                        };
                        if let Some(size) = meta.size {
                            if have + n as u64 > size {
                                return fatal(HubError::SizeMismatch {
                                    repo: self.repo.to_owned(),
                                    file: file.to_owned(),
                                    expected: size,
                                    actual: have + n as u64,
                                });
                            }
                        }
                        out.write_all(&buf[..n])
                            .map_err(|e| (Failure::Fatal(Box::new(io_err(e))), false))?;
                        hasher.update(&buf[..n]);
                        have += n as u64;
                        bar.set_position(have);
                    }
                    match meta.size {
                        Some(size) if have < size => transient(
                            format!("connection closed after {have} of {size} bytes"),
                            None,
                            have > before,
                        ),
                        _ => Ok(()),
                    }
                },
                self.exhausted(Some(file), what),
            );
            bar.finish_and_clear();
            if let Err(e) = result {
                if matches!(e, HubError::SizeMismatch { .. }) {
                    drop(out);
                    let _ = fs::remove_file(&inc);
                }
                return Err(e);
            }

            let actual = hex(&hasher.finalize());
            if let Some(size) = meta.size {
                if have != size {
                    drop(out);
                    let _ = fs::remove_file(&inc);
                    return Err(HubError::SizeMismatch {
                        repo: self.repo.to_owned(),
                        file: file.to_owned(),
                        expected: size,
                        actual: have,
                    });
                }
            }
            let mismatch = if is_sha256_hex(etag) {
                (actual != etag).then(|| HubError::Sha256Mismatch {
                    repo: self.repo.to_owned(),
                    file: file.to_owned(),
                    expected: etag.to_owned(),
                    actual: actual.clone(),
                })
            } else if is_git_blob_id(etag) {
                // `out` is an unbuffered File: a second handle reads every byte written.
                let id = git_blob_id_file(&inc)?;
                (id != etag).then(|| HubError::GitBlobMismatch {
                    repo: self.repo.to_owned(),
                    file: file.to_owned(),
                    expected: etag.to_owned(),
                    actual: id,
                })
            } else {
                None
            };
            if let Some(err) = mismatch {
                drop(out);
                let _ = fs::remove_file(&inc);
                if resumed_from > 0 && !restarted {
                    // The kept partial bytes may be what is wrong: start over once.
                    restarted = true;
                    self.ui.message(&format!(
                        "{}: {file} did not verify after resuming; downloading it from the start",
                        self.repo
                    ));
                    continue;
                }
                return Err(err);
            }
            out.sync_all().map_err(io_err)?;
            drop(out);
            let blob = self.cache.blob_path(etag);
            fs::rename(&inc, &blob).map_err(|e| HubError::io(&blob, e))?;
            return Ok(actual);
        }
    }
}

/// Truncates the partial file and resets the hash.
fn restart(out: &mut File, hasher: &mut Sha256, have: &mut u64) -> io::Result<()> {
    out.set_len(0)?;
    out.seek(SeekFrom::Start(0))?;
    *hasher = Sha256::new();
    *have = 0;
    Ok(())
}

/// The first byte position of `Content-Range: bytes a-b/total`.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

/// Feeds what is written to a hasher.
struct HashWriter<'a, D>(&'a mut D);

impl<D: Digest> Write for HashWriter<'_, D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest `D` of `prefix` followed by a file's bytes, as lowercase hex.
fn hash_file<D: Digest>(path: &std::path::Path, prefix: &[u8]) -> Result<String, HubError> {
    crate::util::hash_file::<D>(path, prefix).map_err(|e| HubError::io(path, e))
}

/// The sha256 of a file, as lowercase hex.
pub(crate) fn sha256_file(path: &std::path::Path) -> Result<String, HubError> {
    hash_file::<Sha256>(path, b"")
}

/// The git blob id of a file (`sha1("blob <size>\0" + content)`, lowercase hex): what the Hub
/// sends as the ETag of a file stored in git rather than LFS.
pub(crate) fn git_blob_id_file(path: &std::path::Path) -> Result<String, HubError> {
    let len = fs::metadata(path).map_err(|e| HubError::io(path, e))?.len();
    hash_file::<Sha1>(path, format!("blob {len}\0").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_are_gits() {
        // `git hash-object` of an empty file and of "hello\n".
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"").unwrap();
        assert_eq!(
            git_blob_id_file(&p).unwrap(),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
        fs::write(&p, b"hello\n").unwrap();
        assert_eq!(
            git_blob_id_file(&p).unwrap(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }
}
