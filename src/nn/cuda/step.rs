//! The training step of a token language model (`rnn_scratch`, `rnn`, `gru`, `lstm`; one or more
//! layers; one-hot or embedding input; SGD or Adam; optional global-norm clipping) with
//! everything on the device, written once against [`Gpu`] (a real CUDA device in `device.rs`,
//! the host emulation in `emu.rs`).
//!
//! Per step: the token ids go up (one copy); then, all on the device and in one stream: the
//! input projection of every step (a gather for one-hot input, else one product), per time step
//! one product `h W_hh^T` and one fused cell kernel, the output layer for all steps as one
//! product, softmax cross-entropy, `dY W_lin` for all steps as one product, per time step one
//! product `dG W_hh` and one fused backward kernel, the weight gradients as one product each,
//! the bias gradients as column sums, the global norm and the clipping factor, the optimizer
//! update. Then the loss sum and the gradient norm come back (24 bytes): the step's only
//! transfer to the host. Parameters, gradients, Adam moments and the hidden state stay on the
//! device between steps.
//!
//! Those operations are first written down as a program ([`Op`]s: kernel, grid and argument
//! slots; products; copies), a pure function of the shapes, the buffers' addresses and the
//! constant settings. What changes from step to step (token ids, the optimizer's step sizes)
//! is read by the kernels from device memory written before the program runs. So a step whose
//! program equals the previous one's can replay a recorded graph of it: the second step of a
//! shape records one ([`Gpu::record`]), later steps launch it ([`Gpu::replay`]), and any
//! change of program (shape, state buffers, optimizer, clipping) runs one by one and records
//! anew. A device that cannot record or launch graphs goes on one by one.
//!
//! The math is the CPU path's (`core::{forward, backward}`), restructured for the device: the
//! CPU folds the output layer into the top layer's per-step product (the "extended" matrix); here
//! the output layer and its gradient run once over all steps. Same sums, other summation order.

use super::K;
use crate::nn::core::{Core, HiddenState, InKind};
use crate::nn::params::{MomentPair, ParamStore, Update};
use crate::nn::{Activation, CellKind, StepStats};
use anyhow::Result;
use std::sync::atomic::{AtomicU64, Ordering};

/// Device memory: a byte buffer at a fixed device address. `Clone` copies the contents.
pub(in crate::nn) trait Buf: Clone {
    fn ptr(&self) -> u64;
    /// Host to device, at byte offset `off` (waits for the device's earlier work).
    fn write(&mut self, off: usize, src: &[u8]) -> Result<()>;
    /// Device to host, from byte offset `off` (waits for the device's earlier work).
    fn read(&self, off: usize, dst: &mut [u8]) -> Result<()>;
}

/// A row-major product `C[m, n] = op(A) op(B)` (op: transposed when the flag is set), `C`
/// overwritten. Addresses are device addresses; `ld*` the row strides in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::nn) struct Gemm {
    pub ta: bool,
    pub tb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub b: u64,
    pub ldb: usize,
    pub c: u64,
    pub ldc: usize,
}

/// The column-major (BLAS) call computing a row-major [`Gemm`]: row-major `C = op(A) op(B)` is
/// column-major `C^T = op(B)^T op(A)^T`, and a row-major matrix read column-major is its
/// transpose. So: `gemm(transa = tb, transb = ta, m = n, n = m, k, A = b, lda = ldb, B = a,
/// ldb = lda, C = c, ldc)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::nn) struct ColMajor {
    pub trans_a: bool,
    pub trans_b: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: u64,
    pub lda: usize,
    pub b: u64,
    pub ldb: usize,
    pub c: u64,
    pub ldc: usize,
}

impl Gemm {
    pub fn col_major(&self) -> ColMajor {
        ColMajor {
            trans_a: self.tb,
            trans_b: self.ta,
            m: self.n,
            n: self.m,
            k: self.k,
            a: self.b,
            lda: self.ldb,
            b: self.a,
            ldb: self.lda,
            c: self.c,
            ldc: self.ldc,
        }
    }
}

/// One device operation of a step's program. Everything it does is in its fields (addresses,
/// sizes, constant scalars), so two equal programs do the same work: a recorded graph of one
/// can stand in for the other. What changes from step to step (the token ids, the optimizer's
/// step sizes) lives in device memory that the step writes before the program runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::nn) enum Op {
    /// Kernel `k` on a 1-d grid; each argument in an 8-byte slot (4-byte values in its low bytes).
    Launch {
        k: K,
        grid: u32,
        block: u32,
        args: Vec<u64>,
    },
    Gemm(Gemm),
    Copy {
        dst: u64,
        src: u64,
        bytes: usize,
    },
    Zero {
        dst: u64,
        bytes: usize,
    },
}

/// What the step needs from a device. All work is ordered (one stream).
pub(in crate::nn) trait Gpu {
    type Buf: Buf;
    /// A recorded program (a CUDA graph), replayed as a whole.
    type Graph;
    /// Make the device current for this thread.
    fn bind(&self) -> Result<()>;
    /// A zeroed buffer of at least `bytes` bytes (aligned to 256 bytes).
    fn alloc(&self, bytes: usize) -> Result<Self::Buf>;
    /// Run one operation now (after the earlier ones).
    fn run(&self, op: &Op) -> Result<()>;
    fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        self.run(&Op::Zero { dst, bytes })
    }
    /// Threads per block of the element-wise kernels.
    fn block(&self) -> u32;
    /// Most blocks of the first pass of the gradient norm.
    fn reduce_blocks(&self) -> u32;
    /// Record `prog` as one graph without running it. `Ok(None)`: this device records no
    /// graphs (switched off, or recording failed and was undone); the caller runs the
    /// operations one by one.
    fn record(&self, prog: &[Op]) -> Result<Option<Self::Graph>>;
    /// Run a recorded graph (ordered like any other work).
    fn replay(&self, graph: &Self::Graph) -> Result<()>;
}

/// A kernel argument (stored in an 8-byte slot; 4-byte values in its low bytes).
#[derive(Clone, Copy, Debug)]
pub(in crate::nn) enum Arg {
    /// A device address (0: null).
    P(u64),
    I(i32),
    L(i64),
    F(f32),
}

impl Arg {
    fn slot(self) -> u64 {
        match self {
            Arg::P(p) => p,
            Arg::I(v) => v as u32 as u64,
            Arg::L(v) => v as u64,
            Arg::F(v) => v.to_bits() as u64,
        }
    }
}

impl Op {
    pub fn launch(k: K, grid: u32, block: u32, args: &[Arg]) -> Self {
        Op::Launch {
            k,
            grid: grid.max(1),
            block,
            args: args.iter().map(|a| a.slot()).collect(),
        }
    }
}

/// Call `f` with a launch's arguments as cuLaunchKernel takes them: a pointer to each slot.
pub(in crate::nn) fn with_arg_ptrs<R>(
    args: &[u64],
    f: impl FnOnce(&mut [*mut std::ffi::c_void]) -> R,
) -> R {
    let mut slots = args.to_vec();
    let mut ptrs: Vec<*mut std::ffi::c_void> = slots
        .iter_mut()
        .map(|s| s as *mut u64 as *mut std::ffi::c_void)
        .collect();
    f(&mut ptrs)
}

/// Launch kernel `k` now.
#[cfg(test)]
pub(in crate::nn) fn launch<G: Gpu>(
    gpu: &G,
    k: K,
    grid: u32,
    block: u32,
    args: &[Arg],
) -> Result<()> {
    gpu.run(&Op::launch(k, grid, block, args))
}

