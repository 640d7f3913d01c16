#!/usr/bin/env bash
# The GPU check, one command for a machine with an NVIDIA GPU:
#
#   bash scripts/gpu_check.sh OUT_DIR
#
# 1. builds wesam with `--features cuda` (the host's CUDA toolkit when it has one, else NVIDIA's
#    PyPI toolkit through scripts/build_cuda.sh --full, which needs a driver for CUDA >= 13.4);
# 2. runs the parity tests on the GPU (WESAM_TEST_DEVICE=cuda: the tiny fixture's embeddings,
#    logits, every gradient, the WeSAM step, the low-precision step);
# 3. times one ViT-B WeSAM step at 1024² in f32 and in bf16, and PyTorch's reference step
#    (scripts/bench_torch.py), each with its peak GPU memory (nvidia-smi, sampled every 100 ms);
# 4. measures evaluation throughput (images/s, box prompts) of `wesam eval` and of the official
#    SamPredictor (scripts/eval_torch.py) on the same generated images and random ViT-B weights;
# 5. where the NCCL build (wesam-nccl of scripts/build_cuda.sh --full) is there, one-rank NCCL
#    jobs that build the communicator, check it with an all-gather on the GPU and train an epoch
#    of the small bundled model: started by `mpirun -np 1` (where MPI is installed) and joined
#    through `--dist-init file://` without MPI; then the gradient exchange gathered on the
#    device against one process's gradients (tests/distributed.rs, bit for bit).
#
# Writes OUT_DIR/results.json (every measurement), OUT_DIR/table.md (the summary) and the logs.
# The Python side (torch, torchvision, segment-anything) is installed into a virtual environment
# (WESAM_TORCH_VENV, default ~/.cache/wesam/torch-venv) unless `python3` already has it.
# Budget: about 8 minutes on an H100 once the build is cached (a cold CUDA build adds 5-15).
#
# WESAM_GPU_CHECK_DEVICE=cpu runs every stage on the CPU instead (steps at 256², evaluation on 2
# images): a dry run of the script itself on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# = 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
out=$(realpath -m "$1")
mkdir -p "$out"
device="${WESAM_GPU_CHECK_DEVICE:-cuda}"
failed=()
log() { echo "gpu_check: $*" >&2; }
stage_failed() { failed+=("$1"); log "FAILED: $1 (see $out)"; }

# --- 1. the build -------------------------------------------------------------------------------
features=()
if [ "$device" = cuda ]; then
  nvidia-smi > "$out/gpu.txt" 2>&1 || { log "nvidia-smi failed: no usable GPU"; exit 1; }
  cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d .)
  export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-$cap}"
  for d in "${CUDA_HOME:-}" /usr/local/cuda /opt/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then export CUDA_HOME="$d" PATH="$d/bin:$PATH"; break; fi
  done
  features=(--features cuda)
  if command -v nvcc >/dev/null; then
    log "building with the host's $(nvcc --version | tail -1), compute capability $CUDA_COMPUTE_CAP"
    export CARGO_TARGET_DIR="${WESAM_CUDA_TARGET:-$HOME/.cache/wesam/target-cuda}"
    cargo build --release "${features[@]}" > "$out/build.log" 2>&1 || { log "build failed"; exit 1; }
    bin="$CARGO_TARGET_DIR/release/wesam"
  else
    log "no CUDA toolkit on this host: NVIDIA's CUDA 13.4 wheels (needs a driver for CUDA >= 13.4)"
    bin=$(bash scripts/build_cuda.sh --full 2> "$out/build.log" | tail -1) || { log "build failed"; exit 1; }
    export CARGO_TARGET_DIR="${WESAM_CUDA_TARGET:-$HOME/.cache/wesam/target-cuda}"
    cu=$(echo "${WESAM_CUDA_HOME:-$HOME/.cache/wesam/cuda-13.4}"/lib/python3*/site-packages/nvidia/cu13)
    export PATH="$cu/bin:$PATH" CUDA_HOME="$cu" LD_LIBRARY_PATH="$cu/lib:${LD_LIBRARY_PATH:-}"
  fi
  size=1024 eval_count=250
else
  cargo build --release > "$out/build.log" 2>&1 || { log "build failed"; exit 1; }
  bin="${CARGO_TARGET_DIR:-target}/release/wesam"
  size=256 eval_count=10
