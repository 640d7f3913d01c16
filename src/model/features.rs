//! The image encoder as a feature provider for other models (`wesam features`): the outputs of
//! its global-attention blocks, before the neck, as EBSeg (Shan et al., CVPR 2024) takes them
//! from a frozen SAM ViT-B, and the neck's embedding that SAM decoders take. Two ways to prepare
//! the image: SAM's own square input, or EBSeg's (the image at any size, SAM's normalisation,
//! zero-padded to a multiple of 32; the encoder then resizes its position embedding
//! bicubically to the token grid). `docs/features.md` has the layout of the written files.

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::transforms::{preprocess, Preprocessing, PIXEL_MEAN, PIXEL_STD};
use super::{Lora, Sam};
use crate::ops::resize::{resize_2d, Interpolation};

/// How an image becomes the encoder's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum FeaturePreprocessing {
    /// SAM's: the longest side resized to the model's input size, padded bottom-right.
    #[default]
    Sam,
    /// EBSeg's: the image at its own size (or its shortest side resized to a given length),
    /// padded bottom-right to a multiple of 32.
    Ebseg,
}

/// The side EBSeg pads its inputs to a multiple of.
pub const EBSEG_DIVISOR: usize = 32;

/// EBSeg's names of the four global-attention blocks' outputs and the factors it rescales them
/// by (strides 4, 8, 16 and 32 for 16-pixel patches).
pub const EBSEG_SCALES: [(&str, f64); 4] =
    [("res2", 4.0), ("res3", 2.0), ("res4", 1.0), ("res5", 0.5)];

/// An image prepared for the encoder, with the sizes a consumer needs to map features back.
#[derive(Debug, Clone)]
pub struct FeatureInput {
    /// `[1, 3, H, W]`, normalised and padded.
    pub input: Tensor,
    /// (height, width) of the image.
    pub original: (usize, usize),
    /// (height, width) after resizing, before padding.
    pub resized: (usize, usize),
    /// (height, width) of the input.
    pub padded: (usize, usize),
}

/// Prepares `image` for `sam`'s encoder. `short_side` (EBSeg's test-time resize of the shortest
/// side) applies to `Ebseg` only; `Sam` uses the model's input size.
pub fn prepare(
    image: &RgbImage,
    mode: FeaturePreprocessing,
    short_side: Option<usize>,
    sam: &Sam,
) -> Result<FeatureInput> {
    let original = (image.height() as usize, image.width() as usize);
    match mode {
        FeaturePreprocessing::Sam => {
            let (input, frame) =
                preprocess(image, sam.input_size, Preprocessing::Sam, &sam.device)?;
            Ok(FeatureInput {
                input,
                original,
                resized: frame.resized,
                padded: (frame.size, frame.size),
            })
        }
        FeaturePreprocessing::Ebseg => {
            let resized = match short_side {
                Some(side) => {
                    let (h, w) = original;
                    let scale = side as f64 / h.min(w).max(1) as f64;
                    let size = |d: usize| ((d as f64 * scale).round() as usize).max(1);
                    let (rh, rw) = (size(h), size(w));
                    image::imageops::resize(
                        image,
                        rw as u32,
                        rh as u32,
                        image::imageops::FilterType::Triangle,
                    )
                }
                None => image.clone(),
            };
            let (h, w) = (resized.height() as usize, resized.width() as usize);
            let pad = |d: usize| d.div_ceil(EBSEG_DIVISOR) * EBSEG_DIVISOR;
            let (ph, pw) = (pad(h), pad(w));
            let mut data = vec![0f32; 3 * ph * pw];
            for (x, y, p) in resized.enumerate_pixels() {
                for c in 0..3 {
                    data[c * ph * pw + y as usize * pw + x as usize] =
                        (f32::from(p.0[c]) - PIXEL_MEAN[c]) / PIXEL_STD[c];
                }
            }
            Ok(FeatureInput {
                input: Tensor::from_vec(data, (1, 3, ph, pw), &sam.device)?,
                original,
                resized: (h, w),
                padded: (ph, pw),
            })
        }
    }
}

