//! Parity with the official PyTorch SAM on a tiny configuration whose every parameter is random
//! (fixture: `scripts/make_parity_fixture.py`). Tolerance: 1e-4 absolute on embeddings, logits and
//! IoU predictions; LoRA gradients, and the gradients of every model parameter, within 1e-3 of
//! the largest gradient of each tensor. Both kernel sets pass at these tolerances
//! (`WESAM_KERNELS=portable`), on the CPU or on the device named by `WESAM_TEST_DEVICE`.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use common::{assert_close, cases, device, dice_bce, fixture_dir, max_abs};
use wesam::model::transforms::{self, Preprocessing};
use wesam::model::{Lora, Prompts, Sam};

const TOL: f32 = 1e-4;

fn tiny(input_size: Option<usize>) -> Sam {
    Sam::load(
        &fixture_dir().join("model.safetensors"),
        None,
        input_size,
        &device(),
    )
    .unwrap()
}

fn tiny_lora(sam: &Sam) -> Lora {
    Lora::load(
        &fixture_dir().join("lora.safetensors"),
        &sam.config,
        &device(),
    )
    .unwrap()
}

#[test]
fn image_embeddings_match_official() {
    let c = cases();
    let sam = tiny(None);
    assert_close(
        "embed",
        &sam.encode(&c["image"], None).unwrap(),
        &c["embed"],
        TOL,
    );
    let lora = tiny_lora(&sam);
    assert_close(
        "embed_lora",
        &sam.encode(&c["image"], Some(&lora)).unwrap(),
        &c["embed_lora"],
        TOL,
    );
}

#[test]
fn decoder_matches_official_for_every_prompt_kind() {
    let c = cases();
    let sam = tiny(None);
    let points = Some((c["points"].clone(), c["point_labels"].clone()));
    let cases_prompts = [
        (
            "box",
            Prompts {
                boxes: Some(c["box"].clone()),
                ..Default::default()
            },
        ),
        (
            "points",
            Prompts {
                points: points.clone(),
                ..Default::default()
            },
        ),
        (
            "box_points",
            Prompts {
                points,
                boxes: Some(c["box"].clone()),
                masks: None,
            },
        ),
        (
            "mask_box",
            Prompts {
                boxes: Some(c["box"].clone()),
                masks: Some(c["mask_input"].clone()),
                points: None,
            },
        ),
    ];
    for (name, prompts) in &cases_prompts {
        for (mode, multi) in [("single", false), ("multi", true)] {
            let (low, iou) = sam.decode(&c["embed"], prompts, multi).unwrap();
            assert_close(
                &format!("{name}.{mode}.low_res"),
                &low,
                &c[&format!("{name}.{mode}.low_res")],
                TOL,
            );
            assert_close(
                &format!("{name}.{mode}.iou"),
                &iou,
                &c[&format!("{name}.{mode}.iou")],
                TOL,
            );
        }
    }
}

#[test]
fn another_input_size_interpolates_position_tables_like_the_reference() {
    let c = cases();
    let sam = tiny(Some(96));
    let embed = sam.encode(&c["image_96"], None).unwrap();
    assert_close("embed_96", &embed, &c["embed_96"], TOL);
    let prompts = Prompts {
        boxes: Some(c["box_96"].clone()),
        ..Default::default()
    };
    let (low, iou) = sam.decode(&c["embed_96"], &prompts, false).unwrap();
    assert_close(
        "embed_96_box.low_res",
        &low,
        &c["embed_96_box.low_res"],
        TOL,
    );
    assert_close("embed_96_box.iou", &iou, &c["embed_96_box.iou"], TOL);
}

