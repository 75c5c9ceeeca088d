//! `tokenize`: lines → tokens (characters or whitespace-separated words).

use super::{Roles, Stage};
use crate::context::StageCtx;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// Tokens per line, and the truncation to apply to the flattened corpus.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tokens {
    pub unit: Unit,
    pub max_tokens: Option<usize>,
    pub lines: Vec<Vec<String>>,
}

impl Tokens {
    /// The flattened corpus, truncated to `max_tokens`.
    pub fn corpus(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .flatten()
            .map(String::as_str)
            .take(self.max_tokens.unwrap_or(usize::MAX))
    }

    pub fn read(dir: &Path) -> Result<Self> {
        crate::context::read_json(&dir.join("tokens.json"))
    }
}

pub fn tokenize_line(line: &str, unit: Unit) -> Vec<String> {
    match unit {
        Unit::Char => line.chars().map(String::from).collect(),
        Unit::Word => line.split_whitespace().map(str::to_string).collect(),
    }
}

impl Stage for Tokenize {
    const KIND: &'static str = "tokenize";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Split lines into char or word tokens; `max_tokens` truncates the flattened corpus";
    const ROLES: Roles = Roles::Fixed(&["corpus"]);

    fn validate(&self, issues: &mut Vec<super::ParamIssue>) {
        if let Some(m) = self.max_tokens {
            super::require_positive(issues, "max_tokens", m);
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let lines = super::load_corpus::read_lines(ctx.input("corpus")?)?;
        let tokens = Tokens {
            unit: self.unit,
            max_tokens: self.max_tokens,
            lines: lines.iter().map(|l| tokenize_line(l, self.unit)).collect(),
        };
        let total: usize = tokens.lines.iter().map(Vec::len).sum();
        let kept = tokens.corpus().count();
        ctx.write_json_compact("tokens.json", &tokens)?;
        ctx.summary("tokens_total", total);
        ctx.summary("tokens", kept);
        Ok(())
    }
}
