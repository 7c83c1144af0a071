//! Two fetches of the same repository into one cache at the same time, as threads and as
//! separate processes: both succeed, and every file is downloaded exactly once (the second
//! waits on the blob lock, then finds the blob complete).

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::hub::{fast_config, quiet};
use crate::common::mock_hub::{MockHub, MockRepo};
use bitconv::hub::{self, HubConfig};

const CHILD_URL: &str = "BITCONV_HUB_TEST_CHILD_URL";
const CHILD_CACHE: &str = "BITCONV_HUB_TEST_CHILD_CACHE";

fn config(url: &str, cache: &Path) -> HubConfig {
    fast_config(url, cache, 4)
}

fn slow_hub() -> MockHub {
    let hub = MockHub::start(vec![MockRepo::from_dir(
        "org/tiny",
        &common::tiny().join("ckpt-fp16"),
    )]);
    // ~4 MB in 128 KiB pieces 3 ms apart: long enough for the fetches to overlap.
    hub.throttle(128 << 10, Duration::from_millis(3));
    hub
}

fn assert_each_file_downloaded_once(hub: &MockHub) {
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer.model",
    ] {
        let gets = hub.body_gets("org/tiny", f);
        assert_eq!(gets.len(), 1, "{f}: {gets:?}");
    }
}

#[test]
fn two_threads_fetch_the_same_repo() {
    let hub = slow_hub();
    let cache = tempfile::tempdir().unwrap();
    let cfg = config(&hub.url(), cache.path());
    let results: Vec<_> = std::thread::scope(|s| {
        let a = s.spawn(|| hub::snapshot(&cfg, "org/tiny", "main", &quiet()));
        let b = s.spawn(|| hub::snapshot(&cfg, "org/tiny", "main", &quiet()));
        vec![a.join().unwrap(), b.join().unwrap()]
    });
    for r in &results {
        let snap = r.as_ref().expect("both fetches succeed");
        assert_eq!(snap.files.len(), 7);
    }
    assert_each_file_downloaded_once(&hub);
}

/// The body of the child processes of `two_processes_fetch_the_same_repo`; a no-op otherwise.
#[test]
fn child_fetch_entry() {
    let (Ok(url), Ok(cache)) = (std::env::var(CHILD_URL), std::env::var(CHILD_CACHE)) else {
        return;
    };
    let snap = hub::snapshot(
        &config(&url, Path::new(&cache)),
        "org/tiny",
        "main",
        &quiet(),
    )
    .unwrap_or_else(|e| panic!("child fetch failed: {e}"));
    assert_eq!(snap.files.len(), 7);
}

#[test]
fn two_processes_fetch_the_same_repo() {
    let hub = slow_hub();
    let cache = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let spawn = || {
        Command::new(&exe)
            .args([
                "hub_concurrency::child_fetch_entry",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CHILD_URL, hub.url())
            .env(CHILD_CACHE, cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = [spawn(), spawn()];
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The child really ran the fetch (not filtered out).
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
    }
    assert_each_file_downloaded_once(&hub);
    let snap = hub::snapshot(
        &HubConfig {
            offline: true,
            ..config(&hub.url(), cache.path())
        },
        "org/tiny",
        "main",
        &quiet(),
    )
    .unwrap();
    assert_eq!(snap.files.len(), 7);
}
