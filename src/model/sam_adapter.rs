//! SAM-Adapter's explicit visual prompting (Chen et al., "SAM Fails to Segment Anything?",
//! ICCV 2023 workshops; `docs/sam-adapter.md`): a small network beside the frozen image encoder
//! that adds one prompt to the token grid before every block, computed from two features of the
//! image, its high-frequency component F_hfc and its patch embedding F_pe:
//!
//! `F = conv(F_hfc) + embedding_generator(F_pe)`, `P_i = shared_mlp(GELU(lightweight_mlp_i(F)))`,
//! with `c = D / 32` channels between them. The weights live under the released checkpoints'
//! names, `image_encoder.prompt_generator.*`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde::{Deserialize, Serialize};

use super::config::SamConfig;
use super::layers::{Conv2d, Linear};
use crate::ops::gelu::gelu;

/// Where the adapter's weights live in a state dict (the released checkpoints' names).
pub const WEIGHTS_PREFIX: &str = "image_encoder.prompt_generator.";

/// The adapter's width is the encoder's divided by this (`scale_factor`).
const SCALE_FACTOR: usize = 32;
/// The fraction of the spectrum's area removed as low frequencies (`freq_nums`).
const HIGH_PASS_RATE: f64 = 0.25;

/// How F_pe turns the patch embedding `[B, H, W, D]` into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum FpeLayout {
    /// Each token's own embedding (what the paper describes); for adapters trained by wesam.
    #[default]
    PerToken,
    /// The released code's reshape of the channels-last tensor as `[B, D, H·W]`: token `t`,
    /// channel `j` is element `j·H·W + t` of the flattened embedding, so each "token" gathers
    /// pieces of tokens across the image. Released checkpoints were trained so and give their
    /// numbers only with it.
    Faithful,
}

/// The adapter of one encoder (`PromptGenerator`).
#[derive(Debug, Clone)]
pub struct SamAdapter {
    embedding_generator: Linear,
    patch_conv: Conv2d,
    lightweight: Vec<Linear>,
    shared: Linear,
    layout: FpeLayout,
}

/// The adapter's width for an encoder of `dim` channels.
pub fn width(dim: usize) -> usize {
    (dim / SCALE_FACTOR).max(1)
}

impl SamAdapter {
    /// Loads the adapter of an encoder of `cfg` from `vb` (at `image_encoder.prompt_generator`).
    pub fn new(cfg: &SamConfig, layout: FpeLayout, vb: VarBuilder) -> Result<Self> {
        let (dim, p) = (cfg.encoder_embed_dim, cfg.vit_patch_size);
        let c = width(dim);
        Ok(Self {
            embedding_generator: Linear::new(dim, c, vb.pp("embedding_generator"))?,
            patch_conv: Conv2d::new((3, c, p), (p, 0, true), vb.pp("prompt_generator.proj"))?,
            lightweight: (0..cfg.encoder_depth)
                .map(|i| Linear::new(c, c, vb.pp(format!("lightweight_mlp_{i}.0"))))
                .collect::<Result<_>>()?,
            shared: Linear::new(c, dim, vb.pp("shared_mlp"))?,
            layout,
        })
    }

    /// Reads F_pe in `layout` from now on.
    pub fn set_layout(&mut self, layout: FpeLayout) {
        self.layout = layout;
    }

    /// One prompt `[B, H, W, D]` per block, from the patch embedding `x` `[B, H, W, D]` (before
    /// the position embedding) and the encoder's input `image` `[B, 3, H·p, W·p]`.
    pub fn prompts(&self, x: &Tensor, image: &Tensor) -> Result<Vec<Tensor>> {
        let (b, h, w, d) = x.dims4()?;
        let fpe = match self.layout {
            FpeLayout::PerToken => x.reshape((b, h * w, d))?,
            FpeLayout::Faithful => x.contiguous()?.reshape((b, d, h * w))?.transpose(1, 2)?,
        };
        let fpe = self.embedding_generator.forward(&fpe)?;
        let hfc = self.patch_conv.forward(&high_frequency(image)?)?;
        let hfc = hfc.flatten_from(2)?.transpose(1, 2)?;
        let f = (hfc + fpe)?;
        self.lightweight
            .iter()
            .map(|tune| {
                let p = self.shared.forward(&gelu(&tune.forward(&f)?)?)?;
                p.reshape((b, h, w, d))
            })
            .collect()
    }
}

