//! What wesam refuses so that nothing a user has is destroyed: an output inside the data being
//! read, an output over existing files without `--force`, two runs in one directory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{fixture_dir, make_dataset, stderr, wesam};
use wesam::adapt::run_dir::RunDir;

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn corrupt(data: &Path, out: &Path, force: bool) -> std::process::Output {
    let mut args = vec!["corrupt", "--dataset", data.to_str().unwrap()];
    args.extend(["--corruption", "fog", "--severity", "1"]);
    args.extend(["--out", out.to_str().unwrap()]);
    if force {
        args.push("--force");
    }
    wesam(&args)
}

#[test]
fn corrupt_never_writes_into_its_input_nor_over_files_without_force() {
    let root = common::scratch();
    let data = root.path().join("data");
    make_dataset(&data, 3);
    let before = snapshot(&data);
    for out in [data.clone(), data.join("masks"), data.join("new")] {
        for force in [false, true] {
            let o = corrupt(&data, &out, force);
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            assert!(stderr(&o).contains("inside the dataset"), "{}", stderr(&o));
        }
    }
    assert_eq!(snapshot(&data), before, "the input dataset changed");

    let other = root.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    let o = corrupt(&data, &other, false);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert!(!other.join("images").exists());
    let o = corrupt(&data, &other, true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(other.join("images")).unwrap().count(), 3);
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn eval_never_saves_masks_into_the_dataset() {
    let root = common::scratch();
    let data = root.path().join("data");
    make_dataset(&data, 2);
    let before = snapshot(&data);
    let model = fixture_dir().join("model.safetensors");
    for dir in [data.join("masks"), data.clone()] {
        let o = wesam(&[
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--split",
            "all",
            "--save-masks",
            dir.to_str().unwrap(),
            "--force",
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("inside the dataset"), "{}", stderr(&o));
    }
    assert_eq!(snapshot(&data), before, "the dataset changed");
}

#[test]
fn a_run_directory_is_held_by_one_run_at_a_time() {
    let root = common::scratch();
    let out = root.path().join("run");
    let held = RunDir(out.clone()).lock().unwrap();
    let o = wesam(&["adapt", "--epochs", "1", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(
        !out.join("data").exists(),
        "the second run wrote into the directory"
    );
    drop(held);
}

/// Numbers a run cannot use are refused from flags and from config files alike, naming the
/// setting, before a run directory or any data is written.
#[test]
fn unusable_numbers_are_refused_before_anything_is_written() {
    let root = common::scratch();
    let config = root.path().join("nan.toml");
    std::fs::write(&config, "[train]\nlr = nan\n").unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["--lr", "nan"], "train.lr"),
        (&["--lr", "inf"], "train.lr"),
        (&["--lr", "0"], "train.lr"),
        (&["--batch-size", "0"], "train.batch_size"),
        (&["--ema", "1"], "train.ema_momentum"),
        (&["--severity", "9"], "data.severity"),
        (&["--val-fraction", "1"], "data.options.val_fraction"),
        (&["--config", config.to_str().unwrap()], "train.lr"),
    ];
    for (i, (flags, key)) in cases.iter().enumerate() {
        let out = root.path().join(format!("run-{i}"));
        let mut args = vec!["adapt", "--out", out.to_str().unwrap()];
        if flags[0] == "--config" {
            args.extend(["--dataset", root.path().to_str().unwrap()]);
        }
        args.extend(flags.iter());
        let o = wesam(&args);
        assert_eq!(o.status.code(), Some(1), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(key), "{flags:?}: {}", stderr(&o));
        assert!(!out.exists(), "{flags:?}: {} was written", out.display());
    }
}

/// A run or an evaluation that had nothing to work on fails, saying why, and writes no weights.
#[test]
fn nothing_to_train_or_evaluate_is_an_error() {
    let root = common::scratch();
    let data = root.path().join("empty-masks");
    make_dataset(&data, 4);
    for i in 0..4 {
        image::GrayImage::new(96, 80)
            .save(data.join(format!("masks/{i:03}.png")))
            .unwrap();
    }
    let model = fixture_dir().join("model.safetensors");
    let model = model.to_str().unwrap();
    let data = data.to_str().unwrap();
    let o = wesam(&[
        "eval",
        "--checkpoint",
        model,
        "--dataset",
        data,
        "--split",
        "all",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no instance"), "{}", stderr(&o));
    let out = root.path().join("run");
    let o = wesam(&[
        "adapt",
        "--checkpoint",
        model,
        "--dataset",
        data,
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!out.join("adapter.safetensors").exists());
    assert!(!out.join("merged.safetensors").exists());
}

/// `--resume` continues a run with its own configuration: a flag that would change it is refused
/// instead of silently ignored.
#[test]
fn resume_refuses_flags_that_would_change_the_run() {
    for flag in [
        &["--lr", "1e-3"][..],
        &["--epochs", "9"],
        &["--precision", "bf16"],
    ] {
        let mut args = vec!["adapt", "--resume", "some-run"];
        args.extend(flag);
        let o = wesam(&args);
        assert_eq!(o.status.code(), Some(2), "{flag:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    }
}

/// `wesam adapt` of the tiny fixture model on a new four-image dataset in `dir`, scored on its
/// adaptation split, into `out`, with `extra` flags.
fn adapt_tiny(dir: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let data = dir.join("data");
    make_dataset(&data, 4);
    let model = fixture_dir().join("model.safetensors");
    let mut args = vec![
        "adapt",
        "--checkpoint",
        model.to_str().unwrap(),
        "--dataset",
        data.to_str().unwrap(),
        "--eval-split",
        "train",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    wesam(&args)
}

/// A learning rate that drives the weights away by orders of magnitude (the loss can stay
/// finite) stops the run, which keeps the weights kept so far (here the starting ones) and
/// fails saying so; the run's effective settings are printed and written.
#[test]
fn a_run_that_diverges_stops_and_keeps_the_weights_kept_so_far() {
    let root = common::scratch();
    let out = root.path().join("run");
    let o = adapt_tiny(root.path(), &out, &["--epochs", "2", "--lr", "1e9"]);
    let model = fixture_dir().join("model.safetensors");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("training diverged at step"), "{err}");
    assert!(err.contains("kept the starting weights"), "{err}");
    assert!(
        err.contains("settings: self-training (sam profile)"),
        "{err}"
    );
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("anchor_weighting = \"weak-label\""),
        "{config}"
    );
    assert!(config.contains("selection = \"weak-label\""), "{config}");
    // Two epochs of four steps: a tenth is no step of warm-up.
    assert!(config.contains("warmup_steps = 0"), "{config}");
    common::assert_same_weights(&model, &out.join("merged.safetensors"), "kept weights");
}

/// Weights that are no official SAM and store no configuration are refused, naming the file
/// and `--model-config`, instead of built with a guessed decoder head count; with the
/// architecture given, evaluation and merging work and the merged file stores it.
#[test]
fn weights_of_an_unknown_architecture_need_model_config() {
    let root = common::scratch();
    let data = root.path().join("data");
    make_dataset(&data, 3);
    let pth = fixture_dir().join("model.pth");
    let tiny = wesam::model::checkpoint::StateDict::load(
        &fixture_dir().join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap()
    .config
    .unwrap();
    let config = root.path().join("tiny.json");
    std::fs::write(&config, serde_json::to_string(&tiny).unwrap()).unwrap();
    let merged = root.path().join("merged.safetensors");
    let lora = fixture_dir().join("lora.safetensors");
    let (pth, data, lora) = (
        pth.to_str().unwrap(),
        data.to_str().unwrap(),
        lora.to_str().unwrap(),
    );
    let eval = [
        "eval",
        "--checkpoint",
        pth,
        "--dataset",
        data,
        "--split",
        "all",
    ];
    let merge = [
        "merge",
        "--checkpoint",
        pth,
        "--lora",
        lora,
        "--out",
        merged.to_str().unwrap(),
    ];
    for args in [&eval[..], &merge[..]] {
        let o = wesam(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("model.pth") && err.contains("--model-config"),
            "{err}"
        );
    }
    assert!(!merged.exists());
    for args in [&eval[..], &merge[..]] {
        let mut args = args.to_vec();
        args.extend(["--model-config", config.to_str().unwrap()]);
        let o = wesam(&args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    let stored = wesam::model::checkpoint::StateDict::load(&merged, &candle_core::Device::Cpu)
        .unwrap()
        .config;
    assert_eq!(stored, Some(tiny));
}

/// Prompts are kept on the image: a box reaching beyond it is cut to it and a point moved onto
/// its edge, each with a warning; a box wholly outside, a number that is not finite, and mask
/// logits holding NaN are refused.
#[test]
fn prompts_are_kept_on_the_image_and_non_finite_ones_refused() {
    let root = common::scratch();
    let image = root.path().join("image.png");
    image::RgbImage::from_fn(96, 80, |x, y| image::Rgb([x as u8, y as u8, 90]))
        .save(&image)
        .unwrap();
    let model = fixture_dir().join("model.safetensors");
    let (model, image) = (model.to_str().unwrap(), image.to_str().unwrap());
    let predict = |prompt: &[&str]| {
        let mut args = vec!["predict", "--checkpoint", model, "--image", image, "--json"];
        args.extend(prompt);
        wesam(&args)
    };
    let o = predict(&["--box=-50,-50,2000,40", "--point=500,10,1"]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("cut to 0,0,96,40"), "{err}");
    assert!(err.contains("moved to 96,10"), "{err}");

    let o = predict(&["--box", "500,500,600,600"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("outside the 96x80 image"),
        "{}",
        stderr(&o)
    );
    for bad in [&["--box", "NaN,0,10,10"][..], &["--point", "inf,3,1"]] {
        let o = predict(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("not a finite number"), "{}", stderr(&o));
    }

    let logits = root.path().join("logits.npy");
    let low = candle_core::Tensor::full(f32::NAN, (32, 32), &candle_core::Device::Cpu).unwrap();
    low.write_npy(&logits).unwrap();
    let o = predict(&["--mask-input", logits.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("logits.npy") && err.contains("NaN"), "{err}");
}

/// A checkpoint whose state cannot be right is refused on `--resume` naming the file and
/// saying it is corrupt.
#[test]
fn a_corrupt_checkpoint_is_named_as_such_on_resume() {
    use wesam::model::checkpoint::{read_safetensors, write_safetensors};
    let root = common::scratch();
    let out = root.path().join("run");
    let o = adapt_tiny(
        root.path(),
        &out,
        &["--checkpoint-every", "1", "--crash-after-steps", "2"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let path = out.join("checkpoint.safetensors");
    let dev = candle_core::Device::Cpu;
    let (mut tensors, meta) = read_safetensors(&path, &dev).unwrap();
    let step = tensors
        .keys()
        .find(|k| k.starts_with("optim.") && k.ends_with(".step"))
        .unwrap()
        .clone();
    let negative = (tensors[&step].ones_like().unwrap() * -1.0).unwrap();
    tensors.insert(step, negative);
    let tensors: Vec<_> = tensors.into_iter().collect();
    write_safetensors(&path, &tensors, meta).unwrap();
    let o = wesam(&["adapt", "--resume", out.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("corrupt"),
        "{err}"
    );
}
