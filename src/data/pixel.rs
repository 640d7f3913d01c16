//! Per-pixel arithmetic shared by the augmentations and the corruptions, reproducing the
//! libraries the reference runs bit for bit: OpenCV's and scipy's border indexing, numpy's and
//! OpenCV's casts to bytes, OpenCV's fused multiply-adds and its uint8 HLS conversion, and
//! skimage's float HSV conversion; and PIL's 8-bit resampling (box and bilinear), which the
//! pixelate corruption and the model's preprocessing use.

use image::RgbImage;

/// How a filter reads outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Border {
    /// scipy `nearest`: `aaa|abcd|ddd`.
    Nearest,
    /// scipy `reflect` (half-sample symmetric): `cba|abcd|dcb`.
    Reflect,
    /// OpenCV `BORDER_REFLECT_101`: `dcb|abcd|cba`.
    Reflect101,
}

impl Border {
    /// The in-image index read for index `i` of a line of `n` samples.
    pub(super) fn index(self, i: isize, n: usize) -> usize {
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

/// `np.uint8(np.clip(v, 0, 1) * 255)`: the corruption package's final cast, which truncates.
pub(super) fn unit_to_byte(v: f64) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0) as u8
}

/// [`unit_to_byte`] in float32 arithmetic, for the corruptions numpy computes in float32.
pub(super) fn unit_to_byte_f32(v: f64) -> u8 {
    ((v as f32).clamp(0.0, 1.0) * 255.0) as u8
}

/// `np.uint8(np.clip(v, 0, 255))`.
pub(super) fn byte_clip(v: f64) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// OpenCV's `saturate_cast<uchar>` of a float: rounded half to even, then clipped to [0, 255].
/// (An `f32` argument converts to `f64` exactly, so it rounds as in `f32`.)
pub(super) fn saturate_u8(v: f64) -> u8 {
    v.round_ties_even().clamp(0.0, 255.0) as u8
}

/// `a·b + c` rounded once to `f32`, as OpenCV's SIMD fused multiply-adds compute it (the product
/// is exact in `f64`; rounding the sum twice differs from one rounding only in rare ties). Much
/// faster than `f32::mul_add` on targets without a hardware FMA.
pub(super) fn fma32(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

/// OpenCV's uint8 `COLOR_RGB2HLS`: hue in [0, 180), lightness and saturation in [0, 255].
pub(super) fn rgb_to_hls([r, g, b]: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = [r, g, b].map(|v| v as f32 * (1.0 / 255.0));
    let vmax = r.max(g).max(b);
    let vmin = r.min(g).min(b);
    let diff = vmax - vmin;
    let sum = vmax + vmin;
    let l = sum * 0.5;
    let (mut h, mut s) = (0.0f32, 0.0f32);
    if diff > f32::EPSILON {
        s = if l < 0.5 {
            diff / sum
        } else {
            diff / (2.0 - sum)
        };
        let k = 60.0 / diff;
        h = if vmax == r {
            (g - b) * k
        } else if vmax == g {
            fma32(b - r, k, 120.0)
        } else {
            fma32(r - g, k, 240.0)
        };
        if h < 0.0 {
            h += 360.0;
        }
    }
    [h * 0.5, l * 255.0, s * 255.0].map(|v| saturate_u8(v as f64))
}

/// OpenCV's uint8 `COLOR_HLS2RGB` (inverse of [`rgb_to_hls`], up to rounding).
pub(super) fn hls_to_rgb([h, l, s]: [u8; 3]) -> [u8; 3] {
    let l = l as f32 * (1.0 / 255.0);
    let s = s as f32 * (1.0 / 255.0);
    let rgb = if s == 0.0 {
        [l; 3]
    } else {
        let p2 = if l <= 0.5 {
            l * (1.0 + s)
        } else {
            l + s - l * s
        };
        let p1 = 2.0 * l - p2;
        let mut hue = h as f32 * (6.0 / 180.0);
        if hue >= 6.0 {
            hue -= 6.0;
        }
        let sector = hue.floor();
        let f = hue - sector;
        let tab = [p2, p1, p1 + (p2 - p1) * (1.0 - f), p1 + (p2 - p1) * f];
        // OpenCV's (b, g, r) table indices per sector.
        const SECTORS: [[usize; 3]; 6] = [
            [1, 3, 0],
            [1, 0, 2],
            [3, 0, 1],
            [0, 2, 1],
            [0, 1, 3],
            [2, 1, 0],
        ];
        let [bi, gi, ri] = SECTORS[(sector as usize).min(5)];
        [tab[ri], tab[gi], tab[bi]]
    };
    rgb.map(|v| saturate_u8((v * 255.0) as f64))
}

/// skimage's `rgb2hsv` of one pixel in [0, 1] (later channels win ties for the hue, as there).
pub(super) fn rgb_to_hsv([r, g, b]: [f64; 3]) -> [f64; 3] {
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
pub(super) fn hsv_to_rgb([h, s, v]: [f64; 3]) -> [f64; 3] {
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

/// A resampling filter of PIL's `Image.resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PilFilter {
    /// `Image.BOX`.
    Box,
    /// `Image.BILINEAR` (antialiased when reducing), what torchvision's `resize` of a PIL image
    /// and so SAM's `ResizeLongestSide.apply_image` use.
    Bilinear,
}

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Box => 0.5,
            PilFilter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            PilFilter::Box if x > -0.5 && x <= 0.5 => 1.0,
            PilFilter::Bilinear if x.abs() < 1.0 => 1.0 - x.abs(),
            _ => 0.0,
        }
    }
}

