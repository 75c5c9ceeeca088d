//! The analyzer: a [`RawPipeline`] checked against the stage kinds becomes a [`Pipeline`], whose
//! stages hold typed params and whose inputs are indices that cannot dangle. Every problem in
//! the file is reported at once.

use crate::config::{RawPipeline, RawStage};
use crate::diagnostic::{suggest, Diagnostic, PipelineError};
use crate::graph;
use crate::stages::{find_kind, registry, DynStage, KindInfo, Roles};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const DEFAULT_SEED: u64 = 0;

/// Where a pipeline's stages run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSetting {
    Cpu,
    Cuda,
    Auto,
}

impl DeviceSetting {
    /// The value of `--device` or `device:` (the flag's names, from `clap::ValueEnum`).
    pub fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Auto => "auto",
        }
    }

    /// Every name, for errors' "did you mean".
    pub fn names() -> Vec<&'static str> {
        <Self as clap::ValueEnum>::value_variants()
            .iter()
            .map(|v| v.name())
            .collect()
    }

    /// The device actually used: `auto` is cuda when built with it, else cpu.
    pub fn resolve(self) -> crate::device::Device {
        use crate::device::Device;
        match self {
            Self::Cpu => Device::Cpu,
            Self::Cuda => Device::Cuda,
            Self::Auto if cfg!(feature = "cuda") => Device::Cuda,
            Self::Auto => Device::Cpu,
        }
    }
}

#[derive(Clone)]
pub struct StageDef {
    pub name: String,
    /// The stage as written in the file; sweep variants share it.
    pub origin: String,
    pub kind: &'static KindInfo,
    pub description: Option<String>,
    pub params: Arc<dyn DynStage>,
    /// (role, index of the upstream stage in `Pipeline::stages`).
    pub inputs: Vec<(String, usize)>,
    /// The pipeline's `resources:` overridden by the stage's (the kind's defaults are added
    /// when a job is submitted). Not part of the key.
    pub resources: crate::resources::Resources,
}

impl std::fmt::Debug for StageDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}) {}",
            self.name,
            self.kind.name,
            self.params.canonical_params()
        )
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub file: PathBuf,
    pub description: Option<String>,
    pub seed: u64,
    pub device: DeviceSetting,
    /// `executor:` of the file (the CLI's `--executor` wins over it).
    pub launcher: Option<crate::launcher_setting::LauncherSetting>,
    pub stages: Vec<StageDef>,
    /// Stage indices in a topological order (inputs first; file order among equals).
    pub order: Vec<usize>,
    pub locator: crate::config::Locator,
    /// Stage name → index in `stages`.
    by_name: HashMap<String, usize>,
}

impl Pipeline {
    /// The stage named `name` (a variant's full name, or a stage without a sweep).
    pub fn index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Resolve user-given stage names, with "did you mean" for typos. A stage as written in
    /// the file names all its sweep variants.
    pub fn resolve_names(&self, names: &[String]) -> Result<Vec<usize>, PipelineError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // Stages as written (each names its variants), in file order.
        let mut by_origin: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, s) in self.stages.iter().enumerate() {
            by_origin.entry(s.origin.as_str()).or_default().push(i);
        }
        let mut out = Vec::new();
        let mut taken = HashSet::new();
        let mut diags = Vec::new();
        for n in names {
            let variants: &[usize] = match self.by_name.get(n.as_str()) {
                Some(i) => std::slice::from_ref(i),
                None => by_origin.get(n.as_str()).map_or(&[][..], Vec::as_slice),
            };
            if variants.is_empty() {
                let mut all: Vec<&str> = Vec::new();
                let mut seen = HashSet::new();
                for s in &self.stages {
                    if seen.insert(s.origin.as_str()) {
                        all.push(&s.origin);
                    }
                }
                diags.push(
                    Diagnostic::new(
                        &self.file,
                        "",
                        format!("no stage named `{n}` in pipeline `{}`", self.name),
                    )
                    .with_help(suggest(n, &all, "stages")),
                );
            }
            for &i in variants {
                if taken.insert(i) {
                    out.push(i);
                }
            }
        }
        if diags.is_empty() {
            Ok(out)
        } else {
            Err(PipelineError { diagnostics: diags })
        }
    }

    /// A diagnostic pointing at `path` in the pipeline file.
    pub fn diag(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        locate(&self.file, &self.locator, path, message)
    }
}

