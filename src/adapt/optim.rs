//! The reference's optimiser and learning-rate schedule (`docs/method.md` §5.1).
//!
//! The reference trains with `torch.optim.Adam(lr=1e-4, weight_decay=1e-4)`: weight decay as
//! **coupled** L2 (added to the gradient), whereas candle-nn's `AdamW` decays the weights directly
//! (decoupled), and candle has no schedulers. [`Adam`] implements both behaviours with PyTorch's
//! update order and keeps its state exportable, so that a resumed run continues bit for bit;
//! [`LrSchedule`] is the reference's `LambdaLR` factor.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{bail, DType, Result, Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

/// How weight decay enters the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightDecay {
    /// `torch.optim.Adam`: `g ← g + wd θ` before the moments (L2 regularisation); the reference.
    #[default]
    CoupledL2,
    /// `torch.optim.AdamW`: `θ ← θ (1 - lr wd)` before the Adam step.
    Decoupled,
}

/// Adam's hyper-parameters; the defaults are the reference's (lr 1e-4, coupled L2 1e-4, PyTorch's
/// betas and eps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamConfig {
    /// Base learning rate; the schedule scales it step by step via
    /// [`Optimizer::set_learning_rate`].
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decay: WeightDecay,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
            decay: WeightDecay::CoupledL2,
        }
    }
}

impl AdamConfig {
    /// `torch.optim.Adam(lr, weight_decay)` with its default betas and eps.
    pub fn adam(lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            weight_decay,
            ..Self::default()
        }
    }

    /// `torch.optim.AdamW(lr, weight_decay)` with its default betas and eps.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self {
            decay: WeightDecay::Decoupled,
            ..Self::adam(lr, weight_decay)
        }
    }
}

/// One parameter and its Adam state, as PyTorch keeps it per parameter.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    /// Steps taken by this parameter (a step without a gradient skips it, as in PyTorch).
    step: u64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// Adam with coupled L2 weight decay (`torch.optim.Adam`) or decoupled (`torch.optim.AdamW`),
/// chosen by [`AdamConfig::decay`], so that a config value switches between them (as PyTorch's
/// own `Adam(decoupled_weight_decay=True)` does). Implements candle's [`Optimizer`]; the learning
/// rate is set per step by the caller from [`LrSchedule`].
#[derive(Debug)]
pub struct Adam {
    slots: Vec<Slot>,
    config: AdamConfig,
}

/// Key of the step count of `name` in [`Adam::state`].
fn step_key(name: &str) -> String {
    format!("{name}.step")
}

/// Key of the first moment of `name` in [`Adam::state`].
fn exp_avg_key(name: &str) -> String {
    format!("{name}.exp_avg")
}

/// Key of the second moment of `name` in [`Adam::state`].
fn exp_avg_sq_key(name: &str) -> String {
    format!("{name}.exp_avg_sq")
}

impl Adam {
    /// An optimiser over named parameters (e.g. `Lora::named_vars()`); the names key the state.
    pub fn new_named(vars: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                if var.dtype() != DType::F32 {
                    bail!("adam: parameter {name} is {:?}, not f32", var.dtype());
                }
                Ok(Slot {
                    exp_avg: var.zeros_like()?,
                    exp_avg_sq: var.zeros_like()?,
                    name,
                    var,
                    step: 0,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { slots, config })
    }

    /// The optimiser state as named tensors, for a checkpoint: per parameter `{name}.step` (i64
    /// scalar), `{name}.exp_avg` and `{name}.exp_avg_sq`.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(3 * self.slots.len());
        for s in &self.slots {
            let step = Tensor::new(s.step as i64, s.var.device())?;
            out.push((step_key(&s.name), step));
            out.push((exp_avg_key(&s.name), s.exp_avg.clone()));
            out.push((exp_avg_sq_key(&s.name), s.exp_avg_sq.clone()));
        }
        Ok(out)
    }

    /// Restores a state written by [`Adam::state`]; every parameter's entries must be present
    /// with matching shapes, else nothing is changed. Entries of other parameters are ignored.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let loaded = self
            .slots
            .iter()
            .map(|s| Self::slot_state(s, state))
            .collect::<Result<Vec<_>>>()?;
        for (s, (step, m, v)) in self.slots.iter_mut().zip(loaded) {
            (s.step, s.exp_avg, s.exp_avg_sq) = (step, m, v);
        }
        Ok(())
    }

    /// The step count and moments of `slot` in `state`, checked against the parameter.
    fn slot_state(slot: &Slot, state: &HashMap<String, Tensor>) -> Result<(u64, Tensor, Tensor)> {
        let get = |key: String| match state.get(&key) {
            Some(t) => Ok(t),
            None => bail!("adam state: missing {key}"),
        };
        let step = get(step_key(&slot.name))?
            .to_dtype(DType::I64)?
            .to_scalar::<i64>()?;
        if step < 0 {
            bail!("adam state: negative step count for {}", slot.name);
        }
        let [m, v] = [exp_avg_key(&slot.name), exp_avg_sq_key(&slot.name)].map(|key| {
            let m = get(key)?;
            if m.dims() != slot.var.dims() {
                bail!(
                    "adam state: {} has moments of shape {:?}, the parameter {:?}",
                    slot.name,
                    m.dims(),
                    slot.var.dims()
                );
            }
            m.to_device(slot.var.device())?.to_dtype(DType::F32)
        });
        Ok((step as u64, m?, v?))
    }

    /// One Adam update of `slot` with gradient `grad`, in PyTorch's order of operations
    /// (`_single_tensor_adam`).
    fn update(config: &AdamConfig, slot: &mut Slot, grad: &Tensor) -> Result<()> {
        let (lr, wd) = (config.lr, config.weight_decay);
        let mut theta = slot.var.as_tensor().detach();
        let mut grad = grad.detach();
        match config.decay {
            WeightDecay::CoupledL2 => grad = (grad + (&theta * wd)?)?,
            WeightDecay::Decoupled => theta = (theta * (1.0 - lr * wd))?,
        }
        slot.step += 1;
        // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2).
        slot.exp_avg = (&slot.exp_avg + ((&grad - &slot.exp_avg)? * (1.0 - config.beta1))?)?;
        slot.exp_avg_sq =
            ((&slot.exp_avg_sq * config.beta2)? + ((&grad * (1.0 - config.beta2))? * &grad)?)?;
        // Python floats: `1 - beta ** step`, `lr / bias_correction1`, `bias_correction2 ** 0.5`.
        let t = slot.step as f64;
        let step_size = lr / (1.0 - config.beta1.powf(t));
        let bias_correction2_sqrt = (1.0 - config.beta2.powf(t)).powf(0.5);
        let denom = ((slot.exp_avg_sq.sqrt()? / bias_correction2_sqrt)? + config.eps)?;
        // param.addcdiv_(exp_avg, denom, value=-step_size).
        let theta = (theta + ((&slot.exp_avg * -step_size)? / denom)?)?;
        slot.var.set(&theta)
    }
}

