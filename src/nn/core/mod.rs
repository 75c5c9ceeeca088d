//! The recurrent core shared by `LanguageModel` and `SeriesRnn`: stacked RNN/GRU/LSTM layers with
//! a linear head, manual forward and manual BPTT. The element-wise math of each cell lives in
//! `rnn`, `gru` and `lstm`, behind `cell::Cell`; the products, the caches and the loss are
//! shared, here and in `forward`, `backward`.
//!
//! Layout conventions (all host buffers row-major, rows time-major: row = t*batch + b):
//! * layer parameters in PyTorch layout: `w_ih` [G*H, I], `w_hh` [G*H, H], `b_ih`, `b_hh` [G*H];
//!   head `w_lin` [O, H], `b_lin` [O].
//! * per step only `h_t · [W_hh; W_lin]^T` (forward) and `[dG_{t+1}, dY_t] · [W_hh; W_lin]`
//!   (backward) run as matmuls; the head, its gradient and dW_hh/dW_lin are folded into those
//!   (the "extended" recurrent matrix, W = G*H + O columns for the top layer), and
//!   `[dW_hh; dW_lin]^T = Hs^T · D` is one matmul over all steps.

use super::backend::{Ctx, DMat, Engine};
use super::params::ParamStore;
use super::{Activation, CellKind};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

/// Evaluate `$body` with `$c` bound to the cell of `$core` (a `&impl Cell`).
macro_rules! with_cell {
    ($core:expr, $c:ident => $body:expr) => {
        match $core.cell {
            $crate::nn::CellKind::Rnn | $crate::nn::CellKind::RnnScratch => {
                let $c = &$crate::nn::core::rnn::Rnn($core.act);
                $body
            }
            $crate::nn::CellKind::Gru => {
                let $c = &$crate::nn::core::gru::Gru;
                $body
            }
            $crate::nn::CellKind::Lstm => {
                let $c = &$crate::nn::core::lstm::Lstm;
                $body
            }
        }
    };
}

mod backward;
mod cell;
/// The kernels of `nn::cuda`, compiled for the host, against the cells (here to reach them).
#[cfg(test)]
#[path = "../cuda/host_test.rs"]
mod cuda_host_test;
mod forward;
mod gru;
mod lstm;
mod rnn;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum InKind {
    OneHot(usize),
    Embedding { vocab: usize, dim: usize },
    Dense(usize),
}