fn locate(
    file: &Path,
    locator: &crate::config::Locator,
    path: &str,
    message: impl Into<String>,
) -> Diagnostic {
    if let Some(set) = locator.override_of(path) {
        // The value is not in the file: point at the flag that gave it.
        return Diagnostic::new(format!("--set `{set}`"), path, message);
    }
    let d = Diagnostic::new(file, path, message);
    match locator.find(path) {
        Some((l, c)) => d.at(l, c),
        None => d,
    }
}

/// Apply `--set stage.param=value` overrides to the raw file (typed like YAML).
pub fn apply_overrides(raw: &mut RawPipeline, sets: &[String]) -> Result<(), PipelineError> {
    let mut diags = Vec::new();
    let names: Vec<String> = raw.stages.iter().map(|s| s.name.clone()).collect();
    for s in sets {
        let err = |m: String, h: String| Diagnostic::new(&raw.file, "", m).with_help(h);
        // The first `=` outside brackets: `train[lr=1].epochs=2` names a variant.
        let mut depth = 0i32;
        let eq = s.char_indices().find_map(|(i, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                '=' if depth <= 0 => return Some(i),
                _ => {}
            }
            None
        });
        let Some((lhs, value)) = eq.map(|i| (&s[..i], &s[i + 1..])) else {
            diags.push(err(
                format!("bad --set `{s}`"),
                "write `--set stage.param=value`, e.g. `--set train.epochs=5`".into(),
            ));
            continue;
        };
        let after = lhs.rfind(']').map_or(0, |i| i + 1);
        let Some((stage, key)) = lhs[after..]
            .split_once('.')
            .map(|(a, k)| (&lhs[..after + a.len()], k))
        else {
            if lhs == "seed" {
                match value.trim().parse::<u64>() {
                    Ok(v) => raw.seed = Some(v),
                    Err(_) => diags.push(err(
                        format!("bad --set `{s}`: seed must be a non-negative integer"),
                        "e.g. `--set seed=7`".into(),
                    )),
                }
                continue;
            }
            diags.push(err(
                format!("bad --set `{s}`"),
                "write `--set stage.param=value` (or `--set seed=N`)".into(),
            ));
            continue;
        };
        let v = match crate::config::parse_scalar(value) {
            Ok(v) => v,
            Err(e) => {
                diags.push(err(
                    format!("bad value in --set `{s}`: {e}"),
                    "values are typed like YAML: `10`, `1e-3`, `true`, `[1, 2]`, `text`".into(),
                ));
                continue;
            }
        };
        // `stage.matrix.param=[values]` replaces a sweep axis.
        if let Some(axis) = key.strip_prefix("matrix.") {
            let Some(st) = raw.stages.iter_mut().find(|st| st.name == stage) else {
                let ns: Vec<&str> = names.iter().map(String::as_str).collect();
                diags.push(err(
                    format!("--set `{s}`: no stage named `{stage}`"),
                    suggest(stage, &ns, "stages"),
                ));
                continue;
            };
            let axes: Vec<&str> = st.matrix.iter().map(|(k, _)| k.as_str()).collect();
            let Some(i) = axes.iter().position(|k| *k == axis) else {
                let help = if axes.is_empty() {
                    format!("stage `{stage}` has no `matrix:`; set a param with `--set {stage}.PARAM=VALUE`")
                } else {
                    suggest(axis, &axes, "axes of its matrix")
                };
                diags.push(err(
                    format!("--set `{s}`: stage `{stage}` does not sweep `{axis}`"),
                    help,
                ));
                continue;
            };
            match v {
                serde_json::Value::Array(vs) if !vs.is_empty() => {
                    st.matrix[i].1 = vs;
                    raw.locator
                        .set_by(&format!("stages.{stage}.matrix.{axis}"), s);
                }
                _ => diags.push(err(
                    format!("--set `{s}`: a sweep axis takes a list of values"),
                    format!("e.g. `--set '{stage}.matrix.{axis}=[1, 2]'` (one value: `[1]`)"),
                )),
            }
            continue;
        }
        let targets: Vec<&mut RawStage> = if stage == "*" {
            raw.stages
                .iter_mut()
                .filter(|st| st.params.contains_key(key) || st.matrix.iter().any(|(k, _)| k == key))
                .collect()
        } else {
            raw.stages
                .iter_mut()
                .filter(|st| st.name == stage)
                .collect()
        };
        if targets.is_empty() && stage != "*" {
            let ns: Vec<&str> = names.iter().map(String::as_str).collect();
            let help = if names.iter().any(|n| stage.starts_with(&format!("{n}["))) {
                "a --set applies to a stage as written in the file, with all its variants: \
                 name it without `[...]`, or narrow its sweep with \
                 `--set 'STAGE.matrix.PARAM=[VALUE]'`"
                    .to_string()
            } else {
                suggest(stage, &ns, "stages")
            };
            diags.push(err(format!("--set `{s}`: no stage named `{stage}`"), help));
            continue;
        }
        if targets.is_empty() {
            // A wildcard that matches nothing would silently run the unchanged pipeline.
            let mut set: Vec<&str> = raw
                .stages
                .iter()
                .flat_map(|st| st.params.keys().map(String::as_str))
                .collect();
            set.sort();
            set.dedup();
            let kind_has: Vec<&str> = raw
                .stages
                .iter()
                .filter(|st| find_kind(&st.kind).is_some_and(|k| k.params.contains(&key)))
                .map(|st| st.name.as_str())
                .collect();
            let help = if let Some(first) = kind_has.first() {
                format!(
                    "no stage sets `{key}` in the file, so `*` matches none; name a stage, e.g. `--set {first}.{key}={value}`"
                )
            } else {
                suggest(key, &set, "params set in this pipeline")
            };
            diags.push(err(
                format!("--set `{s}`: no stage sets a param `{key}`"),
                help,
            ));
            continue;
        }
        for t in targets {
            // A swept param takes its value from the matrix: the --set would be dropped.
            if let Some((_, values)) = t.matrix.iter().find(|(k, _)| k == key) {
                let shown: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                diags.push(err(
                    format!(
                        "--set `{s}`: `{key}` of stage `{}` is swept by its `matrix:` ({}), so a value for it would be ignored",
                        t.name,
                        shown.join(", ")
                    ),
                    format!(
                        "to run other values, replace the sweep: `--set '{}.matrix.{key}=[{value}]'`",
                        t.name
                    ),
                ));
                continue;
            }
            t.params.insert(key.to_string(), v.clone());
            raw.locator
                .set_by(&format!("stages.{}.params.{key}", t.name), s);
        }
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(PipelineError { diagnostics: diags })
    }
}

