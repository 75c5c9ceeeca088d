//! Runs a plan: a small state machine over the plan's steps (waiting → ready → submitted →
//! done, failed, skipped or cancelled) that drives a [`Launcher`]. Hits are published at once;
//! a step is submitted once its inputs are committed, up to `-j N` at a time; a finished job's
//! entry is checked in the store and published; a failure names the stages it skips.

use crate::cache::{Lookup, Store};
use crate::job::{JobInput, JobSpec, Outcome, JOB_SCHEMA};
use crate::key::{Key, KeyRecord};
use crate::launcher::Launcher;
use crate::pipeline::Pipeline;
use crate::plan::{Action, Plan, Reason};
use crate::progress::Output;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Served from the store.
    Hit,
    /// Computed by this run.
    Ran,
    /// Computed by another run at the same time (this run waited on its claim).
    Reused,
    /// Taken from the remote store (`--remote`), verified, then served like a hit.
    Pulled,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Submitted,
    Done(Status),
}

#[derive(Debug, Clone, Serialize)]
pub struct StageRun {
    pub name: String,
    pub kind: String,
    pub key: Key,
    pub status: Status,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Notes on this run of the stage (resumed from a checkpoint, waited for another run…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The job's own log (`--executor process` and `slurm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The cluster's job id (`--executor slurm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub pipeline: String,
    pub file: String,
    pub started_unix_ms: u128,
    pub seconds: f64,
    pub seed: u64,
    pub device: crate::device::Device,
    pub executor: String,
    pub stages: Vec<StageRun>,
    /// The resolved pipeline: each stage's kind, typed params and inputs.
    pub resolved: BTreeMap<String, serde_json::Value>,
}

impl RunRecord {
    pub fn failed(&self) -> usize {
        self.stages
            .iter()
            .filter(|s| s.status == Status::Failed)
            .count()
    }

    pub fn count(&self, status: Status) -> usize {
        self.stages.iter().filter(|s| s.status == status).count()
    }
}

pub struct ExecOptions {
    pub jobs: usize,
    pub keep_going: bool,
    pub root: PathBuf,
    pub device: crate::device::Device,
    pub threads: usize,
    pub executor: crate::launcher::ExecutorKind,
    /// `<ms>-<pid>`: names the run record and its folder of job files.
    pub run_id: String,
    pub started_unix_ms: u128,
    /// The remote store (`--remote`): says which hits were pulled, and takes what this run
    /// computes (pushed in the background once committed).
    pub remote: Option<std::sync::Arc<crate::remote::Link>>,
}

fn fmt_secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{:.0} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    }
}

/// The job description of step `i` (everything a launcher needs, nothing about the plan).
fn job_spec(
    p: &Pipeline,
    records: &[KeyRecord],
    plan: &Plan,
    store: &Store,
    opts: &ExecOptions,
    i: usize,
) -> JobSpec {
    let step = &plan.steps[i];
    let st = &p.stages[step.stage];
    JobSpec {
        schema: JOB_SCHEMA,
        pipeline: p.name.clone(),
        stage: st.name.clone(),
        kind: st.kind.name.to_string(),
        params: st.params.job_params(),
        seed: p.seed,
        device: opts.device,
        threads: opts.threads,
        key: step.key.clone(),
        record: records[step.stage].clone(),
        inputs: st
            .inputs
            .iter()
            .map(|(role, u)| {
                let up = &p.stages[*u];
                let key = records[*u].key();
                JobInput {
                    role: role.clone(),
                    stage: up.name.clone(),
                    kind: up.kind.name.to_string(),
                    params: up.params.canonical_params(),
                    dir: store.object_dir(&key),
                    key,
                }
            })
            .collect(),
        store: store.meta().to_path_buf(),
        root: opts.root.clone(),
        force: step.action == Action::Run(Reason::Forced),
        resources: crate::resources::Resources::defaults(st.kind.uses_device, opts.threads)
            .overridden_by(&st.resources),
        heavy: st.kind.uses_device,
    }
}

/// Execute `plan`. Returns the run record (also written to `outputs/<pipeline>/runs/`).
pub fn execute(
    p: &Pipeline,
    records: &[KeyRecord],
    plan: &Plan,
    store: &Store,
    opts: &ExecOptions,
    launcher: &mut dyn Launcher,
    out: &Output,
) -> Result<RunRecord> {
    let t0 = Instant::now();
    let n = plan.steps.len();
    let mut state = vec![State::Waiting; n];
    let mut seconds = vec![0.0; n];
    let mut errors: Vec<Option<String>> = vec![None; n];
    let mut notes: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut logs: Vec<Option<String>> = vec![None; n];
    let mut jobs: Vec<Option<String>> = vec![None; n];
    let pos: BTreeMap<usize, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.stage, i))
        .collect();
    let w = plan
        .steps
        .iter()
        .map(|s| p.stages[s.stage].name.len())
        .max()
        .unwrap_or(0);
    let keys: Vec<Key> = plan.steps.iter().map(|s| s.key.clone()).collect();
    // The store was checked writable before the plan (`Store::prepare`).
    let live = store.register_run(&p.name, &keys)?;

    for (i, s) in plan.steps.iter().enumerate() {
        if s.action == Action::Hit {
            let pulled = opts.remote.as_ref().is_some_and(|r| r.was_pulled(&s.key));
            out.println(&format!(
                "  {:<7} {:<w$}  {}",
                if pulled { "pulled" } else { "hit" },
                p.stages[s.stage].name,
                s.key.short()
            ));
            publish(store, p, s.stage, &s.key, out, w, opts)?;
            state[i] = State::Done(if pulled { Status::Pulled } else { Status::Hit });
        }
    }

    let is_done = |s: State| {
        matches!(
            s,
            State::Done(Status::Hit | Status::Ran | Status::Reused | Status::Pulled)
        )
    };
    let mut in_flight = 0usize;
    let mut stop = false;
    loop {
        let mut progressed = false;
        if !stop {
            for i in 0..n {
                if in_flight >= opts.jobs.max(1) {
                    break;
                }
                if state[i] != State::Waiting {
                    continue;
                }
                let st = &p.stages[plan.steps[i].stage];
                let ready = st
                    .inputs
                    .iter()
                    .all(|(_, u)| pos.get(u).is_some_and(|&j| is_done(state[j])));
                if !ready {
                    continue;
                }
                // Two stages with the same key are the same computation: run it once (a forced
                // stage does not take a cached entry, but does take what this run computed).
                let forced = plan.steps[i].action == Action::Run(Reason::Forced);
                let twin = (0..n).find(|&j| {
                    j != i
                        && keys[j] == keys[i]
                        && state[j] != State::Waiting
                        && !(forced && plan.steps[j].action == Action::Hit)
                });
                if let Some(j) = twin {
                    if is_done(state[j]) {
                        publish(store, p, plan.steps[i].stage, &keys[i], out, w, opts)?;
                        state[i] = State::Done(Status::Hit);
                        notes[i].push(format!(
                            "same key as `{}`: computed once",
                            p.stages[plan.steps[j].stage].name
                        ));
                        progressed = true;
                        out.println(&format!(
                            "  hit     {:<w$}  {} (same as {})",
                            st.name,
                            keys[i].short(),
                            p.stages[plan.steps[j].stage].name
                        ));
                    }
                    continue;
                }
                let spec = job_spec(p, records, plan, store, opts, i);
                out.println(&format!("  run     {:<w$}  {}", st.name, st.kind.name));
                match launcher.submit(i, spec) {
                    Ok(()) => {
                        state[i] = State::Submitted;
                        in_flight += 1;
                    }
                    Err(e) => {
                        state[i] = State::Done(Status::Failed);
                        errors[i] = Some(format!("{e:#}"));
                        out.println(&format!("  FAILED  {:<w$}  not started", st.name));
                        fail_and_skip(p, plan, &pos, &mut state, i, &e);
                        stop |= !opts.keep_going;
                    }
                }
            }
        }
        if progressed {
            continue;
        }
        if in_flight == 0 {
            break;
        }
        live.touch();
        for f in launcher.poll(Duration::from_millis(500)) {
            let i = f.id;
            in_flight -= 1;
            let st = &p.stages[plan.steps[i].stage];
            logs[i] = f.log.map(|l| l.display().to_string());
            jobs[i] = f.job;
            // The job's own time when it reports one; else (it died) the time the launcher saw.
            seconds[i] = f.wall.unwrap_or(0.0);
            // Success is a job that says so and an intact entry in the store.
            let committed = f.result.and_then(|r| {
                seconds[i] = r.seconds;
                notes[i] = r.notes.clone();
                match store.lookup(&keys[i]) {
                    Lookup::Hit(_) => {}
                    Lookup::Miss => {
                        anyhow::bail!("the job ended but its entry is not in the store")
                    }
                    Lookup::Corrupt(why) => anyhow::bail!("the job's entry is damaged: {why}"),
                }
                publish(store, p, plan.steps[i].stage, &keys[i], out, w, opts)?;
                Ok(r.outcome)
            });
            match committed {
                Ok(outcome) => {
                    let (status, verb) = match outcome {
                        Outcome::Computed => (Status::Ran, "ran"),
                        Outcome::Reused => (Status::Reused, "reused"),
                    };
                    state[i] = State::Done(status);
                    if let (Outcome::Computed, Some(r)) = (&outcome, &opts.remote) {
                        r.push_soon(keys[i].clone());
                    }
                    let how = match outcome {
                        Outcome::Computed => format!("in {}", fmt_secs(seconds[i])),
                        Outcome::Reused => "computed meanwhile by another run".into(),
                    };
                    out.println(&format!("  {verb:<7} {:<w$}  {how}", st.name));
                }
                Err(e) => {
                    state[i] = State::Done(Status::Failed);
                    errors[i] = Some(format!("{e:#}"));
                    out.println(&format!(
                        "  FAILED  {:<w$}  after {}",
                        st.name,
                        fmt_secs(seconds[i])
                    ));
                    fail_and_skip(p, plan, &pos, &mut state, i, &e);
                    stop |= !opts.keep_going;
                }
            }
        }
    }

    let not_started: Vec<&str> = (0..n)
        .filter(|&i| state[i] == State::Waiting)
        .map(|i| p.stages[plan.steps[i].stage].name.as_str())
        .collect();
    if !not_started.is_empty() {
        eprintln!(
            "  not started after the failure (use --keep-going to run independent stages): {}",
            not_started.join(", ")
        );
    }
    let stages = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let st = &p.stages[s.stage];
            StageRun {
                name: st.name.clone(),
                kind: st.kind.name.to_string(),
                key: s.key.clone(),
                status: match state[i] {
                    State::Done(s) => s,
                    _ => Status::Skipped,
                },
                seconds: seconds[i],
                error: errors[i].clone(),
                notes: notes[i].clone(),
                log: logs[i].clone(),
                job: jobs[i].clone(),
            }
        })
        .collect();
    let resolved = p
        .stages
        .iter()
        .map(|s| {
            let inputs: BTreeMap<&str, &str> = s
                .inputs
                .iter()
                .map(|(r, u)| (r.as_str(), p.stages[*u].name.as_str()))
                .collect();
            (
                s.name.clone(),
                serde_json::json!({ "kind": s.kind.name, "params": s.params.canonical_params(), "inputs": inputs }),
            )
        })
        .collect();
    let record = RunRecord {
        pipeline: p.name.clone(),
        file: p.file.display().to_string(),
        started_unix_ms: opts.started_unix_ms,
        seconds: t0.elapsed().as_secs_f64(),
        seed: p.seed,
        device: opts.device,
        executor: opts.executor.name().to_string(),
        stages,
        resolved,
    };
    let dir = store.runs_dir(&record.pipeline);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::cache::write_synced(
        &dir.join(format!("{}.json", opts.run_id)),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    drop(live);
    Ok(record)
}

/// Mark every not-yet-started stage downstream of step `i` skipped; returns their names.
/// Say why step `i` failed and which stages downstream of it are skipped (and mark them).
fn fail_and_skip(
    p: &Pipeline,
    plan: &Plan,
    pos: &BTreeMap<usize, usize>,
    state: &mut [State],
    i: usize,
    e: &anyhow::Error,
) {
    let name = &p.stages[plan.steps[i].stage].name;
    eprintln!("error in stage `{name}`: {e:#}");
    let skipped = skip_downstream(p, plan, pos, state, i);
    if !skipped.is_empty() {
        eprintln!("  skipping downstream of `{name}`: {}", skipped.join(", "));
    }
}

fn skip_downstream(
    p: &Pipeline,
    plan: &Plan,
    pos: &BTreeMap<usize, usize>,
    state: &mut [State],
    i: usize,
) -> Vec<String> {
    let stage = plan.steps[i].stage;
    let mut skipped = Vec::new();
    for d in crate::graph::descendants(p.stages.len(), &crate::plan::edges(p), &[stage]) {
        if d == stage {
            continue;
        }
        if let Some(&j) = pos.get(&d) {
            if state[j] == State::Waiting {
                state[j] = State::Done(Status::Skipped);
                skipped.push(p.stages[d].name.clone());
            }
        }
    }
    skipped
}

/// Show a stage's entry in `outputs/<pipeline>/<stage>/`; a report also becomes the pipeline's
/// page, `outputs/<pipeline>/report.md`, with a speed section read from its inputs' timing
/// files (`speed.csv`), which are outside every key, and its results page, `report.html`.
/// A view that was there and had to be rebuilt gets a line saying why (`w`: the width of the
/// stage names).
fn publish(
    store: &Store,
    p: &Pipeline,
    stage: usize,
    key: &Key,
    out: &Output,
    w: usize,
    opts: &ExecOptions,
) -> Result<PathBuf> {
    let published = crate::view::publish(
        store.outputs(),
        &p.name,
        &p.stages[stage].name,
        key,
        &store.object_dir(key),
    )?;
    if let Some(why) = &published.rebuilt {
        out.println(&format!(
            "  view    {:<w$}  rebuilt ({why})",
            p.stages[stage].name
        ));
    }
    let view = published.view;
    if p.stages[stage].kind.name == "report" {
        let mut md = std::fs::read_to_string(view.join("report.md"))
            .with_context(|| format!("reading {}", view.join("report.md").display()))?;
        let speeds: Vec<(String, f64)> = p.stages[stage]
            .inputs
            .iter()
            .filter_map(|(_, u)| {
                let name = &p.stages[*u].name;
                let dir = store.outputs().join(&p.name).join(name);
                crate::results::median_speed(&dir).map(|s| (name.clone(), s))
            })
            .collect();
        if !speeds.is_empty() {
            md.push_str("## Speed\n\nWall-clock training speed of this machine, the median over epochs of each stage's `speed.csv`. Timings differ from run to run, so they are kept out of every cached result.\n\n| stage | tokens/s |\n|---|---|\n");
            for (s, v) in speeds {
                md.push_str(&format!("| {s} | {v:.0} |\n"));
            }
        }
        crate::cache::write_synced(
            &store.outputs().join(&p.name).join("report.md"),
            md.as_bytes(),
        )?;
        let run = crate::report_html::RunIdentity::new(
            &opts.root,
            &opts.run_id,
            opts.started_unix_ms,
            &opts.device.to_string(),
            opts.threads,
            opts.executor.name(),
        );
        crate::report_html::write(store.outputs(), p, stage, run, false)?;
    }
    Ok(view)
}

/// Whether the store can serve a key, as the planner needs it (verifies hits).
pub fn cached_state(store: &Store, key: &Key) -> crate::plan::Cached {
    match store.lookup(key) {
        Lookup::Hit(_) => crate::plan::Cached::Yes,
        Lookup::Miss => crate::plan::Cached::No,
        Lookup::Corrupt(why) => crate::plan::Cached::Broken(why),
    }
}
