//! `LanguageModel` (d2l chapter 8 char/word LMs) and `SeriesRnn` (exercise 8.6.3).

use anyhow::Result;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;

use super::backend::{with_ctx, Backend};
use super::core::{sample_index, to_time_major, Core, HiddenState, InKind, Inputs, Targets};
use super::math::transposed;
use super::params::{clip_scale, global_norm, load_named, write_safetensors, Optimizer, ParamSet};
use super::{Activation, CellKind, DeviceKind, InputMode, LmSpec, Sampling, StepStats};

/// How often (in train steps) the device allocation cache is emptied.
const EMPTY_CACHE_EVERY: u64 = 8;

/// (name, shape, values) of every parameter.
type Named = Vec<(String, Vec<usize>, Vec<f32>)>;

/// (exported name, exported shape, internal param index, transposed on export)
type Layout = Vec<(String, Vec<usize>, usize, bool)>;

fn core_layout(core: &Core, scratch: bool) -> Layout {
    let p = &core.store.params;
    let mut out = Vec::new();
    if scratch {
        let li = &core.layers[0];
        let sh = |i: usize| p[i].shape.clone();
        let tr = |i: usize| vec![p[i].shape[1], p[i].shape[0]];
        out.push(("W_xh".to_string(), tr(li.w_ih), li.w_ih, true));
        out.push(("W_hh".to_string(), tr(li.w_hh), li.w_hh, true));
        out.push(("b_h".to_string(), sh(li.b_ih), li.b_ih, false));
        out.push(("W_hq".to_string(), tr(core.lin_w), core.lin_w, true));
        out.push(("b_q".to_string(), sh(core.lin_b), core.lin_b, false));
        return out;
    }
    if let Some(e) = core.emb {
        out.push(("embedding.weight".to_string(), p[e].shape.clone(), e, false));
    }
    for (l, li) in core.layers.iter().enumerate() {
        out.push((
            format!("rnn.weight_ih_l{l}"),
            p[li.w_ih].shape.clone(),
            li.w_ih,
            false,
        ));
        out.push((
            format!("rnn.weight_hh_l{l}"),
            p[li.w_hh].shape.clone(),
            li.w_hh,
            false,
        ));
        out.push((
            format!("rnn.bias_ih_l{l}"),
            p[li.b_ih].shape.clone(),
            li.b_ih,
            false,
        ));
        if let Some(bh) = li.b_hh {
            out.push((format!("rnn.bias_hh_l{l}"), p[bh].shape.clone(), bh, false));
        }
    }
    out.push((
        "linear.weight".to_string(),
        p[core.lin_w].shape.clone(),
        core.lin_w,
        false,
    ));
    out.push((
        "linear.bias".to_string(),
        p[core.lin_b].shape.clone(),
        core.lin_b,
        false,
    ));
    out
}

fn core_named(core: &Core, scratch: bool) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    core_layout(core, scratch)
        .into_iter()
        .map(|(name, shape, idx, tr)| {
            let p = &core.store.params[idx];
            let data = if tr {
                transposed(&p.data, p.shape[0], p.shape[1])
            } else {
                p.data.clone()
            };
            (name, shape, data)
        })
        .collect()
}

fn core_load(core: &mut Core, scratch: bool, path: &Path) -> Result<()> {
    let layout = core_layout(core, scratch);
    let expected: Vec<(String, Vec<usize>)> = layout
        .iter()
        .map(|(n, s, _, _)| (n.clone(), s.clone()))
        .collect();
    let datas = load_named(path, &expected)?;
    for ((_, shape, idx, tr), d) in layout.into_iter().zip(datas) {
        let p = &mut core.store.params[idx];
        p.data = if tr {
            transposed(&d, shape[0], shape[1])
        } else {
            d
        };
    }
    Ok(())
}

