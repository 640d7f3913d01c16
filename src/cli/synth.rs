//! `wesam synth`: writes a synthetic dataset (folder layout) in a source or target domain, for
//! training a small SAM from scratch and adapting it without real data.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::choice::choice;
use wesam::data::synth::{write_dataset, Domain, SynthConfig, SynthInfo, DEFAULT_IMAGE_SIZE};

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// The appearance: `source`, or a target domain that shifts it.
    #[arg(long, value_parser = choice::<Domain>())]
    domain: Domain,
    /// Number of images.
    #[arg(long)]
    count: usize,
    /// Output directory (gets images/, masks/, splits/ and synth.json).
    #[arg(long)]
    out: PathBuf,
    /// Seed of the scenes: the same seed gives the same objects in every domain.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Side of the square images in pixels (every size in a scene scales with it).
    #[arg(long, default_value_t = DEFAULT_IMAGE_SIZE)]
    image_size: u32,
    /// Overwrite a directory whose images/ already holds files.
    #[arg(long)]
    force: bool,
    /// Print one JSON object on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    out: String,
    #[serde(flatten)]
    info: &'a SynthInfo,
    seconds: f64,
    images_per_second: f64,
}

pub fn run(a: SynthArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let config = SynthConfig {
        domain: a.domain,
        seed: a.seed,
        count: a.count,
        image_size: a.image_size,
    };
    let info = write_dataset(&a.out, &config, a.force)?;
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} {} images ({} instances) to {} in {seconds:.1} s",
        a.count,
        a.domain,
        info.instances,
        a.out.display()
    );
    if a.json {
        let report = JsonReport {
            out: a.out.display().to_string(),
            info: &info,
            seconds,
            images_per_second: a.count as f64 / seconds.max(1e-9),
        };
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
