//! The loss of one training step and its gradients: for every image of the batch, the views,
//! prompts and model passes of the run's objective, and its loss terms (`docs/method.md` §1.3 for
//! self-training); on the CPU the images of a batch run at the same time, one per core.

use anyhow::{anyhow, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::OnceLock;

use super::config::{AdaptConfig, LossResolution, Objective};
use super::loss_terms::LossTerms;
use super::losses::{
    multimask_image_loss, pseudo_label, supervised_image_loss, wesam_image_loss, AnchorWeighting,
    ImageLoss, PixelBalance, StudentOutputs, SupervisedLoss, WeakOutputs,
};
use crate::data::augment::{self, Flip};
use crate::data::prompts::{make_prompts, mask_to_frame, FramePrompts, PromptKind};
use crate::data::{Instance, Sample};
use crate::eval::agreement::anchor_trust;
use crate::model::predictor::{Masks, PreparedImage};
use crate::model::transforms::Frame;
use crate::model::{Lora, Predictor, Prompts, Sam};
use crate::ops::resize::{resize_2d, Interpolation};

/// The models one step runs. When only LoRA is trained, `anchor` and `model` are the same
/// frozen model and the adapters carry the training.
#[derive(Clone, Copy)]
pub struct StepModels<'a> {
    /// The frozen source model without adapters: self-training's anchor.
    pub anchor: &'a Sam,
    /// The model being trained (its trained weights are variables).
    pub model: &'a Sam,
    /// The trained adapters, if the run trains LoRA.
    pub lora: Option<&'a Lora>,
    /// The teacher's adapters: `lora` itself (the reference) or an EMA's frozen view.
    pub teacher: Option<&'a Lora>,
}

/// One image's loss terms as numbers, for the log.
fn logged(loss: &ImageLoss) -> Result<LossTerms<f64>> {
    loss.try_map(|t| Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?))
}

/// A training image of a step and the seed of its random draws (which instances a cap keeps,
/// its views and prompts): a function of the run's seed, the epoch and the image's index in the
/// training split, never of the batch or the rank, so that the same images give the same
/// gradients however a batch is split across ranks.
pub struct StepSample {
    pub sample: Sample,
    pub seed: u64,
    /// The image's position in the step's (global) batch.
    pub position: usize,
}

/// The seed of training image `index`'s draws in `epoch` of a run seeded `seed`.
pub fn sample_seed(seed: u64, epoch: usize, index: usize) -> u64 {
    let mut rng = StdRng::seed_from_u64(
        seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((epoch as u64) << 32 | index as u64),
    );
    rng.random()
}

/// Keeps at most `max` random instances of a sample (the reference's `reduce_instances`).
fn cap_instances(sample: &mut Sample, max: usize, rng: &mut StdRng) {
    if sample.instances.len() > max {
        sample.instances.shuffle(rng);
        sample.instances.truncate(max);
    }
}

/// Mask logits `[n, 1, h, w]` at the loss resolution: `[n, S, S]` or `[n, h, w]`.
fn loss_masks(
    low_res: &Tensor,
    resolution: LossResolution,
    size: usize,
) -> candle_core::Result<Tensor> {
    at_loss_resolution(low_res, resolution, size)?.squeeze(1)
}

/// Low-resolution logits `[n, k, h, w]` at the loss resolution (`[n, k, S, S]` at the input's).
fn at_loss_resolution(
    low_res: &Tensor,
    resolution: LossResolution,
    size: usize,
) -> candle_core::Result<Tensor> {
    match resolution {
        LossResolution::Input => resize_2d(low_res, size, size, Interpolation::Bilinear),
        LossResolution::Low => Ok(low_res.clone()),
    }
}

/// Ground-truth masks `[n, side, side]` (0/1) in the input frame at the loss resolution: each
/// mask resized and padded as its image was, then, for the low resolution, resized bilinearly
/// and thresholded at one half.
fn ground_truth(
    instances: &[Instance],
    frame: &Frame,
    side: usize,
    dev: &Device,
) -> Result<Tensor> {
    let s = frame.size;
    let mut data = Vec::with_capacity(instances.len() * s * s);
    for inst in instances {
        data.extend(
            mask_to_frame(&inst.mask, frame)
                .pixels()
                .map(|p| f32::from(p.0[0] > 0)),
        );
    }
    let full = Tensor::from_vec(data, (instances.len(), 1, s, s), dev)?;
    let t = if side == s {
        full
    } else {
        resize_2d(&full, side, side, Interpolation::Bilinear)?
            .ge(0.5)?
            .to_dtype(DType::F32)?
    };
    Ok(t.squeeze(1)?)
}

