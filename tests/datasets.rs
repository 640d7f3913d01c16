//! Every dataset layout, generated small in a temporary folder: which files are paired or left
//! out (and why), split sizes by the reference's rules, instances and boxes, errors that name
//! the file, and `wesam data check` on the result.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
use wesam::data::datasets::{self, DatasetSpec};
use wesam::data::{mask, Dataset, DatasetOptions, InstanceMode, Split};

/// A fresh, empty folder for one test, removed with its contents when dropped: keep it bound
/// while its path is used.
fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("wesam-datasets-{name}-"))
        .tempdir()
        .unwrap()
}

fn parent(path: &Path) -> &Path {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    path
}

/// An RGB image (PNG or JPEG by extension).
fn image(path: &Path, w: u32, h: u32) {
    RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, 90]))
        .save(parent(path))
        .unwrap();
}

/// A grey mask with the given value at each pixel.
fn gray(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    GrayImage::from_fn(w, h, |x, y| Luma([f(x, y)]))
        .save(parent(path))
        .unwrap();
}

/// `v` inside the half-open rectangle `[x0, x1) x [y0, y1)`.
fn rect(x: u32, y: u32, [x0, y0, x1, y1]: [u32; 4]) -> bool {
    (x0..x1).contains(&x) && (y0..y1).contains(&y)
}

fn open(name: &str, root: Option<&Path>, options: DatasetOptions) -> Box<dyn Dataset> {
    datasets::open(&DatasetSpec {
        name: name.to_string(),
        root: root.map(Path::to_path_buf),
        options,
    })
    .unwrap()
}

fn sizes(ds: &dyn Dataset) -> [usize; 4] {
    [Split::Train, Split::Val, Split::Test, Split::All].map(|s| ds.records(s).len())
}

fn ids(ds: &dyn Dataset, split: Split) -> Vec<String> {
    ds.records(split).into_iter().map(|r| r.id).collect()
}

/// The reason given for a file left out while indexing (panics when it is not reported).
fn reason_for(ds: &dyn Dataset, file_end: &str) -> String {
    let issues = ds.index_issues();
    issues
        .iter()
        .find(|i| i.file.ends_with(file_end))
        .unwrap_or_else(|| panic!("{file_end} not reported in {issues:?}"))
        .reason
        .clone()
}

fn boxes(ds: &dyn Dataset, id: &str) -> Vec<[f32; 4]> {
    let record = ds
        .records(Split::All)
        .into_iter()
        .find(|r| r.id == id)
        .unwrap();
    let sample = ds.load(&record).unwrap();
    sample.instances.iter().map(|i| i.bbox).collect()
}

/// A folder dataset with one of each problem: `a` holds labels 3 (24 px) and 9 (2 px, tiny);
/// `b` a 3-channel mask; `c` an empty mask; `d` no mask; `e` no image; `f` a mask of another
/// size than its image; `._a.png` is a hidden macOS companion file, ignored.
fn problem_folder(root: &Path) {
    for name in ["a.png", "b.jpg", "c.png", "d.png", "f.png"] {
        image(&root.join("images").join(name), 20, 10);
    }
    std::fs::write(root.join("images/._a.png"), "not an image").unwrap();
    gray(&root.join("masks/a.png"), 20, 10, |x, y| {
        if rect(x, y, [2, 1, 8, 5]) {
            3
        } else if rect(x, y, [15, 8, 17, 9]) {
            9
        } else {
            0
        }
    });
    RgbImage::from_fn(20, 10, |x, y| {
        Rgb(if rect(x, y, [10, 0, 20, 10]) {
            [255; 3]
        } else {
            [0; 3]
        })
    })
    .save(root.join("masks/b.png"))
    .unwrap();
    gray(&root.join("masks/c.png"), 20, 10, |_, _| 0);
    gray(&root.join("masks/e.png"), 20, 10, |_, _| 255);
    gray(&root.join("masks/f.png"), 12, 10, |_, _| 255);
}

