//! WeSAM's losses (`docs/method.md` §2) as differentiable candle functions on f32 tensors.
//!
//! Every mask loss flattens all instances of one image together, so each term is one scalar per
//! image. [`wesam_image_loss`] computes one image's terms and their weighted total (§1.3, §2.6);
//! the batch loss is the sum over its images. Values and gradients follow PyTorch's as the
//! reference computes them; `tests/losses.rs` checks them against
//! `tests/fixtures/losses.safetensors` (written by `scripts/make_loss_fixture.py`).

use candle_core::{bail, DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::loss_terms::LossTerms;
use crate::ops::resize::{resize_2d, Interpolation};
use crate::profile::Profile;

/// PyTorch's `binary_cross_entropy` clamps each log term at this value.
const LOG_CLAMP: f64 = -100.0;
/// PyTorch's `binary_cross_entropy` backward divides by `max(p (1 - p), this)`.
const BCE_BACKWARD_EPS: f64 = 1e-12;
/// The reference's `calc_iou` adds this to the union.
const IOU_EPS: f64 = 1e-7;
/// `F.normalize`'s floor on the norm, used on the embeddings of the contrastive loss.
const NORMALIZE_EPS: f64 = 1e-12;
/// `F.cosine_similarity`'s floor on each norm.
const COSINE_EPS: f64 = 1e-8;
/// The anchor loss calls the dice loss without a third argument, so its smoothing is 1 (§2.2).
const ANCHOR_DICE_SMOOTH: f64 = 1.0;
/// Focal alpha of the `sam` profile when the config does not set one (§0).
const SAM_FOCAL_ALPHA: f64 = 0.8;
/// Self-training dice smoothing of the `sam` profile when the config does not set one (§0).
const SAM_SELF_DICE_SMOOTH: f64 = 1.0;

// ---------------------------------------------------------------------------------------------
// The individual losses.

/// Mean binary cross-entropy of `sigmoid(logits)` against `target`, value and gradient as
/// PyTorch's `F.binary_cross_entropy(torch.sigmoid(x), t)` in f32: the building block of
/// [`focal`].
///
/// The log terms are computed stably from the logits (`ln σ(x) = -softplus(-x)`), never as the
/// log of a rounded probability, and clamped at -100 where PyTorch's are: wherever the f32
/// sigmoid rounds to exactly 0 (for `ln p`) or 1 (for `ln(1 - p)`), that is for x below about
/// -88.7 or above about 16.6, the term is -100, so a saturated wrong logit costs 100 and not |x|.
/// For 9 < x < 16.6 PyTorch's `ln(1 - p)` carries the rounding of `p` near 1 (15.94 instead of
/// 16 at x = 16); this function gives the exact value there.
///
/// The mean is summed in two stages (`sum_all`) to keep PyTorch's accuracy on full-size masks.
///
/// The gradient is PyTorch's: `(p - t) min(1, p (1 - p) / 1e-12)` per element over the element
/// count, zero where the sigmoid saturated. It is attached to the detached value as
/// `mean(value) + mean((x - x̄) slope)`, `x̄` the detached logits: the second term is exactly
/// zero and passes `slope` back to the logits, so no logarithm of zero is ever differentiated.
pub fn bce(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let x = logits.detach();
    let t = target.detach();
    let p = candle_nn::ops::sigmoid(&x)?;
    let log_p = clamped_log_sigmoid(&x, &p.eq(0.0)?)?;
    let log_not_p = clamped_log_sigmoid(&x.neg()?, &p.eq(1.0)?)?;
    let value = ((&t * log_p)? + ((1.0 - &t)? * log_not_p)?)?.neg()?;
    let p_not_p = ((1.0 - &p)? * &p)?;
    let slope = ((&p - &t)? * (p_not_p / BCE_BACKWARD_EPS)?.minimum(1.0)?)?;
    let surrogate = ((logits - &x)? * slope)?.mean_all()?;
    mean_all(&value)? + surrogate
}

/// SAM-Adapter's `iou` loss (Chen et al.; `docs/sam-adapter.md`): binary cross-entropy with
/// logits, the mean over every pixel of the batch, plus the mean over images of the soft IoU loss
/// `1 − Σσ(x)t / (Σσ(x) + Σt − Σσ(x)t)`, summed over each image's pixels, without epsilon.
/// `logits` and `target` are `[B, ...]`, one image per row.
pub fn bce_iou(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    bce_with_logits(logits, target)? + soft_iou_loss(logits, target)?
}

/// SAM-Adapter's `bbce` loss (its shadow configuration; `docs/sam-adapter.md`): binary
/// cross-entropy with logits, positive pixels weighted by the batch's share of negative pixels
/// and negative ones by its share of positives, the mean over `logits`' elements. The shares
/// come from the whole batch's targets ([`PixelBalance`]), not from these alone.
pub fn balanced_bce(logits: &Tensor, target: &Tensor, balance: PixelBalance) -> Result<Tensor> {
    let [positive, negative] = balance.weights();
    let on = (target * softplus(&logits.neg()?)?)?;
    let off = ((1.0 - target)? * softplus(logits)?)?;
    ((on * positive)? + (off * negative)?)?.mean_all()
}

/// The pixel counts of a batch's targets, which [`balanced_bce`] weighs its terms by.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PixelBalance {
    /// Target pixels that are object (the sum of the 0/1 targets).
    pub positive: f64,
    /// Target pixels that are background.
    pub negative: f64,
}

