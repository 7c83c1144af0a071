//! URLs: the origin (scheme, host, port) a token is bound to, and `Location` headers resolved
//! against the URL that sent them. Both the configuration (which validates the endpoint) and
//! the HTTP layer (which follows redirects) use them.

/// Scheme, lowercase host and port (with the scheme's default) of a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses the origin of an absolute `http(s)://` URL; `None` for anything else.
    pub fn parse(url: &str) -> Option<Origin> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') || authority.is_empty() {
            return None;
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => default_port,
                None => return None,
            };
            (format!("[{}]", h.to_ascii_lowercase()), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), p.parse().ok()?),
                None => (authority.to_ascii_lowercase(), default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Origin { scheme, host, port })
    }

    /// Whether the host is a loopback name or address (never sent through a proxy).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.starts_with("127.") || self.host == "[::1]"
    }
}

/// Resolves a `Location` header against the URL that answered with it.
pub fn resolve_location(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    // Any other scheme (`file:`, `ftp:`, ...) is refused.
    let scheme_end = location.find(':');
    let first_delim = location.find(['/', '?', '#']);
    if let Some(i) = scheme_end {
        let scheme = &location[..i];
        let is_scheme = !scheme.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme && first_delim.is_none_or(|d| i < d) {
            return None;
        }
    }
    let origin = Origin::parse(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{}://{rest}", origin.scheme));
    }
    // `scheme://authority` exactly as written in the base URL.
    let after_scheme = base.find("://")? + 3;
    let authority_end = base[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(base.len(), |i| after_scheme + i);
    let prefix = &base[..authority_end];
    if location.starts_with('/') {
        return Some(format!("{prefix}{location}"));
    }
    let path = base[authority_end..].split(['?', '#']).next().unwrap_or("");
    match path.rfind('/') {
        Some(i) => Some(format!("{prefix}{}{location}", &path[..=i])),
        None => Some(format!("{prefix}/{location}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let a = Origin::parse("https://huggingface.co/api/models").unwrap();
        let b = Origin::parse("https://HuggingFace.co:443/x").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Origin::parse("http://huggingface.co/").unwrap());
        assert_ne!(a, Origin::parse("https://cdn-lfs.huggingface.co/").unwrap());
        assert_ne!(
            Origin::parse("http://127.0.0.1:1000").unwrap(),
            Origin::parse("http://127.0.0.1:1001").unwrap()
        );
        assert_ne!(
            Origin::parse("http://127.0.0.1:1000").unwrap(),
            Origin::parse("http://localhost:1000").unwrap()
        );
        assert!(Origin::parse("http://user@evil.com/").is_none());
        assert!(Origin::parse("ftp://x/").is_none());
        assert!(Origin::parse("http://[::1]:8080/").unwrap().is_loopback());
    }

    #[test]
    fn locations() {
        let base = "https://hub.example/org/m/resolve/abc/config.json?x=1";
        assert_eq!(
            resolve_location(base, "https://cdn.example/a?b").unwrap(),
            "https://cdn.example/a?b"
        );
        assert_eq!(
            resolve_location(base, "/api/x").unwrap(),
            "https://hub.example/api/x"
        );
        assert_eq!(
            resolve_location(base, "//cdn.example/y").unwrap(),
            "https://cdn.example/y"
        );
        assert_eq!(
            resolve_location(base, "other.json").unwrap(),
            "https://hub.example/org/m/resolve/abc/other.json"
        );
        assert_eq!(resolve_location(base, "file:///etc/passwd"), None);
        assert_eq!(resolve_location(base, "ftp://x/y"), None);
        assert_eq!(resolve_location(base, "a:b/c"), None);
        assert_eq!(
            resolve_location(base, "x/a:b").unwrap(),
            "https://hub.example/org/m/resolve/abc/x/a:b"
        );
    }
}
