//! The scheduler: runs a plan as a state machine over its steps, one `StepRun` record each
//! (waiting → submitted → done: hit, ran, reused, failed or skipped), driving a [`Launcher`].
//! - a hit is published at once (`Run::serve_hit`);
//! - a step whose inputs are committed is submitted, up to `-j N` at a time (`Run::submit`);
//!   a step the plan paired with an earlier one of the same key (its twin) waits for that one
//!   and takes its entry instead (`Run::serve_twin`);
//! - a finished job's entry is checked in the store and published (`Run::accept_entry`: the
//!   commit point);
//! - a failure skips what needs it and, without `--keep-going`, stops new submissions
//!   (`Run::fail`); jobs in flight still end and count.

use crate::cache::{Lookup, Store};
use crate::job::{JobInput, JobSpec, Outcome, JOB_SCHEMA};
use crate::key::{Key, KeyRecord};
use crate::launcher::{Finished, Launcher};
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
    /// The launcher (`--executor`, the users' word for it).
    #[serde(rename = "executor")]
    pub launcher: String,
    pub stages: Vec<StageRun>,
    /// The resolved pipeline: each stage's kind, typed params and inputs.
    pub resolved: BTreeMap<String, serde_json::Value>,
    /// The CPU, ISA and matrix-product kernel choices known to this process (`nn::tune`).
    pub kernels: crate::nn::KernelReport,
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
    pub launcher: crate::launcher::LauncherKind,
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
    live: Option<PathBuf>,
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
        live,
    }
}

/// Where a step of the plan is: waiting for its inputs (or its twin), submitted to the
/// launcher, or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Submitted,
    Done(Status),
}

impl State {
    /// Its entry is in the store: the stages downstream (and its twins) can use it.
    fn is_committed(self) -> bool {
        matches!(
            self,
            State::Done(Status::Hit | Status::Ran | Status::Reused | Status::Pulled)
        )
    }
}

/// One step of the plan as the run goes: where it is, and what the run record says of it.
#[derive(Debug, Clone)]
struct StepRun {
    state: State,
    seconds: f64,
    error: Option<String>,
    notes: Vec<String>,
    log: Option<String>,
    job: Option<String>,
    /// The stage's progress file for the live page (outside the store), when the page shows one.
    live: Option<PathBuf>,
}

impl StepRun {
    fn new() -> Self {
        StepRun {
            state: State::Waiting,
            seconds: 0.0,
            error: None,
            notes: Vec::new(),
            log: None,
            job: None,
            live: None,
        }
    }
}

/// A run of a plan: the plan, one record per step, and what it needs to act. Each transition
/// of a step is a method: [`Run::serve_hit`], [`Run::serve_twin`], [`Run::submit`],
/// [`Run::finished`] (which checks the job's entry in [`Run::accept_entry`]) and [`Run::fail`].
struct Run<'a> {
    p: &'a Pipeline,
    records: &'a [KeyRecord],
    plan: &'a Plan,
    store: &'a Store,
    opts: &'a ExecOptions,
    out: &'a Output,
    steps: Vec<StepRun>,
    /// The step of each stage of the plan.
    pos: BTreeMap<usize, usize>,
    /// The width of the stage names in the lines printed.
    w: usize,
    in_flight: usize,
    /// A failure (without `--keep-going`) stops new submissions; jobs in flight still end.
    stop: bool,
}

impl<'a> Run<'a> {
    fn new(
        p: &'a Pipeline,
        records: &'a [KeyRecord],
        plan: &'a Plan,
        store: &'a Store,
        opts: &'a ExecOptions,
        out: &'a Output,
    ) -> Self {
        Run {
            p,
            records,
            plan,
            store,
            opts,
            out,
            steps: vec![StepRun::new(); plan.steps.len()],
            pos: (plan.steps.iter().enumerate())
                .map(|(i, s)| (s.stage, i))
                .collect(),
            w: (plan.steps.iter())
                .map(|s| p.stages[s.stage].name.len())
                .max()
                .unwrap_or(0),
            in_flight: 0,
            stop: false,
        }
    }

