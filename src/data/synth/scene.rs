//! The scenes every synthetic domain shares: a background texture and 2–5 textured shapes that
//! may occlude one another, drawn from one random stream so that a (seed, index) pair gives the
//! same objects at the same places in every domain. Sizes are given at 128² and scaled.

use std::f32::consts::{PI, TAU};
use std::ops::RangeInclusive;

use image::{GrayImage, Luma, RgbImage};
use imageproc::drawing::draw_polygon_mut;
use imageproc::point::Point;
use rand::{rngs::StdRng, Rng};

/// The image side all sizes below are given at.
const REFERENCE_SIZE: f32 = 128.0;
/// Objects per image before occlusion drops any.
const OBJECTS: RangeInclusive<usize> = 2..=5;
/// Largest extent of an object, in pixels at 128².
const OBJECT_EXTENT: (f32, f32) = (16.0, 56.0);
/// Instances whose visible part is smaller than this (pixels at 128²) are not annotated.
const MIN_VISIBLE_AREA: f32 = 40.0;
/// Least RGB distance between each object colour and the background's colours, the background's
/// mean under the object and the colours of the objects it overlaps: what makes the source
/// domain's objects clearly visible.
const MIN_CONTRAST: f32 = 70.0;
/// Spread of a two-colour fill's second colour from its first (RGB distance).
const FILL_SPREAD: (f32, f32) = (25.0, 60.0);
/// Spread of the background's two colours (RGB distance).
const BACKGROUND_SPREAD: (f32, f32) = (40.0, 90.0);
/// Draws of a shape or colour before the best one so far is taken.
const TRIES: usize = 40;

/// An RGB colour, 0–255 per channel.
pub(super) type Colour = [f32; 3];

/// How a texture lays out its two colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Pattern {
    /// The first colour everywhere.
    Solid,
    /// First to second colour along direction `angle` over `length` pixels.
    Gradient { angle: f32, length: f32 },
    /// Hard stripes `period` pixels wide across direction `angle`, shifted by `phase` periods.
    Stripes { angle: f32, period: f32, phase: f32 },
    /// Squares of side `period / 2` rotated by `angle`.
    Checker { angle: f32, period: f32 },
    /// Two octaves of value noise on a lattice of `cell` pixels, hashed from `key`, sampled at
    /// `offset` pixels.
    Noise {
        cell: f32,
        key: u64,
        offset: (f32, f32),
    },
}

/// Two colours and the pattern that mixes them: the fill of backgrounds, objects and clutter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Texture {
    /// The first colour (the only one of a solid fill).
    pub a: Colour,
    /// The second colour.
    pub b: Colour,
    /// How the two are laid out.
    pub pattern: Pattern,
    /// The pixel the pattern is anchored at (an object's centre, the image's centre).
    pub origin: (f32, f32),
}

impl Texture {
    /// The colour at pixel `(x, y)`.
    pub fn sample(&self, x: f32, y: f32) -> Colour {
        let t = self.weight(x - self.origin.0, y - self.origin.1);
        std::array::from_fn(|c| self.a[c] + (self.b[c] - self.a[c]) * t)
    }

    /// How much of the second colour is at `(x, y)` from the origin, in [0, 1].
    fn weight(&self, x: f32, y: f32) -> f32 {
        match self.pattern {
            Pattern::Solid => 0.0,
            Pattern::Gradient { angle, length } => {
                (0.5 + along(angle, x, y) / length).clamp(0.0, 1.0)
            }
            Pattern::Stripes {
                angle,
                period,
                phase,
            } => half((along(angle, x, y) / period + phase).rem_euclid(1.0)),
            Pattern::Checker { angle, period } => {
                let u = (along(angle, x, y) / period).rem_euclid(1.0);
                let v = (along(angle + PI / 2.0, x, y) / period).rem_euclid(1.0);
                (half(u) - half(v)).abs()
            }
            Pattern::Noise { cell, key, offset } => {
                let (u, v) = ((x + offset.0) / cell, (y + offset.1) / cell);
                let n = 0.65 * value_noise(u, v, key) + 0.35 * value_noise(2.0 * u, 2.0 * v, !key);
                ((n - 0.5) * 2.0 + 0.5).clamp(0.0, 1.0)
            }
        }
    }

    /// Mean colour over a mask's pixels (the first colour for an empty mask).
    fn mean_under(&self, mask: &GrayImage) -> Colour {
        let (mut sum, mut n) = ([0.0f32; 3], 0.0f32);
        for (x, y, p) in mask.enumerate_pixels() {
            if p.0[0] > 0 {
                let c = self.sample(x as f32, y as f32);
                (0..3).for_each(|i| sum[i] += c[i]);
                n += 1.0;
            }
        }
        if n == 0.0 {
            self.a
        } else {
            sum.map(|s| s / n)
        }
    }
}

