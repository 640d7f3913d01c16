//! Differentiable building blocks that candle lacks or ships without a backward pass.
//!
//! candle's fused `softmax_last_dim` and `layer_norm` drop gradients, and
//! `upsample_bilinear2d` has no backward (see `shared/reference/candle-training-pitfalls.md`).
//! Everything here carries a gradient: on the CPU as custom ops with a fused forward and an
//! explicit backward, elsewhere composed from elementary (differentiable) tensor ops.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Device, InplaceOp3, Layout, Result, Shape,
    Tensor, D,
};

use super::fast_math::{self, softmax_in_place};
use rayon::prelude::*;

/// `x @ w^T + b` for a weight stored as PyTorch's `nn.Linear` does (`[out, in]`).
///
/// When the weight and bias are frozen (plain tensors) and the input is on the CPU, this is one
/// custom op: the bias is added in place and the backward pass computes only the input's
/// gradient, not the weight's (candle's matmul backward computes both), and keeps one output
/// instead of two.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let frozen = !w.track_op() && !b.is_some_and(|b| b.track_op());
    let dims = x.dims().to_vec();
    let inner = dims[dims.len() - 1];
    let rows = x.elem_count() / inner;
    let mut out_dims = dims.clone();
    *out_dims.last_mut().unwrap() = w.dim(0)?;
    if frozen && is_cpu_f32(x) && w.dtype() == DType::F32 {
        let op = FrozenLinear {
            weight: w.contiguous()?,
            bias: b.map(|b| b.contiguous()).transpose()?,
        };
        return x
            .contiguous()?
            .reshape((rows, inner))?
            .apply_op1(op)?
            .reshape(out_dims);
    }
    let y = x
        .reshape((rows, inner))?
        .matmul(&w.t()?)?
        .reshape(out_dims)?;
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
        Ok(Some(g.matmul(&self.weight)?))
    }
}

/// PyTorch's exact (erf) GELU, as `nn.GELU()` in SAM.
///
/// On the CPU one op with a vectorised forward and a one-pass backward; candle's `gelu_erf`
/// composes its backward from eight element-wise ops, each allocating an MLP-sized tensor.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(x) {
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

fn is_cpu_f32(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32
}

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
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
    if b.track_op() && is_cpu_f32(y) && is_cpu_f32(b) {
        y.contiguous()?
            .apply_op2(&b.contiguous()?, BiasAddOp { dim })
    } else {
        let mut shape = vec![1; y.rank()];
        shape[dim] = b.elem_count();
        y.broadcast_add(&b.reshape(shape)?)
    }
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

// ---------------------------------------------------------------------------------------------
// Softmax over the last dimension.

/// Softmax over the last dimension, with a gradient.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if is_cpu_f32(x) {
        x.contiguous()?.apply_op1(SoftmaxOp)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

/// Gradient of a softmax `y` for an upstream gradient `g`: `y * (g - sum(g * y))`.
fn softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let dot = (g * y)?.sum_keepdim(D::Minus1)?;
    y * g.broadcast_sub(&dot)?
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "wesam-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = cpu_f32(s, l, self.name())?;
        let n = l.dims()[l.dims().len() - 1];
        let mut out = src.to_vec();
        out.par_chunks_mut(n).for_each(softmax_in_place);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(softmax_backward(y, g)?))
    }
}

// ---------------------------------------------------------------------------------------------
// Attention softmax with SAM's decomposed relative-position bias added inside.

/// `softmax(scores + rel_h[..., :, None] + rel_w[..., None, :])` over the key axis.
///
/// `scores` is `[B, Nq, kh*kw]`, `rel_h` is `[B, Nq, kh]` and `rel_w` is `[B, Nq, kw]`. On the CPU
/// the biased scores are never materialised, which saves one attention-sized tensor per block.
pub fn softmax_with_rel_pos(scores: &Tensor, rel_h: &Tensor, rel_w: &Tensor) -> Result<Tensor> {
    let (b, nq, nk) = scores.dims3()?;
    let kh = rel_h.dim(2)?;
    let kw = rel_w.dim(2)?;
    if kh * kw != nk {
        candle_core::bail!("rel-pos softmax: {nk} keys but bias tables of {kh} x {kw}");
    }
    if is_cpu_f32(scores) {
        scores.contiguous()?.apply_op3(
            &rel_h.contiguous()?,
            &rel_w.contiguous()?,
            RelPosSoftmaxOp { kh, kw },
        )
    } else {
        let biased = scores.reshape((b, nq, kh, kw))?;
        let biased = biased
            .broadcast_add(&rel_h.unsqueeze(3)?)?
            .broadcast_add(&rel_w.unsqueeze(2)?)?;
        candle_nn::ops::softmax(&biased.reshape((b, nq, nk))?, D::Minus1)
    }
}

