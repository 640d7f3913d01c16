//! The Euclidean feature transform of a binary image: for every pixel, the nearest object
//! pixel and its distance. The weighted F-measure propagates errors from the nearest object
//! pixel, so which of two equally near pixels is chosen changes the score; this follows the
//! separable Voronoi construction (Maurer et al. 2003) with the tie rules of
//! `scipy.ndimage.distance_transform_edt`, which the metric code calls (checked in
//! `tests/sod.rs`).

/// Every pixel's nearest object pixel and its distance, row-major.
pub struct FeatureTransform {
    /// The nearest object pixel, as `(row, col)`.
    pub nearest: Vec<(usize, usize)>,
    /// The Euclidean distance to it.
    pub distance: Vec<f64>,
}

/// The feature transform of an `h x w` row-major mask; `None` when it holds no object pixel.
pub fn nearest_object(object: &[bool], h: usize, w: usize) -> Option<FeatureTransform> {
    assert_eq!(object.len(), h * w, "mask of another size");
    // Pass 1, along each column: the object pixels themselves, then the nearest of them in
    // that column (by row), for rows the column reaches.
    let mut feature: Vec<Option<(i64, i64)>> = object
        .iter()
        .enumerate()
        .map(|(i, &o)| o.then_some(((i / w) as i64, (i % w) as i64)))
        .collect();
    let mut line = Vec::new();
    for c in 0..w {
        line.clear();
        line.extend((0..h).map(|r| feature[r * w + c]));
        voronoi_line(&mut line, 0, (0, c as i64));
        for (r, f) in line.iter().enumerate() {
            feature[r * w + c] = *f;
        }
    }
    // Pass 2, along each row, over the column pass's sites.
    for r in 0..h {
        voronoi_line(&mut feature[r * w..(r + 1) * w], 1, (r as i64, 0));
    }
    let nearest: Option<Vec<(usize, usize)>> = feature
        .iter()
        .map(|f| f.map(|(r, c)| (r as usize, c as usize)))
        .collect();
    let nearest = nearest?;
    let distance = nearest
        .iter()
        .enumerate()
        .map(|(i, &(r, c))| {
            let (dr, dc) = ((i / w) as f64 - r as f64, (i % w) as f64 - c as f64);
            (dr * dr + dc * dc).sqrt()
        })
        .collect();
    Some(FeatureTransform { nearest, distance })
}

/// One line of the transform along `axis` (0: a column at `at.1`, 1: a row at `at.0`): keeps
/// the sites whose Voronoi cells cross the line (dropping a site when its neighbours' cells
/// meet before it), then gives each pixel the nearest kept site, the earlier one on a tie.
fn voronoi_line(line: &mut [Option<(i64, i64)>], axis: usize, at: (i64, i64)) {
    let along = |f: (i64, i64)| if axis == 0 { f.0 } else { f.1 };
    // Squared distance of a site from the line.
    let off = |f: (i64, i64)| {
        let d = if axis == 0 { f.1 - at.1 } else { f.0 - at.0 };
        (d * d) as f64
    };
    let sites: Vec<(i64, i64)> = line.iter().flatten().copied().collect();
    let mut kept: Vec<(i64, i64)> = Vec::with_capacity(sites.len());
    for &site in &sites {
        let w_r = off(site);
        while kept.len() >= 2 {
            let (u, v) = (kept[kept.len() - 2], kept[kept.len() - 1]);
            let a = (along(v) - along(u)) as f64;
            let b = (along(site) - along(v)) as f64;
            let c = a + b;
            if c * off(v) - b * off(u) - a * w_r - a * b * c <= 0.0 {
                break;
            }
            kept.pop();
        }
        kept.push(site);
    }
    if kept.is_empty() {
        return;
    }
    let dist = |f: (i64, i64), i: i64| {
        let d = (along(f) - i) as f64;
        d * d + off(f)
    };
    let mut l = 0;
    for (i, slot) in line.iter_mut().enumerate() {
        let i = i as i64;
        let mut best = dist(kept[l], i);
        while l + 1 < kept.len() {
            let next = dist(kept[l + 1], i);
            if best <= next {
                break;
            }
            best = next;
            l += 1;
        }
        *slot = Some(kept[l]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: every pixel's distance to the nearest object pixel.
    fn brute(object: &[bool], h: usize, w: usize) -> Vec<f64> {
        (0..h * w)
            .map(|i| {
                (0..h * w)
                    .filter(|&j| object[j])
                    .map(|j| {
                        let (dr, dc) = (
                            (i / w) as f64 - (j / w) as f64,
                            (i % w) as f64 - (j % w) as f64,
                        );
                        (dr * dr + dc * dc).sqrt()
                    })
                    .fold(f64::INFINITY, f64::min)
            })
            .collect()
    }

    #[test]
    fn distances_are_the_nearest_object_pixels() {
        let (h, w) = (17, 23);
        let mut state = 12345u64;
        for density in [0.01, 0.05, 0.3] {
            let object: Vec<bool> = (0..h * w)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((state >> 33) as f64 / (1u64 << 31) as f64) < density
                })
                .collect();
            if !object.iter().any(|&o| o) {
                continue;
            }
            let FeatureTransform { nearest, distance } = nearest_object(&object, h, w).unwrap();
            for (i, (&(r, c), (&d, want))) in nearest
                .iter()
                .zip(distance.iter().zip(brute(&object, h, w)))
                .enumerate()
            {
                assert!(object[r * w + c], "pixel {i}'s nearest is no object pixel");
                assert!((d - want).abs() < 1e-12, "pixel {i}: {d} against {want}");
            }
        }
        assert!(nearest_object(&[false; 6], 2, 3).is_none());
    }
}
