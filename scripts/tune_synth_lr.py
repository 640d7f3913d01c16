#!/usr/bin/env python3
"""Chooses the learning rate of the synthetic domain-shift suite (configs/synth.toml) on tuning
domains, never on a split the suite reports.

For each candidate rate it adapts the bundled source model with the full method and box prompts
(the suite's other settings) to the tuning domains camouflage (seed 51) and fog (seed 52), and
scores each adapted model on its domain's test split and on a source-domain test split (seed 98;
the suite's source split is seed 99). The rule: the largest mean gain over direct among the
rates that keep the source domain within 1 point of the source model after both adaptations.
Writes `table.md` and `table.csv` to --out and prints the chosen rate.

Usage: cargo build --release && python3 scripts/tune_synth_lr.py [--out DIR]
"""
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from domain_shift import evaluate, tuning_setup, wesam, write_tables  # noqa: E402

DOMAINS = {"camouflage": 51, "fog": 52}
SOURCE_SEED = 98
RATES = ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"]


def main():
    a, log, config = tuning_setup(__doc__, "tune-synth-lr")
    data = os.path.join(a.out, "data")

    start = time.time()
    source = os.path.join(data, "source")
    wesam(a.wesam, ["synth", "--domain", "source", "--count", str(a.count), "--seed", str(SOURCE_SEED),
                    "--out", source, "--force", "--json"], log)
    for domain, seed in DOMAINS.items():
        wesam(a.wesam, ["synth", "--domain", domain, "--count", str(a.count), "--seed", str(seed),
                        "--out", os.path.join(data, domain), "--force", "--json"], log)
    source_before = evaluate(a.wesam, log, a.model, source, "box")

    def run(job):
        domain, lr = job
        run_dir = os.path.join(a.out, "runs", f"{domain}-{lr}")
        r = wesam(a.wesam, ["adapt", "--config", config, "--dataset", os.path.join(data, domain),
                            "--checkpoint", a.model, "--prompt", "box", "--lr", lr,
                            "--out", run_dir, "--json"], log)
        after = evaluate(a.wesam, log, os.path.join(run_dir, "merged.safetensors"), source, "box")
        return r["direct"]["miou"], r["adapted"]["miou"], after

    jobs = [(d, lr) for lr in RATES for d in DOMAINS]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        results = dict(zip(jobs, pool.map(run, jobs)))
    minutes = (time.time() - start) / 60

    rows = []
    for lr in RATES:
        row = {"lr": lr}
        for d in DOMAINS:
            direct, adapted, after = results[(d, lr)]
            row[f"{d} gain"] = adapted - direct
            row[f"source after {d}"] = after
        row["mean gain"] = statistics.mean(row[f"{d} gain"] for d in DOMAINS)
        row["keeps source"] = all(row[f"source after {d}"] >= source_before - 1.0 for d in DOMAINS)
        rows.append(row)
    kept = [r for r in rows if r["keeps source"]]
    chosen = max(kept, key=lambda r: r["mean gain"])["lr"] if kept else None

    cols = [f"{d} gain" for d in DOMAINS] + [f"source after {d}" for d in DOMAINS] + ["mean gain"]
    lines = [f"| lr | {' | '.join(cols)} |", "|---|" + "---|" * len(cols)]
    for r in rows:
        cells = [f"{r[c]:+.1f}" if "gain" in c else f"{r[c]:.1f}" for c in cols]
        bold = r["lr"] == chosen
        lines.append(f"| {'**' + r['lr'] + '**' if bold else r['lr']} | " + " | ".join(cells) + " |")
    lines += ["", f"Source model on the tuning source split: {source_before:.1f} (box). "
              f"Chosen: {chosen or 'none (every rate costs the source more than 1 point)'}. "
              f"{minutes:.1f} min on {os.cpu_count()} cores."]
    write_tables(a.out, ["lr", *cols, "keeps source"], rows, lines)


if __name__ == "__main__":
    main()
