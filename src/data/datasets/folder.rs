//! Any folder of `images/` and `masks/` with matching stems: the way to bring one's own data.
//! Masks are binary or instance ids; every distinct non-zero value is an instance unless
//! `options.instances` says otherwise. The split is `splits/{train,val,test}.txt` (one stem per
//! line; `val.txt` optional, else carved from train) when present, else the k:1 interleave of
//! the sorted stems (k = `options.interleave`, 5 by default).

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;

use super::files::{self, Pair, IMAGE_EXTENSIONS};
use super::paired::{ByMode, Paired};
use crate::data::split::Splits;
use crate::data::{DatasetOptions, FileIssue, InstanceMode, Record};

/// `k` of the interleaved split when `options.interleave` is not given.
const DEFAULT_INTERLEAVE: usize = 5;

/// Indexes the folder `root`.
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let images = files::require_dir(root.join("images"), "a folder of images")?;
    let masks = files::require_dir(root.join("masks"), "a folder of masks")?;
    let (pairs, mut issues) = files::pair(
        files::list(&images, IMAGE_EXTENSIONS)?,
        files::list(&masks, IMAGE_EXTENSIONS)?,
        str::to_string,
    );
    let split_dir = root.join("splits");
    let splits = if split_dir.is_dir() {
        from_lists(&split_dir, pairs, options.val_fraction, &mut issues)?
    } else {
        let k = options.interleave.unwrap_or(DEFAULT_INTERLEAVE);
        Splits::interleaved(
            pairs.into_iter().map(Pair::record).collect(),
            k,
            options.val_fraction,
        )
    };
    Ok(Paired::new(
        root.display().to_string(),
        splits,
        issues,
        options.mask_threshold,
        Box::new(ByMode(options.instances.unwrap_or(InstanceMode::Values))),
    ))
}

/// Splits from `train.txt`, `test.txt` and the optional `val.txt`; stems that name no pair are
/// reported, pairs in no list are only in `All`.
fn from_lists(
    dir: &Path,
    pairs: Vec<Pair>,
    val_fraction: f64,
    issues: &mut Vec<FileIssue>,
) -> anyhow::Result<Splits> {
    let all: Vec<Record> = pairs.into_iter().map(Pair::record).collect();
    let by_id: HashMap<&str, &Record> = all.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut read = |name: &str| -> anyhow::Result<Vec<Record>> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read split file {}", path.display()))?;
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let id = line.trim();
            match by_id.get(id) {
                Some(r) => records.push((*r).clone()),
                None if id.is_empty() => {}
                None => issues.push(files::issue(
                    &path,
                    format!("line {}: `{id}` has no image and mask", n + 1),
                )),
            }
        }
        Ok(records)
    };
    let train = read("train.txt")?;
    let test = read("test.txt")?;
    let val = if dir.join("val.txt").is_file() {
        Some(read("val.txt")?)
    } else {
        None
    };
    Ok(Splits::official(train, val, test, val_fraction).with_all(all))
}
