//! Weak labels into SAM prompts (`docs/method.md` §3): a box, points, or a coarse polygon used as a
//! box (`coarse`) or as a box plus a mask input (`coarse-mask`).
//!
//! Prompts are made in the model's input frame, as the reference does after its resize and
//! padding: boxes are mapped into the frame, points are sampled from the instance mask resized
//! into the frame. Sampling is seeded, so a run is reproducible.

use anyhow::Result;
use candle_core::{Device, Tensor};
use image::{GrayImage, Luma};
use imageproc::contours::{find_contours, BorderType};
use imageproc::geometry::{approximate_polygon_dp, arc_length};
use imageproc::point::Point;
use rand::{rngs::StdRng, Rng};
use serde::{Deserialize, Serialize};

use super::{mask, Instance};
use crate::model::transforms::Frame;
use crate::model::Prompts;
use crate::ops::resize::{resize_2d, Interpolation};

/// Which weak label becomes the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum PromptKind {
    /// The instance's box (the annotation's where the dataset has one).
    #[default]
    Box,
    /// Positive points inside the instance and negative points outside it.
    Point,
    /// The box around a Douglas–Peucker simplification of the instance's contour.
    Coarse,
    /// That simplified polygon rasterised, fed through SAM's mask input, with its box.
    CoarseMask,
    /// A box or points, drawn per image with even odds: for training a model that serves both
    /// (as SAM itself is trained with mixed prompts).
    Mixed,
    /// No prompt: the decoder's learned dense embedding alone gives one mask per image, scored
    /// and trained against the union of the image's instances (SAM-Adapter's use).
    None,
}

/// How prompts are drawn; defaults are the reference's (5 + 5 points, eps 5% of the perimeter
/// with a floor of 3 pixels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PromptConfig {
    pub positive_points: usize,
    pub negative_points: usize,
    /// Douglas–Peucker tolerance as a fraction of the contour's length.
    pub coarse_eps_ratio: f64,
    /// Lower bound of that tolerance, in pixels (PascalVOC uses 5 in the reference).
    pub coarse_eps_floor: f64,
    /// Negative points may fall in the padding of the input frame (the reference's behaviour);
    /// otherwise they are drawn from the image outside the instance.
    pub negatives_in_padding: bool,
    /// Logit magnitude of the rasterised polygon in `coarse-mask` (inside +, outside -).
    pub coarse_mask_logit: f64,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            positive_points: 5,
            negative_points: 5,
            coarse_eps_ratio: 0.05,
            coarse_eps_floor: 3.0,
            negatives_in_padding: false,
            coarse_mask_logit: 10.0,
        }
    }
}

/// One instance's points: (x, y) in the input frame and a label (1 positive, 0 negative).
pub type InstancePoints = Vec<([f32; 2], f32)>;

/// The prompts of one image's instances in the input frame, before they become tensors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FramePrompts {
    /// One xyxy box per instance.
    pub boxes: Option<Vec<[f32; 4]>>,
    /// Per instance: (x, y) points and their labels (1 positive, 0 negative).
    pub points: Option<Vec<InstancePoints>>,
    /// Per instance: the coarse mask in the input frame (`size x size`, 0/255).
    pub masks: Option<Vec<GrayImage>>,
}

/// An instance mask in the input frame: resized like the image (bilinear, rounded) and padded.
pub fn mask_to_frame(m: &GrayImage, frame: &Frame) -> GrayImage {
    let (rh, rw) = frame.resized;
    let resized = image::imageops::resize(
        m,
        rw as u32,
        rh as u32,
        image::imageops::FilterType::Triangle,
    );
    let (top, left) = frame.offset;
    let s = frame.size as u32;
    let mut out = GrayImage::new(s, s);
    for (x, y, p) in resized.enumerate_pixels() {
        if p.0[0] >= 128 {
            out.put_pixel(x + left as u32, y + top as u32, Luma([255]));
        }
    }
    out
}

/// The simplified polygon of an instance's contour (reference: first contour; here the longest
/// outer contour, which is the same for a single blob and the object itself otherwise).
pub fn coarse_polygon(m: &GrayImage, cfg: &PromptConfig) -> Option<Vec<Point<i32>>> {
    let contours = find_contours::<i32>(m);
    let outer = contours
        .iter()
        .filter(|c| c.border_type == BorderType::Outer)
        .max_by_key(|c| c.points.len())?;
    let eps = (cfg.coarse_eps_ratio * arc_length(&outer.points, true)).max(cfg.coarse_eps_floor);
    Some(approximate_polygon_dp(&outer.points, eps, true))
}

