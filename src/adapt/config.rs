//! The configuration of an adaptation run: plain serde data, every default in its `Default`
//! impl, read from TOML (`configs/<dataset>.toml`, `--config FILE`) and overridden by flags.
//! The resolved configuration is written into the run directory as `config.toml`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::losses::{AnchorWeighting, LossConfig};
use super::optim::{AdamConfig, LrSchedule, REFERENCE_WARMUP_STEPS};
use crate::data::corrupt::Corruption;
use crate::data::prompts::{PromptConfig, PromptKind};
use crate::data::{DatasetOptions, Split};
use crate::model::sam_adapter::FpeLayout;
use crate::model::{LoraConfig, ModelType, Precision, SamConfig};
use crate::profile::Profile;

/// Which data, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Dataset name or `folder` path; empty means the built-in demo.
    pub dataset: String,
    pub data_root: Option<PathBuf>,
    pub options: DatasetOptions,
    /// The split adapted on (its images' weak labels are the prompts).
    pub train_split: Split,
    /// The split reported before and after adaptation.
    pub eval_split: Split,
    /// Evaluate on at most this many images (quick runs).
    pub eval_limit: Option<usize>,
    /// Adapt on at most this many images (quick runs).
    pub train_limit: Option<usize>,
    /// Corrupt every image on load with one of the COCO-C corruptions (`coco-c`).
    pub corruption: Option<Corruption>,
    /// Severity of the corruption, 1 to 5.
    pub severity: u8,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: String::new(),
            data_root: None,
            options: DatasetOptions::default(),
            train_split: Split::Train,
            eval_split: Split::Test,
            eval_limit: None,
            train_limit: None,
            corruption: None,
            severity: 5,
        }
    }
}

/// What a run optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Objective {
    /// WeSAM: the weak labels are only prompts; the student learns from the teacher's
    /// pseudo-labels, held near the frozen anchor (`wesam adapt`).
    #[default]
    SelfTraining,
    /// Fully supervised against the ground-truth masks with the same prompts and the same
    /// focal + dice + IoU-MSE terms (`wesam train`): the paper's upper bound, and the way to
    /// train a source model from scratch.
    Supervised,
}

/// The parameter-efficient adapter of the image encoder that `trainable = "lora"` trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Peft {
    /// LoRA on the encoder's q and v projections (the reference).
    #[default]
    Lora,
    /// SAM-Adapter's explicit-visual-prompt adapter (`model::sam_adapter`), added to the model
    /// with fresh weights if it has none; the anchor stays the adapter-free model.
    SamAdapter,
}

/// Which weights a run trains; everything else stays frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Trainable {
    /// The encoder's adapter that `peft` chooses: LoRA (the reference) or SAM-Adapter's.
    #[default]
    Lora,
    /// SAM-Adapter's set (its paper): its adapter, the mask decoder and `no_mask_embed`.
    SamAdapter,
    /// The whole mask decoder.
    Decoder,
    /// Every weight of the model (not the prompt encoder's fixed Fourier matrix, a buffer).
    All,
    /// The weights whose official names contain one of `model.train_names` (e.g.
    /// `patch_embed`): where in the network a shift can be absorbed.
    Named,
}

/// Where the starting weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Init {
    /// The checkpoint file.
    #[default]
    Checkpoint,
    /// Random weights of the configured architecture, from the seed (training from scratch).
    Random,
}

/// The source model, how it starts and what of it is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[derive(Default)]
pub struct ModelConfig {
    pub checkpoint: Option<PathBuf>,
    pub model_type: Option<ModelType>,
    /// Input size (e.g. 512 for CPU runs); `None` is the checkpoint's.
    pub image_size: Option<usize>,
    pub init: Init,
    /// The architecture of a randomly initialised model, or of a checkpoint that neither stores
    /// one nor is an official SAM (`--model-config FILE` is read into it,
    /// so the run directory's `config.toml` is self-contained).
    pub architecture: Option<SamConfig>,
    /// How a SAM-Adapter checkpoint's F_pe reads the patch embedding; `None`: the file's, else
    /// the released code's (`faithful`).
    pub fpe_layout: Option<FpeLayout>,
    /// The encoder adapter that `trainable = "lora"` trains.
    pub peft: Peft,
    pub trainable: Trainable,
    /// With `trainable = "named"`: a weight is trained when its official name contains one of
    /// these strings.
    pub train_names: Vec<String>,
    pub lora: LoraConfig,
}

