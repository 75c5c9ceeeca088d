//! Forward pass over all time steps (one product per step on the recurrent path, the output
//! layer folded into it for the top layer) and the loss.

use super::super::backend::{Ctx, Engine};
use super::super::gemm;
use super::super::math::softmax_ce;
use super::super::profile;
use super::super::scratch;
use super::cell::{Cell, FwdRow};
use super::HiddenState;
use super::{par_chunks, Core, DevW, Fwd, InKind, Inputs, LCache, Rows, Targets};

impl Core {
    /// Forward over `t` steps of batch `b`; updates `state` to the final state.
    pub fn forward<D: Engine>(
        &self,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs,
        b: usize,
        t: usize,
        state: &mut HiddenState,
    ) -> Fwd {
        with_cell!(self, cell => self.forward_with(cell, ctx, dw, inp, b, t, state))
    }

    /// [`forward`](Self::forward) with the cell `C`: per layer from the bottom, the input
    /// projection of all steps, then the recurrence.
    #[allow(clippy::too_many_arguments)]
    fn forward_with<C: Cell, D: Engine>(
        &self,
        cell: &C,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs,
        b: usize,
        t: usize,
        state: &mut HiddenState,
    ) -> Fwd {
        let nl = self.layers.len();
        let mut caches: Vec<LCache> = Vec::with_capacity(nl);
        let mut logits = scratch::take(t * b * self.out_dim);
        for l in 0..nl {
            let fold = C::FOLDS_B_HH;
            let (gi, x_in) = self.input_projection(ctx, dw, inp, &caches, l, b, t, fold);
            let cache = self.recurrence(cell, ctx, dw, l, &gi, b, t, state, &mut logits);
            gi.give_back();
            caches.push(LCache { x_in, ..cache });
        }
        Fwd { caches, logits }
    }

