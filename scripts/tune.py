#!/usr/bin/env python3
"""Chooses the learning rate and the anchor weighting of a domain-shift suite on tuning data,
never on a split the suite reports.

For each candidate setting (a learning rate, and the anchor loss weighing every instance
uniformly, as the reference, or by the anchor mask's agreement with the weak label) it adapts
the source model with the full method (the suite's other settings), scores the adapted model on
the tuning data, and scores it on a source-domain split (forgetting). The rule: the largest mean
gain over direct among the settings that keep the source domain within 1 point of the source
model after every adaptation. Writes `table.md` and `table.csv` to --out and prints the choice.

Suites and their tuning data:
  synthetic   (configs/synth.toml) the bundled source model with box prompts on the tuning
              domains camouflage (seed 51) and fog (seed 52), scored on their test splits; the
              source split is seed 98 (the suite's are 99 and up)
  kvasir-cvc  (configs/kvasir-cvc.toml) a Kvasir-SEG source model (--model, or trained here with
              the suite's recipe) with box and point prompts, adapted on CVC-ClinicDB's
              adaptation split and scored on that same split with its ground truth, which only
              this choice uses (the suite reports CVC's test split); the source split is
              Kvasir's training split (the suite reports its test split)

Usage: cargo build --release && python3 scripts/tune.py [--suite synthetic] [--out DIR]
       [--rates 1e-4,1e-3] [--weightings uniform,weak-label]
"""
import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from domain_shift import (ROOT, add_kvasir_args, evaluate, kvasir_paths, prepare_out,  # noqa: E402
                          train_kvasir_source, wesam, write_tables)

RATES = "1e-4,3e-4,5e-4,1e-3,3e-3,1e-2"
WEIGHTINGS = "uniform,weak-label"


def synthetic_tuning(a, log):
    """Tuning cells, source split and configuration of the synthetic suite."""
    data = os.path.join(a.out, "data")
    source = os.path.join(data, "source")
    wesam(a.wesam, ["synth", "--domain", "source", "--count", str(a.count), "--seed", "98",
                    "--out", source, "--force", "--json"], log)
    cells = []
    for domain, seed in {"camouflage": 51, "fog": 52}.items():
        d = os.path.join(data, domain)
        wesam(a.wesam, ["synth", "--domain", domain, "--count", str(a.count), "--seed", str(seed),
                        "--out", d, "--force", "--json"], log)
        cells.append((domain, "box", ["--dataset", d]))
    model = a.model or os.path.join(ROOT, "models", "source-synth.safetensors")
    return model, cells, {"dataset": source}, os.path.join(ROOT, "configs", "synth.toml")


def kvasir_cvc_tuning(a, log):
    """Tuning cells, source split and configuration of the Kvasir-SEG → CVC-ClinicDB suite."""
    kvasir, cvc = kvasir_paths(a.data_root)
    model = a.model or train_kvasir_source(a, a.wesam, log, kvasir)
    cells = [("cvc-clinicdb", p, ["--dataset", cvc, "--eval-split", "train"]) for p in ("box", "point")]
    source = {"dataset": "kvasir", "data_root": kvasir, "split": "train"}
    return model, cells, source, os.path.join(ROOT, "configs", "kvasir-cvc.toml")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", choices=["synthetic", "kvasir-cvc"], default="synthetic")
    ap.add_argument("--out", default=None, help="output directory (default bench-out/tune-lr-<suite>)")
    ap.add_argument("--wesam", default=os.path.join(ROOT, "target", "release", "wesam"))
    ap.add_argument("--model", help="source model (default: bundled, or trained for kvasir-cvc)")
    ap.add_argument("--count", type=int, default=200, help="synthetic: images per tuning domain")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="commands run at once")
    ap.add_argument("--rates", default=RATES, help="candidate learning rates, comma-separated")
    ap.add_argument("--weightings", default=WEIGHTINGS, help="candidate anchor weightings")
    add_kvasir_args(ap)
    a = ap.parse_args()
    a.out = a.out or os.path.join(ROOT, "bench-out", f"tune-{a.suite}")
    settings = [(lr, w) for w in a.weightings.split(",") for lr in a.rates.split(",")]
    log = prepare_out(a.out)
    if not os.path.exists(a.wesam):
        sys.exit(f"{a.wesam} not found: run `cargo build --release` first")

    start = time.time()
    tuning = synthetic_tuning if a.suite == "synthetic" else kvasir_cvc_tuning
    model, cells, source, config = tuning(a, log)
    prompts = sorted({p for _, p, _ in cells})
    before = {p: evaluate(a.wesam, log, model, prompt=p, **source) for p in prompts}

    def run(job):
        (name, prompt, args), (lr, weighting) = job
        run_dir = os.path.join(a.out, "runs", f"{name}-{prompt}-{lr}-{weighting}")
        r = wesam(a.wesam, ["adapt", "--config", config, *args, "--checkpoint", model,
                            "--prompt", prompt, "--lr", lr, "--anchor-weighting", weighting,
                            "--out", run_dir, "--json"], log)
        after = evaluate(a.wesam, log, os.path.join(run_dir, "merged.safetensors"), prompt=prompt, **source)
        return r["direct"]["miou"], r["adapted"]["miou"], after

    jobs = [(cell, setting) for setting in settings for cell in cells]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        results = dict(zip(((c[0], c[1], s) for c, s in jobs), pool.map(run, jobs)))
    minutes = (time.time() - start) / 60

    labels = [f"{name} {prompt}" if len(prompts) > 1 else name for name, prompt, _ in cells]
    rows = []
    for setting in settings:
        row = {"lr": setting[0], "anchor weighting": setting[1]}
        for label, (name, prompt, _) in zip(labels, cells):
            direct, adapted, after = results[(name, prompt, setting)]
            row[f"{label} gain"] = adapted - direct
            row[f"source after {label}"] = after
        row["keeps source"] = all(row[f"source after {label}"] >= before[prompt] - 1.0
                                  for label, (_, prompt, _) in zip(labels, cells))
        row["mean gain"] = statistics.mean(row[f"{label} gain"] for label in labels)
        rows.append(row)
    kept = [r for r in rows if r["keeps source"]]
    best = max(kept, key=lambda r: r["mean gain"]) if kept else None
    chosen = f"lr {best['lr']}, {best['anchor weighting']} anchor weighting" if best else None

    cols = [f"{label} gain" for label in labels] + [f"source after {label}" for label in labels] + ["mean gain"]
    lines = [f"| lr | anchor weighting | {' | '.join(cols)} |", "|---|---|" + "---|" * len(cols)]
    for r in rows:
        cells_md = [f"{r[c]:+.1f}" if "gain" in c else f"{r[c]:.1f}" for c in cols]
        key = [r["lr"], r["anchor weighting"]]
        if r is best:
            key = [f"**{k}**" for k in key]
        lines.append(f"| {' | '.join(key)} | " + " | ".join(cells_md) + " |")
    src = ", ".join(f"{p} {m:.1f}" for p, m in before.items())
    lines += ["", f"Source model on the tuning source split: {src}. "
              f"Chosen: {chosen or 'none (every setting costs the source more than 1 point)'}. "
              f"Suite `{a.suite}`, {minutes:.1f} min on {os.cpu_count()} cores."]
    write_tables(a.out, ["lr", "anchor weighting", *cols, "keeps source"], rows, lines)


if __name__ == "__main__":
    main()
