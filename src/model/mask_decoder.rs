//! SAM's mask decoder (`MaskDecoder`): the two-way transformer over prompt and image tokens,
//! output upscaling, one hypernetwork MLP per mask token and the IoU prediction head.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::SamConfig;
use super::layers::{Linear, Norm};
use super::transformer::TwoWayTransformer;
use crate::ops::gelu::gelu;
use crate::ops::linear::add_bias;

/// A stack of linear layers with ReLU between them (`mask_decoder.MLP`).
#[derive(Debug, Clone)]
struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn new(dims: &[usize], vb: VarBuilder) -> Result<Self> {
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| Linear::new(d[0], d[1], vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x)?;
            if i + 1 < self.layers.len() {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// A transposed convolution stored as `nn.ConvTranspose2d` with kernel 2 and stride 2.
#[derive(Debug, Clone)]
struct Upsample2x {
    weight: Tensor,
    bias: Tensor,
}

impl Upsample2x {
    fn new(c_in: usize, c_out: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((c_in, c_out, 2, 2), "weight")?,
            bias: vb.get(c_out, "bias")?,
        })
    }
}

impl Module for Upsample2x {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv_transpose2d(&self.weight, 0, 0, 2, 1)?;
        add_bias(&y, &self.bias, 1)
    }
}

/// `MaskDecoder`.
#[derive(Debug, Clone)]
pub struct MaskDecoder {
    transformer: TwoWayTransformer,
    iou_token: Tensor,
    mask_tokens: Tensor,
    upscale1: Upsample2x,
    upscale_norm: Norm,
    upscale2: Upsample2x,
    hypernetworks: Vec<Mlp>,
    iou_head: Mlp,
    num_mask_tokens: usize,
}

impl MaskDecoder {
    /// Loads the decoder from the official `mask_decoder.*` keys under `vb`.
    pub fn new(cfg: &SamConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.prompt_embed_dim;
        let m = cfg.num_multimask_outputs + 1;
        let hypernetworks = (0..m)
            .map(|i| {
                Mlp::new(
                    &[d, d, d, d / 8],
                    vb.pp(format!("output_hypernetworks_mlps.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut iou_dims = vec![d];
        iou_dims.extend(std::iter::repeat_n(
            cfg.iou_head_hidden_dim,
            cfg.iou_head_depth - 1,
        ));
        iou_dims.push(m);
        Ok(Self {
            transformer: TwoWayTransformer::new(
                cfg.decoder_depth,
                d,
                cfg.decoder_num_heads,
                cfg.decoder_mlp_dim,
                vb.pp("transformer"),
            )?,
            iou_token: vb.get((1, d), "iou_token.weight")?,
            mask_tokens: vb.get((m, d), "mask_tokens.weight")?,
            upscale1: Upsample2x::new(d, d / 4, vb.pp("output_upscaling.0"))?,
            upscale_norm: Norm::new(d / 4, 1e-6, vb.pp("output_upscaling.1"))?,
            upscale2: Upsample2x::new(d / 4, d / 8, vb.pp("output_upscaling.3"))?,
            hypernetworks,
            iou_head: Mlp::new(&iou_dims, vb.pp("iou_prediction_head"))?,
            num_mask_tokens: m,
        })
    }

    /// Low-resolution mask logits `[n, k, 4h, 4w]` and IoU predictions `[n, k]`, where `k` is 1,
    /// or the number of multimask outputs with `multimask`.
    ///
    /// `image_embeddings` is `[1, C, h, w]` (one image), `sparse` `[n, t, C]`, `dense`
    /// `[n, C, h, w]`.
    pub fn forward(
        &self,
        image_embeddings: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        dense: &Tensor,
        multimask: bool,
    ) -> Result<(Tensor, Tensor)> {
        let n = sparse.dim(0)?;
        let (_, c, h, w) = image_embeddings.dims4()?;
        let output_tokens = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0)?;
        let output_tokens =
            output_tokens
                .unsqueeze(0)?
                .broadcast_as((n, self.num_mask_tokens + 1, c))?;
        let tokens = Tensor::cat(&[&output_tokens.contiguous()?, sparse], 1)?;
        let src = image_embeddings.broadcast_add(dense)?;
        let pos = image_pe.broadcast_as((n, c, h, w))?.contiguous()?;

        let (hs, src) = self.transformer.forward(&src, &pos, &tokens)?;
        let iou_token_out = hs.narrow(1, 0, 1)?.squeeze(1)?;
        let src = src.transpose(1, 2)?.reshape((n, c, h, w))?;
        let up = self.upscale1.forward(&src)?;
        let up = gelu(&self.upscale_norm.forward_2d(&up)?)?;
        let up = gelu(&self.upscale2.forward(&up)?)?;
        let (_, uc, uh, uw) = up.dims4()?;
        let hyper = self
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&hs.narrow(1, 1 + i, 1)?))
            .collect::<Result<Vec<_>>>()?;
        let hyper = Tensor::cat(&hyper, 1)?; // [n, m, C/8]
        let masks = hyper.matmul(&up.reshape((n, uc, uh * uw))?)?.reshape((
            n,
            self.num_mask_tokens,
            uh,
            uw,
        ))?;
        let iou = self.iou_head.forward(&iou_token_out)?;
        let (start, len) = if multimask {
            (1, self.num_mask_tokens - 1)
        } else {
            (0, 1)
        };
        Ok((masks.narrow(1, start, len)?, iou.narrow(1, start, len)?))
    }
}
