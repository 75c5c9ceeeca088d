#!/usr/bin/env bash
# Side-by-side training throughput: `seqpipe bench` against an eager PyTorch training loop of the
# same config, on this machine, in this run. Not part of CI.
#
#   scripts/bench-vs-torch.sh            # all cases (about 10-15 minutes on 2 cores)
#   CASES="rnn:256:1 lstm:512:2" scripts/bench-vs-torch.sh
#
# Config (the book's parity config): first 10,000 characters of The Time Machine, batch 32,
# 35 steps, sequential batches with the state detached between batches, SGD lr 1, gradient
# clipping 1, one-hot inputs. Cases: nn.RNN/GRU/LSTM + Linear × hidden 256/512 × 1/2 threads,
# the from-scratch RNN of 8.5 (hidden 256) against the same model written from scratch in
# PyTorch, and a word-level case (all of The Time Machine in word tokens, embedding 128,
# GRU 256), where the output layer dominates.
#
# Each figure is the median of RUNS runs (default 3), each run's figure being the median
# tokens/s over its epochs with the first (warm-up) epoch left out; the two sides alternate.
# Measurements take the lock /tmp/seqpipe-bench.lock (flock), so concurrent measurements wait.
#
# PyTorch: a virtual environment in $VENV (default /tmp/seqpipe-torch/venv), made on first use
# with `pip install torch==$TORCH_VERSION` from PyPI. PyPI's Linux x86_64 torch wheel is the
# CUDA build; it runs on the CPU with the CUDA libraries installed but unused (about 5 GB).
#
# Products against MKL (PRODUCTS=0 skips it): for each cell and hidden size of the 1-thread
# cases, `seqpipe --threads 1 bench --breakdown` runs with an empty kernel cache, so every
# product shape is tuned in this run and its chosen kernel timed alone on that shape (the
# "GFLOP/s when chosen" of the kernel-choice lines: the best of 3 interleaved rounds of about 1 ms). The
# same shapes are then timed with `torch.mm` on one thread (MKL; Aᵀ shapes as `a.t()` of a
# [k×m] tensor, the layout seqpipe reads; best of at least 3 runs over 20 ms), and both are
# printed beside the breakdown's products line, with the FLOP-weighted total of the shapes.
#
# GFLOP/s: model FLOPs per token × tokens/s, where the FLOPs per token of a training step are
# 6 × (G·H·H [recurrent] + G·H·E [input, only for an embedding input: a one-hot input is a row
# lookup in seqpipe] + H·V [output layer]), G = 1/3/4 for rnn/gru/lstm; the same count serves
# both sides. The core's peak is measured, not assumed: 12 independent FMA chains of the widest
# vector the CPU has (AVX-512 or AVX2), compiled with cc; PEAK_GFLOPS overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
EPOCHS=${EPOCHS:-8}
WORD_EPOCHS=${WORD_EPOCHS:-4}
VENV=${VENV:-/tmp/seqpipe-torch/venv}
TORCH_VERSION=${TORCH_VERSION:-2.15.0}
LOCK=${LOCK:-/tmp/seqpipe-bench.lock}
PRODUCTS=${PRODUCTS:-1}
CASES=${CASES:-"rnn:256:1 gru:256:1 lstm:256:1 rnn:512:1 gru:512:1 lstm:512:1 rnn:256:2 gru:256:2 lstm:256:2 rnn:512:2 gru:512:2 lstm:512:2 rnn_scratch:256:1 rnn_scratch:256:2 word_gru:256:1 word_gru:256:2"}

if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    echo "creating $VENV with torch $TORCH_VERSION from PyPI ..." >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "torch==$TORCH_VERSION" numpy
fi
if [[ -z ${BIN:-} ]]; then  # BIN=path/to/seqpipe: measure that binary instead of building
    cargo build --release --locked -q
    BIN=target/release/seqpipe
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/torch_bench.py" <<'PY'
# PyTorch side: the book's concise training loop (nn.RNN/GRU/LSTM + Linear), or its RNN written
# from scratch; prints the tokens/s of every epoch.
import argparse, random, re, time
import torch
from torch import nn
from torch.nn import functional as F

