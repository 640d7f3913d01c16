//! WeSAM's losses, Adam and the learning-rate schedule against PyTorch (fixture:
//! `scripts/make_loss_fixture.py`, which implements the reference's formulas with torch's own
//! ops). Tolerances: loss values within 1e-5 relative; gradients within 1e-4 of the largest
//! gradient of each tensor; optimiser parameters within 1e-6 absolute after every step.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use candle_nn::Optimizer;
use common::{max_abs, max_abs_diff};
use wesam::adapt::losses::{
    anchor, bce, contrastive, dice, focal, iou_mse, iou_targets, multimask_image_loss,
    predicted_mask, pseudo_label, supervised_image_loss, weighted_dice, wesam_image_loss,
    LossConfig, PixelBalance, StudentOutputs, SupervisedLoss, Term, WeakOutputs,
};
use wesam::adapt::optim::{Adam, AdamConfig, LrSchedule};
use wesam::profile::Profile;

const VALUE_REL: f32 = 1e-5;
const GRAD_REL: f32 = 1e-4;
const PARAM_ABS: f32 = 1e-6;
/// Instances in the fixture's batch; its image holds 3 of them.
const N_TOTAL: usize = 5;

fn fixture() -> HashMap<String, Tensor> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/losses.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Asserts `|got - want| <= rel * max|want|` (absolute `rel` when `want` is zero) and reports
/// the measured difference.
fn assert_rel(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    let d = max_abs_diff(got, want);
    let scale = max_abs(want).max(1.0e-30);
    let bound = if max_abs(want) == 0.0 {
        rel
    } else {
        rel * scale
    };
    eprintln!("{what}: max |diff| = {d:.2e} ({:.2e} relative)", d / scale);
    assert!(d <= bound, "{what}: max |diff| = {d:e} > {bound:e}");
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

#[test]
fn each_loss_matches_torch() {
    let fx = fixture();
    let s = &fx["in.student_masks"];
    let t_bin = pseudo_label(&fx["in.teacher_masks"]).unwrap();
    let a_bin = pseudo_label(&fx["in.anchor_masks"]).unwrap();
    let n = N_TOTAL as f64;
    let cases = [
        (
            "focal alpha 0.8",
            focal(s, &t_bin, 0.8, 2.0),
            "loss.focal_alpha_0.8",
        ),
        (
            "focal alpha N",
            focal(s, &t_bin, n, 2.0),
            "loss.focal_alpha_n",
        ),
        ("dice smooth 1", dice(s, &t_bin, 1.0), "loss.dice_smooth_1"),
        ("dice smooth N", dice(s, &t_bin, n), "loss.dice_smooth_n"),
        (
            "anchor",
            anchor(s, &fx["in.teacher_masks"], &a_bin, None),
            "loss.anchor",
        ),
        (
            "contrastive n=3",
            contrastive(
                &fx["in.teacher_emb"],
                &fx["in.anchor_emb"],
                &fx["in.teacher_low"],
                &fx["in.anchor_low"],
                0.3,
            ),
            "loss.contra_n3",
        ),
    ];
    for (what, got, key) in cases {
        assert_rel(what, &got.unwrap(), &fx[key], VALUE_REL);
    }
    for (profile, key) in [(Profile::Sam, "sam"), (Profile::WesamReference, "ref")] {
        let targets = iou_targets(s, &t_bin, profile).unwrap();
        assert_rel(
            &format!("{key} iou targets"),
            &targets,
            &fx[&format!("{key}.iou_targets")],
            VALUE_REL,
        );
        let mse = iou_mse(&fx["in.student_iou"], &targets, N_TOTAL).unwrap();
        assert_rel(
            &format!("{key} iou mse"),
            &mse,
            &fx[&format!("{key}.iou_mse")],
            VALUE_REL,
        );
    }
}

#[test]
fn contrastive_of_one_instance_is_exactly_zero() {
    let fx = fixture();
    let one = |k: &str| fx[k].narrow(0, 0, 1).unwrap();
    let loss = contrastive(
        &fx["in.teacher_emb"],
        &fx["in.anchor_emb"],
        &one("in.teacher_low"),
        &one("in.anchor_low"),
        0.3,
    )
    .unwrap();
    assert_eq!(scalar(&loss), 0.0);
    assert_eq!(scalar(&fx["loss.contra_n1"]), 0.0);
    // Even where the reference's pooling would divide by zero.
    let zeros = one("in.teacher_low").zeros_like().unwrap();
    let loss = contrastive(
        &fx["in.teacher_emb"],
        &fx["in.anchor_emb"],
        &zeros,
        &zeros,
        0.3,
    );
    assert_eq!(scalar(&loss.unwrap()), 0.0);
}

/// The objective of the fixture image under `profile` (`config` from its defaults), with the
/// four inputs torch differentiates as `Var`s.
fn image_loss(
    fx: &HashMap<String, Tensor>,
    profile: Profile,
    config: &LossConfig,
) -> (wesam::adapt::losses::ImageLoss, [Var; 4]) {
    let var = |k: &str| Var::from_tensor(&fx[k]).unwrap();
    let vars = [
        var("in.student_masks"),
        var("in.teacher_masks"),
        var("in.teacher_emb"),
        var("in.student_iou"),
    ];
    let student = StudentOutputs {
        masks: vars[0].as_tensor(),
        iou_pred: vars[3].as_tensor(),
    };
    let teacher = WeakOutputs {
        masks: vars[1].as_tensor(),
        low_res: &fx["in.teacher_low"],
        embeddings: vars[2].as_tensor(),
    };
    let anchor_out = WeakOutputs {
        masks: &fx["in.anchor_masks"],
        low_res: &fx["in.anchor_low"],
        embeddings: &fx["in.anchor_emb"],
    };
    let loss = wesam_image_loss(
        config,
        profile,
        &student,
        &teacher,
        &anchor_out,
        None,
        N_TOTAL,
    );
    (loss.unwrap(), vars)
}

#[test]
fn total_and_its_gradients_match_torch_for_both_profiles() {
    let fx = fixture();
    let grads_of = [
        "student_masks",
        "teacher_masks",
        "teacher_emb",
        "student_iou",
    ];
    for (profile, key) in [(Profile::Sam, "sam"), (Profile::WesamReference, "ref")] {
        let (loss, vars) = image_loss(&fx, profile, &LossConfig::default());
        let terms = [
            ("focal", &loss.focal),
            ("dice", &loss.dice),
            ("iou", &loss.iou),
            ("anchor", &loss.anchor),
            ("contra", &loss.contrastive),
        ];
        for (name, got) in terms {
            let want = &fx[&format!("{key}.term.{name}")];
            assert_rel(&format!("{key} {name}"), got, want, VALUE_REL);
        }
        assert_rel(
            &format!("{key} total"),
            &loss.total,
            &fx[&format!("{key}.total")],
            VALUE_REL,
        );
        let grads = loss.total.backward().unwrap();
        for (var, name) in vars.iter().zip(grads_of) {
            let got = grads.get(var.as_tensor()).expect("no gradient");
            let want = &fx[&format!("{key}.grad.{name}")];
            assert!(max_abs(want) > 0.0, "{key} {name}: torch gradient is zero");
            assert_rel(&format!("{key} d total / d {name}"), got, want, GRAD_REL);
        }
    }
}

#[test]
fn saturated_logits_give_torchs_clamped_bce_and_gradient() {
    let fx = fixture();
    let x = Var::from_tensor(&fx["sat.logits"]).unwrap();
    let t = &fx["sat.target"];
    let loss = bce(x.as_tensor(), t).unwrap();
    assert_rel("saturated bce", &loss, &fx["sat.bce"], VALUE_REL);
    let grads = loss.backward().unwrap();
    let g = grads.get(x.as_tensor()).unwrap();
    assert_rel("saturated bce gradient", g, &fx["sat.grad"], GRAD_REL);
    assert_rel(
        "saturated focal",
        &focal(x.as_tensor(), t, 0.8, 2.0).unwrap(),
        &fx["sat.focal"],
        VALUE_REL,
    );
    // One wrong saturated logit: PyTorch's log(1 - 1) clamped at -100, not the exact 30.
    let one = |v: f32| Tensor::new(&[v], &Device::Cpu).unwrap();
    assert_eq!(scalar(&bce(&one(30.0), &one(0.0)).unwrap()), 100.0);
    assert_eq!(scalar(&bce(&one(-200.0), &one(1.0)).unwrap()), 100.0);
    // Unsaturated: the exact value.
    assert_eq!(scalar(&bce(&one(-30.0), &one(1.0)).unwrap()), 30.0);
}

#[test]
fn bce_is_exact_where_torchs_f32_rounding_is_not() {
    let fx = fixture();
    let x = &fx["band.logits"];
    let got = bce(x, &x.zeros_like().unwrap()).unwrap();
    assert_rel("band bce vs exact", &got, &fx["band.bce_exact"], 1e-6);
    let torch = max_abs_diff(&got, &fx["band.bce_torch"]) / scalar(&fx["band.bce_exact"]);
    eprintln!("band bce vs torch f32: {torch:.2e} relative (torch's rounding of p near 1)");
}

/// Logits `[8, 512, 512]` like SAM's (mostly confident background) and a 10 % foreground target.
fn large_mask() -> (Tensor, Tensor) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let normal = rand_distr::Normal::new(-8.0f32, 3.0).unwrap();
    let n = 8 * 512 * 512;
    let x: Vec<f32> = (0..n).map(|_| rng.sample(normal)).collect();
    let t: Vec<f32> = (0..n)
        .map(|_| f32::from(u8::from(rng.random_bool(0.1))))
        .collect();
    let shape = (8, 512, 512);
    (
        Tensor::from_vec(x, shape, &Device::Cpu).unwrap(),
        Tensor::from_vec(t, shape, &Device::Cpu).unwrap(),
    )
}