#[test]
fn folder_pairs_files_decodes_instances_and_reports_the_rest() {
    let dir = scratch("folder");
    let root = dir.path().to_path_buf();
    problem_folder(&root);
    let ds = open(root.to_str().unwrap(), None, DatasetOptions::default());
    assert_eq!(ids(ds.as_ref(), Split::All), ["a", "b", "c", "f"]);
    assert_eq!(sizes(ds.as_ref()), [4, 0, 0, 4]); // 4 < 6: one short group, all train
    assert!(reason_for(ds.as_ref(), "images/d.png").contains("no mask"));
    assert!(reason_for(ds.as_ref(), "masks/e.png").contains("without an image"));
    assert_eq!(ds.index_issues().len(), 2);

    assert_eq!(
        boxes(ds.as_ref(), "a"),
        [[2.0, 1.0, 8.0, 5.0], [15.0, 8.0, 17.0, 9.0]]
    );
    assert_eq!(boxes(ds.as_ref(), "b"), [[10.0, 0.0, 20.0, 10.0]]);
    assert!(boxes(ds.as_ref(), "c").is_empty());
    let f = ds.records(Split::All).pop().unwrap();
    let err = format!("{:#}", ds.load(&f).unwrap_err());
    assert!(
        err.contains("masks/f.png") && err.contains("images/f.png") && err.contains("12x10"),
        "{err}"
    );

    let components = open(
        "folder",
        Some(&root),
        DatasetOptions {
            instances: Some(InstanceMode::Components),
            ..Default::default()
        },
    );
    let a = components.load(&components.records(Split::All)[0]).unwrap();
    assert_eq!(a.instances.len(), 2);
    assert_eq!(mask::area(&a.instances[0].mask), 24); // largest first
}

#[test]
fn folder_splits_interleave_carve_val_or_follow_split_files() {
    let dir = scratch("splits");
    let root = dir.path().to_path_buf();
    for i in 0..13 {
        image(&root.join(format!("images/{i:02}.png")), 4, 4);
        gray(&root.join(format!("masks/{i:02}.png")), 4, 4, |x, _| {
            (x == 1) as u8 * 255
        });
    }
    let with = |interleave, val_fraction| {
        let options = DatasetOptions {
            interleave,
            val_fraction,
            ..Default::default()
        };
        sizes(open("folder", Some(&root), options).as_ref())
    };
    assert_eq!(with(None, 0.0), [11, 0, 2, 13]);
    assert_eq!(with(None, 0.2), [9, 2, 2, 13]); // round(0.2 * 11) = 2
    assert_eq!(with(Some(2), 0.0), [9, 0, 4, 13]);
    let ds = open("folder", Some(&root), DatasetOptions::default());
    assert_eq!(ids(ds.as_ref(), Split::Test), ["05", "11"]);

    std::fs::create_dir_all(root.join("splits")).unwrap();
    std::fs::write(root.join("splits/train.txt"), "00\n01\n02\n03\nnope\n\n").unwrap();
    std::fs::write(root.join("splits/test.txt"), "12\n").unwrap();
    assert_eq!(with(None, 0.5), [2, 2, 1, 13]);
    let ds = open("folder", Some(&root), DatasetOptions::default());
    assert!(reason_for(ds.as_ref(), "splits/train.txt").contains("line 5: `nope`"));
    std::fs::write(root.join("splits/val.txt"), "04\n05\n06\n").unwrap();
    assert_eq!(with(None, 0.5), [4, 3, 1, 13]); // val.txt wins over val_fraction
    std::fs::remove_file(root.join("splits/test.txt")).unwrap();
    let err = datasets::open(&DatasetSpec {
        name: "folder".into(),
        root: Some(root.clone()),
        options: DatasetOptions::default(),
    })
    .err()
    .unwrap();
    assert!(format!("{err:#}").contains("splits/test.txt"), "{err:#}");
}

/// Kvasir-style 3-channel JPEG mask: white rectangles, plus faint noise (grey 40) that only a
/// threshold of 0 keeps.
fn jpeg_mask(path: &Path, rects: &[[u32; 4]]) {
    RgbImage::from_fn(64, 48, |x, y| {
        let v = if rects.iter().any(|&r| rect(x, y, r)) {
            255
        } else if rect(x, y, [56, 40, 60, 44]) {
            40
        } else {
            0
        };
        Rgb([v; 3])
    })
    .save(parent(path))
    .unwrap();
}

