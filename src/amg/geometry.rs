//! The geometry of automatic mask generation, as the official `segment_anything.utils.amg`
//! defines it: the point grids, the crop boxes of the crop layers, a mask's box, the crop-edge
//! filter and box non-maximum suppression.

/// An `[x0, y0, x1, y1]` box in pixels: inclusive corners for masks' boxes (the official
/// `batched_mask_to_box`), exclusive for crop boxes.
pub type XyxyBox = [f64; 4];

/// The official `build_point_grid(n)`: `n x n` points in [0, 1]², `1 / 2n` from the edges, x
/// varying fastest.
pub fn point_grid(n: usize) -> Vec<[f64; 2]> {
    let offset = 1.0 / (2 * n) as f64;
    let at = |i: usize| {
        if n == 1 {
            offset
        } else {
            offset + (1.0 - 2.0 * offset) * i as f64 / (n - 1) as f64
        }
    };
    (0..n)
        .flat_map(|y| (0..n).map(move |x| [at(x), at(y)]))
        .collect()
}

/// The grid of each crop layer: layer `i` has `int(points_per_side / downscale^i)` points per
/// side (`build_all_layer_point_grids`).
pub fn layer_point_grids(
    points_per_side: usize,
    layers: usize,
    downscale: usize,
) -> Vec<Vec<[f64; 2]>> {
    (0..=layers)
        .map(|i| point_grid(points_per_side / downscale.pow(i as u32)))
        .collect()
}

/// The crop boxes (exclusive `[x0, y0, x1, y1]`) and their layer of an `h x w` image
/// (`generate_crop_boxes`): the whole image, then for layer `i` a `2^i x 2^i` tiling whose
/// crops overlap by `int(ratio · min(h, w) · 2 / 2^i)` pixels, x the outer loop.
pub fn crop_boxes(
    (h, w): (usize, usize),
    layers: usize,
    overlap_ratio: f64,
) -> Vec<([usize; 4], usize)> {
    let mut boxes = vec![([0, 0, w, h], 0)];
    let short = h.min(w) as f64;
    for layer in 1..=layers {
        let per_side = 1usize << layer;
        let overlap = (overlap_ratio * short * (2.0 / per_side as f64)) as usize;
        let crop = |len: usize| (overlap * (per_side - 1) + len).div_ceil(per_side);
        let (crop_w, crop_h) = (crop(w), crop(h));
        let starts =
            |crop: usize| -> Vec<usize> { (0..per_side).map(|i| (crop - overlap) * i).collect() };
        for &x0 in &starts(crop_w) {
            for &y0 in &starts(crop_h) {
                boxes.push(([x0, y0, (x0 + crop_w).min(w), (y0 + crop_h).min(h)], layer));
            }
        }
    }
    boxes
}

/// The box of a row-major `h x w` mask with inclusive corners, `[0, 0, 0, 0]` when empty.
pub fn mask_box(mask: &[bool], h: usize, w: usize) -> XyxyBox {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let (y, x) = (i / w, i % w);
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    debug_assert_eq!(mask.len(), h * w);
    if x0 == usize::MAX {
        return [0.0; 4];
    }
    [x0 as f64, y0 as f64, x1 as f64, y1 as f64]
}

/// Whether a box (in the crop's frame) lies within 20 pixels of an edge of its crop that is
/// not an edge of the image (`is_box_near_crop_edge`): such a mask is likely cut by the crop.
pub fn near_crop_edge(b: XyxyBox, crop: [usize; 4], image: [usize; 4]) -> bool {
    const ATOL: f64 = 20.0;
    let shifted = [
        b[0] + crop[0] as f64,
        b[1] + crop[1] as f64,
        b[2] + crop[0] as f64,
        b[3] + crop[1] as f64,
    ];
    (0..4).any(|k| {
        let near_crop = (shifted[k] - crop[k] as f64).abs() <= ATOL;
        let near_image = (shifted[k] - image[k] as f64).abs() <= ATOL;
        near_crop && !near_image
    })
}

