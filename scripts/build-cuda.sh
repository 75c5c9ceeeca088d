#!/usr/bin/env bash
# Build seqpipe with the `cuda` feature (dfdx 0.13 -> cudarc 0.9) on a machine WITHOUT a GPU.
#
# What it does (idempotent; re-running only rebuilds what changed):
#   1. pip-installs the CUDA 13.0.x toolkit wheels (pinned, see PINS) into $PREFIX/py
#      (default $REPO/.cuda, made self-ignoring for git with a `*` .gitignore).
#      13.0 is pinned on purpose: the GPU machine runs driver 580 (CUDA 13.0), which cannot
#      load PTX from a newer nvcc (13.2 emits PTX ISA 9.2; 13.0 emits 9.0).
#   2. assembles a CUDA_ROOT at $PREFIX/root: include -> wheel headers (cuda.h), lib/ with
#      unversioned link names (libnvrtc.so, libcublas.so, libcublasLt.so) and a STUB libcuda.so
#      (SONAME libcuda.so.1, generated from cudarc's driver bindings; the real one comes from
#      the GPU driver at run time).
#   3. puts a stand-in `nvidia-smi` (prints compute_cap $CAP, default 9.0 = H100) and the
#      wheel's nvcc on PATH (dfdx's build.rs calls both unconditionally).
#   4. cargo build --release --features cuda --target-dir target/cuda
#   5. writes a small side bundle next to the binary, `<bin>.cuda/`, holding what the binary
#      needs at run time on the GPU machine besides the CUDA libraries: the baked NVRTC
#      include paths (paths.env), dfdx's *.cuh files (the baked OUT_DIR) and the few CUDA
#      headers NVRTC needs (cuda_fp16.h ...). scripts/gpu-check.sh recreates the baked paths.
#
# Env (all optional):
#   SEQPIPE_CUDA_PREFIX      where the wheels/root/shims go     (default: $REPO/.cuda)
#   SEQPIPE_CUDA_WHEELS      folder of already downloaded wheels (pip --no-index --find-links)
#   SEQPIPE_CUDA_MANIFEST    Cargo.toml to build                (default: $REPO/Cargo.toml)
#   SEQPIPE_CUDA_FEATURES    cargo features                     (default: cuda; "" for none)
#   SEQPIPE_CUDA_BIN         binary name                        (default: seqpipe)
#   SEQPIPE_CUDA_TARGET_DIR  cargo target dir                   (default: $REPO/target/cuda)
#   SEQPIPE_CUDA_COMPUTE_CAP compute capability for the PTX     (default: 9.0)
#   SEQPIPE_CUDA_SETUP_ONLY=1  stop after steps 1-3 and print the env to export
#   CARGO_BUILD_JOBS         as usual for cargo
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${SEQPIPE_CUDA_PREFIX:-$REPO/.cuda}"
MANIFEST="${SEQPIPE_CUDA_MANIFEST:-$REPO/Cargo.toml}"
FEATURES="${SEQPIPE_CUDA_FEATURES-cuda}"
BIN_NAME="${SEQPIPE_CUDA_BIN:-seqpipe}"
TARGET_DIR="${SEQPIPE_CUDA_TARGET_DIR:-$REPO/target/cuda}"
CAP="${SEQPIPE_CUDA_COMPUTE_CAP:-9.0}"
PY="${PYTHON:-python3}"

PINS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cublas==13.0.2.14
)

