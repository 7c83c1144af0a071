//! `bitconv::hub::snapshot` against the mock hub: cache layout, cache reuse, offline mode,
//! resume, verification, retries, errors, hostile listings and token safety.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::hub::{fast_config, quiet, tiny_dir, tiny_repo};
use crate::common::mock_hub::{hex, MockHub, MockRepo, TINY_COMMIT};
use bitconv::hub::{self, FetchOptions, HubConfig, HubError};
use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_TESTsecretTOKEN0123456789";

/// An online configuration with fast retries.
fn config(url: &str, cache: &Path) -> HubConfig {
    let mut c = fast_config(url, cache, 4);
    c.read_timeout = Duration::from_secs(10);
    c
}

/// Every path under `dir` (files, symlinks, directories), relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(&p, base, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Fails if `needle` occurs in any file content or symlink target under `dir`.
fn assert_not_in_tree(dir: &Path, needle: &str) {
    for rel in tree(dir) {
        let p = dir.join(&rel);
        assert!(!rel.contains(needle), "{rel}");
        if let Ok(t) = fs::read_link(&p) {
            assert!(!t.to_string_lossy().contains(needle), "{rel}");
        }
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_file() {
            let bytes = fs::read(&p).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "secret found in {rel}"
            );
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

const TINY_FILES: [&str; 7] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
];

/// `org/tiny` at `main`, fetched quietly with `cfg`.
fn fetch_tiny(cfg: &HubConfig) -> Result<hub::Snapshot, HubError> {
    hub::snapshot(cfg, "org/tiny", "main", &quiet())
}

/// The `Range` header of every body request for `org/tiny`'s weights, in order.
fn weight_ranges(hub: &MockHub) -> Vec<Option<String>> {
    hub.body_gets("org/tiny", "model.safetensors")
        .iter()
        .map(|r| r.header("range").map(str::to_owned))
        .collect()
}

/// The snapshot matches the checkpoint directory byte for byte.
fn assert_tiny_snapshot(snap: &hub::Snapshot) {
    let mut names: Vec<&str> = snap.files.iter().map(|f| f.path.as_str()).collect();
    names.sort();
    assert_eq!(names, TINY_FILES);
    for f in &snap.files {
        let want = fs::read(tiny_dir().join(&f.path)).unwrap();
        let got = fs::read(snap.path(&f.path)).unwrap();
        assert!(want == got, "{} differs", f.path);
        assert_eq!(f.size, want.len() as u64, "{}", f.path);
        if let Some(s) = &f.sha256 {
            assert_eq!(*s, sha256(&want), "{}", f.path);
        }
    }
}

#[test]
fn fetch_lays_out_the_python_cache() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    let snap = fetch_tiny(&cfg).unwrap();

    assert_eq!(snap.commit, TINY_COMMIT);
    let repo_dir = cache.path().join("models--org--tiny");
    assert_eq!(snap.dir, repo_dir.join("snapshots").join(TINY_COMMIT));
    assert!(!snap.from_cache_only);
    assert_tiny_snapshot(&snap);
    assert!(snap.files.iter().all(|f| !f.from_cache));
    assert_eq!(
        fs::read_to_string(repo_dir.join("refs/main")).unwrap(),
        TINY_COMMIT
    );
    for name in TINY_FILES {
        let file = hub.file("org/tiny", name).unwrap();
        let pointer = snap.dir.join(name);
        let target = fs::read_link(&pointer).unwrap();
        assert_eq!(
            target,
            Path::new("../../blobs").join(file.etag()),
            "{name} must be a relative link into blobs/"
        );
        assert!(repo_dir.join("blobs").join(file.etag()).is_file());
        assert!(cache
            .path()
            .join(".locks/models--org--tiny")
            .join(format!("{}.lock", file.etag()))
            .exists());
        let fetched = snap.files.iter().find(|f| f.path == name).unwrap();
        assert_eq!(fetched.sha256.as_deref(), Some(file.sha256.as_str()));
    }
    assert!(
        !tree(cache.path())
            .iter()
            .any(|p| p.ends_with(".incomplete") || p.ends_with(".tmp")),
        "no scratch files left: {:?}",
        tree(cache.path())
    );
    // The protocol: one listing, then HEAD + GET per file, all by commit.
    let reqs = hub.requests();
    assert_eq!(reqs[0].path, "/api/models/org/tiny/revision/main");
    let heads = reqs.iter().filter(|r| r.method == "HEAD").count();
    assert_eq!(heads, 7);
    assert!(reqs
        .iter()
        .filter(|r| r.path.contains("/resolve/"))
        .all(|r| r
            .path
            .starts_with(&format!("/org/tiny/resolve/{TINY_COMMIT}/"))));
}

