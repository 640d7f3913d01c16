//! The ViT image encoder of SAM (`ImageEncoderViT`): patch embedding, absolute position
//! embedding, blocks of windowed or global attention with decomposed relative-position bias,
//! and the convolutional neck. Layers are named after the official checkpoint keys.
//!
//! An input size other than the checkpoint's is supported: the absolute position embedding is
//! resized bicubically (`align_corners=False`, as the EBSeg and SAM-Med2D derivatives do) and the
//! global blocks' relative-position tables linearly, exactly as the official `get_rel_pos` does at
//! run time. The stored tensors keep their checkpoint shapes, so saved weights stay loadable.

use std::sync::Arc;

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::config::SamConfig;
use super::layers::{Conv2d, Linear, Norm};
use super::lora::{Lora, LoraQkv};
use super::precision::Precision;
use super::sam_adapter::SamAdapter;
use crate::ops::attention::rel_pos_attention;
use crate::ops::gelu::gelu;
use crate::ops::resize::{resize_2d, Interpolation};
use crate::ops::{matmul, recompute};

const LN_EPS: f64 = 1e-6;

/// Relative-position table resized to `len` entries, as the official `get_rel_pos`.
fn resized_rel_pos(table: &Tensor, len: usize) -> Result<Tensor> {
    if table.dim(0)? == len {
        return Ok(table.clone());
    }
    // [L, C] -> [C, L] -> linear resize of the last axis -> [len, C].
    let t = table.t()?.unsqueeze(1)?; // [C, 1, L]
    resize_2d(&t, 1, len, Interpolation::Bilinear)?
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

    /// q, k and v of the tokens `x` `[B, H, W, C]` (windows or the whole grid), with the
    /// adapters' updates: `[B, H, W, 3C]`.
    fn qkv(&self, x: &Tensor, lora: Option<&LoraQkv>) -> Result<Tensor> {
        let c = x.dim(D::Minus1)?;
        let qkv = self.qkv.forward(x)?;
        let Some(l) = lora else { return Ok(qkv) };
        let (dq, dv) = l.deltas(x)?;
        let q = (qkv.narrow(D::Minus1, 0, c)? + dq)?;
        let v = (qkv.narrow(D::Minus1, 2 * c, c)? + dv)?;
        Tensor::cat(&[&q, &qkv.narrow(D::Minus1, c, c)?, &v], D::Minus1)
    }

    /// Attention over `qkv` `[B, H, W, 3C]`, before the output projection: `[B, H, W, C]`.
    fn attend(&self, qkv: &Tensor) -> Result<Tensor> {
        let (_, h, w, _) = qkv.dims4()?;
        let rh = rel_pos_lookup(&self.rel_pos_h, h)?;
        let rw = rel_pos_lookup(&self.rel_pos_w, w)?;
        rel_pos_attention(qkv, &rh, &rw, self.num_heads)
    }
}

/// Bottom/right zero padding that makes `len` a multiple of the window size `ws`.
fn window_padding(len: usize, ws: usize) -> usize {
    (ws - len % ws) % ws
}

/// Splits `[B, H, W, C]` into `[B * nW, ws, ws, C]` windows, zero-padding bottom/right.
fn window_partition(x: &Tensor, ws: usize) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (ph, pw) = (window_padding(h, ws), window_padding(w, ws));
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
    x.reshape((b, hp / ws, ws, wp / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b * (hp / ws) * (wp / ws), ws, ws, c))
}