log() { printf '[build-cuda] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$PREFIX"
PREFIX="$(cd "$PREFIX" && pwd)"
case "$PREFIX/" in
  "$REPO"/*) [ -f "$PREFIX/.gitignore" ] || echo '*' >"$PREFIX/.gitignore" ;;  # keep it out of git / device copies
esac

# ---- 1. wheels -------------------------------------------------------------------------------
PYDIR="$PREFIX/py"
STAMP="$PYDIR/.seqpipe-pins"
WANT="$(printf '%s\n' "${PINS[@]}")"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$PYDIR/nvidia/cu13/bin/nvcc" ]; then
  log "CUDA 13.0 wheels already in $PYDIR"
else
  log "installing CUDA 13.0 wheels into $PYDIR (about 600 MB download, 1.1 GB on disk)"
  rm -rf "$PYDIR"
  PIP_ARGS=(install --no-deps --no-compile --disable-pip-version-check --target "$PYDIR")
  if [ -n "${SEQPIPE_CUDA_WHEELS:-}" ]; then PIP_ARGS+=(--no-index --find-links "$SEQPIPE_CUDA_WHEELS"); fi
  "$PY" -m pip "${PIP_ARGS[@]}" "${PINS[@]}" >&2
  printf '%s\n' "$WANT" >"$STAMP"
fi
CU="$PYDIR/nvidia/cu13"
[ -f "$CU/include/cuda.h" ] || die "no $CU/include/cuda.h after install"
[ -x "$CU/bin/nvcc" ] || die "no $CU/bin/nvcc after install"

# ---- 2. CUDA_ROOT ----------------------------------------------------------------------------
ROOT="$PREFIX/root"
mkdir -p "$ROOT/lib"
ln -sfn "$CU/include" "$ROOT/include"
for l in nvrtc cublas cublasLt cudart; do
  [ -f "$CU/lib/lib$l.so.13" ] || die "missing $CU/lib/lib$l.so.13"
  ln -sfn "$CU/lib/lib$l.so.13" "$ROOT/lib/lib$l.so"
done

# stub libcuda.so: the names of every function in cudarc's driver bindings
if [ ! -f "$ROOT/lib/libcuda.so" ]; then
  command -v cargo >/dev/null || die "cargo not on PATH"
  SYS_RS="$(cargo metadata --format-version 1 --manifest-path "$MANIFEST" ${FEATURES:+--features "$FEATURES"} 2>/dev/null |
    "$PY" -c 'import json,sys,os
m=json.load(sys.stdin)
p=[x["manifest_path"] for x in m["packages"] if x["name"]=="cudarc"]
print(os.path.join(os.path.dirname(p[0]),"src","driver","sys.rs") if p else "")')"
  [ -n "$SYS_RS" ] && [ -f "$SYS_RS" ] || die "cannot find cudarc's src/driver/sys.rs (is the cuda feature on?)"
  log "generating stub libcuda.so from $SYS_RS"
  grep -o 'pub fn [A-Za-z0-9_]*' "$SYS_RS" | awk '{print $3}' | sort -u |
    awk '{print "void " $1 "(void) {}"}' >"$ROOT/lib/libcuda_stub.c"
  "${CC:-cc}" -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib/libcuda.so" "$ROOT/lib/libcuda_stub.c"
fi

# ---- 3. shims + env --------------------------------------------------------------------------
SHIM="$PREFIX/shim"
mkdir -p "$SHIM"
cat >"$SHIM/nvidia-smi" <<EOF
#!/bin/sh
# stand-in for nvidia-smi: dfdx 0.13's build.rs runs \`nvidia-smi --query-gpu=compute_cap --format=csv\`
echo compute_cap
echo $CAP
EOF
chmod +x "$SHIM/nvidia-smi"

export CUDA_ROOT="$ROOT"
unset CUDA_PATH CUDA_TOOLKIT_ROOT_DIR CUDNN_LIB   # these would win over CUDA_ROOT in cudarc/dfdx
export PATH="$SHIM:$CU/bin:$PATH"
export CUDA_COMPUTE_CAP="${CAP/./}"                # dfdx honours it too (prints a warning)
NVCC_VER="$(nvcc --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
[ "$NVCC_VER" = "13.0" ] || die "nvcc on PATH is $NVCC_VER, expected 13.0 ($(command -v nvcc))"

if [ "${SEQPIPE_CUDA_SETUP_ONLY:-0}" = 1 ]; then
  echo "export CUDA_ROOT='$CUDA_ROOT' CUDA_COMPUTE_CAP='$CUDA_COMPUTE_CAP' PATH='$SHIM:$CU/bin':\"\$PATH\""
  exit 0
fi

# ---- 4. build --------------------------------------------------------------------------------
mkdir -p "$TARGET_DIR"
TARGET_DIR="$(cd "$TARGET_DIR" && pwd)"
log "cargo build --release ${FEATURES:+--features $FEATURES} --target-dir $TARGET_DIR ($MANIFEST)"
cargo build --release --manifest-path "$MANIFEST" ${FEATURES:+--features "$FEATURES"} \
  --target-dir "$TARGET_DIR" --bin "$BIN_NAME"
BIN="$TARGET_DIR/release/$BIN_NAME"
[ -x "$BIN" ] || die "no binary at $BIN"
# dfdx's build.rs bakes CUDA_INCLUDE_DIR but does not rerun when CUDA_ROOT changes: force it once
if ! grep -qaF "$ROOT/include" "$BIN"; then
  log "stale CUDA include path baked into $BIN_NAME: rebuilding dfdx"
  cargo clean --release --manifest-path "$MANIFEST" --target-dir "$TARGET_DIR" -p dfdx
  cargo build --release --manifest-path "$MANIFEST" ${FEATURES:+--features "$FEATURES"} \
    --target-dir "$TARGET_DIR" --bin "$BIN_NAME"
fi

# ---- 5. side bundle for the GPU machine ------------------------------------------------------
B="$BIN.cuda"
rm -rf "$B"
mkdir -p "$B/include" "$B/dfdx-out"
BAKED_INC="$ROOT/include"
BAKED_OUT=""
for d in "$TARGET_DIR"/release/build/dfdx-*/out; do
  [ -f "$d/cuda_utils.cuh" ] && grep -qaF "$d" "$BIN" && BAKED_OUT="$d"
done
grep -qaF "$BAKED_INC" "$BIN" || log "WARNING: $BAKED_INC not found in the binary (dfdx cuda code not linked in?)"
[ -n "$BAKED_OUT" ] || log "WARNING: no dfdx OUT_DIR found in the binary"
[ -z "$BAKED_OUT" ] || cp "$BAKED_OUT"/*.cuh "$B/dfdx-out/"
# headers NVRTC opens for dfdx's runtime-compiled kernels (the rest are NVRTC built-ins)
for h in cuda_fp16.h cuda_fp16.hpp cuda_bf16.h cuda_bf16.hpp vector_types.h vector_functions.h vector_functions.hpp; do
  [ -f "$CU/include/$h" ] && cp "$CU/include/$h" "$B/include/"
done
cat >"$B/paths.env" <<EOF
# absolute paths compiled into $BIN_NAME (NVRTC --include-path); gpu-check.sh recreates them
BAKED_CUDA_INCLUDE_DIR='$BAKED_INC'
BAKED_DFDX_OUT_DIR='$BAKED_OUT'
BUILT_WITH='nvcc $NVCC_VER, sm_${CUDA_COMPUTE_CAP}, $(printf '%s ' "${PINS[@]}")'
EOF

REL_BIN="${BIN#"$REPO"/}"
log "built: $BIN ($(du -h "$BIN" | cut -f1))"
log "NEEDED: $(readelf -d "$BIN" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
log "side bundle: $B ($(du -sh "$B" | cut -f1))"
if [ "$REL_BIN" != "$BIN" ]; then
  log "for the device run, carry: $REL_BIN and $REL_BIN.cuda ; then: bash scripts/gpu-check.sh $REL_BIN"
  if command -v git >/dev/null && git -C "$REPO" rev-parse >/dev/null 2>&1 && ! git -C "$REPO" check-ignore -q "$REL_BIN"; then
    log "WARNING: $REL_BIN is not git-ignored: the whole target/ would travel to the GPU machine (64 MiB limit). Add /target to .gitignore."
  fi
fi
echo "$BIN"