#[test]
fn means_over_full_size_masks_keep_f64_accuracy() {
    let (x, t) = large_mask();
    let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let ts = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let softplus = |z: f64| z.max(0.0) + (-z.abs()).exp().ln_1p();
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let count = xs.len() as f64;
    let (mut bce_sum, mut pt, mut p_sum, mut t_sum) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &t) in xs.iter().zip(&ts) {
        let (x, t) = (f64::from(x), f64::from(t));
        bce_sum += t * softplus(-x) + (1.0 - t) * softplus(x);
        pt += sigmoid(x) * t;
        p_sum += sigmoid(x);
        t_sum += t;
    }
    let exact_dice = 1.0 - (2.0 * pt + 1.0) / (p_sum + t_sum + 1.0);
    let cases = [
        ("bce", bce(&x, &t).unwrap(), bce_sum / count),
        ("dice", dice(&x, &t, 1.0).unwrap(), exact_dice),
    ];
    for (what, got, exact) in cases {
        let rel = ((f64::from(scalar(&got)) - exact) / exact).abs();
        eprintln!("{what} on 8 x 512²: {rel:.2e} relative to f64");
        assert!(rel < 1e-6, "{what}: {rel:e}");
    }
}

#[test]
fn disabled_terms_report_zero_and_leave_the_total() {
    let fx = fixture();
    let config = LossConfig {
        contrastive: Term {
            weight: 1.0,
            enabled: false,
        },
        ..LossConfig::default()
    };
    let (loss, vars) = image_loss(&fx, Profile::Sam, &config);
    assert_eq!(scalar(&loss.contrastive), 0.0);
    let want = (&fx["sam.total"] - &fx["sam.term.contra"]).unwrap();
    assert_rel("total without contrastive", &loss.total, &want, VALUE_REL);
    // The teacher's embeddings then receive no gradient at all.
    let grads = loss.total.backward().unwrap();
    assert!(grads.get(vars[2].as_tensor()).is_none());
}