impl PixelBalance {
    /// The counts of one target `[.., H, W]` (0/1).
    pub fn of(target: &Tensor) -> Result<Self> {
        let positive = f64::from(target.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        Ok(Self {
            positive,
            negative: target.elem_count() as f64 - positive,
        })
    }

    /// Both counts summed.
    pub fn add(&mut self, other: Self) {
        self.positive += other.positive;
        self.negative += other.negative;
    }

    /// The weights of positive and negative pixels, as SAM-Adapter's
    /// `P/(P+N) · BCEWithLogits(pos_weight = N/P)` with `P = Σt + 1e-10`:
    /// `[N/(P+N), P/(P+N)]`.
    fn weights(self) -> [f64; 2] {
        let positive = self.positive + 1e-10;
        let total = positive + self.negative;
        [self.negative / total, positive / total]
    }
}

/// Binary cross-entropy with logits, the mean over every element (PyTorch's
/// `BCEWithLogitsLoss`): `softplus(x) − x t`.
pub fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    (softplus(logits)? - (logits * target)?)?.mean_all()
}

/// The mean over rows (one mask each) of `1 − Σσ(x)t / (Σσ(x) + Σt − Σσ(x)t)`, without epsilon.
pub fn soft_iou_loss(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(logits)?.flatten_from(1)?;
    let t = target.flatten_from(1)?;
    let inter = (&p * &t)?.sum(1)?;
    let union = ((p.sum(1)? + t.sum(1)?)? - &inter)?;
    (1.0 - (inter / union)?)?.mean_all()
}

/// `ln σ(z)` as `-softplus(-z)`, floored at PyTorch's -100, and exactly -100 where `saturated`
/// (PyTorch's f32 sigmoid rounded this probability to zero).
fn clamped_log_sigmoid(z: &Tensor, saturated: &Tensor) -> Result<Tensor> {
    let log = softplus(&z.neg()?)?.neg()?.maximum(LOG_CLAMP)?;
    let floor = (log.zeros_like()? + LOG_CLAMP)?;
    saturated.where_cond(&floor, &log)
}

