//! `wesam predict`: segment one image with box, point or mask prompts, as the official
//! `SamPredictor` does, and write the mask, an overlay and the low-resolution logits.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use image::{DynamicImage, GrayImage, Luma, Rgb, RgbImage};
use serde::Serialize;

use super::args::ArchitectureArgs;
use super::choice::{choice, default_name};
use wesam::data::mask::{binarise, check_same_size};
use wesam::data::prompts::{mask_logits, mask_to_frame};
use wesam::device::DeviceKind;
use wesam::io;
use wesam::model::transforms::Frame;
use wesam::model::{ImagePrompts, Lora, Predictor, Sam, SamConfig};
use wesam::profile::Profile;

/// Logit given to foreground (and, negated, background) pixels of a binary `--mask-input`.
const MASK_INPUT_LOGIT: f64 = 10.0;

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// SAM checkpoint (.pth, safetensors or HuggingFace safetensors). Without it, a small model
    /// with random weights runs (the built-in demo).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    #[command(flatten)]
    architecture: ArchitectureArgs,
    /// LoRA adapter to apply.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// Image to segment. Without it, a generated image (the built-in demo).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Box prompt in image pixels: X0,Y0,X1,Y1.
    #[arg(long = "box", value_parser = parse_box)]
    bbox: Option<[f32; 4]>,
    /// Point prompt in image pixels: X,Y,LABEL (1 foreground, 0 background); repeatable.
    #[arg(long = "point", value_parser = parse_point, allow_hyphen_values = true)]
    points: Vec<[f32; 3]>,
    /// Mask prompt: a binary PNG of the image's size, or low-resolution logits (.npy, as
    /// written by --logits).
    #[arg(long)]
    mask_input: Option<PathBuf>,
    /// `none`: decode without any prompt, from the decoder's learned dense embedding alone (how
    /// SAM-Adapter models segment); no --box, --point or --mask-input beside it.
    #[arg(long, value_parser = ["none"], conflicts_with_all = ["bbox", "points", "mask_input"])]
    prompt: Option<String>,
    /// Return the three multimask outputs instead of one mask; the best-scoring one is written.
    #[arg(long)]
    multimask: bool,
    /// Binary mask at the image's size (PNG).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The image with the mask and prompts drawn on it.
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Low-resolution logits of the returned mask, float32 .npy.
    #[arg(long)]
    logits: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[arg(long, value_parser = choice::<DeviceKind>(), default_value = default_name::<DeviceKind>())]
    device: DeviceKind,
    /// Model input size (default: the checkpoint's); position tables are interpolated.
    #[arg(long)]
    image_size: Option<usize>,
    /// `sam` (official preprocessing, logit > 0) or `wesam-reference`.
    #[arg(long, value_parser = choice::<Profile>(), default_value = default_name::<Profile>())]
    profile: Profile,
}

fn parse_floats<const N: usize>(s: &str, what: &str) -> Result<[f32; N], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{what}: `{p}` is not a finite number"))
        })
        .collect::<Result<_, _>>()?;
    v.try_into().map_err(|v: Vec<f32>| {
        format!(
            "{what}: expected {N} comma-separated numbers, got {}",
            v.len()
        )
    })
}

fn parse_box(s: &str) -> Result<[f32; 4], String> {
    let b = parse_floats::<4>(s, "box")?;
    if b[2] < b[0] || b[3] < b[1] {
        return Err(format!("box {s}: X1,Y1 must not be left of or above X0,Y0"));
    }
    Ok(b)
}

fn parse_point(s: &str) -> Result<[f32; 3], String> {
    let p = parse_floats::<3>(s, "point")?;
    if p[2] != 0.0 && p[2] != 1.0 {
        return Err(format!(
            "point {s}: LABEL must be 1 (foreground) or 0 (background)"
        ));
    }
    Ok(p)
}

