//! `wesam adapt` (weakly supervised self-training of a SAM checkpoint on a target dataset) and
//! `wesam train` (supervised training against the ground truth): one set of flags, one loop.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::args::DatasetArgs;
use super::choice::{choice, default_name, name};
use super::progress::Terminal;
use wesam::adapt::config::{
    AdaptConfig, Init, LossResolution, Objective, OptimizerKind, Peft, Selection, Trainable,
};
use wesam::adapt::losses::{AnchorWeighting, SupervisedLoss};
use wesam::adapt::run_dir::{RunDir, RunLock};
use wesam::adapt::trainer::{RunControl, Trainer};
use wesam::data::corrupt::Corruption;
use wesam::data::prompts::PromptKind;
use wesam::data::Split;
use wesam::device::DeviceKind;
use wesam::model::sam_adapter::FpeLayout;
use wesam::model::{ModelType, Precision, Sam, SamConfig};
use wesam::profile::Profile;

#[derive(clap::Args, Debug)]
pub struct AdaptArgs {
    /// A TOML configuration (see configs/); flags override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset name (its configs/<name>.toml is the base) or a folder-layout directory.
    #[arg(long)]
    dataset: Option<String>,
    #[arg(long)]
    data_root: Option<PathBuf>,
    #[arg(long, value_parser = choice::<PromptKind>())]
    prompt: Option<PromptKind>,
    /// SAM checkpoint to adapt.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[arg(long, value_parser = choice::<ModelType>())]
    model_type: Option<ModelType>,
    /// Where the starting weights come from: the checkpoint, or random weights of
    /// `--model-config` (training from scratch).
    #[arg(long, value_parser = choice::<Init>())]
    init: Option<Init>,
    /// The architecture: of a randomly initialised model, or of a checkpoint that is no official
    /// SAM and stores none. A JSON or TOML file with the official builder's arguments (e.g.
    /// configs/sam-tiny.toml).
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// How a SAM-Adapter checkpoint's F_pe reads the patch embedding: per-token or faithful
    /// (the released code's) [default: the file's, else faithful].
    #[arg(long, value_parser = choice::<FpeLayout>())]
    fpe_layout: Option<FpeLayout>,
    /// The encoder adapter that `--trainable lora` (the default) trains: LoRA, or SAM-Adapter's
    /// explicit-visual-prompt adapter (fresh, unless the checkpoint has one).
    #[arg(long, value_parser = choice::<Peft>())]
    peft: Option<Peft>,
    /// What is trained: the encoder adapter of --peft (default), SAM-Adapter's set (its
    /// adapter, the mask decoder and no_mask_embed), the mask decoder, every weight, or the
    /// weights named by --train-names.
    #[arg(long, value_parser = choice::<Trainable>())]
    trainable: Option<Trainable>,
    /// Train the weights whose official names contain one of these strings (implies
    /// --trainable named), e.g. `patch_embed,blocks.0.mlp`.
    #[arg(long, value_delimiter = ',')]
    train_names: Option<Vec<String>>,
    /// Model input size (e.g. 512 on a CPU); position tables are interpolated.
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long, value_parser = choice::<Profile>())]
    profile: Option<Profile>,
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per optimiser step (default 1, as the reference); on the CPU they are
    /// differentiated at the same time, one per core.
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, value_parser = choice::<OptimizerKind>())]
    optimizer: Option<OptimizerKind>,
    /// L2 (adam) or decoupled (adamw) weight decay.
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Use an EMA teacher with this momentum (e.g. 0.999).
    #[arg(long)]
    ema: Option<f64>,
    #[arg(long)]
    lora_rank: Option<usize>,
    #[arg(long)]
    lora_scale: Option<f64>,
    /// Encoder blocks with adapters, e.g. 0,1,2 (default: all).
    #[arg(long, value_delimiter = ',')]
    lora_blocks: Option<Vec<usize>>,
    /// Turn loss terms off (ablations): any of focal, dice, iou, anchor, contrastive.
    #[arg(long, value_delimiter = ',')]
    without: Vec<String>,
    /// How the anchor term weighs each instance: uniformly (the reference) or by how well the
    /// anchor's mask agrees with the instance's weak label.
    #[arg(long, value_parser = choice::<AnchorWeighting>())]
    anchor_weighting: Option<AnchorWeighting>,
    /// Under the weak-label weighting, the power the trust in the anchor's mask is raised to
    /// (default 1).
    #[arg(long)]
    anchor_trust_exponent: Option<f64>,
    #[arg(long, value_parser = choice::<LossResolution>())]
    loss_resolution: Option<LossResolution>,
    /// What `wesam train` minimises: wesam's focal + dice + IoU-MSE, or SAM-Adapter's BCE + IoU.
    #[arg(long, value_parser = choice::<SupervisedLoss>())]
    loss: Option<SupervisedLoss>,
    #[arg(long)]
    max_instances: Option<usize>,
    /// Positive points per instance of point prompts (default 5).
    #[arg(long)]
    positive_points: Option<usize>,
    /// Negative points per instance of point prompts (default 5).
    #[arg(long)]
    negative_points: Option<usize>,
    /// `wesam train` on single-point prompts (--positive-points 1 --negative-points 0): train
    /// SAM's three outputs, the best of the three per instance and the IoU head on all, as SAM is
    /// trained; what `wesam segment` needs.
    #[arg(long)]
    multimask: bool,
    #[arg(long)]
    seed: Option<u64>,
    /// Fraction of the adaptation split held out to select the best epoch.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// How the kept weights are chosen: the profile's rule (auto), or the epoch, the starting
    /// model included, whose masks agree best with the adaptation split's weak labels.
    #[arg(long, value_parser = choice::<Selection>())]
    select: Option<Selection>,
    /// Adapt on at most N images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on at most N images.
    #[arg(long)]
    eval_limit: Option<usize>,
    /// The split scored before and after training (default: test).
    #[arg(long, value_parser = choice::<Split>())]
    eval_split: Option<Split>,
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Run directory (default: runs/<dataset>-<prompt>-<UTC time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with its config.toml: no
    /// flag that would change the run is accepted beside it.
    #[arg(long, conflicts_with_all = [
        "config", "dataset", "data_root", "prompt", "checkpoint", "model_type", "init",
        "model_config", "fpe_layout", "peft", "trainable", "train_names", "image_size", "profile", "epochs",
        "batch_size", "lr", "optimizer", "weight_decay", "ema", "lora_rank", "lora_scale",
        "lora_blocks", "without", "anchor_weighting", "anchor_trust_exponent", "loss_resolution", "loss",
        "max_instances", "positive_points", "negative_points", "multimask", "seed", "val_fraction", "select", "train_limit", "eval_limit",
        "eval_split", "checkpoint_every", "out", "precision", "corruption", "severity",
    ])]
    resume: Option<PathBuf>,
    /// End by printing one JSON object (direct and adapted scores, run directory) on stdout.
    #[arg(long)]
    json: bool,
    #[arg(long, value_parser = choice::<DeviceKind>(), default_value = default_name::<DeviceKind>())]
    device: DeviceKind,
    /// What the image encoder computes in (LoRA weights, gradients, optimiser state and losses
    /// stay f32) [default: f32].
    #[arg(long, value_parser = choice::<Precision>())]
    precision: Option<Precision>,
    /// Corrupt every image with one of the 15 COCO-C corruptions (`--dataset coco-c`).
    #[arg(long, value_parser = choice::<Corruption>())]
    corruption: Option<Corruption>,
    /// Severity of the corruption, 1 to 5 (default 5).
    #[arg(long)]
    severity: Option<u8>,
    /// Testing aid: stop abruptly after N steps, without a checkpoint (as a crash would).
    #[arg(long, hide = true)]
    crash_after_steps: Option<usize>,
}

