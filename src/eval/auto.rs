//! Scores of prompt-free instance segmentation (`wesam eval --auto`): the automatic masks of an
//! image matched one to one to its ground-truth instances by the Hungarian method on IoU, then
//! the matched IoU averaged over the instances (an unmatched instance counts 0), the recall at
//! IoU 0.5 and 0.75, the F1 score at IoU 0.5 (which, unlike the others, counts the masks that
//! match nothing), and the number of masks.

use anyhow::Result;
use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;
use serde::Serialize;

use crate::amg::{candidates, AmgConfig};
use crate::data::{FileIssue, Record, Sample};
use crate::model::{Lora, Sam};
use crate::progress::Progress;

/// The score thresholds `--calibrate` tries, micro-sam's grid-search ranges: predicted IoU 0.6
/// to 0.9 and stability 0.6 to 0.95, by 0.025.
pub fn calibration_grid() -> Vec<(f64, f64)> {
    let steps = |lo: f64, hi: f64| {
        let n = ((hi - lo) / 0.025).round() as usize;
        (0..=n).map(move |i| lo + 0.025 * i as f64)
    };
    steps(0.6, 0.9)
        .flat_map(|iou| steps(0.6, 0.95).map(move |stability| (iou, stability)))
        .collect()
}

/// An automatic-mask evaluation: the mean scores at the settings, and at each pair of
/// thresholds of a sweep.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AutoReport {
    pub images: usize,
    pub instances: usize,
    pub scores: AutoScores,
    /// (predicted-IoU threshold, stability threshold, mean scores), for `--calibrate`.
    pub sweep: Vec<(f64, f64, AutoScores)>,
    pub skipped: Vec<FileIssue>,
}

impl AutoReport {
    /// The sweep's pair of best F1 at IoU 0.5 (the first of equals), if any.
    pub fn best(&self) -> Option<&(f64, f64, AutoScores)> {
        self.sweep.iter().fold(None, |best, s| match best {
            Some(b) if b.2.f1_50 >= s.2.f1_50 => Some(b),
            _ => Some(s),
        })
    }
}