/// `ln(1 + e^z)` without overflow: `max(z, 0) + ln(1 + e^-|z|)`.
fn softplus(z: &Tensor) -> Result<Tensor> {
    z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// The reference's "global" focal loss on the mean BCE of one image's instances (§2.1):
/// `alpha (1 - e^-BCE)^gamma BCE`. The reference passes the batch's instance count as alpha.
pub fn focal(logits: &Tensor, target: &Tensor, alpha: f64, gamma: f64) -> Result<Tensor> {
    let bce = bce(logits, target)?;
    let modulator = (1.0 - bce.neg()?.exp()?)?.powf(gamma)?;
    (modulator * alpha)? * bce
}

/// Dice loss `1 - (2 Σ p t + s) / (Σ p + Σ t + s)` over all elements of one image's instances,
/// `p = sigmoid(logits)` (§2.2): the self-training and the anchor terms both use it.
pub fn dice(logits: &Tensor, target: &Tensor, smooth: f64) -> Result<Tensor> {
    weighted_dice(logits, target, None, smooth)
}

/// [`dice`] with every pixel of instance `k` counted `weights[k]` times in the three sums
/// (`weights` `[n]` for logits `[n, H, W]`, no gradient): instances of weight 0 drop out, and
/// with every weight 0 the loss is 0. `None` is the plain dice loss.
pub fn weighted_dice(
    logits: &Tensor,
    target: &Tensor,
    weights: Option<&Tensor>,
    smooth: f64,
) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(logits)?;
    let target = target.detach();
    let (p, t) = match weights {
        None => (p, target.clone()),
        Some(w) => {
            let shape: Vec<usize> = (0..logits.rank())
                .map(|d| if d == 0 { w.elem_count() } else { 1 })
                .collect();
            let w = w.detach().reshape(shape)?;
            (p.broadcast_mul(&w)?, target.broadcast_mul(&w)?)
        }
    };
    let inter = sum_all(&(&p * &target)?)?;
    let sums = (sum_all(&p)? + sum_all(&t)?)?;
    let ratio = (((inter * 2.0)? + smooth)? / (sums + smooth)?)?;
    1.0 - ratio
}

/// Sum of all elements in two stages, along the last axis and then over the rest, where
/// candle's CPU `sum_all` accumulates in 32 f32 lanes: on a 50 x 1024² mask that loses about 1e-3
/// (relative) of a sum of positive terms, two stages about 1e-8, as PyTorch's pairwise sums.
fn sum_all(x: &Tensor) -> Result<Tensor> {
    match x.rank() {
        0 | 1 => x.sum_all(),
        r => x.sum(r - 1)?.sum_all(),
    }
}

/// Mean of all elements, summed as [`sum_all`].
fn mean_all(x: &Tensor) -> Result<Tensor> {
    sum_all(x)? / x.elem_count() as f64
}

/// The pseudo-label `1[logit > 0]` of the teacher and of the anchor (§1.3), without gradient.
pub fn pseudo_label(logits: &Tensor) -> Result<Tensor> {
    logits.detach().gt(0.0)?.to_dtype(logits.dtype())
}

/// The profile's predicted mask as a 0/1 tensor without gradient: the tensor form of
/// [`Profile::is_foreground`] (`logit > 0` under `sam`, `logit >= 0.5` under `wesam-reference`).
pub fn predicted_mask(logits: &Tensor, profile: Profile) -> Result<Tensor> {
    let logits = logits.detach();
    let mask = match profile {
        Profile::Sam => logits.gt(0.0)?,
        Profile::WesamReference => logits.ge(0.5)?,
    };
    mask.to_dtype(logits.dtype())
}

/// Targets `[n, 1]` of the IoU head (§2.3): per instance, the IoU of the student's predicted mask
/// ([`predicted_mask`]) with the teacher's pseudo-label, `inter / (union + 1e-7)`, no gradient.
///
/// The reference binarises with `logit >= 0.5`; the `sam` profile uses SAM's own prediction
/// threshold `logit > 0` (§0), the mask whose IoU SAM's head was trained to predict.
pub fn iou_targets(
    student_logits: &Tensor,
    teacher_binary: &Tensor,
    profile: Profile,
) -> Result<Tensor> {
    let n = student_logits.dim(0)?;
    let pred = predicted_mask(student_logits, profile)?.reshape((n, ()))?;
    let t = teacher_binary.detach().reshape((n, ()))?;
    let inter = (&pred * &t)?.sum_keepdim(1)?;
    let union = ((pred.sum_keepdim(1)? + t.sum_keepdim(1)?)? - &inter)?;
    inter / (union + IOU_EPS)?
}

