//! The GRU cell (nn.GRU, gates r, z, n in PyTorch's order):
//! r = σ(x W_ir + b_ir + h W_hr + b_hr), z likewise, n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn)),
//! h' = (1 − z) ⊙ n + z ⊙ h. Element-wise parts of one batch row.

use super::super::math::simd_fn;
use super::super::math::{sigmoid_f, tanh_f};

simd_fn! {
/// Forward of one row. `gi` = x W_ih^T + b_ih (3H), `gh` = h W_hh^T (3H, without b_hh).
/// Writes the gates (r, z, n) and W_hn h + b_hn (`ghn`), kept for the backward pass.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    h: usize,
    gi: &[f32],
    gh: &[f32],
    bhh: &[f32],
    hp: &[f32],
    gates: &mut [f32],
    ghn: &mut [f32],
    hc: &mut [f32],
) {
    let (gi_r, gi) = gi.split_at(h);
    let (gi_z, gi_n) = gi.split_at(h);
    let (gh_r, gh) = gh.split_at(h);
    let (gh_z, gh_n) = gh.split_at(h);
    let (b_r, b) = bhh.split_at(h);
    let (b_z, b_n) = b.split_at(h);
    let (g_r, g) = gates.split_at_mut(h);
    let (g_z, g_n) = g.split_at_mut(h);
    let (hp, hc, ghn) = (&hp[..h], &mut hc[..h], &mut ghn[..h]);
    for j in 0..h {
        let r = sigmoid_f(gi_r[j] + gh_r[j] + b_r[j]);
        let z = sigmoid_f(gi_z[j] + gh_z[j] + b_z[j]);
        let hn = gh_n[j] + b_n[j];
        let n = tanh_f(gi_n[j] + r * hn);
        g_r[j] = r;
        g_z[j] = z;
        g_n[j] = n;
        ghn[j] = hn;
        hc[j] = (1.0 - z) * n + z * hp[j];
    }
}
}

simd_fn! {
/// Backward of one row. `dh` = dL/dh_t without the direct path through z (that part, dh ⊙ z, is
/// written to `carry` for the previous step). `dg` gets the gradients at W_hh's outputs
/// (r, z and r ⊙ dn for n), `dgi` those at W_ih's outputs.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    h: usize,
    dh: &[f32],
    gates: &[f32],
    ghn: &[f32],
    hp: &[f32],
    carry: &mut [f32],
    dg: &mut [f32],
    dgi: &mut [f32],
) {
    let (g_r, g) = gates.split_at(h);
    let (g_z, g_n) = g.split_at(h);
    let (dg_r, d) = dg.split_at_mut(h);
    let (dg_z, dg_n) = d.split_at_mut(h);
    let (di_r, d) = dgi.split_at_mut(h);
    let (di_z, di_n) = d.split_at_mut(h);
    let (dh, ghn, hp, carry) = (&dh[..h], &ghn[..h], &hp[..h], &mut carry[..h]);
    for j in 0..h {
        let (r, z, n) = (g_r[j], g_z[j], g_n[j]);
        let dhj = dh[j];
        let dn = dhj * (1.0 - z);
        let dz = dhj * (hp[j] - n);
        carry[j] = dhj * z;
        let dnp = dn * (1.0 - n * n);
        let dr = dnp * ghn[j];
        let drp = dr * r * (1.0 - r);
        let dzp = dz * z * (1.0 - z);
        dg_r[j] = drp;
        dg_z[j] = dzp;
        dg_n[j] = dnp * r;
        di_r[j] = drp;
        di_z[j] = dzp;
        di_n[j] = dnp;
    }
}
}

/// The GRU cell: `b_hh` stays apart (b_hn sits under r); the carry is dh's path through z.
pub(super) struct Gru;

impl super::cell::Cell for Gru {
    const FOLDS_B_HH: bool = false;
    const KEEPS_GATES: bool = true;
    const KEEPS_GHN: bool = true;
    const CARRY_IN_DH: bool = true;
    fn forward(&self, r: super::cell::FwdRow) {
        let h = r.hc.len();
        forward(h, r.gi, r.gh, r.b_hh, r.hp, r.gates, r.ghn, r.hc)
    }
    fn backward(&self, r: super::cell::BwdRow) {
        let h = r.dh.len();
        backward(h, r.dh, r.gates, r.ghn, r.hp, r.carry, r.dg, r.dgi)
    }
}