fn blocks(n: usize, block: u32) -> u32 {
    n.div_ceil(block as usize).max(1) as u32
}

/// A step's program as it is written down: the operations in order.
struct Prog {
    ops: Vec<Op>,
    block: u32,
}
impl Prog {
    fn launch(&mut self, k: K, grid: u32, block: u32, args: &[Arg]) {
        self.ops.push(Op::launch(k, grid, block, args));
    }
    /// An element-wise kernel over `n` threads.
    fn launch_n(&mut self, k: K, n: usize, args: &[Arg]) {
        let bs = self.block;
        self.launch(k, blocks(n, bs), bs, args);
    }
    fn gemm(&mut self, g: Gemm) {
        self.ops.push(Op::Gemm(g));
    }
    /// A row-major product (see [`Gemm`]).
    #[allow(clippy::too_many_arguments)]
    fn mm(
        &mut self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: u64,
        lda: usize,
        b: u64,
        ldb: usize,
        c: u64,
        ldc: usize,
    ) {
        self.gemm(Gemm {
            ta,
            tb,
            m,
            n,
            k,
            a,
            lda,
            b,
            ldb,
            c,
            ldc,
        });
    }
    fn copy(&mut self, dst: u64, src: u64, bytes: usize) {
        self.ops.push(Op::Copy { dst, src, bytes });
    }
    fn zero(&mut self, dst: u64, bytes: usize) {
        self.ops.push(Op::Zero { dst, bytes });
    }
}

pub(in crate::nn) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte is a valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}
pub(in crate::nn) fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: as above, and every bit pattern is a valid f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}
fn i32_bytes(v: &[i32]) -> &[u8] {
    // SAFETY: as for f32.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// Byte offsets of the parts of one allocation (each aligned to 256 bytes).
#[derive(Default)]
struct Arena {
    bytes: usize,
}
impl Arena {
    fn take(&mut self, bytes: usize) -> usize {
        let off = self.bytes;
        self.bytes += bytes.div_ceil(256).max(1) * 256;
        off
    }
    fn f32s(&mut self, n: usize) -> usize {
        self.take(4 * n)
    }
}

/// Room for the optimizer's per-step scalars (Adam's six).
const HYPER: usize = 8;

/// How the steps of a [`Trainer`] ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(in crate::nn) struct Counts {
    /// Steps whose operations were launched one by one.
    pub one_by_one: u64,
    /// Graphs recorded.
    pub recorded: u64,
    /// Steps run as a recorded graph.
    pub replayed: u64,
}

/// Adam's moments on the device: flat, in the parameter store's order.
pub(in crate::nn) struct Moments<B: Buf> {
    m: B,
    v: B,
    total: usize,
}
impl<B: Buf> Clone for Moments<B> {
    fn clone(&self) -> Self {
        Self {
            m: self.m.clone(),
            v: self.v.clone(),
            total: self.total,
        }
    }
}
impl<B: Buf> std::fmt::Debug for Moments<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Moments {{ on the device, {} values each }}", self.total)
    }
}
impl<B: Buf> Moments<B> {
    /// (m, v) per parameter tensor of sizes `lens`.
    pub fn download(&self, lens: &[usize]) -> Result<MomentPair> {
        if lens.iter().sum::<usize>() != self.total {
            nn_bail!(
                Weights,
                "device Adam moments hold {} values, the optimizer's sizes {:?} need {}",
                self.total,
                lens,
                lens.iter().sum::<usize>()
            );
        }
        let mut out = Vec::new();
        for b in [&self.m, &self.v] {
            let mut flat = vec![0.0f32; self.total];
            b.read(0, f32_bytes_mut(&mut flat))?;
            out.push(split(&flat, lens));
        }
        let v = out.pop().unwrap();
        let m = out.pop().unwrap();
        Ok((m, v))
    }
}

fn split(flat: &[f32], lens: &[usize]) -> Vec<Vec<f32>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut o = 0;
    for &n in lens {
        out.push(flat[o..o + n].to_vec());
        o += n;
    }
    out
}

/// Per-layer device buffers of one (batch, steps) shape (addresses).
struct LWs {
    hs: u64,    // (T+1) blocks [B, H]; block 0 the initial state
    gi: u64,    // [T*B, GH]: input projection plus the folded biases
    gates: u64, // GRU r,z,n / LSTM i,f,g,o [T*B, GH]
    ghn: u64,   // GRU: W_hn h + b_hn [T*B, H]
    cs: u64,    // LSTM: (T+1) blocks [B, H]
    tcs: u64,   // LSTM: tanh(c_t) [T*B, H]
}

/// Device buffers of one (batch, steps) shape.
struct Ws<B: Buf> {
    b: usize,
    t: usize,
    buf: B,
    base: u64,
    layers: Vec<LWs>,
    ghh: u64,      // per-step product [B, GH]
    xin: u64,      // embedding rows [T*B, dim]
    logits: u64,   // [T*B, O]
    dy: u64,       // dLoss/dlogits [T*B, O]
    row_loss: u64, // f64 [T*B]
    dhy: u64,      // dY W_lin [T*B, H]
    dhmm: u64,     // per-step product dG W_hh [B, H]
    carry: u64,    // GRU dh through z / LSTM dc [B, H]
    dg: u64,       // [T*B, GH] gradients at W_hh's outputs (RNN/LSTM: also W_ih's)
    dgi: u64,      // GRU: [T*B, GH] gradients at W_ih's outputs
    d_above: u64,  // [T*B, H] gradient from the layer above
    dx: u64,       // embedding: [T*B, dim]
    tokens: u64,   // i32: x [T*B], y [T*B], order [T*B], starts [V+1]
    tokens_off: usize,
    /// Where the optimizer's scalars start in `tokens` (in 4-byte elements).
    hyper_at: usize,
    partial: u64, // f64 [np]
    np: usize,
    stats: u64, // f64 [3]: loss sum, grad norm, clip scale
    stats_off: usize,
}

/// The device hidden state between steps, per layer [B, H] (h, and c for LSTM).
struct StateBufs<B: Buf> {
    b: usize,
    buf: B,
    h: Vec<u64>,
    c: Vec<u64>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The device side of one model: its parameters, gradients, hidden state and work buffers.
pub(in crate::nn) struct Trainer<G: Gpu> {
    gpu: G,
    id: u64,
    lens: Vec<usize>,
    offs: Vec<usize>,
    total: usize,
    params: G::Buf,
    grads: G::Buf,
    /// The host parameters changed (weights loaded): upload them before the next step.
    pub host_newer: bool,
    /// The device parameters changed since they were uploaded: the host copy is stale.
    pub dev_newer: bool,
    ws: Option<Ws<G::Buf>>,
    state: Option<StateBufs<G::Buf>>,
    steps: u64,
    /// The recorded graph and the program it holds.
    graph: Option<(Vec<Op>, G::Graph)>,
    /// The program of the last step run one by one.
    last: Vec<Op>,
    /// Still try to record graphs (false after the device declined once).
    graphs: bool,
    pub counts: Counts,
}

impl<G: Gpu> Trainer<G> {
    /// Upload the parameters of `core`.
    pub fn new(gpu: G, core: &Core) -> Result<Self> {
        gpu.bind()?;
        let lens = core.store.lens();
        let mut offs = Vec::with_capacity(lens.len());
        let mut total = 0;
        for &n in &lens {
            offs.push(total);
            total += n;
        }
        let params = gpu.alloc(4 * total)?;
        let grads = gpu.alloc(4 * total)?;
        let mut tr = Self {
            gpu,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            lens,
            offs,
            total,
            params,
            grads,
            host_newer: false,
            dev_newer: false,
            ws: None,
            state: None,
            steps: 0,
            graph: None,
            last: Vec::new(),
            graphs: true,
            counts: Counts::default(),
        };
        tr.upload_params(&core.store)?;
        Ok(tr)
    }