    /// The stage of step `i`.
    fn stage(&self, i: usize) -> &'a crate::pipeline::StageDef {
        &self.p.stages[self.plan.steps[i].stage]
    }

    /// Give each step its progress file, for a live page that shows the trainings' progress.
    fn track_progress(&mut self) {
        for i in 0..self.steps.len() {
            let name = &self.stage(i).name;
            self.steps[i].live = Some(crate::live::file(self.store.outputs(), &self.p.name, name));
        }
    }

    /// Remove the progress files this run gave its steps.
    fn clear_progress(&self) {
        for f in self.steps.iter().filter_map(|s| s.live.as_ref()) {
            crate::live::clear(f);
        }
    }

    /// Publish every step the plan found in the store.
    fn serve_hits(&mut self) -> Result<()> {
        for i in 0..self.steps.len() {
            if self.plan.steps[i].action == Action::Hit {
                self.serve_hit(i)?;
            }
        }
        Ok(())
    }

    /// A cache hit: its entry is shown in its view.
    fn serve_hit(&mut self, i: usize) -> Result<()> {
        let (name, key, w) = (&self.stage(i).name, &self.plan.steps[i].key, self.w);
        let pulled = (self.opts.remote.as_ref()).is_some_and(|r| r.was_pulled(key));
        let verb = if pulled { "pulled" } else { "hit" };
        self.out
            .println(&format!("  {verb:<7} {name:<w$}  {}", key.short()));
        publish(
            self.store,
            self.p,
            self.plan.steps[i].stage,
            key,
            self.out,
            w,
        )?;
        self.steps[i].state = State::Done(if pulled { Status::Pulled } else { Status::Hit });
        Ok(())
    }

    /// Whether step `i` waits and the steps it needs are committed: its inputs, and its twin.
    fn is_ready(&self, i: usize) -> bool {
        let committed = |stage: &usize| {
            (self.pos.get(stage)).is_some_and(|&j| self.steps[j].state.is_committed())
        };
        self.steps[i].state == State::Waiting
            && self.stage(i).inputs.iter().all(|(_, u)| committed(u))
            && (self.plan.steps[i].twin).is_none_or(|j| self.steps[j].state.is_committed())
    }

    /// Start what can start, in plan order, up to `-j` jobs in flight: a ready twin is served
    /// from the step it shares its key with, any other ready step is submitted. Returns whether
    /// a twin was served (what is downstream of it may be ready now).
    fn start_ready(&mut self, launcher: &mut dyn Launcher) -> Result<bool> {
        let mut served = false;
        for i in 0..self.steps.len() {
            if self.in_flight >= self.opts.jobs.max(1) {
                break;
            }
            if !self.is_ready(i) {
                continue;
            }
            match self.plan.steps[i].twin {
                Some(j) => {
                    self.serve_twin(i, j)?;
                    served = true;
                }
                None => self.submit(i, launcher),
            }
        }
        Ok(served)
    }

    /// Two stages with the same key are the same computation (the plan pairs them): step `i`
    /// takes what its twin `j` committed.
    fn serve_twin(&mut self, i: usize, j: usize) -> Result<()> {
        let (st, key, w) = (self.stage(i), &self.plan.steps[i].key, self.w);
        let twin = &self.stage(j).name;
        publish(
            self.store,
            self.p,
            self.plan.steps[i].stage,
            key,
            self.out,
            w,
        )?;
        let step = &mut self.steps[i];
        step.state = State::Done(Status::Hit);
        step.notes
            .push(format!("same key as `{twin}`: computed once"));
        self.out.println(&format!(
            "  hit     {:<w$}  {} (same as {twin})",
            st.name,
            key.short()
        ));
        Ok(())
    }

    /// Hand step `i` to the launcher; one it cannot start fails.
    fn submit(&mut self, i: usize, launcher: &mut dyn Launcher) {
        let (st, w) = (self.stage(i), self.w);
        let live = self.steps[i].live.clone();
        // What an earlier run of the stage showed is not this run's progress.
        if let Some(f) = &live {
            crate::live::clear(f);
        }
        let spec = job_spec(
            self.p,
            self.records,
            self.plan,
            self.store,
            self.opts,
            i,
            live,
        );
        self.out
            .println(&format!("  run     {:<w$}  {}", st.name, st.kind.name));
        match launcher.submit(i, spec) {
            Ok(()) => {
                self.steps[i].state = State::Submitted;
                self.in_flight += 1;
            }
            Err(e) => self.fail(i, &e, "not started"),
        }
    }

    /// A job ended. Success is a job that says so and an intact entry in the store.
    fn finished(&mut self, f: Finished) {
        let i = f.id;
        self.in_flight -= 1;
        let step = &mut self.steps[i];
        // The stage's results are in its view from now on (or it failed).
        if let Some(l) = &step.live {
            crate::live::clear(l);
        }
        step.log = f.log.map(|l| l.display().to_string());
        step.job = f.job;
        // The job's own time when it reports one; else (it died) the time the launcher saw.
        step.seconds = f.wall.unwrap_or(0.0);
        let committed = f.result.and_then(|r| {
            self.steps[i].seconds = r.seconds;
            self.steps[i].notes = r.notes;
            self.accept_entry(i)?;
            Ok(r.outcome)
        });
        match committed {
            Ok(outcome) => self.succeeded(i, outcome),
            Err(e) => {
                let after = format!("after {}", fmt_secs(self.steps[i].seconds));
                self.fail(i, &e, &after)
            }
        }
    }

    /// The entry a job of step `i` says it committed: it must be in the store, intact; then it
    /// is shown in its view.
    fn accept_entry(&self, i: usize) -> Result<()> {
        let key = &self.plan.steps[i].key;
        match self.store.lookup(key) {
            Lookup::Hit(_) => {}
            Lookup::Miss => anyhow::bail!("the job ended but its entry is not in the store"),
            Lookup::Corrupt(why) => anyhow::bail!("the job's entry is damaged: {why}"),
        }
        publish(
            self.store,
            self.p,
            self.plan.steps[i].stage,
            key,
            self.out,
            self.w,
        )?;
        Ok(())
    }

    fn succeeded(&mut self, i: usize, outcome: Outcome) {
        let (status, verb, how) = match outcome {
            Outcome::Computed => (
                Status::Ran,
                "ran",
                format!("in {}", fmt_secs(self.steps[i].seconds)),
            ),
            Outcome::Reused => (
                Status::Reused,
                "reused",
                "computed meanwhile by another run".into(),
            ),
        };
        self.steps[i].state = State::Done(status);
        // A result computed here goes to the remote (`--remote`), in the background.
        if let (Outcome::Computed, Some(r)) = (&outcome, &self.opts.remote) {
            r.push_soon(self.plan.steps[i].key.clone());
        }
        let w = self.w;
        self.out
            .println(&format!("  {verb:<7} {:<w$}  {how}", self.stage(i).name));
    }

    /// Step `i` failed (`when`: "not started", "after 3.0 s"): say why, skip what needs it, and
    /// stop submitting unless `--keep-going`.
    fn fail(&mut self, i: usize, e: &anyhow::Error, when: &str) {
        let (name, w) = (&self.stage(i).name, self.w);
        self.steps[i].state = State::Done(Status::Failed);
        self.steps[i].error = Some(format!("{e:#}"));
        self.out.println(&format!("  FAILED  {name:<w$}  {when}"));
        eprintln!("error in stage `{name}`: {e:#}");
        let skipped = self.skip_downstream(i);
        if !skipped.is_empty() {
            eprintln!("  skipping downstream of `{name}`: {}", skipped.join(", "));
        }
        self.stop |= !self.opts.keep_going;
    }

    /// Mark skipped every waiting step that needs step `i`: those downstream of it, its twins,
    /// and theirs in turn. Returns their stage names.
    fn skip_downstream(&mut self, i: usize) -> Vec<String> {
        let edges = crate::plan::edges(self.p);
        let mut skipped = Vec::new();
        let mut roots = vec![i];
        while let Some(r) = roots.pop() {
            let stage = self.plan.steps[r].stage;
            let below = crate::graph::descendants(self.p.stages.len(), &edges, &[stage]);
            for d in below {
                let Some(&j) = self.pos.get(&d) else { continue };
                if self.steps[j].state == State::Waiting && j != r {
                    self.steps[j].state = State::Done(Status::Skipped);
                    skipped.push(self.p.stages[d].name.clone());
                }
            }
            // A twin of a step that will not commit waits for nothing.
            for (t, s) in self.plan.steps.iter().enumerate() {
                if s.twin == Some(r) && self.steps[t].state == State::Waiting {
                    self.steps[t].state = State::Done(Status::Skipped);
                    skipped.push(self.stage(t).name.clone());
                    roots.push(t);
                }
            }
        }
        skipped
    }

    /// The stages that never started: after a failure without `--keep-going`, those that did
    /// not need the failed one.
    fn not_started(&self) -> Vec<String> {
        (0..self.steps.len())
            .filter(|&i| self.steps[i].state == State::Waiting)
            .map(|i| self.stage(i).name.clone())
            .collect()
    }

    /// Where the page takes stage `u`'s results from, given the steps' states.
    fn input_state(&self, u: usize) -> crate::report_html::InputState {
        use crate::report_html::InputState;
        match self.pos.get(&u).map(|&i| self.steps[i].state) {
            None
            | Some(State::Done(Status::Hit | Status::Ran | Status::Reused | Status::Pulled)) => {
                InputState::View
            }
            Some(State::Submitted) => InputState::Live(
                crate::live::read(&crate::live::file(
                    self.store.outputs(),
                    &self.p.name,
                    &self.p.stages[u].name,
                ))
                .unwrap_or_default(),
            ),
            Some(State::Waiting) => InputState::Absent("waiting"),
            Some(State::Done(Status::Failed)) => InputState::Absent("failed"),
            Some(State::Done(Status::Skipped)) => InputState::Absent("skipped"),
        }
    }

    /// The run record: each step as it ended (a step that never started is skipped).
    fn record(&self, seconds: f64) -> RunRecord {
        let (p, opts) = (self.p, self.opts);
        let stages = (self.plan.steps.iter().zip(&self.steps))
            .map(|(s, r)| {
                let st = &p.stages[s.stage];
                StageRun {
                    name: st.name.clone(),
                    kind: st.kind.name.to_string(),
                    key: s.key.clone(),
                    status: match r.state {
                        State::Done(s) => s,
                        _ => Status::Skipped,
                    },
                    seconds: r.seconds,
                    error: r.error.clone(),
                    notes: r.notes.clone(),
                    log: r.log.clone(),
                    job: r.job.clone(),
                }
            })
            .collect();
        RunRecord {
            pipeline: p.name.clone(),
            file: p.file.display().to_string(),
            started_unix_ms: opts.started_unix_ms,
            seconds,
            seed: p.seed,
            device: opts.device,
            launcher: opts.launcher.name().to_string(),
            stages,
            resolved: resolved(p),
            kernels: crate::nn::kernel_report(),
        }
    }
}

