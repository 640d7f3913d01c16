//! The 15 ImageNet-C / COCO-C corruptions at severities 1–5, as the `imagecorruptions` package
//! (1.1.2) defines them; WeSAM's corrupted-COCO benchmark runs each of them at severity 5.
//!
//! Every corruption uses the package's per-severity constants and reproduces its arithmetic:
//! float64 where numpy computes in float64, float32 where it does, and the final truncating
//! `np.uint8` cast. Randomness comes from a [`StdRng`] seeded by the caller, so a seed gives the
//! same image on every run, but not the package's image (numpy's streams are not reproduced).
//!
//! | corruption | what the package does | what wesam does | expected difference |
//! |---|---|---|---|
//! | gaussian_noise | `x/255 + N(0, c)`, clip | same | same distribution, other noise |
//! | shot_noise | `Poisson(x/255 · c) / c`, clip | same | same distribution, other noise |
//! | impulse_noise | skimage salt & pepper, `amount = c` per channel value | same | same distribution, other noise |
//! | defocus_blur | anti-aliased disk kernel, `cv2.filter2D` (reflect-101; DFT for large kernels) | same kernel, direct correlation in float64 | none measured (last-bit rounding only) |
//! | glass_blur | skimage Gaussian (nearest), pixel "swaps" that numpy turns into copies (`a[i], a[j] = a[j], a[i]` on views), Gaussian again | same, including the copy semantics | other random offsets |
//! | motion_blur | 1.1.2 sums shifted copies along a random angle with a one-sided Gaussian kernel (numpy, not ImageMagick as ImageNet-C did) | same shifts, kernel and float64 accumulation order | other random angle |
//! | zoom_blur | average of `scipy.ndimage.zoom(order=1)` centre crops, float32 | same sampling (end-point aligned bilinear; like scipy, a sample whose source coordinate rounds past the last row/column is 0), float32 accumulation | none measured (rounding only) |
//! | snow | Gaussian field, scipy zoom, threshold, motion blur, blend with a brightened grey image | same | other snow field and angle |
//! | frost | blends with a random crop of one of five bundled frost photographs (`randint(5)`: the sixth file is never drawn), each with its own colour (e.g. a dark teal one) | blends with a procedural texture: plasma clouds plus fern-like ice needles, standardised to the photographs' average per-channel mean and spread | different texture, so per-pixel differences of tens of grey levels; similar strength (distance from clean within 6%), none of the photographs' colour variety |
//! | fog | diamond-square plasma fractal added, renormalised by the image maximum | same algorithm (numpy's `roll` indexing) | other fractal |
//! | brightness | skimage HSV, `V + c` | same (skimage's formulas in float64) | none (rounding only) |
//! | contrast | `(x − mean)·c + mean` per channel | same | none (rounding only) |
//! | elastic_transform | scipy Gaussian-smoothed uniform displacement (reflect), `map_coordinates(order=1, mode='reflect')` | same | other displacement field |
//! | pixelate | PIL `BOX` down-scale, `NEAREST` up-scale | PIL's 22-bit fixed-point box resampling, horizontal pass first, and its accumulated-position nearest | none measured; Pillow 13 resamples images taller than about twice their width vertically first, which changes some pixels by ±1 |
//! | jpeg_compression | PIL JPEG (libjpeg-turbo, 4:2:0) save and reload | libjpeg's lossy steps simulated (no codec): its fixed-point YCbCr, 2×2 down-sampling with alternating bias, quality-scaled Annex K tables, float DCT with libjpeg's 8·F rounding before quantisation, float IDCT, fancy (triangle) up-sampling, fixed-point YCbCr→RGB | libjpeg's integer DCT rounds a few coefficients the other way: 86–98% of values identical, Δ ≤ 0.16 |
//!
//! Further differences: images smaller than the package's 32-pixel minimum are accepted; pixelate
//! keeps at least one pixel per side where PIL would fail; every non-random float step may differ
//! from numpy in the last bit (e.g. numpy's SIMD `exp`), which the truncating cast can turn into
//! ±1 grey level on a rare pixel.
//!
//! Measured against imagecorruptions 1.1.2 (numpy 2.4, scipy 1.17, scikit-image 0.26, Pillow 13,
//! OpenCV 5.0) on skimage's 512×512 `astronaut` with `scripts/compare_corruptions.py`. `Δ` is the
//! mean absolute difference between the two outputs in grey levels, "identical values" the
//! fraction of equal bytes (range over severities), "− clean" each output's mean absolute
//! distance from the clean image:
//!
//! | corruption | Δ, severity 1/2/3/4/5 | identical values | package − clean | wesam − clean | wesam s |
//! |---|---|---|---|---|---|
//! | gaussian_noise | 20.45/29.86/42.77/57.84/76.14 | 0.06–0.11 | 14.5/21.3/30.8/42.1/56.4 | 14.6/21.3/30.8/42.1/56.4 | 0.01 |
//! | shot_noise | 20.88/30.85/41.73/58.31/68.95 | 0.19–0.46 | 15.0/22.4/30.9/44.8/55.2 | 15.0/22.4/30.9/44.7/55.2 | 0.03 |
//! | impulse_noise | 7.52/14.82/22.08/39.67/59.58 | 0.59–0.94 | 3.8/7.6/11.5/21.7/34.4 | 3.8/7.7/11.5/21.7/34.5 | 0.01 |
//! | defocus_blur | 0/0/0/0/0 | 1.00 | 6.7/8.4/11.6/14.2/16.7 | same | 0.06 |
//! | glass_blur | 2.76/3.51/5.82/6.01/5.47 | 0.22–0.38 | 8.1/8.3/13.9/13.5/15.7 | 8.1/8.3/13.9/13.5/15.7 | 0.05 |
//! | motion_blur | 2.82/3.89/5.17/6.52/7.38 | 0.18–0.35 | 9.9/14.1/18.9/23.5/26.4 | 9.9/14.2/19.1/23.8/26.7 | 0.04 |
//! | zoom_blur | 0/0/0/0/0 | 1.00 | 22.7/26.8/29.4/32.3/34.5 | same | 0.17 |
//! | snow | 9.74/16.43/18.03/22.66/15.83 | 0.36–0.55 | 40.6/63.1/62.6/74.2/85.3 | 40.7/63.2/62.8/74.4/85.3 | 0.03 |
//! | frost | 18.98/30.99/37.24/38.86/41.89 | 0.02–0.14 | 60.4/72.5/78.8/76.2/79.6 | 59.5/71.1/76.7/72.6/75.4 | 0.03 |
//! | fog | 20.52/22.79/25.80/26.75/29.90 | 0.01–0.02 | 47.7/53.0/57.2/57.5/60.3 (100 seeds) | 48.3/53.7/57.8/57.8/60.5 (100 seeds) | 0.01 |
//! | brightness | 0/0/0/0/0 | 1.00 | 19.3/36.0/48.1/57.3/64.8 | same | 0.00 |
//! | contrast | 0/0/0/0/0 | 1.00 | 41.7/48.7/55.6/62.6/66.0 | same | 0.00 |
//! | elastic_transform | 9.12/11.13/13.52/15.14/17.15 | 0.17–0.22 | 7.5/9.1/11.0/12.4/14.0 | 7.5/9.1/11.0/12.3/14.0 | 0.04 |
//! | pixelate | 0/0/0/0/0 | 1.00 | 4.1/4.8/6.0/7.3/8.4 | same | 0.00 |
//! | jpeg_compression | 0.06/0.16/0.03/0.09/0.05 | 0.86–0.98 | 5.1/5.9/6.4/7.7/9.2 | 5.1/5.8/6.4/7.8/9.2 | 0.02 |
//!
//! The random corruptions' Δ compares two independent draws (seed 0 in both), so it measures
//! the corruption's own variability, not an error; their distances from the clean image are
//! means over 24 package seeds and 12 wesam seeds (fog: 100 each). `wesam s` is the slowest
//! severity's time on one core of the shared 2-core build machine, 512×512.

