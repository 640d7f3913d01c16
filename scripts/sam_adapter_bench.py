#!/usr/bin/env python3
"""SAM-Adapter against LoRA and decoder-only training, and as self-training's encoder adapter.

With the `wesam` binary only, on the synthetic suite's camouflage and low-contrast domains (the
bundled source model, models/source-synth.safetensors) and on Kvasir-SEG -> CVC-ClinicDB (a
small SAM trained from scratch on Kvasir-SEG, shorter than scripts/domain_shift.py's), with the
same source model and data split for every method of a target:

1. supervised training on the target's training split, with box prompts and without prompts
   (`--prompt none`), each method with its own recipe and the same number of epochs:
     sam-adapter   configs/sam-adapter.toml (adapter + mask decoder + no_mask_embed, BCE + soft
                   IoU, AdamW 2e-4, per-epoch cosine, batch 2)
     lora          the domain-shift suite's supervised bound (LoRA rank 4 on q and v, the
                   target's configuration: focal + dice + IoU-MSE, Adam)
     decoder       the same with the mask decoder trained instead of LoRA
   scored on the target's test split with the prompt it trained with: mIoU and the camouflage
   metrics (S-measure, mean E-measure, weighted F-measure, MAE);
2. WeSAM self-training (`wesam adapt`, box prompts, the target's configuration) with
   `--peft lora` and with `--peft sam-adapter`: direct and adapted mIoU on the target, and the
   source domain's mIoU after adaptation.

Writes `table.md` and `table.csv` to --out (default bench-out/sam-adapter). Fewer epochs and
images than the paper (20 epochs on 4,040 images at 1024²): see --epochs and --count.

Usage: cargo build --release && python3 scripts/sam_adapter_bench.py [--out DIR] [--epochs 10]
       [--kvasir-model FILE] [--targets camouflage,low-contrast,cvc-clinicdb]
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from domain_shift import (ROOT, SYNTH_DOMAINS, add_kvasir_args, kvasir_paths, prepare_out,
                          train_kvasir_source, wesam, write_tables)

SUPERVISED = {
    "sam-adapter": lambda cfg: ["--config", os.path.join(ROOT, "configs", "sam-adapter.toml")],
    "lora": lambda cfg: ["--config", cfg, "--select", "last"],
    "decoder": lambda cfg: ["--config", cfg, "--select", "last", "--trainable", "decoder"],
}
PEFTS = ["lora", "sam-adapter"]
SOD = ["s_measure", "e_measure", "weighted_f", "mae"]


def score(binary, log, checkpoint, target, prompt, split="test"):
    """The model's scores on a split: {"miou", "s_measure", ...}."""
    r = wesam(binary, ["eval", "--checkpoint", checkpoint, *target["args"], "--prompt", prompt,
                       "--split", split, "--sod-metrics", "--json"], log)
    return {"miou": r["miou"], **{k: r["sod"][k] for k in SOD}}


def targets(a, binary, log):
    """Each target: its data arguments, its source model and source data, its configuration."""
    out = {}
    data = os.path.join(a.out, "data")
    synth = [t for t in a.targets if t in SYNTH_DOMAINS]
    if synth:
        source_dir = os.path.join(data, "source")
        # The suite's seeds (scripts/domain_shift.py): source 99, domain i of the suite 100 + i.
        wesam(binary, ["synth", "--domain", "source", "--count", str(a.count), "--seed", "99",
                       "--out", source_dir, "--force", "--json"], log)
        for t in synth:
            d = os.path.join(data, t)
            wesam(binary, ["synth", "--domain", t, "--count", str(a.count), "--seed",
                           str(100 + SYNTH_DOMAINS.index(t)), "--out", d, "--force", "--json"], log)
            out[t] = {"args": ["--dataset", d],
                      "model": os.path.join(ROOT, "models", "source-synth.safetensors"),
                      "source": {"args": ["--dataset", source_dir]},
                      "config": os.path.join(ROOT, "configs", "synth.toml")}
    if "cvc-clinicdb" in a.targets:
        kvasir, cvc = kvasir_paths(a.data_root)
        model = a.kvasir_model or train_kvasir_source(a, binary, log, kvasir)
        out["cvc-clinicdb"] = {"args": ["--dataset", cvc], "model": model,
                               "source": {"args": ["--dataset", "kvasir", "--data-root", kvasir]},
                               "config": os.path.join(ROOT, "configs", "kvasir-cvc.toml")}
    return out


def supervised_job(a, binary, log, name, target, method, prompt):
    run = os.path.join(a.out, "runs", f"{name}-{prompt}-{method}")
    wesam(binary, ["train", *SUPERVISED[method](target["config"]), *target["args"],
                   "--checkpoint", target["model"], "--prompt", prompt, "--epochs", str(a.epochs),
                   "--out", run, "--json"], log)
    return score(binary, log, os.path.join(run, "merged.safetensors"), target, prompt)


