//! The 15 ImageNet-C / COCO-C corruptions at severities 1–5, as the `imagecorruptions` package
//! (1.1.2) defines them; WeSAM's corrupted-COCO benchmark runs each of them at severity 5.
//!
//! Every corruption uses the package's per-severity constants and reproduces its arithmetic:
//! float64 where numpy computes in float64, float32 where it does, and the final truncating
//! `np.uint8` cast. Randomness comes from a [`StdRng`] seeded by the caller, so a seed gives the
//! same image on every run, but not the package's image (numpy's streams are not reproduced).
//!
//! What each corruption does differently from the package, and how far the outputs are from
//! its (measured with `scripts/compare_corruptions.py`): `docs/benchmark.md`, "COCO-C
//! corruptions against imagecorruptions".
//!
//! This file holds [`Corruption`] and the [`corrupt`] dispatch; the corruptions live by family in
//! `noise`, `blur`, `weather`, `digital` and `jpeg`, on the float image of `field` and the shared
//! filters of `filters`; `dataset` corrupts a whole dataset as it loads ([`Corrupted`]).

mod blur;
mod dataset;
mod digital;
mod field;
mod filters;
mod jpeg;
mod noise;
mod weather;

use anyhow::{bail, Result};
use image::RgbImage;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

use blur::{defocus_blur, glass_blur, motion_blur, zoom_blur};
pub use dataset::{Corrupted, CorruptionSpec};
use digital::{brightness, contrast, elastic_transform, pixelate};
use jpeg::jpeg_compression;
use noise::{gaussian_noise, impulse_noise, shot_noise};
use weather::{fog, frost, snow};

/// One of the 15 benchmark corruptions; CLI and serde names are the package's (`gaussian_noise`),
/// with kebab-case aliases (`gaussian-noise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Corruption {
    /// Additive Gaussian noise.
    #[serde(alias = "gaussian-noise")]
    GaussianNoise,
    /// Poisson (photon) noise.
    #[serde(alias = "shot-noise")]
    ShotNoise,
    /// Salt-and-pepper noise.
    #[serde(alias = "impulse-noise")]
    ImpulseNoise,
    /// Blur by an anti-aliased disk.
    #[serde(alias = "defocus-blur")]
    DefocusBlur,
    /// Blur, local pixel scrambling, blur.
    #[serde(alias = "glass-blur")]
    GlassBlur,
    /// Blur along a random direction.
    #[serde(alias = "motion-blur")]
    MotionBlur,
    /// Mean of centre zooms.
    #[serde(alias = "zoom-blur")]
    ZoomBlur,
    /// Motion-blurred snow flakes over a brightened image.
    Snow,
    /// Blend with a frost texture.
    Frost,
    /// Added plasma-fractal haze.
    Fog,
    /// Raised HSV value.
    Brightness,
    /// Values pulled towards the channel means.
    Contrast,
    /// Warp by a smooth random displacement.
    #[serde(alias = "elastic-transform")]
    ElasticTransform,
    /// Box down-scale, nearest up-scale.
    Pixelate,
    /// JPEG at low quality.
    #[serde(alias = "jpeg-compression")]
    JpegCompression,
}

impl Corruption {
    /// All 15, in the package's order (`get_corruption_names('common')`).
    pub const ALL: [Corruption; 15] = [
        Self::GaussianNoise,
        Self::ShotNoise,
        Self::ImpulseNoise,
        Self::DefocusBlur,
        Self::GlassBlur,
        Self::MotionBlur,
        Self::ZoomBlur,
        Self::Snow,
        Self::Frost,
        Self::Fog,
        Self::Brightness,
        Self::Contrast,
        Self::ElasticTransform,
        Self::Pixelate,
        Self::JpegCompression,
    ];

