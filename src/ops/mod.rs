//! The kernels the model is built from: differentiable tensor ops that candle lacks or ships
//! without a backward pass, and the machinery that keeps training within memory.
//!
//! candle's fused `softmax_last_dim` and `layer_norm` drop gradients, and
//! `upsample_bilinear2d` has no backward (see `shared/reference/candle-training-pitfalls.md`).
//! Everything here carries a gradient: on the CPU as custom ops with a fused forward and an
//! explicit backward, elsewhere composed from elementary (differentiable) tensor ops, which give
//! the same numbers on any device.
//!
//! - [`linear`]: the frozen linear layer, bias addition and the sums of its backward;
//! - [`gelu`]: the exact (erf) GELU;
//! - [`softmax`]: softmax, and the attention softmax with the relative-position bias inside;
//! - [`layer_norm`]: layer norm over the last dimension and over NCHW channels;
//! - [`resize`]: bilinear and bicubic resizing as matrix products;
//! - [`attention`]: the image encoder's fused attention with decomposed relative positions;
//! - [`fast_math`]: the vectorised row kernels (exp, erf, softmax rows, GELU) under the CPU ops;
//! - [`recompute`]: activation recomputation (gradient checkpointing) for a piece of network.

pub mod attention;
pub mod fast_math;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod recompute;
pub mod resize;
pub mod softmax;

use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

/// Whether `t` takes the fused CPU kernels (an `f32` tensor on the CPU) rather than the
/// composed path.
fn is_cpu_f32(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

/// The `f32` data of a custom op's contiguous CPU input; `what` names the op in the error.
fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// Helpers shared by the unit tests of the kernels and of the model.
#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{Result, Tensor, Var};

    /// The largest absolute element-wise difference of two tensors of one shape.
    pub fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
        d.max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Value and gradient of `f` at `x` under the loss `sum(f(x) * probe)`.
    pub fn value_and_grad(
        x: &Var,
        probe: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> (Tensor, Tensor) {
        let y = f(x.as_tensor()).unwrap();
        let g = (&y * probe).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(x.as_tensor()).unwrap().clone())
    }
}
