#!/usr/bin/env bash
# Time a no-change rerun (every stage a cache hit) of a pipeline: the median of N runs.
#   scripts/bench-rerun.sh [PIPELINE] [N] [extra seqpipe run args...]
# Run it from the project root after one full run of the same pipeline (with the same args).
set -euo pipefail
PIPE="${1:-pipelines/ex8_5_2.yaml}"; N="${2:-21}"; shift $(( $# > 2 ? 2 : $# ))
BIN="${SEQPIPE:-target/release/seqpipe}"
"$BIN" run -q "$PIPE" "$@" >/dev/null   # warm: make sure everything is cached
times=()
for _ in $(seq "$N"); do
  s=$(date +%s%N); "$BIN" run -q "$PIPE" "$@" >/dev/null; e=$(date +%s%N)
  times+=($(( (e - s) / 1000 )))
done
sorted=($(printf '%s\n' "${times[@]}" | sort -n))
echo "no-change rerun of $PIPE: median $(( sorted[N/2] / 1000 )).$(( (sorted[N/2] % 1000) / 100 )) ms over $N runs (min $(( sorted[0] / 1000 )) ms, max $(( sorted[N-1] / 1000 )) ms)"