    /// A copy on the same device (parameters copied there; no hidden state: states tagged by
    /// `self` are refused by the copy).
    pub fn try_clone(&self) -> Result<Self>
    where
        G: Clone,
    {
        Ok(Self {
            gpu: self.gpu.clone(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            lens: self.lens.clone(),
            offs: self.offs.clone(),
            total: self.total,
            params: self.params.clone(),
            grads: self.gpu.alloc(4 * self.total)?,
            host_newer: self.host_newer,
            dev_newer: self.dev_newer,
            ws: None,
            state: None,
            steps: 0,
            graph: None,
            last: Vec::new(),
            graphs: self.graphs,
            counts: Counts::default(),
        })
    }

    fn upload_params(&mut self, store: &ParamStore) -> Result<()> {
        if store.lens() != self.lens {
            nn_bail!(
                Weights,
                "device copy has parameter sizes {:?}, the model {:?}",
                self.lens,
                store.lens()
            );
        }
        let flat: Vec<f32> = store
            .params
            .iter()
            .flat_map(|p| p.data.iter().copied())
            .collect();
        self.params.write(0, f32_bytes(&flat))?;
        self.host_newer = false;
        self.dev_newer = false;
        Ok(())
    }

    /// Write the device parameters into `store` (same sizes).
    pub fn download_params(&self, store: &mut ParamStore) -> Result<()> {
        if store.lens() != self.lens {
            nn_bail!(
                Weights,
                "device copy has parameter sizes {:?}, the model {:?}",
                self.lens,
                store.lens()
            );
        }
        self.gpu.bind()?;
        let mut flat = vec![0.0f32; self.total];
        self.params.read(0, f32_bytes_mut(&mut flat))?;
        for (p, d) in store.params.iter_mut().zip(split(&flat, &self.lens)) {
            p.data = d;
        }
        Ok(())
    }

    /// Adam moments on this device from the optimizer's host copy.
    pub fn moments_from_host(&self, m: &[Vec<f32>], v: &[Vec<f32>]) -> Result<Moments<G::Buf>> {
        let lens_m: Vec<usize> = m.iter().map(Vec::len).collect();
        let lens_v: Vec<usize> = v.iter().map(Vec::len).collect();
        if lens_m != self.lens || lens_v != self.lens {
            nn_bail!(
                Weights,
                "Adam moments have sizes {lens_m:?}/{lens_v:?}, the model {:?}",
                self.lens
            );
        }
        self.gpu.bind()?;
        let mut out = Vec::new();
        for x in [m, v] {
            let flat: Vec<f32> = x.iter().flat_map(|p| p.iter().copied()).collect();
            let mut b = self.gpu.alloc(4 * self.total)?;
            b.write(0, f32_bytes(&flat))?;
            out.push(b);
        }
        let v = out.pop().unwrap();
        let m = out.pop().unwrap();
        Ok(Moments {
            m,
            v,
            total: self.total,
        })
    }

    /// The tag of the device hidden state the last step left.
    fn tag(&self) -> (u64, u64) {
        (self.id, self.steps)
    }

    /// If `st` is this trainer's current device state: copy it to the host (`h`, `c`), untag it
    /// and return true. Otherwise false (nothing changes).
    pub fn pull_state(&self, st: &mut HiddenState) -> Result<bool> {
        let Some(sb) = &self.state else {
            return Ok(false);
        };
        if st.on_device != Some(self.tag()) || sb.b != st.batch {
            return Ok(false);
        }
        self.gpu.bind()?;
        let base = sb.buf.ptr();
        for (l, h) in st.h.iter_mut().enumerate() {
            sb.buf.read((sb.h[l] - base) as usize, f32_bytes_mut(h))?;
        }
        if let Some(c) = &mut st.c {
            for (l, c) in c.iter_mut().enumerate() {
                sb.buf.read((sb.c[l] - base) as usize, f32_bytes_mut(c))?;
            }
        }
        st.on_device = None;
        Ok(true)
    }

    /// Inputs of a step that this device code cannot take, or that do not fit `core`.
    pub fn check(
        &self,
        core: &Core,
        x: &[u32],
        y: &[u32],
        b: usize,
        t: usize,
        state: &HiddenState,
    ) -> Result<()> {
        let vocab = match core.input {
            InKind::OneHot(v) => v,
            InKind::Embedding { vocab, .. } => vocab,
            InKind::Dense(_) => nn_bail!(
                Invalid,
                "the CUDA training step takes token models only (this model has dense input)"
            ),
        };
        if b == 0 || t == 0 || x.len() != b * t || y.len() != b * t {
            nn_bail!(
                Invalid,
                "CUDA step: x and y need batch*steps = {b}*{t} tokens (got {} and {})",
                x.len(),
                y.len()
            );
        }
        if let Some(&bad) = x.iter().find(|&&v| v as usize >= vocab) {
            nn_bail!(Invalid, "x contains token {bad} >= vocab {vocab}");
        }
        if let Some(&bad) = y.iter().find(|&&v| v as usize >= core.out_dim) {
            nn_bail!(
                Invalid,
                "y contains token {bad} >= output size {}",
                core.out_dim
            );
        }
        if b * t * core.out_dim.max(core.g() * core.hidden) > i32::MAX as usize {
            nn_bail!(
                Invalid,
                "CUDA step: batch*steps*width = {}*{}*{} exceeds the kernels' 32-bit sizes",
                b,
                t,
                core.out_dim.max(core.g() * core.hidden)
            );
        }
        core.check_state(state, b)?;
        if let Some(tag) = state.on_device {
            if tag != self.tag() {
                nn_bail!(
                    Invalid,
                    "this hidden state is stale: it was left on the device by {} (a copy made \
                     before a later step, or another model); use the state the last train_step \
                     returned, or a fresh one from zero_state",
                    if tag.0 == self.id {
                        format!(
                            "step {} of this model, which is now at step {}",
                            tag.1, self.steps
                        )
                    } else {
                        "another model's CUDA step".to_string()
                    }
                );
            }
        }
        Ok(())
    }

    fn ensure_ws(&mut self, core: &Core, b: usize, t: usize) -> Result<()> {
        if self.ws.as_ref().is_some_and(|w| w.b == b && w.t == t) {
            return Ok(());
        }
        self.ws = None; // free the old buffers first
        let (h, g, nl, o) = (core.hidden, core.g(), core.layers.len(), core.out_dim);
        let gh = g * h;
        let (tb, bh) = (t * b, b * h);
        let cell = core.cell;
        let (vocab, dim) = match core.input {
            InKind::OneHot(v) => (v, 0),
            InKind::Embedding { vocab, dim } => (vocab, dim),
            InKind::Dense(_) => unreachable!("checked"),
        };
        let mut a = Arena::default();
        let mut lay = Vec::with_capacity(nl);
        for _ in 0..nl {
            let hs = a.f32s((t + 1) * bh);
            let gi = a.f32s(tb * gh);
            let gates = if g > 1 { a.f32s(tb * gh) } else { usize::MAX };
            let ghn = if cell == CellKind::Gru {
                a.f32s(tb * h)
            } else {
                usize::MAX
            };
            let (cs, tcs) = if cell == CellKind::Lstm {
                (a.f32s((t + 1) * bh), a.f32s(tb * h))
            } else {
                (usize::MAX, usize::MAX)
            };
            lay.push([hs, gi, gates, ghn, cs, tcs]);
        }
        let ghh = a.f32s(b * gh);
        let xin = if dim > 0 {
            a.f32s(tb * dim)
        } else {
            usize::MAX
        };
        let logits = a.f32s(tb * o);
        let dy = a.f32s(tb * o);
        let row_loss = a.take(8 * tb);
        let dhy = a.f32s(tb * h);
        let dhmm = a.f32s(bh);
        let carry = a.f32s(bh);
        let dg = a.f32s(tb * gh);
        let dgi = if cell == CellKind::Gru {
            a.f32s(tb * gh)
        } else {
            usize::MAX
        };
        let d_above = if nl > 1 { a.f32s(tb * h) } else { usize::MAX };
        let dx = if dim > 0 {
            a.f32s(tb * dim)
        } else {
            usize::MAX
        };
        let hyper_at = 3 * tb + vocab + 1;
        let tokens = a.take(4 * (hyper_at + HYPER));
        let np = blocks(self.total, self.gpu.block()).min(self.gpu.reduce_blocks()) as usize;
        let partial = a.take(8 * np);
        let stats = a.take(8 * 3);
        let buf = self.gpu.alloc(a.bytes)?;
        let base = buf.ptr();
        // Absent parts get address 0 (null): a kernel that touched one would fail loudly.
        let at = |off: usize| {
            if off == usize::MAX {
                0
            } else {
                base + off as u64
            }
        };
        let layers = lay
            .iter()
            .map(|&[hs, gi, gates, ghn, cs, tcs]| LWs {
                hs: at(hs),
                gi: at(gi),
                gates: at(gates),
                ghn: at(ghn),
                cs: at(cs),
                tcs: at(tcs),
            })
            .collect();
        self.ws = Some(Ws {
            b,
            t,
            base,
            layers,
            ghh: at(ghh),
            xin: at(xin),
            logits: at(logits),
            dy: at(dy),
            row_loss: at(row_loss),
            dhy: at(dhy),
            dhmm: at(dhmm),
            carry: at(carry),
            dg: at(dg),
            dgi: at(dgi),
            d_above: at(d_above),
            dx: at(dx),
            tokens: at(tokens),
            tokens_off: tokens,
            hyper_at,
            partial: at(partial),
            np,
            stats: at(stats),
            stats_off: stats,
            buf,
        });
        Ok(())
    }

    /// Make the device state hold `st`: keep it when `st` is tagged with the current state,
    /// else upload `st`'s host values (zeros by a memset).
    fn ensure_state(&mut self, core: &Core, st: &HiddenState) -> Result<()> {
        let (b, h, nl) = (st.batch, core.hidden, core.layers.len());
        let lstm = core.cell == CellKind::Lstm;
        if st.on_device == Some(self.tag()) && self.state.as_ref().is_some_and(|s| s.b == b) {
            return Ok(());
        }
        if self.state.as_ref().is_none_or(|s| s.b != b) {
            self.state = None;
            let mut a = Arena::default();
            let hs: Vec<usize> = (0..nl).map(|_| a.f32s(b * h)).collect();
            let cs: Vec<usize> = if lstm {
                (0..nl).map(|_| a.f32s(b * h)).collect()
            } else {
                vec![]
            };
            let buf = self.gpu.alloc(a.bytes)?;
            let base = buf.ptr();
            self.state = Some(StateBufs {
                b,
                h: hs.iter().map(|&o| base + o as u64).collect(),
                c: cs.iter().map(|&o| base + o as u64).collect(),
                buf,
            });
        }
        let sb = self.state.as_mut().unwrap();
        let base = sb.buf.ptr();
        let host =
            st.h.iter()
                .zip(&sb.h)
                .chain(st.c.iter().flat_map(|c| c.iter()).zip(if lstm {
                    &sb.c[..]
                } else {
                    &[][..]
                }));
        let host: Vec<(&Vec<f32>, u64)> = host.map(|(v, &a)| (v, a)).collect();
        for (v, addr) in host {
            if v.iter().all(|&x| x == 0.0) {
                self.gpu.zero(addr, 4 * v.len())?;
            } else {
                sb.buf.write((addr - base) as usize, f32_bytes(v))?;
            }
        }
        Ok(())
    }

    /// The operations of one training step (forward, loss, BPTT, norm and clipping, the
    /// update: Adam when `moments` is given, else SGD) for the work buffers and state in place.
    /// Equal for every step of one shape, optimizer and clipping: what changes from step to
    /// step is read from device memory (`Ws::tokens`).
    fn program(
        &self,
        core: &Core,
        moments: Option<&Moments<G::Buf>>,
        clip: Option<f32>,
    ) -> Result<Vec<Op>> {
        let ws = self.ws.as_ref().expect("ensure_ws before program");
        let sb = self.state.as_ref().expect("ensure_state before program");
        let (vocab, dim) = match core.input {
            InKind::OneHot(v) => (v, 0),
            InKind::Embedding { vocab, dim } => (vocab, dim),
            InKind::Dense(_) => unreachable!("checked"),
        };
        let (b, t, h) = (ws.b, ws.t, core.hidden);
        let at = StepAt {
            core,
            ws,
            sb,
            offs: &self.offs,
            pbase: self.params.ptr(),
            gbase: self.grads.ptr(),
            total: self.total,
            b,
            t,
            h,
            gh: core.g() * h,
            o: core.out_dim,
            tb: t * b,
            bh: b * h,
            vocab,
            dim,
        };
        let mut pr = Prog {
            ops: Vec::with_capacity(8 * t * core.layers.len() + 32),
            block: self.gpu.block(),
        };
        at.forward(&mut pr);
        at.loss(&mut pr);
        at.backward(&mut pr);
        at.gradient_norm(&mut pr, clip);
        at.update(&mut pr, moments)?;
        Ok(pr.ops)
    }

    /// Run a step's program: as its recorded graph when there is one, else one by one. A
    /// graph is recorded from the second step in a row with the same program (the first ran
    /// every operation once, so cuBLAS chose and loaded its kernels outside the recording).
    /// When the device cannot record or launch graphs, the model goes on one by one.
    fn run_program(&mut self, prog: Vec<Op>) -> Result<()> {
        if self.graph.as_ref().is_some_and(|(p, _)| *p != prog) {
            self.graph = None;
        }
        if self.graph.is_none() && self.graphs && self.last == prog {
            match self.gpu.record(&prog)? {
                Some(g) => {
                    self.counts.recorded += 1;
                    self.graph = Some((prog.clone(), g));
                    self.last = Vec::new();
                }
                None => self.graphs = false,
            }
        }
        if let Some((_, g)) = &self.graph {
            match self.gpu.replay(g) {
                Ok(()) => {
                    self.counts.replayed += 1;
                    return Ok(());
                }
                // A launch that failed ran nothing: go on one by one.
                Err(e) => {
                    eprintln!(
                        "seqpipe: launching the recorded CUDA step failed ({e:#}); this model's \
                         steps launch their kernels one by one"
                    );
                    self.graph = None;
                    self.graphs = false;
                }
            }
        }
        for op in &prog {
            self.gpu.run(op)?;
        }
        self.counts.one_by_one += 1;
        self.last = prog;
        Ok(())
    }

    /// One training step (inputs time-major, as `Core` takes them): forward, loss, BPTT,
    /// clipping and the update `upd` (from `Optimizer::next_update`; `moments` for Adam), all on
    /// the device. `state` is left tagged with the device state after the step.
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &mut self,
        core: &Core,
        upd: Update,
        moments: Option<&mut Moments<G::Buf>>,
        x: &[u32],
        y: &[u32],
        b: usize,
        t: usize,
        state: &mut HiddenState,
        clip: Option<f32>,
    ) -> Result<StepStats> {
        self.check(core, x, y, b, t, state)?;
        if let (Update::Adam { .. }, None) = (upd, &moments) {
            nn_bail!(Invalid, "internal: an Adam step without device moments");
        }
        self.gpu.bind()?;
        if self.host_newer {
            self.upload_params(&core.store)?;
        }
        self.ensure_ws(core, b, t)?;
        self.ensure_state(core, state)?;

        let tb = t * b;
        let vocab = match core.input {
            InKind::OneHot(v) | InKind::Embedding { vocab: v, .. } => v,
            InKind::Dense(_) => unreachable!("checked"),
        };

        // ---- what changes from step to step, in one upload: x, y, the rows of x grouped by
        // token (stable) for the input gradients, and the optimizer's scalars ("hyper")
        let mut tok = Vec::with_capacity(3 * tb + vocab + 1 + HYPER);
        tok.extend(x.iter().map(|&v| v as i32));
        tok.extend(y.iter().map(|&v| v as i32));
        let mut starts = vec![0i32; vocab + 1];
        for &v in x {
            starts[v as usize + 1] += 1;
        }
        for i in 0..vocab {
            starts[i + 1] += starts[i];
        }
        let mut fill = starts.clone();
        let mut order = vec![0i32; tb];
        for (r, &v) in x.iter().enumerate() {
            order[fill[v as usize] as usize] = r as i32;
            fill[v as usize] += 1;
        }
        tok.extend_from_slice(&order);
        tok.extend_from_slice(&starts);
        let hyper = upd.kernel_scalars();
        debug_assert!(hyper.len() <= HYPER);
        tok.extend(hyper.iter().map(|v| v.to_bits() as i32));
        {
            let ws = self.ws.as_mut().unwrap();
            debug_assert_eq!(ws.hyper_at, 3 * tb + vocab + 1);
            let off = ws.tokens_off;
            ws.buf.write(off, i32_bytes(&tok))?;
        }

        let prog = self.program(core, moments.as_deref(), clip)?;
        self.run_program(prog)?;

        let ws = self.ws.as_ref().unwrap();
        let mut stats = [0f64; 3];
        {
            // SAFETY: f64 has no padding; every bit pattern is valid.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(stats.as_mut_ptr() as *mut u8, 24) };
            ws.buf.read(ws.stats_off, bytes)?;
        }
        debug_assert_eq!(ws.base, ws.buf.ptr());
        self.steps += 1;
        self.dev_newer = true;
        state.on_device = Some(self.tag());
        Ok(StepStats {
            loss_sum: stats[0],
            tokens: tb,
            grad_norm: stats[1] as f32,
        })
    }
}

/// `base` advanced by `elems` f32s.
fn elem(base: u64, elems: usize) -> u64 {
    base + 4 * elems as u64
}

/// The direction of a cell kernel: forward, or backward with the gradient from the next step's
/// recurrent product (`mmp`, 0 at the last step) and from above or the output layer (`ex`).
#[derive(Clone, Copy)]
enum Pass {
    Forward,
    Backward { mmp: u64, ex: u64 },
}

/// What a step's program is written from: the model, the shapes, and the device addresses of
/// the parameters, gradients, work buffers and hidden state. Its methods write the phases of
/// [`Trainer::program`], in order: [`forward`](Self::forward), [`loss`](Self::loss),
/// [`backward`](Self::backward), [`gradient_norm`](Self::gradient_norm),
/// [`update`](Self::update).
struct StepAt<'a, B: Buf> {
    core: &'a Core,
    ws: &'a Ws<B>,
    sb: &'a StateBufs<B>,
    offs: &'a [usize],
    pbase: u64,
    gbase: u64,
    /// Parameter values in all.
    total: usize,
    b: usize,
    t: usize,
    h: usize,
    gh: usize,
    o: usize,
    tb: usize,
    bh: usize,
    vocab: usize,
    /// Embedding width (0: one-hot input).
    dim: usize,
}

