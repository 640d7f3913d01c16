//! `wesam adapt` (weakly supervised self-training of a SAM checkpoint on a target dataset) and
//! `wesam train` (supervised training against the ground truth): one set of flags, one loop.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::args::DatasetArgs;
use super::choice::{choice, default_name, name};
use super::progress::{Replica, Terminal};
use wesam::adapt::config::{
    AdaptConfig, Init, LossResolution, Objective, OptimizerKind, Peft, Selection, Trainable,
};
use wesam::adapt::losses::{AnchorWeighting, SupervisedLoss};
use wesam::adapt::observer::Observer;
use wesam::adapt::run_dir::{RunDir, RunLock};
use wesam::adapt::trainer::{Outcome, RunControl, Trainer};
use wesam::amg::AmgConfig;
use wesam::data::corrupt::Corruption;
use wesam::data::prompts::PromptKind;
use wesam::data::{Dataset, Record, Split};
use wesam::device::DeviceKind;
use wesam::dist::{broadcast_bytes, Collective, DistKind, DistOptions};
use wesam::eval::auto::AutoReport;
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
    /// After the run, also score the starting and the adapted model without prompts on the
    /// evaluation split: the automatic mask generator at its defaults, as `wesam eval --prompt
    /// none --auto` (matched mIoU, recall at IoU 0.5 and 0.75, F1 at 0.5, masks per image).
    #[arg(long)]
    auto: bool,
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
    /// How the ranks of a job started by a launcher (`mpirun`, `srun`, torchrun-style) exchange
    /// gradients.
    #[arg(long, value_parser = choice::<DistKind>(), default_value = default_name::<DistKind>())]
    dist: DistKind,
    /// `file://PATH`: NCCL ranks that no MPI started (torchrun-style `RANK`, `WORLD_SIZE`,
    /// `LOCAL_RANK`, or `srun` without MPI) meet at PATH, a file that must not exist yet, on
    /// storage every rank sees; rank 0 removes it once all have joined.
    #[arg(long, value_name = "file://PATH", value_parser = wesam::dist::parse_init)]
    dist_init: Option<std::path::PathBuf>,
    /// Seconds an NCCL rank waits for the others (at the rendezvous, in an exchange, while rank
    /// 0 evaluates) before it ends the job as hung.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..),
          default_value_t = wesam::dist::DEFAULT_TIMEOUT.as_secs())]
    dist_timeout: u64,
}

impl AdaptArgs {
    /// How the job's ranks are joined.
    fn dist_options(&self) -> DistOptions {
        DistOptions {
            kind: self.dist,
            init: self.dist_init.clone(),
            timeout: std::time::Duration::from_secs(self.dist_timeout),
        }
    }
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

/// The run's configuration and directory on every rank: rank 0 makes them (and holds the
/// directory's lock), the others receive them, or rank 0's error.
fn configure_job(
    a: &AdaptArgs,
    objective: Objective,
    dist: &dyn Collective,
) -> anyhow::Result<(AdaptConfig, RunDir, Option<RunLock>)> {
    if dist.topology().world == 1 {
        let (cfg, run, lock) = configure_run(a, objective)?;
        return Ok((cfg, run, Some(lock)));
    }
    #[derive(serde::Serialize, serde::Deserialize)]
    enum Job {
        Run { config: String, dir: PathBuf },
        Failed(String),
    }
    let (made, job) = if dist.topology().is_primary() {
        let made = configure_run(a, objective);
        let job = match &made {
            Ok((cfg, run, _)) => Job::Run {
                config: cfg.to_toml()?,
                dir: run.0.clone(),
            },
            Err(e) => Job::Failed(format!("{e:#}")),
        };
        (Some(made), serde_json::to_vec(&job)?)
    } else {
        (None, Vec::new())
    };
    let job: Job = serde_json::from_slice(&broadcast_bytes(dist, job))?;
    match (made, job) {
        (Some(made), _) => made.map(|(cfg, run, lock)| (cfg, run, Some(lock))),
        (None, Job::Run { config, dir }) => {
            let cfg = AdaptConfig::from_toml(&config, "rank 0's configuration")?;
            Ok((cfg, RunDir(dir), None))
        }
        (None, Job::Failed(e)) => bail!("rank 0 could not start the run: {e}"),
    }
}

/// Tells which rank runs where, once (rank 0 prints every rank's line).
fn print_topology(dist: &dyn Collective, device: &str) {
    let t = dist.topology();
    if t.world == 1 {
        return;
    }
    const LINE: usize = 96;
    let host = hostname();
    let mut mine = format!("rank {} on {host}, {device}", t.rank).into_bytes();
    mine.resize(LINE, b' ');
    let all = dist.all_gather(&mine);
    if t.is_primary() {
        eprintln!("job: {} ranks over {}", t.world, dist.transport());
        for line in all.chunks(LINE) {
            eprintln!("  {}", String::from_utf8_lossy(line).trim_end());
        }
    }
}

/// This machine's name, for the topology lines.
fn hostname() -> String {
    let mut buf = [0u8; 64];
    // SAFETY: the buffer is writable for its length, which is passed.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "?".to_string()
    }
}