/// `YYYYMMDD-HHMMSS` in UTC, for run directory names.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The configuration: `base` (the demo's), else built-in (per dataset) or `--config`, then
/// every flag given.
fn resolve(
    a: &AdaptArgs,
    objective: Objective,
    base: Option<AdaptConfig>,
) -> anyhow::Result<AdaptConfig> {
    let mut c = match (base, &a.config, &a.dataset) {
        (Some(base), _, _) => base,
        (None, Some(path), _) => AdaptConfig::from_file(path)?,
        (None, None, Some(name)) => AdaptConfig::built_in(name)?.unwrap_or_default(),
        (None, None, None) => AdaptConfig::default(),
    };
    c.objective = objective;
    if let Some(d) = &a.dataset {
        c.data.dataset = d.clone();
    }
    if let Some(path) = &a.model_config {
        c.model.architecture = Some(SamConfig::from_file(path)?);
    }
    macro_rules! set {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $(if let Some(v) = &a.$flag { c.$($field).+ = v.clone().into(); })*
        };
    }
    set!(
        data_root => data.data_root, checkpoint => model.checkpoint, model_type => model.model_type,
        image_size => model.image_size, init => model.init, fpe_layout => model.fpe_layout, peft => model.peft, trainable => model.trainable, prompt => prompt, profile => profile, epochs => train.epochs,
        batch_size => train.batch_size, lr => train.lr, optimizer => train.optimizer, weight_decay => train.weight_decay, ema => train.ema_momentum,
        lora_rank => model.lora.rank, lora_scale => model.lora.scale, lora_blocks => model.lora.blocks,
        loss_resolution => train.loss_resolution, loss => losses.supervised, max_instances => train.max_instances, seed => train.seed,
        val_fraction => data.options.val_fraction, train_limit => data.train_limit,
        eval_limit => data.eval_limit, eval_split => data.eval_split, checkpoint_every => train.checkpoint_every,
        corruption => data.corruption, severity => data.severity, anchor_weighting => losses.anchor_weighting,
        anchor_trust_exponent => losses.anchor_trust_exponent, select => train.selection,
        precision => train.precision, positive_points => prompts.positive_points,
        negative_points => prompts.negative_points,
    );
    c.train.multimask |= a.multimask;
    if let Some(names) = &a.train_names {
        if a.trainable.is_some_and(|t| t != Trainable::Named) {
            bail!("--train-names trains the named weights only: drop --trainable");
        }
        c.model.trainable = Trainable::Named;
        c.model.train_names = names.clone();
    }
    for term in &a.without {
        match c.losses.term_mut(term) {
            Some(t) => t.enabled = false,
            None => {
                bail!("--without {term}: not a loss term (focal, dice, iou, anchor, contrastive)")
            }
        }
    }
    c.data.options = c.data.options.for_profile(c.profile);
    c.validate()?;
    Ok(c)
}

