//! `bitconv fetch` end to end against the mock Hub on 127.0.0.1 (the library's download
//! behaviour — resume, sha256, retries, locking, names, tokens — is tested in hub_*.rs).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::hub::tiny_repo;
use crate::common::mock_hub::{MockHub, MockRepo};

/// `bitconv fetch` with the Hub at `url`, the cache in `cache` and nothing else from the
/// environment that could reach a real Hub.
fn fetch(url: &str, cache: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bitconv"))
        .current_dir(cwd)
        .arg("fetch")
        .args(args)
        .env("HF_ENDPOINT", url)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HOME", cwd.join("hf-home"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("BITCONV_HUB_RETRY_BASE_MS", "1")
        .output()
        .unwrap()
}

/// `bitconv fetch` from `hub`, run in `dir` with its cache in `dir/cache`.
fn fetch_in(hub: &MockHub, dir: &Path, args: &[&str]) -> Output {
    fetch(&hub.url(), &dir.join("cache"), dir, args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn fetch_converts_and_validates_like_a_local_convert() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let o = fetch(
        &hub.url(),
        &cache,
        tmp.path(),
        &["org/tiny", "--quant", "i2_s", "--json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["pass"], true);
    assert_eq!(j["validation"]["pass"], true);
    // bitnet.cpp's layout: models/<name>/ggml-model-<type>.gguf.
    let out = tmp.path().join("models/tiny/ggml-model-i2_s.gguf");
    assert!(out.is_file());
    assert!(tmp
        .path()
        .join("models/tiny/ggml-model-i2_s.gguf.golden.json")
        .is_file());
    assert!(cache.join("models--org--tiny/refs/main").is_file());

    // The same file as `bitconv convert` on a local copy named like the repo.
    let local = tmp.path().join("local/tiny");
    common::copy_files(&common::tiny().join("ckpt-fp16"), &local);
    let conv = tmp.path().join("local.gguf");
    let c = common::bitconv()
        .arg("convert")
        .arg(&local)
        .arg("-q")
        .arg("-o")
        .arg(&conv)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&conv).unwrap(),
        "fetch and convert differ"
    );
    assert_eq!(
        j["output_sha256"],
        bitconv::gguf::inspect::sha256_hex(&std::fs::read(&conv).unwrap())
    );

    // Offline with a complete cache: no request at all.
    hub.clear_log();
    let o = fetch(
        &hub.url(),
        &cache,
        tmp.path(),
        &[
            "org/tiny",
            "--offline",
            "--no-validate",
            "-o",
            "again.gguf",
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        hub.requests().is_empty(),
        "offline made requests: {:?}",
        hub.requests().len()
    );
    assert!(std::fs::read(tmp.path().join("again.gguf")).unwrap() == std::fs::read(&conv).unwrap());
}

#[test]
fn offline_without_the_files_says_which_and_how() {
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch(
        "http://127.0.0.1:9",
        &tmp.path().join("cache"),
        tmp.path(),
        &["org/tiny", "--offline"],
    );
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(
        t.contains("org/tiny") && t.contains("without --offline"),
        "{t}"
    );
}

#[test]
fn gated_repo_asks_for_a_token_and_never_prints_it() {
    let hub = MockHub::start(vec![tiny_repo().gated("right-token")]);
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_in(
        &hub,
        tmp.path(),
        &["org/tiny", "--token", "wrong-secret-token"],
    );
    assert_eq!(o.status.code(), Some(2));
    let t = text(&o);
    assert!(t.contains("--token") && t.contains("HF_TOKEN"), "{t}");
    assert!(!t.contains("wrong-secret-token"), "the token leaked: {t}");
    let o = fetch_in(
        &hub,
        tmp.path(),
        &["org/tiny", "--token", "right-token", "--no-validate", "-q"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("right-token"));
}

#[test]
fn missing_repo_and_revision() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_in(&hub, tmp.path(), &["org/nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("org/nope"), "{}", text(&o));
    let o = fetch_in(&hub, tmp.path(), &["org/tiny", "--revision", "v9"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("v9"), "{}", text(&o));
}

#[test]
fn list_and_help_read_well() {
    let o = common::bitconv()
        .args(["fetch", "--list"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let t = String::from_utf8_lossy(&o.stdout);
    for r in [
        "1bitLLM/bitnet_b1_58-large",
        "microsoft/BitNet-b1.58-2B-4T",
        "microsoft/bitnet-b1.58-2B-4T-bf16",
        "HF1BitLLM/Llama3-8B-1.58-100B-tokens",
        "tiiuae/Falcon3-7B-1.58bit",
    ] {
        assert!(t.contains(r), "{r} missing from --list");
    }
    let o = common::bitconv()
        .args(["fetch", "--list", "--json"])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j.as_array().unwrap().iter().all(|r| r["output_types"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "i2_s")));
    let o = common::bitconv()
        .args(["fetch", "--help"])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(t.contains("Examples") && t.contains("HF_TOKEN") && t.contains("--offline"));
}

/// Prints a whole `bitconv fetch` session against the mock Hub (the README's example):
/// `cargo test --test it readme_session -- --ignored --nocapture`.
#[test]
#[ignore]
fn readme_session() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let tmp = tempfile::tempdir().unwrap();
    let o = fetch_in(&hub, tmp.path(), &["org/tiny", "--quant", "tl1"]);
    println!(
        "$ HF_ENDPOINT={} bitconv fetch org/tiny --quant tl1\n{}",
        hub.url(),
        text(&o)
    );
}

/// The headline, at real size (a benchmark, not CI): serves the checkpoint directory named by
/// `BITCONV_HEADLINE_CHECKPOINT` (made by `benches/headline_3b.sh`: bitnet_b1_58-3B's shapes,
/// fp32, 3 shards) as `1bitLLM/bitnet_b1_58-3B` from memory maps, then runs
/// `bitconv fetch 1bitLLM/bitnet_b1_58-3B --quant tl1` (the binary in `BITCONV_BIN`, default the
/// test build) under `/usr/bin/time -v` in `BITCONV_HEADLINE_WORK`, printing its output and
/// timing. `cargo test --release --test it headline -- --ignored --nocapture`.
#[test]
#[ignore]
fn headline_3b() {
    let Ok(dir) = std::env::var("BITCONV_HEADLINE_CHECKPOINT") else {
        eprintln!("SKIPPED: set BITCONV_HEADLINE_CHECKPOINT (see benches/headline_3b.sh)");
        return;
    };
    let work =
        PathBuf::from(std::env::var("BITCONV_HEADLINE_WORK").unwrap_or("target/headline".into()));
    let quant = std::env::var("BITCONV_HEADLINE_QUANT").unwrap_or("tl1".into());
    std::fs::create_dir_all(&work).unwrap();
    let t = std::time::Instant::now();
    let hub = MockHub::start(vec![MockRepo::from_dir_mapped(
        "1bitLLM/bitnet_b1_58-3B",
        Path::new(&dir),
    )]);
    eprintln!(
        "hub up (files hashed) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let bin = std::env::var("BITCONV_BIN").unwrap_or(env!("CARGO_BIN_EXE_bitconv").into());
    let cache = work.join("cache");
    let o = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin)
        .current_dir(&work)
        .args(["fetch", "1bitLLM/bitnet_b1_58-3B", "--quant", &quant])
        .env("HF_ENDPOINT", hub.url())
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HOME", work.join("hf-home"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    println!("{}", text(&o));
    assert!(o.status.success(), "the headline command failed");
}

/// fetch reads config.json before the weights: a type that cannot be written as asked (TQ2_0
/// on rows of 384 values, which become F16) is refused with the plan's reason and nothing but
/// the small files is downloaded; `--allow-fallback` accepts it, and the result validates.
#[test]
fn fetch_refuses_a_fallback_before_downloading_the_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("h384");
    common::random_checkpoint(&ck, 384, 1024, 1, 6, 1002, 7);
    let hub = MockHub::start(vec![MockRepo::from_dir("org/h384", &ck)]);
    let cache = tmp.path().join("cache");
    let o = fetch(
        &hub.url(),
        &cache,
        tmp.path(),
        &["org/h384", "--quant", "tq2_0"],
    );
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("--allow-fallback") && t.contains("384"), "{t}");
    assert!(
        hub.body_gets("org/h384", "model.safetensors").is_empty(),
        "the weights were downloaded before the plan was checked"
    );
    let o = fetch(
        &hub.url(),
        &cache,
        tmp.path(),
        &["org/h384", "--quant", "tq2_0", "--allow-fallback"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("PASS"), "{}", text(&o));
}

/// Off a terminal (a CI log, a pipe) fetch and convert report progress as lines: a line when
/// each download and the conversion start and end, and in between at most one per interval
/// (here 0 s, so one per chunk); `-q` silences them.
#[test]
fn progress_is_line_oriented_off_a_terminal() {
    let hub = MockHub::start(vec![tiny_repo()]);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let o = Command::new(env!("CARGO_BIN_EXE_bitconv"))
        .current_dir(tmp.path())
        .args(["fetch", "org/tiny", "--quant", "i2_s"])
        .env("HF_ENDPOINT", hub.url())
        .env("HF_HUB_CACHE", &cache)
        .env("HF_HOME", tmp.path().join("hf-home"))
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env("BITCONV_PROGRESS_SECS", "0")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "downloading model.safetensors: 0.00 MB",
        "downloading config.json",
        "converting: 0.00 MB",
    ] {
        assert!(err.contains(want), "{want:?} missing:\n{err}");
    }
    let ends = err.lines().filter(|l| l.ends_with("[done]")).count();
    let starts = err.lines().filter(|l| l.ends_with("[started]")).count();
    assert!(starts >= 3 && starts == ends, "{err}");
    assert!(err.lines().all(|l| !l.contains('\r')), "no redrawn bars");

    let out = tmp.path().join("q.gguf");
    let o = common::bitconv()
        .arg("convert")
        .arg(common::tiny().join("ckpt-fp16"))
        .args(["-q", "-o"])
        .arg(&out)
        .env("BITCONV_PROGRESS_SECS", "0")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("converting:"));
}

/// SIGINT, SIGTERM or SIGKILL in the middle of `fetch` (here while the weights arrive), then one
/// more run: it completes, resuming the download, and no temporary of bitconv remains beside
/// the output, in the cache (the resumable `.incomplete` is consumed) or in the temp directory.
#[test]
#[cfg(target_os = "linux")]
fn interrupted_fetch_leaves_nothing_after_the_next_run() {
    use std::time::{Duration, Instant};
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let hub = MockHub::start(vec![tiny_repo()]);
        hub.throttle(64 << 10, Duration::from_millis(30));
        let tmp = tempfile::tempdir().unwrap();
        let (cache, scratch) = (tmp.path().join("cache"), tmp.path().join("tmpdir"));
        std::fs::create_dir_all(&scratch).unwrap();
        let files_under = |dir: &Path, suffix: &str| -> Vec<PathBuf> {
            let mut out = Vec::new();
            let mut stack = vec![dir.to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.to_string_lossy().ends_with(suffix) {
                        out.push(p);
                    }
                }
            }
            out
        };
        let run = || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_bitconv"));
            c.current_dir(tmp.path())
                .args(["fetch", "org/tiny", "--quant", "i2_s", "-q"])
                .env("HF_ENDPOINT", hub.url())
                .env("HF_HUB_CACHE", &cache)
                .env("HF_HOME", tmp.path().join("hf-home"))
                .env("TMPDIR", &scratch)
                .env_remove("HF_TOKEN")
                .env_remove("HF_HUB_OFFLINE");
            c
        };
        let mut child = run().spawn().unwrap();
        let start = Instant::now();
        while files_under(&cache, ".incomplete").is_empty() && start.elapsed().as_secs() < 60 {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !files_under(&cache, ".incomplete").is_empty(),
            "no download began"
        );
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        assert!(
            !child.wait().unwrap().success(),
            "signal {sig}: finished first"
        );
        hub.throttle(1 << 20, Duration::ZERO);
        let o = run().output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        assert!(tmp
            .path()
            .join("models/tiny/ggml-model-i2_s.gguf")
            .is_file());
        assert_eq!(
            files_under(&cache, ".incomplete"),
            Vec::<PathBuf>::new(),
            "signal {sig}"
        );
        assert_eq!(
            files_under(&tmp.path().join("models"), ".tmp"),
            Vec::<PathBuf>::new(),
            "signal {sig}"
        );
        assert_eq!(
            files_under(&scratch, ""),
            Vec::<PathBuf>::new(),
            "signal {sig}"
        );
    }
}
