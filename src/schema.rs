//! `seqpipe schema`: the JSON Schema (draft 2020-12) of pipeline files. The file's structure is
//! derived from the spec types the file is read into (`config::spec`); each kind's params come
//! from its params struct; both are `#[derive(JsonSchema)]`, so types, enums, defaults and doc
//! comments follow the code. This file only adds what depends on the stage registry: the kind
//! names and, per kind, its params, matrix axes and inputs. `pipelines/schema.json` is this output, kept current by a test;
//! editors with the YAML language server pick it up from each pipeline's first line.

use crate::stages::{registry, Roles};
use serde_json::{json, Map, Value};

/// Where the committed copy lives, relative to the project root.
pub const SCHEMA_FILE: &str = "pipelines/schema.json";

/// The schema as `seqpipe schema` prints it (pretty JSON and a final newline).
pub fn pipeline_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(&pipeline_schema()).expect("schema serializes");
    s.push('\n');
    s
}

fn def(name: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{name}") })
}

/// The `$defs` name of a kind's params schema.
fn params_def(kind: &str) -> String {
    format!("params.{kind}")
}

pub fn pipeline_schema() -> Value {
    let mut gen = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut root = gen
        .root_schema_for::<crate::config::spec::PipelineSpec>()
        .to_value();
    let kinds = registry();
    let mut refs = Vec::new();
    for k in kinds {
        refs.push((k, (k.params_schema)(&mut gen).to_value()));
    }
    let mut defs: Map<String, Value> = gen.take_definitions(true);
    if let Some(Value::Object(root_defs)) = root.as_object_mut().and_then(|r| r.remove("$defs")) {
        for (k, v) in root_defs {
            defs.entry(k).or_insert(v);
        }
    }
    for d in defs.values_mut() {
        tidy(d);
    }
    let mut refs: Vec<_> = refs
        .into_iter()
        .map(|(k, mut r)| {
            tidy(&mut r);
            (k, r)
        })
        .collect();

    let mut kind_rules = Vec::new();
    for (k, r) in refs.drain(..) {
        // The params struct itself: moved under a stable name, described by the kind, and
        // without `required` (a param may come from `matrix` instead; the stage rule says so).
        let name = r["$ref"]
            .as_str()
            .and_then(|s| s.strip_prefix("#/$defs/"))
            .expect("a params struct is a named definition")
            .to_string();
        let mut params = defs.remove(&name).expect("definition present");
        let obj = params.as_object_mut().expect("params schema is an object");
        let required: Vec<Value> = obj
            .remove("required")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        obj.remove("title");
        obj.insert(
            "description".into(),
            json!(format!("Params of `{}`.", k.name)),
        );
        let props = obj
            .get("properties")
            .and_then(|p| p.as_object())
            .cloned()
            .unwrap_or_default();
        defs.insert(params_def(k.name), params);

        // `matrix`: each axis is a param of the kind, with a list of its values.
        let axes: Map<String, Value> = props
            .iter()
            .map(|(p, s)| {
                let mut item = s.clone();
                if let Some(o) = item.as_object_mut() {
                    o.remove("default");
                    o.remove("description");
                }
                (
                    p.clone(),
                    json!({ "type": "array", "minItems": 1, "items": item }),
                )
            })
            .collect();
        let mut then = json!({
            "description": k.about,
            "properties": {
                "params": def(&params_def(k.name)),
                "matrix": {
                    "type": "object",
                    "description": "Sweep: param → the values to try; the stage and everything downstream is repeated per value.",
                    "properties": axes,
                    "additionalProperties": false,
                },
                "inputs": inputs_schema(k.roles),
            },
        });
        let mut all_of: Vec<Value> = required
            .iter()
            .map(|p| {
                json!({
                    "anyOf": [
                        { "required": ["params"], "properties": { "params": { "required": [p] } } },
                        { "required": ["matrix"], "properties": { "matrix": { "required": [p] } } },
                    ]
                })
            })
            .collect();
        if !matches!(k.roles, Roles::Fixed(r) if r.is_empty()) {
            all_of.push(json!({ "required": ["inputs"] }));
        }
        if !all_of.is_empty() {
            then["allOf"] = Value::Array(all_of);
        }
        kind_rules.push(json!({
            "if": { "properties": { "kind": { "const": k.name } }, "required": ["kind"] },
            "then": then,
        }));
    }

    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name).collect();
    let kinds_help: String = kinds
        .iter()
        .map(|k| format!("`{}`: {}", k.name, k.about))
        .collect::<Vec<_>>()
        .join("; ");
    let stage = defs
        .get_mut("StageSpec")
        .and_then(Value::as_object_mut)
        .expect("the stage's schema is a definition");
    stage["properties"]["kind"]["enum"] = json!(kind_names);
    stage["properties"]["kind"]["description"] = json!(format!(
        "The stage kind (`seqpipe kinds` lists them). {kinds_help}."
    ));
    stage.insert("allOf".into(), Value::Array(kind_rules));

    let defs: Map<String, Value> = {
        let mut v: Vec<(String, Value)> = defs.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().collect()
    };
    tidy(&mut root);
    let top = root.as_object_mut().expect("the root schema is an object");
    top.insert("$defs".into(), Value::Object(defs));
    root
}

