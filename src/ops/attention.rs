//! The attention kernel of SAM's image encoder: multi-head softmax attention with the decomposed
//! relative-position bias (`add_decomposed_rel_pos` of the official code).
//!
//! On the CPU it is one custom op that keeps no attention-sized tensor for the backward pass: the
//! forward runs over tiles of query rows, and the backward recomputes each tile's probabilities
//! (flash-attention style). A global block of ViT-B at 1024² would otherwise hold several
//! 12 x 4096 x 4096 tensors (805 MB each) until the backward pass. The portable kernel composes
//! it from tensor ops and [`recompute`]s it: the graph keeps qkv, and the backward rebuilds one
//! block's scores at a time.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, D};

use super::linear::sum_dim;
use super::recompute::{self, Segment};
use super::softmax::{biased_softmax_in_place, softmax_with_rel_pos};
use super::{cpu_f32, matmul, takes_native};

/// Floats per tile of scores: bounds the working memory of the CPU kernel (32 MB).
const TILE_FLOATS: usize = 8 << 20;

/// Attention over a `[B, h, w, 3C]` qkv tensor (q, k, v, each `heads x hd`, as the official
/// `qkv` linear lays them out), with relative-position embeddings `rh` `[h, h, hd]` and `rw`
/// `[w, w, hd]` (already looked up per query/key pair). Returns `[B, h, w, C]`.
pub fn rel_pos_attention(qkv: &Tensor, rh: &Tensor, rw: &Tensor, heads: usize) -> Result<Tensor> {
    let (_, h, w, c3) = qkv.dims4()?;
    let op = RelPosAttention {
        heads,
        h,
        w,
        hd: c3 / 3 / heads,
        tile_floats: TILE_FLOATS,
    };
    if takes_native(qkv) {
        qkv.contiguous()?
            .apply_op3(&rh.contiguous()?, &rw.contiguous()?, op)
    } else {
        recompute::checkpoint(Arc::new(op), &[qkv, rh, rw])
    }
}

impl Segment for RelPosAttention {
    fn forward(&self, inputs: &[Tensor]) -> Result<Tensor> {
        self.composed(&inputs[0], &inputs[1], &inputs[2])
    }
}

#[derive(Debug, Clone, Copy)]
struct RelPosAttention {
    heads: usize,
    h: usize,
    w: usize,
    hd: usize,
    /// Working-memory bound of the CPU kernel, in floats per tile of scores.
    tile_floats: usize,
}

impl RelPosAttention {
    fn scale(&self) -> f64 {
        (self.hd as f64).powf(-0.5)
    }

    /// `[B, h, w, 3C]` -> q, k, v as `[B*heads, N, hd]` each.
    fn split(&self, qkv: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let b = qkv.dim(0)?;
        let n = self.h * self.w;
        let t = qkv
            .reshape((b, n, 3, self.heads, self.hd))?
            .permute((2, 0, 3, 1, 4))?
            .reshape((3, b * self.heads, n, self.hd))?;
        Ok((t.get(0)?, t.get(1)?, t.get(2)?))
    }