#[test]
fn second_fetch_is_served_from_the_cache() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    fetch_tiny(&cfg).unwrap();
    hub.clear_log();
    let snap = fetch_tiny(&cfg).unwrap();
    assert_tiny_snapshot(&snap);
    assert!(snap.files.iter().all(|f| f.from_cache));
    let reqs = hub.requests();
    assert_eq!(reqs.len(), 1, "only the listing: {reqs:?}");
    assert!(reqs[0]
        .path
        .starts_with("/api/models/org/tiny/revision/main"));
}

#[test]
fn offline_with_a_complete_cache_makes_no_request() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    fetch_tiny(&config(&hub.url(), cache.path())).unwrap();
    hub.clear_log();

    // Offline through the environment, as a user would set it.
    let cache_str = cache.path().to_string_lossy().into_owned();
    let url = hub.url();
    let env = move |k: &str| match k {
        "HF_HUB_OFFLINE" => Some("1".to_owned()),
        "HF_HUB_CACHE" => Some(cache_str.clone()),
        "HF_ENDPOINT" => Some(url.clone()),
        _ => None,
    };
    let cfg = HubConfig::resolve(&hub::HubFlags::default(), &env).unwrap();
    assert!(cfg.offline);
    let snap = fetch_tiny(&cfg).unwrap();
    assert!(snap.from_cache_only);
    assert_tiny_snapshot(&snap);
    // By commit hash, too.
    let snap = hub::snapshot(&cfg, "org/tiny", TINY_COMMIT, &quiet()).unwrap();
    assert_eq!(snap.commit, TINY_COMMIT);
    assert!(hub.requests().is_empty(), "{:?}", hub.requests());

    // And with the endpoint gone entirely.
    drop(hub);
    fetch_tiny(&cfg).unwrap();
}

#[test]
fn offline_with_a_missing_file_names_it() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let online = config(&hub.url(), cache.path());
    let snap = fetch_tiny(&online).unwrap();
    let mut offline = online.clone();
    offline.offline = true;

    // Nothing cached for another revision.
    let err = hub::snapshot(&offline, "org/tiny", "v2", &quiet()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::NotCached { .. }), "{err:?}");
    assert!(
        msg.contains("refs/v2") && msg.contains("without --offline"),
        "{msg}"
    );

    // The weights' blob is gone (the snapshot link dangles).
    let etag = hub.file("org/tiny", "model.safetensors").unwrap().sha256;
    let blob = cache.path().join("models--org--tiny/blobs").join(&etag);
    fs::remove_file(&blob).unwrap();
    let err = fetch_tiny(&offline).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("missing model.safetensors"), "{msg}");
    assert!(msg.contains("run without --offline"), "{msg}");

    // config.json removed from the snapshot.
    fs::remove_file(snap.dir.join("config.json")).unwrap();
    let err = fetch_tiny(&offline).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");

    // Online repairs it, reusing what is there: config.json's blob is still cached (it is only
    // linked again); the weights are downloaded.
    hub.clear_log();
    let snap = fetch_tiny(&online).unwrap();
    assert_tiny_snapshot(&snap);
    let fresh: Vec<_> = snap
        .files
        .iter()
        .filter(|f| !f.from_cache)
        .map(|f| f.path.as_str())
        .collect();
    assert_eq!(fresh, ["model.safetensors"]);
    assert_eq!(
        hub.requests().iter().filter(|r| r.method == "GET").count(),
        2
    );
    assert!(fetch_tiny(&offline).is_ok());
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let file = hub.file("org/tiny", "model.safetensors").unwrap();
    let half = file.content.len() / 2;
    hub.drop_body_after("model.safetensors", half, 1);

    // First run: no retries, so it stops with the partial file kept.
    let mut cfg = config(&hub.url(), cache.path());
    cfg.retry.max_attempts = 1;
    let err = fetch_tiny(&cfg).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err:?}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    let inc = cache
        .path()
        .join("models--org--tiny/blobs")
        .join(format!("{}.incomplete", file.sha256));
    assert_eq!(fs::metadata(&inc).unwrap().len(), half as u64);
    assert!(!cache.path().join("models--org--tiny/refs/main").exists());

    // Next run resumes at `half`.
    let snap = fetch_tiny(&config(&hub.url(), cache.path())).unwrap();
    assert_tiny_snapshot(&snap);
    let gets = hub.body_gets("org/tiny", "model.safetensors");
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].header("range"), None);
    assert_eq!(
        gets[1].header("range"),
        Some(format!("bytes={half}-").as_str())
    );
    assert!(!inc.exists());
    let f = snap
        .files
        .iter()
        .find(|f| f.path == "model.safetensors")
        .unwrap();
    assert_eq!(f.sha256.as_deref(), Some(file.sha256.as_str()));
}

