//! `wesam synth` and its generator: deterministic scenes shared by every domain, datasets the
//! folder loader reads, and target domains that really shift the source's appearance.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{stderr, wesam};

use image::{GrayImage, Luma, RgbImage};
use imageproc::distance_transform::Norm;
use imageproc::morphology::dilate;
use wesam::data::datasets::{self, DatasetSpec};
use wesam::data::synth::{render, Domain, SplitSizes};
use wesam::data::{DatasetOptions, Split};

fn synth(out: &Path, domain: &str, count: usize, extra: &[&str]) -> Output {
    let (count, out) = (count.to_string(), out.to_str().unwrap().to_string());
    let mut args = vec![
        "synth",
        "--domain",
        domain,
        "--count",
        &count,
        "--out",
        &out,
        "--image-size",
        "64",
    ];
    args.extend_from_slice(extra);
    wesam(&args)
}

/// Every file under `dir` with its bytes, by relative path.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["images", "masks", "splits"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = e.unwrap().path();
            out.push((
                p.strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out.push((
        "synth.json".into(),
        std::fs::read(dir.join("synth.json")).unwrap(),
    ));
    out.sort();
    out
}

/// Mean absolute difference of two images in grey levels.
fn mad(a: &RgbImage, b: &RgbImage) -> f64 {
    let sum: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .sum();
    sum / a.as_raw().len() as f64
}

/// Mean over instances of the RGB distance between the mean colour inside an instance and the
/// mean colour of the unlabelled pixels within 3 px of it.
fn object_contrast(images: &[(RgbImage, GrayImage)]) -> f64 {
    let mean = |img: &RgbImage, mask: &dyn Fn(u32, u32) -> bool| {
        let (mut s, mut n) = ([0.0f64; 3], 0.0f64);
        for (x, y, p) in img.enumerate_pixels() {
            if mask(x, y) {
                (0..3).for_each(|c| s[c] += p.0[c] as f64);
                n += 1.0;
            }
        }
        s.map(|v| v / n.max(1.0))
    };
    let (mut total, mut count) = (0.0, 0.0);
    for (img, labels) in images {
        let ids = labels.pixels().map(|p| p.0[0]).max().unwrap_or(0);
        for id in 1..=ids {
            let inside = GrayImage::from_fn(labels.width(), labels.height(), |x, y| {
                Luma([if labels.get_pixel(x, y).0[0] == id {
                    255
                } else {
                    0
                }])
            });
            let grown = dilate(&inside, Norm::LInf, 3);
            let a = mean(img, &|x, y| inside.get_pixel(x, y).0[0] > 0);
            let b = mean(img, &|x, y| {
                grown.get_pixel(x, y).0[0] > 0 && labels.get_pixel(x, y).0[0] == 0
            });
            total += (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>().sqrt();
            count += 1.0;
        }
    }
    total / count
}

#[test]
fn a_scene_depends_on_the_seed_and_index_only() {
    for domain in Domain::ALL {
        let a = render(domain, 5, 2, 64).unwrap();
        assert_eq!(a, render(domain, 5, 2, 64).unwrap(), "{domain}");
        let other_seed = render(domain, 6, 2, 64).unwrap();
        assert_ne!(
            a.0, other_seed.0,
            "{domain}: seeds 5 and 6 gave the same image"
        );
        let other_index = render(domain, 5, 3, 64).unwrap();
        assert_ne!(a.0, other_index.0, "{domain}: images 2 and 3 are the same");
    }
    let o = render(Domain::Source, 0, 0, 8);
    assert!(o.unwrap_err().to_string().contains("size"));
}

#[test]
fn the_command_writes_the_same_bytes_twice() {
    let root = common::scratch();
    let (a, b) = (root.path().join("same-a"), root.path().join("same-b"));
    for dir in [&a, &b] {
        let o = synth(dir, "fog", 3, &["--seed", "9"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(files(&a), files(&b));
    let c = root.path().join("same-c");
    assert!(synth(&c, "fog", 3, &["--seed", "10"]).status.success());
    assert_ne!(files(&a), files(&c));
}

#[test]
fn every_domain_keeps_the_source_scene() {
    for index in 0..8 {
        let (_, source) = render(Domain::Source, 3, index, 96).unwrap();
        assert!(
            source.pixels().any(|p| p.0[0] > 0),
            "image {index} has no object"
        );
        for domain in Domain::ALL {
            let (_, labels) = render(domain, 3, index, 96).unwrap();
            if domain != Domain::Clutter {
                assert_eq!(labels, source, "{domain}, image {index}: masks differ");
                continue;
            }
            // Every clutter instance is the visible part of one source instance.
            let mut to_source = [None; 256];
            for (c, s) in labels.pixels().zip(source.pixels()) {
                let (c, s) = (c.0[0] as usize, s.0[0]);
                if c > 0 {
                    assert_ne!(
                        s, 0,
                        "clutter image {index}: instance {c} outside the source's"
                    );
                    assert_eq!(
                        *to_source[c].get_or_insert(s),
                        s,
                        "clutter instance {c} spans two"
                    );
                }
            }
            let mapped: Vec<u8> = to_source.iter().flatten().copied().collect();
            let mut unique = mapped.clone();
            unique.dedup();
            assert_eq!(
                mapped, unique,
                "clutter image {index}: two instances share a source one"
            );
            assert!(!mapped.is_empty(), "clutter image {index} has no instance");
        }
    }
}

#[test]
fn the_dataset_opens_with_the_folder_loader() {
    let root = common::scratch();
    let dir = root.path().join("dataset");
    let o = synth(&dir, "clutter", 10, &["--seed", "4", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("10 clutter images"), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["domain"], "clutter");
    assert_eq!(report["count"], 10);
    assert_eq!(report["image_size"], 64);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("synth.json")).unwrap()).unwrap();
    assert_eq!(info["version"], report["version"]);
    assert_eq!(
        (info["seed"].as_u64(), info["domain"].as_str()),
        (Some(4), Some("clutter"))
    );

    let spec = DatasetSpec {
        name: "folder".into(),
        root: Some(dir.clone()),
        options: DatasetOptions::default(),
    };
    let ds = datasets::open(&spec).unwrap();
    assert!(ds.index_issues().is_empty(), "{:?}", ds.index_issues());
    let sizes: Vec<usize> = [Split::Train, Split::Val, Split::Test]
        .map(|s| ds.records(s).len())
        .into();
    assert_eq!(sizes, [7, 1, 2]);
    assert_eq!(ds.records(Split::Test)[0].id, "00008");
    let mut instances = 0;
    for record in ds.records(Split::All) {
        let sample = ds.load(&record).unwrap();
        assert_eq!(sample.image.dimensions(), (64, 64));
        assert!(
            !sample.instances.is_empty(),
            "{} has no instance",
            record.id
        );
        for inst in &sample.instances {
            let [x0, y0, x1, y1] = inst.bbox;
            assert!(0.0 <= x0 && x0 < x1 && x1 <= 64.0, "{:?}", inst.bbox);
            assert!(0.0 <= y0 && y0 < y1 && y1 <= 64.0, "{:?}", inst.bbox);
        }
        instances += sample.instances.len();
    }
    assert_eq!(report["instances"].as_u64(), Some(instances as u64));
}

#[test]
fn splits_are_seventy_ten_twenty_with_a_test_image() {
    let sizes = |n| {
        let s = SplitSizes::of(n);
        (s.train, s.val, s.test)
    };
    assert_eq!(sizes(1), (0, 0, 1));
    assert_eq!(sizes(3), (2, 0, 1));
    assert_eq!(sizes(10), (7, 1, 2));
    assert_eq!(sizes(500), (350, 50, 100));
}

#[test]
fn an_earlier_dataset_is_kept_unless_forced() {
    let root = common::scratch();
    let dir = root.path().join("force");
    assert!(synth(&dir, "source", 3, &[]).status.success());
    let o = synth(&dir, "noise", 2, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("images") && err.contains("--force"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = synth(&dir, "noise", 2, &["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The third image of the earlier run is gone, so images and masks match the splits.
    for sub in ["images", "masks"] {
        assert_eq!(
            std::fs::read_dir(dir.join(sub)).unwrap().count(),
            2,
            "{sub}"
        );
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    for (args, want) in [
        (vec!["--count", "0"], "at least one image"),
        (vec!["--count", "2", "--image-size", "8"], "--image-size"),
        (vec!["--count", "2", "--domain", "snow"], "snow"),
    ] {
        let root = common::scratch();
        let dir = root.path().join("bad");
        let mut full = vec!["synth", "--out", dir.to_str().unwrap()];
        if !args.contains(&"--domain") {
            full.extend(["--domain", "source"]);
        }
        full.extend(args);
        let o = wesam(&full);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(want) && !err.contains("panicked"), "{err}");
    }
    // An output path under a file names the directory it cannot create.
    let root = common::scratch();
    let file = root.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let o = synth(&file.join("out"), "source", 1, &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("a-file"), "{}", stderr(&o));
}

/// Images 0..6 of seed 1 at 128² in one domain.
fn rendered(domain: Domain) -> Vec<(RgbImage, GrayImage)> {
    (0..6).map(|i| render(domain, 1, i, 128).unwrap()).collect()
}

#[test]
fn target_domains_shift_the_appearance() {
    // Least mean absolute difference from the source (grey levels), about half of what each
    // domain gives: global shifts change every pixel; camouflage changes objects and smooth
    // backgrounds, clutter only the pixels under its distractors and occluders.
    let least = [
        (Domain::Noise, 20.0),
        (Domain::Blur, 5.0),
        (Domain::Jpeg, 5.0),
        (Domain::Fog, 25.0),
        (Domain::Camouflage, 4.5),
        (Domain::LowContrast, 25.0),
        (Domain::Clutter, 3.5),
    ];
    let source = rendered(Domain::Source);
    for (domain, least) in least {
        let target = rendered(domain);
        let d = source
            .iter()
            .zip(&target)
            .map(|(s, t)| mad(&s.0, &t.0))
            .sum::<f64>()
            / source.len() as f64;
        assert!(
            d >= least,
            "{domain} differs from source by only {d:.1} grey levels (want {least})"
        );
    }
}

#[test]
fn source_objects_stand_out_and_camouflaged_ones_blend_in() {
    let source = object_contrast(&rendered(Domain::Source));
    let camouflage = object_contrast(&rendered(Domain::Camouflage));
    let low = object_contrast(&rendered(Domain::LowContrast));
    eprintln!(
        "object contrast: source {source:.1}, camouflage {camouflage:.1}, low-contrast {low:.1}"
    );
    assert!(
        source >= 60.0,
        "source objects are only {source:.1} from their surroundings"
    );
    assert!(
        camouflage <= 0.4 * source,
        "camouflage contrast {camouflage:.1}, source {source:.1}"
    );
    assert!(
        low <= 0.5 * source,
        "low-contrast contrast {low:.1}, source {source:.1}"
    );
    assert!(
        camouflage >= 3.0 && low >= 3.0,
        "objects vanished: {camouflage:.1}, {low:.1}"
    );
}