/// `inputs` of a kind: its fixed roles (all required), or any non-empty set of stages.
fn inputs_schema(roles: Roles) -> Value {
    match roles {
        Roles::Fixed([]) => json!({
            "description": "This kind takes no inputs.",
            "anyOf": [
                { "type": "object", "maxProperties": 0 },
                { "type": "array", "maxItems": 0 },
                { "type": "null" },
            ],
        }),
        Roles::Fixed(r) => {
            let props: Map<String, Value> = r
                .iter()
                .map(|role| {
                    (
                        role.to_string(),
                        json!({ "type": "string", "description": "upstream stage" }),
                    )
                })
                .collect();
            json!({
                "description": format!("Roles: {}.", r.join(", ")),
                "anyOf": [
                    { "type": "object", "properties": props, "required": r, "additionalProperties": false },
                    // A list names stages whose names are the roles.
                    { "type": "array", "items": { "enum": r }, "minItems": r.len(), "maxItems": r.len(), "uniqueItems": true },
                ],
            })
        }
        Roles::AnyNonEmpty => json!({
            "description": "Any stages, one row or series each.",
            "anyOf": [
                { "type": "object", "minProperties": 1, "additionalProperties": { "type": "string" } },
                { "type": "array", "minItems": 1, "items": { "type": "string" } },
            ],
        }),
    }
}

/// Drop what schemars adds for Rust's sake and editors do not need: numeric `format`s (`uint`,
/// `double`: not JSON Schema formats) and `writeOnly` (a param that is not part of the key).
fn tidy(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("format").and_then(Value::as_str).is_some_and(|f| {
                f.starts_with("int") || f.starts_with("uint") || f == "double" || f == "float"
            }) {
                m.remove("format");
            }
            m.remove("writeOnly");
            // An optional field of the file's spec: leaving it out is its default.
            if m.get("default") == Some(&Value::Null) {
                m.remove("default");
            }
            m.values_mut().for_each(tidy);
        }
        Value::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// One param of a kind, for `seqpipe kinds KIND`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamDoc {
    pub name: String,
    /// `integer ≥ 0`, `sgd|adam`, `number or none`, `string (optional)`.
    pub ty: String,
    /// The default as YAML would write it; None: required.
    pub default: Option<String>,
    pub about: String,
}

