//! `load_corpus`: read a text file, optionally with the book's preprocessing.

use super::{ParamIssue, Roles, Stage};
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
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read corpus `{}`", self.path))?;
        if bytes.is_empty() {
            bail!(
                "corpus `{}` is empty: a corpus needs at least one line of text",
                self.path
            );
        }
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
                bail!("corpus `{}` is not UTF-8 text (invalid byte at offset {at}, line {line}); convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8`", self.path);
            }
        };
        let lines: Vec<String> = match self.preprocess {
            Preprocess::D2l => text.lines().map(preprocess_d2l).collect(),
            Preprocess::None => text.lines().map(str::to_string).collect(),
        };
        if lines.iter().all(|l| l.trim().is_empty()) {
            bail!(
                "corpus `{}` has no text left after preprocessing ({:?})",
                self.path,
                self.preprocess
            );
        }
        let chars: usize = lines.iter().map(|l| l.chars().count()).sum();
        ctx.write_text("lines.txt", &lines.join("\n"))?;
        ctx.summary("lines", lines.len());
        ctx.summary("chars", chars);
        Ok(())
    }
}

/// Read the lines a `load_corpus` stage wrote.
pub fn read_lines(dir: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("lines.txt")).context("reading lines.txt")?;
    Ok(text.split('\n').map(str::to_string).collect())
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
    fn paths_must_stay_inside() {
        assert!(stays_inside("data/timemachine.txt"));
        assert!(stays_inside("data/../data/x.txt"));
        assert!(!stays_inside("../secret.txt"));
        assert!(!stays_inside("data/../../x"));
        assert!(stays_inside("/abs/path.txt"));
    }
}
