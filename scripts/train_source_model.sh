#!/usr/bin/env bash
# Reproduces models/source-synth.safetensors from scratch: the small SAM of configs/sam-tiny.toml
# (0.7 M parameters, 128² input) trained with `wesam train` on 2000 generated source-domain
# images (seed 1), every weight trainable, AdamW, batches of 2 images (one per core). Two phases:
#   1. box prompts from random weights, 20 epochs at a constant learning rate of 1e-3 (after a
#      250-step warm-up), losses on the 64² low-resolution logits;
#   2. mixed prompts (a box or 5 + 5 points per image, so that the model serves both), 16 epochs
#      with the decaying schedule of configs/source-synth.toml, losses on the 128² input-size
#      logits.
# 38 minutes on 2 CPU cores. The model scores 87.2 mIoU with boxes and 85.7 with points on the
# 400 source test images.
#   bash scripts/train_source_model.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/source-synth}"
cargo build --release
wesam=target/release/wesam
"$wesam" synth --domain source --count 2000 --seed 1 --out "$out/data" --force
"$wesam" train --dataset "$out/data" --prompt box --epochs 20 --trainable all \
    --init random --model-config configs/sam-tiny.toml --batch-size 2 \
    --optimizer adamw --lr 1e-3 --weight-decay 0.01 --loss-resolution low --eval-limit 100 \
    --out "$out/box" --json
"$wesam" train --config configs/source-synth.toml --dataset "$out/data" --prompt mixed \
    --epochs 16 --trainable all --checkpoint "$out/box/merged.safetensors" \
    --out "$out/mixed" --json
mkdir -p models
cp "$out/mixed/merged.safetensors" models/source-synth.safetensors
for prompt in box point; do
    "$wesam" eval --checkpoint models/source-synth.safetensors --dataset "$out/data" --prompt "$prompt"
done
