//! The only place that touches dfdx. Matrix products run in dfdx (its CPU backend calls the
//! `gemm` crate; with feature `cuda`, cuBLAS); everything element-wise runs on host slices.
//!
//! The same generic code (`Ctx<D>`) serves Cpu and Cuda: on Cuda every matmul involves a host
//! round trip, which is correct but slow (the fast path is the Cpu one).

use dfdx::prelude::*;
use dfdx::tensor_ops::Device;

pub(super) type M<D> = Tensor<(usize, usize), f32, D>;

/// A device context. `D` is `dfdx::tensor::Cpu` (fast path) or `dfdx::tensor::Cuda`.
#[derive(Clone, Debug)]
pub(super) struct Ctx<D: Device<f32>> {
    pub dev: D,
}

/// Device-resident matrix plus its logical shape (rows, cols) in row-major order.
pub(super) struct DMat<D: Device<f32>> {
    pub t: M<D>,
    pub rows: usize,
    pub cols: usize,
}

impl<D: Device<f32>> DMat<D> {
    /// Overwrite contents (shape must match; checked by the caller's construction).
    pub fn set(&mut self, data: &[f32]) {
        debug_assert_eq!(data.len(), self.rows * self.cols);
        self.t.copy_from(data);
    }
}

impl<D: Device<f32>> Ctx<D> {
    pub fn new(dev: D) -> Self {
        Self { dev }
    }

    /// Upload a row-major matrix. Allocates through the device cache (`zeros_like`), never through
    /// `tensor_from_vec` whose buffers the cache would never reuse.
    pub fn mat(&self, data: &[f32], rows: usize, cols: usize) -> DMat<D> {
        assert_eq!(data.len(), rows * cols, "internal: mat upload size");
        let mut t: M<D> = self.dev.zeros_like(&(rows, cols));
        t.copy_from(data);
        DMat { t, rows, cols }
    }

    /// Upload a row-major matrix by moving the buffer (no zeroing, and on Cpu no copy). The
    /// buffer later lands in the device cache, which is emptied regularly by the callers.
    pub fn mat_owned(&self, data: Vec<f32>, rows: usize, cols: usize) -> DMat<D> {
        assert_eq!(data.len(), rows * cols, "internal: mat upload size");
        let t: M<D> = self.dev.tensor_from_vec(data, (rows, cols));
        DMat { t, rows, cols }
    }

    /// out = op(a) * op(b), where op(x) = x^T when the flag is set. `out` is row-major and
    /// overwritten. Shapes are checked here (dfdx would assert).
    pub fn mm(&self, a: &DMat<D>, ta: bool, b: &DMat<D>, tb: bool, out: &mut [f32]) {
        let (m, k1) = if ta {
            (a.cols, a.rows)
        } else {
            (a.rows, a.cols)
        };
        let (k2, n) = if tb {
            (b.cols, b.rows)
        } else {
            (b.rows, b.cols)
        };
        assert_eq!(k1, k2, "internal: matmul inner dims");
        assert_eq!(out.len(), m * n, "internal: matmul out size");
        let at = if ta {
            a.t.clone().permute::<_, Axes2<1, 0>>()
        } else {
            a.t.clone()
        };
        let bt = if tb {
            b.t.clone().permute::<_, Axes2<1, 0>>()
        } else {
            b.t.clone()
        };
        let c = at.matmul(bt);
        c.copy_into(out);
    }
}

impl<D: Device<f32> + dfdx::tensor::Cache> Ctx<D> {
    pub fn empty_cache(&self) {
        let _ = self.dev.try_empty_cache();
    }
}

pub(super) fn cpu_ctx(seed: u64) -> Ctx<Cpu> {
    Ctx::new(Cpu::seed_from_u64(seed))
}

#[cfg(feature = "cuda")]
pub(super) fn cuda_ctx(seed: u64) -> anyhow::Result<Ctx<Cuda>> {
    let dev =
        Cuda::try_seed_from_u64(seed).map_err(|e| anyhow::anyhow!("cuda init failed: {e:?}"))?;
    Ok(Ctx::new(dev))
}

/// Which backend a model runs on. Dispatch with `with_ctx!`.
#[derive(Clone, Debug)]
pub(super) enum Backend {
    Cpu(Ctx<Cpu>),
    #[cfg(feature = "cuda")]
    Cuda(Ctx<Cuda>),
}

macro_rules! with_ctx {
    ($be:expr, $ctx:ident => $body:expr) => {
        match $be {
            $crate::nn::backend::Backend::Cpu($ctx) => $body,
            #[cfg(feature = "cuda")]
            $crate::nn::backend::Backend::Cuda($ctx) => $body,
        }
    };
}
pub(super) use with_ctx;

impl Backend {
    pub fn new(kind: super::DeviceKind, seed: u64) -> anyhow::Result<Self> {
        match kind {
            super::DeviceKind::Cpu => Ok(Backend::Cpu(cpu_ctx(seed))),
            #[cfg(feature = "cuda")]
            super::DeviceKind::Cuda => Ok(Backend::Cuda(cuda_ctx(seed)?)),
            #[cfg(not(feature = "cuda"))]
            super::DeviceKind::Cuda => {
                anyhow::bail!(
                    "DeviceKind::Cuda requested but seqpipe was built without feature `cuda`"
                )
            }
        }
    }
    pub fn kind(&self) -> super::DeviceKind {
        match self {
            Backend::Cpu(_) => super::DeviceKind::Cpu,
            #[cfg(feature = "cuda")]
            Backend::Cuda(_) => super::DeviceKind::Cuda,
        }
    }
    pub fn empty_cache(&self) {
        with_ctx!(self, c => c.empty_cache())
    }
}