fi
log "binary: $bin"

python="${PYTHON:-python3}"
if ! "$python" -c "import torch, torchvision, segment_anything, safetensors" 2>/dev/null; then
  venv="${WESAM_TORCH_VENV:-$HOME/.cache/wesam/torch-venv}"
  if [ ! -x "$venv/bin/python" ]; then
    log "installing torch, torchvision, segment-anything into $venv"
    "$python" -m venv "$venv" && "$venv/bin/pip" install --quiet torch torchvision segment-anything \
      safetensors numpy pillow || { log "cannot install the Python side"; exit 1; }
  fi
  python="$venv/bin/python"
fi

# --- 2. parity on the device ----------------------------------------------------------------------
log "parity tests on $device"
WESAM_TEST_DEVICE="$device" cargo test --release "${features[@]}" --test parity -- --nocapture \
  > "$out/parity.log" 2>&1 || stage_failed parity

# --- 3. the step, f32 and bf16, against PyTorch ---------------------------------------------------
# Runs a command that prints one JSON object and appends it to results.json with "label" and,
# on a GPU, "peak_gpu_mib" (the most memory.used seen while it ran, over the idle level).
measure() {
  local label=$1; shift
  local sampler="" idle=0 json
  if [ "$device" = cuda ]; then
    idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/$label.mem" &
    sampler=$!
  fi
  json=$("$@" 2> "$out/$label.log" | tail -1)
  local rc=$?
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null
  if [ $rc != 0 ] || [ -z "$json" ]; then stage_failed "$label"; return; fi
  local peak=null
  [ -n "$sampler" ] && peak=$(sort -n "$out/$label.mem" | tail -1 | awk -v i="$idle" '{print $1 - i}')
  "$python" -c 'import json,sys; d=json.loads(sys.argv[1]); d["label"]=sys.argv[2]
p=sys.argv[3]; d["peak_gpu_mib"]=None if p=="null" else float(p); print(json.dumps(d))' \
    "$json" "$label" "$peak" >> "$out/results.json"
}
: > "$out/results.json"
for precision in f32 bf16; do
  log "wesam step, ViT-B ${size}², $precision"
  measure "step-wesam-$precision" "$bin" bench step --model-type vit-b --image-size "$size" \
    --device "$device" --precision "$precision" --repeat 3 --json
done
log "PyTorch step, ViT-B ${size}²"
measure step-pytorch "$python" scripts/bench_torch.py --pass step --image-size "$size" \
  --device "$device" --repeat 3

# --- 4. evaluation throughput ------------------------------------------------------------------
log "evaluation throughput"
data="$out/eval-data"
ckpt="$out/vit_b_random.pth"
"$python" -c 'import sys, torch; from segment_anything import sam_model_registry
torch.manual_seed(0); torch.save(sam_model_registry["vit_b"]().state_dict(), sys.argv[1])' "$ckpt" \
  && "$bin" synth --domain source --count "$eval_count" --image-size 512 --out "$data" --force \
    > "$out/synth.log" 2>&1 \
  || stage_failed eval-setup
if [ -f "$ckpt" ] && [ -d "$data/images" ]; then
  measure eval-wesam "$bin" eval --checkpoint "$ckpt" --dataset "$data" --prompt box \
    --device "$device" --json
  measure eval-pytorch "$python" scripts/eval_torch.py --checkpoint "$ckpt" --data "$data" \
    --device "$device"
fi