/// IoU-prediction loss `Σ_j (pred_j - target_j)² / N` (§2.3), `N` the instances of the whole
/// batch, so that the per-image terms add up to the reference's batch loss.
pub fn iou_mse(pred_iou: &Tensor, iou_targets: &Tensor, n_total: usize) -> Result<Tensor> {
    (pred_iou - iou_targets.detach())?.sqr()?.sum_all()? / n_total as f64
}

/// Anchor loss `0.5 Dice(student, A; 1) + 0.5 Dice(teacher, A; 1)` (§2.4): it pulls both views
/// towards the frozen anchor's pseudo-label `A`, with gradient through both logits.
///
/// `weights` `[n]` in [0, 1] say how far each instance's `A` is trusted: within the image each
/// instance's pixels count that many times ([`weighted_dice`]), and the image's term is scaled
/// by their mean (a dice ratio alone hardly changes when every instance is distrusted alike).
/// `None` is the reference's uniform weight 1.
pub fn anchor(
    student_logits: &Tensor,
    teacher_logits: &Tensor,
    anchor_binary: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let s = weighted_dice(student_logits, anchor_binary, weights, ANCHOR_DICE_SMOOTH)?;
    let t = weighted_dice(teacher_logits, anchor_binary, weights, ANCHOR_DICE_SMOOTH)?;
    let term = ((s + t)? * 0.5)?;
    match weights {
        None => Ok(term),
        Some(w) => term * w.detach().mean_all()?,
    }
}

/// Contrastive regularisation between the teacher's and the anchor's instance features (§2.5):
/// `-ln(Σ_k e^S_kk / Σ_kl e^S_kl)` with `S_kl = cos(f_k, g_l) / tau`; exactly 0 when `n < 2`.
///
/// `e_t`, `e_a` are one image's embeddings `[C, h, w]` (gradient through `e_t` only); `m_t`,
/// `m_a` the low-res mask logits `[n, 1, H, W]`, detached. Each instance feature pools the
/// L2-normalised embeddings with the bilinearly resized **signed logits** as weights and divides
/// by their sum, as the reference does, unguarded: a pooling denominator of exactly zero gives
/// NaN, a negative one flips that feature (see `pooled_features`). Both profiles follow the
/// reference here (§0, §2.5). Computed as `logsumexp(S) - logsumexp(diag S)`, equal to the
/// reference's ratio but safe for small `tau`.
pub fn contrastive(
    e_t: &Tensor,
    e_a: &Tensor,
    m_t: &Tensor,
    m_a: &Tensor,
    tau: f64,
) -> Result<Tensor> {
    let n = m_t.dim(0)?;
    if n < 2 {
        return Tensor::zeros((), e_t.dtype(), e_t.device());
    }
    let f = pooled_features(e_t, &m_t.detach())?;
    let g = pooled_features(&e_a.detach(), &m_a.detach())?;
    let f = l2_normalise(&f, 1, COSINE_EPS)?;
    let g = l2_normalise(&g, 1, COSINE_EPS)?;
    let s = (f.matmul(&g.t()?)? / tau)?;
    let diag = (&s * Tensor::eye(n, s.dtype(), s.device())?)?.sum(1)?;
    s.flatten_all()?.log_sum_exp(0)? - diag.log_sum_exp(0)?
}

/// Instance features `[n, C]`: `f_k = Σ_hw ê[:, h, w] m_k(h, w) / Σ_hw m_k(h, w)`, with `ê` the
/// embeddings L2-normalised over channels and `m_k` the logits resized to the embedding grid
/// (bilinear, `align_corners=False`).
///
/// Hazard kept for parity (§2.5; the reference's guard is commented out): the weights are raw
/// logits, mostly negative for SAM, so the sum is dominated by the background and the
/// denominator can be negative (flipping the feature) or zero (inf/NaN). Its magnitude does not
/// matter, since only cosines of the features are used; its sign and exact zero do.
fn pooled_features(e: &Tensor, m: &Tensor) -> Result<Tensor> {
    let (c, h, w) = e.dims3()?;
    let n = m.dim(0)?;
    let e = l2_normalise(e, 0, NORMALIZE_EPS)?.reshape((c, h * w))?;
    let m = resize_2d(m, h, w, Interpolation::Bilinear)?.reshape((n, h * w))?;
    m.matmul(&e.t()?)?.broadcast_div(&m.sum_keepdim(1)?)
}

