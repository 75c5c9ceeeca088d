//! `load_corpus`: read a text file, optionally with the book's preprocessing.

use super::{ParamIssue, Roles, Stage};
use crate::artifacts::{Art, Lines};
use crate::context::StageCtx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Preprocess {
    /// Every run of non-letters becomes one space; the line is trimmed and lower-cased.
    D2l,
    /// The text as it is.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadCorpus {
    /// Relative to the project root (must stay inside it), or absolute.
    pub path: String,
    /// `d2l`: the book's cleaning (non-letters to spaces, lower case); `none`: the text as it is.
    #[serde(default = "default_preprocess")]
    pub preprocess: Preprocess,
}

fn default_preprocess() -> Preprocess {
    Preprocess::D2l
}

/// The book's `read_time_machine` line cleaning.
pub fn preprocess_d2l(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_gap = false;
    for c in line.chars() {
        if c.is_ascii_alphabetic() {
            if in_gap {
                out.push(' ');
                in_gap = false;
            }
            out.push(c.to_ascii_lowercase());
        } else {
            in_gap = true;
        }
    }
    // A leading gap was never pushed (trim start); a trailing one is dropped (trim end).
    if out.starts_with(' ') {
        out.remove(0);
    }
    out
}

/// Whether a relative path stays inside the project root.
pub fn stays_inside(path: &str) -> bool {
    let p = Path::new(path);
    if p.is_absolute() {
        return true;
    }
    let mut depth: i64 = 0;
    for c in p.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

impl Stage for LoadCorpus {
    const KIND: &'static str = "load_corpus";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Read a UTF-8 text file; `preprocess: d2l` keeps letters only, lower-cased (book 8.2)";
    const ROLES: Roles = Roles::Fixed(&[]);
    const OUTPUT: Option<Art> = Some(Art::Lines);

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        if self.path.trim().is_empty() {
            issues.push(ParamIssue::new(
                "path",
                "param `path` is empty",
                "give the corpus file, e.g. `data/timemachine.txt`",
            ));
        } else if !stays_inside(&self.path) {
            issues.push(ParamIssue::new(
                "path",
                format!("path `{}` leaves the project folder", self.path),
                "use a path inside the project (e.g. `data/...`), or an absolute path",
            ));
        }
    }

    fn files(&self) -> Vec<String> {
        vec![self.path.clone()]
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let bytes = ctx.read_project_file(&self.path)?;
        let bytes: &[u8] = &bytes;
        if bytes.is_empty() {
            bail!(
                "corpus `{}` is empty: a corpus needs at least one line of text",
                self.path
            );
        }
        if let Err(e) = std::str::from_utf8(bytes) {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            bail!("corpus `{}` is not UTF-8 text (invalid byte at offset {at}, line {line}); convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`", self.path);
        }
        let (text, lines) = match self.preprocess {
            Preprocess::D2l => clean_d2l(bytes),
            Preprocess::None => keep_lines(bytes),
        };
        if std::str::from_utf8(&text)?.trim().is_empty() {
            bail!(
                "corpus `{}` has no text left after preprocessing ({:?})",
                self.path,
                self.preprocess
            );
        }
        // Characters: every byte that does not continue a UTF-8 sequence, line ends aside.
        let chars = match self.preprocess {
            // ASCII: a byte per character.
            Preprocess::D2l => text.len(),
            Preprocess::None => text.iter().filter(|&&b| (b as i8) >= -0x40).count(),
        } - (lines - 1);
        Lines::write(ctx, &text)?;
        crate::bigmem::recycle(text);
        ctx.summary("lines", lines);
        ctx.summary("chars", chars);
        Ok(())
    }
}

/// Split like `str::lines`: on `\n`, a trailing `\r` dropped, no last empty line.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let ended = bytes.ends_with(b"\n");
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let last = body.iter().filter(|&&b| b == b'\n').count();
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(move |(i, l)| match l.strip_suffix(b"\r") {
            Some(s) if i < last || ended => s,
            _ => l,
        })
}

/// The corpus with every line cleaned as [`preprocess_d2l`] does, joined by `\n`, in one pass
/// over the bytes (non-ASCII bytes are never letters, so no decoding is needed). Returns the
/// text and its number of lines. With AVX-512 VBMI2 64 bytes go at once (`simd::clean`), else
/// one at a time; both give the same bytes.
pub fn clean_d2l(bytes: &[u8]) -> (Vec<u8>, usize) {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    // Each byte adds at most one byte (a space is only written for a gap it replaces); the
    // vector path stores whole 64-byte registers, hence the slack.
    let mut out = crate::bigmem::bytes(body.len() + 65);
    #[cfg(target_arch = "x86_64")]
    if simd::available() {
        // SAFETY: the CPU has the features; `out` has room for body.len() + 64 bytes.
        let (pos, lines) = unsafe { simd::clean(body, &mut out) };
        out.truncate(pos);
        return (out, lines);
    }
    let (pos, lines) = clean_scalar(body, &mut out);
    out.truncate(pos);
    (out, lines)
}

