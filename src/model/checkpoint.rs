//! Reading and writing SAM weights: official PyTorch `.pth` state dicts (through candle's pickle
//! reader, which runs no code), safetensors with the official key names, and the HuggingFace
//! `SamModel` layout. Writes are atomic (temporary name, then rename).

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::config::{ModelType, SamConfig};
use super::hf;
use super::sam_adapter::{self, FpeLayout};

/// Metadata key holding the JSON [`SamConfig`] of a saved model.
pub const CONFIG_METADATA_KEY: &str = "wesam.config";

/// A state dict with official SAM key names, and the configuration stored beside it, if any.
pub struct StateDict {
    pub tensors: HashMap<String, Tensor>,
    pub config: Option<SamConfig>,
    pub path: PathBuf,
}

fn is_zip(path: &Path) -> anyhow::Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path)
        .with_context(|| format!("cannot open checkpoint {}", path.display()))?;
    let n = f.read(&mut magic)?;
    Ok(n == 4 && magic == *b"PK\x03\x04")
}

/// Reads the `__metadata__` of a safetensors file without loading its tensors.
fn safetensors_metadata(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: not a safetensors file (too short)", path.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100_000_000 {
        bail!(
            "{}: not a safetensors file (header of {len} bytes)",
            path.display()
        );
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: truncated safetensors header", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .with_context(|| format!("{}: not a safetensors file (bad header)", path.display()))?;
    let mut out = HashMap::new();
    if let Some(meta) = json.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// All tensors (as f32 on `dev`) and the metadata of a safetensors file.
pub fn read_safetensors(
    path: &Path,
    dev: &Device,
) -> anyhow::Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let meta = safetensors_metadata(path)?;
    let tensors = candle_core::safetensors::load(path, dev)
        .with_context(|| format!("{}: cannot read safetensors", path.display()))?;
    let tensors = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    refuse_non_finite(path, &tensors)?;
    Ok((tensors, meta))
}

/// Refuses weights read from `path` that hold NaN or infinity, naming the tensor: they would
/// give empty masks (or NaN adapters) without any other sign.
fn refuse_non_finite(path: &Path, tensors: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        if !all_finite(&tensors[name])? {
            bail!(
                "{}: tensor {name} holds NaN or infinite values",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes tensors and metadata as safetensors, atomically (see [`crate::io::write_atomically`]).
/// Refuses, naming the tensor, to write a non-finite value: such weights are unusable, and the
/// file they would replace may not be.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    for (name, t) in tensors {
        if t.dtype().is_float() && !all_finite(t)? {
            anyhow::bail!(
                "refusing to write {}: tensor {name} holds NaN or infinite values",
                path.display()
            );
        }
    }
    let contiguous = tensors
        .iter()
        .map(|(k, t)| Ok((k.as_str(), t.contiguous()?)))
        .collect::<candle_core::Result<Vec<_>>>()?;
    crate::io::write_atomically(path, |tmp| {
        Ok(safetensors::serialize_to_file(
            contiguous,
            Some(metadata),
            tmp,
        )?)
    })
}

/// Whether every element of a float tensor is finite.
pub(crate) fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(values.iter().all(|v| v.is_finite()))
}