/// `x / max(‖x‖₂, eps)` along `dim`, as `F.normalize` and `F.cosine_similarity` do.
fn l2_normalise(x: &Tensor, dim: usize, eps: f64) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(dim)?.sqrt()?.maximum(eps)?;
    x.broadcast_div(&norm)
}

// ---------------------------------------------------------------------------------------------
// Configuration and the per-image objective.

/// Weight and switch of one loss term: a disabled term is not computed (ablations) and reports 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub weight: f64,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

impl Term {
    /// An enabled term of this weight.
    pub const fn on(weight: f64) -> Self {
        Self {
            weight,
            enabled: true,
        }
    }
}

/// How the anchor term weighs each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum AnchorWeighting {
    /// Every instance counts once (the reference).
    #[default]
    Uniform,
    /// Each instance counts as much as the anchor's mask agrees with its weak label (the box
    /// or the points, see `eval::agreement::anchor_trust`): where the shift blinds the source
    /// model, its empty or scattered masks no longer pull the student towards seeing nothing.
    WeakLabel,
}

/// What supervised training (`wesam train`) minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[derive(strum::VariantArray, strum::EnumMessage)]
pub enum SupervisedLoss {
    /// wesam's focal + dice + IoU-MSE terms, as self-training's student loss.
    #[default]
    FocalDiceIou,
    /// SAM-Adapter's binary cross-entropy + soft IoU, 1:1 (`bce_iou`).
    BceIou,
    /// SAM-Adapter's balanced binary cross-entropy of its shadow configuration
    /// (`balanced_bce`), alone.
    BalancedBce,
}

/// The adaptation objective's settings (§2, §5.1): weights and switches of the five terms and the
/// loss constants. The two profile-dependent constants are `None` by default and then follow the
/// profile (§0): alpha 0.8 and smoothing 1 under `sam`, both the batch's instance count N under
/// `wesam-reference`; a number overrides the profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Focal loss of the student against the teacher's pseudo-label (reference weight 20).
    pub focal: Term,
    /// Dice loss of the student against the teacher's pseudo-label.
    pub dice: Term,
    /// IoU-prediction MSE of the student's IoU head.
    pub iou: Term,
    /// Dice of student and teacher against the anchor's pseudo-label.
    pub anchor: Term,
    /// Teacher-anchor contrastive regularisation.
    pub contrastive: Term,
    /// What supervised training minimises.
    pub supervised: SupervisedLoss,
    /// How the anchor term weighs each instance; `None`: the profile's
    /// ([`LossConfig::anchor_weighting`]).
    pub anchor_weighting: Option<AnchorWeighting>,
    /// Under the `weak-label` weighting, an instance's weight is the trust in its anchor mask
    /// (`eval::agreement::anchor_trust`) raised to this power: above 1 distrusts a
    /// half-agreeing anchor more (points agree loosely: a mask spilling over most of a
    /// camouflaged scene can still hold every positive point).
    pub anchor_trust_exponent: f64,
    /// Focal exponent.
    pub gamma: f64,
    /// Contrastive temperature.
    pub tau: f64,
    /// Focal alpha; `None`: the profile's.
    pub focal_alpha: Option<f64>,
    /// Smoothing of the self-training dice; `None`: the profile's.
    pub self_dice_smooth: Option<f64>,
}

impl LossConfig {
    /// The term of this name (`focal`, `dice`, `iou`, `anchor`, `contrastive`, as the
    /// configuration's keys), for ablations that turn terms off by name.
    pub fn term_mut(&mut self, name: &str) -> Option<&mut Term> {
        match name {
            "focal" => Some(&mut self.focal),
            "dice" => Some(&mut self.dice),
            "iou" => Some(&mut self.iou),
            "anchor" => Some(&mut self.anchor),
            "contrastive" => Some(&mut self.contrastive),
            _ => None,
        }
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            focal: Term::on(20.0),
            dice: Term::on(1.0),
            iou: Term::on(1.0),
            anchor: Term::on(1.0),
            contrastive: Term::on(1.0),
            supervised: SupervisedLoss::FocalDiceIou,
            anchor_weighting: None,
            anchor_trust_exponent: 1.0,
            gamma: 2.0,
            tau: 0.3,
            focal_alpha: None,
            self_dice_smooth: None,
        }
    }
}

