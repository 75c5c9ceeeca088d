//! The serde mirror of a pipeline file.

use super::locator::Locator;
use crate::diagnostic::{Diagnostic, PipelineError};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The top level of a pipeline file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMirror {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    executor: Option<serde_yaml::Value>,
    #[serde(default)]
    resources: Option<serde_yaml::Value>,
    stages: serde_yaml::Mapping,
}

/// One stage, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageMirror {
    kind: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    inputs: Option<serde_yaml::Value>,
    #[serde(default)]
    params: Option<serde_yaml::Mapping>,
    #[serde(default)]
    matrix: Option<serde_yaml::Mapping>,
    #[serde(default)]
    resources: Option<serde_yaml::Value>,
}

const TOP_FIELDS: &[&str] = &[
    "name",
    "description",
    "seed",
    "device",
    "executor",
    "resources",
    "stages",
];
const STAGE_FIELDS: &[&str] = &[
    "kind",
    "description",
    "inputs",
    "params",
    "matrix",
    "resources",
];

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

/// serde's wording, in the file's terms: no Rust type names (`u64`, `FileMirror`).
fn humanize(msg: &str) -> String {
    let mut m = msg.to_string();
    for (from, to) in [
        (
            "expected struct FileMirror",
            "expected a pipeline: a mapping with `name:` and `stages:`",
        ),
        (
            "expected struct StageMirror",
            "expected a stage: a mapping with `kind:`",
        ),
        ("expected a YAML mapping", "expected a mapping"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected usize", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        ("invalid type: sequence", "found a list"),
        ("invalid type: map", "found a mapping"),
        ("invalid type: integer", "found the integer"),
        ("invalid type: floating point", "found the number"),
        ("invalid type: string", "found the string"),
        ("invalid type: boolean", "found the boolean"),
    ] {
        m = m.replace(from, to);
    }
    m
}

/// `.nan`, `.inf` or `-.inf` anywhere in a value: JSON (and the key) has no such numbers, so
/// they would silently become null.
pub(crate) fn non_finite(v: &serde_yaml::Value) -> Option<&'static str> {
    match v {
        serde_yaml::Value::Number(n) => match n.as_f64() {
            Some(f) if f.is_nan() => Some(".nan"),
            Some(f) if f == f64::INFINITY => Some(".inf"),
            Some(f) if f == f64::NEG_INFINITY => Some("-.inf"),
            _ => None,
        },
        serde_yaml::Value::Sequence(s) => s.iter().find_map(non_finite),
        serde_yaml::Value::Mapping(m) => m.values().find_map(non_finite),
        serde_yaml::Value::Tagged(t) => non_finite(&t.value),
        _ => None,
    }
}

fn yaml_error(
    path: &Path,
    e: &serde_yaml::Error,
    at: &str,
    locator: Option<&Locator>,
) -> Diagnostic {
    let msg = humanize(&e.to_string());
    // serde_yaml appends " at line L column C"; keep the message, put the place in the header.
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    if let Some(name) = msg
        .strip_prefix("stages: duplicate entry with key \"")
        .and_then(|r| r.strip_suffix('"'))
    {
        let mut d = Diagnostic::new(
            path,
            format!("stages.{name}"),
            format!("duplicate stage `{name}`"),
        )
        .with_help("stage names must be unique within a pipeline; rename one of them");
        if let Some((l, c)) = locator.and_then(|l| l.repeat(&format!("stages.{name}"))) {
            d = d.at(l, c);
        }
        return d;
    }
    let mut d = Diagnostic::new(path, at, msg.clone());
    if let Some(loc) = e.location() {
        d = d.at(loc.line(), loc.column());
    }
    if let Some(field) = msg
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        let fields = if at.is_empty() {
            TOP_FIELDS
        } else {
            STAGE_FIELDS
        };
        d.path = if at.is_empty() {
            field.to_string()
        } else {
            format!("{at}.{field}")
        };
        d = d.with_help(crate::diagnostic::suggest(field, fields, "fields"));
    }
    d
}

