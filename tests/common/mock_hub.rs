//! A local imitation of the Hugging Face Hub on 127.0.0.1, for tests of `bitconv::hub` and for
//! filling a cache with Python's `huggingface_hub` (`HF_ENDPOINT=<url>`).
//!
//! It speaks what both clients use:
//! - `GET /api/models/{repo}[/revision/{rev}]` → `{"id", "sha", "siblings": [{"rfilename"}]}`;
//! - `GET /api/models/{repo}/tree/{rev}[/...]` → the recursive file list (one page);
//! - `HEAD`/`GET /{repo}/resolve/{rev}/{path}` → `ETag`/`X-Linked-Etag` (sha256 for LFS files),
//!   `X-Linked-Size`, `X-Repo-Commit`, `Content-Length`, `Range` requests (206/416); with a CDN
//!   attached, LFS files answer `302` to the CDN (a second server on another port) carrying the
//!   metadata headers, like the real Hub;
//! - the Hub's error headers `X-Error-Code`/`X-Error-Message` (`RepoNotFound`,
//!   `RevisionNotFound`, `EntryNotFound`, `GatedRepo`).
//!
//! Every request is logged (method, path, headers); faults can be injected per file or path:
//! status codes, connections dropped after N body bytes, corrupted bytes, throttling.
//! Connections are closed after each response.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The bytes of a file or response: in memory, or a mapped file (for benchmarks that serve
/// checkpoints of many gigabytes).
#[derive(Clone)]
pub struct Content(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl std::ops::Deref for Content {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Content({} bytes)", self.len())
    }
}

impl From<Vec<u8>> for Content {
    fn from(v: Vec<u8>) -> Content {
        Content(Arc::new(v))
    }
}

/// One file of a mock repository.
#[derive(Clone, Debug)]
pub struct MockFile {
    /// Repository-relative path.
    pub path: String,
    /// Content.
    pub content: Content,
    /// Stored with LFS (ETag = sha256, served through the CDN when there is one).
    pub lfs: bool,
    /// sha256 of the content (hex).
    pub sha256: String,
    /// The git blob id (`sha1("blob <len>\0" + content)`, 40 hex), the ETag of non-LFS files.
    pub oid: String,
}

impl MockFile {
    /// A file; `lfs` decides its ETag kind.
    pub fn new(path: &str, content: Vec<u8>, lfs: bool) -> MockFile {
        MockFile::with_content(path, content.into(), lfs)
    }

    /// A file whose bytes are any [`Content`].
    pub fn with_content(path: &str, content: Content, lfs: bool) -> MockFile {
        let sha256 = hex(&Sha256::digest(&content[..]));
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", content.len()).as_bytes());
        h.update(&content[..]);
        let oid = hex(&h.finalize());
        MockFile {
            path: path.to_owned(),
            content,
            lfs,
            sha256,
            oid,
        }
    }

    /// The ETag the Hub gives this file (unquoted).
    pub fn etag(&self) -> &str {
        if self.lfs {
            &self.sha256
        } else {
            &self.oid
        }
    }
}

/// A mock model repository.
#[derive(Clone, Debug)]
pub struct MockRepo {
    /// `org/name`.
    pub id: String,
    /// The commit `main` points to.
    pub commit: String,
    /// Other branch/tag names → commit.
    pub refs: HashMap<String, String>,
    /// Files (the same for every commit).
    pub files: Vec<MockFile>,
    /// Token needed for downloads (the listing is public, like a gated repo on the Hub).
    pub gated_token: Option<String>,
    /// Token needed for everything (the repo is invisible without it).
    pub private_token: Option<String>,
    /// Names to list instead of the real files (for hostile listings).
    pub listing_override: Option<Vec<String>>,
}

