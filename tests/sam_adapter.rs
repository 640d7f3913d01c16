//! SAM-Adapter (explicit visual prompting) against the fixture that
//! `scripts/make_sam_adapter_fixture.py` builds in PyTorch from the specification: the
//! high-frequency component, the prompt-free low-resolution logits for both F_pe layouts, and
//! the gradient of SAM-Adapter's BCE + IoU loss with respect to every adapter, mask-decoder and
//! `no_mask_embed` tensor. Tolerances: 1e-5 for F_hfc, 1e-4 for outputs, 1e-3 of each tensor's
//! largest gradient (at least 1e-7).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::assert_close;
use wesam::adapt::losses::bce_iou;
use wesam::model::checkpoint::StateDict;
use wesam::model::sam_adapter::{high_frequency, FpeLayout};
use wesam::model::{Prompts, Sam};
use wesam::ops::resize::{resize_2d, Interpolation};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sam_adapter")
        .join(name)
}

fn cases() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("cases.safetensors"), &common::device()).unwrap()
}

/// The fixture model with F_pe in `layout`.
fn model(layout: FpeLayout) -> Sam {
    let dev = common::device();
    let state = StateDict::load(&fixture("model.safetensors"), &dev).unwrap();
    let mut config = state.config.clone().unwrap();
    config.sam_adapter = Some(layout);
    Sam::from_state_dict(state, Some(&config), None, &dev).unwrap()
}

/// Prompt-free low-resolution logits `[B, 1, 4h, 4w]` and IoU predictions `[B, 1]`.
fn prompt_free(sam: &Sam, image: &Tensor) -> (Tensor, Tensor) {
    let embeddings = sam.encode(image, None).unwrap();
    let (mut low, mut iou) = (Vec::new(), Vec::new());
    for i in 0..embeddings.dim(0).unwrap() {
        let e = embeddings.narrow(0, i, 1).unwrap();
        let (l, s) = sam.decode(&e, &Prompts::default(), false).unwrap();
        low.push(l);
        iou.push(s);
    }
    (Tensor::cat(&low, 0).unwrap(), Tensor::cat(&iou, 0).unwrap())
}

#[test]
fn the_high_frequency_component_is_the_specification_s() {
    let c = cases();
    assert_close(
        "hfc",
        &high_frequency(&c["image"]).unwrap(),
        &c["hfc"],
        1e-5,
    );
}

