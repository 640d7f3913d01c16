//! The official generator's small-region cleanup (`remove_small_regions`): holes and islands
//! below an area, found as 8-connected components.

use image::{GrayImage, Luma};
use imageproc::region_labelling::{connected_components, Connectivity};

/// Which small regions to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// Background components (holes) smaller than the area become object.
    Holes,
    /// Object components (islands) smaller than the area become background; when every one is
    /// that small, the largest stays.
    Islands,
}

/// Removes `region`s of fewer than `area` pixels from a row-major `h x w` mask; returns whether
/// it changed anything.
pub fn remove_small_regions(
    mask: &mut [bool],
    h: usize,
    w: usize,
    area: usize,
    region: Region,
) -> bool {
    let holes = region == Region::Holes;
    // The components examined: of the background for holes, of the object for islands.
    let working = GrayImage::from_fn(w as u32, h as u32, |x, y| {
        Luma([u8::from(mask[y as usize * w + x as usize] != holes)])
    });
    let labels = connected_components(&working, Connectivity::Eight, Luma([0u8]));
    let count = labels.pixels().map(|p| p.0[0]).max().unwrap_or(0) as usize;
    let mut sizes = vec![0usize; count + 1];
    for p in labels.pixels() {
        sizes[p.0[0] as usize] += 1;
    }
    let small: Vec<bool> = (0..=count).map(|l| l > 0 && sizes[l] < area).collect();
    if !small.iter().any(|&s| s) {
        return false;
    }
    // The labels the mask becomes: holes fill the object (label 0) and the small holes;
    // islands keep the large islands, or the largest when none is large.
    let mut keep: Vec<bool> = if holes {
        (0..=count).map(|l| l == 0 || small[l]).collect()
    } else {
        (0..=count).map(|l| l > 0 && !small[l]).collect()
    };
    if !keep.iter().any(|&k| k) {
        // `np.argmax`: the first of equal sizes, in label order (raster order of first pixels).
        let largest = (1..=count).fold(1, |best, l| if sizes[l] > sizes[best] { l } else { best });
        keep[largest] = true;
    }
    for (m, p) in mask.iter_mut().zip(labels.pixels()) {
        *m = keep[p.0[0] as usize];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rows: &[&str]) -> (Vec<bool>, usize, usize) {
        let mask = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| c == '#'))
            .collect();
        (mask, rows.len(), rows[0].len())
    }

    #[test]
    fn small_holes_fill_and_small_islands_go() {
        let (mut m, h, w) = parse(&["#####...", "#.###...", "#####.#.", "........"]);
        assert!(remove_small_regions(&mut m, h, w, 2, Region::Holes));
        assert_eq!(
            m,
            parse(&["#####...", "#####...", "#####.#.", "........"]).0
        );
        assert!(remove_small_regions(&mut m, h, w, 2, Region::Islands));
        assert_eq!(
            m,
            parse(&["#####...", "#####...", "#####...", "........"]).0
        );
        assert!(!remove_small_regions(&mut m, h, w, 2, Region::Islands));
        // Every island small: the largest stays (diagonal pixels are one 8-connected island).
        let (mut m, h, w) = parse(&["#....", ".#..#", "....."]);
        assert!(remove_small_regions(&mut m, h, w, 5, Region::Islands));
        assert_eq!(m, parse(&["#....", ".#...", "....."]).0);
    }
}