/// The commit hash used by [`MockRepo::from_dir`] unless changed.
pub const TINY_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl MockRepo {
    /// An empty repository at `commit`.
    pub fn new(id: &str, commit: &str) -> MockRepo {
        MockRepo {
            id: id.to_owned(),
            commit: commit.to_owned(),
            refs: HashMap::new(),
            files: Vec::new(),
            gated_token: None,
            private_token: None,
            listing_override: None,
        }
    }

    /// A repository with the regular files of `dir` (sorted); `*.safetensors`, `*.model` and
    /// anything over 10 KB are LFS files.
    pub fn from_dir(id: &str, dir: &Path) -> MockRepo {
        MockRepo::from_dir_mapping_over(id, dir, u64::MAX)
    }

    /// As [`MockRepo::from_dir`], but files over 1 MB are served from a memory map instead of
    /// being read into memory (checkpoints of many gigabytes, for benchmarks).
    pub fn from_dir_mapped(id: &str, dir: &Path) -> MockRepo {
        MockRepo::from_dir_mapping_over(id, dir, 1 << 20)
    }

    fn from_dir_mapping_over(id: &str, dir: &Path, map_over: u64) -> MockRepo {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("mock repo dir")
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        let mut repo = MockRepo::new(id, TINY_COMMIT);
        for p in names {
            let name = p.file_name().unwrap().to_str().unwrap().to_owned();
            let len = std::fs::metadata(&p).unwrap().len();
            let content: Content = if len > map_over {
                let f = std::fs::File::open(&p).unwrap();
                // SAFETY: a test's or benchmark's own input, not modified while served.
                Content(Arc::new(unsafe { memmap2::Mmap::map(&f) }.unwrap()))
            } else {
                std::fs::read(&p).unwrap().into()
            };
            let lfs = name.ends_with(".safetensors") || name.ends_with(".model") || len > 10_000;
            repo.files.push(MockFile::with_content(&name, content, lfs));
        }
        repo
    }

    /// Adds a file.
    pub fn file(mut self, path: &str, content: &[u8], lfs: bool) -> MockRepo {
        self.files.push(MockFile::new(path, content.to_vec(), lfs));
        self
    }

    /// Adds a branch or tag name for the commit.
    pub fn with_ref(mut self, name: &str) -> MockRepo {
        let commit = self.commit.clone();
        self.refs.insert(name.to_owned(), commit);
        self
    }

    /// Downloads need `Authorization: Bearer <token>`.
    pub fn gated(mut self, token: &str) -> MockRepo {
        self.gated_token = Some(token.to_owned());
        self
    }

    /// Everything needs `Authorization: Bearer <token>`.
    pub fn private(mut self, token: &str) -> MockRepo {
        self.private_token = Some(token.to_owned());
        self
    }

    /// Lists these names instead of the files.
    pub fn with_listing(mut self, names: &[&str]) -> MockRepo {
        self.listing_override = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }

    fn resolve_rev(&self, rev: &str) -> Option<String> {
        if rev == self.commit || rev == "main" {
            return Some(self.commit.clone());
        }
        self.refs.get(rev).cloned()
    }

    /// A file by path.
    pub fn get(&self, path: &str) -> Option<&MockFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// A logged request.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path with query, as sent.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a fault does.
#[derive(Clone, Debug)]
pub enum FaultKind {
    /// Answer this status instead.
    Status(u16),
    /// Send the headers and this many body bytes, then close the connection.
    DropAfter(usize),
    /// Flip one byte in the middle of the body.
    Corrupt,
}

#[derive(Clone, Debug)]
struct Fault {
    /// Substring of the request path, or the repo file name (for body faults).
    target: String,
    method: Option<String>,
    kind: FaultKind,
    remaining: usize,
}

#[derive(Default)]
struct Shared {
    repos: Mutex<Vec<MockRepo>>,
    faults: Mutex<Vec<Fault>>,
    throttle: Mutex<Option<(usize, Duration)>>,
    ignore_range: AtomicBool,
    cdn_base: Mutex<Option<String>>,
    /// Response bodies being written now, and the most there ever were at once.
    bodies: Mutex<(usize, usize)>,
}

struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(shared: Arc<Shared>, is_cdn: bool) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (shared, log) = (shared.clone(), log2.clone());
                thread::spawn(move || {
                    let _ = serve(stream, &shared, &log, is_cdn);
                });
            }
        });
        Server { addr, log, stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// The mock Hub (and optionally its CDN).
pub struct MockHub {
    shared: Arc<Shared>,
    hub: Server,
    cdn: Option<Server>,
}

impl MockHub {
    /// Starts a hub serving `repos`, LFS files served directly.
    pub fn start(repos: Vec<MockRepo>) -> MockHub {
        let shared = Arc::new(Shared::default());
        *shared.repos.lock().unwrap() = repos;
        let hub = Server::start(shared.clone(), false);
        MockHub {
            shared,
            hub,
            cdn: None,
        }
    }

    /// Starts a hub whose LFS files redirect (302) to a CDN server on another port.
    pub fn start_with_cdn(repos: Vec<MockRepo>) -> MockHub {
        let mut hub = MockHub::start(repos);
        let cdn = Server::start(hub.shared.clone(), true);
        *hub.shared.cdn_base.lock().unwrap() = Some(format!("http://{}", cdn.addr));
        hub.cdn = Some(cdn);
        hub
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("http://{}", self.hub.addr)
    }

    /// The CDN URL, if any.
    pub fn cdn_url(&self) -> Option<String> {
        self.cdn.as_ref().map(|c| format!("http://{}", c.addr))
    }

    /// Requests the hub received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.hub.log.lock().unwrap().clone()
    }

    /// Requests the CDN received, in order.
    pub fn cdn_requests(&self) -> Vec<Request> {
        self.cdn
            .as_ref()
            .map(|c| c.log.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Hub and CDN requests.
    pub fn all_requests(&self) -> Vec<Request> {
        let mut v = self.requests();
        v.extend(self.cdn_requests());
        v
    }

    /// Forgets the logged requests.
    pub fn clear_log(&self) {
        self.hub.log.lock().unwrap().clear();
        if let Some(c) = &self.cdn {
            c.log.lock().unwrap().clear();
        }
    }

    /// The hub and CDN requests for the body of repo file `name` (GETs of its resolve URL
    /// answered directly, or of its CDN URL).
    pub fn body_gets(&self, repo: &str, name: &str) -> Vec<Request> {
        let sha = self.file(repo, name).map(|f| f.sha256).unwrap_or_default();
        let cdn_path = format!("/cdn/{sha}");
        let resolve = format!("/{repo}/resolve/");
        let suffix = format!("/{name}");
        let mut out: Vec<Request> = self
            .requests()
            .into_iter()
            .filter(|r| {
                r.method == "GET" && r.path.starts_with(&resolve) && r.path.ends_with(&suffix)
            })
            .collect();
        if self.cdn.is_some() && self.file(repo, name).is_some_and(|f| f.lfs) {
            out = self
                .cdn_requests()
                .into_iter()
                .filter(|r| r.method == "GET" && r.path.starts_with(&cdn_path))
                .collect();
        }
        out
    }

    /// A copy of a repo file.
    pub fn file(&self, repo: &str, name: &str) -> Option<MockFile> {
        let repos = self.shared.repos.lock().unwrap();
        repos
            .iter()
            .find(|r| r.id == repo)
            .and_then(|r| r.get(name).cloned())
    }

    /// Replaces the repositories.
    pub fn set_repos(&self, repos: Vec<MockRepo>) {
        *self.shared.repos.lock().unwrap() = repos;
    }

    /// Requests whose path contains `path_part` (and whose method is `method`, if given) get
    /// `status` the next `times` times.
    pub fn fail(&self, method: Option<&str>, path_part: &str, status: u16, times: usize) {
        self.push_fault(method, path_part, FaultKind::Status(status), times);
    }

    /// The next `times` bodies of repo file `name` stop after `bytes` bytes.
    pub fn drop_body_after(&self, name: &str, bytes: usize, times: usize) {
        self.push_fault(Some("GET"), name, FaultKind::DropAfter(bytes), times);
    }

    /// Bodies of repo file `name` have one byte flipped, the next `times` times.
    pub fn corrupt_body(&self, name: &str, times: usize) {
        self.push_fault(Some("GET"), name, FaultKind::Corrupt, times);
    }

    /// The most response bodies the hub and its CDN were ever writing at the same time.
    pub fn max_concurrent_bodies(&self) -> usize {
        self.shared.bodies.lock().unwrap().1
    }

    /// Bodies are written `chunk` bytes at a time with `delay` in between.
    pub fn throttle(&self, chunk: usize, delay: Duration) {
        *self.shared.throttle.lock().unwrap() = Some((chunk, delay));
    }

    /// Answer `Range` requests with the whole body (200), like some mirrors and proxies.
    pub fn ignore_range(&self, yes: bool) {
        self.shared.ignore_range.store(yes, Ordering::SeqCst);
    }

    fn push_fault(&self, method: Option<&str>, target: &str, kind: FaultKind, times: usize) {
        self.shared.faults.lock().unwrap().push(Fault {
            target: target.to_owned(),
            method: method.map(str::to_owned),
            kind,
            remaining: times,
        });
    }
}

// ---------------------------------------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Content,
    /// Byte range of `body` to send.
    range: (usize, usize),
    /// Send no body (HEAD) but keep Content-Length.
    head: bool,
    drop_after: Option<usize>,
    corrupt: bool,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new().into(),
            range: (0, 0),
            head: false,
            drop_after: None,
            corrupt: false,
        }
    }

    fn header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.to_owned(), v.into()));
        self
    }

    fn body(mut self, body: Vec<u8>) -> Response {
        self.range = (0, body.len());
        self.body = body.into();
        self
    }

    fn json(self, value: &serde_json::Value) -> Response {
        self.header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    fn error(status: u16, code: &str, message: &str) -> Response {
        Response::new(status)
            .header("X-Error-Code", code)
            .header("X-Error-Message", message)
            .json(&serde_json::json!({ "error": message }))
    }
}

