//! PASCAL VOC loader on generated palette PNGs in the VOC layout, with instance ids the reference
//! loses (8, 15, 19) and the 255 boundary band.

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};
use wesam::data::datasets::voc::Voc;
use wesam::data::{Dataset, DatasetOptions, InstanceMode, Split};

/// The standard VOC colour map: the bits of the index spread over the high bits of R, G and B.
fn voc_palette() -> Vec<u8> {
    (0..256u32)
        .flat_map(|i| {
            let mut rgb = [0u8; 3];
            let mut c = i;
            for shift in (0..8).rev() {
                for (channel, value) in rgb.iter_mut().enumerate() {
                    *value |= (((c >> channel) & 1) as u8) << shift;
                }
                c >>= 3;
            }
            rgb
        })
        .collect()
}

/// Writes an indexed PNG with the VOC palette; `ids` are row-major, `bits` per pixel (packed).
fn write_palette_png(path: &Path, width: u32, ids: &[u8], bits: png::BitDepth) {
    let height = ids.len() as u32 / width;
    let per_byte = 8 / bits as usize;
    let mut data = Vec::new();
    for row in ids.chunks(width as usize) {
        for pack in row.chunks(per_byte) {
            let mut byte = 0u8;
            for (j, &id) in pack.iter().enumerate() {
                byte |= id << (8 - bits as usize * (j + 1));
            }
            data.push(byte);
        }
    }
    let mut encoder = png::Encoder::new(std::fs::File::create(path).unwrap(), width, height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(bits);
    let entries = 1usize << (bits as usize);
    encoder.set_palette(voc_palette()[..3 * entries].to_vec());
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&data).unwrap();
}

/// Instance ids of the main mask: `a` = 1 (two blobs), `h` = 8, `o` = 15, `s` = 19, `#` = the
/// 255 boundary, `.` = background.
const LABELS: [&str; 8] = [
    "aa.hhh...a",
    "aa.hhh....",
    "..........",
    ".....#####",
    "oooo.#sss#",
    "oooo.#sss#",
    ".....#sss#",
    ".....#####",
];

fn id_of(c: char) -> u8 {
    match c {
        'a' => 1,
        'h' => 8,
        'o' => 15,
        's' => 19,
        '#' => 255,
        _ => 0,
    }
}

/// Removed with its contents when dropped: keep it bound while its path is used.
fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("wesam-voc-{name}-"))
        .tempdir()
        .unwrap()
}

/// `VOCdevkit/VOC2012` with masks `2007_00000{1..=9}.png` (9 has no image), a stray text file;
/// mask 1 is [`LABELS`], mask 2 a 4-bit PNG, the others 2x2 with id 1.
fn write_devkit(dir: &Path) -> PathBuf {
    let voc = dir.join("VOCdevkit/VOC2012");
    std::fs::create_dir_all(voc.join("SegmentationObject")).unwrap();
    std::fs::create_dir_all(voc.join("JPEGImages")).unwrap();
    let ids: Vec<u8> = LABELS.iter().flat_map(|r| r.chars().map(id_of)).collect();
    for n in 1..=9 {
        let stem = format!("2007_00000{n}");
        let mask = voc.join(format!("SegmentationObject/{stem}.png"));
        let size = match n {
            1 => {
                write_palette_png(&mask, 10, &ids, png::BitDepth::Eight);
                (10, 8)
            }
            2 => {
                write_palette_png(&mask, 3, &[0, 3, 3, 15, 15, 0], png::BitDepth::Four);
                (3, 2)
            }
            _ => {
                write_palette_png(&mask, 2, &[1, 1, 0, 0], png::BitDepth::Eight);
                (2, 2)
            }
        };
        if n != 9 {
            RgbImage::new(size.0, size.1)
                .save(voc.join(format!("JPEGImages/{stem}.jpg")))
                .unwrap();
        }
    }
    std::fs::write(voc.join("SegmentationObject/README.txt"), "not a mask").unwrap();
    voc
}

fn stems(ds: &Voc, split: Split) -> Vec<String> {
    ds.records(split).into_iter().map(|r| r.id).collect()
}

