#!/usr/bin/env bash
# Builds wesam with `--features cuda` on any Linux x86-64 machine, GPU or not, and checks the
# binary: it links against the CUDA libraries, starts, and refuses `--device cuda` cleanly where
# no GPU can be opened. It first builds `--features nccl` too (NCCL between GPU ranks, with
# `mpi` where MPI is installed; wesam-nccl beside the binary) and checks that it links libnccl
# (and MPI) and that a job it cannot start fails in one line.
# `.ci/run` runs it so that the GPU build never rots.
#
#   bash scripts/build_cuda.sh          # CI: the toolkit's compiler plus link stubs (≈ 127 MB)
#   bash scripts/build_cuda.sh --full   # also the real cuBLAS, cuRAND, NVRTC and NCCL (≈ 900 MB):
#                                       # binaries that run on GPUs whose driver supports CUDA 13.4
#
# What it needs (docs/gpu.md has the why): NVIDIA's `cuda-toolkit` wheels from PyPI (nvcc, the
# runtime and CCCL of CUDA 13.4, installed in a virtual environment under $WESAM_CUDA_HOME);
# link stubs for the driver's libcuda (and, without --full, for the libraries the build only
# links), generated from the entry points cudarc declares; CUDA_COMPUTE_CAP (default 80: PTX
# that every GPU of compute capability 8.0 or newer JIT-compiles). The build's target directory
# is $WESAM_CUDA_TARGET, outside the clone, so that a warm machine rebuilds only wesam.
#
# Environment: WESAM_CUDA_HOME (default ~/.cache/wesam/cuda-13.4), WESAM_CUDA_TARGET (default
# ~/.cache/wesam/target-cuda), CUDA_COMPUTE_CAP (default 80), PYTHON (default python3).
# Prints the binary's path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

full=0
case "${1:-}" in
  --full) full=1 ;;
  "") ;;
  *) echo "usage: $0 [--full]" >&2; exit 2 ;;
esac

TOOLKIT=13.4.3              # CUDA 13.4: the newest cudarc 0.19 supports
NCCL=2.32.6                 # nvidia-nccl-cu13 (cudarc 0.19 targets NCCL's API 2.30), with --full
CUDARC=0.19.10              # as resolved by Cargo.lock; its declarations give the stub symbols
home="${WESAM_CUDA_HOME:-$HOME/.cache/wesam/cuda-13.4}"
target="${WESAM_CUDA_TARGET:-$HOME/.cache/wesam/target-cuda}"
python="${PYTHON:-python3}"
start=$(date +%s)

# 1. The toolkit from PyPI, once per machine.
extras="nvcc,cudart,cccl"
[ "$full" = 1 ] && extras="$extras,nvrtc,curand,cublas"
stamp="$home/.installed-$TOOLKIT-$extras"
if [ ! -f "$stamp" ]; then
  echo "build_cuda: installing cuda-toolkit[$extras]==$TOOLKIT into $home" >&2
  "$python" -m venv "$home"
  "$home/bin/pip" install --quiet "cuda-toolkit[$extras]==$TOOLKIT"
  [ "$full" = 1 ] && "$home/bin/pip" install --quiet "nvidia-nccl-cu13==$NCCL"
  touch "$stamp"
fi
cu=$(echo "$home"/lib/python3*/site-packages/nvidia/cu13)
[ -x "$cu/bin/nvcc" ] || { echo "build_cuda: no nvcc under $cu" >&2; exit 1; }

# 2. Unversioned names for the linker (the wheels ship sonames only), and link stubs for what
#    no wheel provides here: every function cudarc declares, returning CUDA_ERROR_STUB_LIBRARY.
cargo fetch --locked --quiet
sys="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-$CUDARC | head -1)/src"
stubs="$cu/lib/stubs"
mkdir -p "$stubs"
stub() { # stub NAME SONAME DECLARATIONS
  local c="$stubs/$1.c"
  grep -ohE '^pub unsafe fn [A-Za-z0-9_]+' "$3" | awk '{print $4}' | sort -u \
    | awk '{printf "int %s(void) { return 34; }\n", $1}' > "$c"
  gcc -shared -fPIC -Wl,-soname,"$2" -o "$stubs/$1.so" "$c"
}
stub libcuda libcuda.so.1 "$sys/driver/sys/mod.rs"
(cd "$cu/lib" && ln -sf libcudart.so.13 libcudart.so)
if [ "$full" = 1 ]; then
  (cd "$cu/lib" && for l in cublas cublasLt nvrtc; do ln -sf lib$l.so.13 lib$l.so; done \
    && ln -sf libcurand.so.10 libcurand.so)
  ln -sf "$(echo "$home"/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2)" "$cu/lib/libnccl.so"
