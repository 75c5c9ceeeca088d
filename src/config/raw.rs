//! A pipeline file read into plain values with source positions: the text is parsed once
//! ([`super::tree`]), what JSON cannot hold is refused on the tree (keys that are not names, keys
//! written twice, `.nan`), and the rest is read into the spec types ([`super::spec`]) through
//! [`super::de`], whose errors are data. No error message is read back.

use super::de::{self as typed, describe, Issue, Problem};
use super::locator::Locator;
use super::spec::{PipelineSpec, StageSpec};
use super::tree::{self, Node, ParseError, Pos, Value as T};
use crate::diagnostic::{Diagnostic, PipelineError};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A parsed pipeline file: plain values, not yet checked against the stage kinds.
#[derive(Debug, Clone)]
pub struct RawPipeline {
    pub file: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub seed: Option<u64>,
    pub device: Option<String>,
    /// `executor: kind` or `executor: { kind: ..., <options> }`, as written.
    pub executor: Option<RawExecutor>,
    /// Pipeline-wide `resources:` (a mapping, checked by the analyzer).
    pub resources: Option<serde_json::Value>,
    pub stages: Vec<RawStage>,
    pub locator: Locator,
}

/// The `executor:` field: a kind and its options.
#[derive(Debug, Clone)]
pub struct RawExecutor {
    pub kind: String,
    pub options: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct RawStage {
    pub name: String,
    /// The stage as written in the file (differs from `name` for sweep variants).
    pub origin: String,
    pub kind: String,
    pub description: Option<String>,
    /// (role, upstream stage name), in file order.
    pub inputs: Vec<(String, String)>,
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Sweep axes: param name → values.
    pub matrix: Vec<(String, Vec<serde_json::Value>)>,
    /// The stage's `resources:` (a mapping, checked by the analyzer).
    pub resources: Option<serde_json::Value>,
    /// Values written under `params:` for params its `matrix:` sweeps (set by the sweep
    /// expansion, which replaces them): the analyzer still checks them.
    pub shadowed: Vec<(String, serde_json::Value)>,
}

/// One diagnostic as an error.
fn one(d: Diagnostic) -> PipelineError {
    PipelineError {
        diagnostics: vec![d],
    }
}

fn placed(d: Diagnostic, at: Option<Pos>) -> Diagnostic {
    match at {
        Some((l, c)) => d.at(l, c),
        None => d,
    }
}

fn join(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (_, true) => base.to_string(),
        _ => format!("{base}.{rest}"),
    }
}

/// A typed-read issue under `base` (a key path of the file) as a diagnostic with its place.
/// `noun` names what the keys there are ("field", "param", "resource").
fn issue_diagnostic(
    file: &Path,
    locator: &Locator,
    base: &str,
    issue: &Issue,
    noun: &str,
) -> Diagnostic {
    let mut at = join(base, &issue.path);
    if let Problem::UnknownField { field, .. } | Problem::Missing { field } = &issue.problem {
        if !at.ends_with(field.as_str()) {
            at = join(&at, field);
        }
    }
    let (message, help) = issue.explain(noun);
    let d = Diagnostic::new(file, &at, message);
    let d = match help {
        Some(h) => d.with_help(h),
        None => d,
    };
    placed(d, locator.find(&at))
}

/// Refuse, on the tree, what JSON cannot hold: keys that are not names, a key written twice
/// under one parent, and non-finite numbers.
fn check_tree(file: &Path, node: &Node, path: &mut String, diags: &mut Vec<Diagnostic>) {
    const MAX_REPORTED: usize = 20;
    match &node.value {
        T::Map(entries) => {
            let mut seen = std::collections::HashSet::new();
            for e in entries {
                if diags.len() >= MAX_REPORTED {
                    return;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&e.key.text);
                let parent = &path[..len];
                if !e.key.is_str {
                    diags.push(
                        Diagnostic::new(
                            file,
                            parent,
                            format!("`{}` is not a name: keys here must be strings", e.key.text),
                        )
                        .with_help(format!("quote it: `\"{}\":`", e.key.text))
                        .at(e.key.at.0, e.key.at.1),
                    );
                } else if !seen.insert(e.key.text.as_str()) {
                    let name = &e.key.text;
                    let d = if parent == "stages" {
                        Diagnostic::new(file, &*path, format!("duplicate stage `{name}`"))
                            .with_help(
                                "stage names must be unique within a pipeline; rename one of them",
                            )
                    } else {
                        Diagnostic::new(file, &*path, format!("`{name}` is written twice"))
                            .with_help("a key may appear once in a mapping; keep one of them")
                    };
                    diags.push(d.at(e.key.at.0, e.key.at.1));
                } else if let T::Float(_) = e.value.value {
                    if let Some(word) = e.value.non_finite() {
                        diags.push(
                            Diagnostic::new(
                                file,
                                &*path,
                                format!("`{}: {word}` is not a finite number", e.key.text),
                            )
                            .with_help("give a finite number, e.g. `0.5` or `1e-3`")
                            .at(e.key.at.0, e.key.at.1),
                        );
                    }
                } else {
                    check_tree(file, &e.value, path, diags);
                }
                path.truncate(len);
            }
        }
        T::Seq(items) => {
            for i in items {
                if let Some(word) = i.non_finite().filter(|_| matches!(i.value, T::Float(_))) {
                    let key = path.rsplit('.').next().unwrap_or_default();
                    diags.push(
                        Diagnostic::new(
                            file,
                            &*path,
                            format!("`{word}` in `{key}` is not a finite number"),
                        )
                        .with_help("give finite numbers, e.g. `[0.1, 1, 10]`")
                        .at(i.at.0, i.at.1),
                    );
                } else {
                    check_tree(file, i, path, diags);
                }
            }
        }
        _ => {}
    }
}