use anyhow::{bail, Result};
use image::RgbImage;
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};

/// One of the 15 benchmark corruptions; CLI and serde names are the package's (`gaussian_noise`),
/// with kebab-case aliases (`gaussian-noise`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::VariantArray,
    strum::EnumMessage,
)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// Additive Gaussian noise.
    #[serde(alias = "gaussian-noise")]
    GaussianNoise,
    /// Poisson (photon) noise.
    #[serde(alias = "shot-noise")]
    ShotNoise,
    /// Salt-and-pepper noise.
    #[serde(alias = "impulse-noise")]
    ImpulseNoise,
    /// Blur by an anti-aliased disk.
    #[serde(alias = "defocus-blur")]
    DefocusBlur,
    /// Blur, local pixel scrambling, blur.
    #[serde(alias = "glass-blur")]
    GlassBlur,
    /// Blur along a random direction.
    #[serde(alias = "motion-blur")]
    MotionBlur,
    /// Mean of centre zooms.
    #[serde(alias = "zoom-blur")]
    ZoomBlur,
    /// Motion-blurred snow flakes over a brightened image.
    Snow,
    /// Blend with a frost texture.
    Frost,
    /// Added plasma-fractal haze.
    Fog,
    /// Raised HSV value.
    Brightness,
    /// Values pulled towards the channel means.
    Contrast,
    /// Warp by a smooth random displacement.
    #[serde(alias = "elastic-transform")]
    ElasticTransform,
    /// Box down-scale, nearest up-scale.
    Pixelate,
    /// JPEG at low quality.
    #[serde(alias = "jpeg-compression")]
    JpegCompression,
}

impl Corruption {
    /// All 15, in the package's order (`get_corruption_names('common')`).
    pub const ALL: [Corruption; 15] = [
        Self::GaussianNoise,
        Self::ShotNoise,
        Self::ImpulseNoise,
        Self::DefocusBlur,
        Self::GlassBlur,
        Self::MotionBlur,
        Self::ZoomBlur,
        Self::Snow,
        Self::Frost,
        Self::Fog,
        Self::Brightness,
        Self::Contrast,
        Self::ElasticTransform,
        Self::Pixelate,
        Self::JpegCompression,
    ];

