//! Finding a dataset's files: folders checked and listed by extension, images paired with their
//! masks by file stem, and every file left out reported as a [`FileIssue`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rayon::prelude::*;

use crate::data::{FileIssue, Record};

/// Extensions read as images or masks by the folder layout.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// `root/name` when that is a directory, else `root`: a dataset's root may be given as its
/// release folder (`.../Kvasir-SEG`) or as the folder that holds it (`...`).
pub fn descend(root: &Path, name: &str) -> PathBuf {
    let inner = root.join(name);
    if inner.is_dir() {
        inner
    } else {
        root.to_path_buf()
    }
}

/// `dir` itself, or an error naming it and what the dataset expects there.
pub fn require_dir(dir: PathBuf, what: &str) -> anyhow::Result<PathBuf> {
    if !dir.is_dir() {
        bail!("{} not found: expected {what}", dir.display());
    }
    Ok(dir)
}

/// Whether a file name ends in one of `exts` (case-insensitive, without the dot).
fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The files directly in `dir` whose extension is one of `exts`, sorted by path (the
/// reference's `sorted(glob(...))`). Other files are ignored, and so are hidden ones (`.name`,
/// such as the `._name.jpg` companions that macOS archives add).
pub fn list(dir: &Path, exts: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() && has_extension(&path, exts) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A file's name without its extension.
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A [`FileIssue`] for a path.
pub fn issue(path: &Path, reason: impl Into<String>) -> FileIssue {
    FileIssue {
        file: path.display().to_string(),
        reason: reason.into(),
    }
}

/// An image file and its mask file.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The record's identifier: the image's stem unless the dataset says otherwise.
    pub id: String,
    pub image: PathBuf,
    pub mask: PathBuf,
}

impl Pair {
    /// The pair as a dataset record (`key` is unused by mask-file datasets: 0).
    pub fn record(self) -> Record {
        Record {
            id: self.id,
            image: self.image,
            annotation: Some(self.mask),
            key: 0,
        }
    }
}

/// Pairs images with the mask whose stem is `mask_stem(image stem)`, in the order of `images`.
/// Images without a mask, masks without an image and second files of the same stem are left
/// out and reported.
pub fn pair(
    images: Vec<PathBuf>,
    masks: Vec<PathBuf>,
    mask_stem: impl Fn(&str) -> String,
) -> (Vec<Pair>, Vec<FileIssue>) {
    let mut issues = Vec::new();
    let mut by_stem: HashMap<String, (PathBuf, bool)> = HashMap::new();
    for m in masks {
        match by_stem.get(&stem(&m)) {
            Some((kept, _)) => issues.push(same_stem(&m, kept)),
            None => {
                by_stem.insert(stem(&m), (m, false));
            }
        }
    }
    let mut pairs: Vec<Pair> = Vec::new();
    let mut image_stems: HashMap<String, PathBuf> = HashMap::new();
    for image in images {
        let id = stem(&image);
        if let Some(kept) = image_stems.get(&id) {
            issues.push(same_stem(&image, kept));
            continue;
        }
        image_stems.insert(id.clone(), image.clone());
        let wanted = mask_stem(&id);
        match by_stem.get_mut(&wanted) {
            Some((mask, used)) => {
                *used = true;
                pairs.push(Pair {
                    id,
                    image,
                    mask: mask.clone(),
                });
            }
            None => issues.push(issue(&image, format!("no mask named `{wanted}.*`"))),
        }
    }
    let mut orphans: Vec<&PathBuf> = by_stem
        .values()
        .filter(|(_, used)| !used)
        .map(|(m, _)| m)
        .collect();
    orphans.sort();
    issues.extend(
        orphans
            .into_iter()
            .map(|m| issue(m, "mask without an image")),
    );
    (pairs, issues)
}

fn same_stem(path: &Path, kept: &Path) -> FileIssue {
    issue(
        path,
        format!("same name as {} (that one is used)", kept.display()),
    )
}

/// Keeps the pairs that `check` passes, in order, reading them in parallel; `check` returns
/// the issue of a pair to leave out, and a pair whose check fails is left out with the error.
pub fn keep_pairs(
    pairs: Vec<Pair>,
    check: impl Fn(&Pair) -> anyhow::Result<Option<FileIssue>> + Sync,
) -> (Vec<Pair>, Vec<FileIssue>) {
    let verdicts: Vec<_> = pairs
        .par_iter()
        .map(|p| check(p).unwrap_or_else(|e| Some(issue(&p.mask, format!("{e:#}")))))
        .collect();
    let mut issues = Vec::new();
    let mut kept = Vec::new();
    for (p, verdict) in pairs.into_iter().zip(verdicts) {
        match verdict {
            Some(i) => issues.push(i),
            None => kept.push(p),
        }
    }
    (kept, issues)
}
