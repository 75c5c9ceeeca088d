//! `tokenize`: lines → tokens (characters or whitespace-separated words).

use super::{Roles, Stage};
use crate::artifacts::{Art, FxHashMap, IdBuf, Lines, Tokens, TokensMeta};
use crate::context::StageCtx;
use anyhow::Result;
use serde::{Deserialize, Serialize};

pub use crate::artifacts::text::Unit;

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
pub fn tokenize_text(text: &str, unit: Unit) -> (Vec<String>, IdBuf) {
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
                // 64 bytes of slack: the vector path stores whole registers.
                let mut ids = crate::bigmem::bytes(bytes.len() + 64);
                let mut pos = 0;
                let mut i = 0;
                let new_type = |b: u8, map: &mut [u8; 128], types: &mut Vec<String>| {
                    let t = types.len() as u8;
                    map[b as usize] = t;
                    types.push((b as char).to_string());
                    t
                };
                while i < bytes.len() {
                    #[cfg(target_arch = "x86_64")]
                    if simd::available() {
                        // SAFETY: the CPU has the features; the text is ASCII; `ids` has room
                        // for every byte plus 64.
                        let (read, wrote) =
                            unsafe { simd::map_bytes(&bytes[i..], &map, &mut ids[pos..]) };
                        i += read;
                        pos += wrote;
                        if i == bytes.len() {
                            break;
                        }
                    }
                    // One byte at a time up to the end of the block that met a new type (or all
                    // of it without the vector path).
                    let end = if cfg!(target_arch = "x86_64") {
                        (i + 64).min(bytes.len())
                    } else {
                        bytes.len()
                    };
                    for &b in &bytes[i..end] {
                        let mut t = map[b as usize];
                        if t == NEW {
                            t = new_type(b, &mut map, &mut types);
                        }
                        ids[pos] = t;
                        pos += (b != b'\n') as usize;
                    }
                    i = end;
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
            if text.is_ascii() {
                // `split_whitespace` on ASCII text: space and \t \n \x0b \x0c \r.
                const SPACE: [bool; 256] = {
                    let mut t = [false; 256];
                    let mut b = 0;
                    while b < 256 {
                        t[b] = is_space(b as u8);
                        b += 1;
                    }
                    t
                };
                let b = text.as_bytes();
                let n = b.len();
                let mut i = 0;
                while i < n {
                    while i < n && SPACE[b[i] as usize] {
                        i += 1;
                    }
                    let s = i;
                    while i < n && !SPACE[b[i] as usize] {
                        i += 1;
                    }
                    if i > s {
                        ids.push(index.id(text, s, i - s, &mut types));
                    }
                }
            } else {
                let base = text.as_ptr() as usize;
                for w in text.split_whitespace() {
                    ids.push(index.id(text, w.as_ptr() as usize - base, w.len(), &mut types));
                }
            }
            (types, ids)
        }
    }
}

/// Word → id, ids given in order of first occurrence: open addressing over
/// (key, length, id) slots. A word of up to 8 bytes is its own key (its bytes as a
/// little-endian u64), so finding it is one comparison; a longer word's key is a hash, checked
/// against the word's bytes kept once, back to back, in an arena.
struct WordIndex {
    slots: Vec<(u64, u32, u32)>,
    bits: u32,
    arena: Vec<u8>,
    /// Start of each id's bytes in `arena` (its length is in its slot and in `types`).
    starts: Vec<u32>,
}

impl WordIndex {
    const EMPTY: u32 = u32::MAX;
    const K: u64 = 0x9E37_79B9_7F4A_7C15;

