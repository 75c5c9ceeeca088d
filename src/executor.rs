//! Runs a plan: hits are published, misses run in topological order (`-j N` at once), each
//! output is committed to the store, and a failure names the stages it skips.

use crate::cache::{Lookup, Store};
use crate::context::StageCtx;
use crate::key::{Key, KeyRecord};
use crate::pipeline::Pipeline;
use crate::plan::{Action, Plan};
use crate::progress::Output;
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

/// One stage to compute: everything a launcher needs, nothing about the plan or the store.
pub struct Job<'a> {
    pub pipeline: &'a Pipeline,
    pub stage: usize,
    pub key: Key,
    pub seed: u64,
    pub device: String,
    pub root: PathBuf,
    /// role → (upstream kind, upstream artifact folder)
    pub inputs: Vec<(String, crate::context::InputInfo)>,
    /// The folder to write the stage's files into.
    pub out: PathBuf,
    /// Where the stage may keep checkpoints (kept across crashes, dropped once committed).
    pub checkpoints: PathBuf,
}

/// How a stage is launched. The local launcher runs it in this process; a cluster launcher
/// would submit it as a job that writes into the same (shared) store folder.
pub trait Launcher: Sync {
    fn launch(&self, job: &Job, out: &Output) -> Result<()>;
}

pub struct LocalLauncher;

impl Launcher for LocalLauncher {
    fn launch(&self, job: &Job, out: &Output) -> Result<()> {
        let st = &job.pipeline.stages[job.stage];
        let progress = out.stage(&st.name);
        let mut ctx = StageCtx::new(
            &st.name,
            job.seed,
            &job.root,
            &job.device,
            job.inputs.clone(),
            job.out.clone(),
            job.checkpoints.clone(),
            progress.clone(),
        );
        let params = st.params.clone();
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| params.run(&mut ctx)));
        progress.finish();
        match result {
            Ok(r) => r?,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                return Err(anyhow!("the stage panicked: {msg}"));
            }
        }
        ctx.finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Hit,
    Ran,
    Failed,
    Skipped,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub pipeline: String,
    pub file: String,
    pub started_unix_ms: u128,
    pub seconds: f64,
    pub seed: u64,
    pub device: String,
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
}

