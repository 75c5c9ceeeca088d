//! `encode`: map texts to vocabulary indices, to inspect a vocabulary (exercise 8.2.2).

use super::load_corpus::preprocess_d2l;
use super::tokenize::{tokenize_line, Unit};
use super::{ParamIssue, Roles, Stage};
use crate::artifacts::{Art, VocabArtifact};
use crate::context::StageCtx;
use anyhow::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encode {
    /// Texts to map to vocabulary indices, one row each.
    pub texts: Vec<String>,
    /// How the texts are split: `word` or `char` (as the vocabulary was built).
    #[serde(default = "word")]
    pub unit: Unit,
}

fn word() -> Unit {
    Unit::Word
}

#[derive(Serialize)]
struct Row {
    text: String,
    tokens: String,
    indices: String,
}

impl Stage for Encode {
    const KIND: &'static str = "encode";
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "Map texts to vocabulary indices (unknown tokens → 0)";
    const ROLES: Roles = Roles::Fixed(&["vocab"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[("vocab", &[Art::Vocab])];
    const OUTPUT: Option<Art> = Some(Art::Table);

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        if self.texts.is_empty() {
            issues.push(ParamIssue::new(
                "texts",
                "param `texts` is empty",
                "list at least one text to encode",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let vocab = VocabArtifact::read_vocab(ctx.input("vocab")?)?;
        let mut rows = Vec::new();
        for t in &self.texts {
            let toks = tokenize_line(&preprocess_d2l(t), self.unit);
            let idx: Vec<u32> = toks.iter().map(|x| vocab.get(x)).collect();
            ctx.log(format!("{t:?} -> {idx:?}"));
            rows.push(Row {
                text: t.clone(),
                tokens: toks.join(" "),
                indices: format!("{idx:?}"),
            });
        }
        ctx.summary("texts", rows.len());
        let mut md = String::from("| text | indices |\n|---|---|\n");
        for r in &rows {
            md.push_str(&format!("| {} | {} |\n", r.text, r.indices));
        }
        ctx.write_text("table.md", &md)?;
        ctx.write_csv("encoded.csv", rows)
    }
}