impl ModelConfig {
    /// Whether the model weight of this official name is trained (LoRA adapters are not model
    /// weights and are handled apart).
    pub fn trains(&self, name: &str) -> bool {
        let adapter = name.starts_with(crate::model::sam_adapter::WEIGHTS_PREFIX);
        match self.trainable {
            Trainable::Lora => self.peft == Peft::SamAdapter && adapter,
            Trainable::SamAdapter => {
                adapter
                    || name.starts_with("mask_decoder.")
                    || name == "prompt_encoder.no_mask_embed.weight"
            }
            Trainable::Decoder => name.starts_with("mask_decoder."),
            Trainable::All => !name.ends_with("positional_encoding_gaussian_matrix"),
            Trainable::Named => self.train_names.iter().any(|n| name.contains(n.as_str())),
        }
    }

    /// Whether the run's model carries SAM-Adapter's adapter.
    pub fn uses_sam_adapter(&self) -> bool {
        self.peft == Peft::SamAdapter || self.trainable == Trainable::SamAdapter
    }
}

/// Adam or AdamW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum OptimizerKind {
    /// Adam with coupled L2 weight decay (the reference).
    #[default]
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
}

/// Where mask losses are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum LossResolution {
    /// On logits upsampled to the input size, as the reference (1024² for SAM).
    #[default]
    Input,
    /// On the decoder's low-resolution logits (4x fewer pixels per side, much cheaper).
    Low,
}

/// How a run chooses the weights it keeps at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum Selection {
    /// The profile's rule, resolved at the start of a run ([`Selection::resolve`]): under
    /// `wesam-reference` the best epoch on the evaluation split (the reference's code does so);
    /// under `sam` the best epoch on the validation split when `val_fraction` carves one, else
    /// for `wesam adapt` the weak-label rule and for `wesam train` the last epoch.
    #[default]
    Auto,
    /// The last epoch.
    Last,
    /// The epoch with the best mIoU on the evaluation split (the reference's code; it reads
    /// the split it reports, so its number is optimistic).
    EvalMiou,
    /// The epoch with the best mIoU on the validation split (`val_fraction` of the adaptation
    /// split held out).
    ValMiou,
    /// The epoch, or the starting model, whose masks agree best with the weak labels of the
    /// adaptation split (their mean agreement, as `wesam eval` reports it). It needs no ground
    /// truth, so it suits a target domain that has only weak labels; a run whose masks only
    /// drift away from the weak labels keeps its starting weights.
    WeakLabel,
}

impl Selection {
    /// The concrete rule of `Auto` for a run of this profile and objective.
    pub fn resolve(self, profile: Profile, objective: Objective, val_fraction: f64) -> Self {
        match (self, profile, objective) {
            (Selection::Auto, Profile::WesamReference, _) => Selection::EvalMiou,
            (Selection::Auto, Profile::Sam, _) if val_fraction > 0.0 => Selection::ValMiou,
            (Selection::Auto, Profile::Sam, Objective::SelfTraining) => Selection::WeakLabel,
            (Selection::Auto, Profile::Sam, Objective::Supervised) => Selection::Last,
            (rule, _, _) => rule,
        }
    }
}

/// The optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub epochs: usize,
    /// Images per optimiser step on each rank.
    pub batch_size: usize,
    /// The job's ranks (`mpirun -np N`), each training `batch_size` images of every step: set
    /// from the launcher when a run starts, and required again by `--resume`.
    pub ranks: usize,
    /// At most this many instances per batch (random ones are kept).
    pub max_instances: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: LrSchedule,
    /// Teacher = exponential moving average of the adapted weights with this momentum
    /// (e.g. 0.999); `None` is the reference: the teacher shares the student's weights.
    pub ema_momentum: Option<f64>,
    pub seed: u64,
    /// Consecutive non-finite losses (skipped steps) tolerated before the run stops.
    pub max_nonfinite: usize,
    pub loss_resolution: LossResolution,
    /// Steps between checkpoints (besides the end of each epoch).
    pub checkpoint_every: usize,
    /// How the kept weights are chosen.
    pub selection: Selection,
    /// What the image encoder computes in (LoRA weights, gradients, optimiser state and losses
    /// stay f32).
    pub precision: Precision,
    /// Supervised training of SAM's three outputs for single-point prompts, as SAM is trained
    /// (`losses::multimask_image_loss`): what the automatic mask generator decodes.
    pub multimask: bool,
}