    /// `[B*heads, N, hd]` -> `[B, h, w, C]`.
    fn merge_heads(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)? / self.heads;
        x.reshape((b, self.heads, self.h, self.w, self.hd))?
            .permute((0, 2, 3, 1, 4))?
            .reshape((b, self.h, self.w, self.heads * self.hd))
    }

    /// `[B, h, w, C]` -> `[B*heads, N, hd]`.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        x.reshape((b, self.h * self.w, self.heads, self.hd))?
            .transpose(1, 2)?
            .reshape((b * self.heads, self.h * self.w, self.hd))
    }

    /// The bias terms `rel_h` `[BH, N, h]` and `rel_w` `[BH, N, w]` of each query (einsums
    /// `bhwc,hkc->bhwk` and `bhwc,wkc->bhwk` of the official code).
    fn rel_terms(&self, q: &Tensor, rh: &Tensor, rw: &Tensor) -> Result<(Tensor, Tensor)> {
        let (h, w, hd) = (self.h, self.w, self.hd);
        let bh = q.dim(0)?;
        let r_q = q.reshape((bh, h, w, hd))?;
        let rel_h = r_q.permute((1, 0, 2, 3))?.reshape((h, bh * w, hd))?;
        let rel_h = matmul(&rel_h, &rh.transpose(1, 2)?)?
            .reshape((h, bh, w, h))?
            .permute((1, 0, 2, 3))?
            .reshape((bh, h * w, h))?;
        let rel_w = r_q.permute((2, 0, 1, 3))?.reshape((w, bh * h, hd))?;
        let rel_w = matmul(&rel_w, &rw.transpose(1, 2)?)?
            .reshape((w, bh, h, w))?
            .permute((1, 2, 0, 3))?
            .reshape((bh, h * w, w))?;
        Ok((rel_h, rel_w))
    }

    /// The reference formulation from differentiable ops (any device, any precision: the
    /// position tables are cast to qkv's).
    fn composed(&self, qkv: &Tensor, rh: &Tensor, rw: &Tensor) -> Result<Tensor> {
        let (q, k, v) = self.split(qkv)?;
        let (rh, rw) = (&rh.to_dtype(qkv.dtype())?, &rw.to_dtype(qkv.dtype())?);
        let (rel_h, rel_w) = self.rel_terms(&q, rh, rw)?;
        let scores = matmul(&(&q * self.scale())?, &k.t()?)?;
        let attn = softmax_with_rel_pos(&scores, &rel_h, &rel_w)?;
        self.merge_heads(&matmul(&attn, &v)?)
    }

    /// Query rows per tile for `bh` heads attending over `n` keys.
    fn tile(&self, bh: usize, n: usize) -> usize {
        (self.tile_floats / (bh * n)).clamp(1, n)
    }

    /// Attention probabilities of query rows `start..start+len` (no gradient: the CPU kernel's).
    #[allow(clippy::too_many_arguments)]
    fn probs(
        &self,
        q: &Tensor,
        k: &Tensor,
        rel_h: &Tensor,
        rel_w: &Tensor,
        start: usize,
        len: usize,
    ) -> Result<Tensor> {
        let s = q.narrow(1, start, len)?.matmul(&k.t()?)?;
        biased_softmax_in_place(
            &s,
            &rel_h.narrow(1, start, len)?,
            &rel_w.narrow(1, start, len)?,
            self.scale(),
        )?;
        Ok(s)
    }
}

/// A custom op's contiguous CPU input as a tensor, to run the kernel with tensor ops.
fn tensor_of(s: &CpuStorage, l: &Layout) -> Result<Tensor> {
    Tensor::from_slice(cpu_f32(s, l, "rel-pos attention")?, l.shape(), &Device::Cpu)
}

