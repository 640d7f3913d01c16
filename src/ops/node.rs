//! Graph nodes whose forward ran outside candle's graph and whose backward is the project's own,
//! on any device.
//!
//! candle attaches a custom backward only to custom ops, and a custom op needs a forward kernel
//! per device. A [`precomputed`] node sidesteps that: its output is computed first, from
//! detached inputs with ordinary tensor ops (on whatever device they live), and the node's
//! forward on each device only hands that storage to candle. The graph then keeps the node's
//! inputs and output and nothing of the ops that computed it, and the backward is the one given.
//! This is how the portable kernels share the CPU kernels' backward passes, and how
//! [`super::recompute`] checkpoints a segment on every device.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// The backward pass of a [`precomputed`] node.
pub trait Backward: Send + Sync {
    /// The node's name in errors.
    fn name(&self) -> &'static str;

    /// One gradient (or none) per input, from the inputs, the node's output and the output's
    /// gradient.
    fn backward(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>>;
}

/// A custom op's backward pass, reused for a [`precomputed`] node of one input.
pub struct Bwd1<T>(pub T);
/// A custom op's backward pass, reused for a [`precomputed`] node of two inputs.
pub struct Bwd2<T>(pub T);
/// A custom op's backward pass, reused for a [`precomputed`] node of three inputs.
pub struct Bwd3<T>(pub T);

impl<T: CustomOp1 + Send + Sync> Backward for Bwd1<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn backward(&self, x: &[&Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![self.0.bwd(x[0], y, g)?])
    }
}

impl<T: CustomOp2 + Send + Sync> Backward for Bwd2<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn backward(&self, x: &[&Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = self.0.bwd(x[0], x[1], y, g)?;
        Ok(vec![a, b])
    }
}

impl<T: CustomOp3 + Send + Sync> Backward for Bwd3<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn backward(&self, x: &[&Tensor], y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b, c) = self.0.bwd(x[0], x[1], x[2], y, g)?;
        Ok(vec![a, b, c])
    }
}

/// `output` (computed from detached copies of `inputs`) entered into the graph as a function of
/// `inputs` (one to three, on one device) whose backward is `backward`.
///
/// When no input carries a gradient, `output` is returned as it is: there is nothing to record.
pub fn precomputed(
    output: Tensor,
    inputs: &[&Tensor],
    backward: impl Backward + 'static,
) -> Result<Tensor> {
    if !inputs.iter().any(|t| t.track_op()) {
        return Ok(output);
    }
    // The device forwards clone the whole storage: it must be exactly this tensor.
    let output = match output.layout().contiguous_offsets() {
        Some((0, _)) => output,
        _ => output.copy()?,
    };
    let node = Node {
        output: Mutex::new(Some(output)),
        backward: Box::new(backward),
    };
    match inputs {
        [a] => a.apply_op1(node),
        [a, b] => a.apply_op2(b, node),
        [a, b, c] => a.apply_op3(b, c, node),
        _ => candle_core::bail!("{}: one to three inputs, got {}", node.name(), inputs.len()),
    }
}

/// The graph node of [`precomputed`].
struct Node {
    /// The output, taken by the (single) forward call.
    output: Mutex<Option<Tensor>>,
    backward: Box<dyn Backward>,
}

impl Node {
    fn name(&self) -> &'static str {
        self.backward.name()
    }

    fn take(&self) -> Result<Tensor> {
        self.output
            .lock()
            .map_err(|_| candle_core::Error::Msg(format!("{}: poisoned lock", self.name())))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: forward run twice", self.name())))
    }

    fn cpu(&self) -> Result<(CpuStorage, Shape)> {
        let output = self.take()?;
        let (storage, layout) = output.storage_and_layout();
        let candle_core::Storage::Cpu(storage) = &*storage else {
            candle_core::bail!("{}: the output is not on the CPU", self.name())
        };
        let (a, b) = layout.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: non-contiguous output", self.name()))
        })?;
        let data = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(v[a..b].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[a..b].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[a..b].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[a..b].to_vec()),
            _ => candle_core::bail!("{}: float outputs only", self.name()),
        };
        Ok((data, output.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda(&self) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let output = self.take()?;
        let (storage, layout) = output.storage_and_layout();
        let candle_core::Storage::Cuda(storage) = &*storage else {
            candle_core::bail!("{}: the output is not on the CUDA device", self.name())
        };
        Ok((storage.try_clone(layout)?, output.shape().clone()))
    }

    #[cfg(feature = "metal")]
    fn metal(&self) -> Result<(candle_core::MetalStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let output = self.take()?;
        let (storage, layout) = output.storage_and_layout();
        let candle_core::Storage::Metal(storage) = &*storage else {
            candle_core::bail!("{}: the output is not on the Metal device", self.name())
        };
        Ok((storage.try_clone(layout)?, output.shape().clone()))
    }
}

