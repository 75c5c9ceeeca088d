//! Host-side parameter storage, the optimizers (SGD, Adam as PyTorch), global-norm clipping and
//! safetensors I/O. Parameters live on the host as `Vec<f32>` (the master copy); they are uploaded
//! to the device for the matrix products of each call.

use anyhow::{Context, Result};
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

use super::OptimSpec;

/// One named parameter in the internal layout.
#[derive(Clone, Debug)]
pub(super) struct Param {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct ParamStore {
    pub params: Vec<Param>,
}

impl ParamStore {
    pub fn add(&mut self, shape: Vec<usize>, data: Vec<f32>) -> usize {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        self.params.push(Param { shape, data });
        self.params.len() - 1
    }
    pub fn zeros_like(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .map(|p| vec![0.0; p.data.len()])
            .collect()
    }
    pub fn num_params(&self) -> usize {
        self.params.iter().map(|p| p.data.len()).sum()
    }
    pub fn lens(&self) -> Vec<usize> {
        self.params.iter().map(|p| p.data.len()).collect()
    }
}

/// Anything the generic [`Optimizer`] can train: exposes the sizes of its parameter tensors.
pub trait ParamSet {
    /// Element count of each parameter tensor, in the model's fixed order.
    fn param_lens(&self) -> Vec<usize>;
}

/// What every model offers whatever its kind, so that stages can hold any model as `dyn Model`.
pub trait Model: ParamSet {
    fn num_params(&self) -> usize;
    /// (PyTorch name, shape, values) of every parameter.
    fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)>;
    fn save_safetensors(&self, path: &std::path::Path) -> anyhow::Result<()>;
    fn load_safetensors(&mut self, path: &std::path::Path) -> anyhow::Result<()>;
}

macro_rules! impl_model {
    ($($t:ty),*) => {$(
        impl Model for $t {
            fn num_params(&self) -> usize {
                <$t>::num_params(self)
            }
            fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
                <$t>::named_tensors(self)
            }
            fn save_safetensors(&self, path: &std::path::Path) -> anyhow::Result<()> {
                <$t>::save_safetensors(self, path)
            }
            fn load_safetensors(&mut self, path: &std::path::Path) -> anyhow::Result<()> {
                <$t>::load_safetensors(self, path)
            }
        }
    )*};
}
impl_model!(super::LanguageModel, super::SeriesRnn, super::Mlp);

/// Global L2 norm over all gradients (f64 accumulation).
pub(super) fn global_norm(grads: &[Vec<f32>]) -> f32 {
    // 8 interleaved f64 partial sums (one vector register), added in a fixed order at the end:
    // a single running sum was one long chain of dependent additions (0.3 ms per step of
    // LSTM 256, serial).
    const L: usize = 8;
    let mut acc = [0.0f64; L];
    for g in grads {
        let mut it = g.chunks_exact(L);
        for c in &mut it {
            for (a, &x) in acc.iter_mut().zip(c) {
                *a += (x as f64) * (x as f64);
            }
        }
        for (a, &x) in acc.iter_mut().zip(it.remainder()) {
            *a += (x as f64) * (x as f64);
        }
    }
    acc.iter().sum::<f64>().sqrt() as f32
}

/// d2l `grad_clipping`: the factor the gradients get multiplied with.
pub(super) fn clip_scale(norm: f32, clip: Option<f32>) -> f32 {
    match clip {
        Some(theta) if norm > theta => theta / norm,
        _ => 1.0,
    }
}

/// SGD or Adam over a list of host parameter tensors. State (Adam moments, step count) can be
/// saved and restored bit-exactly. The same optimizer type serves `LanguageModel`, `Mlp` and
/// `SeriesRnn` (anything implementing [`ParamSet`]).
#[derive(Clone, Debug)]
pub struct Optimizer {
    spec: OptimSpec,
    step: u64,
    lens: Vec<usize>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// With feature `cuda`: the Adam moments of the device training step (`nn::cuda`), when it
    /// ran last; `m` and `v` are then stale and are brought back before any host use.
    #[cfg(feature = "cuda")]
    pub(super) cuda: Option<Box<dyn FarMoments>>,
}

/// Adam moments kept away from the host (the CUDA step keeps them on the device), brought back
/// before any host use. A trait so that this module does not name the device's types: `nn::cuda`
/// builds on the host optimizer, not the reverse.
#[cfg(feature = "cuda")]
pub(super) trait FarMoments: std::fmt::Debug + Send + Sync {
    /// (m, v) per parameter tensor of sizes `lens`.
    fn download(&self, lens: &[usize]) -> Result<MomentPair>;
    fn clone_box(&self) -> Box<dyn FarMoments>;
    /// For the owner's own step, which knows the concrete type.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}

#[cfg(feature = "cuda")]
impl Clone for Box<dyn FarMoments> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Adam's first and second moments, one vector per parameter tensor.
pub(super) type MomentPair = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// The scalars of one optimizer update (computed as `Optimizer::apply` uses them), for the
/// device step's update kernels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Update {
    Sgd {
        lr: f32,
        weight_decay: f32,
    },
    Adam {
        /// lr / (1 - beta1^t)
        step_size: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        /// sqrt(1 - beta2^t)
        bc2_sqrt: f32,
    },
}

