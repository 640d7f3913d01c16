//! COCO instance segmentation (`annotations/instances_<split>.json` + `<split>/*.jpg`), the
//! reference's natural-image target domain.
//!
//! Every annotation is one instance, its box the annotation's `bbox` (`[x, y, w, h]` →
//! `[x, y, x + w, y + h]`), its mask what pycocotools' `COCO.annToMask` gives: polygons are
//! rasterised the way `frPyObjects` + `decode` do it (see `polygon_toggles`), several polygons of
//! one object are merged by union, and run-length encodings are decoded in either of COCO's two
//! forms (a list of run lengths, or the COCO API's compressed string).
//!
//! Split (the reference's): the image ids sorted, images without a kept annotation dropped, then
//! a 6:1 interleave ([`DatasetOptions::interleave`] overrides the 6). Crowd annotations
//! (`iscrowd = 1`) are kept only with [`DatasetOptions::include_crowd`]; the reference keeps them.
//! [`DatasetOptions::instances`] and `mask_threshold` do not apply: COCO's instances are its
//! annotations.
//!
//! Unlike pycocotools, which fails on them, a polygon of 4 coordinates (2 points) is rasterised as
//! a (degenerate) polygon rather than read as a box; an odd trailing coordinate is ignored, as
//! pycocotools does.
//!
//! What the file says is not trusted: an image whose `file_name` leaves the image folder (`..`,
//! an absolute path) is left out, annotations with an empty segmentation are left out and
//! counted (both reported by `index_issues`), a polygon wholly outside its image gives no
//! instance, and polygon coordinates far outside the image cost no more than the image.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use image::{GrayImage, Luma};
use serde::Deserialize;

use crate::data::split::{carve_val, interleave};
use crate::data::{Dataset, DatasetOptions, FileIssue, Instance, Record, Sample, Split};

/// The reference's `k` of the k:1 train:test interleave of COCO.
const REFERENCE_INTERLEAVE: usize = 6;
/// The annotation file preferred when `annotations/` holds several (the reference uses val2017).
const PREFERRED_JSON: &str = "instances_val2017.json";

/// A COCO-format instance dataset, indexed from its annotation file; masks are decoded in
/// [`Dataset::load`].
#[derive(Debug)]
pub struct Coco {
    annotation_file: PathBuf,
    /// Images with at least one kept annotation, by increasing id.
    images: Vec<CocoImage>,
    train: Vec<usize>,
    val: Vec<usize>,
    test: Vec<usize>,
    issues: Vec<FileIssue>,
}

#[derive(Debug)]
struct CocoImage {
    id: u64,
    path: PathBuf,
    width: u32,
    height: u32,
    annotations: Vec<Annotation>,
}

#[derive(Debug)]
struct Annotation {
    id: u64,
    bbox: [f32; 4],
    segmentation: Segmentation,
}

/// The fields of `instances_*.json` that the dataset needs.
#[derive(Deserialize)]
struct InstancesFile {
    images: Vec<ImageEntry>,
    annotations: Vec<AnnotationEntry>,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct AnnotationEntry {
    id: u64,
    image_id: u64,
    bbox: [f64; 4],
    #[serde(default)]
    iscrowd: u8,
    segmentation: Segmentation,
}

/// An annotation's `segmentation` in any of the forms COCO allows.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Segmentation {
    /// Polygons `[x1, y1, x2, y2, ...]` of one object.
    Polygons(Vec<Vec<f64>>),
    /// A run-length encoding; `size` is `[height, width]`.
    Rle { counts: RleCounts, size: [u32; 2] },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RleCounts {
    /// Run lengths, background first, in column-major order (crowd annotations).
    Runs(Vec<u64>),
    /// The COCO API's compressed string of the same runs.
    Compressed(String),
}

impl Coco {
    /// Indexes a COCO dataset. `root` is the folder holding `annotations/` and the image folder
    /// (`instances_val2017.json` is preferred, else the only `instances_*.json` is used), or an
    /// annotation file itself, to choose among several; images are looked for in the folder
    /// named after the file (`instances_val2017.json` → `val2017/`) beside `annotations/` (or
    /// beside the file, when it is not in an `annotations/` folder).
    /// Images missing from disk are left out and reported by [`Dataset::index_issues`].
    pub fn open(root: &Path, options: &DatasetOptions) -> anyhow::Result<Self> {
        let (annotation_file, image_dir) = locate(root)?;
        let bytes = std::fs::read(&annotation_file)
            .with_context(|| format!("cannot read {}", annotation_file.display()))?;
        let parsed: InstancesFile = serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is not a COCO instances file", annotation_file.display())
        })?;
        drop(bytes);
        let (images, issues) = index(parsed, &annotation_file, &image_dir, options)?;
        let k = options.interleave.unwrap_or(REFERENCE_INTERLEAVE);
        let (train, test) = interleave((0..images.len()).collect(), k);
        let (train, val) = carve_val(train, options.val_fraction);
        Ok(Self {
            annotation_file,
            images,
            train,
            val,
            test,
            issues,
        })
    }

    fn record(&self, i: usize) -> Record {
        let image = &self.images[i];
        Record {
            id: image
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| image.id.to_string()),
            image: image.path.clone(),
            annotation: None,
            key: image.id,
        }
    }
}

