//! The Segment Anything model, trainable in candle, split as the official code is:
//! [`image_encoder`], [`prompt_encoder`], [`mask_decoder`] and its [`transformer`], built from a
//! [`config::SamConfig`] (the official registry's `vit_b`/`vit_l`/`vit_h` or any smaller one)
//! and from the [`layers`] they share. [`lora`] holds the trainable adapters and [`sam_adapter`]
//! SAM-Adapter's explicit-visual-prompt adapter, [`checkpoint`] the
//! file formats ([`hf`] the HuggingFace key names), [`transforms`] the pre- and post-processing
//! of images and prompts. The kernels the layers compute with are in [`crate::ops`].

pub mod checkpoint;
pub mod config;
pub mod ebseg;
pub mod features;
pub mod hf;
pub mod image_encoder;
pub mod layers;
pub mod lora;
pub mod mask_decoder;
pub mod precision;
pub mod predictor;
pub mod prompt_encoder;
pub mod sam_adapter;
pub mod torch_pth;
pub mod transformer;
pub mod transforms;

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::{Device, Result, Tensor, Var};
use candle_nn::VarBuilder;

pub use checkpoint::StateDict;
pub use config::{ModelType, SamConfig};
pub use lora::{Lora, LoraConfig};
pub use precision::Precision;
pub use predictor::{ImagePrompts, Predictor};
pub use prompt_encoder::Prompts;

use image_encoder::ImageEncoder;
use mask_decoder::MaskDecoder;
use prompt_encoder::PromptEncoder;

/// A model with some weights made trainable, from [`Sam::trainable`].
pub struct TrainableModel {
    /// Computes with the variables: its forward passes build the graph back to them.
    pub model: Sam,
    /// The same weights detached (storage shared with the variables): no graph.
    pub detached: Sam,
    /// The trainable weights by official name.
    pub vars: Vec<(String, Var)>,
}

/// A SAM model: its three parts, its configuration and the state dict it was built from.
pub struct Sam {
    /// The architecture, saved with the weights.
    pub config: SamConfig,
    /// Image to embeddings: the costly part, run once per image.
    pub image_encoder: ImageEncoder,
    /// Points, boxes and masks to prompt tokens.
    pub prompt_encoder: PromptEncoder,
    /// Embeddings and prompt tokens to mask logits and IoU predictions.
    pub mask_decoder: MaskDecoder,
    /// Side of the square input the model runs at (the checkpoint's `image_size` unless
    /// overridden; position tables are then interpolated).
    pub input_size: usize,
    /// The weights under their official names and checkpoint shapes, for saving.
    pub weights: HashMap<String, Tensor>,
    /// Where the weights live; inputs must be put there.
    pub device: Device,
}

impl Sam {
    /// Builds the model from a VarBuilder whose names are the official checkpoint keys.
    pub fn new(config: &SamConfig, input_size: Option<usize>, vb: VarBuilder) -> Result<Self> {
        let input_size = input_size.unwrap_or(config.image_size);
        if !input_size.is_multiple_of(config.vit_patch_size) {
            candle_core::bail!(
                "image size {input_size} is not a multiple of the patch size {}",
                config.vit_patch_size
            );
        }
        Ok(Self {
            config: config.clone(),
            image_encoder: ImageEncoder::new(config, vb.pp("image_encoder"))?,
            prompt_encoder: PromptEncoder::new(config, vb.pp("prompt_encoder"))?,
            mask_decoder: MaskDecoder::new(config, vb.pp("mask_decoder"))?,
            input_size,
            weights: HashMap::new(),
            device: vb.device().clone(),
        })
    }

    /// Builds the model from a loaded state dict, reporting every key or shape problem.
    /// `architecture` is the user's, if given ([`StateDict::resolve_config`]).
    pub fn from_state_dict(
        state: StateDict,
        architecture: Option<&SamConfig>,
        input_size: Option<usize>,
        dev: &Device,
    ) -> anyhow::Result<Self> {
        let config = state.resolve_config(architecture)?;
        config
            .validate()
            .with_context(|| format!("{}", state.path.display()))?;
        if let Some(size) = input_size {
            config.check_input_size(size)?;
        }
        let mut sam =
            checkpoint::build_checked(&state, dev, |vb| Self::new(&config, input_size, vb))?;
        sam.weights = state.tensors;
        Ok(sam)
    }

    /// Loads a checkpoint file (`.pth`, safetensors, or HuggingFace safetensors); `architecture`
    /// is the user's, if given ([`StateDict::resolve_config`]).
    pub fn load(
        path: &Path,
        architecture: Option<&SamConfig>,
        input_size: Option<usize>,
        dev: &Device,
    ) -> anyhow::Result<Self> {
        Self::from_state_dict(StateDict::load(path, dev)?, architecture, input_size, dev)
    }

    /// A model with random weights, for tests, demos and training from scratch.
    pub fn random(
        config: &SamConfig,
        input_size: Option<usize>,
        seed: u64,
        dev: &Device,
    ) -> anyhow::Result<Self> {
        let weights = checkpoint::random_state_dict(config, seed, dev)?;
        let state = StateDict {
            tensors: weights,
            config: Some(config.clone()),
            path: "<random>".into(),
        };
        Self::from_state_dict(state, None, input_size, dev)
    }

    /// Another model over the same configuration and input size whose weights are `weights`
    /// (official names; e.g. trainable variables, or detached views of them).
    pub fn with_weights(&self, weights: HashMap<String, Tensor>) -> anyhow::Result<Self> {
        let state = StateDict {
            tensors: weights,
            config: Some(self.config.clone()),
            path: "<in memory>".into(),
        };
        let mut sam = Self::from_state_dict(state, None, Some(self.input_size), &self.device)?;
        sam.image_encoder
            .set_precision(self.image_encoder.precision());
        Ok(sam)
    }

