//! `wesam segment`: every object of an image without prompts, by the official automatic mask
//! generator's algorithm (`wesam::amg`), written as SA-1B-style JSON with COCO RLE masks.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::{GrayImage, Luma, Rgb, RgbImage};
use serde::Serialize;

use super::args::ModelArgs;
use wesam::amg::{generate, AmgConfig, MaskRecord};

#[derive(clap::Args, Debug)]
pub struct SegmentArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image, or a folder of images (one JSON file each).
    #[arg(long)]
    image: PathBuf,
    /// The output: a .json file for one image, a folder for a folder.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    generator: AmgArgs,
    /// Also write `<out>.labels.png` (object ids, larger masks under smaller ones; 16-bit when
    /// more than 255) and `<out>.overlay.png` beside each JSON file.
    #[arg(long)]
    png: bool,
    /// Write over existing outputs, or into a folder that already holds files.
    #[arg(long)]
    force: bool,
}

/// The automatic mask generator's settings on the command line (`segment`, `eval --auto`):
/// every one of the official generator's, as a flag and as a key of `--amg-config`.
#[derive(clap::Args, Debug)]
pub struct AmgArgs {
    /// The generator's settings as TOML (the keys of the flags below, with underscores);
    /// flags override it.
    #[arg(long)]
    amg_config: Option<PathBuf>,
    /// Points per side of the grid (default 32).
    #[arg(long)]
    points_per_side: Option<usize>,
    /// Prompts per decoder call, the memory knob (default 64).
    #[arg(long)]
    points_per_batch: Option<usize>,
    /// Keep masks whose predicted IoU is above this (default 0.88).
    #[arg(long)]
    pred_iou_thresh: Option<f64>,
    /// Keep masks whose stability score is at least this (default 0.95).
    #[arg(long)]
    stability_score_thresh: Option<f64>,
    /// The logit shift of the stability score (default 1.0).
    #[arg(long)]
    stability_score_offset: Option<f64>,
    /// Box IoU above which NMS drops a mask within a crop (default 0.7).
    #[arg(long)]
    box_nms_thresh: Option<f64>,
    /// Crop layers besides the whole image (default 0).
    #[arg(long)]
    crop_n_layers: Option<usize>,
    /// Box IoU above which NMS across crops drops a mask (default 0.7).
    #[arg(long)]
    crop_nms_thresh: Option<f64>,
    /// Overlap of layer 1's crops as a fraction of the short side (default 512/1500).
    #[arg(long)]
    crop_overlap_ratio: Option<f64>,
    /// Layer i uses points_per_side / factor^i points per side (default 1).
    #[arg(long)]
    crop_n_points_downscale_factor: Option<usize>,
    /// Remove holes and islands smaller than this many pixels (default 0: none).
    #[arg(long)]
    min_mask_region_area: Option<usize>,
}

impl AmgArgs {
    /// The generator's settings: the defaults, the --amg-config file, then the flags.
    pub fn settings(&self) -> anyhow::Result<AmgConfig> {
        let mut c = match &self.amg_config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid settings {}", p.display()))?
            }
            None => AmgConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),* $(,)?) => {
                $(if let Some(v) = self.$field { c.$field = v; })*
            };
        }
        set!(
            points_per_side,
            points_per_batch,
            pred_iou_thresh,
            stability_score_thresh,
            stability_score_offset,
            box_nms_thresh,
            crop_n_layers,
            crop_nms_thresh,
            crop_overlap_ratio,
            crop_n_points_downscale_factor,
            min_mask_region_area,
        );
        c.validate()?;
        Ok(c)
    }
}

/// SA-1B's per-image JSON: the image and its annotations.
#[derive(Serialize)]
struct ImageMasks<'a> {
    image: ImageInfo,
    annotations: Vec<Annotation<'a>>,
}

#[derive(Serialize)]
struct ImageInfo {
    image_id: usize,
    width: u32,
    height: u32,
    file_name: String,
}

#[derive(Serialize)]
struct Annotation<'a> {
    id: usize,
    #[serde(flatten)]
    record: &'a MaskRecord,
}