#[test]
fn a_dropped_connection_is_retried_and_resumed_in_the_same_run() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let third = hub
        .file("org/tiny", "model.safetensors")
        .unwrap()
        .content
        .len()
        / 3;
    hub.drop_body_after("model.safetensors", third, 2);
    let snap = fetch_tiny(&config(&hub.url(), cache.path())).unwrap();
    assert_tiny_snapshot(&snap);
    let ranges = weight_ranges(&hub);
    assert_eq!(
        ranges,
        [
            None,
            Some(format!("bytes={third}-")),
            Some(format!("bytes={}-", 2 * third))
        ]
    );
}

/// `downloads` files are fetched at once (one worker thread each, taking the next file when
/// done) and the snapshot lists them in listing order either way; with 1 they go one after
/// another. The bodies are throttled so that the 3.9 MB safetensors file is still arriving
/// while the other workers fetch the small files.
#[test]
fn files_download_at_once_up_to_the_limit() {
    for (downloads, concurrent) in [(1usize, 1usize..=1), (4, 2..=4)] {
        let hub = MockHub::start(vec![tiny_repo()]);
        hub.throttle(256 << 10, Duration::from_millis(20));
        let cache = tempfile::tempdir().unwrap();
        let cfg = config(&hub.url(), cache.path());
        let opts = FetchOptions {
            downloads,
            ..quiet()
        };
        let snap = hub::snapshot(&cfg, "org/tiny", "main", &opts).unwrap();
        assert_tiny_snapshot(&snap);
        let order: Vec<&str> = snap.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(order, TINY_FILES, "listing order");
        let most = hub.max_concurrent_bodies();
        assert!(
            concurrent.contains(&most),
            "downloads {downloads}: {most} bodies at once"
        );
    }
}

/// When one file fails, the downloads under way stop (their bytes kept to be resumed) instead of
/// running to the end, the failed file's error is the one returned, and the next run completes.
#[test]
fn a_failed_file_stops_the_downloads_under_way() {
    let hub = MockHub::start(vec![tiny_repo()]);
    // The 3.9 MB safetensors file takes over a second; config.json fails at once.
    hub.throttle(64 << 10, Duration::from_millis(20));
    hub.corrupt_body("config.json", 1);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    let err = fetch_tiny(&cfg).unwrap_err();
    assert!(
        matches!(&err, HubError::GitBlobMismatch { file, .. } if file == "config.json"),
        "{err:?}"
    );
    let model = hub.file("org/tiny", "model.safetensors").unwrap();
    let blobs = cache.path().join("models--org--tiny/blobs");
    assert!(
        !blobs.join(&model.sha256).exists(),
        "the safetensors download ran to the end"
    );
    let partial = blobs.join(format!("{}.incomplete", model.sha256));
    let kept = fs::metadata(&partial).map_or(0, |m| m.len());
    assert!(kept < model.content.len() as u64);
    hub.throttle(1 << 20, Duration::from_millis(0));
    assert_tiny_snapshot(&fetch_tiny(&cfg).unwrap());
}

