//! `seqpipe bench`: training throughput on the book's parity config (first 10,000 characters of
//! The Time Machine, batch 32, 35 steps, SGD lr 1, clipping 1, sequential batches).

use crate::nn::{self, CellKind, InputMode, LmSpec, OptimSpec};
use crate::stages::{load_corpus::preprocess_d2l, tokenize::tokenize_line, tokenize::Unit, Vocab};
use anyhow::{Context, Result};
use rand::SeedableRng;
use std::path::Path;
use std::time::Instant;

pub struct BenchArgs {
    pub cells: Vec<String>,
    pub hidden: Vec<usize>,
    pub epochs: usize,
    pub device: crate::device::Device,
    pub corpus: std::path::PathBuf,
    pub threads: usize,
    /// `char` (the parity config: first 10,000 characters) or `word` (all of the corpus).
    pub unit: String,
    /// Embedding dimension of the input (None: one-hot).
    pub embedding: Option<usize>,
    /// Print where a training step's time goes (`--breakdown`).
    pub breakdown: bool,
}

fn parse_cell(s: &str) -> Result<CellKind> {
    Ok(match s {
        "rnn_scratch" => CellKind::RnnScratch,
        "rnn" => CellKind::Rnn,
        "gru" => CellKind::Gru,
        "lstm" => CellKind::Lstm,
        other => anyhow::bail!("unknown cell `{other}`: use rnn_scratch, rnn, gru or lstm"),
    })
}

/// The parity corpus: the book's char tokens, vocabulary over all of them, first 10,000 kept.
pub fn parity_corpus(path: &Path) -> Result<(Vocab, Vec<u32>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| tokenize_line(&preprocess_d2l(l), Unit::Char))
        .collect();
    let vocab = Vocab::build(lines.iter().flatten().map(String::as_str), 0, &[]);
    let corpus = lines
        .iter()
        .flatten()
        .take(10_000)
        .map(|t| vocab.get(t))
        .collect();
    Ok((vocab, corpus))
}

