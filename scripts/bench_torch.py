#!/usr/bin/env python3
"""PyTorch side of the encoder benchmark: the official SAM image encoder, random weights.

Measures one pass the way `wesam bench` does, so that the two can be compared in one run
(see scripts/compare_encoder.py):
  forward        encoder forward under torch.no_grad()
  lora-backward  encoder forward + backward with rank-4 LoRA on q and v of every block
                 (base weights frozen), loss = mean of squared embeddings
Prints one JSON object: {"impl", "model_type", "image_size", "pass", "seconds", "peak_rss_mb",
"base_rss_mb"}; the peak is the kernel's VmHWM after resetting it, minus the RSS before the warm-up pass.
"""
import argparse
import json
import statistics
import time

import torch
from torch import nn
from segment_anything import sam_model_registry


def status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return 0.0


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class LoraQkv(nn.Module):
    """qkv(x) with s * B A x added to its q and v slices (A: [r, D], B: [D, r])."""

    def __init__(self, qkv: nn.Linear, rank: int = 4, scale: float = 1.0):
        super().__init__()
        self.qkv, self.scale = qkv, scale
        dim = qkv.in_features
        bound = 1.0 / dim ** 0.5
        self.a_q = nn.Parameter(torch.empty(rank, dim).uniform_(-bound, bound))
        self.b_q = nn.Parameter(torch.zeros(dim, rank))
        self.a_v = nn.Parameter(torch.empty(rank, dim).uniform_(-bound, bound))
        self.b_v = nn.Parameter(torch.zeros(dim, rank))

    def forward(self, x):
        out = self.qkv(x)
        dim = self.qkv.in_features
        dq = (x @ self.a_q.t()) @ self.b_q.t() * self.scale
        dv = (x @ self.a_v.t()) @ self.b_v.t() * self.scale
        return torch.cat([out[..., :dim] + dq, out[..., dim:2 * dim], out[..., 2 * dim:] + dv], dim=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--pass", dest="pass_", required=True, choices=["forward", "lora-backward"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.image_size != 1024:
        # The official builder fixes 1024; build the encoder for the requested size instead.
        from segment_anything.modeling import ImageEncoderViT
        from functools import partial
        cfg = {"vit_b": (768, 12, 12, [2, 5, 8, 11]), "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
               "vit_h": (1280, 32, 16, [7, 15, 23, 31])}[args.model_type]
        encoder = ImageEncoderViT(
            depth=cfg[1], embed_dim=cfg[0], img_size=args.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=cfg[2], patch_size=16,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=cfg[3], window_size=14, out_chans=256)
    else:
        encoder = sam_model_registry[args.model_type](checkpoint=None).image_encoder
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    if args.pass_ == "lora-backward":
        for blk in encoder.blocks:
            blk.attn.qkv = LoraQkv(blk.attn.qkv)
    x = torch.randn(1, 3, args.image_size, args.image_size)

    def once():
        if args.pass_ == "forward":
            with torch.no_grad():
                encoder(x).sum().item()
        else:
            loss = encoder(x).pow(2).mean()
            loss.backward()
            assert encoder.blocks[0].attn.qkv.a_q.grad is not None

    # The peak covers the warm-up too, as in `wesam bench`.
    base = status_mb("VmRSS:")
    reset_peak()
    once()  # warm-up
    times = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    print(json.dumps({
        "impl": f"pytorch-{torch.__version__}", "model_type": args.model_type,
        "image_size": args.image_size, "pass": args.pass_, "seconds": statistics.median(times),
        "peak_rss_mb": max(0.0, status_mb("VmHWM:") - base), "base_rss_mb": base,
    }))


if __name__ == "__main__":
    main()
