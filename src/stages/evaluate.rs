//! `evaluate`: perplexity of a language model on its corpus, or 1-step and k-step-ahead MSE
//! of a series model on the test part of its series (book 8.1).

use super::model::AnyModel;
use super::sample_batches::{partition_sequential, SamplerSpec};
use super::series::Features;
use super::{ParamIssue, Roles, Stage};
use crate::artifacts::Art;
use crate::context::StageCtx;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which part of a language model's corpus to score.
#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The training part (all of the corpus when nothing is held out).
    #[default]
    Train,
    /// The part held out by `valid_fraction` of the `sample_batches` input.
    Valid,
}

impl Split {
    fn is_train(&self) -> bool {
        *self == Split::Train
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Evaluate {
    /// Horizons for k-step-ahead predictions of a series model.
    #[serde(default = "ks_default")]
    pub k: Vec<usize>,
    /// Language models: score the training part or the held-out validation part of the data.
    #[serde(default, skip_serializing_if = "Split::is_train")]
    #[schemars(extend("default" = "train"))]
    pub split: Split,
}

/// Loss sum and token count of a language model over `tokens`, cut sequentially (offset 0)
/// into batches of `batch` rows × `steps`, the state carried from batch to batch.
pub(super) fn sequential_loss(
    lm: &crate::nn::LanguageModel,
    tokens: &[u32],
    batch: usize,
    steps: usize,
) -> Result<(f64, usize)> {
    let mut state = lm.zero_state(batch);
    let (mut loss, mut n) = (0.0, 0);
    for b in partition_sequential(tokens, batch, steps, 0) {
        let (l, k) = lm.eval_loss(&b.x, &b.y, b.batch, b.steps, &mut state)?;
        loss += l;
        n += k;
    }
    Ok((loss, n))
}

/// Perplexity of a language model on the validation part its sampler holds out.
pub(super) fn valid_perplexity(
    lm: &crate::nn::LanguageModel,
    sampler: &SamplerSpec,
    corpus: &[u32],
) -> Result<f64> {
    let (_, valid) = sampler.split(corpus);
    let (loss, n) = sequential_loss(lm, valid, sampler.valid_batch_size(), sampler.num_steps)?;
    Ok((loss / n.max(1) as f64).exp())
}

fn ks_default() -> Vec<usize> {
    vec![1, 4, 16, 64]
}

#[derive(Serialize)]
struct KRow {
    k: usize,
    mse: f64,
    points: usize,
}

/// One-step predictions for every window, and the book's k-step-ahead table: column i < tau is
/// the data, column i ≥ tau the model's prediction from the previous tau columns.
pub fn kstep(
    predict: &dyn Fn(&[f32], usize) -> Result<Vec<f32>>,
    f: &Features,
    max_k: usize,
) -> Result<Vec<Vec<f32>>> {
    let t = f.series.len();
    let tau = f.tau;
    if t < tau + max_k {
        bail!("the series is too short for k = {max_k}");
    }
    let rows = t - tau - max_k + 1;
    let mut cols: Vec<Vec<f32>> = (0..tau).map(|i| f.series[i..i + rows].to_vec()).collect();
    for i in tau..tau + max_k {
        let x: Vec<f32> = (0..rows)
            .flat_map(|r| (i - tau..i).map(|c| cols[c][r]).collect::<Vec<_>>())
            .collect();
        cols.push(predict(&x, rows)?);
    }
    Ok(cols)
}

#[derive(Serialize)]
struct PredRow {
    t: usize,
    x: f32,
    onestep: Option<f32>,
    multistep: Option<f32>,
}

impl Stage for Evaluate {
    const KIND: &'static str = "evaluate";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Perplexity of a language model; 1-step and k-step-ahead MSE of a series model";
    const ROLES: Roles = Roles::Fixed(&["model", "data"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[
        ("model", &[Art::Model, Art::TrainedModel]),
        ("data", &[Art::Batches, Art::Features]),
    ];
    const OUTPUT: Option<Art> = Some(Art::Metrics);
    const USES_DEVICE: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        if self.k.is_empty() || self.k.contains(&0) {
            issues.push(ParamIssue::new(
                "k",
                "`k` must list positive horizons",
                "e.g. `k: [1, 4, 16, 64]`",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let (_, model) = AnyModel::load(ctx.input("model")?, ctx.device)?;
        let data = ctx.input("data")?.to_path_buf();
        match &model {
            AnyModel::Lm(lm) => {
                let sampler: SamplerSpec = crate::artifacts::Batches::sampler(&data)?;
                let corpus: Vec<u32> = crate::artifacts::Batches::corpus(&data)?;
                let (train, valid) = sampler.split(&corpus);
                let (tokens, batch) = match self.split {
                    Split::Train => (train, sampler.batch_size),
                    Split::Valid if valid.is_empty() => bail!(
                        "`split: valid` needs a validation part, and the data holds none out: set `valid_fraction` (e.g. 0.1) on its sample_batches stage"
                    ),
                    Split::Valid => (valid, sampler.valid_batch_size()),
                };
                let (loss, n) = sequential_loss(lm, tokens, batch, sampler.num_steps)?;
                let ppl = (loss / n.max(1) as f64).exp();
                if self.split == Split::Valid {
                    ctx.summary("split", "valid");
                }
                ctx.summary("perplexity", ppl);
                ctx.summary("tokens", n);
                let part = if self.split == Split::Valid {
                    " of the validation part"
                } else {
                    ""
                };
                ctx.log(format!("perplexity {ppl:.3} over {n} tokens{part}"));
            }
            AnyModel::Mlp(_) | AnyModel::Series(_) => {
                if self.split == Split::Valid {
                    bail!("`split` is for language models; a series model is scored on the test part of its series");
                }
                let f: Features = crate::artifacts::FeaturesArtifact::read(&data)?;
                let predict = |x: &[f32], b: usize| -> Result<Vec<f32>> {
                    match &model {
                        AnyModel::Mlp(m) => m.predict(x, b),
                        AnyModel::Series(m) => m.predict(x, b),
                        AnyModel::Lm(_) => unreachable!(),
                    }
                };
                // One-step: every window from the data; multi-step from n_train on, feeding
                // predictions back (the book's `multistep_preds`).
                let rows = f.rows();
                let x: Vec<f32> = (0..rows).flat_map(|i| f.window(i).to_vec()).collect();
                let onestep = predict(&x, rows)?;
                let mut multi: Vec<f32> = f.series[..f.n_train + f.tau].to_vec();
                for i in f.n_train + f.tau..f.series.len() {
                    let p = predict(&multi[i - f.tau..i], 1)?;
                    multi.push(p[0]);
                }
                let test = f.n_train..rows;
                let mse1 = test
                    .clone()
                    .map(|i| (onestep[i] - f.label(i)).powi(2) as f64)
                    .sum::<f64>()
                    / test.len().max(1) as f64;
                ctx.write_csv(
                    "predictions.csv",
                    (0..f.series.len()).map(|t| PredRow {
                        t: t + 1,
                        x: f.series[t],
                        onestep: (t >= f.tau).then(|| onestep[t - f.tau]),
                        multistep: (t >= f.n_train + f.tau).then(|| multi[t]),
                    }),
                )?;
                let max_k = *self.k.iter().max().unwrap();
                let cols = kstep(&predict, &f, max_k)?;
                let mut krows = Vec::new();
                for &k in &self.k {
                    let pred = &cols[f.tau + k - 1];
                    let truth = &f.series[f.tau + k - 1..f.tau + k - 1 + pred.len()];
                    let mse = pred
                        .iter()
                        .zip(truth)
                        .map(|(p, t)| ((p - t) as f64).powi(2))
                        .sum::<f64>()
                        / pred.len() as f64;
                    ctx.summary(&format!("mse_{k}step"), mse);
                    krows.push(KRow {
                        k,
                        mse,
                        points: pred.len(),
                    });
                }
                ctx.write_csv("kstep.csv", krows)?;
                ctx.summary("test_mse_onestep", mse1);
                ctx.log(format!("test MSE (1-step) {mse1:.5}"));
            }
        }
        Ok(())
    }
}
