//! Stage kinds. Each kind is a typed params struct (unknown fields rejected, defaults filled in)
//! plus a `run` that reads its inputs' artifacts and writes its own. The registry below is the
//! list the pipeline analyzer checks `kind:` against.

mod analysis;
pub mod build_vocab;
mod byte_simd;
mod encode;
mod evaluate;
mod fields;
mod generate;
pub mod load_corpus;
pub mod model;
mod ngram_generate;
mod ngram_stats;
pub mod plot_stage;
mod report;
mod sample_batches;
pub mod series;
mod summary_table;
pub mod tokenize;
mod toy_sequence;
mod train;

pub use build_vocab::Vocab;
pub use sample_batches::{partition_random, partition_sequential, Batch, SamplerSpec, Strategy};

use crate::artifacts::Art;
use crate::context::StageCtx;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

/// A problem with one param, found while checking a stage's params.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamIssue {
    /// Key path below `params`, e.g. `min_freq`.
    pub key: String,
    pub message: String,
    pub help: Option<String>,
}

impl ParamIssue {
    pub fn new(key: &str, message: impl Into<String>, help: impl Into<String>) -> Self {
        ParamIssue {
            key: key.to_string(),
            message: message.into(),
            help: Some(help.into()),
        }
    }
}

/// Which input roles a kind takes.
#[derive(Debug, Clone, Copy)]
pub enum Roles {
    /// Exactly these roles, all required.
    Fixed(&'static [&'static str]),
    /// Any number (at least one) of inputs under any role names.
    AnyNonEmpty,
}

/// A stage kind: its params struct is the kind.
pub trait Stage:
    Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static
{
    const KIND: &'static str;
    /// Bump when the output for the same params changes: it is part of every key.
    const VERSION: u32;
    const ABOUT: &'static str;
    const ROLES: Roles;
    /// The artifact types each input role accepts (kinds with `Roles::AnyNonEmpty` take any
    /// and leave this empty). The analyzer checks the wiring against it before anything runs.
    const INPUT_TYPES: &'static [(&'static str, &'static [Art])] = &[];
    /// The artifact type this kind produces (every registered kind declares one; a test checks).
    const OUTPUT: Option<Art> = None;
    /// Whether the output depends on the seed (then the seed is part of the key).
    const STOCHASTIC: bool = false;
    /// Whether it computes on the pipeline's device (then the device is part of the key).
    const USES_DEVICE: bool = false;
    fn validate(&self, _issues: &mut Vec<ParamIssue>) {}
    /// Project-relative paths of the files this stage reads; their contents are part of the key.
    fn files(&self) -> Vec<String> {
        Vec::new()
    }
    /// Params that steer a run but are not part of the key (and not in the canonical params),
    /// such as `checkpoint_every`: a job description carries them too.
    fn runtime_params(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    fn run(&self, ctx: &mut StageCtx) -> anyhow::Result<()>;
}

/// A stage with its params, type-erased for the executor.
pub trait DynStage: Send + Sync {
    fn canonical_params(&self) -> serde_json::Value;
    /// Every param, those outside the key included: what a job description carries.
    fn job_params(&self) -> serde_json::Map<String, serde_json::Value>;
    fn files(&self) -> Vec<String>;
    fn run(&self, ctx: &mut StageCtx) -> anyhow::Result<()>;
}

impl<S: Stage> DynStage for S {
    fn canonical_params(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("params serialize to JSON")
    }
    fn job_params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = match self.canonical_params() {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        m.extend(Stage::runtime_params(self));
        m
    }
    fn files(&self) -> Vec<String> {
        Stage::files(self)
    }
    fn run(&self, ctx: &mut StageCtx) -> anyhow::Result<()> {
        Stage::run(self, ctx)
    }
}

/// What the analyzer knows of a kind.
pub struct KindInfo {
    pub name: &'static str,
    pub version: u32,
    pub about: &'static str,
    pub roles: Roles,
    /// The artifact types each input role accepts (empty: any).
    pub input_types: &'static [(&'static str, &'static [Art])],
    /// The artifact type it produces.
    pub output: Option<Art>,
    pub stochastic: bool,
    pub uses_device: bool,
    pub params: &'static [&'static str],
    /// The JSON Schema of the params (a `$ref` into the generator's definitions).
    pub params_schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    pub parse: fn(
        &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<dyn DynStage>, Vec<ParamIssue>>,
}

impl std::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

fn kind<S: Stage>() -> KindInfo {
    KindInfo {
        name: S::KIND,
        version: S::VERSION,
        about: S::ABOUT,
        roles: S::ROLES,
        input_types: S::INPUT_TYPES,
        output: S::OUTPUT,
        stochastic: S::STOCHASTIC,
        uses_device: S::USES_DEVICE,
        params: fields::struct_fields::<S>(),
        params_schema: |g| g.subschema_for::<S>(),
        parse: parse_params::<S>,
    }
}

/// Unknown params first (all of them, with suggestions), then types, then value checks.
fn parse_params<S: Stage>(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<Arc<dyn DynStage>, Vec<ParamIssue>> {
    let fields = fields::struct_fields::<S>();
    let mut issues: Vec<ParamIssue> = map
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .map(|k| ParamIssue {
            key: k.clone(),
            message: format!("unknown param `{k}` for kind `{}`", S::KIND),
            help: Some(crate::diagnostic::suggest(k, fields, "params")),
        })
        .collect();
    if !issues.is_empty() {
        return Err(issues);
    }
    let value = serde_json::Value::Object(map.clone());
    let parsed: S = match crate::config::de::from_value(&value) {
        Ok(p) => p,
        Err(issue) => {
            let (message, mut help) = issue.explain("param");
            if let crate::config::de::Problem::Missing { field } = &issue.problem {
                help = Some(format!("add `{field}:` under `params`"));
            }
            let key = issue.key().to_string();
            return Err(vec![ParamIssue { key, message, help }]);
        }
    };
    parsed.validate(&mut issues);
    if issues.is_empty() {
        Ok(Arc::new(parsed))
    } else {
        Err(issues)
    }
}

/// Every stage kind seqpipe knows.
pub fn registry() -> &'static [KindInfo] {
    use std::sync::OnceLock;
    static REG: OnceLock<Vec<KindInfo>> = OnceLock::new();
    REG.get_or_init(|| {
        vec![
            kind::<load_corpus::LoadCorpus>(),
            kind::<tokenize::Tokenize>(),
            kind::<build_vocab::BuildVocab>(),
            kind::<encode::Encode>(),
            kind::<toy_sequence::ToySequence>(),
            kind::<sample_batches::SampleBatches>(),
            kind::<ngram_stats::NgramStats>(),
            kind::<summary_table::SummaryTable>(),
            kind::<series::SyntheticSeries>(),
            kind::<series::WindowFeatures>(),
            // build_model's file belongs to the model side; its types are declared here.
            KindInfo {
                input_types: &[("data", &[Art::Vocab, Art::Batches, Art::Features])],
                output: Some(Art::Model),
                ..kind::<model::BuildModel>()
            },
            kind::<train::Train>(),
            kind::<evaluate::Evaluate>(),
            kind::<generate::Generate>(),
            kind::<report::Report>(),
            kind::<plot_stage::Plot>(),
            kind::<ngram_generate::NgramGenerate>(),
            kind::<analysis::RnnShapes>(),
            kind::<analysis::MatrixPowers>(),
            kind::<analysis::HiddenGrads>(),
        ]
    })
}

pub fn find_kind(name: &str) -> Option<&'static KindInfo> {
    registry().iter().find(|k| k.name == name)
}

