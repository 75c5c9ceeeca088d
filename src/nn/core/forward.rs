//! Forward pass over all time steps (one product per step on the recurrent path, the output
//! layer folded into it for the top layer) and the loss.

use super::super::backend::{Ctx, Engine};
use super::super::gemm;
use super::super::math::softmax_ce;
use super::super::scratch;
use super::HiddenState;
use super::{gru, lstm, par_chunks, rnn, Core, DevW, Fwd, InKind, Inputs, LCache, Rows, Targets};
use crate::nn::CellKind;

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
        let h = self.hidden;
        let g = self.g();
        let gh = g * h;
        let nl = self.layers.len();
        let o = self.out_dim;
        let p = &self.store.params;
        let mut caches: Vec<LCache> = Vec::with_capacity(nl);
        let mut logits = scratch::take(t * b * o);
        for (l, li) in self.layers.iter().enumerate() {
            let top = l + 1 == nl;
            let w = self.width(l);
            let ld = &dw.layers[l];
            // ---- input projection for all steps: gi = x W_ih^T + b_ih (+ b_hh for RNN/LSTM)
            let bih = &p[li.b_ih].data;
            let fold_bhh = self.cell != CellKind::Gru;
            let mut bias = bih.clone();
            if fold_bhh {
                if let Some(bh) = li.b_hh {
                    bias.iter_mut().zip(&p[bh].data).for_each(|(a, &c)| *a += c);
                }
            }
            let mut x_in = None;
            let gi_buf: Vec<f32> = if let Some(host) = &ld.w_ih_t_host {
                let Inputs::Tokens(x) = inp else {
                    unreachable!()
                };
                // A one-hot input selects a row of W_ih^T: gather it with the bias added, in
                // one pass (the same sums as a product followed by the bias).
                let mut gi = scratch::take(t * b * gh);
                for (&tok, dst) in x.iter().zip(gi.chunks_exact_mut(gh)) {
                    let tok = tok as usize;
                    let row = &host[tok * gh..(tok + 1) * gh];
                    for ((d, &a), &c) in dst.iter_mut().zip(row).zip(&bias) {
                        *d = a + c;
                    }
                }
                gi
            } else {
                let mut gi = scratch::take(t * b * gh);
                let xin: Vec<f32> = if l > 0 {
                    caches[l - 1].hs[b * h..].to_vec()
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
                if l == 0 {
                    x_in = Some(xin.clone());
                }
                let xm = ctx.mat_owned(xin, t * b, li.in_dim);
                ctx.mm(&xm, false, ld.w_ih_t.as_ref().unwrap(), false, &mut gi);
                for row in gi.chunks_exact_mut(gh) {
                    row.iter_mut().zip(&bias).for_each(|(a, &c)| *a += c);
                }
                gi
            };
            let bhh_gru: Option<&Vec<f32>> = if fold_bhh {
                None
            } else {
                li.b_hh.map(|i| &p[i].data)
            };

            // ---- recurrence
            // Every element of these is written below before it is read (scratch buffers).
            let mut hs = scratch::take((t + 1) * b * h);
            hs[..b * h].copy_from_slice(&state.h[l]);
            let lstm = self.cell == CellKind::Lstm;
            let gru = self.cell == CellKind::Gru;
            let mut cs = if lstm {
                scratch::take((t + 1) * b * h)
            } else {
                vec![]
            };
            let mut tcs = if lstm {
                scratch::take(t * b * h)
            } else {
                vec![]
            };
            if lstm {
                cs[..b * h].copy_from_slice(&state.c.as_ref().unwrap()[l]);
            }
            let mut gates_buf = if g > 1 {
                scratch::take(t * b * gh)
            } else {
                vec![]
            };
            let mut ghn = if gru {
                scratch::take(t * b * h)
            } else {
                vec![]
            };
            // Batch rows are independent along the recurrence: with several threads each takes
            // a chunk of rows through all the steps (its own product per step, then its own
            // element-wise work), with no synchronisation per step.
            let (hs_w, cs_w, tcs_w) = (Rows::new(&mut hs), Rows::new(&mut cs), Rows::new(&mut tcs));
            let (gates_w, ghn_w, logits_w) = (
                Rows::new(&mut gates_buf),
                Rows::new(&mut ghn),
                Rows::new(&mut logits),
            );
            let bl = &p[self.lin_b].data;
            let gi = &gi_buf;
            let cell = self.cell;
            let act = self.act;
            // SAFETY (all `Rows::at` below): a chunk touches only rows [r0, r1) of each time
            // block, and chunks are disjoint.
            let chunk = |r0: usize, r1: usize, mm: &dyn Fn(&[f32], &mut [f32])| unsafe {
                let nb = r1 - r0;
                let mut out = vec![0.0f32; nb * w];
                mm(hs_w.at(r0 * h, nb * h), &mut out);
                for s in 0..t {
                    for bb in r0..r1 {
                        let gir = &gi[(s * b + bb) * gh..(s * b + bb + 1) * gh];
                        let ghr = &out[(bb - r0) * w..(bb - r0) * w + gh];
                        let hp = hs_w.at((s * b + bb) * h, h);
                        let hc = hs_w.at(((s + 1) * b + bb) * h, h);
                        let gr = (s * b + bb) * gh;
                        let tb = (s * b + bb) * h;
                        match cell {
                            CellKind::Rnn | CellKind::RnnScratch => rnn::forward(act, gir, ghr, hc),
                            CellKind::Gru => gru::forward(
                                h,
                                gir,
                                ghr,
                                bhh_gru.unwrap(),
                                hp,
                                gates_w.at(gr, gh),
                                ghn_w.at(tb, h),
                                hc,
                            ),
                            CellKind::Lstm => lstm::forward(
                                h,
                                gir,
                                ghr,
                                cs_w.at(tb, h),
                                gates_w.at(gr, gh),
                                cs_w.at(tb + b * h, h),
                                tcs_w.at(tb, h),
                                hc,
                            ),
                        }
                    }
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
            if lstm {
                state.c.as_mut().unwrap()[l].copy_from_slice(&cs[t * b * h..]);
            }
            scratch::give(gi_buf);
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
