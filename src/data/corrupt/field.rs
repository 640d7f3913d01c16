//! [`Field`], the float image every corruption computes on, and numpy's float64 summation, which
//! the corruptions' means and kernel normalisations reproduce to the last bit.

use image::RgbImage;

/// A float image with `c` interleaved channels, row-major: the corruptions' working type.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Field {
    /// Width in pixels.
    pub(super) w: usize,
    /// Height in pixels.
    pub(super) h: usize,
    /// Channels per pixel.
    pub(super) c: usize,
    /// `h·w·c` values, row-major, channels interleaved.
    pub(super) data: Vec<f64>,
}

impl Field {
    /// An all-zero field.
    pub(super) fn zeros(w: usize, h: usize, c: usize) -> Self {
        Self {
            w,
            h,
            c,
            data: vec![0.0; w * h * c],
        }
    }

    /// `np.array(img) / div` in float64.
    pub(super) fn from_rgb(img: &RgbImage, div: f64) -> Self {
        Self {
            w: img.width() as usize,
            h: img.height() as usize,
            c: 3,
            data: img.as_raw().iter().map(|&v| v as f64 / div).collect(),
        }
    }

    /// The RGB image of a three-channel field, each value mapped to a byte by `to_byte`.
    pub(super) fn to_rgb(&self, to_byte: impl Fn(f64) -> u8) -> RgbImage {
        let data = self.data.iter().map(|&v| to_byte(v)).collect();
        RgbImage::from_raw(self.w as u32, self.h as u32, data)
            .unwrap_or_else(|| RgbImage::new(self.w as u32, self.h as u32))
    }

    /// Channel `ch` of pixel `(x, y)`.
    #[inline]
    pub(super) fn at(&self, x: usize, y: usize, ch: usize) -> f64 {
        self.data[(y * self.w + x) * self.c + ch]
    }

    /// The `w`×`h` top-left crop (`a[:h, :w]`), zero where the field is smaller.
    pub(super) fn crop(&self, w: usize, h: usize) -> Field {
        let mut out = Field::zeros(w, h, self.c);
        let cw = w.min(self.w) * self.c;
        for y in 0..h.min(self.h) {
            let src = &self.data[y * self.w * self.c..y * self.w * self.c + cw];
            out.data[y * w * self.c..y * w * self.c + cw].copy_from_slice(src);
        }
        out
    }
}

/// numpy's pairwise summation of a float64 array (what `np.sum` returns, to the last bit).
pub(super) fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        return a.iter().fold(0.0, |s, &v| s + v);
    }
    if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &v in &a[i..] {
            res += v;
        }
        return res;
    }
    let half = n / 2;
    let half = half - half % 8;
    numpy_sum(&a[..half]) + numpy_sum(&a[half..])
}