#[test]
fn corrupted_git_stored_file_is_reported_and_removed() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    let file = hub.file("org/tiny", "config.json").unwrap();
    assert!(
        !file.lfs,
        "config.json is stored in git: its ETag is the git blob id"
    );
    hub.corrupt_body("config.json", 1);
    let err = fetch_tiny(&cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::GitBlobMismatch { .. }), "{err:?}");
    assert!(
        msg.contains("config.json") && msg.contains("git blob id") && msg.contains(&file.oid),
        "{msg}"
    );
    let blobs = cache.path().join("models--org--tiny/blobs");
    assert!(!blobs.join(&file.oid).exists());
    assert!(!blobs.join(format!("{}.incomplete", file.oid)).exists());
    assert_tiny_snapshot(&fetch_tiny(&cfg).unwrap());
}

/// Blobs damaged in the cache after a fetch (same size, one byte changed) are served as they
/// are by default, and hashed again and downloaded anew with `verify_cached`: an LFS file by
/// its sha256, a git-stored file by its git blob id.
#[test]
fn verify_cached_downloads_damaged_blobs_again() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    fetch_tiny(&cfg).unwrap();
    let blobs = cache.path().join("models--org--tiny/blobs");
    let damaged = ["config.json", "model.safetensors"];
    for name in damaged {
        let path = blobs.join(hub.file("org/tiny", name).unwrap().etag());
        let mut bytes = fs::read(&path).unwrap();
        bytes[0] ^= 0x20;
        fs::write(&path, bytes).unwrap();
    }
    let gets = |hub: &MockHub| {
        hub.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/resolve/"))
            .count()
    };
    let before = gets(&hub);
    let snap = fetch_tiny(&cfg).unwrap();
    assert_eq!(
        gets(&hub),
        before,
        "nothing downloaded without verify_cached"
    );
    let cfg_now = fs::read(snap.path("config.json")).unwrap();
    assert_ne!(cfg_now, fs::read(tiny_dir().join("config.json")).unwrap());

    let verify = FetchOptions {
        verify_cached: true,
        ..quiet()
    };
    let snap = hub::snapshot(&cfg, "org/tiny", "main", &verify).unwrap();
    assert_tiny_snapshot(&snap);
    let mut again: Vec<String> = hub.requests()[..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/resolve/"))
        .skip(before)
        .map(|r| r.path.rsplit('/').next().unwrap().to_owned())
        .collect();
    again.sort();
    assert_eq!(again, damaged);
}

#[test]
fn corrupted_bytes_are_reported_and_removed() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    hub.corrupt_body("model.safetensors", 1);
    let err = fetch_tiny(&cfg).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::Sha256Mismatch { .. }), "{err:?}");
    assert!(
        msg.contains("model.safetensors") && msg.contains("sha256"),
        "{msg}"
    );
    let sha = hub.file("org/tiny", "model.safetensors").unwrap().sha256;
    let blobs = cache.path().join("models--org--tiny/blobs");
    assert!(!blobs.join(&sha).exists());
    assert!(!blobs.join(format!("{sha}.incomplete")).exists());
    assert!(!cache
        .path()
        .join("models--org--tiny/snapshots")
        .join(TINY_COMMIT)
        .join("model.safetensors")
        .exists());
    // A clean server then works.
    assert_tiny_snapshot(&fetch_tiny(&cfg).unwrap());
}

