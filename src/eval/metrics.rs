//! Segmentation metrics of one predicted instance against its ground truth (`docs/method.md` §7):
//! IoU, Dice and boundary IoU, and their averaging: within each image first, then over images.

use image::{GrayImage, Luma};
use imageproc::distance_transform::Norm;
use imageproc::morphology::erode;

/// The scores of one instance, as fractions in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceScore {
    pub iou: f64,
    pub dice: f64,
    pub biou: f64,
}

/// `tp / (tp + fp + fn)`, and 1 when both masks are empty (smp's `zero_division=1`).
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// Pixel counts of two binary masks (non-zero = foreground): (tp, fp, fn).
fn confusion(pred: &GrayImage, gt: &GrayImage) -> (usize, usize, usize) {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (p, g) in pred.pixels().zip(gt.pixels()) {
        match (p.0[0] > 0, g.0[0] > 0) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            _ => {}
        }
    }
    (tp, fp, fn_)
}

/// Boundary band width of Boundary IoU (Cheng et al., CVPR 2021): 2% of the image diagonal.
pub fn boundary_width(w: u32, h: u32) -> u8 {
    let d = 0.02 * ((w as f64).powi(2) + (h as f64).powi(2)).sqrt();
    d.round().clamp(1.0, 255.0) as u8
}

/// The inner band of width `d` of a mask: the mask minus its erosion, where the image border
/// counts as background (as the reference implementation pads before eroding).
pub fn boundary_band(m: &GrayImage, d: u8) -> GrayImage {
    let (w, h) = m.dimensions();
    let mut padded = GrayImage::new(w + 2, h + 2);
    image::imageops::replace(&mut padded, m, 1, 1);
    let eroded = erode(&padded, Norm::LInf, d);
    GrayImage::from_fn(w, h, |x, y| {
        let inside = m.get_pixel(x, y).0[0] > 0 && eroded.get_pixel(x + 1, y + 1).0[0] == 0;
        Luma([if inside { 255 } else { 0 }])
    })
}

/// IoU, Dice and boundary IoU of a predicted mask against the ground truth of the same size.
pub fn score(pred: &GrayImage, gt: &GrayImage) -> InstanceScore {
    let (tp, fp, fn_) = confusion(pred, gt);
    let d = boundary_width(gt.width(), gt.height());
    let (btp, bfp, bfn) = confusion(&boundary_band(pred, d), &boundary_band(gt, d));
    InstanceScore {
        iou: ratio(tp, tp + fp + fn_),
        dice: ratio(2 * tp, 2 * tp + fp + fn_),
        biou: ratio(btp, btp + bfp + bfn),
    }
}

/// Running means: each image's mean over its instances, averaged over images.
#[derive(Debug, Clone, Default)]
pub struct MeanScores {
    sum: [f64; 3],
    pub images: usize,
    pub instances: usize,
}

impl MeanScores {
    /// Adds one image's instance scores (an image without instances is not counted).
    pub fn add_image(&mut self, scores: &[InstanceScore]) {
        if scores.is_empty() {
            return;
        }
        let n = scores.len() as f64;
        self.sum[0] += scores.iter().map(|s| s.iou).sum::<f64>() / n;
        self.sum[1] += scores.iter().map(|s| s.dice).sum::<f64>() / n;
        self.sum[2] += scores.iter().map(|s| s.biou).sum::<f64>() / n;
        self.images += 1;
        self.instances += scores.len();
    }

    /// (mIoU, mDice, mBIoU) in percent.
    pub fn percent(&self) -> (f64, f64, f64) {
        let n = self.images.max(1) as f64;
        (
            100.0 * self.sum[0] / n,
            100.0 * self.sum[1] / n,
            100.0 * self.sum[2] / n,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(w: u32, h: u32, x0: u32, y0: u32, x1: u32, y1: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            Luma([if x >= x0 && x < x1 && y >= y0 && y < y1 {
                255
            } else {
                0
            }])
        })
    }

    #[test]
    fn iou_and_dice_by_hand() {
        // gt: 4x4 square (16 px); pred: shifted by 2 columns -> tp 8, fp 8, fn 8.
        let gt = rect(10, 10, 0, 0, 4, 4);
        let pred = rect(10, 10, 2, 0, 6, 4);
        let s = score(&pred, &gt);
        assert!((s.iou - 8.0 / 24.0).abs() < 1e-12);
        assert!((s.dice - 16.0 / 32.0).abs() < 1e-12);
        let perfect = score(&gt, &gt);
        assert_eq!((perfect.iou, perfect.dice, perfect.biou), (1.0, 1.0, 1.0));
        let empty = GrayImage::new(10, 10);
        assert_eq!(score(&empty, &empty).iou, 1.0);
        assert_eq!(score(&empty, &gt).iou, 0.0);
    }

    #[test]
    fn boundary_band_is_the_inner_rim() {
        // 100x100 image: d = round(0.02 * 141.4) = 3; a 20x20 square keeps a 14x14 core.
        assert_eq!(boundary_width(100, 100), 3);
        let m = rect(100, 100, 40, 40, 60, 60);
        let band = boundary_band(&m, 3);
        let n = band.pixels().filter(|p| p.0[0] > 0).count();
        assert_eq!(n, 20 * 20 - 14 * 14);
        // At the image border the edge is a boundary too: only the 4x4 core [3, 6]^2 is more
        // than 3 pixels from the padding and from the inner edges.
        let corner = rect(100, 100, 0, 0, 10, 10);
        assert_eq!(
            boundary_band(&corner, 3)
                .pixels()
                .filter(|p| p.0[0] > 0)
                .count(),
            100 - 16
        );
        // A prediction off by one pixel scores lower on the boundary than on the area.
        let shifted = rect(100, 100, 41, 40, 61, 60);
        let s = score(&shifted, &m);
        assert!(s.biou < s.iou);
    }

    #[test]
    fn means_average_within_images_then_over_images() {
        let mut m = MeanScores::default();
        let s = |v: f64| InstanceScore {
            iou: v,
            dice: v,
            biou: v,
        };
        m.add_image(&[s(1.0), s(0.0)]); // image mean 0.5
        m.add_image(&[s(1.0)]); // image mean 1.0
        m.add_image(&[]);
        assert_eq!((m.images, m.instances), (2, 3));
        assert!((m.percent().0 - 75.0).abs() < 1e-12);
    }
}
