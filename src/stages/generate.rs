//! `generate`: text from a trained language model — greedy, or sampled from p^alpha.

use super::model::AnyModel;
use super::{ParamIssue, Roles, Stage};
use crate::artifacts::Art;
use crate::context::StageCtx;
use crate::nn::Sampling;
use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GenStrategy {
    Greedy,
    Sample,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    /// Text to warm the state up with; the output continues it.
    #[serde(default = "prefix_default")]
    pub prefix: String,
    /// Tokens to generate after the prefix.
    #[serde(default = "num_preds_default")]
    pub num_preds: usize,
    /// `greedy`: the most likely next token; `sample`: draw from the (alpha-sharpened) distribution.
    #[serde(default = "greedy")]
    pub strategy: GenStrategy,
    /// Sampling sharpness: probabilities p^alpha, renormalised (1: the model's own).
    #[serde(default = "alpha_default")]
    pub alpha: f64,
    /// Independent samples to draw (sampling only).
    #[serde(default = "one")]
    pub samples: usize,
}

fn prefix_default() -> String {
    "time traveller".into()
}
fn num_preds_default() -> usize {
    50
}
fn greedy() -> GenStrategy {
    GenStrategy::Greedy
}
fn alpha_default() -> f64 {
    1.0
}
fn one() -> usize {
    1
}

impl Stage for Generate {
    const KIND: &'static str = "generate";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Generate text from a prefix: greedy, or sampled with exponent alpha";
    const ROLES: Roles = Roles::Fixed(&["model"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] =
        &[("model", &[Art::TrainedModel])];
    const OUTPUT: Option<Art> = Some(Art::Text);
    const STOCHASTIC: bool = true;
    const USES_DEVICE: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            issues.push(ParamIssue::new(
                "alpha",
                format!("alpha must be positive, found {}", self.alpha),
                "e.g. `alpha: 2`",
            ));
        }
        super::require_positive(issues, "samples", self.samples);
        if self.prefix.is_empty() {
            issues.push(ParamIssue::new(
                "prefix",
                "the prefix is empty",
                "e.g. `prefix: time traveller`",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let dir = ctx.input("model")?.to_path_buf();
        let (_, model) = AnyModel::load(&dir, ctx.device)?;
        let AnyModel::Lm(lm) = model else {
            bail!("`generate` needs a language model")
        };
        let vocab = crate::artifacts::VocabArtifact::read_vocab(&dir)
            .context("the model's folder has no vocab.csv: feed `generate` a `train` stage")?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ctx.seed);
        let sampling = match self.strategy {
            GenStrategy::Greedy => Sampling::Greedy,
            GenStrategy::Sample => Sampling::Sample {
                alpha: self.alpha as f32,
            },
        };
        let n = if self.strategy == GenStrategy::Greedy {
            1
        } else {
            self.samples
        };
        let mut texts = Vec::new();
        for _ in 0..n {
            let out = lm.predict(
                &vocab.encode(&self.prefix),
                self.num_preds,
                sampling,
                &mut rng,
            )?;
            texts.push(vocab.decode(&out));
        }
        for t in &texts {
            ctx.log(t.clone());
        }
        ctx.write_text("generated.txt", &(texts.join("\n") + "\n"))?;
        ctx.summary("text", texts[0].clone());
        Ok(())
    }
}
