//! The pipeline file, described once: these types are what the file is read into
//! ([`super::raw`]) and what its JSON Schema is derived from ([`crate::schema`], with schemars).
//! Doc comments here are the schema's descriptions. What depends on the stage registry (the kind
//! names, each kind's params, inputs and matrix axes) is added to the schema by `schema.rs`.

use crate::launcher_setting::LauncherKind;
use crate::resources::Resources;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// A seqpipe pipeline file: named stages of typed kinds, cached by key.
// `S` is how a stage is read: `StageSpec` for the schema, a JSON value when the file is read
// (each stage is then read on its own, so that every bad stage is reported, not just the first).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "seqpipe pipeline")]
pub struct PipelineSpec<S = StageSpec> {
    /// Names the output folder outputs/<name>/.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Every random choice derives from it; part of the keys of random stages.
    #[serde(default)]
    #[schemars(default = "zero")]
    pub seed: Option<u64>,
    /// Device of model stages (`cuda` needs the `cuda` build; `auto` is cuda when built with it).
    #[serde(default)]
    #[schemars(with = "Option<DeviceName>")]
    pub device: Option<String>,
    /// How stages are executed: a kind, or `{ kind: ... }` with the kind's options.
    #[serde(default)]
    #[schemars(with = "Option<ExecutorSpec>")]
    pub executor: Option<Value>,
    /// What every stage asks of a cluster, unless it says otherwise.
    #[serde(default)]
    #[schemars(with = "Option<Resources>")]
    pub resources: Option<Value>,
    /// The stages by name (letters, digits, `_` and `-`; the name becomes a folder).
    #[schemars(extend("propertyNames" = { "pattern": "^[A-Za-z0-9_-]+$" }))]
    pub stages: IndexMap<String, S>,
}

fn zero() -> u64 {
    0
}

/// One stage: a kind, its inputs (upstream stages) and its params.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage kind (`seqpipe kinds` lists them).
    pub kind: String,
    /// Free text; not part of the key.
    #[serde(default)]
    pub description: Option<String>,
    /// Upstream stages: a map role → stage name, or a list of stage names (for tables, plots and
    /// reports).
    #[serde(default)]
    pub inputs: Option<Inputs>,
    /// The kind's params (unknown ones are errors).
    #[serde(default)]
    pub params: Option<Map<String, Value>>,
    /// Sweep: param → the values to try; the stage and everything downstream is repeated per
    /// value.
    #[serde(default)]
    pub matrix: Option<IndexMap<String, Axis>>,
    /// What this stage asks of a cluster (`--executor slurm`); overrides the pipeline's.
    #[serde(default)]
    #[schemars(with = "Option<Resources>")]
    pub resources: Option<Value>,
}

/// The device of model stages.
#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum DeviceName {
    Cpu,
    Cuda,
    Auto,
}

/// `executor:` as written: a kind, or a mapping with the kind and its options.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ExecutorSpec {
    Kind(LauncherKind),
    WithOptions(ExecutorOptions),
}

/// An executor kind and its options.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ExecutorOptions {
    kind: LauncherKind,
    /// slurm: seconds between two squeue polls (default 2).
    #[schemars(range(min = 0.001))]
    poll: Option<f64>,
    /// slurm: submit quick stages (text, tables, plots) as jobs too.
    submit_all: Option<bool>,
}

/// `inputs:` as written: role → stage, or a list of stages (each its own role).
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum Inputs {
    Roles(IndexMap<String, String>),
    List(Vec<String>),
}

impl Inputs {
    /// (role, upstream stage), in file order.
    pub fn pairs(self) -> Vec<(String, String)> {
        match self {
            Inputs::Roles(m) => m.into_iter().collect(),
            Inputs::List(l) => l.into_iter().map(|s| (s.clone(), s)).collect(),
        }
    }
}

pub const INPUTS_EXPECTED: &str =
    "a mapping of role to stage, e.g. `{ corpus: load }`, or a list of stages, e.g. `[a, b]`";

impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Inputs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(INPUTS_EXPECTED)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Inputs, A::Error> {
                let mut out = IndexMap::new();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    out.insert(k, v);
                }
                Ok(Inputs::Roles(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Inputs, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<String>()? {
                    out.push(v);
                }
                Ok(Inputs::List(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Inputs, E> {
                Ok(Inputs::List(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// One axis of a `matrix:`: a non-empty list of values.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(extend("minItems" = 1))]
pub struct Axis(pub Vec<Value>);

pub const AXIS_EXPECTED: &str = "a non-empty list of values, e.g. `[0.1, 1, 10]`";

impl<'de> Deserialize<'de> for Axis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Axis;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(AXIS_EXPECTED)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Axis, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Value>()? {
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(Axis(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The names of a spec struct's fields, from the type itself.
pub fn fields_of<T: JsonSchema>() -> Vec<String> {
    let schema = schemars::schema_for!(T);
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_come_from_the_types() {
        assert_eq!(
            fields_of::<PipelineSpec>(),
            [
                "name",
                "description",
                "seed",
                "device",
                "executor",
                "resources",
                "stages"
            ]
        );
        assert_eq!(
            fields_of::<StageSpec>(),
            [
                "kind",
                "description",
                "inputs",
                "params",
                "matrix",
                "resources"
            ]
        );
    }
}