struct RelPosSoftmaxOp {
    kh: usize,
    kw: usize,
}

impl CustomOp3 for RelPosSoftmaxOp {
    fn name(&self) -> &'static str {
        "wesam-rel-pos-softmax"
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
        let scores = cpu_f32(s1, l1, self.name())?;
        let rel_h = cpu_f32(s2, l2, self.name())?;
        let rel_w = cpu_f32(s3, l3, self.name())?;
        let mut out = scores.to_vec();
        biased_softmax(&mut out, rel_h, rel_w, (self.kh, self.kw), 1.0);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _scores: &Tensor,
        _rel_h: &Tensor,
        _rel_w: &Tensor,
        y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let ds = softmax_backward(y, g)?;
        let (b, nq, _) = ds.dims3()?;
        let grid = ds.reshape((b, nq, self.kh, self.kw))?;
        let d_rel_h = grid.sum(3)?;
        let d_rel_w = grid.sum(2)?;
        Ok((Some(ds), Some(d_rel_h), Some(d_rel_w)))
    }
}

/// Rows of `kh * kw` scores replaced in place by `softmax(scale * s + rel_h[i] + rel_w[j])`,
/// with one `kh` and one `kw` bias row per score row.
fn biased_softmax(
    scores: &mut [f32],
    rel_h: &[f32],
    rel_w: &[f32],
    kh_kw: (usize, usize),
    scale: f32,
) {
    let (kh, kw) = kh_kw;
    scores
        .par_chunks_mut(kh * kw)
        .enumerate()
        .for_each(|(row, dst)| {
            let rh = &rel_h[row * kh..(row + 1) * kh];
            let rw = &rel_w[row * kw..(row + 1) * kw];
            fast_math::biased_softmax_in_place(dst, rh, rw, scale);
        });
}

/// `softmax(scale * scores + rel_h[..., :, None] + rel_w[..., None, :])` written over `scores`
/// (`[B, Nq, kh*kw]`, a fresh contiguous tensor that nothing else reads), without a gradient:
/// the attention kernel's tiles, which need no copy of their scores.
pub fn biased_softmax_in_place(
    scores: &Tensor,
    rel_h: &Tensor,
    rel_w: &Tensor,
    scale: f64,
) -> Result<()> {
    let op = BiasedSoftmaxInPlace {
        kh: rel_h.dim(D::Minus1)?,
        kw: rel_w.dim(D::Minus1)?,
        scale: scale as f32,
    };
    scores.inplace_op3(&rel_h.contiguous()?, &rel_w.contiguous()?, &op)
}

struct BiasedSoftmaxInPlace {
    kh: usize,
    kw: usize,
    scale: f32,
}

impl InplaceOp3 for BiasedSoftmaxInPlace {
    fn name(&self) -> &'static str {
        "wesam-biased-softmax-in-place"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (a, b) = dst_l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{}: strided scores", self.name())))?;
        let CpuStorage::F32(scores) = dst else {
            candle_core::bail!("{}: f32 only", self.name())
        };
        let rel_h = cpu_f32(s2, l2, self.name())?;
        let rel_w = cpu_f32(s3, l3, self.name())?;
        let scores = &mut scores[a..b];
        if scores.len() / (self.kh * self.kw) * self.kh != rel_h.len() {
            candle_core::bail!("{}: bias rows do not match the score rows", self.name());
        }
        biased_softmax(scores, rel_h, rel_w, (self.kh, self.kw), self.scale);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Layer normalisation over the last dimension.

/// Layer norm over the last dimension with affine weight and bias, with a gradient.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if is_cpu_f32(x) {
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, LayerNormOp { eps })
    } else {
        let (xhat, _) = normalise(x, eps)?;
        xhat.broadcast_mul(w)?.broadcast_add(b)
    }
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

// ---------------------------------------------------------------------------------------------
// Interpolation as matrix products (differentiable, exact PyTorch weights).

/// PyTorch's source coordinate for `align_corners=False`.
fn source_index(dst: usize, in_len: usize, out_len: usize) -> f64 {
    (dst as f64 + 0.5) * (in_len as f64 / out_len as f64) - 0.5
}