/// Word tokens of the whole corpus (the word-level benchmark), vocabulary over all of them.
fn word_corpus(path: &Path) -> Result<(Vocab, Vec<u32>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let lines: Vec<Vec<String>> = text
        .lines()
        .map(|l| tokenize_line(&preprocess_d2l(l), Unit::Word))
        .collect();
    let vocab = Vocab::build(lines.iter().flatten().map(String::as_str), 0, &[]);
    let corpus = lines.iter().flatten().map(|t| vocab.get(t)).collect();
    Ok((vocab, corpus))
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.breakdown && args.epochs < 2 {
        anyhow::bail!(
            "`--breakdown` needs `--epochs 2` or more: the first epoch is the warm-up (where the \
             kernels are chosen) and is left out of the breakdown"
        );
    }
    if args.breakdown && args.device != crate::device::Device::Cpu {
        anyhow::bail!("`--breakdown` times the CPU's training step: leave out `--device cuda`");
    }
    let (vocab, corpus) = match args.unit.as_str() {
        "char" => parity_corpus(&args.corpus)?,
        "word" => word_corpus(&args.corpus)?,
        other => anyhow::bail!("unknown unit `{other}`: use char or word"),
    };
    let input = match args.embedding {
        Some(d) => InputMode::Embedding(d),
        None => InputMode::OneHot,
    };
    let sampler = crate::stages::SamplerSpec {
        strategy: crate::stages::Strategy::Sequential,
        batch_size: 32,
        num_steps: 35,
        valid_tokens: 0,
    };
    let data = if args.unit == "word" {
        format!("{} words, vocabulary {}", corpus.len(), vocab.len())
    } else {
        "10,000 chars".to_string()
    };
    let emb = args
        .embedding
        .map_or("one-hot".to_string(), |d| format!("embedding {d}"));
    println!("bench: parity config ({data}, {emb}, batch 32 × 35 steps, sgd lr 1, clip 1), device {}, {} thread(s), {} epoch{} each, matmul {}", args.device, args.threads, args.epochs, if args.epochs == 1 { "" } else { "s" }, nn::matmul_kernel());
    let peak = if args.breakdown {
        let peak = nn::measure_peak_gflops(300);
        let k = nn::kernel_report();
        println!("cpu: {}", k.cpu);
        println!("isa: {} (matrix products and element-wise kernels)", k.isa);
        println!(
            "caches: {} (candidates whose k-block of B exceeds half the L2 are not tried)",
            k.caches
        );
        println!(
            "peak: {peak:.1} GFLOP/s on one core (FP32, measured: 12 independent FMA chains of the widest vector)"
        );
        println!(
            "kernel cache: {}",
            k.cache
                .as_deref()
                .unwrap_or("off (SEQPIPE_KERNEL_CACHE=off): built-in choices")
        );
        peak
    } else {
        f64::NAN
    };
    println!(
        "{:<12} {:>6}  {:>12}  {:>12}  {:>10}",
        "cell", "hidden", "tokens/s", "(min..max)", "final ppl"
    );
    for cell in &args.cells {
        for &hidden in &args.hidden {
            let spec = LmSpec {
                cell: parse_cell(cell)?,
                vocab: vocab.len(),
                hidden,
                num_layers: 1,
                input,
                activation: nn::Activation::Tanh,
            };
            let mut lm = nn::LanguageModel::new(&spec, args.device, 0)?;
            let mut opt = nn::Optimizer::new(
                &OptimSpec::Sgd {
                    lr: 1.0,
                    weight_decay: 0.0,
                },
                &lm,
            );
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
            let mut speeds = Vec::new();
            let mut losses = Vec::new();
            let mut ppl = f64::NAN;
            let (mut step_wall, mut steps_timed, mut tokens_timed) = (0.0f64, 0usize, 0usize);
            for epoch in 0..args.epochs {
                // The breakdown leaves out the first epoch (warm-up, kernel choices); the
                // timers start (from zero) with the second and add up over the rest.
                let profiled = args.breakdown && epoch > 0;
                if args.breakdown && epoch <= 1 {
                    nn::profile::set_enabled(profiled);
                }
                let t = Instant::now();
                let mut state = lm.zero_state(32);
                let (mut loss, mut n) = (0.0, 0);
                for b in sampler.epoch(&corpus, &mut rng) {
                    let ts = Instant::now();
                    let s = lm.train_step(
                        &mut opt,
                        &b.x,
                        &b.y,
                        b.batch,
                        b.steps,
                        &mut state,
                        Some(1.0),
                    )?;
                    if profiled {
                        step_wall += ts.elapsed().as_secs_f64();
                        steps_timed += 1;
                        tokens_timed += s.tokens;
                    }
                    loss += s.loss_sum;
                    n += s.tokens;
                }
                speeds.push(n as f64 / t.elapsed().as_secs_f64());
                losses.push(loss / n as f64);
                ppl = (loss / n as f64).exp();
            }
            let mut sorted = speeds.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let median = sorted[sorted.len() / 2];
            println!(
                "{:<12} {:>6}  {:>12.0}  {:>5.0}..{:<6.0}  {:>10.2}",
                cell,
                hidden,
                median,
                sorted[0],
                sorted[sorted.len() - 1],
                ppl
            );
            // Per-epoch mean loss, for comparing devices (scripts/gpu-check.sh).
            let l: Vec<String> = losses.iter().map(|l| format!("{l:.6}")).collect();
            println!("losses {cell} {hidden}: {}", l.join(" "));
            // Per-epoch tokens/s (scripts/bench-vs-torch.sh leaves out the warm-up epoch).
            let s: Vec<String> = speeds.iter().map(|s| format!("{s:.0}")).collect();
            println!("speeds {cell} {hidden}: {}", s.join(" "));
            if args.breakdown {
                let (nanos, flops) = nn::profile::totals();
                nn::profile::set_enabled(false);
                let b = Breakdown {
                    nanos,
                    flops,
                    wall_s: step_wall,
                    steps: steps_timed,
                    tokens: tokens_timed,
                    threads: args.threads,
                    peak,
                };
                print!("{}", b.render(&format!("{cell} {hidden}")));
            }
        }
    }
    if args.breakdown {
        let k = nn::kernel_report();
        println!("kernel choices (shape m×n×k: choice, GFLOP/s when chosen, where from):");
        println!("  built-in: {}", k.default);
        for u in &k.choices {
            let src = match u.source {
                nn::KernelSource::Tuned => "tuned now",
                nn::KernelSource::Cache => "from the cache",
            };
            println!(
                "  {}: {}, {:.1} GFLOP/s, {src}",
                u.shape, u.choice, u.gflops
            );
        }
        if let Some(p) = &k.problem {
            println!("  note: {p}");
        }
    }
    Ok(())
}