#[test]
fn kvasir_without_box_file_splits_five_to_one_into_components() {
    let dir = scratch("kvasir");
    let root = dir.path().join("Kvasir-SEG");
    for i in 0..7 {
        image(&root.join(format!("images/p{i}.jpg")), 64, 48);
        jpeg_mask(
            &root.join(format!("masks/p{i}.jpg")),
            &[[8, 8, 32, 32], [40, 8, 48, 16]],
        );
    }
    let raw = image::open(root.join("masks/p0.jpg")).unwrap().to_luma8();
    assert!(
        raw.pixels().any(|p| (1..127).contains(&p.0[0])),
        "the JPEG mask should be noisy"
    );
    // given as the folder that holds Kvasir-SEG
    let ds = open("kvasir", root.parent(), DatasetOptions::default());
    assert_eq!(sizes(ds.as_ref()), [6, 0, 1, 7]);
    assert_eq!(ids(ds.as_ref(), Split::Test), ["p5"]);
    let b = boxes(ds.as_ref(), "p0");
    assert_eq!(b.len(), 2);
    for (got, want) in b
        .iter()
        .zip([[8.0, 8.0, 32.0, 32.0], [40.0, 8.0, 48.0, 16.0]])
    {
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 1.0),
            "{got:?} vs {want:?}"
        );
    }
    let zero = DatasetOptions {
        mask_threshold: 0,
        ..Default::default()
    };
    let noisy = open("kvasir", Some(&root), zero);
    assert!(boxes(noisy.as_ref(), "p0").len() > 2);
}

#[test]
fn kvasir_box_file_orders_the_split_and_claims_foreground_by_box() {
    let dir = scratch("kvasir-json");
    let root = dir.path().to_path_buf();
    for id in ["c", "a", "b", "d"] {
        image(&root.join(format!("images/{id}.jpg")), 64, 48);
        jpeg_mask(
            &root.join(format!("masks/{id}.jpg")),
            &[[8, 8, 16, 16], [24, 8, 32, 16], [40, 32, 48, 40]],
        );
    }
    let entry = r#"{"height": 48, "width": 64, "bbox": [
        {"label": "polyp", "xmin": 4, "ymin": 4, "xmax": 20, "ymax": 20},
        {"label": "polyp", "xmin": 22, "ymin": 6, "xmax": 34, "ymax": 18}]}"#;
    let json = format!(r#"{{"c": {entry}, "zz": {entry}, "a": {entry}, "b": {entry}}}"#);
    std::fs::write(root.join("kavsir_bboxes.json"), json).unwrap();
    let ds = open("kvasir", Some(&root), DatasetOptions::default());
    assert_eq!(ids(ds.as_ref(), Split::All), ["c", "a", "b"]); // key order, not sorted
    assert!(reason_for(ds.as_ref(), "kavsir_bboxes.json").contains("`zz`"));
    assert!(reason_for(ds.as_ref(), "images/d.jpg").contains("not in kavsir_bboxes.json"));
    let a = ds.load(&ds.records(Split::All)[1]).unwrap();
    assert_eq!(a.instances.len(), 2); // the third blob lies in no box: dropped
    assert_eq!(a.instances[0].bbox, [4.0, 4.0, 20.0, 20.0]);
    assert_eq!(a.instances[1].bbox, [22.0, 6.0, 34.0, 18.0]);
    let area = mask::area(&a.instances[0].mask);
    assert!((60..=68).contains(&area), "{area}");
}

