//! The text artifacts: corpus lines, tokens, a vocabulary with corpus ids, corpus ids alone.

use super::ids::{self, IdBuf, Ids};
use super::vocab::Vocab;
use crate::context::StageCtx;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a token is: a character, or a whitespace-separated word.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Char,
    Word,
}

pub use Unit as TokenUnit;

/// Corpus lines (`load_corpus`): `lines.txt`, UTF-8, the lines joined by `\n`.
pub struct Lines {
    text: super::Mapped,
}

impl Lines {
    pub const FILE: &'static str = "lines.txt";

    /// `text` is the lines joined by `\n` (valid UTF-8).
    pub fn write(ctx: &StageCtx, text: &[u8]) -> Result<()> {
        debug_assert!(std::str::from_utf8(text).is_ok());
        ctx.write_bytes(Self::FILE, text)
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(Self::FILE);
        let text =
            super::read_mapped(&path).with_context(|| format!("reading {}", path.display()))?;
        if std::str::from_utf8(&text).is_err() {
            bail!("{} is not UTF-8", path.display());
        }
        Ok(Lines { text })
    }

    /// The lines joined by `\n`.
    pub fn as_str(&self) -> &str {
        // Checked in `read`.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.as_str().split('\n')
    }
}

/// What `tokens.json` holds: how the corpus was cut, and the token types in first-occurrence
/// order (the ids of `tokens.bin` index this list).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokensMeta {
    pub unit: TokenUnit,
    /// The corpus is the first `max_tokens` tokens; the vocabulary counts them all (the book).
    pub max_tokens: Option<usize>,
    /// Tokens in `tokens.bin`.
    pub total: usize,
    /// Tokens in the corpus after `max_tokens`.
    pub kept: usize,
    /// Distinct tokens, in order of first occurrence.
    pub types: Vec<String>,
}

/// Tokens (`tokenize`): `tokens.json` (the token types and counts), `tokens.bin` (every token as
/// the index of its type, an [`ids`] file), and `preview.txt` (the first tokens, for people).
pub struct Tokens {
    pub meta: TokensMeta,
    pub ids: Ids,
}

impl Tokens {
    pub const META: &'static str = "tokens.json";
    pub const IDS: &'static str = "tokens.bin";
    pub const PREVIEW: &'static str = "preview.txt";
    const PREVIEW_TOKENS: usize = 200;

    /// `ids` index `meta.types`.
    pub fn write(ctx: &StageCtx, meta: &TokensMeta, ids: &IdBuf) -> Result<()> {
        let max_id = meta.types.len().saturating_sub(1) as u32;
        ids.write(&ctx.out_path(Self::IDS), max_id)?;
        ctx.write_json(Self::META, meta)?;
        let sep = if meta.unit == TokenUnit::Char {
            ""
        } else {
            " "
        };
        let shown: Vec<&str> = (0..ids.len().min(Self::PREVIEW_TOKENS))
            .map(|i| meta.types[ids.get(i) as usize].as_str())
            .collect();
        let more = if ids.len() > Self::PREVIEW_TOKENS {
            format!("\n… ({} tokens in all; tokens.bin holds them)\n", ids.len())
        } else {
            "\n".into()
        };
        ctx.write_text(Self::PREVIEW, &(shown.join(sep) + &more))
    }

    pub fn read(dir: &Path) -> Result<Self> {
        let meta: TokensMeta = crate::context::read_json(&dir.join(Self::META))?;
        let ids = Ids::open(&dir.join(Self::IDS))?;
        if ids.len() != meta.total {
            bail!(
                "{} holds {} tokens, {} says {}",
                Self::IDS,
                ids.len(),
                Self::META,
                meta.total
            );
        }
        Ok(Tokens { meta, ids })
    }

    /// The corpus: the type ids of the first `max_tokens` tokens.
    pub fn corpus_ids(&self) -> Vec<u32> {
        self.ids.prefix_vec(self.meta.kept)
    }

    /// The corpus as strings borrowed from the type table (no string per token).
    pub fn corpus_strs(&self) -> Vec<&str> {
        let mut v = Vec::with_capacity(self.meta.kept);
        self.ids.for_each_prefix(self.meta.kept, |i| {
            v.push(self.meta.types[i as usize].as_str())
        });
        v
    }

    pub fn token(&self, id: u32) -> &str {
        &self.meta.types[id as usize]
    }
}

/// Corpus ids (`toy_sequence`, and part of a vocabulary and of batches): `corpus.bin`.
pub struct CorpusIds;

impl CorpusIds {
    pub const FILE: &'static str = "corpus.bin";

    pub fn write(ctx: &StageCtx, ids: &[u32], max_id: u32) -> Result<()> {
        ids::write(&ctx.out_path(Self::FILE), ids, max_id)
    }

    pub fn open(dir: &Path) -> Result<Ids> {
        Ids::open(&dir.join(Self::FILE))
    }

    /// The corpus as `u32` ids.
    pub fn read(dir: &Path) -> Result<Vec<u32>> {
        Ok(Self::open(dir)?.to_vec())
    }

    /// Carry an input's corpus into this stage's output (a sampler keeps its corpus).
    pub fn copy(ctx: &StageCtx, role: &str) -> Result<()> {
        ctx.copy_from_input(role, Self::FILE)
    }
}

/// A vocabulary with its corpus (`build_vocab`): `vocab.csv` (token, index, count) and
/// `corpus.bin` (the corpus as vocabulary indices).
pub struct VocabArtifact;

impl VocabArtifact {
    pub const VOCAB: &'static str = "vocab.csv";

    pub fn write(ctx: &StageCtx, vocab: &Vocab, corpus: &IdBuf) -> Result<()> {
        vocab.write_csv(&ctx.out_path(Self::VOCAB))?;
        corpus.write(
            &ctx.out_path(CorpusIds::FILE),
            vocab.len().saturating_sub(1) as u32,
        )
    }

    pub fn has_vocab(dir: &Path) -> bool {
        dir.join(Self::VOCAB).exists()
    }

    pub fn read_vocab(dir: &Path) -> Result<Vocab> {
        Vocab::read_csv(&dir.join(Self::VOCAB))
    }

    /// Carry an input's vocabulary into this stage's output, when it has one.
    pub fn copy_vocab(ctx: &StageCtx, role: &str) -> Result<()> {
        if Self::has_vocab(ctx.input(role)?) {
            ctx.copy_from_input(role, Self::VOCAB)?;
        }
        Ok(())
    }
}
