//! How well a predicted mask agrees with its instance's weak label, in two forms: the trust
//! the `weak-label` anchor weighting gives the frozen anchor's pseudo-label, instance by
//! instance, and the agreement that `wesam eval` reports beside mIoU and the weak-label
//! selection keeps the best epoch by (a target domain with only weak labels has no other
//! score). They differ only for boxes; points are scored alike by both.
//!
//! **The trust.** The anchor loss (`docs/method.md` §2.4) pulls the adapted model towards the source
//! model's masks. Where the source model still sees the object that helps; where the shift
//! blinds it (an empty or scattered mask inside the prompt box) it pulls the student towards
//! seeing nothing. The weak label is the only target-domain evidence a run has, so it decides:
//! a box trusts a mask as far as the mask covers the box (their IoU), points as far as the
//! mask holds the positive points and leaves out the negative ones. An empty mask gets no
//! trust. Why the box IoU and not the IoU of the mask's bounding box: measured in
//! `docs/method.md` §8.1.
//!
//! **The agreement.** Selection compares one model with another on the same images, so what
//! matters is that the score moves the way the ground truth does. The box IoU rewards a mask
//! that grows into the box's corners, which a tight box says nothing about. A tight box tells
//! two things only: the object lies inside it, and it reaches each of its four sides. The
//! agreement scores exactly those: the fraction of the mask inside the box times the IoU of
//! the box with the bounding box of the mask's part inside it. How it moves against the
//! ground truth, split by split: `docs/method.md` §8.2.

use crate::data::prompts::FramePrompts;

/// Per instance, the agreement in [0, 1] of a binary mask with the instance's weak label, as
/// `wesam eval` reports it and the weak-label selection compares models by.
///
/// `masks` are `n` row-major `side x side` 0/1 masks covering the input frame of side
/// `frame_size` (the loss resolution may be lower than the frame's); `prompts` are in that
/// frame. With boxes (also the `coarse` prompts' boxes): the fraction of the mask inside the
/// box (pixels whose centre lies inside it) times the IoU of the box with the bounding box of
/// the mask's pixels inside it. With points: the fraction of positive points inside the mask
/// times the fraction of negative points outside it. Without a box or points (never made by
/// `make_prompts`), every instance gets 1.
pub fn weak_label_agreement(
    masks: &[f32],
    side: usize,
    frame_size: usize,
    prompts: &FramePrompts,
) -> Vec<f32> {
    per_instance(masks, side, frame_size, prompts, box_fit)
}

/// Per instance, the anchor weighting's trust in [0, 1] of a binary mask: as
/// [`weak_label_agreement`], but a box scores a mask by their IoU, which also sees how much of
/// the box the mask fills (the inputs are alike). Without a box or points every instance gets
/// 1, the reference's uniform weight.
pub fn anchor_trust(
    masks: &[f32],
    side: usize,
    frame_size: usize,
    prompts: &FramePrompts,
) -> Vec<f32> {
    per_instance(masks, side, frame_size, prompts, box_iou)
}

/// Scores each of the `n` masks against its instance's weak label: `box_score(mask, side, box)`
/// for boxes (scaled to the masks' side), the point score for points, 1 without either.
fn per_instance(
    masks: &[f32],
    side: usize,
    frame_size: usize,
    prompts: &FramePrompts,
    box_score: fn(&[f32], usize, [f32; 4]) -> f32,
) -> Vec<f32> {
    let n = masks.len() / (side * side).max(1);
    let scale = side as f32 / frame_size as f32;
    let mask = |k: usize| &masks[k * side * side..(k + 1) * side * side];
    if let Some(boxes) = &prompts.boxes {
        boxes
            .iter()
            .enumerate()
            .take(n)
            .map(|(k, b)| box_score(mask(k), side, b.map(|v| v * scale)))
            .collect()
    } else if let Some(points) = &prompts.points {
        points
            .iter()
            .enumerate()
            .take(n)
            .map(|(k, pts)| {
                let inside = |xy: [f32; 2]| {
                    let px = |v: f32| ((v * scale).floor().max(0.0) as usize).min(side - 1);
                    mask(k)[px(xy[1]) * side + px(xy[0])] > 0.5
                };
                let fraction = |label: f32, want_inside: bool| {
                    let of_label: Vec<_> = pts.iter().filter(|(_, l)| *l == label).collect();
                    if of_label.is_empty() {
                        return 1.0;
                    }
                    let hits = of_label
                        .iter()
                        .filter(|(xy, _)| inside(*xy) == want_inside)
                        .count();
                    hits as f32 / of_label.len() as f32
                };
                fraction(1.0, true) * fraction(0.0, false)
            })
            .collect()
    } else {
        vec![1.0; n]
    }
}

/// Whether the centre of pixel `i` of a `side`-wide grid lies inside the xyxy box.
fn centre_in_box(i: usize, side: usize, b: [f32; 4]) -> bool {
    let (x, y) = ((i % side) as f32 + 0.5, (i / side) as f32 + 0.5);
    x >= b[0] && x < b[2] && y >= b[1] && y < b[3]
}