/// Keeps the prompts on a `w` x `h` image, as its pixels are: a box reaching beyond it is cut
/// to it and a point beyond it moved onto its edge, each with a warning; a box wholly outside
/// it is an error.
fn fit_prompts(prompts: &mut ImagePrompts, (w, h): (u32, u32)) -> anyhow::Result<()> {
    let (w, h) = (w as f32, h as f32);
    prompts.bbox = match prompts.bbox {
        Some(b) => {
            let cut = [b[0].max(0.0), b[1].max(0.0), b[2].min(w), b[3].min(h)];
            if cut[0] >= cut[2] || cut[1] >= cut[3] {
                bail!(
                    "box {},{},{},{} lies outside the {w}x{h} image",
                    b[0],
                    b[1],
                    b[2],
                    b[3]
                );
            }
            if cut != b {
                eprintln!(
                    "warning: box {},{},{},{} reaches beyond the {w}x{h} image: cut to {},{},{},{}",
                    b[0], b[1], b[2], b[3], cut[0], cut[1], cut[2], cut[3]
                );
            }
            Some(cut)
        }
        None => None,
    };
    for p in &mut prompts.points {
        let [x, y, label] = *p;
        let moved = [x.clamp(0.0, w), y.clamp(0.0, h), label];
        if moved[..2] != [x, y] {
            eprintln!(
                "warning: point {x},{y} lies outside the {w}x{h} image: moved to {},{}",
                moved[0], moved[1]
            );
        }
        *p = moved;
    }
    Ok(())
}

/// The built-in demo image: a bright ellipse on a shaded background, and a box around it.
fn demo_image() -> (RgbImage, [f32; 4]) {
    let (w, h) = (160u32, 120u32);
    let img = RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = ((x as f32 - 90.0) / 40.0, (y as f32 - 55.0) / 28.0);
        if dx * dx + dy * dy <= 1.0 {
            Rgb([230, 180, 60])
        } else {
            Rgb([40 + (x / 4) as u8, 60 + (y / 4) as u8, 90])
        }
    });
    (img, [50.0, 27.0, 130.0, 83.0])
}

/// Reads `--mask-input` as low-resolution logits `[1, 1, 4h, 4w]`.
fn mask_prompt(
    path: &Path,
    image: &Path,
    frame: &Frame,
    low: usize,
    dev: &Device,
) -> anyhow::Result<Tensor> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
    {
        let t =
            Tensor::read_npy(path).with_context(|| format!("cannot read {}", path.display()))?;
        let t = t.to_dtype(DType::F32)?.to_device(dev)?;
        if t.dims().iter().product::<usize>() != low * low || t.dims().last() != Some(&low) {
            bail!(
                "{}: mask logits of shape {:?}, the model needs {low}x{low}",
                path.display(),
                t.dims()
            );
        }
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        if let Some(v) = values.iter().find(|v| !v.is_finite()) {
            bail!("{}: the mask logits hold {v}", path.display());
        }
        return Ok(t.reshape((1, 1, low, low))?);
    }
    let mask = io::read_gray(path)?;
    let (h, w) = frame.original;
    check_same_size(&mask, path, (w as u32, h as u32), image)?;
    let framed = mask_to_frame(&binarise(&mask, 127), frame);
    mask_logits(&[framed], low, MASK_INPUT_LOGIT, dev)
}

#[derive(Serialize)]
struct MaskReport {
    index: usize,
    iou_pred: f32,
    area: usize,
}

#[derive(Serialize)]
struct Report {
    image: String,
    width: usize,
    height: usize,
    masks: Vec<MaskReport>,
    selected: usize,
}

/// The image with the mask tinted and the prompts drawn.
fn draw_overlay(img: &RgbImage, mask: &GrayImage, prompts: &ImagePrompts) -> RgbImage {
    use imageproc::drawing::{draw_filled_circle_mut, draw_hollow_rect_mut};
    let mut out = img.clone();
    for (p, m) in out.pixels_mut().zip(mask.pixels()) {
        if m.0[0] > 0 {
            for (c, tint) in p.0.iter_mut().zip([30u8, 144, 255]) {
                *c = ((*c as u16 + tint as u16) / 2) as u8;
            }
        }
    }
    if let Some(b) = prompts.bbox {
        let rect = imageproc::rect::Rect::at(b[0] as i32, b[1] as i32)
            .of_size(((b[2] - b[0]) as u32).max(1), ((b[3] - b[1]) as u32).max(1));
        draw_hollow_rect_mut(&mut out, rect, Rgb([0, 255, 0]));
    }
    for p in &prompts.points {
        let colour = if p[2] == 1.0 {
            Rgb([0, 255, 0])
        } else {
            Rgb([255, 0, 0])
        };
        draw_filled_circle_mut(&mut out, (p[0] as i32, p[1] as i32), 3, colour);
    }
    out
}