impl CustomOp3 for RelPosAttention {
    fn name(&self) -> &'static str {
        "wesam-rel-pos-attention"
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
        let qkv = tensor_of(s1, l1)?;
        let (rh, rw) = (tensor_of(s2, l2)?, tensor_of(s3, l3)?);
        let (q, k, v) = self.split(&qkv)?;
        let (rel_h, rel_w) = self.rel_terms(&q, &rh, &rw)?;
        let (bh, n, _) = q.dims3()?;
        let tile = self.tile(bh, n);
        let mut outs = Vec::with_capacity(n.div_ceil(tile));
        for start in (0..n).step_by(tile) {
            let len = tile.min(n - start);
            outs.push(self.probs(&q, &k, &rel_h, &rel_w, start, len)?.matmul(&v)?);
        }
        let out = self.merge_heads(&Tensor::cat(&outs, 1)?)?;
        let shape = out.shape().clone();
        Ok((CpuStorage::F32(out.flatten_all()?.to_vec1::<f32>()?), shape))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        rh: &Tensor,
        rw: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (h, w, hd) = (self.h, self.w, self.hd);
        let (rh, rw) = (rh.detach(), rw.detach());
        let (q, k, v) = self.split(&qkv.detach())?;
        let (rel_h, rel_w) = self.rel_terms(&q, &rh, &rw)?;
        let g = self.split_heads(&grad.detach())?;
        let o = self.split_heads(&out.detach())?;
        // D_i = sum_j p_ij dp_ij = g_i . o_i
        let dot = (&g * &o)?.sum_keepdim(D::Minus1)?;
        let (bh, n, _) = q.dims3()?;
        let tile = self.tile(bh, n);
        let mut dk = Tensor::zeros((bh, n, hd), DType::F32, &Device::Cpu)?;
        let mut dv = dk.clone();
        let (mut dq, mut d_rel_h, mut d_rel_w) = (Vec::new(), Vec::new(), Vec::new());
        for start in (0..n).step_by(tile) {
            let len = tile.min(n - start);
            let p = self.probs(&q, &k, &rel_h, &rel_w, start, len)?;
            let g_t = g.narrow(1, start, len)?;
            dv = (dv + p.t()?.matmul(&g_t)?)?;
            let dp = g_t.matmul(&v.t()?)?;
            let ds = (p * dp.broadcast_sub(&dot.narrow(1, start, len)?)?)?;
            dq.push((ds.matmul(&k)? * self.scale())?);
            dk = (dk + (ds.t()?.matmul(&q.narrow(1, start, len)?)? * self.scale())?)?;
            let grid = ds.reshape((bh, len, h, w))?;
            d_rel_h.push(grid.sum(3)?);
            d_rel_w.push(sum_dim(&grid, 2)?);
        }
        let d_rel_h = Tensor::cat(&d_rel_h, 1)?.reshape((bh, h, w, h))?; // [bh, qh, qw, kh]
        let d_rel_w = Tensor::cat(&d_rel_w, 1)?.reshape((bh, h, w, w))?; // [bh, qh, qw, kw]
        let r_q = q.reshape((bh, h, w, hd))?;
        // Through rel_h = einsum(bhwc,hkc->bhwk): to q and to rh.
        let drh_t = d_rel_h.permute((1, 0, 2, 3))?.reshape((h, bh * w, h))?; // [qh, bh*qw, kh]
        let rq_h = r_q.permute((1, 0, 2, 3))?.reshape((h, bh * w, hd))?; // [qh, bh*qw, hd]
        let dq_h = drh_t
            .matmul(&rh)?
            .reshape((h, bh, w, hd))?
            .permute((1, 0, 2, 3))?;
        let d_rh = drh_t.t()?.matmul(&rq_h)?; // [qh, kh, hd]
                                              // Through rel_w = einsum(bhwc,wkc->bhwk).
        let drw_t = d_rel_w.permute((2, 0, 1, 3))?.reshape((w, bh * h, w))?; // [qw, bh*qh, kw]
        let rq_w = r_q.permute((2, 0, 1, 3))?.reshape((w, bh * h, hd))?;
        let dq_w = drw_t
            .matmul(&rw)?
            .reshape((w, bh, h, hd))?
            .permute((1, 2, 0, 3))?;
        let d_rw = drw_t.t()?.matmul(&rq_w)?;
        let dq = (Tensor::cat(&dq, 1)? + (dq_h + dq_w)?.reshape((bh, n, hd))?)?;
        // Back to the qkv layout [B, h, w, 3C].
        let b = bh / self.heads;
        let dqkv = Tensor::stack(&[dq, dk, dv], 0)? // [3, B*heads, N, hd]
            .reshape((3, b, self.heads, n, hd))?
            .permute((1, 3, 0, 2, 4))?
            .reshape((b, h, w, 3 * self.heads * hd))?;
        Ok((Some(dqkv), Some(d_rh), Some(d_rw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::assert_kernels_match;
    use candle_core::Var;

    #[test]
    fn attention_kernels_match_composed_in_value_and_every_gradient() {
        let dev = Device::Cpu;
        let (b, h, w, heads, hd) = (2, 5, 4, 3, 8);
        let qkv = Var::randn(0f32, 1., (b, h, w, 3 * heads * hd), &dev).unwrap();
        let rh = Var::randn(0f32, 0.5, (h, h, hd), &dev).unwrap();
        let rw = Var::randn(0f32, 0.5, (w, w, hd), &dev).unwrap();
        let probe = Tensor::randn(0f32, 1., (b, h, w, heads * hd), &dev).unwrap();
        // A tile of 3 query rows: the kernel's tiling is exercised, with a ragged last tile.
        let op = RelPosAttention {
            heads,
            h,
            w,
            hd,
            tile_floats: b * heads * h * w * 3,
        };
        assert_eq!(op.tile(b * heads, h * w), 3);
        // The reference (candle's full graph), the native kernel, the portable one.
        let run = |kernel: usize| {
            let (x, a, c) = (qkv.as_tensor(), rh.as_tensor(), rw.as_tensor());
            let y = match kernel {
                0 => op.composed(x, a, c).unwrap(),
                1 => x.apply_op3(a, c, op).unwrap(),
                _ => recompute::checkpoint(Arc::new(op), &[x, a, c]).unwrap(),
            };
            let g = (&y * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y, [x, a, c].map(|t| g.get(t).unwrap().clone()))
        };
        assert_kernels_match("attention", run, 1e-5, 1e-4);
    }

    #[test]
    fn tiles_cover_every_query_row() {
        let op = RelPosAttention {
            heads: 12,
            h: 64,
            w: 64,
            hd: 64,
            tile_floats: TILE_FLOATS,
        };
        let t = op.tile(12, 4096);
        assert!((1..4096).contains(&t) && 12 * 4096 * t <= TILE_FLOATS);
    }
}