/// One optimisation step on the core (forward, loss, BPTT, clipping, update).
#[allow(clippy::too_many_arguments)]
fn core_train(
    core: &mut Core,
    be: &Backend,
    opt: &mut Optimizer,
    inp: &Inputs,
    tg: &Targets,
    b: usize,
    t: usize,
    state: &mut HiddenState,
    clip: Option<f32>,
) -> Result<StepStats> {
    use super::profile::{enter, Phase};
    let _step = enter(Phase::Other);
    let (loss_sum, tokens, grads) = with_ctx!(be, ctx => {
        let dw = core.upload(ctx, b);
        let mut fwd = core.forward(ctx, &dw, inp, b, t, state);
        let (sum, n, dy) = {
            let _l = enter(Phase::Loss);
            core.loss(&fwd, tg, b, t, true)
        };
        let grads = core.backward(ctx, &dw, inp, &mut fwd, &dy, b, t, None);
        (sum, n, grads)
    });
    let _u = enter(Phase::Update);
    let grad_norm = global_norm(&grads);
    let scale = clip_scale(grad_norm, clip);
    opt.apply(&mut core.store, &grads, scale)?;
    if opt.steps().is_multiple_of(EMPTY_CACHE_EVERY) {
        be.empty_cache();
    }
    Ok(StepStats {
        loss_sum,
        tokens,
        grad_norm,
    })
}

fn check_dims(x_len: usize, y_len: Option<usize>, batch: usize, steps: usize) -> Result<()> {
    if batch == 0 || steps == 0 {
        nn_bail!(
            Invalid,
            "batch and steps must be > 0 (got batch {batch}, steps {steps})"
        );
    }
    if x_len != batch * steps {
        nn_bail!(
            Invalid,
            "x has {x_len} elements, expected batch*steps = {batch}*{steps} = {}",
            batch * steps
        );
    }
    if let Some(yl) = y_len {
        if yl != batch * steps {
            nn_bail!(
                Invalid,
                "y has {yl} elements, expected batch*steps = {}",
                batch * steps
            );
        }
    }
    Ok(())
}

fn check_tokens(x: &[u32], vocab: usize, what: &str) -> Result<()> {
    if let Some(&bad) = x.iter().find(|&&v| v as usize >= vocab) {
        nn_bail!(Invalid, "{what} contains token {bad} >= vocab {vocab}");
    }
    Ok(())
}

/// A character/word language model (d2l chapter 8): RnnScratch, or stacked nn.RNN/GRU/LSTM plus
/// a linear head, with one-hot or embedding input.
#[derive(Clone, Debug)]
pub struct LanguageModel {
    spec: LmSpec,
    core: Core,
    be: Backend,
    /// The device-resident training step's state on CUDA (`nn::cuda`).
    #[cfg(feature = "cuda")]
    cuda: super::cuda::device::Resident,
}

impl ParamSet for LanguageModel {
    fn param_lens(&self) -> Vec<usize> {
        self.core.store.lens()
    }
}

impl LanguageModel {
    pub fn new(spec: &LmSpec, device: DeviceKind, seed: u64) -> Result<Self> {
        let be = Backend::new(device, seed)?;
        if spec.vocab == 0 {
            nn_bail!(Invalid, "vocab must be > 0");
        }
        let input = match spec.input {
            InputMode::OneHot => InKind::OneHot(spec.vocab),
            InputMode::Embedding(dim) => {
                if spec.cell == CellKind::RnnScratch {
                    nn_bail!(Invalid, "RnnScratch uses one-hot input only");
                }
                InKind::Embedding {
                    vocab: spec.vocab,
                    dim,
                }
            }
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let core = Core::new(
            spec.cell,
            spec.activation,
            input,
            spec.hidden,
            spec.num_layers,
            spec.vocab,
            &mut rng,
        )?;
        Ok(Self {
            spec: spec.clone(),
            core,
            be,
            #[cfg(feature = "cuda")]
            cuda: Default::default(),
        })
    }

    /// The model's weights as they are now: with feature `cuda`, after device training steps,
    /// a copy with the device's weights (the host copy is stale then).
    fn host_core(&self) -> Result<std::borrow::Cow<'_, Core>> {
        #[cfg(feature = "cuda")]
        if let Some(core) = self.cuda.synced_core(&self.core)? {
            return Ok(std::borrow::Cow::Owned(core));
        }
        Ok(std::borrow::Cow::Borrowed(&self.core))
    }