/// A letter's lower case, 0 for every other byte.
const LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let l = (b as u8) | 0x20;
        if l.is_ascii_lowercase() {
            t[b] = l;
        }
        b += 1;
    }
    t
};

/// `clean_d2l` a byte at a time into `out` (at least `body.len() + 1` long); returns the
/// length written and the number of lines.
fn clean_scalar(body: &[u8], out: &mut [u8]) -> (usize, usize) {
    assert!(out.len() > body.len());
    let (mut pos, mut start, mut lines) = (0usize, 0usize, 1usize);
    let mut prev_letter = false;
    let o = out.as_mut_ptr();
    for &b in body {
        if b == b'\n' {
            // SAFETY (all writes): `pos` never passes the number of bytes read so far, and a
            // space is written only in the place of a gap byte already read, so
            // `pos + 1 <= body.len() < out.len()`.
            unsafe { *o.add(pos) = b'\n' };
            pos += 1;
            start = pos;
            lines += 1;
            prev_letter = false;
            continue;
        }
        // Branch-free: a space before a letter that follows a gap inside the line, then the
        // letter; a non-letter writes nothing.
        let l = LOWER[b as usize];
        let is_letter = l != 0;
        unsafe { *o.add(pos) = b' ' };
        pos += (is_letter & !prev_letter & (pos > start)) as usize;
        unsafe { *o.add(pos) = l };
        pos += is_letter as usize;
        prev_letter = is_letter;
    }
    debug_assert!(pos <= body.len());
    (pos, lines)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    pub use super::super::byte_simd::available;

    /// `clean_scalar` on 64 bytes at a time, with bit masks:
    /// * L letters, N line ends, G the other bytes (gaps);
    /// * a gap run that follows a letter (its first byte is in SL = G & (L << 1)) and ends just
    ///   before a letter becomes one space, written in place of the run's last byte: adding SL to
    ///   G carries through each such run and sets the bit just after it, which is kept where it
    ///   is a letter. A run reaching the end of a block carries into the next one (`carry`);
    ///   if that block starts with a letter, the space is written first.
    /// * the kept bytes (letters lower-cased, those spaces, line ends) are packed with
    ///   VPCOMPRESSB and stored as a whole register.
    ///
    /// # Safety
    /// The CPU has AVX-512F/BW/VBMI2, and `out.len() >= body.len() + 65`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2,popcnt")]
    pub unsafe fn clean(body: &[u8], out: &mut [u8]) -> (usize, usize) {
        assert!(out.len() >= body.len() + 65);
        let (a_lower, z_lower) = (_mm512_set1_epi8(b'a' as i8), _mm512_set1_epi8(b'z' as i8));
        let (case, nl, space) = (
            _mm512_set1_epi8(0x20),
            _mm512_set1_epi8(b'\n' as i8),
            _mm512_set1_epi8(b' ' as i8),
        );
        let (mut pos, mut lines) = (0usize, 1usize);
        let mut prev_letter = 0u64; // bit 0: the byte before this block is a letter
        let mut carry = false; // a gap run after a letter reaches into this block
        let o = out.as_mut_ptr();
        let mut i = 0;
        while i < body.len() {
            let n = (body.len() - i).min(64);
            let valid = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            let v = _mm512_maskz_loadu_epi8(valid, body.as_ptr().add(i) as *const i8);
            let c = _mm512_or_si512(v, case);
            let l = _mm512_cmpge_epu8_mask(c, a_lower) & _mm512_cmple_epu8_mask(c, z_lower) & valid;
            let nlm = _mm512_cmpeq_epi8_mask(v, nl) & valid;
            let g = !(l | nlm) & valid;
            if carry && l & 1 != 0 {
                *o.add(pos) = b' ';
                pos += 1;
            }
            let cin = (carry && g & 1 != 0) as u64;
            let sl = g & ((l << 1) | prev_letter);
            let (x, c1) = g.overflowing_add(sl);
            let (x, c2) = x.overflowing_add(cin);
            let e = ((x & !g & l) >> 1) & g;
            let keep = l | nlm | e;
            let bytes = _mm512_mask_blend_epi8(e, _mm512_mask_blend_epi8(l, v, c), space);
            let packed = _mm512_maskz_compress_epi8(keep, bytes);
            _mm512_storeu_si512(o.add(pos) as *mut _, packed);
            pos += keep.count_ones() as usize;
            lines += nlm.count_ones() as usize;
            carry = (c1 || c2) && n == 64;
            prev_letter = (l >> 63) & (n == 64) as u64;
            i += n;
        }
        (pos, lines)
    }
}

