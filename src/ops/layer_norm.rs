//! Layer normalisation with a gradient for the input, the weight and the bias: over the last
//! dimension (`nn.LayerNorm`) and over the channel axis of an NCHW tensor (SAM's `LayerNorm2d`).

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};

use super::node::{precomputed, Bwd3};
use rayon::prelude::*;

use super::linear::sum_dim;
use super::{cpu_f32, takes_native};

/// Layer norm over the last dimension with affine weight and bias, with a gradient.
///
/// A low-precision input is normalised in the weight's precision (f32) and returned in its own.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if x.dtype() != w.dtype() {
        return layer_norm(&x.to_dtype(w.dtype())?, w, b, eps)?.to_dtype(x.dtype());
    }
    if takes_native(x) {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNormOp { eps })
    } else {
        portable_layer_norm(x, w, b, eps)
    }
}

/// [`layer_norm`] from candle's tensor ops, with the native op's backward: the graph keeps `x`,
/// not the steps of its normalisation.
fn portable_layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let (xhat, _) = normalise(&x.detach(), eps)?;
    let y = xhat
        .broadcast_mul(&w.detach())?
        .broadcast_add(&b.detach())?;
    precomputed(y, &[x, w, b], Bwd3(LayerNormOp { eps }))
}

/// `((x - mean) / sqrt(var + eps), 1 / sqrt(var + eps))` over the last dimension.
fn normalise(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)> {
    let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let rstd = (xc.sqr()?.mean_keepdim(D::Minus1)? + eps)?
        .sqrt()?
        .recip()?;
    Ok((xc.broadcast_mul(&rstd)?, rstd))
}

struct LayerNormOp {
    eps: f64,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "wesam-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, self.name())?;
        let w = cpu_f32(s2, l2, self.name())?;
        let b = cpu_f32(s3, l3, self.name())?;
        let n = w.len();
        let eps = self.eps as f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n)
            .zip(x.par_chunks(n))
            .for_each(|(dst, src)| {
                let mean = src.iter().sum::<f32>() / n as f32;
                let var = src.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                for i in 0..n {
                    dst[i] = (src[i] - mean) * rstd * w[i] + b[i];
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xhat, rstd) = normalise(x, self.eps)?;
        let gw = g.broadcast_mul(w)?;
        let mean_gw = gw.mean_keepdim(D::Minus1)?;
        let mean_gwx = (&gw * &xhat)?.mean_keepdim(D::Minus1)?;
        let dx = gw
            .broadcast_sub(&mean_gw)?
            .sub(&xhat.broadcast_mul(&mean_gwx)?)?
            .broadcast_mul(&rstd)?;
        let n = w.elem_count();
        let rows = x.elem_count() / n;
        let dw = sum_dim(&(g * &xhat)?.reshape((rows, n))?, 0)?;
        let db = sum_dim(&g.reshape((rows, n))?, 0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `LayerNorm2d` of SAM: layer norm over the channel axis of an NCHW tensor.
pub fn layer_norm_2d(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let y = layer_norm(&x.permute((0, 2, 3, 1))?, w, b, eps)?;
    y.permute((0, 3, 1, 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::assert_kernels_match;
    use candle_core::{Device, Var};

    /// The op as dispatched (native kernel unless `WESAM_KERNELS=portable`) and the portable one,
    /// each against the full graph of candle's tensor ops.
    #[test]
    fn layer_norm_kernels_match_composed_for_input_weight_and_bias() {
        let dev = Device::Cpu;
        let x = Var::randn(1f32, 3., (4, 6, 10), &dev).unwrap();
        let w = Var::randn(1f32, 0.3, 10, &dev).unwrap();
        let b = Var::randn(0f32, 0.3, 10, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (4, 6, 10), &dev).unwrap();
        let run = |kernel: usize| {
            let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
            let y = match kernel {
                0 => {
                    let (xhat, _) = normalise(xt, 1e-6).unwrap();
                    xhat.broadcast_mul(wt).unwrap().broadcast_add(bt).unwrap()
                }
                1 => layer_norm(xt, wt, bt, 1e-6).unwrap(),
                _ => portable_layer_norm(xt, wt, bt, 1e-6).unwrap(),
            };
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y, [xt, wt, bt].map(|t| g.get(t).unwrap().clone()))
        };
        assert_kernels_match("layer norm", run, 1e-5, 1e-4);
    }
}
