//! The training loop shared by `wesam adapt` and `wesam train`: epochs over the training split,
//! one optimiser step per batch on the objective of [`super::step`], evaluation after every
//! epoch, model selection, checkpoints and the final outputs. Only the run's trained variables
//! are optimised: LoRA adapters (the reference), the mask decoder, or every weight.
//!
//! A run is a directory: `config.toml`, `metrics.csv`, `checkpoint.safetensors` (trained
//! variables, optimiser and progress; rewritten atomically), and at the end
//! `adapter.safetensors` (when LoRA is trained) and `merged.safetensors`. Data order and
//! augmentation randomness are functions of the seed and the step alone, so a resumed run ends
//! with the same weights as an uninterrupted one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::config::{AdaptConfig, Selection, Trainable};
use super::optim::Adam;
use super::step::{batch_gradients, StepModels};
use crate::data::loader::load_parallel;
use crate::data::{Dataset, Record, Split};
use crate::eval::{evaluate, EvalConfig, EvalReport};
use crate::model::checkpoint::{read_safetensors, write_safetensors};
use crate::model::{Lora, Sam};
use crate::profile::Profile;

/// mIoU and Dice in percent, as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub miou: f64,
    pub dice: f64,
}

impl From<&EvalReport> for Scores {
    fn from(r: &EvalReport) -> Self {
        Self {
            miou: r.miou,
            dice: r.dice,
        }
    }
}

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub direct: Scores,
    pub adapted: Scores,
    /// The epoch whose weights were kept; 0 is the starting model.
    pub kept_epoch: usize,
    pub out: PathBuf,
}

/// Mean loss terms of an epoch, and its bookkeeping, one row of `metrics.csv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub steps: usize,
    pub lr: f64,
    pub loss: f64,
    pub focal: f64,
    pub dice_loss: f64,
    pub iou_loss: f64,
    pub anchor: f64,
    pub contrastive: f64,
    pub skipped_steps: usize,
    pub eval: Scores,
    /// The score that selects the kept epoch, when one does.
    pub selection: Option<f64>,
}

/// Progress saved in the checkpoint's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Progress {
    epoch: usize,
    step_in_epoch: usize,
    global_step: usize,
    nonfinite_in_a_row: usize,
    direct: Option<Scores>,
    /// The starting model's selection score, under the weak-label selection.
    direct_selection: Option<f64>,
    rows: Vec<EpochRow>,
    /// Running sums of the epoch in progress.
    partial: EpochRow,
    best_epoch: Option<usize>,
    best_score: f64,
}

const PROGRESS_KEY: &str = "wesam.progress";

/// The files of a run directory.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }
    pub fn adapter(&self) -> PathBuf {
        self.0.join("adapter.safetensors")
    }
    pub fn merged(&self) -> PathBuf {
        self.0.join("merged.safetensors")
    }
}

/// Everything a step needs that does not change during the run.
struct Setup<'a> {
    cfg: &'a AdaptConfig,
    dataset: &'a dyn Dataset,
    train: Vec<Record>,
    eval: Vec<Record>,
    select: Selector,
}

/// What selects the kept weights (see [`Selection`]).
enum Selector {
    /// The last epoch.
    Last,
    /// The best mIoU on the evaluation split (the reference's code; reported as such).
    EvalMiou,
    /// The best mIoU on these validation records.
    ValMiou(Vec<Record>),
    /// The best agreement with the weak labels of the adaptation split, the starting model
    /// included.
    WeakLabel,
}

/// The random stream of one step: a function of the seed and the step alone.
fn step_rng(seed: u64, global_step: usize) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ global_step as u64)
}

/// The order of the training records in an epoch.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(
        seed ^ (0x5eed_0000 + epoch as u64),
    ));
    order
}

