//! Telling a run that diverges from one that trains: after every optimiser step the trained
//! weights' norm and the loss are compared with where they started. A learning rate far too
//! high drives the weights away by orders of magnitude while the loss, bounded by its dice and
//! contrastive terms, can stay finite and unremarkable (`--lr 1e9` on the demo: the loss stays
//! near 2, the adapters' norm goes from 3 to 1e11, mIoU from 53 to 0), so both are watched.
//! Ordinary training, even at rates that hurt (1e-1 on the demo), grows the adapters' norm
//! less than tenfold.

use serde::{Deserialize, Serialize};

/// The weights diverged when their norm exceeds the starting norm this many times.
const NORM_GROWTH: f64 = 100.0;
/// The loss diverged when its running mean exceeds the starting loss this many times.
const LOSS_GROWTH: f64 = 10.0;
/// The starting loss is the mean of this many first finite steps.
const BASELINE_STEPS: usize = 10;
/// Weight of a new step in the loss's running mean.
const SMOOTHING: f64 = 0.05;

/// What the guard remembers of the run; part of the checkpoint's state, so that a resumed run
/// judges as an uninterrupted one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DivergenceGuard {
    /// The trained weights' norm before the first step.
    start_norm: Option<f64>,
    /// Sum and count of the first finite losses, up to [`BASELINE_STEPS`].
    baseline_sum: f64,
    baseline_steps: usize,
    /// Running mean of the loss after the baseline (which it starts from).
    smoothed: Option<f64>,
}

impl DivergenceGuard {
    /// Records the weights' norm before training, once per run.
    pub fn start(&mut self, norm: f64) {
        self.start_norm.get_or_insert(norm);
    }

    /// Takes one step's loss and the weights' norm after it; says why the run diverged, if it
    /// did.
    pub fn check(&mut self, loss: f64, norm: f64) -> Option<String> {
        if !norm.is_finite() {
            return Some("the trained weights are no longer finite".into());
        }
        if let Some(start) = self.start_norm.filter(|&s| s > 0.0) {
            if norm > NORM_GROWTH * start {
                return Some(format!(
                    "the trained weights' norm grew from {start:.3e} to {norm:.3e}"
                ));
            }
        }
        if self.baseline_steps < BASELINE_STEPS {
            self.baseline_sum += loss;
            self.baseline_steps += 1;
            return None;
        }
        let baseline = self.baseline_sum / self.baseline_steps as f64;
        let mean = self.smoothed.unwrap_or(baseline);
        let smoothed = mean + SMOOTHING * (loss - mean);
        self.smoothed = Some(smoothed);
        (baseline > 0.0 && smoothed > LOSS_GROWTH * baseline)
            .then(|| format!("the loss's running mean rose from {baseline:.4} to {smoothed:.4}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_norm_that_explodes_is_divergence_and_ordinary_growth_is_not() {
        let mut g = DivergenceGuard::default();
        g.start(3.0);
        assert_eq!(
            g.check(2.0, 30.0),
            None,
            "tenfold is ordinary at high rates"
        );
        let why = g.check(2.0, 3.4e9).expect("diverged");
        assert!(why.contains("norm"), "{why}");
        assert!(g.check(2.0, f64::INFINITY).is_some());
    }

    #[test]
    fn a_loss_that_explodes_after_its_start_is_divergence_and_a_spike_is_not() {
        let mut g = DivergenceGuard::default();
        g.start(1.0);
        for _ in 0..BASELINE_STEPS {
            assert_eq!(g.check(2.0, 1.0), None);
        }
        // One spike (a focal term on a hard image) moves the running mean little.
        assert_eq!(g.check(30.0, 1.0), None);
        for _ in 0..5 {
            assert_eq!(g.check(2.0, 1.0), None);
        }
        let steps = (0..200).position(|_| g.check(1e3, 1.0).is_some());
        assert!(
            steps.is_some_and(|s| s < 20),
            "a sustained explosion is caught within a few steps: {steps:?}"
        );
    }

    #[test]
    fn a_resumed_guard_judges_as_the_uninterrupted_one() {
        let mut a = DivergenceGuard::default();
        a.start(1.0);
        for i in 0..12 {
            a.check(1.0 + i as f64, 1.0);
        }
        let mut b: DivergenceGuard =
            serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        b.start(5.0);
        for loss in [100.0, 200.0, 400.0] {
            assert_eq!(a.check(loss, 150.0), b.check(loss, 150.0));
        }
    }
}