    /// Layer `l`'s input projection for all steps, gi = x W_ih^T + b_ih (+ b_hh when the
    /// cell folds it) [T*B, GH]; and layer 0's input when it is not derivable (dense or
    /// embedding input), for the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn input_projection<'a, D: Engine>(
        &self,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs<'a>,
        below: &[LCache],
        l: usize,
        b: usize,
        t: usize,
        fold_b_hh: bool,
    ) -> (Projection<'a>, Option<Vec<f32>>) {
        let (h, gh) = (self.hidden, self.g() * self.hidden);
        let (li, ld, p) = (&self.layers[l], &dw.layers[l], &self.store.params);
        let mut bias = p[li.b_ih].data.clone();
        if fold_b_hh {
            if let Some(bh) = li.b_hh {
                bias.iter_mut().zip(&p[bh].data).for_each(|(a, &c)| *a += c);
            }
        }
        if let Some(host) = &ld.w_ih_t_host {
            let Inputs::Tokens(x) = *inp else {
                unreachable!()
            };
            // A one-hot input selects a row of W_ih^T, with the bias added (the same sums as a
            // product followed by the bias): one row per token of the vocabulary that the
            // steps' rows point into when there are more rows than tokens (training), else one
            // row per row (generation: one token at a time).
            let vocab = host.len() / gh;
            if t * b >= vocab {
                let mut table = host.clone();
                for row in table.chunks_exact_mut(gh) {
                    row.iter_mut().zip(&bias).for_each(|(a, &c)| *a += c);
                }
                return (Projection::Table { table, tokens: x }, None);
            }
            let mut gi = scratch::take(t * b * gh);
            for (&tok, dst) in x.iter().zip(gi.chunks_exact_mut(gh)) {
                let tok = tok as usize;
                let row = &host[tok * gh..(tok + 1) * gh];
                for ((d, &a), &c) in dst.iter_mut().zip(row).zip(&bias) {
                    *d = a + c;
                }
            }
            return (Projection::Rows(gi), None);
        }
        let mut gi = scratch::take(t * b * gh);
        let xin: Vec<f32> = if l > 0 {
            below[l - 1].hs[b * h..].to_vec()
        } else {
            match (inp, self.input) {
                (Inputs::Tokens(x), InKind::Embedding { dim, .. }) => {
                    let e = &p[self.emb.unwrap()].data;
                    let mut v = Vec::with_capacity(x.len() * dim);
                    for &tok in x.iter() {
                        let tok = tok as usize;
                        v.extend_from_slice(&e[tok * dim..(tok + 1) * dim]);
                    }
                    v
                }
                (Inputs::Dense(x), InKind::Dense(_)) => x.to_vec(),
                _ => unreachable!("input kind checked at the boundary"),
            }
        };
        let x_in = (l == 0).then(|| xin.clone());
        let xm = ctx.mat_owned(xin, t * b, li.in_dim);
        ctx.mm(&xm, false, ld.w_ih_t.as_ref().unwrap(), false, &mut gi);
        for row in gi.chunks_exact_mut(gh) {
            row.iter_mut().zip(&bias).for_each(|(a, &c)| *a += c);
        }
        (Projection::Rows(gi), x_in)
    }

    /// The recurrence of layer `l` over all steps from `state` (left at the final state):
    /// per step one product `h_s [W_hh; W_lin]^T` and the cell on every row; the top layer
    /// writes the logits. Returns the layer's caches for the backward pass.
    #[allow(clippy::too_many_arguments)]
    fn recurrence<D: Engine, C: Cell>(
        &self,
        cell: &C,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        l: usize,
        gi: &Projection,
        b: usize,
        t: usize,
        state: &mut HiddenState,
        logits: &mut [f32],
    ) -> LCache {
        let (h, gh, o) = (self.hidden, self.g() * self.hidden, self.out_dim);
        let (top, w, ld) = (l + 1 == self.layers.len(), self.width(l), &dw.layers[l]);
        let p = &self.store.params;
        let b_hh: &[f32] = match (C::FOLDS_B_HH, self.layers[l].b_hh) {
            (false, Some(i)) => &p[i].data,
            _ => &[],
        };
        // Every element of these is written below before it is read (scratch buffers); the
        // caches the cell does not keep stay empty.
        let kept = |keep: bool, n: usize| if keep { scratch::take(n) } else { vec![] };
        let mut hs = scratch::take((t + 1) * b * h);
        hs[..b * h].copy_from_slice(&state.h[l]);
        let mut cs = kept(C::CELL_STATE, (t + 1) * b * h);
        let mut tcs = kept(C::CELL_STATE, t * b * h);
        if C::CELL_STATE {
            cs[..b * h].copy_from_slice(&state.c.as_ref().unwrap()[l]);
        }
        let mut gates = kept(C::KEEPS_GATES, t * b * gh);
        let mut ghn = kept(C::KEEPS_GHN, t * b * h);
        // Batch rows are independent along the recurrence: with several threads each takes
        // a chunk of rows through all the steps (its own product per step, then its own
        // element-wise work), with no synchronisation per step.
        let (hs_w, cs_w, tcs_w) = (Rows::new(&mut hs), Rows::new(&mut cs), Rows::new(&mut tcs));
        let (gates_w, ghn_w, logits_w) = (
            Rows::new(&mut gates),
            Rows::new(&mut ghn),
            Rows::new(logits),
        );
        let bl = &p[self.lin_b].data;
        // SAFETY (all `Rows::at` below): a chunk touches only rows [r0, r1) of each time
        // block, and chunks are disjoint.
        let chunk = |r0: usize, r1: usize, mm: &dyn Fn(&[f32], &mut [f32])| unsafe {
            let nb = r1 - r0;
            let mut out = vec![0.0f32; nb * w];
            mm(hs_w.at(r0 * h, nb * h), &mut out);
            for s in 0..t {
                let cell_span = profile::enter(profile::Phase::Cell);
                for bb in r0..r1 {
                    let (gr, hr) = ((s * b + bb) * gh, (s * b + bb) * h);
                    cell.forward(FwdRow {
                        gi: gi.row(s * b + bb, gh),
                        gh: &out[(bb - r0) * w..(bb - r0) * w + gh],
                        b_hh,
                        hp: hs_w.at(hr, h),
                        hc: hs_w.at(hr + b * h, h),
                        gates: gates_w.at_kept(gr, gh),
                        ghn: ghn_w.at_kept(hr, h),
                        cp: cs_w.at_kept(hr, h),
                        cn: cs_w.at_kept(hr + b * h, h),
                        tc: tcs_w.at_kept(hr, h),
                    });
                }
                drop(cell_span);
                if top || s + 1 < t {
                    mm(hs_w.at(((s + 1) * b + r0) * h, nb * h), &mut out);
                    if top {
                        for bb in r0..r1 {
                            let dst = logits_w.at((s * b + bb) * o, o);
                            let src = &out[(bb - r0) * w + gh..(bb - r0 + 1) * w];
                            for ((d, &a), &c) in dst.iter_mut().zip(src).zip(bl) {
                                *d = a + c;
                            }
                        }
                    }
                }
            }
        };
        if D::HOST {
            let pk = &ld.packed.as_ref().unwrap().0;
            let mm =
                |a: &[f32], out: &mut [f32]| gemm::sgemm_packed_serial(a.len() / h, a, pk, out);
            par_chunks(b, &|r0, r1| chunk(r0, r1, &mm));
        } else {
            let mm = |a: &[f32], out: &mut [f32]| {
                let m = ctx.mat(a, a.len() / h, h);
                ctx.mm(&m, false, ld.wext_t.as_ref().unwrap(), false, out)
            };
            chunk(0, b, &mm);
        }
        state.h[l].copy_from_slice(&hs[t * b * h..]);
        if C::CELL_STATE {
            state.c.as_mut().unwrap()[l].copy_from_slice(&cs[t * b * h..]);
        }
        LCache {
            hs,
            cs,
            tcs,
            gates,
            ghn,
            x_in: None,
        }
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
                // Rows in parallel (the output layer of a word model is wide); the per-row
                // losses are summed in row order, so the sum does not depend on the threads.
                let mut row_loss = vec![0.0f64; t * b];
                let logits = &fwd.logits;
                let ce = |r: usize, l: &mut f64, gr: Option<&mut [f32]>| {
                    *l = softmax_ce(&logits[r * o..(r + 1) * o], y[r] as usize, scale, gr);
                };
                use rayon::prelude::*;
                let min_rows = (16_384 / o).max(1);
                if grad {
                    dy.par_chunks_mut(o)
                        .zip(row_loss.par_iter_mut())
                        .enumerate()
                        .with_min_len(min_rows)
                        .for_each(|(r, (g, l))| ce(r, l, Some(g)));
                } else {
                    row_loss
                        .par_iter_mut()
                        .enumerate()
                        .with_min_len(min_rows)
                        .for_each(|(r, l)| ce(r, l, None));
                }
                let sum: f64 = row_loss.iter().sum();
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
}

/// A layer's input projection `x W_ih^T + b` per row (time-major: row = s·B + b).
pub(super) enum Projection<'a> {
    /// Every row written out [T·B, GH].
    Rows(Vec<f32>),
    /// One-hot input: `table` [V, GH] holds W_ih^T's row of each token with the bias added,
    /// and row r is the row of token `tokens[r]`.
    Table { table: Vec<f32>, tokens: &'a [u32] },
}

impl Projection<'_> {
    #[inline]
    fn row(&self, r: usize, gh: usize) -> &[f32] {
        match self {
            Projection::Rows(v) => &v[r * gh..(r + 1) * gh],
            Projection::Table { table, tokens } => {
                let tok = tokens[r] as usize;
                &table[tok * gh..(tok + 1) * gh]
            }
        }
    }

    fn give_back(self) {
        if let Projection::Rows(v) = self {
            scratch::give(v);
        }
    }
}
