//! Small shared pieces: atomic output files.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// The temporary files of this process's live [`AtomicFile`]s, removed by the SIGINT/SIGTERM
/// watcher ([`remove_temporaries_on_signals`]) before the process exits.
static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a thread that, on SIGINT or SIGTERM, removes every temporary file of a live
/// [`AtomicFile`] and exits with 128 + the signal number (as a shell reports a signal), so an
/// interrupted conversion leaves nothing behind. Call once, early in `main`. (SIGKILL cannot be
/// caught: the temporary of a killed process is removed by the next run writing beside it, see
/// [`AtomicFile::create`].)
pub fn remove_temporaries_on_signals() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                for p in live().iter() {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(128 + sig);
            }
        });
    }
}

/// Whether process `pid` is alive (Linux: `/proc/PID` exists; elsewhere assumed alive).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        Path::new("/proc").join(pid.to_string()).exists()
    } else {
        true
    }
}

/// Removes temporaries `.{name}.{pid}.{n}.tmp` in `dir` left by processes that no longer run
/// (a run killed with SIGKILL cannot clean up after itself).
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(f) = file.to_str() else { continue };
        let Some(rest) = f.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else {
            continue;
        };
        let mut parts = rest.split('.');
        let (Some(pid), Some(n), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), n.parse::<u32>()) else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A file written under a temporary name in the target's directory and renamed over the target
/// only by [`commit`](AtomicFile::commit). Dropped without a commit, the temporary is removed,
/// so a failed run never leaves a half-written output behind.
pub struct AtomicFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Creates the temporary file beside `target`.
    ///
    /// A target that exists must be a regular file, or a symbolic link to one, which is then
    /// written through (the link's destination is replaced, the link stays). Anything else (a
    /// directory, a character device such as `/dev/null`, a FIFO, a socket) is refused before
    /// any work is done: renaming over it would replace a device node with a regular file.
    pub fn create(target: &Path) -> io::Result<AtomicFile> {
        let target = &resolve_target(target)?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "output path has no file name")
            })?
            .to_string_lossy()
            .into_owned();
        remove_stale_temporaries(&dir, &name);
        let mut n = 0u32;
        loop {
            let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    live().push(tmp.clone());
                    return Ok(AtomicFile {
                        target: target.to_path_buf(),
                        tmp,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file present until commit")
    }

    /// The temporary path.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the temporary over the target.
    ///
    /// There is deliberately no fsync: readers never see a partial file (the rename is atomic
    /// and happens after the last write), and forcing the data to disk would tie every
    /// conversion to the disk's synchronous write speed (0.1–0.3 GB/s on the CI machines).
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("file present until commit");
        drop(file);
        let r = std::fs::rename(&self.tmp, &self.target);
        if r.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        self.forget();
        r
    }

    fn forget(&self) {
        live().retain(|p| p != &self.tmp);
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
            self.forget();
        }
    }
}

/// The path to write for `target`: the target itself, or the final destination of a symbolic
/// link; an error where what exists there is not a regular file.
fn resolve_target(target: &Path) -> io::Result<PathBuf> {
    let mut path = target.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path),
            Err(e) => return Err(e),
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&path)?;
                path = match path.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            Ok(m) if m.is_file() => return Ok(path),
            Ok(m) => {
                let what = if m.is_dir() {
                    "a directory"
                } else {
                    "not a regular file (a device, FIFO or socket)"
                };
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is {what}; refusing to replace it", path.display()),
                ));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: too many levels of symbolic links", target.display()),
    ))
}

/// The digest `D` of `prefix` followed by a file's bytes, as lowercase hex, read in pieces (a
/// model file is never held whole).
pub fn hash_file<D: sha2::Digest>(path: &Path, prefix: &[u8]) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = D::new();
    h.update(prefix);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match io::Read::read(&mut f, &mut buf)? {
            0 => break,
            n => h.update(&buf[..n]),
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The sha256 of a file as lowercase hex ([`hash_file`]).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    hash_file::<sha2::Sha256>(path, b"")
}

