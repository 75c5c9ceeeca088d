//! Each kernel of `kernels.cu`, compiled for the host (`emu.rs`), against the CPU implementation
//! on random inputs. The kernels are the CPU's math in the CPU's order of operations without
//! FMA contraction, so the results must be bit for bit the same (NaN: any NaN). Included in
//! `nn::core` (as `cuda_host_test`) to reach the cells.

use super::{gru, lstm, rnn};
use crate::nn::cuda::emu::{gpu_or_skip, EmuBuf, EmuGpu};
use crate::nn::cuda::step::{launch, Arg};
use crate::nn::cuda::K;
use crate::nn::params::{clip_scale, global_norm, Optimizer, ParamSet, ParamStore, Update};
use crate::nn::{Activation, OptimSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use Arg::{F, I, L, P};

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Uniform in (-scale, scale), with a few values far out (the tanh clamp) when `wild`.
fn rand_vec(r: &mut ChaCha8Rng, n: usize, scale: f32, wild: bool) -> Vec<f32> {
    (0..n)
        .map(|i| {
            if wild && i % 11 == 3 {
                r.gen_range(-30.0..30.0)
            } else {
                r.gen_range(-scale..scale)
            }
        })
        .collect()
}

fn same_bits(what: &str, dev: &[f32], cpu: &[f32]) {
    assert_eq!(dev.len(), cpu.len(), "{what}: lengths");
    for (i, (&a, &b)) in dev.iter().zip(cpu).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}[{i}]: kernel {a:e} ({:#x}) vs cpu {b:e} ({:#x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}

fn grid(n: usize, bs: u32) -> u32 {
    n.div_ceil(bs as usize).max(1) as u32
}

fn run(gpu: &EmuGpu, k: K, n: usize, args: &[Arg]) {
    launch(gpu, k, grid(n, gpu.block), gpu.block, args).unwrap();
}

fn p(b: &EmuBuf) -> Arg {
    use crate::nn::cuda::step::Buf;
    P(b.ptr())
}

#[test]
fn rnn_kernels_match_the_cpu_cell() {
    let Some(gpu) = gpu_or_skip("rnn_kernels_match_the_cpu_cell") else {
        return;
    };
    let mut r = rng(1);
    let n = 3 * 7;
    let mut gi = rand_vec(&mut r, n, 4.0, true);
    gi[5] = f32::NAN;
    let gh = rand_vec(&mut r, n, 4.0, false);
    for act in [Activation::Tanh, Activation::Relu] {
        let relu = i32::from(act == Activation::Relu);
        let mut hc = vec![0.0; n];
        rnn::forward(act, &gi, &gh, &mut hc);
        let (dgi, dgh, dhc) = (gpu.up(&gi), gpu.up(&gh), gpu.up(&vec![0.0; n]));
        run(
            &gpu,
            K::RnnFwd,
            n,
            &[I(relu), p(&dgi), p(&dgh), p(&dhc), I(n as i32)],
        );
        same_bits(&format!("rnn_fwd {act:?}"), &gpu.down(&dhc, n), &hc);
        assert!(hc.iter().any(|v| v.is_nan()) && hc.iter().any(|&v| v != 0.0));

        let mm = rand_vec(&mut r, n, 2.0, false);
        let extra = rand_vec(&mut r, n, 2.0, false);
        for (use_mm, use_extra) in [(true, true), (false, true), (true, false)] {
            let dh: Vec<f32> = (0..n)
                .map(|i| {
                    let d = if use_mm { mm[i] } else { 0.0 };
                    if use_extra {
                        d + extra[i]
                    } else {
                        d
                    }
                })
                .collect();
            let (mut dg, mut dgi_cpu) = (vec![0.0; n], vec![0.0; n]);
            rnn::backward(act, &dh, &hc, &mut dg, &mut dgi_cpu);
            let (bm, be, bh, bd) = (
                gpu.up(&mm),
                gpu.up(&extra),
                gpu.up(&hc),
                gpu.up(&vec![0.0; n]),
            );
            let pm = if use_mm { p(&bm) } else { P(0) };
            let pe = if use_extra { p(&be) } else { P(0) };
            run(
                &gpu,
                K::RnnBwd,
                n,
                &[I(relu), pm, pe, p(&bh), p(&bd), I(n as i32)],
            );
            let what = format!("rnn_bwd {act:?} mm {use_mm} extra {use_extra}");
            same_bits(&what, &gpu.down(&bd, n), &dg);
            same_bits(&what, &dgi_cpu, &dg);
        }
    }
}

#[test]
fn gru_kernels_match_the_cpu_cell() {
    let Some(gpu) = gpu_or_skip("gru_kernels_match_the_cpu_cell") else {
        return;
    };
    let mut r = rng(2);
    let (b, h) = (3, 5);
    let g = 3 * h;
    let gi = rand_vec(&mut r, b * g, 3.0, true);
    let gh = rand_vec(&mut r, b * g, 3.0, false);
    let bhh = rand_vec(&mut r, g, 1.0, false);
    let hp = rand_vec(&mut r, b * h, 1.0, false);
    let (mut gates, mut ghn, mut hc) = (vec![0.0; b * g], vec![0.0; b * h], vec![0.0; b * h]);
    for row in 0..b {
        gru::forward(
            h,
            &gi[row * g..(row + 1) * g],
            &gh[row * g..(row + 1) * g],
            &bhh,
            &hp[row * h..(row + 1) * h],
            &mut gates[row * g..(row + 1) * g],
            &mut ghn[row * h..(row + 1) * h],
            &mut hc[row * h..(row + 1) * h],
        );
    }
    let (bgi, bgh, bb, bhp) = (gpu.up(&gi), gpu.up(&gh), gpu.up(&bhh), gpu.up(&hp));
    let (bg, bn, bc) = (
        gpu.up(&vec![0.0; b * g]),
        gpu.up(&vec![0.0; b * h]),
        gpu.up(&vec![0.0; b * h]),
    );
    run(
        &gpu,
        K::GruFwd,
        b * h,
        &[
            p(&bgi),
            p(&bgh),
            p(&bb),
            p(&bhp),
            p(&bg),
            p(&bn),
            p(&bc),
            I(b as i32),
            I(h as i32),
        ],
    );
    same_bits("gru_fwd gates", &gpu.down(&bg, b * g), &gates);
    same_bits("gru_fwd ghn", &gpu.down(&bn, b * h), &ghn);
    same_bits("gru_fwd h", &gpu.down(&bc, b * h), &hc);

    let mm = rand_vec(&mut r, b * h, 1.0, false);
    let extra = rand_vec(&mut r, b * h, 1.0, false);
    let carry_in = rand_vec(&mut r, b * h, 1.0, false);
    for (use_mm, use_extra) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut carry = carry_in.clone();
        let (mut dg, mut dgi) = (vec![0.0; b * g], vec![0.0; b * g]);
        for row in 0..b {
            let rs = row * h..(row + 1) * h;
            // backward.rs: dh = mm (or 0); dh += carry; dh += extra
            let dh: Vec<f32> = rs
                .clone()
                .map(|i| {
                    let mut d = if use_mm { mm[i] } else { 0.0 };
                    d += carry_in[i];
                    if use_extra {
                        d += extra[i];
                    }
                    d
                })
                .collect();
            gru::backward(
                h,
                &dh,
                &gates[row * g..(row + 1) * g],
                &ghn[rs.clone()],
                &hp[rs.clone()],
                &mut carry[rs],
                &mut dg[row * g..(row + 1) * g],
                &mut dgi[row * g..(row + 1) * g],
            );
        }
        let (bm, be, bgt, bn, bhp) = (
            gpu.up(&mm),
            gpu.up(&extra),
            gpu.up(&gates),
            gpu.up(&ghn),
            gpu.up(&hp),
        );
        let (bcar, bdg, bdgi) = (
            gpu.up(&carry_in),
            gpu.up(&vec![0.0; b * g]),
            gpu.up(&vec![0.0; b * g]),
        );
        let pm = if use_mm { p(&bm) } else { P(0) };
        let pe = if use_extra { p(&be) } else { P(0) };
        run(
            &gpu,
            K::GruBwd,
            b * h,
            &[
                pm,
                pe,
                p(&bgt),
                p(&bn),
                p(&bhp),
                p(&bcar),
                p(&bdg),
                p(&bdgi),
                I(b as i32),
                I(h as i32),
            ],
        );
        let what = format!("gru_bwd mm {use_mm} extra {use_extra}");
        same_bits(&format!("{what} dg"), &gpu.down(&bdg, b * g), &dg);
        same_bits(&format!("{what} dgi"), &gpu.down(&bdgi, b * g), &dgi);
        same_bits(&format!("{what} carry"), &gpu.down(&bcar, b * h), &carry);
    }
}

#[test]
fn lstm_kernels_match_the_cpu_cell() {
    let Some(gpu) = gpu_or_skip("lstm_kernels_match_the_cpu_cell") else {
        return;
    };
    let mut r = rng(3);
    let (b, h) = (2, 6);
    let g = 4 * h;
    let gi = rand_vec(&mut r, b * g, 3.0, true);
    let gh = rand_vec(&mut r, b * g, 3.0, false);
    let cp = rand_vec(&mut r, b * h, 2.0, true);
    let (mut gates, mut cn, mut tc, mut hc) = (
        vec![0.0; b * g],
        vec![0.0; b * h],
        vec![0.0; b * h],
        vec![0.0; b * h],
    );
    for row in 0..b {
        let rs = row * h..(row + 1) * h;
        lstm::forward(
            h,
            &gi[row * g..(row + 1) * g],
            &gh[row * g..(row + 1) * g],
            &cp[rs.clone()],
            &mut gates[row * g..(row + 1) * g],
            &mut cn[rs.clone()],
            &mut tc[rs.clone()],
            &mut hc[rs],
        );
    }
    let (bgi, bgh, bcp) = (gpu.up(&gi), gpu.up(&gh), gpu.up(&cp));
    let z = |n: usize| gpu.up(&vec![0.0; n]);
    let (bg, bcn, btc, bhc) = (z(b * g), z(b * h), z(b * h), z(b * h));
    run(
        &gpu,
        K::LstmFwd,
        b * h,
        &[
            p(&bgi),
            p(&bgh),
            p(&bcp),
            p(&bg),
            p(&bcn),
            p(&btc),
            p(&bhc),
            I(b as i32),
            I(h as i32),
        ],
    );
    same_bits("lstm_fwd gates", &gpu.down(&bg, b * g), &gates);
    same_bits("lstm_fwd c", &gpu.down(&bcn, b * h), &cn);
    same_bits("lstm_fwd tanh c", &gpu.down(&btc, b * h), &tc);
    same_bits("lstm_fwd h", &gpu.down(&bhc, b * h), &hc);

    let mm = rand_vec(&mut r, b * h, 1.0, false);
    let extra = rand_vec(&mut r, b * h, 1.0, false);
    let carry_in = rand_vec(&mut r, b * h, 1.0, false);
    for (use_mm, use_extra) in [(true, true), (false, true), (true, false)] {
        let mut carry = carry_in.clone();
        let (mut dg, mut dgi) = (vec![0.0; b * g], vec![0.0; b * g]);
        for row in 0..b {
            let rs = row * h..(row + 1) * h;
            let dh: Vec<f32> = rs
                .clone()
                .map(|i| {
                    let mut d = if use_mm { mm[i] } else { 0.0 };
                    if use_extra {
                        d += extra[i];
                    }
                    d
                })
                .collect();
            lstm::backward(
                h,
                &dh,
                &gates[row * g..(row + 1) * g],
                &cp[rs.clone()],
                &tc[rs.clone()],
                &mut carry[rs],
                &mut dg[row * g..(row + 1) * g],
                &mut dgi[row * g..(row + 1) * g],
            );
        }
        let (bm, be, bgt, bcp2, btc2) = (
            gpu.up(&mm),
            gpu.up(&extra),
            gpu.up(&gates),
            gpu.up(&cp),
            gpu.up(&tc),
        );
        let (bcar, bdg) = (gpu.up(&carry_in), z(b * g));
        let pm = if use_mm { p(&bm) } else { P(0) };
        let pe = if use_extra { p(&be) } else { P(0) };
        run(
            &gpu,
            K::LstmBwd,
            b * h,
            &[
                pm,
                pe,
                p(&bgt),
                p(&bcp2),
                p(&btc2),
                p(&bcar),
                p(&bdg),
                I(b as i32),
                I(h as i32),
            ],
        );
        let what = format!("lstm_bwd mm {use_mm} extra {use_extra}");
        same_bits(&format!("{what} dg"), &gpu.down(&bdg, b * g), &dg);
        same_bits(&format!("{what} dgi = dg"), &dgi, &dg);
        same_bits(&format!("{what} carry"), &gpu.down(&bcar, b * h), &carry);
    }
}

/// softmax_ce for widths with and without a remainder after the 16 lanes, rows with NaN, +inf
/// and -inf, and several block sizes (the kernel must not depend on them).
#[test]
fn softmax_ce_kernel_matches_the_cpu() {
    let Some(mut gpu) = gpu_or_skip("softmax_ce_kernel_matches_the_cpu") else {
        return;
    };
    let mut r = rng(4);
    for o in [1usize, 5, 16, 28, 37, 100] {
        let rows = 7;
        let mut logits = rand_vec(&mut r, rows * o, 8.0, false);
        logits[o] = f32::NAN; // row 1
        logits[2 * o] = f32::INFINITY; // row 2
        if o > 1 {
            logits[3 * o + 1] = f32::NEG_INFINITY; // row 3: fine
            logits[4 * o] = -200.0; // row 4: exp underflows
        }
        let y: Vec<u32> = (0..rows).map(|_| r.gen_range(0..o as u32)).collect();
        let scale = 1.0 / rows as f32;
        let mut grad = vec![0.0f32; rows * o];
        let loss: Vec<f64> = (0..rows)
            .map(|row| {
                crate::nn::math::softmax_ce(
                    &logits[row * o..(row + 1) * o],
                    y[row] as usize,
                    scale,
                    Some(&mut grad[row * o..(row + 1) * o]),
                )
            })
            .collect();
        let yi: Vec<i32> = y.iter().map(|&v| v as i32).collect();
        for bs in [1u32, 7, 32, 128] {
            gpu.block = bs;
            let (bl, by, bg) = (
                gpu.up(&logits),
                gpu.up_i32(&yi),
                gpu.up(&vec![0.0; rows * o]),
            );
            let bloss = gpu.up(&vec![0.0; 2 * rows]);
            launch(
                &gpu,
                K::SoftmaxCe,
                rows as u32,
                bs,
                &[p(&bl), p(&by), p(&bg), p(&bloss), I(o as i32), F(scale)],
            )
            .unwrap();
            let what = format!("softmax_ce o {o} block {bs}");
            same_bits(&what, &gpu.down(&bg, rows * o), &grad);
            let dl = gpu.down_f64(&bloss, rows);
            for (row, (&a, &b)) in dl.iter().zip(&loss).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{what} loss of row {row}: {a} vs {b}"
                );
            }
            assert!(dl[0].is_finite() && dl[1].is_nan() && dl[2].is_nan());
        }
    }
}

