//! The training loop shared by `wesam adapt` and `wesam train`: [`Trainer::fit`] runs the
//! epochs over the training split ([`Trainer::run_epoch`]: one optimiser step per batch on the
//! objective of [`super::step`]), evaluates and selects after each ([`Trainer::end_epoch`]), and
//! writes the kept weights ([`Trainer::finish`]). Only the run's trained variables are
//! optimised: LoRA adapters (the reference), the mask decoder, or every weight.
//!
//! Data order is a function of the seed and the epoch, and an image's random draws of the seed,
//! the epoch and its index, so a resumed run ends with the same weights as an uninterrupted one,
//! and a job of several ranks (`RunControl::dist`) with the same weights as one process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use candle_nn::Optimizer;
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};
use serde::Serialize;

use super::checkpoint::{copy_vars, restore_vars, tensors_of, Checkpoint, RunState};
use super::config::AdaptConfig;
use super::data_parallel::{positions, replica_gradients};
use super::ema::ema_update;
use super::metrics::{write_metrics, Scores};
use super::observer::{Event, Observer};
use super::optim::Adam;
use super::run_dir::RunDir;
use super::selection::Selector;
use super::step::{batch_gradients, sample_seed, StepSample};
use super::trained::Trained;
use crate::data::loader::load_parallel;
use crate::data::{Dataset, Record};
use crate::dist::Collective;
use crate::eval::{evaluate, EvalConfig, EvalReport};
use crate::model::{Lora, Sam};

/// What a finished run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub direct: Scores,
    pub adapted: Scores,
    /// The epoch whose weights were kept; 0 is the starting model.
    pub kept_epoch: usize,
    pub out: PathBuf,
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
    /// The job's ranks ([`crate::dist::Single`] for one process): rank 0 evaluates and writes;
    /// every rank trains its share of each batch ([`super::data_parallel`]).
    pub dist: &'a dyn Collective,
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

/// The run stopped because training diverged ([`super::divergence::DivergenceGuard`]); the
/// weights kept so far were written.
#[derive(Debug)]
pub struct Diverged {
    /// The optimiser step (0-based, over the run) after which the divergence was seen.
    pub step: usize,
    pub reason: String,
    /// The epoch whose weights were kept; 0 is the starting model.
    pub kept_epoch: usize,
    pub out: PathBuf,
}

impl std::fmt::Display for Diverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = match self.kept_epoch {
            0 => "the starting weights".to_string(),
            e => format!("epoch {e}"),
        };
        write!(
            f,
            "training diverged at step {}: {}; stopped and kept {kept} in {} (lower the \
             learning rate, --lr)",
            self.step + 1,
            self.reason,
            self.out.display()
        )
    }
}

impl std::error::Error for Diverged {}

/// The order of the training records in an epoch.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(
        seed ^ (0x5eed_0000 + epoch as u64),
    ));
    order
}

/// A training run (self-training for `wesam adapt`, supervised for `wesam train`, as
/// `cfg.objective` says) from `sam`, in a run directory.
pub struct Trainer<'a> {
    /// The effective configuration ([`AdaptConfig::effective`]).
    cfg: AdaptConfig,
    sam: &'a Sam,
    dataset: &'a dyn Dataset,
    run: &'a RunDir,
    observer: &'a dyn Observer,
    train: Vec<Record>,
    eval: Vec<Record>,
    selector: Selector,
    trained: Trained,
    opt: Adam,
    /// The variables of the epoch kept so far (the starting ones before any is).
    best: HashMap<String, Tensor>,
    state: RunState,
    /// Steps run by this invocation (for `RunControl::crash_after`).
    steps_run: usize,
    /// Time this epoch's steps spent exchanging gradients with the other ranks.
    exchange: Duration,
}

