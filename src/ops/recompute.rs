//! Activation recomputation ("gradient checkpointing") for candle.
//!
//! candle keeps the inputs of every tracked op until `backward` returns, and has no
//! checkpointing (`shared/reference/candle-training-pitfalls.md`, pitfall 6): a ViT-B encoder
//! pass at 1024² holds gigabytes of activations, and a WeSAM step holds two such passes (teacher
//! and student). A [`Segment`] run through [`checkpoint`] enters the graph as a single op that
//! keeps only its inputs; its backward rebuilds from them what the gradient needs, backpropagates
//! through that short-lived local graph and hands the input gradients back to candle.
//!
//! The node is a [`super::node::precomputed`] one, so this works on every device. It is a
//! memory strategy, not a kernel: both kernel sets use it, and [`set_enabled`] turns it off (to
//! measure what it saves).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::{Result, Tensor, Var};

use super::node::{precomputed, Backward};

/// Whether [`checkpoint`] recomputes (the default) or keeps the segment's whole graph.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns recomputation on or off for the whole process (on by default). Off keeps every
/// activation, as candle would without this module: more memory, no recomputation time.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether recomputation is on (see [`set_enabled`]).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A piece of network whose intermediate activations need not be kept for the backward pass.
pub trait Segment: Send + Sync {
    /// The segment's output for `inputs` (tracked or not).
    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor>;

    /// A scalar whose gradient with respect to `inputs` is the segment's vector-Jacobian product
    /// with `grad`, the gradient of its output.
    ///
    /// The default recomputes the whole forward, `sum(forward(inputs) * grad)`. A segment that
    /// ends in a frozen linear map `y = f(x) W^T` can return `sum(f(x) * (grad W))` instead and
    /// skip recomputing that product: it is the same gradient for less work.
    fn vjp_surrogate(&self, inputs: &[Tensor], grad: &Tensor) -> Result<Tensor> {
        (self.forward(inputs)? * grad)?.sum_all()
    }
}

/// `segment.forward(inputs)` without keeping the segment's activations for the backward pass.
///
/// One to three inputs, on any device. Runs the segment as ordinary tracked ops when no input
/// carries a gradient (inference: nothing to keep anyway) or when recomputation is off.
pub fn checkpoint(segment: Arc<dyn Segment>, inputs: &[&Tensor]) -> Result<Tensor> {
    if !enabled() || !inputs.iter().any(|t| t.track_op()) {
        let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        return segment.forward(&owned);
    }
    let detached: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
    let output = segment.forward(&detached)?.contiguous()?;
    precomputed(output, inputs, Recompute { segment })
}

/// The backward pass of a checkpointed segment: it recomputes.
struct Recompute {
    segment: Arc<dyn Segment>,
}

impl Backward for Recompute {
    fn name(&self) -> &'static str {
        "wesam-recompute"
    }

    /// Gradients of the inputs: the local graph of the segment, rebuilt on copies of the inputs
    /// that carry a gradient, backpropagated from the surrogate of `grad`.
    fn backward(
        &self,
        inputs: &[&Tensor],
        _output: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        let vars = inputs
            .iter()
            .map(|t| {
                t.track_op()
                    .then(|| Var::from_tensor(&t.detach()))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        let local: Vec<Tensor> = inputs
            .iter()
            .zip(&vars)
            .map(|(t, v)| {
                v.as_ref()
                    .map_or_else(|| t.detach(), |v| v.as_tensor().clone())
            })
            .collect();
        let grads = self
            .segment
            .vjp_surrogate(&local, &grad.detach())?
            .backward()?;
        Ok(vars
            .iter()
            .map(|v| v.as_ref().and_then(|v| grads.get(v.as_tensor()).cloned()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::max_diff;
    use candle_core::{DType, Device};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// `tanh(a @ b) * a`, with the default surrogate (full recomputation); counts its forwards.
    #[derive(Default)]
    struct Toy(AtomicUsize);

    impl Segment for Toy {
        fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
            self.0.fetch_add(1, Ordering::Relaxed);
            inputs[0].matmul(&inputs[1])?.tanh()? * &inputs[0]
        }
    }

    #[test]
    fn checkpointed_segment_matches_the_plain_graph_in_value_and_gradients() {
        let dev = Device::Cpu;
        let a = Var::randn(0f32, 1., (5, 5), &dev).unwrap();
        let b = Var::randn(0f32, 1., (5, 5), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (5, 5), &dev).unwrap();
        // Two uses of the output: the gradients of both reach the inputs.
        let loss = |y: &Tensor| {
            ((y * &probe).unwrap().sum_all().unwrap() + y.sqr().unwrap().sum_all().unwrap())
                .unwrap()
        };
        let plain = Toy::default()
            .forward(&[a.as_tensor().clone(), b.as_tensor().clone()])
            .unwrap();
        let toy = Arc::new(Toy::default());
        let kept = checkpoint(toy.clone(), &[a.as_tensor(), b.as_tensor()]).unwrap();
        assert_eq!(max_diff(&plain, &kept), 0.0);
        let g1 = loss(&plain).backward().unwrap();
        let g2 = loss(&kept).backward().unwrap();
        // Once in the forward pass, once more (the recomputation) in the backward pass.
        assert_eq!(toy.0.load(Ordering::Relaxed), 2);
        for v in [&a, &b] {
            let d = max_diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-5, "{d}");
        }
    }

    #[test]
    fn untracked_inputs_get_no_gradient_and_no_graph() {
        let dev = Device::Cpu;
        let a = Var::randn(0f32, 1., (3, 3), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., (3, 3), &dev).unwrap();
        let y = checkpoint(Arc::new(Toy::default()), &[a.as_tensor(), &b]).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert!(g.get(a.as_tensor()).is_some());
        assert!(g.get(&b).is_none());
        // Inference: no input tracks, so the segment runs as it is.
        let y = checkpoint(Arc::new(Toy::default()), &[&b, &b]).unwrap();
        assert!(!y.track_op());
        assert_eq!(y.dtype(), DType::F32);
    }
}