/// `[out_len, in_len]` weights of 1-D linear interpolation as `F.interpolate(mode="linear",
/// align_corners=False)` computes it (no antialiasing).
pub fn linear_weights(in_len: usize, out_len: usize) -> Vec<f32> {
    let mut m = vec![0f32; out_len * in_len];
    for o in 0..out_len {
        let src = source_index(o, in_len, out_len).max(0.0);
        let i0 = (src.floor() as usize).min(in_len - 1);
        let i1 = (i0 + 1).min(in_len - 1);
        let lambda = (src - i0 as f64) as f32;
        m[o * in_len + i0] += 1.0 - lambda;
        m[o * in_len + i1] += lambda;
    }
    m
}

/// `[out_len, in_len]` weights of 1-D cubic convolution as PyTorch's bicubic mode computes it
/// (A = -0.75, `align_corners=False`, border indexes clamped).
pub fn cubic_weights(in_len: usize, out_len: usize) -> Vec<f32> {
    const A: f64 = -0.75;
    let near = |t: f64| ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let far = |t: f64| ((A * t - 5.0 * A) * t + 8.0 * A) * t - 4.0 * A;
    let mut m = vec![0f32; out_len * in_len];
    for o in 0..out_len {
        let src = source_index(o, in_len, out_len);
        let i = src.floor();
        let t = src - i;
        let taps = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, wgt) in taps.iter().enumerate() {
            let idx = (i as i64 - 1 + k as i64).clamp(0, in_len as i64 - 1) as usize;
            m[o * in_len + idx] += *wgt as f32;
        }
    }
    m
}

/// Interpolation kernel of [`resize_2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

fn weights_tensor(kind: Interpolation, n_in: usize, n_out: usize, dev: &Device) -> Result<Tensor> {
    let w = match kind {
        Interpolation::Bilinear => linear_weights(n_in, n_out),
        Interpolation::Bicubic => cubic_weights(n_in, n_out),
    };
    Tensor::from_vec(w, (n_out, n_in), dev)
}