#[test]
fn isic_finds_the_2016_2017_and_2018_layouts() {
    let d16 = scratch("isic16");
    let r16 = d16.path().to_path_buf();
    let (data, gt) = (
        "ISBI2016_ISIC_Part1_Training_Data",
        "ISBI2016_ISIC_Part1_Training_GroundTruth",
    );
    let mut train_csv = String::from(",image,mask\n");
    for i in 0..4 {
        if i != 2 {
            image(&r16.join(format!("{data}/ISIC_{i}.jpg")), 8, 6);
        }
        gray(
            &r16.join(format!("{gt}/ISIC_{i}_Segmentation.png")),
            8,
            6,
            |x, _| (x < 3) as u8 * 255,
        );
        train_csv += &format!("{i},{data}/ISIC_{i}.jpg,{gt}/ISIC_{i}_Segmentation.png\n");
    }
    std::fs::write(
        r16.join("ISBI2016_ISIC_Part1_Training_GroundTruth.csv"),
        train_csv,
    )
    .unwrap();
    std::fs::write(
        r16.join("ISBI2016_ISIC_Part1_Test_GroundTruth.csv"),
        format!(",image,mask\n0,{data}/ISIC_0.jpg,{gt}/ISIC_0_Segmentation.png\n"),
    )
    .unwrap();
    let ds = open("isic", Some(&r16), DatasetOptions::default());
    assert_eq!(sizes(ds.as_ref()), [3, 0, 1, 3]);
    assert!(reason_for(ds.as_ref(), "ISIC_2.jpg").contains("line 4"));
    assert_eq!(boxes(ds.as_ref(), "ISIC_1"), [[0.0, 0.0, 3.0, 6.0]]);

    let d17 = scratch("isic17");
    let r17 = d17.path().to_path_buf();
    for (set, n) in [("Training", 3), ("Validation", 1), ("Test_v2", 2)] {
        for i in 0..n {
            image(
                &r17.join(format!("ISIC-2017_{set}_Data/ISIC_{i}.jpg")),
                8,
                6,
            );
            let m = format!("ISIC-2017_{set}_Part1_GroundTruth/ISIC_{i}_segmentation.png");
            gray(&r17.join(m), 8, 6, |_, _| 255);
        }
    }
    // files that are not images of the set are ignored
    image(
        &r17.join("ISIC-2017_Training_Data/ISIC_0_superpixels.png"),
        8,
        6,
    );
    std::fs::write(r17.join("ISIC-2017_Training_Data/meta.csv"), "x").unwrap();
    let half = DatasetOptions {
        val_fraction: 0.5,
        ..Default::default()
    };
    let ds = open("isic", Some(&r17), half);
    assert_eq!(sizes(ds.as_ref()), [3, 1, 2, 6]); // the official val, not a carved one
    assert!(ds.index_issues().is_empty(), "{:?}", ds.index_issues());

    let d18 = scratch("isic18");
    let r18 = d18.path().to_path_buf();
    for i in 0..2 {
        image(
            &r18.join(format!("ISIC2018_Task1-2_Training_Input/ISIC_{i}.jpg")),
            8,
            6,
        );
        let m = format!("ISIC2018_Task1_Training_GroundTruth/ISIC_{i}_segmentation.png");
        gray(&r18.join(m), 8, 6, |_, _| 255);
    }
    let ds = open("isic", Some(&r18), DatasetOptions::default());
    assert_eq!(sizes(ds.as_ref()), [2, 0, 0, 2]);

    let none_dir = scratch("isic-none");
    let none = none_dir.path().to_path_buf();
    let err = datasets::open(&DatasetSpec {
        name: "isic".into(),
        root: Some(none.clone()),
        options: DatasetOptions::default(),
    })
    .err()
    .unwrap();
    assert!(err.to_string().contains(none.to_str().unwrap()), "{err}");
}

#[test]
fn camo_keeps_pairs_of_one_size_in_the_official_split() {
    let dir = scratch("camo");
    let root = dir.path().join("CAMO-V.1.0-CVIU2019");
    for (set, ids) in [
        ("Train", ["t0", "t1", "t2"].as_slice()),
        ("Test", &["s0", "s1"]),
    ] {
        for id in ids {
            image(&root.join(format!("Images/{set}/{id}.jpg")), 10, 8);
            let w = if *id == "t1" { 9 } else { 10 };
            gray(&root.join(format!("GT/{id}.png")), w, 8, |x, _| {
                (x > 4) as u8 * 255
            });
        }
    }
    gray(&root.join("GT/extra.png"), 10, 8, |_, _| 0);
    let ds = open("camo", root.parent(), DatasetOptions::default());
    assert_eq!(sizes(ds.as_ref()), [2, 0, 2, 4]);
    assert_eq!(ids(ds.as_ref(), Split::Train), ["t0", "t2"]);
    let mismatch = reason_for(ds.as_ref(), "Train/t1.jpg");
    assert!(
        mismatch.contains("GT/t1.png") && mismatch.contains("9x8"),
        "{mismatch}"
    );
    assert!(reason_for(ds.as_ref(), "GT/extra.png").contains("without an image"));
}

