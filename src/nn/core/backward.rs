//! Backpropagation through time by hand: one product per step on the recurrent path, the weight
//! gradients of all steps as single products.

use super::super::backend::{Ctx, Engine};
use super::super::gemm;
use super::super::math::transpose;
use super::super::scratch;
use super::{gru, lstm, par_chunks, rnn, Core, DevW, Fwd, InKind, Inputs, Rows, RowsF64};
use crate::nn::CellKind;

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
            // D: block s+1 holds [dG_s | dY_s]; the cells write every dG_s of blocks 0..t-1, the
            // head part of blocks 1..t is dY; block 0's head part and block t's gates are zero.
            let mut d = scratch::take((t + 1) * b * w);
            d[..b * w].fill(0.0);
            d[t * b * w..].fill(0.0);
            if top {
                for s in 0..t {
                    for bb in 0..b {
                        let dst = ((s + 1) * b + bb) * w + gh;
                        d[dst..dst + o]
                            .copy_from_slice(&dy[(s * b + bb) * o..(s * b + bb + 1) * o]);
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
            let (cell, act) = (self.cell, self.act);
            let da_ref = d_above.as_deref();
            // As in the forward pass: chunks of batch rows run through all the steps in parallel.
            // SAFETY (all `at` below): a chunk touches only rows [r0, r1) of each time block.
            let chunk = |r0: usize, r1: usize, mm: &dyn Fn(&[f32], &mut [f32])| unsafe {
                let nb = r1 - r0;
                let mut carry_h = vec![0.0f32; nb * h];
                let mut carry_c = vec![0.0f32; nb * h];
                let mut dh = vec![0.0f32; nb * h];
                for tt in (1..=t).rev() {
                    let s = tt - 1;
                    if top || tt < t {
                        mm(d_w.at((tt * b + r0) * w, nb * w), &mut dh);
                    } else {
                        dh.fill(0.0);
                    }
                    if cell == CellKind::Gru {
                        dh.iter_mut().zip(&carry_h).for_each(|(a, &c)| *a += c);
                    }
                    if let Some(da) = da_ref {
                        let src = &da[(s * b + r0) * h..(s * b + r1) * h];
                        dh.iter_mut().zip(src).for_each(|(a, &c)| *a += c);
                    }
                    for bb in r0..r1 {
                        let k = bb - r0;
                        let dhr = &dh[k * h..(k + 1) * h];
                        if want_norms {
                            rowsq_w.at(s * b + bb)[0] =
                                dhr.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
                        }
                        let dg = d_w.at((s * b + bb) * w, gh);
                        let dgir = dgi_w.at((s * b + bb) * gh, gh);
                        let hcur = &c.hs[(tt * b + bb) * h..(tt * b + bb + 1) * h];
                        let rows = (s * b + bb) * gh..(s * b + bb + 1) * gh;
                        let hrow = (s * b + bb) * h..(s * b + bb + 1) * h;
                        match cell {
                            CellKind::Rnn | CellKind::RnnScratch => {
                                rnn::backward(act, dhr, hcur, dg, dgir)
                            }
                            CellKind::Gru => gru::backward(
                                h,
                                dhr,
                                &c.gates[rows],
                                &c.ghn[hrow.clone()],
                                &c.hs[hrow],
                                &mut carry_h[k * h..(k + 1) * h],
                                dg,
                                dgir,
                            ),
                            CellKind::Lstm => lstm::backward(
                                h,
                                dhr,
                                &c.gates[rows],
                                &c.cs[hrow.clone()],
                                &c.tcs[hrow],
                                &mut carry_c[k * h..(k + 1) * h],
                                dg,
                                dgir,
                            ),
                        }
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
            if want_norms {
                if let Some(r) = record.as_deref_mut() {
                    r.extend(
                        rowsq
                            .chunks_exact(b)
                            .map(|q| q.iter().sum::<f64>().sqrt() as f32),
                    );
                }
            }
            // GRU: dL/db_hh differs from dL/db_ih (the n gate); for RNN and LSTM the two are
            // the same sum (dG of every step, in the same order), taken once below.
            let gru = cell == CellKind::Gru;
            if let (Some(bh), true) = (li.b_hh, gru) {
                super::super::math::add_col_sums(&d, w, gh, &mut grads[bh]);
            }
            // ---- weight gradients over all steps at once: [dW_hh; dW_lin]^T = Hs^T D
            let hs_owned = std::mem::take(&mut fwd.caches[l].hs);
            let hsm = ctx.mat_owned(hs_owned, (t + 1) * b, h);
            let dmat = ctx.mat_owned(std::mem::take(&mut d), (t + 1) * b, w);
            let mut dwt = scratch::take(h * w);
            ctx.mm(&hsm, true, &dmat, false, &mut dwt);
            scratch::give(hsm.host);
            scratch::give(dmat.host);
            // [dW_hh; dW_lin] = dwt^T, transposed straight into the two gradients.
            super::super::math::transpose_cols(&dwt, h, w, 0, gh, &mut grads[li.w_hh]);
            if top {
                super::super::math::transpose_cols(&dwt, h, w, gh, w, &mut grads[self.lin_w]);
                let gb = &mut grads[self.lin_b];
                for r in 0..t * b {
                    for oo in 0..o {
                        gb[oo] += dy[r * o + oo];
                    }
                }
            }
            scratch::give(dwt);
            super::super::math::add_col_sums(&dgi, gh, gh, &mut grads[li.b_ih]);
            if let (Some(bh), false) = (li.b_hh, gru) {
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
                scratch::give(std::mem::take(&mut dgi));
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
                scratch::give(dgm.host);
            }
        }
        grads
    }
}