impl TrainConfig {
    /// Images per optimiser step over all ranks.
    pub fn global_batch(&self) -> usize {
        self.batch_size.max(1) * self.ranks.max(1)
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 1,
            ranks: 1,
            max_instances: 50,
            optimizer: OptimizerKind::Adam,
            lr: 1e-4,
            weight_decay: 1e-4,
            schedule: LrSchedule::default(),
            ema_momentum: None,
            seed: 1337,
            max_nonfinite: 5,
            loss_resolution: LossResolution::Input,
            checkpoint_every: 100,
            selection: Selection::Auto,
            precision: Precision::F32,
            multimask: false,
        }
    }
}

impl TrainConfig {
    /// The optimiser's settings.
    pub fn adam(&self) -> AdamConfig {
        match self.optimizer {
            OptimizerKind::Adam => AdamConfig::adam(self.lr, self.weight_decay),
            OptimizerKind::Adamw => AdamConfig::adamw(self.lr, self.weight_decay),
        }
    }
}

/// Everything a run of `wesam adapt` (self-training) or `wesam train` (supervised) needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptConfig {
    pub objective: Objective,
    pub profile: Profile,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub prompt: PromptKind,
    pub prompts: PromptConfig,
    pub train: TrainConfig,
    pub losses: LossConfig,
}

/// A unit enum's name as configuration files spell it.
fn kebab<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_string(),
    }
}

/// The per-dataset configurations shipped in `configs/`, built into the binary.
const BUILT_IN: &[(&str, &str)] = &[
    ("kvasir", include_str!("../../configs/kvasir.toml")),
    ("isic", include_str!("../../configs/isic.toml")),
    ("camo", include_str!("../../configs/camo.toml")),
    ("cod10k", include_str!("../../configs/cod10k.toml")),
    ("chameleon", include_str!("../../configs/chameleon.toml")),
    ("coco", include_str!("../../configs/coco.toml")),
    ("voc", include_str!("../../configs/voc.toml")),
    ("ocid", include_str!("../../configs/ocid.toml")),
    ("osd", include_str!("../../configs/osd.toml")),
    ("coco-c", include_str!("../../configs/coco-c.toml")),
];

impl AdaptConfig {
    /// Parses TOML and checks the values ([`AdaptConfig::validate`]), naming `origin` in errors.
    pub fn from_toml(text: &str, origin: &str) -> anyhow::Result<Self> {
        let cfg: Self =
            toml::from_str(text).with_context(|| format!("invalid configuration {origin}"))?;
        cfg.validate()
            .with_context(|| format!("invalid configuration {origin}"))?;
        Ok(cfg)
    }