/// How well a `side x side` 0/1 mask fits a tight xyxy box (pixel units): the fraction of the
/// mask inside the box times the IoU of the box's pixels with the bounding box of the mask's
/// pixels inside it; 0 for an empty mask or a mask wholly outside.
fn box_fit(mask: &[f32], side: usize, b: [f32; 4]) -> f32 {
    let (mut inside, mut total) = (0usize, 0usize);
    let (mut box_px, mut lo, mut hi) = (0usize, [usize::MAX; 2], [0usize; 2]);
    for (i, v) in mask.iter().enumerate() {
        let in_box = centre_in_box(i, side, b);
        box_px += usize::from(in_box);
        if *v <= 0.5 {
            continue;
        }
        total += 1;
        if in_box {
            inside += 1;
            let xy = [i % side, i / side];
            for d in 0..2 {
                lo[d] = lo[d].min(xy[d]);
                hi[d] = hi[d].max(xy[d] + 1);
            }
        }
    }
    if inside == 0 {
        return 0.0;
    }
    // The extent lies inside the box, so its IoU with the box is its share of the box's pixels.
    let extent = (hi[0] - lo[0]) * (hi[1] - lo[1]);
    inside as f32 / total as f32 * (extent as f32 / box_px as f32)
}

/// IoU of a `side x side` 0/1 mask with the pixels whose centre lies inside the xyxy box
/// (pixel units); 0 when both are empty.
fn box_iou(mask: &[f32], side: usize, b: [f32; 4]) -> f32 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (i, v) in mask.iter().enumerate() {
        let in_box = centre_in_box(i, side, b);
        let in_mask = *v > 0.5;
        inter += usize::from(in_box && in_mask);
        union += usize::from(in_box || in_mask);
    }
    if union > 0 {
        inter as f32 / union as f32
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `side x side` mask with the pixels of the xyxy rectangle set (exclusive ends).
    fn rect(side: usize, [x0, y0, x1, y1]: [usize; 4]) -> Vec<f32> {
        (0..side * side)
            .map(|i| {
                let (x, y) = (i % side, i / side);
                f32::from(x >= x0 && x < x1 && y >= y0 && y < y1)
            })
            .collect()
    }

    /// Seven masks at 8 x 8 over a 16-pixel frame, each with the prompt box (2, 2)-(6, 6) at
    /// that scale: the box; the box without its four corner pixels (a tight box does not say
    /// whether its corners belong to the object); its left half; its two opposite corner pixels
    /// (their bounding box is the prompt box); empty; the box and half as much again below it
    /// (a third of the mask outside); the box grown by one pixel on every side (16 of 36 pixels
    /// inside).
    fn box_cases() -> (Vec<f32>, FramePrompts) {
        let side = 8;
        let mut masks = rect(side, [2, 2, 6, 6]);
        let mut no_corners = rect(side, [2, 2, 6, 6]);
        for (x, y) in [(2, 2), (5, 2), (2, 5), (5, 5)] {
            no_corners[y * side + x] = 0.0;
        }
        masks.extend(no_corners);
        masks.extend(rect(side, [2, 2, 4, 6]));
        let corners: Vec<f32> = rect(side, [2, 2, 3, 3])
            .iter()
            .zip(rect(side, [5, 5, 6, 6]))
            .map(|(a, b)| a + b)
            .collect();
        masks.extend(corners);
        masks.extend(vec![0.0; side * side]);
        masks.extend(rect(side, [2, 2, 6, 8]));
        masks.extend(rect(side, [1, 1, 7, 7]));
        let prompts = FramePrompts {
            boxes: Some(vec![[4.0, 4.0, 12.0, 12.0]; 7]),
            ..Default::default()
        };
        (masks, prompts)
    }

    #[test]
    fn a_box_trusts_a_mask_by_how_much_of_the_box_it_covers() {
        let (masks, prompts) = box_cases();
        let t = anchor_trust(&masks, 8, 16, &prompts);
        let want = [1.0, 0.75, 0.5, 2.0 / 16.0, 0.0, 2.0 / 3.0, 16.0 / 36.0];
        assert_eq!(t, want);
    }

    #[test]
    fn a_box_agrees_with_a_mask_inside_it_that_reaches_its_four_sides() {
        // Unlike the trust, the agreement does not tell the box from the box without corners,
        // and gives the two opposite corners, which span the box, full agreement.
        let (masks, prompts) = box_cases();
        let a = weak_label_agreement(&masks, 8, 16, &prompts);
        assert_eq!(a, [1.0, 1.0, 0.5, 1.0, 0.0, 2.0 / 3.0, 16.0 / 36.0]);
    }

    #[test]
    fn points_trust_a_mask_that_holds_the_positives_and_leaves_out_the_negatives() {
        let side = 4;
        let mask = rect(side, [0, 0, 2, 2]);
        let inside = ([1.0, 1.0], 1.0);
        let outside = ([3.5, 3.5], 1.0);
        let negative_out = ([3.0, 0.0], 0.0);
        let negative_in = ([0.0, 1.0], 0.0);
        let prompts = FramePrompts {
            points: Some(vec![
                vec![inside, inside, negative_out],
                vec![inside, outside, negative_out, negative_in],
                vec![outside, negative_out],
            ]),
            ..Default::default()
        };
        let masks: Vec<f32> = mask.iter().cycle().take(3 * side * side).copied().collect();
        for a in [
            weak_label_agreement(&masks, side, 4, &prompts),
            anchor_trust(&masks, side, 4, &prompts),
        ] {
            assert_eq!(a, vec![1.0, 0.25, 0.0]);
        }
    }

    #[test]
    fn without_box_or_points_every_instance_keeps_the_uniform_weight() {
        let none = FramePrompts::default();
        assert_eq!(weak_label_agreement(&[0.0; 8], 2, 2, &none), vec![1.0, 1.0]);
        assert_eq!(anchor_trust(&[0.0; 8], 2, 2, &none), vec![1.0, 1.0]);
    }
}
