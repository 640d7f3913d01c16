//! File input and output shared by the commands: images and masks read with errors that name the
//! file, and every output written under a temporary name, then renamed into place, so that an
//! interrupted run never leaves a truncated file where a good one was.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Tensor;
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

/// `dir/.name.tmp` beside `path`: the name an output is written under before the rename.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Runs `write` on a temporary path, then renames the result to `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let tmp = temporary_path(path);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("cannot write {}", path.display())));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
}

/// Reads an image as RGB.
pub fn read_rgb(path: &Path) -> anyhow::Result<RgbImage> {
    let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    Ok(img.to_rgb8())
}

/// Reads a mask as one 8-bit channel (colour masks are converted to luma).
pub fn read_gray(path: &Path) -> anyhow::Result<GrayImage> {
    let img = image::open(path).with_context(|| format!("cannot read mask {}", path.display()))?;
    Ok(img.to_luma8())
}

/// Writes an image in the format its extension names.
pub fn write_image(path: &Path, img: &DynamicImage) -> anyhow::Result<()> {
    let format = ImageFormat::from_path(path).with_context(|| {
        format!(
            "{}: unknown image format (use .png or .jpg)",
            path.display()
        )
    })?;
    write_atomically(path, |tmp| Ok(img.save_with_format(tmp, format)?))
}

/// Writes a tensor as a NumPy `.npy` file.
pub fn write_npy(path: &Path, t: &Tensor) -> anyhow::Result<()> {
    write_atomically(path, |tmp| Ok(t.write_npy(tmp)?))
}