/// The annotation file and the image folder of a dataset root (or of an annotation file).
fn locate(root: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let json = if root.is_file() {
        root.to_path_buf()
    } else {
        let dir = root.join("annotations");
        let preferred = dir.join(PREFERRED_JSON);
        if preferred.is_file() {
            preferred
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| {
                    format!(
                        "cannot list {} (a COCO root holds annotations/instances_<split>.json)",
                        dir.display()
                    )
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    name.starts_with("instances_") && name.ends_with(".json")
                })
                .collect();
            found.sort();
            match found.len() {
                0 => bail!("no instances_*.json in {}", dir.display()),
                1 => found.remove(0),
                _ => bail!(
                    "several annotation files in {} ({}): give the one to use as the dataset path",
                    dir.display(),
                    found
                        .iter()
                        .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    };
    let stem = json.file_stem().unwrap_or_default().to_string_lossy();
    let Some(split) = stem.strip_prefix("instances_").filter(|s| !s.is_empty()) else {
        bail!(
            "{}: expected a file named instances_<split>.json, whose images are in <split>/",
            json.display()
        );
    };
    // `<base>/annotations/instances_<split>.json` (or a file directly in `<base>`).
    let mut base = json.parent().unwrap_or(Path::new("."));
    if base.file_name().is_some_and(|n| n == "annotations") {
        base = base.parent().unwrap_or(Path::new("."));
    }
    let image_dir = base.join(split);
    if !image_dir.is_dir() {
        bail!(
            "image folder {} of {} not found",
            image_dir.display(),
            json.display()
        );
    }
    Ok((json, image_dir))
}

/// Groups the kept annotations by image, drops images without one and images missing on disk.
fn index(
    parsed: InstancesFile,
    json: &Path,
    image_dir: &Path,
    options: &DatasetOptions,
) -> anyhow::Result<(Vec<CocoImage>, Vec<FileIssue>)> {
    let mut issues = Vec::new();
    let mut images: Vec<CocoImage> = Vec::with_capacity(parsed.images.len());
    for e in parsed.images {
        // A plain relative path: no `..`, no root, so that the dataset reads only its folder.
        let inside = Path::new(&e.file_name)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            issues.push(FileIssue {
                file: json.display().to_string(),
                reason: format!(
                    "image {}: file_name {:?} points outside {}; left out",
                    e.id,
                    e.file_name,
                    image_dir.display()
                ),
            });
            continue;
        }
        images.push(CocoImage {
            id: e.id,
            path: image_dir.join(&e.file_name),
            width: e.width,
            height: e.height,
            annotations: Vec::new(),
        });
    }
    images.sort_by_key(|im| im.id);
    if let Some(w) = images.windows(2).find(|w| w[0].id == w[1].id) {
        bail!("{}: image id {} is listed twice", json.display(), w[0].id);
    }
    let mut empty = Vec::new();
    for a in parsed.annotations {
        if a.iscrowd != 0 && !options.include_crowd {
            continue;
        }
        if a.segmentation.is_empty() {
            empty.push(a.id);
            continue;
        }
        let Ok(i) = images.binary_search_by_key(&a.image_id, |im| im.id) else {
            issues.push(FileIssue {
                file: json.display().to_string(),
                reason: format!(
                    "annotation {} refers to image id {}, which is not listed",
                    a.id, a.image_id
                ),
            });
            continue;
        };
        let [x, y, w, h] = a.bbox;
        images[i].annotations.push(Annotation {
            id: a.id,
            bbox: [x as f32, y as f32, (x + w) as f32, (y + h) as f32],
            segmentation: a.segmentation,
        });
    }
    if !empty.is_empty() {
        let shown: Vec<String> = empty.iter().take(5).map(u64::to_string).collect();
        issues.push(FileIssue {
            file: json.display().to_string(),
            reason: format!(
                "{} annotations with an empty segmentation left out (ids {}{})",
                empty.len(),
                shown.join(", "),
                if empty.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        });
    }
    images.retain(|im| !im.annotations.is_empty());
    images.retain(|im| {
        let present = im.path.is_file();
        if !present {
            issues.push(FileIssue {
                file: im.path.display().to_string(),
                reason: format!("image {} of {} is missing", im.id, json.display()),
            });
        }
        present
    });
    Ok((images, issues))
}

impl Dataset for Coco {
    fn name(&self) -> String {
        "coco".into()
    }

    fn records(&self, split: Split) -> Vec<Record> {
        match split {
            Split::Train => self.train.iter().map(|&i| self.record(i)).collect(),
            Split::Val => self.val.iter().map(|&i| self.record(i)).collect(),
            Split::Test => self.test.iter().map(|&i| self.record(i)).collect(),
            Split::All => (0..self.images.len()).map(|i| self.record(i)).collect(),
        }
    }

    fn load(&self, record: &Record) -> anyhow::Result<Sample> {
        let json = self.annotation_file.display();
        let Ok(i) = self.images.binary_search_by_key(&record.key, |im| im.id) else {
            bail!(
                "{}: image id {} is not part of {json}",
                record.image.display(),
                record.key
            );
        };
        let entry = &self.images[i];
        let image = crate::io::read_rgb(&entry.path)?;
        if image.dimensions() != (entry.width, entry.height) {
            bail!(
                "image {} is {}x{} but {json} says {}x{}",
                entry.path.display(),
                image.width(),
                image.height(),
                entry.width,
                entry.height
            );
        }
        let mut instances = Vec::with_capacity(entry.annotations.len());
        for a in &entry.annotations {
            let mask = a
                .segmentation
                .rasterise(entry.width, entry.height)
                .with_context(|| format!("{json}: annotation {}", a.id))?;
            // A polygon wholly outside its image covers no pixel: no instance to score.
            if crate::data::mask::area(&mask) > 0 {
                instances.push(Instance { mask, bbox: a.bbox });
            }
        }
        Ok(Sample {
            id: record.id.clone(),
            image_path: entry.path.clone(),
            image,
            instances,
        })
    }

    fn index_issues(&self) -> Vec<FileIssue> {
        self.issues.clone()
    }
}

impl Segmentation {
    /// Whether the segmentation holds no pixel whatever the image: no polygon of two points or
    /// more, or a run-length encoding without a foreground run.
    fn is_empty(&self) -> bool {
        match self {
            Segmentation::Polygons(polygons) => polygons.iter().all(|xy| xy.len() < 4),
            Segmentation::Rle {
                counts: RleCounts::Runs(runs),
                ..
            } => runs.iter().skip(1).step_by(2).all(|&r| r == 0),
            Segmentation::Rle { .. } => false,
        }
    }

    /// The binary mask (0/255) at `width` x `height`, as pycocotools' `annToMask` computes it.
    fn rasterise(&self, width: u32, height: u32) -> anyhow::Result<GrayImage> {
        let (w, h) = (width as usize, height as usize);
        // Column-major 0/1, COCO's pixel order.
        let mut columns = vec![0u8; w * h];
        match self {
            Segmentation::Polygons(polygons) => {
                for xy in polygons {
                    let mut toggles = polygon_toggles(xy, width, height)?;
                    toggles.sort_unstable();
                    fill_between_toggles(&toggles, &mut columns);
                }
            }
            Segmentation::Rle { counts, size } => {
                if *size != [height, width] {
                    bail!(
                        "run-length encoding of size {}x{} (w x h) on a {width}x{height} image",
                        size[1],
                        size[0]
                    );
                }
                let runs = match counts {
                    RleCounts::Runs(runs) => runs.clone(),
                    RleCounts::Compressed(s) => rle_counts_from_string(s)?,
                };
                fill_runs(&runs, &mut columns)?;
            }
        }
        Ok(GrayImage::from_fn(width, height, |x, y| {
            Luma([columns[x as usize * h + y as usize] * 255])
        }))
    }
}

/// Decodes the COCO API's compressed run-length string (`counts` of an RLE `segmentation`) into
/// its run lengths: each run is a little-endian sequence of 5-bit groups written as characters
/// from `'0'`, with bit 0x20 meaning "more groups follow" and bit 0x10 of the last group the sign;
/// from the fourth run on, the value is the difference to the run two places before.
pub fn rle_counts_from_string(s: &str) -> anyhow::Result<Vec<u64>> {
    let mut runs: Vec<u64> = Vec::new();
    let mut chars = s.bytes().enumerate().peekable();
    while chars.peek().is_some() {
        let mut value: i64 = 0;
        let mut shift = 0;
        loop {
            let Some((at, c)) = chars.next() else {
                bail!("compressed RLE {s:?} ends inside a run");
            };
            let Some(group) = c.checked_sub(b'0').filter(|g| *g < 64) else {
                bail!("compressed RLE {s:?}: character {:?} at {at}", c as char);
            };
            if shift > 55 {
                bail!("compressed RLE {s:?}: run too long at {at}");
            }
            value |= i64::from(group & 0x1f) << shift;
            shift += 5;
            if group & 0x20 == 0 {
                if group & 0x10 != 0 {
                    value |= -1i64 << shift;
                }
                break;
            }
        }
        if runs.len() > 2 {
            value += runs[runs.len() - 2] as i64;
        }
        let Ok(run) = u64::try_from(value) else {
            bail!(
                "compressed RLE {s:?}: run {} is negative ({value})",
                runs.len()
            );
        };
        runs.push(run);
    }
    Ok(runs)
}

/// Writes alternating background / foreground runs into a column-major mask. The runs must cover
/// the mask exactly (pycocotools leaves the pixels after short runs uninitialised).
fn fill_runs(runs: &[u64], columns: &mut [u8]) -> anyhow::Result<()> {
    let total = runs.iter().fold(0u64, |sum, &run| sum.saturating_add(run));
    if total != columns.len() as u64 {
        bail!(
            "run-length encoding covers {total} pixels but the image has {}",
            columns.len()
        );
    }
    let mut at = 0usize;
    for (i, &run) in runs.iter().enumerate() {
        let end = at + run as usize;
        if i % 2 == 1 {
            columns[at..end].fill(1);
        }
        at = end;
    }
    Ok(())
}

/// Sets the pixels between consecutive pairs of sorted toggle positions (column-major indices);
/// an unpaired last toggle runs to the end. Pixels already set stay set (union of polygons).
fn fill_between_toggles(toggles: &[usize], columns: &mut [u8]) {
    for pair in toggles.chunks(2) {
        let end = pair.get(1).copied().unwrap_or(columns.len());
        columns[pair[0]..end].fill(1);
    }
}

/// Factor by which pycocotools' `rleFrPoly` upsamples polygon coordinates before tracing them.
const UPSAMPLE: i64 = 5;
/// Largest polygon coordinate accepted: any image is far smaller, and the fine grid's integer
/// arithmetic stays exact (the work does not grow with it, see [`polygon_toggles`]).
const MAX_COORDINATE: f64 = 1e15;

/// The column-major positions where the mask of one polygon switches between background and
/// foreground, as pycocotools' `rleFrPoly` finds them (the mask is the parity of the toggles
/// before each pixel):
/// 1. vertices are scaled by 5 and rounded (`(int)(5v + 0.5)`, truncating toward zero), and the
///    polygon is closed;
/// 2. every edge is traced on that fine grid, one point per step along its longer axis, the other
///    coordinate rounded from the edge's end with the smaller major coordinate (so an edge gives
///    the same points in either direction), the trace running on from one edge to the next;
/// 3. wherever the trace steps across the fine-grid line through a pixel column's centre
///    (fine x = 5n + 2.5), column `n` (if inside the image) toggles at the first row whose centre
///    is at or below the upper of the two trace points, clamped to `0..=height`; a toggle at
///    `height` is the start of the next column.
///
/// An edge longer than the image is not walked point by point: only its steps across the image's
/// columns are found ([`EdgeTrace::column_steps`]), so the work is bounded by the image whatever
/// the coordinates, with the same result.
fn polygon_toggles(xy: &[f64], width: u32, height: u32) -> anyhow::Result<Vec<usize>> {
    if let Some(v) = xy.iter().find(|v| v.is_nan() || v.abs() > MAX_COORDINATE) {
        bail!("polygon coordinate {v} is out of range (beyond ±{MAX_COORDINATE:e})");
    }
    let walk_up_to = 5 * i64::from(width + height);
    Ok(trace_toggles(xy, width, height, walk_up_to))
}

/// [`polygon_toggles`], walking edges of at most `walk_up_to` steps point by point.
fn trace_toggles(xy: &[f64], width: u32, height: u32, walk_up_to: i64) -> Vec<usize> {
    let vertices: Vec<(i64, i64)> = xy
        .chunks_exact(2)
        .map(|p| (upsample(p[0]), upsample(p[1])))
        .collect();
    let (w, h) = (i64::from(width), i64::from(height));
    let toggle = |(u0, v0): (i64, i64), (u1, v1): (i64, i64)| {
        // Consecutive trace points differ by at most one fine column; a step crosses the line
        // between fine columns `left` and `left + 1`.
        let left = u0.min(u1);
        if u0 == u1 || (left - 2).rem_euclid(UPSAMPLE) != 0 {
            return None;
        }
        let x = (left - 2).div_euclid(UPSAMPLE);
        let y = ceil_div(v0.min(v1) - 2, UPSAMPLE).clamp(0, h);
        (0..w).contains(&x).then_some((x * h + y) as usize)
    };
    let mut toggles = Vec::new();
    let mut previous: Option<(i64, i64)> = None;
    for (i, &start) in vertices.iter().enumerate() {
        let edge = EdgeTrace::new(start, vertices[(i + 1) % vertices.len()]);
        if let Some(p) = previous {
            toggles.extend(toggle(p, edge.first()));
        }
        let steps: Box<dyn Iterator<Item = i64>> = if edge.steps <= walk_up_to {
            Box::new(0..edge.steps)
        } else {
            Box::new(edge.column_steps(w).into_iter())
        };
        toggles.extend(steps.filter_map(|t| toggle(edge.point(t), edge.point(t + 1))));
        previous = Some(edge.last());
    }
    toggles
}

/// A coordinate on the fine grid: `(int)(5 v + 0.5)`, truncating toward zero as C does.
fn upsample(v: f64) -> i64 {
    (UPSAMPLE as f64 * v + 0.5) as i64
}

/// `ceil(a / b)` for `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

/// The fine-grid points of one edge, by their step `t` along its longer (major) axis from the
/// end with the smaller major coordinate. The minor coordinate is rounded (`(int)(c + 0.5)`)
/// along the line from that end, which makes the points independent of the edge's direction.
struct EdgeTrace {
    from: (i64, i64),
    /// The end with the smaller major coordinate.
    start: (i64, i64),
    steps: i64,
    x_major: bool,
    slope: f64,
}

impl EdgeTrace {
    fn new(from: (i64, i64), to: (i64, i64)) -> Self {
        let (dx, dy) = ((to.0 - from.0).abs(), (to.1 - from.1).abs());
        let x_major = dx >= dy;
        let steps = dx.max(dy);
        let reversed = if x_major {
            from.0 > to.0
        } else {
            from.1 > to.1
        };
        let (a, b) = if reversed { (to, from) } else { (from, to) };
        let slope = match (steps, x_major) {
            (0, _) => 0.0,
            (_, true) => (b.1 - a.1) as f64 / steps as f64,
            (_, false) => (b.0 - a.0) as f64 / steps as f64,
        };
        Self {
            from,
            start: a,
            steps,
            x_major,
            slope,
        }
    }

    /// The point at step `t` (`0..=steps`).
    fn point(&self, t: i64) -> (i64, i64) {
        let a = self.start;
        let minor = |c: i64| (c as f64 + self.slope * t as f64 + 0.5) as i64;
        if self.x_major {
            (a.0 + t, minor(a.1))
        } else {
            (minor(a.0), a.1 + t)
        }
    }

    /// Whether step order runs from `to` back to `from`.
    fn reversed(&self) -> bool {
        self.start != self.from
    }

    /// The first point visited going `from` → `to` (the vertex itself for a point-like edge).
    fn first(&self) -> (i64, i64) {
        match self.steps {
            0 => self.from,
            s if self.reversed() => self.point(s),
            _ => self.point(0),
        }
    }

    /// The last point visited going `from` → `to`.
    fn last(&self) -> (i64, i64) {
        match self.steps {
            0 => self.from,
            _ if self.reversed() => self.point(0),
            s => self.point(s),
        }
    }

    /// The steps `t` (from `t` to `t + 1`) on which the trace crosses between fine columns
    /// `5n + 2` and `5n + 3` for a column `n` in `0..width`: the only steps that can toggle.
    /// The fine x coordinate is monotone in `t` and moves by at most one per step, so each
    /// such crossing happens once at most; along the minor axis it is found by bisection.
    fn column_steps(&self, width: i64) -> Vec<i64> {
        let u = |t: i64| self.point(t).0;
        let rising = u(self.steps) >= u(0);
        let mut found = Vec::new();
        for n in 0..width {
            let left = UPSAMPLE * n + 2;
            if self.x_major {
                let t = left - self.start.0;
                if (0..self.steps).contains(&t) {
                    found.push(t);
                }
                continue;
            }
            // The first step whose point is past the line, then whether the step before it
            // was just before the line.
            let past = |t: i64| if rising { u(t) > left } else { u(t) <= left };
            let (mut lo, mut hi) = (0, self.steps + 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if past(mid) {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            let before = if rising { left } else { left + 1 };
            if (1..=self.steps).contains(&lo) && u(lo - 1) == before {
                found.push(lo - 1);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The column-major mask of toggles on a `w` x `h` image.
    fn mask_of(mut toggles: Vec<usize>, w: u32, h: u32) -> Vec<u8> {
        let mut columns = vec![0u8; (w * h) as usize];
        toggles.sort_unstable();
        fill_between_toggles(&toggles, &mut columns);
        columns
    }

    /// Finding only the steps across the image's columns gives the same toggles as walking
    /// every point, whatever the polygon.
    #[test]
    fn an_edge_stepped_by_columns_toggles_as_one_walked_point_by_point() {
        let (w, h) = (6, 5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let n = rng.random_range(3..8);
            let xy: Vec<f64> = (0..2 * n).map(|_| rng.random_range(-40.0..45.0)).collect();
            assert_eq!(
                mask_of(trace_toggles(&xy, w, h, 0), w, h),
                mask_of(trace_toggles(&xy, w, h, i64::MAX), w, h),
                "{xy:?}"
            );
        }
    }

    /// Coordinates far beyond any image cost no more than the image.
    #[test]
    fn huge_coordinates_are_bounded_by_the_image() {
        let square = [-1e15, -1e15, 1e15, -1e15, 1e15, 1e15, -1e15, 1e15];
        let mask = mask_of(polygon_toggles(&square, 4, 3).unwrap(), 4, 3);
        assert_eq!(mask, vec![1; 12]);
        // A thin diagonal sliver across the image, from far outside.
        let sliver = [-1e14, -1e14, 1e14, 1e14, 1e14, 1e14 + 1.0];
        polygon_toggles(&sliver, 4, 3).unwrap();
        for bad in [f64::INFINITY, f64::NAN, 2e15] {
            assert!(polygon_toggles(&[0.0, 0.0, bad, 0.0, 2.0, 2.0], 4, 3).is_err());
        }
    }
}
