//! How long-running library work (an evaluation, a training epoch) reports its progress without
//! knowing who watches: the `wesam` command renders it as progress bars, tests and other
//! callers pass [`Silent`].

/// Receives the progress of a stretch of work counted in units (images, steps).
pub trait Progress: Sync {
    /// A stretch named `what` of `total` units starts, `done` of them already done (a resumed
    /// epoch starts part-way).
    fn begin(&self, _what: &str, _total: usize, _done: usize) {}
    /// One more unit is done; `status` says how it went (running mIoU, loss).
    fn advance(&self, _status: &str) {}
    /// The stretch is over: `completed` is false when it was abandoned part-way.
    fn end(&self, _completed: bool) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
