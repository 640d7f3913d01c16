//! WeSAM's training views: the weak (geometric) view and the strong (photometric) view.
//!
//! The reference builds both with albumentations 1.3.1 at default parameters:
//! - weak: `Compose([Flip(), HorizontalFlip(), VerticalFlip()])`, each with p = 0.5, applied to
//!   the image, every instance mask and every box together ([`Flip`]);
//! - strong: `Compose([Posterize(), Equalize(), Sharpen(), Solarize(),
//!   RandomBrightnessContrast(), RandomShadow()])`, each with p = 0.5 independently and in this
//!   order, applied to the image of the weak view only ([`strong`]), so prompts and pseudo-labels
//!   of the weak view stay aligned with the student's input.
//!
//! Every operation reproduces albumentations' uint8 arithmetic (lookup tables, OpenCV rounding,
//! truncating casts); the tests hold outputs of albumentations 1.3.1 computed on small images,
//! and on skimage's 512×512 `astronaut` equalize, sharpen (α 0.37, lightness 0.81),
//! brightness/contrast and a two-polygon shadow gave byte-identical images. Known differences:
//! - Random streams: parameters are drawn from the caller's [`Rng`] (same distributions as
//!   Python's `random` module draws them), so a seed does not reproduce a Python run.
//! - Weak: the three flips compose to a uniformly random element of {identity, horizontal,
//!   vertical, both}, with horizontal and vertical independent; [`Flip::sample`] draws that
//!   distribution directly instead of simulating the three transforms.
//! - Sharpen: OpenCV's `filter2D` accumulates the nine products with fused multiply-adds in
//!   row-major order; here too, with the fused step emulated in `f64`, which can differ in rare
//!   double-rounding ties (±1; none on a 512×512 photograph).
//! - RandomShadow: the polygon is rasterised as OpenCV's `fillPoly` does (line iterator, line
//!   clipping, 16.16 fixed-point scan lines); on 5,000 random shadow polygons in 5–60 pixel
//!   images 0.03% of the filled pixels differ, where a vertex lies on the image's right or bottom
//!   border (x = W or y = H). The
//!   RGB→HLS conversion matches OpenCV's uint8 conversion on all but 3 of the 2^24 colours
//!   (±1 in hue).

use image::{GenericImageView, GrayImage, ImageBuffer, Luma, Pixel, RgbImage};
use rand::Rng;

use super::{Instance, Sample};

/// Probability of every albumentations transform of the reference pipelines.
const P: f64 = 0.5;

/// The weak view's geometric transform: an optional horizontal and an optional vertical flip.
///
/// A flip is its own inverse, so the same value also maps predictions made on the weak view
/// back to the original orientation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flip {
    /// Mirror left-right (x → W - 1 - x).
    pub horizontal: bool,
    /// Mirror top-bottom (y → H - 1 - y).
    pub vertical: bool,
}

impl Flip {
    /// Draws the weak view's flip: each direction independently with probability 1/2, which is
    /// the distribution the reference's three composed flips produce.
    pub fn sample(rng: &mut impl Rng) -> Self {
        Self {
            horizontal: rng.random_bool(0.5),
            vertical: rng.random_bool(0.5),
        }
    }

    /// The sample with its image, every mask and every box flipped together.
    pub fn apply(&self, sample: &Sample) -> Sample {
        let (w, h) = sample.image.dimensions();
        Sample {
            id: sample.id.clone(),
            image_path: sample.image_path.clone(),
            image: self.image(&sample.image),
            instances: sample
                .instances
                .iter()
                .map(|inst| Instance {
                    mask: self.image(&inst.mask),
                    bbox: self.bbox(inst.bbox, w, h),
                })
                .collect(),
        }
    }