/// A copy of the adapters with storage of its own (the EMA teacher).
fn clone_lora(lora: &Lora, sam: &Sam) -> Result<Lora> {
    let copy = Lora::new(&sam.config, &lora.config, 0, &sam.device)?;
    for ((_, dst), (_, src)) in copy.named_vars().iter().zip(lora.named_vars()) {
        dst.set(&src.as_tensor().copy()?)?;
    }
    Ok(copy)
}

/// `ema = m ema + (1 - m) lora`, tensor by tensor.
fn ema_update(ema: &Lora, lora: &Lora, m: f64) -> Result<()> {
    for ((_, e), (_, l)) in ema.named_vars().iter().zip(lora.named_vars()) {
        let v = ((e.as_tensor() * m)? + (l.as_tensor().detach() * (1.0 - m))?)?;
        e.set(&v)?;
    }
    Ok(())
}

/// What a run trains: LoRA adapters (with an optional EMA teacher), or model weights made
/// trainable, with the views of the model that training and evaluation run.
struct Trained {
    lora: Option<Lora>,
    ema: Option<Lora>,
    /// The model computing with the trained weights as variables, when weights are trained.
    model: Option<Sam>,
    /// The same weights detached (no graph), for evaluation and saving.
    eval_model: Option<Sam>,
    /// Trained model weights, by official name.
    weights: Vec<(String, Var)>,
}

impl Trained {
    fn new(cfg: &AdaptConfig, sam: &Sam) -> Result<Self> {
        let trainable = cfg.model.trainable;
        if trainable != Trainable::Named && !cfg.model.train_names.is_empty() {
            bail!(
                "train_names {:?} is set but trainable is not \"named\"",
                cfg.model.train_names
            );
        }
        let lora = (trainable == Trainable::Lora)
            .then(|| Lora::new(&sam.config, &cfg.model.lora, cfg.train.seed, &sam.device))
            .transpose()?;
        let ema = match (cfg.train.ema_momentum, &lora) {
            (None, _) => None,
            (Some(_), Some(l)) => Some(clone_lora(l, sam)?),
            (Some(_), None) => bail!("an EMA teacher needs trainable = \"lora\""),
        };
        let (model, eval_model, weights) = match trainable {
            Trainable::Lora => (None, None, Vec::new()),
            _ => {
                let m = sam.trainable(|name| cfg.model.trains(name))?;
                if m.vars.is_empty() {
                    bail!(
                        "no weight of the model is trained: no official name contains any of \
                         train_names {:?}",
                        cfg.model.train_names
                    );
                }
                (Some(m.model), Some(m.detached), m.vars)
            }
        };
        Ok(Self {
            lora,
            ema,
            model,
            eval_model,
            weights,
        })
    }

    /// The adapters that are evaluated, selected and saved: the EMA's where there is one.
    fn kept_lora(&self) -> Option<&Lora> {
        self.ema.as_ref().or(self.lora.as_ref())
    }

    /// Every optimised variable: model weights by official name, then the adapters.
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.weights.clone();
        v.extend(self.lora.iter().flat_map(Lora::named_vars));
        v
    }

    /// The variables of the model that is evaluated and kept (EMA adapters for live ones).
    fn kept_vars(&self) -> Vec<(String, Var)> {
        let mut v = self.weights.clone();
        v.extend(self.kept_lora().iter().flat_map(|l| l.named_vars()));
        v
    }

    /// The models of one step.
    fn step_models<'a>(&'a self, sam: &'a Sam, ema_view: Option<&'a Lora>) -> StepModels<'a> {
        StepModels {
            anchor: sam,
            model: self.model.as_ref().unwrap_or(sam),
            lora: self.lora.as_ref(),
            teacher: ema_view.or(self.lora.as_ref()),
        }
    }

    /// The model to evaluate and save (its adapters apart).
    fn eval_model<'a>(&'a self, sam: &'a Sam) -> &'a Sam {
        self.eval_model.as_ref().unwrap_or(sam)
    }
}