/// `[min x, min y, max x, max y]` of the polygon's vertices, or the mask's box if that is
/// degenerate (the reference's fallback).
pub fn coarse_box(instance: &Instance, cfg: &PromptConfig) -> [f32; 4] {
    let Some(poly) = coarse_polygon(&instance.mask, cfg) else {
        return instance.bbox;
    };
    let (xs, ys): (Vec<i32>, Vec<i32>) = poly.iter().map(|p| (p.x, p.y)).unzip();
    let (x0, x1) = (*xs.iter().min().unwrap(), *xs.iter().max().unwrap());
    let (y0, y1) = (*ys.iter().min().unwrap(), *ys.iter().max().unwrap());
    if x0 == x1 || y0 == y1 {
        mask::bounding_box(&instance.mask).unwrap_or(instance.bbox)
    } else {
        [x0 as f32, y0 as f32, x1 as f32, y1 as f32]
    }
}

/// The polygon rasterised at the image's size (the box's rectangle if it has under 3 vertices).
pub fn coarse_mask(instance: &Instance, cfg: &PromptConfig) -> GrayImage {
    let mut out = GrayImage::new(instance.mask.width(), instance.mask.height());
    let mut poly = coarse_polygon(&instance.mask, cfg).unwrap_or_default();
    poly.dedup();
    if poly.len() > 1 && poly.first() == poly.last() {
        poly.pop();
    }
    if poly.len() >= 3 {
        imageproc::drawing::draw_polygon_mut(&mut out, &poly, Luma([255]));
    } else {
        let b = coarse_box(instance, cfg);
        for y in b[1] as u32..(b[3] as u32).min(out.height()) {
            for x in b[0] as u32..(b[2] as u32).min(out.width()) {
                out.put_pixel(x, y, Luma([255]));
            }
        }
    }
    out
}

/// `n` points drawn uniformly with replacement from `pool`.
fn draw(pool: &[[f32; 2]], n: usize, rng: &mut StdRng) -> Vec<[f32; 2]> {
    (0..n)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect()
}

/// Positive and negative points of one instance, in the frame. With no pixel to draw from (an
/// instance covering everything), points get the label -1, which SAM treats as padding.
fn sample_points(
    instance: &Instance,
    frame: &Frame,
    cfg: &PromptConfig,
    rng: &mut StdRng,
) -> InstancePoints {
    let m = mask_to_frame(&instance.mask, frame);
    let (top, left) = (frame.offset.0 as u32, frame.offset.1 as u32);
    let (rh, rw) = (frame.resized.0 as u32, frame.resized.1 as u32);
    let in_image = |x: u32, y: u32| x >= left && x < left + rw && y >= top && y < top + rh;
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for (x, y, p) in m.enumerate_pixels() {
        let xy = [x as f32, y as f32];
        if p.0[0] > 0 {
            pos.push(xy);
        } else if cfg.negatives_in_padding || in_image(x, y) {
            neg.push(xy);
        }
    }
    let mut out = Vec::with_capacity(cfg.positive_points + cfg.negative_points);
    for (pool, n, label) in [
        (&pos, cfg.positive_points, 1.0),
        (&neg, cfg.negative_points, 0.0),
    ] {
        if pool.is_empty() {
            out.extend(std::iter::repeat_n(([0.0, 0.0], -1.0), n));
        } else {
            out.extend(draw(pool, n, rng).into_iter().map(|p| (p, label)));
        }
    }
    out
}