impl<'a> Trainer<'a> {
    /// Checks the configuration, picks the records, makes the run directory and the trained
    /// variables; the run uses `cfg`'s effective settings for its length.
    pub fn new(
        cfg: &AdaptConfig,
        sam: &'a Sam,
        dataset: &'a dyn Dataset,
        run: &'a RunDir,
        observer: &'a dyn Observer,
    ) -> Result<Self> {
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
        let cfg = cfg.effective(train.len());
        cfg.validate()?;
        let selector = Selector::for_run(&cfg, dataset);
        std::fs::create_dir_all(&run.0)
            .with_context(|| format!("cannot create {}", run.0.display()))?;
        let trained = Trained::new(&cfg, sam)?;
        let opt = Adam::new_named(trained.vars(), cfg.train.adam())?;
        Ok(Self {
            cfg,
            sam,
            dataset,
            run,
            observer,
            train,
            eval,
            selector,
            trained,
            opt,
            best: HashMap::new(),
            state: RunState::default(),
            steps_run: 0,
            exchange: Duration::ZERO,
        })
    }

    /// Runs the remaining epochs and writes the kept weights; what the run reports on rank 0,
    /// `None` on the others. A run that diverges stops, writes the weights kept so far and ends
    /// in [`Diverged`].
    pub fn fit(mut self, ctl: &RunControl) -> Result<Option<Outcome>> {
        let topology = ctl.dist.topology();
        if topology.world != self.cfg.train.ranks {
            bail!(
                "{} is a run of {} ranks, and this job has {}: run it with `mpirun -np {}`, \
                 so that its batches stay the same",
                self.run.0.display(),
                self.cfg.train.ranks,
                topology.world,
                self.cfg.train.ranks
            );
        }
        let primary = topology.is_primary();
        if ctl.resume {
            self.resume()?;
        } else if primary {
            let text = self.cfg.to_toml()?;
            crate::io::write_atomically(&self.run.config(), |tmp| Ok(std::fs::write(tmp, &text)?))?;
        }
        self.observer.event(&Event::Settings {
            summary: self.cfg.summary(),
            config: self.run.config(),
        });
        if self.state.direct.is_none() && primary {
            self.evaluate_start(ctl)?;
        }
        while self.state.epoch < self.cfg.train.epochs {
            if let Some(reason) = self.run_epoch(ctl)? {
                let step = self.state.global_step;
                let outcome = self.finish(ctl)?;
                let Some(outcome) = outcome else {
                    bail!("training diverged at step {}: {reason}", step + 1);
                };
                return Err(Diverged {
                    step,
                    reason,
                    kept_epoch: outcome.kept_epoch,
                    out: outcome.out,
                }
                .into());
            }
            self.end_epoch(ctl)?;
        }
        self.finish(ctl)
    }

    /// Restores the variables, the optimiser, the kept weights and the state from the
    /// checkpoint.
    fn resume(&mut self) -> Result<()> {
        let path = self.run.checkpoint();
        let c = Checkpoint::load(&path, &self.sam.device)
            .with_context(|| format!("cannot resume from {}", self.run.0.display()))?;
        let restore = |trainer: &mut Self| -> Result<()> {
            restore_vars(&trainer.trained.vars(), &c.params, &path)?;
            if let Some(e) = &trainer.trained.ema {
                restore_vars(&e.named_vars(), &c.ema, &path)?;
            }
            Ok(trainer.opt.load_state(&c.optim)?)
        };
        restore(self).with_context(|| {
            format!(
                "cannot resume from {}: the checkpoint is corrupt",
                path.display()
            )
        })?;
        self.best = c.best;
        self.state = c.state;
        self.observer.event(&Event::Resumed {
            epoch: self.state.epoch + 1,
            step: self.state.step_in_epoch,
        });
        Ok(())
    }

    /// Scores the starting model and keeps it until an epoch is kept (under the weak-label
    /// selection it competes with the epochs; under the others it is what a run that diverges
    /// in its first epoch keeps).
    fn evaluate_start(&mut self, ctl: &RunControl) -> Result<()> {
        let report = self.eval_on(ctl, self.sam, None, &self.eval, "direct")?;
        self.observer.event(&Event::Direct(&report));
        self.state.direct = Some(Scores::from(&report));
        self.state.best_epoch = Some(0);
        self.best = copy_vars(&self.trained.kept_vars())?;
        if let Selector::WeakLabel = self.selector {
            let model = self.trained.eval_model(self.sam);
            let a = self.eval_on(ctl, model, None, &self.train, "weak labels")?;
            self.observer.event(&Event::DirectAgreement(a.agreement));
            self.state.direct_selection = Some(a.agreement);
            self.state.best_score = a.agreement;
        }
        self.write_metrics()
    }