    /// Flips any image (RGB, mask, logits...), e.g. to bring a prediction back to the original
    /// orientation.
    pub fn image<I>(&self, img: &I) -> ImageBuffer<I::Pixel, Vec<<I::Pixel as Pixel>::Subpixel>>
    where
        I: GenericImageView,
        I::Pixel: 'static,
    {
        let mut out = ImageBuffer::from_fn(img.width(), img.height(), |x, y| img.get_pixel(x, y));
        if self.horizontal {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        if self.vertical {
            image::imageops::flip_vertical_in_place(&mut out);
        }
        out
    }

    /// Flips an `[x0, y0, x1, y1]` box (exclusive right/bottom) of a `width`×`height` image:
    /// horizontally `[W - x1, y0, W - x0, y1]`, vertically `[x0, H - y1, x1, H - y0]`.
    pub fn bbox(&self, b: [f32; 4], width: u32, height: u32) -> [f32; 4] {
        let [mut x0, mut y0, mut x1, mut y1] = b;
        if self.horizontal {
            (x0, x1) = (width as f32 - x1, width as f32 - x0);
        }
        if self.vertical {
            (y0, y1) = (height as f32 - y1, height as f32 - y0);
        }
        [x0, y0, x1, y1]
    }
}

/// The two inputs of one self-training step.
#[derive(Debug, Clone)]
pub struct Views {
    /// The flip that made the weak view (to map predictions back).
    pub flip: Flip,
    /// The weak view: flipped image, masks and boxes (anchor and teacher input, prompts).
    pub weak: Sample,
    /// The strong view: the weak image with photometric changes (student input). Its masks and
    /// boxes are the weak view's.
    pub strong: RgbImage,
}

/// Draws the weak view of a sample, then the strong view on top of it.
pub fn views(sample: &Sample, rng: &mut impl Rng) -> Views {
    let flip = Flip::sample(rng);
    let weak = flip.apply(sample);
    let strong = strong(&weak.image, rng);
    Views { flip, weak, strong }
}

/// The strong view of an image: the six photometric operations of the reference, each applied
/// with probability 1/2 in the reference's order, with albumentations' parameter ranges.
pub fn strong(img: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let mut out = img.clone();
    if rng.random_bool(P) {
        out = posterize(&out, 4);
    }
    if rng.random_bool(P) {
        out = equalize(&out);
    }
    if rng.random_bool(P) {
        let alpha = rng.random_range(0.2..0.5);
        let lightness = rng.random_range(0.5..1.0);
        out = sharpen(&out, alpha, lightness);
    }
    if rng.random_bool(P) {
        out = solarize(&out, 128.0);
    }
    if rng.random_bool(P) {
        let alpha = 1.0 + rng.random_range(-0.2..0.2);
        let beta = rng.random_range(-0.2..0.2);
        out = brightness_contrast(&out, alpha, beta);
    }
    if rng.random_bool(P) {
        let polygons = shadow_polygons(out.width(), out.height(), rng);
        out = shadow(&out, &polygons);
    }
    out
}

/// Applies a 256-entry lookup table to every channel.
fn map_lut(img: &RgbImage, lut: &[u8; 256]) -> RgbImage {
    let mut out = img.clone();
    for v in out.iter_mut() {
        *v = lut[*v as usize];
    }
    out
}

/// `Posterize(num_bits)`: keeps the `bits` high bits of every channel (0 → black, ≥ 8 → copy).
pub fn posterize(img: &RgbImage, bits: u32) -> RgbImage {
    let keep = match bits {
        0 => 0u8,
        b if b >= 8 => 0xFF,
        b => !((1u8 << (8 - b)) - 1),
    };
    map_lut(img, &std::array::from_fn(|i| i as u8 & keep))
}

/// `Solarize(threshold)`: inverts every channel value at or above `threshold`.
pub fn solarize(img: &RgbImage, threshold: f64) -> RgbImage {
    map_lut(
        img,
        &std::array::from_fn(|i| {
            if (i as f64) < threshold {
                i as u8
            } else {
                255 - i as u8
            }
        }),
    )
}

/// `Equalize(mode='cv', by_channels=True)`: OpenCV's `equalizeHist` on each channel.
///
/// OpenCV maps the lowest present value to 0 and value `v` to
/// `round(255 · #{pixels in (lowest, v]} / #{pixels above lowest})`; a one-valued channel is
/// returned unchanged. (imageproc's `equalize_histogram` uses a different mapping.)
pub fn equalize(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for c in 0..3 {
        let mut hist = [0u32; 256];
        for p in img.pixels() {
            hist[p.0[c] as usize] += 1;
        }
        let lut = equalize_lut(&hist);
        for p in out.pixels_mut() {
            p.0[c] = lut[p.0[c] as usize];
        }
    }
    out
}

/// OpenCV's `equalizeHist` lookup table for a histogram (identity for an empty or one-valued
/// histogram, where OpenCV fills the image with that value).
fn equalize_lut(hist: &[u32; 256]) -> [u8; 256] {
    let total: u32 = hist.iter().sum();
    let Some(first) = hist.iter().position(|&n| n > 0) else {
        return std::array::from_fn(|i| i as u8);
    };
    if hist[first] == total {
        return std::array::from_fn(|i| i as u8);
    }
    let scale = 255.0f32 / (total - hist[first]) as f32;
    let mut lut = [0u8; 256];
    let mut sum = 0u32;
    for v in first + 1..256 {
        sum += hist[v];
        lut[v] = (sum as f32 * scale).round_ties_even().clamp(0.0, 255.0) as u8;
    }
    lut
}

/// `Sharpen(alpha, lightness)`: blends the identity kernel with the sharpening kernel
/// `[[-1,-1,-1],[-1,8+lightness,-1],[-1,-1,-1]]` by `alpha` and filters with it as OpenCV's
/// `filter2D` does on uint8 (reflect-101 border, rounding half to even, saturation).
pub fn sharpen(img: &RgbImage, alpha: f64, lightness: f64) -> RgbImage {
    // numpy's float32 arithmetic on the float64 parameters.
    let (keep, a) = ((1.0 - alpha) as f32, alpha as f32);
    let centre = keep + a * (8.0 + lightness) as f32;
    let kernel = [[-a, -a, -a], [-a, centre, -a], [-a, -a, -a]];
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let mut acc = [0.0f32; 3];
        for (ky, row) in kernel.iter().enumerate() {
            let sy = reflect101(y as i64 + ky as i64 - 1, h);
            for (kx, &k) in row.iter().enumerate() {
                let sx = reflect101(x as i64 + kx as i64 - 1, w);
                let p = img.get_pixel(sx, sy).0;
                for c in 0..3 {
                    acc[c] = fma32(k, p[c] as f32, acc[c]);
                }
            }
        }
        image::Rgb(acc.map(|a| a.round_ties_even().clamp(0.0, 255.0) as u8))
    })
}

