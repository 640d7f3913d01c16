//! `wesam segment`'s generator against the official `SamAutomaticMaskGenerator` (fixture:
//! `scripts/make_amg_fixture.py` on `models/source-synth-amg.safetensors`, the bundled model with
//! its multimask outputs trained, and a generated image): for each case, the same number of masks in the same order, every RLE string equal,
//! boxes, areas, points and crop boxes equal, and the scores within 1e-4.

use std::path::PathBuf;

use candle_core::Device;
use wesam::amg::{generate, AmgConfig, MaskRecord};
use wesam::model::Sam;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/amg")
        .join(name)
}

/// The model of the fixture: the bundled one with its three multimask outputs trained (phase 3
/// of `scripts/train_source_model.sh`).
fn model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/source-synth-amg.safetensors")
}

/// The official generator's settings of a case, as wesam's configuration.
fn settings(v: &serde_json::Value) -> AmgConfig {
    let mut cfg = serde_json::to_value(AmgConfig::default()).unwrap();
    for (k, x) in v.as_object().unwrap() {
        cfg[k] = x.clone();
    }
    serde_json::from_value(cfg).unwrap()
}

#[test]
fn masks_match_the_official_generator() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("cases.json")).unwrap()).unwrap();
    let sam = Sam::load(&model(), None, None, &Device::Cpu).unwrap();
    let image = image::open(fixture("image.png")).unwrap().to_rgb8();
    for (name, case) in cases.as_object().unwrap() {
        let cfg = settings(&case["settings"]);
        let want: Vec<MaskRecord> = serde_json::from_value(case["records"].clone()).unwrap();
        let got = generate(&sam, None, &image, &cfg).unwrap();
        eprintln!("{name}: {} masks, official {}", got.len(), want.len());
        assert_eq!(got.len(), want.len(), "{name}: mask count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.segmentation, w.segmentation, "{name} mask {i}: RLE");
            assert_eq!(
                (g.area, g.bbox, &g.point_coords, g.crop_box),
                (w.area, w.bbox, &w.point_coords, w.crop_box),
                "{name} mask {i}"
            );
            assert!(
                (g.predicted_iou - w.predicted_iou).abs() <= 1e-4,
                "{name} mask {i}: iou {} vs {}",
                g.predicted_iou,
                w.predicted_iou
            );
            assert!(
                (g.stability_score - w.stability_score).abs() <= 1e-4,
                "{name} mask {i}: stability {} vs {}",
                g.stability_score,
                w.stability_score
            );
        }
    }
}

/// `wesam segment` writes SA-1B's per-image JSON with the generator's records, the label and
/// overlay images with `--png`, keeps existing outputs without `--force`, and takes the
/// generator's settings from flags.
#[test]
fn the_command_writes_sa1b_json() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("masks.json");
    let model = model();
    let image = fixture("image.png");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "segment",
            "--checkpoint",
            model.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--points-per-side",
            "8",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_wesam"))
            .args(&args)
            .output()
            .unwrap()
    };
    let o = run(&["--png"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(doc["image"]["width"], 128);
    assert_eq!(doc["image"]["file_name"], "image.png");
    let sam = Sam::load(&model, None, None, &Device::Cpu).unwrap();
    let cfg = AmgConfig {
        points_per_side: 8,
        ..AmgConfig::default()
    };
    let want = generate(&sam, None, &image::open(&image).unwrap().to_rgb8(), &cfg).unwrap();
    let annotations = doc["annotations"].as_array().unwrap();
    assert!(!want.is_empty());
    assert_eq!(annotations.len(), want.len());
    for (i, (a, w)) in annotations.iter().zip(&want).enumerate() {
        assert_eq!(a["id"], i);
        assert_eq!(a["segmentation"]["counts"], w.segmentation.counts.as_str());
    }
    let labels = image::open(root.path().join("masks.labels.png"))
        .unwrap()
        .to_luma8();
    let ids: std::collections::BTreeSet<u8> = labels.pixels().map(|p| p.0[0]).collect();
    assert!(ids.contains(&1), "{ids:?}");
    assert!(root.path().join("masks.overlay.png").exists());

    let before = std::fs::read(&out).unwrap();
    let o = run(&["--pred-iou-thresh", "0.5"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), before, "kept without --force");
    let o = run(&[
        "--pred-iou-thresh",
        "0.5",
        "--stability-score-thresh",
        "0.8",
        "--force",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert!(
        doc["annotations"].as_array().unwrap().len() > want.len(),
        "lower thresholds keep more"
    );
    let o = run(&[
        "--crop-n-layers",
        "6",
        "--crop-n-points-downscale-factor",
        "2",
        "--force",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("points_per_side"));
}

/// `wesam eval --prompt none --auto` scores the generator's masks against the instances, and
/// `--calibrate` finds thresholds at least as good by F1 as the defaults; `--auto` with prompts
/// is refused.
#[test]
fn eval_auto_scores_and_calibrates() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let wesam = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wesam"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = wesam(&[
        "synth",
        "--domain",
        "source",
        "--count",
        "10",
        "--seed",
        "5",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = model();
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--dataset",
            data.to_str().unwrap(),
            "--split",
            "all",
            "--points-per-side",
            "8",
            "--json",
        ];
        args.extend_from_slice(extra);
        wesam(&args)
    };
    let o = eval(&["--prompt", "none", "--auto", "--calibrate"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let auto = &report["auto"];
    assert_eq!(auto["images"], 10, "{report}");
    let f1 = |s: &serde_json::Value| s["f1_50"].as_f64().unwrap();
    let at_defaults = f1(&auto["scores"]);
    let best = &report["best"];
    assert!(f1(&best[2]) >= at_defaults, "{report}");
    assert!((0.0..=1.0).contains(&auto["scores"]["matched_iou"].as_f64().unwrap()));
    assert_eq!(auto["sweep"].as_array().unwrap().len(), 13 * 15);

    let o = eval(&["--auto"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--prompt none"));
}