/// Fresh adapter weights for an encoder of `cfg`, under their checkpoint names, as the released
/// code initialises them: linear weights normal with std 0.02, convolution weights normal with
/// std `√(2 / fan_out)`, biases zero; drawn from `seed`.
pub fn initial_weights(
    cfg: &SamConfig,
    seed: u64,
    dev: &candle_core::Device,
) -> Result<Vec<(String, Tensor)>> {
    use rand::{rngs::StdRng, SeedableRng};
    use rand_distr::{Distribution, Normal};
    let (dim, p) = (cfg.encoder_embed_dim, cfg.vit_patch_size);
    let c = width(dim);
    let mut shapes = vec![
        ("embedding_generator".to_string(), vec![c, dim], 0.02),
        (
            "prompt_generator.proj".to_string(),
            vec![c, 3, p, p],
            (2.0 / (p * p * c) as f64).sqrt(),
        ),
    ];
    for i in 0..cfg.encoder_depth {
        shapes.push((format!("lightweight_mlp_{i}.0"), vec![c, c], 0.02));
    }
    shapes.push(("shared_mlp".to_string(), vec![dim, c], 0.02));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut weights = Vec::new();
    for (name, shape, std) in shapes {
        let normal = Normal::new(0.0, std).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng) as f32).collect();
        let prefix = format!("{WEIGHTS_PREFIX}{name}");
        weights.push((
            format!("{prefix}.weight"),
            Tensor::from_vec(values, shape.as_slice(), dev)?,
        ));
        weights.push((
            format!("{prefix}.bias"),
            Tensor::zeros(shape[0], DType::F32, dev)?,
        ));
    }
    Ok(weights)
}

/// F_hfc: the image without its low frequencies, `|Re(IFFT(FFT(x) · (1 − M)))|` per channel,
/// where `M` is the centred square of the shifted spectrum of half-side
/// `⌊√(H·W·0.25) / 2⌋` (256 for 1024²): in unshifted indices, the frequencies `k ∈ [−l, l)` on
/// both axes. Computed on the host with `rustfft` (no gradient flows into it: nothing before it
/// is trained); `[B, 3, H, W]` in, the same shape out, on the input's device.
pub fn high_frequency(image: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = image.dims4()?;
    let line = ((h * w) as f64 * HIGH_PASS_RATE).sqrt() as usize / 2;
    let low = |k: usize, n: usize| k < line || k + line >= n;
    let values = image
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut planner = FftPlanner::<f64>::new();
    let (row, col) = (planner.plan_fft_forward(w), planner.plan_fft_forward(h));
    let (row_inv, col_inv) = (planner.plan_fft_inverse(w), planner.plan_fft_inverse(h));
    let scale = 1.0 / (h * w) as f64;
    let mut out = Vec::with_capacity(values.len());
    let mut column = vec![Complex::default(); h];
    for plane in values.chunks_exact(h * w).take(b * c) {
        let mut x: Vec<Complex<f64>> = plane.iter().map(|&v| Complex::new(v as f64, 0.0)).collect();
        let mut columns = |x: &mut [Complex<f64>], fft: &dyn rustfft::Fft<f64>| {
            for j in 0..w {
                for i in 0..h {
                    column[i] = x[i * w + j];
                }
                fft.process(&mut column);
                for i in 0..h {
                    x[i * w + j] = column[i];
                }
            }
        };
        row.process(&mut x);
        columns(&mut x, col.as_ref());
        for i in (0..h).filter(|&i| low(i, h)) {
            for j in (0..w).filter(|&j| low(j, w)) {
                x[i * w + j] = Complex::default();
            }
        }
        columns(&mut x, col_inv.as_ref());
        row_inv.process(&mut x);
        out.extend(x.iter().map(|v| (v.re * scale).abs() as f32));
    }
    Tensor::from_vec(out, (b, c, h, w), image.device())?.to_dtype(image.dtype())
}
