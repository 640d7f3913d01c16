//! Softmax over the last dimension with a gradient, and the attention softmax with SAM's
//! decomposed relative-position bias added inside: with a gradient (the composed attention), and
//! in place without one (the tiles of the fused attention kernel).

use candle_core::{
    CpuStorage, CustomOp1, CustomOp3, DType, InplaceOp3, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

use super::fast_math::{self, softmax_in_place};
use super::node::{precomputed, Bwd1, Bwd3};
use super::{cpu_f32, takes_native};

/// Softmax over the last dimension, with a gradient.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if takes_native(x) {
        x.contiguous()?.apply_op1(SoftmaxOp)
    } else {
        portable_softmax(x)
    }
}

/// [`softmax_last_dim`] from candle's tensor ops (in `f32` for a low-precision input), with the
/// native op's backward: the graph keeps the input and the output, not the exponentials.
fn portable_softmax(x: &Tensor) -> Result<Tensor> {
    let y = candle_nn::ops::softmax(&x.detach().to_dtype(DType::F32)?, D::Minus1)?;
    precomputed(y.to_dtype(x.dtype())?, &[x], Bwd1(SoftmaxOp))
}

/// Gradient of a softmax `y` for an upstream gradient `g`: `y * (g - sum(g * y))`, computed in
/// f32 (and returned in `g`'s dtype) so that low-precision rows are not summed in low precision.
fn softmax_backward(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (y32, g32) = (y.to_dtype(DType::F32)?, g.to_dtype(DType::F32)?);
    let dot = (&g32 * &y32)?.sum_keepdim(D::Minus1)?;
    (y32 * g32.broadcast_sub(&dot)?)?.to_dtype(g.dtype())
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
    let nk = scores.dim(2)?;
    let kh = rel_h.dim(2)?;
    let kw = rel_w.dim(2)?;
    if kh * kw != nk {
        candle_core::bail!("rel-pos softmax: {nk} keys but bias tables of {kh} x {kw}");
    }
    if takes_native(scores) {
        scores.contiguous()?.apply_op3(
            &rel_h.contiguous()?,
            &rel_w.contiguous()?,
            RelPosSoftmaxOp { kh, kw },
        )
    } else {
        portable_softmax_with_rel_pos(scores, rel_h, rel_w)
    }
}

/// [`softmax_with_rel_pos`] from candle's tensor ops (in f32 for low-precision scores), with the
/// native op's backward: the graph keeps the scores and the output, not the biased scores.
fn portable_softmax_with_rel_pos(
    scores: &Tensor,
    rel_h: &Tensor,
    rel_w: &Tensor,
) -> Result<Tensor> {
    let (b, nq, nk) = scores.dims3()?;
    let (kh, kw) = (rel_h.dim(2)?, rel_w.dim(2)?);
    let f32 = |t: &Tensor| t.detach().to_dtype(DType::F32);
    let biased = f32(scores)?
        .reshape((b, nq, kh, kw))?
        .broadcast_add(&f32(rel_h)?.unsqueeze(3)?)?
        .broadcast_add(&f32(rel_w)?.unsqueeze(2)?)?;
    let y = candle_nn::ops::softmax(&biased.reshape((b, nq, nk))?, D::Minus1)?;
    let op = RelPosSoftmaxOp { kh, kw };
    precomputed(
        y.to_dtype(scores.dtype())?,
        &[scores, rel_h, rel_w],
        Bwd3(op),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{assert_kernels_match, max_diff, value_and_grad};
    use candle_core::{Device, Var};

    /// The op as dispatched (native kernel unless `WESAM_KERNELS=portable`) and the portable one,
    /// each against candle's composed softmax.
    #[test]
    fn softmax_kernels_match_composed_in_value_and_gradient() {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 2., (3, 5, 7), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (3, 5, 7), &dev).unwrap();
        let (y0, g0) = value_and_grad(&x, &probe, |t| candle_nn::ops::softmax(t, D::Minus1));
        for kernel in [softmax_last_dim, portable_softmax] {
            let (y, g) = value_and_grad(&x, &probe, kernel);
            assert!(max_diff(&y, &y0) < 1e-6);
            assert!(max_diff(&g, &g0) < 1e-6);
        }
        assert!(
            g0.abs()
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
        let run = |kernel: usize| {
            let (s, rh, rw) = (s.as_tensor(), rh.as_tensor(), rw.as_tensor());
            let y = match kernel {
                0 => composed(s, rh, rw).unwrap(),
                1 => softmax_with_rel_pos(s, rh, rw).unwrap(),
                _ => portable_softmax_with_rel_pos(s, rh, rw).unwrap(),
            };
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y, [s, rh, rw].map(|t| g.get(t).unwrap().clone()))
        };
        assert_kernels_match("rel-pos softmax", run, 1e-6, 1e-5);
    }
}
