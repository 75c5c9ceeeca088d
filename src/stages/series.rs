//! The 8.1 series: `synthetic_series` (sin(0.01·t) + noise) and `window_features` (tau past
//! values predict the next one, with a train/test split).

use super::{ParamIssue, Roles, Stage};
use crate::artifacts::Art;
use crate::context::StageCtx;
use anyhow::{bail, Result};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

pub use crate::artifacts::series::{Features, Series};

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSeries {
    /// Number of points T (t = 1..=T).
    #[serde(default = "t_default")]
    pub length: usize,
    /// Standard deviation of the Gaussian noise (0 for a clean sine).
    #[serde(default = "sigma_default")]
    pub sigma: f64,
    /// Angular frequency of the sine: x_t = sin(frequency · t) + noise.
    #[serde(default = "freq_default")]
    pub frequency: f64,
}

fn t_default() -> usize {
    1000
}
fn sigma_default() -> f64 {
    0.2
}
fn freq_default() -> f64 {
    0.01
}

#[derive(Serialize)]
struct Point {
    t: usize,
    x: f32,
}

impl Stage for SyntheticSeries {
    const KIND: &'static str = "synthetic_series";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "sin(frequency·t) + N(0, sigma) for t = 1..length (book 8.1)";
    const ROLES: Roles = Roles::Fixed(&[]);
    const OUTPUT: Option<Art> = Some(Art::Series);
    const STOCHASTIC: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "length", self.length);
        if !(self.sigma >= 0.0 && self.sigma.is_finite()) {
            issues.push(ParamIssue::new(
                "sigma",
                format!("sigma must be a finite number ≥ 0, found {}", self.sigma),
                "e.g. `sigma: 0.2`, or 0 for no noise",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(ctx.seed);
        let noise =
            Normal::new(0.0, self.sigma.max(0.0)).map_err(|e| anyhow::anyhow!("noise: {e}"))?;
        let x: Vec<f32> = (1..=self.length)
            .map(|t| {
                ((self.frequency * t as f64).sin()
                    + if self.sigma > 0.0 {
                        noise.sample(&mut rng)
                    } else {
                        0.0
                    }) as f32
            })
            .collect();
        ctx.write_csv(
            "series.csv",
            x.iter().enumerate().map(|(i, &x)| Point { t: i + 1, x }),
        )?;
        crate::artifacts::SeriesArtifact::write(ctx, &Series { x })?;
        ctx.summary("length", self.length);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowFeatures {
    /// Past values per window (the features); the label is the next value.
    pub tau: usize,
    /// Rows (windows) used for training; the rest are the test set.
    #[serde(default = "n_train_default")]
    pub n_train: usize,
}

fn n_train_default() -> usize {
    600
}

impl Stage for WindowFeatures {
    const KIND: &'static str = "window_features";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Windows of tau past values as features, the next value as label; a train/test split";
    const ROLES: Roles = Roles::Fixed(&["series"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[("series", &[Art::Series])];
    const OUTPUT: Option<Art> = Some(Art::Features);

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "tau", self.tau);
        super::require_positive(issues, "n_train", self.n_train);
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let s: Series = crate::artifacts::SeriesArtifact::read(ctx.input("series")?)?;
        if s.x.len() <= self.tau + self.n_train {
            bail!("the series has {} points: too short for tau {} and n_train {} (needs more than {})", s.x.len(), self.tau, self.n_train, self.tau + self.n_train);
        }
        let f = Features {
            tau: self.tau,
            n_train: self.n_train,
            series: s.x,
        };
        ctx.summary("rows", f.rows());
        ctx.summary("train_rows", f.n_train);
        crate::artifacts::FeaturesArtifact::write(ctx, &f)?;
        Ok(())
    }
}