/// The params of kind `kind` (None: no such kind), from its params struct's schema: names,
/// types, defaults and doc comments, in declaration order.
pub fn kind_params(kind: &str) -> Option<Vec<ParamDoc>> {
    let k = registry().iter().find(|k| k.name == kind)?;
    let mut gen = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let r = (k.params_schema)(&mut gen).to_value();
    let defs: Map<String, Value> = gen.take_definitions(true);
    let params = match r["$ref"].as_str().and_then(|n| n.strip_prefix("#/$defs/")) {
        Some(name) => defs.get(name)?,
        None => &r,
    };
    let required: Vec<&str> = params["required"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(props) = params["properties"].as_object() else {
        return Some(Vec::new()); // a kind without params
    };
    Some(
        props
            .iter()
            .map(|(p, s)| ParamDoc {
                name: p.clone(),
                ty: type_text(s, &defs),
                default: if required.contains(&p.as_str()) {
                    None
                } else {
                    Some(match s.get("default") {
                        None | Some(Value::Null) => "–".into(),
                        Some(Value::String(v)) => v.clone(),
                        Some(v) => v.to_string(),
                    })
                },
                about: s["description"]
                    .as_str()
                    .or_else(|| {
                        s["$ref"]
                            .as_str()
                            .and_then(|r| r.strip_prefix("#/$defs/"))
                            .and_then(|n| defs.get(n)?["description"].as_str())
                    })
                    .unwrap_or("")
                    .replace('\n', " "),
            })
            .collect(),
    )
}

/// A schema's type in a few words (best effort; "value" when it cannot tell).
fn type_text(s: &Value, defs: &Map<String, Value>) -> String {
    if let Some(n) = s["$ref"].as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
        return defs.get(n).map_or("value".into(), |d| type_text(d, defs));
    }
    if let Some(c) = s.get("const") {
        return c.as_str().map_or(c.to_string(), String::from);
    }
    if let Some(e) = s["enum"].as_array() {
        let v: Vec<String> = e
            .iter()
            .map(|x| x.as_str().map_or(x.to_string(), String::from))
            .collect();
        return v.join("|");
    }
    for alt in ["oneOf", "anyOf"] {
        if let Some(a) = s[alt].as_array() {
            let non_null: Vec<&Value> = a.iter().filter(|x| x["type"] != "null").collect();
            let text: Vec<String> = non_null.iter().map(|x| type_text(x, defs)).collect();
            let all_words = text.iter().all(|t| !t.contains(' ') && !t.is_empty());
            let joined = text.join(if all_words { "|" } else { " or " });
            return if non_null.len() < a.len() {
                format!("{joined} (optional)")
            } else {
                joined
            };
        }
    }
    let bound = |t: &str| match (s["minimum"].as_f64(), s["exclusiveMinimum"].as_f64()) {
        (Some(m), _) => format!("{t} ≥ {m}"),
        (_, Some(m)) => format!("{t} > {m}"),
        _ => t.to_string(),
    };
    match &s["type"] {
        Value::String(t) if t == "array" => {
            format!("list of {}", type_text(&s["items"], defs))
        }
        Value::String(t) => bound(t),
        Value::Array(ts) => {
            let t: Vec<&str> = ts
                .iter()
                .filter_map(|x| x.as_str())
                .filter(|x| *x != "null")
                .collect();
            let base = bound(&t.join("|"));
            if t.len() < ts.len() {
                format!("{base} (optional)")
            } else {
                base
            }
        }
        _ => "value".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind's params, as `seqpipe kinds KIND` lists them, are the registry's, each with a
    /// type; required ones have no default.
    #[test]
    fn kind_params_follow_the_params_structs() {
        for k in registry() {
            let docs = kind_params(k.name).unwrap();
            let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
            let mut want: Vec<&str> = k.params.to_vec();
            let mut got = names.clone();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{}", k.name);
            for d in &docs {
                assert!(
                    !d.ty.is_empty() && d.ty != "value",
                    "{}.{}: {}",
                    k.name,
                    d.name,
                    d.ty
                );
            }
        }
        let train = kind_params("train").unwrap();
        let get = |n: &str| train.iter().find(|d| d.name == n).unwrap().clone();
        assert_eq!(get("epochs").default, None);
        assert_eq!(get("epochs").ty, "integer ≥ 0");
        assert_eq!(get("optimizer").ty, "sgd|adam");
        assert_eq!(get("optimizer").default.as_deref(), Some("sgd"));
        assert_eq!(get("clip_grad_norm").ty, "number > 0 or none");
        assert_eq!(get("sample_every").default.as_deref(), Some("50"));
        assert!(get("lr").about.contains("Learning rate"));
        assert!(kind_params("trian").is_none());
    }
}
