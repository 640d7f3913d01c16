#!/usr/bin/env bash
# Prompt-free instance segmentation before and after adaptation (README's table): the bundled
# source model with its three outputs trained (models/source-synth-amg.safetensors, phase 3 of
# scripts/train_source_model.sh: `wesam train --multimask` on mixed prompts, single points
# training the three outputs, boxes the single one, which prompted adaptation uses), then
# adapted by WeSAM to the camouflage domain with box prompts; each
# scored by `wesam eval --prompt none --auto` (the automatic mask generator at the official
# defaults, its masks matched to the instances) on the source and camouflage test splits; then
# with the thresholds `--calibrate` picks on camouflage's validation split. 12.5 minutes on 2 CPU
# cores.
#   bash scripts/amg_bench.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-out/amg}"
cargo build --release
wesam=target/release/wesam
rm -rf "$out"
mkdir -p "$out"
# The domain-shift suite's data: source seed 99, camouflage seed 103.
"$wesam" synth --domain source --count 200 --seed 99 --out "$out/source" --json > /dev/null
"$wesam" synth --domain camouflage --count 200 --seed 103 --out "$out/camouflage" --json > /dev/null
multimask=models/source-synth-amg.safetensors
"$wesam" adapt --config configs/synth.toml --dataset "$out/camouflage" --prompt box \
    --checkpoint "$multimask" --out "$out/adapted" --json > /dev/null
score() {  # model dataset [extra flags]: one JSON line
    "$wesam" eval --checkpoint "$1" --dataset "$2" --prompt none --auto --json "${@:3}"
}
for model in multimask adapted; do
    if [ "$model" = multimask ]; then ck="$multimask"; else ck="$out/adapted/merged.safetensors"; fi
    for domain in source camouflage; do
        echo "{\"model\": \"$model\", \"domain\": \"$domain\", \"report\": $(score "$ck" "$out/$domain" --split test)}"
    done
    # Thresholds chosen on the validation split, scored on the test split.
    best=$(score "$ck" "$out/camouflage" --split val --calibrate | python3 -c \
        'import json, sys; b = json.load(sys.stdin)["best"]; print(b[0], b[1])')
    read -r iou stability <<< "$best"
    echo "{\"model\": \"$model\", \"domain\": \"camouflage\", \"thresholds\": [$iou, $stability], \"report\": $(score "$ck" "$out/camouflage" --split test --pred-iou-thresh "$iou" --stability-score-thresh "$stability")}"
done > "$out/results.jsonl"
python3 - "$out/results.jsonl" <<'EOF'
import json, sys
print("| model | test split | thresholds (IoU, stability) | matched mIoU | recall@0.5 | recall@0.75 | F1@0.5 | masks per image |")
print("|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    s = r["report"]["auto"]["scores"]
    t = "{:.3f}, {:.3f} (val)".format(*r["thresholds"]) if "thresholds" in r else "0.88, 0.95"
    print(f"| {r['model']} | {r['domain']} | {t} | {100 * s['matched_iou']:.1f} | {100 * s['recall_50']:.1f} | "
          f"{100 * s['recall_75']:.1f} | {100 * s['f1_50']:.1f} | {s['masks']:.1f} |")
EOF