    /// Bring a hidden state that a CUDA training step left on the device back to the host.
    fn state_to_host(&self, state: &mut HiddenState) -> Result<()> {
        if state.on_device.is_none() {
            return Ok(());
        }
        #[cfg(feature = "cuda")]
        if self.cuda.pull_state(state)? {
            return Ok(());
        }
        nn_bail!(
            Invalid,
            "this hidden state is stale or belongs to another model's CUDA training step; use \
             the state this model's last train_step returned, or a fresh one from zero_state"
        )
    }

    pub fn spec(&self) -> &LmSpec {
        &self.spec
    }
    pub fn device(&self) -> DeviceKind {
        self.be.kind()
    }

    pub fn zero_state(&self, batch: usize) -> HiddenState {
        self.core.zero_state(batch)
    }

    fn scratch(&self) -> bool {
        self.spec.cell == CellKind::RnnScratch
    }

    fn check_io(&self, x: &[u32], y: Option<&[u32]>, batch: usize, steps: usize) -> Result<()> {
        check_dims(x.len(), y.map(|y| y.len()), batch, steps)?;
        check_tokens(x, self.spec.vocab, "x")?;
        if let Some(y) = y {
            check_tokens(y, self.spec.vocab, "y")?;
        }
        Ok(())
    }

    /// Forward + BPTT over `steps`, optional global-norm clipping, optimizer update; `state` is
    /// replaced by the final (detached) hidden state. x, y are batch-major [batch][steps].
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        opt: &mut Optimizer,
        x: &[u32],
        y: &[u32],
        batch: usize,
        steps: usize,
        state: &mut HiddenState,
        clip: Option<f32>,
    ) -> Result<StepStats> {
        self.check_io(x, Some(y), batch, steps)?;
        self.core.check_state(state, batch)?;
        let xt = to_time_major(x, batch, steps);
        let yt = to_time_major(y, batch, steps);
        #[cfg(feature = "cuda")]
        if let Backend::Cuda(_) = &self.be {
            let c = &self.core;
            return self
                .cuda
                .train_step(c, opt, &xt, &yt, batch, steps, state, clip);
        }
        self.state_to_host(state)?;
        core_train(
            &mut self.core,
            &self.be,
            opt,
            &Inputs::Tokens(&xt),
            &Targets::Tokens(&yt),
            batch,
            steps,
            state,
            clip,
        )
    }

    /// Cross-entropy summed over all tokens, and the token count; updates `state`.
    pub fn eval_loss(
        &self,
        x: &[u32],
        y: &[u32],
        batch: usize,
        steps: usize,
        state: &mut HiddenState,
    ) -> Result<(f64, usize)> {
        self.check_io(x, Some(y), batch, steps)?;
        self.core.check_state(state, batch)?;
        self.state_to_host(state)?;
        let xt = to_time_major(x, batch, steps);
        let yt = to_time_major(y, batch, steps);
        let core = &*self.host_core()?;
        let (s, n) = with_ctx!(&self.be, ctx => {
            let dw = core.upload(ctx, batch);
            let fwd = core.forward(ctx, &dw, &Inputs::Tokens(&xt), batch, steps, state);
            let (s, n, _) = core.loss(&fwd, &Targets::Tokens(&yt), batch, steps, false);
            (s, n)
        });
        self.be.empty_cache();
        Ok((s, n))
    }

    /// d2l `predict_ch8`: warm up on `prefix`, then generate `num_preds` tokens.
    /// Returns prefix followed by the generated tokens.
    pub fn predict(
        &self,
        prefix: &[u32],
        num_preds: usize,
        sampling: Sampling,
        rng: &mut impl Rng,
    ) -> Result<Vec<u32>> {
        if prefix.is_empty() {
            nn_bail!(Invalid, "predict needs a non-empty prefix");
        }
        check_tokens(prefix, self.spec.vocab, "prefix")?;
        let core = &*self.host_core()?;
        let v = self.spec.vocab;
        let out = with_ctx!(&self.be, ctx => {
            let dw = core.upload(ctx, 1);
            let mut state = core.zero_state(1);
            let mut outputs = vec![prefix[0]];
            for &y in &prefix[1..] {
                let last = [*outputs.last().unwrap()];
                core.forward(ctx, &dw, &Inputs::Tokens(&last), 1, 1, &mut state);
                outputs.push(y);
            }
            for _ in 0..num_preds {
                let last = [*outputs.last().unwrap()];
                let f = core.forward(ctx, &dw, &Inputs::Tokens(&last), 1, 1, &mut state);
                let lg = &f.logits[..v];
                let next = match sampling {
                    Sampling::Greedy => {
                        let mut best = 0usize;
                        for i in 1..v {
                            if lg[i] > lg[best] {
                                best = i;
                            }
                        }
                        best
                    }
                    Sampling::Sample { alpha } => {
                        // softmax(alpha * logits) == p^alpha renormalised
                        let m = lg.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * alpha));
                        let probs: Vec<f32> = lg.iter().map(|&z| ((z * alpha - m) as f64).exp() as f32).collect();
                        sample_index(&probs, rng)
                    }
                };
                outputs.push(next as u32);
            }
            outputs
        });
        self.be.empty_cache();
        Ok(out)
    }

    /// 8.4.1 shape check: ((steps*batch, vocab), state shapes).
    pub fn forward_shapes(
        &self,
        x: &[u32],
        batch: usize,
        steps: usize,
    ) -> Result<((usize, usize), Vec<(usize, usize)>)> {
        self.check_io(x, None, batch, steps)?;
        let xt = to_time_major(x, batch, steps);
        let mut state = self.core.zero_state(batch);
        let core = &*self.host_core()?;
        let rows = with_ctx!(&self.be, ctx => {
            let dw = core.upload(ctx, batch);
            let f = core.forward(ctx, &dw, &Inputs::Tokens(&xt), batch, steps, &mut state);
            f.logits.len() / self.spec.vocab
        });
        self.be.empty_cache();
        Ok(((rows, self.spec.vocab), state.shapes()))
    }

    /// ||dLoss/dH_t|| (top layer, whole batch, mean loss) for t = 1..=steps, from a zero state.
    pub fn hidden_grad_norms(
        &self,
        x: &[u32],
        y: &[u32],
        batch: usize,
        steps: usize,
    ) -> Result<Vec<f32>> {
        self.check_io(x, Some(y), batch, steps)?;
        let xt = to_time_major(x, batch, steps);
        let yt = to_time_major(y, batch, steps);
        let core = &*self.host_core()?;
        let mut state = core.zero_state(batch);
        let mut norms = Vec::new();
        with_ctx!(&self.be, ctx => {
            let dw = core.upload(ctx, batch);
            let inp = Inputs::Tokens(&xt);
            let mut fwd = core.forward(ctx, &dw, &inp, batch, steps, &mut state);
            let (_, _, dy) = core.loss(&fwd, &Targets::Tokens(&yt), batch, steps, true);
            core.backward(ctx, &dw, &inp, &mut fwd, &dy, batch, steps, Some(&mut norms));
        });
        self.be.empty_cache();
        Ok(norms)
    }

    /// Named tensors in PyTorch state_dict names/layouts (RnnScratch: W_xh, W_hh, b_h, W_hq, b_q).
    ///
    /// With feature `cuda`, after device training steps this copies the weights from the device;
    /// it panics if that copy fails (`save_safetensors` returns the error instead).
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.try_named_tensors()
            .unwrap_or_else(|e| panic!("named_tensors: {e:#}"))
    }

    fn try_named_tensors(&self) -> Result<Named> {
        Ok(core_named(&*self.host_core()?, self.scratch()))
    }

    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let mut meta = std::collections::HashMap::new();
        meta.insert("lm_spec".to_string(), serde_json::to_string(&self.spec)?);
        write_safetensors(path, &self.try_named_tensors()?, Some(meta))
    }

    /// Exact round trip of `save_safetensors`; errors on missing/extra names or shape mismatch.
    pub fn load_safetensors(&mut self, path: &Path) -> Result<()> {
        let scratch = self.scratch();
        core_load(&mut self.core, scratch, path)?;
        #[cfg(feature = "cuda")]
        self.cuda.host_changed();
        Ok(())
    }

    pub fn num_params(&self) -> usize {
        self.core.store.num_params()
    }

    #[cfg(test)]
    pub(super) fn core(&self) -> &Core {
        &self.core
    }
    #[cfg(test)]
    pub(super) fn core_mut(&mut self) -> &mut Core {
        &mut self.core
    }
    #[cfg(test)]
    pub(super) fn backend(&self) -> &Backend {
        &self.be
    }
}

