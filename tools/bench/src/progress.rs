//! Progress on stderr while a run ramps up and measures (indicatif; drawn only on a terminal,
//! so `--json` output and logs stay clean).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress(ProgressBar);

impl Progress {
    /// A bar counting up to `total` things (receivers joined).
    pub fn counter(total: u64, what: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        Progress(bar)
    }

    /// A bar for a measured window of `duration`.
    pub fn timer(duration: Duration, what: &str) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(duration.as_secs().max(1)), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} s")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        Progress(bar)
    }

    pub fn set(&self, position: u64) {
        self.0.set_position(position);
    }

    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}
