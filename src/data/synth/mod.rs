//! Synthetic segmentation datasets with controlled domain shifts, for training a small SAM from
//! scratch on a `source` domain and adapting it to target domains without real data.
//!
//! A scene (background and 2–5 occluding textured shapes, see `scene.rs`) is a function of the
//! seed and the image index alone; a [`Domain`] changes only how it looks (and, for `clutter`,
//! hides parts of objects behind occluders). [`write_dataset`] writes a dataset in the `folder`
//! layout: `images/`, `masks/` (instance ids), `splits/` and `synth.json`.

mod scene;

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::path::Path;

use anyhow::{bail, Context};
use image::{DynamicImage, GrayImage, RgbImage};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::corrupt::{corrupt, Corruption};
use scene::{Colour, Pattern, Scene, Texture};

/// Version of the generator, written to `synth.json`: bump it whenever a (seed, index) pair
/// would give other pixels, so datasets from different versions are not mixed up.
pub const VERSION: u32 = 1;
/// The default image side: small enough to train a small SAM from scratch quickly.
pub const DEFAULT_IMAGE_SIZE: u32 = 128;
/// Image sides [`render`] accepts: below 32 objects are a few pixels, above 4096 the masks'
/// memory per image is unreasonable.
pub const IMAGE_SIZES: RangeInclusive<u32> = 32..=4096;

// Per-domain constants: what each target domain's shift models and how strong it is.

/// `noise`: sensor noise of a dark or cheap camera; COCO-C's gaussian_noise at severity 4
/// (σ = 26% of the range): textures drown and edges are ragged, but every object stays visible.
const NOISE: (Corruption, u8) = (Corruption::GaussianNoise, 4);
/// `blur`: an out-of-focus camera; COCO-C's defocus_blur at severity 3 (disk radius 6 px):
/// edges spread over a dozen pixels and 16 px objects become blobs, still visible at 128².
/// The radius is in pixels, so the shift is milder at larger `--image-size`.
const BLUR: (Corruption, u8) = (Corruption::DefocusBlur, 3);
/// `jpeg`: heavy compression of web images; COCO-C's jpeg_compression at severity 5
/// (quality 7, as in WeSAM's COCO-C): 8 px blocks, lost textures and colour bleeding across
/// object edges.
const JPEG: (Corruption, u8) = (Corruption::JpegCompression, 5);
/// `fog`: haze that lowers contrast unevenly; COCO-C's fog at severity 3: cloudy patches as
/// large as objects and washed-out colours, objects faint but visible.
const FOG: (Corruption, u8) = (Corruption::Fog, 3);
/// `camouflage` (like COD10K, CAMO, CHAMELEON): how far each object's copy of the background
/// texture is shifted (in lattice cells of a noise texture, or periods of stripes), so the
/// texture does not continue across the object's edge.
const CAMOUFLAGE_SHIFT: (f32, f32) = (0.3, 0.7);
/// `camouflage`: how far (RGB distance) an object's colours are moved from the background's:
/// a faint colour cue besides the texture seam.
const CAMOUFLAGE_COLOUR_SHIFT: f32 = 18.0;
/// `camouflage`: the scale change of an object's copy of a noise texture (a subtle cue).
const CAMOUFLAGE_SCALE: (f32, f32) = (0.8, 1.25);
/// `camouflage`: lattice cell of the noise background that replaces a smooth gradient one, as a
/// fraction of the image side (camouflage needs a texture to hide in).
const CAMOUFLAGE_CELL: (f32, f32) = (0.08, 0.2);
/// `low-contrast` (like endoscopy and dermoscopy images): the factor pixel values are pulled
/// towards the image mean by.
const LOW_CONTRAST_GAIN: f32 = 0.35;
/// `low-contrast`: the pinkish tissue colour the image is blended towards, and how much.
const LOW_CONTRAST_TINT: (Colour, f32) = ([225.0, 120.0, 130.0], 0.45);
/// `low-contrast`: darkening at the corners (fraction), the vignette of an endoscope's light.
const LOW_CONTRAST_VIGNETTE: f32 = 0.5;
/// `low-contrast`: brightness change (±fraction) across the image along a random direction,
/// uneven illumination.
const LOW_CONTRAST_ILLUMINATION: f32 = 0.25;
/// `clutter` (like OCID and OSD tabletops): unannotated distractor objects on the background.
const CLUTTER_DISTRACTORS: RangeInclusive<usize> = 10..=20;
/// `clutter`: the distractors' extent in pixels at 128², smaller than annotated objects.
const CLUTTER_DISTRACTOR_EXTENT: (f32, f32) = (5.0, 14.0);
/// `clutter`: occluders (bars and blobs) drawn over annotated objects, whose masks lose the
/// hidden parts.
const CLUTTER_OCCLUDERS: RangeInclusive<usize> = 1..=3;
/// `clutter`: an occluding bar's length in pixels at 128² (width is 15–25% of it).
const CLUTTER_BAR_LENGTH: (f32, f32) = (25.0, 60.0);
/// `clutter`: an occluding blob's extent in pixels at 128².
const CLUTTER_BLOB_EXTENT: (f32, f32) = (10.0, 20.0);

