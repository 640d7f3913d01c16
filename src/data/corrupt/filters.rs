//! The filters several corruptions share: scipy's separable Gaussian filter (glass blur, frost,
//! elastic transform), the package's `clipped_zoom` (zoom blur, snow) and its `_motion_blur`
//! (motion blur, snow).

use super::field::{numpy_sum, Field};
use crate::data::pixel::Border;

/// scipy's `_gaussian_kernel1d`: `exp(-x²/2σ²)` on `[-r, r]`, `r = int(truncate·σ + 0.5)`,
/// normalised.
fn gaussian_kernel(sigma: f64, truncate: f64) -> Vec<f64> {
    let r = (truncate * sigma + 0.5) as isize;
    let s2 = sigma * sigma;
    let phi: Vec<f64> = (-r..=r)
        .map(|x| (-0.5 / s2 * (x * x) as f64).exp())
        .collect();
    let sum = numpy_sum(&phi);
    phi.iter().map(|v| v / sum).collect()
}

/// The two directions of a separable filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Axis {
    /// Along a row (x).
    X,
    /// Along a column (y).
    Y,
}

/// scipy's `correlate1d` with a symmetric kernel along one axis of every channel (the centre
/// tap first, then the pairs from the outside in, as scipy sums them).
fn correlate1d(f: &Field, kernel: &[f64], axis: Axis, border: Border) -> Field {
    let r = kernel.len() / 2;
    let (n, lines) = match axis {
        Axis::X => (f.w, f.h),
        Axis::Y => (f.h, f.w),
    };
    let mut out = Field::zeros(f.w, f.h, f.c);
    let mut line = vec![0.0; n + 2 * r];
    for l in 0..lines {
        for ch in 0..f.c {
            let idx = |i: usize| match axis {
                Axis::X => (l * f.w + i) * f.c + ch,
                Axis::Y => (i * f.w + l) * f.c + ch,
            };
            for (j, v) in line.iter_mut().enumerate() {
                *v = f.data[idx(border.index(j as isize - r as isize, n))];
            }
            for i in 0..n {
                let mut acc = line[i + r] * kernel[r];
                for j in (1..=r).rev() {
                    acc += (line[i + r - j] + line[i + r + j]) * kernel[r - j];
                }
                out.data[idx(i)] = acc;
            }
        }
    }
    out
}

/// scipy `gaussian_filter` on the two spatial axes (axis 0 = y first), every channel apart.
pub(super) fn gaussian_filter(
    f: &Field,
    sigma_y: f64,
    sigma_x: f64,
    truncate: f64,
    border: Border,
) -> Field {
    let along_y = correlate1d(f, &gaussian_kernel(sigma_y, truncate), Axis::Y, border);
    correlate1d(
        &along_y,
        &gaussian_kernel(sigma_x, truncate),
        Axis::X,
        border,
    )
}

/// Bilinear sample of channel `ch` at `(y, x)` with indices beyond the edge clamped.
#[inline]
fn bilinear_clamped(f: &Field, y: f64, x: f64, ch: usize) -> f64 {
    let (y0, x0) = (y.floor().max(0.0) as usize, x.floor().max(0.0) as usize);
    let (y0, x0) = (y0.min(f.h - 1), x0.min(f.w - 1));
    let (fy, fx) = (y - y0 as f64, x - x0 as f64);
    let (y1, x1) = ((y0 + 1).min(f.h - 1), (x0 + 1).min(f.w - 1));
    let top = (1.0 - fx) * f.at(x0, y0, ch) + fx * f.at(x1, y0, ch);
    let bottom = (1.0 - fx) * f.at(x0, y1, ch) + fx * f.at(x1, y1, ch);
    (1.0 - fy) * top + fy * bottom
}

/// scipy `zoom(order=1)` source coordinates of one axis: output `i` reads input
/// `i·(n_in − 1)/(n_out − 1)` (end points aligned). A coordinate that rounding puts past the
/// last sample is `None`: scipy's default `constant` mode then outputs 0 for the whole sample.
fn zoom_coords(n_in: usize, n_out: usize) -> Vec<Option<f64>> {
    let step = if n_out > 1 {
        (n_in as f64 - 1.0) / (n_out as f64 - 1.0)
    } else {
        1.0
    };
    let last = n_in as f64 - 1.0;
    (0..n_out)
        .map(|i| Some(i as f64 * step).filter(|&c| c <= last))
        .collect()
}

