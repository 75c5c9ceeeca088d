//! Feature `cuda`: the [`Gpu`] of a real device and [`Resident`], what `LanguageModel` holds.
//!
//! The kernels are compiled once per process by cudarc's NVRTC (`--fmad=false`, so no product is
//! contracted into an FMA and the element-wise math keeps the CPU's bits; for the device's
//! compute capability) and loaded into the primary context of device 0 — the context dfdx's
//! `Cuda` device uses (dfdx 0.13 keeps its cudarc handles private, so this module holds its own
//! `CudaDevice` and cuBLAS handle on that context and on the same legacy default stream).
//! Products run in cuBLAS (`cublasSgemm`, FP32, no TF32: the default math mode).

use super::step::{with_arg_ptrs, Buf, Gemm, Gpu, Moments, Op, Trainer};
use super::{KERNELS, SOURCE};
use crate::nn::core::{Core, HiddenState};
use crate::nn::params::{FarMoments, MomentPair, Optimizer, Update};
use crate::nn::StepStats;
use anyhow::Result;
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{
    result as drv, sys as drv_sys, CudaDevice, CudaSlice, DevicePtr, DeviceSlice,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

fn dev_err(what: &str, e: impl std::fmt::Debug) -> anyhow::Error {
    nn_err!(Device, "CUDA: {what}: {e:?}")
}

/// Compile `kernels.cu` to PTX for `arch` (e.g. "compute_90") with the options the device step
/// relies on. Needs libnvrtc, not a GPU.
pub(in crate::nn) fn compile_kernels(arch: &'static str) -> Result<String> {
    let opts = CompileOptions {
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        arch: Some(arch),
        ..Default::default()
    };
    match compile_ptx_with_opts(SOURCE, opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { log, options, .. }) => Err(nn_err!(
            Device,
            "NVRTC could not compile seqpipe's kernels (options {options:?}):\n{}",
            log.to_string_lossy()
        )),
        Err(e) => Err(nn_err!(Device, "NVRTC failed on seqpipe's kernels: {e:?}")),
    }
}

/// The loaded module: one function per kernel, in `K` order.
struct Module {
    dev: Arc<CudaDevice>,
    cu: drv_sys::CUmodule,
    funcs: Vec<drv_sys::CUfunction>,
}
// SAFETY: CUDA module and function handles may be used from any thread of the context.
unsafe impl Send for Module {}
unsafe impl Sync for Module {}
impl Drop for Module {
    fn drop(&mut self) {
        if self.dev.bind_to_thread().is_ok() {
            // SAFETY: loaded by us, unloaded once.
            let _ = unsafe { drv::module::unload(self.cu) };
        }
    }
}