/// `(x1 − x0)(y1 − y0)`, as torchvision's `box_area`.
pub fn box_area(b: XyxyBox) -> f64 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// torchvision's `nms`: the boxes in decreasing score (a stable sort), each kept unless its IoU
/// with a box kept before it exceeds `threshold`. Returns the kept indexes in that order.
pub fn nms(boxes: &[XyxyBox], scores: &[f64], threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        let suppressed = kept.iter().any(|&k| iou(boxes[i], boxes[k]) > threshold);
        if !suppressed {
            kept.push(i);
        }
    }
    kept
}

/// Box IoU with torchvision's areas (no +1), computed in f32 as its CPU kernel does for f32
/// boxes.
fn iou(a: XyxyBox, b: XyxyBox) -> f64 {
    let f = |v: f64| v as f32;
    let (area_a, area_b) = (
        (f(a[2]) - f(a[0])) * (f(a[3]) - f(a[1])),
        (f(b[2]) - f(b[0])) * (f(b[3]) - f(b[1])),
    );
    let w = (f(a[2]).min(f(b[2])) - f(a[0]).max(f(b[0]))).max(0.0);
    let h = (f(a[3]).min(f(b[3])) - f(a[1]).max(f(b[1]))).max(0.0);
    let inter = w * h;
    f64::from(inter / (area_a + area_b - inter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_the_official_ones() {
        assert_eq!(
            point_grid(2),
            [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
        );
        assert_eq!(point_grid(1), [[0.5, 0.5]]);
        let layers = layer_point_grids(32, 2, 2);
        assert_eq!(
            layers.iter().map(Vec::len).collect::<Vec<_>>(),
            [1024, 256, 64]
        );
        let g = point_grid(32);
        assert!((g[1][0] - (1.0 / 64.0 + (1.0 - 2.0 / 64.0) / 31.0)).abs() < 1e-15);
    }

    /// The specification's test vector: 1500 x 1000, one layer.
    #[test]
    fn crop_boxes_are_the_official_ones() {
        let boxes = crop_boxes((1000, 1500), 1, 512.0 / 1500.0);
        let want = [
            ([0, 0, 1500, 1000], 0),
            ([0, 0, 921, 671], 1),
            ([0, 330, 921, 1000], 1),
            ([580, 0, 1500, 671], 1),
            ([580, 330, 1500, 1000], 1),
        ];
        assert_eq!(boxes, want);
    }

    #[test]
    fn boxes_edges_and_suppression() {
        let mut m = vec![false; 4 * 5];
        m[5 + 1] = true;
        m[3 * 5 + 3] = true;
        assert_eq!(mask_box(&m, 4, 5), [1.0, 1.0, 3.0, 3.0]);
        assert_eq!(mask_box(&[false; 6], 2, 3), [0.0; 4]);
        // A crop in the image's middle: its inner edges count, the image's do not.
        let image = [0, 0, 200, 100];
        assert!(near_crop_edge(
            [5.0, 40.0, 30.0, 60.0],
            [50, 0, 150, 100],
            image
        ));
        assert!(!near_crop_edge(
            [30.0, 40.0, 60.0, 60.0],
            [50, 0, 150, 100],
            image
        ));
        assert!(!near_crop_edge(
            [0.0, 0.0, 10.0, 10.0],
            [0, 0, 200, 100],
            image
        ));
        // Higher scores first; a box overlapping a kept one by more than the threshold goes.
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 0.0, 11.0, 10.0],
            [20.0, 20.0, 30.0, 30.0],
        ];
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.7], 0.7), [1, 2]);
        assert_eq!(nms(&boxes, &[0.5, 0.9, 0.7], 0.9), [1, 2, 0]);
        // Equal scores keep their order.
        assert_eq!(nms(&boxes, &[1.0, 1.0, 1.0], 0.95), [0, 1, 2]);
    }
}
