//! The blur corruptions: defocus (anti-aliased disk), glass (blur, local pixel copies, blur),
//! motion (shifted copies along a random angle) and zoom (mean of centre zooms).

use image::RgbImage;
use rand::{rngs::StdRng, Rng};

use super::field::Field;
use super::filters::{clipped_zoom, gaussian_filter, motion_blur_field, Axis};
use crate::data::pixel::{byte_clip, unit_to_byte, unit_to_byte_f32, Border};

/// The package's `disk`: a filled disk of `radius` on a grid of half-width max(8, radius),
/// normalised, then blurred by `cv2.GaussianBlur` (3×3, or 5×5 beyond radius 8) in float32.
fn disk_kernel(radius: usize, alias_blur: f64) -> (Vec<f64>, usize) {
    let half = radius.max(8);
    let n = 2 * half + 1;
    let r2 = (radius * radius) as isize;
    let inside: Vec<f32> = (0..n * n)
        .map(|i| {
            let (y, x) = (
                (i / n) as isize - half as isize,
                (i % n) as isize - half as isize,
            );
            if x * x + y * y <= r2 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let total: f32 = inside.iter().sum();
    let disk: Vec<f32> = inside.iter().map(|v| v / total).collect();
    let ksize = if radius <= 8 { 3 } else { 5 };
    let g = opencv_gaussian(ksize, alias_blur);
    let blur = |src: &[f32], axis: Axis| -> Vec<f32> {
        let kr = ksize as isize / 2;
        (0..n * n)
            .map(|i| {
                let (y, x) = ((i / n) as isize, (i % n) as isize);
                (0..ksize).fold(0.0f32, |acc, t| {
                    let o = t as isize - kr;
                    let j = match axis {
                        Axis::X => y as usize * n + Border::Reflect101.index(x + o, n),
                        Axis::Y => Border::Reflect101.index(y + o, n) * n + x as usize,
                    };
                    acc + g[t] * src[j]
                })
            })
            .collect()
    };
    let kernel = blur(&blur(&disk, Axis::X), Axis::Y);
    (kernel.iter().map(|&v| v as f64).collect(), n)
}

/// OpenCV's `getGaussianKernel(ksize, sigma)` for `sigma > 0`, as float32.
fn opencv_gaussian(ksize: usize, sigma: f64) -> Vec<f32> {
    let scale = -0.5 / (sigma * sigma);
    let t: Vec<f64> = (0..ksize)
        .map(|i| {
            let x = i as f64 - (ksize as f64 - 1.0) * 0.5;
            (scale * x * x).exp()
        })
        .collect();
    let sum: f64 = t.iter().sum();
    t.iter().map(|v| (v / sum) as f32).collect()
}

/// `cv2.filter2D` of every channel with a square kernel (reflect-101 border), in float64.
fn filter2d(f: &Field, kernel: &[f64], n: usize) -> Field {
    let r = n / 2;
    let (pw, ph) = (f.w + 2 * r, f.h + 2 * r);
    let mut out = Field::zeros(f.w, f.h, f.c);
    let taps: Vec<(usize, usize, f64)> = (0..n * n)
        .filter(|&i| kernel[i] != 0.0)
        .map(|i| (i / n, i % n, kernel[i]))
        .collect();
    let mut padded = vec![0.0; pw * ph];
    let mut acc = vec![0.0; f.w];
    for ch in 0..f.c {
        for (py, row) in padded.chunks_mut(pw).enumerate() {
            let y = Border::Reflect101.index(py as isize - r as isize, f.h);
            for (px, v) in row.iter_mut().enumerate() {
                *v = f.at(
                    Border::Reflect101.index(px as isize - r as isize, f.w),
                    y,
                    ch,
                );
            }
        }
        for y in 0..f.h {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for &(ky, kx, k) in &taps {
                let src = &padded[(y + ky) * pw + kx..(y + ky) * pw + kx + f.w];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += k * v;
                }
            }
            for (x, &a) in acc.iter().enumerate() {
                out.data[(y * f.w + x) * f.c + ch] = a;
            }
        }
    }
    out
}

/// Correlation with an anti-aliased disk.
pub(super) fn defocus_blur(img: &RgbImage, s: usize) -> RgbImage {
    let (radius, alias) = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][s];
    let (kernel, n) = disk_kernel(radius, alias);
    filter2d(&Field::from_rgb(img, 255.0), &kernel, n).to_rgb(unit_to_byte)
}

/// Gaussian blur, local pixel copies within `max_delta`, Gaussian blur again.
pub(super) fn glass_blur(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let (sigma, delta, iterations) = [
        (0.7, 1, 2),
        (0.9, 2, 1),
        (1.0, 2, 3),
        (1.1, 3, 2),
        (1.5, 4, 2),
    ][s];
    let blurred = gaussian_filter(
        &Field::from_rgb(img, 255.0),
        sigma,
        sigma,
        4.0,
        Border::Nearest,
    );
    let mut bytes = blurred.to_rgb(|v| (v * 255.0) as u8);
    let (w, h) = (bytes.width() as i64, bytes.height() as i64);
    for _ in 0..iterations {
        for y in (delta + 1..=h - delta).rev() {
            for x in (delta + 1..=w - delta).rev() {
                let dx = rng.random_range(-delta..delta);
                let dy = rng.random_range(-delta..delta);
                // numpy's `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on views copies, not swaps.
                let p = *bytes.get_pixel((x + dx) as u32, (y + dy) as u32);
                bytes.put_pixel(x as u32, y as u32, p);
            }
        }
    }
    gaussian_filter(
        &Field::from_rgb(&bytes, 255.0),
        sigma,
        sigma,
        4.0,
        Border::Nearest,
    )
    .to_rgb(unit_to_byte)
}

/// Shifted copies along a random angle in [-45°, 45°).
pub(super) fn motion_blur(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let (radius, sigma) = [(10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0)][s];
    let angle = rng.random_range(-45.0..45.0);
    motion_blur_field(&Field::from_rgb(img, 1.0), radius, sigma, angle).to_rgb(byte_clip)
}

/// The package's zoom factors, `np.arange(1, stop, step)` (start + i·step).
fn zoom_factors(s: usize) -> Vec<f64> {
    let (stop, step): (f64, f64) = [
        (1.11, 0.01),
        (1.16, 0.01),
        (1.21, 0.02),
        (1.26, 0.02),
        (1.31, 0.03),
    ][s];
    let n = ((stop - 1.0) / step).ceil() as usize;
    (0..n).map(|i| 1.0 + i as f64 * step).collect()
}

/// The mean of the image and its centre zooms, in float32 as the package computes it.
pub(super) fn zoom_blur(img: &RgbImage, s: usize) -> RgbImage {
    let factors = zoom_factors(s);
    let x = Field::from_rgb(img, 255.0);
    let x32: Vec<f32> = x.data.iter().map(|&v| v as f32).collect();
    let x_as_f32 = Field {
        data: x32.iter().map(|&v| v as f64).collect(),
        ..x
    };
    let mut out = vec![0.0f32; x32.len()];
    for &z in &factors {
        let layer = clipped_zoom(&x_as_f32, z).crop(x_as_f32.w, x_as_f32.h);
        for (o, &v) in out.iter_mut().zip(&layer.data) {
            *o += v as f32;
        }
    }
    let n = (factors.len() + 1) as f32;
    let data = x32
        .iter()
        .zip(&out)
        .map(|(&a, &b)| ((a + b) / n) as f64)
        .collect();
    Field { data, ..x_as_f32 }.to_rgb(unit_to_byte_f32)
}
