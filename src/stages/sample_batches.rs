//! `sample_batches`: the book's two ways of cutting a corpus into minibatches of subsequences
//! (`seq_data_iter_sequential`, `seq_data_iter_random`), with a coverage table.

use super::{ParamIssue, Roles, Stage};
use crate::artifacts::{Art, Batches, CorpusIds};
use crate::context::StageCtx;
use anyhow::{bail, Result};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

pub use crate::artifacts::sampler::{
    partition_random, partition_sequential, Batch, SamplerSpec, Strategy,
};

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleBatches {
    /// `sequential` (the book's `seq_data_iter_sequential`), `random` (`seq_data_iter_random`), or `random_circular`.
    pub strategy: Strategy,
    /// Subsequences per minibatch.
    pub batch_size: usize,
    /// Time steps per subsequence.
    pub num_steps: usize,
    /// Epochs to draw for the coverage table.
    #[serde(default = "one")]
    pub epochs: usize,
    /// A fixed offset instead of a random one (for checking the partitioning by hand).
    #[serde(default)]
    pub offset: Option<usize>,
    /// Hold out this fraction of the corpus, at its end, for validation (0: none, as the book).
    /// Batches come from the start; `train` reports a validation perplexity every epoch.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    #[schemars(extend("default" = 0.0), range(min = 0.0, max = 1.0))]
    pub valid_fraction: f64,
}

fn one() -> usize {
    1
}

#[derive(Serialize)]
struct BatchRow {
    epoch: usize,
    batch: usize,
    row: usize,
    start: usize,
    x: String,
    y: String,
}

#[derive(Serialize)]
struct CoverageRow {
    position: usize,
    starts: usize,
    covered: usize,
}

const MAX_BATCH_ROWS: usize = 10_000;