/// Fixed-point precision of PIL's 8-bit resampling coefficients.
const PIL_PRECISION_BITS: u32 = 22;

/// PIL's `precompute_coeffs` and `normalize_coeffs_8bpc`: for every output sample, its first
/// input index and its weights in 8-bit fixed point.
fn pil_coeffs(n_in: usize, n_out: usize, filter: PilFilter) -> Vec<(usize, Vec<i64>)> {
    let scale = n_in as f64 / n_out as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let ss = 1.0 / filter_scale;
    (0..n_out)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let min = ((centre - support + 0.5) as i64).max(0) as usize;
            let max = ((centre + support + 0.5) as i64).min(n_in as i64) as usize;
            let w: Vec<f64> = (min..max.max(min))
                .map(|j| filter.weight((j as f64 - centre + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&v| {
                    let v = if total != 0.0 { v / total } else { v };
                    let v = v * (1u64 << PIL_PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i64
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

/// One pass of PIL's 8-bit resampling, along x (`horizontal`) or y, to `n_out` samples.
fn pil_resample(img: &RgbImage, n_out: u32, horizontal: bool, filter: PilFilter) -> RgbImage {
    let (w, h) = img.dimensions();
    let n_in = if horizontal { w } else { h };
    if n_in == n_out {
        return img.clone();
    }
    let coeffs = pil_coeffs(n_in as usize, n_out as usize, filter);
    let (ow, oh) = if horizontal { (n_out, h) } else { (w, n_out) };
    RgbImage::from_fn(ow, oh, |x, y| {
        let (start, k) = &coeffs[if horizontal { x } else { y } as usize];
        let mut acc = [1i64 << (PIL_PRECISION_BITS - 1); 3];
        for (j, &kj) in k.iter().enumerate() {
            let src = (*start + j) as u32;
            let p = if horizontal {
                img.get_pixel(src, y)
            } else {
                img.get_pixel(x, src)
            };
            for (a, &v) in acc.iter_mut().zip(&p.0) {
                *a += v as i64 * kj;
            }
        }
        image::Rgb(acc.map(|a| (a >> PIL_PRECISION_BITS).clamp(0, 255) as u8))
    })
}

/// PIL's `Image.resize((w, h), filter)` of an RGB image, bit for bit: the horizontal pass,
/// rounded to bytes, then the vertical one.
pub(crate) fn pil_resize(img: &RgbImage, w: u32, h: u32, filter: PilFilter) -> RgbImage {
    pil_resample(&pil_resample(img, w, true, filter), h, false, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borders_index_as_documented() {
        let read = |b: Border| (-3..7).map(|i| b.index(i, 4)).collect::<Vec<_>>();
        // Indices -3..7 of `abcd` (0..4).
        assert_eq!(read(Border::Nearest), [0, 0, 0, 0, 1, 2, 3, 3, 3, 3]);
        assert_eq!(read(Border::Reflect), [2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
        assert_eq!(read(Border::Reflect101), [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert!((-5..5).all(|i| Border::Reflect101.index(i, 1) == 0));
    }

    #[test]
    fn hls_round_trip_is_close() {
        let mut worst = 0;
        for r in (0..256).step_by(5) {
            for g in (0..256).step_by(7) {
                for b in (0..256).step_by(11) {
                    let rgb = [r as u8, g as u8, b as u8];
                    let back = hls_to_rgb(rgb_to_hls(rgb));
                    for c in 0..3 {
                        worst = worst.max((back[c] as i32 - rgb[c] as i32).abs());
                    }
                }
            }
        }
        assert!((1..=8).contains(&worst), "worst round-trip error {worst}");
    }

    /// Checksums (`Σ vᵢ·(i mod 251 + 1)` over the flattened bytes) of Pillow 13's
    /// `Image.resize(size, Image.BILINEAR)` of a 40 × 36 pattern: up, down and one side only.
    #[test]
    fn bilinear_resize_matches_pil() {
        let img = RgbImage::from_fn(40, 36, |x, y| {
            image::Rgb([
                ((x * 37 + y * 11) % 256) as u8,
                ((x * y) % 256) as u8,
                ((x * 5 + y * 71) % 256) as u8,
            ])
        });
        let checksum = |img: &RgbImage| -> u64 {
            img.as_raw()
                .iter()
                .enumerate()
                .map(|(i, &v)| v as u64 * (i as u64 % 251 + 1))
                .sum()
        };
        for ((w, h), want) in [
            ((61, 50), 138_915_598),
            ((23, 17), 17_180_682),
            ((40, 13), 23_230_210),
        ] {
            let got = checksum(&pil_resize(&img, w, h, PilFilter::Bilinear));
            assert_eq!(got, want, "{w} x {h}");
        }
    }
}
