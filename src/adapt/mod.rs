//! Adaptation and training (method spec §1.3, §2, §5.1).
//!
//! [`config`] is a run's configuration; [`losses`] holds every WeSAM loss as a differentiable
//! candle function and the per-image objectives (self-training and supervised); [`step`] the
//! views, prompts and model passes of one step; [`optim`] the Adam variants (coupled L2, as the
//! reference, or decoupled, as AdamW) with resumable state and the warm-up / step-decay
//! learning-rate schedule; [`train`] the loop, checkpoints and outputs.

pub mod config;
pub mod losses;
pub mod optim;
pub mod step;
pub mod train;