impl<B: Buf> StepAt<'_, B> {
    /// Parameter tensor `i`.
    fn p(&self, i: usize) -> u64 {
        self.pbase + 4 * self.offs[i] as u64
    }
    /// The gradient of parameter tensor `i`.
    fn gr(&self, i: usize) -> u64 {
        self.gbase + 4 * self.offs[i] as u64
    }
    /// Token ids: x [TB], y [TB], the rows of x grouped by token [TB], each token's first
    /// row there [V+1].
    fn tok_x(&self) -> u64 {
        self.ws.tokens
    }
    fn tok_y(&self) -> u64 {
        elem(self.ws.tokens, self.tb)
    }
    fn order(&self) -> u64 {
        elem(self.ws.tokens, 2 * self.tb)
    }
    fn starts(&self) -> u64 {
        elem(self.ws.tokens, 3 * self.tb)
    }
    /// Gradients at W_ih's outputs: GRU has its own, RNN and LSTM share W_hh's (`dg`).
    fn dgi(&self) -> u64 {
        if self.core.cell == CellKind::Gru {
            self.ws.dgi
        } else {
            self.ws.dg
        }
    }
    /// Input of layer `l` for all steps, [TB, in_dim]: the embedding rows, or h_1..h_T of
    /// the layer below.
    fn layer_input(&self, l: usize) -> u64 {
        if l == 0 {
            self.ws.xin
        } else {
            elem(self.ws.layers[l - 1].hs, self.bh)
        }
    }

    /// The fused cell kernel of time step `s` of layer `l` (forward or backward), with its
    /// arguments: the one place that knows what each cell's kernels take.
    fn cell(&self, pr: &mut Prog, l: usize, s: usize, pass: Pass) {
        use Arg::{I, P};
        let (lw, ws) = (&self.ws.layers[l], self.ws);
        let (b, gh, bh) = (self.b, self.gh, self.bh);
        let (hi, bi) = (self.h as i32, self.b as i32);
        let relu = i32::from(self.core.act == Activation::Relu);
        // h_s (before the step) and h_{s+1} (after it), and the step's rows of the caches.
        let (hp, hc) = (elem(lw.hs, s * bh), elem(lw.hs, (s + 1) * bh));
        let gates = elem(lw.gates, s * b * gh);
        let (ghn, tc) = (elem(lw.ghn, s * bh), elem(lw.tcs, s * bh));
        let (cp, cn) = (elem(lw.cs, s * bh), elem(lw.cs, (s + 1) * bh));
        let (gi, dg) = (elem(lw.gi, s * b * gh), elem(ws.dg, s * b * gh));
        let (k, args) = match (self.core.cell, pass) {
            (CellKind::Rnn | CellKind::RnnScratch, Pass::Forward) => (
                K::RnnFwd,
                vec![I(relu), P(gi), P(ws.ghh), P(hc), I(bh as i32)],
            ),
            (CellKind::Gru, Pass::Forward) => {
                let b_hh = self.core.layers[l].b_hh.expect("GRU has b_hh");
                (
                    K::GruFwd,
                    vec![
                        P(gi),
                        P(ws.ghh),
                        P(self.p(b_hh)),
                        P(hp),
                        P(gates),
                        P(ghn),
                        P(hc),
                        I(bi),
                        I(hi),
                    ],
                )
            }
            (CellKind::Lstm, Pass::Forward) => (
                K::LstmFwd,
                vec![
                    P(gi),
                    P(ws.ghh),
                    P(cp),
                    P(gates),
                    P(cn),
                    P(tc),
                    P(hc),
                    I(bi),
                    I(hi),
                ],
            ),
            (CellKind::Rnn | CellKind::RnnScratch, Pass::Backward { mmp, ex }) => (
                K::RnnBwd,
                vec![I(relu), P(mmp), P(ex), P(hc), P(dg), I(bh as i32)],
            ),
            (CellKind::Gru, Pass::Backward { mmp, ex }) => (
                K::GruBwd,
                vec![
                    P(mmp),
                    P(ex),
                    P(gates),
                    P(ghn),
                    P(hp),
                    P(ws.carry),
                    P(dg),
                    P(elem(self.dgi(), s * b * gh)),
                    I(bi),
                    I(hi),
                ],
            ),
            (CellKind::Lstm, Pass::Backward { mmp, ex }) => (
                K::LstmBwd,
                vec![
                    P(mmp),
                    P(ex),
                    P(gates),
                    P(cp),
                    P(tc),
                    P(ws.carry),
                    P(dg),
                    I(bi),
                    I(hi),
                ],
            ),
        };
        pr.launch_n(k, bh, &args);
    }

    /// Forward through every layer: the input projection of all steps, the state in, per
    /// time step `h_s W_hh^T` and the cell kernel, the state out.
    fn forward(&self, pr: &mut Prog) {
        let (b, t, h, gh, bh) = (self.b, self.t, self.h, self.gh, self.bh);
        let lstm = self.core.cell == CellKind::Lstm;
        for (l, li) in self.core.layers.iter().enumerate() {
            let lw = &self.ws.layers[l];
            self.input_projection(pr, l);
            pr.copy(lw.hs, self.sb.h[l], 4 * bh);
            if lstm {
                pr.copy(lw.cs, self.sb.c[l], 4 * bh);
            }
            for s in 0..t {
                // ghh [B, GH] = h_s [B, H] W_hh^T
                let hp = elem(lw.hs, s * bh);
                pr.mm(
                    false,
                    true,
                    b,
                    gh,
                    h,
                    hp,
                    h,
                    self.p(li.w_hh),
                    h,
                    self.ws.ghh,
                    gh,
                );
                self.cell(pr, l, s, Pass::Forward);
            }
            pr.copy(self.sb.h[l], elem(lw.hs, t * bh), 4 * bh);
            if lstm {
                pr.copy(self.sb.c[l], elem(lw.cs, t * bh), 4 * bh);
            }
        }
    }

    /// gi [TB, GH] of layer `l` for all steps: the input projection plus `b_ih` (and `b_hh`
    /// folded in, except for GRU). A gather for one-hot input, else (after gathering the
    /// embedding rows) a product and the biases.
    fn input_projection(&self, pr: &mut Prog, l: usize) {
        use Arg::{I, P};
        let (li, lw) = (&self.core.layers[l], &self.ws.layers[l]);
        let (tb, gh) = (self.tb, self.gh);
        let (tbi, ghi) = (self.tb as i32, self.gh as i32);
        let bhh_fold = match (self.core.cell, li.b_hh) {
            (CellKind::Gru, _) | (_, None) => 0,
            (_, Some(bh)) => self.p(bh),
        };
        if let (0, InKind::OneHot(v)) = (l, self.core.input) {
            let args = [
                P(lw.gi),
                P(self.p(li.w_ih)),
                P(self.p(li.b_ih)),
                P(bhh_fold),
                P(self.tok_x()),
                I(tbi),
                I(ghi),
                I(v as i32),
            ];
            pr.launch_n(K::GatherOnehot, tb * gh, &args);
            return;
        }
        if l == 0 {
            let (e, dim) = (
                self.core.emb.expect("embedding input has a table"),
                self.dim,
            );
            let args = [
                P(self.ws.xin),
                P(self.p(e)),
                P(self.tok_x()),
                I(tbi),
                I(dim as i32),
            ];
            pr.launch_n(K::GatherRows, tb * dim, &args);
        }
        let (xin, in_dim) = (self.layer_input(l), li.in_dim);
        debug_assert_eq!(in_dim, if l == 0 { self.dim } else { self.h });
        // gi [TB, GH] = X [TB, I] W_ih^T (W_ih [GH, I])
        let w_ih = self.p(li.w_ih);
        pr.mm(
            false, true, tb, gh, in_dim, xin, in_dim, w_ih, in_dim, lw.gi, gh,
        );
        let args = [P(lw.gi), P(self.p(li.b_ih)), P(bhh_fold), I(tbi), I(ghi)];
        pr.launch_n(K::AddBias, tb * gh, &args);
    }

    /// The output layer and the softmax cross-entropy, all steps at once: logits, the
    /// per-row losses and dLoss/dlogits of the mean loss.
    fn loss(&self, pr: &mut Prog) {
        use Arg::{F, I, P};
        let (tb, h, o, ws) = (self.tb, self.h, self.o, self.ws);
        let hs1 = elem(ws.layers.last().expect("a layer").hs, self.bh); // h_1 .. h_T: [TB, H]
        let lin_w = self.p(self.core.lin_w);
        pr.mm(false, true, tb, o, h, hs1, h, lin_w, h, ws.logits, o);
        let args = [
            P(ws.logits),
            P(self.p(self.core.lin_b)),
            P(0),
            I(tb as i32),
            I(o as i32),
        ];
        pr.launch_n(K::AddBias, tb * o, &args);
        let scale = 1.0 / tb as f32;
        let args = [
            P(ws.logits),
            P(self.tok_y()),
            P(ws.dy),
            P(ws.row_loss),
            I(o as i32),
            F(scale),
        ];
        pr.launch(K::SoftmaxCe, tb as u32, pr.block.min(128), &args);
    }

    /// Backpropagation: the output layer's gradients, then per layer from the top: through
    /// time, the weight and bias gradients, and the gradient of the layer's input.
    fn backward(&self, pr: &mut Prog) {
        use Arg::{I, P};
        let (tb, h, o, ws) = (self.tb, self.h, self.o, self.ws);
        let hs1 = elem(ws.layers.last().expect("a layer").hs, self.bh);
        let (lin_w, lin_b) = (self.core.lin_w, self.core.lin_b);
        // dh from the output layer for all steps: [TB, H] = dY [TB, O] W_lin [O, H]
        pr.mm(
            false,
            false,
            tb,
            h,
            o,
            ws.dy,
            o,
            self.p(lin_w),
            h,
            ws.dhy,
            h,
        );
        // dW_lin [O, H] = dY^T Hs_1..T
        pr.mm(true, false, o, h, tb, ws.dy, o, hs1, h, self.gr(lin_w), h);
        let args = [P(ws.dy), I(tb as i32), I(o as i32), P(self.gr(lin_b)), P(0)];
        pr.launch_n(K::ColSum, o, &args);
        // The gradient at the outputs of the layer above (the output layer for the top one).
        let mut above = ws.dhy;
        for l in (0..self.core.layers.len()).rev() {
            self.through_time(pr, l, above);
            self.recurrent_weight_grads(pr, l);
            above = self.input_grads(pr, l);
        }
    }

    /// BPTT of layer `l`: per time step from the last, `dG_{s+1} W_hh` (none at the last
    /// step) and the cell's backward kernel, with `above` [TB, H] the gradient from above.
    fn through_time(&self, pr: &mut Prog, l: usize, above: u64) {
        let (b, t, h, gh, bh, ws) = (self.b, self.t, self.h, self.gh, self.bh, self.ws);
        let w_hh = self.p(self.core.layers[l].w_hh);
        pr.zero(ws.carry, 4 * bh);
        for tt in (1..=t).rev() {
            let mmp = if tt < t {
                // dh_tt [B, H] = dG_tt [B, GH] W_hh [GH, H]
                let dg_tt = elem(ws.dg, tt * b * gh);
                pr.mm(false, false, b, h, gh, dg_tt, gh, w_hh, h, ws.dhmm, h);
                ws.dhmm
            } else {
                0
            };
            let ex = elem(above, (tt - 1) * bh);
            self.cell(pr, l, tt - 1, Pass::Backward { mmp, ex });
        }
    }

    /// dW_hh of layer `l` as one product over all steps, and the bias gradients as column
    /// sums (RNN and LSTM: one sum for both biases; GRU: each its own).
    fn recurrent_weight_grads(&self, pr: &mut Prog, l: usize) {
        use Arg::{I, P};
        let (li, lw, ws) = (&self.core.layers[l], &self.ws.layers[l], self.ws);
        let (tb, h, gh) = (self.tb, self.h, self.gh);
        let (tbi, ghi) = (self.tb as i32, self.gh as i32);
        // dW_hh [GH, H] = dG^T [GH, TB] Hs_0..T-1 [TB, H]
        pr.mm(
            true,
            false,
            gh,
            h,
            tb,
            ws.dg,
            gh,
            lw.hs,
            h,
            self.gr(li.w_hh),
            h,
        );
        let b_ih = self.gr(li.b_ih);
        // (rows summed, into, and also into)
        let sums = match li.b_hh {
            Some(b_hh) if self.core.cell == CellKind::Gru => {
                vec![(ws.dg, self.gr(b_hh), 0), (self.dgi(), b_ih, 0)]
            }
            Some(b_hh) => vec![(ws.dg, self.gr(b_hh), b_ih)],
            None => vec![(ws.dg, b_ih, 0)],
        };
        for (src, dst, dst2) in sums {
            pr.launch_n(K::ColSum, gh, &[P(src), I(tbi), I(ghi), P(dst), P(dst2)]);
        }
    }

    /// dW_ih of layer `l` and the gradient of its input: into the layer below (returned, as
    /// its `above`), or scattered into the embedding's rows, or (one-hot input) dW_ih by a
    /// scatter of the rows of dGi by token.
    fn input_grads(&self, pr: &mut Prog, l: usize) -> u64 {
        use Arg::{I, P};
        let (li, ws) = (&self.core.layers[l], self.ws);
        let (tb, gh, dgi) = (self.tb, self.gh, self.dgi());
        // dst[v, cols] += the rows of src grouped by token (row strides ss, ds as i32s).
        let scatter =
            |pr: &mut Prog, dst: u64, src: u64, v: usize, cols: usize, (ss, ds): (i32, i32)| {
                let args = [
                    P(dst),
                    P(src),
                    P(self.order()),
                    P(self.starts()),
                    I(v as i32),
                    I(cols as i32),
                    I(ss),
                    I(ds),
                ];
                pr.launch_n(K::ScatterRows, v * cols, &args);
            };
        if let (0, InKind::OneHot(v)) = (l, self.core.input) {
            scatter(pr, self.gr(li.w_ih), dgi, v, gh, (1, v as i32));
            return 0;
        }
        let (in_dim, xin) = (li.in_dim, self.layer_input(l));
        // dW_ih [GH, I] = dGi^T X
        let gw_ih = self.gr(li.w_ih);
        pr.mm(
            true, false, gh, in_dim, tb, dgi, gh, xin, in_dim, gw_ih, in_dim,
        );
        // dX [TB, I] = dGi W_ih
        let dx = if l > 0 { ws.d_above } else { ws.dx };
        let w_ih = self.p(li.w_ih);
        pr.mm(
            false, false, tb, in_dim, gh, dgi, gh, w_ih, in_dim, dx, in_dim,
        );
        if l == 0 {
            let (e, dim) = (
                self.core.emb.expect("embedding input has a table"),
                self.dim,
            );
            scatter(pr, self.gr(e), ws.dx, self.vocab, dim, (dim as i32, 1));
        }
        ws.d_above
    }

    /// The global gradient norm (partial sums of squares, then one block), the clipping
    /// factor and the loss sum, into `Ws::stats`.
    fn gradient_norm(&self, pr: &mut Prog, clip: Option<f32>) {
        use Arg::{F, I, L, P};
        let ws = self.ws;
        let args = [P(self.gbase), L(self.total as i64), P(ws.partial)];
        pr.launch(K::SumsqPartial, ws.np as u32, pr.block, &args);
        let (has_clip, theta) = match clip {
            Some(c) => (1, c),
            None => (0, 0.0),
        };
        let args = [
            P(ws.partial),
            I(ws.np as i32),
            P(ws.row_loss),
            I(self.tb as i32),
            I(has_clip),
            F(theta),
            P(ws.stats),
        ];
        pr.launch(K::FinishStep, 1, 1, &args);
    }

    /// The optimizer's update of every parameter (clipping folded in): Adam with `moments`,
    /// else SGD; their per-step scalars are read from `Ws::tokens`.
    fn update(&self, pr: &mut Prog, moments: Option<&Moments<B>>) -> Result<()> {
        use Arg::{L, P};
        let (n, ws) = (self.total, self.ws);
        let hyper = elem(ws.tokens, ws.hyper_at);
        let (pbase, gbase) = (self.pbase, self.gbase);
        match moments {
            // hyper: lr, weight decay
            None => pr.launch_n(
                K::SgdStep,
                n,
                &[P(pbase), P(gbase), L(n as i64), P(ws.stats), P(hyper)],
            ),
            // hyper: step size, beta1, beta2, eps, weight decay, sqrt(1 - beta2^t)
            Some(mo) => {
                if mo.total != n {
                    nn_bail!(
                        Weights,
                        "device Adam moments hold {} values, the model {n}",
                        mo.total
                    );
                }
                let args = [
                    P(pbase),
                    P(gbase),
                    P(mo.m.ptr()),
                    P(mo.v.ptr()),
                    L(n as i64),
                    P(ws.stats),
                    P(hyper),
                ];
                pr.launch_n(K::AdamStep, n, &args)
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::core::Core;
    use rand::SeedableRng;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A device that only hands out addresses (deterministic: each allocation after the last,
    /// from 2^40 on) and keeps the bytes written; it runs nothing. With it, a step's program is
    /// a pure function of the configuration, the same in every run.
    #[derive(Clone)]
    struct AddrGpu {
        next: Rc<Cell<u64>>,
        block: u32,
    }
    #[derive(Clone)]
    struct AddrBuf {
        ptr: u64,
        bytes: Vec<u8>,
    }
    impl Buf for AddrBuf {
        fn ptr(&self) -> u64 {
            self.ptr
        }
        fn write(&mut self, off: usize, src: &[u8]) -> Result<()> {
            self.bytes[off..off + src.len()].copy_from_slice(src);
            Ok(())
        }
        fn read(&self, off: usize, dst: &mut [u8]) -> Result<()> {
            dst.copy_from_slice(&self.bytes[off..off + dst.len()]);
            Ok(())
        }
    }
    impl Gpu for AddrGpu {
        type Buf = AddrBuf;
        type Graph = ();
        fn bind(&self) -> Result<()> {
            Ok(())
        }
        fn alloc(&self, bytes: usize) -> Result<AddrBuf> {
            let ptr = self.next.get();
            self.next.set(ptr + (bytes.div_ceil(256) as u64 + 1) * 256);
            Ok(AddrBuf {
                ptr,
                bytes: vec![0; bytes],
            })
        }
        fn run(&self, _op: &Op) -> Result<()> {
            Ok(())
        }
        fn block(&self) -> u32 {
            self.block
        }
        fn reduce_blocks(&self) -> u32 {
            3
        }
        fn record(&self, _prog: &[Op]) -> Result<Option<()>> {
            Ok(None)
        }
        fn replay(&self, _graph: &()) -> Result<()> {
            Ok(())
        }
    }

    /// FNV-1a 64 of the program's text (every field of every operation, in order).
    fn fingerprint(prog: &[Op]) -> u64 {
        format!("{prog:?}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
                (h ^ c as u64).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// The program of one step of a configuration: (operations, kernel launches, fingerprint).
    #[allow(clippy::too_many_arguments)]
    fn program_of(
        cell: CellKind,
        act: Activation,
        input: InKind,
        layers: usize,
        adam: bool,
        clip: Option<f32>,
        (b, t): (usize, usize),
        block: u32,
    ) -> (usize, usize, u64) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let core = Core::new(cell, act, input, 5, layers, 7, &mut rng).unwrap();
        let gpu = AddrGpu {
            next: Rc::new(Cell::new(1 << 40)),
            block,
        };
        let mut tr = Trainer::new(gpu, &core).unwrap();
        let zeros = core.store.zeros_like();
        let moments = adam.then(|| tr.moments_from_host(&zeros, &zeros).unwrap());
        tr.ensure_ws(&core, b, t).unwrap();
        tr.ensure_state(&core, &core.zero_state(b)).unwrap();
        let prog = tr.program(&core, moments.as_ref(), clip).unwrap();
        let launches = prog
            .iter()
            .filter(|op| matches!(op, Op::Launch { .. }))
            .count();
        (prog.len(), launches, fingerprint(&prog))
    }

    /// The step's program, operation for operation, for a spread of configurations (every
    /// cell, one-hot and embedding input, one to three layers, SGD and Adam, with and without
    /// clipping, two block sizes): what a refactoring of `Trainer::program` must leave as it
    /// is. The figures were taken from the program before it was split by phase; a deliberate
    /// change of the program (another kernel, another argument) changes them, and the new ones
    /// come from this test's failure message.
    #[test]
    fn step_programs_stay_operation_for_operation() {
        use Activation::{Relu, Tanh};
        use CellKind::{Gru, Lstm, Rnn, RnnScratch};
        let oh = InKind::OneHot(7);
        let emb = InKind::Embedding { vocab: 7, dim: 4 };
        let cases = [
            (RnnScratch, Tanh, oh, 1, false, Some(1.0), (3, 4), 32),
            (Rnn, Relu, emb, 2, true, None, (3, 4), 32),
            (Rnn, Tanh, oh, 3, false, Some(0.05), (2, 3), 128),
            (Gru, Tanh, oh, 2, false, None, (3, 4), 32),
            (Gru, Tanh, emb, 1, true, Some(0.5), (4, 2), 64),
            (Lstm, Tanh, emb, 2, true, Some(1.0), (3, 4), 32),
            (Lstm, Tanh, oh, 1, false, None, (2, 5), 128),
        ];
        // (operations, kernel launches, fingerprint)
        let want: [(usize, usize, u64); 7] = [
            (0x1f, 0x11, 0xa345664c8f83caf5),
            (0x3b, 0x1c, 0x77cddb0908f14da6),
            (0x43, 0x1f, 0x974d10447111df3e),
            (0x39, 0x1d, 0x23dbb6689d0e84e7),
            (0x1c, 0x0f, 0x09ff517fddd089a0),
            (0x3f, 0x1c, 0x86007b500c89c52e),
            (0x25, 0x13, 0xb52a7e7e38e36103),
        ];
        let got: Vec<_> = cases
            .iter()
            .map(|&(c, a, i, l, adam, clip, bt, bs)| program_of(c, a, i, l, adam, clip, bt, bs))
            .collect();
        for (k, (case, (g, w))) in cases.iter().zip(got.iter().zip(&want)).enumerate() {
            // Per time step and layer: two products and a cell kernel forward, the same back.
            let (_, _, _, layers, _, _, (_, t), _) = *case;
            assert!(g.0 > 4 * t * layers, "case {k}: only {} operations", g.0);
            assert_eq!(
                g, w,
                "case {k} {case:?}: the step's program changed; all now: {got:#x?}"
            );
        }
    }

    /// BLAS semantics (column-major, as cublasSgemm): C[i + j*ldc] = sum_p op(A)(i,p) op(B)(p,j).
    fn blas_sgemm(g: &ColMajor, a: &[f32], b: &[f32], c: &mut [f32]) {
        for j in 0..g.n {
            for i in 0..g.m {
                let mut acc = 0.0f32;
                for p in 0..g.k {
                    let x = if g.trans_a {
                        a[p + i * g.lda]
                    } else {
                        a[i + p * g.lda]
                    };
                    let y = if g.trans_b {
                        b[j + p * g.ldb]
                    } else {
                        b[p + j * g.ldb]
                    };
                    acc += x * y;
                }
                c[i + j * g.ldc] = acc;
            }
        }
    }

    /// The mapping the CUDA device uses for cuBLAS gives the row-major product, for every
    /// transpose combination and with row strides wider than the rows.
    #[test]
    fn row_major_products_map_onto_blas() {
        let (m, n, k) = (3usize, 4usize, 5usize);
        let val = |i: usize| ((i * 7919) % 23) as f32 - 11.0;
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // A stored [m, k] (or [k, m] when ta) with a padded stride; B likewise.
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let (lda, ldb, ldc) = (ac + 2, bc + 1, n + 3);
            let a: Vec<f32> = (0..ar * lda).map(val).collect();
            let b: Vec<f32> = (0..br * ldb).map(|i| val(i + 5)).collect();
            let at = |i: usize, p: usize| if ta { a[p * lda + i] } else { a[i * lda + p] };
            let bt = |p: usize, j: usize| if tb { b[j * ldb + p] } else { b[p * ldb + j] };
            let mut want = vec![f32::NAN; m * ldc];
            for i in 0..m {
                for j in 0..n {
                    want[i * ldc + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
                }
            }
            let g = Gemm {
                ta,
                tb,
                m,
                n,
                k,
                a: 0,
                lda,
                b: 1,
                ldb,
                c: 2,
                ldc,
            };
            let cm = g.col_major();
            // The call's A is our B and its B our A (addresses 1 and 0 above).
            assert_eq!((cm.a, cm.b, cm.c), (1, 0, 2));
            let mut got = vec![f32::NAN; m * ldc];
            blas_sgemm(&cm, &b, &a, &mut got);
            for i in 0..m {
                for j in 0..n {
                    assert_eq!(
                        got[i * ldc + j],
                        want[i * ldc + j],
                        "ta {ta} tb {tb} ({i},{j})"
                    );
                }
            }
        }
    }
}