/// The package's `clipped_zoom`: the centre `ceil(H/z)`×`ceil(W/z)` crop scaled by `z` with
/// scipy's linear `zoom`, output `round(ceil(H/z)·z)` × `round(ceil(W/z)·z)` (at least H×W).
pub(super) fn clipped_zoom(f: &Field, z: f64) -> Field {
    let ch = ((f.h as f64 / z).ceil() as usize).clamp(1, f.h);
    let cw = ((f.w as f64 / z).ceil() as usize).clamp(1, f.w);
    let (top, left) = ((f.h - ch) / 2, (f.w - cw) / 2);
    let crop = Field {
        w: cw,
        h: ch,
        c: f.c,
        data: (top..top + ch)
            .flat_map(|y| {
                f.data[(y * f.w + left) * f.c..(y * f.w + left + cw) * f.c]
                    .iter()
                    .copied()
            })
            .collect(),
    };
    let oh = (ch as f64 * z).round_ties_even() as usize;
    let ow = (cw as f64 * z).round_ties_even() as usize;
    let xs = zoom_coords(cw, ow);
    let mut out = Field::zeros(ow, oh, f.c);
    for (oy, sy) in zoom_coords(ch, oh).into_iter().enumerate() {
        for (ox, sx) in xs.iter().enumerate() {
            if let (Some(sy), Some(sx)) = (sy, *sx) {
                for c in 0..f.c {
                    out.data[(oy * ow + ox) * f.c + c] = bilinear_clamped(&crop, sy, sx, c);
                }
            }
        }
    }
    out
}

/// The package's `_motion_blur`: a sum of copies shifted along `angle` (degrees), edge pixels
/// repeated, weighted by a one-sided Gaussian; stops once a shift leaves the image.
pub(super) fn motion_blur_field(f: &Field, radius: usize, sigma: f64, angle: f64) -> Field {
    let width = 2 * radius + 1;
    let k: Vec<f64> = (0..width)
        .map(|i| {
            let x = (i * i) as f64;
            (-x / (2.0 * (sigma * sigma))).exp() / ((2.0 * std::f64::consts::PI).sqrt() * sigma)
        })
        .collect();
    let z = numpy_sum(&k);
    let rad = angle.to_radians();
    let (p0, p1) = (width as f64 * rad.sin(), width as f64 * rad.cos());
    let hyp = p0.hypot(p1);
    let mut acc = Field::zeros(f.w, f.h, f.c);
    for (i, ki) in k.iter().enumerate() {
        let dy = -((i as f64 * p0 / hyp - 0.5).ceil() as isize);
        let dx = -((i as f64 * p1 / hyp - 0.5).ceil() as isize);
        if dy.unsigned_abs() >= f.h || dx.unsigned_abs() >= f.w {
            break;
        }
        let w = ki / z;
        for y in 0..f.h {
            let sy = (y as isize - dy).clamp(0, f.h as isize - 1) as usize;
            for x in 0..f.w {
                let sx = (x as isize - dx).clamp(0, f.w as isize - 1) as usize;
                for c in 0..f.c {
                    let o = (y * f.w + x) * f.c + c;
                    acc.data[o] += w * f.data[(sy * f.w + sx) * f.c + c];
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn motion_blur_kernel_matches_the_package() {
        // `_motion_blur(a, radius=4, sigma=2.0, angle=0)` of a 1×30 row with 200 at x = 25:
        // the one-sided kernel lands on x = 25, 24, ..., 17.
        let want = [
            0.022315, 0.145513, 0.738978, 2.922714, 9.002594, 21.5961, 40.346827, 58.704287,
            66.520672,
        ];
        let mut f = Field::zeros(30, 1, 1);
        f.data[25] = 200.0;
        let out = motion_blur_field(&f, 4, 2.0, 0.0);
        for (x, v) in out.data.iter().enumerate() {
            let expected = if (17..=25).contains(&x) {
                want[x - 17]
            } else {
                0.0
            };
            assert!((v - expected).abs() < 1e-5, "x = {x}: {v} vs {expected}");
        }
    }
}