/// `a·b + c` rounded once to `f32`, as OpenCV's SIMD fused multiply-adds compute it (the product
/// is exact in `f64`; rounding the sum twice differs from one rounding only in rare ties). Much
/// faster than `f32::mul_add` on targets without a hardware FMA.
fn fma32(a: f32, b: f32, c: f32) -> f32 {
    (a as f64 * b as f64 + c as f64) as f32
}

/// OpenCV's `BORDER_REFLECT_101` index (`gfedcb|abcdefgh|gfedcba`), for any offset.
fn reflect101(i: i64, n: u32) -> u32 {
    let n = n as i64;
    if n == 1 {
        return 0;
    }
    let period = 2 * (n - 1);
    let m = i.rem_euclid(period);
    (if m < n { m } else { period - m }) as u32
}

/// `RandomBrightnessContrast` with contrast factor `alpha` and brightness offset `beta`
/// (`brightness_by_max=True`): `v → trunc(clip(v·alpha + beta·255, 0, 255))`, in `f32` as
/// albumentations' lookup table computes it.
pub fn brightness_contrast(img: &RgbImage, alpha: f64, beta: f64) -> RgbImage {
    let (alpha, offset) = (alpha as f32, (beta * 255.0) as f32);
    map_lut(
        img,
        &std::array::from_fn(|i| (i as f32 * alpha + offset).clamp(0.0, 255.0) as u8),
    )
}

/// The polygons of one `RandomShadow` draw with the reference's defaults: 1 or 2 polygons of 5
/// vertices each, with x in `[0, W]` and y in `[H/2, H]` (bounds included).
pub fn shadow_polygons(width: u32, height: u32, rng: &mut impl Rng) -> Vec<Vec<(i32, i32)>> {
    let (w, h) = (width as i32, height as i32);
    let (y_min, y_max) = ((0.5 * height as f64) as i32, h);
    let count = rng.random_range(1..=2);
    (0..count)
        .map(|_| {
            (0..5)
                .map(|_| (rng.random_range(0..=w), rng.random_range(y_min..=y_max)))
                .collect()
        })
        .collect()
}

/// `RandomShadow`'s drawing step (`add_shadow`): halves the HLS lightness inside the polygons.
///
/// As in albumentations, the whole image goes through OpenCV's uint8 RGB→HLS→RGB conversion,
/// which is lossy, so pixels outside the shadow may change by a grey level or two.
pub fn shadow(img: &RgbImage, polygons: &[Vec<(i32, i32)>]) -> RgbImage {
    let mut mask = GrayImage::new(img.width(), img.height());
    for poly in polygons {
        fill_polygon(&mut mask, poly);
    }
    let mut out = img.clone();
    for (p, m) in out.pixels_mut().zip(mask.pixels()) {
        let [h, mut l, s] = rgb_to_hls(p.0);
        if m.0[0] == 255 {
            l /= 2;
        }
        p.0 = hls_to_rgb([h, l, s]);
    }
    out
}

/// Fixed-point precision of OpenCV's polygon scan lines (16.16).
const XY_SHIFT: i64 = 16;

