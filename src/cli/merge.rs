//! `wesam merge`: base checkpoint + adapter -> full weights any SAM loader reads.

use std::path::PathBuf;

use super::args::ArchitectureArgs;
use wesam::device::DeviceKind;
use wesam::model::Lora;

#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// Base SAM checkpoint (.pth, safetensors or HuggingFace safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    architecture: ArchitectureArgs,
    /// LoRA adapter written by wesam.
    #[arg(long)]
    lora: PathBuf,
    /// Output safetensors (official key names, configuration in the metadata).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: MergeArgs) -> anyhow::Result<()> {
    let dev = DeviceKind::Cpu.open()?;
    let sam = a.architecture.load(&a.checkpoint, None, &dev)?;
    let lora = Lora::load(&a.lora, &sam.config, &dev)?;
    sam.save(&a.out, Some(&lora))?;
    eprintln!(
        "wrote {} ({} adapter tensors merged)",
        a.out.display(),
        lora.named_vars().len()
    );
    Ok(())
}