/// The resolved pipeline, for the run record: each stage's kind, typed params and inputs.
fn resolved(p: &Pipeline) -> BTreeMap<String, serde_json::Value> {
    p.stages
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
        .collect()
}

/// Write the run record to `outputs/<pipeline>/runs/<run id>.json`.
fn write_record(store: &Store, run_id: &str, record: &RunRecord) -> Result<()> {
    let dir = store.runs_dir(&record.pipeline);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::cache::write_synced(
        &dir.join(format!("{run_id}.json")),
        &serde_json::to_vec_pretty(record)?,
    )?;
    Ok(())
}

/// The results page of a run with a `report` stage: live while the run goes on.
struct RunPage {
    /// The report stage (its index in the pipeline).
    stage: usize,
    page: crate::report_html::LivePage,
    run: crate::report_html::RunIdentity,
    /// Whether the live folder is there to show the trainings' progress.
    live_rows: bool,
    /// A live page that could not be written is said once; the run goes on.
    warned: bool,
}

impl RunPage {
    /// The page of the last report stage of the plan, if it has one.
    fn of(run: &Run) -> Option<RunPage> {
        let (p, store, opts) = (run.p, run.store, run.opts);
        let stage = (run.plan.steps.iter())
            .rev()
            .find(|s| p.stages[s.stage].kind.name == "report")?
            .stage;
        let mut ident = crate::report_html::RunIdentity::new(
            &opts.root,
            &opts.run_id,
            opts.started_unix_ms,
            &opts.device.to_string(),
            opts.threads,
            opts.launcher.name(),
        );
        ident.ended_unix_ms = None;
        // The page is there from the start, before any view is.
        let _ = std::fs::create_dir_all(store.outputs().join(&p.name));
        Some(RunPage {
            stage,
            page: crate::report_html::LivePage::new(crate::report_html::page_path(
                store.outputs(),
                &p.name,
            )),
            run: ident,
            live_rows: crate::live::prepare(store.outputs(), &p.name),
            warned: false,
        })
    }