    /// This model with SAM-Adapter's adapter reading F_pe in `layout`: its own if it has one,
    /// else fresh weights drawn from `seed` ([`sam_adapter::initial_weights`]). This model
    /// itself stays as it is (self-training's adapter-free anchor).
    pub fn with_sam_adapter(
        &self,
        layout: sam_adapter::FpeLayout,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut weights = self.weights.clone();
        if self.config.sam_adapter.is_none() {
            weights.extend(sam_adapter::initial_weights(
                &self.config,
                seed,
                &self.device,
            )?);
        }
        let state = StateDict {
            tensors: weights,
            config: Some(SamConfig {
                sam_adapter: Some(layout),
                ..self.config.clone()
            }),
            path: "<in memory>".into(),
        };
        let mut sam = Self::from_state_dict(state, None, Some(self.input_size), &self.device)?;
        sam.image_encoder
            .set_precision(self.image_encoder.precision());
        Ok(sam)
    }

    /// Makes the weights that `train` selects (by official name) trainable: a model that
    /// computes with new `Var`s initialised from this model's values, a view of it on detached
    /// tensors sharing the variables' storage (evaluation builds no graph, yet sees every
    /// optimiser update), and the variables by name. This model itself stays untouched: the
    /// frozen anchor.
    pub fn trainable(&self, train: impl Fn(&str) -> bool) -> anyhow::Result<TrainableModel> {
        let mut vars = Vec::new();
        let mut tracked = self.weights.clone();
        for (name, t) in tracked.iter_mut().filter(|(k, _)| train(k)) {
            let var = Var::from_tensor(t)?;
            *t = var.as_tensor().clone();
            vars.push((name.clone(), var));
        }
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let detached = tracked
            .iter()
            .map(|(k, t)| (k.clone(), t.detach()))
            .collect();
        Ok(TrainableModel {
            model: self.with_weights(tracked)?,
            detached: self.with_weights(detached)?,
            vars,
        })
    }

    /// Side of the image-embedding grid at the current input size.
    pub fn embedding_size(&self) -> usize {
        self.input_size / self.config.vit_patch_size
    }

    /// Image embeddings `[B, C, h, w]` of a preprocessed `[B, 3, S, S]` batch; with `lora` its
    /// adapters are applied, without it this is the frozen base model (the anchor).
    pub fn encode(&self, images: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        self.image_encoder.forward(images, lora)
    }

    /// Decodes the prompts of one image: `embedding` is `[1, C, h, w]`; returns low-resolution
    /// logits `[n, k, 4h, 4w]` and predicted IoUs `[n, k]`.
    pub fn decode(
        &self,
        embedding: &Tensor,
        prompts: &Prompts,
        multimask: bool,
    ) -> Result<(Tensor, Tensor)> {
        let (_, _, h, w) = embedding.dims4()?;
        let (sparse, dense) =
            self.prompt_encoder
                .forward(prompts, (self.input_size, self.input_size), (h, w))?;
        let pe = self.prompt_encoder.dense_pe(h, w)?;
        self.mask_decoder
            .forward(embedding, &pe, &sparse, &dense, multimask)
    }

    /// Reads a SAM-Adapter's F_pe in `layout` (e.g. per-token for a checkpoint trained so but
    /// stored without wesam's metadata); an error for a model without that adapter.
    pub fn set_fpe_layout(&mut self, layout: sam_adapter::FpeLayout) -> anyhow::Result<()> {
        let adapter = self.image_encoder.adapter_mut().context(
            "--fpe-layout: the model has no SAM-Adapter (no image_encoder.prompt_generator)",
        )?;
        adapter.set_layout(layout);
        self.config.sam_adapter = Some(layout);
        Ok(())
    }

    /// The state dict with `lora` folded in (or the base weights without it).
    pub fn merged_weights(&self, lora: Option<&Lora>) -> anyhow::Result<HashMap<String, Tensor>> {
        let mut w = self.weights.clone();
        if let Some(l) = lora {
            l.merge_into(&mut w)?;
        }
        Ok(w)
    }

    /// Saves the (merged) weights as safetensors with official names and the configuration in
    /// the `wesam.config` metadata, loadable by the official `Sam` with `strict=True` (a
    /// prompt-free SAM-Adapter model under the released SAM-Adapter names, loadable by the
    /// authors' code).
    pub fn save(&self, path: &Path, lora: Option<&Lora>) -> anyhow::Result<()> {
        let tensors = self.saved_tensors(lora)?;
        let meta = HashMap::from([(
            checkpoint::CONFIG_METADATA_KEY.to_string(),
            serde_json::to_string(&self.config)?,
        )]);
        checkpoint::write_safetensors(path, &tensors, meta)
    }

    /// The tensors [`Sam::save`] writes (and `wesam export` in other containers), sorted by
    /// name: the weights with `lora` folded in, under the official names (a prompt-free
    /// SAM-Adapter model's under the released SAM-Adapter names, which the authors' code loads).
    pub fn saved_tensors(&self, lora: Option<&Lora>) -> anyhow::Result<Vec<(String, Tensor)>> {
        let mut weights = self.merged_weights(lora)?;
        if !self.prompt_encoder.takes_prompts() {
            weights = checkpoint::to_released_sam_adapter(weights);
        }
        let mut tensors: Vec<_> = weights.into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(tensors)
    }
}
