//! Datasets, weak prompts, augmentations and corruptions.
//!
//! A [`Dataset`] is a cheap index of [`Record`]s (paths, never pixels) split into train / val /
//! test; [`Dataset::load`] decodes one record into a [`Sample`]: the RGB image and its instances,
//! each a binary mask with its box. Loading is done per record, so no dataset is ever held in
//! memory whole.

pub mod augment;
pub mod corrupt;
pub mod datasets;
pub mod loader;
pub mod mask;
pub(crate) mod pixel;
pub mod prompts;
pub mod split;
pub mod synth;

use std::path::PathBuf;

use image::{GrayImage, RgbImage};
use serde::{Deserialize, Serialize};

/// One annotated object.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Binary mask at the image's size: 255 inside, 0 outside.
    pub mask: GrayImage,
    /// `[x0, y0, x1, y1]` in image pixels: the annotation's box where the dataset has one
    /// (COCO, Kvasir's json), else `cv2.boundingRect` of the mask (`[x, y, x + w, y + h]`).
    pub bbox: [f32; 4],
}

/// An image with its instances.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Identifier within the dataset (file stem or image id).
    pub id: String,
    pub image_path: PathBuf,
    pub image: RgbImage,
    pub instances: Vec<Instance>,
}

impl Sample {
    /// Merges the instances into one, their union, with the box around all of them: what a
    /// prompt-free model segments (everything of interest at once, as SAM-Adapter does).
    pub fn merge_instances(&mut self) {
        let Some(first) = self.instances.first() else {
            return;
        };
        let mut mask = first.mask.clone();
        let mut bbox = first.bbox;
        for inst in &self.instances[1..] {
            for (m, p) in mask.pixels_mut().zip(inst.mask.pixels()) {
                m.0[0] = m.0[0].max(p.0[0]);
            }
            bbox = [
                bbox[0].min(inst.bbox[0]),
                bbox[1].min(inst.bbox[1]),
                bbox[2].max(inst.bbox[2]),
                bbox[3].max(inst.bbox[3]),
            ];
        }
        self.instances = vec![Instance { mask, bbox }];
    }
}

/// Where one sample's data lives; what the fields mean is up to the dataset that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub image: PathBuf,
    /// The annotation file (mask image), if the dataset has one per image.
    pub annotation: Option<PathBuf>,
    /// Dataset-specific key (e.g. the COCO image id).
    pub key: u64,
}

/// A part of a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Split {
    Train,
    Val,
    Test,
    All,
}

/// A file left out of a dataset, or worth a look, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIssue {
    pub file: String,
    pub reason: String,
}

/// How instances are extracted from a mask image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum InstanceMode {
    /// Every distinct non-zero value is one instance (the reference's `decode_mask`).
    Values,
    /// Every 8-connected component of the binarised mask is one instance.
    Components,
}

/// Options shared by every dataset loader; defaults in [`DatasetOptions::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetOptions {
    /// Grey level above which a mask pixel of a binary (e.g. JPEG) mask is foreground: 127 by
    /// default, 0 in the `wesam-reference` profile.
    pub mask_threshold: u8,
    /// Instance extraction; `None` is the dataset's own rule (the reference's, or connected
    /// components for Kvasir-SEG without its box file).
    pub instances: Option<InstanceMode>,
    /// `k` of the k:1 interleaved train:test split of datasets without an official split;
    /// `None` is the dataset's reference value.
    pub interleave: Option<usize>,
    /// Fraction of the training split held out as the validation split (for model selection
    /// without looking at the test split); 0 keeps every training image in `train`.
    pub val_fraction: f64,
    /// Instances smaller than this many pixels are reported by `data check` as tiny.
    pub tiny_instance_px: usize,
    /// Keep COCO's crowd annotations as instances (the reference does; they are regions of many
    /// objects, so the default leaves them out).
    pub include_crowd: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        Self {
            mask_threshold: 127,
            instances: None,
            interleave: None,
            val_fraction: 0.0,
            tiny_instance_px: 16,
            include_crowd: false,
        }
    }
}

impl DatasetOptions {
    /// These options under a profile: where they are still the defaults, `wesam-reference`
    /// reads masks with threshold 0 and keeps COCO's crowd annotations, as the reference does.
    pub fn for_profile(&self, profile: crate::profile::Profile) -> Self {
        let defaults = Self::default();
        let mut o = self.clone();
        if profile == crate::profile::Profile::WesamReference {
            if o.mask_threshold == defaults.mask_threshold {
                o.mask_threshold = 0;
            }
            o.include_crowd = true;
        }
        o
    }
}

/// A dataset in its conventional on-disk layout.
pub trait Dataset: Send + Sync {
    /// Name for reports (`kvasir`, `coco`, a folder's path...).
    fn name(&self) -> String;
    /// The records of a split, in a deterministic order.
    fn records(&self, split: Split) -> Vec<Record>;
    /// Decodes one record. Errors name the file and the problem.
    fn load(&self, record: &Record) -> anyhow::Result<Sample>;
    /// Files found while indexing that are not part of the dataset, with the reason.
    fn index_issues(&self) -> Vec<FileIssue> {
        Vec::new()
    }
}