    /// Evaluates a model with its adapters, if any, on records (no autograd graph). An
    /// interrupt is honoured before the next image: the run checkpoints where it stands (the
    /// evaluation is redone on `--resume`) and ends in [`Interrupted`].
    fn eval_on(
        &self,
        ctl: &RunControl,
        model: &Sam,
        lora: Option<&Lora>,
        records: &[Record],
        what: &str,
    ) -> Result<EvalReport> {
        let cfg = EvalConfig::new(
            self.cfg.prompt,
            self.cfg.prompts.clone(),
            self.cfg.profile,
            self.cfg.train.seed,
        );
        let frozen = lora.map(Lora::frozen);
        self.observer.begin(what, records.len(), 0);
        let chunk = 2 * rayon::current_num_threads();
        let samples = load_parallel(self.dataset, records, chunk)
            .take_while(|_| !ctl.interrupt.load(Ordering::SeqCst));
        let report = evaluate(model, frozen.as_ref(), samples, &cfg, self.observer);
        self.observer.end(report.is_ok());
        if ctl.interrupt.load(Ordering::SeqCst) {
            self.save_checkpoint(ctl)?;
            return Err(Interrupted(self.run.0.clone()).into());
        }
        let report = report?;
        for issue in &report.skipped {
            self.observer.event(&Event::EvalSkipped { what, issue });
        }
        Ok(report)
    }

    /// Runs the rest of the current epoch's steps, checkpointing when due or interrupted;
    /// returns why training diverged if it did (without a checkpoint of the diverged state).
    fn run_epoch(&mut self, ctl: &RunControl) -> Result<Option<String>> {
        let (cfg, s) = (&self.cfg, &mut self.state);
        let batch = cfg.train.global_batch();
        let steps_per_epoch = self.train.len().div_ceil(batch);
        let order = epoch_order(self.train.len(), cfg.train.seed, s.epoch);
        let what = format!("epoch {}/{}", s.epoch + 1, cfg.train.epochs);
        self.observer.begin(&what, steps_per_epoch, s.step_in_epoch);
        let started = Instant::now();
        self.exchange = Duration::ZERO;
        while self.state.step_in_epoch < steps_per_epoch {
            let at = self.state.step_in_epoch * batch;
            let step = self.step(&order[at..(at + batch).min(order.len())], ctl);
            if step.is_err() {
                self.observer.end(false);
            }
            let status = match step? {
                Ok(status) => status,
                Err(reason) => {
                    self.observer.end(false);
                    return Ok(Some(reason));
                }
            };
            self.observer.advance(&status);
            if ctl.crash_after == Some(self.steps_run) {
                self.observer.end(false);
                bail!(
                    "stopped after {} steps without a checkpoint (--crash-after-steps)",
                    self.steps_run
                );
            }
            let every = self.cfg.train.checkpoint_every;
            let due = every > 0 && self.state.global_step.is_multiple_of(every);
            let interrupted = ctl.interrupt.load(Ordering::SeqCst);
            if due || interrupted {
                self.save_checkpoint(ctl)?;
            }
            if interrupted {
                self.observer.end(false);
                // The other ranks leave once rank 0's checkpoint is written.
                ctl.dist.barrier();
                return Err(Interrupted(self.run.0.clone()).into());
            }
        }
        self.observer.end(true);
        if ctl.dist.topology().world > 1 {
            self.observer.event(&Event::Exchange {
                exchange: self.exchange,
                steps: started.elapsed(),
            });
        }
        Ok(None)
    }

