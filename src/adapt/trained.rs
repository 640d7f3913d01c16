//! What a run trains: LoRA adapters (with an optional EMA teacher), or weights of the model
//! itself made trainable, and the views of the model that the step, the evaluation and the
//! saved outputs use.

use anyhow::{bail, Result};
use candle_core::Var;

use super::config::{AdaptConfig, Peft, Trainable};
use super::ema::ema_copy;
use super::step::StepModels;
use crate::model::{Lora, Sam};

/// The trained variables of a run and the models that compute with them.
pub struct Trained {
    pub lora: Option<Lora>,
    pub ema: Option<Lora>,
    /// The model computing with the trained weights as variables, when weights are trained.
    model: Option<Sam>,
    /// The same weights detached (no graph), for evaluation and saving.
    eval_model: Option<Sam>,
    /// Trained model weights, by official name.
    weights: Vec<(String, Var)>,
}

impl Trained {
    /// The variables `cfg` trains on top of `sam`.
    pub fn new(cfg: &AdaptConfig, sam: &Sam) -> Result<Self> {
        let trainable = cfg.model.trainable;
        if trainable != Trainable::Named && !cfg.model.train_names.is_empty() {
            bail!(
                "train_names {:?} is set but trainable is not \"named\"",
                cfg.model.train_names
            );
        }
        let lora = (trainable == Trainable::Lora && cfg.model.peft == Peft::Lora)
            .then(|| Lora::new(&sam.config, &cfg.model.lora, cfg.train.seed, &sam.device))
            .transpose()?;
        let ema = match (cfg.train.ema_momentum, &lora) {
            (None, _) => None,
            (Some(_), Some(l)) => Some(ema_copy(l, sam)?),
            (Some(_), None) => bail!("an EMA teacher needs trainable = \"lora\""),
        };
        let (model, eval_model, weights) = match lora {
            Some(_) => (None, None, Vec::new()),
            None => {
                // SAM-Adapter's adapter is added to a copy; `sam` stays the adapter-free anchor.
                let with_adapter = if cfg.model.uses_sam_adapter() {
                    let layout = cfg.model.fpe_layout.or(sam.config.sam_adapter);
                    Some(sam.with_sam_adapter(layout.unwrap_or_default(), cfg.train.seed)?)
                } else {
                    None
                };
                let m = with_adapter
                    .as_ref()
                    .unwrap_or(sam)
                    .trainable(|name| cfg.model.trains(name))?;
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
    pub fn kept_lora(&self) -> Option<&Lora> {
        self.ema.as_ref().or(self.lora.as_ref())
    }

    /// Every optimised variable: model weights by official name, then the adapters.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.weights.clone();
        v.extend(self.lora.iter().flat_map(Lora::named_vars));
        v
    }

    /// The variables of the model that is evaluated and kept (EMA adapters for live ones).
    pub fn kept_vars(&self) -> Vec<(String, Var)> {
        let mut v = self.weights.clone();
        v.extend(self.kept_lora().iter().flat_map(|l| l.named_vars()));
        v
    }

    /// The models of one step; `ema_view` is the EMA teacher's frozen view, if there is one.
    pub fn step_models<'a>(&'a self, sam: &'a Sam, ema_view: Option<&'a Lora>) -> StepModels<'a> {
        StepModels {
            anchor: sam,
            model: self.model.as_ref().unwrap_or(sam),
            lora: self.lora.as_ref(),
            teacher: ema_view.or(self.lora.as_ref()),
        }
    }

    /// The model to evaluate and save (its adapters apart).
    pub fn eval_model<'a>(&'a self, sam: &'a Sam) -> &'a Sam {
        self.eval_model.as_ref().unwrap_or(sam)
    }
}