#[test]
fn cod10k_drops_empty_ground_truths_and_splits_four_to_one() {
    let dir = scratch("cod10k");
    let test = dir.path().join("COD10K-v2/Test");
    for i in 0..11 {
        image(&test.join(format!("Image/c{i:02}.jpg")), 6, 6);
        gray(
            &test.join(format!("GT_Object/c{i:02}.png")),
            6,
            6,
            |x, y| (i != 3 && x == y) as u8 * 255,
        );
    }
    let ds = open("cod10k", test.parent(), DatasetOptions::default());
    assert_eq!(sizes(ds.as_ref()), [8, 0, 2, 10]);
    assert_eq!(ids(ds.as_ref(), Split::Test), ["c05", "c10"]);
    assert_eq!(
        reason_for(ds.as_ref(), "GT_Object/c03.png"),
        "empty ground truth"
    );
}

#[test]
fn chameleon_serves_every_image_in_every_split() {
    let dir = scratch("chameleon");
    let root = dir.path().to_path_buf();
    for i in 0..3 {
        image(&root.join(format!("CHAMELEON/Imgs/a{i}.jpg")), 6, 6);
        gray(
            &root.join(format!("CHAMELEON/GT/a{i}.png")),
            6,
            6,
            |_, _| 255,
        );
    }
    let ds = open("chameleon", Some(&root), DatasetOptions::default());
    assert_eq!(sizes(ds.as_ref()), [3, 3, 3, 3]);
}

#[test]
fn ocid_finds_sequences_and_drops_floor_and_table_labels() {
    let dir = scratch("ocid");
    let root = dir.path().to_path_buf();
    let table = root.join("ARID20/table/top/seq01");
    let floor = root.join("ARID10/floor/bottom/seq02");
    let labels = |x: u32| match x {
        0 => 1,
        1 => 2,
        2 | 3 => 5,
        4 => 7,
        _ => 0,
    };
    for seq in [&table, &floor] {
        image(&seq.join("rgb/f0.png"), 6, 2);
        gray(&seq.join("label/f0.png"), 6, 2, |x, _| labels(x));
    }
    // only floor and table: left out
    image(&table.join("rgb/f1.png"), 6, 2);
    gray(&table.join("label/f1.png"), 6, 2, |x, _| (x % 2 + 1) as u8);
    // 16-bit labels keep their identity
    image(&floor.join("rgb/f2.png"), 6, 2);
    ImageBuffer::from_fn(6, 2, |x, _| {
        Luma([[1u16, 300, 1000, 1000, 0, 0][x as usize]])
    })
    .save(floor.join("label/f2.png"))
    .unwrap();
    // an image without its label map
    image(&floor.join("rgb/f3.png"), 6, 2);
    let ds = open("ocid", Some(&root), DatasetOptions::default());
    assert_eq!(
        ids(ds.as_ref(), Split::All),
        [
            "ARID10/floor/bottom/seq02/rgb/f0",
            "ARID10/floor/bottom/seq02/rgb/f2",
            "ARID20/table/top/seq01/rgb/f0"
        ]
    );
    assert_eq!(sizes(ds.as_ref()), [3, 0, 0, 3]);
    assert_eq!(
        reason_for(ds.as_ref(), "seq01/label/f1.png"),
        "no object label"
    );
    assert!(reason_for(ds.as_ref(), "seq02/rgb/f3.png").contains("no mask"));
    let all = ds.records(Split::All);
    // labels 2, 5, 7: on the floor, label 2 is an object
    assert_eq!(ds.load(&all[0]).unwrap().instances.len(), 3);
    let sixteen = ds.load(&all[1]).unwrap();
    assert_eq!(
        sixteen.instances.iter().map(|i| i.bbox).collect::<Vec<_>>(),
        [[1.0, 0.0, 2.0, 2.0], [2.0, 0.0, 4.0, 2.0]]
    );
    assert_eq!(
        boxes(ds.as_ref(), &all[2].id),
        [[2.0, 0.0, 4.0, 2.0], [4.0, 0.0, 5.0, 2.0]]
    );
}

