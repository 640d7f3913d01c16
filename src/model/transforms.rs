//! Images and prompts into the model's input frame, and mask logits back to the image.
//!
//! Two preprocessings: the official predictor's (resize the longest side, normalise with SAM's
//! pixel mean/std, pad bottom/right) and the reference adaptation code's ([0, 1] values without
//! mean/std, centred padding; `docs/method.md` §6.1). Both resize bilinearly with antialiasing, as
//! torchvision's `resize` of a PIL image does, bit for bit (PIL's 8-bit fixed point).

use candle_core::{Device, Result, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::data::pixel::{pil_resize, PilFilter};
use crate::ops::resize::{resize_2d, Interpolation};

/// SAM's pixel mean on the 0-255 scale, subtracted in preprocessing.
pub const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
/// SAM's pixel std on the 0-255 scale, divided by in preprocessing.
pub const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

/// Which preprocessing feeds the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Preprocessing {
    /// The official predictor: mean/std normalisation, bottom/right padding.
    #[default]
    Sam,
    /// The reference WeSAM code: [0, 1] input, centred padding.
    Reference,
}

/// Where an image of `original` size sits inside the square model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// (height, width) of the original image.
    pub original: (usize, usize),
    /// (height, width) after resizing the longest side to `size`.
    pub resized: (usize, usize),
    /// (top, left) padding before the resized image.
    pub offset: (usize, usize),
    /// Side of the square input.
    pub size: usize,
}

impl Frame {
    /// The frame of an `h x w` image in a `size` input: `new = int(dim * size / max(h, w) + 0.5)`
    /// as `ResizeLongestSide.get_preprocess_shape`, but at least one pixel (the official code
    /// fails on an image whose short side rounds to none, e.g. 300 × 1).
    pub fn new((h, w): (usize, usize), size: usize, mode: Preprocessing) -> Self {
        let scale = size as f64 / h.max(w).max(1) as f64;
        let rh = ((h as f64 * scale + 0.5) as usize).max(1);
        let rw = ((w as f64 * scale + 0.5) as usize).max(1);
        let offset = match mode {
            Preprocessing::Sam => (0, 0),
            Preprocessing::Reference => ((size - rh) / 2, (size - rw) / 2),
        };
        Self {
            original: (h, w),
            resized: (rh, rw),
            offset,
            size,
        }
    }

    /// Maps an (x, y) point of the original image into the input frame.
    pub fn map_point(&self, x: f32, y: f32) -> (f32, f32) {
        let sx = self.resized.1 as f32 / self.original.1 as f32;
        let sy = self.resized.0 as f32 / self.original.0 as f32;
        (x * sx + self.offset.1 as f32, y * sy + self.offset.0 as f32)
    }

    /// Maps an xyxy box of the original image into the input frame.
    pub fn map_box(&self, b: [f32; 4]) -> [f32; 4] {
        let (x0, y0) = self.map_point(b[0], b[1]);
        let (x1, y1) = self.map_point(b[2], b[3]);
        [x0, y0, x1, y1]
    }
}

/// The `[1, 3, size, size]` model input of an RGB image, and its frame.
pub fn preprocess(
    img: &RgbImage,
    size: usize,
    mode: Preprocessing,
    dev: &Device,
) -> Result<(Tensor, Frame)> {
    let frame = Frame::new((img.height() as usize, img.width() as usize), size, mode);
    let (rh, rw) = frame.resized;
    let resized = pil_resize(img, rw as u32, rh as u32, PilFilter::Bilinear);
    let (top, left) = frame.offset;
    let mut data = vec![0f32; 3 * size * size];
    for (x, y, p) in resized.enumerate_pixels() {
        for c in 0..3 {
            let v = p.0[c] as f32;
            let v = match mode {
                Preprocessing::Sam => (v - PIXEL_MEAN[c]) / PIXEL_STD[c],
                Preprocessing::Reference => v / 255.0,
            };
            data[c * size * size + (y as usize + top) * size + x as usize + left] = v;
        }
    }
    Ok((Tensor::from_vec(data, (1, 3, size, size), dev)?, frame))
}

/// Low-resolution logits `[n, k, h, w]` to logits at the original image size `[n, k, H, W]`:
/// upsampled to the padded input, cropped to the image, resized to the original (bilinear,
/// `align_corners=False`), as the official `postprocess_masks`.
pub fn postprocess(low_res: &Tensor, frame: &Frame) -> Result<Tensor> {
    let s = frame.size;
    let up = resize_2d(low_res, s, s, Interpolation::Bilinear)?;
    let (top, left) = frame.offset;
    let crop = up
        .narrow(2, top, frame.resized.0)?
        .narrow(3, left, frame.resized.1)?
        .contiguous()?;
    resize_2d(
        &crop,
        frame.original.0,
        frame.original.1,
        Interpolation::Bilinear,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_follows_resize_longest_side() {
        // 90 x 130 into 128: scale 128/130, h = int(88.6 + 0.5) = 89.
        let f = Frame::new((90, 130), 128, Preprocessing::Sam);
        assert_eq!(f.resized, (89, 128));
        assert_eq!(f.offset, (0, 0));
        let r = Frame::new((90, 130), 128, Preprocessing::Reference);
        assert_eq!(r.offset, (19, 0));
        let (x, y) = r.map_point(130.0, 90.0);
        assert!((x - 128.0).abs() < 1e-4 && (y - (89.0 + 19.0)).abs() < 1e-4);
    }

    #[test]
    fn padding_is_zero_and_content_is_normalised() {
        let img = RgbImage::from_pixel(10, 20, image::Rgb([255, 0, 128]));
        let (t, f) = preprocess(&img, 32, Preprocessing::Sam, &Device::Cpu).unwrap();
        assert_eq!(f.resized, (32, 16));
        let v = t.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        assert!((v[0][5][5] - (255.0 - PIXEL_MEAN[0]) / PIXEL_STD[0]).abs() < 1e-5);
        assert_eq!(v[1][5][20], 0.0);
        let (t, _) = preprocess(&img, 32, Preprocessing::Reference, &Device::Cpu).unwrap();
        let v = t.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(v[0][5][2], 0.0); // left padding of 8 columns
        assert!((v[0][5][10] - 1.0).abs() < 1e-6);
    }
}
