//! The built-in default run: `wesam adapt` with no dataset adapts the bundled source model
//! (`models/source-synth.safetensors`, a small SAM trained from scratch on the synthetic source
//! domain by `scripts/train_source_model.sh`) to a generated, shifted synthetic domain, so that
//! the main job runs on a fresh machine with no download.

use std::path::Path;

use anyhow::Context;

use wesam::adapt::config::AdaptConfig;
use wesam::data::prompts::PromptKind;
use wesam::data::synth::{write_dataset, Domain, SynthConfig, DEFAULT_IMAGE_SIZE};

/// The bundled source model: weights with the official key names and the configuration in their
/// metadata, built into the binary so that an installed `wesam` needs no file beside it.
pub const SOURCE_MODEL: &[u8] = include_bytes!("../../models/source-synth.safetensors");

/// The configuration of the synthetic suite (`configs/synth.toml`), which the demo follows.
const SYNTH_CONFIG: &str = include_str!("../../configs/synth.toml");

/// The demo's target domain: the source scenes under fog, a shift that costs the bundled model
/// mIoU that a minute of adaptation partly recovers (figures: `docs/benchmark.md`).
pub const DOMAIN: Domain = Domain::Fog;

/// Images generated for the demo (70% adapted on, 20% evaluated).
const COUNT: usize = 200;

/// Seed of the demo's scenes: not the source model's training seed (1).
const SEED: u64 = 7;

/// The demo's configuration for the run directory `out`: `configs/synth.toml` with box prompts
/// on the inputs that [`write_inputs`] puts there.
pub fn config(out: &Path) -> anyhow::Result<AdaptConfig> {
    let mut cfg = AdaptConfig::from_toml(SYNTH_CONFIG, "configs/synth.toml")?;
    cfg.data.dataset = out.join("data").display().to_string();
    cfg.model.checkpoint = Some(out.join("source-model.safetensors"));
    cfg.prompt = PromptKind::Box;
    Ok(cfg)
}

/// Writes the demo's inputs into the run directory `out`: the bundled model as
/// `source-model.safetensors` and the generated target domain under `data/`.
pub fn write_inputs(out: &Path) -> anyhow::Result<()> {
    let data = out.join("data");
    let model = out.join("source-model.safetensors");
    wesam::io::write_atomically(&model, |tmp| {
        std::fs::write(tmp, SOURCE_MODEL).with_context(|| format!("cannot write {}", tmp.display()))
    })?;
    let info = write_dataset(
        &data,
        &SynthConfig {
            domain: DOMAIN,
            seed: SEED,
            count: COUNT,
            image_size: DEFAULT_IMAGE_SIZE,
        },
        true,
    )?;
    eprintln!(
        "demo: adapting the bundled source model to {} generated `{DOMAIN}` images ({} instances) in {}",
        COUNT,
        info.instances,
        data.display()
    );
    Ok(())
}