pub fn run(a: SegmentArgs) -> anyhow::Result<()> {
    let cfg = a.generator.settings()?;
    let jobs = super::images::jobs(&a.image, &a.out, "json", a.force)?;
    if a.png && !a.force {
        for (_, out) in &jobs {
            if let Some(p) = png_paths(out).iter().find(|p| p.exists()) {
                bail!("{} already exists; pass --force to replace it", p.display());
            }
        }
    }
    let (sam, lora, _) = a.model.load()?;
    let counts = super::images::for_each(&jobs, "segment", |index, image_path, out| {
        let image = wesam::io::read_rgb(image_path)?;
        let records = generate(&sam, lora.as_ref(), &image, &cfg)?;
        write_json(out, index, image_path, &image, &records)?;
        if a.png {
            write_pngs(out, &image, &records)?;
        }
        Ok(records.len())
    })?;
    let empty = counts.iter().filter(|&&n| n == 0).count();
    eprintln!(
        "{} masks in {} image{} written to {}",
        counts.iter().sum::<usize>(),
        counts.len(),
        if counts.len() == 1 { "" } else { "s" },
        a.out.display()
    );
    if empty > 0 {
        eprintln!(
            "warning: {empty} image{} got no mask at pred_iou_thresh {} and stability_score_thresh \
             {}: a model whose three outputs were never trained (`wesam train --multimask`), or \
             whose scores shifted in adaptation, may need lower ones",
            if empty == 1 { "" } else { "s" },
            cfg.pred_iou_thresh,
            cfg.stability_score_thresh
        );
    }
    Ok(())
}

fn write_json(
    out: &Path,
    index: usize,
    image_path: &Path,
    image: &RgbImage,
    records: &[MaskRecord],
) -> anyhow::Result<()> {
    let doc = ImageMasks {
        image: ImageInfo {
            image_id: index,
            width: image.width(),
            height: image.height(),
            file_name: image_path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string(),
        },
        annotations: records
            .iter()
            .enumerate()
            .map(|(id, record)| Annotation { id, record })
            .collect(),
    };
    let text = serde_json::to_string(&doc)? + "\n";
    wesam::io::write_atomically(out, |tmp| Ok(std::fs::write(tmp, text)?))
}

/// `<out>.labels.png` and `<out>.overlay.png`, beside the JSON file.
fn png_paths(out: &Path) -> [PathBuf; 2] {
    ["labels", "overlay"].map(|kind| out.with_extension(format!("{kind}.png")))
}

/// The label image (ids from 1 in record order, larger masks painted first so that smaller
/// ones stay visible) and an overlay of the masks on the image.
fn write_pngs(out: &Path, image: &RgbImage, records: &[MaskRecord]) -> anyhow::Result<()> {
    let (w, h) = image.dimensions();
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(records[i].area));
    let mut labels = vec![0u16; (w * h) as usize];
    for &i in &order {
        let rle = records[i]
            .segmentation
            .decode()
            .context("a generated mask's RLE does not decode")?;
        for (l, m) in labels.iter_mut().zip(rle.decode()) {
            if m {
                *l = (i + 1).min(u16::MAX as usize) as u16;
            }
        }
    }
    let mut overlay = image.clone();
    for (p, &l) in overlay.pixels_mut().zip(&labels) {
        if l > 0 {
            // A colour per id, from a fixed hash.
            let c = (u32::from(l)).wrapping_mul(2_654_435_761).to_le_bytes();
            *p = Rgb([0, 1, 2].map(|k| ((u16::from(p.0[k]) + u16::from(c[k])) / 2) as u8));
        }
    }
    let [labels_path, overlay_path] = png_paths(out);
    let label_image: image::DynamicImage = if records.len() <= 255 {
        GrayImage::from_fn(w, h, |x, y| Luma([labels[(y * w + x) as usize] as u8])).into()
    } else {
        image::ImageBuffer::<Luma<u16>, Vec<u16>>::from_raw(w, h, labels)
            .context("label image of another size")?
            .into()
    };
    wesam::io::write_image(&labels_path, &label_image)?;
    wesam::io::write_image(&overlay_path, &image::DynamicImage::ImageRgb8(overlay))
}