/// Fills a polygon with 255 as OpenCV's `fillPoly` does: the 8-connected outline of every edge,
/// then the even-odd interior by 16.16 fixed-point scan lines (an edge covers rows
/// `[y_top, y_bottom)`; edges leaving the image use their clipped end points for the slope).
fn fill_polygon(mask: &mut GrayImage, poly: &[(i32, i32)]) {
    let n = poly.len();
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let inside = |p: (i64, i64)| (0..w).contains(&p.0) && (0..h).contains(&p.1);
    // (y_top, y_bottom, fixed-point x at y_top, fixed-point x step per row)
    let mut edges = Vec::with_capacity(n);
    for i in 0..n {
        let p0 = (
            poly[(i + n - 1) % n].0 as i64,
            poly[(i + n - 1) % n].1 as i64,
        );
        let p1 = (poly[i].0 as i64, poly[i].1 as i64);
        draw_line(mask, p0, p1);
        if p0.1 == p1.1 {
            continue;
        }
        let (mut c0, mut c1) = (p0, p1);
        if !inside(p0) || !inside(p1) {
            let (_, a, b) = clip_line(w, h, p0, p1);
            if a.1 != b.1 {
                (c0, c1) = (a, b);
            }
        }
        let dx = ((c1.0 - c0.0) << XY_SHIFT) / (c1.1 - c0.1);
        let (top, bottom, c) = if p0.1 < p1.1 {
            (p0, p1, c0)
        } else {
            (p1, p0, c1)
        };
        edges.push((top.1, bottom.1, (c.0 << XY_SHIFT) + (top.1 - c.1) * dx, dx));
    }
    let mut xs = Vec::new();
    for y in 0..h {
        xs.clear();
        xs.extend(
            edges
                .iter()
                .filter(|e| e.0 <= y && y < e.1)
                .map(|e| e.2 + (y - e.0) * e.3),
        );
        xs.sort_unstable();
        for pair in xs.chunks_exact(2) {
            let x1 = ((pair[0] + (1 << XY_SHIFT) - 1) >> XY_SHIFT).max(0);
            let x2 = (pair[1] >> XY_SHIFT).min(w - 1);
            for x in x1..=x2 {
                mask.put_pixel(x as u32, y as u32, Luma([255]));
            }
        }
    }
}

/// OpenCV's `clipLine`: the part of a segment inside a `w`×`h` image, end points moved onto
/// the border with truncating integer arithmetic; `false` when nothing is inside.
fn clip_line(w: i64, h: i64, p1: (i64, i64), p2: (i64, i64)) -> (bool, (i64, i64), (i64, i64)) {
    let (right, bottom) = (w - 1, h - 1);
    let ((mut x1, mut y1), (mut x2, mut y2)) = (p1, p2);
    let code = |x: i64, y: i64| {
        (x < 0) as u8 | ((x > right) as u8) << 1 | ((y < 0) as u8) << 2 | ((y > bottom) as u8) << 3
    };
    let (mut c1, mut c2) = (code(x1, y1), code(x2, y2));
    let along =
        |a: i64, from: i64, d_to: i64, d_over: i64| (a - from) as f64 * d_to as f64 / d_over as f64;
    if c1 & c2 == 0 && c1 | c2 != 0 {
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            x1 += along(a, y1, x2 - x1, y2 - y1) as i64;
            y1 = a;
            c1 = code(x1, 0) & 3;
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            x2 += along(a, y2, x2 - x1, y2 - y1) as i64;
            y2 = a;
            c2 = code(x2, 0) & 3;
        }
        if c1 & c2 == 0 && c1 | c2 != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                y1 += along(a, x1, y2 - y1, x2 - x1) as i64;
                x1 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                y2 += along(a, x2, y2 - y1, x2 - x1) as i64;
                x2 = a;
                c2 = 0;
            }
        }
    }
    (c1 | c2 == 0, (x1, y1), (x2, y2))
}

/// OpenCV's 8-connected `LineIterator` (drawn left to right, clipped to the image first).
fn draw_line(mask: &mut GrayImage, p1: (i64, i64), p2: (i64, i64)) {
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let (visible, mut a, mut b) = clip_line(w, h, p1, p2);
    if !visible {
        return;
    }
    if b.0 < a.0 {
        (a, b) = (b, a);
    }
    let (dx, dy) = (b.0 - a.0, (b.1 - a.1).abs());
    let y_step = if b.1 < a.1 { -1 } else { 1 };
    let steep = dy > dx;
    let (major, minor) = if steep { (dy, dx) } else { (dx, dy) };
    let mut err = major - 2 * minor;
    let (mut x, mut y) = a;
    for _ in 0..=major {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            mask.put_pixel(x as u32, y as u32, Luma([255]));
        }
        if err < 0 {
            err += 2 * major;
            if steep {
                x += 1;
            } else {
                y += y_step;
            }
        }
        err -= 2 * minor;
        if steep {
            y += y_step;
        } else {
            x += 1;
        }
    }
}

