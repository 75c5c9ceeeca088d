//! `load_corpus`: read a text file, optionally with the book's preprocessing.

use super::{ParamIssue, Roles, Stage};
use crate::artifacts::{Art, Lines};
use crate::context::StageCtx;
use anyhow::{bail, Context, Result};
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
        let path = ctx.root.join(&self.path);
        let bytes = crate::artifacts::read_mapped(&path)
            .with_context(|| format!("cannot read corpus `{}`", self.path))?;
        let bytes: &[u8] = &bytes;
        if bytes.is_empty() {
            bail!(
                "corpus `{}` is empty: a corpus needs at least one line of text",
                self.path
            );
        }
        if let Err(e) = std::str::from_utf8(&bytes) {
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
/// text and its number of lines.
pub fn clean_d2l(bytes: &[u8]) -> (Vec<u8>, usize) {
    // A letter's lower case, 0 for every other byte.
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
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    // Each byte adds at most one byte (a space is only written for a gap it replaces).
    let mut out = crate::bigmem::bytes(body.len() + 1);
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
    out.truncate(pos);
    (out, lines)
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
    fn paths_must_stay_inside() {
        assert!(stays_inside("data/timemachine.txt"));
        assert!(stays_inside("data/../data/x.txt"));
        assert!(!stays_inside("../secret.txt"));
        assert!(!stays_inside("data/../../x"));
        assert!(stays_inside("/abs/path.txt"));
    }
}
