//! Progress bars on stderr: shown on a terminal, hidden in pipes, with --quiet or --json.

use bitconv::convert::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-counting bar.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar over `total` bytes; `hidden` forces it off.
    pub fn bytes(total: u64, hidden: bool, what: &str) -> Bar {
        let pb = ProgressBar::new(total);
        if hidden {
            pb.set_draw_target(ProgressDrawTarget::hidden());
        }
        pb.set_style(
            ProgressStyle::with_template(
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        Bar(pb)
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn tensor(&self, name: &str, index: usize, count: usize) {
        self.0
            .set_message(format!("{}/{} {name}", index + 1, count));
    }
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}
