//! Stages that look inside models (exercises 8.4.1 and 8.7.1): tensor shapes, powers of a
//! symmetric matrix, and the gradient of the loss with respect to the hidden state over time.

use super::model::AnyModel;
use super::sample_batches::{partition_sequential, SamplerSpec};
use super::{ParamIssue, Roles, Stage};
use crate::artifacts::Art;
use crate::context::StageCtx;
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RnnShapes {
    /// Rows of the example input.
    #[serde(default = "two")]
    pub batch_size: usize,
    /// Time steps of the example input.
    #[serde(default = "five")]
    pub num_steps: usize,
}

fn two() -> usize {
    2
}
fn five() -> usize {
    5
}

#[derive(Serialize)]
struct ShapeRow {
    tensor: String,
    shape: String,
}

impl Stage for RnnShapes {
    const KIND: &'static str = "rnn_shapes";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "The shapes of a language model's one-hot input, outputs and state (book 8.4.1)";
    const ROLES: Roles = Roles::Fixed(&["model"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] =
        &[("model", &[Art::Model, Art::TrainedModel])];
    const OUTPUT: Option<Art> = Some(Art::Table);
    const USES_DEVICE: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "batch_size", self.batch_size);
        super::require_positive(issues, "num_steps", self.num_steps);
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let (spec, model) = AnyModel::load(ctx.input("model")?, ctx.device)?;
        let (AnyModel::Lm(lm), super::model::ModelSpec::Lm(s)) = (&model, &spec) else {
            bail!("`rnn_shapes` needs a language model")
        };
        let x = vec![0u32; self.batch_size * self.num_steps];
        let (out, states) = lm.forward_shapes(&x, self.batch_size, self.num_steps)?;
        let mut rows = vec![
            ShapeRow {
                tensor: "input (one-hot: steps, batch, vocab)".into(),
                shape: format!("({}, {}, {})", self.num_steps, self.batch_size, s.vocab),
            },
            ShapeRow {
                tensor: "outputs (steps × batch, vocab)".into(),
                shape: format!("({}, {})", out.0, out.1),
            },
        ];
        for (i, st) in states.iter().enumerate() {
            rows.push(ShapeRow {
                tensor: format!("state {i} (batch, hidden)"),
                shape: format!("({}, {})", st.0, st.1),
            });
        }
        let mut md = String::from("| tensor | shape |\n|---|---|\n");
        for r in &rows {
            md.push_str(&format!("| {} | {} |\n", r.tensor, r.shape));
        }
        ctx.write_text("table.md", &md)?;
        ctx.write_csv("shapes.csv", rows)?;
        ctx.summary("output_rows", out.0);
        ctx.summary("output_cols", out.1);
        ctx.summary("state_rows", states[0].0);
        ctx.summary("state_cols", states[0].1);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatrixPowers {
    /// The matrix is size × size, symmetric, with Gaussian entries.
    #[serde(default = "size")]
    pub size: usize,
    /// The exponents k of M^k to examine.
    #[serde(default = "powers")]
    pub powers: Vec<u32>,
}

fn size() -> usize {
    10
}
fn powers() -> Vec<u32> {
    vec![1, 2, 3, 5, 10, 20, 50]
}

#[derive(Serialize)]
struct EigRow {
    k: u32,
    index: usize,
    eigenvalue_of_mk: f64,
    lambda_to_the_k: f64,
    relative_difference: f64,
}

#[derive(Serialize)]
struct CosRow {
    k: u32,
    cosine: f64,
}

impl Stage for MatrixPowers {
    const KIND: &'static str = "matrix_powers";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "Powers of a random symmetric matrix: eigenvalues of M^k vs λ^k, and M^k x aligning with the top eigenvector (book 8.7.1)";
    const ROLES: Roles = Roles::Fixed(&[]);
    const OUTPUT: Option<Art> = Some(Art::Table);
    const STOCHASTIC: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        if !(2..=500).contains(&self.size) {
            issues.push(ParamIssue::new(
                "size",
                format!("size {} is outside 2..=500", self.size),
                "e.g. `size: 10`",
            ));
        }
        if self.powers.is_empty() || self.powers.contains(&0) {
            issues.push(ParamIssue::new(
                "powers",
                "`powers` must list positive integers",
                "e.g. `powers: [1, 2, 5, 10]`",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        use nalgebra::{DMatrix, DVector};
        let n = self.size;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ctx.seed);
        let mut g = || -> f64 { StandardNormal.sample(&mut rng) };
        let a = DMatrix::from_fn(n, n, |_, _| g());
        let m = (&a + a.transpose()) * 0.5;
        let eig = m.clone().symmetric_eigen();
        // Eigenvalues by decreasing magnitude; v1 belongs to the largest.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&i, &j| {
            eig.eigenvalues[j]
                .abs()
                .total_cmp(&eig.eigenvalues[i].abs())
        });
        let v1 = eig.eigenvectors.column(order[0]).into_owned();
        let x = DVector::from_fn(n, |_, _| g());
        let mut eig_rows = Vec::new();
        let mut cos_rows = Vec::new();
        let mut worst: f64 = 0.0;
        for &k in &self.powers {
            let mk = m.pow(k);
            let mut ek: Vec<f64> = mk
                .clone()
                .symmetric_eigen()
                .eigenvalues
                .iter()
                .copied()
                .collect();
            ek.sort_by(|a, b| b.total_cmp(a));
            let mut lk: Vec<f64> = eig.eigenvalues.iter().map(|l| l.powi(k as i32)).collect();
            lk.sort_by(|a, b| b.total_cmp(a));
            for (i, (e, l)) in ek.iter().zip(&lk).enumerate() {
                let rel = (e - l).abs() / l.abs().max(1e-300);
                if i < 3 || i + 1 == n {
                    eig_rows.push(EigRow {
                        k,
                        index: i,
                        eigenvalue_of_mk: *e,
                        lambda_to_the_k: *l,
                        relative_difference: rel,
                    });
                }
                // Only eigenvalues well above rounding noise are comparable.
                if l.abs() > 1e-8 * lk.iter().map(|v| v.abs()).fold(0.0, f64::max) {
                    worst = worst.max(rel);
                }
            }
            let y = &mk * &x;
            let cos = (y.dot(&v1) / (y.norm() * v1.norm())).abs();
            cos_rows.push(CosRow { k, cosine: cos });
        }
        ctx.summary("largest_eigenvalue", eig.eigenvalues[order[0]]);
        ctx.summary("max_relative_difference", worst);
        ctx.summary(
            "final_cosine",
            cos_rows.last().map(|c| c.cosine).unwrap_or(f64::NAN),
        );
        ctx.write_csv("eigenvalues.csv", eig_rows)?;
        ctx.write_csv("cosine.csv", cos_rows)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HiddenGrads {}

#[derive(Serialize)]
struct GradRow {
    step: usize,
    grad_norm: f32,
}

impl Stage for HiddenGrads {
    const KIND: &'static str = "hidden_grads";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "Norm of dLoss/dH_t at each time step of one batch: vanishing or exploding gradients (book 8.7)";
    const ROLES: Roles = Roles::Fixed(&["model", "data"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[
        ("model", &[Art::Model, Art::TrainedModel]),
        ("data", &[Art::Batches]),
    ];
    const OUTPUT: Option<Art> = Some(Art::Table);
    const USES_DEVICE: bool = true;

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let (_, model) = AnyModel::load(ctx.input("model")?, ctx.device)?;
        let AnyModel::Lm(lm) = &model else {
            bail!("`hidden_grads` needs a language model")
        };
        let data = ctx.input("data")?.to_path_buf();
        let sampler: SamplerSpec = crate::artifacts::Batches::sampler(&data)?;
        let corpus: Vec<u32> = crate::artifacts::Batches::corpus(&data)?;
        let Some(b) = partition_sequential(&corpus, sampler.batch_size, sampler.num_steps, 0)
            .into_iter()
            .next()
        else {
            bail!("the corpus is too short for one batch")
        };
        let norms = lm.hidden_grad_norms(&b.x, &b.y, b.batch, b.steps)?;
        let (first, last) = (norms[0], *norms.last().unwrap());
        ctx.summary("grad_norm_first_step", first as f64);
        ctx.summary("grad_norm_last_step", last as f64);
        ctx.summary("ratio_first_to_last", (first / last) as f64);
        ctx.write_csv(
            "grad_norms.csv",
            norms.iter().enumerate().map(|(t, &g)| GradRow {
                step: t + 1,
                grad_norm: g,
            }),
        )?;
        Ok(())
    }
}
