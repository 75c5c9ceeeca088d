#!/usr/bin/env bash
# Run ON the GPU machine (H100, driver 580 / CUDA 13.0, no Rust), from the repo root, against a
# cuda binary built elsewhere by scripts/build-cuda.sh. One short run (a few minutes of device
# time), meant to be the only command of a device session.
#
#   bash scripts/gpu-check.sh [BIN] [SMOKE_BIN]
#     BIN        default target/cuda/release/seqpipe   (carry BIN and BIN.cuda/)
#     SMOKE_BIN  optional dfdx smoke binary, run first (carry it and SMOKE_BIN.cuda/ too)
#
# Env: OUT (logs go there; default a temp dir), GPU_CHECK_TIMEOUT (seconds per command, default
#      180), GPU_CHECK_EPOCHS (default 20), GPU_CHECK_CELLS (bench cells, default
#      rnn_scratch,rnn,gru,lstm), GPU_CHECK_HIDDEN (default 256), GPU_CHECK_LAYERS=0 (skip the
#      1/3/20-layer runs of pipelines/ex8_6_2.yaml), GPU_CHECK_PIPELINE (another pipeline to run
#      on cuda with 3 epochs), GPU_CHECK_BENCH_ARGS (extra args for both bench runs),
#      GPU_CHECK_SKIP_CPU=1 (skip the cpu runs, and so the loss comparison),
#      GPU_CHECK_EXACT_EPOCHS (epochs whose losses must agree to 6 digits, default 3),
#      GPU_CHECK_REQUIRE_TARGETS=1 (a missed speed target fails the script),
#      GPU_CHECK_NOGRAPH_CELLS (cells benched again with SEQPIPE_CUDA_GRAPHS=0, the step's
#      kernels launched one by one instead of as a recorded CUDA graph; their printed losses
#      must equal the graph run's; default rnn,lstm; empty skips),
#      GPU_CHECK_LIB_DIRS (extra library dirs to try first).
#
# What it does: prints the GPU/driver, finds the CUDA 13 runtime libraries present there
# (libcuda, libnvrtc(+builtins), libcublas, libcublasLt) and sets LD_LIBRARY_PATH, recreates the
# absolute NVRTC include paths baked into each binary (from BIN.cuda/paths.env), runs the smoke
# binary, `BIN bench --device cuda|cpu --epochs N` (the parity config, one layer) and
# pipelines/ex8_6_2.yaml (nn.RNN 256 with 1, 3 and 20 layers) on cuda and on cpu, each under
# `timeout`. Then it compares the per-epoch losses of cuda and cpu (the first
# GPU_CHECK_EXACT_EPOCHS to 6 significant digits, all within 2%) and prints tokens/s beside the
# seed's GPU figures and the targets of the issue "CUDA: whole recurrent steps on the device".
set -uo pipefail

BIN="${1:-target/cuda/release/seqpipe}"
SMOKE="${2:-}"
T="${GPU_CHECK_TIMEOUT:-180}"
EPOCHS="${GPU_CHECK_EPOCHS:-20}"
read -r -a EXTRA <<<"${GPU_CHECK_BENCH_ARGS:-}"
CELLS="${GPU_CHECK_CELLS:-rnn_scratch,rnn,gru,lstm}"
HIDDEN="${GPU_CHECK_HIDDEN:-256}"
EXACT="${GPU_CHECK_EXACT_EPOCHS:-3}"
NOGRAPH_CELLS="${GPU_CHECK_NOGRAPH_CELLS-rnn,lstm}"
LOGDIR="${OUT:-$(mktemp -d /tmp/gpu-check.XXXXXX)}"
mkdir -p "$LOGDIR"
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
LAYER_RUNS=()
# ex8_6_2 (nn.RNN 256, 1/3/20 layers, the parity config) on one device; keeps its metrics and speed
layers_run() {  # layers_run DEVICE
  local dev="$1" d
  [ -f pipelines/ex8_6_2.yaml ] || { say "!! pipelines/ex8_6_2.yaml missing"; return 0; }
  step "layers-$dev" "$BIN" run pipelines/ex8_6_2.yaml --device "$dev" --set "train.epochs=$EPOCHS"
  for d in outputs/ex8_6_2/train*; do
    [ -f "$d/speed.csv" ] || continue
    local n; n="$(basename "$d" | sed -n 's/.*num_layers=\([0-9]*\).*/\1/p')"
    [ -n "$n" ] || continue
    mkdir -p "$LOGDIR/layers-$dev"
    cp "$d/speed.csv" "$LOGDIR/layers-$dev/speed-$n.csv"
    cp "$d/metrics.csv" "$LOGDIR/layers-$dev/metrics-$n.csv"
  done
  LAYER_RUNS+=("$dev")
}