#[test]
fn osd_alternates_train_and_test() {
    let dir = scratch("osd");
    let root = dir.path().join("OSD-0.2-depth");
    for i in 0..5 {
        image(&root.join(format!("image_color/o{i}.png")), 4, 4);
        gray(&root.join(format!("annotation/o{i}.png")), 4, 4, |x, _| {
            if i == 2 {
                1
            } else {
                x as u8 + 1
            }
        });
    }
    let ds = open("osd", Some(&root), DatasetOptions::default());
    assert_eq!(sizes(ds.as_ref()), [2, 0, 2, 4]);
    assert_eq!(ids(ds.as_ref(), Split::Test), ["o1", "o4"]);
    assert_eq!(boxes(ds.as_ref(), "o0").len(), 3);
}

#[test]
fn registry_errors_say_what_is_wrong() {
    let err = |name: &str, root: Option<PathBuf>, options: DatasetOptions| {
        let e = datasets::open(&DatasetSpec {
            name: name.into(),
            root,
            options,
        })
        .err()
        .unwrap_or_else(|| panic!("{name} should fail"));
        format!("{e:#}")
    };
    let d = DatasetOptions::default;
    let unknown = err("kvasri", None, d());
    assert!(unknown.contains("kvasir, isic, camo, cod10k, chameleon, ocid, osd, folder"));
    assert!(err("kvasir", None, d()).contains("--data-root"));
    let registry = scratch("registry");
    let missing = registry.path().join("nowhere");
    assert!(err("camo", Some(missing.clone()), d()).contains(missing.to_str().unwrap()));
    let empty_dir = scratch("registry-empty");
    let empty = empty_dir.path().to_path_buf();
    let no_images = err("kvasir", Some(empty.clone()), d());
    assert!(
        no_images.contains(empty.join("images").to_str().unwrap()),
        "{no_images}"
    );
    let folder = err(empty.to_str().unwrap(), None, d());
    assert!(
        folder.contains(empty.join("images").to_str().unwrap()),
        "{folder}"
    );
    let zero = DatasetOptions {
        interleave: Some(0),
        ..d()
    };
    assert!(err("folder", Some(empty.clone()), zero).contains("interleave"));
    let all_val = DatasetOptions {
        val_fraction: 1.0,
        ..d()
    };
    assert!(err("folder", Some(empty), all_val).contains("val_fraction"));
}

fn data_check(args: &[&str]) -> (serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wesam"))
        .args(["data", "check"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let value = if args.contains(&"--json") {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    } else {
        serde_json::Value::String(stdout)
    };
    (value, stderr)
}

#[test]
fn data_check_reports_counts_splits_and_every_skipped_file() {
    let dir = scratch("check");
    let root = dir.path().to_path_buf();
    problem_folder(&root);
    let (report, _) = data_check(&["--dataset", root.to_str().unwrap(), "--json"]);
    assert_eq!(report["images"], 2); // a, b (c is empty, f does not fit its image)
    assert_eq!(report["instances"], 3);
    assert_eq!(
        report["splits"],
        serde_json::json!({"train": 4, "val": 0, "test": 0})
    );
    let skipped: Vec<(String, String)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let f = |k: &str| s[k].as_str().unwrap().to_string();
            (f("file"), f("reason"))
        })
        .collect();
    let find = |end: &str, word: &str| {
        assert!(
            skipped
                .iter()
                .any(|(f, r)| f.ends_with(end) && r.contains(word)),
            "no `{word}` for {end} in {skipped:?}"
        )
    };
    find("images/d.png", "no mask");
    find("masks/e.png", "without an image");
    find("masks/c.png", "empty mask");
    find("masks/f.png", "12x10");
    find("masks/a.png", "instance 2 is tiny: 2 px");
    assert_eq!(skipped.len(), 5);

    let (limited, _) = data_check(&[
        "--dataset",
        "folder",
        "--data-root",
        root.to_str().unwrap(),
        "--limit",
        "1",
        "--val-fraction",
        "0.5",
        "--json",
    ]);
    assert_eq!(limited["images"], 1);
    assert_eq!(limited["instances"], 2);
    assert_eq!(limited["splits"]["val"], 2);

    let (text, _) = data_check(&["--dataset", root.to_str().unwrap()]);
    let text = text.as_str().unwrap();
    assert!(text.contains("2 images, 3 instances"), "{text}");
    assert!(text.contains("splits: train 4, val 0, test 0"), "{text}");
    assert!(text.contains("skipped or suspicious files: 5"), "{text}");
}