/// A diagnostic at a key path of the file (or at the `--set` that gave the value there).
type At<'a> = dyn Fn(&str, String) -> Diagnostic + 'a;

/// Check a raw pipeline against the kinds and build the validated pipeline: the passes after
/// the file is read, overridden and expanded ([`load`]). Every problem of a pass is reported at
/// once; a pass that found problems stops the ones after it.
pub fn analyze(raw: RawPipeline) -> Result<Pipeline, PipelineError> {
    let file = raw.file.clone();
    let at = |path: &str, msg: String| locate(&file, &raw.locator, path, msg);
    let mut diags = Vec::new();
    let settings = settings(&raw, &at, &mut diags);
    let resolved = resolve(&raw, &settings.resources, &at, &mut diags);
    let (inputs, wiring) = wire(&raw, &resolved, &at, &mut diags);
    if !diags.is_empty() {
        return Err(report(diags, wiring));
    }
    let stages: Vec<StageDef> = raw
        .stages
        .iter()
        .zip(resolved)
        .zip(inputs)
        .filter_map(|((st, r), inputs)| {
            let (kind, params, resources) = (r.kind?, r.params?, r.resources);
            Some(StageDef {
                resources,
                name: st.name.clone(),
                origin: st.origin.clone(),
                kind,
                description: st.description.clone(),
                params,
                inputs,
            })
        })
        .collect();
    let order = order(&stages, &at)?;
    if !wiring.is_empty() {
        return Err(PipelineError {
            diagnostics: wiring,
        });
    }
    let columns = check_plot_columns(&stages, &at);
    if !columns.is_empty() {
        return Err(PipelineError {
            diagnostics: columns,
        });
    }
    let by_name = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();
    Ok(Pipeline {
        by_name,
        name: raw.name,
        file: raw.file,
        description: raw.description,
        seed: raw.seed.unwrap_or(DEFAULT_SEED),
        device: settings.device,
        launcher: settings.launcher,
        stages,
        order,
        locator: raw.locator,
    })
}

