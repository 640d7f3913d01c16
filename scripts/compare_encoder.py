#!/usr/bin/env python3
"""Runs `wesam bench` and scripts/bench_torch.py side by side, one process per pass, and prints
the time and peak-memory ratios (wesam / PyTorch) as a markdown table.

  python3 scripts/compare_encoder.py [--model-type vit_b] [--image-size 1024] [--repeat 1]

Build first: cargo build --release. Both use all cores unless --threads is given.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-type", default="vit_b")
    ap.add_argument("--image-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--passes", default="forward,lora-backward")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["RAYON_NUM_THREADS"] = env["OMP_NUM_THREADS"] = str(args.threads)
    wesam = os.path.join(ROOT, "target", "release", "wesam")
    rows = []
    for p in args.passes.split(","):
        common = ["--image-size", str(args.image_size), "--repeat", str(args.repeat)]
        ours = run([wesam, "bench", p, "--model-type", args.model_type.replace("_", "-"), *common, "--json"], env)
        torch_cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_torch.py"), "--model-type", args.model_type, "--pass", p, *common]
        if args.threads:
            torch_cmd += ["--threads", str(args.threads)]
        ref = run(torch_cmd, env)
        rows.append((p, ours, ref))
        print(json.dumps(ours), json.dumps(ref), file=sys.stderr)
    print(f"| pass ({args.model_type}, {args.image_size}²) | PyTorch s | wesam s | time ratio | PyTorch peak MiB | wesam peak MiB | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for p, o, r in rows:
        print(f"| {p} | {r['seconds']:.2f} | {o['seconds']:.2f} | {o['seconds'] / r['seconds']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | {o['peak_rss_mb'] / max(r['peak_rss_mb'], 1):.2f} |")


if __name__ == "__main__":
    main()
