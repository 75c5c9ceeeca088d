//! `toy_sequence`: the sequence 0, 1, ..., length-1 as a corpus (book 8.3's partitioning demo).

use super::{ParamIssue, Roles, Stage};
use crate::artifacts::{Art, CorpusIds};
use crate::context::StageCtx;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToySequence {
    /// Tokens 0, 1, …, length - 1 (for checking the samplers by hand).
    pub length: usize,
}

impl Stage for ToySequence {
    const KIND: &'static str = "toy_sequence";
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "The corpus 0..length, for looking at how batches are cut";
    const ROLES: Roles = Roles::Fixed(&[]);
    const OUTPUT: Option<Art> = Some(Art::CorpusIds);

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "length", self.length);
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let corpus: Vec<u32> = (0..self.length as u32).collect();
        CorpusIds::write(ctx, &corpus, corpus.len().saturating_sub(1) as u32)?;
        ctx.summary("corpus_len", corpus.len());
        Ok(())
    }
}
