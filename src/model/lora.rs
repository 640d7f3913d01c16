//! Low-rank adapters on the q and v projections of the image encoder's attention.
//!
//! The base weights stay plain (frozen) tensors; the adapters are `Var`s held in their own
//! `VarMap`, so an optimiser sees only them and the frozen anchor is simply the same model run
//! without adapters. `merge` folds them into plain weights that any SAM loader reads.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::config::SamConfig;
use crate::ops::linear::linear;
use crate::ops::matmul;

/// Where the adapters go and how strong they are (the reference: rank 4, scale 1, every block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Inner dimension of each low-rank update.
    pub rank: usize,
    /// Factor applied to every update.
    pub scale: f64,
    /// Encoder blocks that get adapters; empty means every block.
    #[serde(default)]
    pub blocks: Vec<usize>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 4,
            scale: 1.0,
            blocks: Vec::new(),
        }
    }
}

/// Metadata key of an adapter file: the JSON of its [`LoraConfig`] with explicit blocks.
pub const LORA_METADATA_KEY: &str = "wesam.lora";

/// The four matrices of one block's qkv projection: the trainable `Var`s' tensors, or detached
/// views of them (see [`Lora::frozen`]).
#[derive(Debug, Clone)]
pub struct LoraQkv {
    /// `[rank, dim]`, Kaiming-uniform at init.
    pub a_q: Tensor,
    /// `[dim, rank]`, zero at init.
    pub b_q: Tensor,
    /// `[rank, dim]`, as `a_q` for the v slice.
    pub a_v: Tensor,
    /// `[dim, rank]`, as `b_q` for the v slice.
    pub b_v: Tensor,
    /// The configuration's scale, applied to both updates.
    pub scale: f64,
}

impl LoraQkv {
    /// The low-rank updates `(scale * B_q A_q x, scale * B_v A_v x)` for the q and v slices.
    pub fn deltas(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let dq = linear(&linear(x, &self.a_q, None)?, &self.b_q, None)?;
        let dv = linear(&linear(x, &self.a_v, None)?, &self.b_v, None)?;
        Ok(((dq * self.scale)?, (dv * self.scale)?))
    }

    /// A scalar whose gradient is that of `<deltas(x), (g_q, g_v)>`, computed at rank size:
    /// `scale * sum((x A_q^T) * (g_q B_q)) + scale * sum((x A_v^T) * (g_v B_v))`, without the
    /// `[rows, dim]` updates themselves. `x`, `g_q`, `g_v`: `[rows, dim]`.
    pub fn deltas_surrogate(
        &self,
        x: &Tensor,
        g_q: &Tensor,
        g_v: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let through = |a: &Tensor, b: &Tensor, g: &Tensor| {
            (linear(x, a, None)? * matmul(g, &b.to_dtype(g.dtype())?)?)?.sum_all()
        };
        let q = through(&self.a_q, &self.b_q, g_q)?;
        let v = through(&self.a_v, &self.b_v, g_v)?;
        (q + v)? * self.scale
    }

    /// The four matrices as one flat tensor, so that an op with a fixed number of inputs (see
    /// [`crate::ops::recompute`]) can carry them and route their gradients back to the `Var`s.
    pub fn packed(&self) -> candle_core::Result<Tensor> {
        let parts = self.parts().map(|t| t.flatten_all()).into_iter();
        Tensor::cat(&parts.collect::<candle_core::Result<Vec<_>>>()?, 0)
    }

    /// Views of a [`LoraQkv::packed`] tensor shaped like `self`'s matrices.
    pub fn unpacked(&self, packed: &Tensor) -> candle_core::Result<Self> {
        let mut offset = 0;
        let mut part = |t: &Tensor| {
            let n = t.elem_count();
            offset += n;
            packed.narrow(0, offset - n, n)?.reshape(t.shape())
        };
        Ok(Self {
            a_q: part(&self.a_q)?,
            b_q: part(&self.b_q)?,
            a_v: part(&self.a_v)?,
            b_v: part(&self.b_v)?,
            scale: self.scale,
        })
    }