#[test]
fn profiles_resolve_alpha_and_smoothing_and_numbers_override_them() {
    let c = LossConfig::default();
    assert_eq!(c.focal_alpha(Profile::Sam, 7), 0.8);
    assert_eq!(c.self_dice_smooth(Profile::Sam, 7), 1.0);
    assert_eq!(c.focal_alpha(Profile::WesamReference, 7), 7.0);
    assert_eq!(c.self_dice_smooth(Profile::WesamReference, 7), 7.0);
    let c: LossConfig = toml::from_str("focal_alpha = 0.25\n[focal]\nweight = 10.0\n").unwrap();
    assert_eq!(c.focal_alpha(Profile::WesamReference, 7), 0.25);
    assert_eq!(c.self_dice_smooth(Profile::WesamReference, 7), 7.0);
    assert_eq!(c.focal, Term::on(10.0));
    assert_eq!(c.dice, Term::on(1.0));
    assert_eq!((c.gamma, c.tau), (2.0, 0.3));
}

#[test]
fn image_without_instances_or_with_more_than_the_batch_is_an_error() {
    let fx = fixture();
    let config = LossConfig::default();
    let m = &fx["in.student_masks"];
    let student = StudentOutputs {
        masks: m,
        iou_pred: &fx["in.student_iou"],
    };
    let weak = WeakOutputs {
        masks: m,
        low_res: &fx["in.teacher_low"],
        embeddings: &fx["in.teacher_emb"],
    };
    let loss = wesam_image_loss(&config, Profile::Sam, &student, &weak, &weak, None, 2);
    assert!(loss.is_err());
    let none = m.narrow(0, 0, 0).unwrap();
    let student = StudentOutputs {
        masks: &none,
        ..student
    };
    let loss = wesam_image_loss(&config, Profile::Sam, &student, &weak, &weak, None, N_TOTAL);
    assert!(loss.is_err());
}

