//! A small HTTP layer over `ureq` that follows redirects itself, so the token is attached only
//! to requests whose origin (scheme, host, port) is the configured endpoint's; retries with
//! exponential backoff; and the helpers to read the Hub's headers.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ureq::http::Response;
use ureq::Body;

use super::config::{HubConfig, RetryPolicy, Token};
use super::url::{resolve_location, Origin};

/// Redirect hops followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// Which request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
}

/// A response after redirects.
pub struct Reply {
    /// The final response.
    pub response: Response<Body>,
    /// Whether the token went with the final request.
    pub token_sent: bool,
}

impl Reply {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    /// A header value as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    }

    /// Whether this is a redirect that was not followed.
    pub fn is_redirect(&self) -> bool {
        matches!(self.status(), 301 | 302 | 303 | 307 | 308) && self.header("location").is_some()
    }

    /// The body as text (at most 64 MiB).
    pub fn text(self) -> Result<String, ureq::Error> {
        let mut response = self.response;
        response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
    }

    /// The body as a reader.
    pub fn into_reader(self) -> impl Read {
        self.response.into_body().into_reader()
    }
}

/// The outcome of one attempt of a retried operation.
pub enum Failure<E> {
    /// Worth retrying: connection trouble, timeouts, 408/429/5xx.
    Transient {
        /// A description (never containing the token).
        detail: String,
        /// The HTTP status, if the failure was one.
        status: Option<u16>,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying (boxed: errors are large).
    Fatal(Box<E>),
}

/// Whether a `ureq` error is worth retrying.
pub fn is_transient(err: &ureq::Error) -> bool {
    matches!(
        err,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// Whether a status code is worth retrying.
pub fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The client: two agents (one honouring proxy variables, one direct for loopback hosts), the
/// endpoint's origin, the token and the retry policy.
pub struct Client {
    agent: ureq::Agent,
    direct: ureq::Agent,
    endpoint: Origin,
    token: Option<Token>,
    /// Retry policy for every request.
    pub retry: RetryPolicy,
}

impl Client {
    /// Builds the agents from the configuration.
    pub fn new(cfg: &HubConfig) -> Client {
        let build = |direct: bool| -> ureq::Agent {
            let mut b = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_connect(Some(cfg.connect_timeout))
                .timeout_per_read(Some(cfg.read_timeout))
                .user_agent(cfg.user_agent.as_str());
            if direct {
                b = b.proxy(None);
            }
            b.build().into()
        };
        Client {
            agent: build(false),
            direct: build(true),
            endpoint: Origin::parse(&cfg.endpoint).expect("endpoint validated by HubConfig"),
            token: cfg.token.clone(),
            retry: cfg.retry.clone(),
        }
    }

    /// Removes any occurrence of the token from text that came from elsewhere.
    pub fn scrub(&self, text: &str) -> String {
        match &self.token {
            Some(t) => text.replace(t.expose(), "<redacted>"),
            None => text.to_owned(),
        }
    }

    /// Sends one request and follows redirects: the `Authorization` header goes only to the
    /// endpoint's origin. With `stop_at_foreign_redirect`, a redirect to another origin that
    /// carries file metadata (`X-Linked-Etag`/`ETag`) is returned instead of followed (the
    /// Hub's answer for LFS files on `HEAD`).
    pub fn send(
        &self,
        method: Method,
        url: &str,
        range_from: Option<u64>,
        stop_at_foreign_redirect: bool,
    ) -> Result<Reply, ureq::Error> {
        let mut url = url.to_owned();
        let mut method = method;
        for _ in 0..=MAX_REDIRECTS {
            let origin = Origin::parse(&url).ok_or_else(|| ureq::Error::BadUri(url.clone()))?;
            let agent = if origin.is_loopback() {
                &self.direct
            } else {
                &self.agent
            };
            let mut req = match method {
                Method::Get => agent.get(&url),
                Method::Head => agent.head(&url),
            }
            .header("Accept-Encoding", "identity");
            let auth = match &self.token {
                Some(t) if origin == self.endpoint => Some(t),
                _ => None,
            };
            if let Some(t) = auth {
                req = req.header("Authorization", format!("Bearer {}", t.expose()));
            }
            if let Some(start) = range_from {
                req = req.header("Range", format!("bytes={start}-"));
            }
            let response = req.call()?;
            let reply = Reply {
                response,
                token_sent: auth.is_some(),
            };
            if !reply.is_redirect() {
                return Ok(reply);
            }
            let location = reply.header("location").unwrap_or_default().to_owned();
            let next = resolve_location(&url, &location)
                .ok_or_else(|| ureq::Error::BadUri(format!("redirect to {location:?}")))?;
            let foreign = Origin::parse(&next).as_ref() != Some(&origin);
            let has_meta =
                reply.header("x-linked-etag").is_some() || reply.header("etag").is_some();
            if stop_at_foreign_redirect && foreign && has_meta {
                return Ok(reply);
            }
            if reply.status() == 303 {
                method = Method::Get;
            }
            url = next;
        }
        Err(ureq::Error::TooManyRedirects)
    }

    /// Runs `op` until it succeeds, fails fatally, or the attempts are used up; sleeps with
    /// exponential backoff between attempts. `op` receives the attempt number (1-based) and
    /// returns whether it made progress (a failed attempt that made progress does not count
    /// against the limit). On exhaustion, `exhausted(attempts, detail, status)` builds the
    /// error.
    pub fn retrying<T, E>(
        &self,
        mut op: impl FnMut(u32) -> Result<T, (Failure<E>, bool)>,
        exhausted: impl FnOnce(u32, String, Option<u16>) -> E,
    ) -> Result<T, E> {
        let max = self.retry.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut failures = 0u32;
        loop {
            attempt += 1;
            match op(attempt) {
                Ok(v) => return Ok(v),
                Err((Failure::Fatal(e), _)) => return Err(*e),
                Err((
                    Failure::Transient {
                        detail,
                        status,
                        retry_after,
                    },
                    progressed,
                )) => {
                    failures = if progressed { 1 } else { failures + 1 };
                    if failures >= max {
                        return Err(exhausted(attempt, self.scrub(&detail), status));
                    }
                    let base = self.retry.delay(failures);
                    let delay = match retry_after {
                        Some(ra) => ra.min(self.retry.max_delay).max(base),
                        None => base + jitter(base / 4),
                    };
                    std::thread::sleep(delay);
                }
            }
        }
    }
}

/// A pseudo-random duration in `[0, max]`.
fn jitter(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u128;
    let max_ns = max.as_nanos();
    if max_ns == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos((nanos.wrapping_mul(2_654_435_761) % (max_ns + 1)) as u64)
}

/// Parses `Retry-After` given in seconds.
pub fn retry_after(reply: &Reply) -> Option<Duration> {
    reply
        .header("retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(350));
    }
}