/// The problems of the file, each once (sweep variants repeat their origin's mistakes), in the
/// order of the file, whichever pass found them.
fn report(mut diags: Vec<Diagnostic>, mut wiring: Vec<Diagnostic>) -> PipelineError {
    diags.append(&mut wiring);
    let mut seen = HashSet::new();
    diags.retain(|d| seen.insert(format!("{:?}|{}|{}", d.line, d.path, d.message)));
    diags.sort_by_key(|d| (d.line.unwrap_or(usize::MAX), d.column.unwrap_or(0)));
    PipelineError { diagnostics: diags }
}

/// The pipeline-wide settings: its name, device, executor and resources.
struct Settings {
    device: DeviceSetting,
    launcher: Option<crate::launcher_setting::LauncherSetting>,
    resources: crate::resources::Resources,
}

/// Pass 1: the pipeline-wide settings.
fn settings(raw: &RawPipeline, at: &At, diags: &mut Vec<Diagnostic>) -> Settings {
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        diags.push(
            at("name", format!("invalid pipeline name `{}`", raw.name)).with_help(
                "use letters, digits, `_` and `-` (it names the folder outputs/<name>/)",
            ),
        );
    }
    let device = match raw.device.as_deref() {
        None => DeviceSetting::Cpu,
        Some(d) => DeviceSetting::parse(d).unwrap_or_else(|| {
            diags.push(
                at("device", format!("unknown device `{d}`")).with_help(suggest(
                    d,
                    &DeviceSetting::names(),
                    "devices",
                )),
            );
            DeviceSetting::Cpu
        }),
    };
    let launcher = raw.executor.as_ref().and_then(|e| {
        match crate::launcher_setting::LauncherSetting::parse(&e.kind, &e.options) {
            Ok(s) => Some(s),
            Err((key, msg, help)) => {
                diags.push(at(&key, msg).with_help(help));
                None
            }
        }
    });
    let resources = match &raw.resources {
        None => crate::resources::Resources::default(),
        Some(v) => parse_resources(v, "resources", at, diags),
    };
    Settings {
        device,
        launcher,
        resources,
    }
}

/// A stage's kind, typed params and resources; `None` where the file is wrong.
struct Resolved {
    kind: Option<&'static KindInfo>,
    params: Option<Arc<dyn DynStage>>,
    resources: crate::resources::Resources,
}