/// Generates every image's masks with `cfg` and scores them against its instances; with a
/// `sweep`, also at each pair of (predicted-IoU, stability) thresholds, from the same model
/// outputs (the model runs once per image, at the lowest thresholds of all). Images that fail
/// to load are skipped and listed.
pub fn evaluate_auto(
    sam: &Sam,
    lora: Option<&Lora>,
    samples: impl Iterator<Item = (Record, Result<Sample>)>,
    cfg: &AmgConfig,
    sweep: &[(f64, f64)],
    progress: &dyn Progress,
) -> Result<AutoReport> {
    let lowest = AmgConfig {
        pred_iou_thresh: sweep.iter().fold(cfg.pred_iou_thresh, |m, s| m.min(s.0)),
        stability_score_thresh: sweep
            .iter()
            .fold(cfg.stability_score_thresh, |m, s| m.min(s.1)),
        ..cfg.clone()
    };
    let frozen = lora.map(Lora::frozen);
    let mut report = AutoReport::default();
    let (mut at_cfg, mut at_sweep) = (Vec::new(), vec![Vec::new(); sweep.len()]);
    for (record, sample) in samples {
        let sample = match sample {
            Ok(s) => s,
            Err(e) => {
                report.skipped.push(FileIssue {
                    file: record.image.display().to_string(),
                    reason: format!("{e:#}"),
                });
                progress.advance("");
                continue;
            }
        };
        let gt: Vec<Vec<bool>> = sample
            .instances
            .iter()
            .map(|i| i.mask.pixels().map(|p| p.0[0] > 0).collect())
            .collect();
        let found = candidates(sam, frozen.as_ref(), &sample.image, &lowest)?;
        let scored = |c: &AmgConfig| -> Result<AutoScores> {
            let masks = found
                .select(c)
                .iter()
                .map(|r| {
                    r.segmentation
                        .decode()
                        .map(|rle| rle.decode())
                        .ok_or_else(|| anyhow::anyhow!("a generated mask's RLE does not decode"))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(score(&masks, &gt))
        };
        at_cfg.push(scored(cfg)?);
        for (acc, &(iou, stability)) in at_sweep.iter_mut().zip(sweep) {
            acc.push(scored(&AmgConfig {
                pred_iou_thresh: iou,
                stability_score_thresh: stability,
                ..cfg.clone()
            })?);
        }
        report.images += 1;
        report.instances += gt.len();
        let mean = AutoScores::mean(&at_cfg);
        progress.advance(&format!("matched mIoU {:.2}", 100.0 * mean.matched_iou));
    }
    if report.images == 0 {
        anyhow::bail!(
            "no image could be evaluated ({} skipped)",
            report.skipped.len()
        );
    }
    report.scores = AutoScores::mean(&at_cfg);
    report.sweep = sweep
        .iter()
        .zip(&at_sweep)
        .map(|(&(iou, stability), s)| (iou, stability, AutoScores::mean(s)))
        .collect();
    Ok(report)
}

/// One image's scores, or their mean over images; IoU and recalls in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct AutoScores {
    /// Mean over the instances of the IoU of the mask matched to each.
    pub matched_iou: f64,
    /// Share of the instances matched with IoU ≥ 0.5.
    pub recall_50: f64,
    /// Share of the instances matched with IoU ≥ 0.75.
    pub recall_75: f64,
    /// F1 score of the matches with IoU ≥ 0.5 (precision over the masks, recall over the
    /// instances): what `--calibrate` ranks by, since matched IoU and recall only grow with
    /// more masks.
    pub f1_50: f64,
    /// Masks generated.
    pub masks: f64,
}

/// IoU is scaled to integers for the assignment (exact to 1e-9).
const IOU_SCALE: f64 = 1e9;

/// The scores of predicted masks against ground-truth instances, all row-major of one size.
/// An image without instances scores 1 when no mask was generated, else 0 (every mask is a
/// false detection), for matched IoU and both recalls.
pub fn score(pred: &[Vec<bool>], gt: &[Vec<bool>]) -> AutoScores {
    let masks = pred.len() as f64;
    if gt.is_empty() {
        let v = if pred.is_empty() { 1.0 } else { 0.0 };
        return AutoScores {
            matched_iou: v,
            recall_50: v,
            recall_75: v,
            f1_50: v,
            masks,
        };
    }
    let ious: Vec<Vec<f64>> = gt
        .iter()
        .map(|g| pred.iter().map(|p| iou(p, g)).collect())
        .collect();
    // Rows (instances) no more than columns: pad the masks with empty ones.
    let columns = pred.len().max(gt.len());
    let weights = Matrix::from_fn(gt.len(), columns, |(r, c)| {
        ious[r].get(c).map_or(0, |v| (v * IOU_SCALE).round() as i64)
    });
    let (_, assignment) = kuhn_munkres(&weights);
    let matched: Vec<f64> = assignment
        .iter()
        .enumerate()
        .map(|(r, &c)| ious[r].get(c).copied().unwrap_or(0.0))
        .collect();
    let n = gt.len() as f64;
    let hits = |t: f64| matched.iter().filter(|&&v| v >= t).count() as f64;
    AutoScores {
        matched_iou: matched.iter().sum::<f64>() / n,
        recall_50: hits(0.5) / n,
        recall_75: hits(0.75) / n,
        // 2 TP / (masks + instances).
        f1_50: 2.0 * hits(0.5) / (masks + n),
        masks,
    }
}

impl AutoScores {
    /// The mean of each score over images (all zero for none).
    pub fn mean(scores: &[AutoScores]) -> AutoScores {
        let n = scores.len().max(1) as f64;
        let avg = |f: fn(&AutoScores) -> f64| scores.iter().map(f).sum::<f64>() / n;
        AutoScores {
            matched_iou: avg(|s| s.matched_iou),
            recall_50: avg(|s| s.recall_50),
            recall_75: avg(|s| s.recall_75),
            f1_50: avg(|s| s.f1_50),
            masks: avg(|s| s.masks),
        }
    }
}

fn iou(a: &[bool], b: &[bool]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        inter += usize::from(x && y);
        union += usize::from(x || y);
    }
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(cells: &[usize]) -> Vec<bool> {
        (0..8).map(|i| cells.contains(&i)).collect()
    }

    #[test]
    fn matching_is_one_to_one_and_maximises_the_total_iou() {
        // Instance A = {0,1,2,3}, B = {4,5}. Mask X = {0,1,2,3,4} overlaps A (0.8) and B (0.2);
        // mask Y = {4,5,6} overlaps B (2/3). Greedy by best IoU would also give X-A, Y-B.
        let gt = [mask(&[0, 1, 2, 3]), mask(&[4, 5])];
        let s = score(&[mask(&[0, 1, 2, 3, 4]), mask(&[4, 5, 6])], &gt);
        assert!((s.matched_iou - (0.8 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert_eq!((s.recall_50, s.recall_75, s.masks), (1.0, 0.5, 2.0));
        assert_eq!(s.f1_50, 1.0);
        // One mask covering both: it goes to one instance only (A: 4/6 beats B: 2/6).
        let s = score(&[mask(&[0, 1, 2, 3, 4, 5])], &gt);
        assert!((s.matched_iou - (4.0 / 6.0) / 2.0).abs() < 1e-12);
        assert_eq!(s.recall_50, 0.5);
        assert!(
            (s.f1_50 - 2.0 / 3.0).abs() < 1e-12,
            "one hit of one mask and two instances"
        );
        // The assignment maximises the total: X = {1,2,3} to B (2/3, against 1/2 with A) and
        // Z = {0,1} to A (2/3).
        let gt = [mask(&[0, 1, 2]), mask(&[2, 3])];
        let s = score(&[mask(&[1, 2, 3]), mask(&[0, 1])], &gt);
        assert!(
            (s.matched_iou - (2.0 / 3.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12,
            "{s:?}"
        );
        assert_eq!(score(&[], &gt).matched_iou, 0.0);
        assert_eq!(score(&[], &[]).matched_iou, 1.0);
        assert_eq!(score(&[mask(&[1])], &[]).recall_50, 0.0);
    }
}
