//! The images a command reads one by one (`features`, `segment`): one file, or every image of a
//! folder, each with its output file, and the loop over them.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context};

use super::progress::Terminal;
use wesam::progress::Progress;

/// Image files a folder input is read for.
const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// (image, output file) pairs: `image` and `out` itself, or every image of the folder `image`
/// and `<out>/<stem>.<extension>`. Refuses outputs that would overwrite what the user has
/// (unless `force`), the input itself, and two images of one stem.
pub fn jobs(
    image: &Path,
    out: &Path,
    extension: &str,
    force: bool,
) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    if !image.is_dir() {
        if !image.is_file() {
            bail!("--image {}: no such file or folder", image.display());
        }
        if out.exists() && !force {
            bail!(
                "--out {} already exists; choose another name or pass --force to replace it",
                out.display()
            );
        }
        if wesam::io::resolved(out) == wesam::io::resolved(image) {
            bail!("--out {} is the input image", out.display());
        }
        return Ok(vec![(image.to_path_buf(), out.to_path_buf())]);
    }
    let mut images: Vec<PathBuf> = std::fs::read_dir(image)
        .with_context(|| format!("cannot list {}", image.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    images.sort();
    if images.is_empty() {
        bail!(
            "--image {}: the folder holds no image ({})",
            image.display(),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    wesam::io::check_output_dir(out, Some(image), force, "--out")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut seen = std::collections::HashSet::new();
    images
        .into_iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if !seen.insert(stem.clone()) {
                bail!(
                    "two images of {} are named {stem} (different extensions): their outputs \
                     would share {stem}.{extension}",
                    image.display()
                );
            }
            Ok((p, out.join(format!("{stem}.{extension}"))))
        })
        .collect()
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Runs `each` on every (image, output) pair with a progress bar (`what` names the command),
/// and returns the results of the images that worked, in order. With one image, its error is
/// the command's; in a folder, a failed image is skipped and listed. Ctrl-C stops before the
/// next image (every file written is whole); a run in which no image worked fails.
pub fn for_each<T>(
    jobs: &[(PathBuf, PathBuf)],
    what: &str,
    mut each: impl FnMut(usize, &Path, &Path) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let terminal = Terminal::default();
    let interrupt = super::interrupt::flag("stopping before the next image...");
    terminal.begin(what, jobs.len(), 0);
    let (mut done, mut failed) = (Vec::new(), Vec::new());
    for (index, (image, out)) in jobs.iter().enumerate() {
        if interrupt.load(Ordering::SeqCst) {
            break;
        }
        match each(index, image, out) {
            Ok(v) => done.push(v),
            Err(e) if jobs.len() == 1 => {
                terminal.end(false);
                return Err(e);
            }
            Err(e) => failed.push(format!("{}: {e:#}", image.display())),
        }
        terminal.advance("");
    }
    terminal.end(!done.is_empty());
    for f in &failed {
        eprintln!("skipped {f}");
    }
    if interrupt.load(Ordering::SeqCst) {
        return Err(super::interrupt::Stopped(format!(
            "interrupted after {} of {} images (each file written is whole)",
            done.len(),
            jobs.len()
        ))
        .into());
    }
    if done.is_empty() {
        bail!(
            "nothing written: every one of the {} images failed",
            jobs.len()
        );
    }
    if !failed.is_empty() {
        eprintln!("{} of {} images skipped", failed.len(), jobs.len());
    }
    Ok(done)
}
