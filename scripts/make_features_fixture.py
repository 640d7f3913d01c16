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

``--vit-b --out DIR`` writes, outside the repository (hundreds of MB, minutes on a CPU), the
same for the official ViT-B architecture (global-attention blocks 2, 5, 8, 11) with random
seeded weights, for ``tests/features.rs``'s ignored ``vit_b_features_match_at_1024_and_640``:
  DIR/model.safetensors  the weights, the wesam config in the metadata
  DIR/cases.safetensors  ``sam.*``: the 90 x 130 synthetic image resized to SAM's 1024² input,
                         as above (64 x 64 grid); ``ebseg640.*``: ``ebseg640.image`` (a
                         synthetic 640 x 640 image, [3, H, W] of 0..255 values), its EBSeg
                         input (normalised, no padding needed) and its features on a 40 x 40
                         grid, the position embedding resized bicubically and the global blocks'
                         127-entry rel-pos tables interpolated to 79 = 2 * 40 - 1 entries (checked
                         here at run time).

  WESAM_VITB_FEATURES=DIR cargo test --release --test features -- --ignored --nocapture
"""

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixture import (TINY_CONFIG, VIT_B_CONFIG, build_sam, config_json,  # noqa: E402
                                 randomize_, save_file, state_dict_tensors, synthetic_image)
from segment_anything.modeling import image_encoder as official_encoder  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "features")
CONFIG = dict(TINY_CONFIG, encoder_depth=5, encoder_global_attn_indexes=[0, 1, 3, 4])
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
SCALES = {"res2": 4.0, "res3": 2.0, "res4": 1.0, "res5": 0.5}
VIT_B_SEED = 20261208


def encoder_features(sam, x, indexes=CONFIG["encoder_global_attn_indexes"]):
    """EBSeg's backbone forward: patch embedding, the position embedding resized bicubically
    to the token grid, the blocks (the outputs of the global ones kept by hooks), the neck."""
    enc = sam.image_encoder
    taps = {}
    hooks = [enc.blocks[i].register_forward_hook(
        lambda _m, _in, out, i=i: taps.__setitem__(i, out.permute(0, 3, 1, 2)[0]))
        for i in indexes]
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


def add_case(out, mode, sam, x, indexes=CONFIG["encoder_global_attn_indexes"]):
    """``mode.input``, ``mode.blocks.<i>``, ``mode.neck`` and ``mode.res2`` .. ``mode.res5``
    of input ``x`` into ``out``."""
    taps, neck = encoder_features(sam, x, indexes)
    out[f"{mode}.input"] = x
    out[f"{mode}.neck"] = neck
    for i, t in taps.items():
        out[f"{mode}.blocks.{i}"] = t
    for (name, s), i in zip(SCALES.items(), indexes):
        out[f"{mode}.{name}"] = F.interpolate(taps[i][None], scale_factor=s, mode="bilinear",
                                              align_corners=False)[0]
    return taps, neck


def sam_input(img, size):
    """SAM's input: the longest side to ``size``, SAM's normalisation, zero padding
    bottom-right."""
    h, w = img.shape[1:]
    scale = size / max(h, w)
    rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = F.interpolate(img[None], size=(rh, rw), mode="bilinear", align_corners=False)[0]
    return F.pad((resized - MEAN) / STD, (0, size - rw, 0, size - rh))[None]


def ebseg_input(img):
    """EBSeg's input: the image at its own size, normalised, zero padding to a multiple of 32."""
    h, w = img.shape[1:]
    ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
    return F.pad((img - MEAN) / STD, (0, pw - w, 0, ph - h))[None]


def tiny_mode(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    sam = build_sam(CONFIG)
    randomize_(sam, 20261207)
    save_file(state_dict_tensors(sam), os.path.join(out_dir, "model.safetensors"),
              metadata={"wesam.config": config_json(CONFIG)})
    img = torch.from_numpy(synthetic_image()).permute(2, 0, 1).float()  # [3, 90, 130]
    out = {"image": img}
    with torch.no_grad():
        for mode, x in (("sam", sam_input(img, CONFIG["image_size"])), ("ebseg", ebseg_input(img))):
            add_case(out, mode, sam, x)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, "cases.safetensors"))
    for k, v in out.items():
        print(k, tuple(v.shape))


