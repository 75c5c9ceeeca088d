//! Sweeps: a stage with `matrix: { param: [values], ... }` becomes one stage per combination of
//! values, named `stage[param=value,...]`, and every stage downstream of it is repeated per
//! variant with its inputs rewired. Stages upstream are shared (their keys are the same, so they
//! run once). Tables, reports and plots (kinds that take any number of inputs) are not repeated:
//! they collect every variant of their inputs. Axes with the same param name in two stages are
//! one axis (their variants pair up instead of multiplying).

use crate::config::{RawPipeline, RawStage};
use crate::diagnostic::{Diagnostic, PipelineError};
use crate::stages::{find_kind, Roles};
use std::collections::{BTreeMap, HashMap};

/// One variant: axis → value (as written, compact).
type Assignment = Vec<(String, String)>;

/// A value as it appears in a variant name: short and safe as a folder name
/// (`data/war_of_the_worlds.txt` → `war_of_the_worlds`, `{embedding: 28}` → `embedding-28`).
fn show(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::String(s) if s.contains('/') => std::path::Path::new(s)
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| s.replace('/', "_")),
        Value::String(s) => s.replace(['/', '\\', '[', ']', ',', '='], "_"),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| format!("{k}-{}", show(x)))
            .collect::<Vec<_>>()
            .join("-"),
        Value::Array(a) => a.iter().map(show).collect::<Vec<_>>().join("-"),
        other => other.to_string(),
    }
}

fn consistent(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(k, v)| b.iter().all(|(k2, v2)| k != k2 || v == v2))
}

