//! Element-wise kernels on host slices (written so LLVM can vectorise them).

/// Rational tanh approximation (the one Eigen uses for float, max abs error about 1e-7 over
/// the whole line). Branch-free, vectorisable.
#[inline(always)]
pub(super) fn tanh_f(x: f32) -> f32 {
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347_1e-4;
    const B6: f32 = 1.198_258_4e-6;
    const CLAMP: f32 = 7.905_311;
    // `clamp` keeps NaN as NaN (divergence must stay visible).
    let xc = x.clamp(-CLAMP, CLAMP);
    let x2 = xc * xc;
    let mut p = A13;
    p = p * x2 + A11;
    p = p * x2 + A9;
    p = p * x2 + A7;
    p = p * x2 + A5;
    p = p * x2 + A3;
    p = p * x2 + A1;
    p *= xc;
    let mut q = B6;
    q = q * x2 + B4;
    q = q * x2 + B2;
    q = q * x2 + B0;
    p / q
}

#[inline(always)]
pub(super) fn sigmoid_f(x: f32) -> f32 {
    0.5 + 0.5 * tanh_f(0.5 * x)
}

/// Softmax cross-entropy on one row of logits: returns the loss (lse - logit[target]) and writes
/// `scale * (softmax - onehot)` to `grad` (if given).
pub(super) fn softmax_ce(
    logits: &[f32],
    target: usize,
    scale: f32,
    grad: Option<&mut [f32]>,
) -> f64 {
    let mut m = f32::NEG_INFINITY;
    for &v in logits {
        if v > m || v.is_nan() {
            m = v;
        }
    }
    if !m.is_finite() {
        // NaN/inf logits: report NaN loss and NaN grads, never panic.
        if let Some(g) = grad {
            g.iter_mut().for_each(|x| *x = f32::NAN);
        }
        return f64::NAN;
    }
    let lse;
    if let Some(g) = grad {
        let mut s = 0.0f32;
        for (gi, &v) in g.iter_mut().zip(logits) {
            let e = (v - m).exp();
            *gi = e;
            s += e;
        }
        let k = scale / s;
        g.iter_mut().for_each(|x| *x *= k);
        g[target] -= scale;
        lse = m as f64 + (s as f64).ln();
    } else {
        let s: f32 = logits.iter().map(|&v| (v - m).exp()).sum();
        lse = m as f64 + (s as f64).ln();
    }
    lse - logits[target] as f64
}

pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    debug_assert_eq!(src.len(), rows * cols);
    debug_assert_eq!(dst.len(), rows * cols);
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

pub(super) fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut d = vec![0.0; src.len()];
    transpose(src, rows, cols, &mut d);
    d
}
