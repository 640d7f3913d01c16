#!/usr/bin/env python3
"""Evaluation throughput of the official SamPredictor, to compare with `wesam eval --json`.

Runs the predictor over one split of a folder-layout dataset (`images/`, `masks/` of instance
ids, `splits/{train,val,test}.txt`, as `wesam synth` writes), one box prompt per instance (the
box around its mask), one mask per box, and reports images per second over the loop (the model
is built and loaded before the clock starts, as `wesam eval` times only its loop):

  python3 scripts/eval_torch.py --checkpoint vit_b.pth --data DIR --device cuda

Prints one JSON object: {"impl", "device", "images", "instances", "seconds", "images_per_second"}.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="official SAM checkpoint (.pth)")
    ap.add_argument("--model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--data", required=True, type=Path, help="folder-layout dataset")
    ap.add_argument("--split", default="test")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    stems = (args.data / "splits" / f"{args.split}.txt").read_text().split()
    if not stems:
        raise SystemExit(f"{args.data}: the {args.split} split is empty")
    sam = sam_model_registry[args.model_type](checkpoint=str(args.checkpoint)).to(args.device).eval()
    predictor = SamPredictor(sam)
    device = torch.device(args.device)
    instances = 0
    start = time.perf_counter()
    with torch.no_grad():
        for stem in stems:
            image = np.array(Image.open(args.data / "images" / f"{stem}.png").convert("RGB"))
            mask = np.array(Image.open(args.data / "masks" / f"{stem}.png"))
            predictor.set_image(image)
            for value in np.unique(mask):
                if value == 0:
                    continue
                ys, xs = np.nonzero(mask == value)
                box = np.array([xs.min(), ys.min(), xs.max(), ys.max()])
                predictor.predict(box=box, multimask_output=False)
                instances += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    print(json.dumps({"impl": f"pytorch-{torch.__version__}", "device": device.type, "images": len(stems),
                      "instances": instances, "seconds": seconds, "images_per_second": len(stems) / seconds}))


if __name__ == "__main__":
    main()
