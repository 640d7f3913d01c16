#!/usr/bin/env python3
"""Parity fixture for `wesam segment` (`src/amg/`): the official `SamAutomaticMaskGenerator` on a
small model with trained multimask outputs (``models/source-synth-amg.safetensors``, loaded
into the official `Sam`) and a generated source-domain image.

The model is the bundled source model (models/source-synth.safetensors) after three
decoder-only epochs of `wesam train --multimask` with mixed prompts (the bundled model's three
outputs were never trained, and the official generator finds nothing with it); phase 3 of
scripts/train_source_model.sh makes it:

  wesam synth --domain source --count 400 --seed 1 --out /tmp/src400
  wesam train --checkpoint models/source-synth.safetensors --dataset /tmp/src400 --prompt mixed \
      --positive-points 1 --negative-points 0 --multimask --trainable decoder --optimizer adamw \
      --lr 1e-3 --epochs 3 --batch-size 2 --eval-limit 40 --out /tmp/mm
  cp /tmp/mm/merged.safetensors models/source-synth-amg.safetensors

Writes ``tests/fixtures/amg/``: ``image.png`` (128 x 128, ``wesam synth --domain source --seed
5``'s eighth image, ``images/00007.png``, on which the defaults find 5 masks; copied from --image) and ``cases.json``: for each case, the generator's
settings and its records in the order it returns them (COCO compressed RLE ``segmentation``,
``area``, ``bbox``, ``predicted_iou``, ``point_coords``, ``stability_score``, ``crop_box``).
``defaults`` is the generator as shipped; ``lenient`` lowers its thresholds (more masks); ``crops`` adds a crop
layer, its downscaled grid and the small-region cleanup. Needs torch, segment-anything and safetensors; the uncompressed RLE the generator
returns is encoded as pycocotools' ``rleToString`` does (checked against pycocotools when it
is installed).

Usage: python3 scripts/make_amg_fixture.py --image /tmp/source/images/00007.png
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from segment_anything import SamAutomaticMaskGenerator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixture import build_sam, config_from_json  # noqa: E402

try:
    import pycocotools  # noqa: F401
    from segment_anything.utils.amg import coco_encode_rle
except ImportError:
    coco_encode_rle = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "amg")
MODEL = os.path.join(ROOT, "models", "source-synth-amg.safetensors")
CASES = {
    "defaults": dict(),
    "lenient": dict(pred_iou_thresh=0.5, stability_score_thresh=0.8, box_nms_thresh=0.9),
    "crops": dict(pred_iou_thresh=0.7, stability_score_thresh=0.85, crop_n_layers=1,
                  crop_n_points_downscale_factor=2, min_mask_region_area=20),
}


def rle_to_string(counts):
    """pycocotools' `rleToString` (maskApi.c): each count, less the count two before it from the
    fourth on, in 5-bit groups (low first, 0x20 when more follow), plus 48."""
    out = []
    for i, c in enumerate(counts):
        x = int(c) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = x != -1 if ch & 0x10 else x != 0
            out.append(chr((ch | 0x20 if more else ch) + 48))
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    shutil.copyfile(a.image, os.path.join(OUT, "image.png"))
    image = np.array(Image.open(a.image).convert("RGB"))
    with safe_open(MODEL, "pt") as f:
        cfg = config_from_json(f.metadata()["wesam.config"])
    sam = build_sam(cfg)
    sam.load_state_dict(load_file(MODEL), strict=True)
    out = {}
    for name, settings in CASES.items():
        gen = SamAutomaticMaskGenerator(sam, output_mode="uncompressed_rle", **settings)
        with torch.no_grad():
            records = gen.generate(image)
        for r in records:
            rle = r["segmentation"]
            r["segmentation"] = {"size": rle["size"], "counts": rle_to_string(rle["counts"])}
            if coco_encode_rle is not None:
                assert coco_encode_rle(rle)["counts"] == r["segmentation"]["counts"]
        out[name] = {"settings": settings, "records": records}
        print(name, len(records), "masks")
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