    /// Rewrite the live page when one is due; a failure is said once and the run goes on.
    fn update(&mut self, run: &Run) {
        if !self.page.due() {
            return;
        }
        let html = crate::report_html::page_html(
            run.store.outputs(),
            run.p,
            self.stage,
            self.run.clone(),
            true,
            &|u| run.input_state(u),
        );
        if let Err(e) = html.and_then(|h| self.page.show(h)) {
            if !self.warned {
                run.out.println(&format!(
                    "warning: the live results page was not written ({e:#}); it is written when the run ends"
                ));
                self.warned = true;
            }
        }
    }

    /// Write the final page: it does not reload.
    fn finish(mut self, run: &Run) -> Result<()> {
        self.run.ended_unix_ms = Some(crate::claim::now_ms());
        let html = crate::report_html::page_html(
            run.store.outputs(),
            run.p,
            self.stage,
            self.run.clone(),
            false,
            &|u| run.input_state(u),
        )?;
        self.page.finish(&html)
    }
}

/// Execute `plan`: serve the hits, then submit each step once what it needs is committed and
/// take each job's end, until nothing is in flight. Returns the run record (also written to
/// `outputs/<pipeline>/runs/`).
pub fn execute(
    p: &Pipeline,
    records: &[KeyRecord],
    plan: &Plan,
    store: &Store,
    opts: &ExecOptions,
    launcher: &mut dyn Launcher,
    out: &Output,
) -> Result<RunRecord> {
    execute_steps(p, records, plan, store, opts, launcher, out).map(|(record, _)| record)
}

