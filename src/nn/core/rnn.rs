//! The plain RNN cell (nn.RNN, and the book's from-scratch RNN): h_t = act(x W_ih^T + b + h W_hh^T).
//! Element-wise parts of one batch row; the products run in `super` over all rows at once.

use super::super::math::simd_fn;
use super::super::math::tanh_f;
use super::super::Activation;

simd_fn! {
/// `hc = act(gi + gh)` (`gi` holds the input projection plus both biases).
pub(super) fn forward(act: Activation, gi: &[f32], gh: &[f32], hc: &mut [f32]) {
    match act {
        Activation::Tanh => {
            for ((o, &a), &c) in hc.iter_mut().zip(gi).zip(gh) {
                *o = tanh_f(a + c);
            }
        }
        Activation::Relu => {
            for ((o, &a), &c) in hc.iter_mut().zip(gi).zip(gh) {
                let v = a + c;
                *o = if v > 0.0 || v.is_nan() { v } else { 0.0 };
            }
        }
    }
}
}

simd_fn! {
/// Gradient at the pre-activation from dL/dh_t and h_t, into `dg` and `dgi`.
pub(super) fn backward(act: Activation, dh: &[f32], hcur: &[f32], dg: &mut [f32], dgi: &mut [f32]) {
    match act {
        Activation::Tanh => {
            for ((g, &dv), &hv) in dg.iter_mut().zip(dh).zip(hcur) {
                *g = dv * (1.0 - hv * hv);
            }
        }
        Activation::Relu => {
            for ((g, &dv), &hv) in dg.iter_mut().zip(dh).zip(hcur) {
                *g = if hv > 0.0 { dv } else { 0.0 };
            }
        }
    }
    dgi.copy_from_slice(dg);
}
}

/// The plain RNN cell with its activation (no gates kept, no carry).
pub(super) struct Rnn(pub Activation);

impl super::cell::Cell for Rnn {
    const KEEPS_GATES: bool = false;
    fn forward(&self, r: super::cell::FwdRow) {
        forward(self.0, r.gi, r.gh, r.hc)
    }
    fn backward(&self, r: super::cell::BwdRow) {
        backward(self.0, r.dh, r.hc, r.dg, r.dgi)
    }
}
