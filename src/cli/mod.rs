//! The `wesam` command line: one subcommand per module.

mod bench;
mod merge;
mod predict;

use clap::{Parser, Subcommand};

/// Adapt Segment Anything to a new image domain with weak labels.
#[derive(Parser, Debug)]
#[command(name = "wesam", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Segment one image with box, point or mask prompts.
    Predict(predict::PredictArgs),
    /// Fold a LoRA adapter into a checkpoint and write full weights.
    Merge(merge::MergeArgs),
    /// Time and memory of the model's passes (compare with scripts/bench_torch.py).
    Bench(bench::BenchArgs),
}

/// Parses the command line and runs the command.
pub fn run() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Predict(a) => predict::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
