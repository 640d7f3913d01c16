//! `wesam adapt` end to end on the tiny random SAM and a generated dataset: every adapter tensor
//! trains, the anchor (base weights) does not change, the merged weights are base + BA and load
//! back, a run that crashed between checkpoints and was resumed ends bit for bit where an
//! uninterrupted run ends, and the weak-label selection keeps the epoch it scores best; `--auto`
//! adds the prompt-free scores `wesam eval --prompt none --auto` gives.

mod common;

use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use common::{assert_close, fixture_dir, make_dataset, max_abs_diff};
use wesam::model::{Lora, LoraConfig, Sam};

fn adapt(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let model = fixture_dir().join("model.safetensors");
    let mut args = vec![
        "adapt",
        "--dataset",
        data.to_str().unwrap(),
        "--checkpoint",
        model.to_str().unwrap(),
        "--prompt",
        "box",
        "--epochs",
        "2",
        "--loss-resolution",
        "low",
        "--checkpoint-every",
        "2",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--lr") {
        args.extend_from_slice(&["--lr", "1e-2"]);
    }
    // The reference's anchor, which these tests were measured with (`sam` weighs it by the
    // weak labels).
    if !extra.contains(&"--anchor-weighting") {
        args.extend_from_slice(&["--anchor-weighting", "uniform"]);
    }
    args.extend_from_slice(extra);
    Command::new(env!("CARGO_BIN_EXE_wesam"))
        .args(&args)
        .output()
        .unwrap()
}

fn tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

