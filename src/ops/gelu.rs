//! PyTorch's exact (erf) GELU with a gradient: one custom op on the CPU (vectorised forward,
//! one-pass backward), candle's composed `gelu_erf` elsewhere.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{cpu_f32, fast_math, takes_native};

/// PyTorch's exact (erf) GELU, as `nn.GELU()` in SAM.
///
/// On the CPU one op with a vectorised forward and a one-pass backward; candle's `gelu_erf`
/// composes its backward from eight element-wise ops, each allocating an MLP-sized tensor.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if takes_native(x) {
        x.contiguous()?.apply_op1(GeluOp)
    } else {
        x.gelu_erf()
    }
}

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "wesam-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(y, x)| fast_math::gelu(x, y));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &GeluBackwardOp)?))
    }
}

/// `g * gelu'(x)`.
struct GeluBackwardOp;

impl CustomOp2 for GeluBackwardOp {
    fn name(&self) -> &'static str {
        "wesam-gelu-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s1, l1, self.name())?;
        let g = cpu_f32(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(
                x.par_chunks(ELEMENTWISE_CHUNK)
                    .zip(g.par_chunks(ELEMENTWISE_CHUNK)),
            )
            .for_each(|(d, (x, g))| fast_math::gelu_backward(x, g, d));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Elements per parallel task of the element-wise kernels.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{max_diff, value_and_grad};
    use candle_core::{Device, Var};

    #[test]
    fn fused_gelu_matches_composed_in_value_and_gradient() {
        let dev = Device::Cpu;
        // More elements than one parallel chunk, so the chunking is exercised too.
        let n = ELEMENTWISE_CHUNK + 37;
        let x = Var::randn(0f32, 2., n, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., n, &dev).unwrap();
        let (y1, g1) = value_and_grad(&x, &probe, gelu);
        let (y2, g2) = value_and_grad(&x, &probe, |t| t.gelu_erf());
        assert!(max_diff(&y1, &y2) < 2e-6, "{}", max_diff(&y1, &y2));
        assert!(max_diff(&g1, &g2) < 2e-6, "{}", max_diff(&g1, &g2));
    }
}