/// Tells the kernel that bytes `range` of a read-only file mapping will not be read again soon,
/// so their pages leave this process's resident set (they stay in the page cache): a reader
/// that releases what it has read holds memory independent of the file's size. A no-op where
/// unsupported.
pub fn release_pages(map: &memmap2::Mmap, range: std::ops::Range<usize>) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = (range.end / PAGE * PAGE).min(map.len());
        if end > start {
            // SAFETY: a read-only file mapping; MADV_DONTNEED only drops pages, which the
            // kernel faults back in from the file on the next access, so no reference into the
            // map observes different bytes.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
    #[cfg(not(unix))]
    let _ = (map, range);
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn devices_directories_and_fifos_are_refused_and_links_written_through() {
        for bad in ["/dev/null", "/tmp"] {
            let e = AtomicFile::create(Path::new(bad)).err().expect(bad);
            assert!(e.to_string().contains("refusing"), "{bad}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.gguf");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.gguf");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("real.gguf", &link).unwrap();
            let mut f = AtomicFile::create(&link).unwrap();
            std::io::Write::write_all(f.file(), b"new").unwrap();
            f.commit().unwrap();
            assert!(std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(std::fs::read(&real).unwrap(), b"new");
            let fifo = dir.path().join("fifo");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert!(AtomicFile::create(&fifo).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn uncommitted_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.gguf");
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.file().write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut f = AtomicFile::create(&target).unwrap();
        f.file().write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}

/// Progress for logs and pipes, where a redrawn bar shows nothing: one line when the work
/// starts, then at most one line per interval (10 s; `BITCONV_PROGRESS_SECS` sets it), and one
/// when it ends. Lines go to stderr, e.g. `converting: 1.2 GB / 13.3 GB (9%), 0.61 GB/s`.
pub struct LineProgress {
    label: String,
    total: Option<u64>,
    pos: std::sync::atomic::AtomicU64,
    start: std::time::Instant,
    last: std::sync::Mutex<std::time::Instant>,
    every: std::time::Duration,
}

impl LineProgress {
    /// Starts reporting `label` over `total` bytes (unknown when `None`); prints the first line.
    pub fn new(label: &str, total: Option<u64>) -> LineProgress {
        let secs = std::env::var("BITCONV_PROGRESS_SECS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(10.0);
        let now = std::time::Instant::now();
        let p = LineProgress {
            label: label.to_owned(),
            total,
            pos: std::sync::atomic::AtomicU64::new(0),
            start: now,
            last: std::sync::Mutex::new(now),
            every: std::time::Duration::from_secs_f64(secs),
        };
        p.print("started");
        p
    }

    /// Adds `n` bytes of progress.
    pub fn inc(&self, n: u64) {
        self.pos.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        self.tick();
    }

    /// Sets the position (a resumed download starts past zero).
    pub fn set_position(&self, pos: u64) {
        self.pos.store(pos, std::sync::atomic::Ordering::Relaxed);
        self.tick();
    }

    /// Prints the closing line.
    pub fn finish(&self) {
        self.print("done");
    }

    fn tick(&self) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed() >= self.every {
            *last = std::time::Instant::now();
            drop(last);
            self.print("");
        }
    }

    fn print(&self, state: &str) {
        let pos = self.pos.load(std::sync::atomic::Ordering::Relaxed);
        let big = self.total.unwrap_or(pos) >= 1_000_000_000;
        let (unit, div) = if big { ("GB", 1e9) } else { ("MB", 1e6) };
        let gb = |b: u64| b as f64 / div;
        let mut line = format!("{}: {:.2} {unit}", self.label, gb(pos));
        if let Some(t) = self.total {
            line.push_str(&format!(" / {:.2} {unit}", gb(t)));
            if t > 0 {
                line.push_str(&format!(" ({:.0}%)", 100.0 * pos as f64 / t as f64));
            }
        }
        let secs = self.start.elapsed().as_secs_f64();
        if secs > 0.0 && pos > 0 {
            line.push_str(&format!(", {:.2} {unit}/s", gb(pos) / secs));
        }
        if !state.is_empty() {
            line.push_str(&format!(" [{state}]"));
        }
        eprintln!("{line}");
    }
}
