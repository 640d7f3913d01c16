//! Ctrl-C, SIGTERM (a scheduler's stop) and SIGHUP for long commands: the handler only sets a
//! flag, which training checks after every step and evaluation before every image, so that a
//! stop is honoured within one step or image.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set by the first Ctrl-C, SIGTERM or SIGHUP, after printing `what_now` (what the
/// command does about it).
pub fn flag(what_now: &'static str) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    // Only one handler per process; every command installs one at most.
    let _ = ctrlc::set_handler(move || {
        eprintln!("\ninterrupt: {what_now}");
        set.store(true, Ordering::SeqCst);
    });
    flag
}

/// A command stopped on request before it finished; main exits with the shell's code for an
/// interrupt (130).
#[derive(Debug)]
pub struct Stopped(pub String);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stopped {}
