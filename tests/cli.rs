//! The `wesam` binary as a user runs it: the built-in demo, `predict` on a real checkpoint file,
//! and bad input that must end in a clear error, never a panic.

mod common;

use common::{fixture_dir, stderr, wesam};

#[test]
fn built_in_demo_runs_and_writes_its_outputs() {
    let root = common::scratch();
    let (mask, overlay) = (
        root.path().join("demo/mask.png"),
        root.path().join("demo/overlay.png"),
    );
    let o = wesam(&[
        "predict",
        "--out",
        mask.to_str().unwrap(),
        "--overlay",
        overlay.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = image::open(&mask).unwrap();
    assert_eq!((m.width(), m.height()), (160, 120));
    assert!(image::open(&overlay).is_ok());
}

/// `wesam adapt` without a dataset: the bundled source model adapted to a generated shifted
/// domain (shortened here with the ordinary flags, scored on the adaptation split as
/// `--eval-split train` asks), its inputs and outputs in the run directory.
#[test]
fn adapt_without_a_dataset_runs_the_built_in_demo() {
    let root = common::scratch();
    let out = root.path().join("adapt-demo");
    let o = wesam(&[
        "adapt",
        "--epochs",
        "1",
        "--train-limit",
        "4",
        "--eval-limit",
        "4",
        "--eval-split",
        "train",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let direct = report["direct"]["miou"].as_f64().unwrap();
    assert!(
        direct > 5.0,
        "the bundled model segments the demo domain: {direct}"
    );
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("source-model.safetensors") && config.contains("prompt = \"box\""));
    assert!(config.contains("eval_split = \"train\""), "{config}");
    for f in [
        "data/synth.json",
        "source-model.safetensors",
        "adapter.safetensors",
        "merged.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let o = wesam(&["adapt", "--out", out.to_str().unwrap()]);
    assert!(
        !o.status.success(),
        "a finished demo run is not overwritten"
    );
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
}

#[test]
fn predict_writes_mask_logits_and_json_for_a_checkpoint() {
    let root = common::scratch();
    let (mask, logits) = (root.path().join("mask.png"), root.path().join("low.npy"));
    let model = fixture_dir().join("model.safetensors");
    let image = fixture_dir().join("image.png");
    let o = wesam(&[
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--box",
        "25,15,110,70",
        "--point",
        "80,35,1",
        "--point",
        "40,60,0",
        "--multimask",
        "--out",
        mask.to_str().unwrap(),
        "--logits",
        logits.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["masks"].as_array().unwrap().len(), 3);
    assert_eq!(
        (report["width"].as_u64(), report["height"].as_u64()),
        (Some(130), Some(90))
    );
    let selected = report["selected"].as_u64().unwrap() as usize;
    let area = report["masks"][selected]["area"].as_u64().unwrap();
    let m = image::open(&mask).unwrap().to_luma8();
    assert_eq!((m.width(), m.height()), (130, 90));
    assert_eq!(m.pixels().filter(|p| p.0[0] == 255).count() as u64, area);
    let low = candle_core::Tensor::read_npy(&logits).unwrap();
    assert_eq!(low.dims(), &[32, 32]);

    // The logits feed back as a mask prompt.
    let o = wesam(&[
        "predict",
        "--checkpoint",
        model.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--mask-input",
        logits.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_input_is_a_clear_error() {
    let root = common::scratch();
    let model = fixture_dir().join("model.safetensors");
    let image = fixture_dir().join("image.png");
    let not_image = root.path().join("not-an-image.png");
    std::fs::write(&not_image, b"definitely not a png").unwrap();
    let small_mask = root.path().join("small-mask.png");
    image::GrayImage::new(10, 10).save(&small_mask).unwrap();
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (
            vec!["--image", not_image.to_str().unwrap(), "--box", "1,1,5,5"],
            vec!["cannot read image".into(), not_image.display().to_string()],
        ),
        (
            vec![
                "--image",
                image.to_str().unwrap(),
                "--mask-input",
                small_mask.to_str().unwrap(),
            ],
            vec![
                small_mask.display().to_string(),
                image.display().to_string(),
                "10x10".into(),
            ],
        ),
        (
            vec!["--image", image.to_str().unwrap()],
            vec!["give at least one prompt".into()],
        ),
        (
            vec!["--image", image.to_str().unwrap(), "--box", "5,5,1,1"],
            vec!["X1,Y1".into()],
        ),
        (
            vec!["--image", image.to_str().unwrap(), "--point", "3,4,2"],
            vec!["LABEL".into()],
        ),
    ];
    for (args, needles) in cases {
        let mut full = vec!["predict", "--checkpoint", model.to_str().unwrap()];
        full.extend(args.iter());
        let o = wesam(&full);
        let err = stderr(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
        for n in needles {
            assert!(err.contains(&n), "`{n}` not in error of {args:?}: {err}");
        }
    }
}

#[test]
fn an_existing_output_survives_a_failed_run() {
    let root = common::scratch();
    let out = root.path().join("keep.png");
    std::fs::write(&out, b"previous result").unwrap();
    let o = wesam(&[
        "predict",
        "--image",
        "/nonexistent.png",
        "--box",
        "1,1,2,2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), b"previous result");
}

#[test]
fn corrupt_writes_a_folder_dataset_with_the_same_masks() {
    let root = common::scratch();
    let src = root.path().join("corrupt-src");
    std::fs::create_dir_all(src.join("images")).unwrap();
    std::fs::create_dir_all(src.join("masks")).unwrap();
    for i in 0..3u32 {
        image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 100])
        })
        .save(src.join(format!("images/{i}.png")))
        .unwrap();
        image::GrayImage::from_fn(40, 30, |x, _| image::Luma([u8::from(x > 10 + i)]))
            .save(src.join(format!("masks/{i}.png")))
            .unwrap();
    }
    let out = root.path().join("corrupt-out");
    let o = wesam(&[
        "corrupt",
        "--dataset",
        src.to_str().unwrap(),
        "--corruption",
        "gaussian_noise",
        "--severity",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for i in 0..3u32 {
        let a = image::open(src.join(format!("images/{i}.png")))
            .unwrap()
            .to_rgb8();
        let b = image::open(out.join(format!("images/{i}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(a.dimensions(), b.dimensions());
        assert_ne!(a, b, "image {i} was not corrupted");
        let m = image::open(out.join(format!("masks/{i}.png")))
            .unwrap()
            .to_luma8();
        assert_eq!(
            m.pixels().filter(|p| p.0[0] == 1).count(),
            30 * (29 - i as usize)
        );
    }
    assert!(out.join("splits/train.txt").exists() && out.join("splits/test.txt").exists());
}

/// The kernels come from `--kernels`, else `WESAM_KERNELS`, else native; `bench --json` names
/// them with the device and the precision.
#[test]
fn bench_reports_its_kernels_device_and_precision() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/sam-tiny.toml");
    let bench = |kernels: Option<&str>, env: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wesam"));
        cmd.env_remove("WESAM_KERNELS");
        if let Some(v) = env {
            cmd.env("WESAM_KERNELS", v);
        }
        if let Some(k) = kernels {
            cmd.args(["--kernels", k]);
        }
        let o = cmd
            .args([
                "bench",
                "step",
                "--model-config",
                config,
                "--image-size",
                "64",
            ])
            .args(["--precision", "bf16", "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["device"], "cpu");
        assert_eq!(report["precision"], "bf16");
        report["kernels"].as_str().unwrap().to_string()
    };
    assert_eq!(bench(None, None), "native");
    assert_eq!(bench(None, Some("portable")), "portable");
    assert_eq!(bench(Some("native"), Some("portable")), "native");
    assert_eq!(bench(Some("portable"), None), "portable");
}

/// A device that cannot be opened stops `adapt` before the demo writes its data.
#[test]
fn a_missing_gpu_stops_adapt_before_any_data_is_written() {
    let root = common::scratch();
    let out = root.path().join("run");
    let o = wesam(&["adapt", "--device", "cuda", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("CUDA"), "{err}");
    assert!(!out.exists(), "{} was written", out.display());
}