/// The two prompt-free tensors of a released SAM-Adapter checkpoint, stored at the top level,
/// and their names in SAM's prompt encoder, where wesam keeps them.
const RELEASED_PROMPT_FREE_NAMES: [(&str, &str); 2] = [
    (
        "no_mask_embed.weight",
        "prompt_encoder.no_mask_embed.weight",
    ),
    (
        "pe_layer.positional_encoding_gaussian_matrix",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
];

/// Renames a released SAM-Adapter checkpoint's top-level `no_mask_embed` and `pe_layer` into the
/// prompt encoder.
fn from_released_sam_adapter(mut tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    for (released, ours) in RELEASED_PROMPT_FREE_NAMES {
        if !tensors.contains_key(ours) {
            if let Some(t) = tensors.remove(released) {
                tensors.insert(ours.to_string(), t);
            }
        }
    }
    tensors
}

/// The state dict under the released SAM-Adapter names, for a prompt-free model (no prompt
/// encoder layers), so that the authors' code loads it with `strict=True`.
pub fn to_released_sam_adapter(mut tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    for (released, ours) in RELEASED_PROMPT_FREE_NAMES {
        if let Some(t) = tensors.remove(ours) {
            tensors.insert(released.to_string(), t);
        }
    }
    tensors
}

/// Strips a wrapper prefix (`model.`, `module.`, `sam.`) shared by every key.
fn strip_wrapper_prefix(mut tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    for prefix in ["module.", "model.", "sam."] {
        if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(prefix)) {
            tensors = tensors
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
    }
    tensors
}

impl StateDict {
    /// Loads a checkpoint in any supported format onto `dev` as f32, with official key names.
    pub fn load(path: &Path, dev: &Device) -> anyhow::Result<Self> {
        if !path.exists() {
            bail!("checkpoint {} does not exist", path.display());
        }
        let (tensors, meta) = if is_zip(path)? {
            (read_pth(path, dev)?, HashMap::new())
        } else {
            read_safetensors(path, dev).with_context(|| {
                format!(
                    "{}: neither a PyTorch zip checkpoint nor safetensors",
                    path.display()
                )
            })?
        };
        let mut tensors = strip_wrapper_prefix(tensors);
        // Non-persistent buffers of the official `Sam`, present in some exported files.
        tensors.retain(|k, _| !k.ends_with("pixel_mean") && !k.ends_with("pixel_std"));
        let tensors = if hf::is_hf_layout(&tensors) {
            hf::to_official(tensors)
                .with_context(|| format!("{}: HuggingFace SamModel layout", path.display()))?
        } else {
            from_released_sam_adapter(tensors)
        };
        let config = match meta.get(CONFIG_METADATA_KEY) {
            Some(json) => Some(serde_json::from_str(json).with_context(|| {
                format!(
                    "{}: invalid `{CONFIG_METADATA_KEY}` metadata",
                    path.display()
                )
            })?),
            None => None,
        };
        Ok(Self {
            tensors,
            config,
            path: path.to_path_buf(),
        })
    }

    /// The configuration to build: the user's (`--model-type`, `--model-config`), else the
    /// stored one, else the official type whose shapes the weights have. Shapes cannot tell
    /// every setting (the decoder's head count), so weights of any other architecture without
    /// stored configuration are refused rather than built with a guess.
    pub fn resolve_config(&self, given: Option<&SamConfig>) -> anyhow::Result<SamConfig> {
        let mut config = self.stated_or_official_config(given)?;
        if config.sam_adapter.is_none()
            && self
                .tensors
                .keys()
                .any(|k| k.starts_with(sam_adapter::WEIGHTS_PREFIX))
        {
            // Released SAM-Adapter checkpoints were trained with the scrambled F_pe.
            config.sam_adapter = Some(FpeLayout::Faithful);
        }
        Ok(config)
    }

    /// [`StateDict::resolve_config`] before the adapter is detected.
    fn stated_or_official_config(&self, given: Option<&SamConfig>) -> anyhow::Result<SamConfig> {
        if let Some(c) = given {
            return Ok(c.clone());
        }
        if let Some(c) = &self.config {
            return Ok(c.clone());
        }
        let path = self.path.display();
        let inferred = infer_config(&self.tensors)
            .with_context(|| format!("{path}: cannot infer the model configuration"))?;
        if inferred.model_type().is_none() {
            bail!(
                "{path}: its shapes are not those of an official SAM (vit_b, vit_l, vit_h) and it \
                 stores no `{CONFIG_METADATA_KEY}` configuration, so settings no shape tells (the \
                 decoder's head count) are unknown: give --model-config FILE (the official \
                 builder's arguments, as in configs/sam-tiny.toml), or use a file wesam wrote"
            );
        }
        Ok(inferred)
    }
}

/// Reads a zip-pickled PyTorch state dict (plain, or under a `model` / `state_dict` key).
fn read_pth(path: &Path, dev: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    let mut last_err = None;
    for key in [None, Some("model"), Some("state_dict")] {
        match candle_core::pickle::read_all_with_key(path, key) {
            Ok(v) if !v.is_empty() => {
                let tensors = v
                    .into_iter()
                    .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?.to_device(dev)?)))
                    .collect::<candle_core::Result<HashMap<_, _>>>()?;
                refuse_non_finite(path, &tensors)?;
                return Ok(tensors);
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    match last_err {
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "{}: cannot read the PyTorch checkpoint",
            path.display()
        ))),
        None => bail!(
            "{}: the PyTorch checkpoint holds no tensors",
            path.display()
        ),
    }
}

fn dims_of(t: &HashMap<String, Tensor>, key: &str) -> anyhow::Result<Vec<usize>> {
    t.get(key)
        .map(|t| t.dims().to_vec())
        .with_context(|| format!("no tensor `{key}`"))
}

fn count_indexed(t: &HashMap<String, Tensor>, prefix: &str) -> usize {
    (0..)
        .take_while(|i| t.keys().any(|k| k.starts_with(&format!("{prefix}.{i}."))))
        .count()
}

