//! Planning is a pure function: which stages a run touches, in which order, and for each
//! whether it is a cache hit or must run (and why). `--dry-run` prints it.

use crate::graph;
use crate::key::{Key, KeyRecord};
use crate::pipeline::Pipeline;
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Hit,
    Run(Reason),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    NotCached,
    Forced,
    /// The entry exists but is broken (the text says how).
    Corrupt(String),
}

/// What the store says about a key, as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    Yes,
    No,
    Broken(String),
}

#[derive(Debug, Clone)]
pub struct Step {
    pub stage: usize,
    pub key: Key,
    pub action: Action,
    /// For a step that runs: the first earlier running step with the same key. The run
    /// computes that key once and serves it to both.
    pub twin: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// Results this run computes: the steps that run, less those that share their key with an
    /// earlier running step.
    pub fn to_run(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.action != Action::Hit && s.twin.is_none())
            .count()
    }

    /// Steps served from the store as the plan is made.
    pub fn cached(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.action == Action::Hit)
            .count()
    }

    /// Steps that run but share their key with an earlier running step: computed once.
    pub fn twins(&self) -> usize {
        self.steps.iter().filter(|s| s.twin.is_some()).count()
    }
}

/// `, N same as another stage` for a one-line count, when N stages run but share their key with
/// another (nothing when none do).
pub fn twins_note(twins: usize) -> String {
    if twins == 0 {
        String::new()
    } else {
        format!(", {twins} same as another stage")
    }
}

/// Edges (upstream, downstream) of a pipeline.
pub fn edges(p: &Pipeline) -> Vec<(usize, usize)> {
    p.stages
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.inputs.iter().map(move |(_, u)| (*u, i)))
        .collect()
}

/// Plan a run of `targets` (all stages when empty) and their ancestors. Stages in `force`, and
/// everything downstream of them, run even when cached.
pub fn make_plan(
    p: &Pipeline,
    records: &[KeyRecord],
    cached: &dyn Fn(&Key) -> Cached,
    targets: &[usize],
    force: &[usize],
) -> Plan {
    let e = edges(p);
    let n = p.stages.len();
    let selected = if targets.is_empty() {
        (0..n).collect()
    } else {
        graph::ancestors(n, &e, targets)
    };
    let forced = graph::descendants(n, &e, force);
    let mut first_run: HashMap<Key, usize> = HashMap::new();
    let steps = p
        .order
        .iter()
        .filter(|i| selected.contains(i))
        .map(|&i| {
            let key = records[i].key();
            let action = if forced.contains(&i) {
                Action::Run(Reason::Forced)
            } else {
                match cached(&key) {
                    Cached::Yes => Action::Hit,
                    Cached::No => Action::Run(Reason::NotCached),
                    Cached::Broken(why) => Action::Run(Reason::Corrupt(why)),
                }
            };
            (i, key, action)
        })
        .enumerate()
        .map(|(at, (i, key, action))| {
            let twin = if action == Action::Hit {
                None
            } else {
                match first_run.get(&key) {
                    Some(&j) => Some(j),
                    None => {
                        first_run.insert(key.clone(), at);
                        None
                    }
                }
            };
            Step {
                stage: i,
                key,
                action,
                twin,
            }
        })
        .collect();
    Plan { steps }
}

/// The plan as a dry run shows it.
pub struct PlanView<'a>(pub &'a Pipeline, pub &'a Plan);

impl fmt::Display for PlanView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, plan) = (self.0, self.1);
        writeln!(
            f,
            "plan for `{}`: {} stages, {} to run, {} cached{}",
            p.name,
            plan.steps.len(),
            plan.to_run(),
            plan.cached(),
            twins_note(plan.twins())
        )?;
        let w = plan
            .steps
            .iter()
            .map(|s| p.stages[s.stage].name.len())
            .max()
            .unwrap_or(0);
        let wk = plan
            .steps
            .iter()
            .map(|s| p.stages[s.stage].kind.name.len())
            .max()
            .unwrap_or(0);
        for s in &plan.steps {
            let st = &p.stages[s.stage];
            let (what, why) = match (&s.action, s.twin) {
                (Action::Hit, _) => ("hit", String::new()),
                (Action::Run(_), Some(j)) => (
                    "same",
                    format!(
                        "same key as {}: computed once",
                        p.stages[plan.steps[j].stage].name
                    ),
                ),
                (Action::Run(Reason::NotCached), None) => ("run", "not cached".to_string()),
                (Action::Run(Reason::Forced), None) => ("run", "forced".to_string()),
                (Action::Run(Reason::Corrupt(w)), None) => {
                    ("run", format!("broken cache entry: {w}"))
                }
            };
            let inputs: Vec<&str> = st
                .inputs
                .iter()
                .map(|(_, u)| p.stages[*u].name.as_str())
                .collect();
            let from = if inputs.is_empty() {
                String::new()
            } else {
                format!(" <- {}", inputs.join(", "))
            };
            write!(
                f,
                "  {what:<4} {:<w$}  {:<wk$}  {}{from}",
                st.name,
                st.kind.name,
                s.key.short()
            )?;
            if !why.is_empty() {
                write!(f, "  ({why})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
