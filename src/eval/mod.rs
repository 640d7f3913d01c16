//! `wesam eval`'s engine: a model over a dataset's images, each encoded once and all its
//! instance prompts decoded in one batch, scored per [`metrics`] against the ground truth and,
//! by [`agreement`], against the weak labels alone. [`sod`] holds the camouflage and shadow
//! metrics of SAM-Adapter's community.

pub mod agreement;
pub mod auto;
pub mod distance;
pub mod metrics;
pub mod sod;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Tensor};
use image::{GrayImage, Luma, Rgb, RgbImage};
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::data::prompts::{make_prompts, mask_to_frame, PromptConfig, PromptKind};
use crate::data::{FileIssue, Record, Sample};
use crate::model::transforms::Frame;
use crate::model::{Lora, Predictor, Sam};
use crate::ops::resize::{resize_2d, Interpolation};
use crate::profile::Profile;
use crate::progress::Progress;
use agreement::weak_label_agreement;
use metrics::{InstanceScore, MeanScores};
use sod::{sod_scores, SodScores};

/// What an evaluation does besides scoring.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalConfig {
    pub prompt: PromptKind,
    pub prompts: PromptConfig,
    pub profile: Profile,
    /// Seed of the point sampling; each image's stream depends on it and the image's id only.
    pub seed: u64,
    /// Where to write predicted masks and overlays, if anywhere.
    pub save_masks: Option<PathBuf>,
    /// Whether to also compute the camouflage and shadow metrics ([`sod`]) of every mask's
    /// probability map (on by default for prompt-free evaluation, where each image has one).
    pub sod_metrics: bool,
}

impl EvalConfig {
    /// An evaluation with `prompt` weak labels drawn as `prompts` says, under `profile`. The
    /// reference profile's evaluation also draws negative points in the padding, as its code
    /// does; this is the one place that rule is applied.
    pub fn new(prompt: PromptKind, mut prompts: PromptConfig, profile: Profile, seed: u64) -> Self {
        prompts.negatives_in_padding |= profile == Profile::WesamReference;
        Self {
            prompt,
            prompts,
            profile,
            seed,
            save_masks: None,
            sod_metrics: prompt == PromptKind::None,
        }
    }
}

/// One instance's scores, for `--per-instance`.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRow {
    pub image: String,
    pub instance: usize,
    pub iou: f64,
    pub dice: f64,
    pub biou: f64,
    /// Agreement with the weak label, in [0, 1].
    pub agreement: f64,
}

/// The result of an evaluation; metrics in percent.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    pub images: usize,
    pub instances: usize,
    pub miou: f64,
    pub dice: f64,
    pub biou: f64,
    /// How well the masks agree with their weak labels (inside the box and reaching its sides,
    /// or holding the positive points and not the negative ones; see
    /// [`weak_label_agreement`]), averaged as mIoU is: the one score a target domain without
    /// ground-truth masks can give.
    pub agreement: f64,
    /// The camouflage and shadow metrics, averaged per image as mIoU is (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sod: Option<SodScores>,
    pub skipped: Vec<FileIssue>,
    #[serde(skip)]
    pub per_instance: Vec<InstanceRow>,
    pub seconds: f64,
}

