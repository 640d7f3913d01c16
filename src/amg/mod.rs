//! Automatic mask generation (`wesam segment`): the official `SamAutomaticMaskGenerator`'s
//! algorithm and defaults, on wesam's encoder, prompt encoder and decoder, so that an adapted
//! model segments whole images without prompts. A grid of single positive points over the
//! image (and over zoomed crops), three masks per point, filtered by the IoU head's score and
//! by the stability of the mask under a shift of the logit threshold, cut where a crop edge cuts
//! them, deduplicated by box NMS, optionally cleaned of small holes and islands; each mask a
//! COCO RLE record as SA-1B's. `docs/segment.md` says where wesam's defaults come from;
//! `tests/amg.rs` checks the records against the official generator's.

pub mod cleanup;
pub mod geometry;
pub mod rle;

use anyhow::Result;
use candle_core::DType;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::data::prompts::FramePrompts;
use crate::model::transforms::Preprocessing;
use crate::model::{Lora, Predictor, Sam};
use cleanup::{remove_small_regions, Region};
use geometry::{box_area, crop_boxes, layer_point_grids, mask_box, near_crop_edge, nms, XyxyBox};
use rle::{CocoRle, Rle};

/// The generator's settings; the defaults are the official generator's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmgConfig {
    /// Points per side of the grid of the whole image (32² = 1024 prompts).
    pub points_per_side: usize,
    /// Prompts per decoder call: the memory knob (each holds three full-size logit maps).
    pub points_per_batch: usize,
    /// Keep a mask whose predicted IoU is above this (no filter at 0 or below).
    pub pred_iou_thresh: f64,
    /// Keep a mask whose stability score is at least this (no filter at 0 or below).
    pub stability_score_thresh: f64,
    /// The logit shift of the stability score: `|logit > δ| / |logit > −δ|`.
    pub stability_score_offset: f64,
    /// Box IoU above which NMS drops the lower-scoring mask within a crop.
    pub box_nms_thresh: f64,
    /// Crop layers besides the whole image: layer `i` tiles it with `2^i x 2^i` crops.
    pub crop_n_layers: usize,
    /// Box IoU above which NMS across crops drops the mask of the larger crop.
    pub crop_nms_thresh: f64,
    /// Overlap of neighbouring crops of layer 1, as a fraction of the image's short side.
    pub crop_overlap_ratio: f64,
    /// Layer `i` uses `points_per_side / factor^i` points per side.
    pub crop_n_points_downscale_factor: usize,
    /// Above 0: holes and islands smaller than this many pixels are removed, then NMS again.
    pub min_mask_region_area: usize,
}

impl Default for AmgConfig {
    fn default() -> Self {
        Self {
            points_per_side: 32,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.95,
            stability_score_offset: 1.0,
            box_nms_thresh: 0.7,
            crop_n_layers: 0,
            crop_nms_thresh: 0.7,
            crop_overlap_ratio: 512.0 / 1500.0,
            crop_n_points_downscale_factor: 1,
            min_mask_region_area: 0,
        }
    }
}

impl AmgConfig {
    /// Refuses settings the generator cannot use, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            (self.points_per_side >= 1, "points_per_side", "at least 1"),
            (self.points_per_batch >= 1, "points_per_batch", "at least 1"),
            (
                self.crop_n_points_downscale_factor >= 1,
                "crop_n_points_downscale_factor",
                "at least 1",
            ),
            (
                self.points_per_side
                    / self
                        .crop_n_points_downscale_factor
                        .pow(self.crop_n_layers as u32)
                    >= 1,
                "points_per_side",
                "large enough for a point per side in the last crop layer",
            ),
            (
                self.stability_score_offset.is_finite() && self.stability_score_offset >= 0.0,
                "stability_score_offset",
                "a finite number >= 0",
            ),
            (
                (0.0..1.0).contains(&self.crop_overlap_ratio),
                "crop_overlap_ratio",
                "in [0, 1)",
            ),
        ];
        for (ok, key, what) in checks {
            if !ok {
                anyhow::bail!("{key} must be {what}");
            }
        }
        for (v, key) in [
            (self.pred_iou_thresh, "pred_iou_thresh"),
            (self.stability_score_thresh, "stability_score_thresh"),
            (self.box_nms_thresh, "box_nms_thresh"),
            (self.crop_nms_thresh, "crop_nms_thresh"),
        ] {
            if !v.is_finite() {
                anyhow::bail!("{key} must be a finite number");
            }
        }
        Ok(())
    }
}

