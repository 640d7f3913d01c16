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
//!
//! This file holds the views; the strong view's operations are in `colour` (posterize,
//! equalize, sharpen, solarize, brightness/contrast) and `shadow` (`RandomShadow`), on the
//! OpenCV-compatible pixel arithmetic of `crate::data::pixel`.

mod colour;
mod shadow;

use image::{GenericImageView, ImageBuffer, Pixel, RgbImage};
use rand::Rng;

pub use colour::{brightness_contrast, equalize, posterize, sharpen, solarize};
pub use shadow::{shadow, shadow_polygons};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mask::bounding_box;
    use image::{GrayImage, Luma};
    use rand::{rngs::StdRng, SeedableRng};

    /// The 7×5 test image of the albumentations references: channel `c` of pixel `(x, y)` is
    /// `(37x + 91y + 53c + 13xy) mod 256`.
    pub(super) fn textured() -> RgbImage {
        RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                ((x * 37 + y * 91 + c as u32 * 53 + x * y * 13) % 256) as u8
            }))
        })
    }

    /// Asserts that an image's row-major RGB bytes are `want`, listing the differing ones.
    pub(super) fn assert_same(got: &RgbImage, want: &[u8], what: &str) {
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
}
