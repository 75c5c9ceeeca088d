//! `train`: fit a model to its data. Language models train on the batches of a
//! `sample_batches` stage (the book's `train_ch8`), series models on `window_features`.
//!
//! Files: `metrics.csv` (epoch, loss, perplexity, gradient norm before clipping; identical
//! across runs), `speed.csv` (seconds and tokens/s per epoch: the only file that varies between
//! runs), `samples.txt` (text generated from `prefix` every `sample_every` epochs),
//! `model.safetensors` and `spec.json`. A diverged run (NaN or infinite loss, or a perplexity
//! beyond the f32 range the model computes in) stops and is
//! recorded as diverged: that is a result, not a failure. Checkpoints every `checkpoint_every`
//! epochs let a killed run resume where it stopped and end bit-identical.

use super::model::{AnyModel, ModelSpec};
use super::sample_batches::{SamplerSpec, Strategy};
use super::series::Features;
use super::{ParamIssue, Roles, Stage};
use crate::artifacts::Art;
use crate::context::StageCtx;
use crate::nn::{self, OptimSpec, Sampling};
use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(
    Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerParam {
    #[default]
    Sgd,
    Adam,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateMode {
    /// Carry the hidden state across batches, detached (truncated BPTT).
    Detach,
    /// A fresh zero state for every batch.
    Reinit,
}

/// `clip_grad_norm: 1` or `clip_grad_norm: none`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Clip {
    Norm(f64),
    Off,
}

impl Serialize for Clip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Clip::Norm(v) => s.serialize_f64(*v),
            Clip::Off => s.serialize_str("none"),
        }
    }
}

