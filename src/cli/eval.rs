//! `wesam eval`: mIoU, Dice and boundary IoU of a model on a dataset split with weak prompts.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::args::{dataset_root, DatasetArgs, ModelArgs};
use super::choice::{choice, default_name, name};
use super::progress::Terminal;
use wesam::adapt::config::{DataConfig, TrainConfig};
use wesam::data::loader::load_parallel;
use wesam::data::prompts::{PromptConfig, PromptKind};
use wesam::data::Split;
use wesam::eval::auto::{evaluate_auto, AutoReport, AutoScores};
use wesam::eval::{evaluate, EvalConfig, EvalReport};
use wesam::profile::Profile;
use wesam::progress::Progress;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    data: DatasetArgs,
    /// The weak label used as prompt.
    #[arg(long, value_parser = choice::<PromptKind>(), default_value = default_name::<PromptKind>())]
    prompt: PromptKind,
    #[arg(long, value_parser = choice::<Split>(), default_value = name(&DataConfig::default().eval_split))]
    split: Split,
    /// `sam` (official preprocessing, logit > 0, scored at image resolution) or
    /// `wesam-reference` (the reference code's preprocessing and metric).
    #[arg(long, value_parser = choice::<Profile>(), default_value = default_name::<Profile>())]
    profile: Profile,
    /// Evaluate only the first N images of the split.
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the point sampling.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Write predicted masks (instance ids) and overlays into this directory (never inside the
    /// dataset).
    #[arg(long)]
    save_masks: Option<PathBuf>,
    /// Write --save-masks into a directory that already holds files.
    #[arg(long)]
    force: bool,
    /// Write per-instance scores to this CSV file.
    #[arg(long)]
    per_instance: Option<PathBuf>,
    /// Prompt-free instance segmentation (with --prompt none): the automatic mask generator's
    /// masks matched to the instances (Hungarian on IoU): matched mIoU, recall at IoU 0.5 and
    /// 0.75, masks per image.
    #[arg(long)]
    auto: bool,
    /// With --auto: also sweep the generator's two score thresholds (predicted IoU 0.6-0.9,
    /// stability 0.6-0.95, by 0.025) and report the pair of best matched mIoU.
    #[arg(long, requires = "auto")]
    calibrate: bool,
    #[command(flatten)]
    generator: super::segment::AmgArgs,
    /// Also report the camouflage and shadow metrics (S-measure, mean E-measure, weighted
    /// F-measure, MAE, BER) of every mask's probability map; always on with `--prompt none`.
    #[arg(long)]
    sod_metrics: bool,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    dataset: &'a str,
    split: Split,
    prompt: PromptKind,
    #[serde(flatten)]
    report: &'a EvalReport,
    images_per_second: f64,
}

fn write_csv(path: &std::path::Path, report: &EvalReport) -> anyhow::Result<()> {
    let mut text = String::from("image,instance,iou,dice,biou,agreement\n");
    for r in &report.per_instance {
        text.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6}\n",
            r.image, r.instance, r.iou, r.dice, r.biou, r.agreement
        ));
    }
    wesam::io::write_atomically(path, |tmp| Ok(std::fs::write(tmp, text)?))
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    if a.auto && a.prompt != PromptKind::None {
        anyhow::bail!("--auto scores masks generated without prompts: pass --prompt none");
    }
    let generator = a.generator.settings()?;
    let (sam, lora, _) = a.model.load()?;
    let dataset = a.data.open(a.data.options(a.profile))?;
    let mut records = dataset.records(a.split);
    if let Some(n) = a.limit {
        records.truncate(n);
    }
    if records.is_empty() {
        anyhow::bail!(
            "the {:?} split of `{}` has no images",
            a.split,
            dataset.name()
        );
    }
    if let Some(dir) = &a.save_masks {
        let input = dataset_root(&dataset.records(Split::All));
        wesam::io::check_output_dir(dir, input.as_deref(), a.force, "--save-masks")?;
    }
    if a.auto {
        return run_auto(
            &a,
            &sam,
            lora.as_ref(),
            dataset.as_ref(),
            &records,
            &generator,
        );
    }
    let mut cfg = EvalConfig::new(a.prompt, PromptConfig::default(), a.profile, a.seed);
    cfg.save_masks = a.save_masks.clone();
    cfg.sod_metrics |= a.sod_metrics;
    let chunk = wesam::data::loader::default_chunk();
    let terminal = Terminal::default();
    let interrupt = super::interrupt::flag("stopping before the next image...");
    terminal.begin("eval", records.len(), 0);
    let samples = load_parallel(dataset.as_ref(), &records, chunk)
        .take_while(|_| !interrupt.load(Ordering::SeqCst));
    let report = evaluate(&sam, lora.as_ref(), samples, &cfg, &terminal);
    terminal.end(report.is_ok());
    if interrupt.load(Ordering::SeqCst) {
        let done = report.as_ref().map_or(0, |r| r.images + r.skipped.len());
        return Err(super::interrupt::Stopped(format!(
            "interrupted after {done} of {} images: no scores reported (a part of the split \
             is not the split)",
            records.len()
        ))
        .into());
    }
    let report = report?;
    if let Some(p) = &a.per_instance {
        write_csv(p, &report)?;
    }
    for s in &report.skipped {
        eprintln!("skipped {}: {}", s.file, s.reason);
    }
    let name = dataset.name();
    let ips = report.images as f64 / report.seconds.max(1e-9);
    if a.json {
        let j = JsonReport {
            dataset: &name,
            split: a.split,
            prompt: a.prompt,
            report: &report,
            images_per_second: ips,
        };
        println!("{}", serde_json::to_string(&j)?);
    } else {
        println!(
            "| dataset | split | prompt | images | instances | mIoU | mDice | mBIoU | weak-label agreement |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        let label = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        println!(
            "| {name} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            label(serde_json::to_value(a.split)?),
            label(serde_json::to_value(a.prompt)?),
            report.images,
            report.instances,
            report.miou,
            report.dice,
            report.biou,
            report.agreement
        );
        if let Some(s) = &report.sod {
            println!("\n| S-measure | mean E-measure | weighted F | MAE | BER (%) |");
            println!("|---|---|---|---|---|");
            println!(
                "| {:.4} | {:.4} | {:.4} | {:.4} | {:.2} |",
                s.s_measure, s.e_measure, s.weighted_f, s.mae, s.ber
            );
        }
        eprintln!("\n{:.1} s, {ips:.2} images/s", report.seconds);
    }
    Ok(())
}