#[test]
fn a_released_checkpoint_loads_prompt_free_with_the_faithful_layout() {
    let dev = Device::Cpu;
    let state = StateDict::load(&fixture("model.safetensors"), &dev).unwrap();
    assert_eq!(
        state.resolve_config(None).unwrap().sam_adapter,
        Some(FpeLayout::Faithful)
    );
    let sam = Sam::from_state_dict(state, None, None, &dev).unwrap();
    assert!(!sam.prompt_encoder.takes_prompts());
    // A box cannot be embedded by a model without a prompt encoder.
    let boxes = Prompts {
        boxes: Some(Tensor::new(&[[1f32, 1., 9., 9.]], &dev).unwrap()),
        ..Default::default()
    };
    let e = sam.encode(
        &cases()["image"]
            .narrow(0, 0, 1)
            .unwrap()
            .to_device(&dev)
            .unwrap(),
        None,
    );
    let err = sam
        .decode(&e.unwrap(), &boxes, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prompt-free"), "{err}");
}

#[test]
fn prompt_free_logits_match_for_both_layouts() {
    let c = cases();
    for (layout, name) in [
        (FpeLayout::Faithful, "faithful"),
        (FpeLayout::PerToken, "per_token"),
    ] {
        let (low, iou) = prompt_free(&model(layout), &c["image"]);
        assert_close(
            &format!("{name} low_res"),
            &low,
            &c[&format!("{name}.low_res")],
            1e-4,
        );
        assert_close(
            &format!("{name} iou"),
            &iou,
            &c[&format!("{name}.iou")],
            1e-4,
        );
    }
    // The layouts differ: a wrong one is caught.
    let d = common::max_abs_diff(&c["faithful.low_res"], &c["per_token.low_res"]);
    assert!(d > 0.1, "the two layouts give nearly the same logits ({d})");
}

#[test]
fn gradients_of_the_bce_iou_loss_match_for_every_trained_tensor() {
    let c = cases();
    for (layout, name) in [
        (FpeLayout::Faithful, "faithful"),
        (FpeLayout::PerToken, "per_token"),
    ] {
        let sam = model(layout);
        let trained = sam
            .trainable(|n| {
                n.starts_with("image_encoder.prompt_generator.")
                    || n.starts_with("mask_decoder.")
                    || n == "prompt_encoder.no_mask_embed.weight"
            })
            .unwrap();
        let (low, _) = prompt_free(&trained.model, &c["image"]);
        let size = sam.input_size;
        let logits = resize_2d(&low, size, size, Interpolation::Bilinear).unwrap();
        let loss = bce_iou(&logits, &c["target"]).unwrap();
        assert_close(
            &format!("{name} loss"),
            &loss.reshape(1).unwrap(),
            &c[&format!("{name}.loss")],
            1e-5,
        );
        let grads = loss.backward().unwrap();
        let mut checked = 0;
        for (key, var) in &trained.vars {
            let released = match key.as_str() {
                "prompt_encoder.no_mask_embed.weight" => "no_mask_embed.weight",
                k => k,
            };
            let want = &c[&format!("{name}.grad.{released}")];
            let scale = common::max_abs(want);
            let got = match grads.get(var.as_tensor()) {
                Some(g) => g.clone(),
                None => var.as_tensor().zeros_like().unwrap(),
            };
            // A key bias's gradient is zero but for rounding (softmax ignores a shift): the
            // floor of 1e-7 absorbs that float noise.
            assert_close(
                &format!("{name} grad {key}"),
                &got,
                want,
                1e-3 * scale.max(1e-4),
            );
            checked += 1;
        }
        // 4 + 3 adapter layers' weights and biases, the decoder, no_mask_embed.
        assert!(checked > 20, "only {checked} tensors checked");
    }
}

/// A released-layout checkpoint loads, saves and loads again with the same keys and tensors
/// (so the authors' code loads what wesam writes), and the saved file records the layout.
#[test]
fn a_released_layout_checkpoint_round_trips() {
    let dev = Device::Cpu;
    let path = fixture("model.safetensors");
    let sam = Sam::load(&path, None, None, &dev).unwrap();
    let dir = common::scratch();
    let saved = dir.path().join("saved.safetensors");
    sam.save(&saved, None).unwrap();
    let (a, b) = (
        candle_core::safetensors::load(&path, &dev).unwrap(),
        candle_core::safetensors::load(&saved, &dev).unwrap(),
    );
    let keys = |m: &HashMap<String, Tensor>| {
        let mut k: Vec<String> = m.keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&a), keys(&b));
    common::assert_same_weights(&path, &saved, "round trip");
    let back = StateDict::load(&saved, &dev).unwrap();
    assert_eq!(back.config.unwrap().sam_adapter, Some(FpeLayout::Faithful));
}

