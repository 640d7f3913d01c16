//! The strong view's `RandomShadow`: its polygons, OpenCV's polygon fill (line clipping, line
//! drawing, fixed-point scan lines) and the lightness halving in OpenCV's HLS.

use image::{GrayImage, Luma, RgbImage};
use rand::Rng;

use crate::data::pixel::{hls_to_rgb, rgb_to_hls};

/// The polygons of one `RandomShadow` draw with the reference's defaults: 1 or 2 polygons of 5
/// vertices each, with x in `[0, W]` and y in `[H/2, H]` (bounds included).
pub fn shadow_polygons(width: u32, height: u32, rng: &mut impl Rng) -> Vec<Vec<(i32, i32)>> {
    let (w, h) = (width as i32, height as i32);
    let (y_min, y_max) = ((0.5 * height as f64) as i32, h);
    let count = rng.random_range(1..=2);
    (0..count)
        .map(|_| {
            (0..5)
                .map(|_| (rng.random_range(0..=w), rng.random_range(y_min..=y_max)))
                .collect()
        })
        .collect()
}

/// `RandomShadow`'s drawing step (`add_shadow`): halves the HLS lightness inside the polygons.
///
/// As in albumentations, the whole image goes through OpenCV's uint8 RGB→HLS→RGB conversion,
/// which is lossy, so pixels outside the shadow may change by a grey level or two.
pub fn shadow(img: &RgbImage, polygons: &[Vec<(i32, i32)>]) -> RgbImage {
    let mut mask = GrayImage::new(img.width(), img.height());
    for poly in polygons {
        fill_polygon(&mut mask, poly);
    }
    let mut out = img.clone();
    for (p, m) in out.pixels_mut().zip(mask.pixels()) {
        let [h, mut l, s] = rgb_to_hls(p.0);
        if m.0[0] == 255 {
            l /= 2;
        }
        p.0 = hls_to_rgb([h, l, s]);
    }
    out
}

/// Fixed-point precision of OpenCV's polygon scan lines (16.16).
const XY_SHIFT: i64 = 16;

/// Fills a polygon with 255 as OpenCV's `fillPoly` does: the 8-connected outline of every edge,
/// then the even-odd interior by 16.16 fixed-point scan lines (an edge covers rows
/// `[y_top, y_bottom)`; edges leaving the image use their clipped end points for the slope).
fn fill_polygon(mask: &mut GrayImage, poly: &[(i32, i32)]) {
    let n = poly.len();
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let inside = |p: (i64, i64)| (0..w).contains(&p.0) && (0..h).contains(&p.1);
    // (y_top, y_bottom, fixed-point x at y_top, fixed-point x step per row)
    let mut edges = Vec::with_capacity(n);
    for i in 0..n {
        let p0 = (
            poly[(i + n - 1) % n].0 as i64,
            poly[(i + n - 1) % n].1 as i64,
        );
        let p1 = (poly[i].0 as i64, poly[i].1 as i64);
        draw_line(mask, p0, p1);
        if p0.1 == p1.1 {
            continue;
        }
        let (mut c0, mut c1) = (p0, p1);
        if !inside(p0) || !inside(p1) {
            let (_, a, b) = clip_line(w, h, p0, p1);
            if a.1 != b.1 {
                (c0, c1) = (a, b);
            }
        }
        let dx = ((c1.0 - c0.0) << XY_SHIFT) / (c1.1 - c0.1);
        let (top, bottom, c) = if p0.1 < p1.1 {
            (p0, p1, c0)
        } else {
            (p1, p0, c1)
        };
        edges.push((top.1, bottom.1, (c.0 << XY_SHIFT) + (top.1 - c.1) * dx, dx));
    }
    let mut xs = Vec::new();
    for y in 0..h {
        xs.clear();
        xs.extend(
            edges
                .iter()
                .filter(|e| e.0 <= y && y < e.1)
                .map(|e| e.2 + (y - e.0) * e.3),
        );
        xs.sort_unstable();
        for pair in xs.chunks_exact(2) {
            let x1 = ((pair[0] + (1 << XY_SHIFT) - 1) >> XY_SHIFT).max(0);
            let x2 = (pair[1] >> XY_SHIFT).min(w - 1);
            for x in x1..=x2 {
                mask.put_pixel(x as u32, y as u32, Luma([255]));
            }
        }
    }
}

