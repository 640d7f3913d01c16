//! wesam: weakly supervised adaptation of Segment Anything to new image domains.
//!
//! [`model`] holds the trainable SAM and its LoRA adapters, [`ops`] the differentiable kernels it
//! computes with (fused CPU ops with their backward passes, activation recomputation), [`data`]
//! datasets, prompts and augmentations, [`adapt`] the training (losses, step, trainer), [`eval`]
//! scoring, [`amg`] automatic (prompt-free) mask generation. The `wesam` command line lives in the binary (`src/main.rs`, `src/cli/`): nothing
//! here prints, exits or reads the terminal.

pub mod adapt;
pub mod amg;
pub mod data;
pub mod device;
pub mod dist;
pub mod eval;
pub mod io;
pub mod model;
pub mod ops;
pub mod profile;
pub mod progress;