#[test]
fn adaptation_trains_every_adapter_and_resumes_bit_for_bit() {
    let root = common::scratch();
    let data = root.path().join("data");
    make_dataset(&data, 8);

    // Uninterrupted: 2 epochs over the 7 adaptation images (6:1... folder uses 5:1 -> 7 / 1).
    let full = root.path().join("full");
    let o = adapt(&data, &full, &["--select", "last"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        report["direct"]["miou"].as_f64().is_some() && report["adapted"]["miou"].as_f64().is_some()
    );
    for f in [
        "config.toml",
        "metrics.csv",
        "checkpoint.safetensors",
        "adapter.safetensors",
        "merged.safetensors",
    ] {
        assert!(full.join(f).exists(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(full.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().count(),
        4,
        "header, direct and two epochs:\n{metrics}"
    );

    // Every adapter tensor moved away from its initialisation.
    let dev = Device::Cpu;
    let sam = Sam::load(&fixture_dir().join("model.safetensors"), None, None, &dev).unwrap();
    let init = Lora::new(&sam.config, &LoraConfig::default(), 1337, &dev).unwrap();
    let trained = Lora::load(&full.join("adapter.safetensors"), &sam.config, &dev).unwrap();
    for ((name, a), (_, b)) in init.named_vars().iter().zip(trained.named_vars()) {
        assert!(
            max_abs_diff(a.as_tensor(), b.as_tensor()) > 0.0,
            "{name} did not change"
        );
    }

    // The merged weights are base + BA and load back as a plain checkpoint; the anchor (the base
    // weights the run started from) is untouched.
    let merged_path = full.join("merged.safetensors");
    let merged = tensors(&merged_path);
    let expected = sam.merged_weights(Some(&trained)).unwrap();
    for (k, v) in &expected {
        assert_close(k, &merged[k], v, 1e-6);
    }
    let base = tensors(&fixture_dir().join("model.safetensors"));
    for (k, v) in &base {
        if !k.ends_with("attn.qkv.weight") {
            assert_close(k, &merged[k], v, 0.0);
        }
    }
    let c = common::cases();
    let reloaded = Sam::load(&merged_path, None, None, &dev).unwrap();
    assert_close(
        "merged = adapted",
        &reloaded.encode(&c["image"], None).unwrap(),
        &sam.encode(&c["image"], Some(&trained)).unwrap(),
        1e-4,
    );
    assert_close(
        "anchor",
        &sam.encode(&c["image"], None).unwrap(),
        &c["embed"],
        1e-4,
    );

    // Crash after 3 steps (the last checkpoint is at step 2), then resume.
    let crashed = root.path().join("crashed");
    let o = adapt(
        &data,
        &crashed,
        &["--select", "last", "--crash-after-steps", "3"],
    );
    assert!(!o.status.success());
    assert!(
        crashed.join("checkpoint.safetensors").exists()
            && !crashed.join("adapter.safetensors").exists()
    );
    let o = Command::new(env!("CARGO_BIN_EXE_wesam"))
        .args(["adapt", "--resume", crashed.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (
        tensors(&full.join("adapter.safetensors")),
        tensors(&crashed.join("adapter.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    for (k, v) in &a {
        assert_close(&format!("resumed {k}"), &b[k], v, 0.0);
    }
}

/// A batch's gradients, which `batch_gradients` takes image by image on parallel threads, equal
/// those of the batch's summed loss differentiated as one graph, for every adapter tensor.
#[test]
fn parallel_batch_gradients_equal_one_backward_of_the_summed_loss() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use wesam::adapt::config::AdaptConfig;
    use wesam::adapt::losses::PixelBalance;
    use wesam::adapt::step::{batch_gradients, image_loss, StepModels, StepSample};

    let (sam, lora) = common::tiny_sam_with_lora(&candle_core::Device::Cpu);
    let vars: Vec<(String, Tensor)> = lora
        .named_vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|(_, t)| t.clone()).collect();
    let cfg = AdaptConfig::default();
    let models = StepModels {
        anchor: &sam,
        model: &sam,
        lora: Some(&lora),
        teacher: Some(&lora),
    };
    let samples: Vec<_> = (0..3).map(common::synth_sample).collect();
    assert!(samples
        .iter()
        .all(|s| !s.instances.is_empty() && s.instances.len() <= cfg.train.max_instances));
    let mut batch: Vec<StepSample> = samples
        .iter()
        .enumerate()
        .map(|(i, s)| StepSample {
            sample: s.clone(),
            seed: 11 + i as u64,
            position: i,
        })
        .collect();

    let (got, log) = batch_gradients(&cfg, models, &mut batch, &tensors)
        .unwrap()
        .unwrap();

    // The same batch by hand: each image's loss seeded from its own stream (no instance cap
    // draws, as no image has too many), and one backward of the sum.
    let n_total: usize = samples.iter().map(|s| s.instances.len()).sum();
    let mut total: Option<Tensor> = None;
    for (i, s) in samples.iter().enumerate() {
        let loss = image_loss(
            &cfg,
            models,
            s,
            n_total,
            PixelBalance::default(),
            StdRng::seed_from_u64(11 + i as u64).random(),
        )
        .unwrap()
        .total;
        total = Some(match total {
            Some(t) => (t + loss).unwrap(),
            None => loss,
        });
    }
    let total = total.unwrap();
    let want = total.backward().unwrap();
    let total = total.to_scalar::<f32>().unwrap() as f64;
    assert!(
        (log.total - total).abs() <= 1e-5 * total.abs(),
        "logged loss {} against {total}",
        log.total
    );
    for (name, t) in &vars {
        let (g, w) = (got.get(t).unwrap(), want.get(t).unwrap());
        assert!(common::max_abs(w) > 0.0, "{name} has no gradient");
        assert_close(name, g, w, 1e-5 * common::max_abs(w));
    }
}

#[test]
fn a_trust_exponent_that_is_not_positive_is_refused_before_the_run_starts() {
    let root = common::scratch();
    let data = root.path().join("exponent-data");
    make_dataset(&data, 4);
    let out = root.path().join("exponent-out");
    for bad in ["0", "-1", "NaN"] {
        let flag = format!("--anchor-trust-exponent={bad}");
        let o = adapt(&data, &out, &["--anchor-weighting", "weak-label", &flag]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad} accepted");
        assert!(
            err.contains("anchor_trust_exponent must be a positive number"),
            "{err}"
        );
        assert!(!out.exists(), "{bad}: a run directory was made");
    }
}

/// `--select weak-label` keeps the epoch (the starting model included) whose masks agree best
/// with the adaptation split's weak labels: `metrics.csv` holds that agreement for every
/// epoch, the run reports the first best one and its mIoU, its merged weights are that epoch's,
/// `wesam eval` on the adaptation split recomputes the kept epoch's agreement, and a resumed run
/// keeps the same epoch.
#[test]
fn the_weak_label_selection_keeps_the_epoch_whose_masks_agree_best() {
    let root = common::scratch();
    let data = root.path().join("select-data");
    make_dataset(&data, 8);
    // At 1e-3 the adapters move the masks; at 1e-1 (no warm-up in so short a run) they wreck
    // them, and the start is kept.
    for lr in ["1e-3", "1e-1"] {
        let out = root.path().join(format!("select-{lr}"));
        let o = adapt(&data, &out, &["--select", "weak-label", "--lr", lr]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let rows: Vec<(f64, f64)> = metrics
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                let num = |i: usize| f[i].parse::<f64>().unwrap_or_else(|_| panic!("{l}"));
                (num(column("miou")), num(column("selection")))
            })
            .collect();
        assert_eq!(rows.len(), 3, "direct and two epochs:\n{metrics}");
        let best = rows
            .iter()
            .enumerate()
            .fold(0, |b, (i, r)| if r.1 > rows[b].1 { i } else { b });
        assert_eq!(
            report["kept_epoch"].as_u64(),
            Some(best as u64),
            "{metrics}"
        );
        let adapted = report["adapted"]["miou"].as_f64().unwrap();
        assert!(
            (adapted - rows[best].0).abs() < 1e-3,
            "{adapted} vs\n{metrics}"
        );

        let merged = out.join("merged.safetensors");
        let base = fixture_dir().join("model.safetensors");
        if best == 0 {
            let (m, b) = (tensors(&merged), tensors(&base));
            for (k, v) in &b {
                assert_eq!(max_abs_diff(v, &m[k]), 0.0, "{k}: the start was not kept");
            }
        }
        let eval = common::wesam(&[
            "eval",
            "--checkpoint",
            merged.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--split",
            "train",
            "--prompt",
            "box",
            "--json",
        ]);
        assert!(eval.status.success(), "{}", common::stderr(&eval));
        let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        let agreement = eval["agreement"].as_f64().unwrap();
        assert!(
            (agreement - rows[best].1).abs() < 1e-2,
            "lr {lr}: eval {agreement} vs\n{metrics}"
        );
        assert_eq!(
            best == 0,
            lr == "1e-1",
            "lr {lr}: kept epoch {best} of (mIoU, agreement) {rows:?}"
        );

        // A run that crashed in its second epoch and was resumed keeps the same epoch and
        // weights (the first epoch's come back from the checkpoint).
        if lr == "1e-3" {
            let crashed = root.path().join("select-crashed");
            let flags = [
                "--select",
                "weak-label",
                "--lr",
                lr,
                "--crash-after-steps",
                "10",
            ];
            assert!(!adapt(&data, &crashed, &flags).status.success());
            let o = common::wesam(&["adapt", "--resume", crashed.to_str().unwrap(), "--json"]);
            assert!(o.status.success(), "{}", common::stderr(&o));
            let resumed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(resumed["kept_epoch"], report["kept_epoch"]);
            let (a, b) = (
                tensors(&out.join("adapter.safetensors")),
                tensors(&crashed.join("adapter.safetensors")),
            );
            for (k, v) in &a {
                assert_close(&format!("resumed {k}"), &b[k], v, 0.0);
            }
        }
    }
}

/// `--peft sam-adapter` self-trains SAM-Adapter's adapter instead of LoRA: every adapter tensor
/// moves from its initialisation, the merged weights carry it (and load back with it), and a
/// run that crashed and resumed ends with the same weights, bit for bit.
#[test]
fn self_training_with_the_sam_adapter_adapter_trains_it_and_resumes_bit_for_bit() {
    let root = common::scratch();
    let data = root.path().join("data");
    make_dataset(&data, 8);
    let flags = ["--peft", "sam-adapter", "--select", "last", "--lr", "1e-3"];
    let full = root.path().join("full");
    let o = adapt(&data, &full, &flags);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(!full.join("adapter.safetensors").exists(), "no LoRA file");
    let merged = tensors(&full.join("merged.safetensors"));
    let dev = Device::Cpu;
    let sam = Sam::load(&fixture_dir().join("model.safetensors"), None, None, &dev).unwrap();
    let init = wesam::model::sam_adapter::initial_weights(&sam.config, 1337, &dev).unwrap();
    for (name, t) in &init {
        let m = merged
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in merged"));
        assert!(max_abs_diff(t, m) > 0.0, "{name} did not change");
    }
    // Everything else is the source model's.
    common::assert_same_weights(
        &fixture_dir().join("model.safetensors"),
        &full.join("merged.safetensors"),
        "frozen weights",
    );
    let reloaded = Sam::load(&full.join("merged.safetensors"), None, None, &dev).unwrap();
    assert_eq!(
        reloaded.config.sam_adapter,
        Some(wesam::model::sam_adapter::FpeLayout::PerToken)
    );
    assert!(reloaded.prompt_encoder.takes_prompts());

    let crashed = root.path().join("crashed");
    let mut crash_flags = flags.to_vec();
    crash_flags.extend(["--crash-after-steps", "3"]);
    assert!(!adapt(&data, &crashed, &crash_flags).status.success());
    let o = common::wesam(&["adapt", "--resume", crashed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    common::assert_same_weights(
        &full.join("merged.safetensors"),
        &crashed.join("merged.safetensors"),
        "resumed",
    );
}

/// `--auto` adds the prompt-free scores (the automatic mask generator at its defaults) of the
/// starting and the adapted model on the run's evaluation split and limit to the final table and
/// the JSON: the same as `wesam eval --prompt none --auto` gives for the starting checkpoint and
/// for the run's merged weights; it is accepted beside `--resume`. The model is the bundled one
/// with its multimask outputs trained, which finds objects of source images at the defaults (of
/// these four, in the fourth).
#[test]
fn auto_scores_the_starting_and_adapted_models_without_prompts() {
    let root = common::scratch();
    let data = root.path().join("auto-data");
    let o = common::wesam(&[
        "synth",
        "--domain",
        "source",
        "--count",
        "8",
        "--seed",
        "5",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/source-synth-amg.safetensors");
    let out = root.path().join("auto");
    let o = common::wesam(&[
        "adapt",
        "--dataset",
        data.to_str().unwrap(),
        "--checkpoint",
        model.to_str().unwrap(),
        "--prompt",
        "box",
        "--epochs",
        "1",
        "--loss-resolution",
        "low",
        "--lr",
        "1e-2",
        "--select",
        "last",
        "--train-limit",
        "2",
        "--eval-split",
        "train",
        "--eval-limit",
        "4",
        "--auto",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("without prompts"),
        "{}",
        common::stderr(&o)
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["adapted"]["miou"].is_number(), "{report}");
    let eval_auto = |checkpoint: &Path| {
        let o = common::wesam(&[
            "eval",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--split",
            "train",
            "--limit",
            "4",
            "--prompt",
            "none",
            "--auto",
            "--json",
        ]);
        assert!(o.status.success(), "{}", common::stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["auto"].clone()
    };
    let same = |what: &str, got: &serde_json::Value, want: &serde_json::Value| {
        assert_eq!(got["images"], 4, "{what}: {got}");
        assert_eq!(got["images"], want["images"], "{what}");
        assert_eq!(got["instances"], want["instances"], "{what}");
        for key in ["matched_iou", "recall_50", "recall_75", "f1_50", "masks"] {
            let (g, w) = (
                got["scores"][key].as_f64().unwrap(),
                want["scores"][key].as_f64().unwrap(),
            );
            assert!(g.is_finite() && g >= 0.0, "{what} {key}: {g}");
            if key != "masks" {
                assert!(g <= 1.0, "{what} {key}: {g}");
            }
            assert!((g - w).abs() < 1e-6, "{what} {key}: adapt {g}, eval {w}");
        }
    };
    let direct = eval_auto(&model);
    same("direct", &report["auto_direct"], &direct);
    assert!(
        direct["scores"]["matched_iou"].as_f64().unwrap() > 0.0,
        "{direct}"
    );
    let adapted = eval_auto(&out.join("merged.safetensors"));
    same("adapted", &report["auto_adapted"], &adapted);

    let o = common::wesam(&[
        "adapt",
        "--resume",
        out.to_str().unwrap(),
        "--auto",
        "--json",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let resumed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    same("resumed", &resumed["auto_adapted"], &adapted);
}
