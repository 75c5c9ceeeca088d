//! `ngram_generate`: text from n-gram counts (exercise 8.3.2). Greedy decoding takes the most
//! frequent continuation and soon cycles; sampling in proportion to the counts does not.

use super::{ParamIssue, Roles, Stage};
use crate::artifacts::{Art, Tokens};
use crate::context::StageCtx;
use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NgramStrategy {
    Greedy,
    Sample,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NgramGenerate {
    /// The n of the n-grams (3: each word from the two before it).
    #[serde(default = "three")]
    pub n: usize,
    /// Words to start from (at least n - 1 of them).
    pub prefix: String,
    /// Words to generate.
    #[serde(default = "thirty")]
    pub num_words: usize,
    /// `greedy`: the most frequent continuation; `sample`: draw by count.
    #[serde(default = "greedy")]
    pub strategy: NgramStrategy,
}

fn three() -> usize {
    3
}
fn thirty() -> usize {
    30
}
fn greedy() -> NgramStrategy {
    NgramStrategy::Greedy
}

/// Continuations of each context of up to n-1 words, with counts, in first-seen order.
struct Model<'a> {
    n: usize,
    next: HashMap<Vec<&'a str>, Vec<(&'a str, usize)>>,
}

impl<'a> Model<'a> {
    fn new(words: &[&'a str], n: usize) -> Self {
        let mut next: HashMap<Vec<&str>, Vec<(&str, usize)>> = HashMap::new();
        for ctx_len in 0..n {
            for w in words.windows(ctx_len + 1) {
                let e = next.entry(w[..ctx_len].to_vec()).or_default();
                match e.iter_mut().find(|(t, _)| *t == w[ctx_len]) {
                    Some(x) => x.1 += 1,
                    None => e.push((w[ctx_len], 1)),
                }
            }
        }
        Model { n, next }
    }

    /// The continuations of the longest known suffix of `history` (backing off to shorter ones).
    fn options(&self, history: &[&'a str]) -> &[(&'a str, usize)] {
        for k in (0..self.n).rev() {
            if history.len() >= k {
                if let Some(v) = self.next.get(&history[history.len() - k..]) {
                    return v;
                }
            }
        }
        &[]
    }
}

impl Stage for NgramGenerate {
    const KIND: &'static str = "ngram_generate";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Generate words from n-gram counts: greedy (cycles) or sampled in proportion to the counts";
    const ROLES: Roles = Roles::Fixed(&["tokens"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[("tokens", &[Art::Tokens])];
    const OUTPUT: Option<Art> = Some(Art::Text);
    const STOCHASTIC: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "n", self.n);
        super::require_positive(issues, "num_words", self.num_words);
        if self.prefix.split_whitespace().next().is_none() {
            issues.push(ParamIssue::new(
                "prefix",
                "the prefix has no words",
                "e.g. `prefix: the time`",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let tokens = Tokens::read(ctx.input("tokens")?)?;
        let words: Vec<&str> = tokens.corpus_strs();
        if words.len() < self.n {
            bail!(
                "the corpus has {} tokens, fewer than n = {}",
                words.len(),
                self.n
            );
        }
        let model = Model::new(&words, self.n);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ctx.seed);
        let mut out: Vec<&str> = Vec::new();
        let prefix: Vec<String> = self
            .prefix
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        let mut history: Vec<&str> = prefix.iter().map(String::as_str).collect();
        for _ in 0..self.num_words {
            let opts = model.options(&history);
            let Some(&(first, _)) = opts.first() else {
                break;
            };
            let w = match self.strategy {
                NgramStrategy::Greedy => {
                    opts.iter()
                        .fold(
                            (first, 0),
                            |best, &(t, c)| if c > best.1 { (t, c) } else { best },
                        )
                        .0
                }
                NgramStrategy::Sample => {
                    let total: usize = opts.iter().map(|o| o.1).sum();
                    let mut r = rng.gen_range(0..total);
                    opts.iter()
                        .find(|o| {
                            if r < o.1 {
                                true
                            } else {
                                r -= o.1;
                                false
                            }
                        })
                        .map(|o| o.0)
                        .unwrap_or(first)
                }
            };
            out.push(w);
            history.push(w);
        }
        let text = format!("{} {}", prefix.join(" "), out.join(" "));
        // How repetitive: distinct trigrams of the output over all of its trigrams.
        let tri: Vec<&[&str]> = out.windows(3).collect();
        let mut distinct = tri.clone();
        distinct.sort();
        distinct.dedup();
        let ratio = if tri.is_empty() {
            1.0
        } else {
            distinct.len() as f64 / tri.len() as f64
        };
        ctx.log(text.clone());
        ctx.write_text("generated.txt", &(text.clone() + "\n"))?;
        ctx.summary("distinct_trigram_ratio", ratio);
        ctx.summary("text", text);
        Ok(())
    }
}
