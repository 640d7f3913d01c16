//! `wesam features`: the (adapted) image encoder as a feature provider, one safetensors file per
//! image (`model::features`).

use std::path::PathBuf;

use anyhow::bail;

use super::args::ModelArgs;
use super::choice::{choice, default_name};
use wesam::model::checkpoint::write_safetensors;
use wesam::model::features::{self, FeaturePreprocessing};

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
    let jobs = super::images::jobs(&a.image, &a.out, "safetensors", a.force)?;
    let (sam, lora, _) = a.model.load()?;
    let adapter = match (&a.model.lora, sam.config.sam_adapter) {
        (Some(p), _) => format!("lora:{}", p.display()),
        (None, Some(_)) => "sam-adapter".to_string(),
        (None, None) => "none".to_string(),
    };
    let written = super::images::for_each(&jobs, "features", |_, image_path, out| {
        let image = wesam::io::read_rgb(image_path)?;
        let prepared = features::prepare(&image, a.preprocess, a.short_side, &sam)?;
        let f = features::extract(&sam, lora.as_ref(), &prepared.input, a.rescale)?;
        let metadata = features::metadata(&sam, a.preprocess, &prepared, &adapter);
        write_safetensors(out, &f.named(), metadata)
    })?;
    eprintln!(
        "wrote the features of {} image{} to {}",
        written.len(),
        if written.len() == 1 { "" } else { "s" },
        a.out.display()
    );
    Ok(())
}
