//! The dataset registry: a dataset named on the command line or in a config ([`DatasetSpec`])
//! opened in its conventional layout ([`open`]).
//!
//! Every family but COCO and VOC is a [`paired::Paired`] dataset (one mask file per image); the
//! family modules only find and split the files and choose the instance rule.

pub mod camo;
pub mod chameleon;
pub mod coco;
pub mod cod10k;
pub mod files;
pub mod folder;
pub mod isic;
pub mod kvasir;
pub mod ocid;
pub mod osd;
pub mod paired;
pub mod voc;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::{Dataset, DatasetOptions};

/// Indexes one family's layout at a root.
type Opener = fn(&Path, &DatasetOptions) -> anyhow::Result<Box<dyn Dataset>>;

/// The dataset families by name.
const FAMILIES: &[(&str, Opener)] = &[
    ("kvasir", |r, o| Ok(Box::new(kvasir::open(r, o)?))),
    ("isic", |r, o| Ok(Box::new(isic::open(r, o)?))),
    ("camo", |r, o| Ok(Box::new(camo::open(r, o)?))),
    ("cod10k", |r, o| Ok(Box::new(cod10k::open(r, o)?))),
    ("chameleon", |r, o| Ok(Box::new(chameleon::open(r, o)?))),
    ("ocid", |r, o| Ok(Box::new(ocid::open(r, o)?))),
    ("osd", |r, o| Ok(Box::new(osd::open(r, o)?))),
    ("folder", |r, o| Ok(Box::new(folder::open(r, o)?))),
    ("coco", |r, o| Ok(Box::new(coco::Coco::open(r, o)?))),
    ("voc", |r, o| Ok(Box::new(voc::Voc::open(r, o)?))),
];

/// The dataset names [`open`] knows; any other name must be a folder of `images/` and `masks/`.
pub fn names() -> Vec<&'static str> {
    FAMILIES.iter().map(|(name, _)| *name).collect()
}

/// Which dataset to open, where, and how: what a config or the command line names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// One of [`names`], or a directory path, meaning `folder` at that path.
    pub name: String,
    /// The dataset's root directory (required for every name but a path).
    pub root: Option<PathBuf>,
    #[serde(default)]
    pub options: DatasetOptions,
}

/// Opens (indexes) a dataset. Errors say what is wrong: an unknown name lists the known ones,
/// a missing root or sub-folder is named.
pub fn open(spec: &DatasetSpec) -> anyhow::Result<Box<dyn Dataset>> {
    let options = &spec.options;
    check_options(options)?;
    let name = spec.name.as_str();
    let Some((_, opener)) = FAMILIES.iter().find(|(n, _)| *n == name) else {
        let path = Path::new(name);
        if !path.is_dir() {
            bail!(
                "unknown dataset `{name}`: use one of {} or a directory with images/ and masks/",
                names().join(", ")
            );
        }
        if let Some(root) = &spec.root {
            bail!(
                "dataset `{name}` is a directory, so the data root {} would be ignored; give one \
                 of them",
                root.display()
            );
        }
        return Ok(Box::new(folder::open(path, options)?));
    };
    let root = spec
        .root
        .as_deref()
        .with_context(|| format!("dataset `{name}` needs its root directory (--data-root)"))?;
    if !root.is_dir() {
        bail!(
            "data root {} of dataset `{name}` is not a directory",
            root.display()
        );
    }
    opener(root, options)
}

/// Rejects options no split can follow.
fn check_options(options: &DatasetOptions) -> anyhow::Result<()> {
    if options.interleave == Some(0) {
        bail!("interleave must be at least 1 (k training images per test image)");
    }
    if !(0.0..1.0).contains(&options.val_fraction) {
        bail!(
            "val_fraction must be in [0, 1), not {}",
            options.val_fraction
        );
    }
    Ok(())
}