/// Pass 2: each stage's kind, params (values a matrix replaces are checked too) and resources.
fn resolve(
    raw: &RawPipeline,
    pipeline_resources: &crate::resources::Resources,
    at: &At,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Resolved> {
    let kinds: Vec<&str> = registry().iter().map(|k| k.name).collect();
    let mut out = Vec::with_capacity(raw.stages.len());
    for st in &raw.stages {
        let base = format!("stages.{}", st.origin);
        let kind = find_kind(&st.kind);
        if kind.is_none() {
            diags.push(
                at(
                    &format!("{base}.kind"),
                    format!("unknown stage kind `{}`", st.kind),
                )
                .with_help(suggest(&st.kind, &kinds, "kinds")),
            );
        }
        let params = kind.and_then(|k| {
            check_shadowed(st, k, &base, at, diags);
            match (k.parse)(&st.params) {
                Ok(p) => Some(p),
                Err(issues) => {
                    for i in issues {
                        let mut d = at(&format!("{base}.params.{}", i.key), i.message);
                        d.help = i.help;
                        diags.push(d);
                    }
                    None
                }
            }
        });
        let resources = match (&st.resources, kind) {
            (Some(v), Some(_)) => pipeline_resources.overridden_by(&parse_resources(
                v,
                &format!("{base}.resources"),
                at,
                diags,
            )),
            _ => pipeline_resources.clone(),
        };
        out.push(Resolved {
            kind,
            params,
            resources,
        });
    }
    out
}

/// A value under `params:` that the matrix replaces is never used, but a wrong one is still a
/// mistake in the file: check it as if there were no matrix.
fn check_shadowed(
    st: &RawStage,
    kind: &KindInfo,
    base: &str,
    at: &At,
    diags: &mut Vec<Diagnostic>,
) {
    if st.shadowed.is_empty() {
        return;
    }
    let mut written = st.params.clone();
    for (k, v) in &st.shadowed {
        written.insert(k.clone(), v.clone());
    }
    let Err(issues) = (kind.parse)(&written) else {
        return;
    };
    for i in issues {
        if let Some((_, v)) = st.shadowed.iter().find(|(k, _)| *k == i.key) {
            let mut d = at(
                &format!("{base}.params.{}", i.key),
                format!(
                    "{} (this value is replaced by the `matrix:` axis `{}`, but must still be valid)",
                    i.message, i.key
                ),
            );
            d.help = i
                .help
                .or_else(|| Some(format!("found {v}; or remove it from `params:`")));
            diags.push(d);
        }
    }
}

/// Pass 3: each stage's inputs: roles its kind has, stages that exist, and artifact types the
/// role accepts. Type mismatches come back apart (the second list): in a cycle they are beside
/// the point, so they are reported after the cycle check.
fn wire(
    raw: &RawPipeline,
    resolved: &[Resolved],
    at: &At,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<Vec<(String, usize)>>, Vec<Diagnostic>) {
    let index_of: HashMap<&str, usize> = raw
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut origins: Option<Vec<&str>> = None;
    let mut wiring: Vec<Diagnostic> = Vec::new();
    let mut all = Vec::with_capacity(raw.stages.len());
    for (st, r) in raw.stages.iter().zip(resolved) {
        let mut inputs = Vec::new();
        let Some(kind) = r.kind else {
            all.push(inputs);
            continue;
        };
        let base = format!("stages.{}", st.origin);
        for (role, up) in &st.inputs {
            let ipath = format!("{base}.inputs.{role}");
            if let Roles::Fixed(roles) = kind.roles {
                if !roles.contains(&role.as_str()) {
                    diags.push(
                        at(
                            &ipath,
                            format!("kind `{}` has no input `{role}`", kind.name),
                        )
                        .with_help(suggest(role, roles, "inputs")),
                    );
                    continue;
                }
            }
            match index_of.get(up.as_str()).copied() {
                Some(i) => {
                    if let Some(d) = check_wiring(&raw.stages, st, kind, role, i, &ipath, at) {
                        if !wiring
                            .iter()
                            .any(|x: &Diagnostic| x.path == d.path && x.message == d.message)
                        {
                            wiring.push(d);
                        }
                    }
                    inputs.push((role.clone(), i))
                }
                None => {
                    // Stages as written in the file (an input names all variants of one).
                    let origins = origins.get_or_insert_with(|| {
                        let mut seen = HashSet::new();
                        raw.stages
                            .iter()
                            .map(|s| s.origin.as_str())
                            .filter(|o| seen.insert(*o))
                            .collect::<Vec<&str>>()
                    });
                    let others: Vec<&str> = origins
                        .iter()
                        .copied()
                        .filter(|o| *o != st.origin)
                        .collect();
                    diags.push(
                        at(
                            &ipath,
                            format!("input `{role}` refers to unknown stage `{up}`"),
                        )
                        .with_help(suggest(up, &others, "stages")),
                    );
                }
            }
        }
        check_missing_inputs(st, kind, &base, at, diags);
        all.push(inputs);
    }
    (all, wiring)
}

/// The roles a kind requires that the stage leaves out.
fn check_missing_inputs(
    st: &RawStage,
    kind: &KindInfo,
    base: &str,
    at: &At,
    diags: &mut Vec<Diagnostic>,
) {
    match kind.roles {
        Roles::Fixed(roles) => {
            for r in roles {
                if !st.inputs.iter().any(|(role, _)| role == r) {
                    diags.push(
                        at(
                            &format!("{base}.inputs"),
                            format!(
                                "stage `{}` (kind `{}`) is missing its input `{r}`",
                                st.name, kind.name
                            ),
                        )
                        .with_help(format!("add `inputs: {{ {r}: <stage> }}`")),
                    );
                }
            }
        }
        Roles::AnyNonEmpty => {
            if st.inputs.is_empty() {
                diags.push(
                    at(
                        base,
                        format!(
                            "stage `{}` (kind `{}`) needs at least one input",
                            st.name, kind.name
                        ),
                    )
                    .with_help("add `inputs: [stage_a, stage_b]`"),
                );
            }
        }
    }
}

/// Pass 4: a topological order of the stages (inputs first, file order among equals), or the
/// cycle that prevents one.
fn order(stages: &[StageDef], at: &At) -> Result<Vec<usize>, PipelineError> {
    let edges: Vec<(usize, usize)> = stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.inputs.iter().map(move |(_, u)| (*u, i)))
        .collect();
    graph::topo_order(stages.len(), &edges).map_err(|cycle| {
        let loop_names: Vec<&str> = cycle.iter().map(|&i| stages[i].name.as_str()).collect();
        let first = loop_names[0];
        PipelineError {
            diagnostics: vec![at(
                &format!("stages.{first}.inputs"),
                format!(
                    "the stages form a cycle: {} → {first}",
                    loop_names.join(" → ")
                ),
            )
            .with_help("a stage cannot depend on its own output; remove one of these inputs")],
        }
    })
}

