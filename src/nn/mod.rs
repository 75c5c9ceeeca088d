//! `crate::nn` — the neural-network module of seqpipe (the only code that imports dfdx).
//!
//! Public API: plain Rust types only (no dfdx types).
//!
//! Deviations from / additions to the brief (all additive):
//! * `Optimizer::new(spec, model)` takes any `&impl ParamSet` (`LanguageModel`, `Mlp`, `SeriesRnn`).
//! * `predict` returns the prefix followed by the `num_preds` generated tokens (like d2l's
//!   `predict_ch8`, which returns the whole string).
//! * `HiddenState` has `batch()`, `shapes()` and `reset()`.
//! * `set_num_threads(n)` sets the global rayon pool: the threads of the CPU products and of the
//!   batch-row chunks of the recurrence (results do not depend on it).
//! * `Activation` applies to `RnnScratch` and `Rnn` (nn.RNN's `nonlinearity`); GRU/LSTM ignore it.
//! * `SeriesRnn` (exercise 8.6.3): input windows [batch][tau] are fed as tau steps of a scalar,
//!   the last step's hidden state goes through a linear head to one output; MSE loss.
//!   Names as the LM (`rnn.*`, `linear.weight` [1, H], `linear.bias`).
//! * `Mlp` names follow `nn.Sequential(Linear, act, Linear, ..., Linear)`: `net.0.weight`, `net.0.bias`,
//!   `net.2.weight`, ... PyTorch layout [out, in]. Weights Xavier-uniform, biases like nn.Linear.
//!
//! Implementation: parameters live on the host (`Vec<f32>`, PyTorch layout). On the CPU the matrix
//! products run in `gemm` (this crate's AVX-512/AVX2 kernel) on host buffers; on CUDA each call
//! uploads the matrices it multiplies to the dfdx device. Forward and BPTT are written by hand (no dfdx tape): per time step only
//! `h_t·[W_hh;W_lin]^T` and `[dG,dY]·[W_hh;W_lin]` are matmuls; the weight gradients are one matmul
//! over all steps; element-wise math (fast rational tanh, sigmoid, softmax-CE, gate math) runs in
//! plain loops. The same generic code runs on `Cuda` (feature `cuda`), there with a host round trip
//! per matmul (correct, not fast); a `LanguageModel`'s training step on `Cuda` instead runs
//! entirely on the device (`cuda`: fused kernels plus cuBLAS, weights and state resident).

/// `nn_bail!(Invalid, "...", args)`: return an [`NnError`] of that kind (as an anyhow error, so
/// callers keep `?` and context), its message formatted like `format!`.
macro_rules! nn_bail {
    ($kind:ident, $($t:tt)*) => {
        return Err(anyhow::Error::from($crate::nn::NnError::$kind(format!($($t)*))))
    };
}

/// `nn_err!(Weights, "...")`: an [`NnError`] of that kind as an anyhow error.
macro_rules! nn_err {
    ($kind:ident, $($t:tt)*) => {
        anyhow::Error::from($crate::nn::NnError::$kind(format!($($t)*)))
    };
}

pub(crate) mod backend;
mod caches;
mod core;
mod cuda;
mod gemm;
mod lm;
mod math;
mod mlp;
mod params;
pub mod profile;
mod rows;
mod scratch;
mod team;
#[cfg(test)]
mod tests;
mod tune;

pub use self::core::HiddenState;
pub use self::lm::{LanguageModel, SeriesRnn};
pub use self::mlp::Mlp;
pub use self::params::{Model, Optimizer, ParamSet};
pub use self::tune::{
    cpu_model, default_cache_dir as default_kernel_cache, report as kernel_report,
    set_cache_dir as set_kernel_cache, KernelReport, KernelUse, Source as KernelSource,
};

/// One core's measured FP32 peak in GFLOP/s (12 independent FMA chains of the widest vector,
/// about `ms` milliseconds).
pub fn measure_peak_gflops(ms: u64) -> f64 {
    gemm::measure_peak_gflops(ms)
}

use serde::{Deserialize, Serialize};

/// What goes wrong in the model layer. Callers see it through `anyhow` with their context, and
/// can downcast to it.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A model size, shape or input that does not fit (batch, steps, tokens, layer sizes).
    #[error("{0}")]
    Invalid(String),
    /// A weights or optimizer file that cannot be read into this model.
    #[error("{0}")]
    Weights(String),
    /// The device cannot be used (no CUDA build, CUDA failed to start).
    #[error("{0}")]
    Device(String),
    /// The thread pool cannot be set up.
    #[error("{0}")]
    Threads(String),
}

/// Where tensors live: the crate's one device type (`Cuda` only with feature `cuda`; otherwise
/// constructors return an error).
pub use crate::device::Device as DeviceKind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    Tanh,
    Relu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CellKind {
    /// d2l 8.5 from-scratch RNN (one layer, W_xh/W_hh/b_h/W_hq/b_q, N(0,1)*0.01 init).
    RnnScratch,
    Rnn,
    Gru,
    Lstm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InputMode {
    OneHot,
    /// Learned embedding of the given dimension.
    Embedding(usize),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LmSpec {
    pub cell: CellKind,
    pub vocab: usize,
    pub hidden: usize,
    pub num_layers: usize,
    pub input: InputMode,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OptimSpec {
    Sgd {
        lr: f32,
        weight_decay: f32,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Sum of the per-token losses (CE) or of squared errors (MSE).
    pub loss_sum: f64,
    /// Number of terms in `loss_sum`.
    pub tokens: usize,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Sample from p^alpha, renormalised.
    Sample {
        alpha: f32,
    },
}

/// Set the number of threads dfdx's CPU matmuls use (global rayon pool). Must be called before
/// any model computes; errors if the pool was already initialised.
pub fn set_num_threads(n: usize) -> anyhow::Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .map_err(|e| nn_err!(Threads, "set_num_threads({n}): {e}"))
}

/// The matrix-product kernel the Cpu backend uses (`avx512f`, `avx2+fma` or `scalar`).
pub fn matmul_kernel() -> &'static str {
    gemm::kernel_name()
}