/// Position along direction `angle`.
fn along(angle: f32, x: f32, y: f32) -> f32 {
    x * angle.cos() + y * angle.sin()
}

/// 0 on the first half of a period, 1 on the second.
fn half(t: f32) -> f32 {
    if t < 0.5 {
        0.0
    } else {
        1.0
    }
}

/// Smoothly interpolated lattice noise in [0, 1].
fn value_noise(u: f32, v: f32, key: u64) -> f32 {
    let (x0, y0) = (u.floor(), v.floor());
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    let (fx, fy) = (smooth(u - x0), smooth(v - y0));
    let at = |dx: i64, dy: i64| lattice(x0 as i64 + dx, y0 as i64 + dy, key);
    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
    lerp(
        lerp(at(0, 0), at(1, 0), fx),
        lerp(at(0, 1), at(1, 1), fx),
        fy,
    )
}

/// A hash of a lattice point in [0, 1) (the splitmix64 finaliser).
fn lattice(x: i64, y: i64, key: u64) -> f32 {
    let mut z = key
        ^ (x as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (y as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}

/// A colour drawn uniformly from the RGB cube.
pub(super) fn random_colour(rng: &mut StdRng) -> Colour {
    std::array::from_fn(|_| rng.random_range(0.0..=255.0))
}

/// `c` moved `distance` in a random direction, clamped to the RGB cube.
pub(super) fn shifted(c: Colour, distance: f32, rng: &mut StdRng) -> Colour {
    let d: [f32; 3] = std::array::from_fn(|_| rng.random_range(-1.0f32..=1.0));
    let norm = d.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-3);
    std::array::from_fn(|i| (c[i] + d[i] / norm * distance).clamp(0.0, 255.0))
}

fn distance(a: Colour, b: Colour) -> f32 {
    (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f32>().sqrt()
}

/// Pixels per pixel at 128²: the factor every size is scaled by.
pub(super) fn scale(size: u32) -> f32 {
    size as f32 / REFERENCE_SIZE
}

/// The least visible area of an annotated instance at this image size.
pub(super) fn min_area(size: u32) -> usize {
    (MIN_VISIBLE_AREA * scale(size).powi(2)).ceil() as usize
}

/// A shape's outline: `extent` is its largest size in pixels.
pub(super) fn random_outline(rng: &mut StdRng, centre: (f32, f32), extent: f32) -> Vec<(f32, f32)> {
    let r = extent / 2.0;
    let turn = rng.random_range(0.0..TAU);
    let polar = |angle: f32, radius: f32| {
        (
            centre.0 + radius * (angle + turn).cos(),
            centre.1 + radius * (angle + turn).sin(),
        )
    };
    match rng.random_range(0..4) {
        0 => {
            // Ellipse.
            let minor = r * rng.random_range(0.45..=1.0);
            (0..40)
                .map(|i| {
                    let t = i as f32 / 40.0 * TAU;
                    let (x, y) = (r * t.cos(), minor * t.sin());
                    let (s, c) = turn.sin_cos();
                    (centre.0 + x * c - y * s, centre.1 + x * s + y * c)
                })
                .collect()
        }
        1 => {
            let aspect = rng.random_range(0.3..=1.0f32);
            rectangle(centre, r, aspect, turn)
        }
        2 => {
            // Triangle, no corner angle very sharp.
            let jitter = |rng: &mut StdRng| rng.random_range(-0.4..=0.4);
            [0.0, TAU / 3.0 + jitter(rng), 2.0 * TAU / 3.0 + jitter(rng)]
                .into_iter()
                .map(|a| polar(a, r * rng.random_range(0.8..=1.0)))
                .collect()
        }
        _ => {
            // A star (alternating radii) or a blob (smoothed random radii).
            let star = rng.random_bool(0.5);
            let n = if star {
                2 * rng.random_range(4..=7)
            } else {
                14
            };
            let inner = rng.random_range(0.35..=0.6);
            let raw: Vec<f32> = (0..n)
                .map(|i| match star {
                    true if i % 2 == 1 => r * inner,
                    true => r,
                    false => r * rng.random_range(0.45..=1.0),
                })
                .collect();
            (0..n)
                .map(|i| {
                    let radius = if star {
                        raw[i]
                    } else {
                        (raw[(i + n - 1) % n] + 2.0 * raw[i] + raw[(i + 1) % n]) / 4.0
                    };
                    polar(i as f32 / n as f32 * TAU, radius)
                })
                .collect()
        }
    }
}

/// A rectangle whose half diagonal is `half_diagonal`, short side / long side `aspect`.
pub(super) fn rectangle(
    centre: (f32, f32),
    half_diagonal: f32,
    aspect: f32,
    angle: f32,
) -> Vec<(f32, f32)> {
    let hx = half_diagonal / (1.0 + aspect * aspect).sqrt();
    let hy = hx * aspect;
    let (s, c) = angle.sin_cos();
    [(-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy)]
        .into_iter()
        .map(|(x, y)| (centre.0 + x * c - y * s, centre.1 + x * s + y * c))
        .collect()
}

/// The filled outline as a binary mask (255 inside) of a `size`² image.
pub(super) fn rasterise(size: u32, outline: &[(f32, f32)]) -> GrayImage {
    let mut points: Vec<Point<i32>> = Vec::with_capacity(outline.len());
    for &(x, y) in outline {
        let p = Point::new(x.round() as i32, y.round() as i32);
        if points.last() != Some(&p) {
            points.push(p);
        }
    }
    while points.len() > 1 && points.first() == points.last() {
        points.pop();
    }
    let mut mask = GrayImage::new(size, size);
    if points.len() >= 3 {
        draw_polygon_mut(&mut mask, &points, Luma([255]));
    }
    mask
}

/// A random shape of extent in `extent` (pixels), centred where it fits inside the image, with
/// an area of at least `min_area` pixels where the tries allow.
pub(super) fn random_shape(
    rng: &mut StdRng,
    size: u32,
    extent: (f32, f32),
    min_area: usize,
) -> GrayImage {
    let mut best = GrayImage::new(size, size);
    let mut best_area = 0;
    for _ in 0..TRIES {
        let e = rng.random_range(extent.0..=extent.1);
        let margin = (e / 2.0).min(size as f32 / 2.0);
        let centre = (
            rng.random_range(margin..=size as f32 - margin),
            rng.random_range(margin..=size as f32 - margin),
        );
        let mask = rasterise(size, &random_outline(rng, centre, e));
        let area = crate::data::mask::area(&mask);
        if area > best_area {
            (best, best_area) = (mask, area);
        }
        if best_area >= min_area {
            break;
        }
    }
    best
}

/// A random fill pattern anchored at `origin`, for an object of about `extent` pixels.
pub(super) fn random_fill(rng: &mut StdRng, origin: (f32, f32), extent: f32) -> Texture {
    let a = random_colour(rng);
    let b = shifted(a, rng.random_range(FILL_SPREAD.0..=FILL_SPREAD.1), rng);
    let angle = rng.random_range(0.0..PI);
    let period = (extent * rng.random_range(0.15..=0.4)).max(2.0);
    let pattern = match rng.random_range(0..5) {
        0 | 1 => Pattern::Solid,
        2 => Pattern::Gradient {
            angle,
            length: extent,
        },
        3 => Pattern::Stripes {
            angle,
            period,
            phase: rng.random_range(0.0..1.0),
        },
        _ if rng.random_bool(0.5) => Pattern::Checker { angle, period },
        _ => Pattern::Noise {
            cell: period,
            key: rng.random(),
            offset: (0.0, 0.0),
        },
    };
    Texture {
        a,
        b,
        pattern,
        origin,
    }
}

/// A random fill whose colours are at least [`MIN_CONTRAST`] from every colour of `avoid`, or
/// the farthest of [`TRIES`] draws.
pub(super) fn contrasting_fill(rng: &mut StdRng, mask: &GrayImage, avoid: &[Colour]) -> Texture {
    let (origin, extent) = centre_and_extent(mask);
    let gap = |fill: &Texture| {
        let colours = match fill.pattern {
            Pattern::Solid => vec![fill.a],
            _ => vec![fill.a, fill.b],
        };
        colours
            .iter()
            .flat_map(|&c| avoid.iter().map(move |&d| distance(c, d)))
            .fold(f32::INFINITY, f32::min)
    };
    let mut best = random_fill(rng, origin, extent);
    let mut best_gap = gap(&best);
    for _ in 1..TRIES {
        if best_gap >= MIN_CONTRAST {
            break;
        }
        let fill = random_fill(rng, origin, extent);
        let g = gap(&fill);
        if g > best_gap {
            (best, best_gap) = (fill, g);
        }
    }
    best
}

/// The centre and the larger side of a mask's bounding box.
fn centre_and_extent(mask: &GrayImage) -> ((f32, f32), f32) {
    match crate::data::mask::bounding_box(mask) {
        Some([x0, y0, x1, y1]) => (((x0 + x1) / 2.0, (y0 + y1) / 2.0), (x1 - x0).max(y1 - y0)),
        None => ((0.0, 0.0), 1.0),
    }
}

/// An annotated object: its whole shape (before occlusion) and its fill.
#[derive(Debug, Clone)]
pub(super) struct Object {
    /// The whole shape, 255 inside, before later objects cover parts of it.
    pub mask: GrayImage,
    /// What the shape is painted with in the source domain.
    pub fill: Texture,
}

/// A background and the objects on it, in drawing order.
#[derive(Debug, Clone)]
pub(super) struct Scene {
    /// Side of the square image.
    pub size: u32,
    /// The source domain's background.
    pub background: Texture,
    /// The annotated objects, each visible for at least the minimum area.
    pub objects: Vec<Object>,
}

impl Scene {
    /// Draws a scene from `rng`. Objects whose visible part is under the minimum area are left
    /// out; the last one drawn is never occluded and has the minimum area wherever the size
    /// allows, so a scene has at least one object.
    pub fn generate(rng: &mut StdRng, size: u32) -> Scene {
        let s = scale(size);
        let centre = (size as f32 / 2.0, size as f32 / 2.0);
        let a = random_colour(rng);
        let b = shifted(
            a,
            rng.random_range(BACKGROUND_SPREAD.0..=BACKGROUND_SPREAD.1),
            rng,
        );
        let angle = rng.random_range(0.0..PI);
        let pattern = match rng.random_range(0..3) {
            0 => Pattern::Gradient {
                angle,
                length: size as f32 * rng.random_range(0.8..=1.5),
            },
            1 => Pattern::Noise {
                cell: size as f32 * rng.random_range(0.08..=0.25),
                key: rng.random(),
                offset: (0.0, 0.0),
            },
            _ => Pattern::Stripes {
                angle,
                period: size as f32 * rng.random_range(0.06..=0.2),
                phase: rng.random_range(0.0..1.0),
            },
        };
        let background = Texture {
            a,
            b,
            pattern,
            origin: centre,
        };
        let min = min_area(size);
        let mut objects: Vec<Object> = Vec::new();
        for _ in 0..rng.random_range(OBJECTS) {
            let extent = (OBJECT_EXTENT.0 * s, OBJECT_EXTENT.1 * s);
            let mask = random_shape(rng, size, extent, 2 * min);
            let mut avoid = vec![a, b, background.mean_under(&mask)];
            for o in &objects {
                if overlaps(&o.mask, &mask) {
                    avoid.extend([o.fill.a, o.fill.b]);
                }
            }
            let fill = contrasting_fill(rng, &mask, &avoid);
            objects.push(Object { mask, fill });
        }
        let mut scene = Scene {
            size,
            background,
            objects,
        };
        let areas = visible_areas(&scene.labels(), scene.objects.len());
        scene.objects = std::mem::take(&mut scene.objects)
            .into_iter()
            .zip(areas)
            .filter_map(|(o, area)| (area >= min).then_some(o))
            .collect();
        scene
    }

    /// The instance ids: 0 background, `i + 1` where object `i` is visible.
    pub fn labels(&self) -> GrayImage {
        let mut labels = GrayImage::new(self.size, self.size);
        for (i, o) in self.objects.iter().enumerate() {
            stamp(&mut labels, &o.mask, i as u8 + 1);
        }
        labels
    }
}

/// Whether two masks share a pixel.
pub(super) fn overlaps(a: &GrayImage, b: &GrayImage) -> bool {
    a.pixels()
        .zip(b.pixels())
        .any(|(p, q)| p.0[0] > 0 && q.0[0] > 0)
}

/// Sets `labels` to `value` under `mask`.
pub(super) fn stamp(labels: &mut GrayImage, mask: &GrayImage, value: u8) {
    for (l, m) in labels.pixels_mut().zip(mask.pixels()) {
        if m.0[0] > 0 {
            l.0[0] = value;
        }
    }
}

/// Pixels of each id `1..=n` in a label map.
pub(super) fn visible_areas(labels: &GrayImage, n: usize) -> Vec<usize> {
    let mut areas = vec![0; n + 1];
    for p in labels.pixels() {
        if let Some(a) = areas.get_mut(p.0[0] as usize) {
            *a += 1;
        }
    }
    areas.split_off(1)
}

/// The background with each `(mask, fill)` layer painted over it in order.
pub(super) fn paint(
    size: u32,
    background: &Texture,
    layers: &[(&GrayImage, &Texture)],
) -> RgbImage {
    let mut colours: Vec<Colour> = (0..size * size)
        .map(|i| background.sample((i % size) as f32, (i / size) as f32))
        .collect();
    for (mask, fill) in layers {
        for (x, y, p) in mask.enumerate_pixels() {
            if p.0[0] > 0 {
                colours[(y * size + x) as usize] = fill.sample(x as f32, y as f32);
            }
        }
    }
    RgbImage::from_fn(size, size, |x, y| {
        image::Rgb(colours[(y * size + x) as usize].map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}
