#!/usr/bin/env python3
"""Parity fixture for SAM-Adapter's balanced BCE (`balanced_bce` in `src/adapt/losses.rs`).

Writes ``tests/fixtures/losses/balanced_bce.safetensors``: a batch of two images with 2 and 1
masks (``img{i}.logits`` and ``img{i}.target``, ``[n, H, W]``), the loss SAM-Adapter's ``bbce``
computes over the whole batch (``loss``: counts pooled over the batch, ``P = sum(gt) + 1e-10``,
``N = sum(1 - gt)``, ``P / (P + N) * BCEWithLogits(pos_weight = N / P)``), and its gradient with
respect to each image's logits (``img{i}.grad``). Needs torch and safetensors.
"""

import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "losses", "balanced_bce.safetensors")


def bbce(pred, gt):
    """SAM-Adapter's `BBCEWithLogitLoss`, as its `models/sam.py` defines it."""
    eps = 1e-10
    count_pos = torch.sum(gt) + eps
    count_neg = torch.sum(1.0 - gt)
    ratio = count_neg / count_pos
    w_neg = count_pos / (count_pos + count_neg)
    return w_neg * F.binary_cross_entropy_with_logits(pred, gt, pos_weight=ratio)


def main():
    g = torch.Generator().manual_seed(20261207)
    h, w = 12, 16
    logits = [(torch.randn(n, h, w, generator=g) * 3).requires_grad_() for n in (2, 1)]
    # Few object pixels, as in shadow masks: the weights differ far from one half.
    targets = [(torch.rand(n, h, w, generator=g) < 0.15).float() for n in (2, 1)]
    loss = bbce(torch.cat(logits), torch.cat(targets))
    grads = torch.autograd.grad(loss, logits)
    out = {"loss": loss.detach().reshape(1)}
    for i, (x, t, gr) in enumerate(zip(logits, targets, grads)):
        out[f"img{i}.logits"] = x.detach()
        out[f"img{i}.target"] = t
        out[f"img{i}.grad"] = gr
    save_file(out, OUT)
    print("loss", float(loss.detach()))


if __name__ == "__main__":
    main()