fn char_mask(c: char) -> Vec<String> {
    LABELS
        .iter()
        .map(|r| r.chars().map(|x| if x == c { '#' } else { '.' }).collect())
        .collect()
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

#[test]
fn palette_ids_are_instances_and_the_boundary_is_background() {
    let dir_tmp = temp_dir("ids");
    let dir = dir_tmp.path().to_path_buf();
    let voc = write_devkit(&dir);
    let mask_path = voc.join("SegmentationObject/2007_000001.png");
    // The fixture is a real VOC-style palette PNG: the image crate sees the palette colours.
    let rgb = image::open(&mask_path).unwrap().to_rgb8();
    assert_eq!(rgb.get_pixel(3, 0).0, [64, 0, 0], "id 8");
    assert_eq!(rgb.get_pixel(0, 4).0, [192, 128, 128], "id 15");
    assert_eq!(rgb.get_pixel(6, 4).0, [128, 192, 0], "id 19");
    assert_eq!(rgb.get_pixel(5, 3).0, [224, 224, 192], "boundary");

    let ds = Voc::open(&dir.join("VOCdevkit"), &DatasetOptions::default()).unwrap();
    let record = &ds.records(Split::All)[0];
    assert_eq!(record.id, "2007_000001");
    assert_eq!(record.annotation.as_deref(), Some(mask_path.as_path()));
    let sample = ds.load(record).unwrap();
    let expected = [
        ('a', [0.0, 0.0, 10.0, 2.0]),
        ('h', [3.0, 0.0, 6.0, 2.0]),
        ('o', [0.0, 4.0, 4.0, 6.0]),
        ('s', [6.0, 4.0, 9.0, 7.0]),
    ];
    assert_eq!(sample.instances.len(), expected.len());
    for (instance, (c, bbox)) in sample.instances.iter().zip(expected) {
        assert_eq!(rows(&instance.mask), char_mask(c), "id {}", id_of(c));
        assert_eq!(instance.bbox, bbox, "id {}", id_of(c));
    }

    // A 4-bit palette PNG decodes to the same ids.
    let sample = ds.load(&ds.records(Split::All)[1]).unwrap();
    let areas: Vec<usize> = sample
        .instances
        .iter()
        .map(|i| wesam::data::mask::area(&i.mask))
        .collect();
    assert_eq!(areas, vec![2, 2]);
    assert_eq!(sample.instances[1].bbox, [0.0, 1.0, 2.0, 2.0]);

    // Connected components split id 1's two blobs and keep the boundary out.
    let components = DatasetOptions {
        instances: Some(InstanceMode::Components),
        ..Default::default()
    };
    let ds = Voc::open(&dir.join("VOCdevkit"), &components).unwrap();
    let sample = ds.load(&ds.records(Split::All)[0]).unwrap();
    let mut areas: Vec<usize> = sample
        .instances
        .iter()
        .map(|i| wesam::data::mask::area(&i.mask))
        .collect();
    areas.sort();
    assert_eq!(areas, vec![1, 4, 6, 8, 9]);
}

#[test]
fn sorted_stems_interleaved_and_issues_reported() {
    let dir_tmp = temp_dir("split");
    let dir = dir_tmp.path().to_path_buf();
    let voc = write_devkit(&dir);
    // The VOC2012 folder itself as the root.
    let ds = Voc::open(&voc, &DatasetOptions::default()).unwrap();
    let all: Vec<String> = (1..=8).map(|n| format!("2007_00000{n}")).collect();
    assert_eq!(stems(&ds, Split::All), all);
    assert_eq!(stems(&ds, Split::Test), vec!["2007_000007"]);
    assert_eq!(stems(&ds, Split::Train).len(), 7);
    let mut issues: Vec<String> = ds.index_issues().into_iter().map(|i| i.file).collect();
    issues.sort();
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert!(issues[0].ends_with("2007_000009.png") && issues[1].ends_with("README.txt"));

    let options = DatasetOptions {
        interleave: Some(3),
        val_fraction: 0.5,
        ..Default::default()
    };
    let ds = Voc::open(&voc, &options).unwrap();
    assert_eq!(stems(&ds, Split::Test), vec!["2007_000004", "2007_000008"]);
    assert_eq!(
        stems(&ds, Split::Train),
        vec!["2007_000001", "2007_000002", "2007_000003"]
    );
    assert_eq!(
        stems(&ds, Split::Val),
        vec!["2007_000005", "2007_000006", "2007_000007"]
    );
}

#[test]
fn errors_name_the_files() {
    let dir_tmp = temp_dir("errors");
    let dir = dir_tmp.path().to_path_buf();
    let voc = write_devkit(&dir);
    // A mask of the wrong size, and an RGB mask.
    RgbImage::new(3, 3)
        .save(voc.join("JPEGImages/2007_000003.jpg"))
        .unwrap();
    RgbImage::new(2, 2)
        .save(voc.join("SegmentationObject/2007_000004.png"))
        .unwrap();
    let ds = Voc::open(&dir.join("VOCdevkit"), &DatasetOptions::default()).unwrap();
    let records = ds.records(Split::All);
    let err = format!("{:#}", ds.load(&records[2]).unwrap_err());
    assert!(
        err.contains("2007_000003.png") && err.contains("2007_000003.jpg"),
        "{err}"
    );
    let err = format!("{:#}", ds.load(&records[3]).unwrap_err());
    assert!(
        err.contains("2007_000004.png") && err.contains("palette"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        Voc::open(&dir, &DatasetOptions::default()).unwrap_err()
    );
    assert!(err.contains("SegmentationObject"), "{err}");
}