    /// The trained variables' norm (all of them as one vector).
    fn weights_norm(&self) -> Result<f64> {
        let mut sum = 0.0;
        for (_, v) in self.trained.vars() {
            sum += v
                .as_tensor()
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(sum.sqrt())
    }

    /// One optimiser step on the batch of the training records at `indexes` (this rank's share
    /// of it); returns a status line for the progress display, or why training diverged.
    fn step(
        &mut self,
        indexes: &[usize],
        ctl: &RunControl,
    ) -> Result<std::result::Result<String, String>> {
        if self.state.global_step == 0 {
            let norm = self.weights_norm()?;
            self.state.guard.start(norm);
        }
        let cfg = &self.cfg;
        let mine: Vec<usize> = positions(ctl.dist, indexes.len()).collect();
        let records: Vec<Record> = mine
            .iter()
            .map(|&p| self.train[indexes[p]].clone())
            .collect();
        let mut samples = Vec::with_capacity(records.len());
        let chunk = cfg.train.batch_size.max(1);
        let loaded = load_parallel(self.dataset, &records, chunk);
        for ((record, sample), &position) in loaded.zip(&mine) {
            match sample {
                Ok(sample) => samples.push(StepSample {
                    sample,
                    seed: sample_seed(cfg.train.seed, self.state.epoch, indexes[position]),
                    position,
                }),
                Err(e) => self.observer.event(&Event::TrainSkipped {
                    file: record.image.display().to_string(),
                    error: format!("{e:#}"),
                }),
            }
        }
        let s = &mut self.state;
        let lr = cfg
            .train
            .schedule
            .lr(cfg.train.lr, s.global_step, (s.epoch, cfg.train.epochs));
        // The EMA teacher is not trained: it runs on detached views of its weights.
        let ema_view = self.trained.ema.as_ref().map(Lora::frozen);
        let models = self.trained.step_models(self.sam, ema_view.as_ref());
        let vars: Vec<Tensor> = self
            .trained
            .vars()
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect();
        let mut status = String::new();
        let gradients = if ctl.dist.topology().world == 1 {
            batch_gradients(cfg, models, &mut samples, &vars)?
        } else {
            let batch = indexes.len();
            replica_gradients(
                cfg,
                models,
                &mut samples,
                batch,
                &vars,
                ctl.dist,
                ctl.interrupt,
                &mut self.exchange,
            )?
        };
        match gradients {
            Some((grads, log)) if log.total.is_finite() => {
                self.opt.set_learning_rate(lr);
                self.opt.step(&grads)?;
                if let (Some(e), Some(l), Some(m)) = (
                    &self.trained.ema,
                    &self.trained.lora,
                    cfg.train.ema_momentum,
                ) {
                    ema_update(e, l, m)?;
                }
                s.nonfinite_in_a_row = 0;
                let norm = self.weights_norm()?;
                let s = &mut self.state;
                if let Some(reason) = s.guard.check(log.total, norm) {
                    return Ok(Err(reason));
                }
                s.partial.steps += 1;
                s.partial.lr = lr;
                s.partial.losses.add(&log);
                status = format!("loss {:.4} lr {lr:.2e}", log.total);
            }
            Some((_, log)) => {
                s.partial.skipped_steps += 1;
                s.nonfinite_in_a_row += 1;
                self.observer.event(&Event::NonFinite {
                    loss: log.total,
                    step: s.global_step,
                });
                if s.nonfinite_in_a_row >= cfg.train.max_nonfinite {
                    bail!(
                        "{} non-finite losses in a row: stopping (lower the learning rate, or check the data)",
                        s.nonfinite_in_a_row
                    );
                }
            }
            None => s.partial.skipped_steps += 1,
        }
        let s = &mut self.state;
        s.step_in_epoch += 1;
        s.global_step += 1;
        self.steps_run += 1;
        Ok(Ok(status))
    }

    /// Ends the epoch: evaluates, scores it for selection, logs it and checkpoints (on rank 0;
    /// the other ranks go on to the next epoch's steps, where they wait for it).
    fn end_epoch(&mut self, ctl: &RunControl) -> Result<()> {
        if self.state.partial.steps == 0 {
            bail!(
                "epoch {}: none of its {} steps trained (every batch was skipped: no loadable \
                 image with an instance, or a non-finite loss); nothing to keep",
                self.state.epoch + 1,
                self.state.partial.skipped_steps
            );
        }
        if !ctl.dist.topology().is_primary() {
            self.state.partial = Default::default();
            self.state.epoch += 1;
            self.state.step_in_epoch = 0;
            return Ok(());
        }
        let model = self.trained.eval_model(self.sam);
        let lora = self.trained.kept_lora();
        // Every evaluation before the state changes: an interrupt during one checkpoints the
        // epoch as trained but not ended.
        let report = self.eval_on(ctl, model, lora, &self.eval, "eval")?;
        let selection = match &self.selector {
            Selector::Last => None,
            Selector::EvalMiou => Some(report.miou),
            Selector::ValMiou(records) => {
                Some(self.eval_on(ctl, model, lora, records, "val")?.miou)
            }
            Selector::WeakLabel => Some(
                self.eval_on(ctl, model, lora, &self.train, "weak labels")?
                    .agreement,
            ),
        };
        let mut row = std::mem::take(&mut self.state.partial);
        row.losses = row.losses.mean_of(row.steps);
        row.epoch = self.state.epoch + 1;
        row.eval = Scores::from(&report);
        row.selection = selection;
        // Without a score the newest epoch is kept; the first scored epoch replaces an unscored
        // start; later ones are kept only when strictly better.
        let s = &self.state;
        let unscored_start = s.best_epoch.is_none_or(|e| e == 0) && s.direct_selection.is_none();
        if row
            .selection
            .is_none_or(|score| unscored_start || score > s.best_score)
        {
            self.state.best_epoch = Some(row.epoch);
            self.state.best_score = row.selection.unwrap_or_default();
            self.best = copy_vars(&self.trained.kept_vars())?;
        }
        self.observer.event(&Event::Epoch {
            row: &row,
            selection: self.selector.label(),
        });
        self.state.rows.push(row);
        self.state.epoch += 1;
        self.state.step_in_epoch = 0;
        self.write_metrics()?;
        self.save_checkpoint(ctl)
    }

    /// Restores the kept weights and writes the adapters and the merged model (on rank 0; every
    /// rank returns once they are written).
    fn finish(self, ctl: &RunControl) -> Result<Option<Outcome>> {
        if !ctl.dist.topology().is_primary() {
            ctl.dist.barrier();
            return Ok(None);
        }
        let outcome = self.write_kept();
        ctl.dist.barrier();
        outcome.map(Some)
    }

    /// Restores the kept weights and writes the adapters and the merged model.
    fn write_kept(self) -> Result<Outcome> {
        if !self.best.is_empty() {
            restore_vars(
                &self.trained.kept_vars(),
                &self.best,
                &self.run.checkpoint(),
            )?;
        }
        let direct = self.state.direct.unwrap_or_default();
        let kept_epoch = self.state.best_epoch.unwrap_or(self.state.rows.len());
        let adapted = match kept_epoch {
            0 => direct,
            e => self.state.rows[e - 1].eval,
        };
        if let Some(l) = self.trained.kept_lora() {
            l.save(&self.run.adapter())?;
        }
        self.trained
            .eval_model(self.sam)
            .save(&self.run.merged(), self.trained.kept_lora())?;
        Ok(Outcome {
            direct,
            adapted,
            kept_epoch,
            out: self.run.0.clone(),
        })
    }

    fn write_metrics(&self) -> Result<()> {
        let s = &self.state;
        let direct = s.direct.unwrap_or_default();
        write_metrics(&self.run.metrics(), direct, s.direct_selection, &s.rows)
    }

    /// Writes the checkpoint (rank 0): trained variables, EMA teacher, kept variables,
    /// optimiser state and the run's state.
    fn save_checkpoint(&self, ctl: &RunControl) -> Result<()> {
        if !ctl.dist.topology().is_primary() {
            return Ok(());
        }
        Checkpoint {
            params: tensors_of(&self.trained.vars()),
            ema: self
                .trained
                .ema
                .as_ref()
                .map(|e| tensors_of(&e.named_vars()))
                .unwrap_or_default(),
            best: self.best.clone(),
            optim: self.opt.state()?.into_iter().collect(),
            state: self.state.clone(),
        }
        .save(&self.run.checkpoint())
    }
}
