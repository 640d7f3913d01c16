//! The one way an image is segmented, as the official `SamPredictor`: [`Predictor::set_image`]
//! preprocesses and encodes an image once, then [`Predictor::predict`] decodes any number of
//! prompt sets given in the image's pixels (or [`Predictor::predict_in_frame`] prompts already
//! in the model's input frame). `wesam predict`, the evaluation and the training step all go
//! through it, so they cannot drift apart.

use candle_core::{Result, Tensor};
use image::RgbImage;

use super::transforms::{self, Frame, Preprocessing};
use super::{Lora, Prompts, Sam};

/// An image ready for the encoder: the model's input tensor `[1, 3, S, S]` and the frame that
/// maps the image's pixels into it. Several predictors (a teacher and the anchor on the same
/// view) can encode one prepared image.
pub struct PreparedImage {
    pub input: Tensor,
    pub frame: Frame,
}

/// Prompts in the original image's pixels, for one instance.
#[derive(Debug, Clone, Default)]
pub struct ImagePrompts {
    /// An xyxy box.
    pub bbox: Option<[f32; 4]>,
    /// Points `(x, y, label)`: label 1 foreground, 0 background.
    pub points: Vec<[f32; 3]>,
    /// Low-resolution mask logits `[1, 1, 4h, 4w]` in the input frame (as the decoder returns
    /// them, or as `data::prompts::mask_logits` makes them from a mask).
    pub mask: Option<Tensor>,
}

/// The decoder's outputs for a set of prompts.
pub struct Masks {
    /// Low-resolution mask logits `[n, m, 4h, 4w]` in the input frame (`m` is 3 for multimask
    /// output, else 1).
    pub low_res: Tensor,
    /// Predicted IoU of each mask `[n, m]`.
    pub iou: Tensor,
}

/// A model (with its adapters, if any) bound to one encoded image at a time.
pub struct Predictor<'a> {
    sam: &'a Sam,
    lora: Option<&'a Lora>,
    preprocessing: Preprocessing,
    image: Option<(Frame, Tensor)>,
}

impl<'a> Predictor<'a> {
    /// A predictor for `sam` with `lora` applied, preprocessing images as `preprocessing` says.
    pub fn new(sam: &'a Sam, lora: Option<&'a Lora>, preprocessing: Preprocessing) -> Self {
        Self {
            sam,
            lora,
            preprocessing,
            image: None,
        }
    }

    /// Resizes, normalises and pads an image into the model's input, on the model's device.
    pub fn prepare(&self, image: &RgbImage) -> Result<PreparedImage> {
        let (input, frame) = transforms::preprocess(
            image,
            self.sam.input_size,
            self.preprocessing,
            &self.sam.device,
        )?;
        Ok(PreparedImage { input, frame })
    }

    /// Prepares and encodes an image; later predictions decode against it.
    pub fn set_image(&mut self, image: &RgbImage) -> Result<()> {
        let prepared = self.prepare(image)?;
        self.set_prepared(&prepared)
    }

    /// Encodes an image prepared by [`Predictor::prepare`] (of this or another predictor of
    /// the same model input size).
    pub fn set_prepared(&mut self, prepared: &PreparedImage) -> Result<()> {
        let embedding = self.sam.encode(&prepared.input, self.lora)?;
        self.image = Some((prepared.frame, embedding));
        Ok(())
    }

    fn encoded(&self) -> Result<&(Frame, Tensor)> {
        self.image
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("predictor: no image set".into()))
    }

    /// Where the current image sits in the model's input.
    pub fn frame(&self) -> Result<Frame> {
        Ok(self.encoded()?.0)
    }

    /// The current image's embedding `[1, C, h, w]` (carrying the autograd graph of the
    /// adapters when they are being trained).
    pub fn embedding(&self) -> Result<&Tensor> {
        Ok(&self.encoded()?.1)
    }

    /// Side of the decoder's low-resolution masks (4× the embedding's).
    pub fn low_res_size(&self) -> usize {
        4 * self.sam.embedding_size()
    }

    /// Decodes prompts given in the input frame (model tensors).
    pub fn predict_in_frame(&self, prompts: &Prompts, multimask: bool) -> Result<Masks> {
        let (low_res, iou) = self.sam.decode(self.embedding()?, prompts, multimask)?;
        Ok(Masks { low_res, iou })
    }

    /// Decodes one instance's prompts given in the original image's pixels.
    pub fn predict(&self, prompts: &ImagePrompts, multimask: bool) -> Result<Masks> {
        let frame = self.frame()?;
        let dev = &self.sam.device;
        let mut model = Prompts::default();
        if let Some(b) = prompts.bbox {
            model.boxes = Some(Tensor::new(&[frame.map_box(b)], dev)?);
        }
        if !prompts.points.is_empty() {
            let k = prompts.points.len();
            let coords: Vec<f32> = prompts
                .points
                .iter()
                .flat_map(|p| <[f32; 2]>::from(frame.map_point(p[0], p[1])))
                .collect();
            let labels: Vec<f32> = prompts.points.iter().map(|p| p[2]).collect();
            model.points = Some((
                Tensor::from_vec(coords, (1, k, 2), dev)?,
                Tensor::from_vec(labels, (1, k), dev)?,
            ));
        }
        model.masks = prompts.mask.clone();
        self.predict_in_frame(&model, multimask)
    }

    /// Low-resolution logits `[n, m, 4h, 4w]` upsampled, cropped and resized to the original
    /// image: `[n, m, H, W]`.
    pub fn full_resolution(&self, low_res: &Tensor) -> Result<Tensor> {
        transforms::postprocess(low_res, &self.frame()?)
    }
}
