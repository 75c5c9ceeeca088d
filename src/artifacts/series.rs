//! A time series and the windows cut from it (chapter 8.1's data).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub x: Vec<f32>,
}

/// Windows of a series: row i is x[i..i+tau], its label x[i+tau].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Features {
    pub tau: usize,
    pub n_train: usize,
    pub series: Vec<f32>,
}

impl Features {
    pub fn rows(&self) -> usize {
        self.series.len() - self.tau
    }
    pub fn window(&self, i: usize) -> &[f32] {
        &self.series[i..i + self.tau]
    }
    pub fn label(&self, i: usize) -> f32 {
        self.series[i + self.tau]
    }
}
