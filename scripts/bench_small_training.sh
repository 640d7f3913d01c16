#!/usr/bin/env bash
# Training speed of the small bundled architecture (configs/sam-tiny.toml, 128²) on the CPU, side
# by side in one run: 3 epochs from random weights over 120 generated source images, box prompts,
#   1. batch 1 with candle's elementwise thread pool on (what wesam did before 2026-11-30);
#   2. batch 1 as wesam runs now (that pool off: `CANDLE_NUM_THREADS` unset);
#   3. batch 2 as wesam runs now (the two images differentiated at once, one per core).
# Prints each wall time and its ratio to the first.
#   bash scripts/bench_small_training.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-out/small-training}"
cargo build --release
wesam=target/release/wesam
rm -rf "$out"
"$wesam" synth --domain source --count 150 --seed 3 --out "$out/data" --force >/dev/null 2>&1
cores=$(nproc)
run() { # NAME BATCH [ENV...]
    local name=$1 batch=$2
    shift 2
    local t0 t1
    t0=$(date +%s.%N)
    env "$@" "$wesam" train --dataset "$out/data" --prompt box --epochs 3 --trainable all \
        --init random --model-config configs/sam-tiny.toml --optimizer adamw --lr 1e-3 \
        --loss-resolution low --eval-limit 1 --batch-size "$batch" --out "$out/$name" --json \
        >/dev/null 2>"$out/$name.log"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
old=$(run batch1-pool-on 1 CANDLE_NUM_THREADS="$cores")
new1=$(run batch1 1)
new2=$(run batch2 2)
echo "| run | seconds | ratio |"
echo "|---|---|---|"
printf "| batch 1, elementwise pool on (%s threads) | %.1f | 1.00 |\n" "$cores" "$old"
printf "| batch 1 | %.1f | %.2f |\n" "$new1" "$(echo "$new1 / $old" | bc -l)"
printf "| batch 2 | %.1f | %.2f |\n" "$new2" "$(echo "$new2 / $old" | bc -l)"
