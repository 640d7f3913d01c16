//! Shared helpers of the integration tests: the committed parity fixture and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use image::{GrayImage, Luma, Rgb, RgbImage};

/// `tests/fixtures/tiny`, written by `scripts/make_parity_fixture.py` with the official package.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// A fresh, empty scratch directory for one test, removed with everything in it when the
/// returned guard is dropped: keep it bound for as long as its paths are used.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wesam-test-")
        .tempdir()
        .unwrap()
}

/// The device the parity tests run on: `WESAM_TEST_DEVICE` (`cpu`, `cuda` or `metal`; the CPU
/// when unset), so that a machine with a GPU checks its path against the same fixtures
/// (`scripts/gpu_check.sh`).
pub fn device() -> Device {
    let name = std::env::var("WESAM_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let kind: wesam::device::DeviceKind = serde_json::from_value(serde_json::json!(name))
        .unwrap_or_else(|_| panic!("WESAM_TEST_DEVICE={name:?}: expected cpu, cuda or metal"));
    kind.open()
        .unwrap_or_else(|e| panic!("WESAM_TEST_DEVICE={name}: {e}"))
}

/// The expected inputs and outputs of `cases.safetensors`, on the test [`device`].
pub fn cases() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("cases.safetensors"), &device()).unwrap()
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts that the weight file `actual` holds every tensor of `expected`, bit for bit (`what`
/// names the comparison in the failure).
pub fn assert_same_weights(expected: &Path, actual: &Path, what: &str) {
    let load = |p: &Path| candle_core::safetensors::load(p, &Device::Cpu).unwrap();
    let (e, a) = (load(expected), load(actual));
    for (k, v) in &e {
        let t = a
            .get(k)
            .unwrap_or_else(|| panic!("{what}: no {k} in {}", actual.display()));
        assert_eq!(max_abs_diff(v, t), 0.0, "{what}: {k}");
    }
}

/// Largest absolute value of a tensor.
pub fn max_abs(a: &Tensor) -> f32 {
    a.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Asserts `|a - b| <= tol` everywhere, naming the comparison.
pub fn assert_close(what: &str, a: &Tensor, b: &Tensor, tol: f32) {
    let d = max_abs_diff(a, b);
    assert!(d <= tol, "{what}: max |diff| = {d:e} > {tol:e}");
    eprintln!("{what}: max |diff| = {d:.2e}");
}

/// dice + BCE of low-res logits `x` against `t`, as `scripts/make_parity_fixture.py` computes
/// the loss whose LoRA gradients it records.
pub fn dice_bce(x: &Tensor, t: &Tensor) -> Tensor {
    let p = candle_nn::ops::sigmoid(x).unwrap();
    let inter = (&p * t).unwrap().sum_all().unwrap();
    let denom = ((p.sum_all().unwrap() + t.sum_all().unwrap()).unwrap() + 1.0).unwrap();
    let dice = (1.0 - ((inter * 2.0).unwrap() + 1.0).unwrap().div(&denom).unwrap()).unwrap();
    // BCE with logits, stable form: max(x, 0) - x t + log(1 + exp(-|x|)).
    let bce = (x.relu().unwrap() - (x * t).unwrap()).unwrap();
    let bce = (bce
        + (x.abs().unwrap().neg().unwrap().exp().unwrap() + 1.0)
            .unwrap()
            .log()
            .unwrap())
    .unwrap();
    (dice + bce.mean_all().unwrap()).unwrap()
}

/// A `folder` dataset of `n` 96x80 images with one or two bright discs each.
pub fn make_dataset(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("masks")).unwrap();
    for i in 0..n {
        let (cx, cy, r) = (30.0 + 5.0 * i as f32, 35.0, 12.0 + (i % 3) as f32);
        let inside = |x: u32, y: u32, cx: f32, cy: f32, r: f32| {
            (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2) <= r * r
        };
        let img = RgbImage::from_fn(96, 80, |x, y| {
            if inside(x, y, cx, cy, r) {
                Rgb([220, 120, 60])
            } else if i % 2 == 0 && inside(x, y, 75.0, 60.0, 8.0) {
                Rgb([60, 200, 90])
            } else {
                Rgb([30 + (x / 3) as u8, 40, 60 + (y / 2) as u8])
            }
        });
        let mask = GrayImage::from_fn(96, 80, |x, y| {
            Luma([if inside(x, y, cx, cy, r) {
                1
            } else if i % 2 == 0 && inside(x, y, 75.0, 60.0, 8.0) {
                2
            } else {
                0
            }])
        });
        img.save(dir.join(format!("images/{i:03}.png"))).unwrap();
        mask.save(dir.join(format!("masks/{i:03}.png"))).unwrap();
    }
}

/// Runs the built `wesam` binary as a user would.
pub fn wesam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wesam"))
        .args(args)
        .output()
        .unwrap()
}

/// A command's standard error, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Image `index` of the generated source domain (seed 5) at 64², with its instances.
pub fn synth_sample(index: u64) -> wesam::data::Sample {
    use wesam::data::mask::{bounding_box, instances_by_value};
    use wesam::data::synth::{render, Domain};
    let (image, labels) = render(Domain::Source, 5, index, 64).unwrap();
    let instances = instances_by_value(&labels)
        .into_iter()
        .filter_map(|mask| {
            let bbox = bounding_box(&mask)?;
            Some(wesam::data::Instance { mask, bbox })
        })
        .collect();
    wesam::data::Sample {
        id: index.to_string(),
        image_path: "<generated>".into(),
        image,
        instances,
    }
}

/// The tiny fixture model and rank-4 LoRA adapters (seed 3) whose B is random instead of zero,
/// so that every adapter tensor has a gradient.
pub fn tiny_sam_with_lora(dev: &Device) -> (wesam::model::Sam, wesam::model::Lora) {
    use wesam::model::{Lora, LoraConfig, Sam};
    let sam = Sam::load(&fixture_dir().join("model.safetensors"), None, None, dev).unwrap();
    let lora = Lora::new(&sam.config, &LoraConfig::default(), 3, dev).unwrap();
    for (name, v) in lora.named_vars() {
        if name.ends_with("b_q") || name.ends_with("b_v") {
            v.set(&(v.as_tensor().randn_like(0.0, 0.05).unwrap()))
                .unwrap();
        }
    }
    (sam, lora)
}
