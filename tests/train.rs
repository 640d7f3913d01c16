//! `wesam train` end to end on a generated dataset: decoder training changes the decoder and
//! nothing else and resumes bit for bit after a crash; a model trained from scratch learns,
//! changes every parameter and loads back with its architecture; `--train-names` trains the named
//! weights only; bad combinations are errors.

mod common;

use std::path::Path;
use std::process::Output;

use candle_core::{Device, Tensor};
use common::{assert_close, fixture_dir, make_dataset, max_abs_diff, stderr, wesam};
use wesam::model::{Sam, SamConfig};

/// `wesam train` on `data` into `out` with box prompts and low-resolution losses.
fn train(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--dataset",
        data.to_str().unwrap(),
        "--prompt",
        "box",
        "--epochs",
        epochs,
        "--loss-resolution",
        "low",
        "--checkpoint-every",
        "2",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    wesam(&args)
}

fn tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn decoder_training_changes_only_the_decoder_and_resumes_bit_for_bit() {
    let root = common::scratch();
    let data = root.path().join("data-decoder");
    make_dataset(&data, 8);
    let model = fixture_dir().join("model.safetensors");
    let model = model.to_str().unwrap();
    let args = [
        "--checkpoint",
        model,
        "--trainable",
        "decoder",
        "--lr",
        "1e-2",
    ];

    let full = root.path().join("decoder-full");
    let o = train(&data, &full, "2", &args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["adapted"]["miou"].as_f64().is_some());
    assert!(full.join("merged.safetensors").exists());
    assert!(
        !full.join("adapter.safetensors").exists(),
        "no adapters are trained"
    );
    let config = std::fs::read_to_string(full.join("config.toml")).unwrap();
    assert!(
        config.contains("objective = \"supervised\"") && config.contains("trainable = \"decoder\"")
    );

    let base = tensors(&fixture_dir().join("model.safetensors"));
    let merged = tensors(&full.join("merged.safetensors"));
    assert_eq!(base.len(), merged.len());
    for (k, v) in &base {
        let d = max_abs_diff(&merged[k], v);
        if k.starts_with("mask_decoder.") {
            assert!(d > 0.0, "{k} did not change");
        } else {
            assert_eq!(d, 0.0, "{k} changed but is frozen");
        }
    }

    // Crash after 3 steps (last checkpoint at step 2), resume: the same weights, bit for bit.
    let crashed = root.path().join("decoder-crashed");
    let mut crash_args = args.to_vec();
    crash_args.extend(["--crash-after-steps", "3"]);
    let o = train(&data, &crashed, "2", &crash_args);
    assert!(!o.status.success());
    let o = wesam(&["adapt", "--resume", crashed.to_str().unwrap()]);
    assert!(!o.status.success(), "a train run resumed by adapt");
    assert!(stderr(&o).contains("wesam train"), "{}", stderr(&o));
    let o = wesam(&["train", "--resume", crashed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = tensors(&crashed.join("merged.safetensors"));
    for (k, v) in &merged {
        assert_close(&format!("resumed {k}"), &resumed[k], v, 0.0);
    }
}

/// `--train-names`: exactly the weights whose official names contain one of the strings change.
#[test]
fn named_training_changes_only_the_named_weights() {
    let root = common::scratch();
    let data = root.path().join("data-named");
    make_dataset(&data, 4);
    let model = fixture_dir().join("model.safetensors");
    let out = root.path().join("named");
    let names = ["patch_embed", "image_encoder.blocks.0.mlp"];
    let o = train(
        &data,
        &out,
        "1",
        &[
            // Four images leave the test split empty, and an empty evaluation is an error.
            "--eval-split",
            "train",
            "--checkpoint",
            model.to_str().unwrap(),
            "--train-names",
            &names.join(","),
            "--lr",
            "1e-2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("trainable = \"named\"") && config.contains("patch_embed"));
    let base = tensors(&model);
    let merged = tensors(&out.join("merged.safetensors"));
    let mut trained = 0;
    for (k, v) in &base {
        let d = max_abs_diff(&merged[k], v);
        if names.iter().any(|n| k.contains(n)) {
            assert!(d > 0.0, "{k} did not change");
            trained += 1;
        } else {
            assert_eq!(d, 0.0, "{k} changed but is not named");
        }
    }
    assert!(
        trained >= 6,
        "patch embedding and one MLP: {trained} weights"
    );
}

/// A small architecture that trains in seconds.
const SMALL: &str = "encoder_embed_dim = 32
encoder_depth = 2
encoder_num_heads = 2
encoder_global_attn_indexes = [1]
prompt_embed_dim = 32
image_size = 64
vit_patch_size = 8
window_size = 4
mlp_ratio = 2.0
mask_in_chans = 8
decoder_depth = 1
decoder_mlp_dim = 64
decoder_num_heads = 2
iou_head_depth = 2
iou_head_hidden_dim = 32
num_multimask_outputs = 3
";

#[test]
fn training_from_scratch_learns_every_parameter_and_loads_back() {
    let root = common::scratch();
    let data = root.path().join("data-scratch");
    make_dataset(&data, 8);
    let cfg_path = root.path().join("small.toml");
    std::fs::write(&cfg_path, SMALL).unwrap();
    let out = root.path().join("scratch");
    let o = train(
        &data,
        &out,
        "6",
        &[
            "--init",
            "random",
            "--model-config",
            cfg_path.to_str().unwrap(),
            "--trainable",
            "all",
            "--optimizer",
            "adamw",
            "--weight-decay",
            "0",
            "--lr",
            "2e-3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // The training loss falls: last epoch below the first.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let losses: Vec<f64> = metrics
        .lines()
        .skip(2)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert_eq!(losses.len(), 6, "{metrics}");
    assert!(losses[5] < 0.8 * losses[0], "loss did not fall: {losses:?}");

    // The merged file carries the architecture; every parameter moved from the seeded random
    // initialisation except those that box prompts and single-mask output give no gradient (as
    // in PyTorch): the prompt encoder's mask input path, its point-label embeddings and
    // not-a-point token, the hypernetworks of the multimask outputs (the decoder computes every
    // mask and keeps the first), and the fixed Fourier matrix (a buffer).
    let dev = Device::Cpu;
    let small: SamConfig = toml::from_str(SMALL).unwrap();
    let trained = Sam::load(&out.join("merged.safetensors"), None, None, &dev).unwrap();
    assert_eq!(trained.config, small);
    let init = Sam::random(&small, None, 1337, &dev).unwrap();
    let no_gradient = |k: &str| {
        k.starts_with("prompt_encoder.mask_downscaling.")
            || k.starts_with("prompt_encoder.point_embeddings.0.")
            || k.starts_with("prompt_encoder.point_embeddings.1.")
            || k.starts_with("prompt_encoder.not_a_point_embed.")
            || k.ends_with("positional_encoding_gaussian_matrix")
            || k.starts_with("mask_decoder.output_hypernetworks_mlps.")
                && !k.starts_with("mask_decoder.output_hypernetworks_mlps.0.")
    };
    let mut unexpected = Vec::new();
    for (k, v) in &init.weights {
        let changed = max_abs_diff(&trained.weights[k], v) > 0.0;
        if changed == no_gradient(k) {
            unexpected.push(format!("{k}: changed = {changed}"));
        }
    }
    unexpected.sort();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
}

/// `wesam train` with `args` into a fresh run directory `name` under `root` fails, and its error
/// names every one of `needles`.
/// `--multimask` trains SAM's three outputs on single-point prompts: the hypernetworks of
/// outputs 1-3 move (those chosen as some instance's best) and that of output 0 (which the
/// three-output decode drops) does not, the other way round from single-output training; the
/// flag is refused with box prompts.
#[test]
fn multimask_training_trains_the_three_outputs() {
    let root = common::scratch();
    let data = root.path().join("data");
    make_dataset(&data, 4);
    let model = fixture_dir().join("model.safetensors");
    let run = |name: &str, extra: &[&str]| {
        let out = root.path().join(name);
        let mut args = vec![
            "train",
            "--dataset",
            data.to_str().unwrap(),
            "--checkpoint",
            model.to_str().unwrap(),
            "--prompt",
            "point",
            "--positive-points",
            "1",
            "--negative-points",
            "0",
            "--trainable",
            "decoder",
            "--epochs",
            "1",
            "--lr",
            "1e-2",
            "--weight-decay",
            "0",
            "--loss-resolution",
            "low",
            "--eval-split",
            "train",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let o = wesam(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        tensors(&out.join("merged.safetensors"))
    };
    let base = tensors(&model);
    let moved = |w: &std::collections::HashMap<String, Tensor>, output: usize| {
        let k = format!("mask_decoder.output_hypernetworks_mlps.{output}.layers.0.weight");
        max_abs_diff(&w[&k], &base[&k]) > 0.0
    };
    // Only an instance's best output trains, so not every one of the three need move.
    let multi = run("multi", &["--multimask"]);
    assert!(!moved(&multi, 0) && (1..4).any(|o| moved(&multi, o)));
    let single = run("single", &[]);
    assert!(moved(&single, 0) && !(1..4).any(|o| moved(&single, o)));

    assert_train_fails(
        root.path(),
        &data,
        "multimask-box",
        &["--checkpoint", model.to_str().unwrap(), "--multimask"],
        &["train.multimask", "single-point"],
    );
}

fn assert_train_fails(root: &Path, data: &Path, name: &str, args: &[&str], needles: &[&str]) {
    let o = train(data, &root.join(name), "1", args);
    assert!(!o.status.success(), "{name}: {args:?} succeeded");
    let e = stderr(&o);
    assert!(needles.iter().all(|n| e.contains(n)), "{name}: {e}");
}

#[test]
fn bad_combinations_are_clear_errors() {
    let root = common::scratch();
    let data = root.path().join("data-bad");
    make_dataset(&data, 2);
    assert_train_fails(
        root.path(),
        &data,
        "bad1",
        &["--init", "random"],
        &["--model-config"],
    );

    let model = fixture_dir().join("model.safetensors");
    let model = model.to_str().unwrap();
    let decoder_ema = [
        "--checkpoint",
        model,
        "--trainable",
        "decoder",
        "--ema",
        "0.9",
    ];
    assert_train_fails(root.path(), &data, "bad2", &decoder_ema, &["EMA"]);

    let unmatched = ["--checkpoint", model, "--train-names", "no_such_weight"];
    assert_train_fails(
        root.path(),
        &data,
        "bad-names",
        &unmatched,
        &["no_such_weight"],
    );

    let both = [
        "--checkpoint",
        model,
        "--trainable",
        "all",
        "--train-names",
        "patch_embed",
    ];
    assert_train_fails(
        root.path(),
        &data,
        "bad-names-all",
        &both,
        &["--train-names"],
    );

    let names_cfg = root.path().join("names.toml");
    std::fs::write(&names_cfg, "[model]\ntrain_names = [\"patch_embed\"]\n").unwrap();
    let unnamed = [
        "--config",
        names_cfg.to_str().unwrap(),
        "--checkpoint",
        model,
    ];
    assert_train_fails(
        root.path(),
        &data,
        "bad-names-cfg",
        &unnamed,
        &["\"named\""],
    );

    let bad_cfg = root.path().join("bad.toml");
    std::fs::write(&bad_cfg, SMALL.replace("encoder_depth", "encoder_dept")).unwrap();
    let random = [
        "--init",
        "random",
        "--model-config",
        bad_cfg.to_str().unwrap(),
    ];
    assert_train_fails(
        root.path(),
        &data,
        "bad3",
        &random,
        &["bad.toml", "encoder_dept"],
    );
}
