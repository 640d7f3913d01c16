//! COD10K camouflaged objects, as the reference uses it: only the test set
//! (`Test/Image/*.jpg` with `Test/GT_Object/*.png`), split 4:1 by interleave; images whose GT is
//! empty are left out (and reported). One instance per distinct GT value by default.

use std::path::Path;

use super::files::{self, Pair};
use super::paired::{read_labels, ByMode, Paired};
use crate::data::split::Splits;
use crate::data::{mask, DatasetOptions, InstanceMode};

/// The release folder's name.
const FOLDER: &str = "COD10K-v2";
/// `k` of the interleaved split when `options.interleave` is not given.
const DEFAULT_INTERLEAVE: usize = 4;

/// Indexes COD10K at `root` (the release folder or the folder holding it); reads every GT.
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let test = files::descend(root, FOLDER).join("Test");
    let images = files::require_dir(test.join("Image"), "COD10K's test images")?;
    let gt = files::require_dir(test.join("GT_Object"), "COD10K's object ground truths")?;
    let (pairs, mut issues) = files::pair(
        files::list(&images, &["jpg"])?,
        files::list(&gt, &["png"])?,
        str::to_string,
    );
    let threshold = options.mask_threshold;
    let (pairs, empty) = files::keep_pairs(pairs, |p| {
        let labels = read_labels(&p.mask, threshold)?;
        Ok((mask::area(&labels) == 0).then(|| files::issue(&p.mask, "empty ground truth")))
    });
    issues.extend(empty);
    let k = options.interleave.unwrap_or(DEFAULT_INTERLEAVE);
    Ok(Paired::new(
        "cod10k",
        Splits::interleaved(
            pairs.into_iter().map(Pair::record).collect(),
            k,
            options.val_fraction,
        ),
        issues,
        threshold,
        Box::new(ByMode(options.instances.unwrap_or(InstanceMode::Values))),
    ))
}