/// The weighted dice of the anchor weighting reduces to the PyTorch-checked dice: all weights 1
/// give it exactly, weights (1, 0, 0) give the first instance's dice alone, in value and in
/// gradient (none reaches the instances of weight 0), and all weights 0 give 0. The weighted
/// anchor term is scaled by the mean weight.
#[test]
fn weighted_dice_counts_each_instance_by_its_weight() {
    let fx = fixture();
    let logits = Var::from_tensor(&fx["in.student_masks"]).unwrap();
    let target = pseudo_label(&fx["in.anchor_masks"]).unwrap();
    let n = logits.dim(0).unwrap();
    let weights = |w: &[f32]| Tensor::new(w, &Device::Cpu).unwrap();
    let value_and_grad = |loss: Tensor| {
        let g = loss
            .backward()
            .unwrap()
            .get(logits.as_tensor())
            .unwrap()
            .clone();
        (loss, g)
    };

    let (plain, plain_g) = value_and_grad(dice(logits.as_tensor(), &target, 1.0).unwrap());
    let ones = weights(&vec![1.0; n]);
    let (w, w_g) =
        value_and_grad(weighted_dice(logits.as_tensor(), &target, Some(&ones), 1.0).unwrap());
    assert_rel("weights 1: value", &w, &plain, VALUE_REL);
    assert_rel("weights 1: gradient", &w_g, &plain_g, GRAD_REL);

    let first = logits.as_tensor().narrow(0, 0, 1).unwrap();
    let (alone, alone_g) =
        value_and_grad(dice(&first, &target.narrow(0, 0, 1).unwrap(), 1.0).unwrap());
    let mut one_hot = vec![0.0; n];
    one_hot[0] = 1.0;
    let (w, w_g) = value_and_grad(
        weighted_dice(logits.as_tensor(), &target, Some(&weights(&one_hot)), 1.0).unwrap(),
    );
    assert_rel("weights (1, 0, 0): value", &w, &alone, VALUE_REL);
    assert_rel(
        "weights (1, 0, 0): gradient of the first",
        &w_g.narrow(0, 0, 1).unwrap(),
        &alone_g.narrow(0, 0, 1).unwrap(),
        GRAD_REL,
    );
    assert_eq!(max_abs(&w_g.narrow(0, 1, n - 1).unwrap()), 0.0);

    let zeros = weights(&vec![0.0; n]);
    let w = weighted_dice(logits.as_tensor(), &target, Some(&zeros), 1.0).unwrap();
    assert_eq!(scalar(&w), 0.0);

    // The anchor term is also scaled by the mean weight: a ratio alone would hardly change when
    // every instance is trusted half as much. With every weight c the dice's sums shrink by c
    // and its smoothing does not, so the term is c times the plain anchor term at smoothing
    // 1/c.
    let teacher = &fx["in.teacher_masks"];
    let halves = weights(&vec![0.5; n]);
    let half = anchor(logits.as_tensor(), teacher, &target, Some(&halves)).unwrap();
    let want = ((dice(logits.as_tensor(), &target, 2.0).unwrap()
        + dice(teacher, &target, 2.0).unwrap())
    .unwrap()
        * 0.25)
        .unwrap();
    assert_rel("anchor at weight 1/2", &half, &want, VALUE_REL);
    let all = anchor(logits.as_tensor(), teacher, &target, Some(&ones)).unwrap();
    let uniform = anchor(logits.as_tensor(), teacher, &target, None).unwrap();
    assert_rel("anchor at weight 1", &all, &uniform, VALUE_REL);
}

