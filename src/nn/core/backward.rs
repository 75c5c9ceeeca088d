//! Backpropagation through time by hand: one product per step on the recurrent path, the weight
//! gradients of all steps as single products.

use super::super::backend::{Ctx, Engine};
use super::super::gemm;
use super::super::math::{add_col_sums, transpose};
use super::super::profile;
use super::super::scratch;
use super::cell::{BwdRow, Cell};
use super::{par_chunks, Core, DevW, Fwd, InKind, Inputs, Rows, RowsF64};

/// `n` elements of a cache from `at`; empty when the cell keeps no such cache.
fn kept(v: &[f32], at: usize, n: usize) -> &[f32] {
    if v.is_empty() {
        &[]
    } else {
        &v[at..at + n]
    }
}

impl Core {
    /// Manual BPTT. Returns gradients (one per parameter, internal layout). If `record` is given,
    /// pushes ||dL/dh_t|| of the top layer for t = 1..=T (in time order).
    #[allow(clippy::too_many_arguments)]
    pub fn backward<D: Engine>(
        &self,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs,
        fwd: &mut Fwd,
        dy: &[f32],
        b: usize,
        t: usize,
        record: Option<&mut Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        with_cell!(self, cell => self.backward_with(cell, ctx, dw, inp, fwd, dy, b, t, record))
    }

    /// [`backward`](Self::backward) with the cell `C`: per layer from the top, through time,
    /// then the gradients of the recurrent and output weights and biases, then those of the
    /// input weights and of the layer's input.
    #[allow(clippy::too_many_arguments)]
    fn backward_with<C: Cell, D: Engine>(
        &self,
        cell: &C,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs,
        fwd: &mut Fwd,
        dy: &[f32],
        b: usize,
        t: usize,
        mut record: Option<&mut Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        let mut grads = self.store.zeros_like();
        let mut d_above: Option<Vec<f32>> = None;
        for l in (0..self.layers.len()).rev() {
            let (d, dgi) = self.through_time(
                cell,
                ctx,
                dw,
                fwd,
                (dy, d_above.as_deref()),
                l,
                b,
                t,
                record.as_deref_mut(),
            );
            let fold = C::FOLDS_B_HH;
            self.recurrent_grads(ctx, fwd, d, &dgi, dy, l, b, t, fold, &mut grads);
            d_above = self.input_grads(ctx, dw, inp, fwd, dgi, l, b, t, &mut grads);
        }
        grads
    }

