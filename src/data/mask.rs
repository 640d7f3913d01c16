//! Masks into instances: binarising, label values, connected components and boxes.

use anyhow::bail;
use image::{GrayImage, Luma};
use imageproc::region_labelling::{connected_components, Connectivity};

/// How a mask image is binarised: foreground is a grey value above `threshold` (127 by default,
/// so JPEG noise around 0 and 255 is ignored; the reference code uses 0).
pub fn binarise(mask: &GrayImage, threshold: u8) -> GrayImage {
    GrayImage::from_fn(mask.width(), mask.height(), |x, y| {
        Luma([if mask.get_pixel(x, y).0[0] > threshold {
            255
        } else {
            0
        }])
    })
}

/// One binary mask per distinct non-zero value, in increasing value order (the reference's
/// `decode_mask`: every label value is an instance).
pub fn instances_by_value(labels: &GrayImage) -> Vec<GrayImage> {
    let mut present = [false; 256];
    for p in labels.pixels() {
        present[p.0[0] as usize] = true;
    }
    (1..256)
        .filter(|&v| present[v])
        .map(|v| {
            GrayImage::from_fn(labels.width(), labels.height(), |x, y| {
                Luma([if labels.get_pixel(x, y).0[0] as usize == v {
                    255
                } else {
                    0
                }])
            })
        })
        .collect()
}

/// One binary mask per 8-connected component of a binary mask, largest first.
pub fn connected_instances(binary: &GrayImage) -> Vec<GrayImage> {
    let labels = connected_components(binary, Connectivity::Eight, Luma([0u8]));
    let n = labels.pixels().map(|p| p.0[0]).max().unwrap_or(0) as usize;
    let mut areas = vec![0usize; n + 1];
    for p in labels.pixels() {
        areas[p.0[0] as usize] += 1;
    }
    let mut order: Vec<usize> = (1..=n).collect();
    order.sort_by_key(|&l| std::cmp::Reverse(areas[l]));
    order
        .into_iter()
        .map(|l| {
            GrayImage::from_fn(binary.width(), binary.height(), |x, y| {
                Luma([if labels.get_pixel(x, y).0[0] as usize == l {
                    255
                } else {
                    0
                }])
            })
        })
        .collect()
}

/// Number of foreground pixels.
pub fn area(mask: &GrayImage) -> usize {
    mask.pixels().filter(|p| p.0[0] > 0).count()
}

/// `cv2.boundingRect` of the foreground as `[x, y, x + w, y + h]` (right and bottom exclusive),
/// or `None` for an empty mask.
pub fn bounding_box(mask: &GrayImage) -> Option<[f32; 4]> {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in mask.enumerate_pixels() {
        if p.0[0] > 0 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x + 1);
            y1 = y1.max(y + 1);
        }
    }
    (x0 != u32::MAX).then_some([x0 as f32, y0 as f32, x1 as f32, y1 as f32])
}

/// Checks that a mask has its image's size, naming both files otherwise.
pub fn check_same_size(
    mask: &GrayImage,
    mask_path: &std::path::Path,
    (w, h): (u32, u32),
    image_path: &std::path::Path,
) -> anyhow::Result<()> {
    if mask.dimensions() != (w, h) {
        bail!(
            "mask {} is {}x{} but image {} is {w}x{h}",
            mask_path.display(),
            mask.width(),
            mask.height(),
            image_path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&[u8]]) -> GrayImage {
        GrayImage::from_fn(rows[0].len() as u32, rows.len() as u32, |x, y| {
            Luma([rows[y as usize][x as usize]])
        })
    }

    #[test]
    fn values_components_and_boxes() {
        let m = grid(&[&[0, 0, 7, 7], &[3, 0, 7, 0], &[3, 0, 0, 0]]);
        let by_value = instances_by_value(&m);
        assert_eq!(by_value.len(), 2);
        assert_eq!(bounding_box(&by_value[0]), Some([0.0, 1.0, 1.0, 3.0])); // value 3
        assert_eq!(bounding_box(&by_value[1]), Some([2.0, 0.0, 4.0, 2.0])); // value 7
        let comps = connected_instances(&binarise(&m, 0));
        assert_eq!(comps.len(), 2);
        assert_eq!(area(&comps[0]), 3);
        assert_eq!(bounding_box(&GrayImage::new(3, 3)), None);
    }

    #[test]
    fn jpeg_noise_is_thresholded_away() {
        let m = grid(&[&[0, 8, 250], &[3, 247, 255]]);
        let b = binarise(&m, 127);
        assert_eq!(area(&b), 3);
        assert_eq!(area(&binarise(&m, 0)), 5);
    }
}