/// `wesam predict --prompt none` segments with a released-layout checkpoint and writes its
/// logits; a prompt beside it is refused, and a box alone is refused by a prompt-free model.
#[test]
fn predict_runs_prompt_free() {
    let dir = common::scratch();
    let image = dir.path().join("image.png");
    image::RgbImage::from_fn(80, 60, |x, y| image::Rgb([x as u8 * 3, y as u8 * 4, 90]))
        .save(&image)
        .unwrap();
    let logits = dir.path().join("logits.npy");
    let model = fixture("model.safetensors");
    let (model, image) = (model.to_str().unwrap(), image.to_str().unwrap());
    let o = common::wesam(&[
        "predict",
        "--checkpoint",
        model,
        "--image",
        image,
        "--prompt",
        "none",
        "--logits",
        logits.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let low = Tensor::read_npy(&logits).unwrap();
    assert_eq!(low.dims(), &[32, 32]);
    let o = common::wesam(&[
        "predict",
        "--checkpoint",
        model,
        "--image",
        image,
        "--prompt",
        "none",
        "--box",
        "1,1,9,9",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    let o = common::wesam(&[
        "predict",
        "--checkpoint",
        model,
        "--image",
        image,
        "--box",
        "1,1,9,9",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("--prompt none"),
        "{}",
        common::stderr(&o)
    );
}

/// Prompt-free evaluation scores one mask per image against the union of its instances;
/// prompt-free training of SAM-Adapter's set writes its weights under the released names; a
/// prompt-free run cannot select by weak labels it does not have.
#[test]
fn eval_and_train_run_prompt_free() {
    let root = common::scratch();
    let data = root.path().join("data");
    common::make_dataset(&data, 6);
    let model = fixture("model.safetensors");
    let (model, data) = (model.to_str().unwrap(), data.to_str().unwrap());
    let o = common::wesam(&[
        "eval",
        "--checkpoint",
        model,
        "--dataset",
        data,
        "--split",
        "all",
        "--prompt",
        "none",
        "--json",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["images"], 6, "{report}");
    assert_eq!(
        report["instances"], 6,
        "one merged object per image: {report}"
    );
    // Prompt-free evaluation reports the camouflage and shadow metrics too.
    let sod = &report["sod"];
    for (key, top) in [
        ("s_measure", 1.0),
        ("e_measure", 1.0),
        ("weighted_f", 1.0),
        ("mae", 1.0),
        ("ber", 100.0),
    ] {
        let v = sod[key].as_f64().unwrap_or(f64::NAN);
        assert!((0.0..=top).contains(&v), "{key} {v}: {report}");
    }
    let o = common::wesam(&[
        "eval",
        "--checkpoint",
        model,
        "--dataset",
        data,
        "--split",
        "all",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        common::stderr(&o).contains("prompt-free"),
        "{}",
        common::stderr(&o)
    );

    let out = root.path().join("run");
    let o = common::wesam(&[
        "train",
        "--checkpoint",
        model,
        "--dataset",
        data,
        "--prompt",
        "none",
        "--trainable",
        "sam-adapter",
        "--epochs",
        "1",
        "--eval-split",
        "train",
        "--lr",
        "1e-3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("selection = \"last\""), "{config}");
    let merged =
        candle_core::safetensors::load(out.join("merged.safetensors"), &Device::Cpu).unwrap();
    let released =
        candle_core::safetensors::load(fixture("model.safetensors"), &Device::Cpu).unwrap();
    let mut a: Vec<&String> = merged.keys().collect();
    let mut b: Vec<&String> = released.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the released key names");
    let moved = |k: &str| common::max_abs_diff(&merged[k], &released[k]) > 0.0;
    assert!(
        moved("no_mask_embed.weight") && moved("image_encoder.prompt_generator.shared_mlp.weight")
    );
    assert!(
        !moved("image_encoder.patch_embed.proj.weight"),
        "the encoder is frozen"
    );

    let o = common::wesam(&[
        "adapt",
        "--checkpoint",
        model,
        "--dataset",
        data,
        "--prompt",
        "none",
        "--select",
        "weak-label",
        "--out",
        root.path().join("refused").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("--prompt none"),
        "{}",
        common::stderr(&o)
    );
}

/// The value in `metrics.csv`'s text at a row (0 the header) and column.
fn metrics_column(metrics: &str, row: usize, name: &str) -> f64 {
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let i = header.iter().position(|h| *h == name).unwrap();
    let cell = metrics.lines().nth(row).unwrap().split(',').nth(i).unwrap();
    cell.parse().unwrap()
}

/// `configs/sam-adapter.toml` trains SAM-Adapter's set prompt-free with its BCE + IoU loss and
/// its per-epoch cosine rate, and a run that crashed and resumed ends with the same weights;
/// `--loss balanced-bce` trains with the balanced BCE alone.
#[test]
fn the_sam_adapter_recipe_trains_and_resumes_bit_for_bit() {
    let root = common::scratch();
    let data = root.path().join("data");
    common::make_dataset(&data, 6);
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/sam-adapter.toml");
    let model = fixture("model.safetensors");
    let run = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--config",
            config.to_str().unwrap(),
            "--checkpoint",
            model.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--epochs",
            "2",
            "--eval-split",
            "train",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        common::wesam(&args)
    };
    let full = root.path().join("full");
    let o = run(&full, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let metrics = std::fs::read_to_string(full.join("metrics.csv")).unwrap();
    let column = |row: usize, name: &str| metrics_column(&metrics, row, name);
    assert!(
        column(2, "bce") > 0.0 && column(2, "soft_iou_loss") > 0.0,
        "{metrics}"
    );
    assert_eq!(column(2, "focal"), 0.0, "{metrics}");
    // Epoch 1 at 2e-4, epoch 2 halfway down the cosine of two epochs.
    assert!((column(2, "lr") - 2e-4).abs() < 1e-12, "{metrics}");
    let half = 1e-7 + (2e-4 - 1e-7) / 2.0;
    assert!((column(3, "lr") - half).abs() < 1e-12, "{metrics}");

    let crashed = root.path().join("crashed");
    let o = run(
        &crashed,
        &["--checkpoint-every", "1", "--crash-after-steps", "2"],
    );
    assert!(!o.status.success());
    let o = common::wesam(&["train", "--resume", crashed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    common::assert_same_weights(
        &full.join("merged.safetensors"),
        &crashed.join("merged.safetensors"),
        "resumed",
    );

    let balanced = root.path().join("balanced");
    let o = run(&balanced, &["--loss", "balanced-bce"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let metrics = std::fs::read_to_string(balanced.join("metrics.csv")).unwrap();
    let bce = metrics_column(&metrics, 2, "bce");
    assert!(bce.is_finite() && bce > 0.0, "{metrics}");
    assert_eq!(
        metrics_column(&metrics, 2, "soft_iou_loss"),
        0.0,
        "{metrics}"
    );
}
