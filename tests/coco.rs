//! COCO loader: a generated dataset covering every segmentation form, the compressed RLE decoder,
//! and (when `../shared/data` is present) the real tiny COCO val2017 subset.

use std::path::Path;

use image::{GrayImage, RgbImage};
use wesam::data::datasets::coco::{rle_counts_from_string, Coco};
use wesam::data::{Dataset, DatasetOptions, Sample, Split};

/// A generated COCO dataset: images 1..=11 (11 is listed but missing on disk); 2 has no
/// annotation, 4 only a crowd one; 3 has a two-polygon object (31), an uncompressed RLE (32), a
/// compressed RLE (33) and a crowd RLE (34).
const FIXTURE_JSON: &str = r#"{"images": [
 {"id": 1, "file_name": "000001.png", "height": 3, "width": 4},
 {"id": 2, "file_name": "000002.png", "height": 3, "width": 4},
 {"id": 3, "file_name": "000003.png", "height": 6, "width": 8},
 {"id": 4, "file_name": "000004.png", "height": 3, "width": 4},
 {"id": 5, "file_name": "000005.png", "height": 3, "width": 4},
 {"id": 6, "file_name": "000006.png", "height": 3, "width": 4},
 {"id": 7, "file_name": "000007.png", "height": 3, "width": 4},
 {"id": 8, "file_name": "000008.png", "height": 3, "width": 4},
 {"id": 9, "file_name": "000009.png", "height": 3, "width": 4},
 {"id": 10, "file_name": "000010.png", "height": 3, "width": 4},
 {"id": 11, "file_name": "000011.png", "height": 3, "width": 4}],
