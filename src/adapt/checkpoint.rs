//! A run's checkpoint, `checkpoint.safetensors`: the trained variables (`param.`), the EMA
//! teacher (`ema.`), the kept epoch's variables (`best.`), the optimiser's state (`optim.`) and
//! the run's [`RunState`] in the metadata. Rewritten atomically, so a crash leaves the previous
//! one; a resumed run continues bit for bit.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::divergence::DivergenceGuard;
use super::metrics::{EpochRow, Scores};
use crate::model::checkpoint::{read_safetensors, write_safetensors};

/// Where a run stands: saved in the checkpoint's metadata.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub global_step: usize,
    pub nonfinite_in_a_row: usize,
    pub direct: Option<Scores>,
    /// The starting model's selection score, under the weak-label selection.
    pub direct_selection: Option<f64>,
    pub rows: Vec<EpochRow>,
    /// Running sums of the epoch in progress.
    pub partial: EpochRow,
    pub best_epoch: Option<usize>,
    pub best_score: f64,
    /// What the divergence check remembers of the run.
    #[serde(default)]
    pub guard: DivergenceGuard,
}

const STATE_KEY: &str = "wesam.progress";

/// What a checkpoint holds, by group, each tensor under its variable's name.
pub struct Checkpoint {
    pub params: HashMap<String, Tensor>,
    pub ema: HashMap<String, Tensor>,
    pub best: HashMap<String, Tensor>,
    pub optim: HashMap<String, Tensor>,
    pub state: RunState,
}

impl Checkpoint {
    /// Writes the checkpoint at `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (prefix, group) in [
            ("param.", &self.params),
            ("ema.", &self.ema),
            ("best.", &self.best),
            ("optim.", &self.optim),
        ] {
            tensors.extend(
                group
                    .iter()
                    .map(|(k, v)| (format!("{prefix}{k}"), v.clone())),
            );
        }
        let meta = HashMap::from([(STATE_KEY.to_string(), serde_json::to_string(&self.state)?)]);
        write_safetensors(path, &tensors, meta)
    }

    /// Reads the checkpoint at `path` onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (tensors, meta) = read_safetensors(path, device)?;
        let state = serde_json::from_str(
            meta.get(STATE_KEY)
                .with_context(|| format!("{}: corrupt checkpoint: no progress", path.display()))?,
        )
        .with_context(|| format!("{}: corrupt progress metadata", path.display()))?;
        let group = |prefix: &str| -> HashMap<String, Tensor> {
            tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect()
        };
        Ok(Self {
            params: group("param."),
            ema: group("ema."),
            best: group("best."),
            optim: group("optim."),
            state,
        })
    }
}

/// The variables' current values, detached, by name.
pub fn tensors_of(vars: &[(String, Var)]) -> HashMap<String, Tensor> {
    vars.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect()
}

/// Copies of the variables' current values, by name (the kept weights of a selection).
pub fn copy_vars(vars: &[(String, Var)]) -> Result<HashMap<String, Tensor>> {
    Ok(vars
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy()?)))
        .collect::<candle_core::Result<_>>()?)
}

/// Sets every variable from the tensor of its name; `path` names the file they came from.
pub fn restore_vars(
    vars: &[(String, Var)],
    t: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    for (k, v) in vars {
        let src = t.get(k).with_context(|| {
            format!(
                "{}: no `{k}` (was the configuration changed?)",
                path.display()
            )
        })?;
        v.set(src)?;
    }
    Ok(())
}
