//! Model configuration: the arguments of the official SAM builder, as plain serde data.
//!
//! Field names follow `segment_anything.build_sam._build_sam` so that the JSON stored in a
//! checkpoint's `wesam.config` metadata reads like the official code.

use serde::{Deserialize, Serialize};

use super::sam_adapter::FpeLayout;

/// The largest model input size accepted: 4 × the official 1024, already 16 × its activations.
pub const MAX_INPUT_SIZE: usize = 4096;

/// Every architecture argument of the official SAM modules that a configuration may change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamConfig {
    pub encoder_embed_dim: usize,
    pub encoder_depth: usize,
    pub encoder_num_heads: usize,
    pub encoder_global_attn_indexes: Vec<usize>,
    pub prompt_embed_dim: usize,
    pub image_size: usize,
    pub vit_patch_size: usize,
    pub window_size: usize,
    pub mlp_ratio: f64,
    pub mask_in_chans: usize,
    pub decoder_depth: usize,
    pub decoder_mlp_dim: usize,
    pub decoder_num_heads: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
    pub num_multimask_outputs: usize,
    /// SAM-Adapter's explicit-visual-prompt adapter in the image encoder, with its F_pe layout
    /// (`model::sam_adapter`); `None` for SAM itself. Not an argument of the official builder:
    /// stored in the `wesam.config` of files wesam writes, and detected from the keys of
    /// released SAM-Adapter checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sam_adapter: Option<FpeLayout>,
}

/// The official model types of the SAM registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum ModelType {
    VitB,
    VitL,
    VitH,
}

impl ModelType {
    /// The name used by the official registry (`sam_model_registry`).
    pub fn name(self) -> &'static str {
        match self {
            ModelType::VitB => "vit_b",
            ModelType::VitL => "vit_l",
            ModelType::VitH => "vit_h",
        }
    }
}

impl SamConfig {
    /// The configuration the official registry builds for `model_type`.
    pub fn official(model_type: ModelType) -> Self {
        let (dim, depth, heads, global) = match model_type {
            ModelType::VitB => (768, 12, 12, vec![2, 5, 8, 11]),
            ModelType::VitL => (1024, 24, 16, vec![5, 11, 17, 23]),
            ModelType::VitH => (1280, 32, 16, vec![7, 15, 23, 31]),
        };
        Self {
            encoder_embed_dim: dim,
            encoder_depth: depth,
            encoder_num_heads: heads,
            encoder_global_attn_indexes: global,
            prompt_embed_dim: 256,
            image_size: 1024,
            vit_patch_size: 16,
            window_size: 14,
            mlp_ratio: 4.0,
            mask_in_chans: 16,
            decoder_depth: 2,
            decoder_mlp_dim: 2048,
            decoder_num_heads: 8,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            num_multimask_outputs: 3,
            sam_adapter: None,
        }
    }

    /// A small configuration for the built-in demo and quick CPU runs (about 0.5 M parameters).
    pub fn demo() -> Self {
        Self {
            encoder_embed_dim: 64,
            encoder_depth: 4,
            encoder_num_heads: 4,
            encoder_global_attn_indexes: vec![1, 3],
            prompt_embed_dim: 64,
            image_size: 256,
            vit_patch_size: 16,
            window_size: 7,
            mlp_ratio: 4.0,
            mask_in_chans: 16,
            decoder_depth: 2,
            decoder_mlp_dim: 128,
            decoder_num_heads: 4,
            iou_head_depth: 3,
            iou_head_hidden_dim: 64,
            num_multimask_outputs: 3,
            sam_adapter: None,
        }
    }

    /// Reads a configuration from a JSON or TOML file (the official builder's argument names,
    /// e.g. `configs/sam-tiny.toml`), validated.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model configuration {}", path.display()))?;
        let parsed: anyhow::Result<Self> = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(Into::into)
        } else {
            toml::from_str(&text).map_err(Into::into)
        };
        let config =
            parsed.with_context(|| format!("{}: not a SAM model configuration", path.display()))?;
        config
            .validate()
            .with_context(|| path.display().to_string())?;
        Ok(config)
    }

    /// Which official type this configuration is, if any.
    pub fn model_type(&self) -> Option<ModelType> {
        [ModelType::VitB, ModelType::VitL, ModelType::VitH]
            .into_iter()
            .find(|&t| Self::official(t) == *self)
    }

    /// Side of the image-embedding grid (64 for the official 1024 / 16).
    pub fn embedding_size(&self) -> usize {
        self.image_size / self.vit_patch_size
    }

    /// Hidden width of each encoder MLP.
    pub fn mlp_dim(&self) -> usize {
        (self.encoder_embed_dim as f64 * self.mlp_ratio) as usize
    }

    /// Checks the relations between fields that the official modules assume.
    pub fn validate(&self) -> anyhow::Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("invalid model configuration: {what}"))
            }
        };
        check(self.encoder_depth > 0, "encoder_depth must be > 0")?;
        check(
            self.encoder_num_heads > 0
                && self
                    .encoder_embed_dim
                    .is_multiple_of(self.encoder_num_heads),
            "encoder_embed_dim must be a multiple of encoder_num_heads",
        )?;
        check(
            self.encoder_global_attn_indexes
                .iter()
                .all(|&i| i < self.encoder_depth),
            "encoder_global_attn_indexes must be < encoder_depth",
        )?;
        check(
            self.vit_patch_size > 0 && self.image_size.is_multiple_of(self.vit_patch_size),
            "image_size must be a multiple of vit_patch_size",
        )?;
        check(
            self.prompt_embed_dim.is_multiple_of(8),
            "prompt_embed_dim must be a multiple of 8 (output upscaling divides it by 8)",
        )?;
        check(
            self.decoder_num_heads > 0
                && (self.prompt_embed_dim / 2).is_multiple_of(self.decoder_num_heads),
            "prompt_embed_dim / 2 must be a multiple of decoder_num_heads",
        )?;
        check(self.iou_head_depth >= 1, "iou_head_depth must be >= 1")?;
        check(self.mlp_ratio > 0.0, "mlp_ratio must be > 0")?;
        Ok(())
    }

    /// Refuses a model input size (`--image-size`) this architecture cannot run at: zero, not a
    /// multiple of the patch size, or above [`MAX_INPUT_SIZE`].
    pub fn check_input_size(&self, size: usize) -> anyhow::Result<()> {
        let p = self.vit_patch_size;
        if size == 0 || !size.is_multiple_of(p) || size > MAX_INPUT_SIZE {
            anyhow::bail!(
                "--image-size {size}: the model's input size must be a positive multiple of its \
                 patch size ({p}), at most {MAX_INPUT_SIZE} (its checkpoint's is {})",
                self.image_size
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_types_round_trip_through_json_and_detection() {
        for t in [ModelType::VitB, ModelType::VitL, ModelType::VitH] {
            let c = SamConfig::official(t);
            c.validate().unwrap();
            let back: SamConfig =
                serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
            assert_eq!(back.model_type(), Some(t));
        }
    }

    #[test]
    fn invalid_configuration_is_rejected_with_a_reason() {
        let mut c = SamConfig::official(ModelType::VitB);
        c.encoder_num_heads = 7;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("encoder_num_heads"), "{err}");
    }
}