#[test]
fn every_lora_tensor_gets_the_official_gradient() {
    let c = cases();
    let sam = tiny(None);
    let lora = tiny_lora(&sam);
    let embed = sam.encode(&c["image"], Some(&lora)).unwrap();
    let prompts = Prompts {
        boxes: Some(c["box"].clone()),
        ..Default::default()
    };
    let (low, _) = sam.decode(&embed, &prompts, false).unwrap();
    let loss = dice_bce(&low, &c["grad.target"]);
    assert_close("grad.loss", &loss.reshape(1).unwrap(), &c["grad.loss"], TOL);
    let grads = loss.backward().unwrap();
    let vars = lora.named_vars();
    assert_eq!(vars.len(), 12);
    for (name, var) in vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let expected = &c[&format!("grad.{name}")];
        let scale = max_abs(expected);
        assert!(max_abs(g) > 0.0, "{name}: zero gradient");
        assert_close(&format!("grad.{name}"), g, expected, 1e-3 * scale);
    }
}

/// The total loss of one WeSAM step on the tiny model (anchor and teacher on the weak view,
/// student on the strong one, box prompts, `sam` profile, losses on the low-res logits).
fn tiny_step_loss(sam: &Sam, lora: &Lora, c: &HashMap<String, Tensor>) -> Tensor {
    use wesam::adapt::losses::{wesam_image_loss, LossConfig, StudentOutputs, WeakOutputs};
    use wesam::profile::Profile;
    let prompts = Prompts {
        boxes: Some(c["box"].clone()),
        ..Default::default()
    };
    let run = |image: &Tensor, l: Option<&Lora>| {
        let e = sam.encode(image, l).unwrap();
        let (low, iou) = sam.decode(&e, &prompts, false).unwrap();
        (e.squeeze(0).unwrap(), low, iou)
    };
    let (e_a, low_a, _) = run(&c["image"], None);
    let (e_t, low_t, _) = run(&c["image"], Some(lora));
    let (_, low_s, iou_s) = run(&c["step.strong"], Some(lora));
    let masks = |low: &Tensor| low.squeeze(1).unwrap();
    let (m_s, m_t, m_a) = (masks(&low_s), masks(&low_t), masks(&low_a));
    wesam_image_loss(
        &LossConfig::default(),
        Profile::Sam,
        &StudentOutputs {
            masks: &m_s,
            iou_pred: &iou_s,
        },
        &WeakOutputs {
            masks: &m_t,
            low_res: &low_t,
            embeddings: &e_t,
        },
        &WeakOutputs {
            masks: &m_a,
            low_res: &low_a,
            embeddings: &e_a,
        },
        None,
        2,
    )
    .unwrap()
    .total
}

/// One WeSAM step on the tiny model: the total loss of `adapt` and its gradient w.r.t. every
/// LoRA tensor, as PyTorch computes them with the official model and the reference's loss
/// functions.
#[test]
fn wesam_step_loss_and_lora_gradients_match_official() {
    let c = cases();
    let sam = tiny(None);
    let lora = tiny_lora(&sam);
    let loss = tiny_step_loss(&sam, &lora, &c);
    let want = &c["step.loss"];
    assert_close(
        "step.loss",
        &loss.reshape(1).unwrap(),
        want,
        1e-5 * max_abs(want),
    );
    let grads = loss.backward().unwrap();
    for (name, var) in lora.named_vars() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let want = &c[&format!("step.grad.{name}")];
        assert!(max_abs(g) > 0.0, "{name}: zero gradient");
        assert_close(&format!("step.grad.{name}"), g, want, 1e-3 * max_abs(want));
    }
}