    fn new() -> Self {
        WordIndex {
            slots: vec![(0, 0, Self::EMPTY); 1 << 10],
            bits: 10,
            arena: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// The bytes `text[at..at + len]` (len ≤ 8) as a little-endian u64, zero-padded.
    #[inline]
    fn load(text: &[u8], at: usize, len: usize) -> u64 {
        if at + 8 <= text.len() {
            let x = u64::from_le_bytes(text[at..at + 8].try_into().unwrap());
            if len >= 8 {
                x
            } else {
                x & ((1u64 << (len * 8)) - 1)
            }
        } else {
            let mut b = [0u8; 8];
            b[..len].copy_from_slice(&text[at..at + len]);
            u64::from_le_bytes(b)
        }
    }

    #[inline]
    fn key(text: &[u8], at: usize, len: usize) -> u64 {
        if len <= 8 {
            return Self::load(text, at, len);
        }
        let mut h = (len as u64).wrapping_mul(Self::K);
        let mut i = 0;
        while i < len {
            let n = (len - i).min(8);
            h = (h ^ Self::load(text, at + i, n))
                .wrapping_mul(Self::K)
                .rotate_left(29);
            i += n;
        }
        h
    }

    #[inline]
    fn slot(&self, key: u64) -> usize {
        ((key ^ (key >> 31)).wrapping_mul(Self::K) >> (64 - self.bits)) as usize
    }

    /// The id of the word `text[at..at + len]`.
    #[inline]
    fn id(&mut self, text: &str, at: usize, len: usize, types: &mut Vec<String>) -> u32 {
        let bytes = text.as_bytes();
        let key = Self::key(bytes, at, len);
        let mask = self.slots.len() - 1;
        let mut i = self.slot(key);
        loop {
            let (k, l, id) = self.slots[i];
            if id == Self::EMPTY {
                return self.insert(i, key, &text[at..at + len], types);
            }
            if k == key && l as usize == len {
                let s = self.starts[id as usize] as usize;
                if len <= 8 || self.arena[s..s + len] == bytes[at..at + len] {
                    return id;
                }
            }
            i = (i + 1) & mask;
        }
    }

    #[cold]
    fn insert(&mut self, slot: usize, key: u64, w: &str, types: &mut Vec<String>) -> u32 {
        let id = types.len() as u32;
        types.push(w.to_string());
        self.starts.push(self.arena.len() as u32);
        self.arena.extend_from_slice(w.as_bytes());
        self.slots[slot] = (key, w.len() as u32, id);
        if types.len() * 2 > self.slots.len() {
            self.bits += 1;
            let old = std::mem::replace(&mut self.slots, vec![(0, 0, Self::EMPTY); 1 << self.bits]);
            let mask = self.slots.len() - 1;
            for e in old {
                if e.2 != Self::EMPTY {
                    let mut i = self.slot(e.0);
                    while self.slots[i].2 != Self::EMPTY {
                        i = (i + 1) & mask;
                    }
                    self.slots[i] = e;
                }
            }
        }
        id
    }
}

#[inline]
const fn is_space(b: u8) -> bool {
    b == b' ' || (b >= b'\t' && b <= b'\r')
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
        ids.recycle();
        ctx.summary("tokens_total", total);
        ctx.summary("tokens", kept);
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    pub use super::super::byte_simd::available;

    /// Maps ASCII bytes to ids through `map` (128 entries, `u8::MAX` for a byte not seen yet),
    /// 64 at a time, dropping line ends (VPERMI2B looks up, VPCOMPRESSB packs). Stops before
    /// the first block holding an unseen byte; returns the bytes read and the ids written.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VBMI/VBMI2, `text` is ASCII and `out.len() >= text.len() + 64`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vbmi2,popcnt")]
    pub unsafe fn map_bytes(text: &[u8], map: &[u8; 128], out: &mut [u8]) -> (usize, usize) {
        assert!(out.len() >= text.len() + 64);
        let lo = _mm512_loadu_si512(map.as_ptr() as *const _);
        let hi = _mm512_loadu_si512(map.as_ptr().add(64) as *const _);
        let (nl, new) = (_mm512_set1_epi8(b'\n' as i8), _mm512_set1_epi8(-1));
        let (mut i, mut pos) = (0, 0);
        while i < text.len() {
            let n = (text.len() - i).min(64);
            let valid = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            let v = _mm512_maskz_loadu_epi8(valid, text.as_ptr().add(i) as *const i8);
            let ids = _mm512_permutex2var_epi8(lo, v, hi);
            if _mm512_mask_cmpeq_epi8_mask(valid, ids, new) != 0 {
                break;
            }
            let keep = !_mm512_cmpeq_epi8_mask(v, nl) & valid;
            let packed = _mm512_maskz_compress_epi8(keep, ids);
            _mm512_storeu_si512(out.as_mut_ptr().add(pos) as *mut _, packed);
            pos += keep.count_ones() as usize;
            i += n;
        }
        (i, pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_ids_do_not_depend_on_the_vector_path() {
        // New types appear at every distance from the 64-byte blocks, line ends everywhere.
        let mut text = String::new();
        for k in 0..400usize {
            let c = (b'a' + (k * 7 % 26) as u8) as char;
            text.push(c);
            if k % 13 == 0 {
                text.push('\n');
            }
            if k % 97 == 0 {
                text.push((b'A' + (k / 97) as u8) as char);
            }
        }
        let (types, ids) = tokenize_text(&text, Unit::Char);
        let mut want_types: Vec<String> = Vec::new();
        let mut want_ids = Vec::new();
        for c in text.chars().filter(|&c| c != '\n') {
            let s = c.to_string();
            let id = match want_types.iter().position(|t| *t == s) {
                Some(i) => i,
                None => {
                    want_types.push(s);
                    want_types.len() - 1
                }
            };
            want_ids.push(id as u32);
        }
        assert_eq!(types, want_types);
        assert_eq!(ids.to_vec(), want_ids);
    }

    #[test]
    fn many_distinct_words_keep_their_ids() {
        let words: Vec<String> = (0..20_000)
            .map(|i| match i % 3 {
                0 => format!("w{}", i % 7_001),
                1 => format!("a-longer-word-{}", i % 7_001),
                _ => format!("{}", i % 7_001),
            })
            .collect();
        let text = words.join(" ");
        let (types, ids) = tokenize_text(&text, Unit::Word);
        let distinct: std::collections::HashSet<&String> = words.iter().collect();
        assert_eq!(types.len(), distinct.len());
        assert!(types.len() > 10_000);
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
