//! `wesam bench`: wall time and peak memory of the encoder's passes and of a whole WeSAM
//! training step, one pass per process, so that `scripts/compare_encoder.py` can put them beside
//! PyTorch's measured the same way.

use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Tensor};
use candle_nn::Optimizer;
use image::{GrayImage, Luma, Rgb, RgbImage};
use serde::Serialize;

use super::choice::{choice, default_name, name};
use wesam::adapt::config::AdaptConfig;
use wesam::adapt::optim::Adam;
use wesam::adapt::step::{batch_gradients, StepModels, StepSample};
use wesam::data::{Instance, Sample};
use wesam::device::DeviceKind;
use wesam::model::{Lora, LoraConfig, ModelType, Precision, Sam, SamConfig};
use wesam::ops::{kernels, recompute, Kernels};

/// Which pass to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pass {
    /// Encoder forward without any autograd graph (the anchor / inference).
    Forward,
    /// Encoder forward and backward with LoRA on q and v; loss = mean of squared embeddings.
    LoraBackward,
    /// One WeSAM self-training step, batch 1, box prompts, losses at the input resolution:
    /// anchor and teacher on the weak view, student on the strong view, backward, Adam update.
    Step,
}

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pass: Pass,
    #[arg(long, value_parser = choice::<ModelType>(), default_value = "vit-b")]
    model_type: ModelType,
    /// Another architecture (TOML, e.g. configs/sam-tiny.toml) instead of --model-type.
    #[arg(long)]
    model_config: Option<std::path::PathBuf>,
    /// Model input size (position tables interpolated when not the checkpoint's 1024).
    #[arg(long, default_value_t = 1024)]
    image_size: usize,
    /// Timed repetitions after one warm-up; the median is reported.
    #[arg(long, alias = "steps", default_value_t = 1)]
    repeat: usize,
    /// Instances (box prompts) in the image of a `step`.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    #[arg(long)]
    json: bool,
    #[arg(long, value_parser = choice::<DeviceKind>(), default_value = default_name::<DeviceKind>())]
    device: DeviceKind,
    /// What the image encoder computes in.
    #[arg(long, value_parser = choice::<Precision>(), default_value = default_name::<Precision>())]
    precision: Precision,
    /// Keep every activation instead of recomputing each encoder block's in the backward pass
    /// (to measure what the recomputation saves).
    #[arg(long)]
    no_recompute: bool,
}

#[derive(Serialize)]
struct BenchReport {
    #[serde(rename = "impl")]
    impl_: &'static str,
    model_type: String,
    image_size: usize,
    pass: Pass,
    device: DeviceKind,
    kernels: Kernels,
    precision: Precision,
    recompute: bool,
    seconds: f64,
    /// `seconds` under the name the step benchmark reports it by.
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds_per_step: Option<f64>,
    peak_rss_mb: f64,
    base_rss_mb: f64,
}

