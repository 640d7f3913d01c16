#!/usr/bin/env python3
"""Where can the bundled source model absorb a synthetic shift, and does the WeSAM objective
find it? A diagnosis of the domain-shift suite's gains (scripts/domain_shift.py).

For tuning domains of other seeds than the suite's (camouflage 51, fog 52, low-contrast 53),
box prompts and the suite's other settings (configs/synth.toml), it trains one set of weights at
a time:
  lora         the method's LoRA adapters on the encoder's q and v (lr 1e-2, which moves them
               most; the suite runs at 4e-4)
  patch_embed  the patch embedding only (--train-names patch_embed, lr 1e-3)
  all          every weight (--trainable all, lr 1e-3)
each with the ground truth (`wesam train`, supervised) and with the WeSAM objective on the same
prompts (`wesam adapt`, the full method), and writes `table.md` and `table.csv` to --out: the
direct mIoU and every run's mIoU on the domain's test split. Each run keeps its last epoch
(`--select last`), so a collapse shows as one.

Usage: cargo build --release && python3 scripts/adaptation_ceiling.py [--out DIR]
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from domain_shift import ROOT, prepare_out, wesam, write_tables  # noqa: E402

DOMAINS = {"camouflage": 51, "fog": 52, "low-contrast": 53}
WEIGHTS = {
    "lora": ["--lr", "1e-2"],
    "patch_embed": ["--train-names", "patch_embed", "--lr", "1e-3"],
    "all": ["--trainable", "all", "--lr", "1e-3"],
}
OBJECTIVES = {"supervised": "train", "wesam": "adapt"}


def setup():
    """Parses the command line, prepares --out and checks the binary. Returns the arguments,
    the log directory and the synthetic suite's configuration file."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out", "adaptation-ceiling"))
    ap.add_argument("--wesam", default=os.path.join(ROOT, "target", "release", "wesam"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "source-synth.safetensors"))
    ap.add_argument("--count", type=int, default=200, help="images per tuning domain")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="commands run at once")
    a = ap.parse_args()
    log = prepare_out(a.out)
    if not os.path.exists(a.wesam):
        sys.exit(f"{a.wesam} not found: run `cargo build --release` first")
    return a, log, os.path.join(ROOT, "configs", "synth.toml")


def main():
    a, log, config = setup()

    start = time.time()
    for domain, seed in DOMAINS.items():
        wesam(a.wesam, ["synth", "--domain", domain, "--count", str(a.count), "--seed", str(seed),
                        "--out", os.path.join(a.out, "data", domain), "--force", "--json"], log)

    def run(job):
        domain, weights, objective = job
        args = [OBJECTIVES[objective], "--config", config, "--dataset", os.path.join(a.out, "data", domain),
                "--checkpoint", a.model, "--prompt", "box", "--select", "last", *WEIGHTS[weights],
                "--out", os.path.join(a.out, "runs", f"{domain}-{weights}-{objective}"), "--json"]
        return wesam(a.wesam, args, log)

    jobs = [(d, w, o) for d in DOMAINS for w in WEIGHTS for o in OBJECTIVES]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        results = dict(zip(jobs, pool.map(run, jobs)))
    minutes = (time.time() - start) / 60

    cols = [f"{w} {o}" for w in WEIGHTS for o in OBJECTIVES]
    rows = []
    for d in DOMAINS:
        row = {"domain": d, "direct": results[(d, "lora", "supervised")]["direct"]["miou"]}
        row.update({f"{w} {o}": results[(d, w, o)]["adapted"]["miou"] for w in WEIGHTS for o in OBJECTIVES})
        rows.append(row)
    lines = [f"| domain | direct | {' | '.join(cols)} |", "|---|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['domain']} | {r['direct']:.1f} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + " |")
    lines += ["", f"Box prompts, 3 epochs (configs/synth.toml), {minutes:.1f} min on {os.cpu_count()} cores."]
    write_tables(a.out, ["domain", "direct", *cols], rows, lines)


if __name__ == "__main__":
    main()
