//! `tokenize`: lines → tokens (characters or whitespace-separated words).

use super::{Roles, Stage};
use crate::artifacts::{Art, FxHashMap, IdBuf, Lines, Tokens, TokensMeta};
use crate::context::StageCtx;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Char,
    Word,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tokenize {
    /// `char` or `word` tokens.
    pub unit: Unit,
    /// Keep only the first `max_tokens` tokens of the flattened corpus (the book's
    /// `load_corpus_time_machine(max_tokens)`); the vocabulary still counts every token, as in the book.
    #[serde(default)]
    pub max_tokens: Option<usize>,
}

/// The tokens of a text (lines joined by `\n`) as ids into the distinct tokens, which are
/// numbered in order of first occurrence. One pass; no string per token.
pub fn tokenize_text<'t>(text: &'t str, unit: Unit) -> (Vec<String>, IdBuf) {
    let mut types: Vec<String> = Vec::new();
    match unit {
        Unit::Char => {
            let mut ascii = [u32::MAX; 128];
            if text.is_ascii() {
                // At most 128 types: one byte per token, written branch-free (a line end is
                // written over by the next token); a new type is the one rare branch.
                const NEW: u8 = u8::MAX;
                let mut map = [NEW; 128];
                map[b'\n' as usize] = 0;
                let bytes = text.as_bytes();
                let mut ids = vec![0u8; bytes.len()];
                let mut pos = 0;
                for &b in bytes {
                    let mut t = map[b as usize];
                    if t == NEW {
                        t = types.len() as u8;
                        map[b as usize] = t;
                        types.push((b as char).to_string());
                    }
                    ids[pos] = t;
                    pos += (b != b'\n') as usize;
                }
                ids.truncate(pos);
                (types, IdBuf::U8(ids))
            } else {
                let mut ids = IdBuf::with_capacity(text.len());
                let mut other: FxHashMap<char, u32> = FxHashMap::default();
                for c in text.chars() {
                    if c == '\n' {
                        continue;
                    }
                    let slot = if c.is_ascii() {
                        &mut ascii[c as usize]
                    } else {
                        other.entry(c).or_insert(u32::MAX)
                    };
                    if *slot == u32::MAX {
                        *slot = types.len() as u32;
                        types.push(c.to_string());
                    }
                    ids.push(*slot);
                }
                (types, ids)
            }
        }
        Unit::Word => {
            let mut ids = IdBuf::with_capacity(text.len() / 5);
            let mut index = WordIndex::new();
            let mut add = |w: &'t str| {
                let id = index.id(w, &mut types);
                ids.push(id);
            };
            if text.is_ascii() {
                // `split_whitespace` on ASCII text: space and \t \n \x0b \x0c \r.
                let b = text.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    while i < b.len() && is_space(b[i]) {
                        i += 1;
                    }
                    let s = i;
                    while i < b.len() && !is_space(b[i]) {
                        i += 1;
                    }
                    if i > s {
                        add(&text[s..i]);
                    }
                }
            } else {
                text.split_whitespace().for_each(add);
            }
            (types, ids)
        }
    }
}

/// Word → id, ids given in order of first occurrence: open addressing over (hash, id) pairs,
/// the words kept once, back to back, in an arena (no allocation per word).
struct WordIndex {
    slots: Vec<(u64, u32)>,
    mask: usize,
    arena: Vec<u8>,
    /// (start in `arena`, length) of each id.
    spans: Vec<(u32, u32)>,
}

impl WordIndex {
    const EMPTY: u32 = u32::MAX;
    const K: u64 = 0x9E37_79B9_7F4A_7C15;

    fn new() -> Self {
        WordIndex {
            slots: vec![(0, Self::EMPTY); 1024],
            mask: 1023,
            arena: Vec::new(),
            spans: Vec::new(),
        }
    }

    #[inline]
    fn hash(w: &[u8]) -> u64 {
        let mut h = (w.len() as u64).wrapping_mul(Self::K);
        let mut chunks = w.chunks_exact(8);
        for c in &mut chunks {
            let x = u64::from_le_bytes(c.try_into().unwrap());
            h = (h ^ x).wrapping_mul(Self::K).rotate_left(29);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(Self::K);
        }
        h ^ (h >> 32)
    }

