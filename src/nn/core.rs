//! The recurrent core shared by `LanguageModel` and `SeriesRnn`: stacked RNN/GRU/LSTM layers with
//! a linear head, manual forward and manual BPTT.
//!
//! Layout conventions (all host buffers row-major, rows time-major: row = t*batch + b):
//! * layer parameters in PyTorch layout: `w_ih` [G*H, I], `w_hh` [G*H, H], `b_ih`, `b_hh` [G*H];
//!   head `w_lin` [O, H], `b_lin` [O].
//! * per step only `h_t · [W_hh; W_lin]^T` (forward) and `[dG_{t+1}, dY_t] · [W_hh; W_lin]`
//!   (backward) run as matmuls; the head, its gradient and dW_hh/dW_lin are folded into those
//!   (the "extended" recurrent matrix, W = G*H + O columns for the top layer), and
//!   `[dW_hh; dW_lin]^T = Hs^T · D` is one matmul over all steps.

use super::backend::{Ctx, DMat};
use super::math::{sigmoid_f, softmax_ce, tanh_f, transpose};
use super::params::ParamStore;
use super::{Activation, CellKind};
use dfdx::tensor_ops::Device;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

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
pub(super) struct DevW<D: Device<f32>> {
    layers: Vec<LDev<D>>,
}
struct LDev<D: Device<f32>> {
    wext_t: DMat<D>,               // [H, W]
    wext: DMat<D>,                 // [W, H]
    w_ih_t: Option<DMat<D>>,       // [I, GH] (dense input)
    w_ih: Option<DMat<D>>,         // [GH, I] (dense input)
    w_ih_t_host: Option<Vec<f32>>, // [V, GH] (one-hot input)
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
            anyhow::bail!("hidden, num_layers and output size must be > 0");
        }
        let in0 = match input {
            InKind::OneHot(v) => v,
            InKind::Embedding { dim, .. } => dim,
            InKind::Dense(i) => i,
        };
        if in0 == 0 {
            anyhow::bail!("input size must be > 0");
        }
        if let InKind::Embedding { vocab: 0, .. } = input {
            anyhow::bail!("vocab must be > 0");
        }
        let scratch = cell == CellKind::RnnScratch;
        if scratch && num_layers != 1 {
            anyhow::bail!("RnnScratch supports exactly one layer (got {num_layers})");
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
            anyhow::bail!(
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

    pub fn upload<D: Device<f32>>(&self, ctx: &Ctx<D>) -> DevW<D> {
        let h = self.hidden;
        let gh = self.g() * h;
        let p = &self.store.params;
        let mut layers = Vec::new();
        for (l, li) in self.layers.iter().enumerate() {
            let w = self.width(l);
            let mut wext = Vec::with_capacity(w * h);
            wext.extend_from_slice(&p[li.w_hh].data);
            if w > gh {
                wext.extend_from_slice(&p[self.lin_w].data);
            }
            let mut wext_t = vec![0.0; w * h];
            transpose(&wext, w, h, &mut wext_t);
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
            layers.push(LDev {
                wext_t: ctx.mat(&wext_t, h, w),
                wext: ctx.mat(&wext, w, h),
                w_ih_t,
                w_ih,
                w_ih_t_host: host,
            });
        }
        DevW { layers }
    }

    /// Forward over `t` steps of batch `b`; updates `state` to the final state.
    pub fn forward<D: Device<f32>>(
        &self,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs,
        b: usize,
        t: usize,
        state: &mut HiddenState,
    ) -> Fwd {
        let h = self.hidden;
        let g = self.g();
        let gh = g * h;
        let nl = self.layers.len();
        let o = self.out_dim;
        let p = &self.store.params;
        let mut caches: Vec<LCache> = Vec::with_capacity(nl);
        let mut logits = vec![0.0f32; t * b * o];
        for (l, li) in self.layers.iter().enumerate() {
            let top = l + 1 == nl;
            let w = self.width(l);
            let ld = &dw.layers[l];
            // ---- input projection for all steps: gi = x W_ih^T + b_ih (+ b_hh for RNN/LSTM)
            let mut gi = vec![0.0f32; t * b * gh];
            let mut x_in = None;
            if let Some(host) = &ld.w_ih_t_host {
                let Inputs::Tokens(x) = inp else {
                    unreachable!()
                };
                for (r, &tok) in x.iter().enumerate() {
                    let tok = tok as usize;
                    gi[r * gh..(r + 1) * gh].copy_from_slice(&host[tok * gh..(tok + 1) * gh]);
                }
            } else {
                let xin: Vec<f32> = if l > 0 {
                    caches[l - 1].hs[b * h..].to_vec()
                } else {
                    match (inp, self.input) {
                        (Inputs::Tokens(x), InKind::Embedding { dim, .. }) => {
                            let e = &p[self.emb.unwrap()].data;
                            let mut v = vec![0.0; x.len() * dim];
                            for (r, &tok) in x.iter().enumerate() {
                                let tok = tok as usize;
                                v[r * dim..(r + 1) * dim]
                                    .copy_from_slice(&e[tok * dim..(tok + 1) * dim]);
                            }
                            v
                        }
                        (Inputs::Dense(x), InKind::Dense(_)) => x.to_vec(),
                        _ => unreachable!("input kind checked at the boundary"),
                    }
                };
                if l == 0 {
                    x_in = Some(xin.clone());
                }
                let xm = ctx.mat_owned(xin, t * b, li.in_dim);
                ctx.mm(&xm, false, ld.w_ih_t.as_ref().unwrap(), false, &mut gi);
            }
            let bih = &p[li.b_ih].data;
            let fold_bhh = self.cell != CellKind::Gru;
            let mut bias = bih.clone();
            if fold_bhh {
                if let Some(bh) = li.b_hh {
                    bias.iter_mut().zip(&p[bh].data).for_each(|(a, &c)| *a += c);
                }
            }
            for row in gi.chunks_exact_mut(gh) {
                row.iter_mut().zip(&bias).for_each(|(a, &c)| *a += c);
            }
            let bhh_gru: Option<&Vec<f32>> = if fold_bhh {
                None
            } else {
                li.b_hh.map(|i| &p[i].data)
            };

            // ---- recurrence
            let mut hs = vec![0.0f32; (t + 1) * b * h];
            hs[..b * h].copy_from_slice(&state.h[l]);
            let lstm = self.cell == CellKind::Lstm;
            let gru = self.cell == CellKind::Gru;
            let mut cs = if lstm {
                vec![0.0f32; (t + 1) * b * h]
            } else {
                vec![]
            };
            let mut tcs = if lstm {
                vec![0.0f32; t * b * h]
            } else {
                vec![]
            };
            if lstm {
                cs[..b * h].copy_from_slice(&state.c.as_ref().unwrap()[l]);
            }
            let mut gates_buf = if g > 1 {
                vec![0.0f32; t * b * gh]
            } else {
                vec![]
            };
            let mut ghn = if gru { vec![0.0f32; t * b * h] } else { vec![] };
            let mut out = vec![0.0f32; b * w];
            let mut hm = ctx.mat(&hs[..b * h], b, h);
            ctx.mm(&hm, false, &ld.wext_t, false, &mut out);
            for s in 0..t {
                let (prev, cur) = hs[s * b * h..(s + 2) * b * h].split_at_mut(b * h);
                for bb in 0..b {
                    let gir = &gi[(s * b + bb) * gh..(s * b + bb + 1) * gh];
                    let ghr = &out[bb * w..bb * w + gh];
                    let hp = &prev[bb * h..(bb + 1) * h];
                    let hc = &mut cur[bb * h..(bb + 1) * h];
                    match self.cell {
                        CellKind::Rnn | CellKind::RnnScratch => match self.act {
                            Activation::Tanh => {
                                for ((o, &a), &c) in hc.iter_mut().zip(gir).zip(ghr) {
                                    *o = tanh_f(a + c);
                                }
                            }
                            Activation::Relu => {
                                for ((o, &a), &c) in hc.iter_mut().zip(gir).zip(ghr) {
                                    let v = a + c;
                                    *o = if v > 0.0 || v.is_nan() { v } else { 0.0 };
                                }
                            }
                        },
                        CellKind::Gru => {
                            let bhh = bhh_gru.unwrap();
                            let gr = &mut gates_buf[(s * b + bb) * gh..(s * b + bb + 1) * gh];
                            let gn = &mut ghn[(s * b + bb) * h..(s * b + bb + 1) * h];
                            for j in 0..h {
                                let r = sigmoid_f(gir[j] + ghr[j] + bhh[j]);
                                let z = sigmoid_f(gir[h + j] + ghr[h + j] + bhh[h + j]);
                                let hn = ghr[2 * h + j] + bhh[2 * h + j];
                                let n = tanh_f(gir[2 * h + j] + r * hn);
                                gr[j] = r;
                                gr[h + j] = z;
                                gr[2 * h + j] = n;
                                gn[j] = hn;
                                hc[j] = (1.0 - z) * n + z * hp[j];
                            }
                        }
                        CellKind::Lstm => {
                            let gr = &mut gates_buf[(s * b + bb) * gh..(s * b + bb + 1) * gh];
                            let (cprev_all, cnext_all) = cs.split_at_mut((s + 1) * b * h);
                            let cp = &cprev_all[(s * b + bb) * h..(s * b + bb + 1) * h];
                            let cn = &mut cnext_all[bb * h..(bb + 1) * h];
                            let tb = (s * b + bb) * h;
                            for j in 0..h {
                                let i = sigmoid_f(gir[j] + ghr[j]);
                                let f = sigmoid_f(gir[h + j] + ghr[h + j]);
                                let gg = tanh_f(gir[2 * h + j] + ghr[2 * h + j]);
                                let oo = sigmoid_f(gir[3 * h + j] + ghr[3 * h + j]);
                                gr[j] = i;
                                gr[h + j] = f;
                                gr[2 * h + j] = gg;
                                gr[3 * h + j] = oo;
                                let c = f * cp[j] + i * gg;
                                let tc = tanh_f(c);
                                tcs[tb + j] = tc;
                                hc[j] = oo * tc;
                                cn[j] = c;
                            }
                        }
                    }
                }
                if top || s + 1 < t {
                    hm.set(&hs[(s + 1) * b * h..(s + 2) * b * h]);
                    ctx.mm(&hm, false, &ld.wext_t, false, &mut out);
                    if top {
                        let bl = &p[self.lin_b].data;
                        for bb in 0..b {
                            let dst = &mut logits[(s * b + bb) * o..(s * b + bb + 1) * o];
                            let src = &out[bb * w + gh..(bb + 1) * w];
                            for ((d, &a), &c) in dst.iter_mut().zip(src).zip(bl) {
                                *d = a + c;
                            }
                        }
                    }
                }
            }
            state.h[l].copy_from_slice(&hs[t * b * h..]);
            if lstm {
                state.c.as_mut().unwrap()[l].copy_from_slice(&cs[t * b * h..]);
            }
            caches.push(LCache {
                hs,
                cs,
                tcs,
                gates: gates_buf,
                ghn,
                x_in,
            });
        }
        Fwd { caches, logits }
    }

    /// Loss sum, count, and dLoss/dlogits of the MEAN loss ([T*B, O]) if `grad`.
    pub fn loss(
        &self,
        fwd: &Fwd,
        tg: &Targets,
        b: usize,
        t: usize,
        grad: bool,
    ) -> (f64, usize, Vec<f32>) {
        let o = self.out_dim;
        let mut dy = if grad {
            vec![0.0f32; t * b * o]
        } else {
            vec![]
        };
        match tg {
            Targets::Tokens(y) => {
                let scale = 1.0 / (t * b) as f32;
                let mut sum = 0.0f64;
                for r in 0..t * b {
                    let lg = &fwd.logits[r * o..(r + 1) * o];
                    let gr = if grad {
                        Some(&mut dy[r * o..(r + 1) * o])
                    } else {
                        None
                    };
                    sum += softmax_ce(lg, y[r] as usize, scale, gr);
                }
                (sum, t * b, dy)
            }
            Targets::MseLast(y) => {
                let mut sum = 0.0f64;
                for bb in 0..b {
                    let r = (t - 1) * b + bb;
                    let e = fwd.logits[r * o] - y[bb];
                    sum += (e as f64) * (e as f64);
                    if grad {
                        dy[r * o] = 2.0 * e / b as f32;
                    }
                }
                (sum, b, dy)
            }
        }
    }

    /// Manual BPTT. Returns gradients (one per parameter, internal layout). If `record` is given,
    /// pushes ||dL/dh_t|| of the top layer for t = 1..=T (in time order).
    #[allow(clippy::too_many_arguments)]
    pub fn backward<D: Device<f32>>(
        &self,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs,
        fwd: &mut Fwd,
        dy: &[f32],
        b: usize,
        t: usize,
        mut record: Option<&mut Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        let h = self.hidden;
        let g = self.g();
        let gh = g * h;
        let nl = self.layers.len();
        let o = self.out_dim;
        let mut grads = self.store.zeros_like();
        let mut d_above: Option<Vec<f32>> = None;
        for l in (0..nl).rev() {
            let li = &self.layers[l];
            let top = l + 1 == nl;
            let w = self.width(l);
            let ld = &dw.layers[l];
            let c = &fwd.caches[l];
            let mut d = vec![0.0f32; (t + 1) * b * w];
            if top {
                for s in 0..t {
                    for bb in 0..b {
                        let dst = ((s + 1) * b + bb) * w + gh;
                        d[dst..dst + o]
                            .copy_from_slice(&dy[(s * b + bb) * o..(s * b + bb + 1) * o]);
                    }
                }
            }
            let mut dgi = vec![0.0f32; t * b * gh];
            let mut carry_h = vec![0.0f32; b * h];
            let mut carry_c = vec![0.0f32; b * h];
            let mut dh = vec![0.0f32; b * h];
            let mut dm = ctx.mat(&d[..b * w], b, w);
            let mut norms = Vec::new();
            for tt in (1..=t).rev() {
                let s = tt - 1;
                let has_mm = top || tt < t;
                if has_mm {
                    dm.set(&d[tt * b * w..(tt + 1) * b * w]);
                    ctx.mm(&dm, false, &ld.wext, false, &mut dh);
                } else {
                    dh.fill(0.0);
                }
                if self.cell == CellKind::Gru {
                    dh.iter_mut().zip(&carry_h).for_each(|(a, &c)| *a += c);
                }
                if let Some(da) = &d_above {
                    let src = &da[s * b * h..(s + 1) * b * h];
                    dh.iter_mut().zip(src).for_each(|(a, &c)| *a += c);
                }
                if top && record.is_some() {
                    norms.push(
                        dh.iter()
                            .map(|&x| (x as f64) * (x as f64))
                            .sum::<f64>()
                            .sqrt() as f32,
                    );
                }
                let (dlo, _) = d.split_at_mut(tt * b * w);
                let dprev = &mut dlo[s * b * w..];
                for bb in 0..b {
                    let dhr = &dh[bb * h..(bb + 1) * h];
                    let dg = &mut dprev[bb * w..bb * w + gh];
                    let dgir = &mut dgi[(s * b + bb) * gh..(s * b + bb + 1) * gh];
                    let hcur = &c.hs[(tt * b + bb) * h..(tt * b + bb + 1) * h];
                    match self.cell {
                        CellKind::Rnn | CellKind::RnnScratch => {
                            match self.act {
                                Activation::Tanh => {
                                    for ((g, &dv), &hv) in dg.iter_mut().zip(dhr).zip(hcur) {
                                        *g = dv * (1.0 - hv * hv);
                                    }
                                }
                                Activation::Relu => {
                                    for ((g, &dv), &hv) in dg.iter_mut().zip(dhr).zip(hcur) {
                                        *g = if hv > 0.0 { dv } else { 0.0 };
                                    }
                                }
                            }
                            dgir.copy_from_slice(dg);
                        }
                        CellKind::Gru => {
                            let gr = &c.gates[(s * b + bb) * gh..(s * b + bb + 1) * gh];
                            let gn = &c.ghn[(s * b + bb) * h..(s * b + bb + 1) * h];
                            let hp = &c.hs[(s * b + bb) * h..(s * b + bb + 1) * h];
                            let ch = &mut carry_h[bb * h..(bb + 1) * h];
                            for j in 0..h {
                                let (r, z, n) = (gr[j], gr[h + j], gr[2 * h + j]);
                                let dhj = dhr[j];
                                let dn = dhj * (1.0 - z);
                                let dz = dhj * (hp[j] - n);
                                ch[j] = dhj * z;
                                let dnp = dn * (1.0 - n * n);
                                let dr = dnp * gn[j];
                                let drp = dr * r * (1.0 - r);
                                let dzp = dz * z * (1.0 - z);
                                dg[j] = drp;
                                dg[h + j] = dzp;
                                dg[2 * h + j] = dnp * r;
                                dgir[j] = drp;
                                dgir[h + j] = dzp;
                                dgir[2 * h + j] = dnp;
                            }
                        }
                        CellKind::Lstm => {
                            let gr = &c.gates[(s * b + bb) * gh..(s * b + bb + 1) * gh];
                            let cp = &c.cs[(s * b + bb) * h..(s * b + bb + 1) * h];
                            let tc = &c.tcs[(s * b + bb) * h..(s * b + bb + 1) * h];
                            let cc = &mut carry_c[bb * h..(bb + 1) * h];
                            for j in 0..h {
                                let (i, f, gg, oo) =
                                    (gr[j], gr[h + j], gr[2 * h + j], gr[3 * h + j]);
                                let dhj = dhr[j];
                                let d_o = dhj * tc[j];
                                let dc = cc[j] + dhj * oo * (1.0 - tc[j] * tc[j]);
                                let di = dc * gg;
                                let dgg = dc * i;
                                let df = dc * cp[j];
                                cc[j] = dc * f;
                                dg[j] = di * i * (1.0 - i);
                                dg[h + j] = df * f * (1.0 - f);
                                dg[2 * h + j] = dgg * (1.0 - gg * gg);
                                dg[3 * h + j] = d_o * oo * (1.0 - oo);
                            }
                            dgir.copy_from_slice(dg);
                        }
                    }
                }
            }
            if top {
                if let Some(r) = record.as_deref_mut() {
                    norms.reverse();
                    r.extend_from_slice(&norms);
                }
            }
            if let Some(bh) = li.b_hh {
                let gb = &mut grads[bh];
                for row in d.chunks_exact(w) {
                    gb.iter_mut().zip(&row[..gh]).for_each(|(a, &c)| *a += c);
                }
            }
            // ---- weight gradients over all steps at once: [dW_hh; dW_lin]^T = Hs^T D
            let hs_owned = std::mem::take(&mut fwd.caches[l].hs);
            let hsm = ctx.mat_owned(hs_owned, (t + 1) * b, h);
            let dmat = ctx.mat_owned(std::mem::take(&mut d), (t + 1) * b, w);
            let mut dwt = vec![0.0f32; h * w];
            ctx.mm(&hsm, true, &dmat, false, &mut dwt);
            drop((hsm, dmat));
            {
                let gw = &mut grads[li.w_hh];
                for gi_ in 0..gh {
                    for j in 0..h {
                        gw[gi_ * h + j] = dwt[j * w + gi_];
                    }
                }
            }
            if top {
                let gw = &mut grads[self.lin_w];
                for oo in 0..o {
                    for j in 0..h {
                        gw[oo * h + j] = dwt[j * w + gh + oo];
                    }
                }
                let gb = &mut grads[self.lin_b];
                for r in 0..t * b {
                    for oo in 0..o {
                        gb[oo] += dy[r * o + oo];
                    }
                }
            }
            {
                let gb = &mut grads[li.b_ih];
                for row in dgi.chunks_exact(gh) {
                    gb.iter_mut().zip(row).for_each(|(a, &c)| *a += c);
                }
            }
            // ---- input weights and input gradient
            let one_hot = l == 0 && matches!(self.input, InKind::OneHot(_));
            if one_hot {
                let Inputs::Tokens(x) = inp else {
                    unreachable!()
                };
                let v = li.in_dim;
                let mut acc = vec![0.0f32; v * gh];
                for (&tok, src) in x.iter().zip(dgi.chunks_exact(gh)) {
                    let tok = tok as usize;
                    let dst = &mut acc[tok * gh..(tok + 1) * gh];
                    dst.iter_mut().zip(src).for_each(|(a, &c)| *a += c);
                }
                transpose(&acc, v, gh, &mut grads[li.w_ih]);
                d_above = None;
            } else {
                let xin: &[f32] = if l > 0 {
                    &fwd.caches[l - 1].hs[b * h..]
                } else {
                    fwd.caches[0].x_in.as_ref().unwrap()
                };
                let xm = ctx.mat(xin, t * b, li.in_dim);
                let dgm = ctx.mat_owned(std::mem::take(&mut dgi), t * b, gh);
                let mut dwi_t = vec![0.0f32; li.in_dim * gh];
                ctx.mm(&xm, true, &dgm, false, &mut dwi_t);
                transpose(&dwi_t, li.in_dim, gh, &mut grads[li.w_ih]);
                let need_dx = l > 0 || matches!(self.input, InKind::Embedding { .. });
                if need_dx {
                    let mut dx = vec![0.0f32; t * b * li.in_dim];
                    ctx.mm(&dgm, false, ld.w_ih.as_ref().unwrap(), false, &mut dx);
                    if l > 0 {
                        d_above = Some(dx);
                    } else {
                        let Inputs::Tokens(x) = inp else {
                            unreachable!()
                        };
                        let dim = li.in_dim;
                        let ge = &mut grads[self.emb.unwrap()];
                        for (r, &tok) in x.iter().enumerate() {
                            let tok = tok as usize;
                            for j in 0..dim {
                                ge[tok * dim + j] += dx[r * dim + j];
                            }
                        }
                    }
                }
            }
        }
        grads
    }
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