fn serve(
    stream: TcpStream,
    shared: &Shared,
    log: &Mutex<Vec<Request>>,
    is_cdn: bool,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let req = Request {
        method,
        path,
        headers,
    };
    log.lock().unwrap().push(req.clone());
    let resp = route(shared, &req, is_cdn);
    write_response(stream, shared, resp)
}

/// The next body fault (drop/corrupt) for repo file `file`, consumed.
fn take_body_fault(shared: &Shared, req: &Request, file: &str) -> Option<FaultKind> {
    let mut faults = shared.faults.lock().unwrap();
    for f in faults.iter_mut() {
        if f.remaining == 0 || f.method.as_deref().is_some_and(|m| m != req.method) {
            continue;
        }
        if !matches!(f.kind, FaultKind::Status(_)) && f.target == file {
            f.remaining -= 1;
            return Some(f.kind.clone());
        }
    }
    None
}

fn route(shared: &Shared, req: &Request, is_cdn: bool) -> Response {
    let raw_path = req.path.split('?').next().unwrap_or("").to_owned();
    if let Some(FaultKind::Status(s)) = take_fault_status(shared, req) {
        return Response::error(s, "Injected", &format!("injected HTTP {s}"));
    }
    let repos = shared.repos.lock().unwrap().clone();
    if is_cdn {
        return route_cdn(shared, req, &repos, &raw_path);
    }
    let segs: Vec<String> = raw_path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let auth = req.header("authorization").map(str::to_owned);
    let authorized = |token: &Option<String>| {
        token
            .as_ref()
            .is_none_or(|t| auth.as_deref() == Some(&format!("Bearer {t}")))
    };

    if segs.len() >= 3 && segs[0] == "api" && segs[1] == "models" {
        let Some(repo) = segs
            .get(2..4)
            .map(|s| s.join("/"))
            .and_then(|id| repos.iter().find(|r| r.id == id).cloned())
        else {
            return Response::error(401, "RepoNotFound", "Repository not found");
        };
        if !authorized(&repo.private_token) {
            return Response::error(401, "RepoNotFound", "Repository not found");
        }
        let (kind, rev) = match (segs.get(4).map(String::as_str), segs.get(5)) {
            (None, _) => ("revision", "main".to_owned()),
            (Some("revision"), Some(rev)) => ("revision", rev.clone()),
            (Some("tree"), Some(rev)) => ("tree", rev.clone()),
            _ => return Response::error(404, "", "Not found"),
        };
        let Some(commit) = repo.resolve_rev(&rev) else {
            return Response::error(404, "RevisionNotFound", &format!("Invalid rev id: {rev}"));
        };
        if kind == "tree" {
            let entries: Vec<serde_json::Value> = repo
                .files
                .iter()
                .map(|f| {
                    let mut e = serde_json::json!({
                        "type": "file", "oid": f.oid, "size": f.content.len(), "path": f.path,
                    });
                    if f.lfs {
                        e["lfs"] = serde_json::json!({
                            "oid": f.sha256, "size": f.content.len(), "pointerSize": 134,
                        });
                    }
                    e
                })
                .collect();
            return Response::new(200).json(&serde_json::Value::Array(entries));
        }
        let names: Vec<String> = repo
            .listing_override
            .clone()
            .unwrap_or_else(|| repo.files.iter().map(|f| f.path.clone()).collect());
        let siblings: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({ "rfilename": n }))
            .collect();
        return Response::new(200).json(&serde_json::json!({
            "_id": "0000", "id": repo.id, "modelId": repo.id, "sha": commit,
            "private": repo.private_token.is_some(),
            "gated": if repo.gated_token.is_some() { serde_json::json!("auto") } else { serde_json::json!(false) },
            "disabled": false, "tags": [], "siblings": siblings,
        }));
    }

    if segs.len() >= 5 && segs[2] == "resolve" {
        let id = format!("{}/{}", segs[0], segs[1]);
        let Some(repo) = repos.iter().find(|r| r.id == id).cloned() else {
            return Response::error(401, "RepoNotFound", "Repository not found");
        };
        if !authorized(&repo.private_token) {
            return Response::error(401, "RepoNotFound", "Repository not found");
        }
        if !authorized(&repo.gated_token) {
            return Response::error(
                401,
                "GatedRepo",
                &format!("Access to model {id} is restricted. You must have access to it and be authenticated to access it. Please log in."),
            );
        }
        let Some(commit) = repo.resolve_rev(&segs[3]) else {
            return Response::error(404, "RevisionNotFound", "Invalid rev id");
        };
        let name = segs[4..].join("/");
        let Some(file) = repo.get(&name).cloned() else {
            return Response::error(404, "EntryNotFound", &format!("{name} does not exist"));
        };
        let cdn = shared.cdn_base.lock().unwrap().clone();
        if let (true, Some(cdn)) = (file.lfs, cdn) {
            let body = format!("Found. Redirecting to {cdn}/cdn/{}", file.sha256).into_bytes();
            let mut r = Response::new(302)
                .header(
                    "Location",
                    format!("{cdn}/cdn/{}?X-Amz-Signature=sig", file.sha256),
                )
                .header("X-Linked-Etag", format!("\"{}\"", file.sha256))
                .header("X-Linked-Size", file.content.len().to_string())
                .header("ETag", format!("\"{}\"", file.oid))
                .header("X-Repo-Commit", commit)
                .body(body);
            r.head = req.method == "HEAD";
            return r;
        }
        let mut r = file_response(shared, req, &file)
            .header("X-Repo-Commit", commit)
            .header("ETag", format!("\"{}\"", file.etag()));
        if file.lfs {
            r = r
                .header("X-Linked-Etag", format!("\"{}\"", file.sha256))
                .header("X-Linked-Size", file.content.len().to_string());
        }
        return r;
    }
    Response::error(404, "", "Not found")
}