    #[inline]
    fn id(&mut self, w: &str, types: &mut Vec<String>) -> u32 {
        let w = w.as_bytes();
        let h = Self::hash(w);
        let mut i = h as usize & self.mask;
        loop {
            let (sh, id) = self.slots[i];
            if id == Self::EMPTY {
                return self.insert(i, h, w, types);
            }
            if sh == h {
                let (at, len) = self.spans[id as usize];
                if len as usize == w.len() && &self.arena[at as usize..(at + len) as usize] == w {
                    return id;
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    #[cold]
    fn insert(&mut self, slot: usize, h: u64, w: &[u8], types: &mut Vec<String>) -> u32 {
        let id = types.len() as u32;
        // `w` is a slice of a `str` cut at whitespace: valid UTF-8.
        types.push(String::from_utf8_lossy(w).into_owned());
        self.spans.push((self.arena.len() as u32, w.len() as u32));
        self.arena.extend_from_slice(w);
        self.slots[slot] = (h, id);
        if types.len() * 2 > self.slots.len() {
            let n = self.slots.len() * 2;
            let old = std::mem::replace(&mut self.slots, vec![(0, Self::EMPTY); n]);
            self.mask = n - 1;
            for (h, id) in old {
                if id != Self::EMPTY {
                    let mut i = h as usize & self.mask;
                    while self.slots[i].1 != Self::EMPTY {
                        i = (i + 1) & self.mask;
                    }
                    self.slots[i] = (h, id);
                }
            }
        }
        id
    }
}

#[inline]
fn is_space(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

pub fn tokenize_line(line: &str, unit: Unit) -> Vec<String> {
    match unit {
        Unit::Char => line.chars().map(String::from).collect(),
        Unit::Word => line.split_whitespace().map(str::to_string).collect(),
    }
}

impl Stage for Tokenize {
    const KIND: &'static str = "tokenize";
    const VERSION: u32 = 2;
    const ABOUT: &'static str =
        "Split lines into char or word tokens; `max_tokens` truncates the flattened corpus";
    const ROLES: Roles = Roles::Fixed(&["corpus"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[("corpus", &[Art::Lines])];
    const OUTPUT: Option<Art> = Some(Art::Tokens);

    fn validate(&self, issues: &mut Vec<super::ParamIssue>) {
        if let Some(m) = self.max_tokens {
            super::require_positive(issues, "max_tokens", m);
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let lines = Lines::read(ctx.input("corpus")?)?;
        let (types, ids) = tokenize_text(lines.as_str(), self.unit);
        drop(lines);
        let total = ids.len();
        let kept = total.min(self.max_tokens.unwrap_or(usize::MAX));
        let meta = TokensMeta {
            unit: self.unit,
            max_tokens: self.max_tokens,
            total,
            kept,
            types,
        };
        Tokens::write(ctx, &meta, &ids)?;
        ctx.summary("tokens_total", total);
        ctx.summary("tokens", kept);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_distinct_words_keep_their_ids() {
        let words: Vec<String> = (0..20_000).map(|i| format!("w{}", i % 7_001)).collect();
        let text = words.join(" ");
        let (types, ids) = tokenize_text(&text, Unit::Word);
        assert_eq!(types.len(), 7_001);
        let back: Vec<&str> = ids
            .to_vec()
            .iter()
            .map(|&i| types[i as usize].as_str())
            .collect();
        assert_eq!(back, words);
    }

    #[test]
    fn one_pass_tokenizing_matches_the_line_by_line_one() {
        for text in [
            "the time machine\nby h g wells\n\nx",
            "caf\u{e9} \u{e9}t\u{e9}\tx\u{a0}y\nz",
            "",
        ] {
            for unit in [Unit::Char, Unit::Word] {
                let want: Vec<String> = text
                    .split('\n')
                    .flat_map(|l| tokenize_line(l, unit))
                    .collect();
                let (types, ids) = tokenize_text(text, unit);
                let got: Vec<&str> = ids
                    .to_vec()
                    .iter()
                    .map(|&i| types[i as usize].as_str())
                    .collect();
                assert_eq!(got, want, "{unit:?} {text:?}");
                // Types are numbered in order of first occurrence.
                let mut seen = 0;
                for i in ids.to_vec() {
                    assert!(i <= seen);
                    if i == seen {
                        seen += 1;
                    }
                }
                assert_eq!(seen as usize, types.len());
            }
        }
    }
}