#[test]
fn a_gated_repo_without_token_asks_for_one() {
    let hub = MockHub::start(vec![
        MockRepo::from_dir("org/gated", &tiny_dir()).gated(TOKEN)
    ]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    let err = hub::snapshot(&cfg, "org/gated", "main", &quiet()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(msg.contains("--token") && msg.contains("HF_TOKEN"), "{msg}");
    assert!(msg.contains("license"), "{msg}");

    // A wrong token: refused, and never echoed.
    let wrong = cfg.clone().with_token(Some("hf_wrongTOKEN")).unwrap();
    let err = hub::snapshot(&wrong, "org/gated", "main", &quiet()).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(!err.to_string().contains("hf_wrongTOKEN"));
    assert!(!format!("{err:?}").contains("hf_wrongTOKEN"));

    let good = cfg.with_token(Some(TOKEN)).unwrap();
    let snap = hub::snapshot(&good, "org/gated", "main", &quiet()).unwrap();
    assert_eq!(snap.files.len(), 7);
}

#[test]
fn missing_revision_repo_and_private_repo() {
    let hub = MockHub::start(vec![
        tiny_repo(),
        MockRepo::from_dir("org/private", &tiny_dir()).private(TOKEN),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    let err = hub::snapshot(&cfg, "org/tiny", "nope", &quiet()).unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains("org/tiny"),
        "{msg}"
    );

    let err = hub::snapshot(&cfg, "org/missing", "main", &quiet()).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("org/missing"));

    let err = hub::snapshot(&cfg, "org/private", "main", &quiet()).unwrap_err();
    assert!(err.to_string().contains("--token"), "{err}");
    let ok = cfg.with_token(Some(TOKEN)).unwrap();
    assert!(hub::snapshot(&ok, "org/private", "main", &quiet()).is_ok());
    // Nothing was cached for the failures.
    assert!(!cache.path().join("models--org--missing").exists());
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    hub.fail(Some("GET"), "/model.safetensors", 500, 2);
    hub.fail(Some("GET"), "/api/models/", 503, 2);
    let snap = fetch_tiny(&cfg).unwrap();
    assert_tiny_snapshot(&snap);
    let gets = hub.body_gets("org/tiny", "model.safetensors");
    assert_eq!(gets.len(), 3, "two 500s, then success");
    let listings = hub
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api/models/"))
        .count();
    assert_eq!(listings, 3);

    // Bounded: a server that keeps failing gives up after max_attempts.
    let cache2 = tempfile::tempdir().unwrap();
    let mut cfg2 = config(&hub.url(), cache2.path());
    cfg2.retry.max_attempts = 3;
    hub.clear_log();
    hub.fail(Some("HEAD"), "/config.json", 502, 100);
    let err = fetch_tiny(&cfg2).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::Http { status: 502, .. }), "{err:?}");
    assert!(
        msg.contains("config.json") && msg.contains("3 attempts"),
        "{msg}"
    );
    let heads = hub
        .requests()
        .iter()
        .filter(|r| r.method == "HEAD" && r.path.ends_with("/config.json"))
        .count();
    assert_eq!(heads, 3);
}

#[test]
fn an_unreachable_hub_falls_back_to_a_complete_cache() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    fetch_tiny(&cfg).unwrap();

    hub.fail(None, "/api/", 503, 1000);
    let snap = fetch_tiny(&cfg).unwrap();
    assert!(snap.from_cache_only);
    assert_eq!(snap.warnings.len(), 1);
    assert!(snap.warnings[0].contains("503"), "{:?}", snap.warnings);
    assert_tiny_snapshot(&snap);

    drop(hub); // connection refused
    let snap = fetch_tiny(&cfg).unwrap();
    assert!(snap.from_cache_only);
    assert!(snap.warnings[0].contains("network"), "{:?}", snap.warnings);

    // Without a cache the network error is reported.
    let empty = tempfile::tempdir().unwrap();
    let mut cfg = cfg.clone();
    cfg.cache_dir = empty.path().to_path_buf();
    let err = fetch_tiny(&cfg).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err:?}");
}

#[test]
fn unsafe_listings_are_refused_before_writing_anything() {
    for evil in [
        "../x",
        "/abs",
        "a\0b.safetensors",
        "sub\\..\\..\\x",
        "ok/../../x",
        "a\nb",
    ] {
        let repo = tiny_repo().with_listing(&["config.json", evil, "model.safetensors"]);
        let hub = MockHub::start(vec![repo]);
        let cache = tempfile::tempdir().unwrap();
        let err = fetch_tiny(&config(&hub.url(), cache.path())).unwrap_err();
        assert!(
            matches!(err, HubError::UnsafeFileName { .. }),
            "{evil:?}: {err:?}"
        );
        assert!(err.to_string().contains("nothing was written"));
        assert_eq!(tree(cache.path()), Vec::<String>::new(), "{evil:?}");
        // Only the listing was requested.
        assert_eq!(hub.requests().len(), 1, "{evil:?}");
    }
}

