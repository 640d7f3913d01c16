//! `wesam features`: the (adapted) image encoder as a feature provider, one safetensors file per
//! image (`model::features`).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use anyhow::{bail, Context};

use super::args::ModelArgs;
use super::choice::{choice, default_name};
use super::progress::Terminal;
use wesam::model::checkpoint::write_safetensors;
use wesam::model::features::{self, FeaturePreprocessing};
use wesam::progress::Progress;

/// Image files a folder input is read for.
const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

#[derive(clap::Args, Debug)]
pub struct FeaturesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// An image, or a folder of images (one output file each).
    #[arg(long)]
    image: PathBuf,
    /// The output: a .safetensors file for one image, a folder for a folder.
    #[arg(long)]
    out: PathBuf,
    /// `sam`: the model's square input (--image-size); `ebseg`: the image at its own size
    /// (or --short-side), padded to a multiple of 32, as EBSeg feeds SAM's encoder.
    #[arg(long, value_parser = choice::<FeaturePreprocessing>(), default_value = default_name::<FeaturePreprocessing>())]
    preprocess: FeaturePreprocessing,
    /// With `--preprocess ebseg`: resize the image's shortest side to this length first
    /// (EBSeg's test-time size is 640).
    #[arg(long)]
    short_side: Option<usize>,
    /// Also write EBSeg's `res2`..`res5`: the four global-attention blocks' outputs rescaled
    /// bilinearly by 4, 2, 1 and 0.5.
    #[arg(long)]
    rescale: bool,
    /// Write over an existing output file, or into a folder that already holds files.
    #[arg(long)]
    force: bool,
}

pub fn run(a: FeaturesArgs) -> anyhow::Result<()> {
    if a.short_side.is_some() && a.preprocess != FeaturePreprocessing::Ebseg {
        bail!("--short-side applies to --preprocess ebseg; `sam` resizes to --image-size");
    }
    if a.short_side == Some(0) {
        bail!("--short-side must be at least 1");
    }
    let jobs = jobs(&a)?;
    let (sam, lora, _) = a.model.load()?;
    let adapter = match (&a.model.lora, sam.config.sam_adapter) {
        (Some(p), _) => format!("lora:{}", p.display()),
        (None, Some(_)) => "sam-adapter".to_string(),
        (None, None) => "none".to_string(),
    };
    let terminal = Terminal::default();
    let interrupt = super::interrupt::flag("stopping before the next image...");
    terminal.begin("features", jobs.len(), 0);
    let mut failed = Vec::new();
    let mut written = 0;
    for (image_path, out) in &jobs {
        if interrupt.load(Ordering::SeqCst) {
            break;
        }
        let result = (|| -> anyhow::Result<()> {
            let image = wesam::io::read_rgb(image_path)?;
            let prepared = features::prepare(&image, a.preprocess, a.short_side, &sam)?;
            let f = features::extract(&sam, lora.as_ref(), &prepared.input, a.rescale)?;
            let metadata = features::metadata(&sam, a.preprocess, &prepared, &adapter);
            write_safetensors(out, &f.named(), metadata)
        })();
        match result {
            Ok(()) => written += 1,
            // One image: its error is the command's.
            Err(e) if jobs.len() == 1 => return Err(e),
            Err(e) => failed.push(format!("{}: {e:#}", image_path.display())),
        }
        terminal.advance("");
    }
    terminal.end(written > 0);
    for f in &failed {
        eprintln!("skipped {f}");
    }
    if interrupt.load(Ordering::SeqCst) {
        return Err(super::interrupt::Stopped(format!(
            "interrupted after {written} of {} images (each file written is whole)",
            jobs.len()
        ))
        .into());
    }
    if written == 0 {
        bail!(
            "no features written: every one of the {} images failed",
            jobs.len()
        );
    }
    eprintln!(
        "wrote the features of {written} image{} to {}{}",
        if written == 1 { "" } else { "s" },
        a.out.display(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" ({} skipped)", failed.len())
        }
    );
    Ok(())
}

/// (image, output file) pairs: the image and `--out` itself, or every image of the folder and
/// `<out>/<stem>.safetensors`. Refuses outputs that would overwrite what the user has.
fn jobs(a: &FeaturesArgs) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    if !a.image.is_dir() {
        if !a.image.is_file() {
            bail!("--image {}: no such file or folder", a.image.display());
        }
        if a.out.exists() && !a.force {
            bail!(
                "--out {} already exists; choose another name or pass --force to replace it",
                a.out.display()
            );
        }
        if wesam::io::resolved(&a.out) == wesam::io::resolved(&a.image) {
            bail!("--out {} is the input image", a.out.display());
        }
        return Ok(vec![(a.image.clone(), a.out.clone())]);
    }
    let mut images: Vec<PathBuf> = std::fs::read_dir(&a.image)
        .with_context(|| format!("cannot list {}", a.image.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    images.sort();
    if images.is_empty() {
        bail!(
            "--image {}: the folder holds no image ({})",
            a.image.display(),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    wesam::io::check_output_dir(&a.out, Some(&a.image), a.force, "--out")?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
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
                    "two images of {} are named {stem} (different extensions): their features \
                     would share {stem}.safetensors",
                    a.image.display()
                );
            }
            let out = a.out.join(format!("{stem}.safetensors"));
            Ok((p, out))
        })
        .collect()
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}
