//! The strong view's per-pixel photometric operations: posterize, equalize, sharpen, solarize
//! and brightness/contrast, with albumentations' uint8 arithmetic.

use image::RgbImage;

use crate::data::pixel::{byte_clip, fma32, saturate_u8, Border};

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
        lut[v] = saturate_u8((sum as f32 * scale) as f64);
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
            let sy = Border::Reflect101.index(y as isize + ky as isize - 1, h as usize) as u32;
            for (kx, &k) in row.iter().enumerate() {
                let sx = Border::Reflect101.index(x as isize + kx as isize - 1, w as usize) as u32;
                let p = img.get_pixel(sx, sy).0;
                for c in 0..3 {
                    acc[c] = fma32(k, p[c] as f32, acc[c]);
                }
            }
        }
        image::Rgb(acc.map(|a| saturate_u8(a as f64)))
    })
}

/// `RandomBrightnessContrast` with contrast factor `alpha` and brightness offset `beta`
/// (`brightness_by_max=True`): `v → trunc(clip(v·alpha + beta·255, 0, 255))`, in `f32` as
/// albumentations' lookup table computes it.
pub fn brightness_contrast(img: &RgbImage, alpha: f64, beta: f64) -> RgbImage {
    let (alpha, offset) = (alpha as f32, (beta * 255.0) as f32);
    map_lut(
        img,
        &std::array::from_fn(|i| byte_clip((i as f32 * alpha + offset) as f64)),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_same, textured};
    use super::*;

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
    // True)` and `convolve(smooth, M)` with `Sharpen`'s matrix for (alpha, lightness) =
    // (0.3, 0.7) and (0.45, 0.55). Arrays are row-major RGB.
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
}
