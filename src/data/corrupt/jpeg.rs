//! The jpeg_compression corruption: libjpeg's lossy steps as PIL runs them (4:2:0), with the
//! 8×8 DCT quantisation round trip, simulated without a codec.

use image::RgbImage;

/// PIL's JPEG save and reload at quality 25, 18, 15, 10, 7.
pub(super) fn jpeg_compression(img: &RgbImage, s: usize) -> RgbImage {
    jpeg_round_trip(img, [25, 18, 15, 10, 7][s])
}

/// JPEG's standard luminance quantisation table (ITU T.81 Annex K), row-major.
const LUMA_QUANT: [u32; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];

/// JPEG's standard chrominance quantisation table (ITU T.81 Annex K), row-major.
const CHROMA_QUANT: [u32; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// libjpeg's `jpeg_set_quality` scaling of a base table (baseline: at most 255).
fn quant_table(base: &[u32; 64], quality: u32) -> [u32; 64] {
    let q = quality.clamp(1, 100);
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    base.map(|b| ((b * scale + 50) / 100).clamp(1, 255))
}

/// libjpeg's 16-bit fixed-point constant.
fn fix(x: f64) -> i64 {
    (x * 65536.0 + 0.5) as i64
}

/// A plane of `w`×`h` integer samples.
struct Plane {
    w: usize,
    h: usize,
    data: Vec<i64>,
}

impl Plane {
    /// The plane grown to `w`×`h` by repeating its last column and row.
    fn pad(&self, w: usize, h: usize) -> Plane {
        let data = (0..h)
            .flat_map(|y| {
                let row = y.min(self.h - 1) * self.w;
                (0..w).map(move |x| row + x.min(self.w - 1))
            })
            .map(|i| self.data[i])
            .collect();
        Plane { w, h, data }
    }

    /// The top-left `w`×`h` part.
    fn crop(&self, w: usize, h: usize) -> Plane {
        let data = (0..h)
            .flat_map(|y| (0..w).map(move |x| y * self.w + x))
            .map(|i| self.data[i])
            .collect();
        Plane { w, h, data }
    }
}

/// libjpeg's lossy path at `quality`, as PIL uses it (4:2:0): fixed-point RGB→YCbCr, 2×2 chroma
/// averaging with alternating bias, 8×8 DCT quantisation (a float DCT here), fancy up-sampling,
/// fixed-point YCbCr→RGB. Entropy coding is lossless and skipped.
fn jpeg_round_trip(img: &RgbImage, quality: u32) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let [y, cb, cr] = rgb_to_ycc(img);
    let luma_q = quant_table(&LUMA_QUANT, quality);
    let chroma_q = quant_table(&CHROMA_QUANT, quality);
    let y = dct_round_trip(&y.pad(w.div_ceil(8) * 8, h.div_ceil(8) * 8), &luma_q).crop(w, h);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let chroma = |p: &Plane| {
        let down = downsample(&p.pad(w.div_ceil(16) * 16, h + h % 2));
        let padded = down.pad(down.w, ch.div_ceil(8) * 8);
        upsample(&dct_round_trip(&padded, &chroma_q).crop(cw, ch), w, h)
    };
    let (cb, cr) = (chroma(&cb), chroma(&cr));
    let half = 1i64 << 15;
    let mut out = RgbImage::new(w as u32, h as u32);
    for (i, p) in out.pixels_mut().enumerate() {
        let (l, b, r) = (y.data[i], cb.data[i] - 128, cr.data[i] - 128);
        let red = l + ((fix(1.402) * r + half) >> 16);
        let green = l + ((-fix(0.34414) * b + half - fix(0.71414) * r) >> 16);
        let blue = l + ((fix(1.772) * b + half) >> 16);
        p.0 = [red, green, blue].map(|v| v.clamp(0, 255) as u8);
    }
    out
}

/// libjpeg's fixed-point `rgb_ycc_convert`.
fn rgb_to_ycc(img: &RgbImage) -> [Plane; 3] {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let half = 1i64 << 15;
    let offset = 128i64 << 16;
    let mut planes = [(); 3].map(|_| Vec::with_capacity(w * h));
    for p in img.pixels() {
        let [r, g, b] = p.0.map(|v| v as i64);
        planes[0].push((fix(0.299) * r + fix(0.587) * g + fix(0.114) * b + half) >> 16);
        planes[1]
            .push((-fix(0.16874) * r - fix(0.33126) * g + fix(0.5) * b + offset + half - 1) >> 16);
        planes[2]
            .push((fix(0.5) * r - fix(0.41869) * g - fix(0.08131) * b + offset + half - 1) >> 16);
    }
    planes.map(|data| Plane { w, h, data })
}

/// libjpeg's `h2v2_downsample`: 2×2 means with a bias alternating 1, 2 along each row.
fn downsample(p: &Plane) -> Plane {
    let (w, h) = (p.w / 2, p.h / 2);
    let data = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            let at = |dx: usize, dy: usize| p.data[(2 * y + dy) * p.w + 2 * x + dx];
            (at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1) + 1 + (x % 2) as i64) >> 2
        })
        .collect();
    Plane { w, h, data }
}