    /// BPTT of layer `l`, with `(dy, d_above)` the gradients from the output layer (top
    /// layer) and from the layer above. Returns D ((T+1) blocks [B, W]: block s+1 holds
    /// [dG_s | dY_s]) and dGi [T*B, GH], the gradients at W_hh's and W_ih's outputs.
    #[allow(clippy::too_many_arguments)]
    fn through_time<C: Cell, D: Engine>(
        &self,
        cell: &C,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        fwd: &Fwd,
        (dy, d_above): (&[f32], Option<&[f32]>),
        l: usize,
        b: usize,
        t: usize,
        record: Option<&mut Vec<f32>>,
    ) -> (Vec<f32>, Vec<f32>) {
        let (h, gh, o) = (self.hidden, self.g() * self.hidden, self.out_dim);
        let (top, w, ld) = (l + 1 == self.layers.len(), self.width(l), &dw.layers[l]);
        let c = &fwd.caches[l];
        // D: the cells write every dG_s of blocks 0..t-1, the head part of blocks 1..t is dY;
        // block 0's head part and block t's gates are zero.
        let mut d = scratch::take((t + 1) * b * w);
        d[..b * w].fill(0.0);
        d[t * b * w..].fill(0.0);
        if top {
            for s in 0..t {
                for bb in 0..b {
                    let dst = ((s + 1) * b + bb) * w + gh;
                    d[dst..dst + o].copy_from_slice(&dy[(s * b + bb) * o..(s * b + bb + 1) * o]);
                }
            }
        }
        let mut dgi = scratch::take(t * b * gh);
        let want_norms = top && record.is_some();
        let mut rowsq = vec![0.0f64; if want_norms { t * b } else { 0 }];
        let (d_w, dgi_w, rowsq_w) = (
            Rows::new(&mut d),
            Rows::new(&mut dgi),
            RowsF64::new(&mut rowsq),
        );
        // As in the forward pass: chunks of batch rows run through all the steps in parallel.
        // SAFETY (all `at` below): a chunk touches only rows [r0, r1) of each time block.
        let chunk = |r0: usize, r1: usize, mm: &dyn Fn(&[f32], &mut [f32])| unsafe {
            let nb = r1 - r0;
            let mut carry = vec![0.0f32; nb * h];
            let mut dh = vec![0.0f32; nb * h];
            for tt in (1..=t).rev() {
                let s = tt - 1;
                if top || tt < t {
                    mm(d_w.at((tt * b + r0) * w, nb * w), &mut dh);
                } else {
                    dh.fill(0.0);
                }
                if C::CARRY_IN_DH {
                    dh.iter_mut().zip(&carry).for_each(|(a, &c)| *a += c);
                }
                if let Some(da) = d_above {
                    let src = &da[(s * b + r0) * h..(s * b + r1) * h];
                    dh.iter_mut().zip(src).for_each(|(a, &c)| *a += c);
                }
                let _cell = profile::enter(profile::Phase::Cell);
                for bb in r0..r1 {
                    let k = bb - r0;
                    let dhr = &dh[k * h..(k + 1) * h];
                    if want_norms {
                        rowsq_w.at(s * b + bb)[0] =
                            dhr.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                    }
                    let (gr, hr) = ((s * b + bb) * gh, (s * b + bb) * h);
                    cell.backward(BwdRow {
                        dh: dhr,
                        hp: &c.hs[hr..hr + h],
                        hc: &c.hs[hr + b * h..hr + b * h + h],
                        gates: kept(&c.gates, gr, gh),
                        ghn: kept(&c.ghn, hr, h),
                        cp: kept(&c.cs, hr, h),
                        tc: kept(&c.tcs, hr, h),
                        carry: &mut carry[k * h..(k + 1) * h],
                        dg: d_w.at((s * b + bb) * w, gh),
                        dgi: dgi_w.at(gr, gh),
                    });
                }
            }
        };
        if D::HOST {
            let pk = &ld.packed.as_ref().unwrap().1;
            let mm =
                |a: &[f32], out: &mut [f32]| gemm::sgemm_packed_serial(a.len() / w, a, pk, out);
            par_chunks(b, &|r0, r1| chunk(r0, r1, &mm));
        } else {
            let mm = |a: &[f32], out: &mut [f32]| {
                let m = ctx.mat(a, a.len() / w, w);
                ctx.mm(&m, false, ld.wext.as_ref().unwrap(), false, out)
            };
            chunk(0, b, &mm);
        }
        if let (true, Some(r)) = (want_norms, record) {
            r.extend(
                rowsq
                    .chunks_exact(b)
                    .map(|q| q.iter().sum::<f64>().sqrt() as f32),
            );
        }
        (d, dgi)
    }

