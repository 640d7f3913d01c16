//! Which weights a run keeps: the last epoch's, or the best-scoring epoch's (the starting model
//! included under the weak-label rule), as `train.selection` and the profile decide.

use super::config::{AdaptConfig, Selection};
use crate::data::{Dataset, Record, Split};

/// The rule that scores epochs for keeping.
pub enum Selector {
    /// The last epoch.
    Last,
    /// The best mIoU on the evaluation split (the reference's code; reported as such).
    EvalMiou,
    /// The best mIoU on these validation records.
    ValMiou(Vec<Record>),
    /// The best agreement with the weak labels of the adaptation split, the starting model
    /// included.
    WeakLabel,
}

impl Selector {
    /// The rule of a run's configuration ([`Selection::resolve`] for `auto`).
    pub fn for_run(cfg: &AdaptConfig, dataset: &dyn Dataset) -> Self {
        let rule =
            cfg.train
                .selection
                .resolve(cfg.profile, cfg.objective, cfg.data.options.val_fraction);
        match rule {
            Selection::Auto | Selection::Last => Selector::Last,
            Selection::EvalMiou => Selector::EvalMiou,
            Selection::ValMiou => Selector::ValMiou(dataset.records(Split::Val)),
            Selection::WeakLabel => Selector::WeakLabel,
        }
    }

    /// What the selection score measures, for the epoch summary (none when it repeats the
    /// evaluation's mIoU or there is no score).
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Selector::WeakLabel => Some("weak-label agreement"),
            Selector::ValMiou(_) => Some("val mIoU"),
            Selector::Last | Selector::EvalMiou => None,
        }
    }
}
