#!/usr/bin/env bash
# The per-stage cost of `--executor process` (each stage a child `seqpipe exec-job`) against
# `local` (threads of the driver), on a cold run of a pipeline of quick stages.
#   scripts/bench-executor.sh [PIPELINE] [N] [extra seqpipe run args...]
set -euo pipefail
PIPE="${1:-pipelines/ex8_2_2.yaml}"; N="${2:-5}"; shift $(( $# > 2 ? 2 : $# ))
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SEQPIPE:-$ROOT/target/release/seqpipe}"
[ -x "$BIN" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml"
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
cp -r "$ROOT/pipelines" "$ROOT/data" "$T/"
cd "$T"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A ms
for ex in local process; do ms[$ex]=""; done
for _ in $(seq "$N"); do
  for ex in local process; do   # interleaved, one at a time
    rm -rf outputs
    s=$(date +%s%N); "$BIN" run -q "$PIPE" --executor "$ex" "$@" >/dev/null; e=$(date +%s%N)
    ms[$ex]+="$(( (e - s) / 1000000 )) "
  done
done
stages=$(ls outputs/"$(basename "$PIPE" .yaml)"/runs/*.json | tail -1 | xargs grep -c '"status": "ran"')
l=$(echo ${ms[local]} | tr ' ' '\n' | median); p=$(echo ${ms[process]} | tr ' ' '\n' | median)
echo "$PIPE, cold, $stages stages computed, median of $N:"
echo "  local:   ${l} ms  (runs: ${ms[local]})"
echo "  process: ${p} ms  (runs: ${ms[process]})"
echo "  process costs $(awk -v a="$l" -v b="$p" -v n="$stages" 'BEGIN {printf "%.1f", (b-a)/n}') ms more per stage"
echo "  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
