#!/usr/bin/env bash
# Run ON the GPU machine (H100, driver 580 / CUDA 13.0, no Rust), from the repo root, against a
# cuda binary built elsewhere by scripts/build-cuda.sh.
#
#   bash scripts/gpu-check.sh [BIN] [SMOKE_BIN]
#     BIN        default target/cuda/release/seqpipe   (carry BIN and BIN.cuda/)
#     SMOKE_BIN  optional dfdx smoke binary, run first (carry it and SMOKE_BIN.cuda/ too)
#
# Env: OUT (logs go there when set), GPU_CHECK_TIMEOUT (seconds per command, default 180),
#      GPU_CHECK_EPOCHS (default 20), GPU_CHECK_PIPELINE (a pipeline to run on cuda with 3 epochs), GPU_CHECK_BENCH_ARGS (extra args for both bench runs),
#      GPU_CHECK_SKIP_CPU=1 (skip the cpu bench), GPU_CHECK_LIB_DIRS (extra library dirs to try first).
#
# What it does: prints the GPU/driver, finds the CUDA 13 runtime libraries present there
# (libcuda, libnvrtc(+builtins), libcublas, libcublasLt) and sets LD_LIBRARY_PATH, recreates the
# absolute NVRTC include paths baked into each binary (from BIN.cuda/paths.env), then runs the
# smoke binary and `BIN bench --device cuda|cpu --epochs N`, each under `timeout`.
set -uo pipefail

BIN="${1:-target/cuda/release/seqpipe}"
SMOKE="${2:-}"
T="${GPU_CHECK_TIMEOUT:-180}"
EPOCHS="${GPU_CHECK_EPOCHS:-20}"
read -r -a EXTRA <<<"${GPU_CHECK_BENCH_ARGS:-}"
LOGDIR="${OUT:-}"
[ -n "$LOGDIR" ] && mkdir -p "$LOGDIR"
export RUST_BACKTRACE=1

say() { printf '%s\n' "$*"; [ -n "$LOGDIR" ] && printf '%s\n' "$*" >>"$LOGDIR/gpu-check.log"; return 0; }
hdr() { say ""; say "=== $* ==="; }
# step NAME CMD... : echo the command, run it under timeout, log output to $OUT/NAME.log
RESULTS=()
step() {
  local name="$1"; shift
  say "+ timeout $T $*"
  local rc
  if [ -n "$LOGDIR" ]; then
    timeout -k 10 "$T" "$@" 2>&1 | tee "$LOGDIR/$name.log" | tee -a "$LOGDIR/gpu-check.log"
    rc=${PIPESTATUS[0]}
  else
    timeout -k 10 "$T" "$@" 2>&1
    rc=$?
  fi
  [ "$rc" = 124 ] && say "!! $name: TIMED OUT after ${T}s"
  say "-> $name: rc=$rc"
  RESULTS+=("$name=$rc")
  return 0
}

hdr "machine"
say "date: $(date -u +%FT%TZ)  host: $(hostname)  user: $(id -un)  pwd: $PWD"
step nvidia-smi nvidia-smi
say "$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv 2>&1)"
DRIVER_CUDA="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -1)"
say "driver CUDA version: ${DRIVER_CUDA:-unknown}"
command -v nvcc >/dev/null && say "nvcc: $(command -v nvcc): $(nvcc --version | tail -2 | head -1)"

