#!/usr/bin/env bash
# What a Slurm job costs against running in the driver, on a sweep of 8 quick trainings.
#   SLURM_CONF=... scripts/bench-slurm.sh [N]
# Needs a cluster (scripts/slurm-up.sh; advertise 8 CPUs with SLURM_CI_CPUS=8 on a small
# machine). Each configuration runs cold N times (default 3), one after the other, and the
# median wall time is printed:
#   local -j 1, local -j 2, slurm (model stages as jobs, text stages in the driver), and
#   slurm with submit_all (the text stages as jobs too).
set -euo pipefail
N="${1:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SEQPIPE:-$ROOT/target/release/seqpipe}"
[ -x "$BIN" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml"
: "${SLURM_CONF:?no Slurm cluster: run scripts/slurm-up.sh and export SLURM_CONF}"
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
mkdir -p "$T/data"; cp "$ROOT/data/timemachine.txt" "$T/data/"
cd "$T"
cat > sweep.yaml <<'YAML'
name: sweep
seed: 1
stages:
  corpus: { kind: load_corpus, params: { path: data/timemachine.txt } }
  chars: { kind: tokenize, inputs: { corpus: corpus }, params: { unit: char, max_tokens: 3000 } }
  vocab: { kind: build_vocab, inputs: { tokens: chars } }
  batches: { kind: sample_batches, inputs: { corpus: vocab }, params: { strategy: sequential, batch_size: 8, num_steps: 10 } }
  model: { kind: build_model, inputs: { data: batches }, params: { arch: rnn, hidden: 48 } }
  train:
    kind: train
    inputs: { model: model, data: batches }
    params: { epochs: 3, lr: 1 }
    matrix: { lr: [0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.5, 2] }
YAML
sed 's/^name: sweep$/name: sweep\nexecutor: { kind: slurm, submit_all: true }/' sweep.yaml > sweep_all.yaml
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A ms
configs=("local -j 1" "local -j 2" "slurm" "slurm submit_all")
for _ in $(seq "$N"); do
  for c in "${configs[@]}"; do
    rm -rf outputs
    case $c in
      "local -j 1") args=(run -q sweep.yaml -j 1) ;;
      "local -j 2") args=(run -q sweep.yaml -j 2) ;;
      "slurm") args=(run -q sweep.yaml --executor slurm) ;;
      "slurm submit_all") args=(run -q sweep_all.yaml --executor slurm) ;;
    esac
    s=$(date +%s%N); SEQPIPE_SLURM_POLL=0.2 "$BIN" "${args[@]}" >/dev/null; e=$(date +%s%N)
    ms[$c]+="$(( (e - s) / 1000000 )) "
  done
done
echo "sweep of 8 trainings (tiny char RNN, 3 epochs) plus 5 upstream stages, cold, median of $N:"
for c in "${configs[@]}"; do
  printf '  %-18s %6s ms   (runs: %s)\n' "$c" "$(echo ${ms[$c]} | tr ' ' '\n' | median)" "${ms[$c]}"
done
echo "  slurm: $(sinfo -h -o '%c CPUs advertised, node %T'); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
