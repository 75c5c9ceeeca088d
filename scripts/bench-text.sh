#!/usr/bin/env bash
# The text stages at corpus scale against the book's Python, on this machine, in one run.
#
#   scripts/bench-text.sh [REPEAT] [REPS] [BIG_REPEAT]
#
# Builds a corpus of The Time Machine repeated REPEAT times (300: 54 MB), then, REPS times per
# unit (char, word) and alternating, runs
#   - `seqpipe -q run` of load_corpus → tokenize → build_vocab, cold (an empty store: reading,
#     tokenizing, counting, writing, hashing and committing every file, as a user starts it);
#   - the book's Python semantics (scripts/bench_text_book.py: read_time_machine, tokenize,
#     Vocab, the corpus as indices) on the same file;
# each under /usr/bin/time (wall seconds, maximum resident set size, user + system CPU
# seconds), and prints the medians,
# the ratio, and the store's bytes per token. Both vocabularies are compared token by token.
# With BIG_REPEAT (e.g. 1120: about 200 MB) it also runs the char pipeline once on that corpus.
#
# Run measurements one at a time on a shared machine: flock /tmp/seqpipe-bench.lock scripts/bench-text.sh
set -euo pipefail
repeat=${1:-300}
reps=${2:-5}
big=${3:-0}
root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build --release --quiet)
bin=$root/target/release/seqpipe
book=$root/scripts/bench_text_book.py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/data"
python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); open(sys.argv[2], 'wb').write(d * int(sys.argv[3]))" \
  "$root/data/timemachine.txt" "$work/data/corpus.txt" "$repeat"
for unit in char word; do
  cat > "$work/$unit.yaml" <<YAML
name: bench_$unit
stages:
  corpus:
    kind: load_corpus
    params: { path: data/corpus.txt }
  tokens:
    kind: tokenize
    inputs: { corpus: corpus }
    params: { unit: $unit }
  vocab:
    kind: build_vocab
    inputs: { tokens: tokens }
YAML
done

# One timed command: appends "wall_s max_rss_kb user_s sys_s" to $work/<name>.times.
timed() {
  local name=$1; shift
  /usr/bin/time -f "%e %M %U %S" -o "$work/t" "$@" > "$work/$name.out"
  cat "$work/t" >> "$work/$name.times"
}

cd "$work"
for ((i = 0; i < reps; i++)); do
  for unit in char word; do
    rm -rf outputs
    timed "seqpipe_$unit" "$bin" -q run "$unit.yaml"
    mkdir -p "last_$unit"
    cp outputs/bench_$unit/vocab/vocab.csv outputs/bench_$unit/tokens/summary.json "last_$unit/"
    cat outputs/bench_$unit/tokens/* | wc -c > "last_$unit/tokens.entry.size"
    timed "python_$unit" python3 "$book" data/corpus.txt "$unit" "$work/python_vocab_$unit.json"
  done
done

python3 - "$work" "$repeat" "$reps" <<'PY'
import csv, json, os, statistics, sys
work, repeat, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
size = os.path.getsize(os.path.join(work, "data/corpus.txt"))
def times(name):
    rows = [l.split() for l in open(os.path.join(work, name + ".times"))]
    return ([float(r[0]) for r in rows], [int(r[1]) / 1024 for r in rows],
            [float(r[2]) + float(r[3]) for r in rows])
print(f"corpus: The Time Machine x {repeat} = {size / 1e6:.1f} MB; median of {reps} runs each")
print()
print("| unit | seqpipe run (3 stages, cold) | peak | the book's Python | peak | ratio | CPU s: seqpipe / Python (ratio) | tokens entry, bytes/token |")
print("|---|---|---|---|---|---|---|---|")
notes = []
for unit in ["char", "word"]:
    st, sm, sc = times("seqpipe_" + unit)
    pt, pm, pc = times("python_" + unit)
    out = os.path.join(work, "last_" + unit)
    # The last seqpipe run's vocabulary must be the book's.
    with open(os.path.join(out, "vocab.csv"), newline="") as f:
        ours = [r["token"] for r in csv.DictReader(f)]
    theirs = json.load(open(os.path.join(work, f"python_vocab_{unit}.json")))
    assert ours == theirs, f"{unit}: the vocabularies differ"
    n = json.load(open(os.path.join(out, "summary.json")))["tokens_total"]
    # Every file of the tokens entry (tokens.bin, tokens.json, preview.txt, summary.json).
    tok = int(open(os.path.join(out, "tokens.entry.size")).read())
    ratio = statistics.median(pt) / statistics.median(st)
    print(f"| {unit} | {statistics.median(st):.2f} s | {statistics.median(sm):.0f} MB "
          f"| {statistics.median(pt):.2f} s | {statistics.median(pm):.0f} MB | {ratio:.1f}x "
          f"| {statistics.median(sc):.2f} / {statistics.median(pc):.2f} "
          f"({statistics.median(pc) / statistics.median(sc):.1f}x) | {tok / n:.2f} |")
    notes.append(f"{unit}: seqpipe runs {' '.join(f'{t:.2f}' for t in st)} s; Python runs {' '.join(f'{t:.2f}' for t in pt)} s; vocabularies identical ({len(ours)} tokens)")
print()
for n in notes:
    print(n)
PY

if [ "$big" -gt 0 ]; then
  python3 -c "import sys; d = open(sys.argv[1], 'rb').read(); open(sys.argv[2], 'wb').write(d * int(sys.argv[3]))" \
    "$root/data/timemachine.txt" "$work/data/corpus.txt" "$big"
  rm -rf outputs
  timed big "$bin" -q run char.yaml
  read -r wall rss _ < "$work/t"
  echo
  echo "char on The Time Machine x $big ($(($(stat -c %s data/corpus.txt) / 1000000)) MB): ${wall} s, peak $((rss / 1024)) MB"
fi