/// Inverse of [`window_partition`] for an `h x w` grid, cropping the padding.
fn window_unpartition(windows: &Tensor, ws: usize, (h, w): (usize, usize)) -> Result<Tensor> {
    let (hp, wp) = (h + window_padding(h, ws), w + window_padding(w, ws));
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
    /// The dtype of the block's products (see [`Precision`]); its residual stream stays f32.
    products: DType,
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
            products: DType::F32,
        })
    }

    /// The block on tokens `x` `[B, H, W, C]`.
    ///
    /// When the block's own weights are frozen (LoRA training, inference), its two halves around
    /// the attention kernel are [`recompute::checkpoint`]ed: a training pass keeps only the block
    /// input, the qkv tensor and the attention output of each block, not the norms, windows and
    /// MLP activations. With trainable block weights the whole graph is kept.
    fn forward(&self, x: &Tensor, lora: Option<&LoraQkv>) -> Result<Tensor> {
        if !self.is_frozen() {
            let a = self.attn.attend(&self.attention_input(x, lora)?)?;
            return self.output(&a, x);
        }
        let input = Arc::new(AttentionInput {
            block: self.clone(),
            lora: lora.cloned(),
        });
        let qkv = match lora {
            Some(l) => recompute::checkpoint(input, &[x, &l.packed()?])?,
            None => recompute::checkpoint(input, &[x])?,
        };
        let a = self.attn.attend(&qkv)?;
        recompute::checkpoint(Arc::new(BlockOutput(self.clone())), &[&a, x])
    }

    /// Whether no weight of the checkpointed halves carries a gradient.
    fn is_frozen(&self) -> bool {
        let (norm1, norm2) = (&self.norm1, &self.norm2);
        let (qkv, proj) = (&self.attn.qkv, &self.attn.proj);
        [
            &norm1.weight,
            &norm1.bias,
            &norm2.weight,
            &norm2.bias,
            &qkv.weight,
            &proj.weight,
            &self.lin1.weight,
            &self.lin2.weight,
        ]
        .into_iter()
        .chain(
            [&qkv.bias, &proj.bias, &self.lin1.bias, &self.lin2.bias]
                .into_iter()
                .flatten(),
        )
        .all(|t| !t.track_op())
    }

    /// The tokens the attention sees: `norm1(x)`, split into windows for a windowed block.
    fn attention_tokens(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.norm1.forward(x)?.to_dtype(self.products)?;
        if self.window_size > 0 {
            window_partition(&x, self.window_size)
        } else {
            Ok(x)
        }
    }

    /// The attention kernel's input: qkv of the attention tokens, adapted by `lora`.
    fn attention_input(&self, x: &Tensor, lora: Option<&LoraQkv>) -> Result<Tensor> {
        self.attn.qkv(&self.attention_tokens(x)?, lora)
    }

    /// `x + proj(a)`: the attention output `a` (windows or grid) projected and added to the
    /// block input `x` `[B, H, W, C]`.
    fn attention_residual(&self, a: &Tensor, x: &Tensor) -> Result<Tensor> {
        let a = if self.window_size > 0 {
            let (_, h, w, _) = x.dims4()?;
            window_unpartition(a, self.window_size, (h, w))?
        } else {
            a.clone()
        };
        x + self.attn.proj.forward(&a)?.to_dtype(x.dtype())?
    }

    /// The MLP's hidden activations `gelu(lin1(norm2(x)))`.
    fn mlp_hidden(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.norm2.forward(x)?.to_dtype(self.products)?;
        gelu(&self.lin1.forward(&x)?)
    }

    /// The block output from the attention output `a` and the block input `x`.
    fn output(&self, a: &Tensor, x: &Tensor) -> Result<Tensor> {
        let x = self.attention_residual(a, x)?;
        let mlp = self
            .lin2
            .forward(&self.mlp_hidden(&x)?)?
            .to_dtype(x.dtype())?;
        x + mlp
    }
}

/// The first checkpointed half of a block: block input (and packed adapters) to qkv.
struct AttentionInput {
    block: Block,
    /// The adapters whose packed matrices are the second input; they give shapes and scale.
    lora: Option<LoraQkv>,
}

impl AttentionInput {
    fn lora(&self, inputs: &[Tensor]) -> Result<Option<LoraQkv>> {
        self.lora
            .as_ref()
            .map(|l| l.unpacked(&inputs[1]))
            .transpose()
    }
}

impl recompute::Segment for AttentionInput {
    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        let lora = self.lora(inputs)?;
        self.block.attention_input(&inputs[0], lora.as_ref())
    }

    /// The qkv projection is linear in the tokens: `<tokens, g W_qkv>` plus the adapters'
    /// share, with no qkv product recomputed.
    fn vjp_surrogate(&self, inputs: &[Tensor], grad: &Tensor) -> Result<Tensor> {
        let tokens = self.block.attention_tokens(&inputs[0])?;
        let c = tokens.dim(D::Minus1)?;
        let rows = tokens.elem_count() / c;
        let (tokens, grad) = (tokens.reshape((rows, c))?, grad.reshape((rows, 3 * c))?);
        let w_qkv = self.block.attn.qkv.weight.to_dtype(grad.dtype())?;
        let through_qkv = (&tokens * matmul(&grad, &w_qkv)?)?.sum_all()?;
        match self.lora(inputs)? {
            Some(l) => {
                let g_q = grad.narrow(1, 0, c)?.contiguous()?;
                let g_v = grad.narrow(1, 2 * c, c)?.contiguous()?;
                through_qkv + l.deltas_surrogate(&tokens, &g_q, &g_v)?
            }
            None => Ok(through_qkv),
        }
    }
}

