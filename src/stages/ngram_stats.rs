//! `ngram_stats`: n-gram frequency tables and Zipf exponents (book 8.3, exercise 8.3.3).

use super::{ParamIssue, Roles, Stage};
use crate::artifacts::{Art, FxBuild, Tokens};
use crate::context::StageCtx;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NgramStats {
    /// Which n to count, e.g. `[1, 2, 3]`.
    #[serde(default = "default_ns")]
    pub n: Vec<usize>,
    /// Also fit over only the most frequent fraction of n-grams (e.g. `0.1`).
    #[serde(default)]
    pub top_fraction: Option<f64>,
    /// Rows written per frequency table (the fit uses all of them).
    #[serde(default = "default_rows")]
    pub max_rows: usize,
}

fn default_ns() -> Vec<usize> {
    vec![1, 2, 3]
}
fn default_rows() -> usize {
    1000
}

/// n-grams of a token sequence with their counts, most frequent first (ties: first occurrence).
pub fn count_ngrams<T: Hash + Eq + Clone>(tokens: &[T], n: usize) -> Vec<(Vec<T>, usize)> {
    let mut order: Vec<&[T]> = Vec::new();
    let mut counts: HashMap<&[T], usize, FxBuild> = HashMap::default();
    if n == 0 || tokens.len() < n {
        return Vec::new();
    }
    for w in tokens.windows(n) {
        let c = counts.entry(w).or_insert(0);
        if *c == 0 {
            order.push(w);
        }
        *c += 1;
    }
    order.sort_by(|a, b| counts[b].cmp(&counts[a]));
    order.into_iter().map(|w| (w.to_vec(), counts[w])).collect()
}

/// Least-squares slope of ln(count) on ln(rank), negated: the Zipf exponent.
pub fn zipf_exponent(counts: &[usize]) -> Option<(f64, f64)> {
    if counts.len() < 2 {
        return None;
    }
    let pts: Vec<(f64, f64)> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| (((i + 1) as f64).ln(), (c as f64).ln()))
        .collect();
    let n = pts.len() as f64;
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some((-slope, my - slope * mx))
}

#[derive(Serialize)]
struct NgramRow {
    rank: usize,
    ngram: String,
    count: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ZipfRow {
    pub n: usize,
    pub distinct: usize,
    pub fit_over: String,
    pub points: usize,
    pub exponent: f64,
    pub intercept: f64,
}

impl Stage for NgramStats {
    const KIND: &'static str = "ngram_stats";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "n-gram frequency tables and Zipf exponents fitted on log rank vs log frequency";
    const ROLES: Roles = Roles::Fixed(&["tokens"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[("tokens", &[Art::Tokens])];
    const OUTPUT: Option<Art> = Some(Art::Ngrams);

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        if self.n.is_empty() || self.n.contains(&0) {
            issues.push(ParamIssue::new(
                "n",
                "param `n` must list positive n-gram sizes",
                "e.g. `n: [1, 2, 3]`",
            ));
        }
        if let Some(f) = self.top_fraction {
            if !(f > 0.0 && f <= 1.0) {
                issues.push(ParamIssue::new(
                    "top_fraction",
                    format!("top_fraction {f} is outside (0, 1]"),
                    "use a fraction such as `0.1`",
                ));
            }
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let tokens = Tokens::read(ctx.input("tokens")?)?;
        // Count type ids: one id per distinct token, so the counts and their order are those
        // of the strings.
        let corpus: Vec<u32> = tokens.corpus_ids();
        let mut zipf = Vec::new();
        for &n in &self.n {
            let grams = count_ngrams(&corpus, n);
            let counts: Vec<usize> = grams.iter().map(|g| g.1).collect();
            ctx.write_csv(
                &format!("ngrams_{n}.csv"),
                grams
                    .iter()
                    .take(self.max_rows)
                    .enumerate()
                    .map(|(i, (g, c))| NgramRow {
                        rank: i + 1,
                        ngram: g
                            .iter()
                            .map(|&i| tokens.token(i))
                            .collect::<Vec<_>>()
                            .join(" "),
                        count: *c,
                    }),
            )?;
            let mut fits = vec![("all".to_string(), counts.len())];
            if let Some(f) = self.top_fraction {
                fits.push((
                    format!("top {f}"),
                    ((counts.len() as f64 * f).ceil() as usize).max(2),
                ));
            }
            for (label, k) in fits {
                if let Some((e, b)) = zipf_exponent(&counts[..k.min(counts.len())]) {
                    ctx.summary(
                        &format!(
                            "zipf_{n}gram_{}",
                            if label == "all" { "all" } else { "top" }
                        ),
                        e,
                    );
                    zipf.push(ZipfRow {
                        n,
                        distinct: counts.len(),
                        fit_over: label,
                        points: k.min(counts.len()),
                        exponent: e,
                        intercept: b,
                    });
                }
            }
        }
        ctx.write_csv("zipf.csv", zipf)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_power_law_gives_its_exponent() {
        let counts: Vec<usize> = (1..=100)
            .map(|r| (1e6 / (r as f64).powf(1.5)).round() as usize)
            .collect();
        let (e, _) = zipf_exponent(&counts).unwrap();
        assert!((e - 1.5).abs() < 1e-3, "{e}");
    }

    #[test]
    fn counts_bigrams_in_order() {
        let t = ["a", "b", "a", "b", "c"];
        let g = count_ngrams(&t, 2);
        assert_eq!(g[0], (vec!["a", "b"], 2));
        assert_eq!(g.len(), 3);
    }
}
