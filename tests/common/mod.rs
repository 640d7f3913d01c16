//! Shared helpers of the integration tests: the committed parity fixture and comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

/// `tests/fixtures/tiny`, written by `scripts/make_parity_fixture.py` with the official package.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// The expected inputs and outputs of `cases.safetensors`.
pub fn cases() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_dir().join("cases.safetensors"), &Device::Cpu).unwrap()
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
