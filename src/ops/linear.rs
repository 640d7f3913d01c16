//! Linear maps with a fast backward: the frozen linear layer, bias addition along any dimension
//! (a linear layer's or a convolution's), and the sum over one dimension that is the bias's
//! gradient (also used by the layer norm's and the attention's backward passes).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::node::{precomputed, Bwd1, Bwd2};
use super::{cpu_f32, matmul, takes_native};

/// `x @ w^T + b` for a weight stored as PyTorch's `nn.Linear` does (`[out, in]`).
///
/// When the weight and bias are frozen (plain tensors), this is one op whose backward pass
/// computes only the input's gradient, not the weight's (candle's matmul backward computes
/// both), and keeps one output instead of two; the native kernel also adds the bias in place.
///
/// The weight and bias are cast to the input's precision (a no-op in f32).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let w = &w.to_dtype(x.dtype())?;
    let b = b.map(|b| b.to_dtype(x.dtype())).transpose()?;
    let b = b.as_ref();
    let frozen = !w.track_op() && !b.is_some_and(|b| b.track_op());
    let dims = x.dims().to_vec();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner;
    let mut out_dims = dims.clone();
    *out_dims.last_mut().unwrap() = w.dim(0)?;
    if frozen {
        let op = FrozenLinear {
            weight: w.contiguous()?,
            bias: b.map(|b| b.contiguous()).transpose()?,
        };
        let x = x.reshape((rows, inner))?;
        let native = takes_native(&x) && w.dtype() == DType::F32;
        return op.apply(&x, native)?.reshape(out_dims);
    }
    let y = matmul(&x.reshape((rows, inner))?, &w.t()?)?.reshape(out_dims)?;
    match b {
        Some(b) => add_bias(&y, b, y.rank() - 1),
        None => Ok(y),
    }
}

