//! File input and output shared by the commands: images and masks read with errors that name the
//! file, and every output written under a temporary name, then renamed into place, so that an
//! interrupted run never leaves a truncated file where a good one was.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Tensor;
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

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

/// Whether a JPEG's data reaches its end-of-image marker after its last scan. Decoders fill
/// the missing part of a truncated file with grey without a word; the entropy-coded data can
/// hold no marker, so the last start-of-scan followed by an end-of-image tells a whole file
/// (thumbnails in the EXIF data come before the main image's scans).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xff, 0xda]);
    last_scan.is_some_and(|at| bytes[at..].windows(2).any(|w| w == [0xff, 0xd9]))
}

/// An image file as an image viewer shows it: decoded, its EXIF orientation applied. A
/// truncated JPEG is an error. `what` names the file's role in messages ("image", "mask").
pub fn read_oriented(path: &Path, what: &str) -> anyhow::Result<DynamicImage> {
    let context = || format!("cannot read {what} {}", path.display());
    let bytes = std::fs::read(path).with_context(context)?;
    let reader = ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .with_context(context)?;
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        anyhow::bail!(
            "{what} {} is a truncated JPEG: its data ends before the end-of-image marker",
            path.display()
        );
    }
    let mut decoder = reader.into_decoder().with_context(context)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).with_context(context)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// The EXIF orientation that reading `path` applies, when it is not the identity (read from
/// the header alone, for `wesam data check` to say so).
pub fn exif_orientation(path: &Path) -> Option<Orientation> {
    let mut decoder = ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?
        .into_decoder()
        .ok()?;
    decoder
        .orientation()
        .ok()
        .filter(|&o| o != Orientation::NoTransforms)
}

/// Reads an image as RGB ([`read_oriented`]).
pub fn read_rgb(path: &Path) -> anyhow::Result<RgbImage> {
    Ok(read_oriented(path, "image")?.to_rgb8())
}

/// Reads a mask as one 8-bit channel (colour masks are converted to luma; [`read_oriented`]).
pub fn read_gray(path: &Path) -> anyhow::Result<GrayImage> {
    Ok(read_oriented(path, "mask")?.to_luma8())
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

/// `path` made absolute with symbolic links resolved, also when it does not exist yet: its
/// nearest existing ancestor is resolved and the rest appended (`..` in the rest is taken
/// lexically).
pub fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut absolute = PathBuf::new();
    for part in std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .components()
    {
        match part {
            Component::ParentDir => {
                absolute.pop();
            }
            Component::CurDir => {}
            other => absolute.push(other),
        }
    }
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// The deepest directory that holds every one of `files`: the root of a dataset's files.
pub fn common_root<'a>(files: impl IntoIterator<Item = &'a Path>) -> Option<PathBuf> {
    files
        .into_iter()
        .filter_map(|f| resolved(f).parent().map(Path::to_path_buf))
        .reduce(|root, dir| {
            let mut common = PathBuf::new();
            for (a, b) in root.components().zip(dir.components()) {
                if a != b {
                    break;
                }
                common.push(a);
            }
            common
        })
}

/// Refuses an output directory that would destroy what the user has: `out` equal to or inside
/// `input` (the root of the data being read) always, and an `out` that already holds files
/// unless `force`. `flag` names the option in the messages.
pub fn check_output_dir(
    out: &Path,
    input: Option<&Path>,
    force: bool,
    flag: &str,
) -> anyhow::Result<()> {
    let target = resolved(out);
    if let Some(input) = input.map(resolved) {
        if target.starts_with(&input) {
            anyhow::bail!(
                "{flag} {} is inside the dataset being read ({}): writing there would overwrite \
                 or mix with its files; choose a directory outside it",
                out.display(),
                input.display()
            );
        }
    }
    let occupied = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if occupied && !force {
        anyhow::bail!(
            "{flag} {} already holds files; choose another directory or pass --force to write \
             over them",
            out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_inside_the_input_or_over_files_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir_all(data.join("images")).unwrap();
        std::fs::create_dir_all(data.join("masks")).unwrap();
        let files = [data.join("images/a.png"), data.join("masks/a.png")];
        for f in &files {
            std::fs::write(f, b"x").unwrap();
        }
        let input = common_root(files.iter().map(PathBuf::as_path)).unwrap();
        assert_eq!(input, resolved(&data));
        // The dataset itself, a folder in it, a folder not yet made in it: always refused.
        for out in [data.clone(), data.join("masks"), data.join("new/deeper")] {
            let err = check_output_dir(&out, Some(&input), true, "--out").unwrap_err();
            assert!(err.to_string().contains("inside the dataset"), "{err}");
        }
        // A path that reaches the dataset through `..` is the dataset.
        let dotted = root.path().join("elsewhere/../data/images");
        assert!(check_output_dir(&dotted, Some(&input), true, "--out").is_err());
        // Beside the dataset: new or empty folders are fine, occupied ones need --force.
        let beside = root.path().join("out");
        check_output_dir(&beside, Some(&input), false, "--out").unwrap();
        std::fs::create_dir_all(&beside).unwrap();
        check_output_dir(&beside, Some(&input), false, "--out").unwrap();
        std::fs::write(beside.join("kept.txt"), b"user data").unwrap();
        let err = check_output_dir(&beside, Some(&input), false, "--out").unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        check_output_dir(&beside, Some(&input), true, "--out").unwrap();
    }
}