/// A field of `/proc/self/status` in MiB (Linux only; 0 elsewhere).
fn proc_status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(field)).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the kernel's peak-RSS counter, so the peak measures the pass alone.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A generated image of `size`² with `n` discs as its instances (the step's sample).
fn disc_sample(size: usize, n: usize) -> Sample {
    let s = size as f32;
    let discs: Vec<(f32, f32, f32)> = (0..n)
        .map(|i| {
            let t = (i as f32 + 0.5) / n as f32;
            (s * (0.2 + 0.6 * t), s * (0.3 + 0.4 * (1.0 - t)), s * 0.12)
        })
        .collect();
    let inside = |x: u32, y: u32, (cx, cy, r): (f32, f32, f32)| {
        (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r
    };
    let image = RgbImage::from_fn(size as u32, size as u32, |x, y| {
        match discs.iter().position(|&d| inside(x, y, d)) {
            Some(i) => Rgb([200, 60 + 40 * i as u8, 50]),
            None => Rgb([
                (x * 255 / size as u32) as u8,
                90,
                (y * 255 / size as u32) as u8,
            ]),
        }
    });
    let instances = discs
        .iter()
        .map(|&(cx, cy, r)| Instance {
            mask: GrayImage::from_fn(size as u32, size as u32, |x, y| {
                Luma([if inside(x, y, (cx, cy, r)) { 255 } else { 0 }])
            }),
            bbox: [cx - r, cy - r, cx + r + 1.0, cy + r + 1.0],
        })
        .collect();
    Sample {
        id: "bench".into(),
        image_path: "<generated>".into(),
        image,
        instances,
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let dev = a.device.open()?;
    recompute::set_enabled(!a.no_recompute);
    let (config, model_name) = match &a.model_config {
        Some(path) => (SamConfig::from_file(path)?, path.display().to_string()),
        None => (
            SamConfig::official(a.model_type),
            a.model_type.name().to_string(),
        ),
    };
    let mut sam = Sam::random(&config, Some(a.image_size), 0, &dev)?;
    sam.image_encoder.set_precision(a.precision);
    let lora = Lora::new(&config, &LoraConfig::default(), 0, &dev)?;
    let x = Tensor::randn(0f32, 1.0, (1, 3, a.image_size, a.image_size), &dev)?;
    let cfg = AdaptConfig::default();
    let lora_vars: Vec<Tensor> = lora
        .named_vars()
        .iter()
        .map(|(_, v)| v.as_tensor().clone())
        .collect();
    let mut opt = Adam::new_named(lora.named_vars(), cfg.train.adam())?;
    opt.set_learning_rate(cfg.train.lr);
    let sample = disc_sample(a.image_size, a.instances);
    let mut step = 0u64;
    let mut run_once = || -> anyhow::Result<()> {
        match a.pass {
            Pass::Step => {
                let models = StepModels {
                    anchor: &sam,
                    model: &sam,
                    lora: Some(&lora),
                    teacher: Some(&lora),
                };
                let image = StepSample {
                    sample: sample.clone(),
                    seed: step,
                    position: 0,
                };
                step += 1;
                let (grads, _) = batch_gradients(&cfg, models, &mut [image], &lora_vars)?
                    .context("the step's image has no instance")?;
                opt.step(&grads)?;
            }
            Pass::Forward => {
                sam.encode(&x, None)?
                    .sum_all()?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?;
            }
            Pass::LoraBackward => {
                let e = sam.encode(&x, Some(&lora))?;
                let grads = e.sqr()?.mean_all()?.backward()?;
                let (_, v) = lora
                    .named_vars()
                    .into_iter()
                    .next()
                    .context("no LoRA tensors")?;
                grads
                    .get(v.as_tensor())
                    .context("LoRA tensor received no gradient")?;
            }
        }
        dev.synchronize()?;
        Ok(())
    };
    // The peak covers the warm-up too: memory freed by a first pass may stay with the allocator,
    // and a base taken after it would hide that pass's footprint.
    let base = proc_status_mb("VmRSS:");
    reset_peak_rss();
    run_once()?; // warm-up
    let mut times = Vec::with_capacity(a.repeat);
    for _ in 0..a.repeat.max(1) {
        let t = Instant::now();
        run_once()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let report = BenchReport {
        impl_: "wesam-candle",
        model_type: model_name,
        image_size: a.image_size,
        pass: a.pass,
        device: a.device,
        kernels: kernels(),
        precision: a.precision,
        recompute: recompute::enabled(),
        seconds: times[times.len() / 2],
        seconds_per_step: (a.pass == Pass::Step).then_some(times[times.len() / 2]),
        peak_rss_mb: (proc_status_mb("VmHWM:") - base).max(0.0),
        base_rss_mb: base,
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {} @{} ({}, {} kernels, {}{}): {:?} {:.2} s, peak {:.0} MiB over a base of {:.0} MiB",
            report.impl_,
            report.model_type,
            report.image_size,
            name(&report.device),
            name(&report.kernels),
            name(&report.precision),
            if report.recompute { "" } else { ", no recomputation" },
            report.pass,
            report.seconds,
            report.peak_rss_mb,
            base
        );
    }
    Ok(())
}