fn run_objective(a: AdaptArgs, objective: Objective) -> anyhow::Result<()> {
    // First, so that a device that cannot be opened fails before any data is written or read.
    let (dist, dev) = wesam::dist::open(&a.dist_options(), a.device)?;
    let result = run_rank(&a, objective, dist.as_ref(), &dev);
    if dist.topology().world > 1 {
        match &result {
            // Any rank that fails ends the job, so that no other waits for it.
            Err(e) => {
                let (rank, code) = (dist.topology().rank, crate::exit_code(e));
                match code {
                    130 => eprintln!("rank {rank}: {e}"),
                    _ => eprintln!("error: rank {rank}: {}", crate::one_line(e)),
                }
                dist.abort(code);
            }
            Ok(()) => dist.barrier(),
        }
    }
    result
}

/// This rank's part of a run.
fn run_rank(
    a: &AdaptArgs,
    objective: Objective,
    dist: &dyn Collective,
    dev: &candle_core::Device,
) -> anyhow::Result<()> {
    let topology = dist.topology();
    let device = match dev {
        candle_core::Device::Cpu => "cpu".to_string(),
        _ => format!("{}:{}", name(&a.device), topology.local_rank),
    };
    print_topology(dist, &device);
    let (mut cfg, run, _lock) = configure_job(a, objective, dist)?;
    if a.resume.is_none() {
        cfg.train.ranks = topology.world;
    }
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
    let mut sam = starting_model(&cfg, dev)?;
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
    // Checked before training, so that a mistake does not surface only after the run.
    let auto_records = a
        .auto
        .then(|| auto_records(&cfg, &sam, dataset.as_ref()))
        .transpose()?;

    let interrupt = super::interrupt::flag("saving a checkpoint after this step or image...");
    let ctl = RunControl {
        resume: a.resume.is_some(),
        interrupt: &interrupt,
        crash_after: a.crash_after_steps,
        dist,
    };
    let (terminal, replica) = (Terminal::default(), Replica(topology.rank));
    let observer: &dyn Observer = match topology.is_primary() {
        true => &terminal,
        false => &replica,
    };
    let Some(outcome) = Trainer::new(&cfg, &sam, dataset.as_ref(), &run, observer)?.fit(&ctl)?
    else {
        return Ok(());
    };
    let auto = match &auto_records {
        Some(records) => Some(auto_scores(
            &cfg,
            &sam,
            &run,
            dataset.as_ref(),
            records,
            &interrupt,
        )?),
        None => None,
    };
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
    if let Some([direct, adapted]) = &auto {
        eprintln!(
            "\nwithout prompts (automatic masks at the default settings; {} images, {} instances):",
            direct.images, direct.instances
        );
        eprintln!("{}", super::eval::auto_header("model"));
        eprintln!("{}", super::eval::auto_row("direct", &direct.scores));
        eprintln!("{}", super::eval::auto_row("adapted", &adapted.scores));
    }
    match outcome.kept_epoch {
        0 => eprintln!("kept: the starting weights"),
        e => eprintln!("kept: epoch {e}"),
    }
    eprintln!("run directory: {}", outcome.out.display());
    if a.json {
        let [auto_direct, auto_adapted] = match &auto {
            Some([d, a]) => [Some(d), Some(a)],
            None => [None, None],
        };
        let report = JsonOutcome {
            outcome: &outcome,
            auto_direct,
            auto_adapted,
        };
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// What `--json` prints: the run's outcome, and with `--auto` the prompt-free scores.
#[derive(serde::Serialize)]
struct JsonOutcome<'a> {
    #[serde(flatten)]
    outcome: &'a Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_direct: Option<&'a AutoReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_adapted: Option<&'a AutoReport>,
}

/// The images `--auto` scores: the run's evaluation records (its split and limit, as the
/// trainer's), refused when there are none or the model cannot take the generator's points.
fn auto_records(
    cfg: &AdaptConfig,
    sam: &Sam,
    dataset: &dyn Dataset,
) -> anyhow::Result<Vec<Record>> {
    AmgConfig::default().validate()?;
    if !sam.prompt_encoder.takes_prompts() {
        bail!("--auto prompts the model with a grid of points: this model has no prompt encoder");
    }
    let mut records = dataset.records(cfg.data.eval_split);
    if let Some(n) = cfg.data.eval_limit {
        records.truncate(n);
    }
    if records.is_empty() {
        bail!(
            "--auto: the {} split of `{}` has no images to score",
            name(&cfg.data.eval_split),
            dataset.name()
        );
    }
    Ok(records)
}

/// `--auto`: the automatic mask generator's scores (default settings) on `records` of the
/// starting model and of the run's merged weights, loaded as a user loads them.
fn auto_scores(
    cfg: &AdaptConfig,
    sam: &Sam,
    run: &RunDir,
    dataset: &dyn Dataset,
    records: &[Record],
    interrupt: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<[AutoReport; 2]> {
    let generator = AmgConfig::default();
    let score = |which: &str, model: &Sam| {
        let what = format!("auto: {which}");
        super::eval::auto_report(
            &what,
            model,
            None,
            dataset,
            records,
            &generator,
            &[],
            interrupt,
        )
        .with_context(|| format!("--auto: scoring the {which} model without prompts"))
    };
    let direct = score("direct", sam)?;
    let mut adapted = Sam::load(&run.merged(), None, cfg.model.image_size, &sam.device)?;
    if let Some(layout) = cfg.model.fpe_layout {
        adapted.set_fpe_layout(layout)?;
    }
    adapted.image_encoder.set_precision(cfg.train.precision);
    let adapted = score("adapted", &adapted)?;
    Ok([direct, adapted])
}