/// The bytes of `img` as a JPEG, with an EXIF orientation tag if given.
fn jpeg_bytes(img: &RgbImage, orientation: Option<u16>) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    if let Some(o) = orientation {
        // APP1 after the start-of-image marker: "Exif\0\0", a big-endian TIFF header and one
        // IFD entry, tag 0x0112 (orientation), type SHORT, count 1, value o.
        let mut app1 = vec![0xff, 0xe1, 0, 34];
        app1.extend(b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01");
        app1.extend(o.to_be_bytes());
        app1.extend([0, 0, 0, 0, 0, 0]);
        bytes.splice(2..2, app1);
    }
    bytes
}

/// A truncated JPEG, which decoders fill with grey without a word, is reported by `data check`
/// and left out of an evaluation, named; an image with an EXIF orientation is turned as image
/// viewers show it (its mask then fits it), and `data check` says so.
#[test]
fn truncated_jpegs_are_skipped_and_exif_orientation_is_applied() {
    let dir = scratch("jpeg");
    let root = dir.path();
    let circle = |x: u32, y: u32| {
        if (x as i32 - 40).pow(2) + (y as i32 - 40).pow(2) < 200 {
            1
        } else {
            0
        }
    };
    for name in ["cut", "turned", "plain"] {
        gray(&root.join(format!("masks/{name}.png")), 96, 80, circle);
    }
    let shown = RgbImage::from_fn(96, 80, |x, y| Rgb([(x * 2) as u8, (y * 3) as u8, 90]));
    image(&root.join("images/plain.png"), 96, 80);
    let whole = jpeg_bytes(&shown, None);
    std::fs::write(root.join("images/cut.jpg"), &whole[..whole.len() * 3 / 4]).unwrap();
    // Stored turned a quarter anticlockwise (80 wide, 96 high); orientation 6 turns it back.
    let stored = image::imageops::rotate270(&shown);
    std::fs::write(root.join("images/turned.jpg"), jpeg_bytes(&stored, Some(6))).unwrap();

    let (report, _) = data_check(&["--dataset", root.to_str().unwrap(), "--json"]);
    assert_eq!(report["images"], 2, "{report}");
    let skipped = report["skipped"].to_string();
    assert!(
        skipped.contains("cut.jpg") && skipped.contains("truncated"),
        "{skipped}"
    );
    let oriented = report["oriented"].to_string();
    assert!(
        oriented.contains("turned.jpg") && !oriented.contains("plain"),
        "{oriented}"
    );
    let turned = wesam::io::read_rgb(&root.join("images/turned.jpg")).unwrap();
    assert_eq!(turned.dimensions(), (96, 80));

    let model =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/model.safetensors");
    let out = Command::new(env!("CARGO_BIN_EXE_wesam"))
        .args(["eval", "--checkpoint", model.to_str().unwrap()])
        .args([
            "--dataset",
            root.to_str().unwrap(),
            "--split",
            "all",
            "--json",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("cut.jpg") && err.contains("truncated"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["images"], 2, "{report}");
}