/// The corpus as it is, line ends normalised to `\n`.
fn keep_lines(bytes: &[u8]) -> (Vec<u8>, usize) {
    let mut out = crate::bigmem::with_capacity(bytes.len());
    let mut lines = 0;
    for line in split_lines(bytes) {
        if lines > 0 {
            out.push(b'\n');
        }
        lines += 1;
        out.extend_from_slice(line);
    }
    (out, lines)
}

/// Read the lines a `load_corpus` stage wrote.
pub fn read_lines(dir: &Path) -> Result<Vec<String>> {
    Ok(Lines::read(dir)?.lines().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d2l_preprocessing() {
        assert_eq!(
            preprocess_d2l("The Time Machine, by H. G. Wells [1898]"),
            "the time machine by h g wells"
        );
        assert_eq!(preprocess_d2l("  --Hello--World--  "), "hello world");
        assert_eq!(preprocess_d2l("1234"), "");
        assert_eq!(preprocess_d2l("don't"), "don t");
    }

    #[test]
    fn byte_cleaning_matches_the_line_cleaning() {
        let text = "The Time Machine, by H. G. Wells [1898]\r\n\n  --Hello--World--  \n1234\ncaf\u{e9} Z\u{fc}rich don't\n\n";
        for text in [text, "a\r", "a\r\nb\rc\r\n", "\n", "x"] {
            let want: Vec<String> = text.lines().map(preprocess_d2l).collect();
            let (got, n) = clean_d2l(text.as_bytes());
            assert_eq!(String::from_utf8(got).unwrap(), want.join("\n"));
            assert_eq!(n, want.len());
            let (kept, n) = keep_lines(text.as_bytes());
            let want: Vec<&str> = text.lines().collect();
            assert_eq!(String::from_utf8(kept).unwrap(), want.join("\n"));
            assert_eq!(n, want.len());
        }
    }

    #[test]
    fn vector_cleaning_matches_the_byte_at_a_time_one() {
        // Random texts over a small alphabet that makes every case common: letters of both
        // cases, gaps, line ends, \r, non-ASCII; lengths around the 64-byte blocks.
        let alphabet = b"aZq .,-\n\r\xc3\xa9";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases: Vec<Vec<u8>> = vec![
            b"ab".repeat(40),
            b" x".repeat(70),
            [b"a".repeat(63), b"  b".to_vec()].concat(),
            [b"a".repeat(60), b"....".to_vec(), b"...b".to_vec()].concat(),
            [b"a".repeat(63), b"-\nb".to_vec()].concat(),
            [b"a".repeat(64), b"-".repeat(64), b"b".to_vec()].concat(),
        ];
        for len in (0..300).chain([1000, 4099]) {
            cases.push(
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect(),
            );
        }
        for text in cases {
            let mut want = vec![0u8; text.len() + 65];
            let (wn, wl) = clean_scalar(&text, &mut want);
            #[cfg(target_arch = "x86_64")]
            if simd::available() {
                let mut got = vec![0u8; text.len() + 65];
                let (gn, gl) = unsafe { simd::clean(&text, &mut got) };
                assert_eq!(
                    (&got[..gn], gl),
                    (&want[..wn], wl),
                    "{:?}",
                    String::from_utf8_lossy(&text)
                );
            }
            // and the scalar one is the line-by-line definition
            if let Ok(s) = std::str::from_utf8(&text) {
                let lines: Vec<String> = s.split('\n').map(preprocess_d2l).collect();
                assert_eq!(String::from_utf8_lossy(&want[..wn]), lines.join("\n"));
                assert_eq!(wl, lines.len());
            }
        }
    }

    #[test]
    fn paths_must_stay_inside() {
        assert!(stays_inside("data/timemachine.txt"));
        assert!(stays_inside("data/../data/x.txt"));
        assert!(!stays_inside("../secret.txt"));
        assert!(!stays_inside("data/../../x"));
        assert!(stays_inside("/abs/path.txt"));
    }
}
