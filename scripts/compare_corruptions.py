#!/usr/bin/env python3
"""Compares wesam's corruptions (src/data/corrupt/) with the `imagecorruptions` package.

Runs both on the same image and prints, per corruption and severity, the mean absolute
difference between the two outputs (grey levels), the fraction of identical values, and each
output's mean absolute distance from the clean image (for the random corruptions the two
outputs are different draws, so compare those distances, not the pixels).

    pip install imagecorruptions scikit-image "setuptools<80"
    python3 scripts/compare_corruptions.py [--image IMG] [--out DIR] [--rust-dir DIR] [--seed N]

Without --rust-dir the script runs wesam's ignored `export_for_comparison` test to write its
outputs. The package predates numpy 2 and scikit-image 0.19; the script patches the two
names it needs (`np.float_`, `gaussian(multichannel=)`) without changing what they compute.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate",
                 "jpeg_compression"}


def load_package():
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    import imagecorruptions
    from imagecorruptions import corruptions
    from skimage.filters import gaussian

    def gaussian_compat(image, sigma=1.0, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return gaussian(image, sigma=sigma, **kw)

    corruptions.gaussian = gaussian_compat
    return imagecorruptions


def default_image():
    from skimage import data
    return data.astronaut()


def run_rust(image_path, out_dir, seed):
    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, WESAM_CORRUPT_IN=str(image_path), WESAM_CORRUPT_OUT=str(out_dir),
               WESAM_CORRUPT_SEED=str(seed))
    cmd = ["cargo", "test", "--release", "--lib", "data::corrupt::tests::export_for_comparison",
           "--", "--ignored", "--exact"]
    subprocess.run(cmd, cwd=repo, env=env, check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", help="RGB image (default: skimage's astronaut, 512x512)")
    ap.add_argument("--out", default="/tmp/wesam_corruptions", help="work folder")
    ap.add_argument("--rust-dir", help="folder with wesam's <name>_<severity>.png already written")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.image:
        clean = np.array(Image.open(args.image).convert("RGB"))
    else:
        clean = default_image()
    clean_path = out / "clean.png"
    Image.fromarray(clean).save(clean_path)

    rust_dir = Path(args.rust_dir) if args.rust_dir else out / "wesam"
    if not args.rust_dir:
        run_rust(clean_path, rust_dir, args.seed)
    timings = {}
    tsv = rust_dir / "timings.tsv"
    if tsv.exists():
        for line in tsv.read_text().splitlines()[1:]:
            name, sev, secs = line.split("\t")
            timings[(name, int(sev))] = float(secs)

    ic = load_package()
    x = clean.astype(np.int64)
    print(f"image {clean.shape[1]}x{clean.shape[0]}, seed {args.seed}; Δ = mean |wesam - package|, "
          "same = fraction of identical values, pkg/wesam = mean |output - clean|, "
          "s = wesam's seconds (one core)")
    print("| corruption | sev | Δ | same | pkg | wesam | s |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for name in ic.get_corruption_names("common"):
        rows = []
        for sev in range(1, 6):
            np.random.seed(args.seed)
            pkg = ic.corrupt(clean, corruption_name=name, severity=sev).astype(np.int64)
            ours = np.array(Image.open(rust_dir / f"{name}_{sev}.png").convert("RGB")).astype(np.int64)
            row = (np.abs(ours - pkg).mean(), (ours == pkg).mean(), np.abs(pkg - x).mean(),
                   np.abs(ours - x).mean(), timings.get((name, sev), float("nan")))
            rows.append(row)
            print(f"| {name} | {sev} | {row[0]:.2f} | {row[1]:.3f} | {row[2]:.2f} | {row[3]:.2f} "
                  f"| {row[4]:.3f} |")
        summary.append((name, rows))

    print("\nSummary (severities 1/2/3/4/5; random corruptions are independent draws):")
    print("| corruption | Δ | same | pkg − clean | wesam − clean | wesam s (max) |")
    print("|---|---|---|---|---|---|")
    for name, rows in summary:
        tag = "" if name in DETERMINISTIC else " (random)"
        col = lambda i, fmt: "/".join(fmt.format(r[i]) for r in rows)
        print(f"| {name}{tag} | {col(0, '{:.2f}')} | {col(1, '{:.2f}')} | {col(2, '{:.1f}')} "
              f"| {col(3, '{:.1f}')} | {max(r[4] for r in rows):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
