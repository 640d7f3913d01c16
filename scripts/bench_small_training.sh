#!/usr/bin/env bash
# Training speed of the small bundled architecture (configs/sam-tiny.toml, 128²) on the CPU, side
# by side in one run: 3 epochs from random weights over 120 generated source images, box prompts,
#   1. batch 1 with candle's elementwise thread pool on (what wesam did before 2026-11-30);
#   2. batch 1 as wesam runs now (that pool off: `CANDLE_NUM_THREADS` unset);
#   3. batch 2 as wesam runs now (the two images differentiated at once, one per core);
#   4. with BASELINE, batch 2 with that other build of wesam (an earlier commit's
#      target/release/wesam, copied aside), to measure a change to the code side by side.
# Prints each wall time and its ratio to the first.
#   bash scripts/bench_small_training.sh [OUT_DIR] [BASELINE]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-out/small-training}"
baseline="${2:-}"
cargo build --release
wesam=target/release/wesam
rm -rf "$out"
"$wesam" synth --domain source --count 150 --seed 3 --out "$out/data" --force >/dev/null 2>&1
cores=$(nproc)
run() { # BINARY NAME BATCH [ENV...]
    local bin=$1 name=$2 batch=$3
    shift 3
    local t0 t1
    t0=$(date +%s.%N)
    env "$@" "$bin" train --dataset "$out/data" --prompt box --epochs 3 --trainable all \
        --init random --model-config configs/sam-tiny.toml --optimizer adamw --lr 1e-3 \
        --loss-resolution low --eval-limit 1 --batch-size "$batch" --out "$out/$name" --json \
        >/dev/null 2>"$out/$name.log"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
old=$(run "$wesam" batch1-pool-on 1 CANDLE_NUM_THREADS="$cores")
new1=$(run "$wesam" batch1 1)
new2=$(run "$wesam" batch2 2)
echo "| run | seconds | ratio |"
echo "|---|---|---|"
printf "| batch 1, elementwise pool on (%s threads) | %.1f | 1.00 |\n" "$cores" "$old"
printf "| batch 1 | %.1f | %.2f |\n" "$new1" "$(echo "$new1 / $old" | bc -l)"
printf "| batch 2 | %.1f | %.2f |\n" "$new2" "$(echo "$new2 / $old" | bc -l)"
if [ -n "$baseline" ]; then
    base2=$(run "$baseline" batch2-baseline 2)
    printf "| batch 2, %s | %.1f | %.2f |\n" "$baseline" "$base2" "$(echo "$base2 / $old" | bc -l)"
fi