    /// The package's name, used for COCO-C's `corruption/<name>/` folders.
    pub fn name(self) -> &'static str {
        match self {
            Self::GaussianNoise => "gaussian_noise",
            Self::ShotNoise => "shot_noise",
            Self::ImpulseNoise => "impulse_noise",
            Self::DefocusBlur => "defocus_blur",
            Self::GlassBlur => "glass_blur",
            Self::MotionBlur => "motion_blur",
            Self::ZoomBlur => "zoom_blur",
            Self::Snow => "snow",
            Self::Frost => "frost",
            Self::Fog => "fog",
            Self::Brightness => "brightness",
            Self::Contrast => "contrast",
            Self::ElasticTransform => "elastic_transform",
            Self::Pixelate => "pixelate",
            Self::JpegCompression => "jpeg_compression",
        }
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Corrupts an image at `severity` 1–5 (the package's levels); the result has the input's size
/// and depends only on the image, the corruption, the severity and `seed`.
pub fn corrupt(img: &RgbImage, c: Corruption, severity: u8, seed: u64) -> Result<RgbImage> {
    if !(1..=5).contains(&severity) {
        bail!("corruption severity must be 1 to 5, got {severity}");
    }
    if img.width() == 0 || img.height() == 0 {
        bail!(
            "cannot corrupt an empty {}x{} image",
            img.width(),
            img.height()
        );
    }
    let s = severity as usize - 1;
    let rng = &mut StdRng::seed_from_u64(seed);
    Ok(match c {
        Corruption::GaussianNoise => gaussian_noise(img, s, rng),
        Corruption::ShotNoise => shot_noise(img, s, rng),
        Corruption::ImpulseNoise => impulse_noise(img, s, rng),
        Corruption::DefocusBlur => defocus_blur(img, s),
        Corruption::GlassBlur => glass_blur(img, s, rng),
        Corruption::MotionBlur => motion_blur(img, s, rng),
        Corruption::ZoomBlur => zoom_blur(img, s),
        Corruption::Snow => snow(img, s, rng),
        Corruption::Frost => frost(img, s, rng),
        Corruption::Fog => fog(img, s, rng),
        Corruption::Brightness => brightness(img, s),
        Corruption::Contrast => contrast(img, s),
        Corruption::ElasticTransform => elastic_transform(img, s, rng),
        Corruption::Pixelate => pixelate(img, s),
        Corruption::JpegCompression => jpeg_compression(img, s),
    })
}

// ------------------------------------------------------------------------------------------------
// Float images and the numerical building blocks.

/// A float image with `c` interleaved channels, row-major: the corruptions' working type.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    w: usize,
    h: usize,
    c: usize,
    data: Vec<f64>,
}

impl Field {
    /// An all-zero field.
    fn zeros(w: usize, h: usize, c: usize) -> Self {
        Self {
            w,
            h,
            c,
            data: vec![0.0; w * h * c],
        }
    }

    /// `np.array(img) / div` in float64.
    fn from_rgb(img: &RgbImage, div: f64) -> Self {
        Self {
            w: img.width() as usize,
            h: img.height() as usize,
            c: 3,
            data: img.as_raw().iter().map(|&v| v as f64 / div).collect(),
        }
    }

    /// The RGB image of a three-channel field, each value mapped to a byte by `to_byte`.
    fn to_rgb(&self, to_byte: impl Fn(f64) -> u8) -> RgbImage {
        let data = self.data.iter().map(|&v| to_byte(v)).collect();
        RgbImage::from_raw(self.w as u32, self.h as u32, data)
            .unwrap_or_else(|| RgbImage::new(self.w as u32, self.h as u32))
    }

    /// Channel `ch` of pixel `(x, y)`.
    #[inline]
    fn at(&self, x: usize, y: usize, ch: usize) -> f64 {
        self.data[(y * self.w + x) * self.c + ch]
    }

    /// The `w`×`h` top-left crop (`a[:h, :w]`), zero where the field is smaller.
    fn crop(&self, w: usize, h: usize) -> Field {
        let mut out = Field::zeros(w, h, self.c);
        let cw = w.min(self.w) * self.c;
        for y in 0..h.min(self.h) {
            let src = &self.data[y * self.w * self.c..y * self.w * self.c + cw];
            out.data[y * w * self.c..y * w * self.c + cw].copy_from_slice(src);
        }
        out
    }
}

/// `np.uint8(np.clip(v, 0, 1) * 255)`: the package's final cast truncates.
fn unit_to_byte(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0) as u8
}

/// [`unit_to_byte`] in float32 arithmetic, for the corruptions numpy computes in float32.
fn unit_to_byte_f32(v: f64) -> u8 {
    ((v as f32).clamp(0.0, 1.0) * 255.0) as u8
}

/// `np.uint8(np.clip(v, 0, 255))`.
fn byte_clip(v: f64) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// numpy's pairwise summation of a float64 array (what `np.sum` returns, to the last bit).
fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        return a.iter().fold(0.0, |s, &v| s + v);
    }
    if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        return res;
    }
    let half = n / 2;
    let half = half - half % 8;
    numpy_sum(&a[..half]) + numpy_sum(&a[half..])
}

/// How a filter reads outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Border {
    /// scipy `nearest`: `aaa|abcd|ddd`.
    Nearest,
    /// scipy `reflect` (half-sample symmetric): `cba|abcd|dcb`.
    Reflect,
    /// OpenCV `BORDER_REFLECT_101`: `dcb|abcd|cba`.
    Reflect101,
}

