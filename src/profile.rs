//! The two behaviours of wesam (`docs/method.md` §0): `sam`, the correct use of SAM weights and a
//! clean protocol (the default), and `wesam-reference`, which reproduces the reference
//! implementation's numbers, quirks included.

use serde::{Deserialize, Serialize};

use crate::model::transforms::Preprocessing;

/// Which behaviour to follow where the reference code and correct SAM usage differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Profile {
    #[default]
    Sam,
    WesamReference,
}

impl Profile {
    /// How images are turned into model input.
    pub fn preprocessing(self) -> Preprocessing {
        match self {
            Profile::Sam => Preprocessing::Sam,
            Profile::WesamReference => Preprocessing::Reference,
        }
    }

    /// Whether a mask logit counts as foreground: `> 0` for SAM, `>= 0.5` in the reference's
    /// evaluation.
    pub fn is_foreground(self, logit: f32) -> bool {
        match self {
            Profile::Sam => logit > 0.0,
            Profile::WesamReference => logit >= 0.5,
        }
    }
}
