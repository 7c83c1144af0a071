//! Errors of the Hub client. Every message names the repository and, where there is one, the
//! file; none ever contains the access token (server-provided text is scrubbed of it).

use std::io;
use std::path::PathBuf;

/// The hint given for 401/403 answers.
pub const AUTH_HINT: &str = "gated or private repo: pass a token with --token or HF_TOKEN; \
                             accept the license on the model page";

/// Why a download or a cache lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The configuration could not be resolved.
    #[error("Hub configuration: {0}")]
    Config(String),

    /// The repository id is not `name` or `org/name` with Hub-legal characters.
    #[error("invalid repository id {repo:?}: expected org/name")]
    InvalidRepoId {
        /// The id as given.
        repo: String,
    },

    /// The revision cannot be used (empty, control characters, `..`, backslashes).
    #[error("invalid revision {revision:?}")]
    InvalidRevision {
        /// The revision as given.
        revision: String,
    },

    /// 401 or 403: the repository needs a token, or the token has no access.
    #[error("{repo}{}: access denied (HTTP {status}{}) — {AUTH_HINT}{}",
        file.as_ref().map(|f| format!(", file {f}")).unwrap_or_default(),
        code.as_ref().map(|c| format!(", {c}")).unwrap_or_default(),
        if *token_sent { " (the token that was sent was refused)" } else { "" })]
    Unauthorized {
        /// Repository id.
        repo: String,
        /// The file, when the listing worked but the download did not.
        file: Option<String>,
        /// 401 or 403.
        status: u16,
        /// The Hub's `X-Error-Code` (`GatedRepo`, `RepoNotFound`, …) if any.
        code: Option<String>,
        /// Whether a token was sent with the request.
        token_sent: bool,
    },

    /// 404 for the repository itself.
    #[error(
        "repository {repo} not found on {endpoint} (if it is private, pass a token with \
             --token or HF_TOKEN)"
    )]
    RepoNotFound {
        /// Repository id.
        repo: String,
        /// The endpoint asked.
        endpoint: String,
    },

    /// 404 for the revision (branch, tag or commit).
    #[error("revision {revision:?} not found in {repo} (a branch, tag or 40-hex commit)")]
    RevisionNotFound {
        /// Repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
    },

    /// 404 without saying whether the repository or the revision is missing.
    #[error("repository {repo} or its revision {revision:?} not found (HTTP 404)")]
    RepoOrRevisionNotFound {
        /// Repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
    },

    /// 404 for one file of a listed revision.
    #[error("file {file} not found in {repo} at {revision}")]
    FileNotFound {
        /// Repository id.
        repo: String,
        /// Revision (commit).
        revision: String,
        /// Path inside the repository.
        file: String,
    },

    /// Another HTTP status that is not retried or still failed after the retries.
    #[error("{repo}{}: HTTP {status} from {what}{}",
        file.as_ref().map(|f| format!(", file {f}")).unwrap_or_default(),
        message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http {
        /// Repository id.
        repo: String,
        /// The file, if the request was for one.
        file: Option<String>,
        /// The status code.
        status: u16,
        /// Which request (`the repository listing`, `the file download`, ...).
        what: String,
        /// The server's `X-Error-Message`, scrubbed of the token.
        message: Option<String>,
    },

    /// The network failed (after the retries).
    #[error("{repo}{}: network error after {attempts} attempt(s): {detail}",
        file.as_ref().map(|f| format!(", file {f}")).unwrap_or_default())]
    Network {
        /// Repository id.
        repo: String,
        /// The file, if the request was for one.
        file: Option<String>,
        /// Attempts made.
        attempts: u32,
        /// The last error, scrubbed of the token.
        detail: String,
    },

    /// The server answered something that cannot be used (bad JSON, missing ETag, ...).
    #[error("{repo}{}: unexpected answer from the Hub: {detail}",
        file.as_ref().map(|f| format!(", file {f}")).unwrap_or_default())]
    BadResponse {
        /// Repository id.
        repo: String,
        /// The file, if the request was for one.
        file: Option<String>,
        /// What was wrong.
        detail: String,
    },

    /// The listing contains a file name that could escape the cache; nothing was written.
    #[error(
        "{repo}: refusing the file listing: unsafe file name {name:?} ({reason}); nothing \
             was written"
    )]
    UnsafeFileName {
        /// Repository id.
        repo: String,
        /// The offending name (debug-escaped when shown).
        name: String,
        /// Why it is unsafe.
        reason: &'static str,
    },

    /// A commit hash or ETag from the server is not safe to use as a path component.
    #[error("{repo}: the Hub sent an invalid {what} {value:?}")]
    UnsafeServerValue {
        /// Repository id.
        repo: String,
        /// `commit hash` or `ETag`.
        what: &'static str,
        /// The value (debug-escaped when shown).
        value: String,
    },

    /// The downloaded bytes do not hash to the file's sha256; the partial blob was deleted.
    #[error(
        "{repo}, file {file}: sha256 mismatch (expected {expected}, got {actual}); the \
             download was deleted, run the command again"
    )]
    Sha256Mismatch {
        /// Repository id.
        repo: String,
        /// Path inside the repository.
        file: String,
        /// The sha256 announced by the Hub (the LFS ETag).
        expected: String,
        /// The sha256 of what arrived.
        actual: String,
    },

    /// The downloaded bytes of a file stored in git (not LFS) do not hash to its git blob id
    /// (the ETag); the partial blob was deleted.
    #[error(
        "{repo}, file {file}: git blob id mismatch (expected {expected}, got {actual}); the \
             download was deleted, run the command again"
    )]
    GitBlobMismatch {
        /// Repository id.
        repo: String,
        /// Path inside the repository.
        file: String,
        /// The blob id announced by the Hub (the ETag).
        expected: String,
        /// The blob id of what arrived.
        actual: String,
    },

    /// A download stopped because another file of the same snapshot failed (that file's error is
    /// the one reported); what had arrived stays in `blobs/<etag>.incomplete` for the next run.
    #[error("{repo}, file {file}: download stopped because another file failed")]
    Stopped {
        /// Repository id.
        repo: String,
        /// Path inside the repository.
        file: String,
    },

    /// The downloaded size differs from the announced size; the partial blob was deleted.
    #[error(
        "{repo}, file {file}: size mismatch (expected {expected} bytes, got {actual}); the \
             download was deleted, run the command again"
    )]
    SizeMismatch {
        /// Repository id.
        repo: String,
        /// Path inside the repository.
        file: String,
        /// Announced size.
        expected: u64,
        /// Received size.
        actual: u64,
    },

    /// Offline (or the network failed) and the cache lacks what is needed.
    #[error("{repo} at {revision:?} is not complete in the cache {}: missing {}; {hint}",
        cache.display(), missing.join(", "))]
    NotCached {
        /// Repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The missing pieces (`refs/main`, `snapshots/<commit>`, file names).
        missing: Vec<String>,
        /// The repository folder in the cache.
        cache: PathBuf,
        /// What to do (`run without --offline to download it`, or the network error).
        hint: String,
    },

    /// The filter selected no file of the listing.
    #[error(
        "{repo} at {revision}: none of the {listed} listed files is needed for conversion \
             (no config.json or *.safetensors)"
    )]
    NothingToFetch {
        /// Repository id.
        repo: String,
        /// Revision (commit).
        revision: String,
        /// Number of files listed.
        listed: usize,
    },

    /// A file-system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl HubError {
    /// Wraps an I/O error with its path.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> HubError {
        HubError::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether the failure is a network/server condition where a complete cached snapshot
    /// may be used instead (everything except "revision not found", bad input and integrity
    /// or safety failures).
    pub(crate) fn allows_cache_fallback(&self) -> bool {
        matches!(
            self,
            HubError::Network { .. }
                | HubError::Http { .. }
                | HubError::Unauthorized { .. }
                | HubError::RepoNotFound { .. }
                | HubError::RepoOrRevisionNotFound { .. }
        )
    }
}