/// The appearance a synthetic dataset is rendered in: the source domain a model is trained on,
/// or a target domain it is adapted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Domain {
    /// Clear textured shapes on textured backgrounds.
    Source,
    /// Gaussian noise (COCO-C gaussian_noise).
    Noise,
    /// Defocus blur (COCO-C defocus_blur).
    Blur,
    /// JPEG compression artefacts (COCO-C jpeg_compression).
    Jpeg,
    /// Fog (COCO-C fog).
    Fog,
    /// Objects filled with the background's own texture, shifted and slightly recoloured.
    Camouflage,
    /// Faint, pink-tinted images with a vignette and uneven light (medical-like).
    LowContrast,
    /// Unannotated distractors and occluders over the objects (tabletop-like).
    Clutter,
}

impl Domain {
    /// Every domain, source first.
    pub const ALL: [Domain; 8] = [
        Self::Source,
        Self::Noise,
        Self::Blur,
        Self::Jpeg,
        Self::Fog,
        Self::Camouflage,
        Self::LowContrast,
        Self::Clutter,
    ];

    /// The command-line and `synth.json` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Noise => "noise",
            Self::Blur => "blur",
            Self::Jpeg => "jpeg",
            Self::Fog => "fog",
            Self::Camouflage => "camouflage",
            Self::LowContrast => "low-contrast",
            Self::Clutter => "clutter",
        }
    }

    /// The COCO-C corruption (and severity) of the source rendering, for the corruption domains.
    fn corruption(self) -> Option<(Corruption, u8)> {
        match self {
            Self::Noise => Some(NOISE),
            Self::Blur => Some(BLUR),
            Self::Jpeg => Some(JPEG),
            Self::Fog => Some(FOG),
            _ => None,
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Renders image `index` of the dataset `seed` in `domain` at `size`²: the RGB image and its
/// instance ids (0 background, 1..k one per object). The same seed and index give the same
/// scene in every domain, so masks agree across domains (clutter's are subsets).
pub fn render(
    domain: Domain,
    seed: u64,
    index: u64,
    size: u32,
) -> anyhow::Result<(RgbImage, GrayImage)> {
    check_size(size)?;
    // The scene draws come first, so every domain continues from the same state.
    let rng = &mut StdRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let scene = Scene::generate(rng, size);
    let layers: Vec<_> = scene.objects.iter().map(|o| (&o.mask, &o.fill)).collect();
    let source = || scene::paint(size, &scene.background, &layers);
    Ok(match (domain, domain.corruption()) {
        (_, Some((c, severity))) => (
            corrupt(&source(), c, severity, rng.random())?,
            scene.labels(),
        ),
        (Domain::Camouflage, _) => (camouflage(&scene, rng), scene.labels()),
        (Domain::LowContrast, _) => (low_contrast(&source(), rng), scene.labels()),
        (Domain::Clutter, _) => clutter(&scene, rng),
        _ => (source(), scene.labels()),
    })
}

/// Rejects an image side outside [`IMAGE_SIZES`].
fn check_size(size: u32) -> anyhow::Result<()> {
    if !IMAGE_SIZES.contains(&size) {
        bail!(
            "the synthetic image size (--image-size) must be {} to {} pixels, not {size}",
            IMAGE_SIZES.start(),
            IMAGE_SIZES.end()
        );
    }
    Ok(())
}

/// The scene with a texture background (noise in place of a smooth gradient) and every object
/// filled with a shifted, slightly recoloured copy of it.
fn camouflage(scene: &Scene, rng: &mut StdRng) -> RgbImage {
    let size = scene.size as f32;
    let mut background = scene.background;
    if !matches!(
        background.pattern,
        Pattern::Noise { .. } | Pattern::Stripes { .. }
    ) {
        background.pattern = Pattern::Noise {
            cell: size * rng.random_range(CAMOUFLAGE_CELL.0..=CAMOUFLAGE_CELL.1),
            key: rng.random(),
            offset: (0.0, 0.0),
        };
    }
    let fills: Vec<Texture> = scene
        .objects
        .iter()
        .map(|_| {
            let mut fill = background;
            let shift = rng.random_range(CAMOUFLAGE_SHIFT.0..=CAMOUFLAGE_SHIFT.1);
            let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            fill.pattern = match background.pattern {
                Pattern::Noise { cell, key, offset } => {
                    let angle = rng.random_range(0.0..std::f32::consts::TAU);
                    Pattern::Noise {
                        cell: cell * rng.random_range(CAMOUFLAGE_SCALE.0..=CAMOUFLAGE_SCALE.1),
                        key,
                        offset: (
                            offset.0 + shift * cell * angle.cos(),
                            offset.1 + shift * cell * angle.sin(),
                        ),
                    }
                }
                Pattern::Stripes {
                    angle,
                    period,
                    phase,
                } => Pattern::Stripes {
                    angle: angle + sign * shift * 0.3,
                    period,
                    phase: phase + shift,
                },
                other => other,
            };
            let delta = scene::shifted([0.0; 3], CAMOUFLAGE_COLOUR_SHIFT, rng);
            fill.a = std::array::from_fn(|i| (fill.a[i] + delta[i]).clamp(0.0, 255.0));
            fill.b = std::array::from_fn(|i| (fill.b[i] + delta[i]).clamp(0.0, 255.0));
            fill
        })
        .collect();
    let layers: Vec<_> = scene
        .objects
        .iter()
        .zip(&fills)
        .map(|(o, f)| (&o.mask, f))
        .collect();
    scene::paint(scene.size, &background, &layers)
}

/// The image with its contrast reduced, tinted pink, vignetted and unevenly lit.
fn low_contrast(img: &RgbImage, rng: &mut StdRng) -> RgbImage {
    let n = (img.width() * img.height()).max(1) as f32;
    let mean: [f32; 3] =
        std::array::from_fn(|c| img.pixels().map(|p| p.0[c] as f32).sum::<f32>() / n);
    let (tint, weight) = LOW_CONTRAST_TINT;
    let angle = rng.random_range(0.0..std::f32::consts::TAU);
    let (w, h) = (img.width() as f32, img.height() as f32);
    let half_diagonal = (w * w + h * h).sqrt() / 2.0;
    let mut out = img.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let (dx, dy) = (x as f32 + 0.5 - w / 2.0, y as f32 + 0.5 - h / 2.0);
        let r2 = (dx * dx + dy * dy) / (half_diagonal * half_diagonal);
        let along = (dx * angle.cos() + dy * angle.sin()) / half_diagonal;
        let light = (1.0 - LOW_CONTRAST_VIGNETTE * r2) * (1.0 + LOW_CONTRAST_ILLUMINATION * along);
        for c in 0..3 {
            let v = mean[c] + (p.0[c] as f32 - mean[c]) * LOW_CONTRAST_GAIN;
            let v = v * (1.0 - weight) + tint[c] * weight;
            p.0[c] = (v * light).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// The scene with small distractors on the background and occluders over the objects; the
/// occluded parts leave the masks and instances left too small are dropped.
fn clutter(scene: &Scene, rng: &mut StdRng) -> (RgbImage, GrayImage) {
    let size = scene.size;
    let s = scene::scale(size);
    let min = scene::min_area(size);
    let extent = (
        CLUTTER_DISTRACTOR_EXTENT.0 * s,
        CLUTTER_DISTRACTOR_EXTENT.1 * s,
    );
    let mut under: Vec<(GrayImage, Texture)> = Vec::new();
    for _ in 0..rng.random_range(CLUTTER_DISTRACTORS) {
        let mask = scene::random_shape(rng, size, extent, 1);
        let fill = scene::contrasting_fill(rng, &mask, &[scene.background.a, scene.background.b]);
        under.push((mask, fill));
    }
    let mut labels = scene.labels();
    let mut over: Vec<(GrayImage, Texture)> = Vec::new();
    for _ in 0..rng.random_range(CLUTTER_OCCLUDERS) {
        let target = rng.random_range(0..scene.objects.len().max(1));
        let Some(object) = scene.objects.get(target) else {
            break;
        };
        let [x0, y0, x1, y1] =
            crate::data::mask::bounding_box(&object.mask).unwrap_or([0.0, 0.0, 1.0, 1.0]);
        let centre = (
            rng.random_range(x0..=x1.max(x0 + 1.0)),
            rng.random_range(y0..=y1.max(y0 + 1.0)),
        );
        let outline = if rng.random_bool(0.5) {
            let length = rng.random_range(CLUTTER_BAR_LENGTH.0..=CLUTTER_BAR_LENGTH.1) * s;
            let aspect = rng.random_range(0.15..=0.25);
            scene::rectangle(
                centre,
                length / 2.0,
                aspect,
                rng.random_range(0.0..std::f32::consts::PI),
            )
        } else {
            let e = rng.random_range(CLUTTER_BLOB_EXTENT.0..=CLUTTER_BLOB_EXTENT.1) * s;
            scene::random_outline(rng, centre, e)
        };
        let mask = scene::rasterise(size, &outline);
        let fill = scene::contrasting_fill(rng, &mask, &[object.fill.a, object.fill.b]);
        let mut hidden = labels.clone();
        scene::stamp(&mut hidden, &mask, 0);
        // An occluder that would leave no annotated instance is not drawn.
        let areas = scene::visible_areas(&hidden, scene.objects.len());
        if areas.iter().any(|&a| a >= min) {
            labels = hidden;
            over.push((mask, fill));
        }
    }
    let layers: Vec<(&GrayImage, &Texture)> = under
        .iter()
        .map(|(m, f)| (m, f))
        .chain(scene.objects.iter().map(|o| (&o.mask, &o.fill)))
        .chain(over.iter().map(|(m, f)| (m, f)))
        .collect();
    let image = scene::paint(size, &scene.background, &layers);
    (image, drop_small(&labels, scene.objects.len(), min))
}

/// The label map with ids whose area is under `min` set to 0 and the rest renumbered 1..k in
/// order.
fn drop_small(labels: &GrayImage, n: usize, min: usize) -> GrayImage {
    let mut next = 0u8;
    let new_ids: Vec<u8> = std::iter::once(0)
        .chain(scene::visible_areas(labels, n).into_iter().map(|a| {
            if a >= min {
                next += 1;
                next
            } else {
                0
            }
        }))
        .collect();
    let mut out = labels.clone();
    for p in out.pixels_mut() {
        p.0[0] = new_ids.get(p.0[0] as usize).copied().unwrap_or(0);
    }
    out
}

/// What a synthetic dataset is: given to [`write_dataset`], written into `synth.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthConfig {
    /// The appearance the images are rendered in.
    pub domain: Domain,
    /// Seed of the scenes (the same in every domain).
    pub seed: u64,
    /// Number of images.
    pub count: usize,
    /// Side of the square images.
    pub image_size: u32,
}

/// What [`write_dataset`] wrote; also the content of `synth.json`, so a dataset says how to
/// regenerate it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynthInfo {
    /// `wesam synth`.
    pub generator: String,
    /// [`VERSION`] of the generator that wrote the dataset.
    pub version: u32,
    #[serde(flatten)]
    pub config: SynthConfig,
    /// Annotated instances over all images.
    pub instances: usize,
    /// Images in the train, val and test splits.
    pub splits: SplitSizes,
}

/// Sizes of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitSizes {
    /// The first 70% of the images.
    pub train: usize,
    /// The next 10%.
    pub val: usize,
    /// The rest.
    pub test: usize,
}

impl SplitSizes {
    /// 70% train, 10% val, the rest (20%, at least one image) test, by index order.
    pub fn of(count: usize) -> Self {
        let (train, val) = (count * 7 / 10, count / 10);
        Self {
            train,
            val,
            test: count - train - val,
        }
    }
}

/// Writes `config.count` images of `config.domain` under `out` in the `folder` layout
/// (`images/NNNNN.png`, `masks/NNNNN.png`, `splits/{train,val,test}.txt`) and `synth.json`.
/// Refuses an `out/images` that already holds files unless `force`, which also removes the
/// numbered images and masks of a larger earlier run.
pub fn write_dataset(out: &Path, config: &SynthConfig, force: bool) -> anyhow::Result<SynthInfo> {
    if config.count == 0 {
        bail!("give at least one image to generate (--count)");
    }
    check_size(config.image_size)?;
    let images = out.join("images");
    let masks = out.join("masks");
    let occupied = match std::fs::read_dir(&images) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read directory {}", images.display()))
        }
    };
    if occupied && !force {
        bail!(
            "{} already holds files; choose another --out or pass --force to overwrite",
            images.display()
        );
    }
    let width = 5.max((config.count - 1).to_string().len());
    let stems: Vec<String> = (0..config.count).map(|i| format!("{i:0width$}")).collect();
    let instances = stems
        .par_iter()
        .enumerate()
        .map(|(i, stem)| -> anyhow::Result<usize> {
            let (image, labels) = render(config.domain, config.seed, i as u64, config.image_size)?;
            let n = labels.pixels().map(|p| p.0[0]).max().unwrap_or(0) as usize;
            crate::io::write_image(
                &images.join(format!("{stem}.png")),
                &DynamicImage::ImageRgb8(image),
            )?;
            crate::io::write_image(
                &masks.join(format!("{stem}.png")),
                &DynamicImage::ImageLuma8(labels),
            )?;
            Ok(n)
        })
        .collect::<anyhow::Result<Vec<usize>>>()?
        .into_iter()
        .sum();
    if force {
        let keep: HashSet<&str> = stems.iter().map(String::as_str).collect();
        remove_stale(&images, &keep)?;
        remove_stale(&masks, &keep)?;
    }
    let splits = SplitSizes::of(config.count);
    let (train, rest) = stems.split_at(splits.train);
    let (val, test) = rest.split_at(splits.val);
    for (name, list) in [("train", train), ("val", val), ("test", test)] {
        let text: String = list.iter().map(|s| format!("{s}\n")).collect();
        crate::io::write_atomically(&out.join(format!("splits/{name}.txt")), |tmp| {
            Ok(std::fs::write(tmp, text)?)
        })?;
    }
    let info = SynthInfo {
        generator: "wesam synth".into(),
        version: VERSION,
        config: config.clone(),
        instances,
        splits,
    };
    let json = serde_json::to_string_pretty(&info)? + "\n";
    crate::io::write_atomically(&out.join("synth.json"), |tmp| {
        Ok(std::fs::write(tmp, json)?)
    })?;
    Ok(info)
}

/// Removes the numbered PNGs (`<digits>.png`) of `dir` whose stem is not in `keep`: what an
/// earlier, larger run left behind.
fn remove_stale(dir: &Path, keep: &HashSet<&str>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read directory {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read directory {}", dir.display()))?
            .path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let numbered = !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit());
        if numbered && path.extension().is_some_and(|e| e == "png") && !keep.contains(stem) {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove stale file {}", path.display()))?;
        }
    }
    Ok(())
}
