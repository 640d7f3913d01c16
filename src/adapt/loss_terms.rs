//! The five WeSAM loss terms, SAM-Adapter's two, and their weighted total, as one type for every
//! stage that handles them: the differentiable losses (`LossTerms<Tensor>`), a step's and an epoch's logged values
//! (`LossTerms<f64>`), the checkpoint's progress and `metrics.csv`.

use serde::{Deserialize, Serialize};

/// The weighted total and each unweighted term (0 for a disabled term).
///
/// The serde names are the columns of `metrics.csv`, where `dice` and `iou` would clash with
/// the evaluation's Dice and IoU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossTerms<T> {
    /// The weighted sum that is back-propagated.
    #[serde(rename = "loss")]
    pub total: T,
    /// Focal loss of the student against its target.
    pub focal: T,
    /// Dice loss of the student against its target.
    #[serde(rename = "dice_loss")]
    pub dice: T,
    /// MSE of the student's IoU predictions.
    #[serde(rename = "iou_loss")]
    pub iou: T,
    /// Dice of student and teacher against the anchor's pseudo-label.
    pub anchor: T,
    /// Teacher-anchor contrastive regularisation.
    pub contrastive: T,
    /// SAM-Adapter's binary cross-entropy against the target (`losses.supervised = "bce-iou"`;
    /// the balanced one under `"balanced-bce"`).
    #[serde(default)]
    pub bce: T,
    /// SAM-Adapter's soft IoU loss against the target.
    #[serde(default, rename = "soft_iou_loss")]
    pub soft_iou: T,
}

impl<T> LossTerms<T> {
    /// Each term through `f`, the total first.
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<LossTerms<U>, E> {
        Ok(LossTerms {
            total: f(&self.total)?,
            focal: f(&self.focal)?,
            dice: f(&self.dice)?,
            iou: f(&self.iou)?,
            anchor: f(&self.anchor)?,
            contrastive: f(&self.contrastive)?,
            bce: f(&self.bce)?,
            soft_iou: f(&self.soft_iou)?,
        })
    }

    /// Each term through `f`, the total first.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> LossTerms<U> {
        let Ok(mapped) = self.try_map(|v| Ok::<_, std::convert::Infallible>(f(v)));
        mapped
    }
}

impl LossTerms<f64> {
    /// Adds `other` term by term (sums over images or steps).
    pub fn add(&mut self, other: &Self) {
        self.total += other.total;
        self.focal += other.focal;
        self.dice += other.dice;
        self.iou += other.iou;
        self.anchor += other.anchor;
        self.contrastive += other.contrastive;
        self.bce += other.bce;
        self.soft_iou += other.soft_iou;
    }

    /// Every term divided by `n` (the mean of `n` summed values).
    pub fn mean_of(&self, n: usize) -> Self {
        let n = n.max(1) as f64;
        self.map(|v| v / n)
    }
}

impl std::fmt::Display for LossTerms<f64> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.bce != 0.0 || self.soft_iou != 0.0 {
            return write!(
                f,
                "loss {:.4} (bce {:.4}, soft iou {:.4})",
                self.total, self.bce, self.soft_iou
            );
        }
        write!(
            f,
            "loss {:.4} (focal {:.4}, dice {:.4}, iou {:.4}, anchor {:.4}, contrastive {:.4})",
            self.total, self.focal, self.dice, self.iou, self.anchor, self.contrastive
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_means_go_term_by_term() {
        let one = LossTerms {
            total: 1.0,
            focal: 2.0,
            dice: 3.0,
            iou: 4.0,
            anchor: 5.0,
            contrastive: 6.0,
            bce: 7.0,
            soft_iou: 8.0,
        };
        let mut sum = LossTerms::default();
        sum.add(&one);
        sum.add(&one);
        assert_eq!(sum.mean_of(2), one);
        assert_eq!(sum.focal, 4.0);
    }
}
