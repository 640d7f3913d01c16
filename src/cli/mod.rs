//! The `wesam` command line: one subcommand per module.

mod adapt;
mod args;
mod bench;
mod choice;
mod corrupt;
mod data;
mod demo;
mod eval;
mod export;
mod features;
mod images;
pub mod interrupt;
mod merge;
mod predict;
mod progress;
mod segment;
mod synth;

use clap::{Parser, Subcommand};

use choice::choice;
use wesam::ops::{Kernels, KERNELS_ENV};

/// Adapt Segment Anything to a new image domain with weak labels.
#[derive(Parser, Debug)]
#[command(name = "wesam", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// The op kernels: native (fused CPU kernels for f32 on the CPU, portable elsewhere) or
    /// portable (the ops as CUDA and Metal run them, on every device) [default: native].
    #[arg(long, global = true, env = KERNELS_ENV, value_parser = choice::<Kernels>())]
    kernels: Option<Kernels>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Adapt a SAM checkpoint to a target dataset by weakly supervised self-training (without
    /// --dataset: the built-in demo on a generated shifted domain).
    Adapt(adapt::AdaptArgs),
    /// Train against the ground-truth masks (supervised upper bound, or a model from scratch
    /// with --init random --model-config FILE); same flags as adapt.
    Train(adapt::AdaptArgs),
    /// Write a corrupted copy of a dataset (folder layout) with one of the COCO-C corruptions.
    Corrupt(corrupt::CorruptArgs),
    /// Score a model on a dataset split with weak prompts (mIoU, Dice, boundary IoU).
    Eval(eval::EvalArgs),
    /// Inspect datasets: `data check` indexes and loads one and reports what it holds.
    Data(data::DataArgs),
    /// Write the image encoder's intermediate features and embedding (a feature provider for
    /// EBSeg-style models), one safetensors file per image.
    Features(features::FeaturesArgs),
    /// Segment every object of an image without prompts (the official automatic mask
    /// generator), writing SA-1B-style JSON with COCO RLE masks.
    Segment(segment::SegmentArgs),
    /// Segment one image with box, point or mask prompts, or none (--prompt none).
    Predict(predict::PredictArgs),
    /// Fold a LoRA adapter into a checkpoint and write full weights.
    Merge(merge::MergeArgs),
    /// Write merged weights in another container: a PyTorch .pth that torch.load and the official
    /// sam_model_registry read, or safetensors.
    Export(export::ExportArgs),
    /// Write a synthetic dataset (folder layout) in a source or shifted target domain.
    Synth(synth::SynthArgs),
    /// Time and memory of the model's passes (compare with scripts/bench_torch.py).
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    wesam::ops::set_kernels(cli.kernels.unwrap_or_default());
    match cli.command {
        Command::Adapt(a) => adapt::run(a),
        Command::Train(a) => adapt::run_supervised(a),
        Command::Eval(a) => eval::run(a),
        Command::Corrupt(a) => corrupt::run(a),
        Command::Data(a) => data::run(a),
        Command::Features(a) => features::run(a),
        Command::Segment(a) => segment::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Export(a) => export::run(a),
        Command::Synth(a) => synth::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag of `adapt` that changes a run conflicts with `--resume` (which continues with
    /// the run's own configuration), new flags included.
    #[test]
    fn resume_conflicts_with_every_flag_that_changes_a_run() {
        let cli = super::Cli::command();
        let adapt = cli.find_subcommand("adapt").unwrap();
        let resume = adapt
            .get_arguments()
            .find(|a| a.get_id() == "resume")
            .unwrap();
        let conflicts: Vec<&str> = adapt
            .get_arg_conflicts_with(resume)
            .iter()
            .map(|a| a.get_id().as_str())
            .collect();
        let allowed = [
            "resume",
            "json",
            "device",
            "crash_after_steps",
            "kernels",
            "auto",
            "dist",
            "dist_init",
            "dist_timeout",
            "help",
        ];
        for arg in adapt.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                allowed.contains(&id) || conflicts.contains(&id),
                "--{id} does not conflict with --resume"
            );
        }
    }
}
