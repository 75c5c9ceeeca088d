//! Element-wise kernels on host slices (written so LLVM can vectorise them).

/// Define `pub(super) fn NAME(args)` whose body is compiled three times: for AVX-512F, for
/// AVX2+FMA and for the baseline, picked at run time from what the CPU has (the crate is built
/// for the baseline x86-64, whose SIMD is 4 lanes wide). Rust never fuses a*b+c into an FMA on
/// its own, so the three give the same bits.
macro_rules! simd_fn {
    ($(#[$m:meta])* pub(super) fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        pub(super) fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn generic($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn v512($($a: $t),*) $(-> $r)? {
                generic($($a),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn v256($($a: $t),*) $(-> $r)? {
                generic($($a),*)
            }
            match $crate::nn::gemm::simd_level() {
                // SAFETY: the level says the CPU has these features.
                #[cfg(target_arch = "x86_64")]
                2 => unsafe { v512($($a),*) },
                #[cfg(target_arch = "x86_64")]
                1 => unsafe { v256($($a),*) },
                _ => generic($($a),*),
            }
        }
    };
}
pub(super) use simd_fn;

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

/// exp(x) for x <= 0 (softmax after subtracting the maximum), branch-free and vectorisable:
/// x = n ln 2 + r with |r| <= ln2/2, exp(r) by Cephes' degree-6 polynomial (relative error about
/// 1e-7), 2^n from the exponent bits. Below -87.3 it returns exp(-87.3) ≈ 1.2e-38 instead of
/// smaller values: noise next to the maximum's 1. NaN stays NaN.
#[inline(always)]
pub(super) fn exp_neg_f(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = if x < -87.3 { -87.3 } else { x };
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001e-1, which is 0.5 in f32
    let e = p * r * r + r + 1.0;
    // n is in [-126, 0] here (NaN x: the cast gives 0, and e is NaN anyway).
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * scale
}

const LANES: usize = 16;

/// Max over 16 interleaved lanes, then over the lanes (NaN wins, so divergence stays visible).
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let pick = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = pick(*a, v);
        }
    }
    let mut m = it
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| pick(m, v));
    for &a in &acc {
        m = pick(m, a);
    }
    m
}

/// Sum over 16 interleaved lanes, then over the lanes: a fixed order, so deterministic, and
/// vectorisable (a plain running sum is one long dependency chain).
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let mut s = it.remainder().iter().sum::<f32>();
    for &a in &acc {
        s += a;
    }
    s
}

simd_fn! {
/// Softmax cross-entropy on one row of logits: returns the loss (lse - logit[target]) and writes
/// `scale * (softmax - onehot)` to `grad` (if given).
pub(super) fn softmax_ce(
    logits: &[f32],
    target: usize,
    scale: f32,
    grad: Option<&mut [f32]>,
) -> f64 {
    let m = max_lanes(logits);
    if !m.is_finite() {
        // NaN/inf logits: report NaN loss and NaN grads, never panic.
        if let Some(g) = grad {
            g.iter_mut().for_each(|x| *x = f32::NAN);
        }
        return f64::NAN;
    }
    let s;
    if let Some(g) = grad {
        for (gi, &v) in g.iter_mut().zip(logits) {
            *gi = exp_neg_f(v - m);
        }
        s = sum_lanes(g);
        let k = scale / s;
        g.iter_mut().for_each(|x| *x *= k);
        g[target] -= scale;
    } else {
        // The same order of operations as with a gradient, so both give the same loss.
        let e: Vec<f32> = logits.iter().map(|&v| exp_neg_f(v - m)).collect();
        s = sum_lanes(&e);
    }
    let lse = m as f64 + (s as f64).ln();
    lse - logits[target] as f64
}
}

/// `dst` [cols×rows] = `src` [rows×cols]^T, in 16×16 tiles (a plain double loop writes with a
/// stride and was 18% of RNN 256's time).
pub(super) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert_eq!(src.len(), rows * cols);
    transpose_cols(src, rows, cols, 0, cols, dst);
}