    /// Refuses numbers a run cannot use, whether from a file or a flag: every one must be
    /// finite and in its range. The message names the setting by its config key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let (t, d, lora) = (&self.train, &self.data, &self.model.lora);
        let exponent = self.losses.anchor_trust_exponent;
        let positive = "a finite number > 0";
        let checks = [
            (t.lr.is_finite() && t.lr > 0.0, "train.lr", "--lr", positive),
            (
                t.weight_decay.is_finite() && t.weight_decay >= 0.0,
                "train.weight_decay",
                "--weight-decay",
                "a finite number >= 0",
            ),
            (
                t.batch_size >= 1,
                "train.batch_size",
                "--batch-size",
                "at least 1",
            ),
            (t.ranks >= 1, "train.ranks", "mpirun -np", "at least 1"),
            (
                t.max_instances >= 1,
                "train.max_instances",
                "--max-instances",
                "at least 1",
            ),
            (
                t.max_nonfinite >= 1,
                "train.max_nonfinite",
                "",
                "at least 1",
            ),
            (
                t.ema_momentum.is_none_or(|m| (0.0..1.0).contains(&m)),
                "train.ema_momentum",
                "--ema",
                "in [0, 1)",
            ),
            (
                (1..=5).contains(&d.severity),
                "data.severity",
                "--severity",
                "1 to 5",
            ),
            (
                (0.0..1.0).contains(&d.options.val_fraction),
                "data.options.val_fraction",
                "--val-fraction",
                "in [0, 1)",
            ),
            (
                t.selection != Selection::WeakLabel || self.prompt != PromptKind::None,
                "train.selection",
                "--select",
                "another rule than weak-label with --prompt none (there are no weak labels)",
            ),
            (
                t.selection != Selection::ValMiou || d.options.val_fraction > 0.0,
                "data.options.val_fraction",
                "--val-fraction",
                "above 0 to select by validation mIoU (train.selection = \"val-miou\")",
            ),
            (
                !t.multimask
                    || (self.objective == Objective::Supervised
                        && matches!(self.prompt, PromptKind::Point | PromptKind::Mixed)
                        && self.prompts.positive_points == 1
                        && self.prompts.negative_points == 0),
                "train.multimask",
                "--multimask",
                "false unless training supervised (wesam train) on single-point prompts: \
                 --prompt point or mixed with [prompts] positive_points = 1 and \
                 negative_points = 0",
            ),
            (
                lora.rank >= 1,
                "model.lora.rank",
                "--lora-rank",
                "at least 1",
            ),
            (
                lora.scale.is_finite(),
                "model.lora.scale",
                "--lora-scale",
                "a finite number",
            ),
            (
                exponent.is_finite() && exponent > 0.0,
                "losses.anchor_trust_exponent",
                "--anchor-trust-exponent",
                "a positive number",
            ),
        ];
        for (ok, key, flag, range) in checks {
            if !ok {
                let flag = if flag.is_empty() {
                    String::new()
                } else {
                    format!(" ({flag})")
                };
                anyhow::bail!("{key} must be {range}{flag}");
            }
        }
        Ok(())
    }

    /// The settings a run over `train_images` images uses, with every setting left to the
    /// profile (`None`, `auto`) made explicit: the run prints them, writes them to its
    /// `config.toml`, and a resumed run reads the same. Under `sam` the warm-up is at most a
    /// tenth of the run's steps (the reference's 250 steps outlast a short run, whose rate
    /// would never reach its value), the anchor is weighted by the weak labels and the kept
    /// epoch is chosen by them; `wesam-reference` keeps the reference's values.
    pub fn effective(&self, train_images: usize) -> Self {
        let mut c = self.clone();
        let steps = c.train.epochs * train_images.div_ceil(c.train.global_batch());
        c.train
            .schedule
            .warmup_steps
            .get_or_insert(match c.profile {
                Profile::Sam => REFERENCE_WARMUP_STEPS.min(steps / 10),
                Profile::WesamReference => REFERENCE_WARMUP_STEPS,
            });
        c.losses.anchor_weighting = Some(c.losses.anchor_weighting(c.profile));
        c.train.selection =
            c.train
                .selection
                .resolve(c.profile, c.objective, c.data.options.val_fraction);
        if c.prompt == PromptKind::None {
            // Without weak labels there is nothing to weigh or select by.
            if self.losses.anchor_weighting.is_none() {
                c.losses.anchor_weighting = Some(AnchorWeighting::Uniform);
            }
            if self.train.selection == Selection::Auto && c.train.selection == Selection::WeakLabel
            {
                c.train.selection = Selection::Last;
            }
        }
        c
    }

    /// The effective settings that decide a run's outcome, on one line for its start.
    pub fn summary(&self) -> String {
        let (t, m) = (&self.train, &self.model);
        let trained = match (m.trainable, m.peft) {
            (Trainable::Lora, Peft::Lora) => {
                format!("LoRA rank {} (scale {})", m.lora.rank, m.lora.scale)
            }
            (Trainable::Lora, Peft::SamAdapter) => "the SAM-Adapter adapter".to_string(),
            (other, _) => format!("{} weights", kebab(&other)),
        };
        let mut s = format!(
            "{} ({} profile): {trained}, {} epochs, batch {}, {} lr {:e} (warm-up {} steps), \
             weight decay {:e}, selection {}, encoder in {}",
            kebab(&self.objective),
            kebab(&self.profile),
            t.epochs,
            match t.ranks {
                1 => t.batch_size.to_string(),
                r => format!(
                    "{} ({} per rank on {r} ranks)",
                    t.global_batch(),
                    t.batch_size
                ),
            },
            kebab(&t.optimizer),
            t.lr,
            t.schedule.warmup_steps.unwrap_or(REFERENCE_WARMUP_STEPS),
            t.weight_decay,
            kebab(&t.selection.resolve(
                self.profile,
                self.objective,
                self.data.options.val_fraction
            )),
            kebab(&t.precision),
        );
        if self.objective == Objective::SelfTraining && self.losses.anchor.enabled {
            let w = self.losses.anchor_weighting(self.profile);
            s += &format!(", anchor weighting {}", kebab(&w));
            if w == AnchorWeighting::WeakLabel {
                s += &format!(" (exponent {})", self.losses.anchor_trust_exponent);
            }
        }
        s
    }

    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// The built-in configuration of a named dataset, if there is one.
    pub fn built_in(dataset: &str) -> anyhow::Result<Option<Self>> {
        BUILT_IN
            .iter()
            .find(|(name, _)| *name == dataset)
            .map(|(name, text)| Self::from_toml(text, &format!("configs/{name}.toml")))
            .transpose()
    }

    /// The configuration as TOML, for the run directory.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_config_parses_and_round_trips() {
        for (name, _) in BUILT_IN {
            let c = AdaptConfig::built_in(name).unwrap().unwrap();
            let back = AdaptConfig::from_toml(&c.to_toml().unwrap(), name).unwrap();
            assert_eq!(back, c, "{name}");
        }
        assert!(AdaptConfig::built_in("nope").unwrap().is_none());
    }

    #[test]
    fn the_effective_settings_fit_the_run_under_sam_and_are_the_reference_s_under_its_profile() {
        // 60 images, 5 epochs, batch 1: 300 steps.
        let sam = AdaptConfig::default().effective(60);
        assert_eq!(sam.train.schedule.warmup_steps, Some(30));
        assert_eq!(
            sam.losses.anchor_weighting,
            Some(AnchorWeighting::WeakLabel)
        );
        assert_eq!(sam.train.selection, Selection::WeakLabel);
        // A long run keeps the reference's warm-up.
        assert_eq!(
            AdaptConfig::default()
                .effective(10_000)
                .train
                .schedule
                .warmup_steps,
            Some(REFERENCE_WARMUP_STEPS)
        );
        let mut reference = AdaptConfig {
            profile: Profile::WesamReference,
            ..Default::default()
        };
        let r = reference.effective(60);
        assert_eq!(r.train.schedule.warmup_steps, Some(REFERENCE_WARMUP_STEPS));
        assert_eq!(r.losses.anchor_weighting, Some(AnchorWeighting::Uniform));
        assert_eq!(r.train.selection, Selection::EvalMiou);
        // What a user set is kept, and resolving twice changes nothing.
        reference.train.schedule.warmup_steps = Some(7);
        reference.train.selection = Selection::Last;
        let r = reference.effective(60);
        assert_eq!(r.train.schedule.warmup_steps, Some(7));
        assert_eq!(r.train.selection, Selection::Last);
        assert_eq!(r.effective(1), r);
        // Supervised training keeps the last epoch; a validation split selects by its mIoU.
        let mut supervised = AdaptConfig {
            objective: Objective::Supervised,
            ..Default::default()
        };
        assert_eq!(supervised.effective(60).train.selection, Selection::Last);
        supervised.data.options.val_fraction = 0.2;
        assert_eq!(supervised.effective(60).train.selection, Selection::ValMiou);
    }

    #[test]
    fn defaults_are_the_reference_values_and_unknown_keys_are_errors() {
        let c = AdaptConfig::default();
        assert_eq!(
            (c.train.epochs, c.train.batch_size, c.train.max_instances),
            (5, 1, 50)
        );
        assert_eq!((c.train.lr, c.train.weight_decay), (1e-4, 1e-4));
        assert_eq!((c.model.lora.rank, c.model.lora.scale), (4, 1.0));
        let err = AdaptConfig::from_toml("[train]\nepohcs = 3\n", "test").unwrap_err();
        assert!(format!("{err:#}").contains("epohcs"));
    }
}
