//! `build_vocab`: the book's `Vocab` — `<unk>` is 0, then reserved tokens, then tokens by
//! frequency (descending; ties in first-occurrence order) down to `min_freq`.

use super::{Roles, Stage};
use crate::artifacts::{Art, Tokens, VocabArtifact};
use crate::context::StageCtx;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildVocab {
    /// Tokens seen fewer times than this map to `<unk>`.
    #[serde(default)]
    pub min_freq: usize,
    /// Extra tokens placed right after `<unk>`, e.g. `["<pad>", "<bos>", "<eos>"]`.
    #[serde(default)]
    pub reserved: Vec<String>,
}

/// A vocabulary: index → token, with counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub counts: Vec<usize>,
    index: HashMap<String, u32>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VocabRow {
    token: String,
    index: u32,
    count: usize,
}

impl Vocab {
    pub fn build<'a>(
        tokens: impl IntoIterator<Item = &'a str>,
        min_freq: usize,
        reserved: &[String],
    ) -> Self {
        // Count in first-occurrence order (a Counter keeps insertion order).
        let mut order: Vec<&str> = Vec::new();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for t in tokens {
            let c = counts.entry(t).or_insert(0);
            if *c == 0 {
                order.push(t);
            }
            *c += 1;
        }
        Self::from_counts(
            order.into_iter().map(|t| (t, counts[t])),
            min_freq,
            reserved,
        )
    }

    /// The vocabulary of distinct tokens with their counts, given in first-occurrence order.
    pub fn from_counts<'a>(
        counts: impl IntoIterator<Item = (&'a str, usize)>,
        min_freq: usize,
        reserved: &[String],
    ) -> Self {
        let mut order: Vec<(&str, usize)> = counts.into_iter().collect();
        // Stable sort by descending count keeps ties in first-occurrence order.
        order.sort_by_key(|b| std::cmp::Reverse(b.1));
        let mut v = Vocab {
            tokens: Vec::new(),
            counts: Vec::new(),
            index: HashMap::new(),
        };
        v.push("<unk>", 0);
        for r in reserved {
            v.push(r, 0);
        }
        for (t, c) in order {
            if c < min_freq {
                break;
            }
            if !v.index.contains_key(t) {
                v.push(t, c);
            } else if let Some(&i) = v.index.get(t) {
                v.counts[i as usize] = c;
            }
        }
        v
    }

    fn push(&mut self, t: &str, count: usize) {
        if !self.index.contains_key(t) {
            self.index.insert(t.to_string(), self.tokens.len() as u32);
            self.tokens.push(t.to_string());
            self.counts.push(count);
        }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Index of a token, `<unk>` (0) when unknown.
    pub fn get(&self, t: &str) -> u32 {
        self.index.get(t).copied().unwrap_or(0)
    }

    pub fn token(&self, i: u32) -> &str {
        self.tokens
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("<unk>")
    }

    /// Whether the tokens are characters (every token but `<...>` specials is one character).
    pub fn is_char_level(&self) -> bool {
        self.tokens
            .iter()
            .filter(|t| !(t.starts_with('<') && t.ends_with('>') && t.len() > 2))
            .all(|t| t.chars().count() == 1)
    }

    /// Text → indices, by characters or words as the vocabulary is.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        if self.is_char_level() {
            text.chars().map(|c| self.get(&c.to_string())).collect()
        } else {
            text.split_whitespace().map(|w| self.get(w)).collect()
        }
    }

    /// Indices → text.
    pub fn decode(&self, idx: &[u32]) -> String {
        let toks: Vec<&str> = idx.iter().map(|&i| self.token(i)).collect();
        if self.is_char_level() {
            toks.concat()
        } else {
            toks.join(" ")
        }
    }

    pub fn write_csv(&self, path: &Path) -> Result<()> {
        let mut w = csv::Writer::from_path(path)?;
        for (i, (t, c)) in self.tokens.iter().zip(&self.counts).enumerate() {
            w.serialize(VocabRow {
                token: t.clone(),
                index: i as u32,
                count: *c,
            })?;
        }
        w.flush()?;
        Ok(())
    }

    pub fn read_csv(path: &Path) -> Result<Self> {
        let mut r =
            csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let mut v = Vocab {
            tokens: Vec::new(),
            counts: Vec::new(),
            index: HashMap::new(),
        };
        for row in r.deserialize() {
            let row: VocabRow = row?;
            v.index.insert(row.token.clone(), row.index);
            v.tokens.push(row.token);
            v.counts.push(row.count);
        }
        Ok(v)
    }
}

impl Stage for BuildVocab {
    const KIND: &'static str = "build_vocab";
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "Vocabulary (CSV: token, index, count) and the corpus as indices (book 8.2 `Vocab`)";
    const ROLES: Roles = Roles::Fixed(&["tokens"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[("tokens", &[Art::Tokens])];
    const OUTPUT: Option<Art> = Some(Art::Vocab);

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let tokens = Tokens::read(ctx.input("tokens")?)?;
        let types = &tokens.meta.types;
        // Every token counts (the book's `Vocab` sees the whole corpus, `max_tokens` or not).
        let counts = count_ids(&tokens.ids, types.len());
        let vocab = Vocab::from_counts(
            types.iter().map(String::as_str).zip(counts.iter().copied()),
            self.min_freq,
            &self.reserved,
        );
        let to_vocab: Vec<u32> = types.iter().map(|t| vocab.get(t)).collect();
        let kept = tokens.meta.kept;
        let corpus = tokens.ids.map_prefix(kept, &to_vocab);
        VocabArtifact::write(ctx, &vocab, &corpus)?;
        ctx.summary("corpus_len", corpus.len());
        ctx.summary("vocab_size", vocab.len());
        Ok(())
    }
}

/// How often each of the ids `0..types` occurs.
fn count_ids(ids: &crate::artifacts::Ids, types: usize) -> Vec<usize> {
    let mut counts = vec![0usize; types];
    match ids.as_u8() {
        Some(b) => {
            // Four tables, so that runs of one token do not wait on one counter.
            let mut c = [[0usize; 256]; 4];
            let mut chunks = b.chunks_exact(4);
            for q in &mut chunks {
                c[0][q[0] as usize] += 1;
                c[1][q[1] as usize] += 1;
                c[2][q[2] as usize] += 1;
                c[3][q[3] as usize] += 1;
            }
            for &x in chunks.remainder() {
                c[0][x as usize] += 1;
            }
            for (t, n) in counts.iter_mut().enumerate() {
                *n = c.iter().map(|c| c[t]).sum();
            }
        }
        None => ids.for_each(|i| counts[i as usize] += 1),
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequency_order_with_stable_ties() {
        let toks = ["b", "a", "c", "a", "b", "d"];
        let v = Vocab::build(toks.iter().copied(), 0, &[]);
        assert_eq!(v.tokens, ["<unk>", "b", "a", "c", "d"]);
        assert_eq!(v.counts, [0, 2, 2, 1, 1]);
        let v = Vocab::build(toks.iter().copied(), 2, &["<pad>".to_string()]);
        assert_eq!(v.tokens, ["<unk>", "<pad>", "b", "a"]);
        assert_eq!(v.get("zzz"), 0);
    }
}