/// A `plot` of its inputs' CSV files whose `x` or `y` names a column those files cannot have
/// (where the producing kind's columns are fixed): found now, not after the training.
fn check_plot_columns(stages: &[StageDef], at: &At) -> Vec<Diagnostic> {
    let mut diags: Vec<Diagnostic> = Vec::new();
    for st in stages.iter().filter(|s| s.kind.name == "plot") {
        let p = st.params.canonical_params();
        if p.get("source").and_then(|v| v.as_str()) != Some("file") {
            continue;
        }
        let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
            match v {
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                _ => vec![],
            }
        };
        let mut files = strings(p.get("file"));
        files.extend(strings(p.get("files")));
        let wanted: Vec<(&str, String)> = strings(p.get("x"))
            .into_iter()
            .map(|c| ("x", c))
            .chain(strings(p.get("y")).into_iter().map(|c| ("y", c)))
            .collect();
        for (_, up) in &st.inputs {
            let upstream = &stages[*up];
            let Some(art) = upstream.kind.output else {
                continue;
            };
            for f in &files {
                let Some(cols) = art.csv_columns(f) else {
                    continue;
                };
                for (param, c) in &wanted {
                    if cols.contains(&c.as_str()) {
                        continue;
                    }
                    let path = format!("stages.{}.params.{param}", st.origin);
                    let d = at(
                        &path,
                        format!(
                            "`{f}` of a `{}` stage (input `{}`) has no column `{c}`",
                            upstream.kind.name, upstream.origin
                        ),
                    )
                    .with_help(suggest(c, cols, "columns"));
                    if !diags
                        .iter()
                        .any(|x| x.path == d.path && x.message == d.message)
                    {
                        diags.push(d);
                    }
                }
            }
        }
    }
    diags
}

