//! The noise corruptions: gaussian, shot (Poisson) and impulse (salt and pepper) noise.

use image::RgbImage;
use rand::{rngs::StdRng, Rng};
use rand_distr::{Distribution, Poisson};

use super::field::Field;
use crate::data::pixel::unit_to_byte;

/// Reads `img` as a field, maps every value with `f`, writes it back with `to_byte`.
fn map_values(img: &RgbImage, mut f: impl FnMut(f64) -> f64, to_byte: fn(f64) -> u8) -> RgbImage {
    let mut field = Field::from_rgb(img, 255.0);
    field.data.iter_mut().for_each(|v| *v = f(*v));
    field.to_rgb(to_byte)
}

/// `x/255 + N(0, c)`.
pub(super) fn gaussian_noise(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let c = [0.08, 0.12, 0.18, 0.26, 0.38][s];
    map_values(
        img,
        |v| v + c * rng.sample::<f64, _>(rand_distr::StandardNormal),
        unit_to_byte,
    )
}

/// `Poisson(x/255 · c) / c`.
pub(super) fn shot_noise(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let c = [60.0, 25.0, 12.0, 5.0, 3.0][s];
    // One distribution per grey level (λ = 0 is a point mass at 0).
    let dists: Vec<Option<Poisson<f64>>> = (0..256)
        .map(|v| Poisson::new(v as f64 / 255.0 * c).ok())
        .collect();
    let mut out = img.clone();
    for v in out.iter_mut() {
        let k = dists[*v as usize].map_or(0.0, |d| d.sample(rng));
        *v = unit_to_byte(k / c);
    }
    out
}

/// skimage's salt and pepper: each channel value becomes 0 or 1 (even odds) with probability c.
pub(super) fn impulse_noise(img: &RgbImage, s: usize, rng: &mut StdRng) -> RgbImage {
    let amount = [0.03, 0.06, 0.09, 0.17, 0.27][s];
    map_values(
        img,
        |v| {
            if rng.random_bool(amount) {
                if rng.random_bool(0.5) {
                    1.0
                } else {
                    0.0
                }
            } else {
                v
            }
        },
        unit_to_byte,
    )
}

#[cfg(test)]
mod tests {
    use super::super::{corrupt, Corruption};
    use image::RgbImage;

    #[test]
    fn noise_has_the_package_magnitudes() {
        let grey = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        let n = (64 * 64 * 3) as f64;
        let stats = |img: &RgbImage| {
            let mean = img.as_raw().iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = img
                .as_raw()
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var.sqrt())
        };
        // Severity 3: σ = 0.18 → 45.9 grey levels.
        let (_, std) = stats(&corrupt(&grey, Corruption::GaussianNoise, 3, 1).unwrap());
        assert!((std - 45.9).abs() < 2.0, "gaussian std {std}");
        // Severity 1: Poisson(128/255·60)/60 → std 255·sqrt(128/255/60) = 23.3.
        let (mean, std) = stats(&corrupt(&grey, Corruption::ShotNoise, 1, 1).unwrap());
        assert!(
            (mean - 127.5).abs() < 1.5 && (std - 23.3).abs() < 1.5,
            "shot {mean} {std}"
        );
        // Severity 5: 27% of the values become 0 or 255.
        let out = corrupt(&grey, Corruption::ImpulseNoise, 5, 1).unwrap();
        let hit = out.as_raw().iter().filter(|&&v| v != 128).count() as f64 / n;
        assert!((hit - 0.27).abs() < 0.02, "impulse fraction {hit}");
    }
}