"annotations": [
 {"category_id": 1, "id": 31, "image_id": 3, "iscrowd": 0, "bbox": [0.9, 0.7, 7.0, 5.2],
  "segmentation": [[1.2, 0.7, 6.4, 1.1, 5.0, 4.8, 0.9, 3.6], [3.5, 3.5, 7.9, 3.5, 7.9, 5.9, 3.5, 5.9]]},
 {"category_id": 1, "id": 32, "image_id": 3, "iscrowd": 0, "bbox": [0, 0, 2, 3],
  "segmentation": {"size": [6, 8], "counts": [7, 3, 10, 2, 26]}},
 {"category_id": 1, "id": 33, "image_id": 3, "iscrowd": 0, "bbox": [0, 0, 8, 6],
  "segmentation": {"size": [6, 8], "counts": "5173K07ML0N0N02"}},
 {"category_id": 1, "id": 34, "image_id": 3, "iscrowd": 1, "bbox": [4, 0, 4, 6],
  "segmentation": {"size": [6, 8], "counts": [24, 24]}},
 {"category_id": 1, "id": 41, "image_id": 4, "iscrowd": 1, "bbox": [0, 0, 4, 3],
  "segmentation": {"size": [3, 4], "counts": [0, 12]}},
 {"category_id": 1, "id": 11, "image_id": 1, "iscrowd": 0, "bbox": [0.5, 0.5, 2.5, 2],
  "segmentation": [[0.5, 0.5, 3.0, 0.5, 3.0, 2.5, 0.5, 2.5]]},
 {"category_id": 1, "id": 51, "image_id": 5, "iscrowd": 0, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
 {"category_id": 1, "id": 61, "image_id": 6, "iscrowd": 0, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
 {"category_id": 1, "id": 71, "image_id": 7, "iscrowd": 0, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
 {"category_id": 1, "id": 81, "image_id": 8, "iscrowd": 0, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
 {"category_id": 1, "id": 91, "image_id": 9, "iscrowd": 0, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
 {"category_id": 1, "id": 101, "image_id": 10, "iscrowd": 0, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
 {"category_id": 1, "id": 111, "image_id": 11, "iscrowd": 0, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}],
"categories": [{"id": 1, "name": "thing"}]}"#;

/// Masks of image 3 as pycocotools 2.0.11 gives them: `COCO(FIXTURE_JSON).annToMask(ann)` for
/// annotations 31, 32, 33 and 34, one string per row, `#` = 1.
const MASK_31: [&str; 6] = [
    "........", ".#####..", ".#####..", ".####...", "....####", "....####",
];
const MASK_32: [&str; 6] = [
    "........", ".#......", ".#.#....", ".#.#....", "........", "........",
];
const MASK_33: [&str; 6] = [
    ".......#", "..##....", "..##.###", "..##....", "..##....", "#.......",
];
const MASK_34: [&str; 6] = ["....####"; 6];
/// Annotation 11 on image 1 (pycocotools likewise): the polygon's square 0.5..3 x 0.5..2.5.
const MASK_11: [&str; 3] = ["....", ".##.", ".##."];

/// A fresh empty directory for one test.
/// Removed with its contents when dropped: keep it bound while its path is used.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("wesam-coco-{name}-"))
        .tempdir()
        .unwrap()
}

/// Writes a dataset: `annotations/instances_<split>.json` and a black PNG per listed image that
/// exists (all but id 11 for the fixture).
fn write_dataset(dir: &Path, split: &str, json: &str) {
    std::fs::create_dir_all(dir.join("annotations")).unwrap();
    std::fs::create_dir_all(dir.join(split)).unwrap();
    std::fs::write(
        dir.join(format!("annotations/instances_{split}.json")),
        json,
    )
    .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
    for im in parsed["images"].as_array().unwrap() {
        if im["id"] == 11 {
            continue;
        }
        let (w, h) = (
            im["width"].as_u64().unwrap(),
            im["height"].as_u64().unwrap(),
        );
        RgbImage::new(w as u32, h as u32)
            .save(dir.join(split).join(im["file_name"].as_str().unwrap()))
            .unwrap();
    }
}

fn rows(mask: &GrayImage) -> Vec<String> {
    (0..mask.height())
        .map(|y| {
            (0..mask.width())
                .map(|x| match mask.get_pixel(x, y).0[0] {
                    0 => '.',
                    255 => '#',
                    _ => '?',
                })
                .collect()
        })
        .collect()
}

fn keys(ds: &Coco, split: Split) -> Vec<u64> {
    ds.records(split).iter().map(|r| r.key).collect()
}

fn load_key(ds: &Coco, key: u64) -> Sample {
    let record = ds
        .records(Split::All)
        .into_iter()
        .find(|r| r.key == key)
        .unwrap();
    ds.load(&record).unwrap()
}

fn assert_box(actual: [f32; 4], expected: [f32; 4]) {
    for (a, e) in actual.iter().zip(expected) {
        assert!(
            (a - e).abs() < 1e-5,
            "box {actual:?}, expected {expected:?}"
        );
    }
}

#[test]
fn generated_dataset_splits_and_crowd() {
    let dir_tmp = temp_dir("splits");
    let dir = dir_tmp.path().to_path_buf();
    write_dataset(&dir, "val2017", FIXTURE_JSON);
    let ds = Coco::open(&dir, &DatasetOptions::default()).unwrap();
    // Image 2 (no annotation) and 4 (crowd only) are dropped, 11 is missing on disk.
    assert_eq!(keys(&ds, Split::All), vec![1, 3, 5, 6, 7, 8, 9, 10]);
    assert_eq!(keys(&ds, Split::Train), vec![1, 3, 5, 6, 7, 8, 10]);
    assert_eq!(keys(&ds, Split::Test), vec![9]);
    assert!(keys(&ds, Split::Val).is_empty());
    let issues = ds.index_issues();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].file.ends_with("000011.png"), "{issues:?}");
    let record = &ds.records(Split::All)[1];
    assert_eq!(record.id, "000003");
    assert_eq!(record.image, dir.join("val2017/000003.png"));
    assert_eq!(load_key(&ds, 3).instances.len(), 3);

    let crowd = DatasetOptions {
        include_crowd: true,
        ..Default::default()
    };
    let ds = Coco::open(&dir, &crowd).unwrap();
    assert_eq!(keys(&ds, Split::All), vec![1, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(keys(&ds, Split::Test), vec![8]);
    assert_eq!(load_key(&ds, 3).instances.len(), 4);

    let options = DatasetOptions {
        interleave: Some(2),
        ..Default::default()
    };
    let ds = Coco::open(&dir, &options).unwrap();
    assert_eq!(keys(&ds, Split::Test), vec![5, 8]);
    assert_eq!(keys(&ds, Split::Train), vec![1, 3, 6, 7, 9, 10]);

    let options = DatasetOptions {
        val_fraction: 0.3,
        ..Default::default()
    };
    let ds = Coco::open(&dir, &options).unwrap();
    assert_eq!(keys(&ds, Split::Train), vec![1, 3, 5, 6, 7]);
    assert_eq!(keys(&ds, Split::Val), vec![8, 10]);
    assert_eq!(keys(&ds, Split::Test), vec![9]);
}

#[test]
fn generated_dataset_masks_match_pycocotools() {
    let dir_tmp = temp_dir("masks");
    let dir = dir_tmp.path().to_path_buf();
    write_dataset(&dir, "val2017", FIXTURE_JSON);
    let crowd = DatasetOptions {
        include_crowd: true,
        ..Default::default()
    };
    // The annotation file itself as the dataset path.
    let ds = Coco::open(&dir.join("annotations/instances_val2017.json"), &crowd).unwrap();
    let sample = load_key(&ds, 3);
    assert_eq!(sample.image.dimensions(), (8, 6));
    let expected = [
        (MASK_31, [0.9, 0.7, 7.9, 5.9]),
        (MASK_32, [0.0, 0.0, 2.0, 3.0]),
        (MASK_33, [0.0, 0.0, 8.0, 6.0]),
        (MASK_34, [4.0, 0.0, 8.0, 6.0]),
    ];
    for (i, (instance, (mask, bbox))) in sample.instances.iter().zip(expected).enumerate() {
        assert_eq!(rows(&instance.mask), mask, "instance {i}");
        assert_box(instance.bbox, bbox);
    }
    let sample = load_key(&ds, 1);
    assert_eq!(rows(&sample.instances[0].mask), MASK_11);
    assert_box(sample.instances[0].bbox, [0.5, 0.5, 3.0, 2.5]);
}

#[test]
fn compressed_rle_strings_decode() {
    // pycocotools.mask.encode of a 6x8 mask (the fixture's annotation 33) and its runs.
    assert_eq!(
        rle_counts_from_string("5173K07ML0N0N02").unwrap(),
        vec![5, 1, 7, 4, 2, 4, 9, 1, 5, 1, 3, 1, 1, 1, 3]
    );
    // pycocotools.mask.encode of a 40x60 mask: rows 3..30 x columns 10..50 without rows 10, 11,
    // plus row 35; its 281 runs start 35, 1, 39, 1 and end 1, 39, 1, 4 (sum 2400 = 40 * 60).
    let long = format!(
        "S11W100000000000000000PO{}6K;3_OR10000000000000000000mN",
        "6K;3_O2".repeat(39)
    );
    let runs = rle_counts_from_string(&long).unwrap();
    assert_eq!(runs.len(), 281);
    assert_eq!(runs[..4], [35, 1, 39, 1]);
    assert_eq!(runs[277..], [1, 39, 1, 4]);
    assert_eq!(runs.iter().sum::<u64>(), 2400);
    // A string ending inside a run, a character outside '0'..='o', and a negative run.
    assert!(rle_counts_from_string("5S").is_err());
    assert!(rle_counts_from_string("51~").is_err());
    assert!(rle_counts_from_string("O").is_err());
}

#[test]
fn errors_name_the_file_and_annotation() {
    let dir_tmp = temp_dir("errors");
    let dir = dir_tmp.path().to_path_buf();
    let json = r#"{"images": [{"id": 7, "file_name": "a.png", "height": 3, "width": 4},
        {"id": 8, "file_name": "b.png", "height": 5, "width": 4},
        {"id": 9, "file_name": "c.png", "height": 5, "width": 4}],
      "annotations": [
        {"id": 77, "image_id": 7, "iscrowd": 0, "bbox": [0, 0, 1, 1],
         "segmentation": {"size": [3, 4], "counts": [5, 9]}},
        {"id": 88, "image_id": 8, "iscrowd": 0, "bbox": [0, 0, 1, 1],
         "segmentation": [[0, 0, 2, 0, 2, 2]]},
        {"id": 99, "image_id": 9, "iscrowd": 0, "bbox": [0, 0, 1, 1],
         "segmentation": [[0, 0, 1e300, 0, 2, 2]]}]}"#;
    write_dataset(&dir, "train2017", json);
    // b.png is written at the json's size; make it disagree.
    RgbImage::new(4, 4)
        .save(dir.join("train2017/b.png"))
        .unwrap();
    // The only instances_*.json, not val2017, is found.
    let ds = Coco::open(&dir, &DatasetOptions::default()).unwrap();
    let records = ds.records(Split::All);
    let err = format!("{:#}", ds.load(&records[0]).unwrap_err());
    assert!(
        err.contains("instances_train2017.json") && err.contains("annotation 77"),
        "{err}"
    );
    let err = format!("{:#}", ds.load(&records[1]).unwrap_err());
    assert!(err.contains("b.png") && err.contains("4x4"), "{err}");
    let err = format!("{:#}", ds.load(&records[2]).unwrap_err());
    assert!(
        err.contains("annotation 99") && err.contains("out of range"),
        "{err}"
    );

    let empty_tmp = temp_dir("no-annotations");
    let empty = empty_tmp.path().to_path_buf();
    let err = format!(
        "{:#}",
        Coco::open(&empty, &DatasetOptions::default()).unwrap_err()
    );
    assert!(err.contains("annotations"), "{err}");
    std::fs::write(dir.join("annotations/instances_val2014.json"), json).unwrap();
    let err = format!(
        "{:#}",
        Coco::open(&dir, &DatasetOptions::default()).unwrap_err()
    );
    assert!(err.contains("several"), "{err}");
}

/// The real subset, `../shared/data/coco-val2017-tiny` next to the crate (absent in a user's
/// clone). Expected numbers measured with pycocotools 2.0.11 on its `instances_val2017.json`:
/// `COCO(json).annToMask(ann).sum()` per annotation, the instance's index being its position among
/// the image's annotations in file order.
#[test]
fn real_tiny_coco() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/coco-val2017-tiny");
    if !root.is_dir() {
        eprintln!("skipped: {} is absent", root.display());
        return;
    }
    let plain = Coco::open(&root, &DatasetOptions::default()).unwrap();
    let crowd = Coco::open(
        &root,
        &DatasetOptions {
            include_crowd: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(plain.index_issues().is_empty());
    assert_eq!(plain.records(Split::All).len(), 80);
    assert_eq!(plain.records(Split::Train).len(), 69);
    assert_eq!(
        keys(&plain, Split::Test),
        vec![47112, 119828, 173057, 223747, 261888, 324614, 349184, 385029, 435206, 485895, 555009]
    );
    let (mut n_plain, mut n_crowd, mut area_crowd) = (0, 0, 0);
    for (a, b) in plain
        .records(Split::All)
        .iter()
        .zip(crowd.records(Split::All))
    {
        assert_eq!(a, &b);
        n_plain += plain.load(a).unwrap().instances.len();
        let sample = crowd.load(&b).unwrap();
        n_crowd += sample.instances.len();
        area_crowd += sample
            .instances
            .iter()
            .map(|i| wesam::data::mask::area(&i.mask))
            .sum::<usize>();
    }
    assert_eq!((n_plain, n_crowd), (804, 815), "11 crowd annotations");
    // Sum of annToMask areas over all 815 annotations (7962109 non-crowd + 111159 crowd).
    assert_eq!(area_crowd, 8_073_268);

    // (image id, index, annotation id: polygons, area, bbox)
    let cases: [(u64, usize, &str, usize, [f32; 4]); 6] = [
        (
            184324,
            2,
            "136541: 3 polygons",
            1243,
            [276.71, 237.19, 344.87, 270.38],
        ),
        (
            478721,
            8,
            "1374232: 3 polygons",
            2507,
            [368.34, 237.92, 433.31, 286.73],
        ),
        (
            532481,
            0,
            "508910: 1 polygon",
            2184,
            [250.82, 168.26, 320.93, 233.14],
        ),
        (
            532481,
            1,
            "1342996: 1 polygon",
            83,
            [435.35, 294.23, 448.81, 302.04],
        ),
        (
            184324,
            31,
            "900100184324: crowd RLE",
            32885,
            [3.0, 199.0, 597.0, 424.0],
        ),
        (
            491008,
            25,
            "906200491008: crowd RLE",
            733,
            [0.0, 257.0, 202.0, 426.0],
        ),
    ];
    for (image, index, what, area, bbox) in cases {
        let instance = &load_key(&crowd, image).instances[index];
        assert_eq!(wesam::data::mask::area(&instance.mask), area, "{what}");
        assert_box(instance.bbox, bbox);
    }
}

/// A `file_name` that leaves the image folder is refused, and annotations with an empty
/// segmentation are left out and counted, instead of becoming instances of no pixel.
#[test]
fn file_names_outside_the_folder_and_empty_segmentations_are_left_out() {
    let dir_tmp = temp_dir("outside");
    let dir = dir_tmp.path().to_path_buf();
    let json = r#"{"images": [{"id": 1, "file_name": "a.png", "height": 3, "width": 4},
        {"id": 2, "file_name": "../outside.png", "height": 3, "width": 4},
        {"id": 3, "file_name": "/etc/hostname", "height": 3, "width": 4}],
      "annotations": [
        {"id": 10, "image_id": 1, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
        {"id": 11, "image_id": 1, "bbox": [0, 0, 1, 1], "segmentation": []},
        {"id": 12, "image_id": 1, "bbox": [0, 0, 1, 1], "segmentation": [[1, 2]]},
        {"id": 13, "image_id": 1, "bbox": [0, 0, 1, 1],
         "segmentation": {"size": [3, 4], "counts": [12]}},
        {"id": 14, "image_id": 1, "bbox": [0, 0, 1, 1],
         "segmentation": [[100, 100, 120, 100, 120, 120]]},
        {"id": 20, "image_id": 2, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2]]},
        {"id": 30, "image_id": 3, "bbox": [0, 0, 2, 2], "segmentation": [[0, 0, 2, 0, 2, 2]]}]}"#;
    std::fs::create_dir_all(dir.join("annotations")).unwrap();
    std::fs::create_dir_all(dir.join("train2017")).unwrap();
    std::fs::write(dir.join("annotations/instances_train2017.json"), json).unwrap();
    RgbImage::new(4, 3)
        .save(dir.join("train2017/a.png"))
        .unwrap();
    RgbImage::new(4, 3).save(dir.join("outside.png")).unwrap();
    let ds = Coco::open(&dir, &DatasetOptions::default()).unwrap();
    let issues: Vec<String> = ds.index_issues().into_iter().map(|i| i.reason).collect();
    let all = issues.join("\n");
    assert!(all.contains("\"../outside.png\" points outside"), "{all}");
    assert!(all.contains("\"/etc/hostname\" points outside"), "{all}");
    assert!(
        all.contains("3 annotations with an empty segmentation left out (ids 11, 12, 13)"),
        "{all}"
    );
    let records = ds.records(Split::All);
    assert_eq!(records.len(), 1);
    // Annotation 14 lies wholly outside its image: no instance either.
    let sample = ds.load(&records[0]).unwrap();
    assert_eq!(sample.instances.len(), 1);
    assert_eq!(rows(&sample.instances[0].mask), ["##..", "##..", "...."]);
}