/// Infers the configuration from tensor shapes. Every field follows from a shape except the
/// decoder's head count, which no shape fixes: the official value (8) is assumed.
pub fn infer_config(t: &HashMap<String, Tensor>) -> anyhow::Result<SamConfig> {
    let patch = dims_of(t, "image_encoder.patch_embed.proj.weight")?;
    let (dim, patch_size) = (patch[0], patch[2]);
    let grid = dims_of(t, "image_encoder.pos_embed")?[1];
    let depth = count_indexed(t, "image_encoder.blocks");
    let mut global = Vec::new();
    let mut window = 0;
    let mut head_dim = 0;
    for i in 0..depth {
        let rel = dims_of(t, &format!("image_encoder.blocks.{i}.attn.rel_pos_h"))?;
        head_dim = rel[1];
        if rel[0] == 2 * grid - 1 {
            global.push(i);
        } else {
            window = rel[0].div_ceil(2);
        }
    }
    if head_dim == 0 || dim % head_dim != 0 {
        bail!("relative-position tables of width {head_dim} do not divide the embedding dim {dim}");
    }
    let mlp = dims_of(t, "image_encoder.blocks.0.mlp.lin1.weight")?[0];
    let iou_depth = count_indexed(t, "mask_decoder.iou_prediction_head.layers");
    let mut cfg = SamConfig::official(ModelType::VitB);
    cfg.encoder_embed_dim = dim;
    cfg.encoder_depth = depth;
    cfg.encoder_num_heads = dim / head_dim;
    cfg.encoder_global_attn_indexes = global;
    cfg.prompt_embed_dim = dims_of(t, "image_encoder.neck.0.weight")?[0];
    cfg.image_size = grid * patch_size;
    cfg.vit_patch_size = patch_size;
    cfg.window_size = if window == 0 { cfg.window_size } else { window };
    cfg.mlp_ratio = mlp as f64 / dim as f64;
    // A released SAM-Adapter checkpoint has no mask downscaling: the official width stands.
    if let Ok(d) = dims_of(t, "prompt_encoder.mask_downscaling.3.weight") {
        cfg.mask_in_chans = d[0];
    }
    cfg.decoder_depth = count_indexed(t, "mask_decoder.transformer.layers");
    cfg.decoder_mlp_dim = dims_of(t, "mask_decoder.transformer.layers.0.mlp.lin1.weight")?[0];
    cfg.iou_head_depth = iou_depth;
    cfg.iou_head_hidden_dim = dims_of(t, "mask_decoder.iou_prediction_head.layers.0.weight")?[0];
    cfg.num_multimask_outputs = dims_of(t, "mask_decoder.mask_tokens.weight")?[0] - 1;
    cfg.validate()?;
    Ok(cfg)
}

/// A VarBuilder backend over a state dict that records what the model asks for, so that all
/// missing, unexpected and mis-shaped keys are reported together instead of one at a time.
struct TrackingBackend {
    tensors: HashMap<String, Tensor>,
    record: Arc<Mutex<Record>>,
}

#[derive(Default)]
struct Record {
    requested: BTreeSet<String>,
    missing: Vec<String>,
    mismatched: Vec<String>,
}

