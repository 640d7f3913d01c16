//! wesam: weakly supervised adaptation of Segment Anything to new image domains.
//!
//! [`model`] holds the trainable SAM and its LoRA adapters, [`cli`] the `wesam` commands.

pub mod cli;
pub mod device;
pub mod io;
pub mod model;
pub mod profile;
