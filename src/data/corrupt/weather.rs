//! The weather corruptions: snow (motion-blurred flakes over a brightened image), frost (blend
//! with a procedural ice texture) and fog (added plasma fractal), with their textures.

use image::RgbImage;
use rand::{rngs::StdRng, Rng};

use super::field::Field;
use super::filters::{clipped_zoom, gaussian_filter, motion_blur_field};
use crate::data::pixel::{byte_clip, saturate_u8, unit_to_byte, Border};

/// A Gaussian snow field, zoomed, thresholded and motion-blurred (random angle in
/// [-135°, -45°)), added twice (as is and rotated 180°) to a brightened image, in the package's
/// float32 / float64 mix.
pub(super) fn snow(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let (loc, scale, zoom, threshold, radius, sigma, blend) = [
        (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
        (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
        (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
    ][s];
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut field = Field::zeros(w, h, 1);
    for v in field.data.iter_mut() {
        *v = loc + scale * rng.sample::<f64, _>(rand_distr::StandardNormal);
    }
    let mut field = clipped_zoom(&field, zoom);
    for v in field.data.iter_mut() {
        *v = if *v < threshold { 0.0 } else { v.min(1.0) };
    }
    let angle = rng.random_range(-135.0..-45.0);
    let flakes: Vec<f64> = motion_blur_field(&field, radius, sigma, angle)
        .crop(w, h)
        .data
        .iter()
        .map(|v| saturate_u8(v * 255.0) as f64 / 255.0)
        .collect();
    let (blend32, rest32) = (blend as f32, (1.0 - blend) as f32);
    let mut out = Field::zeros(w, h, 3);
    for (i, p) in img.pixels().enumerate() {
        let x = p.0.map(|v| v as f32 / 255.0);
        let grey = 0.299f32 * x[0] + 0.587 * x[1] + 0.114 * x[2];
        let bright = grey * 1.5 + 0.5;
        let snowflakes = flakes[i] + flakes[w * h - 1 - i];
        for (o, &xc) in out.data[i * 3..i * 3 + 3].iter_mut().zip(&x) {
            let v = blend32 * xc + rest32 * xc.max(bright);
            *o = v as f64 + snowflakes;
        }
    }
    out.to_rgb(unit_to_byte)
}

/// `c0·x + c1·frost` with a procedural frost texture (see the module table).
pub(super) fn frost(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let (keep, amount) = [(1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][s];
    let texture = frost_texture(img.width() as usize, img.height() as usize, rng);
    let mut x = Field::from_rgb(img, 1.0);
    for (v, t) in x.data.iter_mut().zip(&texture) {
        *v = keep * *v + amount * t;
    }
    x.to_rgb(byte_clip)
}

/// Per-channel mean and standard deviation of the package's frost photographs (the average over
/// the five it draws from, each at its native resolution).
const FROST_MEAN: [f64; 3] = [145.9, 167.2, 178.9];
const FROST_STD: [f64; 3] = [28.5, 26.5, 26.4];

/// A frost texture (interleaved RGB, 0–255) for a `w`×`h` image: plasma clouds for the uneven
/// ice and fern-like needles for the crystals, standardised to the photographs' per-channel
/// mean and spread ([`FROST_MEAN`], [`FROST_STD`]).
fn frost_texture(w: usize, h: usize, rng: &mut StdRng) -> Vec<f64> {
    let size = w.max(h).next_power_of_two();
    let clouds = plasma_fractal(size, 2.0, rng);
    // The package up-scales its ~600×900 photographs for larger images; so do the crystals.
    let scale = (w.max(h) as f64 / 700.0).max(1.0);
    let mut needles = Field::zeros(w, h, 1);
    for _ in 0..(w * h / 500).max(1) {
        let start = (
            rng.random::<f64>() * w as f64,
            rng.random::<f64>() * h as f64,
        );
        let angle = rng.random::<f64>() * std::f64::consts::TAU;
        let len = scale * rng.random_range(25.0..90.0);
        draw_fern(&mut needles, start, angle, len, rng);
    }
    let needles = gaussian_filter(&needles, 1.0, 1.0, 4.0, Border::Nearest);
    let clouds: Vec<f64> = (0..w * h).map(|i| clouds[(i / w) * size + i % w]).collect();
    let needles: Vec<f64> = needles
        .data
        .iter()
        .map(|v| 1.0 - (-1.5 * v).exp())
        .collect();
    let (clouds, needles) = (standardise(&clouds), standardise(&needles));
    let pattern: Vec<f64> = clouds
        .iter()
        .zip(&needles)
        .map(|(c, n)| 0.6 * c + n)
        .collect();
    standardise(&pattern)
        .iter()
        .flat_map(|z| (0..3).map(move |c| (FROST_MEAN[c] + FROST_STD[c] * z).clamp(0.0, 255.0)))
        .collect()
}

/// `(v − mean) / std` (all zeros for a constant input).
fn standardise(v: &[f64]) -> Vec<f64> {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    v.iter()
        .map(|x| if std > 0.0 { (x - mean) / std } else { 0.0 })
        .collect()
}

/// Draws one ice fern: a stem from `start` along `angle`, with side needles every 3 pixels on
/// both sides, 40–65° off the stem, shorter towards the tip.
fn draw_fern(f: &mut Field, start: (f64, f64), angle: f64, len: f64, rng: &mut StdRng) {
    let strength = rng.random_range(0.5..1.0);
    draw_needle(f, start, angle, len, strength);
    let (dx, dy) = (angle.cos(), angle.sin());
    let mut t = 3.0;
    while t < len {
        for side in [-1.0, 1.0] {
            let off = side * rng.random_range(40f64..65.0).to_radians();
            let branch = (1.0 - t / len) * 0.35 * len * rng.random_range(0.6..1.0);
            let at = (start.0 + t * dx, start.1 + t * dy);
            draw_needle(f, at, angle + off, branch, 0.7 * strength);
        }
        t += 3.0;
    }
}

/// Adds a fading line of `strength` from `start` along `angle` for `len` pixels.
fn draw_needle(f: &mut Field, start: (f64, f64), angle: f64, len: f64, strength: f64) {
    let (dx, dy) = (angle.cos(), angle.sin());
    for i in 0..=len.ceil() as usize {
        let t = i as f64;
        let (x, y) = (start.0 + t * dx, start.1 + t * dy);
        if x >= 0.0 && y >= 0.0 && (x as usize) < f.w && (y as usize) < f.h {
            f.data[y as usize * f.w + x as usize] += strength * (1.0 - 0.6 * t / len.max(1.0));
        }
    }
}

/// Adds a plasma fractal (side: the next power of two of the longest side) and rescales by the
/// image's maximum.
pub(super) fn fog(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let (amount, decay) = [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][s];
    let mut x = Field::from_rgb(img, 255.0);
    let size = x.w.max(x.h).max(3).next_power_of_two();
    let plasma = plasma_fractal(size, decay, rng);
    let max = x.data.iter().copied().fold(0.0, f64::max);
    let (w, c) = (x.w, x.c);
    for (i, v) in x.data.iter_mut().enumerate() {
        let (px, py) = ((i / c) % w, i / c / w);
        *v = (*v + amount * plasma[py * size + px]) * max / (max + amount);
    }
    x.to_rgb(unit_to_byte)
}

/// The package's `plasma_fractal`: a `size`×`size` diamond-square height map in [0, 1] (`size`
/// a power of two; all zeros below 2), the random term `wibble·U(-wibble, wibble)` shrinking by
/// `decay` per level.
fn plasma_fractal(size: usize, decay: f64, rng: &mut StdRng) -> Vec<f64> {
    let mut m = vec![0.0; size * size];
    let mut step = size;
    let mut wibble = 100.0f64;
    let idx = |y: usize, x: usize| (y % size) * size + (x % size);
    while step >= 2 {
        let half = step / 2;
        let n = size / step;
        let mut noise = |v: f64| v / 4.0 + wibble * (-wibble + 2.0 * wibble * rng.random::<f64>());
        // Squares: centre = mean of the four corners.
        for i in 0..n {
            for j in 0..n {
                let (y, x) = (i * step, j * step);
                let sum = (m[idx(y, x)] + m[idx(y + step, x)])
                    + (m[idx(y, x + step)] + m[idx(y + step, x + step)]);
                m[idx(y + half, x + half)] = noise(sum);
            }
        }
        // Diamonds: edge midpoints from the two neighbouring centres and the edge's corners.
        let centre = |m: &[f64], i: isize, j: isize| {
            let (i, j) = (
                i.rem_euclid(n as isize) as usize,
                j.rem_euclid(n as isize) as usize,
            );
            m[idx(i * step + half, j * step + half)]
        };
        let corner = |m: &[f64], i: usize, j: usize| m[idx(i * step, j * step)];
        let mut top = vec![0.0; n * n];
        let mut left = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                let (ii, jj) = (i as isize, j as isize);
                let ldr = centre(&m, ii, jj) + centre(&m, ii - 1, jj);
                let lul = corner(&m, i, j) + corner(&m, i, j + 1);
                top[i * n + j] = ldr + lul;
                let tdr = centre(&m, ii, jj) + centre(&m, ii, jj - 1);
                let tul = corner(&m, i, j) + corner(&m, i + 1, j);
                left[i * n + j] = tdr + tul;
            }
        }
        for i in 0..n {
            for j in 0..n {
                m[idx(i * step, j * step + half)] = noise(top[i * n + j]);
            }
        }
        for i in 0..n {
            for j in 0..n {
                m[idx(i * step + half, j * step)] = noise(left[i * n + j]);
            }
        }
        step /= 2;
        wibble /= decay;
    }
    let min = m.iter().copied().fold(f64::INFINITY, f64::min);
    m.iter_mut().for_each(|v| *v -= min);
    let max = m.iter().copied().fold(0.0, f64::max);
    m.iter()
        .map(|v| if max > 0.0 { v / max } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn plasma_fractal_spans_zero_to_one() {
        let m = plasma_fractal(64, 2.0, &mut StdRng::seed_from_u64(4));
        assert_eq!(m.len(), 64 * 64);
        let (min, max) = m
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!((min, max), (0.0, 1.0));
    }
}
