//! `wesam export`: a checkpoint (with a LoRA adapter folded in, if given) written in the
//! container another tool reads: a PyTorch `.pth` for code that loads SAM weights with
//! `torch.load(path, weights_only=True)` (the official `sam_model_registry`, EBSeg, micro-sam),
//! or safetensors. A provenance file beside it says what the weights were made from.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::args::ArchitectureArgs;
use super::choice::{choice, default_name, name};
use wesam::device::DeviceKind;
use wesam::model::ebseg::{into_backbone, PosEmbed};
use wesam::model::{torch_pth, Lora, SamConfig};

/// The container `wesam export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum ExportFormat {
    /// PyTorch's zip checkpoint (torch.save's format): a state dict that torch.load(path,
    /// weights_only=True) and the official sam_model_registry read; no configuration inside.
    #[default]
    Pth,
    /// safetensors with the configuration in its metadata (what `wesam merge` writes).
    Safetensors,
    /// The encoder, without its neck, under EBSeg's `backbone.*` names, as a .pth: written into
    /// a copy of --ebseg-checkpoint when given (its other tensors kept).
    Ebseg,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Base SAM checkpoint (.pth, safetensors or HuggingFace safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    #[command(flatten)]
    architecture: ArchitectureArgs,
    /// LoRA adapter written by wesam, folded into the written weights.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// Output file; `<out>.provenance.json` is written beside it.
    #[arg(long)]
    out: PathBuf,
    /// The container to write.
    #[arg(long, value_parser = choice::<ExportFormat>(), default_value = default_name::<ExportFormat>())]
    format: ExportFormat,
    /// With --format ebseg: the EBSeg checkpoint to write the encoder into (a .pth whose
    /// tensors sit at the top or under "model", as detectron2 saves them).
    #[arg(long)]
    ebseg_checkpoint: Option<PathBuf>,
    /// With --format ebseg and --ebseg-checkpoint: keep EBSeg's trained position embedding
    /// (`ebseg`) or write the model's (`adapted`).
    #[arg(long, value_parser = choice::<PosEmbed>(), default_value = default_name::<PosEmbed>())]
    pos_embed: PosEmbed,
    /// Write over an existing --out and its provenance file.
    #[arg(long)]
    force: bool,
}

/// What `<out>.provenance.json` holds: where the weights came from and what wrote them.
#[derive(Serialize)]
struct Provenance {
    /// The base checkpoint, as an absolute path.
    checkpoint: PathBuf,
    /// The LoRA adapter folded in, as an absolute path, if any.
    lora: Option<PathBuf>,
    /// The adapters in the weights: none, lora, sam-adapter or lora+sam-adapter.
    adapter: &'static str,
    /// The official model type of the architecture (vit_b, vit_l, vit_h), else custom.
    model_type: String,
    /// The wesam version that wrote the file.
    wesam_version: &'static str,
    /// The container written.
    format: String,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    if a.ebseg_checkpoint.is_some() && a.format != ExportFormat::Ebseg {
        anyhow::bail!("--ebseg-checkpoint goes with --format ebseg");
    }
    let provenance_path = provenance_path(&a.out);
    let out = wesam::io::resolved(&a.out);
    for (flag, input) in std::iter::once(("--checkpoint", &a.checkpoint))
        .chain(a.lora.as_ref().map(|l| ("--lora", l)))
        .chain(
            a.ebseg_checkpoint
                .as_ref()
                .map(|e| ("--ebseg-checkpoint", e)),
        )
    {
        if wesam::io::resolved(input) == out {
            anyhow::bail!(
                "--out {} is the {flag} being read: writing it would destroy the input; choose \
                 another --out",
                a.out.display()
            );
        }
    }
    if !a.force {
        if let Some(existing) = [&a.out, &provenance_path].into_iter().find(|p| p.exists()) {
            anyhow::bail!(
                "{} already exists; choose another --out or pass --force to write over it",
                existing.display()
            );
        }
    }
    let dev = DeviceKind::Cpu.open()?;
    let sam = a.architecture.load(&a.checkpoint, None, &dev)?;
    let lora = match &a.lora {
        Some(p) => Some(Lora::load(p, &sam.config, &dev)?),
        None => None,
    };
    match a.format {
        ExportFormat::Pth => torch_pth::write_pth(&a.out, &sam.saved_tensors(lora.as_ref())?)?,
        ExportFormat::Safetensors => sam.save(&a.out, lora.as_ref())?,
        ExportFormat::Ebseg => {
            let base = a.ebseg_checkpoint.as_deref().map(read_ebseg).transpose()?;
            let weights = sam.saved_tensors(lora.as_ref())?;
            torch_pth::write_pth(&a.out, &into_backbone(&weights, base, a.pos_embed)?)?
        }
    }
    let adapter = match (lora.is_some(), sam.config.sam_adapter.is_some()) {
        (false, false) => "none",
        (true, false) => "lora",
        (false, true) => "sam-adapter",
        (true, true) => "lora+sam-adapter",
    };
    let architecture = SamConfig {
        sam_adapter: None,
        ..sam.config.clone()
    };
    let provenance = Provenance {
        checkpoint: wesam::io::resolved(&a.checkpoint),
        lora: a.lora.as_deref().map(wesam::io::resolved),
        adapter,
        model_type: architecture
            .model_type()
            .map_or("custom".into(), |t| t.name().into()),
        wesam_version: env!("CARGO_PKG_VERSION"),
        format: name(&a.format),
    };
    let json = serde_json::to_string_pretty(&provenance)? + "\n";
    wesam::io::write_atomically(&provenance_path, |tmp| Ok(std::fs::write(tmp, &json)?))?;
    eprintln!(
        "wrote {} ({}) and {}",
        a.out.display(),
        name(&a.format),
        provenance_path.display()
    );
    Ok(())
}

/// `<out>.provenance.json`, beside `out`.
fn provenance_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".provenance.json");
    out.with_file_name(name)
}

/// An EBSeg checkpoint's tensors: under "model" (detectron2's checkpoints) or at the top.
fn read_ebseg(path: &Path) -> anyhow::Result<Vec<(String, candle_core::Tensor)>> {
    let nested = candle_core::pickle::read_all_with_key(path, Some("model"));
    let tensors = match nested {
        Ok(t) if !t.is_empty() => t,
        _ => candle_core::pickle::read_all(path).map_err(|e| {
            anyhow::anyhow!("cannot read the EBSeg checkpoint {}: {e}", path.display())
        })?,
    };
    if tensors.is_empty() {
        anyhow::bail!("the EBSeg checkpoint {} holds no tensor", path.display());
    }
    Ok(tensors)
}