/// Columns [c0, c1) of `src` [rows × cols] transposed into `dst` [(c1 - c0) × rows]. Large
/// ones are split over the thread team by blocks of destination rows.
pub(super) fn transpose_cols(
    src: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    c1: usize,
    dst: &mut [f32],
) {
    assert!(src.len() == rows * cols && c0 <= c1 && c1 <= cols);
    assert_eq!(dst.len(), (c1 - c0) * rows);
    const T: usize = 16;
    let blocks = (c1 - c0).div_ceil(T);
    let parts = if dst.len() >= 1 << 16 {
        super::team::width().min(blocks).max(1)
    } else {
        1
    };
    let out = super::rows::Rows::new(dst);
    super::team::run(parts, &|p| {
        let _t = super::profile::enter(super::profile::Phase::Packing);
        let (b0, b1) = (blocks * p / parts, blocks * (p + 1) / parts);
        let (j0, j1) = (c0 + b0 * T, (c0 + b1 * T).min(c1));
        // SAFETY: part p writes only destination rows [j0 - c0, j1 - c0).
        let d = unsafe { out.at((j0 - c0) * rows, (j1 - j0) * rows) };
        for r0 in (0..rows).step_by(T) {
            let r1 = (r0 + T).min(rows);
            for cb in (j0..j1).step_by(T) {
                let ce = (cb + T).min(j1);
                for r in r0..r1 {
                    for c in cb..ce {
                        d[(c - j0) * rows + r] = src[r * cols + c];
                    }
                }
            }
        }
    });
}

/// `dst[j] += Σ_r src[r·stride + j]` for j < dst.len(), the rows added in order (the same
/// bits however it is split); large ones split their columns over the thread team.
pub(super) fn add_col_sums(src: &[f32], stride: usize, n: usize, dst: &mut [f32]) {
    assert!(n <= stride && dst.len() == n && src.len().is_multiple_of(stride));
    const BLOCK: usize = 64;
    let blocks = n.div_ceil(BLOCK);
    let parts = if src.len() >= 1 << 18 {
        super::team::width().min(blocks).max(1)
    } else {
        1
    };
    let out = super::rows::Rows::new(dst);
    super::team::run(parts, &|p| {
        let _o = super::profile::enter(super::profile::Phase::Other);
        let (j0, j1) = (
            blocks * p / parts * BLOCK,
            (blocks * (p + 1) / parts * BLOCK).min(n),
        );
        // SAFETY: part p writes only dst[j0..j1].
        let d = unsafe { out.at(j0, j1 - j0) };
        for row in src.chunks_exact(stride) {
            d.iter_mut().zip(&row[j0..j1]).for_each(|(a, &c)| *a += c);
        }
    });
}

pub(super) fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut d = vec![0.0; src.len()];
    transpose(src, rows, cols, &mut d);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.001 - 0.5)
            .collect()
    }

    #[test]
    fn large_transposes_and_column_sums_split_over_the_team_match_the_plain_loops() {
        // Sizes past the thresholds where the team splits the work (and odd edges).
        let (rows, cols) = (300, 1_037);
        let src = matrix(rows, cols);
        let mut t = vec![0.0; rows * cols];
        transpose(&src, rows, cols, &mut t);
        let (c0, c1) = (17, 1_000);
        let mut part = vec![0.0; (c1 - c0) * rows];
        transpose_cols(&src, rows, cols, c0, c1, &mut part);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], src[r * cols + c]);
                if (c0..c1).contains(&c) {
                    assert_eq!(part[(c - c0) * rows + r], src[r * cols + c]);
                }
            }
        }
        let n = 1_000;
        let mut sums = vec![1.0f32; n];
        add_col_sums(&src, cols, n, &mut sums);
        for (j, s) in sums.iter().enumerate() {
            // the same additions in the same order
            let mut want = 1.0f32;
            for r in 0..rows {
                want += src[r * cols + j];
            }
            assert_eq!(s.to_bits(), want.to_bits(), "column {j}");
        }
    }
}