/// Tensors of a set of named variables under a prefix.
fn named_tensors(prefix: &str, vars: &[(String, Var)]) -> Vec<(String, Tensor)> {
    vars.iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v.as_tensor().detach()))
        .collect()
}

/// Writes the checkpoint: trained variables, EMA teacher, best variables, optimiser state and
/// progress.
fn save_checkpoint(
    run: &RunDir,
    trained: &Trained,
    best: &HashMap<String, Tensor>,
    opt: &Adam,
    progress: &Progress,
) -> Result<()> {
    let mut tensors = named_tensors("param.", &trained.vars());
    if let Some(e) = &trained.ema {
        tensors.extend(named_tensors("ema.", &e.named_vars()));
    }
    tensors.extend(best.iter().map(|(k, v)| (format!("best.{k}"), v.clone())));
    tensors.extend(
        opt.state()?
            .into_iter()
            .map(|(k, v)| (format!("optim.{k}"), v)),
    );
    let meta = HashMap::from([(PROGRESS_KEY.to_string(), serde_json::to_string(progress)?)]);
    write_safetensors(&run.checkpoint(), &tensors, meta)
}

/// Copies of the variables' current values, by name (the kept weights of a selection).
fn copy_vars(vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    Ok(vars
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect::<candle_core::Result<_>>()?)
}

/// Sets variables from `prefix`-ed tensors of a checkpoint.
fn restore_vars(
    vars: &[(String, Var)],
    prefix: &str,
    t: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    for (k, v) in vars {
        let src = t.get(&format!("{prefix}{k}")).with_context(|| {
            format!(
                "{}: no `{prefix}{k}` (was the configuration changed?)",
                path.display()
            )
        })?;
        v.set(src)?;
    }
    Ok(())
}

/// `metrics.csv` from the rows so far (direct first).
fn write_metrics(run: &RunDir, progress: &Progress) -> Result<()> {
    let score = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    let direct = progress.direct.unwrap_or_default();
    let mut text = String::from(
        "epoch,steps,lr,loss,focal,dice_loss,iou_loss,anchor,contrastive,skipped_steps,miou,dice,selection\n",
    );
    text.push_str(&format!(
        "0,0,0,,,,,,,0,{:.4},{:.4},{}\n",
        direct.miou,
        direct.dice,
        score(progress.direct_selection)
    ));
    for r in &progress.rows {
        let val = score(r.selection);
        text.push_str(&format!(
            "{},{},{:e},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{},{:.4},{:.4},{val}\n",
            r.epoch,
            r.steps,
            r.lr,
            r.loss,
            r.focal,
            r.dice_loss,
            r.iou_loss,
            r.anchor,
            r.contrastive,
            r.skipped_steps,
            r.eval.miou,
            r.eval.dice
        ));
    }
    crate::io::write_atomically(&run.metrics(), |tmp| Ok(std::fs::write(tmp, text)?))
}

/// How evaluation is configured for this run.
fn eval_config(cfg: &AdaptConfig) -> EvalConfig {
    let mut prompts = cfg.prompts.clone();
    prompts.negatives_in_padding |= cfg.profile == Profile::WesamReference;
    EvalConfig {
        prompt: cfg.prompt,
        prompts,
        profile: cfg.profile,
        seed: cfg.train.seed,
        save_masks: None,
    }
}

/// Evaluates a model with its adapters, if any, on records, quietly (no autograd graph).
fn eval_on(
    s: &Setup,
    model: &Sam,
    lora: Option<&Lora>,
    records: &[Record],
    what: &str,
) -> Result<EvalReport> {
    let bar = crate::cli::progress_bar(records.len() as u64, what);
    let frozen = lora.map(Lora::frozen);
    let report = evaluate(
        model,
        frozen.as_ref(),
        load_parallel(s.dataset, records, 2 * rayon::current_num_threads()),
        &eval_config(s.cfg),
        &bar,
    )?;
    bar.finish_and_clear();
    for issue in &report.skipped {
        eprintln!("warning: {what}: skipped {}: {}", issue.file, issue.reason);
    }
    Ok(report)
}

