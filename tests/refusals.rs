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