impl KindInfo {
    /// The artifact types `role` accepts; `None` when any type will do.
    pub fn accepts(&self, role: &str) -> Option<&'static [Art]> {
        self.input_types
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, t)| *t)
    }
}

/// Helpers for `validate`.
pub(crate) fn require_positive(issues: &mut Vec<ParamIssue>, key: &str, v: usize) {
    if v == 0 {
        issues.push(ParamIssue::new(
            key,
            format!("param `{key}` must be at least 1, found 0"),
            format!("set `{key}` to a positive integer"),
        ));
    }
}

/// Upper bounds on sizes, checked at analysis so that an impossible run stops before anything
/// runs (documented in the README).
pub(crate) mod bounds {
    pub const EPOCHS: usize = 10_000_000;
    pub const HIDDEN: usize = 65_536;
    pub const LAYERS: usize = 1_000;
    pub const EMBEDDING: usize = 65_536;
}

/// `key` must be at most `max`.
pub(crate) fn require_at_most(issues: &mut Vec<ParamIssue>, key: &str, v: usize, max: usize) {
    if v > max {
        issues.push(ParamIssue::new(
            key,
            format!("`{key}: {v}` is beyond the largest value seqpipe accepts, {max}"),
            format!("set `{key}` to {max} or less"),
        ));
    }
}

/// The machine's memory in bytes (`MemTotal` of /proc/meminfo), if it can be read.
pub(crate) fn machine_memory() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = m
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// "1.5 GB", "24 GB", "4.0 TB".
pub(crate) fn human_bytes(b: f64) -> String {
    if b >= 1e12 {
        format!("{:.1} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else {
        format!("{:.0} MB", b / 1e6)
    }
}

#[cfg(test)]
mod type_tests {
    use super::*;

    #[test]
    fn every_kind_declares_its_artifact_types() {
        for k in registry() {
            assert!(k.output.is_some(), "`{}` declares no output type", k.name);
            if let Roles::Fixed(roles) = k.roles {
                for r in roles {
                    assert!(
                        k.accepts(r).is_some_and(|t| !t.is_empty()),
                        "`{}` declares no type for its input `{r}`",
                        k.name
                    );
                }
                for (r, _) in k.input_types {
                    assert!(
                        roles.contains(r),
                        "`{}` types an unknown role `{r}`",
                        k.name
                    );
                }
            } else {
                assert!(k.input_types.is_empty(), "`{}` takes any input", k.name);
            }
        }
    }
}