/// Options of one invocation that are not part of the configuration.
pub struct RunControl<'a> {
    /// Continue the run in the directory from its checkpoint.
    pub resume: bool,
    /// Set (e.g. by Ctrl-C) to checkpoint and stop after the current step.
    pub interrupt: &'a AtomicBool,
    /// Stop abruptly after this many steps of this invocation, without a checkpoint (tests of
    /// resuming after a crash).
    pub crash_after: Option<usize>,
}

/// The run was stopped on request after a checkpoint; `--resume` continues it.
#[derive(Debug)]
pub struct Interrupted(pub PathBuf);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted; checkpoint saved, continue with `--resume {}`",
            self.0.display()
        )
    }
}

impl std::error::Error for Interrupted {}

/// Runs (or resumes) a training run in `run`: self-training (`wesam adapt`) or supervised
/// (`wesam train`), as `cfg.objective` says, starting from `sam`.
pub fn adapt(
    cfg: &AdaptConfig,
    sam: &Sam,
    dataset: &dyn Dataset,
    run: &RunDir,
    ctl: &RunControl,
) -> Result<Outcome> {
    let exponent = cfg.losses.anchor_trust_exponent;
    if !(exponent.is_finite() && exponent > 0.0) {
        bail!("anchor_trust_exponent must be a positive number, got {exponent}");
    }
    let mut train = dataset.records(cfg.data.train_split);
    if let Some(n) = cfg.data.train_limit {
        train.truncate(n);
    }
    let mut eval = dataset.records(cfg.data.eval_split);
    if let Some(n) = cfg.data.eval_limit {
        eval.truncate(n);
    }
    if train.is_empty() {
        bail!(
            "the {:?} split of `{}` has no images to train on",
            cfg.data.train_split,
            dataset.name()
        );
    }
    let select = match (cfg.train.selection, cfg.profile) {
        (Selection::WeakLabel, _) => Selector::WeakLabel,
        (Selection::Auto, Profile::WesamReference) => Selector::EvalMiou,
        (Selection::Auto, Profile::Sam) if cfg.data.options.val_fraction > 0.0 => {
            Selector::ValMiou(dataset.records(Split::Val))
        }
        (Selection::Auto, Profile::Sam) => Selector::Last,
    };
    let s = Setup {
        cfg,
        dataset,
        train,
        eval,
        select,
    };
    std::fs::create_dir_all(&run.0)
        .with_context(|| format!("cannot create {}", run.0.display()))?;

    let trained = Trained::new(cfg, sam)?;
    let mut opt = Adam::new_named(trained.vars(), cfg.train.adam())?;
    let mut best: HashMap<String, Tensor> = HashMap::new();
    let mut progress = Progress::default();
    if ctl.resume {
        let (t, meta) = read_safetensors(&run.checkpoint(), &sam.device)
            .with_context(|| format!("cannot resume from {}", run.0.display()))?;
        progress = serde_json::from_str(
            meta.get(PROGRESS_KEY)
                .context("checkpoint without progress")?,
        )?;
        restore_vars(&trained.vars(), "param.", &t, &run.checkpoint())?;
        if let Some(e) = &trained.ema {
            restore_vars(&e.named_vars(), "ema.", &t, &run.checkpoint())?;
        }
        let optim: HashMap<String, Tensor> = t
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("optim.").map(|k| (k.to_string(), v.clone())))
            .collect();
        opt.load_state(&optim)?;
        best = t
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("best.").map(|k| (k.to_string(), v.clone())))
            .collect();
        eprintln!(
            "resuming at epoch {}, step {}",
            progress.epoch + 1,
            progress.step_in_epoch
        );
    } else {
        std::fs::write(run.config(), cfg.to_toml()?)
            .with_context(|| format!("cannot write {}", run.config().display()))?;
    }
    let direct = match progress.direct {
        Some(d) => d,
        None => {
            let report = eval_on(&s, sam, None, &s.eval, "direct")?;
            eprintln!(
                "direct: mIoU {:.2}, Dice {:.2} on {} images",
                report.miou, report.dice, report.images
            );
            let d = Scores::from(&report);
            progress.direct = Some(d);
            if let Selector::WeakLabel = s.select {
                let a = eval_on(&s, trained.eval_model(sam), None, &s.train, "weak labels")?;
                eprintln!("direct: weak-label agreement {:.2}", a.agreement);
                progress.direct_selection = Some(a.agreement);
                progress.best_epoch = Some(0);
                progress.best_score = a.agreement;
                best = copy_vars(&trained.kept_vars())?;
            }
            write_metrics(run, &progress)?;
            d
        }
    };

    let var_tensors: Vec<Tensor> = trained
        .vars()
        .iter()
        .map(|(_, v)| v.as_tensor().clone())
        .collect();
    let batch = cfg.train.batch_size.max(1);
    let steps_per_epoch = s.train.len().div_ceil(batch);
    let mut steps_this_invocation = 0;
    while progress.epoch < cfg.train.epochs {
        let order = epoch_order(s.train.len(), cfg.train.seed, progress.epoch);
        let bar = crate::cli::progress_bar(
            steps_per_epoch as u64,
            &format!("epoch {}/{}", progress.epoch + 1, cfg.train.epochs),
        );
        bar.set_position(progress.step_in_epoch as u64);
        while progress.step_in_epoch < steps_per_epoch {
            let idx = &order[progress.step_in_epoch * batch
                ..((progress.step_in_epoch + 1) * batch).min(order.len())];
            let records: Vec<Record> = idx.iter().map(|&i| s.train[i].clone()).collect();
            let mut samples = Vec::with_capacity(records.len());
            for (record, sample) in load_parallel(dataset, &records, batch) {
                match sample {
                    Ok(x) => samples.push(x),
                    Err(e) => eprintln!("warning: skipped {}: {e:#}", record.image.display()),
                }
            }
            let lr = cfg.train.schedule.lr(cfg.train.lr, progress.global_step);
            let mut rng = step_rng(cfg.train.seed, progress.global_step);
            // The EMA teacher is not trained: it runs on detached views of its weights.
            let ema_view = trained.ema.as_ref().map(Lora::frozen);
            let models = trained.step_models(sam, ema_view.as_ref());
            match batch_gradients(cfg, models, &mut samples, &var_tensors, &mut rng)? {
                Some((grads, log)) if log.total.is_finite() => {
                    opt.set_learning_rate(lr);
                    opt.step(&grads)?;
                    if let (Some(e), Some(l), Some(m)) =
                        (&trained.ema, &trained.lora, cfg.train.ema_momentum)
                    {
                        ema_update(e, l, m)?;
                    }
                    progress.nonfinite_in_a_row = 0;
                    let p = &mut progress.partial;
                    p.steps += 1;
                    p.lr = lr;
                    p.loss += log.total;
                    p.focal += log.focal;
                    p.dice_loss += log.dice;
                    p.iou_loss += log.iou;
                    p.anchor += log.anchor;
                    p.contrastive += log.contrastive;
                    bar.set_message(format!("loss {:.4} lr {lr:.2e}", log.total));
                }
                Some((_, log)) => {
                    progress.partial.skipped_steps += 1;
                    progress.nonfinite_in_a_row += 1;
                    eprintln!(
                        "warning: non-finite loss ({}) at step {}: step skipped",
                        log.total, progress.global_step
                    );
                    if progress.nonfinite_in_a_row >= cfg.train.max_nonfinite {
                        bail!(
                            "{} non-finite losses in a row: stopping (lower the learning rate, or check the data)",
                            progress.nonfinite_in_a_row
                        );
                    }
                }
                None => progress.partial.skipped_steps += 1,
            }
            progress.step_in_epoch += 1;
            progress.global_step += 1;
            steps_this_invocation += 1;
            bar.inc(1);
            if ctl.crash_after == Some(steps_this_invocation) {
                bail!("stopped after {steps_this_invocation} steps without a checkpoint (--crash-after-steps)");
            }
            let due = cfg.train.checkpoint_every > 0
                && progress.global_step % cfg.train.checkpoint_every == 0;
            if due || ctl.interrupt.load(Ordering::SeqCst) {
                save_checkpoint(run, &trained, &best, &opt, &progress)?;
            }
            if ctl.interrupt.load(Ordering::SeqCst) {
                bar.abandon();
                return Err(Interrupted(run.0.clone()).into());
            }
        }
        bar.finish_and_clear();

        // End of epoch: evaluate, select, log, checkpoint.
        let eval_model = trained.eval_model(sam);
        let kept_lora = trained.kept_lora();
        let report = eval_on(&s, eval_model, kept_lora, &s.eval, "eval")?;
        let mut row = std::mem::take(&mut progress.partial);
        let steps = row.steps.max(1) as f64;
        for v in [
            &mut row.loss,
            &mut row.focal,
            &mut row.dice_loss,
            &mut row.iou_loss,
            &mut row.anchor,
            &mut row.contrastive,
        ] {
            *v /= steps;
        }
        row.epoch = progress.epoch + 1;
        row.eval = Scores::from(&report);
        row.selection = match &s.select {
            Selector::Last => None,
            Selector::EvalMiou => Some(report.miou),
            Selector::ValMiou(records) => {
                Some(eval_on(&s, eval_model, kept_lora, records, "val")?.miou)
            }
            Selector::WeakLabel => {
                Some(eval_on(&s, eval_model, kept_lora, &s.train, "weak labels")?.agreement)
            }
        };
        if let Some(score) = row.selection {
            if progress.best_epoch.is_none() || score > progress.best_score {
                progress.best_epoch = Some(row.epoch);
                progress.best_score = score;
                best = copy_vars(&trained.kept_vars())?;
            }
        }
        let selected_by = match (&s.select, row.selection) {
            (Selector::WeakLabel, Some(v)) => format!("; weak-label agreement {v:.2}"),
            (Selector::ValMiou(_), Some(v)) => format!("; val mIoU {v:.2}"),
            _ => String::new(),
        };
        eprintln!(
            "epoch {}: loss {:.4} (focal {:.4}, dice {:.4}, iou {:.4}, anchor {:.4}, contrastive {:.4}), {} skipped; eval mIoU {:.2}, Dice {:.2}{selected_by}",
            row.epoch, row.loss, row.focal, row.dice_loss, row.iou_loss, row.anchor, row.contrastive, row.skipped_steps, row.eval.miou, row.eval.dice
        );
        progress.rows.push(row);
        progress.epoch += 1;
        progress.step_in_epoch = 0;
        write_metrics(run, &progress)?;
        save_checkpoint(run, &trained, &best, &opt, &progress)?;
    }

    // The selected weights: the best epoch's, or the last.
    if !best.is_empty() {
        restore_vars(&trained.kept_vars(), "", &best, &run.checkpoint())?;
    }
    let kept_epoch = progress.best_epoch.unwrap_or(progress.rows.len());
    let adapted = match kept_epoch {
        0 => direct,
        e => progress.rows[e - 1].eval,
    };
    if let Some(l) = trained.kept_lora() {
        l.save(&run.adapter())?;
    }
    trained
        .eval_model(sam)
        .save(&run.merged(), trained.kept_lora())?;
    Ok(Outcome {
        direct,
        adapted,
        kept_epoch,
        out: run.0.clone(),
    })
}
