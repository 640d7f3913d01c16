//! The metrics the camouflaged-object and shadow communities report (and SAM-Adapter with
//! them), per image, computed as their metric code does (`docs/sam-adapter.md`): S-measure,
//! mean E-measure, weighted F-measure and MAE on the prediction min-max normalised per image
//! (MATLAB's `mapminmax`), and the balanced error rate (BER) of shadow detection. Checked against the
//! `pysodmetrics` package in `tests/sod.rs`.

use super::distance::{nearest_object, FeatureTransform};

/// numpy's `spacing(1)`, the metric code's epsilon.
const EPS: f64 = f64::EPSILON;
/// The S-measure's balance of its object and region terms.
const S_ALPHA: f64 = 0.5;
/// The weighted F-measure's β² (the metric code passes 0.3 as its `beta` and uses it as β²).
const WF_BETA2: f64 = 0.3;

/// One image's scores, or their mean over images.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct SodScores {
    /// Structure measure S_α (α 0.5): object- and region-aware similarity, higher is better.
    pub s_measure: f64,
    /// Enhanced-alignment measure E_φ, the mean over the 256 thresholds, higher is better.
    pub e_measure: f64,
    /// Weighted F-measure F^w_β (β² 0.3), higher is better; 0 for an image without object.
    pub weighted_f: f64,
    /// Mean absolute error, lower is better.
    pub mae: f64,
    /// Balanced error rate in percent (both maps thresholded at 125 / 255), lower is better.
    pub ber: f64,
}

/// The scores of a probability map `prob` (in [0, 1], e.g. a sigmoid of logits) against a
/// binary mask `gt` (`true` = object), both `h x w` row-major.
pub fn sod_scores(prob: &[f64], gt: &[bool], h: usize, w: usize) -> SodScores {
    assert_eq!(prob.len(), h * w, "prediction of another size");
    assert_eq!(gt.len(), h * w, "mask of another size");
    let pred = min_max(prob);
    SodScores {
        s_measure: s_measure(&pred, gt, h, w),
        e_measure: e_measure(&pred, gt),
        weighted_f: weighted_f(&pred, gt, h, w),
        mae: pred
            .iter()
            .zip(gt)
            .map(|(p, &g)| (p - f64::from(u8::from(g))).abs())
            .sum::<f64>()
            / pred.len() as f64,
        ber: ber(prob, gt),
    }
}

impl SodScores {
    /// The mean of each score (all zero for none).
    pub fn mean(scores: &[SodScores]) -> SodScores {
        let n = scores.len().max(1) as f64;
        let sum = |f: fn(&SodScores) -> f64| scores.iter().map(f).sum::<f64>() / n;
        SodScores {
            s_measure: sum(|s| s.s_measure),
            e_measure: sum(|s| s.e_measure),
            weighted_f: sum(|s| s.weighted_f),
            mae: sum(|s| s.mae),
            ber: sum(|s| s.ber),
        }
    }
}

/// The prediction scaled to span [0, 1] (left as it is when constant).
fn min_max(prob: &[f64]) -> Vec<f64> {
    let v = prob.to_vec();
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    if hi == lo {
        return v;
    }
    v.iter().map(|x| (x - lo) / (hi - lo)).collect()
}

fn mean(v: impl Iterator<Item = f64>) -> (f64, usize) {
    let (sum, n) = v.fold((0.0, 0), |(s, n), x| (s + x, n + 1));
    (sum / n.max(1) as f64, n)
}

/// S-measure: `α·S_object + (1 − α)·S_region`, floored at 0; for an empty or full mask, the
/// mean agreement.
fn s_measure(pred: &[f64], gt: &[bool], h: usize, w: usize) -> f64 {
    let (y, _) = mean(gt.iter().map(|&g| f64::from(u8::from(g))));
    if y == 0.0 {
        return 1.0 - mean(pred.iter().copied()).0;
    }
    if y == 1.0 {
        return mean(pred.iter().copied()).0;
    }
    let object = |values: Vec<f64>| {
        let (mu, n) = mean(values.iter().copied());
        let var = values.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        2.0 * mu / (mu * mu + 1.0 + var.sqrt() + EPS)
    };
    let fg = object(
        pred.iter()
            .zip(gt)
            .filter(|(_, &g)| g)
            .map(|(&p, _)| p)
            .collect(),
    );
    let bg = object(
        pred.iter()
            .zip(gt)
            .filter(|(_, &g)| !g)
            .map(|(&p, _)| 1.0 - p)
            .collect(),
    );
    let s_object = y * fg + (1.0 - y) * bg;
    (S_ALPHA * s_object + (1.0 - S_ALPHA) * s_region(pred, gt, h, w)).max(0.0)
}

