//! Validation of every name that ends up in a URL or a cache path: repository ids, revisions,
//! file names from the listing, commit hashes and ETags from the server.
//!
//! A listing is refused as a whole if any name could leave the cache, before anything is
//! written.

use super::error::HubError;

/// `true` for a full lowercase 40-hex commit hash (what the Hub returns as `sha`).
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `true` for a lowercase 40-hex git object id (the ETag of files stored in git, not LFS).
pub fn is_git_blob_id(s: &str) -> bool {
    is_commit_hash(s)
}

/// `true` for a lowercase 64-hex sha256 (the ETag of LFS files).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks `org/name` (or a bare `name`) like the Hub does: 1–96 characters of
/// `[A-Za-z0-9_.-]` per part, not starting or ending with `.` or `-`, no `--` or `..`.
pub fn validate_repo_id(repo: &str) -> Result<(), HubError> {
    let bad = || HubError::InvalidRepoId {
        repo: repo.to_owned(),
    };
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.is_empty() || parts.len() > 2 || repo.contains("--") || repo.contains("..") {
        return Err(bad());
    }
    for part in parts {
        let ok_chars = part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        let ok_ends = !part.starts_with(['.', '-']) && !part.ends_with(['.', '-']);
        if part.is_empty() || part.len() > 96 || !ok_chars || !ok_ends {
            return Err(bad());
        }
    }
    Ok(())
}

/// The cache folder of a model repository: `models--org--name`.
pub fn repo_folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// Checks a revision (branch, tag, commit, or `refs/pr/N`) for use in `refs/<revision>` and in
/// a URL segment.
pub fn validate_revision(revision: &str) -> Result<(), HubError> {
    match relative_path_problem(revision) {
        None if revision.len() <= 256 => Ok(()),
        _ => Err(HubError::InvalidRevision {
            revision: revision.to_owned(),
        }),
    }
}

/// Why a repository-relative path is unsafe to join under a cache folder, or `None` if it is
/// safe: empty, absolute, `.`/`..`/empty components, backslashes, NUL or other control
/// characters, or a drive prefix.
pub fn relative_path_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty name");
    }
    if name.len() > 4096 {
        return Some("name too long");
    }
    if name.contains('\0') {
        return Some("contains a NUL byte");
    }
    if name.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    if name.contains('\\') {
        return Some("contains a backslash");
    }
    if name.starts_with('/') {
        return Some("absolute path");
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return Some("drive prefix");
    }
    for comp in name.split('/') {
        match comp {
            "" => return Some("empty path component"),
            "." | ".." => return Some("`.` or `..` path component"),
            _ => {}
        }
    }
    None
}

/// Checks every file name of a listing; the first unsafe one refuses the whole listing.
pub fn validate_listing(repo: &str, names: &[String]) -> Result<(), HubError> {
    for name in names {
        if let Some(reason) = relative_path_problem(name) {
            return Err(HubError::UnsafeFileName {
                repo: repo.to_owned(),
                name: name.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// Strips `W/` and quotes from an ETag header value, as Python's `huggingface_hub` does.
pub fn normalize_etag(raw: &str) -> String {
    let t = raw.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.trim_matches('"').to_owned()
}

/// Checks a normalized ETag before it names a blob: 1–128 characters of `[A-Za-z0-9_-]`.
pub fn validate_etag(repo: &str, etag: &str) -> Result<(), HubError> {
    let ok = !etag.is_empty()
        && etag.len() <= 128
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(HubError::UnsafeServerValue {
            repo: repo.to_owned(),
            what: "ETag",
            value: etag.to_owned(),
        })
    }
}

/// Checks a commit hash from the server before it names a snapshot folder.
pub fn validate_commit(repo: &str, commit: &str) -> Result<(), HubError> {
    if is_commit_hash(commit) {
        Ok(())
    } else {
        Err(HubError::UnsafeServerValue {
            repo: repo.to_owned(),
            what: "commit hash",
            value: commit.to_owned(),
        })
    }
}

/// Percent-encodes a string for a URL path; `/` is kept when `keep_slash` (file paths) and
/// encoded otherwise (a revision is one segment, so `refs/pr/1` becomes `refs%2Fpr%2F1`).
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in [
            "org/tiny",
            "gpt2",
            "1bitLLM/bitnet_b1_58-3B",
            "tiiuae/Falcon3-7B-1.58bit",
        ] {
            assert!(validate_repo_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/x", "a/b/c", "a--b/c", "../x", "a/..", "a/.x", "a b/c", "a/b\0",
        ] {
            assert!(validate_repo_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(repo_folder_name("org/tiny"), "models--org--tiny");
    }

    #[test]
    fn paths() {
        for ok in ["config.json", "a/b.safetensors", "refs/pr/1", "x..y"] {
            assert_eq!(relative_path_problem(ok), None, "{ok}");
        }
        for bad in [
            "", "../x", "/abs", "a/../b", "a\\b", "a\0b", "a\nb", "a//b", "a/", "./a", "C:x",
        ] {
            assert!(relative_path_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn etags() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert!(validate_etag("r", &"a".repeat(64)).is_ok());
        for bad in ["", "../x", "a/b", "a.incomplete", "a b"] {
            assert!(validate_etag("r", bad).is_err(), "{bad:?}");
        }
        assert!(is_commit_hash(&"0123456789abcdef".repeat(3)[..40]));
        assert!(!is_commit_hash(&"A".repeat(40)));
    }

    #[test]
    fn encoding() {
        assert_eq!(percent_encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(percent_encode("a b/c#d.json", true), "a%20b/c%23d.json");
    }
}