/// A step's images made ready for their losses: instances capped (and merged into one for
/// prompt-free training); the images left with instances, with their index in `samples` and
/// the seed of their loss ([`image_loss`]).
pub fn prepare_batch<'s>(
    cfg: &AdaptConfig,
    samples: &'s mut [StepSample],
) -> Vec<(usize, &'s Sample, u64)> {
    samples
        .iter_mut()
        .enumerate()
        .filter_map(|(i, s)| {
            let rng = &mut StdRng::seed_from_u64(s.seed);
            cap_instances(&mut s.sample, cfg.train.max_instances, rng);
            if cfg.prompt == PromptKind::None {
                s.sample.merge_instances();
            }
            let seed = rng.random();
            (!s.sample.instances.is_empty()).then_some((i, &s.sample, seed))
        })
        .collect()
}

/// The instance count and the target pixels (for the balanced BCE) of prepared images: what
/// every image's loss is normalised by, over the whole batch.
pub fn batch_counts(
    cfg: &AdaptConfig,
    model: &Sam,
    work: &[(usize, &Sample, u64)],
) -> Result<(usize, PixelBalance)> {
    let instances = work.iter().map(|(_, x, _)| x.instances.len()).sum();
    let mut balance = PixelBalance::default();
    if cfg.objective == Objective::Supervised
        && cfg.losses.supervised == SupervisedLoss::BalancedBce
    {
        for &(_, sample, seed) in work {
            let (_, _, gt) = supervised_view(cfg, model, sample, &mut StdRng::seed_from_u64(seed))?;
            balance.add(PixelBalance::of(&gt)?);
        }
    }
    Ok((instances, balance))
}

/// Each prepared image's gradients of `vars` and loss terms, in image order, its loss
/// normalised by the batch's `n_total` instances and `balance`.
///
/// Each image's loss is differentiated on its own and only the gradients of `vars` are kept,
/// so an image's graph is freed as soon as it is done. On the CPU the images run in parallel:
/// for small models one image cannot keep every core busy, and a batch spread over the cores
/// trains several times faster.
pub fn image_gradients(
    cfg: &AdaptConfig,
    models: StepModels,
    work: &[(usize, &Sample, u64)],
    (n_total, balance): (usize, PixelBalance),
    vars: &[Tensor],
) -> Result<Vec<(GradStore, LossTerms<f64>)>> {
    let one = |&(_, sample, seed): &(usize, &Sample, u64)| -> Result<(GradStore, LossTerms<f64>)> {
        let loss = image_loss(cfg, models, sample, n_total, balance, seed)?;
        let log = logged(&loss)?;
        let all = loss.total.backward()?;
        let mut kept = GradStore::default();
        for v in vars {
            if let Some(g) = all.get(v) {
                kept.insert(v, g.clone());
            }
        }
        Ok((kept, log))
    };
    if models.model.device.is_cpu() && work.len() > 1 {
        on_single_threaded_pools(work, one)
    } else {
        work.iter().map(one).collect()
    }
}

/// The gradients of `vars` for one step of a one-process run, summed over the batch's images
/// in image order (so the result does not depend on the scheduling), and the summed loss
/// terms; `None` when the batch has no instance.
/// [`crate::adapt::data_parallel::replica_gradients`] is the same sum across ranks.
pub fn batch_gradients(
    cfg: &AdaptConfig,
    models: StepModels,
    samples: &mut [StepSample],
    vars: &[Tensor],
) -> Result<Option<(GradStore, LossTerms<f64>)>> {
    let work = prepare_batch(cfg, samples);
    let counts = batch_counts(cfg, models.model, &work)?;
    if counts.0 == 0 {
        return Ok(None);
    }
    let mut grads = GradStore::default();
    let mut log = LossTerms::default();
    for (g, l) in image_gradients(cfg, models, &work, counts, vars)? {
        grads.extend(g)?;
        log.add(&l);
    }
    Ok(Some((grads, log)))
}

/// One image's loss under the run's objective, normalised by the batch's `n_total` instances
/// (and, for the balanced BCE, weighted by the batch's target pixels `balance`), with its views
/// and prompts drawn from `seed`.
pub fn image_loss(
    cfg: &AdaptConfig,
    models: StepModels,
    sample: &Sample,
    n_total: usize,
    balance: PixelBalance,
    seed: u64,
) -> Result<ImageLoss> {
    let rng = &mut StdRng::seed_from_u64(seed);
    match cfg.objective {
        Objective::SelfTraining => self_training_loss(cfg, models, sample, n_total, rng),
        Objective::Supervised => supervised_loss(cfg, models, sample, n_total, balance, rng),
    }
}

/// One single-threaded rayon pool per core, made once: candle's CPU kernels split every
/// operation over the current pool, which for a small model costs more in waiting than it
/// gains, so each image of a batch runs on its own core with serial kernels.
fn single_threaded_pools() -> &'static [ThreadPool] {
    static POOLS: OnceLock<Vec<ThreadPool>> = OnceLock::new();
    POOLS.get_or_init(|| {
        (0..rayon::current_num_threads())
            .filter_map(|_| ThreadPoolBuilder::new().num_threads(1).build().ok())
            .collect()
    })
}