#[test]
fn predicted_mask_is_the_profiles_foreground() {
    let values = [-1.0f32, 0.0, 1e-6, 0.25, 0.4999, 0.5, 0.75];
    let logits = Tensor::new(&values, &Device::Cpu).unwrap();
    for profile in [Profile::Sam, Profile::WesamReference] {
        let got = predicted_mask(&logits, profile)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want: Vec<f32> = values
            .iter()
            .map(|&v| f32::from(u8::from(profile.is_foreground(v))))
            .collect();
        assert_eq!(got, want, "{profile:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Optimiser and schedule.

#[test]
fn schedule_matches_the_reference_lambda() {
    let fx = fixture();
    let steps = fx["sched.steps"].to_vec1::<i64>().unwrap();
    let want = fx["sched.factor"].to_vec1::<f64>().unwrap();
    let schedule = LrSchedule::default();
    for (s, w) in steps.iter().zip(want) {
        assert_eq!(schedule.factor(*s as usize), w, "step {s}");
    }
    assert_eq!(schedule.lr(1e-4, 0, (0, 5)), 0.0);
}

/// The fixture's short schedule: warm-up 3, decays at 5 and 7, base lr 0.05, weight decay 0.1.
fn short_schedule() -> LrSchedule {
    LrSchedule {
        warmup_steps: Some(3),
        decay_steps: vec![5, 7],
        decay_factor: 10.0,
        ..Default::default()
    }
}

const OPT_LR: f64 = 0.05;
const OPT_WD: f64 = 0.1;
const OPT_STEPS: usize = 9;

/// Step `k` of the fixture's problem: `<c_k, a> + |a|²/2`, plus `<d_k, b> + |b|²/2` on even `k`
/// (so `b` has no gradient on odd steps), at the schedule's learning rate.
fn opt_step(opt: &mut Adam, fx: &HashMap<String, Tensor>, a: &Var, b: &Var, k: usize) {
    opt.set_learning_rate(short_schedule().lr(OPT_LR, k, (0, 1)));
    let quad = |v: &Var, c: &str| {
        let c = fx[c].get(k).unwrap();
        let v = v.as_tensor();
        ((&c * v).unwrap().sum_all().unwrap() + (v.sqr().unwrap().sum_all().unwrap() * 0.5))
            .unwrap()
    };
    let mut loss = quad(a, "opt.ca");
    if k.is_multiple_of(2) {
        loss = (loss + quad(b, "opt.cb")).unwrap();
    }
    opt.backward_step(&loss).unwrap();
}

fn new_opt(a: &Var, b: &Var, config: AdamConfig) -> Adam {
    let named = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    Adam::new_named(named, config).unwrap()
}

fn fresh_params(fx: &HashMap<String, Tensor>) -> (Var, Var) {
    (
        Var::from_tensor(&fx["opt.a0"]).unwrap(),
        Var::from_tensor(&fx["opt.b0"]).unwrap(),
    )
}

#[test]
fn adam_and_adamw_match_torch_after_every_step() {
    let fx = fixture();
    for (kind, config) in [
        ("adam", AdamConfig::adam(OPT_LR, OPT_WD)),
        ("adamw", AdamConfig::adamw(OPT_LR, OPT_WD)),
    ] {
        let lrs = fx[&format!("{kind}.lr")].to_vec1::<f64>().unwrap();
        let (a, b) = fresh_params(&fx);
        let mut opt = new_opt(&a, &b, config);
        let (mut worst_a, mut worst_b) = (0f32, 0f32);
        for (k, lr) in lrs.iter().enumerate() {
            assert_eq!(
                short_schedule().lr(OPT_LR, k, (0, 1)),
                *lr,
                "{kind} lr at step {k}"
            );
            opt_step(&mut opt, &fx, &a, &b, k);
            let da = max_abs_diff(a.as_tensor(), &fx[&format!("{kind}.a")].get(k).unwrap());
            let db = max_abs_diff(b.as_tensor(), &fx[&format!("{kind}.b")].get(k).unwrap());
            assert!(
                da <= PARAM_ABS && db <= PARAM_ABS,
                "{kind} step {k}: {da:e} {db:e}"
            );
            (worst_a, worst_b) = (worst_a.max(da), worst_b.max(db));
        }
        eprintln!(
            "{kind}: max |param diff| over {OPT_STEPS} steps = {worst_a:.2e} / {worst_b:.2e}"
        );
        let state: HashMap<_, _> = opt.state().unwrap().into_iter().collect();
        for p in ["a", "b"] {
            let want_step = fx[&format!("{kind}.state.{p}.step")]
                .to_scalar::<i64>()
                .unwrap();
            assert_eq!(
                state[&format!("{p}.step")].to_scalar::<i64>().unwrap(),
                want_step
            );
            for m in ["exp_avg", "exp_avg_sq"] {
                let want = &fx[&format!("{kind}.state.{p}.{m}")];
                assert_rel(
                    &format!("{kind} {p}.{m}"),
                    &state[&format!("{p}.{m}")],
                    want,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn exported_state_resumes_bit_for_bit() {
    let fx = fixture();
    let config = AdamConfig::adam(OPT_LR, OPT_WD);
    let (a, b) = fresh_params(&fx);
    let mut straight = new_opt(&a, &b, config.clone());
    for k in 0..OPT_STEPS {
        opt_step(&mut straight, &fx, &a, &b, k);
    }

    // Stop after 4 steps, write parameters and optimiser state, resume in fresh objects.
    let (a1, b1) = fresh_params(&fx);
    let mut first = new_opt(&a1, &b1, config.clone());
    for k in 0..4 {
        opt_step(&mut first, &fx, &a1, &b1, k);
    }
    let mut saved: HashMap<String, Tensor> = first.state().unwrap().into_iter().collect();
    saved.insert("param.a".into(), a1.as_tensor().clone());
    saved.insert("param.b".into(), b1.as_tensor().clone());
    let file = tempfile::Builder::new()
        .prefix("wesam-adam-")
        .suffix(".safetensors")
        .tempfile()
        .unwrap();
    let path = file.path().to_path_buf();
    candle_core::safetensors::save(&saved, &path).unwrap();
    let loaded = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    std::fs::remove_file(&path).unwrap();

    let a2 = Var::from_tensor(&loaded["param.a"]).unwrap();
    let b2 = Var::from_tensor(&loaded["param.b"]).unwrap();
    let mut resumed = new_opt(&a2, &b2, config);
    resumed.load_state(&loaded).unwrap();
    for k in 4..OPT_STEPS {
        opt_step(&mut resumed, &fx, &a2, &b2, k);
    }
    let bits = |t: &Tensor| -> Vec<u32> {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v.iter().map(|x| x.to_bits()).collect()
    };
    assert_eq!(bits(a.as_tensor()), bits(a2.as_tensor()));
    assert_eq!(bits(b.as_tensor()), bits(b2.as_tensor()));
    let want = straight.state().unwrap();
    let got: HashMap<_, _> = resumed.state().unwrap().into_iter().collect();
    for (key, t) in want {
        let g = &got[&key];
        if key.ends_with(".step") {
            assert_eq!(g.to_scalar::<i64>().unwrap(), t.to_scalar::<i64>().unwrap());
        } else {
            assert_eq!(bits(g), bits(&t), "{key}");
        }
    }
}

#[test]
fn loading_a_state_with_a_wrong_shape_or_missing_entry_fails() {
    let fx = fixture();
    let (a, b) = fresh_params(&fx);
    let mut opt = new_opt(&a, &b, AdamConfig::default());
    let mut state: HashMap<String, Tensor> = opt.state().unwrap().into_iter().collect();
    // A loadable state, with `a`'s first moment changed: a failed load must not apply it.
    let marked = state["a.exp_avg"].ones_like().unwrap();
    state.insert("a.exp_avg".into(), marked);
    state.remove("b.exp_avg_sq");
    assert!(opt.load_state(&state).is_err());
    let after: HashMap<String, Tensor> = opt.state().unwrap().into_iter().collect();
    assert_eq!(max_abs(&after["a.exp_avg"]), 0.0);
    state.insert(
        "b.exp_avg_sq".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    assert!(opt.load_state(&state).is_err());
}

/// SAM-Adapter's balanced BCE pools its pixel counts over the batch: each image's share, summed,
/// gives torch's batch loss and gradients (`scripts/make_balanced_bce_fixture.py`).
#[test]
fn balanced_bce_over_a_batch_matches_torch() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/losses/balanced_bce.safetensors");
    let fx: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let images = ["img0", "img1"];
    let mut balance = PixelBalance::default();
    for i in images {
        balance.add(PixelBalance::of(&fx[&format!("{i}.target")]).unwrap());
    }
    let config = LossConfig {
        supervised: SupervisedLoss::BalancedBce,
        ..LossConfig::default()
    };
    let n_total = images
        .iter()
        .map(|i| fx[&format!("{i}.logits")].dim(0).unwrap())
        .sum();
    let mut total = 0.0;
    for i in images {
        let logits = Var::from_tensor(&fx[&format!("{i}.logits")]).unwrap();
        let n = logits.dim(0).unwrap();
        let iou_pred = Tensor::zeros((n, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
        let student = StudentOutputs {
            masks: logits.as_tensor(),
            iou_pred: &iou_pred,
        };
        let target = &fx[&format!("{i}.target")];
        let loss = supervised_image_loss(&config, Profile::Sam, &student, target, n_total, balance)
            .unwrap();
        total += scalar(&loss.total);
        let grads = loss.total.backward().unwrap();
        let g = grads.get(logits.as_tensor()).unwrap();
        assert_rel(
            &format!("{i} gradient"),
            g,
            &fx[&format!("{i}.grad")],
            GRAD_REL,
        );
    }
    let want = fx["loss"].to_vec1::<f32>().unwrap()[0];
    assert!(
        ((total - want) / want).abs() <= VALUE_REL,
        "balanced BCE {total} against torch's {want}"
    );
}

/// The three-output loss trains, per instance, the output of lowest 20·focal + dice (the
/// others get no mask gradient), averages the chosen terms over the image's instances, and
/// scores the IoU head on all three outputs against each output's IoU with the ground truth.
#[test]
fn the_multimask_loss_trains_the_best_output_of_each_instance() {
    let dev = Device::Cpu;
    let (h, w) = (6, 7);
    let gt_data: Vec<f32> = (0..2 * h * w)
        .map(|i| f32::from(u8::from((i % w) < 4 && (i / w) % h < 3 + i / (h * w))))
        .collect();
    let gt = Tensor::from_vec(gt_data, (2, h, w), &dev).unwrap();
    // Output j of instance i: the signed target scaled by a different sharpness, plus a fixed
    // ripple; the sharpest agrees best.
    let sharp = [[1.0f32, 6.0, -2.0], [-3.0, 0.5, 4.0]];
    let noise: Vec<f32> = (0..2 * 3 * h * w)
        .map(|i| 0.3 * (i as f32 * 1.7).sin())
        .collect();
    let noise = Tensor::from_vec(noise, (2, 3, h, w), &dev).unwrap();
    let signed = ((gt.unsqueeze(1).unwrap() * 2.0).unwrap() - 1.0).unwrap();
    let scale = Tensor::new(&sharp, &dev)
        .unwrap()
        .reshape((2, 3, 1, 1))
        .unwrap();
    let logits =
        Var::from_tensor(&(signed.broadcast_mul(&scale).unwrap() + noise).unwrap()).unwrap();
    let iou_pred =
        Var::from_tensor(&Tensor::new(&[[0.2f32, 0.9, 0.1], [0.3, 0.5, 0.8]], &dev).unwrap())
            .unwrap();
    let config = LossConfig::default();
    let n_total = 4;
    let loss = multimask_image_loss(
        &config,
        Profile::Sam,
        logits.as_tensor(),
        iou_pred.as_tensor(),
        &gt,
        n_total,
    )
    .unwrap();

    // By hand: each output's 20·focal + dice, the best per instance.
    let (mut focal_sum, mut dice_sum) = (0f32, 0f32);
    for (i, best) in [1usize, 2].into_iter().enumerate() {
        let t = gt.narrow(0, i, 1).unwrap();
        let x = |j: usize| {
            logits
                .as_tensor()
                .narrow(0, i, 1)
                .unwrap()
                .narrow(1, j, 1)
                .unwrap()
                .reshape((1, h, w))
                .unwrap()
        };
        let term = |j: usize| {
            let f = scalar(&focal(&x(j), &t, 0.8, 2.0).unwrap());
            let d = scalar(&dice(&x(j), &t, 1.0).unwrap());
            (f, d)
        };
        let values: Vec<f32> = (0..3)
            .map(|j| {
                let (f, d) = term(j);
                20.0 * f + d
            })
            .collect();
        let argmin = (0..3)
            .min_by(|&a, &b| values[a].total_cmp(&values[b]))
            .unwrap();
        assert_eq!(argmin, best, "instance {i}: {values:?}");
        let (f, d) = term(best);
        focal_sum += f;
        dice_sum += d;
    }
    assert!((scalar(&loss.focal) - focal_sum / 2.0).abs() < 1e-6);
    assert!((scalar(&loss.dice) - dice_sum / 2.0).abs() < 1e-6);
    let flat = logits.as_tensor().reshape((6, h, w)).unwrap();
    let repeated = gt
        .unsqueeze(1)
        .unwrap()
        .repeat((1, 3, 1, 1))
        .unwrap()
        .reshape((6, h, w))
        .unwrap();
    let targets = iou_targets(&flat, &repeated, Profile::Sam).unwrap();
    let want_iou = iou_mse(
        &iou_pred.as_tensor().reshape((6, 1)).unwrap(),
        &targets,
        3 * n_total,
    )
    .unwrap();
    assert!((scalar(&loss.iou) - scalar(&want_iou)).abs() < 1e-6);

    let grads = loss.total.backward().unwrap();
    let g = grads.get(logits.as_tensor()).unwrap();
    for (i, j) in [(0, 0), (0, 2), (1, 0), (1, 1)] {
        let gij = g.narrow(0, i, 1).unwrap().narrow(1, j, 1).unwrap();
        assert_eq!(
            max_abs(&gij),
            0.0,
            "instance {i} output {j} is not its best"
        );
    }
    for (i, j) in [(0, 1), (1, 2)] {
        let gij = g.narrow(0, i, 1).unwrap().narrow(1, j, 1).unwrap();
        assert!(max_abs(&gij) > 0.0, "instance {i}'s best output {j} trains");
    }
    let g_iou = grads.get(iou_pred.as_tensor()).unwrap();
    assert!(g_iou
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| *v != 0.0));
}
