//! The progress bar on stderr: images done of the run's total, rate and ETA. Drawn only on a
//! terminal (indicatif hides it otherwise), so logs and CI output stay clean.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub(crate) fn new(total: usize, enabled: bool) -> Progress {
        let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(Some(total as u64), target);
        let style = ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} images, {per_sec}, ETA {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Progress { bar }
    }

    pub(crate) fn advance(&self, images: usize, failed: usize) {
        self.bar.inc(images as u64);
        if failed > 0 {
            self.bar.set_message(format!("({failed} failed)"));
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.abandon();
    }
}