/// Whether the stage feeding `role` produces an artifact type the role accepts; the
/// diagnostic names what is needed, what the stage produces, and a stage that would fit.
fn check_wiring(
    stages: &[RawStage],
    st: &RawStage,
    kind: &KindInfo,
    role: &str,
    up: usize,
    ipath: &str,
    at: &At,
) -> Option<Diagnostic> {
    let accepts = kind.accepts(role)?;
    // An unknown upstream kind is reported on its own.
    let produced = find_kind(&stages[up].kind)?.output?;
    if accepts.contains(&produced) {
        return None;
    }
    let produces = |s: &RawStage| {
        find_kind(&s.kind)
            .and_then(|k| k.output)
            .is_some_and(|o| accepts.contains(&o))
    };
    // Stages that would fit, those fed (directly or not) by the given one first: `chars` →
    // `vocab` → `batches` makes `batches` the likely intent for `data: chars`.
    let below = descendants(stages, up);
    // A stage fed by this one would make a cycle.
    let fed = stages
        .iter()
        .position(|x| x.name == st.name)
        .map(|me| descendants(stages, me))
        .unwrap_or_default();
    let mut fits: Vec<(bool, &str, &str, &str)> = Vec::new();
    for (i, s) in stages.iter().enumerate() {
        if s.origin != st.origin
            && produces(s)
            && !fits.iter().any(|f| f.1 == s.origin)
            && !fed.contains(&i)
        {
            let out = find_kind(&s.kind)
                .and_then(|k| k.output)
                .map_or("", |o| o.name());
            fits.push((below.contains(&i), s.origin.as_str(), s.kind.as_str(), out));
        }
    }
    fits.sort_by_key(|f| !f.0);
    let need = crate::artifacts::describe(accepts);
    let help = match fits.first() {
        Some((_, name, k, out)) => {
            let mut h = format!("did you mean `{name}`? (a `{k}` stage, which produces {out})");
            if fits.len() > 1 {
                let all: Vec<String> = fits.iter().map(|f| format!("`{}`", f.1)).collect();
                h.push_str(&format!("; stages producing {need}: {}", all.join(", ")));
            }
            h
        }
        None => {
            let kinds: Vec<String> = registry()
                .iter()
                .filter(|k| k.output.is_some_and(|o| accepts.contains(&o)))
                .map(|k| format!("`{}`", k.name))
                .collect();
            format!(
                "no stage here produces {need}; add one of kind {}",
                kinds.join(" or ")
            )
        }
    };
    Some(
        at(
            ipath,
            format!(
                "`{}.inputs.{role}` needs {need}; `{}` produces {}",
                st.origin,
                stages[up].origin,
                produced.name()
            ),
        )
        .with_help(help),
    )
}

/// The stages fed, directly or not, by stage `i` (by name, as the raw file wires them).
fn descendants(stages: &[RawStage], i: usize) -> Vec<usize> {
    let mut seen = vec![false; stages.len()];
    let mut stack = vec![i];
    while let Some(j) = stack.pop() {
        for (k, s) in stages.iter().enumerate() {
            if !seen[k] && s.inputs.iter().any(|(_, u)| *u == stages[j].name) {
                seen[k] = true;
                stack.push(k);
            }
        }
    }
    (0..stages.len()).filter(|&k| seen[k]).collect()
}

/// Check a `resources:` mapping (unknown fields with a did-you-mean, types, values).
fn parse_resources(
    v: &serde_json::Value,
    base: &str,
    at: &At,
    diags: &mut Vec<Diagnostic>,
) -> crate::resources::Resources {
    use crate::resources::Resources;
    if !v.is_object() {
        diags.push(
            at(base, "`resources` must be a mapping".into())
                .with_help("e.g. `resources: { cpus: 2, mem: 4G, time: \"2:00:00\" }`"),
        );
        return Resources::default();
    }
    match crate::config::de::from_value::<Resources>(v) {
        Ok(r) => {
            for (field, msg, help) in r.check() {
                diags.push(at(&format!("{base}.{field}"), msg).with_help(help));
            }
            r
        }
        Err(issue) => {
            let (message, help) = issue.explain("resource");
            let d = at(&format!("{base}.{}", issue.key()), message);
            diags.push(match help {
                Some(h) => d.with_help(h),
                None => d,
            });
            Resources::default()
        }
    }
}

