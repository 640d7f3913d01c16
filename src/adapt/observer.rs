//! What a training run tells whoever watches it: progress through [`Progress`], and the
//! [`Event`]s a user should read (the starting model's scores, each epoch's summary, skipped
//! files). The library only describes them; the `wesam` command prints them.

use std::fmt;

use super::metrics::EpochRow;
use crate::data::FileIssue;
use crate::eval::EvalReport;
use crate::progress::{Progress, Silent};

/// Receives a run's progress and events.
pub trait Observer: Progress {
    /// Something the user should know happened.
    fn event(&self, _event: &Event) {}
}

impl Observer for Silent {}

/// A thing worth telling while a run goes on; `Display` words it for a person.
pub enum Event<'a> {
    /// The run's effective settings ([`crate::adapt::config::AdaptConfig::summary`]) and the
    /// file that holds all of them.
    Settings {
        summary: String,
        config: std::path::PathBuf,
    },
    /// The run continues from its checkpoint.
    Resumed { epoch: usize, step: usize },
    /// The starting model's scores on the evaluation split.
    Direct(&'a EvalReport),
    /// The starting model's agreement with the adaptation split's weak labels.
    DirectAgreement(f64),
    /// An evaluation skipped a file.
    EvalSkipped { what: &'a str, issue: &'a FileIssue },
    /// A training image could not be loaded and was left out of its step.
    TrainSkipped { file: String, error: String },
    /// A step's loss was not finite; the step was skipped.
    NonFinite { loss: f64, step: usize },
    /// An epoch's steps ended in a job of several ranks: the time they took, and how much of
    /// it this rank spent exchanging gradients (waiting for the others included).
    Exchange {
        exchange: std::time::Duration,
        steps: std::time::Duration,
    },
    /// An epoch ended: its row, and what the selection score measures, if there is one.
    Epoch {
        row: &'a EpochRow,
        selection: Option<&'static str>,
    },
}

impl Event<'_> {
    /// Whether the event reports a problem with the run's own share of the work (a skipped
    /// file, a skipped step), which every rank of a job tells about its own.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Event::EvalSkipped { .. } | Event::TrainSkipped { .. } | Event::NonFinite { .. }
        )
    }
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Settings { summary, config } => {
                write!(f, "settings: {summary} (all in {})", config.display())
            }
            Event::Resumed { epoch, step } => write!(f, "resuming at epoch {epoch}, step {step}"),
            Event::Direct(r) => write!(
                f,
                "direct: mIoU {:.2}, Dice {:.2} on {} images",
                r.miou, r.dice, r.images
            ),
            Event::DirectAgreement(a) => write!(f, "direct: weak-label agreement {a:.2}"),
            Event::EvalSkipped { what, issue } => {
                write!(
                    f,
                    "warning: {what}: skipped {}: {}",
                    issue.file, issue.reason
                )
            }
            Event::TrainSkipped { file, error } => write!(f, "warning: skipped {file}: {error}"),
            Event::NonFinite { loss, step } => write!(
                f,
                "warning: non-finite loss ({loss}) at step {step}: step skipped"
            ),
            Event::Exchange { exchange, steps } => write!(
                f,
                "steps took {:.2} s, {:.2} s of it ({:.1} %) exchanging gradients",
                steps.as_secs_f64(),
                exchange.as_secs_f64(),
                100.0 * exchange.as_secs_f64() / steps.as_secs_f64().max(1e-9)
            ),
            Event::Epoch { row, selection } => {
                write!(
                    f,
                    "epoch {}: {}, {} skipped; eval mIoU {:.2}, Dice {:.2}",
                    row.epoch, row.losses, row.skipped_steps, row.eval.miou, row.eval.dice
                )?;
                match (selection, row.selection) {
                    (Some(what), Some(v)) => write!(f, "; {what} {v:.2}"),
                    _ => Ok(()),
                }
            }
        }
    }
}