    /// The package's name, used for COCO-C's `corruption/<name>/` folders.
    pub fn name(self) -> &'static str {
        match self {
            Self::GaussianNoise => "gaussian_noise",
            Self::ShotNoise => "shot_noise",
            Self::ImpulseNoise => "impulse_noise",
            Self::DefocusBlur => "defocus_blur",
            Self::GlassBlur => "glass_blur",
            Self::MotionBlur => "motion_blur",
            Self::ZoomBlur => "zoom_blur",
            Self::Snow => "snow",
            Self::Frost => "frost",
            Self::Fog => "fog",
            Self::Brightness => "brightness",
            Self::Contrast => "contrast",
            Self::ElasticTransform => "elastic_transform",
            Self::Pixelate => "pixelate",
            Self::JpegCompression => "jpeg_compression",
        }
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Corrupts an image at `severity` 1–5 (the package's levels); the result has the input's size
/// and depends only on the image, the corruption, the severity and `seed`.
pub fn corrupt(img: &RgbImage, c: Corruption, severity: u8, seed: u64) -> Result<RgbImage> {
    if !(1..=5).contains(&severity) {
        bail!("corruption severity must be 1 to 5, got {severity}");
    }
    if img.width() == 0 || img.height() == 0 {
        bail!(
            "cannot corrupt an empty {}x{} image",
            img.width(),
            img.height()
        );
    }
    let s = severity as usize - 1;
    let rng = &mut StdRng::seed_from_u64(seed);
    Ok(match c {
        Corruption::GaussianNoise => gaussian_noise(img, s, rng),
        Corruption::ShotNoise => shot_noise(img, s, rng),
        Corruption::ImpulseNoise => impulse_noise(img, s, rng),
        Corruption::DefocusBlur => defocus_blur(img, s),
        Corruption::GlassBlur => glass_blur(img, s, rng),
        Corruption::MotionBlur => motion_blur(img, s, rng),
        Corruption::ZoomBlur => zoom_blur(img, s),
        Corruption::Snow => snow(img, s, rng),
        Corruption::Frost => frost(img, s, rng),
        Corruption::Fog => fog(img, s, rng),
        Corruption::Brightness => brightness(img, s),
        Corruption::Contrast => contrast(img, s),
        Corruption::ElasticTransform => elastic_transform(img, s, rng),
        Corruption::Pixelate => pixelate(img, s),
        Corruption::JpegCompression => jpeg_compression(img, s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gradient with 4-pixel checker blocks: channel `c` of `(x, y)` is
    /// `(5x + 3y + 40c + 60·((x/4 + y/4) mod 2)) mod 256`.
    pub(super) fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                ((x * 5 + y * 3 + c as u32 * 40 + ((x / 4 + y / 4) % 2) * 60) % 256) as u8
            }))
        })
    }

    /// A small synthetic photograph: a gradient background with a disc, a bar and a soft blob.
    fn scene(w: u32, h: u32) -> RgbImage {
        let (fw, fh) = (w as f64, h as f64);
        RgbImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as f64, y as f64);
            let mut p = [40.0 + 120.0 * x / fw, 60.0 + 90.0 * y / fh, 110.0];
            if (x - 0.3 * fw).powi(2) + (y - 0.4 * fh).powi(2) < (0.2 * fh).powi(2) {
                p = [220.0, 180.0, 40.0];
            }
            if (0.6 * fw..0.75 * fw).contains(&x) && y > 0.2 * fh {
                p = [30.0, 50.0, 200.0];
            }
            let blob =
                (-((x - 0.7 * fw).powi(2) + (y - 0.8 * fh).powi(2)) / (0.02 * fw * fw)).exp();
            image::Rgb(p.map(|v| (v + 60.0 * blob).min(255.0) as u8))
        })
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        let sum: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| (x as i64 - y as i64).unsigned_abs())
            .sum();
        sum as f64 / a.as_raw().len() as f64
    }

    /// `Σ vᵢ·(i mod 251 + 1)` over the row-major RGB bytes: a position-sensitive checksum.
    fn checksum(img: &RgbImage) -> u64 {
        img.as_raw()
            .iter()
            .enumerate()
            .map(|(i, &v)| v as u64 * (i as u64 % 251 + 1))
            .sum()
    }

    #[test]
    fn every_corruption_keeps_size_is_seeded_and_changes_the_image() {
        let img = scene(48, 40);
        for c in Corruption::ALL {
            for severity in 1..=5 {
                let out = corrupt(&img, c, severity, 11).unwrap();
                assert_eq!(out.dimensions(), img.dimensions(), "{c} {severity}");
                assert_eq!(
                    out,
                    corrupt(&img, c, severity, 11).unwrap(),
                    "{c} {severity}"
                );
                assert!(
                    mean_abs_diff(&out, &img) > 0.5,
                    "{c} {severity} left the image as is"
                );
            }
        }
    }

    #[test]
    fn random_corruptions_depend_on_the_seed() {
        let img = pattern(48, 40);
        let random = Corruption::ALL.iter().filter(|c| {
            !matches!(
                c,
                Corruption::DefocusBlur
                    | Corruption::ZoomBlur
                    | Corruption::Brightness
                    | Corruption::Contrast
                    | Corruption::Pixelate
                    | Corruption::JpegCompression
            )
        });
        for &c in random {
            let a = corrupt(&img, c, 3, 1).unwrap();
            assert_ne!(a, corrupt(&img, c, 3, 2).unwrap(), "{c}");
        }
    }

    #[test]
    fn monotone_corruptions_grow_with_severity() {
        // Glass blur is not monotone in the package itself (severity 4 blurs less than 3).
        let monotone = [
            Corruption::GaussianNoise,
            Corruption::ShotNoise,
            Corruption::ImpulseNoise,
            Corruption::DefocusBlur,
            Corruption::MotionBlur,
            Corruption::ZoomBlur,
            Corruption::Contrast,
            Corruption::Brightness,
            Corruption::Fog,
            Corruption::Pixelate,
            Corruption::JpegCompression,
        ];
        // Averaged over seeds, since one fog draw need not be monotone. Fog's severities 3 and 4
        // share the amount and differ only in the fractal's roughness: over 400 seeds on a
        // 64×48 scene the package moves by 40.33 → 40.56 grey levels and wesam by
        // 40.38 → 40.43, so that one step may dip within sampling noise.
        let img = scene(150, 110);
        let seeds = 0..32u64;
        for c in monotone {
            let d: Vec<f64> = (1..=5)
                .map(|s| {
                    let total: f64 = seeds
                        .clone()
                        .map(|seed| mean_abs_diff(&corrupt(&img, c, s, seed).unwrap(), &img))
                        .sum();
                    total / seeds.end as f64
                })
                .collect();
            for (s, p) in d.windows(2).enumerate() {
                let slack = if c == Corruption::Fog && s == 2 {
                    0.5
                } else {
                    0.0
                };
                assert!(
                    p[1] > p[0] - slack,
                    "{c} severity {} → {}: {d:?}",
                    s + 1,
                    s + 2
                );
            }
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let img = pattern(40, 36);
        for severity in [0, 6, 255] {
            let err = corrupt(&img, Corruption::Fog, severity, 0).unwrap_err();
            assert!(err.to_string().contains("severity"), "{err}");
        }
        assert!(corrupt(&RgbImage::new(0, 5), Corruption::Snow, 1, 0).is_err());
    }

    #[test]
    fn tiny_images_do_not_panic() {
        for (w, h) in [(1, 1), (2, 3), (7, 1), (1, 9)] {
            let img = pattern(w, h);
            for c in Corruption::ALL {
                for severity in [1, 5] {
                    let out = corrupt(&img, c, severity, 3).unwrap();
                    assert_eq!(out.dimensions(), (w, h), "{c}");
                }
            }
        }
    }

    // Checksums of the package's outputs on `pattern(40, 36)`, produced with imagecorruptions
    // 1.1.2 (numpy 2.4, scipy 1.17, scikit-image 0.26, Pillow 13, OpenCV 5.0):
    // `corrupt(img, corruption_name=name, severity=s)` for s = 1..5, then `Σ vᵢ·(i mod 251 + 1)`
    // over the flattened uint8 output. These corruptions have no randomness.
    const PACKAGE_CHECKSUMS: [(Corruption, [u64; 5]); 5] = [
        (
            Corruption::DefocusBlur,
            [71633576, 71662461, 71755913, 72720428, 72598252],
        ),
        (
            Corruption::ZoomBlur,
            [72820225, 73142785, 73364948, 73753461, 74049891],
        ),
        (
            Corruption::Brightness,
            [79426978, 84200840, 87509813, 89908211, 91476541],
        ),
        (
            Corruption::Contrast,
            [71611253, 71592382, 71589551, 71559544, 71540148],
        ),
        (
            Corruption::Pixelate,
            [72443209, 72454771, 71869217, 72079547, 72441109],
        ),
    ];

    #[test]
    fn deterministic_corruptions_match_the_package() {
        let img = pattern(40, 36);
        for (c, sums) in PACKAGE_CHECKSUMS {
            for (s, want) in (1..=5).zip(sums) {
                assert_eq!(checksum(&corrupt(&img, c, s, 0).unwrap()), want, "{c} {s}");
            }
        }
    }

    #[test]
    fn names_parse_both_spellings() {
        for c in Corruption::ALL {
            let kebab = c.name().replace('_', "-");
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.name()));
            assert_eq!(
                serde_json::from_str::<Corruption>(&format!("\"{kebab}\"")).unwrap(),
                c
            );
        }
    }

    /// Writes every corruption at every severity of the image `$WESAM_CORRUPT_IN` to
    /// `$WESAM_CORRUPT_OUT/<name>_<severity>.png` (seed `$WESAM_CORRUPT_SEED`, default 0) with
    /// the time each took in `timings.tsv`, for `scripts/compare_corruptions.py`.
    #[test]
    #[ignore = "run by scripts/compare_corruptions.py"]
    fn export_for_comparison() -> Result<()> {
        use anyhow::Context;
        let input = std::env::var("WESAM_CORRUPT_IN").context("set WESAM_CORRUPT_IN")?;
        let out = std::path::PathBuf::from(
            std::env::var("WESAM_CORRUPT_OUT").context("set WESAM_CORRUPT_OUT")?,
        );
        let seed = std::env::var("WESAM_CORRUPT_SEED").map_or(Ok(0), |s| s.parse())?;
        std::fs::create_dir_all(&out)?;
        let img = crate::io::read_rgb(std::path::Path::new(&input))?;
        let mut timings = String::from("corruption\tseverity\tseconds\n");
        for c in Corruption::ALL {
            for severity in 1..=5 {
                let start = std::time::Instant::now();
                let corrupted = corrupt(&img, c, severity, seed)?;
                let secs = start.elapsed().as_secs_f64();
                timings += &format!("{c}\t{severity}\t{secs:.4}\n");
                corrupted.save(out.join(format!("{c}_{severity}.png")))?;
            }
        }
        std::fs::write(out.join("timings.tsv"), timings)?;
        Ok(())
    }
}