    fn parts(&self) -> [&Tensor; 4] {
        [&self.a_q, &self.b_q, &self.a_v, &self.b_v]
    }
}

/// Name of one adapter tensor, next to the qkv weight it adapts.
pub fn tensor_name(block: usize, which: &str) -> String {
    format!("image_encoder.blocks.{block}.attn.qkv.lora_{which}")
}

const PARTS: [&str; 4] = ["a_q", "b_q", "a_v", "b_v"];

/// All adapters of one model.
pub struct Lora {
    /// Rank, scale and blocks the adapters were made with (saved with them).
    pub config: LoraConfig,
    /// One entry per encoder block; `None` where the block has no adapter.
    pub blocks: Vec<Option<LoraQkv>>,
    /// The trainable variables, by [`tensor_name`].
    pub varmap: VarMap,
}

impl Lora {
    /// Fresh adapters: A Kaiming-uniform (`U(-1/sqrt(dim), 1/sqrt(dim))`, as PyTorch's
    /// `kaiming_uniform_(a=sqrt(5))`), drawn from `seed`; B zero, so the adapted model starts
    /// equal to the base.
    pub fn new(
        model: &SamConfig,
        config: &LoraConfig,
        seed: u64,
        dev: &Device,
    ) -> anyhow::Result<Self> {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let dim = model.encoder_embed_dim;
        let bound = 1.0 / (dim as f64).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        Self::build(model, config, |_, part| {
            let t = if part.starts_with('a') {
                let v: Vec<f32> = (0..config.rank * dim)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect();
                Tensor::from_vec(v, (config.rank, dim), dev)?
            } else {
                Tensor::zeros((dim, config.rank), DType::F32, dev)?
            };
            Ok(t)
        })
    }

    fn build(
        model: &SamConfig,
        config: &LoraConfig,
        mut init: impl FnMut(usize, &str) -> anyhow::Result<Tensor>,
    ) -> anyhow::Result<Self> {
        if config.rank == 0 {
            bail!("LoRA rank must be at least 1");
        }
        let blocks_on: Vec<usize> = if config.blocks.is_empty() {
            (0..model.encoder_depth).collect()
        } else {
            config.blocks.clone()
        };
        if let Some(b) = blocks_on.iter().find(|&&b| b >= model.encoder_depth) {
            bail!(
                "LoRA block {b} does not exist: the encoder has {} blocks",
                model.encoder_depth
            );
        }
        let varmap = VarMap::new();
        let mut blocks = vec![None; model.encoder_depth];
        for &b in &blocks_on {
            let mut vars = Vec::with_capacity(4);
            for part in PARTS {
                let var = Var::from_tensor(&init(b, part)?)?;
                varmap
                    .data()
                    .lock()
                    .unwrap()
                    .insert(tensor_name(b, part), var.clone());
                vars.push(var.as_tensor().clone());
            }
            let [a_q, b_q, a_v, b_v]: [Tensor; 4] = vars.try_into().unwrap();
            blocks[b] = Some(LoraQkv {
                a_q,
                b_q,
                a_v,
                b_v,
                scale: config.scale,
            });
        }
        let config = LoraConfig {
            blocks: blocks_on,
            ..config.clone()
        };
        Ok(Self {
            config,
            blocks,
            varmap,
        })
    }

    /// The same adapters as plain tensors sharing the variables' storage: a forward pass with
    /// them builds no autograd graph (evaluation), and still sees every optimiser update.
    pub fn frozen(&self) -> Self {
        let detach = |l: &LoraQkv| LoraQkv {
            a_q: l.a_q.detach(),
            b_q: l.b_q.detach(),
            a_v: l.a_v.detach(),
            b_v: l.b_v.detach(),
            scale: l.scale,
        };
        Self {
            config: self.config.clone(),
            blocks: self.blocks.iter().map(|b| b.as_ref().map(detach)).collect(),
            varmap: self.varmap.clone(),
        }
    }