else
  stub libnccl libnccl.so.2 "$sys/nccl/sys/mod.rs"
  stub libcublas libcublas.so.13 "$sys/cublas/sys/mod.rs"
  stub libcublasLt libcublasLt.so.13 "$sys/cublaslt/sys/mod.rs"
  stub libcurand libcurand.so.10 "$sys/curand/sys/mod.rs"
  stub libnvrtc libnvrtc.so.13 "$sys/nvrtc/sys/mod.rs"
fi

# 3. The build. candle's kernels compile once per target directory (most of a cold build).
export PATH="$cu/bin:$PATH" CUDA_HOME="$cu" CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
nccl_features=nccl nccl_libs="libnccl.so.2 libcuda.so.1"
if command -v mpirun > /dev/null; then
  nccl_features=nccl,mpi nccl_libs="$nccl_libs libmpi.so"
else
  echo "build_cuda: no MPI here (mpirun): NCCL ranks of this build meet through --dist-init" >&2
fi
CARGO_TARGET_DIR="$target" cargo build --release --locked --features "$nccl_features"
nccl_bin="$target/release/wesam-nccl"
cp "$target/release/wesam" "$nccl_bin"
needed=$(readelf -d "$nccl_bin" | grep NEEDED)
for lib in $nccl_libs; do
  grep -q "$lib" <<<"$needed" || { echo "build_cuda: wesam-nccl does not link $lib" >&2; exit 1; }
done
CARGO_TARGET_DIR="$target" cargo build --release --locked --features cuda
bin="$target/release/wesam"
built=$(date +%s)

# 4. The binary: linked against the driver and the CUDA libraries; it starts and runs CPU
#    commands with them on the loader path, and refuses --device cuda with one line, no panic.
needed=$(readelf -d "$bin" | grep NEEDED)
for lib in libcuda.so.1 libcublas.so.13 libcurand.so.10 libcudart.so.13; do
  grep -q "$lib" <<<"$needed" || { echo "build_cuda: $bin does not link $lib" >&2; exit 1; }
done
run_dir=$(mktemp -d)
trap 'rm -rf "$run_dir"' EXIT
for f in "$stubs"/*.so; do  # the stubs under their sonames, as a driver install would name them
  soname=$(readelf -d "$f" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
  cp "$f" "$run_dir/$soname"
done
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
  libs="$cu/lib"       # a real driver: its own libcuda
else
  libs="$run_dir:$cu/lib"
fi
LD_LIBRARY_PATH="$libs" "$bin" --help >/dev/null
LD_LIBRARY_PATH="$libs" "$nccl_bin" --help > /dev/null
# One line and exit 1, no panic, from a command that cannot run (no GPU; a rank of a job).
expect_one_line() { # expect_one_line WHAT PATTERN COMMAND...
  local what=$1 pattern=$2 out rc
  shift 2
  set +e
  out=$(LD_LIBRARY_PATH="$libs" "$@" 2>&1)
  rc=$?
  set -e
  if [ "$rc" != 1 ] || [ "$(wc -l <<<"$out")" != 1 ] || ! grep -q "$pattern" <<<"$out"; then
    echo "build_cuda: $what should fail with one line and exit 1; got exit $rc:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "build_cuda: $what: $out" >&2
}
if [ "$libs" != "$cu/lib" ]; then
  # A rank of a two-rank job whose peer never writes the rendezvous file.
  RANK=1 WORLD_SIZE=2 LOCAL_RANK=0 expect_one_line "an NCCL rank without a GPU" "CUDA" \
    "$nccl_bin" adapt --dist nccl --dist-init "file://$run_dir/rendezvous" --dist-timeout 5 \
    --device cuda --dataset "$run_dir/none" --checkpoint "$run_dir/none.safetensors" --prompt box
  expect_one_line "--device cuda without a GPU" "CUDA" \
    "$bin" bench forward --model-type vit-b --image-size 64 --device cuda
fi
echo "build_cuda: built in $((built - start)) s, checked in $(($(date +%s) - built)) s" >&2
echo "$bin"