/// The input gathers and the reductions over rows, against the loops of core/forward.rs and
/// core/backward.rs (written out here as they are there).
#[test]
fn gather_and_row_sum_kernels_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("gather_and_row_sum_kernels_match_the_cpu") else {
        return;
    };
    let mut r = rng(5);
    let (rows, gh, v) = (9usize, 6usize, 4usize);
    let x: Vec<u32> = (0..rows).map(|_| r.gen_range(0..v as u32 - 1)).collect(); // token v-1 unused
    let xi: Vec<i32> = x.iter().map(|&t| t as i32).collect();
    let w_ih = rand_vec(&mut r, gh * v, 1.0, false);
    let (bih, bhh) = (
        rand_vec(&mut r, gh, 1.0, false),
        rand_vec(&mut r, gh, 1.0, false),
    );
    for fold in [true, false] {
        // forward.rs: gi row = W_ih^T[tok], then += (b_ih + b_hh)
        let wt = crate::nn::math::transposed(&w_ih, gh, v);
        let mut bias = bih.clone();
        if fold {
            bias.iter_mut().zip(&bhh).for_each(|(a, &c)| *a += c);
        }
        let mut gi = vec![0.0f32; rows * gh];
        for (row, &tok) in x.iter().enumerate() {
            let t = tok as usize;
            gi[row * gh..(row + 1) * gh].copy_from_slice(&wt[t * gh..(t + 1) * gh]);
        }
        for row in gi.chunks_exact_mut(gh) {
            row.iter_mut().zip(&bias).for_each(|(a, &c)| *a += c);
        }
        let (bg, bw, bi, bh, bx) = (
            gpu.up(&vec![0.0; rows * gh]),
            gpu.up(&w_ih),
            gpu.up(&bih),
            gpu.up(&bhh),
            gpu.up_i32(&xi),
        );
        let ph = if fold { p(&bh) } else { P(0) };
        run(
            &gpu,
            K::GatherOnehot,
            rows * gh,
            &[
                p(&bg),
                p(&bw),
                p(&bi),
                ph,
                p(&bx),
                I(rows as i32),
                I(gh as i32),
                I(v as i32),
            ],
        );
        same_bits(
            &format!("gather_onehot fold {fold}"),
            &gpu.down(&bg, rows * gh),
            &gi,
        );

        // add_bias on a product's output
        let y0 = rand_vec(&mut r, rows * gh, 2.0, false);
        let mut y = y0.clone();
        for row in y.chunks_exact_mut(gh) {
            row.iter_mut().zip(&bias).for_each(|(a, &c)| *a += c);
        }
        let by = gpu.up(&y0);
        run(
            &gpu,
            K::AddBias,
            rows * gh,
            &[p(&by), p(&bi), ph, I(rows as i32), I(gh as i32)],
        );
        same_bits(
            &format!("add_bias fold {fold}"),
            &gpu.down(&by, rows * gh),
            &y,
        );
    }

    // gather_rows (embedding lookup)
    let dim = 3;
    let table = rand_vec(&mut r, v * dim, 1.0, false);
    let want: Vec<f32> = x
        .iter()
        .flat_map(|&t| table[t as usize * dim..(t as usize + 1) * dim].to_vec())
        .collect();
    let (bo, bt, bx) = (
        gpu.up(&vec![0.0; rows * dim]),
        gpu.up(&table),
        gpu.up_i32(&xi),
    );
    run(
        &gpu,
        K::GatherRows,
        rows * dim,
        &[p(&bo), p(&bt), p(&bx), I(rows as i32), I(dim as i32)],
    );
    same_bits("gather_rows", &gpu.down(&bo, rows * dim), &want);

    // col_sum: bias gradients, rows in order from 0
    let m = rand_vec(&mut r, rows * gh, 1.0, false);
    let mut cs = vec![0.0f32; gh];
    for row in m.chunks_exact(gh) {
        cs.iter_mut().zip(row).for_each(|(a, &c)| *a += c);
    }
    let (bm, bo1, bo2) = (gpu.up(&m), gpu.up(&vec![0.0; gh]), gpu.up(&vec![0.0; gh]));
    run(
        &gpu,
        K::ColSum,
        gh,
        &[p(&bm), I(rows as i32), I(gh as i32), p(&bo1), p(&bo2)],
    );
    same_bits("col_sum", &gpu.down(&bo1, gh), &cs);
    same_bits("col_sum out2", &gpu.down(&bo2, gh), &cs);

    // scatter_rows: the one-hot W_ih gradient (backward.rs: acc[tok] += row, then transposed)
    // and the embedding gradient (ge[tok] += row), rows in increasing order.
    let mut order: Vec<i32> = (0..rows as i32).collect();
    order.sort_by_key(|&r| x[r as usize]); // stable
    let mut starts = vec![0i32; v + 1];
    for &t in &x {
        starts[t as usize + 1] += 1;
    }
    for i in 0..v {
        starts[i + 1] += starts[i];
    }
    let mut acc = vec![0.0f32; v * gh];
    for (&tok, src) in x.iter().zip(m.chunks_exact(gh)) {
        let dst = &mut acc[tok as usize * gh..(tok as usize + 1) * gh];
        dst.iter_mut().zip(src).for_each(|(a, &c)| *a += c);
    }
    let want_t = crate::nn::math::transposed(&acc, v, gh); // [gh, v]
    let (bout, bord, bst) = (
        gpu.up(&vec![f32::NAN; gh * v]), // every entry must be written
        gpu.up_i32(&order),
        gpu.up_i32(&starts),
    );
    run(
        &gpu,
        K::ScatterRows,
        v * gh,
        &[
            p(&bout),
            p(&bm),
            p(&bord),
            p(&bst),
            I(v as i32),
            I(gh as i32),
            I(1),
            I(v as i32),
        ],
    );
    same_bits("scatter_rows one-hot", &gpu.down(&bout, gh * v), &want_t);
    assert!(want_t.iter().skip(v - 1).step_by(v).all(|&z| z == 0.0)); // the unused token
    let bout2 = gpu.up(&vec![f32::NAN; v * gh]);
    run(
        &gpu,
        K::ScatterRows,
        v * gh,
        &[
            p(&bout2),
            p(&bm),
            p(&bord),
            p(&bst),
            I(v as i32),
            I(gh as i32),
            I(gh as i32),
            I(1),
        ],
    );
    same_bits("scatter_rows embedding", &gpu.down(&bout2, v * gh), &acc);
}

