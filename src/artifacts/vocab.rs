//! A vocabulary (the book's `Vocab`): `<unk>` is 0, then reserved tokens, then tokens by
//! frequency. `build_vocab` makes one; the text artifacts and the models read it.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

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
