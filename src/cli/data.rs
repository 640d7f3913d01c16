//! `wesam data check`: index a dataset and decode every record, to find out before a long run
//! what it holds (images, instances, split sizes) and which files are skipped or suspicious.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::choice::choice;
use super::progress::Terminal;
use wesam::data::datasets::{self, DatasetSpec};
use wesam::data::loader::{default_chunk, load_parallel};
use wesam::data::{mask, Dataset, DatasetOptions, FileIssue, InstanceMode, Record, Split};
use wesam::progress::Progress;

/// The `data` subcommands.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand, Debug)]
enum DataCommand {
    /// Index a dataset, load every image and mask, and report counts, splits and skipped files.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// A dataset name (kvasir, isic, camo, cod10k, chameleon, ocid, osd, folder, coco, voc) or
    /// a directory with images/ and masks/.
    #[arg(long)]
    dataset: String,
    /// The dataset's root directory (for a dataset given by name).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Grey level above which a JPEG mask pixel is foreground (default 127; the reference: 0).
    #[arg(long)]
    mask_threshold: Option<u8>,
    /// Instance extraction; default: the dataset's own rule.
    #[arg(long, value_parser = choice::<InstanceMode>())]
    instances: Option<InstanceMode>,
    /// k of the k:1 interleaved train:test split; default: the dataset's reference value.
    #[arg(long)]
    interleave: Option<usize>,
    /// Fraction of the training split held out as the validation split.
    #[arg(long, default_value_t = DatasetOptions::default().val_fraction)]
    val_fraction: f64,
    /// Load only the first N records (all splits are still counted in full).
    #[arg(long)]
    limit: Option<usize>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

/// What `data check --json` prints.
#[derive(Serialize, Debug)]
struct Report {
    /// Records loaded with at least one instance.
    images: usize,
    instances: usize,
    splits: SplitSizes,
    /// Files left out while indexing or loading, and suspicious ones (tiny instances).
    skipped: Vec<FileIssue>,
    /// Images turned by their EXIF orientation on loading, as image viewers show them.
    oriented: Vec<String>,
}

#[derive(Serialize, Debug)]
struct SplitSizes {
    train: usize,
    val: usize,
    test: usize,
}

/// Runs a `data` subcommand.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Check(a) => check(a),
    }
}

fn check(a: CheckArgs) -> anyhow::Result<()> {
    let defaults = DatasetOptions::default();
    let options = DatasetOptions {
        mask_threshold: a.mask_threshold.unwrap_or(defaults.mask_threshold),
        instances: a.instances,
        interleave: a.interleave,
        val_fraction: a.val_fraction,
        ..defaults
    };
    let tiny = options.tiny_instance_px;
    let start = Instant::now();
    let ds = datasets::open(&DatasetSpec {
        name: a.dataset,
        root: a.data_root,
        options,
    })?;
    let mut all = ds.records(Split::All);
    let total = all.len();
    all.truncate(a.limit.unwrap_or(total));
    let progress = Terminal::default();
    progress.begin("check", all.len(), 0);
    let mut report = Report {
        images: 0,
        instances: 0,
        splits: SplitSizes {
            train: ds.records(Split::Train).len(),
            val: ds.records(Split::Val).len(),
            test: ds.records(Split::Test).len(),
        },
        skipped: ds.index_issues(),
        oriented: Vec::new(),
    };
    inspect(ds.as_ref(), &all, tiny, &mut report, &progress);
    progress.end(true);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{}: {} images, {} instances ({} of {total} records loaded in {:.1} s)",
        ds.name(),
        report.images,
        report.instances,
        all.len(),
        start.elapsed().as_secs_f64()
    );
    let s = &report.splits;
    println!("splits: train {}, val {}, test {}", s.train, s.val, s.test);
    println!("skipped or suspicious files: {}", report.skipped.len());
    for i in &report.skipped {
        println!("  {}: {}", i.file, i.reason);
    }
    if !report.oriented.is_empty() {
        println!(
            "turned by their EXIF orientation, as image viewers show them: {}",
            report.oriented.len()
        );
        for f in &report.oriented {
            println!("  {f}");
        }
    }
    Ok(())
}

/// Loads `records` (in parallel, bounded memory) and adds their counts and problems to
/// `report`: unreadable or truncated files and size mismatches, images without instances, tiny
/// instances, and the images their EXIF orientation turns.
fn inspect(
    ds: &dyn Dataset,
    records: &[Record],
    tiny: usize,
    report: &mut Report,
    progress: &Terminal,
) {
    for (record, loaded) in load_parallel(ds, records, default_chunk()) {
        progress.advance("");
        if let Some(o) = wesam::io::exif_orientation(&record.image) {
            report
                .oriented
                .push(format!("{} ({o:?})", record.image.display()));
        }
        let file = record.annotation.as_ref().unwrap_or(&record.image);
        let issue = |reason: String| FileIssue {
            file: file.display().to_string(),
            reason,
        };
        match loaded {
            Err(e) => report.skipped.push(issue(format!("{e:#}"))),
            Ok(s) if s.instances.is_empty() => report
                .skipped
                .push(issue("empty mask: no instance".to_string())),
            Ok(s) => {
                report.images += 1;
                report.instances += s.instances.len();
                for (i, inst) in s.instances.iter().enumerate() {
                    let area = mask::area(&inst.mask);
                    if area < tiny {
                        report.skipped.push(issue(format!(
                            "instance {} is tiny: {area} px (< {tiny})",
                            i + 1
                        )));
                    }
                }
            }
        }
    }
}