impl LossConfig {
    /// How the anchor term weighs each instance under `profile`: by the weak labels under `sam`
    /// (the project's best measured setting, `docs/method.md` §8.1), uniformly under
    /// `wesam-reference`.
    pub fn anchor_weighting(&self, profile: Profile) -> AnchorWeighting {
        self.anchor_weighting.unwrap_or(match profile {
            Profile::Sam => AnchorWeighting::WeakLabel,
            Profile::WesamReference => AnchorWeighting::Uniform,
        })
    }

    /// The focal alpha for a batch of `n_total` instances under `profile`.
    pub fn focal_alpha(&self, profile: Profile, n_total: usize) -> f64 {
        self.focal_alpha
            .unwrap_or_else(|| by_profile(profile, SAM_FOCAL_ALPHA, n_total))
    }

    /// The self-training dice smoothing for a batch of `n_total` instances under `profile`.
    pub fn self_dice_smooth(&self, profile: Profile, n_total: usize) -> f64 {
        self.self_dice_smooth
            .unwrap_or_else(|| by_profile(profile, SAM_SELF_DICE_SMOOTH, n_total))
    }
}

/// `sam_value` under `sam`; the instance count under `wesam-reference`, where the reference's
/// positional-argument quirk passes N as alpha and as smoothing (§2.1, §2.2).
fn by_profile(profile: Profile, sam_value: f64, n_total: usize) -> f64 {
    match profile {
        Profile::Sam => sam_value,
        Profile::WesamReference => n_total as f64,
    }
}

/// The student's outputs on the strong view of one image that the objective uses.
#[derive(Debug, Clone, Copy)]
pub struct StudentOutputs<'a> {
    /// Mask logits `[n, H, W]` at the resolution the loop computes mask losses at.
    pub masks: &'a Tensor,
    /// Predicted IoU `[n, 1]`.
    pub iou_pred: &'a Tensor,
}

/// The teacher's or the anchor's outputs on the weak view of one image that the objective uses.
#[derive(Debug, Clone, Copy)]
pub struct WeakOutputs<'a> {
    /// Mask logits `[n, H, W]`, same resolution as the student's.
    pub masks: &'a Tensor,
    /// Low-res mask logits `[n, 1, h, w]` of the decoder (contrastive pooling weights).
    pub low_res: &'a Tensor,
    /// Image embeddings `[C, h', w']`.
    pub embeddings: &'a Tensor,
}

/// One image's loss: the weighted total to back-propagate and each unweighted term for logging
/// (0 for a disabled term).
pub type ImageLoss = LossTerms<Tensor>;

