//! Interpolation as matrix products: PyTorch's exact linear and bicubic weights
//! (`F.interpolate(..., align_corners=False)`), and [`resize_2d`], which applies them so that
//! the gradient flows (candle's `upsample_bilinear2d` has no backward).

use candle_core::{Device, Result, Tensor};

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
    /// `mode="bilinear"` (`"linear"` along one axis): mask logits, relative-position tables.
    Bilinear,
    /// `mode="bicubic"`: the absolute position embedding.
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
    if [h, w, out_h, out_w].contains(&0) {
        candle_core::bail!("cannot resize {h} x {w} to {out_h} x {out_w}: empty image");
    }
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
    use candle_core::Var;

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
