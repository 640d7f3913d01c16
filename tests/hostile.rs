//! Hostile input to every subcommand: whatever a user types or points wesam at, the process
//! ends with an answer or a clear error, never a panic (exit 101) or an abort (134). Add a case
//! here for every input that once made wesam panic.

mod common;

use std::path::Path;

use common::{fixture_dir, make_dataset, stderr};

/// Exit statuses of a Rust panic and of an abort (SIGABRT, e.g. a failed allocation).
const CRASHES: [i32; 2] = [101, 134];

/// Writes the hostile files into `dir`: images that scale to less than a pixel, a file that is
/// no image, a checkpoint that is no checkpoint, datasets of such images and an empty one.
fn hostile_files(dir: &Path) {
    let solid = |w, h| image::RgbImage::from_pixel(w, h, image::Rgb([120, 60, 30]));
    solid(300, 1).save(dir.join("thin.png")).unwrap();
    solid(20000, 20).save(dir.join("wide.png")).unwrap();
    std::fs::write(dir.join("garbage.png"), b"not an image at all").unwrap();
    std::fs::write(
        dir.join("garbage.safetensors"),
        b"\x08\0\0\0\0\0\0\0{}garbage",
    )
    .unwrap();
    // A dataset whose images are a thin strip and an empty mask, and one with nothing in it.
    make_dataset(&dir.join("thin-data"), 2);
    solid(300, 1)
        .save(dir.join("thin-data/images/000.png"))
        .unwrap();
    image::GrayImage::from_pixel(300, 1, image::Luma([1]))
        .save(dir.join("thin-data/masks/000.png"))
        .unwrap();
    image::GrayImage::new(96, 80)
        .save(dir.join("thin-data/masks/001.png"))
        .unwrap();
    std::fs::create_dir_all(dir.join("empty-data/images")).unwrap();
    std::fs::create_dir_all(dir.join("empty-data/masks")).unwrap();
}

#[test]
fn no_subcommand_panics_on_hostile_input() {
    let root = common::scratch();
    let d = root.path();
    hostile_files(d);
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let model = fixture_dir().join("model.safetensors");
    let model = model.to_str().unwrap();
    let pth = fixture_dir().join("model.pth");
    let pth = pth.to_str().unwrap().to_string();
    let out = |name: &str| p(&format!("out-{name}"));
    let cases: Vec<Vec<String>> = [
        // predict: degenerate images, bad files, bad sizes, prompts outside the image
        vec![
            "predict",
            "--checkpoint",
            model,
            "--image",
            &p("thin.png"),
            "--box",
            "1,0,100,1",
        ],
        vec![
            "predict",
            "--checkpoint",
            model,
            "--image",
            &p("wide.png"),
            "--box",
            "1,1,9e9,10",
        ],
        vec![
            "predict",
            "--checkpoint",
            model,
            "--image",
            &p("garbage.png"),
            "--box",
            "1,1,5,5",
        ],
        vec![
            "predict",
            "--checkpoint",
            &p("garbage.safetensors"),
            "--image",
            &p("thin.png"),
        ],
        vec![
            "predict",
            "--checkpoint",
            model,
            "--image",
            &p("thin.png"),
            "--image-size",
            "0",
        ],
        vec![
            "predict",
            "--checkpoint",
            model,
            "--image",
            &p("thin.png"),
            "--image-size",
            "7",
        ],
        vec![
            "predict",
            "--checkpoint",
            model,
            "--image",
            &p("thin.png"),
            "--image-size",
            "99999999",
        ],
        vec![
            "predict",
            "--checkpoint",
            model,
            "--image",
            &p("thin.png"),
            "--point",
            "nan,1,1",
        ],
        // eval and data check on degenerate and empty datasets
        vec![
            "eval",
            "--checkpoint",
            model,
            "--dataset",
            &p("thin-data"),
            "--split",
            "all",
        ],
        vec![
            "eval",
            "--checkpoint",
            model,
            "--dataset",
            &p("empty-data"),
            "--split",
            "all",
        ],
        vec![
            "eval",
            "--checkpoint",
            model,
            "--dataset",
            &p("missing"),
            "--split",
            "all",
        ],
        vec!["data", "check", "--dataset", &p("thin-data")],
        vec!["data", "check", "--dataset", &p("empty-data")],
        // adapt and train: degenerate data, bad sizes
        vec![
            "adapt",
            "--checkpoint",
            model,
            "--dataset",
            &p("thin-data"),
            "--epochs",
            "1",
            "--eval-split",
            "train",
            "--out",
            &out("adapt"),
        ],
        vec![
            "adapt",
            "--checkpoint",
            model,
            "--dataset",
            &p("empty-data"),
            "--epochs",
            "1",
            "--out",
            &out("adapt-empty"),
        ],
        vec![
            "adapt",
            "--checkpoint",
            model,
            "--dataset",
            &p("thin-data"),
            "--image-size",
            "0",
            "--out",
            &out("adapt-size"),
        ],
        vec![
            "train",
            "--checkpoint",
            model,
            "--dataset",
            &p("thin-data"),
            "--epochs",
            "1",
            "--eval-split",
            "train",
            "--out",
            &out("train"),
        ],
        // the other commands
        vec![
            "corrupt",
            "--dataset",
            &p("thin-data"),
            "--corruption",
            "fog",
            "--out",
            &out("c"),
        ],
        vec![
            "merge",
            "--checkpoint",
            &p("garbage.safetensors"),
            "--out",
            &out("m.safetensors"),
        ],
        vec![
            "merge",
            "--checkpoint",
            model,
            "--lora",
            &p("garbage.safetensors"),
            "--out",
            &out("m2.safetensors"),
        ],
        vec![
            "synth",
            "--domain",
            "fog",
            "--count",
            "0",
            "--out",
            &out("s"),
        ],
        vec![
            "synth",
            "--domain",
            "fog",
            "--count",
            "1",
            "--image-size",
            "0",
            "--out",
            &out("s0"),
        ],
        vec![
            "bench",
            "step",
            "--model-type",
            "vit-b",
            "--image-size",
            "0",
        ],
        // prompts that are not numbers, or far off the image; weights of no known architecture
        vec!["predict", "--checkpoint", model, "--box=NaN,-1e30,1e30,inf"],
        vec!["predict", "--checkpoint", model, "--point=-1e38,1e38,1"],
        vec!["eval", "--checkpoint", &pth, "--dataset", &p("thin-data")],
        vec![
            "adapt",
            "--lr",
            "1e30",
            "--epochs",
            "1",
            "--out",
            &out("lr"),
        ],
    ]
    .into_iter()
    .map(|c| c.into_iter().map(String::from).collect())
    .collect();
    let mut crashes = Vec::new();
    for args in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = common::wesam(&args);
        if o.status.code().is_none_or(|c| CRASHES.contains(&c)) {
            let err = stderr(&o);
            let first = err.lines().find(|l| l.contains("panicked")).unwrap_or("");
            crashes.push(format!("wesam {}: {:?} {first}", args.join(" "), o.status));
        }
    }
    assert!(crashes.is_empty(), "crashed:\n{}", crashes.join("\n"));
}