/// Mixed precision: the same step with the image encoder in bf16 (and f16) against f32. The
/// loss stays within 0.5% and every LoRA gradient keeps f32 and points the same way (cosine
/// similarity at least 0.99).
#[test]
fn a_low_precision_step_stays_close_to_f32() {
    use wesam::model::Precision;
    let c = cases();
    let lora = tiny_lora(&tiny(None));
    let step = |precision: Precision| {
        let mut sam = tiny(None);
        sam.image_encoder.set_precision(precision);
        let loss = tiny_step_loss(&sam, &lora, &c);
        assert_eq!(loss.dtype(), DType::F32, "the loss is computed in f32");
        let grads = loss.backward().unwrap();
        let g: Vec<(String, Tensor)> = lora
            .named_vars()
            .into_iter()
            .map(|(name, v)| (name, grads.get(v.as_tensor()).unwrap().clone()))
            .collect();
        (loss.to_scalar::<f32>().unwrap(), g)
    };
    let (loss32, g32) = step(Precision::F32);
    let mut worst = f32::INFINITY;
    for precision in [Precision::Bf16, Precision::F16] {
        let (loss, g) = step(precision);
        let rel = (loss - loss32).abs() / loss32.abs();
        eprintln!("{precision:?}: loss {loss} vs {loss32} (relative {rel:.2e})");
        assert!(rel < 5e-3, "{precision:?}: loss {loss} vs {loss32}");
        for ((name, a), (_, b)) in g.iter().zip(&g32) {
            assert_eq!(a.dtype(), DType::F32, "{name}: gradient not in f32");
            let dot = (a * b)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let cos = dot / (norm(a) * norm(b));
            eprintln!("{precision:?}: {name} cosine {cos:.5}");
            worst = worst.min(cos);
        }
    }
    assert!(
        worst >= 0.99,
        "a LoRA gradient's cosine similarity is {worst}"
    );
}

/// The Euclidean norm of a tensor.
fn norm(t: &Tensor) -> f32 {
    t.sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .sqrt()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// `--trainable all` and `decoder` train model weights: every parameter of the official model
/// (not its buffers) must be a trainable weight of wesam and receive PyTorch's gradient, for a
/// loss whose prompts reach every parameter (box, points with labels 1/0/-1 and a mask input,
/// three masks; then points alone, one mask).
#[test]
fn every_model_parameter_gets_the_official_gradient() {
    use wesam::adapt::config::{ModelConfig, Trainable};
    let c = cases();
    let sam = tiny(None);
    let all = ModelConfig {
        trainable: Trainable::All,
        ..Default::default()
    };
    let trainable = sam.trainable(|k| all.trains(k)).unwrap();
    let model = &trainable.model;
    let embed = model.encode(&c["image"], None).unwrap();
    let full = Prompts {
        points: Some((c["points"].clone(), c["wgrad.labels"].clone())),
        boxes: Some(c["box"].clone()),
        masks: Some(c["mask_input"].clone()),
    };
    let (low_a, iou_a) = model.decode(&embed, &full, true).unwrap();
    let target = &c["grad.target"];
    let mean_sq = |t: &Tensor| t.sqr().unwrap().mean_all().unwrap();
    let loss_a =
        (dice_bce(&low_a, &target.broadcast_as(low_a.shape()).unwrap()) + mean_sq(&iou_a)).unwrap();
    let points = Prompts {
        points: Some((c["points"].clone(), c["point_labels"].clone())),
        ..Default::default()
    };
    let (low_b, iou_b) = model.decode(&embed, &points, false).unwrap();
    let loss = ((loss_a + dice_bce(&low_b, target)).unwrap() + mean_sq(&iou_b)).unwrap();
    assert_close(
        "wgrad.loss",
        &loss.reshape(1).unwrap(),
        &c["wgrad.loss"],
        TOL,
    );
    let grads = loss.backward().unwrap();

    let expected: std::collections::BTreeSet<&str> = c
        .keys()
        .filter_map(|k| k.strip_prefix("wgrad."))
        .filter(|k| *k != "loss" && *k != "labels")
        .collect();
    let names: std::collections::BTreeSet<&str> =
        trainable.vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names, expected,
        "trainable weights = the official parameters"
    );
    // A key bias shifts every score of a query by the same amount, which the softmax cancels:
    // its true gradient is zero, and both sides hold only rounding noise, compared against the
    // largest gradient of all.
    let largest = expected
        .iter()
        .map(|k| max_abs(&c[&format!("wgrad.{k}")]))
        .fold(0.0, f32::max);
    for (name, var) in &trainable.vars {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let want = &c[&format!("wgrad.{name}")];
        if name.ends_with("k_proj.bias") {
            assert!(
                max_abs(g) <= 1e-6 * largest,
                "{name}: {} is not zero",
                max_abs(g)
            );
            continue;
        }
        assert!(max_abs(g) > 1e-6 * largest, "{name}: zero gradient");
        assert_close(&format!("wgrad.{name}"), g, want, 1e-3 * max_abs(want));
    }
}

