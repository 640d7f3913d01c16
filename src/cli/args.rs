//! Command-line arguments shared by several commands: which model, which dataset.

use std::path::PathBuf;

use anyhow::Context;
use candle_core::Device;

use super::choice::{choice, default_name};
use wesam::adapt::config::DataConfig;
use wesam::data::corrupt::{Corrupted, Corruption, CorruptionSpec};
use wesam::data::datasets::{self, DatasetSpec};
use wesam::data::{Dataset, DatasetOptions, InstanceMode, Record};
use wesam::device::DeviceKind;
use wesam::model::sam_adapter::FpeLayout;
use wesam::model::{Lora, ModelType, Precision, Sam, SamConfig};
use wesam::profile::Profile;

/// The architecture of a checkpoint, when it cannot tell it itself: official checkpoints are
/// recognised by their shapes and files written by wesam store theirs; anything else needs one.
#[derive(clap::Args, Debug, Clone)]
pub struct ArchitectureArgs {
    /// The official model type; detected from the checkpoint when not given.
    #[arg(long, value_parser = choice::<ModelType>())]
    pub model_type: Option<ModelType>,
    /// The architecture of a checkpoint that is no official SAM and stores none: a JSON or TOML
    /// file with the official builder's arguments (e.g. configs/sam-tiny.toml).
    #[arg(long, conflicts_with = "model_type")]
    pub model_config: Option<PathBuf>,
    /// How a SAM-Adapter's F_pe reads the patch embedding: per-token (what the paper describes;
    /// adapters wesam trains) or faithful (the released code's scrambled reshape, which
    /// released checkpoints need) [default: the file's, else faithful].
    #[arg(long, value_parser = choice::<FpeLayout>())]
    pub fpe_layout: Option<FpeLayout>,
}

impl ArchitectureArgs {
    /// Loads `checkpoint` with the architecture the user gave, if any.
    pub fn load(
        &self,
        checkpoint: &std::path::Path,
        input_size: Option<usize>,
        dev: &Device,
    ) -> anyhow::Result<Sam> {
        let architecture = match (&self.model_config, self.model_type) {
            (Some(path), _) => Some(SamConfig::from_file(path)?),
            (None, Some(t)) => Some(SamConfig::official(t)),
            (None, None) => None,
        };
        let mut sam = Sam::load(checkpoint, architecture.as_ref(), input_size, dev)?;
        if let Some(layout) = self.fpe_layout {
            sam.set_fpe_layout(layout)?;
        }
        Ok(sam)
    }
}

/// The model to run: a checkpoint, optional adapters, the input size and the device.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// SAM checkpoint (.pth, safetensors or HuggingFace safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub architecture: ArchitectureArgs,
    /// LoRA adapter to apply.
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// Model input size (default: the checkpoint's); position tables are interpolated.
    #[arg(long)]
    pub image_size: Option<usize>,
    #[arg(long, value_parser = choice::<DeviceKind>(), default_value = default_name::<DeviceKind>())]
    pub device: DeviceKind,
    /// What the image encoder computes in.
    #[arg(long, value_parser = choice::<Precision>(), default_value = default_name::<Precision>())]
    pub precision: Precision,
}

impl ModelArgs {
    /// Opens the device and loads the model and its adapters.
    pub fn load(&self) -> anyhow::Result<(Sam, Option<Lora>, Device)> {
        let dev = self.device.open()?;
        let mut sam = self
            .architecture
            .load(&self.checkpoint, self.image_size, &dev)?;
        sam.image_encoder.set_precision(self.precision);
        let lora = match &self.lora {
            Some(p) => Some(Lora::load(p, &sam.config, &dev)?),
            None => None,
        };
        Ok((sam, lora, dev))
    }
}

/// The directory that holds every image and annotation file of `records`: what an output
/// must never be written into.
pub fn dataset_root(records: &[Record]) -> Option<PathBuf> {
    let files = records
        .iter()
        .flat_map(|r| std::iter::once(r.image.as_path()).chain(r.annotation.as_deref()));
    wesam::io::common_root(files)
}

/// Which dataset, where, and how its masks are read.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    /// A dataset name (kvasir, isic, camo, cod10k, chameleon, coco, voc, ocid, osd, folder) or a
    /// directory in the `folder` layout (`images/` and `masks/`).
    #[arg(long)]
    pub dataset: String,
    /// Root directory of a named dataset.
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Grey level above which a mask pixel is foreground (default 127; the reference uses 0).
    #[arg(long)]
    pub mask_threshold: Option<u8>,
    /// Instance extraction: every distinct mask value, or every connected component.
    #[arg(long, value_parser = choice::<InstanceMode>())]
    pub instances: Option<InstanceMode>,
    /// Corrupt every image on load with one of the 15 COCO-C corruptions (`--dataset coco-c`
    /// is COCO with a corruption).
    #[arg(long, value_parser = choice::<Corruption>())]
    pub corruption: Option<Corruption>,
    /// Severity of the corruption, 1 to 5.
    #[arg(long, default_value_t = DataConfig::default().severity)]
    pub severity: u8,
}

impl DatasetArgs {
    /// The dataset options these arguments and the profile give.
    pub fn options(&self, profile: Profile) -> DatasetOptions {
        let mut o = DatasetOptions::default().for_profile(profile);
        if let Some(t) = self.mask_threshold {
            o.mask_threshold = t;
        }
        o.instances = self.instances.or(o.instances);
        o
    }

    /// Opens the dataset.
    pub fn open(&self, options: DatasetOptions) -> anyhow::Result<Box<dyn Dataset>> {
        let name = match self.dataset.as_str() {
            "coco-c" if self.corruption.is_none() => {
                anyhow::bail!(
                    "--dataset coco-c needs --corruption NAME (e.g. fog) and --severity 1-5"
                )
            }
            "coco-c" => "coco".to_string(),
            other => other.to_string(),
        };
        let spec = DatasetSpec {
            name,
            root: self.data_root.clone(),
            options,
        };
        let inner =
            datasets::open(&spec).with_context(|| format!("opening dataset `{}`", self.dataset))?;
        Ok(match self.corruption {
            Some(corruption) => Box::new(Corrupted {
                inner,
                spec: CorruptionSpec {
                    corruption,
                    severity: self.severity,
                    seed: 0,
                },
            }),
            None => inner,
        })
    }
}
