//! How batches are drawn from a corpus: the book's two partitionings (sequential and random)
//! and the circular variant. `sample_batches` writes a [`SamplerSpec`]; `train` reads it and
//! draws each epoch's batches with it.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Sequential,
    Random,
    /// Random partitioning of the corpus rotated by a random shift in 0..len: every position
    /// is equally likely to be covered (one subsequence per epoch wraps from the end to the start).
    RandomCircular,
}

/// How batches are drawn; `train` reads this from a `sample_batches` input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    pub strategy: Strategy,
    pub batch_size: usize,
    pub num_steps: usize,
    /// Tokens held out for validation at the end of the corpus (0: none, the book's setup).
    #[serde(default, skip_serializing_if = "is_zero_usize")]
    pub valid_tokens: usize,
}

fn is_zero_usize(v: &usize) -> bool {
    *v == 0
}

/// One minibatch: `x` and `y` are `batch × steps`, row-major; `starts` are the corpus positions
/// where each row begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch: usize,
    pub steps: usize,
    pub x: Vec<u32>,
    pub y: Vec<u32>,
    pub starts: Vec<usize>,
}

impl Batch {
    pub fn row(&self, r: usize) -> &[u32] {
        &self.x[r * self.steps..(r + 1) * self.steps]
    }
}

impl SamplerSpec {
    /// The least corpus length that gives one full batch whatever the offset.
    pub fn min_len(&self) -> usize {
        match self.strategy {
            Strategy::Sequential => self.batch_size * self.num_steps + self.num_steps + 1,
            Strategy::Random => self.batch_size * self.num_steps + self.num_steps,
            Strategy::RandomCircular => self.batch_size * self.num_steps + 1,
        }
    }

    /// The training part (the start) and the validation part (the last `valid_tokens`).
    pub fn split<'a>(&self, corpus: &'a [u32]) -> (&'a [u32], &'a [u32]) {
        corpus.split_at(corpus.len().saturating_sub(self.valid_tokens))
    }

    /// Rows per batch when scoring the validation part: the sampler's batch size, or fewer when
    /// the part is too short for that many rows of `num_steps + 1` tokens.
    pub fn valid_batch_size(&self) -> usize {
        (self.valid_tokens.saturating_sub(1) / self.num_steps.max(1))
            .clamp(1, self.batch_size.max(1))
    }

    pub fn check_len(&self, len: usize) -> Result<()> {
        if len < self.min_len() {
            bail!(
                "the corpus has {len} tokens, shorter than one batch: {:?} batches of batch_size {} × num_steps {} need at least {} tokens; use a longer corpus or smaller sizes",
                self.strategy, self.batch_size, self.num_steps, self.min_len()
            );
        }
        Ok(())
    }

    /// The batches of one epoch, offset and order drawn from `rng` (the book's iterators).
    pub fn epoch(&self, corpus: &[u32], rng: &mut impl Rng) -> Vec<Batch> {
        match self.strategy {
            Strategy::Sequential => {
                let off = rng.gen_range(0..=self.num_steps);
                partition_sequential(corpus, self.batch_size, self.num_steps, off)
            }
            Strategy::Random => {
                let off = rng.gen_range(0..self.num_steps);
                partition_random(corpus, self.batch_size, self.num_steps, off, rng)
            }
            Strategy::RandomCircular => {
                let shift = rng.gen_range(0..corpus.len());
                let rotated: Vec<u32> = corpus[shift..]
                    .iter()
                    .chain(&corpus[..shift])
                    .copied()
                    .collect();
                let mut batches =
                    partition_random(&rotated, self.batch_size, self.num_steps, 0, rng);
                for b in &mut batches {
                    for s in &mut b.starts {
                        *s = (*s + shift) % corpus.len();
                    }
                }
                batches
            }
        }
    }
}

/// `seq_data_iter_sequential` with a given offset: rows are consecutive slices, so batch i+1
/// continues batch i row by row.
pub fn partition_sequential(
    corpus: &[u32],
    batch: usize,
    steps: usize,
    offset: usize,
) -> Vec<Batch> {
    if corpus.len() < offset + 1 || batch == 0 || steps == 0 {
        return Vec::new();
    }
    let num_tokens = ((corpus.len() - offset - 1) / batch) * batch;
    let cols = num_tokens / batch;
    let num_batches = cols / steps;
    (0..num_batches)
        .map(|i| {
            let mut b = Batch {
                batch,
                steps,
                x: Vec::with_capacity(batch * steps),
                y: Vec::with_capacity(batch * steps),
                starts: Vec::new(),
            };
            for r in 0..batch {
                let s = offset + r * cols + i * steps;
                b.x.extend_from_slice(&corpus[s..s + steps]);
                b.y.extend_from_slice(&corpus[s + 1..s + 1 + steps]);
                b.starts.push(s);
            }
            b
        })
        .collect()
}

/// `seq_data_iter_random` with a given offset: subsequence starts are shuffled, so neighbouring
/// batches are not adjacent in the corpus.
pub fn partition_random(
    corpus: &[u32],
    batch: usize,
    steps: usize,
    offset: usize,
    rng: &mut impl Rng,
) -> Vec<Batch> {
    if corpus.len() < offset + 1 || batch == 0 || steps == 0 {
        return Vec::new();
    }
    let c = &corpus[offset..];
    let num_subseqs = (c.len() - 1) / steps;
    let mut starts: Vec<usize> = (0..num_subseqs).map(|i| i * steps).collect();
    starts.shuffle(rng);
    let num_batches = num_subseqs / batch;
    (0..num_batches)
        .map(|i| {
            let mut b = Batch {
                batch,
                steps,
                x: Vec::new(),
                y: Vec::new(),
                starts: Vec::new(),
            };
            for &s in &starts[i * batch..(i + 1) * batch] {
                b.x.extend_from_slice(&c[s..s + steps]);
                b.y.extend_from_slice(&c[s + 1..s + 1 + steps]);
                b.starts.push(s + offset);
            }
            b
        })
        .collect()
}
