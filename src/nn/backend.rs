//! The only place that touches dfdx. Matrix products run in dfdx (its CPU backend calls the
//! `gemm` crate; with feature `cuda`, cuBLAS); everything element-wise runs on host slices.
//!
//! The same generic code (`Ctx<D>`) serves Cpu and Cuda: on Cuda every matmul involves a host
//! round trip, which is correct but slow (the fast path is the Cpu one).

use dfdx::prelude::*;
use dfdx::tensor_ops::Device;

pub(super) type M<D> = Tensor<(usize, usize), f32, D>;

/// A dfdx device that seqpipe can run on. `HOST`: matrices live in host memory and products
/// run in `super::gemm` (the Cpu fast path); otherwise they run in dfdx on the device.
pub(super) trait Engine: Device<f32> {
    const HOST: bool;
}
impl Engine for Cpu {
    const HOST: bool = true;
}
#[cfg(feature = "cuda")]
impl Engine for Cuda {
    const HOST: bool = false;
}

/// A device context. `D` is `dfdx::tensor::Cpu` (fast path) or `dfdx::tensor::Cuda`.
#[derive(Clone, Debug)]
pub(super) struct Ctx<D: Engine> {
    pub dev: D,
}

/// A matrix plus its logical shape (rows, cols) in row-major order: on the host (`D::HOST`) or
/// device-resident.
pub(super) struct DMat<D: Engine> {
    pub host: Vec<f32>,
    pub t: Option<M<D>>,
    pub rows: usize,
    pub cols: usize,
}

impl<D: Engine> Ctx<D> {
    pub fn new(dev: D) -> Self {
        Self { dev }
    }

    /// Upload a row-major matrix. On a device, allocates through the device cache
    /// (`zeros_like`), never through `tensor_from_vec` whose buffers the cache would never reuse.
    pub fn mat(&self, data: &[f32], rows: usize, cols: usize) -> DMat<D> {
        assert_eq!(data.len(), rows * cols, "internal: mat upload size");
        if D::HOST {
            return DMat {
                host: data.to_vec(),
                t: None,
                rows,
                cols,
            };
        }
        let mut t: M<D> = self.dev.zeros_like(&(rows, cols));
        t.copy_from(data);
        DMat {
            host: Vec::new(),
            t: Some(t),
            rows,
            cols,
        }
    }

    /// Upload a row-major matrix by moving the buffer (on the host: no copy at all).
    pub fn mat_owned(&self, data: Vec<f32>, rows: usize, cols: usize) -> DMat<D> {
        assert_eq!(data.len(), rows * cols, "internal: mat upload size");
        if D::HOST {
            return DMat {
                host: data,
                t: None,
                rows,
                cols,
            };
        }
        let t: M<D> = self.dev.tensor_from_vec(data, (rows, cols));
        DMat {
            host: Vec::new(),
            t: Some(t),
            rows,
            cols,
        }
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
        if D::HOST {
            let bt;
            let b_rm: &[f32] = if tb {
                let _t = super::profile::enter(super::profile::Phase::Packing);
                bt = super::math::transposed(&b.host, b.rows, b.cols);
                &bt
            } else {
                &b.host
            };
            if ta {
                super::tune::sgemm_at(m, n, k1, &a.host, b_rm, out);
            } else {
                super::tune::sgemm(m, n, k1, &a.host, b_rm, out);
            }
            return;
        }
        let (a, b) = (a.t.as_ref().unwrap(), b.t.as_ref().unwrap());
        let at = if ta {
            a.clone().permute::<_, Axes2<1, 0>>()
        } else {
            a.clone()
        };
        let bt = if tb {
            b.clone().permute::<_, Axes2<1, 0>>()
        } else {
            b.clone()
        };
        let c = at.matmul(bt);
        c.copy_into(out);
    }
}

impl<D: Engine + dfdx::tensor::Cache> Ctx<D> {
    pub fn empty_cache(&self) {
        let _ = self.dev.try_empty_cache();
    }
}

pub(super) fn cpu_ctx(seed: u64) -> Ctx<Cpu> {
    keep_freed_memory();
    Ctx::new(Cpu::seed_from_u64(seed))
}

/// glibc returns freed blocks above its mmap threshold to the kernel at once, so the large
/// per-step buffers of a training step were faulted in again at every step (22% of the time of
/// LSTM 256 went to page faults). Serve them from the heap and keep freed memory there: the
/// resident size then stays at the peak of one step (flat over epochs).
fn keep_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator tunables.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        }
    });
}

#[cfg(feature = "cuda")]
pub(super) fn cuda_ctx(seed: u64) -> anyhow::Result<Ctx<Cuda>> {
    let dev =
        Cuda::try_seed_from_u64(seed).map_err(|e| nn_err!(Device, "cuda init failed: {e:?}"))?;
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
                nn_bail!(
                    Device,
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
