//! ISIC skin lesions, in whichever release layout is present under the root:
//! - 2016: the reference's `ISBI2016_ISIC_Part1_{Training,Test}_GroundTruth.csv`, whose columns
//!   1 and 2 (0-based, after a header row, as pandas reads them) are the image and mask paths
//!   relative to the root; official train / test.
//! - 2017: `ISIC-2017_{Training,Validation,Test_v2}_Data/*.jpg` with
//!   `ISIC-2017_*_Part1_GroundTruth/<stem>_segmentation.png`.
//! - 2018: `ISIC2018_Task1-2_{Training,Validation,Test}_Input/*.jpg` with
//!   `ISIC2018_Task1_*_GroundTruth/<stem>_segmentation.png`.
//!
//! The 2017 and 2018 validation sets are the `Val` split (`val_fraction` is then unused);
//! validation and test folders may be absent. Masks are binary: one instance by default.

use std::path::Path;

use anyhow::{bail, Context};

use super::files::{self, Pair};
use super::paired::{ByMode, Paired};
use crate::data::split::Splits;
use crate::data::{DatasetOptions, FileIssue, InstanceMode, Record};

const CSV_2016: [&str; 2] = [
    "ISBI2016_ISIC_Part1_Training_GroundTruth.csv",
    "ISBI2016_ISIC_Part1_Test_GroundTruth.csv",
];

/// One release's folder names: `{set}` is replaced by the set's name.
struct FolderLayout {
    images: &'static str,
    masks: &'static str,
    /// Training, validation and test set names, with accepted alternatives.
    sets: [&'static [&'static str]; 3],
}

const LAYOUTS: [FolderLayout; 2] = [
    FolderLayout {
        images: "ISIC-2017_{set}_Data",
        masks: "ISIC-2017_{set}_Part1_GroundTruth",
        sets: [&["Training"], &["Validation"], &["Test_v2", "Test"]],
    },
    FolderLayout {
        images: "ISIC2018_Task1-2_{set}_Input",
        masks: "ISIC2018_Task1_{set}_GroundTruth",
        sets: [&["Training"], &["Validation"], &["Test"]],
    },
];

/// Indexes the ISIC release found at `root`.
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let mut issues = Vec::new();
    let splits = if root.join(CSV_2016[0]).is_file() {
        let [train, test] = CSV_2016.map(|name| from_csv(root, &root.join(name), &mut issues));
        Splits::official(train?, None, test?, options.val_fraction)
    } else if let Some(layout) = LAYOUTS
        .iter()
        .find(|l| root.join(l.images.replace("{set}", "Training")).is_dir())
    {
        let [train, val, test] = layout
            .sets
            .map(|names| from_folders(root, layout, names, &mut issues));
        let val = val?;
        let val = (!val.is_empty()).then_some(val);
        Splits::official(train?, val, test?, options.val_fraction)
    } else {
        bail!(
            "no ISIC release found in {}: expected {} (2016), ISIC-2017_Training_Data/ (2017) \
             or ISIC2018_Task1-2_Training_Input/ (2018)",
            root.display(),
            CSV_2016[0]
        );
    };
    Ok(Paired::new(
        "isic",
        splits,
        issues,
        options.mask_threshold,
        Box::new(ByMode(options.instances.unwrap_or(InstanceMode::Values))),
    ))
}

/// The records of a 2016 CSV; rows whose files are missing are reported.
fn from_csv(root: &Path, csv: &Path, issues: &mut Vec<FileIssue>) -> anyhow::Result<Vec<Record>> {
    let bytes = std::fs::read(csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        let (Some(image), Some(mask)) = (cols.get(1), cols.get(2)) else {
            if !line.trim().is_empty() {
                issues.push(files::issue(
                    csv,
                    format!("line {}: fewer than 3 columns", n + 1),
                ));
            }
            continue;
        };
        let (image, mask) = (root.join(image), root.join(mask));
        if let Some(missing) = [&image, &mask].into_iter().find(|p| !p.is_file()) {
            let reason = format!("listed in {} line {} but missing", csv.display(), n + 1);
            issues.push(files::issue(missing, reason));
            continue;
        }
        let id = files::stem(&image);
        records.push(Pair { id, image, mask }.record());
    }
    Ok(records)
}

/// The records of one set of a 2017 / 2018 release; empty when the set's folders are absent.
fn from_folders(
    root: &Path,
    layout: &FolderLayout,
    names: &[&str],
    issues: &mut Vec<FileIssue>,
) -> anyhow::Result<Vec<Record>> {
    let dirs = |set: &str| {
        (
            root.join(layout.images.replace("{set}", set)),
            root.join(layout.masks.replace("{set}", set)),
        )
    };
    let Some((images, masks)) = names.iter().map(|s| dirs(s)).find(|(i, _)| i.is_dir()) else {
        return Ok(Vec::new());
    };
    let masks = files::require_dir(masks, "the ground-truth masks of the images beside it")?;
    let (pairs, found) = files::pair(
        files::list(&images, &["jpg"])?,
        files::list(&masks, &["png"])?,
        |stem| format!("{stem}_segmentation"),
    );
    issues.extend(found);
    Ok(pairs.into_iter().map(Pair::record).collect())
}