/// A stable per-image seed, so results do not depend on loading order.
fn image_seed(seed: u64, id: &str) -> u64 {
    id.bytes().fold(seed ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Thresholded masks `[n, H, W]` (logits) as binary images.
fn binary_masks(logits: &Tensor, profile: Profile) -> Result<Vec<GrayImage>> {
    let (_, h, w) = logits.dims3()?;
    let v = logits.to_dtype(DType::F32)?.to_vec3::<f32>()?;
    Ok(v.iter()
        .map(|m| {
            GrayImage::from_fn(w as u32, h as u32, |x, y| {
                Luma([if profile.is_foreground(m[y as usize][x as usize]) {
                    255
                } else {
                    0
                }])
            })
        })
        .collect())
}

/// One sample's predicted masks, their scores against the ground truth, and their agreement
/// with the weak labels that prompted them.
pub struct Prediction {
    pub masks: Vec<GrayImage>,
    pub scores: Vec<InstanceScore>,
    /// Per instance, in [0, 1].
    pub agreement: Vec<f64>,
    /// Per instance, when the configuration asks for them.
    pub sod: Vec<SodScores>,
}

/// Predicts every instance of one sample and scores it. The `sam` profile scores at the
/// image's own resolution; the reference profile on the padded input canvas, as its code does.
/// The agreement with the weak labels is measured on the decoder's low-resolution masks in the
/// input frame, as the `weak-label` anchor weighting measures it during training.
pub fn predict_and_score(
    sam: &Sam,
    lora: Option<&Lora>,
    sample: &Sample,
    cfg: &EvalConfig,
) -> Result<Prediction> {
    let mut predictor = Predictor::new(sam, lora, cfg.profile.preprocessing());
    predictor.set_image(&sample.image)?;
    let frame = predictor.frame()?;
    let mut rng = StdRng::seed_from_u64(image_seed(cfg.seed, &sample.id));
    let weak_labels = make_prompts(
        &sample.instances,
        &frame,
        cfg.prompt,
        &cfg.prompts,
        &mut rng,
    );
    let low = predictor.low_res_size();
    let prompts = weak_labels.to_model(low, cfg.prompts.coarse_mask_logit, &sam.device)?;
    let low_res = predictor.predict_in_frame(&prompts, false)?.low_res;
    let low_masks: Vec<f32> = low_res
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(|v| f32::from(u8::from(cfg.profile.is_foreground(v))))
        .collect();
    let agreement = weak_label_agreement(&low_masks, low, frame.size, &weak_labels)
        .into_iter()
        .map(f64::from)
        .collect();
    let (logits, gts): (Tensor, Vec<GrayImage>) = match cfg.profile {
        Profile::Sam => (
            predictor.full_resolution(&low_res)?.squeeze(1)?,
            sample.instances.iter().map(|i| i.mask.clone()).collect(),
        ),
        Profile::WesamReference => {
            let s = frame.size;
            let canvas = resize_2d(&low_res, s, s, Interpolation::Bilinear)?.squeeze(1)?;
            let gts = sample
                .instances
                .iter()
                .map(|i| mask_to_frame(&i.mask, &frame))
                .collect();
            (canvas, gts)
        }
    };
    let preds = binary_masks(&logits, cfg.profile)?;
    let sod = if cfg.sod_metrics {
        sod_per_mask(&logits, &gts)?
    } else {
        Vec::new()
    };
    let scores = preds
        .iter()
        .zip(&gts)
        .map(|(p, g)| metrics::score(p, g))
        .collect();
    let masks = match cfg.profile {
        Profile::Sam => preds,
        Profile::WesamReference => preds.iter().map(|p| crop_to_image(p, &frame)).collect(),
    };
    Ok(Prediction {
        masks,
        scores,
        agreement,
        sod,
    })
}

/// The camouflage and shadow metrics of each mask's probability map (the sigmoid of its logits
/// `[n, H, W]`) against its ground truth.
fn sod_per_mask(logits: &Tensor, gts: &[GrayImage]) -> Result<Vec<SodScores>> {
    let (_, h, w) = logits.dims3()?;
    let maps = logits.to_dtype(DType::F64)?.to_vec3::<f64>()?;
    Ok(maps
        .iter()
        .zip(gts)
        .map(|(map, gt)| {
            let prob: Vec<f64> = map
                .iter()
                .flatten()
                .map(|&x| 1.0 / (1.0 + (-x).exp()))
                .collect();
            let gt: Vec<bool> = gt.pixels().map(|p| p.0[0] > 0).collect();
            sod_scores(&prob, &gt, h, w)
        })
        .collect())
}

/// A mask on the padded canvas cut back to the image and resized to its original size.
fn crop_to_image(m: &GrayImage, frame: &Frame) -> GrayImage {
    let (top, left) = frame.offset;
    let (rh, rw) = frame.resized;
    let crop =
        image::imageops::crop_imm(m, left as u32, top as u32, rw as u32, rh as u32).to_image();
    let (h, w) = frame.original;
    image::imageops::resize(
        &crop,
        w as u32,
        h as u32,
        image::imageops::FilterType::Nearest,
    )
}

/// Writes `<id>.png` (instance ids, 0 background) and `<id>_overlay.png` into `dir`.
fn save_predictions(dir: &std::path::Path, sample: &Sample, preds: &[GrayImage]) -> Result<()> {
    const COLOURS: [[u8; 3]; 6] = [
        [30, 144, 255],
        [255, 99, 71],
        [50, 205, 50],
        [255, 215, 0],
        [186, 85, 211],
        [0, 206, 209],
    ];
    let (w, h) = sample.image.dimensions();
    let mut ids = GrayImage::new(w, h);
    let mut overlay: RgbImage = sample.image.clone();
    for (i, m) in preds.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        for (x, y, p) in m.enumerate_pixels() {
            if p.0[0] > 0 {
                ids.put_pixel(x, y, Luma([(i + 1).min(255) as u8]));
                let o = overlay.get_pixel_mut(x, y);
                *o = Rgb([0, 1, 2].map(|k| ((o.0[k] as u16 + c[k] as u16) / 2) as u8));
            }
        }
    }
    let stem = sample.id.replace(['/', '\\'], "_");
    crate::io::write_image(
        &dir.join(format!("{stem}.png")),
        &image::DynamicImage::ImageLuma8(ids),
    )?;
    crate::io::write_image(
        &dir.join(format!("{stem}_overlay.png")),
        &image::DynamicImage::ImageRgb8(overlay),
    )
}

/// Evaluates over loaded samples (a stream: each is dropped once scored). Samples that failed to
/// load, or have no instance, are skipped and listed.
pub fn evaluate(
    sam: &Sam,
    lora: Option<&Lora>,
    samples: impl Iterator<Item = (Record, Result<Sample>)>,
    cfg: &EvalConfig,
    progress: &dyn Progress,
) -> Result<EvalReport> {
    let start = Instant::now();
    let frozen = lora.map(Lora::frozen);
    let mut means = MeanScores::default();
    let mut agreement_sum = 0.0;
    let mut sod_per_image = Vec::new();
    let mut report = EvalReport::default();
    for (record, sample) in samples {
        let sample = match sample {
            Ok(s) if s.instances.is_empty() => {
                report.skipped.push(FileIssue {
                    file: record.image.display().to_string(),
                    reason: "no instance".into(),
                });
                progress.advance("");
                continue;
            }
            Ok(mut s) => {
                if cfg.prompt == PromptKind::None {
                    s.merge_instances();
                }
                s
            }
            Err(e) => {
                report.skipped.push(FileIssue {
                    file: record.image.display().to_string(),
                    reason: format!("{e:#}"),
                });
                progress.advance("");
                continue;
            }
        };
        let Prediction {
            masks,
            scores,
            agreement,
            sod,
        } = predict_and_score(sam, frozen.as_ref(), &sample, cfg)?;
        if !sod.is_empty() {
            sod_per_image.push(SodScores::mean(&sod));
        }
        if let Some(dir) = &cfg.save_masks {
            save_predictions(dir, &sample, &masks)?;
        }
        agreement_sum += agreement.iter().sum::<f64>() / agreement.len().max(1) as f64;
        for (i, s) in scores.iter().enumerate() {
            report.per_instance.push(InstanceRow {
                image: sample.id.clone(),
                instance: i,
                iou: s.iou,
                dice: s.dice,
                biou: s.biou,
                agreement: agreement[i],
            });
        }
        means.add_image(&scores);
        let (miou, _, _) = means.percent();
        progress.advance(&format!("mIoU {miou:.2}"));
    }
    if means.images == 0 && report.skipped.is_empty() {
        anyhow::bail!("no image to evaluate: the split is empty");
    }
    if means.images == 0 {
        let why: Vec<String> = report
            .skipped
            .iter()
            .take(3)
            .map(|s| format!("{}: {}", s.file, s.reason))
            .collect();
        anyhow::bail!(
            "no image could be evaluated: all {} were skipped ({}{})",
            report.skipped.len(),
            why.join("; "),
            if report.skipped.len() > 3 {
                "; ..."
            } else {
                ""
            }
        );
    }
    (report.miou, report.dice, report.biou) = means.percent();
    (report.images, report.instances) = (means.images, means.instances);
    report.agreement = 100.0 * agreement_sum / means.images.max(1) as f64;
    report.sod = cfg.sod_metrics.then(|| SodScores::mean(&sod_per_image));
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