impl Border {
    /// The in-image index read for index `i` of a line of `n` samples.
    fn index(self, i: isize, n: usize) -> usize {
        let n = n as isize;
        match self {
            Border::Nearest => i.clamp(0, n - 1) as usize,
            Border::Reflect => {
                let m = i.rem_euclid(2 * n);
                (if m < n { m } else { 2 * n - 1 - m }) as usize
            }
            Border::Reflect101 => {
                if n == 1 {
                    return 0;
                }
                let m = i.rem_euclid(2 * (n - 1));
                (if m < n { m } else { 2 * (n - 1) - m }) as usize
            }
        }
    }
}

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
enum Axis {
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
fn gaussian_filter(f: &Field, sigma_y: f64, sigma_x: f64, truncate: f64, border: Border) -> Field {
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
fn clipped_zoom(f: &Field, z: f64) -> Field {
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
fn motion_blur_field(f: &Field, radius: usize, sigma: f64, angle: f64) -> Field {
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

/// Reads `img` as a field, maps every value with `f`, writes it back with `to_byte`.
fn map_values(img: &RgbImage, mut f: impl FnMut(f64) -> f64, to_byte: fn(f64) -> u8) -> RgbImage {
    let mut field = Field::from_rgb(img, 255.0);
    field.data.iter_mut().for_each(|v| *v = f(*v));
    field.to_rgb(to_byte)
}

// ------------------------------------------------------------------------------------------------
// Noise.

/// `x/255 + N(0, c)`.
fn gaussian_noise(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let c = [0.08, 0.12, 0.18, 0.26, 0.38][s];
    map_values(
        img,
        |v| v + c * rng.sample::<f64, _>(rand_distr::StandardNormal),
        unit_to_byte,
    )
}

/// `Poisson(x/255 · c) / c`.
fn shot_noise(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let c = [60.0, 25.0, 12.0, 5.0, 3.0][s];
    // One distribution per grey level (λ = 0 is a point mass at 0).
    let dists: Vec<Option<Poisson<f64>>> = (0..256)
        .map(|v| Poisson::new(v as f64 / 255.0 * c).ok())
        .collect();
    let mut out = img.clone();
    for v in out.iter_mut() {
        let k = dists[*v as usize].map_or(0.0, |d| d.sample(rng));
        *v = unit_to_byte(k / c);
    }
    out
}

/// skimage's salt and pepper: each channel value becomes 0 or 1 (even odds) with probability c.
fn impulse_noise(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let amount = [0.03, 0.06, 0.09, 0.17, 0.27][s];
    map_values(
        img,
        |v| {
            if rng.random_bool(amount) {
                if rng.random_bool(0.5) {
                    1.0
                } else {
                    0.0
                }
            } else {
                v
            }
        },
        unit_to_byte,
    )
}

// ------------------------------------------------------------------------------------------------
// Blur.

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
fn defocus_blur(img: &RgbImage, s: usize) -> RgbImage {
    let (radius, alias) = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][s];
    let (kernel, n) = disk_kernel(radius, alias);
    filter2d(&Field::from_rgb(img, 255.0), &kernel, n).to_rgb(unit_to_byte)
}

/// Gaussian blur, local pixel copies within `max_delta`, Gaussian blur again.
fn glass_blur(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
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
fn motion_blur(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
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
fn zoom_blur(img: &RgbImage, s: usize) -> RgbImage {
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

// ------------------------------------------------------------------------------------------------
// Weather.

/// A Gaussian snow field, zoomed, thresholded and motion-blurred (random angle in
/// [-135°, -45°)), added twice (as is and rotated 180°) to a brightened image, in the package's
/// float32 / float64 mix.
fn snow(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
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
        .map(|v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8 as f64 / 255.0)
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
fn frost(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
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
fn fog(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
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

// ------------------------------------------------------------------------------------------------
// Digital.

/// skimage's `rgb2hsv` of one pixel in [0, 1] (later channels win ties for the hue, as there).
fn rgb_to_hsv([r, g, b]: [f64; 3]) -> [f64; 3] {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    if delta == 0.0 {
        return [0.0, 0.0, v];
    }
    let h = if b == v {
        4.0 + (r - g) / delta
    } else if g == v {
        2.0 + (b - r) / delta
    } else {
        (g - b) / delta
    };
    [(h / 6.0).rem_euclid(1.0), delta / v, v]
}

/// skimage's `hsv2rgb` of one pixel.
fn hsv_to_rgb([h, s, v]: [f64; 3]) -> [f64; 3] {
    let hi = (h * 6.0).floor();
    let f = h * 6.0 - hi;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    match (hi as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// HSV value + c.
fn brightness(img: &RgbImage, s: usize) -> RgbImage {
    let c = [0.1, 0.2, 0.3, 0.4, 0.5][s];
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let [h, sat, v] = rgb_to_hsv(p.0.map(|v| v as f64 / 255.0));
        p.0 = hsv_to_rgb([h, sat, (v + c).clamp(0.0, 1.0)]).map(unit_to_byte);
    }
    out
}

/// `(x − mean)·c + mean` with per-channel means.
fn contrast(img: &RgbImage, s: usize) -> RgbImage {
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
fn elastic_transform(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
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
fn pixelate(img: &RgbImage, s: usize) -> RgbImage {
    let c = [0.6, 0.5, 0.4, 0.3, 0.25][s];
    let (w, h) = img.dimensions();
    let (sw, sh) = (
        ((w as f64 * c) as u32).max(1),
        ((h as f64 * c) as u32).max(1),
    );
    let small = pil_box_resample(&pil_box_resample(img, sw, Axis::X), sh, Axis::Y);
    pil_nearest(&small, w, h)
}

/// Fixed-point precision of PIL's 8-bit resampling coefficients.
const PIL_PRECISION_BITS: u32 = 22;

/// PIL's `precompute_coeffs` for the box filter, as 8-bit fixed point: for every output sample
/// its first input index and weights.
fn pil_box_coeffs(n_in: usize, n_out: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = n_in as f64 / n_out as f64;
    let filter_scale = scale.max(1.0);
    let support = 0.5 * filter_scale;
    (0..n_out)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let min = ((centre - support + 0.5) as i64).max(0) as usize;
            let max = ((centre + support + 0.5) as i64).min(n_in as i64) as usize;
            let w: Vec<f64> = (min..max.max(min))
                .map(|j| {
                    let t = (j as f64 - centre + 0.5) / filter_scale;
                    if t > -0.5 && t <= 0.5 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    (v * (1u64 << PIL_PRECISION_BITS) as f64 + 0.5) as i64
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

/// One pass of PIL's 8-bit box resampling along `axis` to `n_out` samples.
fn pil_box_resample(img: &RgbImage, n_out: u32, axis: Axis) -> RgbImage {
    let (w, h) = img.dimensions();
    let n_in = if axis == Axis::X { w } else { h };
    if n_in == n_out {
        return img.clone();
    }
    let coeffs = pil_box_coeffs(n_in as usize, n_out as usize);
    let (ow, oh) = if axis == Axis::X {
        (n_out, h)
    } else {
        (w, n_out)
    };
    RgbImage::from_fn(ow, oh, |x, y| {
        let (start, k) = &coeffs[if axis == Axis::X { x } else { y } as usize];
        let mut acc = [1i64 << (PIL_PRECISION_BITS - 1); 3];
        for (j, &kj) in k.iter().enumerate() {
            let src = (*start + j) as u32;
            let p = match axis {
                Axis::X => img.get_pixel(src, y),
                Axis::Y => img.get_pixel(x, src),
            };
            for (a, &v) in acc.iter_mut().zip(&p.0) {
                *a += v as i64 * kj;
            }
        }
        image::Rgb(acc.map(|a| (a >> PIL_PRECISION_BITS).clamp(0, 255) as u8))
    })
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

/// PIL's JPEG save and reload at quality 25, 18, 15, 10, 7.
fn jpeg_compression(img: &RgbImage, s: usize) -> RgbImage {
    jpeg_round_trip(img, [25, 18, 15, 10, 7][s])
}

/// JPEG's standard luminance quantisation table (ITU T.81 Annex K), row-major.
const LUMA_QUANT: [u32; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// JPEG's standard chrominance quantisation table (ITU T.81 Annex K), row-major.
const CHROMA_QUANT: [u32; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// libjpeg's `jpeg_set_quality` scaling of a base table (baseline: at most 255).
fn quant_table(base: &[u32; 64], quality: u32) -> [u32; 64] {
    let q = quality.clamp(1, 100);
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    base.map(|b| ((b * scale + 50) / 100).clamp(1, 255))
}

/// libjpeg's 16-bit fixed-point constant.
fn fix(x: f64) -> i64 {
    (x * 65536.0 + 0.5) as i64
}

/// A plane of `w`×`h` integer samples.
struct Plane {
    w: usize,
    h: usize,
    data: Vec<i64>,
}

impl Plane {
    /// The plane grown to `w`×`h` by repeating its last column and row.
    fn pad(&self, w: usize, h: usize) -> Plane {
        let data = (0..h)
            .flat_map(|y| {
                let row = y.min(self.h - 1) * self.w;
                (0..w).map(move |x| row + x.min(self.w - 1))
            })
            .map(|i| self.data[i])
            .collect();
        Plane { w, h, data }
    }

    /// The top-left `w`×`h` part.
    fn crop(&self, w: usize, h: usize) -> Plane {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| y * self.w + x))
            .map(|i| self.data[i])
            .collect();
        Plane { w, h, data }
    }
}

/// libjpeg's lossy path at `quality`, as PIL uses it (4:2:0): fixed-point RGB→YCbCr, 2×2 chroma
/// averaging with alternating bias, 8×8 DCT quantisation (a float DCT here), fancy up-sampling,
/// fixed-point YCbCr→RGB. Entropy coding is lossless and skipped.
fn jpeg_round_trip(img: &RgbImage, quality: u32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let [y, cb, cr] = rgb_to_ycc(img);
    let luma_q = quant_table(&LUMA_QUANT, quality);
    let chroma_q = quant_table(&CHROMA_QUANT, quality);
    let y = dct_round_trip(&y.pad(w.div_ceil(8) * 8, h.div_ceil(8) * 8), &luma_q).crop(w, h);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let chroma = |p: &Plane| {
        let down = downsample(&p.pad(w.div_ceil(16) * 16, h + h % 2));
        let padded = down.pad(down.w, ch.div_ceil(8) * 8);
        upsample(&dct_round_trip(&padded, &chroma_q).crop(cw, ch), w, h)
    };
    let (cb, cr) = (chroma(&cb), chroma(&cr));
    let half = 1i64 << 15;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (i, p) in out.pixels_mut().enumerate() {
        let (l, b, r) = (y.data[i], cb.data[i] - 128, cr.data[i] - 128);
        let red = l + ((fix(1.402) * r + half) >> 16);
        let green = l + ((-fix(0.34414) * b + half - fix(0.71414) * r) >> 16);
        let blue = l + ((fix(1.772) * b + half) >> 16);
        p.0 = [red, green, blue].map(|v| v.clamp(0, 255) as u8);
    }
    out
}

/// libjpeg's fixed-point `rgb_ycc_convert`.
fn rgb_to_ycc(img: &RgbImage) -> [Plane; 3] {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let half = 1i64 << 15;
    let offset = 128i64 << 16;
    let mut planes = [(); 3].map(|_| Vec::with_capacity(w * h));
    for p in img.pixels() {
        let [r, g, b] = p.0.map(|v| v as i64);
        planes[0].push((fix(0.299) * r + fix(0.587) * g + fix(0.114) * b + half) >> 16);
        planes[1]
            .push((-fix(0.16874) * r - fix(0.33126) * g + fix(0.5) * b + offset + half - 1) >> 16);
        planes[2]
            .push((fix(0.5) * r - fix(0.41869) * g - fix(0.08131) * b + offset + half - 1) >> 16);
    }
    planes.map(|data| Plane { w, h, data })
}

/// libjpeg's `h2v2_downsample`: 2×2 means with a bias alternating 1, 2 along each row.
fn downsample(p: &Plane) -> Plane {
    let (w, h) = (p.w / 2, p.h / 2);
    let data = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let at = |dx: usize, dy: usize| p.data[(2 * y + dy) * p.w + 2 * x + dx];
            (at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1) + 1 + (x % 2) as i64) >> 2
        })
        .collect();
    Plane { w, h, data }
}

/// libjpeg's `h2v2_fancy_upsample` (triangle filter, edges repeated) cropped to `w`×`h`.
fn upsample(p: &Plane, w: usize, h: usize) -> Plane {
    let at = |x: isize, y: isize| {
        let (x, y) = (x.clamp(0, p.w as isize - 1), y.clamp(0, p.h as isize - 1));
        p.data[y as usize * p.w + x as usize]
    };
    let data = (0..w * h)
        .map(|i| {
            let (ox, oy) = ((i % w) as isize, (i / w) as isize);
            let (x, y) = (ox / 2, oy / 2);
            let ny = if oy % 2 == 0 { y - 1 } else { y + 1 };
            let col = |cx: isize| 3 * at(cx, y) + at(cx, ny);
            if ox % 2 == 0 {
                (3 * col(x) + col(x - 1) + 8) >> 4
            } else {
                (3 * col(x) + col(x + 1) + 7) >> 4
            }
        })
        .collect();
    Plane { w, h, data }
}

/// Forward DCT, quantisation, dequantisation and inverse DCT of every 8×8 block, with
/// libjpeg's level shift and range limit.
fn dct_round_trip(p: &Plane, quant: &[u32; 64]) -> Plane {
    let basis: [[f64; 8]; 8] = std::array::from_fn(|u| {
        let cu = if u == 0 {
            std::f64::consts::FRAC_1_SQRT_2
        } else {
            1.0
        };
        std::array::from_fn(|x| {
            cu * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos() / 2.0
        })
    });
    let mut out = Plane {
        w: p.w,
        h: p.h,
        data: vec![0; p.data.len()],
    };
    for by in (0..p.h).step_by(8) {
        for bx in (0..p.w).step_by(8) {
            let block: [[f64; 8]; 8] = std::array::from_fn(|y| {
                std::array::from_fn(|x| (p.data[(by + y) * p.w + bx + x] - 128) as f64)
            });
            let coef = transform(&basis, &block, false);
            // libjpeg's DCT yields 8·F as an integer, then divides by 8·Q rounding half away
            // from zero; rounding 8·F first reproduces most of its ties.
            let quantised: [[f64; 8]; 8] = std::array::from_fn(|v| {
                std::array::from_fn(|u| {
                    let q = quant[v * 8 + u] as i64;
                    let x8 = (8.0 * coef[v][u] + 0.5).floor() as i64;
                    ((x8.abs() + 4 * q) / (8 * q) * x8.signum() * q) as f64
                })
            });
            let back = transform(&basis, &quantised, true);
            for (y, row) in back.iter().enumerate() {
                for (x, v) in row.iter().enumerate() {
                    out.data[(by + y) * p.w + bx + x] =
                        ((v + 0.5).floor() as i64 + 128).clamp(0, 255);
                }
            }
        }
    }
    out
}

/// The separable 2-D DCT of a block (`C·B·Cᵀ`), or its inverse (`Cᵀ·F·C`).
fn transform(c: &[[f64; 8]; 8], b: &[[f64; 8]; 8], inverse: bool) -> [[f64; 8]; 8] {
    let m = |i: usize, j: usize| if inverse { c[j][i] } else { c[i][j] };
    let rows: [[f64; 8]; 8] =
        std::array::from_fn(|i| std::array::from_fn(|x| (0..8).map(|k| m(i, k) * b[k][x]).sum()));
    std::array::from_fn(|i| std::array::from_fn(|j| (0..8).map(|k| rows[i][k] * m(j, k)).sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gradient with 4-pixel checker blocks: channel `c` of `(x, y)` is
    /// `(5x + 3y + 40c + 60·((x/4 + y/4) mod 2)) mod 256`.
    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                ((x * 5 + y * 3 + c as u32 * 40 + ((x / 4 + y / 4) % 2) * 60) % 256) as u8
            }))
        })
    }

    /// A small synthetic photograph: a gradient background with a disc, a bar and a soft blob.
    fn scene(w: u32, h: u32) -> RgbImage {
        let (fw, fh) = (w as f64, h as f64);
        RgbImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as f64, y as f64);
            let mut p = [40.0 + 120.0 * x / fw, 60.0 + 90.0 * y / fh, 110.0];
            if (x - 0.3 * fw).powi(2) + (y - 0.4 * fh).powi(2) < (0.2 * fh).powi(2) {
                p = [220.0, 180.0, 40.0];
            }
            if (0.6 * fw..0.75 * fw).contains(&x) && y > 0.2 * fh {
                p = [30.0, 50.0, 200.0];
            }
            let blob =
                (-((x - 0.7 * fw).powi(2) + (y - 0.8 * fh).powi(2)) / (0.02 * fw * fw)).exp();
            image::Rgb(p.map(|v| (v + 60.0 * blob).min(255.0) as u8))
        })
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| (x as i64 - y as i64).unsigned_abs())
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    /// `Σ vᵢ·(i mod 251 + 1)` over the row-major RGB bytes: a position-sensitive checksum.
    fn checksum(img: &RgbImage) -> u64 {
        img.as_raw()
            .iter()
            .enumerate()
            .map(|(i, &v)| v as u64 * (i as u64 % 251 + 1))
            .sum()
    }

    #[test]
    fn every_corruption_keeps_size_is_seeded_and_changes_the_image() {
        let img = scene(48, 40);
        for c in Corruption::ALL {
            for severity in 1..=5 {
                let out = corrupt(&img, c, severity, 11).unwrap();
                assert_eq!(out.dimensions(), img.dimensions(), "{c} {severity}");
                assert_eq!(
                    out,
                    corrupt(&img, c, severity, 11).unwrap(),
                    "{c} {severity}"
                );
                assert!(
                    mean_abs_diff(&out, &img) > 0.5,
                    "{c} {severity} left the image as is"
                );
            }
        }
    }

    #[test]
    fn random_corruptions_depend_on_the_seed() {
        let img = pattern(48, 40);
        let random = Corruption::ALL.iter().filter(|c| {
            !matches!(
                c,
                Corruption::DefocusBlur
                    | Corruption::ZoomBlur
                    | Corruption::Brightness
                    | Corruption::Contrast
                    | Corruption::Pixelate
                    | Corruption::JpegCompression
            )
        });
        for &c in random {
            let a = corrupt(&img, c, 3, 1).unwrap();
            assert_ne!(a, corrupt(&img, c, 3, 2).unwrap(), "{c}");
        }
    }

    #[test]
    fn monotone_corruptions_grow_with_severity() {
        // Glass blur is not monotone in the package itself (severity 4 blurs less than 3).
        let monotone = [
            Corruption::GaussianNoise,
            Corruption::ShotNoise,
            Corruption::ImpulseNoise,
            Corruption::DefocusBlur,
            Corruption::MotionBlur,
            Corruption::ZoomBlur,
            Corruption::Contrast,
            Corruption::Brightness,
            Corruption::Fog,
            Corruption::Pixelate,
            Corruption::JpegCompression,
        ];
        // Averaged over seeds, since one fog draw need not be monotone. Fog's severities 3 and 4
        // share the amount and differ only in the fractal's roughness: over 400 seeds on a
        // 64×48 scene the package moves by 40.33 → 40.56 grey levels and wesam by
        // 40.38 → 40.43, so that one step may dip within sampling noise.
        let img = scene(150, 110);
        let seeds = 0..32u64;
        for c in monotone {
            let d: Vec<f64> = (1..=5)
                .map(|s| {
                    let total: f64 = seeds
                        .clone()
                        .map(|seed| mean_abs_diff(&corrupt(&img, c, s, seed).unwrap(), &img))
                        .sum();
                    total / seeds.end as f64
                })
                .collect();
            for (s, p) in d.windows(2).enumerate() {
                let slack = if c == Corruption::Fog && s == 2 {
                    0.5
                } else {
                    0.0
                };
                assert!(
                    p[1] > p[0] - slack,
                    "{c} severity {} → {}: {d:?}",
                    s + 1,
                    s + 2
                );
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let img = pattern(40, 36);
        for severity in [0, 6, 255] {
            let err = corrupt(&img, Corruption::Fog, severity, 0).unwrap_err();
            assert!(err.to_string().contains("severity"), "{err}");
        }
        assert!(corrupt(&RgbImage::new(0, 5), Corruption::Snow, 1, 0).is_err());
    }

    #[test]
    fn tiny_images_do_not_panic() {
        for (w, h) in [(1, 1), (2, 3), (7, 1), (1, 9)] {
            let img = pattern(w, h);
            for c in Corruption::ALL {
                for severity in [1, 5] {
                    let out = corrupt(&img, c, severity, 3).unwrap();
                    assert_eq!(out.dimensions(), (w, h), "{c}");
                }
            }
        }
    }

    // Checksums of the package's outputs on `pattern(40, 36)`, produced with imagecorruptions
    // 1.1.2 (numpy 2.4, scipy 1.17, scikit-image 0.26, Pillow 13, OpenCV 5.0):
    // `corrupt(img, corruption_name=name, severity=s)` for s = 1..5, then `Σ vᵢ·(i mod 251 + 1)`
    // over the flattened uint8 output. These corruptions have no randomness.
    const PACKAGE_CHECKSUMS: [(Corruption, [u64; 5]); 5] = [
        (
            Corruption::DefocusBlur,
            [71633576, 71662461, 71755913, 72720428, 72598252],
        ),
        (
            Corruption::ZoomBlur,
            [72820225, 73142785, 73364948, 73753461, 74049891],
        ),
        (
            Corruption::Brightness,
            [79426978, 84200840, 87509813, 89908211, 91476541],
        ),
        (
            Corruption::Contrast,
            [71611253, 71592382, 71589551, 71559544, 71540148],
        ),
        (
            Corruption::Pixelate,
            [72443209, 72454771, 71869217, 72079547, 72441109],
        ),
    ];

    #[test]
    fn deterministic_corruptions_match_the_package() {
        let img = pattern(40, 36);
        for (c, sums) in PACKAGE_CHECKSUMS {
            for (s, want) in (1..=5).zip(sums) {
                assert_eq!(checksum(&corrupt(&img, c, s, 0).unwrap()), want, "{c} {s}");
            }
        }
    }

    #[test]
    fn jpeg_matches_pil_per_channel_means() {
        // Per-channel means of the package's `jpeg_compression` on `pattern(40, 36)` (PIL 13,
        // libjpeg-turbo), severities 1..5. The float DCT rounds a few coefficients the other way
        // than libjpeg's integer DCT (on this synthetic gradient, one chroma block at severity
        // 2 shifts the red mean by 0.38), so means agree to half a grey level.
        let want = [
            [138.39, 134.835, 127.621],
            [136.725, 135.057, 128.22],
            [136.821, 134.496, 126.756],
            [137.262, 135.617, 130.915],
            [138.182, 135.761, 127.96],
        ];
        let img = pattern(40, 36);
        for (s, want) in (1..=5).zip(want) {
            let out = corrupt(&img, Corruption::JpegCompression, s, 0).unwrap();
            let n = (out.width() * out.height()) as f64;
            for (c, want) in want.iter().enumerate() {
                let mean = out.pixels().map(|p| p.0[c] as f64).sum::<f64>() / n;
                assert!(
                    (mean - want).abs() < 0.5,
                    "severity {s} channel {c}: {mean}"
                );
            }
        }
    }

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

    #[test]
    fn noise_has_the_package_magnitudes() {
        let grey = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        let n = (64 * 64 * 3) as f64;
        let stats = |img: &RgbImage| {
            let mean = img.as_raw().iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = img
                .as_raw()
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var.sqrt())
        };
        // Severity 3: σ = 0.18 → 45.9 grey levels.
        let (_, std) = stats(&corrupt(&grey, Corruption::GaussianNoise, 3, 1).unwrap());
        assert!((std - 45.9).abs() < 2.0, "gaussian std {std}");
        // Severity 1: Poisson(128/255·60)/60 → std 255·sqrt(128/255/60) = 23.3.
        let (mean, std) = stats(&corrupt(&grey, Corruption::ShotNoise, 1, 1).unwrap());
        assert!(
            (mean - 127.5).abs() < 1.5 && (std - 23.3).abs() < 1.5,
            "shot {mean} {std}"
        );
        // Severity 5: 27% of the values become 0 or 255.
        let out = corrupt(&grey, Corruption::ImpulseNoise, 5, 1).unwrap();
        let hit = out.as_raw().iter().filter(|&&v| v != 128).count() as f64 / n;
        assert!((hit - 0.27).abs() < 0.02, "impulse fraction {hit}");
    }

    #[test]
    fn plasma_fractal_spans_zero_to_one() {
        let m = plasma_fractal(64, 2.0, &mut StdRng::seed_from_u64(4));
        assert_eq!(m.len(), 64 * 64);
        let (min, max) = m
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert_eq!((min, max), (0.0, 1.0));
    }

    #[test]
    fn names_parse_both_spellings() {
        for c in Corruption::ALL {
            let kebab = c.name().replace('_', "-");
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(
                serde_json::from_str::<Corruption>(&format!("\"{kebab}\"")).unwrap(),
                c
            );
        }
    }

    /// Writes every corruption at every severity of the image `$WESAM_CORRUPT_IN` to
    /// `$WESAM_CORRUPT_OUT/<name>_<severity>.png` (seed `$WESAM_CORRUPT_SEED`, default 0) with
    /// the time each took in `timings.tsv`, for `scripts/compare_corruptions.py`.
    #[test]
    #[ignore = "run by scripts/compare_corruptions.py"]
    fn export_for_comparison() -> Result<()> {
        use anyhow::Context;
        let input = std::env::var("WESAM_CORRUPT_IN").context("set WESAM_CORRUPT_IN")?;
        let out = std::path::PathBuf::from(
            std::env::var("WESAM_CORRUPT_OUT").context("set WESAM_CORRUPT_OUT")?,
        );
        let seed = std::env::var("WESAM_CORRUPT_SEED").map_or(Ok(0), |s| s.parse())?;
        std::fs::create_dir_all(&out)?;
        let img = crate::io::read_rgb(std::path::Path::new(&input))?;
        let mut timings = String::from("corruption\tseverity\tseconds\n");
        for c in Corruption::ALL {
            for severity in 1..=5 {
                let start = std::time::Instant::now();
                let corrupted = corrupt(&img, c, severity, seed)?;
                let secs = start.elapsed().as_secs_f64();
                timings += &format!("{c}\t{severity}\t{secs:.4}\n");
                corrupted.save(out.join(format!("{c}_{severity}.png")))?;
            }
        }
        std::fs::write(out.join("timings.tsv"), timings)?;
        Ok(())
    }
}
