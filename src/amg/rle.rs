//! COCO run-length encoding of masks, as `pycocotools` writes it (the official generator's
//! `coco_rle` output, which SA-1B uses): runs over the mask in column-major order, first a run
//! of zeros, and the compressed string form of `maskApi.c`'s `rleToString`.

use serde::{Deserialize, Serialize};

/// An uncompressed RLE: `size` `[h, w]` and the alternating run lengths, zeros first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rle {
    pub size: [usize; 2],
    pub counts: Vec<u64>,
}

/// A COCO compressed RLE, the `segmentation` of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CocoRle {
    pub size: [usize; 2],
    pub counts: String,
}

impl Rle {
    /// The runs of a row-major `h x w` mask, read column by column.
    pub fn encode(mask: &[bool], h: usize, w: usize) -> Self {
        assert_eq!(mask.len(), h * w, "mask of another size");
        let mut counts = Vec::new();
        let (mut current, mut run) = (false, 0u64);
        for x in 0..w {
            for y in 0..h {
                let v = mask[y * w + x];
                if v != current {
                    counts.push(run);
                    current = v;
                    run = 0;
                }
                run += 1;
            }
        }
        counts.push(run);
        Self {
            size: [h, w],
            counts,
        }
    }

    /// The mask, row-major.
    pub fn decode(&self) -> Vec<bool> {
        let [h, w] = self.size;
        let mut mask = vec![false; h * w];
        let (mut at, mut value) = (0usize, false);
        for &c in &self.counts {
            for i in at..at + c as usize {
                mask[(i % h) * w + i / h] = value;
            }
            at += c as usize;
            value = !value;
        }
        mask
    }

    /// The object's pixel count: the sum of the odd runs.
    pub fn area(&self) -> u64 {
        self.counts.iter().skip(1).step_by(2).sum()
    }

    /// `rleToString`: each count (less the count two before it, from the fourth on) in 5-bit
    /// groups, low first, 0x20 set when more follow, plus 48.
    pub fn to_coco(&self) -> CocoRle {
        let mut s = String::new();
        for (i, &c) in self.counts.iter().enumerate() {
            let mut x = c as i64 - if i > 2 { self.counts[i - 2] as i64 } else { 0 };
            loop {
                let mut ch = x & 0x1f;
                x >>= 5;
                let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    ch |= 0x20;
                }
                s.push(char::from(ch as u8 + 48));
                if !more {
                    break;
                }
            }
        }
        CocoRle {
            size: self.size,
            counts: s,
        }
    }
}

impl CocoRle {
    /// `rleFrString`, the inverse of [`Rle::to_coco`]; `None` for a malformed string.
    pub fn decode(&self) -> Option<Rle> {
        let bytes = self.counts.as_bytes();
        let mut counts: Vec<u64> = Vec::new();
        let mut p = 0;
        while p < bytes.len() {
            let (mut x, mut k) = (0i64, 0);
            loop {
                let c = i64::from(*bytes.get(p)?) - 48;
                if !(0..64).contains(&c) {
                    return None;
                }
                x |= (c & 0x1f) << (5 * k);
                p += 1;
                k += 1;
                if c & 0x20 == 0 {
                    if c & 0x10 != 0 {
                        x |= -1 << (5 * k);
                    }
                    break;
                }
            }
            let i = counts.len();
            if i > 2 {
                x += counts[i - 2] as i64;
            }
            counts.push(u64::try_from(x).ok()?);
        }
        Some(Rle {
            size: self.size,
            counts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_column_major_and_start_with_zeros() {
        // 3 x 3 with only the centre: the specification's [4, 1, 4].
        let mut m = vec![false; 9];
        m[4] = true;
        let rle = Rle::encode(&m, 3, 3);
        assert_eq!(rle.counts, [4, 1, 4]);
        assert_eq!(rle.area(), 1);
        // Pixel (0, 0) set: the first run of zeros is empty.
        let mut m = vec![false; 6];
        m[0] = true;
        m[1] = true; // row 0, column 1
        assert_eq!(Rle::encode(&m, 2, 3).counts, [0, 1, 1, 1, 3]);
    }

    #[test]
    fn strings_match_pycocotools_and_round_trip() {
        // pycocotools 2.0.11: `encode` of the 3 x 3 centre pixel, and `frUncompressedRLE` of
        // two longer count lists (deltas from the fourth count on, negative ones included).
        let cases = [
            ([3, 3], vec![4, 1, 4], "414"),
            ([1, 1046], vec![0, 2, 3, 40, 1001], "023V1Vo0"),
            ([1, 100111], vec![3, 100000, 2, 5, 0, 1], "3PeQ32U[nLNL"),
        ];
        for (size, counts, want) in cases {
            let rle = Rle { size, counts };
            let coco = rle.to_coco();
            assert_eq!(coco.counts, want);
            assert_eq!(coco.decode().unwrap(), rle);
        }
        let mask: Vec<bool> = (0..35).map(|i| (i * 7 % 5) < 2).collect();
        let rle = Rle::encode(&mask, 5, 7);
        assert_eq!(rle.decode(), mask);
        assert!(CocoRle {
            size: [1, 1],
            counts: "\u{7f}".into()
        }
        .decode()
        .is_none());
    }
}
