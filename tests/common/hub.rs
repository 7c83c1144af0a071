//! What the tests of the Hub client share: the tiny checkpoint as a mock repository, a
//! configuration with fast retries, and quiet fetch options.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bitconv::hub::{FetchOptions, HubConfig, RetryPolicy};

use super::mock_hub::MockRepo;

/// The tiny fp16 checkpoint the mock repositories serve.
pub fn tiny_dir() -> PathBuf {
    super::tiny().join("ckpt-fp16")
}

/// The tiny checkpoint as `org/tiny`.
pub fn tiny_repo() -> MockRepo {
    MockRepo::from_dir("org/tiny", &tiny_dir())
}

/// An online configuration for `url` and `cache` whose retries (`max_attempts` of them) wait
/// milliseconds, not seconds.
pub fn fast_config(url: &str, cache: &Path, max_attempts: u32) -> HubConfig {
    let mut c = HubConfig::new(url, cache).unwrap();
    c.retry = RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    c
}

/// Fetch options with no output.
pub fn quiet() -> FetchOptions {
    FetchOptions {
        quiet: true,
        progress: false,
        ..FetchOptions::default()
    }
}
