#!/usr/bin/env python3
"""Reference values of WeSAM's losses and optimiser for ``tests/losses.rs``.

The reference repository cannot be imported here, so this script implements its losses from
the method specification (``docs/method.md`` §2, §1.3, §5.1) with PyTorch's own operations
wherever the reference uses them (``F.binary_cross_entropy``, ``F.interpolate``,
``F.normalize``, ``F.cosine_similarity``, ``torch.optim.Adam`` / ``AdamW``, ``LambdaLR``).
These are the "official numbers" the Rust port is checked against.

Writes ``tests/fixtures/losses.safetensors`` (a few kB). Inputs describe one image holding 3 of
the N = 5 instances of a batch (so N and n differ and cannot be confused):

``in.student_masks`` / ``in.teacher_masks`` / ``in.anchor_masks`` [3,32,32]
    mask logits: disc-shaped blobs (positive inside, negative outside) plus noise;
    the student also holds saturated logits (+-17, +-30, +-120, +1000) on both sides of the
    teacher's pseudo-label, to exercise PyTorch's -100 clamp inside the full objective.
``in.student_iou`` [3,1], ``in.teacher_low`` / ``in.anchor_low`` [3,1,32,32] (low-res
    logits), ``in.teacher_emb`` / ``in.anchor_emb`` [16,8,8].

Outputs: each loss (``loss.*``), the IoU targets under both thresholds, the weighted total of
both profiles (``sam.total``, ``ref.total``) and its gradient with respect to the student
logits, the teacher logits, the teacher embeddings and the student IoU predictions
(``sam.grad.*``, ``ref.grad.*``); BCE / focal on saturated logits (``sat.*``) and on the band
where PyTorch's f32 ``ln(1 - p)`` is rounded (``band.*``, with the exact f64 value); the
reference LambdaLR factor at probe steps (``sched.*``); and 9 steps of Adam (coupled L2) and
AdamW under a short warm-up / decay schedule (``adam.*``, ``adamw.*``), with the final
optimiser state.

Deterministic: fixed seeds, one thread; running it twice writes identical bytes.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_num_threads(1)
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "losses.safetensors"

N_TOTAL = 5  # instances in the batch; this image holds 3 of them
N, SIZE, LOW, C, EMB = 3, 32, 32, 16, 8
TAU, GAMMA = 0.3, 2.0
WEIGHTS = dict(focal=20.0, dice=1.0, iou=1.0, anchor=1.0, contra=1.0)


# --------------------------------------------------------------------------------------------
# The reference's losses, from the specification.


def focal(x, t, alpha, gamma=GAMMA):
    """§2.1: global focal on the mean BCE of all instances of the image."""
    p = torch.clamp(torch.sigmoid(x), 0, 1).reshape(-1)
    bce = F.binary_cross_entropy(p, t.reshape(-1), reduction="mean")
    return alpha * (1 - torch.exp(-bce)) ** gamma * bce


def dice(x, t, smooth=1.0):
    """§2.2."""
    p = torch.clamp(torch.sigmoid(x), 0, 1).reshape(-1)
    t = t.reshape(-1)
    inter = (p * t).sum()
    return 1 - (2.0 * inter + smooth) / (p.sum() + t.sum() + smooth)


def calc_iou(x, t, foreground):
    """§2.3: IoU of the binarised student logits with the pseudo-label, per instance."""
    pred = foreground(x).float()
    inter = (pred * t).sum(dim=(1, 2))
    union = pred.sum(dim=(1, 2)) + t.sum(dim=(1, 2)) - inter
    return (inter / (union + 1e-7)).unsqueeze(1)


def contra(ex, ey, mx, my, tau=TAU):
    """§2.5: one ratio of sums over the cosine matrix of logit-pooled instance features."""
    ex = F.normalize(ex, dim=0)
    ey = F.normalize(ey, dim=0)
    mx = F.interpolate(mx, size=ex.shape[-2:], mode="bilinear", align_corners=False)
    my = F.interpolate(my, size=ey.shape[-2:], mode="bilinear", align_corners=False)
    f = (ex[None] * mx).sum(dim=(2, 3)) / mx.sum(dim=(2, 3))  # [n, C]
    g = (ey[None] * my).sum(dim=(2, 3)) / my.sum(dim=(2, 3))
    s = F.cosine_similarity(f[:, None, :], g[None, :, :], dim=-1, eps=1e-8) / tau
    e = torch.exp(s)
    return -torch.log(torch.diagonal(e).sum() / e.sum())


PROFILES = {
    # name: (focal alpha, self-training dice smoothing, IoU-target binarisation)
    "sam": (0.8, 1.0, lambda x: x > 0),
    "ref": (float(N_TOTAL), float(N_TOTAL), lambda x: x >= 0.5),
}


def image_loss(profile, s_masks, s_iou, t_masks, t_low, t_emb, a_masks, a_low, a_emb):
    """§1.3 / §2.6 for one image: the weighted total and its terms."""
    alpha, smooth, foreground = PROFILES[profile]
    a_bin = (a_masks > 0).float()
    t_bin = (t_masks > 0).float()
    terms = dict(
        focal=focal(s_masks, t_bin, alpha),
        dice=dice(s_masks, t_bin, smooth),
        iou=((s_iou - calc_iou(s_masks.detach(), t_bin, foreground)) ** 2).sum() / N_TOTAL,
        anchor=0.5 * dice(s_masks, a_bin) + 0.5 * dice(t_masks, a_bin),
        contra=contra(t_emb, a_emb.detach(), t_low.detach(), a_low.detach()),
    )
    total = sum(WEIGHTS[k] * v for k, v in terms.items())
    return total, terms


# --------------------------------------------------------------------------------------------
# Inputs.


def blob_logits(size, centres, radii):
    """Per instance: 8 (r - d) / r inside-positive logits clipped at -12."""
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    out = []
    for (cx, cy), r in zip(centres, radii):
        d = torch.sqrt((xx - cx * size) ** 2 + (yy - cy * size) ** 2)
        out.append((8 * (r * size - d) / (r * size)).clamp(min=-12))
    return torch.stack(out)


def make_inputs():
    gen = torch.Generator().manual_seed(20240607)
    centres = (torch.rand(N, 2, generator=gen) * 0.5 + 0.25).tolist()
    radii = (torch.rand(N, generator=gen) * 0.2 + 0.12).tolist()
    base = blob_logits(SIZE, centres, radii)
    base_low = blob_logits(LOW, centres, radii)
    noise = lambda *shape: torch.randn(*shape, generator=gen)
    teacher = base + 1.5 * noise(N, SIZE, SIZE)
    anchor = base + 1.5 * noise(N, SIZE, SIZE)
    student = base + 2.0 * noise(N, SIZE, SIZE)
    # Saturated student logits on both sides of the teacher's pseudo-label.
    fg = (teacher > 0).nonzero().tolist()
    bg = (teacher <= 0).nonzero().tolist()
    for (i, y, x), v in zip(fg[::7], [-17.0, -30.0, -120.0, 30.0]):
        student[i, y, x] = v
    for (i, y, x), v in zip(bg[::11], [17.0, 30.0, 120.0, 1000.0, -30.0]):
        student[i, y, x] = v
    emb = noise(C, EMB, EMB)
    inputs = {
        "student_masks": student,
        "teacher_masks": teacher,
        "anchor_masks": anchor,
        "student_iou": torch.rand(N, 1, generator=gen),
        "teacher_low": base_low[:, None] + 1.5 * noise(N, 1, LOW, LOW),
        "anchor_low": base_low[:, None] + 1.5 * noise(N, 1, LOW, LOW),
        "teacher_emb": emb,
        "anchor_emb": emb + 0.5 * noise(C, EMB, EMB),
    }
    # The pooling denominators must be far from zero for the comparison to be meaningful.
    for k in ("teacher_low", "anchor_low"):
        den = F.interpolate(inputs[k], size=(EMB, EMB), mode="bilinear").sum(dim=(2, 3))
        assert den.abs().min() > 1.0, (k, den)
    return inputs


# --------------------------------------------------------------------------------------------
# Cases.


def loss_cases(x):
    out = {}
    t_bin = (x["teacher_masks"] > 0).float()
    a_bin = (x["anchor_masks"] > 0).float()
    s = x["student_masks"]
    out["loss.focal_alpha_0.8"] = focal(s, t_bin, 0.8)
    out["loss.focal_alpha_n"] = focal(s, t_bin, float(N_TOTAL))
    out["loss.dice_smooth_1"] = dice(s, t_bin, 1.0)
    out["loss.dice_smooth_n"] = dice(s, t_bin, float(N_TOTAL))
    for name, (_, _, fg) in PROFILES.items():
        targets = calc_iou(s, t_bin, fg)
        out[f"{name}.iou_targets"] = targets
        out[f"{name}.iou_mse"] = ((x["student_iou"] - targets) ** 2).sum() / N_TOTAL
    out["loss.anchor"] = 0.5 * dice(s, a_bin) + 0.5 * dice(x["teacher_masks"], a_bin)
    args = [x[k] for k in ("teacher_emb", "anchor_emb", "teacher_low", "anchor_low")]
    out["loss.contra_n3"] = contra(*args)
    out["loss.contra_n1"] = contra(args[0], args[1], args[2][:1], args[3][:1])
    return out


def total_cases(x):
    out = {}
    wrt = ("student_masks", "teacher_masks", "teacher_emb", "student_iou")
    for profile in PROFILES:
        leaves = {k: v.clone().requires_grad_(k in wrt) for k, v in x.items()}
        total, terms = image_loss(
            profile,
            leaves["student_masks"],
            leaves["student_iou"],
            leaves["teacher_masks"],
            leaves["teacher_low"],
            leaves["teacher_emb"],
            leaves["anchor_masks"],
            leaves["anchor_low"],
            leaves["anchor_emb"],
        )
        grads = torch.autograd.grad(total, [leaves[k] for k in wrt])
        out[f"{profile}.total"] = total
        for k, v in terms.items():
            out[f"{profile}.term.{k}"] = v
        for k, g in zip(wrt, grads):
            out[f"{profile}.grad.{k}"] = g
    return out


def bce_cases():
    """Saturated logits (PyTorch's -100 clamp and zero gradient) and the rounding band."""
    out = {}
    xs = torch.tensor([30.0, -30.0, 120.0, -120.0, 17.0, -17.0, 1000.0, -1000.0, -89.0, 2.0])
    x = torch.cat([xs, xs]).requires_grad_(True)
    t = torch.cat([torch.zeros(10), torch.ones(10)])
    bce = F.binary_cross_entropy(torch.sigmoid(x), t)
    (grad,) = torch.autograd.grad(bce, x)
    out.update({"sat.logits": x.detach(), "sat.target": t, "sat.bce": bce, "sat.grad": grad})
    out["sat.focal"] = focal(x.detach(), t, 0.8)
    band = torch.linspace(9.0, 16.5, 16)
    zeros = torch.zeros(16)
    out["band.logits"] = band
    out["band.bce_torch"] = F.binary_cross_entropy(torch.sigmoid(band), zeros)
    out["band.bce_exact"] = F.softplus(band.double()).mean().float()
    return out


def reference_lambda(step, warmup=250, steps=(60000, 86666), decay_factor=10):
    """The reference's LambdaLR factor (§5.1)."""
    if step < warmup:
        return step / warmup
    if step < steps[0]:
        return 1.0
    if step < steps[1]:
        return 1 / decay_factor
    return 1 / (decay_factor**2)


def schedule_cases():
    probes = [0, 1, 125, 249, 250, 251, 59999, 60000, 60001, 86665, 86666, 100000]
    return {
        "sched.steps": torch.tensor(probes, dtype=torch.int64),
        "sched.factor": torch.tensor([reference_lambda(s) for s in probes], dtype=torch.float64),
    }


OPT_STEPS, OPT_LR, OPT_WD = 9, 0.05, 0.1
OPT_SCHEDULE = dict(warmup=3, steps=(5, 7), decay_factor=10)


def optimizer_cases():
    """9 steps on loss_k = <c_k, a> + |a|^2/2 (+ <d_k, b> + |b|^2/2 on even k only, so that b
    has no gradient, and is skipped, on odd steps)."""
    gen = torch.Generator().manual_seed(7)
    a0 = torch.randn(4, 3, generator=gen)
    b0 = torch.randn(5, generator=gen)
    ca = torch.randn(OPT_STEPS, 4, 3, generator=gen)
    cb = torch.randn(OPT_STEPS, 5, generator=gen)
    out = {"opt.a0": a0, "opt.b0": b0, "opt.ca": ca, "opt.cb": cb}
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        a = a0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        opt = cls([a, b], lr=OPT_LR, weight_decay=OPT_WD)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: reference_lambda(s, **OPT_SCHEDULE)
        )
        lrs, traj_a, traj_b = [], [], []
        for k in range(OPT_STEPS):
            lrs.append(opt.param_groups[0]["lr"])
            loss = (ca[k] * a).sum() + 0.5 * (a * a).sum()
            if k % 2 == 0:
                loss = loss + (cb[k] * b).sum() + 0.5 * (b * b).sum()
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            traj_a.append(a.detach().clone())
            traj_b.append(b.detach().clone())
        out[f"{name}.lr"] = torch.tensor(lrs, dtype=torch.float64)
        out[f"{name}.a"] = torch.stack(traj_a)
        out[f"{name}.b"] = torch.stack(traj_b)
        for pname, p in (("a", a), ("b", b)):
            st = opt.state[p]
            out[f"{name}.state.{pname}.step"] = st["step"].to(torch.int64)
            out[f"{name}.state.{pname}.exp_avg"] = st["exp_avg"]
            out[f"{name}.state.{pname}.exp_avg_sq"] = st["exp_avg_sq"]
    return out


def main():
    x = make_inputs()
    out = {f"in.{k}": v for k, v in x.items()}
    out.update(loss_cases(x))
    out.update(total_cases(x))
    out.update(bce_cases())
    out.update(schedule_cases())
    out.update(optimizer_cases())
    out = {k: v.detach().contiguous() for k, v in out.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(sorted(out.items())), str(OUT))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} tensors)")
    for k in sorted(out):
        if k.startswith(("loss.", "sam.total", "ref.total", "sam.term", "ref.term", "sat.b", "band.")):
            print(f"  {k} = {out[k].flatten()[:4].tolist()}")


if __name__ == "__main__":
    main()