if prepare_bin "$BIN"; then
  hdr "bench cuda"
  step bench-cuda "$BIN" bench --device cuda --epochs "$EPOCHS" --cell "$CELLS" --hidden "$HIDDEN" "${EXTRA[@]}"
  if [ -n "$NOGRAPH_CELLS" ]; then
    hdr "bench cuda, CUDA graphs off (each step's kernels launched one by one)"
    step bench-cuda-nographs env SEQPIPE_CUDA_GRAPHS=0 "$BIN" bench --device cuda --epochs "$EPOCHS" --cell "$NOGRAPH_CELLS" --hidden "$HIDDEN" "${EXTRA[@]}"
  fi
  if [ "${GPU_CHECK_LAYERS:-1}" != 0 ]; then hdr "layers on cuda"; layers_run cuda; fi
  if [ -n "${GPU_CHECK_PIPELINE:-}" ]; then
    hdr "pipeline on cuda"
    step pipeline-cuda "$BIN" run "$GPU_CHECK_PIPELINE" --device cuda --set '*.epochs=3'
  fi
  if [ "${GPU_CHECK_SKIP_CPU:-0}" != 1 ]; then
    hdr "bench cpu"
    step bench-cpu "$BIN" bench --device cpu --epochs "$EPOCHS" --cell "$CELLS" --hidden "$HIDDEN" "${EXTRA[@]}"
    if [ "${GPU_CHECK_LAYERS:-1}" != 0 ]; then hdr "layers on cpu"; layers_run cpu; fi
  fi
fi

# ---- compare the per-epoch losses of the two devices -------------------------------------------
# pairs of loss lists, one "name: l1 l2 ..." line each, from the bench logs and the ex8_6_2 metrics
losses_of() {  # losses_of DEVICE -> "NAME: l1 l2 ..." lines
  local dev="$1" f n
  [ -f "$LOGDIR/bench-$dev.log" ] && sed -n 's/^losses \([^:]*\): /bench \1: /p' "$LOGDIR/bench-$dev.log"
  for f in "$LOGDIR/layers-$dev"/metrics-*.csv; do
    [ -f "$f" ] || continue
    n="$(basename "$f" .csv)"; n="${n#metrics-}"
    printf 'ex8_6_2 %s layers: %s\n' "$n" "$(awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="loss") c=i; next} c{printf "%s ", $c}' "$f")"
  done
}
if [ -f "$LOGDIR/bench-cuda.log" ] && [ -f "$LOGDIR/bench-cpu.log" ]; then
  hdr "cuda vs cpu losses (first $EXACT epochs to 6 significant digits, all within 2%)"
  losses_of cuda >"$LOGDIR/losses-cuda.txt"
  losses_of cpu >"$LOGDIR/losses-cpu.txt"
  awk -v exact="$EXACT" -F': ' '
    NR==FNR { cu[$1]=$2; next }
    ($1 in cu) {
      n1=split(cu[$1], a, " "); n2=split($2, b, " "); n=(n1<n2)?n1:n2; m=0; bad=0; first=0
      for (i=1;i<=n;i++) {
        d=a[i]-b[i]; if(d<0)d=-d; r=d/((b[i]>0)?b[i]:1); if(r>m)m=r
        if (i<=exact && r>5e-6) bad=1
        if (r<=5e-6 && first==i-1) first=i
      }
      ok=(n>0 && !bad && m<2e-2)
      printf "%-22s epochs %2d  same to 6 digits for the first %2d  max rel.diff %.2e  %s\n", $1, n, first, m, ok?"ok":"MISMATCH"
      if (!ok) fail=1; seen++
    }
    END { if (!seen) { print "no runs to compare"; exit 1 } exit fail }' \
    "$LOGDIR/losses-cuda.txt" "$LOGDIR/losses-cpu.txt" | tee -a "$LOGDIR/gpu-check.log"
  RESULTS+=("compare=${PIPESTATUS[0]}")
fi

