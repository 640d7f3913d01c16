//! The ViT image encoder of SAM (`ImageEncoderViT`): patch embedding, absolute position
//! embedding, blocks of windowed or global attention with decomposed relative-position bias,
//! and the convolutional neck. Layers are named after the official checkpoint keys.
//!
//! An input size other than the checkpoint's is supported: the absolute position embedding is
//! resized bicubically (`align_corners=False`, as the EBSeg and SAM-Med2D derivatives do) and the
//! global blocks' relative-position tables linearly, exactly as the official `get_rel_pos` does at
//! run time. The stored tensors keep their checkpoint shapes, so saved weights stay loadable.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::attention::rel_pos_attention;
use super::config::SamConfig;
use super::lora::{Lora, LoraQkv};
use super::ops::{self, Interpolation};

const LN_EPS: f64 = 1e-6;

/// A layer norm's affine parameters.
#[derive(Debug, Clone)]
pub struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// Normalises the channel axis of an NCHW tensor (`LayerNorm2d`).
    pub fn forward_2d(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm_2d(x, &self.weight, &self.bias, self.eps)
    }
}

/// A linear layer stored as `nn.Linear` (`weight [out, in]`, optional bias).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: Some(vb.get(out_dim, "bias")?),
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_ref())
    }
}

/// A 2-D convolution stored as `nn.Conv2d`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn new(
        (c_in, c_out, k): (usize, usize, usize),
        (stride, padding, bias): (usize, usize, bool),
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((c_out, c_in, k, k), "weight")?;
        let bias = if bias {
            Some(vb.get(c_out, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride,
            padding,
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
            None => Ok(y),
        }
    }
}

/// Relative-position table resized to `len` entries, as the official `get_rel_pos`.
fn resized_rel_pos(table: &Tensor, len: usize) -> Result<Tensor> {
    if table.dim(0)? == len {
        return Ok(table.clone());
    }
    // [L, C] -> [C, L] -> linear resize of the last axis -> [len, C].
    let t = table.t()?.unsqueeze(1)?; // [C, 1, L]
    ops::resize_2d(&t, 1, len, Interpolation::Bilinear)?
        .squeeze(1)?
        .t()?
        .contiguous()
}

/// `[size, size, C]` table of relative-position embeddings for query/key positions of one axis.
fn rel_pos_lookup(table: &Tensor, size: usize) -> Result<Tensor> {
    let table = resized_rel_pos(table, 2 * size - 1)?;
    let idx: Vec<u32> = (0..size)
        .flat_map(|q| (0..size).map(move |k| (q + size - 1 - k) as u32))
        .collect();
    let idx = Tensor::from_vec(idx, size * size, table.device())?;
    let c = table.dim(1)?;
    table.index_select(&idx, 0)?.reshape((size, size, c))
}

/// Multi-head attention with decomposed relative-position bias (`image_encoder.Attention`).
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    rel_pos_h: Tensor,
    rel_pos_w: Tensor,
    num_heads: usize,
}

impl Attention {
    fn new(dim: usize, num_heads: usize, rel_size: usize, vb: VarBuilder) -> Result<Self> {
        let head_dim = dim / num_heads;
        Ok(Self {
            qkv: Linear::new(dim, 3 * dim, vb.pp("qkv"))?,
            proj: Linear::new(dim, dim, vb.pp("proj"))?,
            rel_pos_h: vb.get((2 * rel_size - 1, head_dim), "rel_pos_h")?,
            rel_pos_w: vb.get((2 * rel_size - 1, head_dim), "rel_pos_w")?,
            num_heads,
        })
    }

    /// `x`: `[B, H, W, C]` (a window or the whole grid).
    fn forward(&self, x: &Tensor, lora: Option<&LoraQkv>) -> Result<Tensor> {
        let (_, h, w, c) = x.dims4()?;
        let mut qkv = self.qkv.forward(x)?;
        if let Some(l) = lora {
            let (dq, dv) = l.deltas(x)?;
            let q = (qkv.narrow(D::Minus1, 0, c)? + dq)?;
            let v = (qkv.narrow(D::Minus1, 2 * c, c)? + dv)?;
            qkv = Tensor::cat(&[&q, &qkv.narrow(D::Minus1, c, c)?, &v], D::Minus1)?;
        }
        let rh = rel_pos_lookup(&self.rel_pos_h, h)?;
        let rw = rel_pos_lookup(&self.rel_pos_w, w)?;
        let out = rel_pos_attention(&qkv, &rh, &rw, self.num_heads)?;
        self.proj.forward(&out)
    }
}

/// Splits `[B, H, W, C]` into `[B * nW, ws, ws, C]` windows, zero-padding bottom/right.
fn window_partition(x: &Tensor, ws: usize) -> Result<(Tensor, (usize, usize))> {
    let (b, h, w, c) = x.dims4()?;
    let ph = (ws - h % ws) % ws;
    let pw = (ws - w % ws) % ws;
    let x = if ph > 0 {
        x.pad_with_zeros(1, 0, ph)?
    } else {
        x.clone()
    };
    let x = if pw > 0 {
        x.pad_with_zeros(2, 0, pw)?
    } else {
        x
    };
    let (hp, wp) = (h + ph, w + pw);
    let windows = x
        .reshape((b, hp / ws, ws, wp / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b * (hp / ws) * (wp / ws), ws, ws, c))?;
    Ok((windows, (hp, wp)))
}

