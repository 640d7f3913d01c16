//! SAM's prompt encoder (`PromptEncoder`): points, boxes and a mask input turned into sparse and
//! dense embeddings, with the random Fourier positional encoding (`PositionEmbeddingRandom`).

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::config::SamConfig;
use super::layers::{Conv2d, Norm};
use crate::ops::gelu::gelu;

/// Random Fourier features of normalised coordinates (`PositionEmbeddingRandom`).
#[derive(Debug, Clone)]
pub struct PositionEmbedding {
    gaussian: Tensor,
}

impl PositionEmbedding {
    fn new(num_feats: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gaussian: vb.get((2, num_feats), "positional_encoding_gaussian_matrix")?,
        })
    }

    /// `coords` in [0, 1], shape `[..., 2]` -> `[..., 2 * num_feats]`.
    fn encode(&self, coords: &Tensor) -> Result<Tensor> {
        let coords = ((coords * 2.0)? - 1.0)?;
        let dims = coords.dims().to_vec();
        let flat = coords
            .reshape((coords.elem_count() / 2, 2))?
            .matmul(&self.gaussian)?;
        let flat = (flat * (2.0 * std::f64::consts::PI))?;
        let enc = Tensor::cat(&[&flat.sin()?, &flat.cos()?], D::Minus1)?;
        let mut out = dims;
        *out.last_mut().unwrap() = enc.dim(1)?;
        enc.reshape(out)
    }

    /// Dense positional encoding `[1, C, h, w]` of an `h x w` grid of cell centres.
    pub fn dense(&self, h: usize, w: usize) -> Result<Tensor> {
        let dev = self.gaussian.device();
        let ys: Vec<f32> = (0..h).map(|i| (i as f32 + 0.5) / h as f32).collect();
        let xs: Vec<f32> = (0..w).map(|j| (j as f32 + 0.5) / w as f32).collect();
        let grid: Vec<f32> = ys
            .iter()
            .flat_map(|&y| xs.iter().flat_map(move |&x| [x, y]))
            .collect();
        let pe = self.encode(&Tensor::from_vec(grid, (h, w, 2), dev)?)?;
        pe.permute((2, 0, 1))?.unsqueeze(0)
    }

    /// Encodes pixel coordinates `[..., 2]` (x, y) of an image of size `(h, w)`.
    fn encode_pixels(&self, coords: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let scale = Tensor::new(&[1.0 / w as f32, 1.0 / h as f32], coords.device())?;
        self.encode(&coords.broadcast_mul(&scale)?)
    }
}

/// The prompts of one image: `n` instances, each with any of points, a box and a mask input.
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    /// `([n, k, 2]` (x, y) in input-frame pixels, `[n, k]` labels: 1 positive, 0 negative,
    /// -1 padding).
    pub points: Option<(Tensor, Tensor)>,
    /// `[n, 4]` xyxy in input-frame pixels.
    pub boxes: Option<Tensor>,
    /// `[n, 1, 4h, 4w]` low-resolution mask logits.
    pub masks: Option<Tensor>,
}

impl Prompts {
    /// Number of instances, from whichever prompt is present.
    pub fn instances(&self) -> Result<usize> {
        if let Some((p, _)) = &self.points {
            return p.dim(0);
        }
        if let Some(b) = &self.boxes {
            return b.dim(0);
        }
        match &self.masks {
            Some(m) => m.dim(0),
            None => Ok(1),
        }
    }
}

/// `PromptEncoder`.
#[derive(Debug, Clone)]
pub struct PromptEncoder {
    pe: PositionEmbedding,
    no_mask: Tensor,
    /// The layers that embed points, boxes and masks; absent from a prompt-free model (a
    /// released SAM-Adapter checkpoint holds only `no_mask_embed` and `pe_layer`).
    layers: Option<PromptLayers>,
    embed_dim: usize,
}

/// The layers of [`PromptEncoder`] that embed prompts.
#[derive(Debug, Clone)]
struct PromptLayers {
    /// negative point, positive point, box top-left, box bottom-right.
    point_embeddings: [Tensor; 4],
    not_a_point: Tensor,
    mask_conv1: Conv2d,
    mask_norm1: Norm,
    mask_conv2: Conv2d,
    mask_norm2: Norm,
    mask_conv3: Conv2d,
}

impl PromptEncoder {
    /// Loads the encoder from the official `prompt_encoder.*` keys under `vb`. A SAM-Adapter
    /// model may lack the layers that embed prompts: it then runs prompt-free only.
    pub fn new(cfg: &SamConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.prompt_embed_dim;
        let mc = cfg.mask_in_chans;
        let pe = |i: usize| vb.get((1, d), &format!("point_embeddings.{i}.weight"));
        let mvb = vb.pp("mask_downscaling");
        let prompt_free =
            cfg.sam_adapter.is_some() && !vb.contains_tensor("point_embeddings.0.weight");
        let layers = if prompt_free {
            None
        } else {
            Some(PromptLayers {
                point_embeddings: [pe(0)?, pe(1)?, pe(2)?, pe(3)?],
                not_a_point: vb.get((1, d), "not_a_point_embed.weight")?,
                mask_conv1: Conv2d::new((1, mc / 4, 2), (2, 0, true), mvb.pp("0"))?,
                mask_norm1: Norm::new(mc / 4, 1e-6, mvb.pp("1"))?,
                mask_conv2: Conv2d::new((mc / 4, mc, 2), (2, 0, true), mvb.pp("3"))?,
                mask_norm2: Norm::new(mc, 1e-6, mvb.pp("4"))?,
                mask_conv3: Conv2d::new((mc, d, 1), (1, 0, true), mvb.pp("6"))?,
            })
        };
        Ok(Self {
            pe: PositionEmbedding::new(d / 2, vb.pp("pe_layer"))?,
            no_mask: vb.get((1, d), "no_mask_embed.weight")?,
            layers,
            embed_dim: d,
        })
    }