/// One generated mask, as the official generator's `coco_rle` record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskRecord {
    pub segmentation: CocoRle,
    /// Object pixels.
    pub area: u64,
    /// `[x, y, w, h]` with `w = x1 − x0` of the inclusive corners (one less than the extent),
    /// as the official code writes it.
    pub bbox: [f64; 4],
    pub predicted_iou: f64,
    /// The prompt point, in the image's pixels.
    pub point_coords: Vec<[f64; 2]>,
    pub stability_score: f64,
    /// The crop it came from, `[x, y, w, h]`.
    pub crop_box: [f64; 4],
}

/// A mask while it is being generated: its mask in the image's frame, its box and point in its
/// crop's.
#[derive(Debug, Clone)]
struct Candidate {
    rle: Rle,
    bbox: XyxyBox,
    iou: f64,
    point: [f64; 2],
    stability: f64,
    crop: [usize; 4],
}

/// The masks of one image, in the official generator's order.
pub fn generate(
    sam: &Sam,
    lora: Option<&Lora>,
    image: &RgbImage,
    cfg: &AmgConfig,
) -> Result<Vec<MaskRecord>> {
    Ok(candidates(sam, lora, image, cfg)?.select(cfg))
}

/// The masks of one image that pass `cfg`'s score thresholds and the crop-edge filter, per crop,
/// before any NMS: the expensive part of generation (one encoder pass per crop, the decoder
/// for every point), which [`Candidates::select`] turns into records for these or any higher
/// thresholds without running the model again (`wesam eval --auto --calibrate`).
pub fn candidates(
    sam: &Sam,
    lora: Option<&Lora>,
    image: &RgbImage,
    cfg: &AmgConfig,
) -> Result<Candidates> {
    cfg.validate()?;
    let (h, w) = (image.height() as usize, image.width() as usize);
    let grids = layer_point_grids(
        cfg.points_per_side,
        cfg.crop_n_layers,
        cfg.crop_n_points_downscale_factor,
    );
    let crops = crop_boxes((h, w), cfg.crop_n_layers, cfg.crop_overlap_ratio);
    let per_crop = crops
        .iter()
        .map(|&(crop, layer)| process_crop(sam, lora, image, crop, &grids[layer], cfg))
        .collect::<Result<_>>()?;
    Ok(Candidates { per_crop })
}

/// An image's candidate masks, per crop ([`candidates`]).
#[derive(Debug, Clone)]
pub struct Candidates {
    per_crop: Vec<Vec<Candidate>>,
}

impl Candidates {
    /// The records `cfg` keeps: its thresholds, box NMS within each crop, NMS across crops (the
    /// smaller crop's mask wins), then the small-region cleanup.
    pub fn select(&self, cfg: &AmgConfig) -> Vec<MaskRecord> {
        let mut masks: Vec<Candidate> = Vec::new();
        for crop in &self.per_crop {
            let kept: Vec<Candidate> = crop
                .iter()
                .filter(|m| passes(cfg, m.iou, || m.stability))
                .cloned()
                .collect();
            let boxes: Vec<XyxyBox> = kept.iter().map(|m| m.bbox).collect();
            let scores: Vec<f64> = kept.iter().map(|m| m.iou).collect();
            for mut m in take(kept, &nms(&boxes, &scores, cfg.box_nms_thresh)) {
                let (dx, dy) = (m.crop[0] as f64, m.crop[1] as f64);
                m.bbox = [
                    m.bbox[0] + dx,
                    m.bbox[1] + dy,
                    m.bbox[2] + dx,
                    m.bbox[3] + dy,
                ];
                m.point = [m.point[0] + dx, m.point[1] + dy];
                masks.push(m);
            }
        }
        if self.per_crop.len() > 1 {
            let boxes: Vec<XyxyBox> = masks.iter().map(|m| m.bbox).collect();
            let scores: Vec<f64> = masks
                .iter()
                .map(|m| 1.0 / box_area(m.crop.map(|v| v as f64)))
                .collect();
            masks = take(masks, &nms(&boxes, &scores, cfg.crop_nms_thresh));
        }
        if cfg.min_mask_region_area > 0 {
            masks = clean_small_regions(
                masks,
                cfg.min_mask_region_area,
                cfg.box_nms_thresh.max(cfg.crop_nms_thresh),
            );
        }
        masks.into_iter().map(Candidate::record).collect()
    }
}