class RelPosRecorder:
    """Records, for every call of the official ``get_rel_pos`` (the official attention looks it
    up through the module's global), the query and key sizes, the stored table's length and the
    number of distinct table entries the returned ``[q, k, C]`` lookup holds: the length of the
    (interpolated) table it used, for random tables."""

    def __init__(self):
        self.calls = []
        self.original = official_encoder.get_rel_pos

    def __enter__(self):
        def wrapped(q_size, k_size, rel_pos):
            r = self.original(q_size, k_size, rel_pos)
            used = torch.unique(r.reshape(-1, r.shape[-1]), dim=0).shape[0]
            self.calls.append((q_size, k_size, rel_pos.shape[0], used))
            return r
        official_encoder.get_rel_pos = wrapped
        return self

    def __exit__(self, *_):
        official_encoder.get_rel_pos = self.original

    def check(self, cfg, grid):
        """Two lookups (h, w) per block, in order: a global block's ``2 * 64 - 1``-entry
        table (the 1024² model's) is used at ``2 * grid - 1`` entries, interpolated linearly by
        the official code when the grid is not 64; a windowed block's ``2 * window - 1``
        entries are used as they are."""
        depth, window = cfg["encoder_depth"], cfg["window_size"]
        table = 2 * cfg["image_size"] // cfg["vit_patch_size"] - 1
        assert len(self.calls) == 2 * depth, self.calls
        for b in range(depth):
            for call in self.calls[2 * b:2 * b + 2]:
                if b in cfg["encoder_global_attn_indexes"]:
                    want = (grid, grid, table, 2 * grid - 1)
                else:
                    want = (window, window, 2 * window - 1, 2 * window - 1)
                assert call == want, (b, call, want)
        print(f"rel-pos lookups on a {grid} x {grid} grid (q, k, table, used):",
              sorted(set(self.calls)))


def vit_b_mode(out_dir):
    cfg = VIT_B_CONFIG
    indexes = list(cfg["encoder_global_attn_indexes"])
    assert indexes == [2, 5, 8, 11], indexes
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    sam = build_sam(cfg)
    randomize_(sam, VIT_B_SEED)
    save_file(state_dict_tensors(sam), os.path.join(out_dir, "model.safetensors"),
              metadata={"wesam.config": config_json(cfg)})
    out = {}
    with torch.no_grad():
        # sam: the tiny mode's 90 x 130 image resized to the 1024² input, a 64 x 64 grid.
        img = torch.from_numpy(synthetic_image()).permute(2, 0, 1).float()
        x = sam_input(img, cfg["image_size"])
        assert x.shape == (1, 3, 1024, 1024), x.shape
        with RelPosRecorder() as rec:
            taps, neck = add_case(out, "sam", sam, x, indexes)
        assert all(t.shape == (768, 64, 64) for t in taps.values())
        rec.check(cfg, 64)
        # At the model's own size the resize of the position embedding is the identity: the
        # hooked forward is the official encoder's.
        official = sam.image_encoder(x)[0]
        d = (official - neck).abs().max().item()
        assert d == 0.0, f"hooked forward differs from the official encoder by {d}"
        # ebseg640: a 640 x 640 image, EBSeg's input at its size (no padding), a 40 x 40 grid.
        img = torch.from_numpy(synthetic_image(640, 640)).permute(2, 0, 1).float()
        x = ebseg_input(img)
        assert x.shape == (1, 3, 640, 640), x.shape
        out["ebseg640.image"] = img
        with RelPosRecorder() as rec:
            taps, neck = add_case(out, "ebseg640", sam, x, indexes)
        assert all(t.shape == (768, 40, 40) for t in taps.values())
        assert neck.shape == (256, 40, 40), neck.shape
        rec.check(cfg, 40)  # the global blocks: 127 entries interpolated to 79
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(out_dir, "cases.safetensors"))
    for k, v in out.items():
        print(k, tuple(v.shape), f"max|x| = {v.abs().max().item():.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vit-b", action="store_true",
                    help="the official ViT-B architecture with random weights at 1024² and 640²")
    ap.add_argument("--out", default=None,
                    help=f"output directory (default {OUT}; required with --vit-b)")
    args = ap.parse_args()
    if args.vit_b:
        if not args.out:
            ap.error("--vit-b needs --out DIR (outside the repository: hundreds of MB)")
        vit_b_mode(args.out)
    else:
        tiny_mode(args.out or OUT)


if __name__ == "__main__":
    main()