/// The second checkpointed half of a block: attention output and block input to block output.
struct BlockOutput(Block);

impl recompute::Segment for BlockOutput {
    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        self.0.output(&inputs[0], &inputs[1])
    }

    /// `y = x + lin2(h)` with `lin2` linear: `<x, g> + <h, g W_2>`, with no `lin2` product
    /// recomputed.
    fn vjp_surrogate(&self, inputs: &[Tensor], grad: &Tensor) -> Result<Tensor> {
        let x = self.0.attention_residual(&inputs[0], &inputs[1])?;
        let h = self.0.mlp_hidden(&x)?;
        let c = grad.dim(D::Minus1)?;
        let g = grad
            .reshape((grad.elem_count() / c, c))?
            .to_dtype(h.dtype())?;
        let g_h = matmul(&g, &self.0.lin2.weight.to_dtype(h.dtype())?)?.reshape(h.shape())?;
        (x * grad)?.sum_all()? + (h * g_h)?.sum_all()?.to_dtype(grad.dtype())?
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
    /// SAM-Adapter's prompt generator, whose prompts are added before each block.
    adapter: Option<SamAdapter>,
    /// What the encoder computes in; its weights stay as loaded.
    precision: Precision,
}

impl ImageEncoder {
    /// Loads the encoder from the official `image_encoder.*` keys under `vb`.
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
            adapter: cfg
                .sam_adapter
                .map(|layout| SamAdapter::new(cfg, layout, vb.pp("prompt_generator")))
                .transpose()?,
            precision: Precision::F32,
        })
    }

    /// Computes in `precision` from now on (see [`ImageEncoder::forward`]). Weights, adapters
    /// and the returned embeddings stay f32.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        for block in &mut self.blocks {
            block.products = precision.dtype();
        }
    }

    /// The SAM-Adapter prompt generator, if the encoder has one.
    pub fn adapter_mut(&mut self) -> Option<&mut SamAdapter> {
        self.adapter.as_mut()
    }

    /// What the encoder computes in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Image embeddings `[B, prompt_embed_dim, H/p, W/p]` of a preprocessed `[B, 3, H, W]` batch.
    /// With `lora`, its adapters are applied; without, this is the frozen base model. A
    /// SAM-Adapter's prompts, computed from the patch embedding and the input, are added before
    /// every block (in f32, the residual stream's precision).
    ///
    /// In a low precision, the products (patch embedding, blocks, neck convolutions) are
    /// computed in it and the rest in f32: the residual stream, the norms, the softmaxes, as
    /// PyTorch's autocast does.
    pub fn forward(&self, x: &Tensor, lora: Option<&Lora>) -> Result<Tensor> {
        Ok(self.forward_tapped(x, lora, &[])?.0)
    }

    /// [`ImageEncoder::forward`] that also returns the outputs of the blocks `taps` (0-based,
    /// in the order given), channels first `[B, D, h, w]`, before the neck: the intermediate
    /// features downstream models take from SAM (`model::features`).
    pub fn forward_tapped(
        &self,
        x: &Tensor,
        lora: Option<&Lora>,
        taps: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        if let Some(&i) = taps.iter().find(|&&i| i >= self.blocks.len()) {
            candle_core::bail!(
                "block {i} asked for, but the encoder has {}",
                self.blocks.len()
            );
        }
        let (stream, products) = (x.dtype(), self.precision.dtype());
        let low = |t: &Tensor| t.to_dtype(products);
        let image = x;
        let x = self.patch_embed.forward(&low(x)?)?.to_dtype(stream)?;
        let x = x.permute((0, 2, 3, 1))?;
        let (_, gh, gw, _) = x.dims4()?;
        let prompts = match &self.adapter {
            Some(a) => a.prompts(&x, image)?,
            None => Vec::new(),
        };
        let mut x = x.broadcast_add(&self.pos_embed_for(gh, gw)?)?;
        let mut tapped = vec![None; taps.len()];
        for (i, block) in self.blocks.iter().enumerate() {
            if let Some(p) = prompts.get(i) {
                x = (x + p)?;
            }
            x = block.forward(&x, lora.and_then(|l| l.block(i)))?;
            for (slot, _) in tapped.iter_mut().zip(taps).filter(|(_, &t)| t == i) {
                *slot = Some(x.permute((0, 3, 1, 2))?);
            }
        }
        let x = x.permute((0, 3, 1, 2))?;
        let x = self
            .neck_norm1
            .forward_2d(&self.neck_conv1.forward(&low(&x)?)?)?;
        let x = self.neck_conv2.forward(&low(&x)?)?;
        let neck = self.neck_norm2.forward_2d(&x)?.to_dtype(stream)?;
        Ok((neck, tapped.into_iter().flatten().collect()))
    }

    /// The absolute position embedding for a `gh x gw` token grid, resized bicubically if needed.
    fn pos_embed_for(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let (_, h, w, _) = self.pos_embed.dims4()?;
        if (h, w) == (gh, gw) {
            return Ok(self.pos_embed.clone());
        }
        let t = self.pos_embed.permute((0, 3, 1, 2))?;
        resize_2d(&t, gh, gw, Interpolation::Bicubic)?.permute((0, 2, 3, 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::random_state_dict;
    use crate::ops::test_util::max_diff;
    use candle_core::{DType, Device, Var};

    /// The checkpointed block (two recomputed halves with their shortcut surrogates) against
    /// the same block as one ordinary graph: output, input gradient and every adapter gradient.
    #[test]
    fn checkpointed_block_matches_the_full_graph() {
        let dev = Device::Cpu;
        let mut cfg = SamConfig::demo();
        cfg.encoder_embed_dim = 16;
        cfg.encoder_num_heads = 2;
        cfg.encoder_global_attn_indexes = vec![1];
        cfg.window_size = 3;
        cfg.image_size = 7 * cfg.vit_patch_size;
        let weights = random_state_dict(&cfg, 3, &dev).unwrap();
        let vb = VarBuilder::from_tensors(weights, DType::F32, &dev);
        let randn = |shape: (usize, usize, usize, usize)| Var::randn(0f32, 0.5, shape, &dev);
        // A 5 x 7 grid: windows of 3 need padding; the global block resizes its tables.
        let x = randn((1, 5, 7, 16)).unwrap();
        let probe = Tensor::randn(0f32, 1., (1, 5, 7, 16), &dev).unwrap();
        let var = |shape: (usize, usize)| Var::randn(0f32, 0.5, shape, &dev).unwrap();
        let (a_q, b_q, a_v, b_v) = (var((4, 16)), var((16, 4)), var((4, 16)), var((16, 4)));
        let lora = LoraQkv {
            a_q: a_q.as_tensor().clone(),
            b_q: b_q.as_tensor().clone(),
            a_v: a_v.as_tensor().clone(),
            b_v: b_v.as_tensor().clone(),
            scale: 0.5,
        };
        let leaves = [&x, &a_q, &b_q, &a_v, &b_v];
        for index in [0, 1] {
            let block = Block::new(&cfg, index, vb.pp(format!("image_encoder.blocks.{index}")));
            let block = block.unwrap();
            assert!(block.is_frozen());
            let x = x.as_tensor();
            let kept = block.forward(x, Some(&lora)).unwrap();
            let qkv = block.attention_input(x, Some(&lora)).unwrap();
            let plain = block.output(&block.attn.attend(&qkv).unwrap(), x).unwrap();
            assert!(max_diff(&kept, &plain) < 1e-5);
            let grads = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let (g1, g2) = (grads(&kept), grads(&plain));
            for leaf in leaves {
                let t = leaf.as_tensor();
                let d = max_diff(g1.get(t).unwrap(), g2.get(t).unwrap());
                assert!(d < 1e-4, "block {index}: gradient differs by {d}");
            }
        }
    }
}
