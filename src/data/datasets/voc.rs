//! PASCAL VOC 2012 object segmentation (`VOC2012/SegmentationObject/*.png` +
//! `JPEGImages/*.jpg`), one of the reference's natural-image target domains.
//!
//! The object PNGs are palette images whose palette *index* is the instance id; index 255 (drawn
//! as 224,224,192) marks the uncertain boundary band and counts as background. The indices are
//! read directly from the PNG (not through the colours), so every id is kept. The reference reads
//! the PNGs with OpenCV as BGR and compares the colours with RGB palette entries, which silently
//! drops the instances whose colour is not symmetric under that swap (ids 8–15 and 19); that bug
//! is deliberately not reproduced.
//!
//! Split (the reference's): the mask stems sorted, then a 6:1 interleave
//! ([`DatasetOptions::interleave`] overrides the 6). Every id is one instance by default
//! ([`DatasetOptions::instances`] may ask for connected components instead), its box the mask's
//! bounding rectangle. `mask_threshold` does not apply: the masks are labels, not grey levels.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::{GrayImage, Luma};

use crate::data::mask::{
    binarise, bounding_box, check_same_size, connected_instances, instances_by_value,
};
use crate::data::split::{carve_val, interleave};
use crate::data::{
    Dataset, DatasetOptions, FileIssue, Instance, InstanceMode, Record, Sample, Split,
};

/// The reference's `k` of the k:1 train:test interleave of PASCAL VOC.
const REFERENCE_INTERLEAVE: usize = 6;
/// The palette index of the boundary band ("void"), treated as background.
const BOUNDARY: u8 = 255;

/// PASCAL VOC 2012 instance masks, indexed from `SegmentationObject/`.
#[derive(Debug)]
pub struct Voc {
    /// `(stem, image, mask)` by increasing stem.
    pairs: Vec<(String, PathBuf, PathBuf)>,
    train: Vec<usize>,
    val: Vec<usize>,
    test: Vec<usize>,
    issues: Vec<FileIssue>,
    instances: InstanceMode,
}

impl Voc {
    /// Indexes the dataset under `root`, which is either `VOCdevkit` or its `VOC2012`. Masks
    /// without a `JPEGImages/<stem>.jpg`, and files that are not PNGs, are left out and reported
    /// by [`Dataset::index_issues`].
    pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Self> {
        let voc = [root.to_path_buf(), root.join("VOC2012")]
            .into_iter()
            .find(|d| d.join("SegmentationObject").is_dir())
            .with_context(|| {
                format!(
                    "{}: neither it nor its VOC2012/ holds SegmentationObject/",
                    root.display()
                )
            })?;
        let mask_dir = voc.join("SegmentationObject");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&mask_dir)
            .with_context(|| format!("cannot list {}", mask_dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot list {}", mask_dir.display()))?;
        files.sort();
        let mut pairs = Vec::new();
        let mut issues = Vec::new();
        for mask in files {
            let is_png = mask
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"));
            let stem = mask.file_stem().unwrap_or_default().to_string_lossy();
            let image = voc.join("JPEGImages").join(format!("{stem}.jpg"));
            let reason = if !is_png {
                "not a .png mask"
            } else if !image.is_file() {
                "no JPEGImages/<stem>.jpg beside it"
            } else {
                pairs.push((stem.into_owned(), image, mask));
                continue;
            };
            issues.push(FileIssue {
                file: mask.display().to_string(),
                reason: reason.into(),
            });
        }
        let k = options.interleave.unwrap_or(REFERENCE_INTERLEAVE);
        let (train, test) = interleave((0..pairs.len()).collect(), k);
        let (train, val) = carve_val(train, options.val_fraction);
        Ok(Self {
            pairs,
            train,
            val,
            test,
            issues,
            instances: options.instances.unwrap_or(InstanceMode::Values),
        })
    }

    fn record(&self, i: usize) -> Record {
        let (stem, image, mask) = &self.pairs[i];
        Record {
            id: stem.clone(),
            image: image.clone(),
            annotation: Some(mask.clone()),
            key: i as u64,
        }
    }
}

impl Dataset for Voc {
    fn name(&self) -> String {
        "voc".into()
    }

    fn records(&self, split: Split) -> Vec<Record> {
        let indices: Vec<usize> = match split {
            Split::Train => self.train.clone(),
            Split::Val => self.val.clone(),
            Split::Test => self.test.clone(),
            Split::All => (0..self.pairs.len()).collect(),
        };
        indices.into_iter().map(|i| self.record(i)).collect()
    }

    fn load(&self, record: &Record) -> anyhow::Result<Sample> {
        let Some(mask_path) = &record.annotation else {
            bail!(
                "{}: a VOC record needs its SegmentationObject mask",
                record.image.display()
            );
        };
        let image = crate::io::read_rgb(&record.image)?;
        let mut labels = read_palette_indices(mask_path)?;
        check_same_size(&labels, mask_path, image.dimensions(), &record.image)?;
        for p in labels.pixels_mut() {
            if p.0[0] == BOUNDARY {
                p.0[0] = 0;
            }
        }
        let masks = match self.instances {
            InstanceMode::Values => instances_by_value(&labels),
            InstanceMode::Components => connected_instances(&binarise(&labels, 0)),
        };
        let instances = masks
            .into_iter()
            .filter_map(|mask| bounding_box(&mask).map(|bbox| Instance { mask, bbox }))
            .collect();
        Ok(Sample {
            id: record.id.clone(),
            image_path: record.image.clone(),
            image,
            instances,
        })
    }

    fn index_issues(&self) -> Vec<FileIssue> {
        self.issues.clone()
    }
}

/// The palette indices of an indexed PNG (or the samples of a grey one) at up to 8 bits, as one
/// grey channel; the `image` crate would expand them to the palette's colours.
fn read_palette_indices(path: &Path) -> anyhow::Result<GrayImage> {
    let file = File::open(path).with_context(|| format!("cannot open mask {}", path.display()))?;
    let mut reader = png::Decoder::new(BufReader::new(file))
        .read_info()
        .with_context(|| format!("cannot read PNG mask {}", path.display()))?;
    let (color, depth) = reader.output_color_type();
    let bits = depth as u8;
    if !matches!(color, png::ColorType::Indexed | png::ColorType::Grayscale) || bits > 8 {
        bail!(
            "mask {} is a {bits}-bit {color:?} PNG; expected palette indices",
            path.display()
        );
    }
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("mask {} is too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("cannot decode PNG mask {}", path.display()))?;
    // Samples of fewer than 8 bits are packed, most significant first.
    let per_byte = 8 / u32::from(bits);
    let low_bits = (1u16 << bits) - 1;
    Ok(GrayImage::from_fn(info.width, info.height, |x, y| {
        let byte = buf[y as usize * info.line_size + (x / per_byte) as usize];
        let shift = 8 - u32::from(bits) * (x % per_byte + 1);
        Luma([(u16::from(byte) >> shift & low_bits) as u8])
    }))
}
