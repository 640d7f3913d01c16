#!/usr/bin/env python3
"""Parity fixture for `wesam features` (`src/model/features.rs`): the official image encoder's
global-attention block outputs, taken with forward hooks, and its neck.

Writes ``tests/fixtures/features/``:
  model.safetensors  a small SAM with random seeded weights whose encoder has four
                     global-attention blocks (0, 1, 3, 4; block 2 windowed), as ViT-B has
                     (2, 5, 8, 11), so that EBSeg's four rescaled maps exist; the wesam config in
                     the metadata
  cases.safetensors  ``image`` (a synthetic 90 x 130 RGB image, uint8 values as float) and, for
                     each preprocessing ``m`` of ``sam`` (the model's own square input) and
                     ``ebseg`` (the image at its size, SAM's normalisation, zero-padded to a
                     multiple of 32, the position embedding resized bicubically as EBSeg's
                     encoder does): ``m.input`` [1, 3, H, W], ``m.blocks.<i>`` [D, h, w] (the
                     output of block i, channels first), ``m.neck`` [C, h, w] and
                     ``m.res2`` .. ``m.res5`` (the four block outputs rescaled bilinearly by 4,
                     2, 1 and 0.5, as EBSeg's backbone returns them).

The ``sam`` input is the one the official encoder gets from the fixture's own resize (tests
compare the encoder on it, not the resize). Needs torch, segment-anything and safetensors.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixture import (TINY_CONFIG, build_sam, config_json, randomize_,  # noqa: E402
                                 save_file, state_dict_tensors, synthetic_image)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "features")
CONFIG = dict(TINY_CONFIG, encoder_depth=5, encoder_global_attn_indexes=[0, 1, 3, 4])
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
SCALES = {"res2": 4.0, "res3": 2.0, "res4": 1.0, "res5": 0.5}


def encoder_features(sam, x):
    """EBSeg's backbone forward: patch embedding, the position embedding resized bicubically
    to the token grid, the blocks (the outputs of the global ones kept by hooks), the neck."""
    enc = sam.image_encoder
    taps = {}
    hooks = [enc.blocks[i].register_forward_hook(
        lambda _m, _in, out, i=i: taps.__setitem__(i, out.permute(0, 3, 1, 2)[0]))
        for i in CONFIG["encoder_global_attn_indexes"]]
    try:
        h = enc.patch_embed(x)
        pos = F.interpolate(enc.pos_embed.permute(0, 3, 1, 2), size=h.shape[1:3], mode="bicubic",
                            align_corners=False).permute(0, 2, 3, 1)
        h = h + pos
        for blk in enc.blocks:
            h = blk(h)
        neck = enc.neck(h.permute(0, 3, 1, 2))[0]
    finally:
        for hk in hooks:
            hk.remove()
    return taps, neck


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    sam = build_sam(CONFIG)
    randomize_(sam, 20261207)
    save_file(state_dict_tensors(sam), os.path.join(OUT, "model.safetensors"),
              metadata={"wesam.config": config_json(CONFIG)})
    img = torch.from_numpy(synthetic_image()).permute(2, 0, 1).float()  # [3, 90, 130]
    size = CONFIG["image_size"]
    # sam: the longest side to the input size, SAM's normalisation, zero padding bottom-right.
    h, w = img.shape[1:]
    scale = size / max(h, w)
    rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = F.interpolate(img[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
    sam_input = F.pad((resized - MEAN) / STD, (0, size - rw, 0, size - rh))[None]
    # ebseg: the image at its own size, normalised, zero padding to a multiple of 32.
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    ebseg_input = F.pad((img - MEAN) / STD, (0, pw - w, 0, ph - h))[None]
    out = {"image": img}
    with torch.no_grad():
        for mode, x in (("sam", sam_input), ("ebseg", ebseg_input)):
            taps, neck = encoder_features(sam, x)
            out[f"{mode}.input"] = x
            out[f"{mode}.neck"] = neck
            for i, t in taps.items():
                out[f"{mode}.blocks.{i}"] = t
            for (name, s), i in zip(SCALES.items(), CONFIG["encoder_global_attn_indexes"]):
                out[f"{mode}.{name}"] = F.interpolate(taps[i][None], scale_factor=s, mode="bilinear",
                                                      align_corners=False)[0]
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "cases.safetensors"))
    for k, v in out.items():
        print(k, tuple(v.shape))


if __name__ == "__main__":
    main()