#[test]
fn revisions_by_branch_tag_and_commit() {
    let hub = MockHub::start(vec![tiny_repo().with_ref("v1.0").with_ref("refs/pr/1")]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    let refs = cache.path().join("models--org--tiny/refs");

    hub::snapshot(&cfg, "org/tiny", "v1.0", &quiet()).unwrap();
    assert_eq!(fs::read_to_string(refs.join("v1.0")).unwrap(), TINY_COMMIT);
    hub::snapshot(&cfg, "org/tiny", "refs/pr/1", &quiet()).unwrap();
    assert_eq!(
        fs::read_to_string(refs.join("refs/pr/1")).unwrap(),
        TINY_COMMIT
    );
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path == "/api/models/org/tiny/revision/refs%2Fpr%2F1"));

    hub.clear_log();
    let snap = hub::snapshot(&cfg, "org/tiny", TINY_COMMIT, &quiet()).unwrap();
    assert!(snap.files.iter().all(|f| f.from_cache));
    assert!(!refs.join(TINY_COMMIT).exists(), "no ref file for a commit");

    for bad in ["", "../main", "a\\b", "x\0y"] {
        let err = hub::snapshot(&cfg, "org/tiny", bad, &quiet()).unwrap_err();
        assert!(matches!(err, HubError::InvalidRevision { .. }), "{bad:?}");
    }
    for bad in ["org/../x", "a/b/c", "../../etc"] {
        let err = hub::snapshot(&cfg, bad, "main", &quiet()).unwrap_err();
        assert!(matches!(err, HubError::InvalidRepoId { .. }), "{bad:?}");
    }
}

#[test]
fn nested_files_link_relative_to_their_depth() {
    let repo = MockRepo::new("org/nested", TINY_COMMIT)
        .file("config.json", b"{}", false)
        .file("sub/dir/weights.safetensors", b"0123456789", true);
    let hub = MockHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        filter: Arc::new(|_: &str| true),
        ..quiet()
    };
    let snap = hub::snapshot(
        &config(&hub.url(), cache.path()),
        "org/nested",
        "main",
        &opts,
    )
    .unwrap();
    let link = snap.dir.join("sub/dir/weights.safetensors");
    let sha = sha256(b"0123456789");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("../../../../blobs").join(&sha)
    );
    assert_eq!(fs::read(&link).unwrap(), b"0123456789");

    // The default filter takes top-level files only: nested weights are not conversion input.
    let err = hub::snapshot(
        &config(&hub.url(), cache.path()),
        "org/nested",
        "main",
        &FetchOptions {
            filter: Arc::new(|p: &str| p.ends_with(".bin")),
            ..quiet()
        },
    )
    .unwrap_err();
    assert!(matches!(err, HubError::NothingToFetch { .. }), "{err:?}");
}

#[test]
fn the_token_goes_to_the_endpoint_only_and_nowhere_else() {
    let repo = MockRepo::from_dir("org/gated", &tiny_dir()).gated(TOKEN);
    let hub = MockHub::start_with_cdn(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path())
        .with_token(Some(TOKEN))
        .unwrap();
    assert!(!format!("{cfg:?}").contains(TOKEN));

    let snap = hub::snapshot(&cfg, "org/gated", "main", &quiet()).unwrap();
    assert_eq!(snap.files.len(), 7);
    let bearer = format!("Bearer {TOKEN}");
    let hub_reqs = hub.requests();
    assert!(!hub_reqs.is_empty());
    for r in &hub_reqs {
        assert_eq!(
            r.header("authorization"),
            Some(bearer.as_str()),
            "{}",
            r.path
        );
    }
    let cdn_reqs = hub.cdn_requests();
    assert!(
        cdn_reqs.iter().any(|r| r.method == "GET"),
        "LFS files came through the CDN"
    );
    for r in &cdn_reqs {
        assert_eq!(
            r.header("authorization"),
            None,
            "token leaked to {}",
            r.path
        );
        assert!(!r.path.contains(TOKEN));
    }
    // The redirect's own Content-Length is not the file size.
    let st = snap
        .files
        .iter()
        .find(|f| f.path == "model.safetensors")
        .unwrap();
    assert_eq!(
        st.size,
        hub.file("org/gated", "model.safetensors")
            .unwrap()
            .content
            .len() as u64
    );

    assert_not_in_tree(cache.path(), TOKEN);

    // Errors never carry it.
    let errs = [
        hub::snapshot(&cfg, "org/gated", "nope", &quiet()).unwrap_err(),
        hub::snapshot(&cfg, "org/absent", "main", &quiet()).unwrap_err(),
    ];
    for e in errs {
        assert!(!e.to_string().contains(TOKEN));
        assert!(!format!("{e:?}").contains(TOKEN));
    }
}