/// One image's supervised objective on SAM's three outputs for single-point prompts, as SAM is
/// trained (Kirillov et al. 2023, §3 and appendix A): a single point is ambiguous (a part, the
/// object, a group), so per instance only the output of lowest `w_f·focal + w_d·dice` against
/// its ground truth is trained (the choice carries no gradient), and the IoU head learns the IoU
/// of every output. `masks` are the logits `[n, k, H, W]` of the `k` outputs, `iou_pred`
/// `[n, k]`, `ground_truth` `[n, H, W]` (0/1). Focal and dice are each instance's own (not pooled
/// over the image's instances), averaged over the image's instances; the IoU term divides by
/// the batch's `k · n_total` outputs. Logged terms: the chosen outputs' focal and dice, the IoU
/// MSE.
pub fn multimask_image_loss(
    config: &LossConfig,
    profile: Profile,
    masks: &Tensor,
    iou_pred: &Tensor,
    ground_truth: &Tensor,
    n_total: usize,
) -> Result<ImageLoss> {
    let (n, k, h, w) = masks.dims4()?;
    if n == 0 || n_total < n {
        bail!("loss: {n} instances in the image but {n_total} in the batch");
    }
    let alpha = config.focal_alpha(profile, n_total);
    let smooth = config.self_dice_smooth(profile, n_total);
    let zero = Tensor::zeros((), masks.dtype(), masks.device())?;
    let (mut focal_sum, mut dice_sum) = (zero.clone(), zero.clone());
    for i in 0..n {
        let target = ground_truth.narrow(0, i, 1)?;
        let mut best: Option<(f64, Tensor, Tensor)> = None;
        for j in 0..k {
            let x = masks.narrow(0, i, 1)?.narrow(1, j, 1)?.reshape((1, h, w))?;
            let f = if config.focal.enabled {
                focal(&x, &target, alpha, config.gamma)?
            } else {
                zero.clone()
            };
            let d = if config.dice.enabled {
                dice(&x, &target, smooth)?
            } else {
                zero.clone()
            };
            let value = f64::from(
                ((&f * config.focal.weight)? + (&d * config.dice.weight)?)?
                    .to_dtype(DType::F32)?
                    .to_scalar::<f32>()?,
            );
            if best.as_ref().is_none_or(|(b, _, _)| value < *b) {
                best = Some((value, f, d));
            }
        }
        let (_, f, d) = best.expect("at least one output");
        focal_sum = (focal_sum + f)?;
        dice_sum = (dice_sum + d)?;
    }
    let iou = if config.iou.enabled {
        let flat = masks.reshape((n * k, h, w))?;
        let repeated = ground_truth
            .unsqueeze(1)?
            .repeat((1, k, 1, 1))?
            .reshape((n * k, h, w))?;
        let targets = iou_targets(&flat, &repeated, profile)?;
        iou_mse(&iou_pred.reshape((n * k, 1))?, &targets, k * n_total)?
    } else {
        zero.clone()
    };
    let count = n as f64;
    weighted(
        config,
        [
            (focal_sum / count)?,
            (dice_sum / count)?,
            iou,
            zero.clone(),
            zero,
        ],
    )
}

/// The focal, dice and IoU-MSE terms that train the student's logits `[n, H, W]` and IoU
/// predictions towards a binary `target` (§2.1–§2.3): the teacher's pseudo-label in
/// self-training, the ground truth in supervised training. Disabled terms are 0.
fn target_terms(
    config: &LossConfig,
    profile: Profile,
    student: &StudentOutputs,
    target: &Tensor,
    n_total: usize,
) -> Result<[Tensor; 3]> {
    let zero = Tensor::zeros((), student.masks.dtype(), student.masks.device())?;
    let term =
        |t: Term, f: &dyn Fn() -> Result<Tensor>| if t.enabled { f() } else { Ok(zero.clone()) };
    Ok([
        term(config.focal, &|| {
            let alpha = config.focal_alpha(profile, n_total);
            focal(student.masks, target, alpha, config.gamma)
        })?,
        term(config.dice, &|| {
            let smooth = config.self_dice_smooth(profile, n_total);
            dice(student.masks, target, smooth)
        })?,
        term(config.iou, &|| {
            let targets = iou_targets(student.masks, target, profile)?;
            iou_mse(student.iou_pred, &targets, n_total)
        })?,
    ])
}

/// Checks that an image has instances and that the batch count includes them.
fn check_counts(student: &StudentOutputs, n_total: usize) -> Result<()> {
    let n = student.masks.dim(0)?;
    if n == 0 || n_total < n {
        bail!("loss: {n} instances in the image but {n_total} in the batch");
    }
    Ok(())
}

/// The terms and their weighted total.
fn weighted(
    config: &LossConfig,
    [focal, dice, iou, anchor, contrastive]: [Tensor; 5],
) -> Result<ImageLoss> {
    let weighted = [
        (config.focal, &focal),
        (config.dice, &dice),
        (config.iou, &iou),
        (config.anchor, &anchor),
        (config.contrastive, &contrastive),
    ];
    let total = weighted
        .iter()
        .try_fold(focal.zeros_like()?, |acc, (t, v)| acc + (*v * t.weight)?)?;
    let zero = focal.zeros_like()?;
    Ok(LossTerms {
        total,
        focal,
        dice,
        iou,
        anchor,
        contrastive,
        bce: zero.clone(),
        soft_iou: zero,
    })
}