/// Load, override and check a pipeline file.
pub fn load(path: &Path, sets: &[String]) -> Result<Pipeline, PipelineError> {
    let mut raw = crate::config::load(path)?;
    apply_overrides(&mut raw, sets)?;
    let raw = crate::sweep::expand(raw)?;
    analyze(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawPipeline {
        crate::config::parse(Path::new("t.yaml"), text).expect("the test file parses")
    }

    fn messages(d: &[Diagnostic]) -> Vec<String> {
        d.iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect()
    }

    const GOOD: &str = "name: t\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/a.txt }\n  toks:\n    kind: tokenize\n    inputs: { corpus: corpus }\n    params: { unit: char }\n";

    #[test]
    fn settings_pass_checks_the_pipeline_wide_fields() {
        let r = raw(
            "name: 'a b'\ndevice: gpu\nexecutor: slurn\nstages:\n  s:\n    kind: toy_sequence\n",
        );
        let at = |p: &str, m: String| Diagnostic::new("t.yaml", p, m);
        let mut diags = Vec::new();
        let s = settings(&r, &at, &mut diags);
        assert_eq!(s.device, DeviceSetting::Cpu);
        assert!(s.launcher.is_none());
        assert_eq!(
            messages(&diags),
            [
                "name: invalid pipeline name `a b`",
                "device: unknown device `gpu`",
                "executor: unknown executor `slurn`"
            ]
        );
        assert!(diags[2]
            .help
            .as_deref()
            .unwrap()
            .contains("did you mean `slurm`"));
    }

    #[test]
    fn resolve_pass_types_params_and_names_unknown_kinds() {
        let r = raw("name: t\nstages:\n  a:\n    kind: tokenise\n  b:\n    kind: toy_sequence\n    params: { length: many }\n  c:\n    kind: toy_sequence\n    params: { length: 5 }\n");
        let at = |p: &str, m: String| Diagnostic::new("t.yaml", p, m);
        let mut diags = Vec::new();
        let out = resolve(&r, &Default::default(), &at, &mut diags);
        assert!(out[0].kind.is_none());
        assert!(out[1].kind.is_some() && out[1].params.is_none());
        assert!(out[2].params.is_some());
        assert_eq!(
            messages(&diags),
            [
                "stages.a.kind: unknown stage kind `tokenise`",
                "stages.b.params.length: wrong type for param `length`: found string \"many\""
            ]
        );
    }

    #[test]
    fn wiring_pass_resolves_inputs_and_keeps_type_mismatches_apart() {
        let text = "name: t\nstages:\n  corpus:\n    kind: load_corpus\n    params: { path: data/a.txt }\n  toks:\n    kind: tokenize\n    inputs: { corpus: corpuss, text: corpus }\n  vocab:\n    kind: build_vocab\n    inputs: { tokens: corpus }\n";
        let r = raw(text);
        let at = |p: &str, m: String| Diagnostic::new("t.yaml", p, m);
        let mut diags = Vec::new();
        let resolved = resolve(&r, &Default::default(), &at, &mut diags);
        diags.clear();
        let (inputs, wiring) = wire(&r, &resolved, &at, &mut diags);
        assert_eq!(
            messages(&diags),
            [
                "stages.toks.inputs.corpus: input `corpus` refers to unknown stage `corpuss`",
                "stages.toks.inputs.text: kind `tokenize` has no input `text`",
            ]
        );
        assert!(diags[0]
            .help
            .as_deref()
            .unwrap()
            .contains("did you mean `corpus`"));
        // `vocab` is wired (to stage 0), but to the wrong type: reported apart.
        assert_eq!(inputs[2], [("tokens".to_string(), 0)]);
        assert_eq!(messages(&wiring).len(), 1);
        assert!(
            wiring[0].message.contains("needs tokens"),
            "{}",
            wiring[0].message
        );

        let good = raw(GOOD);
        let mut diags = Vec::new();
        let resolved = resolve(&good, &Default::default(), &at, &mut diags);
        let (inputs, wiring) = wire(&good, &resolved, &at, &mut diags);
        assert!(diags.is_empty() && wiring.is_empty());
        assert_eq!(inputs, [vec![], vec![("corpus".to_string(), 0)]]);
    }

    #[test]
    fn order_pass_puts_inputs_first_or_names_the_cycle() {
        let p = analyze(raw("name: t\nstages:\n  toks:\n    kind: tokenize\n    inputs: { corpus: corpus }\n    params: { unit: char }\n  corpus:\n    kind: load_corpus\n    params: { path: data/a.txt }\n")).unwrap();
        assert_eq!(p.order, [1, 0]);
        let cyc = "name: t\nstages:\n  a:\n    kind: summary_table\n    inputs: [c]\n  b:\n    kind: summary_table\n    inputs: [a]\n  c:\n    kind: summary_table\n    inputs: [b]\n";
        let e = analyze(raw(cyc)).unwrap_err();
        assert_eq!(
            messages(&e.diagnostics),
            ["stages.a.inputs: the stages form a cycle: a → b → c → a"]
        );
    }
}