/// libjpeg's `h2v2_fancy_upsample` (triangle filter, edges repeated) cropped to `w`×`h`.
fn upsample(p: &Plane, w: usize, h: usize) -> Plane {
    let at = |x: isize, y: isize| {
        let (x, y) = (x.clamp(0, p.w as isize - 1), y.clamp(0, p.h as isize - 1));
        p.data[y as usize * p.w + x as usize]
    };
    let data = (0..w * h)
        .map(|i| {
            let (ox, oy) = ((i % w) as isize, (i / w) as isize);
            let (x, y) = (ox / 2, oy / 2);
            let ny = if oy % 2 == 0 { y - 1 } else { y + 1 };
            let col = |cx: isize| 3 * at(cx, y) + at(cx, ny);
            if ox % 2 == 0 {
                (3 * col(x) + col(x - 1) + 8) >> 4
            } else {
                (3 * col(x) + col(x + 1) + 7) >> 4
            }
        })
        .collect();
    Plane { w, h, data }
}

/// Forward DCT, quantisation, dequantisation and inverse DCT of every 8×8 block, with
/// libjpeg's level shift and range limit.
fn dct_round_trip(p: &Plane, quant: &[u32; 64]) -> Plane {
    let basis: [[f64; 8]; 8] = std::array::from_fn(|u| {
        let cu = if u == 0 {
            std::f64::consts::FRAC_1_SQRT_2
        } else {
            1.0
        };
        std::array::from_fn(|x| {
            cu * ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos() / 2.0
        })
    });
    let mut out = Plane {
        w: p.w,
        h: p.h,
        data: vec![0; p.data.len()],
    };
    for by in (0..p.h).step_by(8) {
        for bx in (0..p.w).step_by(8) {
            let block: [[f64; 8]; 8] = std::array::from_fn(|y| {
                std::array::from_fn(|x| (p.data[(by + y) * p.w + bx + x] - 128) as f64)
            });
            let coef = transform(&basis, &block, false);
            // libjpeg's DCT yields 8·F as an integer, then divides by 8·Q rounding half away
            // from zero; rounding 8·F first reproduces most of its ties.
            let quantised: [[f64; 8]; 8] = std::array::from_fn(|v| {
                std::array::from_fn(|u| {
                    let q = quant[v * 8 + u] as i64;
                    let x8 = (8.0 * coef[v][u] + 0.5).floor() as i64;
                    ((x8.abs() + 4 * q) / (8 * q) * x8.signum() * q) as f64
                })
            });
            let back = transform(&basis, &quantised, true);
            for (y, row) in back.iter().enumerate() {
                for (x, v) in row.iter().enumerate() {
                    out.data[(by + y) * p.w + bx + x] =
                        ((v + 0.5).floor() as i64 + 128).clamp(0, 255);
                }
            }
        }
    }
    out
}

/// The separable 2-D DCT of a block (`C·B·Cᵀ`), or its inverse (`Cᵀ·F·C`).
fn transform(c: &[[f64; 8]; 8], b: &[[f64; 8]; 8], inverse: bool) -> [[f64; 8]; 8] {
    let m = |i: usize, j: usize| if inverse { c[j][i] } else { c[i][j] };
    let rows: [[f64; 8]; 8] =
        std::array::from_fn(|i| std::array::from_fn(|x| (0..8).map(|k| m(i, k) * b[k][x]).sum()));
    std::array::from_fn(|i| std::array::from_fn(|j| (0..8).map(|k| rows[i][k] * m(j, k)).sum()))
}

#[cfg(test)]
mod tests {
    use super::super::tests::pattern;
    use super::super::{corrupt, Corruption};

    #[test]
    fn jpeg_matches_pil_per_channel_means() {
        // Per-channel means of the package's `jpeg_compression` on `pattern(40, 36)` (PIL 13,
        // libjpeg-turbo), severities 1..5. The float DCT rounds a few coefficients the other way
        // than libjpeg's integer DCT (on this synthetic gradient, one chroma block at severity
        // 2 shifts the red mean by 0.38), so means agree to half a grey level.
        let want = [
            [138.39, 134.835, 127.621],
            [136.725, 135.057, 128.22],
            [136.821, 134.496, 126.756],
            [137.262, 135.617, 130.915],
            [138.182, 135.761, 127.96],
        ];
        let img = pattern(40, 36);
        for (s, want) in (1..=5).zip(want) {
            let out = corrupt(&img, Corruption::JpegCompression, s, 0).unwrap();
            let n = (out.width() * out.height()) as f64;
            for (c, want) in want.iter().enumerate() {
                let mean = out.pixels().map(|p| p.0[c] as f64).sum::<f64>() / n;
                assert!(
                    (mean - want).abs() < 0.5,
                    "severity {s} channel {c}: {mean}"
                );
            }
        }
    }
}