impl SimpleBackend for TrackingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut rec = self.record.lock().unwrap();
        rec.requested.insert(name.to_string());
        match self.tensors.get(name) {
            Some(t) if t.shape() == &s => t.to_dtype(dtype)?.to_device(dev),
            found => {
                match found {
                    Some(t) => rec.mismatched.push(format!(
                        "{name}: checkpoint {:?}, model {:?}",
                        t.dims(),
                        s.dims()
                    )),
                    None => rec.missing.push(name.to_string()),
                }
                // A placeholder that allocates nothing; the build fails after the report.
                Tensor::zeros((), dtype, dev)?.broadcast_as(s)
            }
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.record
            .lock()
            .unwrap()
            .requested
            .insert(name.to_string());
        match self.tensors.get(name) {
            Some(t) => t.to_dtype(dtype)?.to_device(dev),
            None => Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

fn summarise(what: &str, items: &[String]) -> String {
    const SHOWN: usize = 5;
    let head: Vec<_> = items.iter().take(SHOWN).cloned().collect();
    let more = if items.len() > SHOWN {
        format!(", ... ({} in all)", items.len())
    } else {
        String::new()
    };
    format!("{} {what}: {}{more}", items.len(), head.join(", "))
}

/// Builds a model from `state` through a checked VarBuilder and reports, naming the file, every
/// missing key, unexpected key and shape mismatch.
pub fn build_checked<T>(
    state: &StateDict,
    dev: &Device,
    build: impl FnOnce(VarBuilder) -> candle_core::Result<T>,
) -> anyhow::Result<T> {
    let record = Arc::new(Mutex::new(Record::default()));
    let backend = TrackingBackend {
        tensors: state.tensors.clone(),
        record: record.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, dev.clone());
    let built = build(vb);
    let rec = record.lock().unwrap();
    let unexpected: Vec<String> = {
        let mut v: Vec<_> = state
            .tensors
            .keys()
            .filter(|k| !rec.requested.contains(*k))
            .cloned()
            .collect();
        v.sort();
        v
    };
    let mut problems = Vec::new();
    if !rec.missing.is_empty() {
        problems.push(summarise("missing keys", &rec.missing));
    }
    if !unexpected.is_empty() {
        problems.push(summarise("unexpected keys", &unexpected));
    }
    if !rec.mismatched.is_empty() {
        problems.push(summarise("shape mismatches", &rec.mismatched));
    }
    if !problems.is_empty() {
        bail!(
            "{} does not match the model configuration:\n  {}",
            state.path.display(),
            problems.join("\n  ")
        );
    }
    built.with_context(|| format!("building the model from {}", state.path.display()))
}

/// Generates every tensor a model of `config` needs, from `seed` alone: matrices and kernels
/// N(0, 1/fan_in), norm weights one, biases zero, embeddings and position tables N(0, 0.02),
/// the Fourier matrix N(0, 1) as in the official initialisation.
pub fn random_state_dict(
    config: &SamConfig,
    seed: u64,
    dev: &Device,
) -> anyhow::Result<HashMap<String, Tensor>> {
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    struct RandomBackend {
        seed: u64,
        made: Arc<Mutex<HashMap<String, Tensor>>>,
    }
    impl SimpleBackend for RandomBackend {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: candle_nn::Init,
            dtype: DType,
            dev: &Device,
        ) -> candle_core::Result<Tensor> {
            // Each tensor's stream depends on the seed and its name only, not on build order.
            let name_hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
            let mut rng = StdRng::seed_from_u64(self.seed ^ name_hash);
            let dims = s.dims();
            let std = if name.ends_with("positional_encoding_gaussian_matrix") {
                1.0
            } else if name.ends_with("pos_embed")
                || name.contains("rel_pos")
                || dims.len() == 2 && dims[0] == 1
            {
                0.02
            } else if dims.len() >= 2 {
                1.0 / (dims[1..].iter().product::<usize>() as f64).sqrt()
            } else {
                0.0
            };
            let t = if std > 0.0 {
                let normal = Normal::new(0.0, std).unwrap();
                let v: Vec<f32> = (0..s.elem_count())
                    .map(|_| normal.sample(&mut rng) as f32)
                    .collect();
                Tensor::from_vec(v, s, dev)?
            } else if name.ends_with("weight") {
                Tensor::ones(s, dtype, dev)?
            } else {
                Tensor::zeros(s, dtype, dev)?
            };
            self.made
                .lock()
                .unwrap()
                .insert(name.to_string(), t.clone());
            Ok(t)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt())
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    config.validate()?;
    let made = Arc::new(Mutex::new(HashMap::new()));
    let backend = RandomBackend {
        seed,
        made: made.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, dev.clone());
    super::Sam::new(config, None, vb)?;
    let made = std::mem::take(&mut *made.lock().unwrap());
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_weight_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weights.safetensors");
        std::fs::write(&path, b"the previous file").unwrap();
        let good = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        for bad in [f32::NAN, f32::INFINITY] {
            let t = Tensor::new(&[1f32, bad], &Device::Cpu).unwrap();
            let tensors = vec![("a".to_string(), good.clone()), ("b.weight".to_string(), t)];
            let err = write_safetensors(&path, &tensors, HashMap::new()).unwrap_err();
            assert!(err.to_string().contains("b.weight"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), b"the previous file");
        }
        write_safetensors(&path, &[("a".to_string(), good)], HashMap::new()).unwrap();
    }

    #[test]
    fn weights_with_a_non_finite_value_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.safetensors");
        let t = Tensor::new(&[1f32, f32::NAN], &Device::Cpu).unwrap();
        // Written around the project's writer, which refuses it.
        candle_core::safetensors::save(&HashMap::from([("x.weight".to_string(), t)]), &path)
            .unwrap();
        let err = read_safetensors(&path, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.weight") && err.contains("nan.safetensors"),
            "{err}"
        );
    }
}
