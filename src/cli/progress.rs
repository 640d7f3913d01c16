//! The terminal's side of the library's reports: progress bars on standard error for
//! [`Progress`], and each [`Event`] of a run printed as a line above them.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use wesam::adapt::observer::{Event, Observer};
use wesam::progress::Progress;

/// Renders progress and events on standard error.
#[derive(Default)]
pub struct Terminal {
    bar: Mutex<Option<ProgressBar>>,
}

impl Terminal {
    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(guard) = self.bar.lock() {
            if let Some(bar) = guard.as_ref() {
                f(bar);
            }
        }
    }
}

impl Progress for Terminal {
    fn begin(&self, what: &str, total: usize, done: usize) {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (ETA {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(what.to_string());
        bar.set_position(done as u64);
        if let Ok(mut guard) = self.bar.lock() {
            *guard = Some(bar);
        }
    }

    fn advance(&self, status: &str) {
        self.with_bar(|bar| {
            bar.inc(1);
            if !status.is_empty() {
                bar.set_message(status.to_string());
            }
        });
    }

    fn end(&self, completed: bool) {
        let bar = self.bar.lock().ok().and_then(|mut guard| guard.take());
        if let Some(bar) = bar {
            if completed {
                bar.finish_and_clear();
            } else {
                bar.abandon();
            }
        }
    }
}

impl Observer for Terminal {
    fn event(&self, event: &Event) {
        let line = event.to_string();
        let mut printed = false;
        self.with_bar(|bar| {
            bar.suspend(|| eprintln!("{line}"));
            printed = true;
        });
        if !printed {
            eprintln!("{line}");
        }
    }
}

/// What a rank other than 0 shows of a run: no progress (rank 0 draws it), only the warnings
/// about its own share (a file it could not load), named by rank.
pub struct Replica(pub usize);

impl Progress for Replica {}

impl Observer for Replica {
    fn event(&self, event: &Event) {
        if event.is_warning() {
            eprintln!("rank {}: {event}", self.0);
        }
    }
}