#[test]
fn a_resumed_download_with_bad_partial_bytes_starts_over_once() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let file = hub.file("org/tiny", "model.safetensors").unwrap();
    let blobs = cache.path().join("models--org--tiny/blobs");
    fs::create_dir_all(&blobs).unwrap();
    // A partial file whose bytes are wrong (say, a disk error).
    let mut junk = file.content[..1000].to_vec();
    junk[10] ^= 1;
    fs::write(blobs.join(format!("{}.incomplete", file.sha256)), &junk).unwrap();
    let snap = fetch_tiny(&config(&hub.url(), cache.path())).unwrap();
    assert_tiny_snapshot(&snap);
    let ranges = weight_ranges(&hub);
    assert_eq!(ranges, [Some("bytes=1000-".to_owned()), None]);
}

#[test]
fn offline_checks_every_shard_of_a_sharded_checkpoint() {
    let index = br#"{"metadata": {}, "weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors"}}"#;
    let repo = MockRepo::new("org/sharded", TINY_COMMIT)
        .file("config.json", b"{}", false)
        .file("tokenizer.json", b"{}", false)
        .file("model.safetensors.index.json", index, false)
        .file("model-00001-of-00002.safetensors", b"shard one", true)
        .file("model-00002-of-00002.safetensors", b"shard two", true)
        .file("README.md", b"# not needed", false);
    let hub = MockHub::start(vec![repo]);
    let cache = tempfile::tempdir().unwrap();
    let online = config(&hub.url(), cache.path());
    let snap = hub::snapshot(&online, "org/sharded", "main", &quiet()).unwrap();
    assert_eq!(snap.files.len(), 5, "README.md is not fetched");
    let mut offline = online.clone();
    offline.offline = true;
    assert!(hub::snapshot(&offline, "org/sharded", "main", &quiet()).is_ok());
    fs::remove_file(snap.dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = hub::snapshot(&offline, "org/sharded", "main", &quiet()).unwrap_err();
    assert!(
        err.to_string()
            .contains("missing model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn offline_uses_the_python_tree_listing_when_present() {
    // Newer huggingface_hub versions keep the full listing in `trees/<commit>.json`; a file in
    // it that the snapshot lacks makes the snapshot incomplete.
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let online = config(&hub.url(), cache.path());
    fetch_tiny(&online).unwrap();
    let trees = cache.path().join("models--org--tiny/trees");
    fs::create_dir_all(&trees).unwrap();
    let mut files = serde_json::Map::new();
    for name in TINY_FILES.iter().chain(&["README.md", "added_tokens.json"]) {
        files.insert(
            name.to_string(),
            serde_json::json!({"size": 1, "blob_id": "0"}),
        );
    }
    let listing = serde_json::json!({"format_version": 1, "files": files});
    fs::write(
        trees.join(format!("{TINY_COMMIT}.json")),
        listing.to_string(),
    )
    .unwrap();
    let mut offline = online.clone();
    offline.offline = true;
    let err = fetch_tiny(&offline).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("missing added_tokens.json"), "{msg}");
    assert!(!msg.contains("README.md"), "not a conversion file: {msg}");
}

#[test]
fn a_server_ignoring_range_restarts_the_download_cleanly() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let cache = tempfile::tempdir().unwrap();
    let half = hub
        .file("org/tiny", "model.safetensors")
        .unwrap()
        .content
        .len()
        / 2;
    hub.drop_body_after("model.safetensors", half, 1);
    hub.ignore_range(true);
    let snap = fetch_tiny(&config(&hub.url(), cache.path())).unwrap();
    assert_tiny_snapshot(&snap);
    let gets = hub.body_gets("org/tiny", "model.safetensors");
    assert_eq!(gets.len(), 2);
    assert_eq!(
        gets[1].header("range"),
        Some(format!("bytes={half}-").as_str())
    );
}
