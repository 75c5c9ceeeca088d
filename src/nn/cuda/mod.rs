//! The device-resident training step of `LanguageModel` on CUDA (feature `cuda`).
//!
//! * `kernels.cu`: fused CUDA C kernels (cells forward/backward, input gathers, softmax
//!   cross-entropy, column sums, gradient norm and clipping, SGD and Adam), the CPU's math in the
//!   CPU's order of operations. Compiled at run time through cudarc's NVRTC (`device.rs`).
//! * `step.rs`: the training step written once against a small [`step::Gpu`] trait: parameters,
//!   gradients, Adam moments, hidden state and all intermediates stay on the device; the matrix
//!   products run in cuBLAS; the only transfer back per step is the loss sum and the gradient
//!   norm (one 24-byte copy). Token ids and the optimizer's scalars go up once per step. The
//!   step is written down as a program of operations; from the second step of a shape on, it
//!   runs as one recorded CUDA graph (one launch instead of ~4 per time step and layer).
//! * `device.rs` (feature `cuda`): the `Gpu` of a real device (cudarc driver + cuBLAS + NVRTC,
//!   graphs recorded on a stream of its own) and `Resident`, the glue `LanguageModel` holds.
//! * `emu.rs` (tests): the same kernels compiled for the host by the system C++ compiler through
//!   `emu.h`, behind the same `Gpu` trait, so that the kernels and the whole device step are
//!   checked against the CPU implementation in the default (CPU-only) build. The kernel-level
//!   checks are `host_test.rs`, compiled inside `nn::core` to reach the cells.
//!
//! Without feature `cuda` and outside tests this module is empty.

#[cfg(any(test, feature = "cuda"))]
pub(super) mod step;

#[cfg(feature = "cuda")]
pub(super) mod device;

#[cfg(test)]
pub(super) mod emu;

/// The CUDA C source of the kernels.
#[cfg(any(test, feature = "cuda"))]
pub(super) const SOURCE: &str = include_str!("kernels.cu");

/// The host emulation header (tests only).
#[cfg(test)]
pub(super) const EMU_HEADER: &str = include_str!("emu.h");

/// The kernels of `kernels.cu`.
#[cfg(any(test, feature = "cuda"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum K {
    GatherOnehot,
    AddBias,
    GatherRows,
    RnnFwd,
    GruFwd,
    LstmFwd,
    RnnBwd,
    GruBwd,
    LstmBwd,
    ColSum,
    ScatterRows,
    SoftmaxCe,
    SumsqPartial,
    FinishStep,
    SgdStep,
    AdamStep,
}

/// (kernel, entry point, whether it uses `__syncthreads`), in `K` order.
#[cfg(any(test, feature = "cuda"))]
pub(super) const KERNELS: [(K, &str, bool); 16] = [
    (K::GatherOnehot, "gather_onehot", false),
    (K::AddBias, "add_bias", false),
    (K::GatherRows, "gather_rows", false),
    (K::RnnFwd, "rnn_fwd", false),
    (K::GruFwd, "gru_fwd", false),
    (K::LstmFwd, "lstm_fwd", false),
    (K::RnnBwd, "rnn_bwd", false),
    (K::GruBwd, "gru_bwd", false),
    (K::LstmBwd, "lstm_bwd", false),
    (K::ColSum, "col_sum", false),
    (K::ScatterRows, "scatter_rows", false),
    (K::SoftmaxCe, "softmax_ce", true),
    (K::SumsqPartial, "sumsq_partial", true),
    (K::FinishStep, "finish_step", false),
    (K::SgdStep, "sgd_step", false),
    (K::AdamStep, "adam_step", false),
];

#[cfg(any(test, feature = "cuda"))]
impl K {
    pub fn name(self) -> &'static str {
        KERNELS[self as usize].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_table_matches_the_source() {
        for (i, (k, name, barrier)) in KERNELS.iter().enumerate() {
            assert_eq!(*k as usize, i, "KERNELS out of K order at {name}");
            let decl = format!("SP_KERNEL void {name}(");
            let at = SOURCE
                .find(&decl)
                .unwrap_or_else(|| panic!("kernels.cu has no `{decl}`"));
            // The kernel's body: up to the next kernel (or the end).
            let body = &SOURCE[at..];
            let end = body[decl.len()..]
                .find("SP_KERNEL")
                .map_or(body.len(), |e| e + decl.len());
            assert_eq!(
                body[..end].contains("__syncthreads"),
                *barrier,
                "barrier flag of {name}"
            );
        }
        assert_eq!(
            SOURCE.matches("SP_KERNEL void ").count(),
            KERNELS.len(),
            "kernels.cu has kernels missing from KERNELS"
        );
    }
}