impl Update {
    /// The scalars the device's `sgd_step`/`adam_step` kernels read (their `hp`), in order:
    /// SGD lr, weight decay; Adam step size, beta1, beta2, eps, weight decay, sqrt(1 - beta2^t).
    #[cfg(any(test, feature = "cuda"))]
    pub(super) fn kernel_scalars(&self) -> Vec<f32> {
        match *self {
            Update::Sgd { lr, weight_decay } => vec![lr, weight_decay],
            Update::Adam {
                step_size,
                beta1,
                beta2,
                eps,
                weight_decay,
                bc2_sqrt,
            } => vec![step_size, beta1, beta2, eps, weight_decay, bc2_sqrt],
        }
    }
}

impl Optimizer {
    pub fn new(spec: &OptimSpec, model: &(impl ParamSet + ?Sized)) -> Self {
        let lens = model.param_lens();
        let (m, v) = match spec {
            OptimSpec::Sgd { .. } => (vec![], vec![]),
            OptimSpec::Adam { .. } => (
                lens.iter().map(|&n| vec![0.0; n]).collect(),
                lens.iter().map(|&n| vec![0.0; n]).collect(),
            ),
        };
        Self {
            spec: spec.clone(),
            step: 0,
            lens,
            m,
            v,
            #[cfg(feature = "cuda")]
            cuda: None,
        }
    }

