//! Configuration of the Hub client, resolved once: command-line flags over `HF_*` environment
//! variables over defaults, with the same variables and precedence as Python's
//! `huggingface_hub`.
//!
//! The environment is passed in as a function so tests never mutate the process environment;
//! the CLI calls [`HubConfig::resolve`] with [`process_env`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::HubError;

/// The public Hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Values given on the command line; `None`/`false` means "not given".
#[derive(Clone, Default)]
pub struct HubFlags {
    /// `--endpoint`: overrides `HF_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `--token`: overrides `HF_TOKEN` and the token file.
    pub token: Option<String>,
    /// `--cache-dir`: overrides `HF_HUB_CACHE` and the other cache variables.
    pub cache_dir: Option<PathBuf>,
    /// `--offline`: never touch the network (same as `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl fmt::Debug for HubFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubFlags")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .finish()
    }
}

/// How transient failures (connection errors, timeouts, 408/429/5xx) are retried.
///
/// The delay before retry `n` (1-based) is `base_delay * 2^(n-1)`, capped at `max_delay`, plus
/// up to 25 % jitter. A `Retry-After` header (seconds) is honoured up to `max_delay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request including the first one (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub base_delay: Duration,
    /// Upper bound of any single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based), without jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(20);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// The secret access token. It has no `Display`, and its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token after checking it is a single printable header value.
    pub fn new(value: &str) -> Result<Option<Token>, HubError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) || !value.is_ascii() {
            return Err(HubError::Config(
                "the access token contains whitespace, control or non-ASCII characters".into(),
            ));
        }
        Ok(Some(Token(value.to_owned())))
    }

    /// The token value, for the `Authorization` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the token came from (for `bitconv fetch` diagnostics; the value is never printed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// No token.
    None,
    /// `--token`.
    Flag,
    /// `HF_TOKEN`.
    Env,
    /// A token file (`HF_TOKEN_PATH` or `$HF_HOME/token`).
    File(PathBuf),
}

