//! Progress on stderr: a bar on a terminal, a line every few seconds in pipes and logs
//! ([`bitconv::util::LineProgress`]), nothing with --quiet or --json.

use std::io::IsTerminal;

use bitconv::convert::Progress;
use bitconv::util::LineProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar (or its line-oriented stand-in off-terminal).
pub struct Bar(ProgressBar, Option<LineProgress>);

impl Bar {
    /// A bar over `total` bytes; `hidden` forces it off.
    pub fn bytes(total: u64, hidden: bool, what: &str) -> Bar {
        let pb = ProgressBar::new(total);
        let mut lines = None;
        if hidden || !std::io::stderr().is_terminal() {
            pb.set_draw_target(ProgressDrawTarget::hidden());
            if !hidden {
                lines = Some(LineProgress::new(what, Some(total)));
            }
        }
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        Bar(pb, lines)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
        if let Some(l) = &self.1 {
            l.finish();
        }
    }
}

impl Progress for Bar {
    fn tensor(&self, name: &str, index: usize, count: usize) {
        self.0
            .set_message(format!("{}/{} {name}", index + 1, count));
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
        if let Some(l) = &self.1 {
            l.inc(bytes);
        }
    }
}
