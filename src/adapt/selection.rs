//! Which weights a run keeps: the last epoch's, or the best-scoring epoch's (the starting model
//! included under the weak-label rule), as `train.selection` and the profile decide.

use super::config::{AdaptConfig, Selection};
use crate::data::{Dataset, Record, Split};
use crate::profile::Profile;

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
    /// The rule of a run's configuration: `auto` keeps the reference's rule under its profile,
    /// the best validation mIoU when part of the split is held out, else the last epoch.
    pub fn for_run(cfg: &AdaptConfig, dataset: &dyn Dataset) -> Self {
        match (cfg.train.selection, cfg.profile) {
            (Selection::WeakLabel, _) => Selector::WeakLabel,
            (Selection::Auto, Profile::WesamReference) => Selector::EvalMiou,
            (Selection::Auto, Profile::Sam) if cfg.data.options.val_fraction > 0.0 => {
                Selector::ValMiou(dataset.records(Split::Val))
            }
            (Selection::Auto, Profile::Sam) => Selector::Last,
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