/// The timers' totals over the timed steps of one case.
struct Breakdown {
    /// Thread time per phase (ns), in `nn::profile::PHASES` order.
    nanos: [u64; 6],
    flops: u64,
    wall_s: f64,
    steps: usize,
    tokens: usize,
    threads: usize,
    peak: f64,
}

impl Breakdown {
    /// Milliseconds per step and share of the step's thread time (wall × threads) per phase;
    /// the products' line ends with their rate and `NN% of peak` (per thread).
    fn render(&self, case: &str) -> String {
        use std::fmt::Write;
        let steps = self.steps.max(1) as f64;
        let wall_ms = self.wall_s * 1e3 / steps;
        let avail = wall_ms * self.threads as f64;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "breakdown {case}: {wall_ms:.2} ms per step ({} tokens), {} steps timed after the warm-up epoch, {} thread(s); thread time per step:",
            self.tokens / self.steps.max(1),
            self.steps,
            self.threads
        );
        let mut used = 0.0;
        for (p, &ns) in nn::profile::PHASES.iter().zip(&self.nanos) {
            let ms = ns as f64 / 1e6 / steps;
            used += ms;
            let share = 100.0 * ms / avail;
            let _ = write!(out, "  {:<38} {ms:>8.3} ms {share:>5.1}%", p.label());
            if *p == nn::profile::Phase::Products {
                let gflops = if ns > 0 {
                    self.flops as f64 / ns as f64
                } else {
                    0.0
                };
                let _ = write!(
                    out,
                    "  {gflops:.1} GFLOP/s per thread, {:.0}% of peak",
                    100.0 * gflops / self.peak
                );
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "  {:<38} {used:>8.3} ms {:>5.1}%",
            "sum of the phases",
            100.0 * used / avail
        );
        if self.threads > 1 {
            let idle = (avail - used).max(0.0);
            let _ = writeln!(
                out,
                "  {:<38} {idle:>8.3} ms {:>5.1}%",
                "helpers idle (between regions)",
                100.0 * idle / avail
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breakdown_gives_ms_shares_and_the_products_rate() {
        let ms = |x: f64| (x * 1e6) as u64;
        let b = Breakdown {
            // 10 steps: products 60 ms, cells 20, packing 5, loss 5, update 5, other 5 (all of it)
            nanos: [ms(60.0), ms(20.0), ms(5.0), ms(5.0), ms(5.0), ms(5.0)],
            flops: 6_000_000_000, // 6 GFLOP in 60 ms: 100 GFLOP/s
            wall_s: 0.1,
            steps: 10,
            tokens: 11_200,
            threads: 1,
            peak: 200.0,
        };
        let s = b.render("lstm 256");
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("breakdown lstm 256: 10.00 ms per step (1120 tokens)"),
            "{s}"
        );
        assert!(
            lines[1].contains("products") && lines[1].contains("6.000 ms  60.0%"),
            "{s}"
        );
        assert!(
            lines[1].ends_with("100.0 GFLOP/s per thread, 50% of peak"),
            "{s}"
        );
        assert!(
            lines[2].contains("cell kernels") && lines[2].contains("2.000 ms  20.0%"),
            "{s}"
        );
        assert!(
            lines[7].contains("sum of the phases") && lines[7].contains("10.000 ms 100.0%"),
            "{s}"
        );
        assert_eq!(lines.len(), 8, "{s}");
        // two threads: shares of wall × 2, and the helpers' idle time
        let s2 = Breakdown { threads: 2, ..b }.render("x");
        assert!(s2.contains("6.000 ms  30.0%"), "{s2}");
        assert!(
            s2.lines().last().unwrap().contains("10.000 ms  50.0%"),
            "{s2}"
        );
    }
}