/// `wesam adapt`.
pub fn run(a: AdaptArgs) -> anyhow::Result<()> {
    run_objective(a, Objective::SelfTraining)
}

/// `wesam train`: the same flags, supervised against the ground truth.
pub fn run_supervised(a: AdaptArgs) -> anyhow::Result<()> {
    run_objective(a, Objective::Supervised)
}

/// The model a run starts from: the checkpoint, or random weights of the configured
/// architecture drawn from the run's seed (the same weights again on `--resume`).
fn starting_model(cfg: &AdaptConfig, dev: &candle_core::Device) -> anyhow::Result<Sam> {
    match cfg.model.init {
        Init::Checkpoint => {
            let checkpoint = cfg
                .model
                .checkpoint
                .clone()
                .context("give --checkpoint FILE (the SAM weights to start from), or --init random --model-config FILE")?;
            let architecture = match (&cfg.model.architecture, cfg.model.model_type) {
                (Some(a), _) => Some(a.clone()),
                (None, t) => t.map(SamConfig::official),
            };
            let mut sam = Sam::load(
                &checkpoint,
                architecture.as_ref(),
                cfg.model.image_size,
                dev,
            )?;
            if let Some(layout) = cfg.model.fpe_layout {
                sam.set_fpe_layout(layout)?;
            }
            Ok(sam)
        }
        Init::Random => {
            let arch = match (&cfg.model.architecture, cfg.model.model_type) {
                (Some(a), _) => a.clone(),
                (None, Some(t)) => SamConfig::official(t),
                (None, None) => bail!("--init random needs --model-config FILE or --model-type"),
            };
            Sam::random(&arch, cfg.model.image_size, cfg.train.seed, dev)
        }
    }
}

/// A new run must not overwrite one that `--resume` could continue.
fn refuse_existing_run(out: &std::path::Path) -> anyhow::Result<()> {
    if RunDir(out.to_path_buf()).holds_run() {
        bail!(
            "{} already holds a run: continue it with --resume, or choose another --out",
            out.display()
        );
    }
    Ok(())
}