/// [`execute`]; also returns the stages that never started.
fn execute_steps(
    p: &Pipeline,
    records: &[KeyRecord],
    plan: &Plan,
    store: &Store,
    opts: &ExecOptions,
    launcher: &mut dyn Launcher,
    out: &Output,
) -> Result<(RunRecord, Vec<String>)> {
    let t0 = Instant::now();
    let keys: Vec<Key> = plan.steps.iter().map(|s| s.key.clone()).collect();
    // The store was checked writable before the plan (`Store::prepare`).
    let live = store.register_run(&p.name, &keys)?;
    let mut run = Run::new(p, records, plan, store, opts, out);
    let mut page = RunPage::of(&run);
    if page.as_ref().is_some_and(|pg| pg.live_rows) {
        run.track_progress();
    }
    run.serve_hits()?;
    // The page is there from the start of a run that computes something (a run of hits only
    // writes its final page alone).
    if let Some(pg) = page.as_mut().filter(|_| plan.to_run() > 0) {
        pg.update(&run);
    }
    loop {
        if !run.stop && run.start_ready(launcher)? {
            continue;
        }
        if run.in_flight == 0 {
            break;
        }
        live.touch();
        if let Some(pg) = page.as_mut() {
            pg.update(&run);
        }
        for f in launcher.poll(Duration::from_millis(500)) {
            run.finished(f);
        }
    }
    let not_started = run.not_started();
    if !not_started.is_empty() {
        eprintln!(
            "  not started after the failure (use --keep-going to run independent stages): {}",
            not_started.join(", ")
        );
    }
    let record = run.record(t0.elapsed().as_secs_f64());
    write_record(store, &opts.run_id, &record)?;
    drop(live);
    if let Some(pg) = page {
        run.clear_progress();
        crate::live::remove_dir_if_empty(store.outputs(), &p.name);
        pg.finish(&run)?;
    }
    Ok((record, not_started))
}