# ---- graphs on and off: the same cuBLAS kernels on one stream, so the same printed losses ---------
if [ -n "$NOGRAPH_CELLS" ] && [ -f "$LOGDIR/bench-cuda.log" ] && [ -f "$LOGDIR/bench-cuda-nographs.log" ]; then
  hdr "cuda losses with and without CUDA graphs (must be identical)"
  GDIFF=0
  for c in ${NOGRAPH_CELLS//,/ }; do
    a="$(grep "^losses $c $HIDDEN:" "$LOGDIR/bench-cuda.log")"
    b="$(grep "^losses $c $HIDDEN:" "$LOGDIR/bench-cuda-nographs.log")"
    if [ -z "$a" ] || [ -z "$b" ]; then say "$c $HIDDEN: missing"; GDIFF=1
    elif [ "$a" = "$b" ]; then say "$c $HIDDEN: identical"
    else say "$c $HIDDEN: DIFFERENT"; say "  graphs:     $a"; say "  one by one: $b"; GDIFF=1; fi
  done
  RESULTS+=("graphs-vs-one-by-one=$GDIFF")
fi

# ---- tokens/s: ours beside the seed's and the targets -------------------------------------------
bench_speed() {  # bench_speed DEVICE CELL HIDDEN -> median tokens/s from the bench table
  [ -f "$LOGDIR/bench-$1.log" ] || return 0
  awk -v c="$2" -v h="$3" '$1==c && $2==h && $3 ~ /^[0-9]+$/ {print $3; exit}' "$LOGDIR/bench-$1.log"
}
layer_speed() {  # layer_speed DEVICE N -> median tokens/s over the epochs of speed.csv
  local f="$LOGDIR/layers-$1/speed-$2.csv"
  [ -f "$f" ] || return 0
  awk -F, 'NR==1{for(i=1;i<=NF;i++) if($i=="tokens_per_s") c=i; next} c{print $c}' "$f" |
    sort -g | awk '{v[NR]=$1} END {if (NR) printf "%.0f\n", v[int((NR+1)/2)]}'
}
hdr "tokens/s ($EPOCHS epochs of the parity config; median over epochs)"
say "seed: the seed's own PyTorch + d2l runs on its author's GPU; target: the issue, on an H100"
say "$(printf '%-22s %10s %10s %12s %12s  %s' config seed target cuda cpu 'cuda vs target')"
MISSED=0
row() {  # row NAME SEED TARGET CUDA CPU
  local verdict="-"
  if [ "$3" != "-" ]; then
    if [ -z "$4" ]; then verdict="not measured"
    elif [ "$4" -ge "$3" ]; then verdict="met ($(awk -v a="$4" -v b="$3" 'BEGIN{printf "%.2fx", a/b}'))"
    else verdict="MISSED ($(awk -v a="$4" -v b="$3" 'BEGIN{printf "%.2fx", a/b}'))"; MISSED=$((MISSED+1)); fi
  fi
  say "$(printf '%-22s %10s %10s %12s %12s  %s' "$1" "$2" "$3" "${4:--}" "${5:--}" "$verdict")"
}
row "rnn_scratch 256"      389000  -       "$(bench_speed cuda rnn_scratch 256)" "$(bench_speed cpu rnn_scratch 256)"
row "rnn 256"              564000  1200000 "$(bench_speed cuda rnn 256)"         "$(bench_speed cpu rnn 256)"
row "gru 256"              -       600000  "$(bench_speed cuda gru 256)"         "$(bench_speed cpu gru 256)"
row "lstm 256"             -       600000  "$(bench_speed cuda lstm 256)"        "$(bench_speed cpu lstm 256)"
[ -n "$NOGRAPH_CELLS" ] && for c in ${NOGRAPH_CELLS//,/ }; do
  row "$c $HIDDEN, graphs off" - - "$(bench_speed cuda-nographs "$c" "$HIDDEN")" ""
done
row "rnn 256, 3 layers"    188000  -       "$(layer_speed cuda 3)"               "$(layer_speed cpu 3)"
row "rnn 256, 20 layers"   29700   60000   "$(layer_speed cuda 20)"              "$(layer_speed cpu 20)"
say "(ex8_6_2's 1-layer run, for reference: cuda $(layer_speed cuda 1) cpu $(layer_speed cpu 1))"
say "speed targets missed: $MISSED of 4"
FALLBACK="$(cat "$LOGDIR"/bench-cuda.log "$LOGDIR"/layers-cuda.log 2>/dev/null |
  grep -E "seqpipe: (could not record|launching the recorded|CUDA graphs are off)" | sort | uniq -c)"
if [ -n "$FALLBACK" ]; then
  say "$FALLBACK"
  say "!! CUDA graphs fell back to one-by-one launches (lines above)"
else
  say "CUDA graphs: no fallback reported"
fi
[ "${GPU_CHECK_REQUIRE_TARGETS:-0}" = 1 ] && RESULTS+=("targets=$MISSED")

hdr "summary"
say "logs in $LOGDIR"
say "${RESULTS[*]}"
for r in "${RESULTS[@]}"; do [ "${r##*=}" = 0 ] || exit 1; done
exit 0
