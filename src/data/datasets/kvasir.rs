//! Kvasir-SEG polyps: `images/*.jpg`, `masks/*.jpg` (JPEG masks, binarised at
//! `options.mask_threshold`) and, in the full release, `kavsir_bboxes.json`.
//!
//! With the json (the reference's rule): records in the json's key order, 5:1 interleave, and
//! instance `i` is the foreground inside json box `i` (later boxes overwrite earlier ones;
//! foreground outside every box is dropped) with the json box as its box. Without it: sorted
//! stems, 5:1 interleave, one instance per connected component. `options.instances`, when
//! given, replaces either rule by the generic one (boxes from the masks).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use anyhow::Context;
use image::{GrayImage, Luma};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::files::{self, Pair};
use super::paired::{Annotation, ByMode, Paired};
use crate::data::split::Splits;
use crate::data::{DatasetOptions, Instance, InstanceMode, Record};

/// The release folder's name.
const FOLDER: &str = "Kvasir-SEG";
/// The release's box file (its name is misspelt upstream).
const BOX_FILE: &str = "kavsir_bboxes.json";
/// `k` of the interleaved split when `options.interleave` is not given.
const DEFAULT_INTERLEAVE: usize = 5;

/// Indexes Kvasir-SEG at `root` (the `Kvasir-SEG` folder or the folder holding it).
pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Paired> {
    let root = files::descend(root, FOLDER);
    let images = files::require_dir(root.join("images"), "Kvasir-SEG's images/*.jpg")?;
    let masks = files::require_dir(root.join("masks"), "Kvasir-SEG's masks/*.jpg")?;
    let (pairs, mut issues) = files::pair(
        files::list(&images, &["jpg"])?,
        files::list(&masks, &["jpg"])?,
        str::to_string,
    );
    let json = root.join(BOX_FILE);
    let (records, boxes) = if json.is_file() {
        let entries = read_boxes(&json)?;
        let mut by_id: HashMap<String, Pair> =
            pairs.into_iter().map(|p| (p.id.clone(), p)).collect();
        let mut records = Vec::new();
        let mut boxes = HashMap::new();
        for (id, entry) in entries {
            match by_id.remove(&id) {
                Some(p) => {
                    boxes.insert(id, entry.bbox.iter().map(JsonBox::corners).collect());
                    records.push(p.record());
                }
                None if boxes.contains_key(&id) => {
                    issues.push(files::issue(&json, format!("`{id}` is listed twice")))
                }
                None => issues.push(files::issue(&json, format!("`{id}` has no image and mask"))),
            }
        }
        let mut unlisted: Vec<Pair> = by_id.into_values().collect();
        unlisted.sort_by(|a, b| a.image.cmp(&b.image));
        issues.extend(
            unlisted
                .iter()
                .map(|p| files::issue(&p.image, format!("not in {BOX_FILE}"))),
        );
        (records, Some(boxes))
    } else {
        (pairs.into_iter().map(Pair::record).collect(), None)
    };
    let k = options.interleave.unwrap_or(DEFAULT_INTERLEAVE);
    let annotation: Box<dyn Annotation> = match (options.instances, boxes) {
        (None, Some(boxes)) => Box::new(JsonBoxes(boxes)),
        (mode, _) => Box::new(ByMode(mode.unwrap_or(InstanceMode::Components))),
    };
    Ok(Paired::new(
        "kvasir",
        Splits::interleaved(records, k, options.val_fraction),
        issues,
        options.mask_threshold,
        annotation,
    ))
}

/// One image's entry in the box file (its `height` and `width` are not needed).
#[derive(Deserialize)]
struct Entry {
    bbox: Vec<JsonBox>,
}

/// One box of the box file, in pixels, right and bottom exclusive.
#[derive(Deserialize)]
struct JsonBox {
    xmin: f64,
    ymin: f64,
    xmax: f64,
    ymax: f64,
}

impl JsonBox {
    fn corners(&self) -> [f32; 4] {
        [self.xmin, self.ymin, self.xmax, self.ymax].map(|v| v as f32)
    }
}

/// The box file's entries in the file's key order (the reference's split depends on it, and a
/// JSON map would sort the keys).
struct Ordered(Vec<(String, Entry)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of image entries")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        d.deserialize_map(InOrder)
    }
}

fn read_boxes(path: &Path) -> anyhow::Result<Vec<(String, Entry)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let Ordered(entries) = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Kvasir-SEG box file", path.display()))?;
    Ok(entries)
}

/// The json rule: foreground inside box `i` is instance `i`, boxed by box `i`.
struct JsonBoxes(HashMap<String, Vec<[f32; 4]>>);

impl Annotation for JsonBoxes {
    fn instances(&self, record: &Record, labels: GrayImage) -> Vec<Instance> {
        let boxes = self.0.get(&record.id).map_or(&[][..], Vec::as_slice);
        let (w, h) = labels.dimensions();
        let mut owner = vec![0usize; (w * h) as usize];
        for (i, b) in boxes.iter().enumerate() {
            let clamp = |v: f32, hi: u32| (v.max(0.0) as u32).min(hi);
            for y in clamp(b[1], h)..clamp(b[3], h) {
                for x in clamp(b[0], w)..clamp(b[2], w) {
                    if labels.get_pixel(x, y).0[0] > 0 {
                        owner[(y * w + x) as usize] = i + 1;
                    }
                }
            }
        }
        let owners: HashSet<usize> = owner.iter().copied().collect();
        boxes
            .iter()
            .enumerate()
            .filter(|(i, _)| owners.contains(&(i + 1)))
            .map(|(i, b)| Instance {
                mask: GrayImage::from_fn(w, h, |x, y| {
                    Luma([if owner[(y * w + x) as usize] == i + 1 {
                        255
                    } else {
                        0
                    }])
                }),
                bbox: *b,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::mask;

    #[test]
    fn boxes_claim_foreground_and_later_boxes_win() {
        let labels = GrayImage::from_fn(6, 2, |x, _| Luma([if x == 5 { 0 } else { 255 }]));
        let rule = JsonBoxes(HashMap::from([(
            "a".to_string(),
            vec![
                [0.0, 0.0, 3.0, 2.0],
                [2.0, 0.0, 4.0, 1.0],
                [5.0, 0.0, 6.0, 2.0],
            ],
        )]));
        let record = Record {
            id: "a".into(),
            image: "a.jpg".into(),
            annotation: None,
            key: 0,
        };
        let inst = rule.instances(&record, labels);
        assert_eq!(inst.len(), 2); // the third box holds no foreground
        assert_eq!(mask::area(&inst[0].mask), 5); // 6 pixels, one taken by box 2
        assert_eq!(mask::area(&inst[1].mask), 2);
        assert_eq!(inst[1].bbox, [2.0, 0.0, 4.0, 1.0]);
        // x = 4 lies in no box: dropped
        assert!(inst.iter().all(|i| i.mask.get_pixel(4, 0).0[0] == 0));
    }
}
