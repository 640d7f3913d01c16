//! The two-way transformer of SAM's mask decoder (`TwoWayTransformer`): prompt tokens and image
//! tokens attend to each other in both directions.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{Linear, Norm};
use crate::ops::softmax::softmax_last_dim;

const LN_EPS: f64 = 1e-5;

/// Attention with separate q/k/v projections and an optional internal downsampling.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
}

impl Attention {
    fn new(dim: usize, num_heads: usize, downsample: usize, vb: VarBuilder) -> Result<Self> {
        let inner = dim / downsample;
        Ok(Self {
            q_proj: Linear::new(dim, inner, vb.pp("q_proj"))?,
            k_proj: Linear::new(dim, inner, vb.pp("k_proj"))?,
            v_proj: Linear::new(dim, inner, vb.pp("v_proj"))?,
            out_proj: Linear::new(inner, dim, vb.pp("out_proj"))?,
            num_heads,
        })
    }

    fn separate_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        x.reshape((b, n, self.num_heads, c / self.num_heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let q = self.separate_heads(&self.q_proj.forward(q)?)?;
        let k = self.separate_heads(&self.k_proj.forward(k)?)?;
        let v = self.separate_heads(&self.v_proj.forward(v)?)?;
        let (b, h, n, c) = q.dims4()?;
        let attn = (q.matmul(&k.t()?)? / (c as f64).sqrt())?;
        let out = softmax_last_dim(&attn)?.matmul(&v)?;
        let out = out.transpose(1, 2)?.reshape((b, n, h * c))?;
        self.out_proj.forward(&out)
    }
}

/// One block of the two-way transformer (`TwoWayAttentionBlock`).
#[derive(Debug, Clone)]
struct TwoWayBlock {
    self_attn: Attention,
    norm1: Norm,
    cross_token_to_image: Attention,
    norm2: Norm,
    lin1: Linear,
    lin2: Linear,
    norm3: Norm,
    norm4: Norm,
    cross_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayBlock {
    fn new(
        dim: usize,
        heads: usize,
        mlp_dim: usize,
        skip_pe: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::new(dim, heads, 1, vb.pp("self_attn"))?,
            norm1: Norm::new(dim, LN_EPS, vb.pp("norm1"))?,
            cross_token_to_image: Attention::new(
                dim,
                heads,
                2,
                vb.pp("cross_attn_token_to_image"),
            )?,
            norm2: Norm::new(dim, LN_EPS, vb.pp("norm2"))?,
            lin1: Linear::new(dim, mlp_dim, vb.pp("mlp.lin1"))?,
            lin2: Linear::new(mlp_dim, dim, vb.pp("mlp.lin2"))?,
            norm3: Norm::new(dim, LN_EPS, vb.pp("norm3"))?,
            norm4: Norm::new(dim, LN_EPS, vb.pp("norm4"))?,
            cross_image_to_token: Attention::new(
                dim,
                heads,
                2,
                vb.pp("cross_attn_image_to_token"),
            )?,
            skip_first_layer_pe: skip_pe,
        })
    }

    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        query_pe: &Tensor,
        key_pe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + query_pe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;

        let q = (&queries + query_pe)?;
        let k = (keys + key_pe)?;
        let queries = (&queries + self.cross_token_to_image.forward(&q, &k, keys)?)?;
        let queries = self.norm2.forward(&queries)?;

        let mlp = self.lin2.forward(&self.lin1.forward(&queries)?.relu()?)?;
        let queries = self.norm3.forward(&(queries + mlp)?)?;

        let q = (&queries + query_pe)?;
        let keys = (keys + self.cross_image_to_token.forward(&k, &q, &queries)?)?;
        let keys = self.norm4.forward(&keys)?;
        Ok((queries, keys))
    }
}

/// `TwoWayTransformer`.
#[derive(Debug, Clone)]
pub struct TwoWayTransformer {
    layers: Vec<TwoWayBlock>,
    final_attn: Attention,
    norm_final: Norm,
}

impl TwoWayTransformer {
    /// Loads `depth` two-way blocks of width `dim` and the final attention under `vb`.
    pub fn new(
        depth: usize,
        dim: usize,
        heads: usize,
        mlp_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let layers = (0..depth)
            .map(|i| TwoWayBlock::new(dim, heads, mlp_dim, i == 0, vb.pp(format!("layers.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            final_attn: Attention::new(dim, heads, 2, vb.pp("final_attn_token_to_image"))?,
            norm_final: Norm::new(dim, LN_EPS, vb.pp("norm_final_attn"))?,
        })
    }

    /// `image`: `[B, C, h, w]`, `image_pe` the same shape, `tokens`: `[B, k, C]`.
    /// Returns the processed tokens `[B, k, C]` and image tokens `[B, h*w, C]`.
    pub fn forward(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        tokens: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let flat =
            |t: &Tensor| -> Result<Tensor> { t.flatten_from(2)?.transpose(1, 2)?.contiguous() };
        let key_pe = flat(image_pe)?;
        let mut keys = flat(image)?;
        let mut queries = tokens.clone();
        for layer in &self.layers {
            (queries, keys) = layer.forward(&queries, &keys, tokens, &key_pe)?;
        }
        let q = (&queries + tokens)?;
        let k = (&keys + &key_pe)?;
        let queries = (&queries + self.final_attn.forward(&q, &k, &keys)?)?;
        Ok((self.norm_final.forward(&queries)?, keys))
    }
}
