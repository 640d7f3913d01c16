//! The adaptation objective and its optimiser (method spec §1.3, §2, §5.1).
//!
//! [`losses`] holds every WeSAM loss as a differentiable candle function and the per-image
//! objective that combines them; [`optim`] the Adam variants (coupled L2, as the reference, or
//! decoupled, as AdamW) with resumable state and the warm-up / step-decay learning-rate schedule.

pub mod config;
pub mod losses;
pub mod optim;
pub mod train;