/// Inputs, time-major.
pub(super) enum Inputs<'a> {
    Tokens(&'a [u32]),
    Dense(&'a [f32]),
}

/// Loss targets, time-major.
pub(super) enum Targets<'a> {
    /// Cross-entropy at every step, mean over all tokens.
    Tokens(&'a [u32]),
    /// MSE of the last step's scalar output, mean over the batch.
    MseLast(&'a [f32]),
}

/// Opaque recurrent state (per layer; LSTM also has cell states). Clone-able.
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenState {
    pub(super) batch: usize,
    pub(super) hidden: usize,
    pub(super) h: Vec<Vec<f32>>,
    pub(super) c: Option<Vec<Vec<f32>>>,
    /// Set by the CUDA training step (`nn::cuda`): (session, step) whose device buffers hold the
    /// current values; `h` and `c` are then stale. `None`: `h` and `c` are current.
    pub(super) on_device: Option<(u64, u64)>,
}

impl HiddenState {
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Shapes of the state tensors: (batch, hidden) per layer for h, then per layer for c (LSTM).
    pub fn shapes(&self) -> Vec<(usize, usize)> {
        let n = self.h.len() + self.c.as_ref().map_or(0, |c| c.len());
        vec![(self.batch, self.hidden); n]
    }
    /// Reset to zeros (same shape).
    pub fn reset(&mut self) {
        self.on_device = None;
        self.h.iter_mut().for_each(|v| v.fill(0.0));
        if let Some(c) = &mut self.c {
            c.iter_mut().for_each(|v| v.fill(0.0));
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct LayerIdx {
    pub w_ih: usize,
    pub w_hh: usize,
    pub b_ih: usize,
    pub b_hh: Option<usize>,
    pub in_dim: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Core {
    pub cell: CellKind,
    pub act: Activation,
    pub hidden: usize,
    pub input: InKind,
    pub out_dim: usize,
    pub layers: Vec<LayerIdx>,
    pub emb: Option<usize>,
    pub lin_w: usize,
    pub lin_b: usize,
    pub store: ParamStore,
}

pub(super) fn gates(cell: CellKind) -> usize {
    match cell {
        CellKind::RnnScratch | CellKind::Rnn => 1,
        CellKind::Gru => 3,
        CellKind::Lstm => 4,
    }
}

/// Device copies of the weights that enter matrix products.
pub(super) struct DevW<D: Engine> {
    layers: Vec<LDev<D>>,
}
struct LDev<D: Engine> {
    /// Device path only: `[H, W]` and `[W, H]` (the host path uses `packed`).
    wext_t: Option<DMat<D>>,
    wext: Option<DMat<D>>,
    w_ih_t: Option<DMat<D>>,       // [I, GH] (dense input)
    w_ih: Option<DMat<D>>,         // [GH, I] (dense input)
    w_ih_t_host: Option<Vec<f32>>, // [V, GH] (one-hot input)
    /// Host only: `wext_t` and `wext` packed for the per-step products.
    packed: Option<(super::gemm::Packed, super::gemm::Packed)>,
}

pub(super) struct LCache {
    hs: Vec<f32>,           // (T+1) blocks [B, H]
    cs: Vec<f32>,           // LSTM: (T+1) blocks [B, H]
    tcs: Vec<f32>,          // LSTM: tanh(c_t), T blocks
    gates: Vec<f32>,        // GRU: r,z,n ; LSTM: i,f,g,o  [T*B, GH]
    ghn: Vec<f32>,          // GRU: W_hn h + b_hn  [T*B, H]
    x_in: Option<Vec<f32>>, // dense input of this layer if not derivable ([T*B, I])
}

pub(super) struct Fwd {
    pub caches: Vec<LCache>,
    pub logits: Vec<f32>, // [T*B, O]
}

impl Drop for Fwd {
    /// The caches go back to the scratch pool for the next step.
    fn drop(&mut self) {
        for c in self.caches.drain(..) {
            for v in [c.hs, c.cs, c.tcs, c.gates, c.ghn] {
                super::scratch::give(v);
            }
        }
        super::scratch::give(std::mem::take(&mut self.logits));
    }
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cell: CellKind,
        act: Activation,
        input: InKind,
        hidden: usize,
        num_layers: usize,
        out_dim: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<Self> {
        if hidden == 0 || num_layers == 0 || out_dim == 0 {
            nn_bail!(Invalid, "hidden, num_layers and output size must be > 0");
        }
        let in0 = match input {
            InKind::OneHot(v) => v,
            InKind::Embedding { dim, .. } => dim,
            InKind::Dense(i) => i,
        };
        if in0 == 0 {
            nn_bail!(Invalid, "input size must be > 0");
        }
        if let InKind::Embedding { vocab: 0, .. } = input {
            nn_bail!(Invalid, "vocab must be > 0");
        }
        let scratch = cell == CellKind::RnnScratch;
        if scratch && num_layers != 1 {
            nn_bail!(
                Invalid,
                "RnnScratch supports exactly one layer (got {num_layers})"
            );
        }
        let g = gates(cell);
        let gh = g * hidden;
        let mut store = ParamStore::default();
        let mut layers = Vec::new();
        let k = 1.0 / (hidden as f32).sqrt();
        let uni = Uniform::new(-k, k);
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        let mut emb = None;
        if let InKind::Embedding { vocab, dim } = input {
            let d: Vec<f32> = (0..vocab * dim).map(|_| normal.sample(rng)).collect();
            emb = Some(store.add(vec![vocab, dim], d));
        }
        for l in 0..num_layers {
            let in_dim = if l == 0 { in0 } else { hidden };
            if scratch {
                // book: W_xh [V,H], W_hh [H,H] ~ N(0,1)*0.01, b_h = 0; stored transposed.
                let wxh: Vec<f32> = (0..in_dim * hidden)
                    .map(|_| normal.sample(rng) * 0.01)
                    .collect();
                let whh: Vec<f32> = (0..hidden * hidden)
                    .map(|_| normal.sample(rng) * 0.01)
                    .collect();
                let w_ih = store.add(
                    vec![hidden, in_dim],
                    super::math::transposed(&wxh, in_dim, hidden),
                );
                let w_hh = store.add(
                    vec![hidden, hidden],
                    super::math::transposed(&whh, hidden, hidden),
                );
                let b_ih = store.add(vec![hidden], vec![0.0; hidden]);
                layers.push(LayerIdx {
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh: None,
                    in_dim,
                });
            } else {
                let mut u = |n: usize| -> Vec<f32> { (0..n).map(|_| uni.sample(rng)).collect() };
                let w_ih = store.add(vec![gh, in_dim], u(gh * in_dim));
                let w_hh = store.add(vec![gh, hidden], u(gh * hidden));
                let b_ih = store.add(vec![gh], u(gh));
                let b_hh = Some(store.add(vec![gh], u(gh)));
                layers.push(LayerIdx {
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                    in_dim,
                });
            }
        }
        let (lin_w, lin_b) = if scratch {
            let whq: Vec<f32> = (0..hidden * out_dim)
                .map(|_| normal.sample(rng) * 0.01)
                .collect();
            let lw = store.add(
                vec![out_dim, hidden],
                super::math::transposed(&whq, hidden, out_dim),
            );
            let lb = store.add(vec![out_dim], vec![0.0; out_dim]);
            (lw, lb)
        } else {
            let lw = store.add(
                vec![out_dim, hidden],
                (0..out_dim * hidden).map(|_| uni.sample(rng)).collect(),
            );
            let lb = store.add(
                vec![out_dim],
                (0..out_dim).map(|_| uni.sample(rng)).collect(),
            );
            (lw, lb)
        };
        Ok(Self {
            cell,
            act,
            hidden,
            input,
            out_dim,
            layers,
            emb,
            lin_w,
            lin_b,
            store,
        })
    }

    pub fn g(&self) -> usize {
        gates(self.cell)
    }

    pub fn zero_state(&self, batch: usize) -> HiddenState {
        let n = self.layers.len();
        HiddenState {
            batch,
            hidden: self.hidden,
            h: vec![vec![0.0; batch * self.hidden]; n],
            c: if self.cell == CellKind::Lstm {
                Some(vec![vec![0.0; batch * self.hidden]; n])
            } else {
                None
            },
            on_device: None,
        }
    }

    pub fn check_state(&self, st: &HiddenState, batch: usize) -> anyhow::Result<()> {
        let ok = st.batch == batch
            && st.hidden == self.hidden
            && st.h.len() == self.layers.len()
            && st.h.iter().all(|v| v.len() == batch * self.hidden)
            && (self.cell == CellKind::Lstm) == st.c.is_some()
            && st.c.as_ref().is_none_or(|c| {
                c.len() == self.layers.len() && c.iter().all(|v| v.len() == batch * self.hidden)
            });
        if !ok {
            nn_bail!(Invalid,
                "hidden state shape mismatch: state has batch {} hidden {} ({} layers), model needs batch {batch} hidden {} ({} layers, {:?})",
                st.batch, st.hidden, st.h.len(), self.hidden, self.layers.len(), self.cell
            );
        }
        Ok(())
    }

    fn width(&self, l: usize) -> usize {
        self.g() * self.hidden
            + if l + 1 == self.layers.len() {
                self.out_dim
            } else {
                0
            }
    }

    /// The device copies of the weights; on the host, the recurrent weights packed for the
    /// per-step products of `batch` rows (split over the team: the choice of kernel is made
    /// for the rows one thread takes).
    pub fn upload<D: Engine>(&self, ctx: &Ctx<D>, batch: usize) -> DevW<D> {
        let _p = super::profile::enter(super::profile::Phase::Packing);
        let h = self.hidden;
        let rows = batch.max(1) / super::team::width().min(batch.max(1));
        let gh = self.g() * h;
        let p = &self.store.params;
        let mut layers = Vec::new();
        for (l, li) in self.layers.iter().enumerate() {
            let w = self.width(l);
            // [W_hh; W_lin] ([W, H], row-major) as two parts, without a joint copy on the host.
            let parts: Vec<&[f32]> = if w > gh {
                vec![&p[li.w_hh].data, &p[self.lin_w].data]
            } else {
                vec![&p[li.w_hh].data]
            };
            let one_hot = l == 0 && matches!(self.input, InKind::OneHot(_));
            let (w_ih_t, w_ih, host) = if one_hot {
                (
                    None,
                    None,
                    Some(super::math::transposed(&p[li.w_ih].data, gh, li.in_dim)),
                )
            } else {
                let t = super::math::transposed(&p[li.w_ih].data, gh, li.in_dim);
                (
                    Some(ctx.mat(&t, li.in_dim, gh)),
                    Some(ctx.mat(&p[li.w_ih].data, gh, li.in_dim)),
                    None,
                )
            };
            let (packed, wext_t, wext) = if D::HOST {
                use super::tune::{choice, Shape};
                let packed = (
                    super::gemm::pack_b_transposed(&parts, w, h, choice(Shape::step(rows, w, h))),
                    super::gemm::pack_b_rows(&parts, w, h, choice(Shape::step(rows, h, w))),
                );
                (Some(packed), None, None)
            } else {
                let wext: Vec<f32> = parts.concat();
                let wext_t = super::math::transposed(&wext, w, h);
                (
                    None,
                    Some(ctx.mat(&wext_t, h, w)),
                    Some(ctx.mat(&wext, w, h)),
                )
            };
            layers.push(LDev {
                packed,
                wext_t,
                wext,
                w_ih_t,
                w_ih,
                w_ih_t_host: host,
            });
        }
        DevW { layers }
    }
}

pub(in crate::nn) use super::rows::{Rows, RowsF64};

/// Run `f(r0, r1)` over chunks of the `b` batch rows: one chunk per thread of the team (at most
/// one per row), in parallel; a single chunk with one thread.
pub(super) fn par_chunks(b: usize, f: &(dyn Fn(usize, usize) + Sync)) {
    let parts = super::team::width().min(b).max(1);
    super::team::run(parts, &|p| {
        let _o = super::profile::enter(super::profile::Phase::Other);
        f(b * p / parts, b * (p + 1) / parts)
    });
}

/// Batch-major [b*steps+t] -> time-major [t*batch+b].
pub(super) fn to_time_major<T: Copy>(x: &[T], batch: usize, steps: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    for t in 0..steps {
        for b in 0..batch {
            out.push(x[b * steps + t]);
        }
    }
    out
}

pub(super) fn sample_index(probs: &[f32], rng: &mut impl Rng) -> usize {
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    if !(total.is_finite() && total > 0.0) {
        return 0;
    }
    let mut u = rng.gen::<f64>() * total;
    for (i, &p) in probs.iter().enumerate() {
        u -= p as f64;
        if u < 0.0 {
            return i;
        }
    }
    probs.len() - 1
}
