//! The layers shared by the model's parts, stored as their PyTorch modules are (so that they
//! load from the official checkpoint keys): linear layers, layer norms and 2-D convolutions.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::ops::conv2d;
use crate::ops::layer_norm::{layer_norm, layer_norm_2d};
use crate::ops::linear::{add_bias, linear};

/// A layer norm's affine parameters (`nn.LayerNorm`, or SAM's `LayerNorm2d` through
/// [`Norm::forward_2d`]).
#[derive(Debug, Clone)]
pub struct Norm {
    /// Read by the image encoder's blocks to tell whether they are frozen.
    pub(crate) weight: Tensor,
    /// Read with the weight, for the same reason.
    pub(crate) bias: Tensor,
    eps: f64,
}

impl Norm {
    /// Loads `weight` and `bias` of `dim` channels under `vb`.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    /// Normalises the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.weight, &self.bias, self.eps)
    }

    /// Normalises the channel axis of an NCHW tensor (`LayerNorm2d`).
    pub fn forward_2d(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm_2d(x, &self.weight, &self.bias, self.eps)
    }
}

/// A linear layer stored as `nn.Linear` (`weight [out, in]`, optional bias); it computes in its
/// input's precision.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`; read directly by the recomputation surrogates, which multiply by it.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Loads `weight` and `bias` under `vb`.
    pub fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: Some(vb.get(out_dim, "bias")?),
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.weight, self.bias.as_ref())
    }
}

/// A 2-D convolution stored as `nn.Conv2d`; it computes in its input's precision.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads a `k x k` convolution from `c_in` to `c_out` channels (with a bias if `bias`)
    /// under `vb`.
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
        let y = conv2d(x, &self.weight, self.padding, self.stride)?;
        match &self.bias {
            Some(b) => add_bias(&y, b, 1),
            None => Ok(y),
        }
    }
}