fn merge(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = a.clone();
    for (k, v) in b {
        if !out.iter().any(|(k2, _)| k2 == k) {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

fn label(a: &Assignment) -> String {
    if a.is_empty() {
        String::new()
    } else {
        format!(
            "[{}]",
            a.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

fn is_fan_in(kind: &str) -> bool {
    matches!(find_kind(kind).map(|k| k.roles), Some(Roles::AnyNonEmpty))
}

/// Expand every `matrix` in the pipeline. Without one, the pipeline comes back unchanged.
pub fn expand(raw: RawPipeline) -> Result<RawPipeline, PipelineError> {
    if raw.stages.iter().all(|s| s.matrix.is_empty()) {
        return Ok(raw);
    }
    let mut diags = Vec::new();
    // Variants of each written stage: (assignment, expanded name, values by param).
    let mut variants: HashMap<String, Vec<(Assignment, String)>> = HashMap::new();
    let by_name: HashMap<&str, &RawStage> =
        raw.stages.iter().map(|s| (s.name.as_str(), s)).collect();
    // Resolve in dependency order (a stage after its inputs); the analyzer reports cycles and
    // unknown inputs later, so here they simply stay unexpanded.
    let mut order: Vec<&RawStage> = Vec::new();
    let mut placed: HashMap<&str, bool> = HashMap::new();
    fn visit<'a>(
        s: &'a RawStage,
        by: &HashMap<&str, &'a RawStage>,
        placed: &mut HashMap<&'a str, bool>,
        order: &mut Vec<&'a RawStage>,
    ) {
        if placed.contains_key(s.name.as_str()) {
            return;
        }
        placed.insert(&s.name, false);
        for (_, up) in &s.inputs {
            if let Some(u) = by.get(up.as_str()) {
                visit(u, by, placed, order);
            }
        }
        placed.insert(&s.name, true);
        order.push(s);
    }
    for s in &raw.stages {
        visit(s, &by_name, &mut placed, &mut order);
    }
    let mut out_stages: BTreeMap<usize, Vec<RawStage>> = BTreeMap::new();
    for s in order {
        let fan_in = is_fan_in(&s.kind);
        if fan_in && !s.matrix.is_empty() {
            diags.push(
                Diagnostic::new(
                    &raw.file,
                    format!("stages.{}.matrix", s.name),
                    format!("kind `{}` collects its inputs and cannot be swept", s.kind),
                )
                .with_help("put the matrix on the stage whose params vary"),
            );
        }
        // Combinations of the inputs' variants that agree on shared axes.
        let mut combos: Vec<Assignment> = vec![vec![]];
        if !fan_in {
            for (_, up) in &s.inputs {
                if let Some(vs) = variants.get(up) {
                    let mut next = Vec::new();
                    for a in &combos {
                        for (b, _) in vs {
                            if consistent(a, b) {
                                next.push(merge(a, b));
                            }
                        }
                    }
                    combos = next;
                }
            }
        }
        // Then this stage's own axes.
        for (param, values) in &s.matrix {
            let mut next = Vec::new();
            for a in &combos {
                for v in values {
                    let b = vec![(param.clone(), show(v))];
                    if consistent(a, &b) {
                        next.push(merge(a, &b));
                    }
                }
            }
            combos = next;
        }
        let mut vs = Vec::new();
        let mut expanded = Vec::new();
        for a in combos {
            let name = format!("{}{}", s.name, label(&a));
            let mut st = s.clone();
            st.name = name.clone();
            st.matrix = Vec::new();
            for (param, values) in &s.matrix {
                let chosen = a
                    .iter()
                    .find(|(k, _)| k == param)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                if let Some(v) = values.iter().find(|v| show(v) == chosen) {
                    st.params.insert(param.clone(), v.clone());
                }
            }
            st.inputs = Vec::new();
            for (role, up) in &s.inputs {
                match variants.get(up) {
                    Some(uvs) if fan_in => {
                        for (_, uname) in uvs {
                            let r = if role == up {
                                uname.clone()
                            } else {
                                format!("{role}{}", &uname[up.len()..])
                            };
                            st.inputs.push((r, uname.clone()));
                        }
                    }
                    Some(uvs) => {
                        let pick = uvs
                            .iter()
                            .find(|(b, _)| consistent(&a, b))
                            .map(|(_, n)| n.clone())
                            .unwrap_or_else(|| up.clone());
                        st.inputs.push((role.clone(), pick));
                    }
                    None => st.inputs.push((role.clone(), up.clone())),
                }
            }
            vs.push((a, name));
            expanded.push(st);
        }
        let idx = raw.stages.iter().position(|x| x.name == s.name).unwrap();
        out_stages.insert(idx, expanded);
        variants.insert(s.name.clone(), vs);
    }
    if !diags.is_empty() {
        return Err(PipelineError { diagnostics: diags });
    }
    let mut raw = raw;
    raw.stages = out_stages.into_values().flatten().collect();
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn names(text: &str) -> Vec<(String, Vec<(String, String)>)> {
        let raw = crate::config::parse(Path::new("t.yaml"), text).unwrap();
        expand(raw)
            .unwrap()
            .stages
            .into_iter()
            .map(|s| (s.name, s.inputs))
            .collect()
    }

    #[test]
    fn expands_downstream_and_shares_upstream() {
        let text = "name: t\nstages:\n  toy:\n    kind: toy_sequence\n    params: { length: 50 }\n  b:\n    kind: sample_batches\n    inputs: { corpus: toy }\n    params: { strategy: random, batch_size: 2, num_steps: 3 }\n    matrix: { batch_size: [2, 4], strategy: [random, sequential] }\n  t:\n    kind: summary_table\n    inputs: [b]\n";
        let n = names(text);
        let stage_names: Vec<&str> = n.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            stage_names,
            [
                "toy",
                "b[batch_size=2,strategy=random]",
                "b[batch_size=2,strategy=sequential]",
                "b[batch_size=4,strategy=random]",
                "b[batch_size=4,strategy=sequential]",
                "t"
            ]
        );
        assert_eq!(n[1].1, vec![("corpus".to_string(), "toy".to_string())]);
        assert_eq!(n[5].1.len(), 4, "the table collects every variant");
    }

    #[test]
    fn variants_propagate_and_pair_up() {
        let text = "name: t\nstages:\n  toy:\n    kind: toy_sequence\n    params: { length: 50 }\n    matrix: { length: [50, 60] }\n  v:\n    kind: sample_batches\n    inputs: { corpus: toy }\n    params: { strategy: random, batch_size: 2, num_steps: 3 }\n  w:\n    kind: sample_batches\n    inputs: { corpus: toy }\n    params: { strategy: random, batch_size: 2, num_steps: 3 }\n    matrix: { num_steps: [3, 4] }\n";
        let n = names(text);
        let stage_names: Vec<&str> = n.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            stage_names,
            [
                "toy[length=50]",
                "toy[length=60]",
                "v[length=50]",
                "v[length=60]",
                "w[length=50,num_steps=3]",
                "w[length=50,num_steps=4]",
                "w[length=60,num_steps=3]",
                "w[length=60,num_steps=4]"
            ]
        );
        assert_eq!(
            n[7].1,
            vec![("corpus".to_string(), "toy[length=60]".to_string())]
        );
    }
}
