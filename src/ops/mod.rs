//! The kernels the model is built from: differentiable tensor ops that candle lacks or ships
//! without a backward pass, and the machinery that keeps training within memory.
//!
//! candle's fused `softmax_last_dim` and `layer_norm` drop gradients, and
//! `upsample_bilinear2d` has no backward (see `shared/reference/candle-training-pitfalls.md`).
//! Everything here carries a gradient. Two kernel sets compute it ([`Kernels`]): the `native`
//! one runs `f32` on the CPU as custom ops with a fused forward and an explicit backward; the
//! `portable` one (every other device and dtype, or the CPU when asked for) composes the forward
//! from candle's tensor ops and enters it into the graph with the same backward ([`node`]), or
//! recomputes it ([`recompute`]), so that it keeps no more activations than the native one.
//!
//! - [`linear`]: the frozen linear layer, bias addition and the sums of its backward;
//! - [`gelu`]: the exact (erf) GELU;
//! - [`softmax`]: softmax, and the attention softmax with the relative-position bias inside;
//! - [`layer_norm`]: layer norm over the last dimension and over NCHW channels;
//! - [`resize`]: bilinear and bicubic resizing as matrix products;
//! - [`attention`]: the image encoder's fused attention with decomposed relative positions;
//! - [`fast_math`]: the vectorised row kernels (exp, erf, softmax rows, GELU) under the CPU ops;
//! - [`recompute`]: activation recomputation (gradient checkpointing) for a piece of network;
//! - [`node`]: graph nodes with a precomputed output and a backward of their own, on any device.

pub mod attention;
pub mod fast_math;
pub mod gelu;
pub mod layer_norm;
pub mod linear;
pub mod node;
pub mod recompute;
pub mod resize;
pub mod softmax;

use std::sync::atomic::{AtomicU8, Ordering};

use candle_core::{CpuStorage, DType, Device, Layout, Result, Tensor};

/// The environment variable that picks the [`Kernels`] (`native` or `portable`).
pub const KERNELS_ENV: &str = "WESAM_KERNELS";

/// Which implementation of the ops runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Kernels {
    /// Fused CPU kernels for f32 on the CPU; the portable ones elsewhere.
    #[default]
    Native,
    /// The ops composed from candle's tensor ops, as CUDA and Metal run them, on every device.
    Portable,
}

/// The process's kernels: unset (0) until [`kernels`] first reads them or [`set_kernels`] sets
/// them; then 1 + the variant's index.
static KERNELS: AtomicU8 = AtomicU8::new(0);

impl Kernels {
    /// The kernels named by `WESAM_KERNELS`, if it is set.
    pub fn from_env() -> std::result::Result<Option<Kernels>, String> {
        match std::env::var(KERNELS_ENV) {
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "native" => Ok(Some(Kernels::Native)),
                "portable" => Ok(Some(Kernels::Portable)),
                _ => Err(format!(
                    "{KERNELS_ENV}={v:?}: expected `native` or `portable`"
                )),
            },
            Err(_) => Ok(None),
        }
    }
}

/// Sets the kernels for the whole process (the command line's `--kernels`).
pub fn set_kernels(k: Kernels) {
    KERNELS.store(1 + k as u8, Ordering::Relaxed);
}

/// The kernels in use: those set by [`set_kernels`], else `WESAM_KERNELS` (the test suites run
/// under either), else native. An unreadable `WESAM_KERNELS` counts as unset here; the command
/// line refuses it before any op runs.
pub fn kernels() -> Kernels {
    match KERNELS.load(Ordering::Relaxed) {
        1 => Kernels::Native,
        2 => Kernels::Portable,
        _ => {
            let k = Kernels::from_env().ok().flatten().unwrap_or_default();
            set_kernels(k);
            k
        }
    }
}

/// Whether `t` takes the native kernels (an `f32` tensor on the CPU, native kernels chosen)
/// rather than the portable ones.
fn takes_native(t: &Tensor) -> bool {
    kernels() == Kernels::Native && matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

/// Whether products of `t` must be widened: candle's CPU backend has no bf16 matrix product.
fn lacks_products(t: &Tensor) -> bool {
    t.dtype() == DType::BF16 && matches!(t.device(), Device::Cpu)
}

/// `t` in f32, to multiply where [`lacks_products`].
fn wide(t: &Tensor) -> Result<Tensor> {
    t.to_dtype(DType::F32)
}

/// `a @ b` on every device and in every precision: where candle lacks the product (bf16 on the
/// CPU), the operands are widened to f32 and the product narrowed back, differentiably (so the
/// backward's products are widened too); elsewhere candle's `matmul`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if lacks_products(a) {
        return wide(a)?.matmul(&wide(b)?)?.to_dtype(a.dtype());
    }
    a.matmul(b)
}

/// A 2-D convolution of `x` by `w` (cast to `x`'s dtype), widened as [`matmul`] is.
pub fn conv2d(x: &Tensor, w: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if lacks_products(x) {
        return wide(x)?
            .conv2d(&wide(w)?, padding, stride, 1, 1)?
            .to_dtype(x.dtype());
    }
    x.conv2d(&w.to_dtype(x.dtype())?, padding, stride, 1, 1)
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

    /// Checks both kernel sets against candle's full graph: `run(0)` is that reference, `run(1)`
    /// the op as dispatched (native unless `WESAM_KERNELS=portable`), `run(2)` the portable
    /// kernel; each returns a value and its gradients. `what` names the case in failures.
    pub fn assert_kernels_match<const N: usize>(
        what: &str,
        run: impl Fn(usize) -> (Tensor, [Tensor; N]),
        tol_value: f32,
        tol_grad: f32,
    ) {
        let (y0, g0) = run(0);
        for kernel in [1, 2] {
            let (y, g) = run(kernel);
            let d = max_diff(&y, &y0);
            assert!(d < tol_value, "{what}, kernel {kernel}: value off by {d}");
            for (i, (a, b)) in g.iter().zip(&g0).enumerate() {
                let d = max_diff(a, b);
                assert!(
                    d < tol_grad,
                    "{what}, kernel {kernel}: gradient {i} off by {d}"
                );
            }
        }
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