/// Half-to-even rounding, as numpy's `round`.
fn round_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// The region term: the four quadrants around the mask's centroid (rounded, plus one as in
/// MATLAB), each scored by an SSIM-like agreement and weighted by its area.
fn s_region(pred: &[f64], gt: &[bool], h: usize, w: usize) -> f64 {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for (i, _) in gt.iter().enumerate().filter(|(_, &g)| g) {
        sx += (i % w) as f64;
        sy += (i / w) as f64;
        n += 1.0;
    }
    let cx = (round_even(sx / n) as usize + 1).min(w);
    let cy = (round_even(sy / n) as usize + 1).min(h);
    let quadrants = [
        (0..cy, 0..cx),
        (0..cy, cx..w),
        (cy..h, 0..cx),
        (cy..h, cx..w),
    ];
    let area = (h * w) as f64;
    quadrants
        .into_iter()
        .filter(|(rows, cols)| !rows.is_empty() && !cols.is_empty())
        .map(|(rows, cols)| {
            let weight = (rows.len() * cols.len()) as f64 / area;
            let cells: Vec<(f64, f64)> = rows
                .flat_map(|r| cols.clone().map(move |c| r * w + c))
                .map(|i| (pred[i], f64::from(u8::from(gt[i]))))
                .collect();
            weight * ssim(&cells)
        })
        .sum()
}

/// The SSIM-like agreement of (prediction, mask) pairs: `4 μx μy σxy / ((μx² + μy²)(σx² + σy²))`,
/// 1 when numerator and denominator are both 0, 0 when only the numerator is.
fn ssim(cells: &[(f64, f64)]) -> f64 {
    let n = cells.len() as f64;
    let (mx, my) = (
        cells.iter().map(|c| c.0).sum::<f64>() / n,
        cells.iter().map(|c| c.1).sum::<f64>() / n,
    );
    let dof = (n - 1.0).max(1.0);
    let vx = cells.iter().map(|c| (c.0 - mx).powi(2)).sum::<f64>() / dof;
    let vy = cells.iter().map(|c| (c.1 - my).powi(2)).sum::<f64>() / dof;
    let cov = cells.iter().map(|c| (c.0 - mx) * (c.1 - my)).sum::<f64>() / dof;
    let alpha = 4.0 * mx * my * cov;
    let beta = (mx * mx + my * my) * (vx + vy);
    if alpha != 0.0 {
        alpha / (beta + EPS)
    } else if beta == 0.0 {
        1.0
    } else {
        0.0
    }
}

/// Mean E-measure over the thresholds 0..=255 of the prediction quantised to 8 bits (truncated):
/// for each, the enhanced alignment `φ = (ξ + 1)² / 4`, `ξ = 2ab / (a² + b²)` of the de-meaned
/// binary maps, summed over pixels and divided by `H·W − 1`. An empty mask scores the
/// prediction's background pixels, a full one its foreground pixels.
fn e_measure(pred: &[f64], gt: &[bool]) -> f64 {
    let size = pred.len() as f64;
    // Pixels of each 8-bit value, on the object and off it.
    let (mut on, mut off) = ([0f64; 256], [0f64; 256]);
    for (&p, &g) in pred.iter().zip(gt) {
        let v = (p * 255.0) as u8 as usize;
        if g {
            on[v] += 1.0;
        } else {
            off[v] += 1.0;
        }
    }
    let gt_fg: f64 = on.iter().sum();
    let (mut fg_on, mut fg_off) = (0.0, 0.0);
    let mut total = 0.0;
    for t in (0..256).rev() {
        // Pixels predicted as object at threshold t: value >= t.
        fg_on += on[t];
        fg_off += off[t];
        let fg = fg_on + fg_off;
        let sum = if gt_fg == 0.0 {
            size - fg
        } else if gt_fg == size {
            fg
        } else {
            let (mean_p, mean_g) = (fg / size, gt_fg / size);
            let combos = [
                (1.0, 1.0, fg_on),
                (1.0, 0.0, fg_off),
                (0.0, 1.0, gt_fg - fg_on),
                (0.0, 0.0, size - gt_fg - fg_off),
            ];
            combos
                .iter()
                .map(|&(p, g, count)| {
                    let (a, b) = (p - mean_p, g - mean_g);
                    let xi = 2.0 * a * b / (a * a + b * b + EPS);
                    count * (xi + 1.0).powi(2) / 4.0
                })
                .sum()
        };
        total += sum / (size - 1.0 + EPS);
    }
    total / 256.0
}