/// The device forwards of a node of `$n` inputs: each hands over the precomputed output.
macro_rules! device_forwards {
    ($($s:ident, $l:ident),+) => {
        fn name(&self) -> &'static str {
            Node::name(self)
        }

        fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> Result<(CpuStorage, Shape)> {
            self.cpu()
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            $($s: &candle_core::CudaStorage, $l: &Layout),+
        ) -> Result<(candle_core::CudaStorage, Shape)> {
            self.cuda()
        }

        #[cfg(feature = "metal")]
        fn metal_fwd(
            &self,
            $($s: &candle_core::MetalStorage, $l: &Layout),+
        ) -> Result<(candle_core::MetalStorage, Shape)> {
            self.metal()
        }
    };
}

impl CustomOp1 for Node {
    device_forwards!(_s1, _l1);

    fn bwd(&self, a: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(self.backward.backward(&[a], y, g)?.pop().flatten())
    }
}

impl CustomOp2 for Node {
    device_forwards!(_s1, _l1, _s2, _l2);

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.backward.backward(&[a, b], y, g)?.into_iter();
        Ok((grads.next().flatten(), grads.next().flatten()))
    }
}

impl CustomOp3 for Node {
    device_forwards!(_s1, _l1, _s2, _l2, _s3, _l3);

    #[allow(clippy::type_complexity)]
    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let mut grads = self.backward.backward(&[a, b, c], y, g)?.into_iter();
        Ok((
            grads.next().flatten(),
            grads.next().flatten(),
            grads.next().flatten(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::{DType, Device, Var};

    /// `x * y` with the product rule as its backward.
    struct Product;

    impl Backward for Product {
        fn name(&self) -> &'static str {
            "test-product"
        }

        fn backward(&self, x: &[&Tensor], _: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some((g * x[1])?), Some((g * x[0])?)])
        }
    }

    #[test]
    fn a_node_gives_its_output_and_its_backward_to_the_graph() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let a = Var::randn(0f32, 1., (4, 6), &dev).unwrap();
            let b = Tensor::randn(0f32, 1., (4, 6), &dev).unwrap();
            let (a_lo, b_lo) = (
                a.as_tensor().to_dtype(dtype).unwrap(),
                b.to_dtype(dtype).unwrap(),
            );
            // A strided view as the output: the node must hand over exactly its elements.
            let output = (&a_lo.detach() * &b_lo).unwrap().t().unwrap().t().unwrap();
            let y = precomputed(output.clone(), &[&a_lo, &b_lo], Product).unwrap();
            assert!(y.track_op());
            assert_eq!(y.dtype(), dtype);
            let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            assert_eq!(max_diff(&f32(&y), &f32(&output)), 0.0);
            let grads = (f32(&y) * 3.0)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let ga = grads.get(a.as_tensor()).unwrap();
            // bf16 rounds 3 * b to 8 bits of mantissa (|b| < 5: error < 0.06).
            let tol = if dtype == DType::F32 { 1e-6 } else { 0.06 };
            assert!(max_diff(ga, &(f32(&b_lo) * 3.0).unwrap()) < tol);
        }
    }

    #[test]
    fn without_tracked_inputs_the_output_is_returned_as_it_is() {
        let b = Tensor::randn(0f32, 1., (3,), &Device::Cpu).unwrap();
        let y = precomputed(b.sqr().unwrap(), &[&b], Product).unwrap();
        assert!(!y.track_op());
    }
}