/// Inverse of [`window_partition`], cropping the padding.
fn window_unpartition(
    windows: &Tensor,
    ws: usize,
    (hp, wp): (usize, usize),
    (h, w): (usize, usize),
) -> Result<Tensor> {
    let c = windows.dim(3)?;
    let b = windows.dim(0)? / ((hp / ws) * (wp / ws));
    let x = windows
        .reshape((b, hp / ws, wp / ws, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b, hp, wp, c))?;
    if (hp, wp) == (h, w) {
        Ok(x)
    } else {
        x.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()
    }
}

/// One transformer block (`image_encoder.Block`).
#[derive(Debug, Clone)]
pub struct Block {
    norm1: Norm,
    attn: Attention,
    norm2: Norm,
    lin1: Linear,
    lin2: Linear,
    /// 0 for global attention.
    window_size: usize,
}

impl Block {
    fn new(cfg: &SamConfig, index: usize, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.encoder_embed_dim;
        let global = cfg.encoder_global_attn_indexes.contains(&index);
        let window_size = if global { 0 } else { cfg.window_size };
        let rel_size = if global {
            cfg.embedding_size()
        } else {
            cfg.window_size
        };
        Ok(Self {
            norm1: Norm::new(dim, LN_EPS, vb.pp("norm1"))?,
            attn: Attention::new(dim, cfg.encoder_num_heads, rel_size, vb.pp("attn"))?,
            norm2: Norm::new(dim, LN_EPS, vb.pp("norm2"))?,
            lin1: Linear::new(dim, cfg.mlp_dim(), vb.pp("mlp.lin1"))?,
            lin2: Linear::new(cfg.mlp_dim(), dim, vb.pp("mlp.lin2"))?,
            window_size,
        })
    }

    fn forward(&self, x: &Tensor, lora: Option<&LoraQkv>) -> Result<Tensor> {
        let shortcut = x;
        let x = self.norm1.forward(x)?;
        let x = if self.window_size > 0 {
            let (_, h, w, _) = x.dims4()?;
            let (windows, padded) = window_partition(&x, self.window_size)?;
            let y = self.attn.forward(&windows, lora)?;
            window_unpartition(&y, self.window_size, padded, (h, w))?
        } else {
            self.attn.forward(&x, lora)?
        };
        let x = (shortcut + x)?;
        let mlp = self
            .lin2
            .forward(&ops::gelu(&self.lin1.forward(&self.norm2.forward(&x)?)?)?)?;
        x + mlp
    }
}

/// The whole encoder (`ImageEncoderViT`).
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    patch_embed: Conv2d,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    neck_conv1: Conv2d,
    neck_norm1: Norm,
    neck_conv2: Conv2d,
    neck_norm2: Norm,
}

impl ImageEncoder {
    pub fn new(cfg: &SamConfig, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.encoder_embed_dim;
        let p = cfg.vit_patch_size;
        let g = cfg.embedding_size();
        let out = cfg.prompt_embed_dim;
        let blocks = (0..cfg.encoder_depth)
            .map(|i| Block::new(cfg, i, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed: Conv2d::new((3, dim, p), (p, 0, true), vb.pp("patch_embed.proj"))?,
            pos_embed: vb.get((1, g, g, dim), "pos_embed")?,
            blocks,
            neck_conv1: Conv2d::new((dim, out, 1), (1, 0, false), vb.pp("neck.0"))?,
            neck_norm1: Norm::new(out, LN_EPS, vb.pp("neck.1"))?,
            neck_conv2: Conv2d::new((out, out, 3), (1, 1, false), vb.pp("neck.2"))?,
            neck_norm2: Norm::new(out, LN_EPS, vb.pp("neck.3"))?,
        })
    }

    /// Image embeddings `[B, prompt_embed_dim, H/p, W/p]` of a preprocessed `[B, 3, H, W]` batch.
    /// With `lora`, its adapters are applied; without, this is the frozen base model.
    pub fn forward(&self, x: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        let x = self.patch_embed.forward(x)?.permute((0, 2, 3, 1))?;
        let (_, gh, gw, _) = x.dims4()?;
        let mut x = x.broadcast_add(&self.pos_embed_for(gh, gw)?)?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, lora.and_then(|l| l.block(i)))?;
        }
        let x = x.permute((0, 3, 1, 2))?;
        let x = self.neck_norm1.forward_2d(&self.neck_conv1.forward(&x)?)?;
        self.neck_norm2.forward_2d(&self.neck_conv2.forward(&x)?)
    }

    /// The absolute position embedding for a `gh x gw` token grid, resized bicubically if needed.
    fn pos_embed_for(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let (_, h, w, _) = self.pos_embed.dims4()?;
        if (h, w) == (gh, gw) {
            return Ok(self.pos_embed.clone());
        }
        let t = self.pos_embed.permute((0, 3, 1, 2))?;
        ops::resize_2d(&t, gh, gw, Interpolation::Bicubic)?.permute((0, 2, 3, 1))
    }
}