# ---- find the CUDA 13 libraries ------------------------------------------------------------------
hdr "CUDA libraries"
PY="$(command -v python3 || true)"
SITE_DIRS=()
if [ -n "$PY" ]; then
  while IFS= read -r d; do [ -n "$d" ] && SITE_DIRS+=("$d"); done < <("$PY" -c '
import site, sys
for p in site.getsitepackages() + [site.getusersitepackages()] + sys.path:
    print(p)' 2>/dev/null | sort -u)
fi
for d in /opt/*/.venv/lib/python3*/site-packages /usr/local/lib/python3*/dist-packages /usr/lib/python3/dist-packages; do
  [ -d "$d" ] && SITE_DIRS+=("$d")
done
read -r -a CAND_DIRS <<<"${GPU_CHECK_LIB_DIRS:-}"   # extra dirs, searched first
CAND_DIRS+=(/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /lib/x86_64-linux-gnu
           /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib)
for d in /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/targets/x86_64-linux/lib; do [ -d "$d" ] && CAND_DIRS+=("$d"); done
for s in "${SITE_DIRS[@]}"; do
  for d in "$s"/nvidia/cu13/lib "$s"/nvidia/*/lib; do [ -d "$d" ] && CAND_DIRS+=("$d"); done
done

# all dirs holding $1 (ldconfig first, then the candidate dirs, then a bounded filesystem search)
find_all() {
  local name="$1" d
  {
    ldconfig -p 2>/dev/null | awk -v n="$name" '$1==n {print $NF}' | xargs -r -n1 dirname
    for d in "${CAND_DIRS[@]}"; do [ -e "$d/$name" ] && echo "$d"; done
  } | awk '!seen[$0]++'
}
find_slow() {
  timeout 60 find / -xdev \( -path /proc -o -path /sys \) -prune -o -name "$1" -print 2>/dev/null | xargs -r -n1 dirname | awk '!seen[$0]++'
}
nvrtc_version() {  # "13.0" for a given libnvrtc.so.13 (needs its builtins beside it)
  [ -n "$PY" ] || { echo "?"; return; }
  LD_LIBRARY_PATH="$(dirname "$1")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$PY" -c '
import ctypes, sys
l = ctypes.CDLL(sys.argv[1]); a, b = ctypes.c_int(), ctypes.c_int()
l.nvrtcVersion(ctypes.byref(a), ctypes.byref(b)); print(f"{a.value}.{b.value}")' "$1" 2>/dev/null || echo "?"
}

LIBDIRS=()
# libcuda.so.1: the driver's (never a stub)
CUDA_DIR="$(find_all libcuda.so.1 | grep -v stubs | head -1)"
[ -n "$CUDA_DIR" ] || CUDA_DIR="$(find_slow libcuda.so.1 | grep -v stubs | head -1)"
say "libcuda.so.1   -> ${CUDA_DIR:-NOT FOUND}"
[ -n "$CUDA_DIR" ] && LIBDIRS+=("$CUDA_DIR")

# libnvrtc.so.13: prefer the one whose version equals the driver's CUDA version (its PTX must load)
NVRTC_DIR=""; NVRTC_VER=""
mapfile -t NV < <(find_all libnvrtc.so.13)
[ "${#NV[@]}" -gt 0 ] || mapfile -t NV < <(find_slow libnvrtc.so.13)
for d in "${NV[@]}"; do
  v="$(nvrtc_version "$d/libnvrtc.so.13")"
  b="$(ls "$d"/libnvrtc-builtins.so.13* 2>/dev/null | head -1)"
  say "  candidate libnvrtc.so.13 in $d: version $v, builtins: ${b:-MISSING}"
  [ -n "$b" ] || continue
  if [ -z "$NVRTC_DIR" ] || { [ "$v" = "$DRIVER_CUDA" ] && [ "$NVRTC_VER" != "$DRIVER_CUDA" ]; }; then
    NVRTC_DIR="$d"; NVRTC_VER="$v"
  fi
done
say "libnvrtc.so.13 -> ${NVRTC_DIR:-NOT FOUND} (version ${NVRTC_VER:-?})"
if [ -n "$NVRTC_DIR" ]; then
  LIBDIRS+=("$NVRTC_DIR")
  [ -n "$DRIVER_CUDA" ] && [ "${NVRTC_VER:-?}" != "$DRIVER_CUDA" ] &&
    say "!! WARNING: NVRTC $NVRTC_VER != driver CUDA $DRIVER_CUDA: PTX from a newer NVRTC may fail to load (CUDA_ERROR_UNSUPPORTED_PTX_VERSION)"
fi

# libcublas.so.13 + libcublasLt.so.13 (same dir)
CUBLAS_DIR=""
for d in $(find_all libcublas.so.13); do
  [ -e "$d/libcublasLt.so.13" ] && { CUBLAS_DIR="$d"; break; }
done
[ -n "$CUBLAS_DIR" ] || CUBLAS_DIR="$(for d in $(find_slow libcublas.so.13); do [ -e "$d/libcublasLt.so.13" ] && echo "$d"; done | head -1)"
say "libcublas.so.13 + libcublasLt.so.13 -> ${CUBLAS_DIR:-NOT FOUND}"
[ -n "$CUBLAS_DIR" ] && LIBDIRS+=("$CUBLAS_DIR") &&
  say "  cublas files: $(cd "$CUBLAS_DIR" && ls libcublas*.so* | tr '\n' ' ')"

LDP="$(printf '%s\n' "${LIBDIRS[@]}" | awk 'NF && !seen[$0]++' | paste -sd:)"
export LD_LIBRARY_PATH="$LDP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# ---- recreate the absolute paths baked into a binary ------------------------------------------------
# dfdx bakes CUDA_INCLUDE_DIR (needs cuda_fp16.h) and its OUT_DIR (needs cuda_utils.cuh) as NVRTC
# --include-path for kernels compiled at run time (reshape of non-contiguous tensors, stack,
# concat, to_dtype...). Point them at this machine's headers or the carried BIN.cuda/ bundle.
link_dir() {  # link_dir BAKED TARGET
  local baked="$1" target="$2"
  if [ -L "$baked" ] || { [ -d "$baked" ] && [ -z "$(ls -A "$baked" 2>/dev/null)" ]; }; then rm -rf "$baked"; fi
  if [ -e "$baked" ]; then say "  $baked exists but lacks the files; copying into it"; cp -n "$target"/* "$baked"/ 2>/dev/null
  else mkdir -p "$(dirname "$baked")" && ln -s "$target" "$baked"; fi
}
prepare_bin() {
  local bin="$1" env="$1.cuda/paths.env" BAKED_CUDA_INCLUDE_DIR="" BAKED_DFDX_OUT_DIR="" BUILT_WITH=""
  hdr "prepare $bin"
  [ -e "$bin" ] || { say "!! $bin not found (carry it)"; return 1; }
  [ -x "$bin" ] || chmod +x "$bin"
  say "$(ls -l "$bin")"
  if [ -f "$env" ]; then
    # shellcheck disable=SC1090
    . "$env"
    say "built with: $BUILT_WITH"
  else
    say "!! $env missing (carry $bin.cuda/); guessing baked paths from the binary"
    BAKED_DFDX_OUT_DIR="$(grep -aoE '/[A-Za-z0-9_.+-][A-Za-z0-9_./+-]*/build/dfdx-[0-9a-f]{16}/out' "$bin" | head -1 | sed 's#^.*/include\(/.*/build/dfdx-\)#\1#')"
    BAKED_CUDA_INCLUDE_DIR="$(grep -aoE '/[A-Za-z0-9_./+-]*/include/' "$bin" | grep -v '/build/dfdx-' | head -1 | sed 's#/$##')"
  fi
  local inc="" c
  for c in ${NVRTC_DIR:+"$NVRTC_DIR/../include"} /usr/local/cuda/include "$bin.cuda/include"; do
    [ -f "$c/cuda_fp16.h" ] && { inc="$(cd "$c" && pwd)"; break; }
  done
  if [ -n "$BAKED_CUDA_INCLUDE_DIR" ]; then
    if [ -f "$BAKED_CUDA_INCLUDE_DIR/cuda_fp16.h" ]; then
      say "baked include dir $BAKED_CUDA_INCLUDE_DIR exists"
    elif [ -n "$inc" ]; then
      link_dir "$BAKED_CUDA_INCLUDE_DIR" "$inc"; say "baked include dir $BAKED_CUDA_INCLUDE_DIR -> $inc"
    else say "!! no cuda_fp16.h found for $BAKED_CUDA_INCLUDE_DIR"; fi
  fi
  if [ -n "$BAKED_DFDX_OUT_DIR" ]; then
    if [ -f "$BAKED_DFDX_OUT_DIR/cuda_utils.cuh" ]; then
      say "baked dfdx OUT_DIR $BAKED_DFDX_OUT_DIR exists"
    elif [ -f "$bin.cuda/dfdx-out/cuda_utils.cuh" ]; then
      link_dir "$BAKED_DFDX_OUT_DIR" "$(cd "$bin.cuda/dfdx-out" && pwd)"; say "baked dfdx OUT_DIR $BAKED_DFDX_OUT_DIR -> $bin.cuda/dfdx-out"
    else say "!! $bin.cuda/dfdx-out/cuda_utils.cuh missing: reshape/concat_along kernels will fail to compile"; fi
  fi
  say "ldd $bin:"; say "$(ldd "$bin" 2>&1)"
  ldd "$bin" 2>&1 | grep -q 'not found' && say "!! unresolved libraries above"
  return 0
}