/// The prompts of every instance of an image, in the input frame.
pub fn make_prompts(
    instances: &[Instance],
    frame: &Frame,
    kind: PromptKind,
    cfg: &PromptConfig,
    rng: &mut StdRng,
) -> FramePrompts {
    match kind {
        PromptKind::Mixed => {
            let kind = if rng.random_bool(0.5) {
                PromptKind::Box
            } else {
                PromptKind::Point
            };
            make_prompts(instances, frame, kind, cfg, rng)
        }
        PromptKind::None => FramePrompts::default(),
        PromptKind::Box => FramePrompts {
            boxes: Some(instances.iter().map(|i| frame.map_box(i.bbox)).collect()),
            ..Default::default()
        },
        PromptKind::Point => FramePrompts {
            points: Some(
                instances
                    .iter()
                    .map(|i| sample_points(i, frame, cfg, rng))
                    .collect(),
            ),
            ..Default::default()
        },
        PromptKind::Coarse => FramePrompts {
            boxes: Some(
                instances
                    .iter()
                    .map(|i| frame.map_box(coarse_box(i, cfg)))
                    .collect(),
            ),
            ..Default::default()
        },
        PromptKind::CoarseMask => FramePrompts {
            boxes: Some(
                instances
                    .iter()
                    .map(|i| frame.map_box(coarse_box(i, cfg)))
                    .collect(),
            ),
            masks: Some(
                instances
                    .iter()
                    .map(|i| mask_to_frame(&coarse_mask(i, cfg), frame))
                    .collect(),
            ),
            points: None,
        },
    }
}

impl FramePrompts {
    /// The prompts as model tensors; coarse masks become `low x low` logits (± `logit`).
    pub fn to_model(&self, low: usize, logit: f64, dev: &Device) -> Result<Prompts> {
        let mut p = Prompts::default();
        if let Some(b) = &self.boxes {
            let flat: Vec<f32> = b.iter().flatten().copied().collect();
            p.boxes = Some(Tensor::from_vec(flat, (b.len(), 4), dev)?);
        }
        if let Some(pts) = &self.points {
            let (n, k) = (pts.len(), pts.first().map_or(0, Vec::len));
            let coords: Vec<f32> = pts.iter().flatten().flat_map(|(xy, _)| *xy).collect();
            let labels: Vec<f32> = pts.iter().flatten().map(|(_, l)| *l).collect();
            p.points = Some((
                Tensor::from_vec(coords, (n, k, 2), dev)?,
                Tensor::from_vec(labels, (n, k), dev)?,
            ));
        }
        if let Some(masks) = &self.masks {
            p.masks = Some(mask_logits(masks, low, logit, dev)?);
        }
        Ok(p)
    }
}

