//! OSD tabletop objects: `image_color/*.png` with `annotation/*.png`, the OCID label rule
//! ([`super::ocid::Tabletop`]), split 1:1 by alternating images.

use std::path::Path;

use super::files;
use super::ocid::tabletop_dataset;
use super::paired::Paired;
use crate::data::DatasetOptions;

/// The release folder's name.
const FOLDER: &str = "OSD-0.2-depth";
/// `k` of the interleaved split when `options.interleave` is not given.
const DEFAULT_INTERLEAVE: usize = 1;

/// Indexes OSD at `root` (the release folder or the folder holding it); reads every label map.
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let root = files::descend(root, FOLDER);
    let images = files::require_dir(root.join("image_color"), "OSD's images")?;
    let labels = files::require_dir(root.join("annotation"), "OSD's label maps")?;
    let (pairs, issues) = files::pair(
        files::list(&images, &["png"])?,
        files::list(&labels, &["png"])?,
        str::to_string,
    );
    Ok(tabletop_dataset(
        "osd",
        pairs,
        issues,
        DEFAULT_INTERLEAVE,
        options,
    ))
}
