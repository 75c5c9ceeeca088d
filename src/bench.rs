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
            for _ in 0..args.epochs {
                let t = Instant::now();
                let mut state = lm.zero_state(32);
                let (mut loss, mut n) = (0.0, 0);
                for b in sampler.epoch(&corpus, &mut rng) {
                    let s = lm.train_step(
                        &mut opt,
                        &b.x,
                        &b.y,
                        b.batch,
                        b.steps,
                        &mut state,
                        Some(1.0),
                    )?;
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
        }
    }
    Ok(())
}