fn parse_error(file: &Path, text: &str, e: ParseError) -> Diagnostic {
    match e {
        ParseError::Syntax { message, at } => placed(
            Diagnostic::new(file, "", format!("not valid YAML: {message}"))
                .with_help("check the brackets, quotes and indentation around this place"),
            at,
        ),
        ParseError::Limit { crossed, at } => placed(
            super::limits::crossed(file, crossed, text.contains('*') && text.contains('&')),
            at,
        ),
    }
}

pub(super) fn parse(path: &Path, text: &str) -> Result<RawPipeline, PipelineError> {
    let doc = tree::parse(text).map_err(|e| one(parse_error(path, text, e)))?;
    if doc.value == T::Null {
        return Err(one(Diagnostic::new(path, "", "the pipeline file is empty")
            .with_help("a pipeline needs at least `name:` and `stages:`")));
    }
    let locator = Locator::of(&doc);
    let mut diags = Vec::new();
    check_tree(path, &doc, &mut String::new(), &mut diags);
    if !diags.is_empty() {
        return Err(PipelineError { diagnostics: diags });
    }
    let at = doc.at;
    let entries = match doc.value {
        T::Map(entries) => entries,
        value => {
            let found = describe(&Node { at, value }.into_json());
            return Err(one(placed(
                Diagnostic::new(
                    path,
                    "",
                    format!(
                        "expected a pipeline: a mapping with `name:` and `stages:`, found {found}"
                    ),
                ),
                Some(at),
            )));
        }
    };
    // The top level goes through the spec with each stage a placeholder; the stages are then
    // read one by one (every bad stage is reported, and nothing is copied twice).
    let mut stage_nodes = Vec::new();
    let mut top = serde_json::Map::new();
    for e in entries {
        match (e.key.text.as_str(), e.value.value) {
            ("stages", T::Map(stages)) => {
                let names = stages.iter().map(|s| (s.key.text.clone(), Value::Null));
                top.insert("stages".into(), Value::Object(names.collect()));
                stage_nodes = stages;
            }
            (_, value) => {
                let node = Node {
                    at: e.key.at,
                    value,
                };
                top.insert(e.key.text, node.into_json());
            }
        }
    }
    let top: PipelineSpec<serde::de::IgnoredAny> = typed::from_value(&Value::Object(top))
        .map_err(|i| one(issue_diagnostic(path, &locator, "", &i, "field")))?;

    let executor = match top.executor {
        None => None,
        Some(v) => match parse_executor(v) {
            Ok(e) => Some(e),
            Err(msg) => {
                diags.push(placed(
                    Diagnostic::new(path, "executor", msg)
                        .with_help("write `executor: process`, or `executor: { kind: process }`"),
                    locator.find("executor"),
                ));
                None
            }
        },
    };
    let mut stages = Vec::new();
    for entry in stage_nodes {
        let name = entry.key.text;
        let v = entry.value.into_json();
        let at = format!("stages.{name}");
        let place = |d: Diagnostic| placed(d, locator.find(&at));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            diags.push(place(Diagnostic::new(path, &at, format!("invalid stage name `{name}`"))
                .with_help("use letters, digits, `_` and `-` only (the name becomes a folder under outputs/)")));
            continue;
        }
        if !v.is_object() {
            diags.push(place(Diagnostic::new(
                path,
                &at,
                format!(
                    "expected a stage: a mapping with `kind:`, found {}",
                    describe(&v)
                ),
            )));
            continue;
        }
        let sm: StageSpec = match typed::from_value(&v) {
            Ok(s) => s,
            Err(i) => {
                diags.push(issue_diagnostic(path, &locator, &at, &i, "field"));
                continue;
            }
        };
        let params = sm.params.unwrap_or_default();
        let matrix = sm
            .matrix
            .unwrap_or_default()
            .into_iter()
            .map(|(k, a)| (k, a.0))
            .collect();
        stages.push(RawStage {
            resources: sm.resources,
            origin: name.clone(),
            name,
            kind: sm.kind,
            description: sm.description,
            inputs: sm.inputs.map(|i| i.pairs()).unwrap_or_default(),
            params,
            matrix,
            shadowed: Vec::new(),
        });
    }
    if stages.is_empty() && diags.is_empty() {
        diags.push(
            Diagnostic::new(path, "stages", "the pipeline has no stages")
                .with_help("add at least one stage under `stages:`"),
        );
    }
    if !diags.is_empty() {
        return Err(PipelineError { diagnostics: diags });
    }
    Ok(RawPipeline {
        resources: top.resources,
        file: path.to_path_buf(),
        name: top.name,
        description: top.description,
        seed: top.seed,
        device: top.device,
        executor,
        stages,
        locator,
    })
}

fn parse_executor(v: Value) -> Result<RawExecutor, String> {
    match v {
        Value::String(kind) => Ok(RawExecutor {
            kind,
            options: serde_json::Map::new(),
        }),
        Value::Object(mut m) => {
            let kind = match m.remove("kind") {
                Some(Value::String(k)) => k,
                Some(other) => {
                    return Err(format!(
                        "`executor.kind` must be a name, found {}",
                        describe(&other)
                    ))
                }
                None => return Err("`executor` needs a `kind`".into()),
            };
            Ok(RawExecutor { kind, options: m })
        }
        other => Err(format!(
            "`executor` must be a name or a mapping, found {}",
            describe(&other)
        )),
    }
}