/// Whether a mask's scores pass `cfg`'s thresholds (a threshold of 0 or below is off; a NaN
/// stability, no pixel above −offset, is below every threshold).
fn passes(cfg: &AmgConfig, iou: f64, stability: impl FnOnce() -> f64) -> bool {
    (cfg.pred_iou_thresh <= 0.0 || iou > cfg.pred_iou_thresh)
        && (cfg.stability_score_thresh <= 0.0 || stability() >= cfg.stability_score_thresh)
}

impl Candidate {
    fn record(self) -> MaskRecord {
        let (b, c) = (self.bbox, self.crop);
        MaskRecord {
            area: self.rle.area(),
            segmentation: self.rle.to_coco(),
            bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            predicted_iou: self.iou,
            point_coords: vec![self.point],
            stability_score: self.stability,
            crop_box: [
                c[0] as f64,
                c[1] as f64,
                (c[2] - c[0]) as f64,
                (c[3] - c[1]) as f64,
            ],
        }
    }
}

/// The candidates at `keep`, in that order.
fn take(masks: Vec<Candidate>, keep: &[usize]) -> Vec<Candidate> {
    let mut slots: Vec<Option<Candidate>> = masks.into_iter().map(Some).collect();
    keep.iter().filter_map(|&i| slots[i].take()).collect()
}

/// One crop: encoded once, its grid decoded in batches, filtered by `cfg`'s thresholds and the
/// crop-edge filter; the masks uncropped, boxes and points still in the crop's frame.
fn process_crop(
    sam: &Sam,
    lora: Option<&Lora>,
    image: &RgbImage,
    crop: [usize; 4],
    grid: &[[f64; 2]],
    cfg: &AmgConfig,
) -> Result<Vec<Candidate>> {
    let (ch, cw) = (crop[3] - crop[1], crop[2] - crop[0]);
    let cropped =
        image::imageops::crop_imm(image, crop[0] as u32, crop[1] as u32, cw as u32, ch as u32)
            .to_image();
    let mut predictor = Predictor::new(sam, lora, Preprocessing::Sam);
    predictor.set_image(&cropped)?;
    let frame = predictor.frame()?;
    let image_box = [0, 0, image.width() as usize, image.height() as usize];
    let points: Vec<[f64; 2]> = grid
        .iter()
        .map(|p| [p[0] * cw as f64, p[1] * ch as f64])
        .collect();
    let mut kept = Vec::new();
    for batch in points.chunks(cfg.points_per_batch) {
        let prompts = FramePrompts {
            boxes: None,
            points: Some(
                batch
                    .iter()
                    .map(|p| {
                        let (x, y) = frame.map_point(p[0] as f32, p[1] as f32);
                        vec![([x, y], 1.0)]
                    })
                    .collect(),
            ),
            masks: None,
        }
        .to_model(predictor.low_res_size(), 0.0, &sam.device)?;
        let out = predictor.predict_in_frame(&prompts, true)?;
        let logits = predictor.full_resolution(&out.low_res)?;
        let (n, k, _, _) = logits.dims4()?;
        let logits = logits
            .to_dtype(DType::F32)?
            .flatten_from(2)?
            .to_vec3::<f32>()?;
        let ious = out.iou.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for i in 0..n {
            for j in 0..k {
                let iou = f64::from(ious[i][j]);
                let map = &logits[i][j];
                // The stability (a pass over the full-size map) only for masks the IoU keeps.
                let score = || stability_score(map, cfg.stability_score_offset);
                let mut stability = None;
                if !passes(cfg, iou, || *stability.insert(score())) {
                    continue;
                }
                let stability = stability.unwrap_or_else(score);
                let mask: Vec<bool> = map.iter().map(|&v| v > 0.0).collect();
                let bbox = mask_box(&mask, ch, cw);
                if near_crop_edge(bbox, crop, image_box) {
                    continue;
                }
                kept.push(Candidate {
                    rle: uncrop(&mask, crop, image_box),
                    bbox,
                    iou,
                    point: batch[i],
                    stability,
                    crop,
                });
            }
        }
    }
    Ok(kept)
}

