//! wesam: weakly supervised adaptation of Segment Anything to new image domains.
//!
//! [`model`] holds the trainable SAM and its LoRA adapters, [`ops`] the differentiable kernels it
//! computes with (fused CPU ops with their backward passes, activation recomputation), [`data`]
//! datasets, prompts and augmentations, [`cli`] the `wesam` commands.

pub mod adapt;
pub mod cli;
pub mod data;
pub mod demo;
pub mod device;
pub mod eval;
pub mod io;
pub mod model;
pub mod ops;
pub mod profile;