    /// The gradients of layer `l`'s recurrent weights (and, top layer, of the output layer)
    /// over all steps at once, `[dW_hh; dW_lin]^T = Hs^T D`, and of its biases. `fold_b_hh`:
    /// b_hh was folded into the input projection, so its gradient is b_ih's.
    #[allow(clippy::too_many_arguments)]
    fn recurrent_grads<D: Engine>(
        &self,
        ctx: &Ctx<D>,
        fwd: &mut Fwd,
        d: Vec<f32>,
        dgi: &[f32],
        dy: &[f32],
        l: usize,
        b: usize,
        t: usize,
        fold_b_hh: bool,
        grads: &mut [Vec<f32>],
    ) {
        let (h, gh, o) = (self.hidden, self.g() * self.hidden, self.out_dim);
        let (li, top, w) = (&self.layers[l], l + 1 == self.layers.len(), self.width(l));
        // GRU: dL/db_hh differs from dL/db_ih (the n gate); for RNN and LSTM the two are
        // the same sum (dG of every step, in the same order), taken once below.
        if let (Some(bh), false) = (li.b_hh, fold_b_hh) {
            add_col_sums(&d, w, gh, &mut grads[bh]);
        }
        let hs_owned = std::mem::take(&mut fwd.caches[l].hs);
        let hsm = ctx.mat_owned(hs_owned, (t + 1) * b, h);
        let dmat = ctx.mat_owned(d, (t + 1) * b, w);
        // [dW_hh; dW_lin] = D^T · Hs, [w × h]: already the gradients' layout (rows of W_hh,
        // then of W_lin), so no transpose. Each element is the same FMA chain over the rows as
        // in Hs^T · D (a product's factors commute exactly), so the bits are those of before.
        if top {
            let mut dw = scratch::take(w * h);
            ctx.mm(&dmat, true, &hsm, false, &mut dw);
            let _c = profile::enter(profile::Phase::Packing);
            grads[li.w_hh].copy_from_slice(&dw[..gh * h]);
            grads[self.lin_w].copy_from_slice(&dw[gh * h..]);
            drop(_c);
            scratch::give(dw);
        } else {
            ctx.mm(&dmat, true, &hsm, false, &mut grads[li.w_hh]);
        }
        scratch::give(hsm.host);
        scratch::give(dmat.host);
        if top {
            let gb = &mut grads[self.lin_b];
            for r in 0..t * b {
                for oo in 0..o {
                    gb[oo] += dy[r * o + oo];
                }
            }
        }
        add_col_sums(dgi, gh, gh, &mut grads[li.b_ih]);
        if let (Some(bh), true) = (li.b_hh, fold_b_hh) {
            // d's rows hold exactly dgi's rows (and zeros): the same sums, bit for bit.
            let (src, dst) = if li.b_ih < bh {
                let (a, b) = grads.split_at_mut(bh);
                (&a[li.b_ih], &mut b[0])
            } else {
                let (a, b) = grads.split_at_mut(li.b_ih);
                (&b[0], &mut a[bh])
            };
            dst.copy_from_slice(src);
        }
    }

    /// The gradient of layer `l`'s input weights from dGi, and of its input: returned for
    /// the layer below, or added into the embedding's rows (layer 0).
    #[allow(clippy::too_many_arguments)]
    fn input_grads<D: Engine>(
        &self,
        ctx: &Ctx<D>,
        dw: &DevW<D>,
        inp: &Inputs,
        fwd: &Fwd,
        dgi: Vec<f32>,
        l: usize,
        b: usize,
        t: usize,
        grads: &mut [Vec<f32>],
    ) -> Option<Vec<f32>> {
        let (h, gh) = (self.hidden, self.g() * self.hidden);
        let li = &self.layers[l];
        if l == 0 && matches!(self.input, InKind::OneHot(_)) {
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
            let _tr = profile::enter(profile::Phase::Packing);
            transpose(&acc, v, gh, &mut grads[li.w_ih]);
            scratch::give(dgi);
            return None;
        }
        let xin: &[f32] = if l > 0 {
            &fwd.caches[l - 1].hs[b * h..]
        } else {
            fwd.caches[0].x_in.as_ref().unwrap()
        };
        let xm = ctx.mat(xin, t * b, li.in_dim);
        let dgm = ctx.mat_owned(dgi, t * b, gh);
        // dW_ih = dGi^T · X [gh × in]: the gradient's layout, no transpose (same bits as the
        // transpose of X^T · dGi, see above).
        ctx.mm(&dgm, true, &xm, false, &mut grads[li.w_ih]);
        let mut below = None;
        if l > 0 || matches!(self.input, InKind::Embedding { .. }) {
            let mut dx = vec![0.0f32; t * b * li.in_dim];
            ctx.mm(
                &dgm,
                false,
                dw.layers[l].w_ih.as_ref().unwrap(),
                false,
                &mut dx,
            );
            if l > 0 {
                below = Some(dx);
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
        scratch::give(dgm.host);
        below
    }
}