/// OpenCV's `clipLine`: the part of a segment inside a `w`×`h` image, end points moved onto
/// the border with truncating integer arithmetic; `false` when nothing is inside.
fn clip_line(w: i64, h: i64, p1: (i64, i64), p2: (i64, i64)) -> (bool, (i64, i64), (i64, i64)) {
    let (right, bottom) = (w - 1, h - 1);
    let ((mut x1, mut y1), (mut x2, mut y2)) = (p1, p2);
    let code = |x: i64, y: i64| {
        (x < 0) as u8 | ((x > right) as u8) << 1 | ((y < 0) as u8) << 2 | ((y > bottom) as u8) << 3
    };
    let (mut c1, mut c2) = (code(x1, y1), code(x2, y2));
    let along =
        |a: i64, from: i64, d_to: i64, d_over: i64| (a - from) as f64 * d_to as f64 / d_over as f64;
    if c1 & c2 == 0 && c1 | c2 != 0 {
        if c1 & 12 != 0 {
            let a = if c1 < 8 { 0 } else { bottom };
            x1 += along(a, y1, x2 - x1, y2 - y1) as i64;
            y1 = a;
            c1 = code(x1, 0) & 3;
        }
        if c2 & 12 != 0 {
            let a = if c2 < 8 { 0 } else { bottom };
            x2 += along(a, y2, x2 - x1, y2 - y1) as i64;
            y2 = a;
            c2 = code(x2, 0) & 3;
        }
        if c1 & c2 == 0 && c1 | c2 != 0 {
            if c1 != 0 {
                let a = if c1 == 1 { 0 } else { right };
                y1 += along(a, x1, y2 - y1, x2 - x1) as i64;
                x1 = a;
                c1 = 0;
            }
            if c2 != 0 {
                let a = if c2 == 1 { 0 } else { right };
                y2 += along(a, x2, y2 - y1, x2 - x1) as i64;
                x2 = a;
                c2 = 0;
            }
        }
    }
    (c1 | c2 == 0, (x1, y1), (x2, y2))
}

/// OpenCV's 8-connected `LineIterator` (drawn left to right, clipped to the image first).
fn draw_line(mask: &mut GrayImage, p1: (i64, i64), p2: (i64, i64)) {
    let (w, h) = (mask.width() as i64, mask.height() as i64);
    let (visible, mut a, mut b) = clip_line(w, h, p1, p2);
    if !visible {
        return;
    }
    if b.0 < a.0 {
        (a, b) = (b, a);
    }
    let (dx, dy) = (b.0 - a.0, (b.1 - a.1).abs());
    let y_step = if b.1 < a.1 { -1 } else { 1 };
    let steep = dy > dx;
    let (major, minor) = if steep { (dy, dx) } else { (dx, dy) };
    let mut err = major - 2 * minor;
    let (mut x, mut y) = a;
    for _ in 0..=major {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            mask.put_pixel(x as u32, y as u32, Luma([255]));
        }
        if err < 0 {
            err += 2 * major;
            if steep {
                x += 1;
            } else {
                y += y_step;
            }
        }
        err -= 2 * minor;
        if steep {
            y += y_step;
        } else {
            x += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_same, textured};
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    // `albumentations.augmentations.functional.add_shadow(img, [[(0,3),(6,2),(5,5),(1,4),(3,1)]])`
    // of the 7×5 `textured()` image (albumentations 1.3.1, opencv-python 5.0), row-major RGB.
    const SHADOW: [u8; 105] = [
        0, 53, 106, 37, 90, 143, 74, 127, 180, 111, 164, 217, 148, 201, 254, 184, 238, 36, 223, 19,
        73, 91, 144, 197, 141, 194, 247, 190, 244, 42, 131, 9, 41, 35, 88, 141, 85, 138, 191, 135,
        188, 241, 181, 235, 33, 138, 6, 41, 26, 52, 78, 115, 168, 221, 90, 118, 12, 131, 9, 41, 24,
        50, 76, 9, 35, 61, 38, 73, 108, 84, 111, 9, 138, 6, 41, 32, 59, 86, 13, 97, 181, 218, 14,
        68, 108, 161, 214, 107, 145, 3, 15, 41, 67, 31, 86, 141, 104, 2, 29, 20, 47, 74, 130, 183,
        236,
    ];

    #[test]
    fn shadow_matches_add_shadow() {
        let poly = vec![vec![(0, 3), (6, 2), (5, 5), (1, 4), (3, 1)]];
        let mut mask = GrayImage::new(7, 5);
        fill_polygon(&mut mask, &poly[0]);
        // cv2.fillPoly of the same (self-intersecting) polygon.
        let want = [".......", "...#...", ".##.###", "######.", ".#####."];
        for (y, row) in want.iter().enumerate() {
            for (x, ch) in row.chars().enumerate() {
                let inside = mask.get_pixel(x as u32, y as u32).0[0] == 255;
                assert_eq!(inside, ch == '#', "pixel ({x}, {y})");
            }
        }
        assert_same(&shadow(&textured(), &poly), &SHADOW, "shadow");
        // A grey pixel has lightness = value, halved inside the shadow.
        let grey = RgbImage::from_pixel(3, 3, image::Rgb([201, 201, 201]));
        let dark = shadow(&grey, &[vec![(0, 0), (2, 0), (2, 2), (0, 2)]]);
        assert!(dark.pixels().all(|p| p.0 == [100; 3]));
    }

    #[test]
    fn shadow_polygons_stay_in_the_lower_half() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let polys = shadow_polygons(20, 11, &mut rng);
            assert!((1..=2).contains(&polys.len()));
            for p in &polys {
                assert_eq!(p.len(), 5);
                assert!(p
                    .iter()
                    .all(|&(x, y)| (0..=20).contains(&x) && (5..=11).contains(&y)));
            }
        }
    }
}