/// Gradient norm (sum of squares in two passes), clipping factor and loss sum against
/// params.rs (global_norm, clip_scale) and the row-ordered sum of core/forward.rs.
#[test]
fn norm_clip_and_loss_kernels_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("norm_clip_and_loss_kernels_match_the_cpu") else {
        return;
    };
    let mut r = rng(6);
    let mut scaled = 0;
    for (n, nan) in [(1usize, false), (37, false), (1000, false), (300, true)] {
        let mut g = rand_vec(&mut r, n, 0.5, true);
        if nan {
            g[n / 2] = f32::NAN;
        }
        let rows = 13;
        let row_loss: Vec<f64> = (0..rows).map(|_| r.gen_range(0.0..5.0)).collect();
        let norm = global_norm(std::slice::from_ref(&g));
        let loss: f64 = row_loss.iter().sum();
        for clip in [None, Some(1e6f32), Some(0.3f32)] {
            let np = 3usize;
            let (bg, bpart) = (gpu.up(&g), gpu.up(&vec![0.0; 2 * np]));
            let (bloss, bstats) = (gpu.up(&vec![0.0; 2 * rows]), gpu.up(&[0.0; 6]));
            // row losses as f64
            {
                use crate::nn::cuda::step::Buf;
                let mut bl = bloss;
                // SAFETY: f64 has no padding.
                let bytes =
                    unsafe { std::slice::from_raw_parts(row_loss.as_ptr() as *const u8, 8 * rows) };
                bl.write(0, bytes).unwrap();
                launch(
                    &gpu,
                    K::SumsqPartial,
                    np as u32,
                    gpu.block,
                    &[p(&bg), L(n as i64), p(&bpart)],
                )
                .unwrap();
                let (hc, th) = clip.map_or((0, 0.0), |c| (1, c));
                launch(
                    &gpu,
                    K::FinishStep,
                    1,
                    1,
                    &[
                        p(&bpart),
                        I(np as i32),
                        p(&bl),
                        I(rows as i32),
                        I(hc),
                        F(th),
                        p(&bstats),
                    ],
                )
                .unwrap();
            }
            let st = gpu.down_f64(&bstats, 3);
            let what = format!("n {n} nan {nan} clip {clip:?}");
            assert_eq!(st[0].to_bits(), loss.to_bits(), "{what}: loss sum");
            let dn = st[1] as f32;
            if nan {
                assert!(dn.is_nan() && norm.is_nan(), "{what}: NaN norm");
            } else {
                assert!(
                    (dn - norm).abs() <= norm * 2e-7,
                    "{what}: norm {dn} vs cpu {norm}"
                );
            }
            let sc = st[2] as f32;
            assert_eq!(
                sc.to_bits(),
                clip_scale(dn, clip).to_bits(),
                "{what}: scale"
            );
            if clip == Some(0.3) && norm > 0.3 {
                assert!(sc < 1.0, "{what}: the small clip must scale");
                scaled += 1;
            }
        }
    }
    assert!(scaled >= 2, "the clipping branch was not exercised");
}