fn take_fault_status(shared: &Shared, req: &Request) -> Option<FaultKind> {
    let mut faults = shared.faults.lock().unwrap();
    let path = percent_decode(req.path.split('?').next().unwrap_or(""));
    for f in faults.iter_mut() {
        if f.remaining == 0 || f.method.as_deref().is_some_and(|m| m != req.method) {
            continue;
        }
        if matches!(f.kind, FaultKind::Status(_)) && path.contains(&f.target) {
            f.remaining -= 1;
            return Some(f.kind.clone());
        }
    }
    None
}

fn route_cdn(shared: &Shared, req: &Request, repos: &[MockRepo], path: &str) -> Response {
    let sha = path.strip_prefix("/cdn/").unwrap_or("");
    let file = repos
        .iter()
        .flat_map(|r| r.files.iter())
        .find(|f| f.sha256 == sha)
        .cloned();
    match file {
        Some(f) => file_response(shared, req, &f).header("ETag", format!("\"{}\"", f.sha256)),
        None => Response::new(404).body(b"no such object".to_vec()),
    }
}

/// 200 or 206 (Range) or 416 for a file body; body faults applied.
fn file_response(shared: &Shared, req: &Request, file: &MockFile) -> Response {
    let len = file.content.len();
    let mut r = Response::new(200)
        .header("Content-Type", "application/octet-stream")
        .header("Accept-Ranges", "bytes");
    r.body = file.content.clone();
    r.range = (0, len);
    r.head = req.method == "HEAD";
    let range = req
        .header("range")
        .filter(|_| !shared.ignore_range.load(Ordering::SeqCst))
        .and_then(|v| v.strip_prefix("bytes="));
    if let Some(range) = range {
        let (a, b) = range.split_once('-').unwrap_or((range, ""));
        let start: usize = a.trim().parse().unwrap_or(0);
        let end: usize = b
            .trim()
            .parse::<usize>()
            .map(|e| e + 1)
            .unwrap_or(len)
            .min(len);
        if start >= len || start >= end {
            let mut e = Response::new(416).header("Content-Range", format!("bytes */{len}"));
            e.head = r.head;
            return e;
        }
        r.status = 206;
        r.range = (start, end);
        r = r.header("Content-Range", format!("bytes {start}-{}/{len}", end - 1));
    }
    if req.method == "GET" {
        match take_body_fault(shared, req, &file.path) {
            Some(FaultKind::DropAfter(n)) => r.drop_after = Some(n),
            Some(FaultKind::Corrupt) => r.corrupt = true,
            _ => {}
        }
    }
    r
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn write_response(mut stream: TcpStream, shared: &Shared, resp: Response) -> std::io::Result<()> {
    let (start, end) = resp.range;
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        end - start
    ));
    stream.write_all(head.as_bytes())?;
    if !resp.head && resp.range.1 > resp.range.0 {
        {
            let mut b = shared.bodies.lock().unwrap();
            b.0 += 1;
            b.1 = b.1.max(b.0);
        }
        // write_body leaves the count before its last piece: once that piece is out the client
        // may start its next request, which must not overlap this body in the count.
        let mut done = false;
        let r = write_body(&mut stream, shared, &resp, &mut done);
        if !done {
            shared.bodies.lock().unwrap().0 -= 1;
        }
        r?;
    }
    stream.flush()?;
    // The request was read to its end, so closing now is a clean FIN.
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// Writes the response body (corrupted, cut short or throttled as the faults say).
fn write_body(
    stream: &mut TcpStream,
    shared: &Shared,
    resp: &Response,
    done: &mut bool,
) -> std::io::Result<()> {
    let (start, end) = resp.range;
    let body = &resp.body[start..end];
    let limit = resp.drop_after.unwrap_or(body.len()).min(body.len());
    let mid = body.len() / 2;
    let throttle = *shared.throttle.lock().unwrap();
    let (chunk, delay) = throttle.unwrap_or((1 << 20, Duration::ZERO));
    // In pieces, so a mapped body of gigabytes is never copied whole.
    let mut at = 0;
    while at < limit {
        if at > 0 && !delay.is_zero() {
            thread::sleep(delay);
        }
        let end = (at + chunk.max(1)).min(limit);
        let mut piece = body[at..end].to_vec();
        if resp.corrupt && (at..end).contains(&mid) {
            piece[mid - at] ^= 0xff;
        }
        if end == body.len() && !*done {
            shared.bodies.lock().unwrap().0 -= 1;
            *done = true;
        }
        stream.write_all(&piece)?;
        if throttle.is_some() {
            stream.flush()?;
        }
        at = end;
    }
    Ok(())
}

/// Decodes `%XX` escapes (invalid ones are kept).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let digit = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (digit(b[i + 1]), digit(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