/// Everything the Hub client needs, resolved once.
#[derive(Clone)]
pub struct HubConfig {
    /// Base URL of the Hub without a trailing slash, `http://` or `https://`; may carry a path
    /// prefix (mirrors, artifact proxies).
    pub endpoint: String,
    /// The access token, sent only to the endpoint's own origin.
    pub token: Option<Token>,
    /// Where the token came from.
    pub token_source: TokenSource,
    /// The cache root (`.../huggingface/hub`), holding `models--org--name` folders.
    pub cache_dir: PathBuf,
    /// Never use the network.
    pub offline: bool,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Timeout for establishing a connection.
    pub connect_timeout: Duration,
    /// Timeout of a single read (a stalled transfer fails after this long without data).
    pub read_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_source", &self.token_source)
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("retry", &self.retry)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// `true` for the values Python's `huggingface_hub` treats as true: 1, true, yes, on (any case).
pub fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The real process environment, for [`HubConfig::resolve`]. Empty values count as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

impl HubConfig {
    /// Resolves flags over environment over defaults:
    ///
    /// - endpoint: `--endpoint`, `HF_ENDPOINT`, [`DEFAULT_ENDPOINT`];
    /// - token: `--token`, `HF_TOKEN`, the file at `HF_TOKEN_PATH`, `$HF_HOME/token` (only
    ///   `--token` when `HF_HUB_DISABLE_IMPLICIT_TOKEN` is true);
    /// - cache: `--cache-dir`, `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`,
    ///   `$XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`;
    /// - offline: `--offline` or `HF_HUB_OFFLINE` in 1/true/yes/on.
    ///
    /// `BITCONV_HUB_RETRY_BASE_MS` shortens the retry delays (a test knob).
    pub fn resolve(
        flags: &HubFlags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HubConfig, HubError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let home = get("HOME")
            .or_else(|| get("USERPROFILE"))
            .map(PathBuf::from);
        let expand = |value: String| -> PathBuf { expand_tilde(&value, home.as_deref()) };

        let endpoint = flags
            .endpoint
            .clone()
            .or_else(|| get("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let endpoint = normalize_endpoint(&endpoint)?;

        // $HF_HOME, defaulting like Python: $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface.
        let xdg_cache = get("XDG_CACHE_HOME").map(&expand);
        let hf_home = match get("HF_HOME") {
            Some(v) => Some(expand(v)),
            None => match (&xdg_cache, &home) {
                (Some(xdg), _) => Some(xdg.join("huggingface")),
                (None, Some(h)) => Some(h.join(".cache").join("huggingface")),
                (None, None) => None,
            },
        };

        let cache_dir = match flags.cache_dir.clone() {
            Some(dir) => dir,
            None => match get("HF_HUB_CACHE").or_else(|| get("HUGGINGFACE_HUB_CACHE")) {
                Some(v) => expand(v),
                None => match &hf_home {
                    Some(h) => h.join("hub"),
                    None => {
                        return Err(HubError::Config(
                            "cannot find the cache directory: set HF_HUB_CACHE or HF_HOME \
                             (no home directory)"
                                .into(),
                        ))
                    }
                },
            },
        };

        let implicit = !get("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some_and(|v| is_truthy(&v));
        let (token, token_source) = if let Some(t) = &flags.token {
            (Token::new(t)?, TokenSource::Flag)
        } else if !implicit {
            (None, TokenSource::None)
        } else if let Some(t) = get("HF_TOKEN") {
            (Token::new(&t)?, TokenSource::Env)
        } else {
            let path = get("HF_TOKEN_PATH")
                .map(&expand)
                .or_else(|| hf_home.as_ref().map(|h| h.join("token")));
            match path {
                Some(p) => match std::fs::read_to_string(&p) {
                    Ok(s) => match Token::new(&s)? {
                        Some(t) => (Some(t), TokenSource::File(p)),
                        None => (None, TokenSource::None),
                    },
                    Err(_) => (None, TokenSource::None),
                },
                None => (None, TokenSource::None),
            }
        };
        let token_source = if token.is_some() {
            token_source
        } else {
            TokenSource::None
        };

        let offline = flags.offline || get("HF_HUB_OFFLINE").is_some_and(|v| is_truthy(&v));

        let mut retry = RetryPolicy::default();
        if let Some(ms) = get("BITCONV_HUB_RETRY_BASE_MS").and_then(|v| v.trim().parse().ok()) {
            retry.base_delay = Duration::from_millis(ms);
            retry.max_delay = retry
                .max_delay
                .min(Duration::from_millis(ms.saturating_mul(16)));
        }

        Ok(HubConfig {
            endpoint,
            token,
            token_source,
            cache_dir,
            offline,
            retry,
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            user_agent: format!("bitconv/{}", env!("CARGO_PKG_VERSION")),
        })
    }

    /// A configuration for `endpoint` and `cache_dir` with no token, online, default retries.
    pub fn new(endpoint: &str, cache_dir: &Path) -> Result<HubConfig, HubError> {
        let flags = HubFlags {
            endpoint: Some(endpoint.to_owned()),
            cache_dir: Some(cache_dir.to_path_buf()),
            ..HubFlags::default()
        };
        HubConfig::resolve(&flags, &|_| None)
    }

    /// Replaces the token (`None` removes it).
    pub fn with_token(mut self, token: Option<&str>) -> Result<HubConfig, HubError> {
        self.token = match token {
            Some(t) => Token::new(t)?,
            None => None,
        };
        self.token_source = if self.token.is_some() {
            TokenSource::Flag
        } else {
            TokenSource::None
        };
        Ok(self)
    }
}

fn expand_tilde(value: &str, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix("~"), home) {
        (Some(rest), Some(h)) if rest.is_empty() || rest.starts_with('/') => {
            h.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(value),
    }
}

fn normalize_endpoint(raw: &str) -> Result<String, HubError> {
    let e = raw.trim().trim_end_matches('/');
    let ok_scheme = e.starts_with("https://") || e.starts_with("http://");
    let bad_char = e
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#');
    if e.contains('@') {
        // Never echo it: the part before `@` may be a credential.
        return Err(HubError::Config(
            "invalid Hub endpoint: credentials in the URL are not supported (use --token)".into(),
        ));
    }
    if !ok_scheme || bad_char || super::url::Origin::parse(e).is_none() {
        return Err(HubError::Config(format!(
            "invalid Hub endpoint {raw:?}: expected http(s)://host[:port][/path]"
        )));
    }
    Ok(e.to_owned())
}