impl Stage for SampleBatches {
    const KIND: &'static str = "sample_batches";
    const VERSION: u32 = 3;
    const ABOUT: &'static str =
        "Cut a corpus into minibatches (sequential or random, book 8.3) and tabulate coverage";
    const ROLES: Roles = Roles::Fixed(&["corpus"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] =
        &[("corpus", &[Art::Vocab, Art::CorpusIds])];
    const OUTPUT: Option<Art> = Some(Art::Batches);
    const STOCHASTIC: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "batch_size", self.batch_size);
        super::require_positive(issues, "num_steps", self.num_steps);
        super::require_positive(issues, "epochs", self.epochs);
        if !(self.valid_fraction >= 0.0 && self.valid_fraction < 1.0) {
            issues.push(ParamIssue::new(
                "valid_fraction",
                format!(
                    "valid_fraction must be in [0, 1), found {}",
                    self.valid_fraction
                ),
                "e.g. `valid_fraction: 0.1` holds out the last 10% of the corpus; 0 holds out nothing",
            ));
        }
        if let Some(o) = self.offset {
            let max = if self.strategy == Strategy::Sequential {
                self.num_steps
            } else {
                self.num_steps.saturating_sub(1)
            };
            if o > max {
                issues.push(ParamIssue::new(
                    "offset",
                    format!("offset {o} is larger than the book's range allows"),
                    format!("use an offset in 0..={max}"),
                ));
            }
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let full = CorpusIds::read(ctx.input("corpus")?)?;
        let spec = SamplerSpec {
            strategy: self.strategy,
            batch_size: self.batch_size,
            num_steps: self.num_steps,
            valid_tokens: (full.len() as f64 * self.valid_fraction).round() as usize,
        };
        if self.valid_fraction > 0.0 && spec.valid_tokens < self.num_steps + 1 {
            bail!(
                "`valid_fraction` {} holds out {} of the corpus's {} tokens, fewer than one validation batch of num_steps + 1 = {} tokens; raise `valid_fraction` or use a longer corpus",
                self.valid_fraction, spec.valid_tokens, full.len(), self.num_steps + 1
            );
        }
        let (corpus, valid) = spec.split(&full);
        spec.check_len(corpus.len()).map_err(|e| {
            if spec.valid_tokens > 0 {
                e.context(format!(
                    "`valid_fraction` {} leaves {} of {} tokens for training",
                    self.valid_fraction,
                    corpus.len(),
                    full.len()
                ))
            } else {
                e
            }
        })?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ctx.seed);
        let mut starts = vec![0usize; corpus.len()];
        let mut covered = vec![0usize; corpus.len()];
        let mut rows = Vec::new();
        let mut batches_per_epoch = 0;
        for epoch in 0..self.epochs {
            let batches = match (self.offset, self.strategy) {
                (Some(o), Strategy::Sequential) => {
                    partition_sequential(corpus, self.batch_size, self.num_steps, o)
                }
                (Some(o), Strategy::Random | Strategy::RandomCircular) => {
                    partition_random(corpus, self.batch_size, self.num_steps, o, &mut rng)
                }
                (None, _) => spec.epoch(corpus, &mut rng),
            };
            batches_per_epoch = batches.len();
            for (bi, b) in batches.iter().enumerate() {
                for (r, &s) in b.starts.iter().enumerate() {
                    starts[s] += 1;
                    for k in 0..self.num_steps {
                        covered[(s + k) % corpus.len()] += 1;
                    }
                    if rows.len() < MAX_BATCH_ROWS {
                        let y = &b.y[r * b.steps..(r + 1) * b.steps];
                        rows.push(BatchRow {
                            epoch,
                            batch: bi,
                            row: r,
                            start: s,
                            x: join(b.row(r)),
                            y: join(y),
                        });
                    }
                }
            }
        }
        // Training reads the corpus (and the vocabulary, to print samples) from here.
        Batches::write(ctx, &spec, "corpus")?;
        ctx.write_csv("batches.csv", rows)?;
        ctx.write_csv(
            "coverage.csv",
            starts
                .iter()
                .zip(&covered)
                .enumerate()
                .map(|(position, (&s, &c))| CoverageRow {
                    position,
                    starts: s,
                    covered: c,
                }),
        )?;
        let n = covered.len() as f64;
        let mean = covered.iter().sum::<usize>() as f64 / n;
        let var = covered
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        ctx.summary("batches_per_epoch", batches_per_epoch);
        ctx.summary("never_covered", covered.iter().filter(|&&c| c == 0).count());
        ctx.summary("coverage_mean", mean);
        ctx.summary(
            "coverage_cv",
            if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
        );
        if !valid.is_empty() {
            ctx.summary("train_tokens", corpus.len());
            ctx.summary("valid_tokens", valid.len());
        }
        Ok(())
    }
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(b: &Batch) -> Vec<Vec<u32>> {
        (0..b.batch).map(|r| b.row(r).to_vec()).collect()
    }

    #[test]
    fn sequential_offset_0_matches_the_book() {
        let corpus: Vec<u32> = (0..35).collect();
        let bs = partition_sequential(&corpus, 2, 5, 0);
        assert_eq!(bs.len(), 3);
        assert_eq!(
            rows(&bs[0]),
            vec![vec![0, 1, 2, 3, 4], vec![17, 18, 19, 20, 21]]
        );
        assert_eq!(
            rows(&bs[1]),
            vec![vec![5, 6, 7, 8, 9], vec![22, 23, 24, 25, 26]]
        );
        assert_eq!(
            rows(&bs[2]),
            vec![vec![10, 11, 12, 13, 14], vec![27, 28, 29, 30, 31]]
        );
        for b in &bs {
            let shifted: Vec<u32> = b.x.iter().map(|v| v + 1).collect();
            assert_eq!(b.y, shifted);
        }
    }

    #[test]
    fn sequential_offset_5_matches_the_book() {
        let corpus: Vec<u32> = (0..35).collect();
        let bs = partition_sequential(&corpus, 2, 5, 5);
        assert_eq!(bs.len(), 2);
        assert_eq!(
            rows(&bs[0]),
            vec![vec![5, 6, 7, 8, 9], vec![19, 20, 21, 22, 23]]
        );
        assert_eq!(
            rows(&bs[1]),
            vec![vec![10, 11, 12, 13, 14], vec![24, 25, 26, 27, 28]]
        );
    }

    #[test]
    fn random_covers_disjoint_subsequences() {
        let corpus: Vec<u32> = (0..35).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let bs = partition_random(&corpus, 2, 5, 3, &mut rng);
        // (35 - 3 - 1) / 5 = 6 subsequences → 3 batches of 2.
        assert_eq!(bs.len(), 3);
        let mut starts: Vec<usize> = bs.iter().flat_map(|b| b.starts.clone()).collect();
        starts.sort();
        assert_eq!(starts, vec![3, 8, 13, 18, 23, 28]);
        for b in &bs {
            for r in 0..2 {
                assert_eq!(b.row(r)[0] as usize, b.starts[r]);
            }
        }
    }

    #[test]
    fn the_validation_part_is_the_end_of_the_corpus() {
        let corpus: Vec<u32> = (0..100).collect();
        let spec = SamplerSpec {
            strategy: Strategy::Sequential,
            batch_size: 4,
            num_steps: 5,
            valid_tokens: 20,
        };
        let (train, valid) = spec.split(&corpus);
        assert_eq!(train, &corpus[..80]);
        assert_eq!(valid, &corpus[80..]);
        // (20 - 1) / 5 = 3 rows fit, fewer than the batch size of 4.
        assert_eq!(spec.valid_batch_size(), 3);
        let bs = partition_sequential(valid, spec.valid_batch_size(), 5, 0);
        assert_eq!(bs.len(), 1);
        // Training batches never reach into the validation part.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            for b in spec.epoch(train, &mut rng) {
                assert!(b.y.iter().all(|&t| t < 80));
            }
        }
        let none = SamplerSpec {
            valid_tokens: 0,
            ..spec.clone()
        };
        assert_eq!(none.split(&corpus), (&corpus[..], &[][..]));
        // The smallest validation part, num_steps + 1 tokens, gives one batch of one row.
        let least = SamplerSpec {
            valid_tokens: 6,
            ..spec
        };
        assert_eq!(least.valid_batch_size(), 1);
        assert_eq!(
            partition_sequential(least.split(&corpus).1, 1, 5, 0).len(),
            1
        );
    }

    #[test]
    fn valid_fraction_must_be_below_one() {
        let check = |f: f64| {
            let s = SampleBatches {
                strategy: Strategy::Sequential,
                batch_size: 2,
                num_steps: 3,
                epochs: 1,
                offset: None,
                valid_fraction: f,
            };
            let mut issues = Vec::new();
            s.validate(&mut issues);
            issues.iter().map(|i| i.key.clone()).collect::<Vec<_>>()
        };
        assert!(check(0.0).is_empty());
        assert!(check(0.5).is_empty());
        for bad in [1.0, -0.1, f64::NAN] {
            assert_eq!(check(bad), vec!["valid_fraction".to_string()]);
        }
    }

    #[test]
    fn no_validation_part_leaves_the_key_params_unchanged() {
        let s: SampleBatches =
            serde_json::from_str(r#"{"strategy": "sequential", "batch_size": 2, "num_steps": 3}"#)
                .unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert!(v.get("valid_fraction").is_none(), "{v}");
        let spec = serde_json::to_string(&SamplerSpec {
            strategy: Strategy::Sequential,
            batch_size: 2,
            num_steps: 3,
            valid_tokens: 0,
        })
        .unwrap();
        assert_eq!(
            spec,
            r#"{"strategy":"sequential","batch_size":2,"num_steps":3}"#
        );
    }

    #[test]
    fn too_short_corpus_is_an_error() {
        let spec = SamplerSpec {
            strategy: Strategy::Sequential,
            batch_size: 32,
            num_steps: 35,
            valid_tokens: 0,
        };
        assert!(spec.check_len(100).is_err());
        assert!(spec.check_len(spec.min_len()).is_ok());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for _ in 0..20 {
            assert!(!spec.epoch(&vec![0; spec.min_len()], &mut rng).is_empty());
        }
    }
}
