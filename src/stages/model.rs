//! `build_model`, and the glue between stage artifacts and `crate::nn`: a model is `spec.json`
//! (what to build) plus `model.safetensors` (its weights, PyTorch names and layouts).

use super::{ParamIssue, Roles, Stage};
use crate::context::StageCtx;
use crate::nn::{
    self, Activation, CellKind, InputMode, LanguageModel, LmSpec, Mlp, Optimizer, SeriesRnn,
};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    RnnScratch,
    Rnn,
    Gru,
    Lstm,
    Mlp,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Hidden {
    One(usize),
    Layers(Vec<usize>),
}

impl<'de> Deserialize<'de> for Hidden {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Hidden;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive integer (units per layer), or a list of them for `arch: mlp`, e.g. `hidden: 256` or `hidden: [10, 10]`")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Hidden, E> {
                usize::try_from(n)
                    .map(Hidden::One)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Hidden, A::Error> {
                let mut v = Vec::new();
                while let Some(n) = a.next_element::<usize>()? {
                    v.push(n);
                }
                Ok(Hidden::Layers(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputParam {
    OneHot,
    Embedding(usize),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActParam {
    Tanh,
    Relu,
}

impl From<ActParam> for Activation {
    fn from(a: ActParam) -> Self {
        match a {
            ActParam::Tanh => Activation::Tanh,
            ActParam::Relu => Activation::Relu,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildModel {
    /// The network: `rnn_scratch` (the book's from-scratch RNN), `rnn`, `gru`, `lstm` (PyTorch-style layers), or `mlp` (for series windows).
    pub arch: Arch,
    /// Hidden units: one number for recurrent models, a list of layer widths for `mlp`.
    pub hidden: Hidden,
    /// Stacked recurrent layers (`rnn`, `gru`, `lstm`).
    #[serde(default = "one")]
    pub num_layers: usize,
    /// How tokens enter the network: `one_hot` vectors, or a learned `{ embedding: D }` of D dimensions.
    #[serde(default = "one_hot")]
    pub input: InputParam,
    /// Nonlinearity of the RNN cell (`rnn_scratch`, `rnn`) or of the MLP's hidden layers.
    #[serde(default = "tanh")]
    pub activation: ActParam,
}

fn one() -> usize {
    1
}
fn one_hot() -> InputParam {
    InputParam::OneHot
}
fn tanh() -> ActParam {
    ActParam::Tanh
}

/// What `spec.json` holds: enough to rebuild the model before loading its weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ModelSpec {
    Lm(LmSpec),
    Mlp {
        input: usize,
        hidden: Vec<usize>,
        activation: Activation,
    },
    Series {
        hidden: usize,
        cell: CellKind,
    },
}

pub enum AnyModel {
    Lm(LanguageModel),
    Mlp(Mlp),
    Series(SeriesRnn),
}

impl AnyModel {
    pub fn create(spec: &ModelSpec, device: nn::DeviceKind, seed: u64) -> Result<Self> {
        let d = device;
        Ok(match spec {
            ModelSpec::Lm(s) => AnyModel::Lm(LanguageModel::new(s, d, seed)?),
            ModelSpec::Mlp {
                input,
                hidden,
                activation,
            } => AnyModel::Mlp(Mlp::new(*input, hidden, *activation, d, seed)?),
            ModelSpec::Series { hidden, cell } => {
                AnyModel::Series(SeriesRnn::new(*hidden, *cell, d, seed)?)
            }
        })
    }

    /// Rebuild a model from an artifact folder (`spec.json` + `model.safetensors`).
    pub fn load(dir: &Path, device: nn::DeviceKind) -> Result<(ModelSpec, Self)> {
        let spec: ModelSpec = crate::context::read_json(&dir.join("spec.json"))
            .context("this input is not a model (no spec.json)")?;
        let mut m = Self::create(&spec, device, 0)?;
        m.load_weights(&dir.join("model.safetensors"))?;
        Ok((spec, m))
    }

    /// The model behind the enum, for what every kind of model offers.
    pub fn model(&self) -> &dyn nn::Model {
        match self {
            AnyModel::Lm(m) => m,
            AnyModel::Mlp(m) => m,
            AnyModel::Series(m) => m,
        }
    }

    pub fn model_mut(&mut self) -> &mut dyn nn::Model {
        match self {
            AnyModel::Lm(m) => m,
            AnyModel::Mlp(m) => m,
            AnyModel::Series(m) => m,
        }
    }

    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        self.model_mut().load_safetensors(path)
    }

    pub fn save_weights(&self, path: &Path) -> Result<()> {
        self.model().save_safetensors(path)
    }

    pub fn num_params(&self) -> usize {
        self.model().num_params()
    }

    pub fn optimizer(&self, spec: &nn::OptimSpec) -> Optimizer {
        Optimizer::new(spec, self.model())
    }

    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.model().named_tensors()
    }
}

/// What a model's data input offers: a vocabulary (language models) or windows of a series.
pub enum DataShape {
    Vocab(usize),
    Windows(usize),
}

pub fn data_shape(dir: &Path) -> Result<DataShape> {
    if dir.join("vocab.csv").exists() {
        let v = super::build_vocab::Vocab::read_csv(&dir.join("vocab.csv"))?;
        return Ok(DataShape::Vocab(v.len()));
    }
    if dir.join("features.json").exists() {
        let f: super::series::Features = crate::context::read_json(&dir.join("features.json"))?;
        return Ok(DataShape::Windows(f.tau));
    }
    bail!("the `data` input has neither a vocabulary (vocab.csv) nor series windows (features.json); use a build_vocab, sample_batches or window_features stage")
}

impl BuildModel {
    fn cell(&self) -> Option<CellKind> {
        match self.arch {
            Arch::RnnScratch => Some(CellKind::RnnScratch),
            Arch::Rnn => Some(CellKind::Rnn),
            Arch::Gru => Some(CellKind::Gru),
            Arch::Lstm => Some(CellKind::Lstm),
            Arch::Mlp => None,
        }
    }

    pub fn spec(&self, data: &DataShape) -> Result<ModelSpec> {
        Ok(match (self.cell(), data, &self.hidden) {
            (Some(cell), DataShape::Vocab(vocab), Hidden::One(h)) => ModelSpec::Lm(LmSpec {
                cell,
                vocab: *vocab,
                hidden: *h,
                num_layers: self.num_layers,
                input: match self.input {
                    InputParam::OneHot => InputMode::OneHot,
                    InputParam::Embedding(d) => InputMode::Embedding(d),
                },
                activation: self.activation.into(),
            }),
            (Some(cell), DataShape::Windows(_), Hidden::One(h)) => {
                ModelSpec::Series { hidden: *h, cell }
            }
            (None, DataShape::Windows(tau), hidden) => ModelSpec::Mlp {
                input: *tau,
                hidden: match hidden {
                    Hidden::One(h) => vec![*h],
                    Hidden::Layers(l) => l.clone(),
                },
                activation: self.activation.into(),
            },
            (None, DataShape::Vocab(_), _) => {
                bail!("arch `mlp` models a series: give it a window_features stage as `data`")
            }
            (Some(_), _, Hidden::Layers(_)) => {
                bail!("recurrent models take one `hidden` size, not a list")
            }
        })
    }
}

impl BuildModel {
    /// Bounds, and the recurrent weights' memory against the machine's, before anything runs.
    /// The vocabulary is not known yet: the estimate counts the hidden-to-hidden and
    /// layer-to-layer weights (the part that grows with the square of `hidden`), with their
    /// gradients and optimizer state (4 copies of f32).
    fn check_size(&self, issues: &mut Vec<ParamIssue>) {
        use super::bounds;
        super::require_at_most(issues, "num_layers", self.num_layers, bounds::LAYERS);
        let widths: Vec<usize> = match &self.hidden {
            Hidden::One(h) => vec![*h],
            Hidden::Layers(l) => l.clone(),
        };
        for &h in &widths {
            super::require_at_most(issues, "hidden", h, bounds::HIDDEN);
        }
        if let InputParam::Embedding(e) = self.input {
            super::require_at_most(issues, "input", e, bounds::EMBEDDING);
        }
        let gates = match self.arch {
            Arch::Gru => 3.0,
            Arch::Lstm => 4.0,
            _ => 1.0,
        };
        let h = *widths.iter().max().unwrap_or(&0) as f64;
        let layers = self.num_layers.max(1) as f64;
        let bytes = gates * (2.0 * layers) * h * h * 4.0 * 4.0;
        if let Some(mem) = super::machine_memory() {
            if bytes > mem as f64 {
                issues.push(ParamIssue::new(
                    "hidden",
                    format!(
                        "this model needs at least {} for its recurrent weights, their gradients and optimizer state, more than this machine's {}",
                        super::human_bytes(bytes),
                        super::human_bytes(mem as f64)
                    ),
                    "use fewer hidden units or layers (the book's models use 256 to 512 units)",
                ));
            }
        }
    }
}

impl Stage for BuildModel {
    const KIND: &'static str = "build_model";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "Initialise a model (rnn_scratch, rnn, gru, lstm, mlp) sized from its data input";
    const ROLES: Roles = Roles::Fixed(&["data"]);
    const STOCHASTIC: bool = true;
    const USES_DEVICE: bool = true;

    fn validate(&self, issues: &mut Vec<ParamIssue>) {
        super::require_positive(issues, "num_layers", self.num_layers);
        self.check_size(issues);
        match &self.hidden {
            Hidden::One(h) => super::require_positive(issues, "hidden", *h),
            Hidden::Layers(l) if l.is_empty() || l.contains(&0) => issues.push(ParamIssue::new(
                "hidden",
                "every hidden layer needs at least one unit",
                "e.g. `hidden: [10, 10]`",
            )),
            Hidden::Layers(_) if self.arch != Arch::Mlp => issues.push(ParamIssue::new(
                "hidden",
                "a list of layer widths is for `arch: mlp` only",
                "give one number, e.g. `hidden: 256`; stack layers with `num_layers`",
            )),
            Hidden::Layers(_) => {}
        }
        if self.arch == Arch::RnnScratch
            && (self.num_layers != 1 || self.input != InputParam::OneHot)
        {
            issues.push(ParamIssue::new(
                "arch",
                "the from-scratch RNN has one layer and one-hot inputs",
                "use `arch: rnn` for stacks or embeddings",
            ));
        }
        if let InputParam::Embedding(0) = self.input {
            issues.push(ParamIssue::new(
                "input",
                "embedding size must be at least 1",
                "e.g. `input: { embedding: 32 }`",
            ));
        }
    }

    fn run(&self, ctx: &mut StageCtx) -> Result<()> {
        let shape = data_shape(ctx.input("data")?)?;
        let spec = self.spec(&shape)?;
        let model = AnyModel::create(&spec, ctx.device, ctx.seed)?;
        model.save_weights(&ctx.out_path("model.safetensors"))?;
        ctx.write_json("spec.json", &spec)?;
        ctx.summary("params", model.num_params());
        ctx.log(format!("{} parameters", model.num_params()));
        Ok(())
    }
}
