#!/usr/bin/env bash
# How `--dry-run` (parse, sweep expansion, analysis, keys, plan) scales with the pipeline:
#   scripts/bench-plan.sh [N]
# Three shapes at 1,000, 10,000 and 100,000 stages: `flat` (N independent stages written out,
# named t0, t1, ...), `prefix` (the same with names sharing a long prefix,
# stage_with_a_long_shared_prefix_0000001, ..., where a lookup that compares names one by one
# shows as quadratic time) and `sweep` (a matrix of N/2 values on one stage plus a stage
# downstream of it, so N/2 variants each). Median of N runs (default 3) of
# `seqpipe run FILE --dry-run`. SHAPES="flat prefix" picks some; SIZES="1000 10000" others.
set -euo pipefail
N="${1:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SEQPIPE:-$ROOT/target/release/seqpipe}"
[ -x "$BIN" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml"
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
mkdir -p "$T/data"; cp "$ROOT/data/timemachine.txt" "$T/data/"
cd "$T"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for n in ${SIZES:-1000 10000 100000}; do
  awk -v n="$n" 'BEGIN {
    print "name: flat\nstages:" > "flat.yaml"
    for (i = 0; i < n; i++) printf "  t%d:\n    kind: toy_sequence\n    params: { length: %d }\n", i, i + 10 > "flat.yaml"
    print "name: prefix\nstages:" > "prefix.yaml"
    for (i = 1; i <= n; i++) printf "  stage_with_a_long_shared_prefix_%07d:\n    kind: toy_sequence\n    params: { length: %d }\n", i, i + 10 > "prefix.yaml"
    print "name: sweep\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/timemachine.txt }\n  toks:\n    kind: tokenize\n    inputs: { corpus: corpus }\n    params: { unit: char }" > "sweep.yaml"
    printf "    matrix: { max_tokens: [" > "sweep.yaml"
    for (i = 1; i <= n / 2; i++) printf "%s%d", (i > 1 ? ", " : ""), i > "sweep.yaml"
    print "] }\n  vocab:\n    kind: build_vocab\n    inputs: { tokens: toks }" > "sweep.yaml"
  }'
  for shape in ${SHAPES:-flat prefix sweep}; do
    t=()
    for _ in $(seq "$N"); do
      s=$(date +%s%N); "$BIN" run "$shape.yaml" --dry-run >/dev/null; e=$(date +%s%N)
      t+=($(( (e - s) / 1000000 )))
    done
    stages=$("$BIN" run "$shape.yaml" --dry-run | sed -n '1s/.*: \([0-9]*\) stages.*/\1/p')
    printf '%-6s %7s stages  --dry-run %6s ms  (runs: %s)\n' "$shape" "$stages" "$(printf '%s\n' "${t[@]}" | median)" "${t[*]}"
  done
done