ap = argparse.ArgumentParser()
ap.add_argument("--cell", required=True)
ap.add_argument("--hidden", type=int, required=True)
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--epochs", type=int, required=True)
ap.add_argument("--unit", default="char")
ap.add_argument("--embedding", type=int, default=0)
ap.add_argument("--corpus", default="data/timemachine.txt")
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
random.seed(0)

lines = [re.sub("[^A-Za-z]+", " ", l).strip().lower() for l in open(a.corpus, encoding="utf-8")]
if a.unit == "char":
    tokens = [ch for l in lines for ch in l][:10_000]
else:
    tokens = [w for l in lines for w in l.split()]
idx = {t: i + 1 for i, t in enumerate(sorted(set(tokens)))}  # 0 is <unk>
corpus = [idx[t] for t in tokens]
V, H, B, T = len(idx) + 1, a.hidden, 32, 35


def epoch_batches():
    off = random.randint(0, T - 1)
    n = (len(corpus) - off - 1) // B * B
    xs = torch.tensor(corpus[off : off + n]).reshape(B, -1)
    ys = torch.tensor(corpus[off + 1 : off + 1 + n]).reshape(B, -1)
    for i in range(0, xs.shape[1] // T * T, T):
        yield xs[:, i : i + T], ys[:, i : i + T]


class Concise(nn.Module):
    def __init__(self):
        super().__init__()
        inp = a.embedding or V
        self.emb = nn.Embedding(V, a.embedding) if a.embedding else None
        self.rnn = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[a.cell](inp, H)
        self.linear = nn.Linear(H, V)

    def begin_state(self):
        z = torch.zeros(1, B, H)
        return (z, z.clone()) if a.cell == "lstm" else z

    def forward(self, x, state):
        x = self.emb(x.T) if self.emb is not None else F.one_hot(x.T, V).float()
        y, state = self.rnn(x, state)
        return self.linear(y.reshape(-1, H)), state


class Scratch(nn.Module):
    def __init__(self):
        super().__init__()
        r = lambda *s: nn.Parameter(torch.randn(*s) * 0.01)
        self.w_xh, self.w_hh, self.w_hq = r(V, H), r(H, H), r(H, V)
        self.b_h, self.b_q = nn.Parameter(torch.zeros(H)), nn.Parameter(torch.zeros(V))

    def begin_state(self):
        return torch.zeros(B, H)

    def forward(self, x, h):
        outs = []
        for xt in F.one_hot(x.T, V).float():
            h = torch.tanh(xt @ self.w_xh + h @ self.w_hh + self.b_h)
            outs.append(h @ self.w_hq + self.b_q)
        return torch.cat(outs, 0), h


net = Scratch() if a.cell == "rnn_scratch" else Concise()
opt = torch.optim.SGD(net.parameters(), lr=1.0)
speeds = []
for ep in range(a.epochs):
    t0, n, state = time.perf_counter(), 0, None
    for x, y in epoch_batches():
        if state is None:
            state = net.begin_state()
        elif isinstance(state, tuple):
            state = tuple(s.detach() for s in state)
        else:
            state = state.detach()
        logits, state = net(x, state)
        loss = F.cross_entropy(logits, y.T.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        n += y.numel()
    speeds.append(n / (time.perf_counter() - t0))
print("speeds torch:", " ".join(f"{s:.0f}" for s in speeds))
print("V", V, "final_loss", f"{loss.item():.4f}")
PY

cat > "$WORK/mm_bench.py" <<'PY'
# Times torch.mm (MKL, one thread) on the product shapes seqpipe's kernel-choice lines name,
# read from stdin: `  step 32x1052x256: <choice>, 112.3 GFLOP/s, tuned now` (or `big`,
# `big Aᵀ`). Prints one line per shape and the FLOP-weighted totals of both sides.
import re, sys, time
import torch
torch.set_num_threads(1)
torch.manual_seed(0)
rows, s_time, t_time = [], 0.0, 0.0
for line in sys.stdin:
    m = re.match(r"\s+(step|big Aᵀ|big) (\d+)x(\d+)x(\d+): .*?, ([0-9.]+) GFLOP/s", line)
    if not m:
        continue
    kind, M, N, K, sg = m.group(1), *map(int, m.groups()[1:4]), float(m.group(5))
    a = torch.rand(K, M).t() if kind == "big Aᵀ" else torch.rand(M, K)
    b = torch.rand(K, N)
    out = torch.empty(M, N)
    torch.mm(a, b, out=out)
    best, runs, t0 = float("inf"), 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - t0 < 0.02:
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t)
        runs += 1
    flops = 2.0 * M * N * K
    tg = flops / best / 1e9
    s_time += flops / (sg * 1e9)
    t_time += best
    rows.append((kind, M, N, K, sg, tg))
for kind, M, N, K, sg, tg in rows:
    print(f"    {kind:7s} {M:5d}x{N:5d}x{K:5d}: seqpipe {sg:6.1f}, MKL {tg:6.1f} GFLOP/s ({sg / tg:4.2f}x)")
total = sum(2.0 * r[1] * r[2] * r[3] for r in rows)
if rows:
    print(f"  all {len(rows)} shapes, FLOP-weighted: seqpipe {total / s_time / 1e9:.1f}, MKL (torch.mm, 1 thread) {total / t_time / 1e9:.1f} GFLOP/s ({t_time / s_time:.2f}x)")
PY

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# the median of a run's epoch speeds, the first epoch left out
run_median() { sed 's/^[^:]*: *//' | cut -d' ' -f2- | median; }

flags=$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)
model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
family=$(grep -m1 '^cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')
simd=$(for f in avx512f avx512vl avx512_bf16 avx512_vp2intersect avx2 fma; do [[ " $flags " == *" $f "* ]] && printf '%s ' "$f"; done)
cat > "$WORK/peak.c" <<'C'
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
#ifdef __AVX512F__
typedef __m512 V; enum { L = 16 };
#define FMA _mm512_fmadd_ps
#define SET _mm512_set1_ps
#else
typedef __m256 V; enum { L = 8 };
#define FMA _mm256_fmadd_ps
#define SET _mm256_set1_ps
#endif
#define F(x) x = FMA(x, m, c)
int main(void) {
    V a0 = SET(1), a1 = SET(1.1f), a2 = SET(1.2f), a3 = SET(1.3f), a4 = SET(1.4f), a5 = SET(1.5f);
    V a6 = SET(1.6f), a7 = SET(1.7f), a8 = SET(1.8f), a9 = SET(1.9f), a10 = SET(2), a11 = SET(2.1f);
    V m = SET(0.999999f), c = SET(1e-6f);
    double best = 0;
    long n = 20000000;
    for (int rep = 0; rep < 7; rep++) {
        double t0 = now();
        for (long k = 0; k < n; k++) {
            F(a0); F(a1); F(a2); F(a3); F(a4); F(a5); F(a6); F(a7); F(a8); F(a9); F(a10); F(a11);
            __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5),
                             "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
        }
        double g = n * 12.0 * L * 2 / (now() - t0) / 1e9;
        if (g > best) best = g;
    }
    V s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
    float *f = (float *)&s;
    printf("%.1f %d %g\n", best, L, f[0] > 0 ? 1.0 : 0.0);
    return 0;
}
C
if [[ -n ${PEAK_GFLOPS:-} ]]; then
    PEAK=$PEAK_GFLOPS; peak_how="given (PEAK_GFLOPS)"
