//! EBSeg's backbone (Shan et al., CVPR 2024): SAM's image encoder without its neck, under
//! `backbone.*` in an EBSeg checkpoint. detectron2 loads `MODEL.WEIGHTS` after EBSeg's own
//! `build_sam`, so an adapted encoder reaches EBSeg only inside its checkpoint: `wesam export
//! --format ebseg` writes the adapted encoder there (`docs/features.md`).

use anyhow::{bail, Result};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

/// The prefix of SAM's encoder in wesam's weights, and of EBSeg's backbone.
const ENCODER_PREFIX: &str = "image_encoder.";
const BACKBONE_PREFIX: &str = "backbone.";
/// EBSeg trains its backbone's position embedding; which one an export keeps.
const POS_EMBED: &str = "pos_embed";

/// Whose position embedding an EBSeg export keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum PosEmbed {
    /// The EBSeg checkpoint's own, which EBSeg trained (WeSAM's LoRA does not touch it).
    #[default]
    Ebseg,
    /// The adapted model's.
    Adapted,
}

/// The encoder of `weights` (SAM's names, adapters folded in) under EBSeg's backbone names,
/// without the neck; written into `base` (an EBSeg checkpoint's tensors) when given, whose
/// other tensors are kept, and whose `backbone.pos_embed` is kept unless `pos` is `Adapted`.
/// Refuses a SAM-Adapter encoder (its prompts are activations, not weights EBSeg can hold) and
/// a base whose backbone does not have this encoder's tensors and shapes.
pub fn into_backbone(
    weights: &[(String, Tensor)],
    base: Option<Vec<(String, Tensor)>>,
    pos: PosEmbed,
) -> Result<Vec<(String, Tensor)>> {
    let mut encoder = Vec::new();
    for (name, t) in weights {
        let Some(rest) = name.strip_prefix(ENCODER_PREFIX) else {
            continue;
        };
        if rest.starts_with("prompt_generator.") {
            bail!(
                "this model has a SAM-Adapter adapter ({name}): its prompts are added to the \
                 encoder's activations, and EBSeg's backbone has no place for them"
            );
        }
        if !rest.starts_with("neck.") {
            encoder.push((format!("{BACKBONE_PREFIX}{rest}"), t.clone()));
        }
    }
    let Some(mut base) = base else {
        return Ok(encoder);
    };
    for (name, t) in encoder {
        let Some(slot) = base.iter_mut().find(|(n, _)| *n == name) else {
            bail!("the EBSeg checkpoint has no {name}: its backbone is not this model's encoder");
        };
        if slot.1.dims() != t.dims() {
            bail!(
                "{name} is {:?} in the EBSeg checkpoint but {:?} in this model: another \
                 architecture",
                slot.1.dims(),
                t.dims()
            );
        }
        let keep_ebseg = pos == PosEmbed::Ebseg && name == format!("{BACKBONE_PREFIX}{POS_EMBED}");
        if !keep_ebseg {
            slot.1 = t.to_dtype(slot.1.dtype())?;
        }
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: f32, n: usize) -> Tensor {
        Tensor::full(v, n, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_encoder_replaces_the_backbone_but_its_position_embedding() {
        let weights = vec![
            ("image_encoder.pos_embed".to_string(), t(1.0, 2)),
            ("image_encoder.blocks.0.w".to_string(), t(2.0, 3)),
            ("image_encoder.neck.0.weight".to_string(), t(3.0, 1)),
            ("mask_decoder.x".to_string(), t(4.0, 1)),
        ];
        let base = vec![
            ("backbone.pos_embed".to_string(), t(-1.0, 2)),
            ("backbone.blocks.0.w".to_string(), t(-2.0, 3)),
            ("sem_seg_head.y".to_string(), t(-5.0, 1)),
        ];
        let value = |v: &[(String, Tensor)], k: &str| {
            let t = &v.iter().find(|(n, _)| n == k).unwrap().1;
            t.to_vec1::<f32>().unwrap()[0]
        };
        let out = into_backbone(&weights, Some(base.clone()), PosEmbed::Ebseg).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(value(&out, "backbone.pos_embed"), -1.0);
        assert_eq!(value(&out, "backbone.blocks.0.w"), 2.0);
        assert_eq!(value(&out, "sem_seg_head.y"), -5.0);
        let out = into_backbone(&weights, Some(base.clone()), PosEmbed::Adapted).unwrap();
        assert_eq!(value(&out, "backbone.pos_embed"), 1.0);
        let alone = into_backbone(&weights, None, PosEmbed::Ebseg).unwrap();
        assert_eq!(alone.len(), 2, "the encoder without its neck");
        let wrong = vec![("backbone.pos_embed".to_string(), t(0.0, 2))];
        assert!(into_backbone(&weights, Some(wrong), PosEmbed::Ebseg).is_err());
        let mut adapter = weights.clone();
        adapter.push(("image_encoder.prompt_generator.x".into(), t(0.0, 1)));
        let e = into_backbone(&adapter, None, PosEmbed::Ebseg).unwrap_err();
        assert!(e.to_string().contains("SAM-Adapter"));
    }
}
