//! The digital corruptions: brightness (HSV value), contrast, elastic transform and pixelate
//! (PIL's box down-scale and nearest up-scale).

use image::RgbImage;
use rand::{rngs::StdRng, Rng};

use super::field::{numpy_sum, Field};
use super::filters::gaussian_filter;
use crate::data::pixel::{
    hsv_to_rgb, pil_resize, rgb_to_hsv, unit_to_byte, unit_to_byte_f32, Border, PilFilter,
};

/// HSV value + c.
pub(super) fn brightness(img: &RgbImage, s: usize) -> RgbImage {
    let c = [0.1, 0.2, 0.3, 0.4, 0.5][s];
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let [h, sat, v] = rgb_to_hsv(p.0.map(|v| v as f64 / 255.0));
        p.0 = hsv_to_rgb([h, sat, (v + c).clamp(0.0, 1.0)]).map(unit_to_byte);
    }
    out
}

/// `(x − mean)·c + mean` with per-channel means.
pub(super) fn contrast(img: &RgbImage, s: usize) -> RgbImage {
    let c = [0.4, 0.3, 0.2, 0.1, 0.05][s];
    let mut x = Field::from_rgb(img, 255.0);
    let n = x.w * x.h;
    let means: Vec<f64> = (0..3)
        .map(|ch| {
            let values: Vec<f64> = x.data.iter().skip(ch).step_by(3).copied().collect();
            numpy_sum(&values) / n as f64
        })
        .collect();
    for (i, v) in x.data.iter_mut().enumerate() {
        let m = means[i % 3];
        *v = (*v - m) * c + m;
    }
    x.to_rgb(unit_to_byte)
}

/// scipy's `reflect` mapping of a coordinate into `[-0.5, n − 0.5]`.
fn reflect_coord(c: f64, n: usize) -> f64 {
    let n = n as f64;
    if (-0.5..=n - 0.5).contains(&c) {
        return c;
    }
    let period = 2.0 * n;
    let m = (c + 0.5).rem_euclid(period) - 0.5;
    if m > n - 0.5 {
        period - 1.0 - m
    } else {
        m
    }
}

/// `map_coordinates(order=1, mode='reflect')` of channel `ch` at `(y, x)`.
fn bilinear_reflect(f: &Field, y: f64, x: f64, ch: usize) -> f64 {
    let (y, x) = (reflect_coord(y, f.h), reflect_coord(x, f.w));
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let (y0, x0) = (y0 as isize, x0 as isize);
    let at = |yy: isize, xx: isize| {
        f.at(
            Border::Reflect.index(xx, f.w),
            Border::Reflect.index(yy, f.h),
            ch,
        )
    };
    (1.0 - fy) * ((1.0 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
        + fy * ((1.0 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1))
}

/// Warps by a smooth random displacement: uniform noise of amplitude H/200, Gaussian-smoothed
/// (σ = 1% of each side, truncated at 3σ, reflect), times `alpha`.
pub(super) fn elastic_transform(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let alpha = 250.0 * [0.05, 0.065, 0.085, 0.1, 0.12][s];
    let (w, h) = (img.width() as usize, img.height() as usize);
    let max_d = h as f64 * 0.005;
    let mut displacement = || {
        let mut f = Field::zeros(w, h, 1);
        for v in f.data.iter_mut() {
            *v = -max_d + 2.0 * max_d * rng.random::<f64>();
        }
        let smooth = gaussian_filter(&f, h as f64 * 0.01, w as f64 * 0.01, 3.0, Border::Reflect);
        smooth
            .data
            .iter()
            .map(|v| (v * alpha) as f32 as f64)
            .collect::<Vec<f64>>()
    };
    let dx = displacement();
    let dy = displacement();
    let image = Field {
        w,
        h,
        c: 3,
        data: img
            .as_raw()
            .iter()
            .map(|&v| (v as f32 / 255.0) as f64)
            .collect(),
    };
    let mut out = Field::zeros(w, h, 3);
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (sy, sx) = (y as f64 + dy[i], x as f64 + dx[i]);
            for c in 0..3 {
                out.data[i * 3 + c] = bilinear_reflect(&image, sy, sx, c) as f32 as f64;
            }
        }
    }
    out.to_rgb(unit_to_byte_f32)
}

/// PIL's `BOX` reduction to `factor` of each side, then `NEAREST` back to the original size.
pub(super) fn pixelate(img: &RgbImage, s: usize) -> RgbImage {
    let c = [0.6, 0.5, 0.4, 0.3, 0.25][s];
    let (w, h) = img.dimensions();
    let (sw, sh) = (
        ((w as f64 * c) as u32).max(1),
        ((h as f64 * c) as u32).max(1),
    );
    let small = pil_resize(img, sw, sh, PilFilter::Box);
    pil_nearest(&small, w, h)
}

/// PIL's `NEAREST` resize (affine scaling with the source position accumulated in float64).
fn pil_nearest(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let positions = |n_in: u32, n_out: u32| -> Vec<u32> {
        let step = n_in as f64 / n_out as f64;
        let mut pos = step * 0.5;
        (0..n_out)
            .map(|_| {
                let p = (pos.max(0.0) as u32).min(n_in - 1);
                pos += step;
                p
            })
            .collect()
    };
    let (xs, ys) = (positions(img.width(), w), positions(img.height(), h));
    RgbImage::from_fn(w, h, |x, y| *img.get_pixel(xs[x as usize], ys[y as usize]))
}
