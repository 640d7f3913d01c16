//! OCID tabletop objects: every `**/*seq*/rgb/*.png` with its label map at the path where `rgb`
//! is replaced by `label`; sorted by path (sequence, then frame), split 6:1 by interleave.
//! Also the label rule it shares with OSD: label 1 (the floor) and, in scenes whose path
//! contains "table", label 2 (the table) are background; every other non-zero label is an
//! object instance; images without an object are left out (and reported).

use std::path::{Path, PathBuf};

use anyhow::Context;
use image::GrayImage;

use super::files::{self, Pair};
use super::paired::{extract, read_labels, Annotation, Paired};
use crate::data::split::Splits;
use crate::data::{mask, DatasetOptions, FileIssue, Instance, InstanceMode, Record};

/// `k` of the interleaved split when `options.interleave` is not given.
const DEFAULT_INTERLEAVE: usize = 6;
/// Deepest folder searched for sequences below the root.
const MAX_DEPTH: usize = 12;

/// Indexes OCID at `root`; reads every label map.
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let mut sequences = Vec::new();
    find_sequences(root, MAX_DEPTH, &mut sequences)?;
    if sequences.is_empty() {
        anyhow::bail!(
            "no OCID sequence found in {}: expected folders **/*seq*/rgb/ and */label/",
            root.display()
        );
    }
    let (mut pairs, mut issues) = (Vec::new(), Vec::new());
    for seq in sequences {
        let labels = seq.join("label");
        let masks = if labels.is_dir() {
            files::list(&labels, &["png"])?
        } else {
            Vec::new()
        };
        let (found, left_out) = files::pair(
            files::list(&seq.join("rgb"), &["png"])?,
            masks,
            str::to_string,
        );
        pairs.extend(found.into_iter().map(|p| Pair {
            id: relative_id(root, &p.image),
            ..p
        }));
        issues.extend(left_out);
    }
    Ok(tabletop_dataset(
        "ocid",
        pairs,
        issues,
        DEFAULT_INTERLEAVE,
        options,
    ))
}

/// A robot-tabletop dataset (OCID, OSD) from its image/label pairs: images without objects
/// left out (and reported), a k:1 interleave (`default_k` unless the options set it), and
/// [`Tabletop`] instance extraction.
pub fn tabletop_dataset(
    name: &str,
    pairs: Vec<Pair>,
    mut issues: Vec<FileIssue>,
    default_k: usize,
    options: &DatasetOptions,
) -> Paired {
    let (pairs, empty) = keep_with_objects(pairs, options.mask_threshold);
    issues.extend(empty);
    let k = options.interleave.unwrap_or(default_k);
    Paired::new(
        name,
        Splits::interleaved(
            pairs.into_iter().map(Pair::record).collect(),
            k,
            options.val_fraction,
        ),
        issues,
        options.mask_threshold,
        Box::new(Tabletop(options.instances.unwrap_or(InstanceMode::Values))),
    )
}

/// Collects, in sorted order, the folders below `dir` named `*seq*` that hold an `rgb/` folder.
fn find_sequences(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
    if name.is_some_and(|n| n.contains("seq")) && dir.join("rgb").is_dir() {
        out.push(dir.to_path_buf());
    }
    if depth == 0 {
        return Ok(());
    }
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.is_dir() {
            subdirs.push(path);
        }
    }
    subdirs.sort();
    for sub in subdirs {
        find_sequences(&sub, depth - 1, out)?;
    }
    Ok(())
}

/// The image's path below the root without extension, `/`-separated: unique across sequences,
/// and it holds the scene folders that say whether a table is in view.
fn relative_id(root: &Path, image: &Path) -> String {
    let rel = image.strip_prefix(root).unwrap_or(image).with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The tabletop label rule (OCID, OSD): instances of the object labels, by `mode`.
pub struct Tabletop(pub InstanceMode);

impl Annotation for Tabletop {
    fn instances(&self, record: &Record, labels: GrayImage) -> Vec<Instance> {
        extract(&objects(&record.id, labels), self.0)
    }
}

/// The object labels of a record's label map: label 1, and label 2 when the record's id
/// contains "table", set to 0. (The reference then renumbers the labels in order, which
/// changes no instance.)
pub fn objects(id: &str, mut labels: GrayImage) -> GrayImage {
    let table = id.contains("table");
    for p in labels.pixels_mut() {
        if p.0[0] == 1 || (table && p.0[0] == 2) {
            p.0[0] = 0;
        }
    }
    labels
}

/// Leaves out (and reports) the pairs whose label map holds no object.
pub fn keep_with_objects(pairs: Vec<Pair>, threshold: u8) -> (Vec<Pair>, Vec<FileIssue>) {
    files::keep_pairs(pairs, |p| {
        let labels = objects(&p.id, read_labels(&p.mask, threshold)?);
        Ok((mask::area(&labels) == 0).then(|| files::issue(&p.mask, "no object label")))
    })
}