impl schemars::JsonSchema for Clip {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Clip".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The largest global gradient norm (gradients are scaled down to it), or `none` for no clipping.",
            "anyOf": [
                { "type": "number", "exclusiveMinimum": 0 },
                { "const": "none" }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for Clip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Clip;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number (the max gradient norm) or `none`")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Clip, E> {
                Ok(Clip::Norm(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Clip, E> {
                Ok(Clip::Norm(v as f64))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Clip, E> {
                Ok(Clip::Norm(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, w: &str) -> Result<Clip, E> {
                match w {
                    "none" => Ok(Clip::Off),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(w), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Train {
    /// Passes over the training data.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// `sgd` (the book's) or `adam`.
    #[serde(default)]
    pub optimizer: OptimizerParam,
    /// L2 penalty added to every gradient (0: none).
    #[serde(default)]
    pub weight_decay: f64,
    /// The book's `grad_clipping(net, 1)` is the default.
    #[serde(default = "clip_default")]
    pub clip_grad_norm: Clip,
    /// Default: the book's choice — `detach` for sequential batches, `reinit` for random ones.
    #[serde(default)]
    pub state: Option<StateMode>,
    /// Minibatch size for series models (language models take theirs from `sample_batches`).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Generate text from `prefix` every this many epochs (and at the end); 0: only at the end.
    #[serde(default = "sample_every_default")]
    pub sample_every: usize,
    /// Text the periodic samples continue (language models).
    #[serde(default = "prefix_default")]
    pub prefix: String,
    /// Tokens per periodic sample.
    #[serde(default = "num_preds_default")]
    pub num_preds: usize,
    /// Save a checkpoint every this many epochs (0: never). Not part of the key.
    #[serde(default = "checkpoint_default", skip_serializing)]
    #[schemars(extend("default" = 10))]
    pub checkpoint_every: usize,
}

fn clip_default() -> Clip {
    Clip::Norm(1.0)
}
fn sample_every_default() -> usize {
    50
}
fn prefix_default() -> String {
    "time traveller".into()
}
fn num_preds_default() -> usize {
    50
}
fn checkpoint_default() -> usize {
    10
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricRow {
    pub epoch: usize,
    pub loss: f64,
    /// exp(loss) for language models; empty for series.
    pub perplexity: Option<f64>,
    pub grad_norm: f64,
    pub grad_norm_max: f64,
    /// Perplexity on the held-out part (`valid_fraction` of `sample_batches`) after the epoch;
    /// no column when nothing is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_perplexity: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpeedRow {
    pub epoch: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

/// Everything needed to continue a run exactly where it stopped.
#[derive(Serialize, Deserialize)]
struct Progress {
    epochs_done: usize,
    rng: ChaCha8Rng,
    metrics: Vec<MetricRow>,
    speed: Vec<SpeedRow>,
    samples: Vec<String>,
    diverged: Option<usize>,
}

/// Sums over the steps of one epoch.
#[derive(Default)]
struct EpochTotals {
    loss_sum: f64,
    count: usize,
    grad_sum: f64,
    grad_max: f64,
    steps: usize,
}

impl EpochTotals {
    fn add(&mut self, s: &nn::StepStats) {
        self.loss_sum += s.loss_sum;
        self.count += s.tokens;
        self.grad_sum += s.grad_norm as f64;
        self.grad_max = self.grad_max.max(s.grad_norm as f64);
        self.steps += 1;
    }
}

impl Progress {
    /// Record an epoch's metrics and speed; mark divergence. Returns the mean loss.
    fn record(&mut self, epoch: usize, t: &EpochTotals, secs: f64, perplexity: bool) -> f64 {
        let loss = t.loss_sum / t.count.max(1) as f64;
        let ppl = perplexity.then(|| loss.exp());
        self.metrics.push(MetricRow {
            epoch,
            loss,
            perplexity: ppl,
            grad_norm: t.grad_sum / t.steps.max(1) as f64,
            grad_norm_max: t.grad_max,
            valid_perplexity: None,
        });
        self.speed.push(SpeedRow {
            epoch,
            seconds: secs,
            tokens_per_s: t.count as f64 / secs.max(1e-9),
        });
        // The model computes in f32: a perplexity beyond f32's range (loss above ~88.7) has
        // overflowed there, even though it still fits the f64 it is reported in.
        if !loss.is_finite() || ppl.is_some_and(|p| !p.is_finite() || p > f32::MAX as f64) {
            self.diverged = Some(epoch);
        }
        self.epochs_done = epoch;
        loss
    }
}

/// The columns of a training's live rows (those of its `metrics.csv`, the held-out perplexity
/// always, empty when nothing is held out).
const LIVE_HEADER: &str = "epoch,loss,perplexity,grad_norm,grad_norm_max,valid_perplexity";

/// Show the epochs finished since the last call in the stage's live file (the results page
/// draws the curves so far from it while the run goes on). One small row per epoch.
fn show_live(ctx: &mut StageCtx, prog: &Progress) {
    let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    for m in prog.metrics.iter().skip(ctx.live_rows()) {
        let row = format!(
            "{},{},{},{},{},{}",
            m.epoch,
            m.loss,
            opt(m.perplexity),
            m.grad_norm,
            m.grad_norm_max,
            opt(m.valid_perplexity)
        );
        ctx.live_row(LIVE_HEADER, &row);
    }
}

impl Train {
    fn checkpoint_due(&self, epoch: usize) -> bool {
        self.checkpoint_every > 0
            && epoch.is_multiple_of(self.checkpoint_every)
            && epoch < self.epochs
    }

    fn optim_spec(&self) -> OptimSpec {
        let (lr, weight_decay) = (self.lr as f32, self.weight_decay as f32);
        match self.optimizer {
            OptimizerParam::Sgd => OptimSpec::Sgd { lr, weight_decay },
            OptimizerParam::Adam => OptimSpec::Adam {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            },
        }
    }

    fn clip(&self) -> Option<f32> {
        match self.clip_grad_norm {
            Clip::Norm(v) => Some(v as f32),
            Clip::Off => None,
        }
    }
}

impl Stage for Train {
    const KIND: &'static str = "train";
    const VERSION: u32 = 2;
    const ABOUT: &'static str = "Train a model: SGD or Adam, gradient clipping, detached or fresh state; metrics, samples, checkpoints";
    const ROLES: Roles = Roles::Fixed(&["model", "data"]);
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[
        ("model", &[Art::Model, Art::TrainedModel]),
        ("data", &[Art::Batches, Art::Features]),
    ];
    const OUTPUT: Option<Art> = Some(Art::TrainedModel);
    const STOCHASTIC: bool = true;
    const USES_DEVICE: bool = true;

    fn runtime_params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("checkpoint_every".into(), self.checkpoint_every.into());
        m
    }

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "epochs", self.epochs);
        super::require_at_most(issues, "epochs", self.epochs, super::bounds::EPOCHS);
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            issues.push(ParamIssue::new(
                "lr",
                format!("lr must be a positive number, found {}", self.lr),
                "e.g. `lr: 1` or `lr: 1e-3`",
            ));
        }
        if let Clip::Norm(v) = self.clip_grad_norm {
            if !(v > 0.0 && v.is_finite()) {
                issues.push(ParamIssue::new(
                    "clip_grad_norm",
                    format!("clip_grad_norm must be positive, found {v}"),
                    "e.g. `clip_grad_norm: 1`, or `none` to switch clipping off",
                ));
            }
        }
        if let Some(b) = self.batch_size {
            super::require_positive(issues, "batch_size", b);
        }
        if self.weight_decay < 0.0 {
            issues.push(ParamIssue::new(
                "weight_decay",
                "weight_decay must be ≥ 0",
                "e.g. `weight_decay: 1e-4`",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let (spec, mut model) = AnyModel::load(ctx.input("model")?, ctx.device)?;
        let mut opt = model.optimizer(&self.optim_spec());
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed);
        rng.set_stream(1); // independent of the stream that initialised the weights
        let mut prog = Progress {
            epochs_done: 0,
            rng,
            metrics: vec![],
            speed: vec![],
            samples: vec![],
            diverged: None,
        };
        match self.resume(ctx, &mut model, &mut opt) {
            Ok(Some(p)) => {
                ctx.note(format!(
                    "resuming from the checkpoint after epoch {}",
                    p.epochs_done
                ));
                // log.txt holds the samples of every epoch, those before the checkpoint too.
                ctx.restore_log(p.samples.iter().cloned());
                prog = p;
            }
            Ok(None) => {}
            Err(why) => ctx.note(format!("warning: {why}; training from scratch")),
        }
        ctx.write_json("spec.json", &spec)?;
        let data = ctx.input("data")?.to_path_buf();
        match (&spec, &mut model) {
            (ModelSpec::Lm(_), AnyModel::Lm(lm)) => {
                self.train_lm(ctx, lm, &mut opt, &data, &mut prog)?
            }
            (_, AnyModel::Mlp(_)) | (_, AnyModel::Series(_)) => {
                self.train_series(ctx, &mut model, &mut opt, &data, &mut prog)?
            }
            _ => bail!("model and spec disagree"),
        }
        model.save_weights(&ctx.out_path("model.safetensors"))?;
        ctx.write_csv("metrics.csv", prog.metrics.iter())?;
        ctx.write_csv("speed.csv", prog.speed.iter())?;
        if !prog.samples.is_empty() {
            ctx.write_text("samples.txt", &(prog.samples.join("\n") + "\n"))?;
        }
        let last = prog.metrics.last();
        ctx.summary("epochs_run", prog.metrics.len());
        ctx.summary("final_loss", last.map(|m| m.loss));
        if matches!(spec, ModelSpec::Lm(_)) {
            ctx.summary("final_perplexity", last.and_then(|m| m.perplexity));
            if let Some(v) = last.and_then(|m| m.valid_perplexity) {
                ctx.summary("final_valid_perplexity", v);
            }
        }
        ctx.summary("diverged", prog.diverged.is_some());
        ctx.summary("diverged_epoch", prog.diverged);
        if let Some(e) = prog.diverged {
            ctx.log(format!(
                "diverged at epoch {e}: the loss is no longer finite"
            ));
        }
        Ok(())
    }
}

impl Train {
    fn train_lm(
        &self,
        ctx: &mut StageCtx,
        lm: &mut nn::LanguageModel,
        opt: &mut nn::Optimizer,
        data: &Path,
        prog: &mut Progress,
    ) -> Result<()> {
        if self.batch_size.is_some() {
            bail!("`batch_size` is for series models; a language model takes its batches from its `sample_batches` input");
        }
        let sampler: SamplerSpec = crate::artifacts::Batches::sampler(data)
            .context("the `data` input of a language model must be a sample_batches stage")?;
        let full: Vec<u32> = crate::artifacts::Batches::corpus(data)?;
        let (corpus, valid) = sampler.split(&full);
        sampler.check_len(corpus.len())?;
        let vocab = crate::artifacts::Batches::vocab(data)?;
        crate::artifacts::VocabArtifact::copy_vocab(ctx, "data")?;
        let mode = self.state.unwrap_or(match sampler.strategy {
            Strategy::Sequential => StateMode::Detach,
            Strategy::Random | Strategy::RandomCircular => StateMode::Reinit,
        });
        let clip = self.clip();
        ctx.progress.start(self.epochs as u64, "epochs");
        ctx.progress.inc(prog.epochs_done as u64);
        show_live(ctx, prog);
        for epoch in prog.epochs_done + 1..=self.epochs {
            if prog.diverged.is_some() {
                break;
            }
            let t = Instant::now();
            let batches = sampler.epoch(corpus, &mut prog.rng);
            let mut state = lm.zero_state(sampler.batch_size);
            let mut totals = EpochTotals::default();
            for b in &batches {
                if mode == StateMode::Reinit {
                    state = lm.zero_state(b.batch);
                }
                let s = lm.train_step(opt, &b.x, &b.y, b.batch, b.steps, &mut state, clip)?;
                totals.add(&s);
                if !s.loss_sum.is_finite() {
                    break;
                }
            }
            let secs = t.elapsed().as_secs_f64();
            let ppl = prog.record(epoch, &totals, secs, true).exp();
            if !valid.is_empty() {
                let v = super::evaluate::valid_perplexity(lm, &sampler, &full)?;
                if let Some(m) = prog.metrics.last_mut() {
                    m.valid_perplexity = Some(v);
                }
            }
            show_live(ctx, prog);
            ctx.progress.set_message(&format!(
                "perplexity {ppl:.2}, {:.0} tokens/s",
                totals.count as f64 / secs.max(1e-9)
            ));
            let sample_now = epoch == self.epochs
                || prog.diverged.is_some()
                || (self.sample_every > 0 && epoch % self.sample_every == 0);
            if let (true, Some(v)) = (sample_now, &vocab) {
                if prog.diverged.is_none() {
                    let out = lm.predict(
                        &v.encode(&self.prefix),
                        self.num_preds,
                        Sampling::Greedy,
                        &mut prog.rng.clone(),
                    )?;
                    // 2 decimals; a diverging run's 1.5e20 in scientific notation, not 21 digits.
                    let shown = if ppl.abs() >= 1e6 {
                        format!("{ppl:.3e}")
                    } else {
                        format!("{ppl:.2}")
                    };
                    let line = format!("epoch {epoch} (perplexity {shown}): {}", v.decode(&out));
                    ctx.log(line.clone());
                    prog.samples.push(line);
                }
            }
            ctx.progress.inc(1);
            if self.checkpoint_due(epoch) {
                save_checkpoint(&ctx.checkpoints, &AnyRef::Lm(lm), opt, prog)?;
            }
        }
        ctx.progress.finish();
        Ok(())
    }

    fn train_series(
        &self,
        ctx: &mut StageCtx,
        model: &mut AnyModel,
        opt: &mut nn::Optimizer,
        data: &Path,
        prog: &mut Progress,
    ) -> Result<()> {
        let f: Features = crate::artifacts::FeaturesArtifact::read(data)
            .context("the `data` input of a series model must be a window_features stage")?;
        let batch = self.batch_size.unwrap_or(16);
        let mut order: Vec<usize> = (0..f.n_train).collect();
        ctx.progress.start(self.epochs as u64, "epochs");
        ctx.progress.inc(prog.epochs_done as u64);
        show_live(ctx, prog);
        for epoch in prog.epochs_done + 1..=self.epochs {
            if prog.diverged.is_some() {
                break;
            }
            let t = Instant::now();
            order.sort_unstable();
            order.shuffle(&mut prog.rng);
            let mut totals = EpochTotals::default();
            for chunk in order.chunks(batch) {
                let x: Vec<f32> = chunk
                    .iter()
                    .flat_map(|&i| f.window(i).iter().copied())
                    .collect();
                let y: Vec<f32> = chunk.iter().map(|&i| f.label(i)).collect();
                let s = match model {
                    AnyModel::Mlp(m) => m.train_step(opt, &x, &y, chunk.len())?,
                    AnyModel::Series(m) => m.train_step(opt, &x, &y, chunk.len())?,
                    AnyModel::Lm(_) => bail!("a language model cannot train on series windows"),
                };
                totals.add(&s);
            }
            let loss = prog.record(epoch, &totals, t.elapsed().as_secs_f64(), false);
            show_live(ctx, prog);
            ctx.progress.set_message(&format!("loss {loss:.4}"));
            ctx.progress.inc(1);
            if self.checkpoint_due(epoch) {
                save_checkpoint(&ctx.checkpoints, &AnyRef::Any(model), opt, prog)?;
            }
        }
        ctx.progress.finish();
        Ok(())
    }
}

enum AnyRef<'a> {
    Lm(&'a nn::LanguageModel),
    Any(&'a AnyModel),
}

impl AnyRef<'_> {
    fn save(&self, path: &Path) -> Result<()> {
        match self {
            AnyRef::Lm(m) => m.save_safetensors(path),
            AnyRef::Any(m) => m.save_weights(path),
        }
    }
}

const CHECKPOINT_FILES: [&str; 3] = ["model.safetensors", "optimizer.bin", "progress.json"];
const MANIFEST: &str = "manifest.json";

/// A checkpoint's record, written last: the digest of every file and the epoch it ends.
#[derive(Serialize, Deserialize)]
struct Manifest {
    epochs_done: usize,
    /// file name → blake3
    files: std::collections::BTreeMap<String, String>,
}

/// `<ckpt>.<what>~<tag>`: the folder of `dir`'s checkpoints that this process writes (`tmp`) or
/// sets aside (`old`). Named for the writer ([`crate::owner::Owner::tag`]), so that two writers
/// of one key (a take-over of a presumed-dead owner, two hosts) never write into one folder.
fn writer_sibling(dir: &Path, what: &str) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!("{name}.{what}~{}", crate::owner::Owner::me().tag()))
}

/// The folders beside `dir` that may hold a checkpoint of its key: `dir` itself, every writer's
/// `<ckpt>.tmp~<tag>` and `<ckpt>.old~<tag>`, and the `<ckpt>.tmp` and `<ckpt>.old` of older
/// seqpipes. With each, the writer its name tags (`None`: `dir`, or an untagged folder).
fn checkpoint_folders(dir: &Path) -> Vec<(PathBuf, Option<crate::owner::Owner>)> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let (tmp, old) = (format!("{name}.tmp"), format!("{name}.old"));
    let Ok(rd) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<(PathBuf, Option<crate::owner::Owner>)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let f = e.file_name().to_string_lossy().into_owned();
            if f == name || f == tmp || f == old {
                return Some((e.path(), None));
            }
            let (prefix, owner) = crate::owner::parse_tag_suffix(&f)?;
            (prefix == tmp || prefix == old).then(|| (e.path(), Some(owner)))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// Write a checkpoint beside the current one, then swap: a crash leaves one complete checkpoint.
fn save_checkpoint(dir: &Path, model: &AnyRef, opt: &nn::Optimizer, prog: &Progress) -> Result<()> {
    // Write a complete copy beside the current one (its manifest last), then swap them. A
    // kill at any point leaves at least one complete checkpoint among dir and the writers'
    // tmp~ and old~ folders; resuming takes the newest complete one.
    let tmp = writer_sibling(dir, "tmp");
    let old = writer_sibling(dir, "old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    model.save(&tmp.join("model.safetensors"))?;
    opt.save(&tmp.join("optimizer.bin"))?;
    crate::fsutil::write_synced(&tmp.join("progress.json"), &serde_json::to_vec(prog)?)?;
    let mut files = std::collections::BTreeMap::new();
    for f in CHECKPOINT_FILES {
        let p = tmp.join(f);
        std::fs::File::open(&p)?.sync_all()?;
        files.insert(f.to_string(), crate::fsutil::digest_file(&p)?);
    }
    let manifest = Manifest {
        epochs_done: prog.epochs_done,
        files,
    };
    crate::fsutil::write_synced(&tmp.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
    swap_into(&tmp, &old, dir)?;
    remove_dead_writers(dir);
    Ok(())
}

/// Put the complete checkpoint `tmp` in place of `dir`, setting the current one aside as `old`
/// until then. Another writer may swap at the same moment: a rename onto the folder it just
/// put in place fails, and is tried again.
fn swap_into(tmp: &Path, old: &Path, dir: &Path) -> Result<()> {
    for attempt in 0.. {
        if old.exists() {
            std::fs::remove_dir_all(old).with_context(|| format!("removing {}", old.display()))?;
        }
        match std::fs::rename(dir, old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("moving {} aside", dir.display())),
        }
        match std::fs::rename(tmp, dir) {
            Ok(()) => break,
            Err(_) if attempt < 8 && dir.exists() => {
                std::thread::sleep(std::time::Duration::from_millis(10 << attempt.min(4)))
            }
            Err(e) => return Err(e).with_context(|| format!("renaming into {}", dir.display())),
        }
    }
    let _ = std::fs::remove_dir_all(old);
    Ok(())
}

/// Remove what other writers of `dir`'s checkpoints left and no longer need, once this process
/// has saved its own: the folders of dead processes of this machine, and the untagged ones of
/// older seqpipes. Those of live writers, and of other hosts (which cannot be told), stay; the
/// whole folder goes when the stage commits.
fn remove_dead_writers(dir: &Path) {
    for (d, owner) in checkpoint_folders(dir) {
        let gone = match &owner {
            Some(o) => crate::owner::leftover_is_dead(o),
            None => d != dir,
        };
        if gone {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

/// The folders of `dir`'s checkpoints that have a manifest (a checkpoint without one is
/// partial and never counts), the newest first: by the epoch their manifest names, `dir` first
/// among equals. An unreadable manifest sorts last (its check then says why).
fn newest_first(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(Option<usize>, bool, PathBuf)> = checkpoint_folders(dir)
        .into_iter()
        .filter(|(d, _)| d.join(MANIFEST).exists())
        .map(|(d, _)| {
            let epochs = crate::context::read_json::<Manifest>(&d.join(MANIFEST))
                .ok()
                .map(|m| m.epochs_done);
            (epochs, d != dir, d)
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    found.into_iter().map(|(_, _, d)| d).collect()
}

impl Train {
    /// The newest checkpoint that passes every check, applied all or nothing: weights,
    /// optimizer state, RNG and epoch counter. `Ok(None)`: there is none (a half-written one,
    /// without its manifest, does not count). `Err`: there were checkpoints and each failed a
    /// check (the text says which and why); the model and optimizer are then untouched.
    fn resume(
        &self,
        ctx: &StageCtx,
        model: &mut AnyModel,
        opt: &mut nn::Optimizer,
    ) -> std::result::Result<Option<Progress>, String> {
        let mut failures = Vec::new();
        for d in newest_first(&ctx.checkpoints) {
            match self.try_checkpoint(ctx, &d) {
                Ok((m, o, p)) => {
                    *model = m;
                    *opt = o;
                    return Ok(Some(p));
                }
                Err(why) => failures.push(format!(
                    "checkpoint {} failed its check ({why})",
                    d.file_name().unwrap_or_default().to_string_lossy()
                )),
            }
        }
        if failures.is_empty() {
            Ok(None)
        } else {
            Err(failures.join("; "))
        }
    }

    /// Verify one checkpoint and load it into a fresh model and optimizer.
    fn try_checkpoint(
        &self,
        ctx: &StageCtx,
        d: &Path,
    ) -> std::result::Result<(AnyModel, nn::Optimizer, Progress), String> {
        let m: Manifest =
            crate::context::read_json(&d.join(MANIFEST)).map_err(|e| format!("{e:#}"))?;
        for f in CHECKPOINT_FILES {
            let want = m
                .files
                .get(f)
                .ok_or(format!("its manifest does not list {f}"))?;
            let got = crate::fsutil::digest_file(&d.join(f)).map_err(|e| format!("{f}: {e}"))?;
            if &got != want {
                return Err(format!("{f} does not match its digest"));
            }
        }
        let prog: Progress =
            crate::context::read_json(&d.join("progress.json")).map_err(|e| format!("{e:#}"))?;
        if prog.epochs_done != m.epochs_done {
            return Err("its progress and manifest disagree on the epoch".into());
        }
        if prog.epochs_done > self.epochs {
            return Err(format!(
                "it is after epoch {}, beyond the {} epochs configured",
                prog.epochs_done, self.epochs
            ));
        }
        if prog.metrics.len() != prog.epochs_done || prog.speed.len() != prog.epochs_done {
            return Err("its metrics do not cover the epochs it claims".into());
        }
        let input = ctx.input("model").map_err(|e| e.to_string())?;
        let (_, mut model) = AnyModel::load(input, ctx.device).map_err(|e| format!("{e:#}"))?;
        model
            .load_weights(&d.join("model.safetensors"))
            .map_err(|e| format!("weights: {e:#}"))?;
        let mut opt = model.optimizer(&self.optim_spec());
        opt.load(&d.join("optimizer.bin"))
            .map_err(|e| format!("optimizer state: {e:#}"))?;
        Ok((model, opt, prog))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifacts::Art;

    fn header<T: Serialize>(row: &T) -> Vec<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.serialize(row).unwrap();
        let bytes = w.into_inner().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let first = text.lines().next().unwrap().to_string();
        first.split(',').map(String::from).collect()
    }

    /// The columns the analyzer checks plots against are the columns `train` writes.
    #[test]
    fn declared_csv_columns_are_the_written_ones() {
        let m = MetricRow {
            epoch: 1,
            loss: 1.0,
            perplexity: Some(2.0),
            grad_norm: 0.5,
            grad_norm_max: 0.7,
            valid_perplexity: Some(3.0),
        };
        let s = SpeedRow {
            epoch: 1,
            seconds: 0.1,
            tokens_per_s: 10.0,
        };
        for (file, cols) in [("metrics.csv", header(&m)), ("speed.csv", header(&s))] {
            let declared = Art::TrainedModel.csv_columns(file).unwrap();
            assert_eq!(cols, declared, "{file}");
        }
    }

    fn fake_checkpoint(d: &Path, epochs: Option<usize>) {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("progress.json"), "{}").unwrap();
        if let Some(e) = epochs {
            let m = Manifest {
                epochs_done: e,
                files: Default::default(),
            };
            std::fs::write(d.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        }
    }

    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn checkpoint_writers_use_their_own_folders_and_resume_takes_the_newest_complete() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("ckpt");
        let me = crate::owner::Owner::me();
        let tmp = writer_sibling(&dir, "tmp");
        assert_eq!(
            tmp.file_name().unwrap().to_string_lossy(),
            format!("ckpt.tmp~{}", me.tag())
        );
        let dead = crate::owner::Owner {
            pid: dead_pid(),
            ..me.clone()
        };
        let other_host = crate::owner::Owner {
            host: "elsewhere".into(),
            ..me.clone()
        };
        let theirs = t.path().join(format!("ckpt.tmp~{}", dead.tag()));
        let remote = t.path().join(format!("ckpt.old~{}", other_host.tag()));
        let partial = t.path().join(format!("ckpt.tmp~{}", other_host.tag()));
        fake_checkpoint(&dir, Some(4));
        fake_checkpoint(&theirs, Some(6)); // complete, not swapped in when its writer died
        fake_checkpoint(&remote, Some(4));
        fake_checkpoint(&partial, None); // being written: never a candidate
        fake_checkpoint(&t.path().join("ckpt.old"), Some(2)); // an older seqpipe's
        fake_checkpoint(&t.path().join("unrelated~x~1"), Some(9));
        let order = newest_first(&dir);
        assert_eq!(order[..2], [theirs.clone(), dir.clone()], "{order:?}");
        assert_eq!(order.len(), 4, "{order:?}");
        assert!(!order.contains(&partial));

        // This writer saves after epoch 7: it swaps in, and removes what dead writers left.
        fake_checkpoint(&tmp, Some(7));
        swap_into(&tmp, &writer_sibling(&dir, "old"), &dir).unwrap();
        remove_dead_writers(&dir);
        assert!(!tmp.exists() && !writer_sibling(&dir, "old").exists());
        assert!(!theirs.exists() && !t.path().join("ckpt.old").exists());
        assert!(remote.exists() && partial.exists(), "another host's stay");
        assert_eq!(newest_first(&dir)[0], dir);
        let m: Manifest = crate::context::read_json(&dir.join(MANIFEST)).unwrap();
        assert_eq!(m.epochs_done, 7);
    }
}
