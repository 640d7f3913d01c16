#!/usr/bin/env python3
"""PyTorch side of the encoder benchmark: the official SAM image encoder, random weights.

Measures one pass the way `wesam bench` does, so that the two can be compared in one run
(see scripts/compare_encoder.py):
  forward        encoder forward under torch.no_grad()
  lora-backward  encoder forward + backward with rank-4 LoRA on q and v of every block
                 (base weights frozen), loss = mean of squared embeddings
  step           one WeSAM self-training step as the reference runs it: a frozen anchor copy
                 and the LoRA model (teacher) on the weak view, the student on the strong view,
                 --instances box prompts (3 by default, as `wesam bench step`), masks upsampled
                 to the input size, the losses of scripts/make_loss_fixture.py (sam profile),
                 backward, Adam update
Prints one JSON object: {"impl", "device", "model_type", "image_size", "pass", "seconds",
"peak_rss_mb", "base_rss_mb"}; the peak is the kernel's VmHWM after resetting it, minus the RSS
before the warm-up pass. With --device cuda the timings synchronise the GPU and the report adds
"peak_gpu_mb" (torch.cuda.max_memory_reserved: what the caching allocator held at most).
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


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(args, pass_, once):
    """Times `once` after a warm-up (median of --repeat runs) and prints the JSON report. The
    peak covers the warm-up too, as in `wesam bench`."""
    base = status_mb("VmRSS:")
    reset_peak()
    once()  # warm-up
    sync(args.device)
    times = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        once()
        sync(args.device)
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    out = {"impl": f"pytorch-{torch.__version__}", "device": args.device.type, "model_type": args.model_type, "image_size": args.image_size,
           "pass": pass_, "seconds": seconds}
    if pass_ == "step":
        out["seconds_per_step"] = seconds
    out.update(peak_rss_mb=max(0.0, status_mb("VmHWM:") - base), base_rss_mb=base)
    if args.device.type == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_reserved(args.device) / 2**20
    print(json.dumps(out))


def build_sam(model_type, size):
    """The official Sam of a registry type at input size `size` (the builder fixes 1024)."""
    from functools import partial
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    dim, depth, heads, glob = {"vit_b": (768, 12, 12, [2, 5, 8, 11]), "vit_l": (1024, 24, 16, [5, 11, 17, 23]),
                               "vit_h": (1280, 32, 16, [7, 15, 23, 31])}[model_type]
    grid = size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=dim, img_size=size, mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=heads, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=glob,
            window_size=14, out_chans=256),
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid), input_image_size=(size, size),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), transformer_dim=256, iou_head_depth=3,
            iou_head_hidden_dim=256),
    )


def step_benchmark(args):
    import copy
    import os
    import sys
    import torch.nn.functional as F
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import make_loss_fixture as L

    size, dev = args.image_size, args.device
    sam = build_sam(args.model_type, size).eval().to(dev)
    for p in sam.parameters():
        p.requires_grad_(False)
    anchor = copy.deepcopy(sam)  # the reference's frozen anchor copy
    for blk in sam.image_encoder.blocks:
        blk.attn.qkv = LoraQkv(blk.attn.qkv)
    sam.to(dev)  # the adapters just added
    params = [p for p in sam.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4, weight_decay=1e-4)
    weak = torch.randn(1, 3, size, size, device=dev)
    strong = weak * 0.7 + 0.2
    s = float(size)
    boxes = torch.tensor([[0.1, 0.2, 0.4, 0.5], [0.4, 0.3, 0.7, 0.6], [0.6, 0.5, 0.9, 0.8]], device=dev) * s
    if not 1 <= args.instances <= len(boxes):
        raise SystemExit(f"--instances must be 1 to {len(boxes)}, got {args.instances}")
    boxes = boxes[:args.instances]

    def run(model, image):
        emb = model.image_encoder(image)
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes, masks=None)
        low, iou = model.mask_decoder(image_embeddings=emb, image_pe=model.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                      multimask_output=False)
        masks = F.interpolate(low, (size, size), mode="bilinear", align_corners=False)[:, 0]
        return emb, low, masks, iou

    def once():
        with torch.no_grad():
            e_a, low_a, m_a, _ = run(anchor, weak)
        e_t, low_t, m_t, _ = run(sam, weak)
        _, _, m_s, iou_s = run(sam, strong)
        n = boxes.shape[0]
        t_bin, a_bin = (m_t > 0).float(), (m_a > 0).float()
        loss = (20 * L.focal(m_s, t_bin, 0.8) + L.dice(m_s, t_bin, 1.0)
                + ((iou_s - L.calc_iou(m_s.detach(), t_bin, lambda x: x > 0)) ** 2).sum() / n
                + 0.5 * L.dice(m_s, a_bin) + 0.5 * L.dice(m_t, a_bin)
                + L.contra(e_t[0], e_a[0], low_t.detach(), low_a.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()

    report(args, "step", once)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--pass", dest="pass_", required=True, choices=["forward", "lora-backward", "step"])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--instances", type=int, default=3, help="box prompts in a step's image (1-3)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    args = ap.parse_args()
    args.device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.pass_ == "step":
        return step_benchmark(args)
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
    encoder.to(args.device)
    x = torch.randn(1, 3, args.image_size, args.image_size, device=args.device)

    def once():
        if args.pass_ == "forward":
            with torch.no_grad():
                encoder(x).sum().item()
        else:
            loss = encoder(x).pow(2).mean()
            loss.backward()
            assert encoder.blocks[0].attn.qkv.a_q.grad is not None

    report(args, args.pass_, once)


if __name__ == "__main__":
    main()