/// The official `calculate_stability_score`: the share of the pixels above `−offset` that are
/// above `+offset` (on logits; NaN, which no threshold keeps, for a map nowhere above −offset).
pub fn stability_score(logits: &[f32], offset: f64) -> f64 {
    let (hi, lo) = (offset as f32, -offset as f32);
    let (mut inter, mut union) = (0u64, 0u64);
    for &v in logits {
        inter += u64::from(v > hi);
        union += u64::from(v > lo);
    }
    (inter as f32 / union as f32).into()
}

/// A crop's mask placed in the whole image (zeros outside the crop), run-length encoded.
fn uncrop(mask: &[bool], crop: [usize; 4], image: [usize; 4]) -> Rle {
    let (w, h) = (image[2], image[3]);
    let cw = crop[2] - crop[0];
    let mut full = vec![false; h * w];
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        full[(i / cw + crop[1]) * w + i % cw + crop[0]] = true;
    }
    Rle::encode(&full, h, w)
}

/// `postprocess_small_regions`: each mask's small holes filled and small islands removed; then
/// NMS preferring unchanged masks (score 1 against 0) drops the duplicates this creates, and the
/// changed survivors get their new mask and box.
fn clean_small_regions(masks: Vec<Candidate>, area: usize, threshold: f64) -> Vec<Candidate> {
    if masks.is_empty() {
        return masks;
    }
    let mut cleaned = Vec::with_capacity(masks.len());
    let mut scores = Vec::with_capacity(masks.len());
    let mut boxes = Vec::with_capacity(masks.len());
    for m in &masks {
        let [h, w] = m.rle.size;
        let mut mask = m.rle.decode();
        let holes = remove_small_regions(&mut mask, h, w, area, Region::Holes);
        let islands = remove_small_regions(&mut mask, h, w, area, Region::Islands);
        scores.push(if holes || islands { 0.0 } else { 1.0 });
        boxes.push(mask_box(&mask, h, w));
        cleaned.push(mask);
    }
    let keep = nms(&boxes, &scores, threshold);
    let mut masks: Vec<Option<Candidate>> = masks.into_iter().map(Some).collect();
    keep.iter()
        .filter_map(|&i| {
            let mut m = masks[i].take()?;
            if scores[i] == 0.0 {
                let [h, w] = m.rle.size;
                m.rle = Rle::encode(&cleaned[i], h, w);
                m.bbox = boxes[i];
            }
            Some(m)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stability_is_the_share_above_the_shifted_thresholds() {
        let logits = [-2.0, -0.5, 0.5, 1.5, 3.0];
        // Above 1: two; above -1: four.
        assert_eq!(stability_score(&logits, 1.0), 0.5);
        assert_eq!(stability_score(&logits, 0.0), 1.0);
        assert!(stability_score(&[-5.0, -3.0], 1.0).is_nan());
    }

    #[test]
    fn a_crop_mask_lands_where_the_crop_is() {
        let mut mask = vec![false; 2 * 3];
        mask[4] = true; // crop row 1, column 1
        let rle = uncrop(&mask, [2, 1, 5, 3], [0, 0, 6, 4]);
        let full = rle.decode();
        assert_eq!(full.iter().filter(|&&v| v).count(), 1);
        assert!(full[2 * 6 + 3]);
    }

    #[test]
    fn bad_settings_are_refused() {
        let cfg = AmgConfig {
            crop_n_layers: 6,
            crop_n_points_downscale_factor: 2,
            ..AmgConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("points_per_side"));
        assert!(AmgConfig::default().validate().is_ok());
    }
}
