//! The LSTM cell (nn.LSTM, gates i, f, g, o in PyTorch's order): c' = f ⊙ c + i ⊙ g,
//! h' = o ⊙ tanh(c'). Element-wise parts of one batch row.

use super::super::math::simd_fn;
use super::super::math::{sigmoid_f, tanh_f};

simd_fn! {
/// Forward of one row. `gi` = x W_ih^T + b_ih + b_hh (4H), `gh` = h W_hh^T (4H). Writes the
/// gates and tanh(c') (`tc`), kept for the backward pass, the new cell state `cn` and `hc`.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    h: usize,
    gi: &[f32],
    gh: &[f32],
    cp: &[f32],
    gates: &mut [f32],
    cn: &mut [f32],
    tc: &mut [f32],
    hc: &mut [f32],
) {
    let (gi_i, gi) = gi.split_at(h);
    let (gi_f, gi) = gi.split_at(h);
    let (gi_g, gi_o) = gi.split_at(h);
    let (gh_i, gh) = gh.split_at(h);
    let (gh_f, gh) = gh.split_at(h);
    let (gh_g, gh_o) = gh.split_at(h);
    let (g_i, g) = gates.split_at_mut(h);
    let (g_f, g) = g.split_at_mut(h);
    let (g_g, g_o) = g.split_at_mut(h);
    let (cp, cn, tc, hc) = (&cp[..h], &mut cn[..h], &mut tc[..h], &mut hc[..h]);
    for j in 0..h {
        let i = sigmoid_f(gi_i[j] + gh_i[j]);
        let f = sigmoid_f(gi_f[j] + gh_f[j]);
        let gg = tanh_f(gi_g[j] + gh_g[j]);
        let o = sigmoid_f(gi_o[j] + gh_o[j]);
        g_i[j] = i;
        g_f[j] = f;
        g_g[j] = gg;
        g_o[j] = o;
        let c = f * cp[j] + i * gg;
        let t = tanh_f(c);
        tc[j] = t;
        hc[j] = o * t;
        cn[j] = c;
    }
}
}

simd_fn! {
/// Backward of one row. `carry` holds dL/dc_t from the step after and gets dL/dc_{t-1}.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    h: usize,
    dh: &[f32],
    gates: &[f32],
    cp: &[f32],
    tc: &[f32],
    carry: &mut [f32],
    dg: &mut [f32],
    dgi: &mut [f32],
) {
    let (g_i, g) = gates.split_at(h);
    let (g_f, g) = g.split_at(h);
    let (g_g, g_o) = g.split_at(h);
    let (dg_i, d) = dg.split_at_mut(h);
    let (dg_f, d) = d.split_at_mut(h);
    let (dg_g, dg_o) = d.split_at_mut(h);
    let (dh, cp, tc, carry) = (&dh[..h], &cp[..h], &tc[..h], &mut carry[..h]);
    for j in 0..h {
        let (i, f, gg, o) = (g_i[j], g_f[j], g_g[j], g_o[j]);
        let dhj = dh[j];
        let d_o = dhj * tc[j];
        let dc = carry[j] + dhj * o * (1.0 - tc[j] * tc[j]);
        carry[j] = dc * f;
        dg_i[j] = dc * gg * i * (1.0 - i);
        dg_f[j] = dc * cp[j] * f * (1.0 - f);
        dg_g[j] = dc * i * (1.0 - gg * gg);
        dg_o[j] = d_o * o * (1.0 - o);
    }
    dgi.copy_from_slice(dg);
}
}

/// The LSTM cell: a cell state beside h; the carry is dL/dc.
pub(super) struct Lstm;

impl super::cell::Cell for Lstm {
    const KEEPS_GATES: bool = true;
    const CELL_STATE: bool = true;
    fn forward(&self, r: super::cell::FwdRow) {
        let h = r.hc.len();
        forward(h, r.gi, r.gh, r.cp, r.gates, r.cn, r.tc, r.hc)
    }
    fn backward(&self, r: super::cell::BwdRow) {
        let h = r.dh.len();
        backward(h, r.dh, r.gates, r.cp, r.tc, r.carry, r.dg, r.dgi)
    }
}
