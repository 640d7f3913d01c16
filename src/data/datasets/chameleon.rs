//! CHAMELEON camouflaged animals: `Imgs/*.jpg` with `GT/*.png`. It has no split: the reference
//! evaluates every image, so every split (train, val, test, all) returns all images. One
//! instance per distinct GT value by default.

use std::path::Path;

use super::files::{self, Pair};
use super::paired::{ByMode, Paired};
use crate::data::split::Splits;
use crate::data::{DatasetOptions, InstanceMode};

/// The release folder's name.
const FOLDER: &str = "CHAMELEON";

/// Indexes CHAMELEON at `root` (the folder with `Imgs/` and `GT/`, or the one holding it).
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let root = files::descend(root, FOLDER);
    let images = files::require_dir(root.join("Imgs"), "CHAMELEON's images Imgs/*.jpg")?;
    let gt = files::require_dir(root.join("GT"), "CHAMELEON's ground truths GT/*.png")?;
    let (pairs, issues) = files::pair(
        files::list(&images, &["jpg"])?,
        files::list(&gt, &["png"])?,
        str::to_string,
    );
    Ok(Paired::new(
        "chameleon",
        Splits::unsplit(pairs.into_iter().map(Pair::record).collect()),
        issues,
        options.mask_threshold,
        Box::new(ByMode(options.instances.unwrap_or(InstanceMode::Values))),
    ))
}
