//! `Mlp`: d2l 8.1 series regression (tau inputs -> hidden layers -> 1), MSE loss.

use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Uniform};
use std::path::Path;

use super::backend::{with_ctx, Backend};
use super::math::tanh_f;
use super::params::{global_norm, load_named, write_safetensors, Optimizer, ParamSet, ParamStore};
use super::{Activation, DeviceKind, StepStats};

#[derive(Clone, Debug)]
pub struct Mlp {
    dims: Vec<usize>, // [input, h1, ..., 1]
    act: Activation,
    store: ParamStore, // w0, b0, w1, b1, ... (PyTorch layout [out, in])
    be: Backend,
}

impl ParamSet for Mlp {
    fn param_lens(&self) -> Vec<usize> {
        self.store.lens()
    }
}

impl Mlp {
    pub fn new(
        input: usize,
        hidden: &[usize],
        activation: Activation,
        device: DeviceKind,
        seed: u64,
    ) -> Result<Self> {
        let be = Backend::new(device, seed)?;
        let mut dims = vec![input];
        dims.extend_from_slice(hidden);
        dims.push(1);
        if dims.contains(&0) {
            nn_bail!(Invalid, "Mlp sizes must be > 0 (got {dims:?})");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut store = ParamStore::default();
        for w in dims.windows(2) {
            let (fi, fo) = (w[0], w[1]);
            let xb = (6.0 / (fi + fo) as f32).sqrt();
            let xu = Uniform::new_inclusive(-xb, xb);
            store.add(
                vec![fo, fi],
                (0..fo * fi).map(|_| xu.sample(&mut rng)).collect(),
            );
            let bb = 1.0 / (fi as f32).sqrt();
            let bu = Uniform::new_inclusive(-bb, bb);
            store.add(vec![fo], (0..fo).map(|_| bu.sample(&mut rng)).collect());
        }
        Ok(Self {
            dims,
            act: activation,
            store,
            be,
        })
    }

    fn act(&self, z: f32) -> f32 {
        match self.act {
            Activation::Tanh => tanh_f(z),
            Activation::Relu => {
                if z > 0.0 || z.is_nan() {
                    z
                } else {
                    0.0
                }
            }
        }
    }
    fn dact(&self, a: f32) -> f32 {
        match self.act {
            Activation::Tanh => 1.0 - a * a,
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    fn check(&self, x: &[f32], batch: usize) -> Result<()> {
        if batch == 0 || x.len() != batch * self.dims[0] {
            nn_bail!(
                Invalid,
                "x has {} values, expected batch*input = {batch}*{}",
                x.len(),
                self.dims[0]
            );
        }
        Ok(())
    }

    /// Activations of every layer (index 0 = input). The last is the prediction [batch].
    fn forward(&self, x: &[f32], batch: usize) -> Vec<Vec<f32>> {
        let nl = self.dims.len() - 1;
        let p = &self.store.params;
        let mut acts = vec![x.to_vec()];
        with_ctx!(&self.be, ctx => {
            for i in 0..nl {
                let (fi, fo) = (self.dims[i], self.dims[i + 1]);
                let am = ctx.mat(&acts[i], batch, fi);
                let wm = ctx.mat(&p[2 * i].data, fo, fi);
                let mut z = vec![0.0f32; batch * fo];
                ctx.mm(&am, false, &wm, true, &mut z);
                let bias = &p[2 * i + 1].data;
                for r in 0..batch {
                    for j in 0..fo {
                        let v = z[r * fo + j] + bias[j];
                        z[r * fo + j] = if i + 1 < nl { self.act(v) } else { v };
                    }
                }
                acts.push(z);
            }
        });
        acts
    }

    /// MSE training step; loss_sum = sum of squared errors, tokens = batch.
    pub fn train_step(
        &mut self,
        opt: &mut Optimizer,
        x: &[f32],
        y: &[f32],
        batch: usize,
    ) -> Result<StepStats> {
        self.check(x, batch)?;
        if y.len() != batch {
            nn_bail!(Invalid, "y has {} values, expected batch {batch}", y.len());
        }
        let acts = self.forward(x, batch);
        let nl = self.dims.len() - 1;
        let pred = &acts[nl];
        let mut loss_sum = 0.0f64;
        let mut dz: Vec<f32> = Vec::with_capacity(batch);
        for r in 0..batch {
            let e = pred[r] - y[r];
            loss_sum += (e as f64) * (e as f64);
            dz.push(2.0 * e / batch as f32);
        }
        let mut grads = self.store.zeros_like();
        let p = &self.store.params;
        with_ctx!(&self.be, ctx => {
            for i in (0..nl).rev() {
                let (fi, fo) = (self.dims[i], self.dims[i + 1]);
                let dzm = ctx.mat(&dz, batch, fo);
                let am = ctx.mat(&acts[i], batch, fi);
                ctx.mm(&dzm, true, &am, false, &mut grads[2 * i]);
                for r in 0..batch {
                    for j in 0..fo {
                        grads[2 * i + 1][j] += dz[r * fo + j];
                    }
                }
                if i > 0 {
                    let wm = ctx.mat(&p[2 * i].data, fo, fi);
                    let mut da = vec![0.0f32; batch * fi];
                    ctx.mm(&dzm, false, &wm, false, &mut da);
                    for (d, &a) in da.iter_mut().zip(&acts[i]) {
                        *d *= self.dact(a);
                    }
                    dz = da;
                }
            }
        });
        let grad_norm = global_norm(&grads);
        opt.apply(&mut self.store, &grads, 1.0)?;
        Ok(StepStats {
            loss_sum,
            tokens: batch,
            grad_norm,
        })
    }

    pub fn predict(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        self.check(x, batch)?;
        let mut acts = self.forward(x, batch);
        Ok(acts.pop().unwrap())
    }

    /// `net.{2i}.weight` [out, in], `net.{2i}.bias` (nn.Sequential indices).
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.store
            .params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let kind = if k % 2 == 0 { "weight" } else { "bias" };
                (
                    format!("net.{}.{kind}", 2 * (k / 2)),
                    p.shape.clone(),
                    p.data.clone(),
                )
            })
            .collect()
    }
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        write_safetensors(path, &self.named_tensors(), None)
    }
    pub fn load_safetensors(&mut self, path: &Path) -> Result<()> {
        let expected: Vec<(String, Vec<usize>)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, s, _)| (n, s))
            .collect();
        let datas = load_named(path, &expected)?;
        for (p, d) in self.store.params.iter_mut().zip(datas) {
            p.data = d;
        }
        Ok(())
    }
    pub fn num_params(&self) -> usize {
        self.store.num_params()
    }
}