def self_training_job(a, binary, log, name, target, peft):
    run = os.path.join(a.out, "runs", f"{name}-adapt-{peft}")
    r = wesam(binary, ["adapt", "--config", target["config"], *target["args"], "--checkpoint",
                       target["model"], "--prompt", "box", "--peft", peft, "--out", run, "--json"], log)
    merged = os.path.join(run, "merged.safetensors")
    return {"adapted": r["adapted"]["miou"], "kept": r["kept_epoch"],
            "source": score(binary, log, merged, target["source"], "box")["miou"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-out", "sam-adapter"))
    ap.add_argument("--wesam", default=os.path.join(ROOT, "target", "release", "wesam"))
    ap.add_argument("--targets", default="camouflage,low-contrast,cvc-clinicdb")
    ap.add_argument("--count", type=int, default=200, help="images per synthetic domain")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of every supervised run")
    ap.add_argument("--kvasir-model", help="a Kvasir-SEG source model (default: trained here)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="commands run at once")
    add_kvasir_args(ap)
    # A shorter source model than the domain-shift suite's 20 + 16 epochs, to fit the time.
    ap.set_defaults(source_box_epochs=6, source_mixed_epochs=4)
    a = ap.parse_args()
    a.targets = a.targets.split(",")
    unknown = [t for t in a.targets if t not in SYNTH_DOMAINS and t != "cvc-clinicdb"]
    if unknown:
        sys.exit(f"unknown targets {unknown}: synthetic domains {SYNTH_DOMAINS} or cvc-clinicdb")
    if not os.path.exists(a.wesam):
        sys.exit(f"{a.wesam} not found: run `cargo build --release` first")
    log = prepare_out(a.out)
    start = time.time()
    cells = targets(a, a.wesam, log)
    prompts = ["box", "none"]

    jobs = {}
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        for name, t in cells.items():
            for prompt in prompts:
                jobs[(name, prompt, "direct")] = pool.submit(score, a.wesam, log, t["model"], t, prompt)
                for method in SUPERVISED:
                    jobs[(name, prompt, method)] = pool.submit(
                        supervised_job, a, a.wesam, log, name, t, method, prompt)
            jobs[(name, "source")] = pool.submit(score, a.wesam, log, t["model"], t["source"], "box")
            for peft in PEFTS:
                jobs[(name, "adapt", peft)] = pool.submit(self_training_job, a, a.wesam, log, name, t, peft)
        done = {k: f.result() for k, f in jobs.items()}
    minutes = (time.time() - start) / 60

    methods = ["direct", *SUPERVISED]
    rows = []
    lines = ["Supervised training on the target (mIoU on its test split, the prompt it trained "
             f"with; {a.epochs} epochs each):", "",
             f"| target | prompt | {' | '.join(methods)} | best |", "|---|---|" + "---|" * (len(methods) + 1)]
    for name in cells:
        for prompt in prompts:
            m = {k: done[(name, prompt, k)] for k in methods}
            best = max(SUPERVISED, key=lambda k: m[k]["miou"])
            lines.append(f"| {name} | {prompt} | " + " | ".join(f"{m[k]['miou']:.1f}" for k in methods)
                         + f" | {best} |")
            for k in methods:
                rows.append({"part": "supervised", "target": name, "prompt": prompt, "method": k, **m[k]})
    for name in (n for n in cells if n == "camouflage"):
        lines += ["", "Camouflage metrics of the same runs (S-measure, mean E-measure, weighted "
                      "F-measure: higher is better; MAE: lower):", "",
                  "| prompt | method | mIoU | S | E | wF | MAE |", "|---|---|---|---|---|---|---|"]
        for prompt in prompts:
            for k in methods:
                s = done[(name, prompt, k)]
                lines.append(f"| {prompt} | {k} | {s['miou']:.1f} | " + " | ".join(
                    f"{s[x]:.3f}" for x in SOD) + " |")
    lines += ["", "WeSAM self-training with box prompts, LoRA against SAM-Adapter's adapter "
                  "(mIoU; source: the source domain's test split after adaptation):", "",
              "| target | direct | lora | sam-adapter | source before | source after lora | "
              "source after sam-adapter | kept epochs (lora / sam-adapter) |",
              "|---|---|---|---|---|---|---|---|"]
    for name in cells:
        d, src = done[(name, "box", "direct")]["miou"], done[(name, "source")]["miou"]
        r = {p: done[(name, "adapt", p)] for p in PEFTS}
        lines.append(f"| {name} | {d:.1f} | {r['lora']['adapted']:.1f} | {r['sam-adapter']['adapted']:.1f} | "
                     f"{src:.1f} | {r['lora']['source']:.1f} | {r['sam-adapter']['source']:.1f} | "
                     f"{r['lora']['kept']} / {r['sam-adapter']['kept']} |")
        for p in PEFTS:
            rows.append({"part": "self-training", "target": name, "prompt": "box", "method": p,
                         "miou": r[p]["adapted"], "source_miou": r[p]["source"]})
    lines += ["", f"{minutes:.1f} min on {os.cpu_count()} cores (`python3 scripts/sam_adapter_bench.py`; "
                  f"{a.count} images per synthetic domain, Kvasir source model "
                  + (f"given: {a.kvasir_model}" if a.kvasir_model else
                     f"trained here, {a.source_box_epochs} box + {a.source_mixed_epochs} mixed epochs") + ")."]
    fields = ["part", "target", "prompt", "method", "miou", *SOD, "source_miou"]
    write_tables(a.out, fields, rows, lines)


if __name__ == "__main__":
    main()
