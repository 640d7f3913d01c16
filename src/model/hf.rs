//! Key mapping from the HuggingFace transformers `SamModel` layout to the official one, so that
//! `SamModel` safetensors load like an official checkpoint.

use std::collections::HashMap;

use anyhow::bail;
use candle_core::Tensor;

/// True when the keys are those of a transformers `SamModel`.
pub fn is_hf_layout(tensors: &HashMap<String, Tensor>) -> bool {
    tensors.keys().any(|k| k.starts_with("vision_encoder."))
}

/// Exact renames of one part of a key, HF -> official.
const RENAMES: &[(&str, &str)] = &[
    ("vision_encoder.", "image_encoder."),
    ("patch_embed.projection.", "patch_embed.proj."),
    ("neck.conv1.", "neck.0."),
    ("neck.layer_norm1.", "neck.1."),
    ("neck.conv2.", "neck.2."),
    ("neck.layer_norm2.", "neck.3."),
    (
        "shared_embedding.positional_embedding",
        "pe_layer.positional_encoding_gaussian_matrix",
    ),
    (
        "prompt_encoder.point_embed.",
        "prompt_encoder.point_embeddings.",
    ),
    ("mask_embed.conv1.", "mask_downscaling.0."),
    ("mask_embed.layer_norm1.", "mask_downscaling.1."),
    ("mask_embed.conv2.", "mask_downscaling.3."),
    ("mask_embed.layer_norm2.", "mask_downscaling.4."),
    ("mask_embed.conv3.", "mask_downscaling.6."),
    ("upscale_conv1.", "output_upscaling.0."),
    ("upscale_layer_norm.", "output_upscaling.1."),
    ("upscale_conv2.", "output_upscaling.3."),
    ("layer_norm_final_attn.", "norm_final_attn."),
    (".layer_norm1.", ".norm1."),
    (".layer_norm2.", ".norm2."),
    (".layer_norm3.", ".norm3."),
    (".layer_norm4.", ".norm4."),
];

/// The MLP (`iou_prediction_head` or one hypernetwork) a key belongs to, and the rest of the key.
fn split_mlp(key: &str) -> Option<(&str, &str)> {
    for anchor in ["iou_prediction_head.", "output_hypernetworks_mlps."] {
        if let Some(pos) = key.find(anchor) {
            let after = &key[pos + anchor.len()..];
            let prefix_len = if anchor.starts_with("output") {
                pos + anchor.len() + after.find('.')? + 1
            } else {
                pos + anchor.len()
            };
            return Some((&key[..prefix_len], &key[prefix_len..]));
        }
    }
    None
}

/// Renames every key to its official name. HF's MLPs are `proj_in`, `layers.0..n-3`,
/// `proj_out` where the official ones are `layers.0..n-1`; the tied duplicate
/// `shared_image_embedding.positional_embedding` is dropped.
pub fn to_official(tensors: HashMap<String, Tensor>) -> anyhow::Result<HashMap<String, Tensor>> {
    // Hidden layers per MLP, to place proj_out after them.
    let mut hidden: HashMap<String, usize> = HashMap::new();
    for k in tensors.keys() {
        if let Some((mlp, rest)) = split_mlp(k) {
            let n = hidden.entry(mlp.to_string()).or_insert(0);
            if let Some(i) = rest
                .strip_prefix("layers.")
                .and_then(|r| r.split('.').next()?.parse::<usize>().ok())
            {
                *n = (*n).max(i + 1);
            }
        }
    }
    let mut out = HashMap::with_capacity(tensors.len());
    for (k, t) in tensors {
        if k == "shared_image_embedding.positional_embedding" {
            continue;
        }
        let mut name = k.clone();
        if let Some((mlp, rest)) = split_mlp(&k) {
            let n = hidden[mlp];
            let rest = if let Some(r) = rest.strip_prefix("proj_in.") {
                format!("layers.0.{r}")
            } else if let Some(r) = rest.strip_prefix("proj_out.") {
                format!("layers.{}.{r}", n + 1)
            } else if let Some(r) = rest.strip_prefix("layers.") {
                let (i, r) = r.split_once('.').unwrap_or((r, ""));
                let i: usize = i
                    .parse()
                    .map_err(|_| anyhow::anyhow!("unexpected HF key {k}"))?;
                format!("layers.{}.{r}", i + 1)
            } else {
                rest.to_string()
            };
            name = format!("{mlp}{rest}");
        }
        for (from, to) in RENAMES {
            name = name.replace(from, to);
        }
        if let Some(rest) = name.strip_prefix("image_encoder.layers.") {
            name = format!("image_encoder.blocks.{rest}");
        }
        if out.insert(name.clone(), t).is_some() {
            bail!("two HF keys map to {name}");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn every_kind_of_key_is_renamed() {
        let keys = [
            (
                "vision_encoder.layers.3.layer_norm1.weight",
                "image_encoder.blocks.3.norm1.weight",
            ),
            (
                "vision_encoder.neck.layer_norm2.bias",
                "image_encoder.neck.3.bias",
            ),
            (
                "mask_decoder.iou_prediction_head.proj_in.weight",
                "mask_decoder.iou_prediction_head.layers.0.weight",
            ),
            (
                "mask_decoder.iou_prediction_head.layers.0.weight",
                "mask_decoder.iou_prediction_head.layers.1.weight",
            ),
            (
                "mask_decoder.iou_prediction_head.proj_out.bias",
                "mask_decoder.iou_prediction_head.layers.2.bias",
            ),
            (
                "mask_decoder.output_hypernetworks_mlps.2.proj_out.weight",
                "mask_decoder.output_hypernetworks_mlps.2.layers.2.weight",
            ),
            (
                "mask_decoder.transformer.layers.1.layer_norm4.bias",
                "mask_decoder.transformer.layers.1.norm4.bias",
            ),
            (
                "prompt_encoder.point_embed.3.weight",
                "prompt_encoder.point_embeddings.3.weight",
            ),
        ];
        let t = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut map: HashMap<String, Tensor> = keys
            .iter()
            .map(|(k, _)| (k.to_string(), t.clone()))
            .collect();
        map.insert(
            "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight".into(),
            t.clone(),
        );
        map.insert(
            "shared_image_embedding.positional_embedding".into(),
            t.clone(),
        );
        let out = to_official(map).unwrap();
        for (_, official) in keys {
            assert!(
                out.contains_key(official),
                "{official} missing from {:?}",
                out.keys()
            );
        }
        assert!(!out.contains_key("shared_image_embedding.positional_embedding"));
    }
}
