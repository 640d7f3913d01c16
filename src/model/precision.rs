//! Mixed precision: the dtype the image encoder computes in.

use candle_core::DType;

/// What the image encoder computes in. The encoder is nearly all of a step's products and
/// activations; the prompt encoder, the mask decoder, the losses, the LoRA weights, their
/// gradients and the optimiser state stay f32 whatever the choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Precision {
    /// Single precision throughout.
    #[default]
    F32,
    /// bfloat16 activations and products (the float32 range): the choice for recent GPUs.
    Bf16,
    /// float16 activations and products (narrow range; norms and softmaxes still in f32).
    F16,
}

impl Precision {
    /// The activations' dtype.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }
}