/// A linear layer with frozen weight `[out, in]` and bias, applied to `[rows, in]`.
struct FrozenLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl FrozenLinear {
    /// The layer on `x` `[rows, in]`: the native kernel, or the portable one (candle's matmul
    /// and broadcast, entered into the graph with the same backward).
    fn apply(self, x: &Tensor, native: bool) -> Result<Tensor> {
        if native {
            return x.contiguous()?.apply_op1(self);
        }
        let y = matmul(&x.detach(), &self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        precomputed(y, &[x], Bwd1(self))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "wesam-frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (m, k) = l.shape().dims2()?;
        let (n, _) = self.weight.dims2()?;
        let (w_storage, w_layout) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(w) = &*w_storage else {
            candle_core::bail!("frozen linear: the weight is not on the CPU")
        };
        // w^T as a strided view of the row-major [n, k] weight.
        let w_t = Layout::new((k, n).into(), vec![1, k], w_layout.start_offset());
        let mut y = s.matmul(w, (1, m, n, k), l, &w_t)?;
        if let Some(bias) = &self.bias {
            let bias = bias.to_vec1::<f32>()?;
            let CpuStorage::F32(data) = &mut y else {
                candle_core::bail!("frozen linear: expected f32")
            };
            data.par_chunks_mut(n)
                .for_each(|row| row.iter_mut().zip(&bias).for_each(|(v, b)| *v += b));
        }
        Ok((y, (m, n).into()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(matmul(g, &self.weight)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Bias addition and sums with a fast backward.
//
// candle's CPU sum is vectorised only over trailing dimensions; over any other it spends two
// integer divisions per element. Its backward of a broadcast (`y.broadcast_add(bias)`) is such
// a sum, over every row and pixel of `y`, and it took a fifth of a training step of the small
// model with every weight trainable.

/// `y + b`, with the bias `b` (`[C]`) added along dimension `dim` of `y` (`[.., C, ..]`): the
/// bias of a linear layer (`dim` last) or of a convolution (`dim` 1 of NCHW).
///
/// A frozen bias takes candle's broadcast, whose backward then sums nothing.
pub fn add_bias(y: &Tensor, b: &Tensor, dim: usize) -> Result<Tensor> {
    let b = &b.to_dtype(y.dtype())?;
    if !b.track_op() {
        let mut shape = vec![1; y.rank()];
        shape[dim] = b.elem_count();
        return y.broadcast_add(&b.reshape(shape)?);
    }
    BiasAddOp { dim }.apply(y, b, takes_native(y) && takes_native(b))
}

/// The gradient of a bias added along `dim`: `g` summed over every other dimension.
fn bias_gradient(g: &Tensor, dim: usize) -> Result<Tensor> {
    let dims = g.dims();
    let (outer, c) = (dims[..dim].iter().product::<usize>(), dims[dim]);
    let inner = dims[dim + 1..].iter().product::<usize>();
    let per_row = match inner {
        1 => g.reshape((outer, c))?,
        _ => g.reshape((outer, c, inner))?.sum(2)?, // trailing: vectorised
    };
    sum_dim(&per_row, 0)
}

/// `x.sum(dim)`, fast whatever the dimension: over the last one candle's vectorised sum, over
/// any other a product with a row of ones (a matrix-vector product).
pub fn sum_dim(x: &Tensor, dim: usize) -> Result<Tensor> {
    let dims = x.dims();
    let post = dims[dim + 1..].iter().product::<usize>();
    if post == 1 {
        return x.sum(dim);
    }
    let (pre, len) = (dims[..dim].iter().product::<usize>(), dims[dim]);
    let ones = Tensor::ones((1, 1, len), x.dtype(), x.device())?.broadcast_as((pre, 1, len))?;
    let out_dims: Vec<usize> = dims[..dim]
        .iter()
        .chain(&dims[dim + 1..])
        .copied()
        .collect();
    ones.matmul(&x.reshape((pre, len, post))?)?
        .reshape(out_dims)
}

struct BiasAddOp {
    dim: usize,
}

impl BiasAddOp {
    /// `y + b`: the native kernel, or the portable one (candle's broadcast, entered into the
    /// graph with the same backward and its fast sum for the bias).
    fn apply(self, y: &Tensor, b: &Tensor, native: bool) -> Result<Tensor> {
        if native {
            return y.contiguous()?.apply_op2(&b.contiguous()?, self);
        }
        let mut shape = vec![1; y.rank()];
        shape[self.dim] = b.elem_count();
        let out = y.detach().broadcast_add(&b.detach().reshape(shape)?)?;
        precomputed(out, &[y, b], Bwd2(self))
    }
}

impl CustomOp2 for BiasAddOp {
    fn name(&self) -> &'static str {
        "wesam-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = cpu_f32(s1, l1, self.name())?;
        let b = cpu_f32(s2, l2, self.name())?;
        let dims = l1.shape().dims();
        if dims.get(self.dim) != Some(&b.len()) {
            candle_core::bail!("{}: {} biases for shape {dims:?}", self.name(), b.len())
        }
        let inner: usize = dims[self.dim + 1..].iter().product();
        let c = b.len();
        let mut out = y.to_vec();
        out.par_chunks_mut(c * inner).for_each(|block| {
            for (run, bias) in block.chunks_mut(inner).zip(b) {
                run.iter_mut().for_each(|v| *v += bias);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        _b: &Tensor,
        _out: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(g.clone()), Some(bias_gradient(g, self.dim)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_kernels_match, max_diff, value_and_grad};
    use candle_core::{Device, Var};

    #[test]
    fn frozen_linear_matches_matmul_and_passes_the_input_gradient() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 3, 5, 7), &dev).unwrap();
        let w = Tensor::randn(0f32, 1., (4, 7), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 4, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (2, 3, 5, 4), &dev).unwrap();
        let (y1, g1) = value_and_grad(&x, &probe, |t| linear(t, &w, Some(&b)));
        let (y2, g2) = value_and_grad(&x, &probe, |t| {
            t.broadcast_matmul(&w.t()?)?.broadcast_add(&b)
        });
        assert!(max_diff(&y1, &y2) < 1e-5);
        assert!(max_diff(&g1, &g2) < 1e-5);
        let portable = |t: &Tensor| {
            let op = FrozenLinear {
                weight: w.clone(),
                bias: Some(b.clone()),
            };
            op.apply(&t.reshape((30, 7))?, false)?.reshape((2, 3, 5, 4))
        };
        let (y3, g3) = value_and_grad(&x, &probe, portable);
        assert!(max_diff(&y3, &y2) < 1e-5);
        assert!(max_diff(&g3, &g2) < 1e-5);
        // A trainable weight takes the composed path and gets its gradient.
        let wv = Var::from_tensor(&w).unwrap();
        let y = linear(x.as_tensor(), wv.as_tensor(), Some(&b)).unwrap();
        let g = (&y * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g.get(wv.as_tensor()).is_some());
    }

    #[test]
    fn sum_dim_matches_candle_sum_over_every_dimension() {
        let x = Tensor::randn(0f32, 1., (3, 4, 5, 6), &Device::Cpu).unwrap();
        for dim in 0..4 {
            let (fast, plain) = (sum_dim(&x, dim).unwrap(), x.sum(dim).unwrap());
            assert_eq!(fast.dims(), plain.dims());
            assert!(max_diff(&fast, &plain) < 1e-5, "dim {dim}");
        }
    }

    /// The bias addition as dispatched and the portable one against candle's broadcast, for a
    /// linear layer's bias (last dimension) and a convolution's (dimension 1 of NCHW), in value
    /// and in both gradients.
    #[test]
    fn bias_addition_matches_broadcast_in_value_and_gradients() {
        let dev = Device::Cpu;
        for (shape, dim) in [(vec![2, 3, 5, 7], 3), (vec![2, 7, 5, 3], 1)] {
            let y = Var::randn(0f32, 1., shape.as_slice(), &dev).unwrap();
            let b = Var::randn(0f32, 1., 7, &dev).unwrap();
            let probe = Tensor::randn(0f32, 1., shape.as_slice(), &dev).unwrap();
            let run = |kernel: usize| {
                let (yt, bt) = (y.as_tensor(), b.as_tensor());
                let out = match kernel {
                    0 => {
                        let mut bshape = vec![1; 4];
                        bshape[dim] = 7;
                        yt.broadcast_add(&bt.reshape(bshape).unwrap()).unwrap()
                    }
                    1 => add_bias(yt, bt, dim).unwrap(),
                    _ => BiasAddOp { dim }.apply(yt, bt, false).unwrap(),
                };
                let g = (&out * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (out, [yt, bt].map(|t| g.get(t).unwrap().clone()))
            };
            assert_kernels_match(&format!("bias on dim {dim}"), run, 1e-6, 1e-5);
        }
    }
}