/// OpenCV's uint8 `COLOR_RGB2HLS`: hue in [0, 180), lightness and saturation in [0, 255].
fn rgb_to_hls([r, g, b]: [u8; 3]) -> [u8; 3] {
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
    [h * 0.5, l * 255.0, s * 255.0].map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8)
}

/// OpenCV's uint8 `COLOR_HLS2RGB` (inverse of [`rgb_to_hls`], up to rounding).
fn hls_to_rgb([h, l, s]: [u8; 3]) -> [u8; 3] {
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
    rgb.map(|v| (v * 255.0).round_ties_even().clamp(0.0, 255.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mask::bounding_box;
    use rand::{rngs::StdRng, SeedableRng};

    /// The 7×5 test image of the albumentations references: channel `c` of pixel `(x, y)` is
    /// `(37x + 91y + 53c + 13xy) mod 256`.
    fn textured() -> RgbImage {
        RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                ((x * 37 + y * 91 + c as u32 * 53 + x * y * 13) % 256) as u8
            }))
        })
    }

    /// A smooth 7×5 image (sharpening stays mostly unsaturated): `40 + 9x + 7y + 20c + (xy mod 5)`.
    fn smooth() -> RgbImage {
        RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                (40 + x * 9 + y * 7 + c as u32 * 20 + (x * y) % 5) as u8
            }))
        })
    }

    // Reference outputs, produced with albumentations 1.3.1 (opencv-python 5.0, numpy 2.4) by
    // calling `albumentations.augmentations.functional` on `textured()` / `smooth()` built in
    // numpy with the same formula: `posterize(img, 4)`, `equalize(img, mode='cv',
    // by_channels=True)`, `solarize(img, 128)`, `brightness_contrast_adjust(img, 1.1, -0.15,
    // True)`, `convolve(smooth, M)` with `Sharpen`'s matrix for (alpha, lightness) = (0.3, 0.7)
    // and (0.45, 0.55), and `add_shadow(img, [[(0,3),(6,2),(5,5),(1,4),(3,1)]])`. Arrays are
    // row-major RGB.
    const POSTERIZE: [u8; 105] = [
        0, 48, 96, 32, 80, 128, 64, 112, 176, 96, 160, 208, 144, 192, 240, 176, 224, 32, 208, 16,
        64, 80, 144, 192, 128, 192, 240, 176, 240, 32, 240, 32, 80, 32, 80, 128, 80, 128, 176, 128,
        176, 240, 176, 224, 32, 240, 32, 80, 48, 96, 144, 112, 160, 208, 176, 224, 16, 240, 32, 80,
        48, 96, 144, 16, 64, 112, 80, 144, 192, 160, 208, 16, 240, 32, 80, 64, 112, 160, 128, 192,
        240, 208, 0, 64, 96, 160, 208, 192, 240, 32, 16, 80, 128, 112, 160, 224, 208, 0, 48, 32,
        80, 144, 128, 176, 224,
    ];
    const EQUALIZE: [u8; 105] = [
        0, 52, 98, 30, 82, 128, 68, 120, 165, 105, 158, 202, 158, 210, 255, 188, 240, 22, 225, 15,
        60, 82, 135, 180, 150, 202, 248, 195, 248, 30, 240, 30, 75, 22, 75, 120, 75, 128, 172, 135,
        188, 232, 180, 232, 15, 255, 45, 90, 52, 105, 150, 112, 165, 210, 172, 225, 8, 240, 30, 75,
        45, 98, 142, 8, 60, 105, 90, 142, 188, 165, 218, 0, 255, 45, 90, 60, 112, 158, 150, 202,
        248, 218, 8, 52, 98, 150, 195, 202, 255, 38, 15, 68, 112, 120, 172, 218, 210, 0, 45, 38,
        90, 135, 128, 180, 225,
    ];
    const SHARPEN: [u8; 105] = [
        0, 0, 0, 0, 0, 97, 0, 59, 255, 21, 222, 255, 184, 255, 255, 255, 255, 0, 255, 0, 0, 0, 195,
        255, 205, 255, 255, 255, 255, 0, 255, 0, 0, 0, 0, 128, 0, 126, 255, 59, 255, 255, 255, 255,
        0, 255, 0, 10, 0, 19, 221, 28, 230, 255, 239, 255, 0, 255, 0, 0, 0, 52, 100, 0, 0, 129, 8,
        133, 255, 231, 255, 0, 255, 0, 10, 0, 107, 232, 128, 255, 255, 255, 0, 0, 117, 166, 255,
        255, 255, 0, 0, 0, 181, 35, 255, 255, 255, 0, 0, 0, 59, 107, 106, 255, 255,
    ];
    const SOLARIZE: [u8; 105] = [
        0, 53, 106, 37, 90, 112, 74, 127, 75, 111, 91, 38, 107, 54, 1, 70, 17, 35, 33, 19, 72, 91,
        111, 58, 114, 61, 8, 64, 11, 41, 14, 38, 91, 35, 88, 114, 85, 117, 64, 120, 67, 14, 73, 20,
        32, 10, 42, 95, 52, 105, 97, 115, 87, 34, 77, 24, 28, 14, 38, 91, 48, 101, 101, 17, 70,
        123, 93, 109, 56, 86, 33, 19, 10, 42, 95, 65, 118, 84, 114, 61, 8, 38, 14, 67, 108, 94, 41,
        58, 5, 47, 30, 83, 119, 119, 83, 30, 47, 5, 58, 41, 94, 108, 125, 72, 19,
    ];
    const BC: [u8; 105] = [
        0, 20, 78, 2, 60, 119, 43, 101, 159, 83, 142, 200, 124, 182, 241, 165, 223, 0, 205, 0, 40,
        61, 120, 178, 116, 175, 233, 171, 230, 6, 226, 3, 61, 0, 58, 116, 55, 113, 171, 110, 168,
        226, 161, 220, 0, 231, 7, 66, 18, 77, 135, 88, 146, 204, 157, 215, 0, 226, 3, 61, 14, 72,
        131, 0, 38, 97, 64, 122, 180, 147, 205, 0, 231, 7, 66, 33, 91, 149, 116, 175, 233, 200, 0,
        35, 80, 138, 197, 178, 236, 13, 0, 53, 111, 92, 150, 209, 190, 0, 25, 6, 65, 123, 104, 163,
        221,
    ];
    const SHADOW: [u8; 105] = [
        0, 53, 106, 37, 90, 143, 74, 127, 180, 111, 164, 217, 148, 201, 254, 184, 238, 36, 223, 19,
        73, 91, 144, 197, 141, 194, 247, 190, 244, 42, 131, 9, 41, 35, 88, 141, 85, 138, 191, 135,
        188, 241, 181, 235, 33, 138, 6, 41, 26, 52, 78, 115, 168, 221, 90, 118, 12, 131, 9, 41, 24,
        50, 76, 9, 35, 61, 38, 73, 108, 84, 111, 9, 138, 6, 41, 32, 59, 86, 13, 97, 181, 218, 14,
        68, 108, 161, 214, 107, 145, 3, 15, 41, 67, 31, 86, 141, 104, 2, 29, 20, 47, 74, 130, 183,
        236,
    ];
    const SHARPEN_SMOOTH: [u8; 105] = [
        6, 25, 43, 30, 48, 67, 37, 55, 73, 43, 61, 79, 52, 71, 89, 62, 80, 98, 89, 107, 125, 25,
        43, 61, 52, 70, 88, 62, 81, 99, 73, 91, 109, 87, 105, 123, 81, 99, 117, 111, 129, 147, 29,
        48, 66, 61, 79, 97, 74, 92, 110, 70, 88, 107, 88, 106, 124, 86, 104, 122, 120, 138, 156,
        34, 52, 70, 69, 88, 106, 68, 86, 105, 88, 106, 125, 92, 110, 128, 92, 110, 128, 129, 147,
        165, 52, 70, 89, 93, 111, 129, 94, 112, 131, 100, 118, 137, 106, 125, 143, 111, 129, 147,
        151, 169, 188,
    ];
    const SHARPEN_SMOOTH2: [u8; 105] = [
        0, 3, 19, 17, 33, 49, 22, 38, 54, 26, 42, 58, 35, 51, 67, 44, 60, 76, 79, 95, 111, 10, 26,
        42, 45, 61, 77, 56, 72, 88, 66, 82, 98, 81, 97, 113, 69, 85, 101, 108, 124, 140, 13, 29,
        45, 54, 70, 86, 67, 83, 99, 59, 75, 91, 79, 95, 111, 72, 88, 104, 117, 133, 149, 16, 32,
        48, 63, 79, 95, 57, 73, 89, 80, 96, 112, 81, 97, 113, 78, 94, 110, 127, 142, 158, 40, 56,
        72, 93, 109, 125, 91, 107, 123, 95, 111, 127, 100, 116, 132, 102, 118, 134, 155, 171, 187,
    ];

    fn assert_same(got: &RgbImage, want: &[u8], what: &str) {
        let diffs: Vec<(usize, u8, u8)> = got
            .as_raw()
            .iter()
            .zip(want)
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .map(|(i, (g, w))| (i, *g, *w))
            .collect();
        assert_eq!(got.as_raw().len(), want.len(), "{what}: size");
        assert!(diffs.is_empty(), "{what}: (index, got, want) {diffs:?}");
    }

    /// A 13×9 sample with an L-shaped and a one-pixel instance and a gradient image.
    fn sample() -> Sample {
        let image = RgbImage::from_fn(13, 9, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let l_shape = GrayImage::from_fn(13, 9, |x, y| {
            Luma([
                if (x == 2 && (1..6).contains(&y)) || (y == 5 && (2..8).contains(&x)) {
                    255
                } else {
                    0
                },
            ])
        });
        let dot = GrayImage::from_fn(13, 9, |x, y| {
            Luma([if (x, y) == (12, 0) { 255 } else { 0 }])
        });
        let instances = [l_shape, dot]
            .into_iter()
            .map(|mask| Instance {
                bbox: bounding_box(&mask).unwrap(),
                mask,
            })
            .collect();
        Sample {
            id: "s".into(),
            image_path: "s.png".into(),
            image,
            instances,
        }
    }

    fn all_flips() -> [Flip; 4] {
        [(false, false), (true, false), (false, true), (true, true)].map(|(h, v)| Flip {
            horizontal: h,
            vertical: v,
        })
    }

    #[test]
    fn flips_keep_boxes_and_masks_aligned() {
        let s = sample();
        for flip in all_flips() {
            let f = flip.apply(&s);
            for (orig, inst) in s.instances.iter().zip(&f.instances) {
                assert_eq!(bounding_box(&inst.mask), Some(inst.bbox), "{flip:?}");
                assert_eq!(
                    crate::data::mask::area(&inst.mask),
                    crate::data::mask::area(&orig.mask)
                );
            }
            let (x, y) = (3, 1);
            let (sx, sy) = (
                if flip.horizontal { 12 - x } else { x },
                if flip.vertical { 8 - y } else { y },
            );
            assert_eq!(
                f.image.get_pixel(x, y),
                s.image.get_pixel(sx, sy),
                "{flip:?}"
            );
        }
        let h = Flip {
            horizontal: true,
            vertical: false,
        };
        assert_eq!(h.bbox([2.0, 1.0, 8.0, 6.0], 13, 9), [5.0, 1.0, 11.0, 6.0]);
        let v = Flip {
            horizontal: false,
            vertical: true,
        };
        assert_eq!(v.bbox([2.0, 1.0, 8.0, 6.0], 13, 9), [2.0, 3.0, 8.0, 8.0]);
    }

    #[test]
    fn flips_are_involutions() {
        let s = sample();
        for flip in all_flips() {
            let back = flip.apply(&flip.apply(&s));
            assert_eq!(back.image, s.image, "{flip:?}");
            for (a, b) in back.instances.iter().zip(&s.instances) {
                assert_eq!(a.mask, b.mask, "{flip:?}");
                assert_eq!(a.bbox, b.bbox, "{flip:?}");
            }
        }
    }

    #[test]
    fn flip_draws_all_four_uniformly() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            let f = Flip::sample(&mut rng);
            counts[f.horizontal as usize + 2 * f.vertical as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (900..1100).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn strong_view_keeps_weak_annotations_and_is_seeded() {
        let mut s = sample();
        s.image = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
        });
        for inst in &mut s.instances {
            inst.mask = image::imageops::resize(&inst.mask, 40, 30, image::imageops::Nearest);
            inst.bbox = bounding_box(&inst.mask).unwrap();
        }
        let draw = |seed| views(&s, &mut StdRng::seed_from_u64(seed));
        let mut distinct = Vec::new();
        for seed in 0..8 {
            let v = draw(seed);
            let weak = v.flip.apply(&s);
            assert_eq!(v.weak.image, weak.image);
            for (a, b) in v.weak.instances.iter().zip(&weak.instances) {
                assert_eq!(a.mask, b.mask);
                assert_eq!(a.bbox, b.bbox);
            }
            assert_eq!(v.strong.dimensions(), v.weak.image.dimensions());
            assert_eq!(draw(seed).strong, v.strong, "seed {seed} not reproducible");
            if !distinct.contains(&v.strong) {
                distinct.push(v.strong);
            }
        }
        assert!(
            distinct.len() >= 4,
            "only {} distinct strong views",
            distinct.len()
        );
    }

    #[test]
    fn posterize_keeps_high_bits() {
        let img = RgbImage::from_pixel(1, 1, image::Rgb([0b1011_0111, 15, 255]));
        assert_eq!(posterize(&img, 4).get_pixel(0, 0).0, [0b1011_0000, 0, 240]);
        assert_eq!(posterize(&img, 0).get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(posterize(&img, 8), img);
        assert_same(&posterize(&textured(), 4), &POSTERIZE, "posterize");
    }

    #[test]
    fn solarize_inverts_from_threshold() {
        let img = RgbImage::from_pixel(1, 1, image::Rgb([127, 128, 200]));
        assert_eq!(solarize(&img, 128.0).get_pixel(0, 0).0, [127, 127, 55]);
        assert_same(&solarize(&textured(), 128.0), &SOLARIZE, "solarize");
    }

    #[test]
    fn brightness_contrast_truncates_like_the_lut() {
        // 100·1.1 − 0.15·255 = 71.75 → 71; 250·1.1 − 38.25 = 236.75 → 236; 10 → 0 (clipped).
        let img = RgbImage::from_pixel(1, 1, image::Rgb([100, 250, 10]));
        let out = brightness_contrast(&img, 1.1, -0.15);
        assert_eq!(out.get_pixel(0, 0).0, [71, 236, 0]);
        assert_same(
            &brightness_contrast(&textured(), 1.1, -0.15),
            &BC,
            "brightness_contrast",
        );
    }

    #[test]
    fn equalize_matches_opencv() {
        // Values 10, 20, 20, 30: 10 is the lowest → 0; scale 255/3 = 85; 20 → 170; 30 → 255.
        let img = RgbImage::from_fn(4, 1, |x, _| {
            let v = [10, 20, 20, 30][x as usize];
            image::Rgb([v, v, 77])
        });
        let out = equalize(&img);
        let got: Vec<[u8; 3]> = out.pixels().map(|p| p.0).collect();
        assert_eq!(
            got,
            [[0, 0, 77], [170, 170, 77], [170, 170, 77], [255, 255, 77]]
        );
        assert_same(&equalize(&textured()), &EQUALIZE, "equalize");
    }

    #[test]
    fn sharpen_matches_filter2d() {
        // A flat image only sees the kernel's sum, 1 + alpha·(lightness − 1) = 0.91: 100 → 91.
        let flat = RgbImage::from_pixel(4, 3, image::Rgb([100, 100, 100]));
        assert!(sharpen(&flat, 0.3, 0.7).pixels().all(|p| p.0 == [91; 3]));
        assert_same(
            &sharpen(&smooth(), 0.3, 0.7),
            &SHARPEN_SMOOTH,
            "sharpen 0.3/0.7",
        );
        assert_same(
            &sharpen(&smooth(), 0.45, 0.55),
            &SHARPEN_SMOOTH2,
            "sharpen 0.45/0.55",
        );
        assert_same(
            &sharpen(&textured(), 0.3, 0.7),
            &SHARPEN,
            "sharpen textured",
        );
    }

    #[test]
    fn shadow_matches_add_shadow() {
        let poly = vec![vec![(0, 3), (6, 2), (5, 5), (1, 4), (3, 1)]];
        let mut mask = GrayImage::new(7, 5);
        fill_polygon(&mut mask, &poly[0]);
        // cv2.fillPoly of the same (self-intersecting) polygon.
        let want = [".......", "...#...", ".##.###", "######.", ".#####."];
        for (y, row) in want.iter().enumerate() {
            for (x, ch) in row.chars().enumerate() {
                let inside = mask.get_pixel(x as u32, y as u32).0[0] == 255;
                assert_eq!(inside, ch == '#', "pixel ({x}, {y})");
            }
        }
        assert_same(&shadow(&textured(), &poly), &SHADOW, "shadow");
        // A grey pixel has lightness = value, halved inside the shadow.
        let grey = RgbImage::from_pixel(3, 3, image::Rgb([201, 201, 201]));
        let dark = shadow(&grey, &[vec![(0, 0), (2, 0), (2, 2), (0, 2)]]);
        assert!(dark.pixels().all(|p| p.0 == [100; 3]));
    }

    #[test]
    fn shadow_polygons_stay_in_the_lower_half() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let polys = shadow_polygons(20, 11, &mut rng);
            assert!((1..=2).contains(&polys.len()));
            for p in &polys {
                assert_eq!(p.len(), 5);
                assert!(p
                    .iter()
                    .all(|&(x, y)| (0..=20).contains(&x) && (5..=11).contains(&y)));
            }
        }
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
}