/// One image's features, each without the batch dimension.
#[derive(Debug, Clone)]
pub struct Features {
    /// (block index, its output `[D, h, w]`) for every global-attention block.
    pub blocks: Vec<(usize, Tensor)>,
    /// The neck's embedding `[C, h, w]`.
    pub neck: Tensor,
    /// EBSeg's rescaled maps (`res2` .. `res5`), when asked for.
    pub rescaled: Vec<(&'static str, Tensor)>,
}

impl Features {
    /// The tensors under the names the written file uses: `blocks.<i>`, `neck`, `res2`..`res5`.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        let blocks = self
            .blocks
            .iter()
            .map(|(i, t)| (format!("blocks.{i}"), t.clone()));
        let rescaled = self
            .rescaled
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()));
        blocks
            .chain(std::iter::once(("neck".to_string(), self.neck.clone())))
            .chain(rescaled)
            .collect()
    }
}

/// Runs the encoder (with `lora`'s adapters, if any) on a prepared input and keeps the outputs
/// of its global-attention blocks and its neck; with `rescale`, also EBSeg's four maps, the
/// blocks' outputs resized bilinearly by [`EBSEG_SCALES`] (an encoder without exactly four
/// global-attention blocks has none, and is refused).
pub fn extract(sam: &Sam, lora: Option<&Lora>, input: &Tensor, rescale: bool) -> Result<Features> {
    let taps = &sam.config.encoder_global_attn_indexes;
    if rescale && taps.len() != EBSEG_SCALES.len() {
        candle_core::bail!(
            "EBSeg's rescaled maps take four global-attention blocks; this encoder has {} ({taps:?})",
            taps.len()
        );
    }
    let frozen = lora.map(Lora::frozen);
    let (neck, tapped) = sam
        .image_encoder
        .forward_tapped(input, frozen.as_ref(), taps)?;
    let tapped = tapped
        .iter()
        .map(|t| t.squeeze(0))
        .collect::<Result<Vec<_>>>()?;
    let mut rescaled = Vec::new();
    if rescale {
        for ((name, scale), t) in EBSEG_SCALES.iter().zip(&tapped) {
            let (_, h, w) = t.dims3()?;
            let size = |d: usize| (d as f64 * scale).floor() as usize;
            let r = resize_2d(&t.unsqueeze(0)?, size(h), size(w), Interpolation::Bilinear)?;
            rescaled.push((*name, r.squeeze(0)?));
        }
    }
    Ok(Features {
        blocks: taps.iter().copied().zip(tapped).collect(),
        neck: neck.squeeze(0)?,
        rescaled,
    })
}

/// The metadata a features file carries: what produced it and how to map it back to the image.
pub fn metadata(
    sam: &Sam,
    mode: FeaturePreprocessing,
    prepared: &FeatureInput,
    adapter: &str,
) -> HashMap<String, String> {
    let size = |(h, w): (usize, usize)| format!("{h}x{w}");
    let list = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let blocks = sam.config.encoder_global_attn_indexes.iter();
    HashMap::from([
        (
            "model_type".into(),
            sam.config
                .model_type()
                .map_or("custom", |t| t.name())
                .to_string(),
        ),
        (
            "preprocessing".into(),
            match mode {
                FeaturePreprocessing::Sam => "sam",
                FeaturePreprocessing::Ebseg => "ebseg",
            }
            .to_string(),
        ),
        ("original_size".into(), size(prepared.original)),
        ("resized_size".into(), size(prepared.resized)),
        ("padded_size".into(), size(prepared.padded)),
        ("pixel_mean".into(), list(&PIXEL_MEAN)),
        ("pixel_std".into(), list(&PIXEL_STD)),
        (
            "block_indexes".into(),
            blocks.map(|i| i.to_string()).collect::<Vec<_>>().join(","),
        ),
        ("dtype".into(), "F32".into()),
        ("adapter".into(), adapter.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SamConfig;
    use candle_core::Device;

    #[test]
    fn ebseg_inputs_pad_to_multiples_of_32() {
        let image = RgbImage::from_fn(45, 33, |x, y| image::Rgb([x as u8, y as u8, 200]));
        let sam = Sam::random(&SamConfig::demo(), None, 0, &Device::Cpu).unwrap();
        let p = prepare(&image, FeaturePreprocessing::Ebseg, None, &sam).unwrap();
        assert_eq!(
            (p.original, p.resized, p.padded),
            ((33, 45), (33, 45), (64, 64))
        );
        let v = p.input.squeeze(0).unwrap().to_vec3::<f32>().unwrap();
        assert_eq!(v[1][32][44], (32.0 - PIXEL_MEAN[1]) / PIXEL_STD[1]);
        assert_eq!(v[0][33][0], 0.0, "padding is the mean colour");
        let p = prepare(&image, FeaturePreprocessing::Ebseg, Some(66), &sam).unwrap();
        assert_eq!((p.resized, p.padded), ((66, 90), (96, 96)));
    }
}
