//! `wesam features` against the official image encoder with forward hooks (fixture:
//! `scripts/make_features_fixture.py`, a small SAM with four global-attention blocks): the
//! block outputs, the neck and EBSeg's rescaled maps within 1e-4 of each tensor's largest
//! value, with SAM's square input and with EBSeg's padded one; and the command's file.
//!
//! The same for the official ViT-B architecture with random weights at 1024² and at EBSeg's
//! 640² (minutes on a CPU, so ignored by default). Make the fixture, then run the test:
//!
//!   python3 scripts/make_features_fixture.py --vit-b --out /tmp/vitb-features
//!   WESAM_VITB_FEATURES=/tmp/vitb-features cargo test --release --test features -- --ignored --nocapture

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{assert_close, max_abs};
use image::RgbImage;
use wesam::model::features::{extract, prepare, FeaturePreprocessing};
use wesam::model::Sam;

const REL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/features")
        .join(name)
}

fn cases() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("cases.safetensors"), &common::device()).unwrap()
}

/// The fixture's image (`[3, H, W]` of 0..255 values) as an RGB image.
fn image(c: &HashMap<String, Tensor>) -> RgbImage {
    image_of(&c["image"])
}

/// A `[3, H, W]` tensor of 0..255 values as an RGB image.
fn image_of(t: &Tensor) -> RgbImage {
    let v = t.to_device(&Device::Cpu).unwrap().to_vec3::<f32>().unwrap();
    let (h, w) = (v[0].len(), v[0][0].len());
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([0, 1, 2].map(|ch| v[ch][y as usize][x as usize] as u8))
    })
}

fn check(mode: &str, c: &HashMap<String, Tensor>, sam: &Sam, input: &Tensor) -> f32 {
    let f = extract(sam, None, input, true).unwrap();
    let got = f.named();
    assert_eq!(got.len(), 4 + 1 + 4, "blocks, neck and the rescaled maps");
    let mut worst = 0f32;
    for (name, t) in got {
        let want = &c[&format!("{mode}.{name}")];
        let scale = max_abs(want);
        assert_close(&format!("{mode} {name}"), &t, want, REL * scale);
        worst = worst.max(common::max_abs_diff(&t, want) / scale);
    }
    worst
}

#[test]
fn sam_input_features_match_the_official_encoder() {
    let c = cases();
    let sam = Sam::load(&fixture("model.safetensors"), None, None, &common::device()).unwrap();
    check("sam", &c, &sam, &c["sam.input"]);
}

#[test]
fn ebseg_input_and_features_match_the_official_encoder() {
    let c = cases();
    let sam = Sam::load(&fixture("model.safetensors"), None, None, &common::device()).unwrap();
    let prepared = prepare(&image(&c), FeaturePreprocessing::Ebseg, None, &sam).unwrap();
    assert_eq!(prepared.padded, (96, 160));
    assert_close("ebseg input", &prepared.input, &c["ebseg.input"], 1e-5);
    check("ebseg", &c, &sam, &prepared.input);
}

#[test]
#[ignore = "needs WESAM_VITB_FEATURES (see the file's doc) and minutes of CPU"]
fn vit_b_features_match_at_1024_and_640() {
    let dir = PathBuf::from(std::env::var("WESAM_VITB_FEATURES").unwrap_or_else(|_| {
        panic!(
            "set WESAM_VITB_FEATURES to a folder made by \
             `python3 scripts/make_features_fixture.py --vit-b --out DIR` (outside the repository)"
        )
    }));
    let dev = common::device();
    let c = candle_core::safetensors::load(dir.join("cases.safetensors"), &dev).unwrap();
    let sam = Sam::load(&dir.join("model.safetensors"), None, None, &dev).unwrap();
    assert_eq!(sam.config.encoder_global_attn_indexes, [2, 5, 8, 11]);
    let worst_1024 = check("sam", &c, &sam, &c["sam.input"]);

    // EBSeg's 640²: a 40 x 40 grid, the position embedding and the global blocks' rel-pos
    // tables resized.
    let prepared = prepare(
        &image_of(&c["ebseg640.image"]),
        FeaturePreprocessing::Ebseg,
        None,
        &sam,
    )
    .unwrap();
    assert_eq!(prepared.padded, (640, 640));
    assert_close(
        "ebseg640 input",
        &prepared.input,
        &c["ebseg640.input"],
        1e-5,
    );
    let worst_640 = check("ebseg640", &c, &sam, &prepared.input);
    assert_eq!(c["ebseg640.blocks.2"].dims(), [768, 40, 40]);
    eprintln!(
        "largest difference relative to the tensor's largest value: \
         {worst_1024:.2e} at 1024², {worst_640:.2e} at 640²"
    );
}

#[test]
fn the_command_writes_one_file_per_image_and_keeps_what_exists() {
    let c = cases();
    let root = common::scratch();
    let images = root.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for name in ["a.png", "b.jpg"] {
        image(&c).save(images.join(name)).unwrap();
    }
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let model = fixture("model.safetensors");
    let out = root.path().join("features");
    let run = |image: &std::path::Path, out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "features",
            "--checkpoint",
            model.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--preprocess",
            "ebseg",
            "--rescale",
        ];
        args.extend(extra);
        common::wesam(&args)
    };
    let o = run(&images, &out, &[]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    written.sort();
    assert_eq!(written, ["a.safetensors", "b.safetensors"]);
    let file = out.join("a.safetensors");
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let want = c["ebseg.res2"].to_device(&Device::Cpu).unwrap();
    assert_close(
        "written res2",
        &tensors["res2"],
        &want,
        REL * max_abs(&want),
    );
    let bytes = std::fs::read(&file).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(meta["preprocessing"], "ebseg");
    assert_eq!(meta["original_size"], "90x130");
    assert_eq!(meta["padded_size"], "96x160");
    assert_eq!(meta["block_indexes"], "0,1,3,4");

    // A folder that holds files, and an existing file, are kept unless --force.
    let o = run(&images, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        common::stderr(&o).contains("--force"),
        "{}",
        common::stderr(&o)
    );
    let single = root.path().join("one.safetensors");
    std::fs::write(&single, "mine").unwrap();
    let o = run(&images.join("a.png"), &single, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&single).unwrap(), "mine");
    let o = run(&images.join("a.png"), &single, &["--force"]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    // An encoder without four global-attention blocks has no EBSeg maps.
    let tiny = common::fixture_dir().join("model.safetensors");
    let o = common::wesam(&[
        "features",
        "--checkpoint",
        tiny.to_str().unwrap(),
        "--image",
        images.join("a.png").to_str().unwrap(),
        "--out",
        root.path().join("tiny.safetensors").to_str().unwrap(),
        "--rescale",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        common::stderr(&o).contains("four global-attention"),
        "{}",
        common::stderr(&o)
    );
}