else
    march=-mavx2; [[ " $flags " == *" avx512f "* ]] && march=-mavx512f
    cc -O2 "$march" -mfma -o "$WORK/peak" "$WORK/peak.c"
    read -r PEAK lanes _ <<< "$(flock "$LOCK" "$WORK/peak")"
    peak_how="measured: 12 independent ${lanes}-lane FMA chains on one core"
fi
echo "machine: $model (cpu family $family), $(nproc) CPUs; SIMD: ${simd}"
echo "core peak (FP32): ${PEAK} GFLOP/s, ${peak_how}"
echo "torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'); seqpipe $("$BIN" bench --cell rnn --hidden 8 --epochs 1 | grep -o 'matmul [^,]*' || true)"
echo "flags:$flags"
echo "runs $RUNS, epochs $EPOCHS (word level $WORD_EPOCHS), first epoch left out, medians"
echo
printf '| %-11s | %6s | %7s | %10s | %10s | %5s | %13s | %13s |\n' case hidden threads seqpipe PyTorch ratio "seqpipe GF/s" "PyTorch GF/s"
printf '|%s|\n' "-------------|--------|---------|------------|------------|-------|---------------|---------------"
for c in $CASES; do
    IFS=: read -r cell hidden threads <<< "$c"
    sargs=(--cell "$cell" --hidden "$hidden" --epochs "$EPOCHS")
    targs=(--cell "$cell" --hidden "$hidden" --threads "$threads" --epochs "$EPOCHS")
    G=1; V=28; E=0
    case $cell in gru|word_gru) G=3 ;; lstm) G=4 ;; esac
    if [[ $cell == word_gru ]]; then
        sargs=(--cell gru --hidden "$hidden" --epochs "$WORD_EPOCHS" --unit word --embedding 128)
        targs=(--cell gru --hidden "$hidden" --threads "$threads" --epochs "$WORD_EPOCHS" --unit word --embedding 128)
        E=128
    fi
    s_runs=(); t_runs=()
    for r in $(seq "$RUNS"); do
        s=$(flock "$LOCK" "$BIN" --threads "$threads" bench "${sargs[@]}" | grep '^speeds' | run_median)
        t_out=$(flock "$LOCK" env OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" "$VENV/bin/python" "$WORK/torch_bench.py" "${targs[@]}")
        t=$(grep '^speeds' <<< "$t_out" | run_median)
        [[ $cell == word_gru ]] && V=$(grep -o 'V [0-9]*' <<< "$t_out" | cut -d' ' -f2)
        s_runs+=("$s"); t_runs+=("$t")
    done
    s=$(echo "${s_runs[*]}" | median); t=$(echo "${t_runs[*]}" | median)
    awk -v c="$cell" -v h="$hidden" -v th="$threads" -v s="$s" -v t="$t" -v G="$G" -v V="$V" -v E="$E" -v P="$PEAK" -v sr="${s_runs[*]}" -v tr="${t_runs[*]}" 'BEGIN {
        f = 6 * (G * h * h + G * h * E + h * V)
        printf "| %-11s | %6d | %7d | %10.0f | %10.0f | %5.2f | %5.1f (%3.0f%%) | %5.1f (%3.0f%%) |\n", c, h, th, s, t, s / t, s * f / 1e9, 100 * s * f / 1e9 / P, t * f / 1e9, 100 * t * f / 1e9 / P
        printf "runs: seqpipe %s; PyTorch %s\n", sr, tr > "/dev/stderr"
    }'
done

if [[ $PRODUCTS == 1 ]]; then
    echo
    echo "products on 1 thread, per shape: seqpipe's tuned kernel against MKL (torch.mm), same shapes, this run"
    seen=" "
    for c in $CASES; do
        IFS=: read -r cell hidden threads <<< "$c"
        [[ $threads == 1 && $cell != word_gru && $cell != rnn_scratch ]] || continue
        [[ $seen == *" $cell:$hidden "* ]] && continue
        seen+="$cell:$hidden "
        kc=$(mktemp -d "$WORK/kc.XXXX")
        out=$(flock "$LOCK" env SEQPIPE_KERNEL_CACHE="$kc" "$BIN" --threads 1 bench --breakdown --cell "$cell" --hidden "$hidden" --epochs 3)
        echo "$cell $hidden:$(grep -m1 '^  products' <<< "$out" | sed 's/^  products */ products /')"
        grep -E '^  (step|big)' <<< "$out" | flock "$LOCK" env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$VENV/bin/python" "$WORK/mm_bench.py"
    done
fi