/// Device 0 (shared by all models of the process) and its compiled kernels' PTX.
fn device() -> Result<(Arc<CudaDevice>, &'static str)> {
    static DEV: OnceLock<Result<(Arc<CudaDevice>, String), String>> = OnceLock::new();
    let r = DEV.get_or_init(|| {
        let dev = CudaDevice::new(0).map_err(|e| format!("CUDA: opening device 0: {e:?}"))?;
        let cc = |a| {
            dev.attribute(a)
                .map_err(|e| format!("CUDA: compute capability: {e:?}"))
        };
        let major = cc(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
        let minor = cc(drv_sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
        let arch: &'static str = Box::leak(format!("compute_{major}{minor}").into_boxed_str());
        let ptx = compile_kernels(arch).map_err(|e| format!("{e:#}"))?;
        Ok((dev, ptx))
    });
    match r {
        Ok((dev, ptx)) => Ok((dev.clone(), ptx.as_str())),
        Err(e) => Err(nn_err!(Device, "{e}")),
    }
}

/// A real CUDA device: cudarc driver calls on the primary context's legacy stream, cuBLAS.
#[derive(Clone)]
pub(in crate::nn) struct CudaGpu {
    dev: Arc<CudaDevice>,
    blas: Arc<Blas>,
    module: Arc<Module>,
    /// The stream graphs are recorded on and cuBLAS's workspace (None: they could not be made;
    /// then no graphs).
    rec: Option<Arc<Recorder>>,
    /// Record graphs (`SEQPIPE_CUDA_GRAPHS=0`: no).
    graphs: bool,
}

/// The cuBLAS handle of a model and its clones (`Trainer::try_clone`). `busy` is held by every
/// operation and by a whole recording, which moves the handle to the recording stream: a clone
/// training on another thread can neither race with a recording nor land in its graph.
struct Blas {
    handle: CudaBlas,
    busy: Mutex<()>,
}
impl Blas {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// cuBLAS's workspace (it must not allocate while a graph records; one workspace for both
/// streams, so that recorded and direct products pick the same kernels).
const BLAS_WORKSPACE: usize = 32 << 20;

/// A stream of its own for recording graphs (the legacy stream cannot record) and the
/// workspace cuBLAS uses on both streams.
struct Recorder {
    dev: Arc<CudaDevice>,
    stream: drv_sys::CUstream,
    workspace: CudaSlice<u8>,
}
// SAFETY: a CUDA stream handle may be used from any thread of its context; recordings on it
// hold `Blas::busy`, so there is one at a time.
unsafe impl Send for Recorder {}
unsafe impl Sync for Recorder {}
impl Drop for Recorder {
    fn drop(&mut self) {
        if self.dev.bind_to_thread().is_ok() {
            // SAFETY: created by us, destroyed once; no recording is open (record() ends it).
            let _ = unsafe { drv_sys::cuStreamDestroy_v2(self.stream) };
        }
    }
}

/// An instantiated CUDA graph: one step's operations, launched as one. It keeps the kernels'
/// module and cuBLAS's workspace alive while it is (its fields drop after its `Drop`).
pub(in crate::nn) struct CudaGraph {
    dev: Arc<CudaDevice>,
    exec: drv_sys::CUgraphExec,
    _module: Arc<Module>,
    _rec: Arc<Recorder>,
}
// SAFETY: a graph exec may be launched and destroyed from any thread of its context.
unsafe impl Send for CudaGraph {}
unsafe impl Sync for CudaGraph {}
impl Drop for CudaGraph {
    fn drop(&mut self) {
        if self.dev.bind_to_thread().is_ok() {
            // SAFETY: instantiated by us, destroyed once (CUDA frees it after a launch in flight).
            let _ = unsafe { drv_sys::cuGraphExecDestroy(self.exec) };
        }
    }
}

/// Whether steps may record graphs: `SEQPIPE_CUDA_GRAPHS=0` says no (to compare, or to rule
/// graphs out).
fn graphs_wanted() -> bool {
    std::env::var("SEQPIPE_CUDA_GRAPHS").map_or(true, |v| v.trim() != "0")
}

impl CudaGpu {
    pub fn new() -> Result<Self> {
        let (dev, ptx) = device()?;
        dev.bind_to_thread().map_err(|e| dev_err("bind", e))?;
        let blas = Arc::new(Blas {
            handle: CudaBlas::new(dev.clone()).map_err(|e| dev_err("cuBLAS init", e))?,
            busy: Mutex::new(()),
        });
        let src = CString::new(ptx).map_err(|e| dev_err("PTX", e))?;
        // SAFETY: a NUL-terminated PTX image.
        let cu = unsafe { drv::module::load_data(src.as_ptr() as *const c_void) }
            .map_err(|e| dev_err("loading the kernels' PTX", e))?;
        let mut module = Module {
            dev: dev.clone(),
            cu,
            funcs: Vec::with_capacity(KERNELS.len()),
        };
        for (_, name, _) in KERNELS {
            // SAFETY: a module loaded above.
            let f = unsafe { drv::module::get_function(cu, CString::new(name).unwrap()) }
                .map_err(|e| dev_err(&format!("kernel {name} missing from the PTX"), e))?;
            module.funcs.push(f);
        }
        let mut gpu = Self {
            dev,
            blas,
            module: Arc::new(module),
            rec: None,
            graphs: graphs_wanted(),
        };
        // Made with graphs off too: the same workspace, so the same cuBLAS kernels either way.
        match gpu.recorder() {
            Ok(rec) => gpu.rec = Some(Arc::new(rec)),
            Err(e) if gpu.graphs => eprintln!(
                "seqpipe: CUDA graphs are off ({e:#}); each step launches its kernels one by one"
            ),
            Err(_) => {}
        }
        Ok(gpu)
    }

    fn recorder(&self) -> Result<Recorder> {
        let workspace = self.alloc(BLAS_WORKSPACE)?;
        let mut stream: drv_sys::CUstream = std::ptr::null_mut();
        // SAFETY: creates a stream in the bound context.
        unsafe {
            drv_sys::cuStreamCreate(
                &mut stream,
                drv_sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32,
            )
        }
        .result()
        .map_err(|e| dev_err("creating a stream to record graphs on", e))?;
        let rec = Recorder {
            dev: self.dev.clone(),
            stream,
            workspace,
        };
        self.blas_on(Some(&rec), self.stream())?;
        Ok(rec)
    }

    fn stream(&self) -> drv_sys::CUstream {
        *self.dev.cu_stream()
    }

    /// Point cuBLAS at `stream`, with the recorder's workspace when there is one (setting the
    /// stream resets cuBLAS's workspace, so both go together).
    fn blas_on(&self, rec: Option<&Recorder>, stream: drv_sys::CUstream) -> Result<()> {
        let h = *self.blas.handle.handle();
        // SAFETY: our handle; a stream of its context.
        unsafe { blas::set_stream(h, stream as *mut _) }
            .map_err(|e| dev_err("cublasSetStream", e))?;
        if let Some(rec) = rec {
            // SAFETY: a live device buffer of BLAS_WORKSPACE bytes, 256-byte aligned.
            unsafe {
                blas_sys::cublasSetWorkspace_v2(
                    h,
                    *rec.workspace.device_ptr() as *mut c_void,
                    BLAS_WORKSPACE,
                )
            }
            .result()
            .map_err(|e| dev_err("cublasSetWorkspace", e))?;
        }
        Ok(())
    }

    /// A product on cuBLAS's current stream (the caller holds `Blas::busy`).
    fn gemm(&self, g: &Gemm) -> Result<()> {
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        let op = |t: bool| if t { CUBLAS_OP_T } else { CUBLAS_OP_N };
        let i = |v: usize| v as std::ffi::c_int;
        let c = g.col_major();
        let (alpha, beta) = (1.0f32, 0.0f32);
        // SAFETY: device addresses of buffers of these shapes (step.rs).
        unsafe {
            blas::sgemm(
                *self.blas.handle.handle(),
                op(c.trans_a),
                op(c.trans_b),
                i(c.m),
                i(c.n),
                i(c.k),
                &alpha,
                c.a as *const f32,
                i(c.lda),
                c.b as *const f32,
                i(c.ldb),
                &beta,
                c.c as *mut f32,
                i(c.ldc),
            )
        }
        .map_err(|e| dev_err(&format!("cublasSgemm {}x{}x{}", g.m, g.n, g.k), e))
    }

    /// Issue `op` on `stream` (the caller holds `Blas::busy`, and cuBLAS is on `stream`).
    fn issue(&self, op: &Op, stream: drv_sys::CUstream) -> Result<()> {
        match op {
            Op::Launch {
                k,
                grid,
                block,
                args,
            } => {
                with_arg_ptrs(args, |ptrs| {
                    // SAFETY: `args` hold values of the kernel's parameter types (step.rs builds
                    // them so; the host-emulated tests run the same calls against the same
                    // signatures).
                    unsafe {
                        drv::launch_kernel(
                            self.module.funcs[*k as usize],
                            (*grid, 1, 1),
                            (*block, 1, 1),
                            0,
                            stream,
                            ptrs,
                        )
                    }
                    .map_err(|e| dev_err(&format!("launching {}", k.name()), e))
                })
            }
            Op::Gemm(g) => self.gemm(g),
            // SAFETY: device addresses within live buffers (step.rs).
            Op::Copy { dst, src, bytes } => {
                unsafe { drv::memcpy_dtod_async(*dst, *src, *bytes, stream) }
                    .map_err(|e| dev_err("device copy", e))
            }
            // SAFETY: as above.
            Op::Zero { dst, bytes } => unsafe { drv::memset_d8_async(*dst, 0, *bytes, stream) }
                .map_err(|e| dev_err("device memset", e)),
        }
    }

    /// Record `prog` on the recorder's stream and instantiate it. Inner error: no graph (nothing
    /// ran, the caller goes on one by one); outer error: cuBLAS could not be moved back to the
    /// legacy stream (its products would race with the kernels there).
    fn try_record(&self, rec: &Arc<Recorder>, prog: &[Op]) -> Result<Result<CudaGraph>> {
        use drv_sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        let _busy = self.blas.lock();
        let made = (|| {
            self.blas_on(Some(rec), rec.stream)?;
            // SAFETY: our stream, not recording (recordings hold `busy`).
            unsafe {
                drv_sys::cuStreamBeginCapture_v2(rec.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            }
            .result()
            .map_err(|e| dev_err("beginning to record a graph", e))?;
            let issued = prog.iter().try_for_each(|op| self.issue(op, rec.stream));
            let mut graph: drv_sys::CUgraph = std::ptr::null_mut();
            // SAFETY: ends the recording begun above, on every path (a failed one returns a
            // null graph or one to destroy).
            let ended = unsafe { drv_sys::cuStreamEndCapture(rec.stream, &mut graph) }
                .result()
                .map_err(|e| dev_err("ending a graph's recording", e));
            let made = issued.and(ended).and_then(|()| {
                let mut exec: drv_sys::CUgraphExec = std::ptr::null_mut();
                // SAFETY: a graph just recorded.
                unsafe { drv_sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }
                    .result()
                    .map_err(|e| dev_err("instantiating a recorded graph", e))?;
                Ok(CudaGraph {
                    dev: self.dev.clone(),
                    exec,
                    _module: self.module.clone(),
                    _rec: rec.clone(),
                })
            });
            if !graph.is_null() {
                // SAFETY: the recorded graph; its instance (if any) does not need it.
                let _ = unsafe { drv_sys::cuGraphDestroy(graph) };
            }
            made
        })();
        self.blas_on(Some(rec), self.stream())?;
        Ok(made)
    }
}

impl Buf for CudaSlice<u8> {
    fn ptr(&self) -> u64 {
        *self.device_ptr()
    }
    fn write(&mut self, off: usize, src: &[u8]) -> Result<()> {
        if off + src.len() > self.len() {
            nn_bail!(Device, "internal: device write out of bounds");
        }
        let dev = self.device();
        dev.bind_to_thread().map_err(|e| dev_err("bind", e))?;
        // SAFETY: in bounds; a synchronous copy on the legacy stream (after earlier work).
        unsafe { drv::memcpy_htod_sync(*self.device_ptr() + off as u64, src) }
            .map_err(|e| dev_err("copy to the device", e))
    }
    fn read(&self, off: usize, dst: &mut [u8]) -> Result<()> {
        if off + dst.len() > self.len() {
            nn_bail!(Device, "internal: device read out of bounds");
        }
        let dev = self.device();
        dev.bind_to_thread().map_err(|e| dev_err("bind", e))?;
        // SAFETY: in bounds; synchronous, ordered after the stream's earlier work.
        unsafe { drv::memcpy_dtoh_sync(dst, *self.device_ptr() + off as u64) }
            .map_err(|e| dev_err("copy from the device", e))
    }
}

impl Gpu for CudaGpu {
    type Buf = CudaSlice<u8>;
    type Graph = CudaGraph;
    fn bind(&self) -> Result<()> {
        self.dev.bind_to_thread().map_err(|e| dev_err("bind", e))
    }
    fn alloc(&self, bytes: usize) -> Result<CudaSlice<u8>> {
        self.dev
            .alloc_zeros::<u8>(bytes.max(256))
            .map_err(|e| dev_err(&format!("allocating {bytes} bytes"), e))
    }
    fn block(&self) -> u32 {
        256
    }
    fn reduce_blocks(&self) -> u32 {
        256
    }
    fn run(&self, op: &Op) -> Result<()> {
        let _busy = self.blas.lock();
        self.issue(op, self.stream())
    }
    fn record(&self, prog: &[Op]) -> Result<Option<CudaGraph>> {
        let (true, Some(rec)) = (self.graphs, &self.rec) else {
            return Ok(None);
        };
        match self.try_record(rec, prog)? {
            Ok(g) => Ok(Some(g)),
            Err(e) => {
                // Nothing ran: the model's steps go on launching their operations one by one.
                eprintln!(
                    "seqpipe: could not record the CUDA step as a graph ({e:#}); this model's \
                     steps launch their kernels one by one"
                );
                Ok(None)
            }
        }
    }
    fn replay(&self, graph: &CudaGraph) -> Result<()> {
        // SAFETY: an instance of this context, launched on its legacy stream (ordered after
        // the step's upload, before its read-back).
        unsafe { drv_sys::cuGraphLaunch(graph.exec, self.stream()) }
            .result()
            .map_err(|e| dev_err("launching the step's graph", e))
    }
}

/// Adam moments on the device (kept in `Optimizer`, which knows them as [`FarMoments`]).
pub(in crate::nn) type DevMoments = Moments<CudaSlice<u8>>;

impl FarMoments for DevMoments {
    fn download(&self, lens: &[usize]) -> Result<MomentPair> {
        Moments::download(self, lens)
    }
    fn clone_box(&self) -> Box<dyn FarMoments> {
        Box::new(self.clone())
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// The device-resident training state of one `LanguageModel` on CUDA: created at its first
/// training step from the host weights. After steps the device weights are the current ones;
/// readers (`predict`, `eval_loss`, `named_tensors`, `save_safetensors`, ...) get a copy
/// through [`Resident::synced_core`].
#[derive(Default)]
pub(in crate::nn) struct Resident {
    trainer: Option<Trainer<CudaGpu>>,
}

impl Clone for Resident {
    /// A device copy of the weights (a clone of a model trains on from where the original is).
    fn clone(&self) -> Self {
        Self {
            trainer: self.trainer.as_ref().map(|t| {
                t.try_clone()
                    .unwrap_or_else(|e| panic!("cloning a CUDA-trained model: {e:#}"))
            }),
        }
    }
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.trainer {
            None => write!(f, "Resident(no device step yet)"),
            Some(t) => write!(
                f,
                "Resident(device weights {})",
                if t.dev_newer {
                    "newer than the host's"
                } else {
                    "as the host's"
                }
            ),
        }
    }
}

impl Resident {
    /// One training step on the device (inputs time-major, checked by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        core: &Core,
        opt: &mut Optimizer,
        x: &[u32],
        y: &[u32],
        b: usize,
        t: usize,
        state: &mut HiddenState,
        clip: Option<f32>,
    ) -> Result<StepStats> {
        if self.trainer.is_none() {
            self.trainer = Some(Trainer::new(CudaGpu::new()?, core)?);
        }
        let tr = self.trainer.as_mut().unwrap();
        tr.check(core, x, y, b, t, state)?;
        let upd = opt.next_update(&core.store.lens())?;
        let moments = match upd {
            Update::Adam { .. } => {
                if opt.cuda.is_none() {
                    let (m, v) = opt.host_moments();
                    let mo: DevMoments = tr.moments_from_host(m, v)?;
                    opt.cuda = Some(Box::new(mo));
                }
                opt.cuda
                    .as_mut()
                    .and_then(|b| b.as_any_mut().downcast_mut::<DevMoments>())
            }
            Update::Sgd { .. } => None,
        };
        tr.step(core, upd, moments, x, y, b, t, state, clip)
    }

    /// A copy of `core` with the device's weights, when those are newer than the host's.
    pub fn synced_core(&self, core: &Core) -> Result<Option<Core>> {
        match &self.trainer {
            Some(t) if t.dev_newer && !t.host_newer => {
                let mut c = core.clone();
                t.download_params(&mut c.store)?;
                Ok(Some(c))
            }
            _ => Ok(None),
        }
    }

    /// See [`Trainer::pull_state`].
    pub fn pull_state(&self, st: &mut HiddenState) -> Result<bool> {
        match &self.trainer {
            Some(t) => t.pull_state(st),
            None => Ok(false),
        }
    }

    /// The host weights were replaced (loaded): the next step uploads them.
    pub fn host_changed(&mut self) {
        if let Some(t) = &mut self.trainer {
            t.host_newer = true;
            t.dev_newer = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs libnvrtc (scripts/test-cuda-kernels.sh sets it up), no GPU: every kernel compiles
    /// to PTX for an H100 (compute_90), is an entry point, and no f32 multiply-add was
    /// contracted into an FMA (the CPU's bits need separate roundings).
    #[test]
    fn kernels_compile_with_nvrtc() {
        for arch in ["compute_90", "compute_80"] {
            let ptx = compile_kernels(arch).unwrap();
            for (_, name, _) in KERNELS {
                assert!(
                    ptx.contains(&format!(".visible .entry {name}(")),
                    "{arch}: no entry point {name} in the PTX"
                );
            }
            assert_eq!(
                ptx.matches(".visible .entry ").count(),
                KERNELS.len(),
                "{arch}: entry points"
            );
            assert!(
                !ptx.contains("fma.rn.f32"),
                "{arch}: an f32 FMA in the PTX (--fmad=false not applied?)"
            );
            assert!(
                ptx.contains(&format!(".target sm_{}", &arch[8..])),
                "{arch}: target"
            );
        }
    }

    /// A compile error comes back as a Device error with NVRTC's log.
    #[test]
    fn nvrtc_errors_are_reported() {
        let opts = CompileOptions {
            arch: Some("compute_90"),
            ..Default::default()
        };
        let e = compile_ptx_with_opts("extern \"C\" __global__ void k() { nope; }", opts);
        assert!(e.is_err());
        let e = compile_kernels("compute_1").unwrap_err();
        let s = format!("{e:#}");
        assert!(s.contains("NVRTC"), "{s}");
        assert!(e.downcast_ref::<crate::nn::NnError>().is_some());
    }
}