/// Binary masks in the input frame as SAM mask-input logits `[n, 1, low, low]`: resized
/// bilinearly, foreground `+logit`, background `-logit`.
pub fn mask_logits(masks: &[GrayImage], low: usize, logit: f64, dev: &Device) -> Result<Tensor> {
    let low_res = masks
        .iter()
        .map(|m| {
            let (w, h) = m.dimensions();
            let v: Vec<f32> = m
                .pixels()
                .map(|p| if p.0[0] > 0 { 1.0 } else { 0.0 })
                .collect();
            let t = Tensor::from_vec(v, (1, 1, h as usize, w as usize), dev)?;
            resize_2d(&t, low, low, Interpolation::Bilinear)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    let m = Tensor::cat(&low_res, 0)?;
    Ok(((m * (2.0 * logit))? - logit)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::transforms::Preprocessing;
    use rand::SeedableRng;

    fn disc(w: u32, h: u32, cx: f32, cy: f32, r: f32) -> Instance {
        let m = GrayImage::from_fn(w, h, |x, y| {
            let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
            Luma([if d <= r { 255 } else { 0 }])
        });
        let bbox = mask::bounding_box(&m).unwrap();
        Instance { mask: m, bbox }
    }

    #[test]
    fn points_fall_inside_and_outside_their_instance() {
        let inst = disc(60, 40, 20.0, 20.0, 8.0);
        let frame = Frame::new((40, 60), 120, Preprocessing::Reference);
        let fm = mask_to_frame(&inst.mask, &frame);
        let cfg = PromptConfig::default();
        let mut rng = StdRng::seed_from_u64(1);
        let p = make_prompts(
            std::slice::from_ref(&inst),
            &frame,
            PromptKind::Point,
            &cfg,
            &mut rng,
        );
        let pts = &p.points.unwrap()[0];
        assert_eq!(pts.len(), 10);
        let (top, left) = frame.offset;
        for (i, ([x, y], label)) in pts.iter().enumerate() {
            let inside = fm.get_pixel(*x as u32, *y as u32).0[0] > 0;
            assert_eq!(*label, if i < 5 { 1.0 } else { 0.0 });
            assert_eq!(inside, *label == 1.0, "point {i} at {x},{y}");
            // Clean default: negatives are in the image, not in the padding.
            assert!(
                *y as usize >= top && (*y as usize) < top + frame.resized.0 && *x as usize >= left
            );
        }
        // Seeded: the same seed gives the same points.
        let again = make_prompts(
            &[inst],
            &frame,
            PromptKind::Point,
            &cfg,
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(again.points.unwrap()[0], *pts);
    }

    #[test]
    fn coarse_box_lies_around_a_simplified_polygon_inside_the_tight_box() {
        let inst = disc(80, 80, 40.0, 40.0, 20.0);
        let cfg = PromptConfig::default();
        let b = coarse_box(&inst, &cfg);
        // Vertices are mask pixels: within the tight box, which is exclusive on the right.
        assert!(
            b[0] >= inst.bbox[0]
                && b[1] >= inst.bbox[1]
                && b[2] < inst.bbox[2]
                && b[3] < inst.bbox[3]
        );
        assert!(b[2] - b[0] > 20.0 && b[3] - b[1] > 20.0);
        let poly = coarse_polygon(&inst.mask, &cfg).unwrap();
        // eps = 5% of a ~126 px perimeter: a handful of vertices, not the whole contour.
        assert!(
            poly.len() >= 3 && poly.len() < 12,
            "{} vertices",
            poly.len()
        );
        let cm = coarse_mask(&inst, &cfg);
        let inter = cm
            .pixels()
            .zip(inst.mask.pixels())
            .filter(|(a, b)| a.0[0] > 0 && b.0[0] > 0)
            .count();
        assert!(inter as f32 / mask::area(&inst.mask) as f32 > 0.7);
    }

    #[test]
    fn tiny_instance_falls_back_to_its_box() {
        let mut m = GrayImage::new(10, 10);
        m.put_pixel(4, 4, Luma([255]));
        m.put_pixel(5, 4, Luma([255]));
        let inst = Instance {
            bbox: mask::bounding_box(&m).unwrap(),
            mask: m,
        };
        assert_eq!(
            coarse_box(&inst, &PromptConfig::default()),
            [4.0, 4.0, 6.0, 5.0]
        );
    }

    #[test]
    fn prompts_become_tensors_of_the_right_shape() {
        let insts = [disc(64, 64, 20.0, 20.0, 6.0), disc(64, 64, 40.0, 40.0, 9.0)];
        let frame = Frame::new((64, 64), 64, Preprocessing::Sam);
        let cfg = PromptConfig::default();
        let mut rng = StdRng::seed_from_u64(0);
        let p = make_prompts(&insts, &frame, PromptKind::CoarseMask, &cfg, &mut rng);
        let t = p.to_model(16, 10.0, &Device::Cpu).unwrap();
        assert_eq!(t.boxes.unwrap().dims(), &[2, 4]);
        let m = t.masks.unwrap();
        assert_eq!(m.dims(), &[2, 1, 16, 16]);
        let p = make_prompts(&insts, &frame, PromptKind::Point, &cfg, &mut rng);
        let (c, l) = p.to_model(16, 10.0, &Device::Cpu).unwrap().points.unwrap();
        assert_eq!(
            (c.dims(), l.dims()),
            (&[2usize, 10, 2][..], &[2usize, 10][..])
        );
    }

    #[test]
    fn mixed_prompts_are_boxes_or_points_for_all_instances_of_an_image() {
        let insts = [disc(64, 64, 20.0, 20.0, 6.0), disc(64, 64, 40.0, 40.0, 9.0)];
        let frame = Frame::new((64, 64), 64, Preprocessing::Sam);
        let cfg = PromptConfig::default();
        let mut rng = StdRng::seed_from_u64(3);
        let (mut boxes, mut points) = (0, 0);
        for _ in 0..200 {
            let p = make_prompts(&insts, &frame, PromptKind::Mixed, &cfg, &mut rng);
            match (&p.boxes, &p.points) {
                (Some(b), None) if b.len() == 2 => boxes += 1,
                (None, Some(pts)) if pts.len() == 2 => points += 1,
                other => panic!("not one kind for every instance: {other:?}"),
            }
        }
        assert!(
            (70..=130).contains(&boxes) && boxes + points == 200,
            "{boxes} boxes"
        );
    }
}
