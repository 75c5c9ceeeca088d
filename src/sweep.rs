//! Sweeps: a stage with `matrix: { param: [values], ... }` becomes one stage per combination of
//! values, named `stage[param=value,...]`, and every stage downstream of it is repeated per
//! variant with its inputs rewired. Stages upstream are shared (their keys are the same, so they
//! run once). Tables, reports and plots (kinds that take any number of inputs) are not repeated:
//! they collect every variant of their inputs. Axes with the same param name in two stages are
//! one axis (their variants pair up instead of multiplying).

use crate::config::limits::{thousands, MAX_STAGES};
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

/// The longest value shown whole in a variant name; longer ones are cut and get a hash.
const MAX_LABEL: usize = 40;
/// Variant names longer than this are shortened (they become folder names: 255 bytes at most).
const MAX_NAME: usize = 160;

fn short_hash(v: &serde_json::Value) -> String {
    blake3::hash(v.to_string().as_bytes()).to_hex()[..6].to_string()
}

fn cut(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Labels of every value of every matrix axis (axes are shared by name across stages), unique
/// within an axis: values that show alike (`data/a/x.txt` and `data/b/x.txt`, `"a,b"` and
/// `"a_b"`) get a short hash of the value, and long ones are cut and hashed. Two values are
/// never merged into one variant.
fn axis_labels(stages: &[RawStage]) -> HashMap<String, Vec<(serde_json::Value, String)>> {
    let mut axes: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    let mut seen: std::collections::HashSet<(String, String)> = Default::default();
    for s in stages {
        for (param, values) in &s.matrix {
            let vs = axes.entry(param.clone()).or_default();
            for v in values {
                if seen.insert((param.clone(), v.to_string())) {
                    vs.push(v.clone());
                }
            }
        }
    }
    axes.into_iter()
        .map(|(param, values)| {
            let shown: Vec<String> = values.iter().map(show).collect();
            let mut count: HashMap<&str, usize> = HashMap::new();
            for sh in &shown {
                *count.entry(sh.as_str()).or_default() += 1;
            }
            let labels = values
                .iter()
                .zip(&shown)
                .map(|(v, sh)| {
                    let clash = count[sh.as_str()] > 1;
                    let long = sh.chars().count() > MAX_LABEL;
                    if clash || long {
                        format!("{}~{}", cut(sh, MAX_LABEL), short_hash(v))
                    } else {
                        sh.clone()
                    }
                })
                .collect::<Vec<_>>();
            (param, values.into_iter().zip(labels).collect())
        })
        .collect()
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

/// Refuse sweeps that would make more than [`MAX_STAGES`] stages, from the axis lengths alone
/// (before any variant is made), naming the stage and its axes. `order` puts inputs first.
fn check_count(raw: &RawPipeline, order: &[&RawStage]) -> Result<(), PipelineError> {
    // Per stage: its axes (its own and its inputs', shared by name) → how many values. Axes
    // shared by name pair up, so the count is the product over distinct axes: an upper bound
    // (values absent upstream drop out), exact when they agree.
    let mut axes_of: HashMap<&str, BTreeMap<&str, u64>> = HashMap::new();
    let mut total: u128 = 0;
    let mut counts: Vec<(&str, u128)> = Vec::new();
    for s in order {
        let mut axes: BTreeMap<&str, u64> = BTreeMap::new();
        if !is_fan_in(&s.kind) {
            let mut own: Vec<(&str, u64)> = Vec::new();
            for (_, up) in &s.inputs {
                if let Some(a) = axes_of.get(up.as_str()) {
                    own.extend(a.iter().map(|(k, v)| (*k, *v)));
                }
            }
            own.extend(s.matrix.iter().map(|(k, v)| (k.as_str(), v.len() as u64)));
            for (k, n) in own {
                let e = axes.entry(k).or_insert(n);
                *e = (*e).min(n);
            }
        }
        let n = axes
            .values()
            .fold(1u128, |acc, &v| acc.saturating_mul(v as u128));
        total = total.saturating_add(n);
        if n > 1 {
            counts.push((s.name.as_str(), n));
        }
        if n > MAX_STAGES as u128 || total > MAX_STAGES as u128 {
            let axes_shown = axes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(" × ");
            let (path, message) = if n > MAX_STAGES as u128 {
                (
                    format!(
                        "stages.{}{}",
                        s.name,
                        if s.matrix.is_empty() { "" } else { ".matrix" }
                    ),
                    format!(
                        "stage `{}` would be repeated for {} variants ({axes_shown}); a pipeline \
                         may have at most {} stages once its sweeps are expanded",
                        s.name,
                        thousands(n),
                        thousands(MAX_STAGES)
                    ),
                )
            } else {
                counts.sort_by_key(|c| std::cmp::Reverse(c.1));
                let biggest = counts
                    .iter()
                    .take(3)
                    .map(|(name, n)| format!("`{name}`: {}", thousands(*n)))
                    .collect::<Vec<_>>()
                    .join(", ");
                (
                    format!("stages.{}", s.name),
                    format!(
                        "the sweeps would make at least {} stages (largest: {biggest}); a \
                         pipeline may have at most {} stages once its sweeps are expanded",
                        thousands(total),
                        thousands(MAX_STAGES)
                    ),
                )
            };
            let mut d = Diagnostic::new(&raw.file, &path, message).with_help(
                "sweep fewer values or fewer axes at once (`--set 'STAGE.matrix.PARAM=[..]'` \
                 narrows an axis), or split the sweep into several pipelines",
            );
            if let Some((l, c)) = raw.locator.find(&path) {
                d = d.at(l, c);
            }
            return Err(PipelineError {
                diagnostics: vec![d],
            });
        }
        axes_of.insert(s.name.as_str(), axes);
    }
    Ok(())
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
    // Iteratively (a chain of 100,000 stages would overflow the stack of a recursive walk).
    let mut placed: std::collections::HashSet<&str> = Default::default();
    for s in &raw.stages {
        if !placed.insert(s.name.as_str()) {
            continue;
        }
        // (stage, how many of its inputs are visited)
        let mut stack: Vec<(&RawStage, usize)> = vec![(s, 0)];
        while let Some((cur, k)) = stack.pop() {
            match cur.inputs.get(k) {
                Some((_, up)) => {
                    stack.push((cur, k + 1));
                    if let Some(&u) = by_name.get(up.as_str()) {
                        if placed.insert(u.name.as_str()) {
                            stack.push((u, 0));
                        }
                    }
                }
                None => order.push(cur),
            }
        }
    }
    check_count(&raw, &order)?;
    let labels = axis_labels(&raw.stages);
    // (axis, value as JSON) → label, and (axis, label) → value: constant time per variant.
    let mut label_by_value: HashMap<(String, String), String> = HashMap::new();
    let mut value_by_label: HashMap<(String, String), serde_json::Value> = HashMap::new();
    for (param, vls) in &labels {
        for (v, l) in vls {
            label_by_value.insert((param.clone(), v.to_string()), l.clone());
            value_by_label.insert((param.clone(), l.clone()), v.clone());
        }
    }
    let label_of = |param: &str, v: &serde_json::Value| -> String {
        label_by_value[&(param.to_string(), v.to_string())].clone()
    };
    // Variants of each stage indexed by their assignment, for picking the one that matches.
    let restrict = |a: &Assignment, axes: &[String]| -> String {
        axes.iter()
            .map(|k| {
                a.iter()
                    .find(|(x, _)| x == k)
                    .map(|(_, v)| format!("{k}={v}"))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\u{1f}")
    };
    let mut variant_index: HashMap<String, (Vec<String>, HashMap<String, String>)> = HashMap::new();
    let position: HashMap<&str, usize> = raw
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
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
                    let b = vec![(param.clone(), label_of(param, v))];
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
            let mut name = format!("{}{}", s.name, label(&a));
            if name.len() > MAX_NAME && !a.is_empty() {
                // A folder name has at most 255 bytes: keep the start, add a hash of the rest.
                let l = label(&a);
                name = format!(
                    "{}{}…~{}]",
                    s.name,
                    cut(&l[..l.len() - 1], MAX_NAME / 2),
                    &blake3::hash(l.as_bytes()).to_hex()[..8]
                );
            }
            // Clone without the matrix: copying every axis's values per variant is quadratic.
            let mut st = RawStage {
                name: name.clone(),
                origin: s.origin.clone(),
                kind: s.kind.clone(),
                description: s.description.clone(),
                inputs: Vec::new(),
                params: s.params.clone(),
                matrix: Vec::new(),
                resources: s.resources.clone(),
                shadowed: Vec::new(),
            };
            for (param, values) in &s.matrix {
                let chosen = a
                    .iter()
                    .find(|(k, _)| k == param)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let _ = values;
                if let Some(v) = value_by_label.get(&(param.clone(), chosen)) {
                    if let Some(old) = st.params.insert(param.clone(), v.clone()) {
                        st.shadowed.push((param.clone(), old));
                    }
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
                        // The upstream variant that agrees with this one on the upstream's axes.
                        let pick = variant_index
                            .get(up)
                            .and_then(|(axes, index)| index.get(&restrict(&a, axes)).cloned());
                        let pick = pick
                            .or_else(|| {
                                uvs.iter()
                                    .find(|(b, _)| consistent(&a, b))
                                    .map(|(_, n)| n.clone())
                            })
                            .unwrap_or_else(|| up.clone());
                        st.inputs.push((role.clone(), pick));
                    }
                    None => st.inputs.push((role.clone(), up.clone())),
                }
            }
            vs.push((a, name));
            expanded.push(st);
        }
        let idx = position[s.name.as_str()];
        out_stages.insert(idx, expanded);
        let axes: Vec<String> = vs
            .first()
            .map(|(a, _)| a.iter().map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        let index = vs
            .iter()
            .map(|(a, n)| (restrict(a, &axes), n.clone()))
            .collect();
        variant_index.insert(s.name.clone(), (axes, index));
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

    #[test]
    fn counts_variants_from_axis_lengths_before_expanding() {
        // 10 axes of 10 values: 10^10 variants, refused at once with the stage named.
        let axes: String = (0..10)
            .map(|a| format!("      a{a}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"))
            .collect();
        let text =
            format!("name: t\nstages:\n  s:\n    kind: synthetic_series\n    matrix:\n{axes}");
        let raw = crate::config::parse(Path::new("t.yaml"), &text).unwrap();
        let start = std::time::Instant::now();
        let e = expand(raw).unwrap_err();
        assert!(start.elapsed().as_secs() < 1);
        let d = &e.diagnostics[0];
        assert!(
            d.message
                .contains("stage `s` would be repeated for 10,000,000,000 variants"),
            "{d}"
        );
        assert_eq!((d.path.as_str(), d.line), ("stages.s.matrix", Some(5)));
        // Axes shared by name pair up rather than multiply: 3 + 3 stages, not 3 + 9.
        let text = "name: t\nstages:\n  toy:\n    kind: toy_sequence\n    matrix: { length: [5, 6, 7] }\n  b:\n    kind: sample_batches\n    inputs: { corpus: toy }\n    params: { strategy: random, batch_size: 2, num_steps: 3 }\n    matrix: { length: [5, 6, 7] }\n";
        assert_eq!(names(text).len(), 6);
    }
}
