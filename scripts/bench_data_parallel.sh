#!/usr/bin/env bash
# One epoch of the bundled small model's self-training (configs/synth.toml, box prompts) with the
# same global batch of 2 on one process (`--batch-size 2`: its two images on the two cores) and
# on two MPI ranks (`mpirun -np 2 --batch-size 1`), alternated REPEATS times; the two-rank runs
# print how much of the epoch's step time went to exchanging gradients. Needs Open MPI and a build
# with `--features mpi`. benches/README.md has the figures.
#   bash scripts/bench_data_parallel.sh [OUT_DIR] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-out/data-parallel}"
repeats="${2:-3}"
cargo build --release --features mpi
wesam=target/release/wesam
rm -rf "$out"
mkdir -p "$out"
"$wesam" synth --domain camouflage --count 160 --seed 7 --out "$out/data" --json > /dev/null
flags=(--config configs/synth.toml --dataset "$out/data" --checkpoint models/source-synth.safetensors
       --prompt box --epochs 1 --train-limit 128 --eval-limit 1 --select last --json)
seconds() {  # command...: wall seconds
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null
    end=$(date +%s.%N)
    python3 -c "print(f'{$end - $start:.2f}')"
}
for i in $(seq "$repeats"); do
    one=$(seconds "$wesam" adapt "${flags[@]}" --batch-size 2 --out "$out/np1-$i" 2> /dev/null)
    two=$(seconds mpirun --allow-run-as-root -np 2 "$wesam" adapt "${flags[@]}" --batch-size 1 \
        --out "$out/np2-$i" 2> "$out/np2-$i.log")
    exchange=$(grep -o "steps took .*" "$out/np2-$i.log")
    cmp -s "$out/np1-$i/adapter.safetensors" "$out/np2-$i/adapter.safetensors" && same=yes || same=no
    echo "| $i | $one | $two | $exchange | $same |"
done