    /// The adapter of encoder block `i`, if it has one.
    pub fn block(&self, i: usize) -> Option<&LoraQkv> {
        self.blocks.get(i).and_then(Option::as_ref)
    }

    /// Every trainable tensor, by name, in a stable order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v: Vec<_> = self
            .varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Number of trainable parameters (147,456 for ViT-B at rank 4).
    pub fn num_params(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// Folds the adapters into a state dict's `attn.qkv.weight` tensors:
    /// `W[0:D] += s B_q A_q`, `W[2D:3D] += s B_v A_v`; biases are unchanged.
    pub fn merge_into(&self, weights: &mut HashMap<String, Tensor>) -> anyhow::Result<()> {
        for (i, block) in self.blocks.iter().enumerate() {
            let Some(l) = block else { continue };
            let key = format!("image_encoder.blocks.{i}.attn.qkv.weight");
            let w = weights
                .get(&key)
                .with_context(|| format!("merge: no tensor {key}"))?;
            let dim = w.dim(1)?;
            let dq = (l.b_q.matmul(&l.a_q)? * l.scale)?;
            let dv = (l.b_v.matmul(&l.a_v)? * l.scale)?;
            let zeros = Tensor::zeros((dim, dim), w.dtype(), w.device())?;
            let delta = Tensor::cat(&[&dq, &zeros, &dv], 0)?.to_dtype(w.dtype())?;
            let merged = (w + delta)?.detach();
            weights.insert(key, merged);
        }
        Ok(())
    }

    /// Writes only the adapters (safetensors, config in the `wesam.lora` metadata).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .named_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().detach()))
            .collect();
        let meta = HashMap::from([(
            LORA_METADATA_KEY.to_string(),
            serde_json::to_string(&self.config)?,
        )]);
        super::checkpoint::write_safetensors(path, &tensors, meta)
    }

    /// Reads adapters written by [`Lora::save`], checking every name and shape against `model`.
    pub fn load(path: &Path, model: &SamConfig, dev: &Device) -> anyhow::Result<Self> {
        let (tensors, meta) = super::checkpoint::read_safetensors(path, dev)?;
        let config: LoraConfig = match meta.get(LORA_METADATA_KEY) {
            Some(json) => serde_json::from_str(json).with_context(|| {
                format!("{}: invalid `{LORA_METADATA_KEY}` metadata", path.display())
            })?,
            None => bail!(
                "{}: not a wesam adapter file (no `{LORA_METADATA_KEY}` metadata)",
                path.display()
            ),
        };
        let dim = model.encoder_embed_dim;
        let mut used = 0;
        let lora = Self::build(model, &config, |b, part| {
            let name = tensor_name(b, part);
            let t = tensors
                .get(&name)
                .with_context(|| format!("{}: missing adapter tensor {name}", path.display()))?;
            let want = if part.starts_with('a') {
                [config.rank, dim]
            } else {
                [dim, config.rank]
            };
            if t.dims() != want {
                bail!(
                    "{}: adapter tensor {name} has shape {:?}, the model needs {:?}",
                    path.display(),
                    t.dims(),
                    want
                );
            }
            used += 1;
            Ok(t.to_dtype(DType::F32)?)
        })
        .with_context(|| format!("loading LoRA adapters from {}", path.display()))?;
        if used != tensors.len() {
            let mut extra: Vec<_> = tensors
                .keys()
                .filter(|k| !lora.varmap.data().lock().unwrap().contains_key(*k))
                .cloned()
                .collect();
            extra.sort();
            bail!("{}: unexpected adapter tensors {:?}", path.display(), extra);
        }
        Ok(lora)
    }
}