    /// Whether the encoder embeds points, boxes and masks (else only the prompt-free call).
    pub fn takes_prompts(&self) -> bool {
        self.layers.is_some()
    }

    /// The prompt layers, or an error saying the model is prompt-free.
    fn layers(&self) -> Result<&PromptLayers> {
        self.layers.as_ref().ok_or_else(|| {
            candle_core::Error::Msg(
                "this model has no prompt encoder (a SAM-Adapter checkpoint): it runs prompt-free \
                 only (--prompt none)"
                    .into(),
            )
        })
    }

    /// `get_dense_pe`: the positional encoding of the image-embedding grid.
    pub fn dense_pe(&self, h: usize, w: usize) -> Result<Tensor> {
        self.pe.dense(h, w)
    }

    fn embed_points(
        &self,
        coords: &Tensor,
        labels: &Tensor,
        pad: bool,
        input_hw: (usize, usize),
    ) -> Result<Tensor> {
        let coords = (coords.to_dtype(DType::F32)? + 0.5)?;
        let mut labels = labels.to_dtype(DType::F32)?;
        let mut coords = coords;
        if pad {
            let n = coords.dim(0)?;
            coords = Tensor::cat(
                &[
                    &coords,
                    &Tensor::zeros((n, 1, 2), DType::F32, coords.device())?,
                ],
                1,
            )?;
            labels = Tensor::cat(
                &[
                    &labels,
                    &(Tensor::ones((n, 1), DType::F32, coords.device())? * -1.0)?,
                ],
                1,
            )?;
        }
        let layers = self.layers()?;
        let emb = self.pe.encode_pixels(&coords, input_hw)?;
        let is = |v: f64| -> Result<Tensor> { labels.eq(v)?.to_dtype(DType::F32)?.unsqueeze(2) };
        let (pad_m, neg_m, pos_m) = (is(-1.0)?, is(0.0)?, is(1.0)?);
        let keep = (1.0 - &pad_m)?;
        emb.broadcast_mul(&keep)?
            .add(&pad_m.broadcast_mul(&layers.not_a_point)?)?
            .add(&neg_m.broadcast_mul(&layers.point_embeddings[0])?)?
            .add(&pos_m.broadcast_mul(&layers.point_embeddings[1])?)
    }

    fn embed_boxes(&self, boxes: &Tensor, input_hw: (usize, usize)) -> Result<Tensor> {
        let n = boxes.dim(0)?;
        let corners = (boxes.to_dtype(DType::F32)? + 0.5)?.reshape((n, 2, 2))?;
        let layers = self.layers()?;
        let emb = self.pe.encode_pixels(&corners, input_hw)?;
        let corner_embed = Tensor::cat(
            &[&layers.point_embeddings[2], &layers.point_embeddings[3]],
            0,
        )?;
        emb.broadcast_add(&corner_embed)
    }

    fn embed_masks(&self, masks: &Tensor) -> Result<Tensor> {
        let l = self.layers()?;
        let x = l.mask_conv1.forward(masks)?;
        let x = gelu(&l.mask_norm1.forward_2d(&x)?)?;
        let x = l.mask_conv2.forward(&x)?;
        let x = gelu(&l.mask_norm2.forward_2d(&x)?)?;
        l.mask_conv3.forward(&x)
    }

    /// Sparse `[n, k, C]` and dense `[n, C, h, w]` embeddings of the prompts, for an input frame
    /// of `input_hw` pixels and an `embed_hw` image-embedding grid.
    pub fn forward(
        &self,
        prompts: &Prompts,
        input_hw: (usize, usize),
        embed_hw: (usize, usize),
    ) -> Result<(Tensor, Tensor)> {
        let n = prompts.instances()?;
        let dev = self.no_mask.device();
        let mut sparse = vec![Tensor::zeros((n, 0, self.embed_dim), DType::F32, dev)?];
        if let Some((coords, labels)) = &prompts.points {
            sparse.push(self.embed_points(coords, labels, prompts.boxes.is_none(), input_hw)?);
        }
        if let Some(boxes) = &prompts.boxes {
            sparse.push(self.embed_boxes(boxes, input_hw)?);
        }
        let sparse = Tensor::cat(&sparse, 1)?;
        let dense = match &prompts.masks {
            Some(m) => self.embed_masks(m)?,
            None => self
                .no_mask
                .reshape((1, self.embed_dim, 1, 1))?
                .broadcast_as((n, self.embed_dim, embed_hw.0, embed_hw.1))?
                .contiguous()?,
        };
        Ok((sparse, dense))
    }
}