pub struct ExecOptions {
    pub jobs: usize,
    pub keep_going: bool,
    pub root: PathBuf,
    pub device: String,
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

/// Execute `plan`. Returns the run record (also written to `outputs/<pipeline>/runs/`).
pub fn execute(
    p: &Pipeline,
    records: &[KeyRecord],
    plan: &Plan,
    store: &Store,
    opts: &ExecOptions,
    launcher: &dyn Launcher,
    out: &Output,
) -> Result<RunRecord> {
    let t0 = Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let n = plan.steps.len();
    let mut status: Vec<Option<Status>> = vec![None; n];
    let mut seconds = vec![0.0; n];
    let mut errors: Vec<Option<String>> = vec![None; n];
    // Finished and usable as an input (a hit, or ran and committed).
    let mut done = vec![false; n];
    let pos_of = |stage: usize| plan.steps.iter().position(|s| s.stage == stage);
    let w = plan
        .steps
        .iter()
        .map(|s| p.stages[s.stage].name.len())
        .max()
        .unwrap_or(0);

    for (i, s) in plan.steps.iter().enumerate() {
        if s.action == Action::Hit {
            publish(store, p, s.stage, &s.key)?;
            status[i] = Some(Status::Hit);
            done[i] = true;
            out.println(&format!(
                "  hit     {:<w$}  {}",
                p.stages[s.stage].name,
                s.key.short()
            ));
        }
    }

    let mut running = 0usize;
    let mut stop = false;
    let (tx, rx) = mpsc::channel::<(usize, Result<()>, f64, PathBuf)>();
    std::thread::scope(|scope| -> Result<()> {
        loop {
            // Start every ready step, up to the job limit.
            let mut progressed = false;
            if !stop {
                for i in 0..n {
                    if running >= opts.jobs.max(1) {
                        break;
                    }
                    if status[i].is_some() {
                        continue;
                    }
                    let st = &p.stages[plan.steps[i].stage];
                    let ready = st
                        .inputs
                        .iter()
                        .all(|(_, u)| pos_of(*u).is_some_and(|j| done[j]));
                    if !ready {
                        continue;
                    }
                    // Two stages with the same key are the same computation: run it once.
                    let forced = plan.steps[i].action == Action::Run(crate::plan::Reason::Forced);
                    let twin = (0..n).find(|&j| {
                        !forced
                            && j != i
                            && plan.steps[j].key == plan.steps[i].key
                            && status[j].is_some()
                    });
                    if let Some(j) = twin {
                        if done[j] {
                            publish(store, p, plan.steps[i].stage, &plan.steps[i].key)?;
                            status[i] = Some(Status::Hit);
                            done[i] = true;
                            progressed = true;
                            out.println(&format!(
                                "  hit     {:<w$}  {} (same as {})",
                                st.name,
                                plan.steps[i].key.short(),
                                p.stages[plan.steps[j].stage].name
                            ));
                        }
                        continue;
                    }
                    let key = plan.steps[i].key.clone();
                    let staging = store.staging(&key)?;
                    let inputs = st
                        .inputs
                        .iter()
                        .map(|(role, u)| {
                            let up = &p.stages[*u];
                            let info = crate::context::InputInfo {
                                stage: up.name.clone(),
                                kind: up.kind.name.to_string(),
                                params: up.params.canonical_params(),
                                dir: store.object_dir(&plan.steps[pos_of(*u).unwrap()].key),
                            };
                            (role.clone(), info)
                        })
                        .collect();
                    let checkpoints = store.checkpoint_dir(&key).join("ckpt");
                    let job = Job {
                        pipeline: p,
                        stage: plan.steps[i].stage,
                        checkpoints,
                        key,
                        seed: p.seed,
                        device: opts.device.clone(),
                        root: opts.root.clone(),
                        inputs,
                        out: staging.clone(),
                    };
                    status[i] = Some(Status::Ran); // provisional: in flight
                    running += 1;
                    out.println(&format!("  run     {:<w$}  {}", st.name, st.kind.name));
                    let tx = tx.clone();
                    let out = out.clone();
                    scope.spawn(move || {
                        let t = Instant::now();
                        let r = launcher.launch(&job, &out);
                        let _ = tx.send((i, r, t.elapsed().as_secs_f64(), staging));
                    });
                }
            }
            if progressed {
                continue;
            }
            if running == 0 {
                break;
            }
            let (i, result, secs, staging) = rx.recv().expect("a worker reports back");
            running -= 1;
            seconds[i] = secs;
            let st = &p.stages[plan.steps[i].stage];
            let committed = result
                .and_then(|()| {
                    store.commit(&staging, &records[plan.steps[i].stage], &st.name, secs)
                })
                .and_then(|_| publish(store, p, plan.steps[i].stage, &plan.steps[i].key));
            match committed {
                Ok(_) => {
                    done[i] = true;
                    let _ = std::fs::remove_dir_all(store.checkpoint_dir(&plan.steps[i].key));
                    out.println(&format!("  ran     {:<w$}  in {}", st.name, fmt_secs(secs)))
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    status[i] = Some(Status::Failed);
                    errors[i] = Some(format!("{e:#}"));
                    let downstream: Vec<usize> = crate::graph::descendants(
                        p.stages.len(),
                        &crate::plan::edges(p),
                        &[plan.steps[i].stage],
                    )
                    .into_iter()
                    .filter(|&d| d != plan.steps[i].stage)
                    .collect();
                    let mut skipped = Vec::new();
                    for d in downstream {
                        if let Some(j) = pos_of(d) {
                            if status[j].is_none() {
                                status[j] = Some(Status::Skipped);
                                skipped.push(p.stages[d].name.clone());
                            }
                        }
                    }
                    out.println(&format!(
                        "  FAILED  {:<w$}  after {}",
                        st.name,
                        fmt_secs(secs)
                    ));
                    eprintln!("error in stage `{}`: {e:#}", st.name);
                    if !skipped.is_empty() {
                        eprintln!(
                            "  skipping downstream of `{}`: {}",
                            st.name,
                            skipped.join(", ")
                        );
                    }
                    if !opts.keep_going {
                        stop = true;
                    }
                }
            }
        }
        Ok(())
    })?;

    let mut stages = Vec::new();
    for (i, s) in plan.steps.iter().enumerate() {
        let st = &p.stages[s.stage];
        stages.push(StageRun {
            name: st.name.clone(),
            kind: st.kind.name.to_string(),
            key: s.key.clone(),
            status: status[i].unwrap_or(Status::Skipped),
            seconds: seconds[i],
            error: errors[i].clone(),
        });
    }
    let not_started: Vec<&str> = stages
        .iter()
        .zip(&status)
        .filter(|(_, s)| s.is_none())
        .map(|(r, _)| r.name.as_str())
        .collect();
    if !not_started.is_empty() {
        eprintln!(
            "  not started after the failure (use --keep-going to run independent stages): {}",
            not_started.join(", ")
        );
    }
    let resolved = p
        .stages
        .iter()
        .map(|s| {
            let inputs: BTreeMap<&str, &str> = s.inputs.iter().map(|(r, u)| (r.as_str(), p.stages[*u].name.as_str())).collect();
            (s.name.clone(), serde_json::json!({ "kind": s.kind.name, "params": s.params.canonical_params(), "inputs": inputs }))
        })
        .collect();
    let record = RunRecord {
        pipeline: p.name.clone(),
        file: p.file.display().to_string(),
        started_unix_ms,
        seconds: t0.elapsed().as_secs_f64(),
        seed: p.seed,
        device: opts.device.clone(),
        stages,
        resolved,
    };
    write_run_record(store, &record)?;
    Ok(record)
}

fn write_run_record(store: &Store, record: &RunRecord) -> Result<()> {
    let dir = store.runs_dir(&record.pipeline);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!(
        "{}-{}.json",
        record.started_unix_ms,
        std::process::id()
    ));
    crate::cache::write_synced(&path, &serde_json::to_vec_pretty(record)?)
}

/// Show a stage's entry in `outputs/<pipeline>/<stage>/`; a report also becomes the pipeline's
/// page, `outputs/<pipeline>/report.md`.
fn publish(store: &Store, p: &Pipeline, stage: usize, key: &Key) -> Result<PathBuf> {
    let view = store.publish(&p.name, &p.stages[stage].name, key)?;
    if p.stages[stage].kind.name == "report" {
        let md = std::fs::read(view.join("report.md"))?;
        crate::cache::write_synced(&store.outputs().join(&p.name).join("report.md"), &md)?;
    }
    Ok(view)
}

/// Whether the store can serve a key, as the planner needs it (warns on broken entries).
pub fn cached_state(store: &Store, key: &Key) -> crate::plan::Cached {
    match store.lookup(key) {
        Lookup::Hit(_) => crate::plan::Cached::Yes,
        Lookup::Miss => crate::plan::Cached::No,
        Lookup::Corrupt(why) => crate::plan::Cached::Broken(why),
    }
}