/// `wesam predict`.
pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let dev = args.device.open()?;
    let sam = match &args.checkpoint {
        Some(path) => args.architecture.load(path, args.image_size, &dev)?,
        None => {
            eprintln!("no --checkpoint: running the built-in demo model (small, random weights)");
            Sam::random(&SamConfig::demo(), args.image_size, 0, &dev)?
        }
    };
    let lora = match &args.lora {
        Some(p) => Some(Lora::load(p, &sam.config, &dev)?),
        None => None,
    };
    let (img, image_name, bbox) = match &args.image {
        Some(p) => (io::read_rgb(p)?, p.display().to_string(), args.bbox),
        None => {
            let (img, b) = demo_image();
            eprintln!("no --image: segmenting a generated image");
            let demo_box = args.prompt.is_none().then_some(b);
            (img, "<generated>".to_string(), args.bbox.or(demo_box))
        }
    };
    let no_prompt = bbox.is_none() && args.points.is_empty() && args.mask_input.is_none();
    if args.image.is_some() && no_prompt && args.prompt.is_none() {
        bail!("give at least one prompt: --box, --point or --mask-input (or --prompt none)");
    }

    let mut prompts = ImagePrompts {
        bbox,
        points: args.points.clone(),
        mask: None,
    };
    fit_prompts(&mut prompts, img.dimensions())?;
    let mut predictor = Predictor::new(&sam, lora.as_ref(), args.profile.preprocessing());
    predictor.set_image(&img)?;
    if let Some(m) = &args.mask_input {
        let image_path = args
            .image
            .clone()
            .unwrap_or_else(|| PathBuf::from("<generated>"));
        let low = predictor.low_res_size();
        prompts.mask = Some(mask_prompt(m, &image_path, &predictor.frame()?, low, &dev)?);
    }
    let out = predictor.predict(&prompts, args.multimask)?;
    let full = predictor
        .full_resolution(&out.low_res)?
        .squeeze(0)?
        .to_vec3::<f32>()?;
    let iou = out.iou.squeeze(0)?.to_vec1::<f32>()?;
    let (h, w) = predictor.frame()?.original;
    let masks: Vec<MaskReport> = full
        .iter()
        .zip(&iou)
        .enumerate()
        .map(|(index, (m, &iou_pred))| MaskReport {
            index,
            iou_pred,
            area: m
                .iter()
                .flatten()
                .filter(|&&v| args.profile.is_foreground(v))
                .count(),
        })
        .collect();
    let selected = masks
        .iter()
        .max_by(|a, b| a.iou_pred.total_cmp(&b.iou_pred))
        .map(|m| m.index)
        .unwrap_or(0);
    let mask = GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let fg = args
            .profile
            .is_foreground(full[selected][y as usize][x as usize]);
        Luma([if fg { 255 } else { 0 }])
    });
    write_outputs(
        &args,
        &img,
        &mask,
        &prompts,
        &out.low_res.get(0)?.get(selected)?,
    )?;
    print_report(
        &args,
        &Report {
            image: image_name,
            width: w,
            height: h,
            masks,
            selected,
        },
    )
}

/// Writes the mask, the overlay and the low-resolution logits where asked.
fn write_outputs(
    args: &PredictArgs,
    img: &RgbImage,
    mask: &GrayImage,
    prompts: &ImagePrompts,
    logits: &Tensor,
) -> anyhow::Result<()> {
    if let Some(p) = &args.out {
        io::write_image(p, &DynamicImage::ImageLuma8(mask.clone()))?;
    }
    if let Some(p) = &args.overlay {
        io::write_image(
            p,
            &DynamicImage::ImageRgb8(draw_overlay(img, mask, prompts)),
        )?;
    }
    if let Some(p) = &args.logits {
        io::write_npy(p, logits)?;
    }
    Ok(())
}

/// Prints the report: one JSON object, or a table and the files written.
fn print_report(args: &PredictArgs, report: &Report) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    println!("{} ({}x{}):", report.image, report.width, report.height);
    println!("{:>5} {:>9} {:>9}", "mask", "iou_pred", "area_px");
    for m in &report.masks {
        let mark = if m.index == report.selected { " <" } else { "" };
        println!("{:>5} {:>9.4} {:>9}{mark}", m.index, m.iou_pred, m.area);
    }
    for (what, p) in [
        ("mask", &args.out),
        ("overlay", &args.overlay),
        ("logits", &args.logits),
    ] {
        if let Some(p) = p {
            println!("wrote {what} {}", p.display());
        }
    }
    Ok(())
}
