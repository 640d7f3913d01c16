//! Vectorised `f32` kernels for the element-wise functions of the encoder: softmax rows and the
//! exact (erf) GELU with its derivative.
//!
//! `f32::exp` and `erf` are scalar library calls that the compiler cannot vectorise; a global
//! attention block of ViT-B at 1024² takes 200 million exponentials per pass, which made the
//! softmax a third of the encoder's forward time. These kernels use polynomial approximations
//! (accurate to a few units in the last place) written so that the loops vectorise, and run with
//! AVX2 and FMA where the CPU has them.

/// Runs `f` compiled with AVX2 and FMA when the CPU has them (`f` must be inlined into it).
#[inline(always)]
fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled with.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `e^x` to about 2 ulp for `x` in `[-87, 88]`, clamped outside (Cephes' `expf` polynomial
/// after reduction by `ln 2`).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in f32 and the rest.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Comparisons rather than `clamp`, which keeps NaN handling that does not vectorise.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 0.166_666_65);
    let p = p.mul_add(r, 0.5);
    let e = p.mul_add(r * r, r) + 1.0;
    // SAFETY: `n` is an integer in [-126, 127] after the clamp, so the conversion is exact.
    let n: i32 = unsafe { n.to_int_unchecked() };
    e * f32::from_bits(((n + 127) << 23) as u32)
}

/// `erf(x)` to 3e-7 absolute: Abramowitz & Stegun 7.1.26 (1.5e-7) plus f32 rounding.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / 0.327_591_1_f32.mul_add(a, 1.0);
    let p = 1.061_405_4_f32;
    let p = p.mul_add(t, -1.453_152);
    let p = p.mul_add(t, 1.421_413_7);
    let p = p.mul_add(t, -0.284_496_74);
    let p = p.mul_add(t, 0.254_829_6);
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

/// Softmax of one row, in place.
pub fn softmax_in_place(row: &mut [f32]) {
    vectorised(
        #[inline(always)]
        || {
            let max = max(row);
            exp_normalise(row, max)
        },
    )
}

/// Softmax of one row of `kh * kw` attention scores with SAM's decomposed relative-position
/// bias, in place: `softmax(scale * s[i, j] + rel_h[i] + rel_w[j])`. The bias and the running
/// maximum are one pass over the row.
pub fn biased_softmax_in_place(row: &mut [f32], rel_h: &[f32], rel_w: &[f32], scale: f32) {
    vectorised(
        #[inline(always)]
        || {
            let kw = rel_w.len();
            let mut m = Lanes([f32::NEG_INFINITY; LANES]);
            for (segment, h) in row.chunks_mut(kw).zip(rel_h) {
                for (chunk, w) in segment.chunks_mut(LANES).zip(rel_w.chunks(LANES)) {
                    for ((v, w), m) in chunk.iter_mut().zip(w).zip(m.0.iter_mut()) {
                        *v = v.mul_add(scale, h + w);
                        *m = if *v > *m { *v } else { *m };
                    }
                }
            }
            exp_normalise(row, m.max())
        },
    )
}

/// `e^(v - max) / sum` over the row.
#[inline(always)]
fn exp_normalise(row: &mut [f32], max: f32) {
    let mut sum = Lanes::default();
    for chunk in row.chunks_mut(LANES) {
        for (s, v) in sum.0.iter_mut().zip(chunk) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let inv = 1.0 / sum.0.iter().sum::<f32>();
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `0.5 x (1 + erf(x / sqrt 2))` of every `x`, into `out`.
pub fn gelu(x: &[f32], out: &mut [f32]) {
    vectorised(
        #[inline(always)]
        || {
            for (y, &x) in out.iter_mut().zip(x) {
                *y = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            }
        },
    )
}

/// The upstream gradient `g` times GELU's derivative at `x`, into `out`:
/// `0.5 (1 + erf(x / sqrt 2)) + x exp(-x² / 2) / sqrt(2 pi)`.
pub fn gelu_backward(x: &[f32], g: &[f32], out: &mut [f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    vectorised(
        #[inline(always)]
        || {
            for ((d, &x), &g) in out.iter_mut().zip(x).zip(g) {
                let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                *d = g * (cdf + x * INV_SQRT_2PI * exp(-0.5 * x * x));
            }
        },
    )
}

/// Accumulators wide enough for one AVX register, so that reductions vectorise.
const LANES: usize = 8;

#[derive(Default)]
struct Lanes([f32; LANES]);

impl Lanes {
    fn max(self) -> f32 {
        self.0.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }
}

#[inline(always)]
fn max(row: &[f32]) -> f32 {
    let mut m = Lanes([f32::NEG_INFINITY; LANES]);
    for chunk in row.chunks(LANES) {
        for (m, &v) in m.0.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    m.max()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `erf` in f64, independently of the kernel: Simpson's rule on `2/sqrt(pi) exp(-t²)`.
    fn erf64(x: f64) -> f64 {
        let n = 20_000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 3.0 * f32::EPSILON as f64, "relative error {worst}");
        assert!(exp(-1e30) >= 0.0 && exp(-1e30) < 1e-37);
    }

    #[test]
    fn erf_is_accurate_to_3e_7() {
        for i in -400..=400 {
            let x = i as f32 * 0.01;
            let d = (erf(x) as f64 - erf64(x as f64)).abs();
            assert!(d < 3e-7, "erf({x}): error {d}");
        }
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_definition() {
        for n in [1, 7, 8, 9, 100] {
            let mut row: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 1.7).collect();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            let want: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp() / z).collect();
            softmax_in_place(&mut row);
            for (a, b) in row.iter().zip(&want) {
                assert!((*a as f64 - b).abs() < 1e-6, "n={n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn biased_softmax_adds_both_bias_tables_and_the_scale() {
        // kw = 11 is not a multiple of the lane width.
        let (kh, kw, scale) = (3, 11, 0.7f32);
        let s: Vec<f32> = (0..kh * kw)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.9)
            .collect();
        let rh: Vec<f32> = (0..kh).map(|i| i as f32 * 0.3 - 0.2).collect();
        let rw: Vec<f32> = (0..kw).map(|j| 0.5 - j as f32 * 0.15).collect();
        let mut want: Vec<f32> = (0..kh * kw)
            .map(|k| s[k] * scale + rh[k / kw] + rw[k % kw])
            .collect();
        softmax_in_place(&mut want);
        let mut got = s.clone();
        biased_softmax_in_place(&mut got, &rh, &rw, scale);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn gelu_and_its_derivative_match_the_definition() {
        let x: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
        let g: Vec<f32> = x.iter().map(|v| 1.0 + v * 0.25).collect();
        let (mut y, mut d) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        gelu(&x, &mut y);
        gelu_backward(&x, &g, &mut d);
        for i in 0..x.len() {
            let xv = x[i] as f64;
            let cdf = 0.5 * (1.0 + erf64(xv / 2f64.sqrt()));
            let want_d = g[i] as f64
                * (cdf + xv * (-0.5 * xv * xv).exp() / (2.0 * std::f64::consts::PI).sqrt());
            assert!((y[i] as f64 - xv * cdf).abs() < 1e-6, "gelu({xv})");
            assert!((d[i] as f64 - want_d).abs() < 1e-5, "gelu'({xv})");
        }
    }
}