struct Sizes(Vec<usize>);
impl ParamSet for Sizes {
    fn param_lens(&self) -> Vec<usize> {
        self.0.clone()
    }
}

/// SGD and Adam (with weight decay and a clipping factor) against Optimizer::apply, 3 steps.
#[test]
fn optimizer_kernels_match_the_cpu() {
    let Some(gpu) = gpu_or_skip("optimizer_kernels_match_the_cpu") else {
        return;
    };
    let mut r = rng(7);
    let lens = vec![5usize, 7, 1];
    let n: usize = lens.iter().sum();
    for spec in [
        OptimSpec::Sgd {
            lr: 0.7,
            weight_decay: 0.01,
        },
        OptimSpec::Adam {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-6,
            weight_decay: 0.02,
        },
    ] {
        let mut store = ParamStore::default();
        for &k in &lens {
            store.add(vec![k], rand_vec(&mut r, k, 1.0, false));
        }
        let flat: Vec<f32> = store.params.iter().flat_map(|q| q.data.clone()).collect();
        let (mut oc, mut od) = (
            Optimizer::new(&spec, &Sizes(lens.clone())),
            Optimizer::new(&spec, &Sizes(lens.clone())),
        );
        let (bw, bm, bv) = (gpu.up(&flat), gpu.up(&vec![0.0; n]), gpu.up(&vec![0.0; n]));
        for step in 0..3 {
            let grads: Vec<Vec<f32>> = lens
                .iter()
                .map(|&k| rand_vec(&mut r, k, 2.0, false))
                .collect();
            let scale = [1.0f32, 0.37, 0.9][step];
            oc.apply(&mut store, &grads, scale).unwrap();
            let gflat: Vec<f32> = grads.concat();
            let bg = gpu.up(&gflat);
            let bstats = {
                let st = [0.0f64, 0.0, scale as f64];
                // SAFETY: f64 has no padding.
                let bytes: Vec<f32> =
                    unsafe { std::slice::from_raw_parts(st.as_ptr() as *const f32, 6) }.to_vec();
                gpu.up(&bytes)
            };
            let upd = od.next_update(&lens).unwrap();
            let hp = gpu.up(&upd.kernel_scalars());
            match upd {
                Update::Sgd { .. } => run(
                    &gpu,
                    K::SgdStep,
                    n,
                    &[p(&bw), p(&bg), L(n as i64), p(&bstats), p(&hp)],
                ),
                Update::Adam { .. } => run(
                    &gpu,
                    K::AdamStep,
                    n,
                    &[
                        p(&bw),
                        p(&bg),
                        p(&bm),
                        p(&bv),
                        L(n as i64),
                        p(&bstats),
                        p(&hp),
                    ],
                ),
            }
            let want: Vec<f32> = store.params.iter().flat_map(|q| q.data.clone()).collect();
            same_bits(&format!("{spec:?} step {step}"), &gpu.down(&bw, n), &want);
            assert_ne!(want, flat);
        }
        assert_eq!(oc.steps(), od.steps());
    }
}