/// One image's WeSAM objective (§1.3): `w_f Focal(S, T) + w_d Dice(S, T) + w_i IoU-MSE +
/// w_a Anchor + w_c Contra`, with `T = 1[teacher > 0]` and `A = 1[anchor > 0]` (detached).
///
/// `n_total` is N, the instances of the whole batch (this image's `n` included): it divides the
/// IoU term and, under `wesam-reference`, is focal alpha and dice smoothing. The teacher's logits
/// keep their gradient into the anchor term and its embeddings into the contrastive term; the
/// anchor's outputs are detached. `anchor_weights` `[n]` weigh the anchor term's instances
/// ([`anchor`]; `None`: uniform). Errors if the image has no instance or `n_total < n`.
pub fn wesam_image_loss(
    config: &LossConfig,
    profile: Profile,
    student: &StudentOutputs,
    teacher: &WeakOutputs,
    anchor_out: &WeakOutputs,
    anchor_weights: Option<&Tensor>,
    n_total: usize,
) -> Result<ImageLoss> {
    check_counts(student, n_total)?;
    let teacher_label = pseudo_label(teacher.masks)?;
    let [focal, dice, iou] = target_terms(config, profile, student, &teacher_label, n_total)?;
    let zero = focal.zeros_like()?;
    let anchor_term = if config.anchor.enabled {
        anchor(
            student.masks,
            teacher.masks,
            &pseudo_label(anchor_out.masks)?,
            anchor_weights,
        )?
    } else {
        zero.clone()
    };
    let contrastive_term = if config.contrastive.enabled {
        contrastive(
            teacher.embeddings,
            anchor_out.embeddings,
            teacher.low_res,
            anchor_out.low_res,
            config.tau,
        )?
    } else {
        zero
    };
    weighted(config, [focal, dice, iou, anchor_term, contrastive_term])
}

/// One image's supervised objective (`wesam train`) with the ground-truth masks `[n, H, W]` (0/1)
/// as target: the same focal, dice and IoU-MSE terms as self-training (anchor and contrastive
/// 0), or one of SAM-Adapter's losses, each the mean over the image's masks weighted by its
/// share `n / n_total` of the batch (so that the batch's sum is SAM-Adapter's batch mean).
/// `balance` holds the whole batch's target pixels, which the balanced BCE needs.
pub fn supervised_image_loss(
    config: &LossConfig,
    profile: Profile,
    student: &StudentOutputs,
    ground_truth: &Tensor,
    n_total: usize,
    balance: PixelBalance,
) -> Result<ImageLoss> {
    check_counts(student, n_total)?;
    let share = student.masks.dim(0)? as f64 / n_total as f64;
    let sam_adapter = |bce: Tensor, soft_iou: Tensor| -> Result<ImageLoss> {
        let (bce, soft_iou) = ((bce * share)?, (soft_iou * share)?);
        let zero = bce.zeros_like()?;
        Ok(LossTerms {
            total: (&bce + &soft_iou)?,
            focal: zero.clone(),
            dice: zero.clone(),
            iou: zero.clone(),
            anchor: zero.clone(),
            contrastive: zero,
            bce,
            soft_iou,
        })
    };
    match config.supervised {
        SupervisedLoss::BceIou => {
            return sam_adapter(
                bce_with_logits(student.masks, ground_truth)?,
                soft_iou_loss(student.masks, ground_truth)?,
            )
        }
        SupervisedLoss::BalancedBce => {
            let bce = balanced_bce(student.masks, ground_truth, balance)?;
            let zero = bce.zeros_like()?;
            return sam_adapter(bce, zero);
        }
        SupervisedLoss::FocalDiceIou => {}
    }
    let [focal, dice, iou] = target_terms(config, profile, student, ground_truth, n_total)?;
    let zero = focal.zeros_like()?;
    weighted(config, [focal, dice, iou, zero.clone(), zero])
}