pub(super) fn parse(path: &Path, text: &str) -> Result<RawPipeline, PipelineError> {
    let fail = |d: Diagnostic| PipelineError {
        diagnostics: vec![d],
    };
    let locator = Locator::new(text);
    // Syntax first: a clear position for broken YAML.
    let doc: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| fail(yaml_error(path, &e, "", Some(&locator))))?;
    if doc.is_null() {
        return Err(fail(
            Diagnostic::new(path, "", "the pipeline file is empty")
                .with_help("a pipeline needs at least `name:` and `stages:`"),
        ));
    }
    let top: FileMirror = serde_yaml::from_value(doc).map_err(|e| {
        // from_value has no positions: re-run on the text to get one.
        let e2 = serde_yaml::from_str::<FileMirror>(text).err();
        fail(yaml_error(
            path,
            e2.as_ref().unwrap_or(&e),
            "",
            Some(&locator),
        ))
    })?;

    let mut diags = Vec::new();
    let executor = match top.executor {
        None => None,
        Some(v) => match parse_executor(v) {
            Ok(e) => Some(e),
            Err(msg) => {
                let mut d = Diagnostic::new(path, "executor", msg)
                    .with_help("write `executor: process`, or `executor: { kind: process }`");
                if let Some((l, c)) = locator.find("executor") {
                    d = d.at(l, c);
                }
                diags.push(d);
                None
            }
        },
    };
    let mut stages = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (k, v) in top.stages {
        let name = match k.as_str() {
            Some(s) => s.to_string(),
            None => {
                diags.push(Diagnostic::new(
                    path,
                    "stages",
                    format!("stage names must be strings, found {k:?}"),
                ));
                continue;
            }
        };
        let at = format!("stages.{name}");
        let pos = locator.find(&at);
        let place = |d: Diagnostic| match pos {
            Some((l, c)) => d.at(l, c),
            None => d,
        };
        if seen.contains(&name) {
            diags.push(place(
                Diagnostic::new(path, &at, format!("duplicate stage `{name}`"))
                    .with_help("stage names must be unique within a pipeline; rename one of them"),
            ));
            continue;
        }
        seen.insert(name.clone());
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
        {
            diags.push(place(Diagnostic::new(path, &at, format!("invalid stage name `{name}`"))
                .with_help("use letters, digits, `_` and `-` only (the name becomes a folder under outputs/)")));
            continue;
        }
        let sm: StageMirror = match serde_yaml::from_value(v) {
            Ok(s) => s,
            Err(e) => {
                let mut d = yaml_error(path, &e, &at, Some(&locator));
                if let Some((l, c)) = locator.find(&d.path).or(pos) {
                    d = d.at(l, c);
                }
                diags.push(d);
                continue;
            }
        };
        let mut inputs = Vec::new();
        match sm.inputs {
            None | Some(serde_yaml::Value::Null) => {}
            Some(serde_yaml::Value::Mapping(m)) => {
                for (role, up) in m {
                    match (role.as_str(), up.as_str()) {
                        (Some(r), Some(u)) => inputs.push((r.to_string(), u.to_string())),
                        _ => diags.push(place(Diagnostic::new(
                            path,
                            format!("{at}.inputs"),
                            "each input must be `role: stage_name`",
                        ))),
                    }
                }
            }
            Some(serde_yaml::Value::Sequence(seq)) => {
                for up in seq {
                    match up.as_str() {
                        Some(u) => inputs.push((u.to_string(), u.to_string())),
                        None => diags.push(place(Diagnostic::new(
                            path,
                            format!("{at}.inputs"),
                            "each input must be a stage name",
                        ))),
                    }
                }
            }
            Some(other) => diags.push(place(
                Diagnostic::new(
                    path,
                    format!("{at}.inputs"),
                    format!(
                        "`inputs` must be a mapping or a list, found {}",
                        kind_of(&other)
                    ),
                )
                .with_help("write `inputs: { corpus: load }` (role: stage) or `inputs: [a, b]`"),
            )),
        }
        let mut params = serde_json::Map::new();
        for (k, v) in sm.params.unwrap_or_default() {
            let Some(key) = k.as_str() else {
                diags.push(place(Diagnostic::new(
                    path,
                    format!("{at}.params"),
                    "param names must be strings",
                )));
                continue;
            };
            if let Some(word) = non_finite(&v) {
                let ppath = format!("{at}.params.{key}");
                let d = Diagnostic::new(
                    path,
                    &ppath,
                    format!("`{key}: {word}` is not a finite number"),
                )
                .with_help("give a finite number, e.g. `0.5` or `1e-3`");
                diags.push(match locator.find(&ppath) {
                    Some((l, c)) => d.at(l, c),
                    None => place(d),
                });
                continue;
            }
            match serde_json::to_value(&v) {
                Ok(j) => {
                    params.insert(key.to_string(), j);
                }
                Err(e) => diags.push(place(Diagnostic::new(
                    path,
                    format!("{at}.params.{key}"),
                    format!("unsupported value: {e}"),
                ))),
            }
        }
        let mut matrix = Vec::new();
        for (k, v) in sm.matrix.unwrap_or_default() {
            let key = k.as_str().unwrap_or_default().to_string();
            let mpath = format!("{at}.matrix.{key}");
            match v {
                serde_yaml::Value::Sequence(items)
                    if items.iter().any(|i| non_finite(i).is_some()) =>
                {
                    let word = items.iter().find_map(non_finite).unwrap_or(".nan");
                    let d = Diagnostic::new(
                        path,
                        &mpath,
                        format!("`{word}` in matrix axis `{key}` is not a finite number"),
                    )
                    .with_help("give finite numbers, e.g. `[0.1, 1, 10]`");
                    diags.push(match locator.find(&mpath) {
                        Some((l, c)) => d.at(l, c),
                        None => d,
                    });
                }
                serde_yaml::Value::Sequence(items) if !items.is_empty() => {
                    let vals: Result<Vec<_>, _> = items.iter().map(serde_json::to_value).collect();
                    match vals {
                        Ok(vals) => matrix.push((key, vals)),
                        Err(e) => diags.push(place(Diagnostic::new(
                            path,
                            mpath,
                            format!("unsupported value: {e}"),
                        ))),
                    }
                }
                _ => {
                    let d = Diagnostic::new(
                        path,
                        &mpath,
                        "a matrix axis must be a non-empty list of values",
                    )
                    .with_help(format!("write `{key}: [a, b, c]`"));
                    diags.push(match locator.find(&mpath) {
                        Some((l, c)) => d.at(l, c),
                        None => d,
                    });
                }
            }
        }
        let resources = match sm.resources.map(|v| serde_json::to_value(&v)) {
            None => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                diags.push(place(Diagnostic::new(
                    path,
                    format!("{at}.resources"),
                    format!("unsupported value: {e}"),
                )));
                None
            }
        };
        stages.push(RawStage {
            resources,
            origin: name.clone(),
            name,
            kind: sm.kind,
            description: sm.description,
            inputs,
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
    let resources = match top.resources.map(|v| serde_json::to_value(&v)) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            return Err(fail(Diagnostic::new(
                path,
                "resources",
                format!("unsupported value: {e}"),
            )))
        }
    };
    Ok(RawPipeline {
        resources,
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

fn parse_executor(v: serde_yaml::Value) -> Result<RawExecutor, String> {
    match v {
        serde_yaml::Value::String(kind) => Ok(RawExecutor {
            kind,
            options: serde_json::Map::new(),
        }),
        serde_yaml::Value::Mapping(m) => {
            let mut kind = None;
            let mut options = serde_json::Map::new();
            for (k, v) in m {
                let Some(k) = k.as_str() else {
                    return Err("executor option names must be strings".into());
                };
                if k == "kind" {
                    kind = Some(
                        v.as_str()
                            .ok_or("`executor.kind` must be a name")?
                            .to_string(),
                    );
                } else {
                    let j = serde_json::to_value(&v)
                        .map_err(|e| format!("unsupported value for `executor.{k}`: {e}"))?;
                    options.insert(k.to_string(), j);
                }
            }
            Ok(RawExecutor {
                kind: kind.ok_or("`executor` needs a `kind`")?,
                options,
            })
        }
        other => Err(format!(
            "`executor` must be a name or a mapping, found {}",
            kind_of(&other)
        )),
    }
}

fn kind_of(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a mapping",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}