/// Show a stage's entry in `outputs/<pipeline>/<stage>/`; a report also becomes the pipeline's
/// page, `outputs/<pipeline>/report.md`, with a speed section read from its inputs' timing
/// files (`speed.csv`), which are outside every key (its results page, `report.html`, is
/// written by [`execute`], live while the run goes on). A view that was there and had to be rebuilt gets a line saying why (`w`: the width of the
/// stage names).
fn publish(
    store: &Store,
    p: &Pipeline,
    stage: usize,
    key: &Key,
    out: &Output,
    w: usize,
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
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobResult;
    use crate::launcher::LauncherKind;
    use anyhow::anyhow;
    use std::collections::VecDeque;
    use std::path::Path;

    /// `twin` has `a`'s key (same kind, params and inputs), so `ttwin` has `ta`'s.
    const PIPELINE: &str = "name: t\nseed: 1\nstages:\n  a:\n    kind: load_corpus\n    params: { path: a.txt }\n  b:\n    kind: load_corpus\n    params: { path: b.txt }\n  twin:\n    kind: load_corpus\n    params: { path: a.txt }\n  ta:\n    kind: tokenize\n    inputs: { corpus: a }\n    params: { unit: word }\n  tb:\n    kind: tokenize\n    inputs: { corpus: b }\n    params: { unit: word }\n  ttwin:\n    kind: tokenize\n    inputs: { corpus: twin }\n    params: { unit: word }\n";

    /// How the fake launcher's job of a stage ends.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Then {
        /// Commits the entry and says it computed it.
        Computes,
        /// Another run held the claim and committed the entry; the job used it.
        HeldElsewhere,
        /// Says it failed.
        Fails,
        /// Cancelled from outside (as `scancel` does).
        Cancelled,
        /// Commits the entry, which is then damaged before the executor checks it.
        Damages,
        /// Says it computed, but commits nothing.
        CommitsNothing,
        /// The launcher cannot start it.
        Unstartable,
    }

    impl Then {
        /// What the stage's error must say.
        fn error(self) -> &'static str {
            match self {
                Then::Fails => "out of data",
                Then::Cancelled => "CANCELLED",
                Then::Damages => "the job's entry is damaged",
                Then::CommitsNothing => "its entry is not in the store",
                Then::Unstartable => "no free slot",
                Then::Computes | Then::HeldElsewhere => "",
            }
        }
    }

    /// Ends its jobs one at a time, oldest first, as the table says.
    struct Fake<'s> {
        store: &'s Store,
        then: BTreeMap<String, Then>,
        queue: VecDeque<(usize, JobSpec)>,
        started: Vec<String>,
    }

    impl Fake<'_> {
        fn then(&self, stage: &str) -> Then {
            self.then.get(stage).copied().unwrap_or(Then::Computes)
        }

        fn commit(&self, spec: &JobSpec) {
            let staging = self.store.staging(&spec.key).unwrap();
            std::fs::write(staging.join("out.txt"), spec.key.as_str()).unwrap();
            (self.store)
                .commit(&staging, &spec.record, &spec.stage, 1.0, spec.force)
                .unwrap();
        }
    }

    impl Launcher for Fake<'_> {
        fn submit(&mut self, id: usize, spec: JobSpec) -> Result<()> {
            if self.then(&spec.stage) == Then::Unstartable {
                anyhow::bail!("no free slot");
            }
            self.started.push(spec.stage.clone());
            self.queue.push_back((id, spec));
            Ok(())
        }

        fn poll(&mut self, _: Duration) -> Vec<Finished> {
            let Some((id, spec)) = self.queue.pop_front() else {
                return Vec::new();
            };
            let ok = |outcome| {
                Ok(JobResult {
                    outcome,
                    seconds: 1.0,
                    notes: Vec::new(),
                })
            };
            let result = match self.then(&spec.stage) {
                Then::Computes => {
                    self.commit(&spec);
                    ok(Outcome::Computed)
                }
                Then::HeldElsewhere => {
                    self.commit(&spec);
                    ok(Outcome::Reused)
                }
                Then::Damages => {
                    self.commit(&spec);
                    damage(&self.store.object_dir(&spec.key).join("out.txt"));
                    ok(Outcome::Computed)
                }
                Then::CommitsNothing => ok(Outcome::Computed),
                Then::Fails => Err(anyhow!("the stage failed: out of data")),
                Then::Cancelled => Err(anyhow!("Slurm job 7 CANCELLED")),
                Then::Unstartable => unreachable!("never submitted"),
            };
            vec![Finished {
                id,
                result,
                log: None,
                job: None,
                wall: Some(0.5),
            }]
        }

        fn cancel_all(&mut self) {}
    }

    /// Another length: the size alone tells the store the file changed.
    fn damage(file: &Path) {
        let mut perm = std::fs::metadata(file).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(file, perm).unwrap();
        std::fs::write(file, "damaged").unwrap();
    }

    struct Case {
        what: &'static str,
        /// Stages whose entries are in the store before the plan.
        cached: &'static [&'static str],
        force: &'static [&'static str],
        keep_going: bool,
        jobs: usize,
        /// How each job ends (the others compute).
        then: &'static [(&'static str, Then)],
        /// Every stage's final status.
        statuses: &'static [(&'static str, Status)],
        /// The stages the launcher started, in order.
        started: &'static [&'static str],
        /// The skipped stages that did not need a failed one: never started (no `--keep-going`).
        not_started: &'static [&'static str],
        /// The stages served from a twin this run computed (a note says so).
        from_twin: &'static [&'static str],
    }

    /// Runs the case; returns the run record, the stages started and those never started.
    fn run(c: &Case) -> (RunRecord, Vec<String>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), "one two\n").unwrap();
        std::fs::write(root.join("b.txt"), "three four\n").unwrap();
        let raw = crate::config::parse(Path::new("t.yaml"), PIPELINE).unwrap();
        let p = crate::pipeline::analyze(raw).unwrap();
        let records = crate::key::compute(
            &p,
            root,
            crate::device::Device::Cpu,
            &mut crate::key::FileDigests::default(),
        )
        .unwrap();
        let store = Store::new(&root.join("outputs"));
        store.prepare().unwrap();
        let mut fake = Fake {
            store: &store,
            then: c.then.iter().map(|(s, t)| (s.to_string(), *t)).collect(),
            queue: VecDeque::new(),
            started: Vec::new(),
        };
        let index = |names: &[&str]| -> Vec<usize> {
            names
                .iter()
                .map(|n| p.resolve_names(&[n.to_string()]).unwrap()[0])
                .collect()
        };
        for i in index(c.cached) {
            let spec = JobSpec {
                force: false,
                ..job_spec_of(&p, &records, i, &store)
            };
            fake.commit(&spec);
        }
        let plan = crate::plan::make_plan(&p, &records, &|k| store.cached(k), &[], &index(c.force));
        let opts = ExecOptions {
            jobs: c.jobs,
            keep_going: c.keep_going,
            root: root.to_path_buf(),
            device: crate::device::Device::Cpu,
            threads: 1,
            launcher: LauncherKind::Local,
            run_id: "1-1".into(),
            started_unix_ms: 1,
            remote: None,
        };
        let out = Output::detect(true);
        let (record, not_started) =
            execute_steps(&p, &records, &plan, &store, &opts, &mut fake, &out).unwrap();
        (record, fake.started, not_started)
    }

    /// A job description of stage `i` alone (to fill the store before a case).
    fn job_spec_of(p: &Pipeline, records: &[KeyRecord], i: usize, store: &Store) -> JobSpec {
        let plan = Plan {
            steps: vec![crate::plan::Step {
                stage: i,
                key: records[i].key(),
                action: Action::Run(Reason::NotCached),
                twin: None,
            }],
        };
        let opts = ExecOptions {
            jobs: 1,
            keep_going: false,
            root: PathBuf::new(),
            device: crate::device::Device::Cpu,
            threads: 1,
            launcher: LauncherKind::Local,
            run_id: String::new(),
            started_unix_ms: 0,
            remote: None,
        };
        job_spec(p, records, &plan, store, &opts, 0, None)
    }

    /// (plan, launcher outcomes) → final statuses and the stages started. The plan's order is
    /// a, b, twin, ta, tb, ttwin.
    fn cases() -> Vec<Case> {
        use Status::{Failed, Hit, Ran, Reused, Skipped};
        use Then::*;
        vec![
            Case {
                what: "all compute; a twin takes its twin's entry",
                cached: &[],
                force: &[],
                keep_going: false,
                jobs: 1,
                then: &[],
                statuses: &[
                    ("a", Ran),
                    ("b", Ran),
                    ("twin", Hit),
                    ("ta", Ran),
                    ("tb", Ran),
                    ("ttwin", Hit),
                ],
                started: &["a", "b", "ta", "tb"],
                not_started: &[],
                from_twin: &["twin", "ttwin"],
            },
            Case {
                what: "a failure stops the run; its twins and downstream are skipped",
                cached: &[],
                force: &[],
                keep_going: false,
                jobs: 1,
                then: &[("a", Fails)],
                statuses: &[
                    ("a", Failed),
                    ("b", Skipped),
                    ("twin", Skipped),
                    ("ta", Skipped),
                    ("tb", Skipped),
                    ("ttwin", Skipped),
                ],
                started: &["a"],
                not_started: &["b", "tb"],
                from_twin: &[],
            },
            Case {
                what: "--keep-going runs what does not need the failure",
                cached: &[],
                force: &[],
                keep_going: true,
                jobs: 1,
                then: &[("a", Fails)],
                statuses: &[
                    ("a", Failed),
                    ("b", Ran),
                    ("twin", Skipped),
                    ("ta", Skipped),
                    ("tb", Ran),
                    ("ttwin", Skipped),
                ],
                started: &["a", "b", "tb"],
                not_started: &[],
                from_twin: &[],
            },
            Case {
                what: "a cancelled job: the job in flight ends and counts, nothing new starts",
                cached: &[],
                force: &[],
                keep_going: false,
                jobs: 2,
                then: &[("a", Cancelled)],
                statuses: &[
                    ("a", Failed),
                    ("b", Ran),
                    ("twin", Skipped),
                    ("ta", Skipped),
                    ("tb", Skipped),
                    ("ttwin", Skipped),
                ],
                started: &["a", "b"],
                not_started: &["tb"],
                from_twin: &[],
            },
            Case {
                what: "a claim held elsewhere: the job reuses the other run's entry",
                cached: &[],
                force: &[],
                keep_going: false,
                jobs: 1,
                then: &[("a", HeldElsewhere)],
                statuses: &[
                    ("a", Reused),
                    ("b", Ran),
                    ("twin", Hit),
                    ("ta", Ran),
                    ("tb", Ran),
                    ("ttwin", Hit),
                ],
                started: &["a", "b", "ta", "tb"],
                not_started: &[],
                from_twin: &["twin", "ttwin"],
            },
            Case {
                what: "an entry damaged after its job is a failure",
                cached: &[],
                force: &[],
                keep_going: false,
                jobs: 1,
                then: &[("ta", Damages)],
                statuses: &[
                    ("a", Ran),
                    ("b", Ran),
                    ("twin", Hit),
                    ("ta", Failed),
                    ("tb", Skipped),
                    ("ttwin", Skipped),
                ],
                started: &["a", "b", "ta"],
                not_started: &["tb"],
                from_twin: &["twin"],
            },
            Case {
                what: "a job that commits nothing fails",
                cached: &[],
                force: &[],
                keep_going: true,
                jobs: 3,
                then: &[("b", CommitsNothing)],
                statuses: &[
                    ("a", Ran),
                    ("b", Failed),
                    ("twin", Hit),
                    ("ta", Ran),
                    ("tb", Skipped),
                    ("ttwin", Hit),
                ],
                started: &["a", "b", "ta"],
                not_started: &[],
                from_twin: &["twin", "ttwin"],
            },
            Case {
                what: "a job the launcher cannot start fails at once",
                cached: &[],
                force: &[],
                keep_going: true,
                jobs: 1,
                then: &[("a", Unstartable)],
                statuses: &[
                    ("a", Failed),
                    ("b", Ran),
                    ("twin", Skipped),
                    ("ta", Skipped),
                    ("tb", Ran),
                    ("ttwin", Skipped),
                ],
                started: &["b", "tb"],
                not_started: &[],
                from_twin: &[],
            },
            Case {
                what: "hits are served, not started",
                cached: &["a"],
                force: &[],
                keep_going: false,
                jobs: 1,
                then: &[],
                statuses: &[
                    ("a", Hit),
                    ("b", Ran),
                    ("twin", Hit),
                    ("ta", Ran),
                    ("tb", Ran),
                    ("ttwin", Hit),
                ],
                started: &["b", "ta", "tb"],
                not_started: &[],
                from_twin: &["ttwin"],
            },
            Case {
                what: "forced twins: computed once though cached",
                cached: &["a", "b", "ta", "tb"],
                force: &["a", "twin"],
                keep_going: false,
                jobs: 4,
                then: &[],
                statuses: &[
                    ("a", Ran),
                    ("b", Hit),
                    ("twin", Hit),
                    ("ta", Ran),
                    ("tb", Hit),
                    ("ttwin", Hit),
                ],
                started: &["a", "ta"],
                not_started: &[],
                from_twin: &["twin", "ttwin"],
            },
        ]
    }

    #[test]
    fn the_executor_runs_what_the_plan_and_the_launcher_allow() {
        use Status::Failed;
        for c in &cases() {
            let (record, started, not_started) = run(c);
            let got: Vec<(&str, Status)> = (record.stages.iter())
                .map(|s| (s.name.as_str(), s.status))
                .collect();
            assert_eq!(got, c.statuses, "{}: statuses", c.what);
            assert_eq!(started, c.started, "{}: stages started", c.what);
            assert_eq!(not_started, c.not_started, "{}: never started", c.what);
            for s in &record.stages {
                let then = (c.then.iter())
                    .find(|(n, _)| *n == s.name)
                    .map_or(Then::Computes, |(_, t)| *t);
                match &s.error {
                    Some(e) => assert!(
                        s.status == Failed && !then.error().is_empty() && e.contains(then.error()),
                        "{}: `{}` failed with {e:?}",
                        c.what,
                        s.name
                    ),
                    None => assert_ne!(
                        s.status, Failed,
                        "{}: `{}` failed without an error",
                        c.what, s.name
                    ),
                }
                // A twin served from its twin says so; a cache hit does not.
                let noted = s.notes.iter().any(|n| n.starts_with("same key as `"));
                let twin = c.from_twin.contains(&s.name.as_str());
                assert_eq!(
                    noted, twin,
                    "{}: notes of `{}`: {:?}",
                    c.what, s.name, s.notes
                );
            }
        }
    }
}