fn predictor_prompts(c: &HashMap<String, Tensor>, frame: &transforms::Frame) -> Prompts {
    let b: Vec<f32> = c["predict.box"].to_vec1().unwrap();
    let mapped = frame.map_box([b[0], b[1], b[2], b[3]]);
    let pts: Vec<Vec<f32>> = c["predict.points"].to_vec2().unwrap();
    let coords: Vec<f32> = pts
        .iter()
        .flat_map(|p| <[f32; 2]>::from(frame.map_point(p[0], p[1])))
        .collect();
    let k = pts.len();
    Prompts {
        boxes: Some(Tensor::new(&[mapped], &device()).unwrap()),
        points: Some((
            Tensor::from_vec(coords, (1, k, 2), &device()).unwrap(),
            c["predict.labels"].reshape((1, k)).unwrap(),
        )),
        masks: None,
    }
}

#[test]
fn end_to_end_predictor_on_a_non_square_image() {
    let c = cases();
    let sam = tiny(None);
    let img = image::open(fixture_dir().join("image.png"))
        .unwrap()
        .to_rgb8();
    let (input, frame) = transforms::preprocess(&img, 128, Preprocessing::Sam, &device()).unwrap();
    assert_eq!(frame.original, (90, 130));
    // The resize is PIL's, bit for bit: only the normalisation's rounding differs.
    assert_close("predict.input", &input, &c["predict.input"], 1e-5);

    // From the official predictor's own input, every later step must match to 1e-4.
    for (key, multi) in [("predict", false), ("predict_multi", true)] {
        let embed = sam.encode(&c["predict.input"], None).unwrap();
        let (low, iou) = sam
            .decode(&embed, &predictor_prompts(&c, &frame), multi)
            .unwrap();
        assert_close(
            &format!("{key}.low_res"),
            &low,
            &c[&format!("{key}.low_res")],
            TOL,
        );
        assert_close(
            &format!("{key}.iou"),
            &iou.flatten_all().unwrap(),
            &c[&format!("{key}.iou")],
            TOL,
        );
        let masks = transforms::postprocess(&low, &frame)
            .unwrap()
            .squeeze(0)
            .unwrap();
        assert_close(
            &format!("{key}.masks"),
            &masks,
            &c[&format!("{key}.masks")],
            TOL,
        );
    }

    // And from wesam's own preprocessing the binary mask agrees almost everywhere.
    let embed = sam.encode(&input, None).unwrap();
    let (low, _) = sam
        .decode(&embed, &predictor_prompts(&c, &frame), false)
        .unwrap();
    let ours = transforms::postprocess(&low, &frame)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let agree = ours
        .gt(0.0)
        .unwrap()
        .eq(&c["predict.masks"].gt(0.0).unwrap())
        .unwrap();
    let frac = agree
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    eprintln!("binary mask agreement from wesam's preprocessing: {frac}");
    assert!(frac > 0.99, "only {frac} of mask pixels agree");
}

#[test]
fn reference_preprocessing_centres_and_skips_normalisation() {
    let c = cases();
    let img = image::open(fixture_dir().join("image.png"))
        .unwrap()
        .to_rgb8();
    let (input, frame) =
        transforms::preprocess(&img, 128, Preprocessing::Reference, &device()).unwrap();
    assert_eq!(frame.offset, (19, 0));
    // The same resize, bit for bit.
    assert_close(
        "ref_preprocess.input",
        &input,
        &c["ref_preprocess.input"],
        1e-6,
    );
}