if [ -n "$SMOKE" ]; then
  prepare_bin "$SMOKE" && { hdr "smoke"; step smoke "$SMOKE"; }
fi
if prepare_bin "$BIN"; then
  hdr "bench cuda"
  step bench-cuda "$BIN" bench --device cuda --epochs "$EPOCHS" "${EXTRA[@]}"
  if [ -n "${GPU_CHECK_PIPELINE:-}" ]; then
    hdr "pipeline on cuda"
    step pipeline-cuda "$BIN" run "$GPU_CHECK_PIPELINE" --device cuda --set '*.epochs=3'
  fi
  if [ "${GPU_CHECK_SKIP_CPU:-0}" != 1 ]; then
    hdr "bench cpu"
    step bench-cpu "$BIN" bench --device cpu --epochs "$EPOCHS" "${EXTRA[@]}"
  fi
fi

# ---- compare the per-epoch losses of the two devices -------------------------------------------
if [ -n "$LOGDIR" ] && [ -f "$LOGDIR/bench-cuda.log" ] && [ -f "$LOGDIR/bench-cpu.log" ]; then
  hdr "cuda vs cpu losses"
  paste <(grep '^losses' "$LOGDIR/bench-cuda.log" | cut -d: -f2 | tr ' ' '\n' | grep .) \
        <(grep '^losses' "$LOGDIR/bench-cpu.log" | cut -d: -f2 | tr ' ' '\n' | grep .) |
    awk '{d=$1-$2; if(d<0)d=-d; r=d/($2>0?$2:1); if(r>m)m=r; n++; printf "epoch %d  cuda %s  cpu %s  rel.diff %.2e\n", n, $1, $2, r}
         END {printf "max relative difference over %d epochs: %.3e\n", n, m; exit (n>0 && m<2e-2)?0:1}' | tee -a "$LOGDIR/gpu-check.log"
  RESULTS+=("compare=${PIPESTATUS[1]}")
fi

hdr "summary"
say "${RESULTS[*]}"
for r in "${RESULTS[@]}"; do [ "${r##*=}" = 0 ] || exit 1; done
exit 0