/// Weighted F-measure (Margolin et al. 2014): the error `|pred − gt|`, carried to background
/// pixels from their nearest object pixel, smoothed by MATLAB's 7×7 Gaussian (σ 5, zero
/// border) and kept where smaller inside the object, then weighted up with the distance from
/// the object (`2 − 0.5^(d/5)`); weighted recall and precision combine with β² 0.3.
fn weighted_f(pred: &[f64], gt: &[bool], h: usize, w: usize) -> f64 {
    let Some(FeatureTransform { nearest, distance }) = nearest_object(gt, h, w) else {
        return 0.0;
    };
    let error: Vec<f64> = pred
        .iter()
        .zip(gt)
        .map(|(p, &g)| (p - f64::from(u8::from(g))).abs())
        .collect();
    let carried: Vec<f64> = (0..h * w)
        .map(|i| {
            let (r, c) = nearest[i];
            if gt[i] {
                error[i]
            } else {
                error[r * w + c]
            }
        })
        .collect();
    let smoothed = gaussian_7x7(&carried, h, w);
    let (mut object_error, mut background_error, mut object) = (0.0, 0.0, 0.0);
    for i in 0..h * w {
        if gt[i] {
            object_error += smoothed[i].min(error[i]);
            object += 1.0;
        } else {
            background_error += error[i] * (2.0 - (0.5f64.ln() / 5.0 * distance[i]).exp());
        }
    }
    let true_positive = object - object_error;
    let recall = 1.0 - object_error / object;
    let precision = true_positive / (true_positive + background_error + EPS);
    (1.0 + WF_BETA2) * recall * precision / (recall + WF_BETA2 * precision + EPS)
}

/// MATLAB's `imfilter(x, fspecial('gaussian', 7, 5))`: a normalised 7×7 Gaussian of σ 5,
/// zero outside the image.
fn gaussian_7x7(values: &[f64], h: usize, w: usize) -> Vec<f64> {
    const RADIUS: i64 = 3;
    const SIGMA: f64 = 5.0;
    let raw: Vec<f64> = (-RADIUS..=RADIUS)
        .flat_map(|dy| (-RADIUS..=RADIUS).map(move |dx| (dx, dy)))
        .map(|(dx, dy)| (-((dx * dx + dy * dy) as f64) / (2.0 * SIGMA * SIGMA)).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    let kernel: Vec<f64> = raw.iter().map(|k| k / total).collect();
    let side = (2 * RADIUS + 1) as usize;
    let mut out = vec![0.0; h * w];
    for (i, o) in out.iter_mut().enumerate() {
        let (r, c) = ((i / w) as i64, (i % w) as i64);
        for (k, weight) in kernel.iter().enumerate() {
            let (y, x) = (
                r + (k / side) as i64 - RADIUS,
                c + (k % side) as i64 - RADIUS,
            );
            if (0..h as i64).contains(&y) && (0..w as i64).contains(&x) {
                *o += weight * values[y as usize * w + x as usize];
            }
        }
    }
    out
}

/// Balanced error rate in percent, `(positive error + negative error) / 2`, with both maps
/// thresholded at 125 on the 0–255 scale. A mask without object pixels (or without
/// background) leaves that side's error at 0.
fn ber(prob: &[f64], gt: &[bool]) -> f64 {
    let (mut tp, mut tn, mut fp, mut fneg) = (0.0, 0.0, 0.0, 0.0);
    for (&p, &g) in prob.iter().zip(gt) {
        match (p * 255.0 > 125.0, g) {
            (true, true) => tp += 1.0,
            (false, false) => tn += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fneg += 1.0,
        }
    }
    let error = |right: f64, wrong: f64| {
        if right + wrong == 0.0 {
            0.0
        } else {
            (1.0 - right / (right + wrong)) * 100.0
        }
    };
    (error(tp, fneg) + error(tn, fp)) / 2.0
}
