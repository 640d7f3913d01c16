//! `wesam corrupt`: writes a corrupted copy of a dataset in the `folder` layout (images,
//! instance-id masks and the source's splits), for runs that should not corrupt on the fly.

use std::path::PathBuf;

use anyhow::bail;
use image::{DynamicImage, GrayImage, Luma};

use super::args::{dataset_root, DatasetArgs};
use super::progress::Terminal;
use wesam::data::loader::{default_chunk, load_parallel};
use wesam::data::Split;
use wesam::profile::Profile;
use wesam::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct CorruptArgs {
    #[command(flatten)]
    data: DatasetArgs,
    /// Output directory (gets images/, masks/ and splits/); never inside the input dataset.
    #[arg(long)]
    out: PathBuf,
    /// Write into an --out that already holds files.
    #[arg(long)]
    force: bool,
}

pub fn run(a: CorruptArgs) -> anyhow::Result<()> {
    if a.data.corruption.is_none() {
        bail!("give --corruption NAME (one of the 15 COCO-C corruptions) and --severity 1-5");
    }
    let ds = a.data.open(a.data.options(Profile::Sam))?;
    let records = ds.records(Split::All);
    let input = dataset_root(&records);
    wesam::io::check_output_dir(&a.out, input.as_deref(), a.force, "--out")?;
    let bar = Terminal::default();
    bar.begin("corrupt", records.len(), 0);
    let mut written = 0;
    for (record, sample) in load_parallel(ds.as_ref(), &records, default_chunk()) {
        bar.advance("");
        let sample = match sample {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skipped {}: {e:#}", record.image.display());
                continue;
            }
        };
        let stem = sample.id.replace(['/', '\\'], "_");
        let (w, h) = sample.image.dimensions();
        let mut ids = GrayImage::new(w, h);
        for (i, inst) in sample.instances.iter().enumerate().take(255) {
            for (x, y, p) in inst.mask.enumerate_pixels() {
                if p.0[0] > 0 {
                    ids.put_pixel(x, y, Luma([i as u8 + 1]));
                }
            }
        }
        wesam::io::write_image(
            &a.out.join(format!("images/{stem}.png")),
            &DynamicImage::ImageRgb8(sample.image),
        )?;
        wesam::io::write_image(
            &a.out.join(format!("masks/{stem}.png")),
            &DynamicImage::ImageLuma8(ids),
        )?;
        written += 1;
    }
    bar.end(true);
    for (split, name) in [
        (Split::Train, "train"),
        (Split::Val, "val"),
        (Split::Test, "test"),
    ] {
        let stems: Vec<String> = ds
            .records(split)
            .iter()
            .map(|r| r.id.replace(['/', '\\'], "_"))
            .collect();
        let path = a.out.join(format!("splits/{name}.txt"));
        wesam::io::write_atomically(&path, |tmp| {
            Ok(std::fs::write(tmp, stems.join("\n") + "\n")?)
        })?;
    }
    eprintln!(
        "wrote {written} images of {} to {}",
        ds.name(),
        a.out.display()
    );
    Ok(())
}