# --- 5. NCCL, one rank ------------------------------------------------------------------------------
nccl_bin="${CARGO_TARGET_DIR:-target}/release/wesam-nccl"
nccl_check() { # nccl_check LABEL LOG COMMAND...: one line in results.json
  local label=$1 log_file=$2
  shift 2
  if LD_LIBRARY_PATH="$nccl_lib:${LD_LIBRARY_PATH:-}" "$@" > "$out/$log_file" 2>&1; then
    echo "{\"label\": \"$label\", \"passed\": true}" >> "$out/results.json"
  else
    echo "{\"label\": \"$label\", \"passed\": false}" >> "$out/results.json"
    stage_failed "$label"
  fi
}
if [ "$device" = cuda ] && [ -x "$nccl_bin" ]; then
  nccl_lib=$(echo "${WESAM_CUDA_HOME:-$HOME/.cache/wesam/cuda-13.4}"/lib/python3*/site-packages/nvidia/nccl/lib)
  "$bin" synth --domain source --count 8 --seed 3 --out "$out/nccl-data" > /dev/null 2>&1
  job=(adapt --dist nccl --device cuda --dataset "$out/nccl-data" --prompt box --epochs 1
    --checkpoint models/source-synth.safetensors --eval-limit 1)
  nccl_features=nccl
  if command -v mpirun > /dev/null; then
    nccl_features=nccl,mpi
    log "NCCL: one rank started by mpirun"
    nccl_check nccl-mpirun nccl-mpirun.log mpirun --allow-run-as-root -x LD_LIBRARY_PATH -np 1 \
      "$nccl_bin" "${job[@]}" --out "$out/nccl-mpirun"
  fi
  log "NCCL: one rank joined through a rendezvous file, without MPI"
  nccl_check nccl-file nccl-file.log env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 \
    "$nccl_bin" "${job[@]}" --dist-init "file://$out/nccl-rendezvous" --out "$out/nccl-file"
  [ ! -e "$out/nccl-rendezvous" ] || stage_failed "nccl-file (the rendezvous file was left)"
  log "NCCL: the exchange on the device against one process's gradients"
  nccl_check nccl-gather nccl-gather.log cargo test --release --features "$nccl_features" \
    --test distributed nccl_on_one_gpu
else
  log "NCCL: skipped (needs a GPU and the wesam-nccl build of build_cuda.sh --full)"
fi

# --- the summary ---------------------------------------------------------------------------------
"$python" - "$out" "$device" "$size" "${failed[*]:-}" <<'EOF' | tee "$out/table.md"
import json, sys
out, device, size, failed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = {}
for line in open(f"{out}/results.json"):
    d = json.loads(line)
    rows[d["label"]] = d
gpu = open(f"{out}/gpu.txt").read().splitlines()[:12] if device == "cuda" else ["(dry run on the CPU)"]
print(f"# wesam GPU check ({device}, ViT-B, {size}²)\n")
print("```\n" + "\n".join(gpu) + "\n```\n")
def mem(d):
    m = d.get("peak_gpu_mib")
    return f"{m:.0f}" if m is not None else f"{d['peak_rss_mb']:.0f} (RSS)"
torch_step = rows.get("step-pytorch")
print("| pass | seconds | peak MiB | time vs PyTorch | memory vs PyTorch |\n|---|---|---|---|---|")
for label in ["step-pytorch", "step-wesam-f32", "step-wesam-bf16"]:
    d = rows.get(label)
    if not d:
        print(f"| {label} | failed | | | |")
        continue
    ratio_t = ratio_m = ""
    if torch_step and label != "step-pytorch":
        ratio_t = f"{d['seconds'] / torch_step['seconds']:.2f}×"
        key = "peak_gpu_mib" if device == "cuda" else "peak_rss_mb"
        a, b = d.get(key), torch_step.get(key)
        if a is not None and b:
            ratio_m = f"{a / b:.2f}×"
    print(f"| {label} | {d['seconds']:.3f} | {mem(d)} | {ratio_t} | {ratio_m} |")
print("\n| evaluation (box prompts) | images | images/s |\n|---|---|---|")
for label in ["eval-pytorch", "eval-wesam"]:
    d = rows.get(label)
    print(f"| {label} | {d['images']} | {d['images_per_second']:.2f} |" if d else f"| {label} | failed | |")
for label, what in [("nccl-mpirun", "started by mpirun"), ("nccl-file", "joined through a file"),
                    ("nccl-gather", "device gather = one process")]:
    d = rows.get(label)
    print(f"\nNCCL, one rank, {what}: " + ("skipped" if d is None else "passed" if d["passed"] else f"FAILED ({label}.log)"))
parity = open(f"{out}/parity.log").read()
print("\nparity tests: " + ("passed" if "test result: ok" in parity else "FAILED (parity.log)"))
if failed:
    print(f"\nfailed stages: {failed}")
EOF
if [ ${#failed[@]} -gt 0 ]; then log "failed: ${failed[*]}"; exit 1; fi
log "done: $out/table.md"
