#!/usr/bin/env bash
# Push and pull of 1,000 small entries through an S3-compatible server on 127.0.0.1.
#   scripts/bench-remote.sh [N] [REPS]
# Starts moto's S3 server (pip install 'moto[server]', as scripts/test.sh does) on a free port,
# makes N (default 1000) random corpora of 500 B to 20 KB and a pipeline of N load_corpus
# stages (N entries, each its text and its summary), runs it locally, then times
# `seqpipe push` (every entry, to a fresh prefix) and `seqpipe pull` into a fresh project with
# an empty store, REPS times (default 3), and prints each time and the median. With
# BENCH_DVC=1 it also times DVC (pip install 'dvc[s3]') pushing and pulling the N files to the
# same server in the same run. seqpipe moves up to 32 entries at once (remote::PARALLEL).
set -euo pipefail
N="${1:-1000}"; REPS="${2:-3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SEQPIPE:-$ROOT/target/release/seqpipe}"
[ -x "$BIN" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml"
python3 -c 'import moto.server, boto3' 2>/dev/null || python3 -m pip install -q 'moto[server]==5.2.5'
T="$(mktemp -d)"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$T/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null; rm -rf "$T"' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
python3 - "$T" "$N" <<'EOF'
import boto3, os, random, sys
t, n = sys.argv[1], int(sys.argv[2])
boto3.client("s3").create_bucket(Bucket="bench")
rng = random.Random(7)
words = "the time traveller for so it will be convenient to speak of him was expounding".split()
for p in ["a", "b"]:
    os.makedirs(f"{t}/{p}/data", exist_ok=True)
with open(f"{t}/a/bench.yaml", "w") as y:
    y.write("name: bench\nstages:\n")
    for i in range(n):
        size = rng.randint(500, 20000)
        text = []
        while sum(map(len, text)) < size:
            text.append(" ".join(rng.choice(words) for _ in range(12)) + "\n")
        body = "".join(text)[:size].rstrip() + "\n"
        for p in ["a", "b"]:
            open(f"{t}/{p}/data/c{i:04}.txt", "w").write(body)
        y.write(f"  c{i:04}:\n    kind: load_corpus\n    params: {{ path: data/c{i:04}.txt, preprocess: none }}\n")
EOF
cp "$T/a/bench.yaml" "$T/b/"
cd "$T/a" && "$BIN" run -q -j 2 bench.yaml >/dev/null
entries=$(find outputs/.seqpipe/objects -name entry.json | wc -l)
files=$(find outputs/.seqpipe/objects -type f ! -name entry.json | wc -l)
bytes=$(find outputs/.seqpipe/objects -type f ! -name entry.json -printf '%s\n' | awk '{s+=$1} END {print s}')
echo "bench-remote: $entries entries, $files files, $((bytes / 1024)) KiB, moto on 127.0.0.1:$PORT"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
push=(); pull=()
for r in $(seq "$REPS"); do
  url="s3://bench/seqpipe-$r"
  cd "$T/a"; push+=($(ms "$BIN" push --remote "$url"))
  cd "$T/b"; rm -rf outputs; pull+=($(ms "$BIN" pull --remote "$url" bench.yaml))
  got=$(find outputs/.seqpipe/objects -name entry.json | wc -l)
  [ "$got" = "$entries" ] || { echo "pull $r got $got of $entries entries" >&2; exit 1; }
  echo "  rep $r: push ${push[-1]} ms, pull ${pull[-1]} ms"
done
echo "seqpipe: push median $(printf '%s\n' "${push[@]}" | median) ms, pull median $(printf '%s\n' "${pull[@]}" | median) ms ($entries entries, 32 transfers at once)"

if [ "${BENCH_DVC:-0}" = 1 ]; then
  command -v dvc >/dev/null || python3 -m pip install -q 'dvc[s3]==3.67.1'
  D="$T/dvc"; mkdir -p "$D"; cd "$D"; git init -q; dvc init -q
  cp -r "$T/a/data" data
  dvc add -q data
  dvc remote add -d bench s3://bench/dvc -q
  dvc remote modify bench endpointurl "$AWS_ENDPOINT_URL"
  dp=$(ms dvc push -q)
  rm -rf .dvc/cache data
  dl=$(ms dvc pull -q)
  echo "dvc $(dvc --version): push $dp ms, pull $dl ms ($(ls data | wc -l) files)"
fi