/// `eval --auto`: the automatic mask generator's masks against the split's instances.
fn run_auto(
    a: &EvalArgs,
    sam: &wesam::model::Sam,
    lora: Option<&wesam::model::Lora>,
    dataset: &dyn wesam::data::Dataset,
    records: &[wesam::data::Record],
    generator: &wesam::amg::AmgConfig,
) -> anyhow::Result<()> {
    let sweep = if a.calibrate {
        wesam::eval::auto::calibration_grid()
    } else {
        Vec::new()
    };
    let interrupt = super::interrupt::flag("stopping before the next image...");
    let report = auto_report(
        "eval --auto",
        sam,
        lora,
        dataset,
        records,
        generator,
        &sweep,
        &interrupt,
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "dataset": dataset.name(),
                "split": a.split,
                "auto": &report,
                "best": report.best(),
            })
        );
        return Ok(());
    }
    println!(
        "{} images, {} instances ({}, {} split)\n",
        report.images,
        report.instances,
        dataset.name(),
        name(&a.split)
    );
    println!("{}", auto_header("thresholds"));
    println!(
        "{}",
        auto_row(
            &format!(
                "predicted IoU {}, stability {}",
                generator.pred_iou_thresh, generator.stability_score_thresh
            ),
            &report.scores,
        )
    );
    if let Some((iou, stability, s)) = report.best() {
        println!(
            "{}",
            auto_row(&format!("best of the sweep: {iou:.3}, {stability:.3}"), s)
        );
    }
    Ok(())
}

/// The automatic mask generator's scores of `sam` (with `lora`) on `records`, under a progress
/// bar named `what`, stopping before the next image once `interrupt` is set; the images that
/// failed to load are listed on standard error (`eval --auto`, `adapt --auto`).
#[allow(clippy::too_many_arguments)]
pub(super) fn auto_report(
    what: &str,
    sam: &wesam::model::Sam,
    lora: Option<&wesam::model::Lora>,
    dataset: &dyn wesam::data::Dataset,
    records: &[wesam::data::Record],
    generator: &wesam::amg::AmgConfig,
    sweep: &[(f64, f64)],
    interrupt: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<AutoReport> {
    let terminal = Terminal::default();
    terminal.begin(what, records.len(), 0);
    let samples = load_parallel(dataset, records, wesam::data::loader::default_chunk())
        .take_while(|_| !interrupt.load(Ordering::SeqCst));
    let report = evaluate_auto(sam, lora, samples, generator, sweep, &terminal);
    terminal.end(report.is_ok());
    if interrupt.load(Ordering::SeqCst) {
        return Err(super::interrupt::Stopped(
            "interrupted: no scores reported (a part of the split is not the split)".into(),
        )
        .into());
    }
    let report = report?;
    for s in &report.skipped {
        eprintln!("skipped {}: {}", s.file, s.reason);
    }
    Ok(report)
}

/// The header of a table of automatic-mask scores whose first column is `first`.
pub(super) fn auto_header(first: &str) -> String {
    format!(
        "| {first} | matched mIoU | recall@0.5 | recall@0.75 | F1@0.5 | masks per image |\n\
         |---|---|---|---|---|---|"
    )
}

/// One row of that table: the scores in percent, the masks per image.
pub(super) fn auto_row(what: &str, s: &AutoScores) -> String {
    format!(
        "| {what} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
        100.0 * s.matched_iou,
        100.0 * s.recall_50,
        100.0 * s.recall_75,
        100.0 * s.f1_50,
        s.masks
    )
}
