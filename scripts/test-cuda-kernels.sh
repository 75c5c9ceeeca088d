#!/usr/bin/env bash
# Test the CUDA build's kernels on a machine WITHOUT a GPU: `cargo test --features cuda` of the
# `cuda` tests, which
#   * compile src/nn/cuda/kernels.cu with NVRTC to PTX (compute_90 and compute_80), check every
#     kernel is an entry point and that no f32 FMA was contracted (nn::cuda::device::tests);
#   * run the host-emulated kernel and device-step tests (also part of the default build).
# NVRTC needs no GPU. The test binary links libcuda.so.1, libcublas etc.; here those come from
# the CUDA 13.0 wheels and the stub libcuda of scripts/build-cuda.sh (nothing calls the driver).
#
#   bash scripts/test-cuda-kernels.sh [extra cargo test args after --]
#
# Env: as scripts/build-cuda.sh (SEQPIPE_CUDA_PREFIX, SEQPIPE_CUDA_TARGET_DIR, SEQPIPE_CUDA_WHEELS).
# On a shared machine wrap it like every build: flock /tmp/seqpipe-bench.lock nice -n 10 bash ...
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${SEQPIPE_CUDA_PREFIX:-$REPO/.cuda}"
TARGET_DIR="${SEQPIPE_CUDA_TARGET_DIR:-$REPO/target/cuda}"

# CUDA_ROOT, PATH (nvcc, stand-in nvidia-smi), CUDA_COMPUTE_CAP: dfdx's build script needs them.
env_line="$(SEQPIPE_CUDA_SETUP_ONLY=1 bash "$REPO/scripts/build-cuda.sh")"
eval "$env_line"
PREFIX="$(cd "$PREFIX" && pwd)"
LIB="$PREFIX/py/nvidia/cu13/lib"
[ -f "$LIB/libnvrtc.so.13" ] || { echo "no libnvrtc.so.13 in $LIB" >&2; exit 1; }
# The stub libcuda has SONAME libcuda.so.1; give the loader that name.
STUB="$PREFIX/run-stub"
mkdir -p "$STUB"
ln -sfn "$PREFIX/root/lib/libcuda.so" "$STUB/libcuda.so.1"
export LD_LIBRARY_PATH="$LIB:$STUB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

cd "$REPO"
cargo test --features cuda --target-dir "$TARGET_DIR" --lib cuda -- "$@"
