#!/usr/bin/env bash
# The cost of verifying the store: hash throughput of `seqpipe verify`, and what a no-change
# rerun pays to verify a large hit.
#   scripts/bench-verify.sh [MB] [N]
# Builds a corpus of about MB megabytes (The Time Machine repeated) in a temporary project,
# caches it with a one-stage pipeline (load_corpus, preprocess none: the entry is ~MB), then
# times N runs of `seqpipe verify` and of a no-change `seqpipe run` (page cache warm), and
# prints the medians and the cost per GB.
set -euo pipefail
MB="${1:-1024}"; N="${2:-5}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SEQPIPE:-$ROOT/target/release/seqpipe}"
[ -x "$BIN" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml"
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
mkdir -p "$T/data"
src="$ROOT/data/timemachine.txt"
per=$(stat -c %s "$src"); reps=$(( MB * 1048576 / per + 1 ))
for _ in $(seq "$reps"); do cat "$src"; done > "$T/data/big.txt"
printf 'name: big\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/big.txt, preprocess: none }\n' > "$T/big.yaml"
cd "$T"
"$BIN" run -q big.yaml >/dev/null
bytes=$(du -sb outputs/.seqpipe/objects | cut -f1)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
v=(); r=()
for _ in $(seq "$N"); do
  s=$(date +%s%N); "$BIN" verify >/dev/null; e=$(date +%s%N); v+=($(( (e - s) / 1000000 )))
  s=$(date +%s%N); "$BIN" run -q big.yaml >/dev/null; e=$(date +%s%N); r+=($(( (e - s) / 1000000 )))
done
mv=$(printf '%s\n' "${v[@]}" | median); mr=$(printf '%s\n' "${r[@]}" | median)
gb=$(awk -v b="$bytes" 'BEGIN {print b / 1073741824}')
echo "store: $(awk -v b="$bytes" 'BEGIN {printf "%.0f", b/1048576}') MiB in one entry; $N runs each, medians:"
echo "  seqpipe verify:        ${mv} ms  ($(awk -v t="$mv" -v g="$gb" 'BEGIN {printf "%.2f", t/1000/g}') s per GB; runs: ${v[*]})"
echo "  no-change seqpipe run: ${mr} ms  ($(awk -v t="$mr" -v g="$gb" 'BEGIN {printf "%.2f", t/1000/g}') s per GB; runs: ${r[*]})"
echo "  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