/// `f` over `items`, item `i` on pool `i mod pools`, results in item order.
fn on_single_threaded_pools<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let pools = single_threaded_pools();
    if pools.len() < 2 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    let lanes = std::thread::scope(|scope| {
        let handles: Vec<_> = pools
            .iter()
            .enumerate()
            .map(|(lane, pool)| {
                scope.spawn(move || {
                    pool.install(|| {
                        (lane..items.len())
                            .step_by(pools.len())
                            .map(|i| (i, f(&items[i])))
                            .collect::<Vec<_>>()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a training thread panicked")))
            .collect::<Result<Vec<_>>>()
    })?;
    let mut results: Vec<(usize, Result<R>)> = lanes.into_iter().flatten().collect();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The prompts of a view's instances drawn from their weak labels, in the input frame of
/// `prepared` (as coordinates and as model tensors).
fn prompts_for(
    cfg: &AdaptConfig,
    predictor: &Predictor,
    view: &Sample,
    prepared: &PreparedImage,
    rng: &mut StdRng,
) -> Result<(FramePrompts, Prompts)> {
    let in_frame = make_prompts(
        &view.instances,
        &prepared.frame,
        cfg.prompt,
        &cfg.prompts,
        rng,
    );
    let low = predictor.low_res_size();
    let dev = prepared.input.device();
    let prompts = in_frame.to_model(low, cfg.prompts.coarse_mask_logit, dev)?;
    Ok((in_frame, prompts))
}

/// The anchor term's instance weights `[n]` under the configured weighting: `None` for uniform,
/// else the trust in the anchor's masks `[n, S, S]` given their weak labels (`anchor_trust`),
/// raised to the trust exponent.
fn anchor_weights(
    cfg: &AdaptConfig,
    anchor_masks: &Tensor,
    in_frame: &FramePrompts,
    frame_size: usize,
) -> Result<Option<Tensor>> {
    match cfg.losses.anchor_weighting(cfg.profile) {
        AnchorWeighting::Uniform => Ok(None),
        AnchorWeighting::WeakLabel => {
            let side = anchor_masks.dim(1)?;
            let masks: Vec<f32> = pseudo_label(anchor_masks)?.flatten_all()?.to_vec1()?;
            let exponent = cfg.losses.anchor_trust_exponent as f32;
            let w: Vec<f32> = anchor_trust(&masks, side, frame_size, in_frame)
                .into_iter()
                .map(|a| a.powf(exponent))
                .collect();
            Ok(Some(Tensor::new(w, anchor_masks.device())?))
        }
    }
}

/// One image's WeSAM loss: anchor and teacher on the weak view, the student on the strong one.
fn self_training_loss(
    cfg: &AdaptConfig,
    m: StepModels,
    sample: &Sample,
    n_total: usize,
    rng: &mut StdRng,
) -> Result<ImageLoss> {
    let views = augment::views(sample, rng);
    let preprocessing = cfg.profile.preprocessing();
    let mut teacher = Predictor::new(m.model, m.teacher, preprocessing);
    let weak = teacher.prepare(&views.weak.image)?;
    let (in_frame, prompts) = prompts_for(cfg, &teacher, &views.weak, &weak, rng)?;
    let mut student = Predictor::new(m.model, m.lora, preprocessing);
    let strong = student.prepare(&views.strong)?;
    teacher.set_prepared(&weak)?;
    let low_t = teacher.predict_in_frame(&prompts, false)?.low_res;
    student.set_prepared(&strong)?;
    let out_s = student.predict_in_frame(&prompts, false)?;
    let (low_s, iou_s) = (out_s.low_res, out_s.iou);
    let e_t = teacher.embedding()?;
    // The anchor's outputs feed only the anchor and contrastive terms: without both (the
    // self-training ablation) its encoder pass is skipped and the teacher's outputs, which no
    // enabled term then reads as the anchor's, stand in.
    let (e_a, low_a) = if cfg.losses.anchor.enabled || cfg.losses.contrastive.enabled {
        let mut anchor = Predictor::new(m.anchor, None, preprocessing);
        anchor.set_prepared(&weak)?;
        let low_a = anchor.predict_in_frame(&prompts, false)?.low_res;
        (anchor.embedding()?.clone(), low_a)
    } else {
        (e_t.detach(), low_t.detach())
    };

    let (res, size) = (cfg.train.loss_resolution, m.model.input_size);
    let (m_a, m_t, m_s) = (
        loss_masks(&low_a, res, size)?,
        loss_masks(&low_t, res, size)?,
        loss_masks(&low_s, res, size)?,
    );
    let (e_t, e_a) = (e_t.squeeze(0)?, e_a.squeeze(0)?);
    let weights = if cfg.losses.anchor.enabled {
        anchor_weights(cfg, &m_a, &in_frame, size)?
    } else {
        None
    };
    Ok(wesam_image_loss(
        &cfg.losses,
        cfg.profile,
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
        weights.as_ref(),
        n_total,
    )?)
}

/// One image's supervised view: the sample flipped as its seed draws it, the frame it takes in
/// the model's input, and its ground truth at the loss resolution (`[n, side, side]`, 0/1).
fn supervised_view(
    cfg: &AdaptConfig,
    model: &Sam,
    sample: &Sample,
    rng: &mut StdRng,
) -> Result<(Sample, Frame, Tensor)> {
    let view = Flip::sample(rng).apply(sample);
    let (h, w) = (view.image.height() as usize, view.image.width() as usize);
    let frame = Frame::new((h, w), model.input_size, cfg.profile.preprocessing());
    let side = match cfg.train.loss_resolution {
        LossResolution::Input => model.input_size,
        LossResolution::Low => 4 * model.embedding_size(),
    };
    let gt = ground_truth(&view.instances, &frame, side, &model.device)?;
    Ok((view, frame, gt))
}

/// One image's supervised loss: the model on the weak (flipped) view against its ground truth;
/// with `train.multimask` and single-point prompts, on its three outputs
/// ([`multimask_image_loss`]).
fn supervised_loss(
    cfg: &AdaptConfig,
    m: StepModels,
    sample: &Sample,
    n_total: usize,
    balance: PixelBalance,
    rng: &mut StdRng,
) -> Result<ImageLoss> {
    let (view, frame, gt) = supervised_view(cfg, m.model, sample, rng)?;
    let mut predictor = Predictor::new(m.model, m.lora, cfg.profile.preprocessing());
    let prepared = predictor.prepare(&view.image)?;
    debug_assert_eq!(prepared.frame, frame);
    let (in_frame, prompts) = prompts_for(cfg, &predictor, &view, &prepared, rng)?;
    predictor.set_prepared(&prepared)?;
    let multimask = cfg.train.multimask && single_points(&in_frame);
    let Masks { low_res: low, iou } = predictor.predict_in_frame(&prompts, multimask)?;
    let (res, size) = (cfg.train.loss_resolution, m.model.input_size);
    if multimask {
        let masks = at_loss_resolution(&low, res, size)?;
        return Ok(multimask_image_loss(
            &cfg.losses,
            cfg.profile,
            &masks,
            &iou,
            &gt,
            n_total,
        )?);
    }
    let masks = loss_masks(&low, res, size)?;
    Ok(supervised_image_loss(
        &cfg.losses,
        cfg.profile,
        &StudentOutputs {
            masks: &masks,
            iou_pred: &iou,
        },
        &gt,
        n_total,
        balance,
    )?)
}

/// Whether every instance is prompted by one point alone (no box, no mask): the ambiguous
/// prompt SAM answers with three masks.
fn single_points(prompts: &FramePrompts) -> bool {
    prompts.boxes.is_none()
        && prompts.masks.is_none()
        && prompts
            .points
            .as_ref()
            .is_some_and(|p| p.iter().all(|points| points.len() == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The anchor weights are none under the uniform weighting, else the trust raised to the
    /// trust exponent: a mask filling its box but for the four corner pixels is trusted by its
    /// IoU with the box, 12/16 (the selection's agreement would give it 1).
    #[test]
    fn anchor_weights_are_the_trust_raised_to_the_trust_exponent() {
        let side = 8;
        let logits: Vec<f32> = (0..side * side)
            .map(|i| {
                let (x, y) = (i % side, i / side);
                let corner = [2, 5].contains(&x) && [2, 5].contains(&y);
                if (2..6).contains(&x) && (2..6).contains(&y) && !corner {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect();
        let masks = Tensor::from_vec(logits, (1, side, side), &Device::Cpu).unwrap();
        let prompts = FramePrompts {
            boxes: Some(vec![[4.0, 4.0, 12.0, 12.0]]),
            ..Default::default()
        };
        let mut cfg = AdaptConfig::default();
        cfg.losses.anchor_weighting = Some(AnchorWeighting::Uniform);
        let weights = |cfg: &AdaptConfig| {
            anchor_weights(cfg, &masks, &prompts, 16)
                .unwrap()
                .map(|w| w.to_vec1::<f32>().unwrap())
        };
        assert_eq!(weights(&cfg), None);
        cfg.losses.anchor_weighting = Some(AnchorWeighting::WeakLabel);
        assert_eq!(weights(&cfg), Some(vec![0.75]));
        cfg.losses.anchor_trust_exponent = 2.0;
        assert_eq!(weights(&cfg), Some(vec![0.5625]));
    }
}
