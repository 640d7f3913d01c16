//! CAMO camouflaged objects: `Images/{Train,Test}/*.jpg` with one `GT/*.png` folder for both,
//! official train / test. As in the reference, only image / GT pairs of identical size are
//! kept; the others are reported. One instance per distinct GT value by default.

use std::path::Path;

use anyhow::Context;

use super::files::{self, Pair};
use super::paired::{ByMode, Paired};
use crate::data::split::Splits;
use crate::data::{DatasetOptions, InstanceMode};

/// The release folder's name.
const FOLDER: &str = "CAMO-V.1.0-CVIU2019";

/// Indexes CAMO at `root` (the release folder or the folder holding it).
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let root = files::descend(root, FOLDER);
    let gt = files::require_dir(root.join("GT"), "CAMO's ground truths GT/*.png")?;
    let [train, test] = ["Train", "Test"].map(|set| {
        let dir = root.join("Images").join(set);
        files::require_dir(dir, "CAMO's images").and_then(|d| files::list(&d, &["jpg"]))
    });
    let (train, test) = (train?, test?);
    let is_train = |p: &Pair| train.binary_search(&p.image).is_ok();
    let (pairs, mut issues) = files::pair(
        train.iter().chain(&test).cloned().collect(),
        files::list(&gt, &["png"])?,
        str::to_string,
    );
    let (pairs, mismatched) = files::keep_pairs(pairs, same_size);
    issues.extend(mismatched);
    let (train, test): (Vec<Pair>, Vec<Pair>) = pairs.into_iter().partition(is_train);
    Ok(Paired::new(
        "camo",
        Splits::official(
            train.into_iter().map(Pair::record).collect(),
            None,
            test.into_iter().map(Pair::record).collect(),
            options.val_fraction,
        ),
        issues,
        options.mask_threshold,
        Box::new(ByMode(options.instances.unwrap_or(InstanceMode::Values))),
    ))
}

/// Leaves out a pair whose image and GT differ in size (read from the file headers).
fn same_size(p: &Pair) -> anyhow::Result<Option<crate::data::FileIssue>> {
    let dims = |path: &Path| {
        image::image_dimensions(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let ((w, h), (mw, mh)) = (dims(&p.image)?, dims(&p.mask)?);
    Ok(((w, h) != (mw, mh)).then(|| {
        files::issue(
            &p.image,
            format!("is {w}x{h} but its GT {} is {mw}x{mh}", p.mask.display()),
        )
    }))
}