impl Optimizer for Adam {
    type Config = AdamConfig;

    /// Names the parameters by position (`"0"`, `"1"`, ...); see [`Adam::new_named`].
    fn new(vars: Vec<Var>, config: AdamConfig) -> Result<Self> {
        let named = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect();
        Self::new_named(named, config)
    }

    /// Updates every parameter that has a gradient in `grads`; the others are skipped, their
    /// step counts unchanged, as PyTorch skips parameters whose `.grad` is `None`.
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for slot in &mut self.slots {
            if let Some(grad) = grads.get(slot.var.as_tensor()) {
                Self::update(&self.config, slot, grad)?;
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }
}

/// The reference's warm-up, in optimiser steps.
pub const REFERENCE_WARMUP_STEPS: usize = 250;

/// What follows the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Divided by `decay_factor` at each of `decay_steps` (the reference's).
    #[default]
    Steps,
    /// SAM-Adapter's `CosineAnnealingLR` stepped once per epoch: epoch `e` (from 0) of `E`
    /// runs at `min_lr + (lr − min_lr)(1 + cos(π e / E)) / 2`.
    Cosine,
}

/// The reference's learning-rate schedule (`LambdaLR`, stepped per iteration):
/// `lr(step) = base_lr * factor(step)`, a linear warm-up from 0 followed by step decays; or,
/// after the warm-up, SAM-Adapter's per-epoch cosine decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    /// The rate the cosine decay ends at (SAM-Adapter's 1e-7).
    pub min_lr: f64,
    /// Steps of linear warm-up: `factor = step / warmup_steps` below it (0 at the first step).
    /// `None` until a run resolves it for its profile and length
    /// (`AdaptConfig::effective`); the reference's 250 where it is read unresolved.
    pub warmup_steps: Option<usize>,
    /// Steps at which the factor is divided by `decay_factor` once more.
    pub decay_steps: Vec<usize>,
    pub decay_factor: f64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        Self {
            kind: ScheduleKind::Steps,
            min_lr: 1e-7,
            warmup_steps: None,
            decay_steps: vec![60_000, 86_666],
            decay_factor: 10.0,
        }
    }
}

impl LrSchedule {
    /// The factor of optimiser step `step` (0-based): the warm-up ramp first, then
    /// `1 / decay_factor^k` with `k` the decay steps reached.
    pub fn factor(&self, step: usize) -> f64 {
        let warmup = self.warmup_steps.unwrap_or(REFERENCE_WARMUP_STEPS);
        if step < warmup {
            return step as f64 / warmup as f64;
        }
        let reached = self.decay_steps.iter().filter(|&&s| step >= s).count();
        1.0 / self.decay_factor.powi(reached as i32)
    }

    /// The learning rate of optimiser step `step`, in epoch `epoch` of `epochs`, for a base
    /// rate `base_lr`.
    pub fn lr(&self, base_lr: f64, step: usize, (epoch, epochs): (usize, usize)) -> f64 {
        match self.kind {
            ScheduleKind::Steps => base_lr * self.factor(step),
            ScheduleKind::Cosine => {
                let warmup = self.warmup_steps.unwrap_or(REFERENCE_WARMUP_STEPS);
                let ramp = if step < warmup {
                    step as f64 / warmup as f64
                } else {
                    1.0
                };
                let t = std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64;
                ramp * (self.min_lr + (base_lr - self.min_lr) * (1.0 + t.cos()) / 2.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cosine schedule gives PyTorch's `CosineAnnealingLR(T_max=20, eta_min=1e-7)` rates of
    /// epochs 0, 4, 8, 12 and 16 for lr 2e-4 (printed by torch 2.15's scheduler stepped once
    /// per epoch), at every step of the epoch, without a warm-up.
    #[test]
    fn the_cosine_schedule_is_pytorch_s_per_epoch() {
        let schedule = LrSchedule {
            kind: ScheduleKind::Cosine,
            warmup_steps: Some(0),
            ..Default::default()
        };
        let torch = [
            2e-4,
            1.809_112_485_877_760_3e-4,
            1.309_362_485_877_760_5e-4,
            6.916_375_141_222_404e-5,
            1.918_875_141_222_402e-5,
        ];
        for (i, want) in torch.iter().enumerate() {
            for step in [0, 7, 1000] {
                let got = schedule.lr(2e-4, step, (4 * i, 20));
                assert!(
                    (got - want).abs() <= 1e-15,
                    "epoch {}: {got} vs {want}",
                    4 * i
                );
            }
        }
    }
}