/// RNN regressor on a scalar series (d2l exercise 8.6.3): windows of `tau` values are fed as
/// `tau` steps of a 1-d input; the last hidden state -> linear -> 1 output; MSE loss.
#[derive(Clone, Debug)]
pub struct SeriesRnn {
    cell: CellKind,
    core: Core,
    be: Backend,
}

impl ParamSet for SeriesRnn {
    fn param_lens(&self) -> Vec<usize> {
        self.core.store.lens()
    }
}

impl SeriesRnn {
    pub fn new(hidden: usize, cell: CellKind, device: DeviceKind, seed: u64) -> Result<Self> {
        let be = Backend::new(device, seed)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let core = Core::new(
            cell,
            Activation::Tanh,
            InKind::Dense(1),
            hidden,
            1,
            1,
            &mut rng,
        )?;
        Ok(Self { cell, core, be })
    }

    fn dims(x: &[f32], batch: usize) -> Result<usize> {
        if batch == 0 || x.is_empty() || !x.len().is_multiple_of(batch) {
            nn_bail!(
                Invalid,
                "x has {} values, not a non-empty multiple of batch {batch}",
                x.len()
            );
        }
        Ok(x.len() / batch)
    }

    /// x: windows [batch][tau] flattened; y: [batch]. MSE (mean) gradient; loss_sum = sum of
    /// squared errors, tokens = batch.
    pub fn train_step(
        &mut self,
        opt: &mut Optimizer,
        x: &[f32],
        y: &[f32],
        batch: usize,
    ) -> Result<StepStats> {
        let tau = Self::dims(x, batch)?;
        if y.len() != batch {
            nn_bail!(Invalid, "y has {} values, expected batch {batch}", y.len());
        }
        let xt = to_time_major(x, batch, tau);
        let mut state = self.core.zero_state(batch);
        core_train(
            &mut self.core,
            &self.be,
            opt,
            &Inputs::Dense(&xt),
            &Targets::MseLast(y),
            batch,
            tau,
            &mut state,
            None,
        )
    }

    pub fn predict(&self, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        let tau = Self::dims(x, batch)?;
        let xt = to_time_major(x, batch, tau);
        let core = &self.core;
        let mut state = core.zero_state(batch);
        let logits = with_ctx!(&self.be, ctx => {
            let dw = core.upload(ctx, batch);
            let mut fwd = core.forward(ctx, &dw, &Inputs::Dense(&xt), batch, tau, &mut state);
            std::mem::take(&mut fwd.logits)
        });
        self.be.empty_cache();
        Ok(logits[(tau - 1) * batch..].to_vec())
    }

    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        core_named(&self.core, self.cell == CellKind::RnnScratch)
    }
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        write_safetensors(path, &self.named_tensors(), None)
    }
    pub fn load_safetensors(&mut self, path: &Path) -> Result<()> {
        let scratch = self.cell == CellKind::RnnScratch;
        core_load(&mut self.core, scratch, path)
    }
    pub fn num_params(&self) -> usize {
        self.core.store.num_params()
    }
}