/// The run's configuration and directory, held by this process (see [`RunDir::lock`]): a
/// resumed run's own, the demo's, or a new run's from the flags (never an existing run's
/// directory).
fn configure_run(
    a: &AdaptArgs,
    objective: Objective,
) -> anyhow::Result<(AdaptConfig, RunDir, RunLock)> {
    let command = match objective {
        Objective::SelfTraining => "adapt",
        Objective::Supervised => "train",
    };
    let (cfg, run, lock) = match &a.resume {
        Some(dir) => {
            let run = RunDir(dir.clone());
            let cfg = AdaptConfig::from_file(&run.config())?;
            let lock = run.lock()?;
            (cfg, run, lock)
        }
        None if a.config.is_none() && a.dataset.is_none() => {
            if objective == Objective::Supervised {
                bail!("give --dataset NAME|DIR (or --config FILE); see `wesam train --help`");
            }
            // The built-in default: the bundled source model on a generated shifted domain.
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("runs/adapt-demo-{}", utc_stamp())));
            let cfg = resolve(a, objective, Some(super::demo::config(&out)?))?;
            refuse_existing_run(&out)?;
            let lock = RunDir(out.clone()).lock()?;
            super::demo::write_inputs(&out)?;
            (cfg, RunDir(out), lock)
        }
        None => {
            let cfg = resolve(a, objective, None)?;
            if cfg.data.dataset.is_empty() {
                bail!("give --dataset NAME|DIR (or --config FILE); see `wesam {command} --help`");
            }
            let dataset = std::path::Path::new(&cfg.data.dataset)
                .file_name()
                .map_or(cfg.data.dataset.clone(), |n| {
                    n.to_string_lossy().into_owned()
                });
            let prompt = name(&cfg.prompt);
            let out = a.out.clone().unwrap_or_else(|| {
                PathBuf::from(format!("runs/{command}-{dataset}-{prompt}-{}", utc_stamp()))
            });
            refuse_existing_run(&out)?;
            let lock = RunDir(out.clone()).lock()?;
            (cfg, RunDir(out), lock)
        }
    };
    Ok((cfg, run, lock))
}

fn run_objective(a: AdaptArgs, objective: Objective) -> anyhow::Result<()> {
    // First, so that a device that cannot be opened fails before any data is written or read.
    let dev = a.device.open()?;
    let (cfg, run, _lock) = configure_run(&a, objective)?;
    if cfg.objective != objective {
        bail!(
            "{} is a `wesam {}` run; resume it with that command",
            run.0.display(),
            if objective == Objective::Supervised {
                "adapt"
            } else {
                "train"
            }
        );
    }
    let mut sam = starting_model(&cfg, &dev)?;
    sam.image_encoder.set_precision(cfg.train.precision);
    let data = DatasetArgs {
        dataset: cfg.data.dataset.clone(),
        data_root: cfg.data.data_root.clone(),
        mask_threshold: None,
        instances: None,
        corruption: cfg.data.corruption,
        severity: cfg.data.severity,
    };
    let dataset = data.open(cfg.data.options.clone())?;

    let interrupt = super::interrupt::flag("saving a checkpoint after this step or image...");
    let ctl = RunControl {
        resume: a.resume.is_some(),
        interrupt: &interrupt,
        crash_after: a.crash_after_steps,
    };
    let terminal = Terminal::default();
    let outcome = Trainer::new(&cfg, &sam, dataset.as_ref(), &run, &terminal)?.fit(&ctl)?;
    eprintln!("|        | mIoU  | Dice  |");
    eprintln!("|--------|-------|-------|");
    eprintln!(
        "| direct | {:.2} | {:.2} |",
        outcome.direct.miou, outcome.direct.dice
    );
    eprintln!(
        "| adapted| {:.2} | {:.2} |",
        outcome.adapted.miou, outcome.adapted.dice
    );
    match outcome.kept_epoch {
        0 => eprintln!("kept: the starting weights"),
        e => eprintln!("kept: epoch {e}"),
    }
    eprintln!("run directory: {}", outcome.out.display());
    if a.json {
        println!("{}", serde_json::to_string(&outcome)?);
    }
    Ok(())
}