/// Resizes the last two dimensions of `x` to `(out_h, out_w)` as `F.interpolate(...,
/// align_corners=False)` does, as two matrix products so that the gradient flows.
pub fn resize_2d(x: &Tensor, out_h: usize, out_w: usize, kind: Interpolation) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let r = dims.len();
    let (h, w) = (dims[r - 2], dims[r - 1]);
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let lead: usize = dims[..r - 2].iter().product();
    let ry = weights_tensor(kind, h, out_h, x.device())?.to_dtype(x.dtype())?;
    let rx = weights_tensor(kind, w, out_w, x.device())?.to_dtype(x.dtype())?;
    // Columns first: [lead*h, w] @ [w, out_w].
    let y = x.reshape((lead * h, w))?.matmul(&rx.t()?)?;
    // Then rows: [out_h, h] @ [lead, h, out_w].
    let y = y.reshape((lead, h, out_w))?;
    let y = ry
        .unsqueeze(0)?
        .broadcast_as((lead, out_h, h))?
        .matmul(&y)?;
    let mut out = dims[..r - 2].to_vec();
    out.extend([out_h, out_w]);
    y.reshape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_util::max_diff;
    use candle_core::Var;

    /// Value and gradient of `f` at `x` under the loss `sum(f(x) * probe)`.
    fn value_and_grad(
        x: &Var,
        probe: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> (Tensor, Tensor) {
        let y = f(x.as_tensor()).unwrap();
        let g = (&y * probe).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(x.as_tensor()).unwrap().clone())
    }

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

    /// The fused bias addition against candle's broadcast, for a linear layer's bias (last
    /// dimension) and a convolution's (dimension 1 of NCHW), in value and in both gradients.
    #[test]
    fn bias_addition_matches_broadcast_in_value_and_gradients() {
        let dev = Device::Cpu;
        for (shape, dim) in [(vec![2, 3, 5, 7], 3), (vec![2, 7, 5, 3], 1)] {
            let y = Var::randn(0f32, 1., shape.as_slice(), &dev).unwrap();
            let b = Var::randn(0f32, 1., 7, &dev).unwrap();
            let probe = Tensor::randn(0f32, 1., shape.as_slice(), &dev).unwrap();
            let run = |fused: bool| {
                let (yt, bt) = (y.as_tensor(), b.as_tensor());
                let out = if fused {
                    add_bias(yt, bt, dim).unwrap()
                } else {
                    let mut bshape = vec![1; 4];
                    bshape[dim] = 7;
                    yt.broadcast_add(&bt.reshape(bshape).unwrap()).unwrap()
                };
                let g = (&out * &probe)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                (out, [yt, bt].map(|t| g.get(t).unwrap().clone()))
            };
            let ((o1, g1), (o2, g2)) = (run(true), run(false));
            assert!(max_diff(&o1, &o2) < 1e-6);
            for (a, b) in g1.iter().zip(&g2) {
                assert!(max_diff(a, b) < 1e-5, "dim {dim}: {}", max_diff(a, b));
            }
        }
    }

    #[test]
    fn fused_softmax_matches_composed_in_value_and_gradient() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 2., (3, 5, 7), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (3, 5, 7), &dev).unwrap();
        let (y1, g1) = value_and_grad(&x, &probe, softmax_last_dim);
        let (y2, g2) = value_and_grad(&x, &probe, |t| candle_nn::ops::softmax(t, D::Minus1));
        assert!(max_diff(&y1, &y2) < 1e-6);
        assert!(max_diff(&g1, &g2) < 1e-6);
        assert!(
            g1.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }

    /// The fused CPU GELU against candle's composed `gelu_erf`, the path other devices take.
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

    #[test]
    fn rel_pos_softmax_matches_composed_for_every_input() {
        let dev = Device::Cpu;
        let (b, nq, kh, kw) = (2, 6, 3, 4);
        let s = Var::randn(0f32, 1., (b, nq, kh * kw), &dev).unwrap();
        let rh = Var::randn(0f32, 1., (b, nq, kh), &dev).unwrap();
        let rw = Var::randn(0f32, 1., (b, nq, kw), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (b, nq, kh * kw), &dev).unwrap();
        let composed = |s: &Tensor, rh: &Tensor, rw: &Tensor| {
            let t = s
                .reshape((b, nq, kh, kw))?
                .broadcast_add(&rh.unsqueeze(3)?)?
                .broadcast_add(&rw.unsqueeze(2)?)?;
            candle_nn::ops::softmax(&t.reshape((b, nq, kh * kw))?, D::Minus1)
        };
        let run = |fused: bool| {
            let (s, rh, rw) = (s.as_tensor(), rh.as_tensor(), rw.as_tensor());
            let y = if fused {
                softmax_with_rel_pos(s, rh, rw).unwrap()
            } else {
                composed(s, rh, rw).unwrap()
            };
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y, [s, rh, rw].map(|t| g.get(t).unwrap().clone()))
        };
        let (y1, g1) = run(true);
        let (y2, g2) = run(false);
        assert!(max_diff(&y1, &y2) < 1e-6);
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-5);
        }
    }

    #[test]
    fn fused_layer_norm_matches_composed_for_input_weight_and_bias() {
        let dev = Device::Cpu;
        let x = Var::randn(1f32, 3., (4, 6, 10), &dev).unwrap();
        let w = Var::randn(1f32, 0.3, 10, &dev).unwrap();
        let b = Var::randn(0f32, 0.3, 10, &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (4, 6, 10), &dev).unwrap();
        let run = |fused: bool| {
            let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
            let y = if fused {
                layer_norm(xt, wt, bt, 1e-6).unwrap()
            } else {
                let (xhat, _) = normalise(xt, 1e-6).unwrap();
                xhat.broadcast_mul(wt).unwrap().broadcast_add(bt).unwrap()
            };
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y, [xt, wt, bt].map(|t| g.get(t).unwrap().clone()))
        };
        let (y1, g1) = run(true);
        let (y2, g2) = run(false);
        assert!(max_diff(&y1, &y2) < 1e-5);
        for (a, b) in g1.iter().zip(&g2) {
            assert!(max_diff(a, b) < 1e-4, "{}", max_diff(a, b));
        }
    }

    #[test]
    fn interpolation_weights_match_pytorch_by_hand() {
        // F.interpolate(torch.arange(4.)[None,None], size=8, mode="linear") =
        // [0, .25, .75, 1.25, 1.75, 2.25, 2.75, 3].
        let w = linear_weights(4, 8);
        let v: Vec<f32> = (0..8)
            .map(|o| (0..4).map(|i| w[o * 4 + i] * i as f32).sum())
            .collect();
        assert_eq!(v, vec![0., 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.]);
        // Every row of a cubic matrix sums to one (clamped taps included).
        let c = cubic_weights(8, 6);
        for o in 0..6 {
            let s: f32 = c[o * 8..(o + 1) * 8].iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn resize_has_a_gradient() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 1, 4, 5), &dev).unwrap();
        let y = resize_2d(x.as_tensor(), 8, 10, Interpolation::Bilinear).unwrap();
        assert_eq!(y.dims(), &[2, 1, 8, 10]);
        let g = y.sum_all().unwrap().backward().unwrap();
        // Upsampling by 2 spreads each input over 4 outputs in total weight.
        let gx = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(gx.iter().all(|v| (v - 4.0).abs() < 1e-5), "{gx:?}");
    }
}