    pub fn spec(&self) -> &OptimSpec {
        &self.spec
    }
    /// Number of update steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Check the model's sizes, count the step and return its update scalars.
    pub(super) fn next_update(&mut self, lens: &[usize]) -> Result<Update> {
        if lens != self.lens {
            nn_bail!(
                Weights,
                "optimizer was built for a different model (param sizes {:?} vs {:?})",
                self.lens,
                lens
            );
        }
        self.step += 1;
        Ok(match self.spec {
            OptimSpec::Sgd { lr, weight_decay } => Update::Sgd { lr, weight_decay },
            OptimSpec::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let t = self.step as i32;
                let bc1 = 1.0 - beta1.powi(t);
                let bc2 = 1.0 - beta2.powi(t);
                Update::Adam {
                    step_size: lr / bc1,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    bc2_sqrt: bc2.sqrt(),
                }
            }
        })
    }

    /// The host Adam moments (empty for SGD), for the device step's first upload.
    #[cfg(any(test, feature = "cuda"))]
    pub(super) fn host_moments(&self) -> (&[Vec<f32>], &[Vec<f32>]) {
        (&self.m, &self.v)
    }

    /// The Adam moments as they are now: the host copy, or the device's when it is newer.
    fn moments_now(&self) -> Result<MomentPair> {
        #[cfg(feature = "cuda")]
        if let Some(d) = &self.cuda {
            return d.download(&self.lens);
        }
        Ok((self.m.clone(), self.v.clone()))
    }

    /// Apply one update with gradients multiplied by `scale` (the clipping factor).
    pub(super) fn apply(
        &mut self,
        params: &mut ParamStore,
        grads: &[Vec<f32>],
        scale: f32,
    ) -> Result<()> {
        let lens = params.lens();
        #[cfg(feature = "cuda")]
        if let Some(d) = self.cuda.take() {
            // The device step ran last: its moments are the current ones.
            (self.m, self.v) = d.download(&self.lens)?;
        }
        match self.next_update(&lens)? {
            Update::Sgd { lr, weight_decay } => {
                for (p, g) in params.params.iter_mut().zip(grads) {
                    for (w, &gi) in p.data.iter_mut().zip(g) {
                        let gg = gi * scale + weight_decay * *w;
                        *w -= lr * gg;
                    }
                }
            }
            Update::Adam {
                step_size,
                beta1,
                beta2,
                eps,
                weight_decay,
                bc2_sqrt,
            } => {
                for (i, (p, g)) in params.params.iter_mut().zip(grads).enumerate() {
                    let (m, v) = (&mut self.m[i], &mut self.v[i]);
                    for j in 0..p.data.len() {
                        let w = p.data[j];
                        let gg = g[j] * scale + weight_decay * w;
                        m[j] = beta1 * m[j] + (1.0 - beta1) * gg;
                        v[j] = beta2 * v[j] + (1.0 - beta2) * gg * gg;
                        let denom = v[j].sqrt() / bc2_sqrt + eps;
                        p.data[j] = w - step_size * (m[j] / denom);
                    }
                }
            }
        }
        Ok(())
    }

    /// Save the optimizer state (spec, step count, Adam moments) as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        let (ms, vs) = self.moments_now()?;
        for (i, m) in ms.iter().enumerate() {
            tensors.push((format!("m.{i}"), vec![m.len()], m.clone()));
        }
        for (i, v) in vs.iter().enumerate() {
            tensors.push((format!("v.{i}"), vec![v.len()], v.clone()));
        }
        let mut meta = HashMap::new();
        meta.insert("spec".to_string(), serde_json::to_string(&self.spec)?);
        meta.insert("step".to_string(), self.step.to_string());
        meta.insert("lens".to_string(), serde_json::to_string(&self.lens)?);
        write_safetensors(path, &tensors, Some(meta))
    }

    /// Restore state saved by [`Optimizer::save`]. The spec and parameter sizes must match.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (_, md) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| nn_err!(Weights, "bad safetensors: {e}"))?;
        let meta = md
            .metadata()
            .clone()
            .ok_or_else(|| nn_err!(Weights, "optimizer file without metadata"))?;
        let spec: OptimSpec = serde_json::from_str(
            meta.get("spec")
                .ok_or_else(|| nn_err!(Weights, "no spec"))?,
        )?;
        if std::mem::discriminant(&spec) != std::mem::discriminant(&self.spec) {
            nn_bail!(
                Weights,
                "optimizer kind mismatch: file has {:?}, this is {:?}",
                spec,
                self.spec
            );
        }
        let lens: Vec<usize> = serde_json::from_str(
            meta.get("lens")
                .ok_or_else(|| nn_err!(Weights, "no lens"))?,
        )?;
        if lens != self.lens {
            nn_bail!(
                Weights,
                "optimizer param sizes mismatch: file {:?}, model {:?}",
                lens,
                self.lens
            );
        }
        let step: u64 = meta
            .get("step")
            .ok_or_else(|| nn_err!(Weights, "no step"))?
            .parse()?;
        let map = read_safetensors(&bytes)?;
        let n = if matches!(self.spec, OptimSpec::Adam { .. }) {
            self.lens.len()
        } else {
            0
        };
        let mut m = Vec::with_capacity(n);
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let take = |k: &str| -> Result<Vec<f32>> {
                let (shape, d) = map
                    .get(k)
                    .ok_or_else(|| nn_err!(Weights, "optimizer file lacks {k}"))?;
                if shape != &vec![self.lens[i]] {
                    nn_bail!(
                        Weights,
                        "optimizer tensor {k} has shape {shape:?}, expected [{}]",
                        self.lens[i]
                    );
                }
                Ok(d.clone())
            };
            m.push(take(&format!("m.{i}"))?);
            v.push(take(&format!("v.{i}"))?);
        }
        self.spec = spec; // hyper-parameters as saved
        self.step = step;
        self.m = m;
        self.v = v;
        #[cfg(feature = "cuda")]
        {
            self.cuda = None; // the loaded moments are the current ones
        }
        Ok(())
    }
}

pub(super) fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let mut views = Vec::new();
    for ((name, shape, _), b) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(StDtype::F32, shape.clone(), b)
            .map_err(|e| nn_err!(Weights, "{name}: {e}"))?;
        views.push((name.clone(), view));
    }
    let out =
        safetensors::serialize(views, &meta).map_err(|e| nn_err!(Weights, "serialize: {e}"))?;
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// name -> (shape, data); only F32 tensors accepted.
pub(super) fn read_safetensors(bytes: &[u8]) -> Result<HashMap<String, (Vec<usize>, Vec<f32>)>> {
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| nn_err!(Weights, "bad safetensors: {e}"))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != StDtype::F32 {
            nn_bail!(
                Weights,
                "tensor {name} has dtype {:?}, expected F32",
                view.dtype()
            );
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Load named tensors from `path` and check that the names and shapes are exactly `expected`.
pub(super) fn load_named(path: &Path, expected: &[(String, Vec<usize>)]) -> Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut map = read_safetensors(&bytes)?;
    let mut out = Vec::new();
    for (name, shape) in expected {
        let (s, d) = map
            .remove(name)
            .ok_or_else(|| nn_err!(Weights, "{}: missing tensor `{name}`", path.display()))?;
        if &s != shape {
            nn_bail!(
                Weights,
                "{}: tensor `{name}` has shape {s:?}, model expects {shape:?}",
                path.display()
            );
        }
        out.push(d);
    }
    if !map.is_empty() {
        let mut extra: Vec<_> = map.keys().cloned().collect();
        extra.sort();
        nn_bail!(Weights, "{}: unexpected tensors {extra:?}", path.display());
    }
    Ok(out)
}
