//! What a run measures and logs: the scores of an evaluation, one row per epoch (kept in the
//! checkpoint) and `metrics.csv`, the table of those rows.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::loss_terms::LossTerms;
use crate::eval::EvalReport;

/// mIoU and Dice in percent, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub miou: f64,
    pub dice: f64,
}

impl From<&EvalReport> for Scores {
    fn from(r: &EvalReport) -> Self {
        Self {
            miou: r.miou,
            dice: r.dice,
        }
    }
}

/// An epoch's mean loss terms, its bookkeeping and its evaluation: one row of `metrics.csv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub steps: usize,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Summed over the epoch's steps while it runs, their mean once it ends.
    #[serde(flatten)]
    pub losses: LossTerms<f64>,
    pub skipped_steps: usize,
    pub eval: Scores,
    /// The score that selects the kept epoch, when one does.
    pub selection: Option<f64>,
}

/// One line of `metrics.csv`: an epoch, or (epoch 0, no losses) the starting model.
#[derive(Serialize)]
struct CsvRow {
    epoch: usize,
    steps: usize,
    lr: f64,
    loss: Option<f64>,
    focal: Option<f64>,
    dice_loss: Option<f64>,
    iou_loss: Option<f64>,
    anchor: Option<f64>,
    contrastive: Option<f64>,
    bce: Option<f64>,
    soft_iou_loss: Option<f64>,
    skipped_steps: usize,
    miou: f64,
    dice: f64,
    selection: Option<f64>,
}

impl CsvRow {
    fn new(r: &EpochRow, losses: LossTerms<Option<f64>>) -> Self {
        Self {
            epoch: r.epoch,
            steps: r.steps,
            lr: r.lr,
            loss: losses.total,
            focal: losses.focal,
            dice_loss: losses.dice,
            iou_loss: losses.iou,
            anchor: losses.anchor,
            contrastive: losses.contrastive,
            bce: losses.bce,
            soft_iou_loss: losses.soft_iou,
            skipped_steps: r.skipped_steps,
            miou: r.eval.miou,
            dice: r.eval.dice,
            selection: r.selection,
        }
    }
}

/// Writes `metrics.csv` (atomically): the starting model's scores, then every epoch's row.
pub fn write_metrics(
    path: &Path,
    direct: Scores,
    direct_selection: Option<f64>,
    rows: &[EpochRow],
) -> Result<()> {
    let start = EpochRow {
        eval: direct,
        selection: direct_selection,
        ..Default::default()
    };
    crate::io::write_atomically(path, |tmp| {
        let mut w = csv::Writer::from_path(tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        w.serialize(CsvRow::new(&start, start.losses.map(|_| None)))?;
        for r in rows {
            w.serialize(CsvRow::new(r, r.losses.map(|&v| Some(v))))?;
        }
        w.flush()?;
        Ok(())
    })
}
