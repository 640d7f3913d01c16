//! [`Paired`]: the dataset of one mask file per image that every family but COCO and VOC is.
//! The families differ in how they find and split their files (their own modules) and in how a
//! mask becomes instances (an [`Annotation`]); reading, checking and decoding are shared here.

use std::path::Path;

use anyhow::{bail, Context};
use image::{ColorType, GrayImage, ImageBuffer, ImageDecoder, ImageReader, Luma};

use crate::data::split::Splits;
use crate::data::{mask, Dataset, FileIssue, Instance, InstanceMode, Record, Sample, Split};
use crate::io;

/// How a dataset turns a record's label map into instances.
pub trait Annotation: Send + Sync {
    /// The instances of `labels` (the record's mask as read by [`read_labels`], of the image's
    /// size), without empty ones.
    fn instances(&self, record: &Record, labels: GrayImage) -> Vec<Instance>;
}

/// The generic rule: instances by [`InstanceMode`], boxes from the masks.
pub struct ByMode(pub InstanceMode);

impl Annotation for ByMode {
    fn instances(&self, _record: &Record, labels: GrayImage) -> Vec<Instance> {
        extract(&labels, self.0)
    }
}

/// Instances of a label map: one per distinct non-zero value, or one per 8-connected component
/// of its non-zero pixels; each boxed by [`mask::bounding_box`]; empty ones dropped.
pub fn extract(labels: &GrayImage, mode: InstanceMode) -> Vec<Instance> {
    let masks = match mode {
        InstanceMode::Values => mask::instances_by_value(labels),
        InstanceMode::Components => mask::connected_instances(&mask::binarise(labels, 0)),
    };
    masks
        .into_iter()
        .filter_map(|m| mask::bounding_box(&m).map(|bbox| Instance { mask: m, bbox }))
        .collect()
}

/// Whether a mask file is lossy (JPEG), so that its grey levels are noise around 0 and 255.
fn is_lossy(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"))
}

/// A mask file as one 8-bit label map. JPEG masks are binarised at `threshold` (0 / 255).
/// Lossless masks keep their values: 8-bit and colour ones through [`io::read_gray`], 16-bit
/// grey ones exactly (their labels renumbered in order when some exceed 255), because a
/// conversion to 8 bits would divide them by 257 and merge or erase the labels.
pub fn read_labels(path: &Path, threshold: u8) -> anyhow::Result<GrayImage> {
    if is_lossy(path) {
        return Ok(mask::binarise(&io::read_gray(path)?, threshold));
    }
    let color = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(image::ImageError::from)
        .and_then(|r| r.into_decoder())
        .map(|d| d.color_type())
        .with_context(|| format!("cannot read mask {}", path.display()))?;
    if !matches!(color, ColorType::L16 | ColorType::La16) {
        return io::read_gray(path);
    }
    let labels = io::read_oriented(path, "mask")?.to_luma16();
    compact_labels(&labels).with_context(|| format!("mask {}", path.display()))
}

/// A 16-bit label map as 8 bits. Labels up to 255 keep their value (rules such as OCID's
/// "label 1 is the floor" still apply); larger ones take the highest free codes, in order.
fn compact_labels(labels: &ImageBuffer<Luma<u16>, Vec<u16>>) -> anyhow::Result<GrayImage> {
    let mut present = vec![false; 1 << 16];
    for p in labels.pixels() {
        present[p.0[0] as usize] = true;
    }
    let large: Vec<usize> = (256..present.len()).filter(|&v| present[v]).collect();
    let free: Vec<u8> = (1..=255u8).filter(|&c| !present[c as usize]).collect();
    if large.len() > free.len() {
        bail!(
            "has {} labels; at most 255 instances per mask are supported",
            (1..present.len()).filter(|&v| present[v]).count()
        );
    }
    let mut code: Vec<u8> = (0..present.len()).map(|v| v.min(255) as u8).collect();
    for (&v, &c) in large.iter().zip(&free[free.len() - large.len()..]) {
        code[v] = c;
    }
    Ok(GrayImage::from_fn(
        labels.width(),
        labels.height(),
        |x, y| Luma([code[labels.get_pixel(x, y).0[0] as usize]]),
    ))
}

/// A dataset of image files, each with one mask file (the record's `annotation`).
pub struct Paired {
    name: String,
    splits: Splits,
    issues: Vec<FileIssue>,
    threshold: u8,
    annotation: Box<dyn Annotation>,
}

impl Paired {
    /// A dataset over indexed `splits`, with the files left out while indexing, the JPEG mask
    /// threshold and the instance rule.
    pub fn new(
        name: impl Into<String>,
        splits: Splits,
        issues: Vec<FileIssue>,
        threshold: u8,
        annotation: Box<dyn Annotation>,
    ) -> Self {
        Self {
            name: name.into(),
            splits,
            issues,
            threshold,
            annotation,
        }
    }
}

impl Dataset for Paired {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn records(&self, split: Split) -> Vec<Record> {
        self.splits.get(split).to_vec()
    }

    fn load(&self, record: &Record) -> anyhow::Result<Sample> {
        let mask_path = record
            .annotation
            .as_deref()
            .with_context(|| format!("image {} has no mask file", record.image.display()))?;
        let image = io::read_rgb(&record.image)?;
        let labels = read_labels(mask_path, self.threshold)?;
        mask::check_same_size(&labels, mask_path, image.dimensions(), &record.image)?;
        Ok(Sample {
            id: record.id.clone(),
            image_path: record.image.clone(),
            image,
            instances: self.annotation.instances(record, labels),
        })
    }

    fn index_issues(&self) -> Vec<FileIssue> {
        self.issues.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bit_labels_keep_their_identity() {
        let small = ImageBuffer::from_fn(3, 1, |x, _| Luma([[0u16, 7, 200][x as usize]]));
        let c = compact_labels(&small).unwrap();
        assert_eq!(c.as_raw(), &vec![0, 7, 200]);
        let big = ImageBuffer::from_fn(5, 1, |x, _| Luma([[0u16, 1000, 300, 1000, 2][x as usize]]));
        let c = compact_labels(&big).unwrap();
        assert_eq!(c.as_raw(), &vec![0, 255, 254, 255, 2]);
        let many = ImageBuffer::from_fn(300, 1, |x, _| Luma([x as u16 + 1]));
        assert!(compact_labels(&many).is_err());
    }
}
