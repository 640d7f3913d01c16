#!/usr/bin/env python3
"""Chooses the learning rate and the anchor's settings of a domain-shift suite on tuning data,
never on a split the suite reports.

For each candidate setting (a learning rate; the anchor loss weighing every instance uniformly,
as the reference, or by the anchor mask's agreement with the weak label raised to a trust
exponent; the last epoch kept, or the one whose masks agree best with the adaptation split's
weak labels) it adapts the source model with the full method (the suite's other settings),
scores the adapted model on the tuning data, and scores it on a source-domain split
(forgetting). The rule: the largest mean gain over direct among the settings that keep the
source domain within 1 point of the source model after every adaptation. Writes `table.md` and
`table.csv` to --out and prints the choice.

Suites and their tuning data:
  synthetic   (configs/synth.toml) the bundled source model on tuning domains of their own
              seeds (--domains, default camouflage 51 and fog 52; low contrast 53, noise 54 and
              blur 55 on request) with --prompts (default box), scored on their test splits;
              the source split is seed 98 (the suite's are 99 and up)
  kvasir-cvc  (configs/kvasir-cvc.toml) a Kvasir-SEG source model (--model, or trained here with
              the suite's recipe) with box and point prompts, adapted on CVC-ClinicDB's
              adaptation split and scored on that same split with its ground truth, which only
              this choice uses (the suite reports CVC's test split); the source split is
              Kvasir's training split (the suite reports its test split)

Usage: cargo build --release && python3 scripts/tune.py [--suite synthetic] [--out DIR]
       [--rates 1e-4,1e-3] [--weightings uniform,weak-label] [--trust-exponents 1,2]
       [--selections auto,weak-label] [--domains camouflage,fog] [--prompts box,point]
"""
import argparse
import itertools
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
TUNING_SEEDS = {"camouflage": 51, "fog": 52, "low-contrast": 53, "noise": 54, "blur": 55}
# The grid's axes: the column each names in the table, its command-line option of tune.py and
# the `wesam adapt` flag it sets.
AXES = [("lr", "rates", "--lr"), ("anchor weighting", "weightings", "--anchor-weighting"),
        ("trust exponent", "trust_exponents", "--anchor-trust-exponent"),
        ("selection", "selections", "--select")]


def synthetic_tuning(a, log):
    """Tuning cells, source split and configuration of the synthetic suite."""
    data = os.path.join(a.out, "data")
    source = os.path.join(data, "source")
    wesam(a.wesam, ["synth", "--domain", "source", "--count", str(a.count), "--seed", "98",
                    "--out", source, "--force", "--json"], log)
    cells = []
    for domain in a.domains.split(","):
        if domain not in TUNING_SEEDS:
            sys.exit(f"--domains: no tuning seed for {domain!r} (one of {', '.join(TUNING_SEEDS)})")
        d = os.path.join(data, domain)
        wesam(a.wesam, ["synth", "--domain", domain, "--count", str(a.count), "--seed",
                        str(TUNING_SEEDS[domain]), "--out", d, "--force", "--json"], log)
        cells += [(domain, p, ["--dataset", d]) for p in a.prompts.split(",")]
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
    ap.add_argument("--out", default=None, help="output directory (default bench-out/tune-<suite>)")
    ap.add_argument("--wesam", default=os.path.join(ROOT, "target", "release", "wesam"))
    ap.add_argument("--model", help="source model (default: bundled, or trained for kvasir-cvc)")
    ap.add_argument("--count", type=int, default=200, help="synthetic: images per tuning domain")
    ap.add_argument("--domains", default="camouflage,fog", help="synthetic: tuning domains")
    ap.add_argument("--prompts", default="box", help="synthetic: prompt kinds")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="commands run at once")
    ap.add_argument("--rates", default=RATES, help="candidate learning rates, comma-separated")
    ap.add_argument("--weightings", default=WEIGHTINGS, help="candidate anchor weightings")
    ap.add_argument("--trust-exponents", default="1",
                    help="candidate trust exponents of the weak-label weighting")
    ap.add_argument("--selections", default="weak-label",
                    help="candidate rules for the kept weights: weak-label (the suites' choice), "
                         "last (the last epoch)")
    add_kvasir_args(ap)
    a = ap.parse_args()
    a.out = a.out or os.path.join(ROOT, "bench-out", f"tune-{a.suite}")
    # Every combination of the axes' values, but the trust exponent only with the weak-label
    # weighting (the uniform anchor has no trust to raise).
    settings = [s for s in itertools.product(*(getattr(a, opt).split(",") for _, opt, _ in AXES))
                if s[1] == "weak-label" or s[2] == "1"]
    log = prepare_out(a.out)
    if not os.path.exists(a.wesam):
        sys.exit(f"{a.wesam} not found: run `cargo build --release` first")

    start = time.time()
    tuning = synthetic_tuning if a.suite == "synthetic" else kvasir_cvc_tuning
    model, cells, source, config = tuning(a, log)
    prompts = sorted({p for _, p, _ in cells})
    before = {p: evaluate(a.wesam, log, model, prompt=p, **source) for p in prompts}

    def run(job):
        (name, prompt, args), setting = job
        run_dir = os.path.join(a.out, "runs", "-".join([name, prompt, *setting]))
        flags = [x for (_, _, flag), v in zip(AXES, setting) for x in (flag, v)]
        r = wesam(a.wesam, ["adapt", "--config", config, *args, "--checkpoint", model,
                            "--prompt", prompt, *flags, "--out", run_dir, "--json"], log)
        after = evaluate(a.wesam, log, os.path.join(run_dir, "merged.safetensors"), prompt=prompt, **source)
        return r["direct"]["miou"], r["adapted"]["miou"], after

    jobs = [(cell, setting) for setting in settings for cell in cells]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        results = dict(zip(((c[0], c[1], s) for c, s in jobs), pool.map(run, jobs)))
    minutes = (time.time() - start) / 60

    labels = [f"{name} {prompt}" if len(prompts) > 1 else name for name, prompt, _ in cells]
    rows = []
    for setting in settings:
        row = {name: v for (name, _, _), v in zip(AXES, setting)}
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
    chosen = ", ".join(f"{name} {best[name]}" for name, _, _ in AXES) if best else None

    cols = [f"{label} gain" for label in labels] + [f"source after {label}" for label in labels] + ["mean gain"]
    axes = [name for name, _, _ in AXES]
    lines = [f"| {' | '.join(axes + cols)} |", "|" + "---|" * (len(axes) + len(cols))]
    for r in rows:
        cells_md = [f"{r[c]:+.1f}" if "gain" in c else f"{r[c]:.1f}" for c in cols]
        key = [r[name] for name in axes]
        if r is best:
            key = [f"**{k}**" for k in key]
        lines.append(f"| {' | '.join(key)} | " + " | ".join(cells_md) + " |")
    src = ", ".join(f"{p} {m:.1f}" for p, m in before.items())
    lines += ["", f"Source model on the tuning source split: {src}. "
              f"Chosen: {chosen or 'none (every setting costs the source more than 1 point)'}. "
              f"Suite `{a.suite}`, {minutes:.1f} min on {os.cpu_count()} cores."]
    write_tables(a.out, [*axes, *cols, "keeps source"], rows, lines)


if __name__ == "__main__":
    main()
