//! The Slurm launcher: each ready stage becomes a batch job that runs `seqpipe exec-job` on
//! whichever node Slurm picks, over a store on the shared filesystem.
//!
//! - **Submit.** A job script is written into the run's folder (`outputs/<pipeline>/runs/<run>/`)
//!   beside the job description; `sbatch --parsable` submits it. The script runs `exec-job` and
//!   then writes its exit code to `<job>.exitcode`, atomically (a temporary file renamed).
//! - **Poll.** One `squeue` call per interval covers every job in flight (`sacct` too, for jobs
//!   that have left the queue, when accounting is on). Controller errors are retried.
//! - **Done.** Success is exit code 0 plus a committed entry (the executor checks the store).
//!   A failure shows Slurm's state (FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, …),
//!   the job id and the tail of the job's log.
//! - **Quick stages** (text, tables, plots: kinds that do not compute on a device) run in the
//!   driver unless `submit_all` is set: a job costs about a second of scheduling, they take ms.
//!
//! The parsers of `sbatch`, `squeue` and `sacct` output are pure functions, unit-tested on
//! recorded outputs.

use crate::job::JobSpec;
use crate::launcher::{log_tail, Finished, Launcher, LocalLauncher};
use crate::progress::Output;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One line of `squeue -o '%i|%T|%r'`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueState {
    pub id: String,
    pub state: String,
    pub reason: String,
}

/// One line of `sacct -P -o JobIDRaw,State,ExitCode`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcctState {
    pub id: String,
    pub state: String,
    /// `code:signal`
    pub exit: String,
}

/// The job id from `sbatch --parsable`: `<id>` or `<id>;<cluster>`.
pub fn parse_sbatch(out: &str) -> Result<String> {
    let line = out
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("sbatch printed no job id"))?;
    let id = line.split(';').next().unwrap_or_default().trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        bail!("sbatch printed `{line}`, not a job id");
    }
    Ok(id.to_string())
}

/// `squeue -h -t all -j ... -o '%i|%T|%r'`.
pub fn parse_squeue(out: &str) -> Vec<QueueState> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, '|');
            let id = f.next()?.trim().to_string();
            let state = f.next()?.trim().to_string();
            let reason = f.next().unwrap_or("").trim().to_string();
            (!id.is_empty() && !state.is_empty()).then_some(QueueState { id, state, reason })
        })
        .collect()
}

/// `sacct -X -n -P -j ... --format=JobIDRaw,State,ExitCode`. A state such as
/// `CANCELLED by 0` keeps its first word.
pub fn parse_sacct(out: &str) -> Vec<AcctState> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(AcctState {
                id: f[0].trim().to_string(),
                state: f[1].split_whitespace().next().unwrap_or("").to_string(),
                exit: f[2].trim().to_string(),
            })
        })
        .collect()
}

/// States after which a job will not run again.
pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "FAILED"
            | "CANCELLED"
            | "TIMEOUT"
            | "OUT_OF_MEMORY"
            | "NODE_FAIL"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "PREEMPTED"
            | "SPECIAL_EXIT"
            | "REVOKED"
    )
}

/// Errors of the Slurm client commands that a retry can cure (the controller is busy,
/// restarting or unreachable for a moment).
pub fn is_transient(stderr: &str) -> bool {
    [
        "Unable to contact slurm controller",
        "Socket timed out",
        "Resource temporarily unavailable",
        "Transport endpoint is not connected",
        "Zero Bytes were transmitted",
        "Connection refused",
        "slurm_receive_msg",
    ]
    .iter()
    .any(|p| stderr.contains(p))
}

pub fn is_invalid_job_id(stderr: &str) -> bool {
    stderr.contains("Invalid job id")
}

/// What one poll learnt of a job from the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// `squeue` lists it, in this state, for this reason.
    Queued { state: String, reason: String },
    /// It has left the queue: a `squeue` that answered does not list it (or refused its id
    /// alone as invalid). `sacct`'s state for it, when accounting answered with a record.
    Left { acct: Option<String> },
    /// No answer about it (the controller or a query failed): nothing may be concluded.
    Unknown,
}

/// What the driver makes of a job after a poll.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Queued or running, in this state.
    Running(String),
    /// Not known to have ended yet: ask again at the next poll.
    Wait,
    /// It ended. `certain`: Slurm named a final state, or the job wrote its exit code; only
    /// then may the driver release the claims the job could not (a job that merely left the
    /// queue, with no word on how, may be a controller's or accounting's mistake, and its
    /// claims expire by heartbeat if it is really gone).
    Ended {
        code: Option<i32>,
        state: String,
        reason: String,
        certain: bool,
    },
}

/// Judge a job from what the controller said of it (`seen`), its exit-code file (`code`),
/// and how long it has been seen out of the queue without one (`without_code`, against the
/// filesystem's `grace`). A failed, timed-out or unreachable controller never ends a job.
pub fn judge(
    seen: &Seen,
    code: Option<i32>,
    without_code: Option<Duration>,
    grace: Duration,
) -> Verdict {
    let ended = |state: &str, reason: &str, certain: bool| Verdict::Ended {
        code,
        state: state.to_string(),
        reason: reason.to_string(),
        certain,
    };
    let late = without_code.is_some_and(|w| w > grace);
    match seen {
        Seen::Queued { state, .. } if !is_terminal(state) => Verdict::Running(state.clone()),
        // A final state: the job will not run again, whatever its exit-code file says.
        Seen::Queued { state, reason } => {
            if code.is_none() && state == "COMPLETED" && !late {
                // Its exit code may still be on its way (NFS).
                Verdict::Wait
            } else {
                ended(state, reason, true)
            }
        }
        Seen::Left { acct: Some(state) } if is_terminal(state) => {
            if code.is_none() && state == "COMPLETED" && !late {
                Verdict::Wait
            } else {
                ended(state, "", true)
            }
        }
        // The job script wrote its exit code: exec-job has ended.
        _ if code.is_some() => ended("", "", true),
        Seen::Unknown => Verdict::Wait,
        // Out of the queue, with no final state on record and no exit code: an ended job whose
        // end cannot be told for sure, once the grace for its exit-code file is over.
        Seen::Left { .. } if late => ended("", "", false),
        Seen::Left { .. } => Verdict::Wait,
    }
}

/// Ids of jobs this process submitted and that have not ended, for Ctrl-C.
fn submitted() -> &'static Mutex<Vec<String>> {
    static S: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Vec::new()))
}

/// `scancel` every job this process submitted (called on Ctrl-C). Returns how many.
pub fn cancel_submitted() -> usize {
    let ids: Vec<String> = submitted().lock().map(|s| s.clone()).unwrap_or_default();
    if !ids.is_empty() {
        let _ = Command::new("scancel").args(&ids).output();
    }
    ids.len()
}

/// How long a Slurm client command may keep the user waiting before seqpipe says why.
const SLOW_ANSWER: Duration = Duration::from_secs(5);

/// Run `prog args`, saying so on stderr when it has not answered within [`SLOW_ANSWER`] (a
/// Slurm client retries an unreachable controller for about a minute, silently).
fn output_noting_delay(prog: &str, args: &[String]) -> std::io::Result<std::process::Output> {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|sc| {
        sc.spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(SLOW_ANSWER)
            {
                eprintln!(
                    "  waiting for `{prog}`: the Slurm controller has not answered for {} s (it may be busy or unreachable)…",
                    SLOW_ANSWER.as_secs()
                );
            }
        });
        let out = Command::new(prog).args(args).output();
        drop(done);
        out
    })
}

/// Run a Slurm client command, retrying transient errors (3 tries, 1 s and 2 s apart).
fn slurm_cmd(prog: &str, args: &[String]) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..3u64 {
        if attempt > 0 {
            eprintln!(
                "  `{prog}` failed ({}); retrying in {attempt} s (try {} of 3)",
                last.lines().last().unwrap_or(""),
                attempt + 1
            );
            std::thread::sleep(Duration::from_secs(attempt));
        }
        match output_noting_delay(prog, args) {
            Ok(o) if o.status.success() => return Ok(String::from_utf8_lossy(&o.stdout).into()),
            Ok(o) => {
                last = String::from_utf8_lossy(&o.stderr).trim().to_string();
                if last.is_empty() {
                    last = format!("{prog} {}", crate::launcher::describe_exit(&o.status));
                }
                if !is_transient(&last) {
                    return Err(last);
                }
            }
            Err(e) => {
                return Err(format!(
                    "cannot run `{prog}`: {e} (is the Slurm client installed and on PATH?)"
                ))
            }
        }
    }
    Err(last)
}

struct SlurmJob {
    id: usize,
    slurm: String,
    stage: String,
    log: PathBuf,
    exit: PathBuf,
    result: PathBuf,
    store: PathBuf,
    state: String,
    /// When the job was first seen finished without an exit-code file (NFS may lag).
    waiting_exit_since: Option<Instant>,
    /// When it was submitted (ms since 1970): a claim of the same job id older than that is
    /// another cluster's job.
    submitted_ms: u128,
}

pub struct SlurmLauncher {
    dir: PathBuf,
    exe: PathBuf,
    root: PathBuf,
    threads: usize,
    run_id: String,
    poll_every: Duration,
    submit_all: bool,
    out: Output,
    local: LocalLauncher,
    local_in_flight: usize,
    jobs: Vec<SlurmJob>,
    last_poll: Option<Instant>,
    failing_since: Option<Instant>,
    sacct: Option<bool>,
}

/// How long a finished job's exit-code file may take to appear (a shared filesystem's
/// attribute cache), `SEQPIPE_SLURM_EXIT_GRACE` seconds, default 60.
fn exit_grace() -> Duration {
    std::env::var("SEQPIPE_SLURM_EXIT_GRACE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60))
}

/// How long the controller may fail to answer before the jobs in flight count as lost.
const CONTROLLER_PATIENCE: Duration = Duration::from_secs(300);

impl SlurmLauncher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        root: PathBuf,
        threads: usize,
        run_id: String,
        setting: &crate::launcher::LauncherSetting,
        store: std::sync::Arc<crate::cache::Store>,
        out: Output,
    ) -> Result<Self> {
        let exe = crate::launcher::seqpipe_exe()?;
        let poll = std::env::var("SEQPIPE_SLURM_POLL")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .or(setting.poll)
            .unwrap_or(2.0);
        if Command::new("squeue").arg("--version").output().is_err() {
            bail!("`--executor slurm` needs the Slurm client commands (sbatch, squeue, scancel) on PATH");
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(SlurmLauncher {
            dir,
            exe,
            root,
            threads,
            run_id,
            poll_every: Duration::from_secs_f64(poll.max(0.05)),
            submit_all: setting.submit_all,
            local: LocalLauncher::new(store, out.clone()),
            out,
            local_in_flight: 0,
            jobs: Vec::new(),
            last_poll: None,
            failing_since: None,
            sacct: None,
        })
    }

    fn script(&self, job: &Path, result: &Path, exit: &Path) -> String {
        let q = |p: &Path| shell_quote(&p.display().to_string());
        let tmp = exit.with_extension("exitcode.tmp");
        format!(
            "#!/bin/sh\n# seqpipe stage job (run {run}); resubmitting this script reruns the stage.\ncd {root} || exit 97\n{exe} --threads {t} exec-job {job} --result {result}\ncode=$?\nprintf '%s\\n' \"$code\" > {tmp} && mv -f {tmp} {exit}\nexit $code\n",
            run = self.run_id,
            root = q(&self.root),
            exe = q(&self.exe),
            t = self.threads,
            job = q(job),
            result = q(result),
            tmp = q(&tmp),
            exit = q(exit),
        )
    }

    /// Report job `i` as ended. `certain`: Slurm or the job itself said it ended (see
    /// [`Verdict::Ended`]); only then are the claims it could not release released.
    fn finish(
        &mut self,
        i: usize,
        result: Result<crate::job::JobResult>,
        certain: bool,
    ) -> Finished {
        let j = self.jobs.swap_remove(i);
        if let Ok(mut s) = submitted().lock() {
            s.retain(|x| x != &j.slurm);
        }
        if result.is_err() && certain {
            // A job that died cannot release its claim: the driver knows it is gone.
            crate::claim::Claims::new(j.store.join("claims"))
                .release_for_job(&j.slurm, j.submitted_ms);
        }
        Finished {
            id: j.id,
            result,
            log: Some(j.log),
            job: Some(j.slurm),
            // Its time in the queue is no time it ran.
            wall: None,
        }
    }

    /// The result of a job that ended, from its exit code and Slurm's state (`certain`: see
    /// [`Verdict::Ended`]).
    fn ended_result(
        &self,
        j: &SlurmJob,
        code: Option<i32>,
        state: &str,
        reason: &str,
        certain: bool,
    ) -> Result<crate::job::JobResult> {
        let what = |detail: String| {
            let reason = if reason.is_empty() || reason == "None" {
                String::new()
            } else {
                format!(" ({reason})")
            };
            let state = if state.is_empty() { "ended" } else { state };
            anyhow!(
                "Slurm job {} {state}{reason}: {detail}\n{}",
                j.slurm,
                log_tail(&j.log, 12)
            )
        };
        match code {
            Some(0) => crate::context::read_json::<crate::job::JobResult>(&j.result)
                .context("the job exited 0 but wrote no result"),
            Some(c) => Err(what(format!("exec-job exited with code {c}"))),
            None if !certain => Err(what(
                "it left the queue without writing its exit code, and no final state is on \
                 record (is accounting on?); its claims are kept, and expire by heartbeat if \
                 it is gone"
                    .into(),
            )),
            None if state == "COMPLETED" || state.is_empty() => {
                Err(what("it ended without writing its exit code".into()))
            }
            None => Err(what("the job script did not finish".into())),
        }
    }

    fn accounting(&mut self) -> bool {
        if self.sacct.is_none() {
            let on = slurm_cmd(
                "sacct",
                &["-n".into(), "-X".into(), "-j".into(), "1".into()],
            )
            .is_ok();
            self.sacct = Some(on);
        }
        self.sacct == Some(true)
    }

    fn poll_slurm(&mut self, done: &mut Vec<Finished>) {
        self.last_poll = Some(Instant::now());
        let ids: Vec<String> = self.jobs.iter().map(|j| j.slurm.clone()).collect();
        let query = |ids: &[String]| {
            slurm_cmd(
                "squeue",
                &[
                    "-h".into(),
                    "-t".into(),
                    "all".into(),
                    "-j".into(),
                    ids.join(","),
                    "-o".into(),
                    "%i|%T|%r".into(),
                ],
            )
        };
        // The ids squeue answered for: those it lists, and those it refused as invalid
        // (purged: they left the queue). An id it gave no answer for is unknown.
        let (states, answered): (Vec<QueueState>, Vec<String>) = match query(&ids) {
            Ok(out) => (parse_squeue(&out), ids.clone()),
            // One purged id makes squeue refuse them all: ask one by one.
            Err(e) if is_invalid_job_id(&e) => {
                let mut states = Vec::new();
                let mut answered = Vec::new();
                let mut failed = None;
                for id in &ids {
                    match query(std::slice::from_ref(id)) {
                        Ok(o) => states.extend(parse_squeue(&o)),
                        Err(e) if is_invalid_job_id(&e) => {}
                        Err(e) => {
                            failed = Some(e);
                            continue;
                        }
                    }
                    answered.push(id.clone());
                }
                match failed {
                    Some(e) if answered.is_empty() => return self.controller_failed(e, done),
                    _ => (states, answered),
                }
            }
            Err(e) => return self.controller_failed(e, done),
        };
        self.failing_since = None;
        let gone: Vec<String> = answered
            .iter()
            .filter(|id| !states.iter().any(|s| &&s.id == id))
            .cloned()
            .collect();
        let acct = if !gone.is_empty() && self.accounting() {
            // A failed sacct tells nothing: those jobs are judged without it.
            slurm_cmd(
                "sacct",
                &[
                    "-X".into(),
                    "-n".into(),
                    "-P".into(),
                    "-j".into(),
                    gone.join(","),
                    "--format=JobIDRaw,State,ExitCode".into(),
                ],
            )
            .map(|o| parse_sacct(&o))
            .unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut i = 0;
        while i < self.jobs.len() {
            let id = &self.jobs[i].slurm;
            let seen = match states.iter().find(|s| &s.id == id) {
                Some(s) => Seen::Queued {
                    state: s.state.clone(),
                    reason: s.reason.clone(),
                },
                None if answered.contains(id) => Seen::Left {
                    acct: acct.iter().find(|a| &a.id == id).map(|a| a.state.clone()),
                },
                None => Seen::Unknown,
            };
            let code = std::fs::read_to_string(&self.jobs[i].exit)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            let without_code = self.jobs[i].waiting_exit_since.map(|t| t.elapsed());
            match judge(&seen, code, without_code, exit_grace()) {
                Verdict::Running(state) => {
                    if state != self.jobs[i].state && state == "RUNNING" {
                        self.out.println(&format!(
                            "  running {}  (slurm job {})",
                            self.jobs[i].stage, self.jobs[i].slurm
                        ));
                    }
                    self.jobs[i].state = state;
                    i += 1;
                }
                Verdict::Wait => {
                    if !matches!(seen, Seen::Unknown) {
                        self.jobs[i]
                            .waiting_exit_since
                            .get_or_insert_with(Instant::now);
                    }
                    i += 1;
                }
                Verdict::Ended {
                    code,
                    state,
                    reason,
                    certain,
                } => {
                    let r = self.ended_result(&self.jobs[i], code, &state, &reason, certain);
                    done.push(self.finish(i, r, certain));
                }
            }
        }
    }

    /// squeue gave no answer. After [`CONTROLLER_PATIENCE`] of that, the jobs in flight are
    /// reported lost, but their claims are kept: they may well still run (a job that is gone
    /// leaves claims that expire by heartbeat).
    fn controller_failed(&mut self, e: String, done: &mut Vec<Finished>) {
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        eprintln!("warning: squeue failed ({e}); retrying");
        if since.elapsed() > CONTROLLER_PATIENCE {
            while !self.jobs.is_empty() {
                let msg = anyhow!(
                    "the Slurm controller has not answered for {} s: {e}. Slurm job {} may \
                     still run: its claims are kept (check with `squeue -j {}`)",
                    CONTROLLER_PATIENCE.as_secs(),
                    self.jobs[0].slurm,
                    self.jobs[0].slurm
                );
                done.push(self.finish(0, Err(msg), false));
            }
        }
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Launcher for SlurmLauncher {
    fn submit(&mut self, id: usize, spec: JobSpec) -> Result<()> {
        if !spec.heavy && !self.submit_all {
            self.local_in_flight += 1;
            return self.local.submit(id, spec);
        }
        let base = self.dir.join(format!("{id:03}-{}", spec.key.short()));
        let job = base.with_extension("job.json");
        let result = base.with_extension("result.json");
        let exit = base.with_extension("exitcode");
        let script = base.with_extension("sh");
        let log = base.with_extension("log");
        spec.write(&job)?;
        crate::cache::write_synced(&script, self.script(&job, &result, &exit).as_bytes())?;
        let mut args: Vec<String> = vec![
            "--parsable".into(),
            format!(
                "--job-name=seqpipe-{}",
                spec.stage
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "_-=,[].".contains(*c))
                    .take(80)
                    .collect::<String>()
            ),
            format!("--output={}", log.display()),
            "--no-requeue".into(),
            format!("--chdir={}", self.root.display()),
        ];
        args.extend(spec.resources.sbatch_args());
        args.push(script.display().to_string());
        let submitted_ms = crate::claim::now_ms();
        let out = slurm_cmd("sbatch", &args)
            .map_err(|e| anyhow!("sbatch refused the job of `{}`: {e}", spec.stage))?;
        let slurm = parse_sbatch(&out)?;
        submitted().lock().unwrap().push(slurm.clone());
        self.out.println(&format!(
            "  submit  {}  slurm job {slurm} ({})",
            spec.stage,
            spec.resources.describe()
        ));
        self.jobs.push(SlurmJob {
            id,
            slurm,
            stage: spec.stage.clone(),
            log,
            exit,
            result,
            store: spec.store.clone(),
            state: "PENDING".into(),
            waiting_exit_since: None,
            submitted_ms,
        });
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Vec<Finished> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut done = Vec::new();
            if self.local_in_flight > 0 {
                let wait = if self.jobs.is_empty() {
                    deadline.saturating_duration_since(Instant::now())
                } else {
                    Duration::from_millis(20)
                };
                let f = self.local.poll(wait);
                self.local_in_flight -= f.len();
                done.extend(f);
            }
            if !self.jobs.is_empty()
                && self
                    .last_poll
                    .is_none_or(|t| t.elapsed() >= self.poll_every)
            {
                self.poll_slurm(&mut done);
            }
            if !done.is_empty() || Instant::now() >= deadline {
                return done;
            }
            if self.local_in_flight == 0 && self.jobs.is_empty() {
                return done;
            }
            if self.local_in_flight == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `scancel` the jobs; their claims are not released here: a cancelled job may run on
    /// for a moment, and its own exit (or its heartbeat's end) releases them.
    fn cancel_all(&mut self) {
        let ids: Vec<String> = self.jobs.iter().map(|j| j.slurm.clone()).collect();
        if !ids.is_empty() {
            let _ = slurm_cmd("scancel", &ids);
        }
        self.jobs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_output() {
        assert_eq!(parse_sbatch("42\n").unwrap(), "42");
        assert_eq!(parse_sbatch("1234;ci\n").unwrap(), "1234");
        assert!(parse_sbatch("").is_err());
        assert!(parse_sbatch("sbatch: error: Batch job submission failed").is_err());
    }

    #[test]
    fn squeue_output_recorded_on_slurm_22_05() {
        // squeue -h -t all -j 7,8,9,10,11 -o '%i|%T|%r'
        let out = "7|COMPLETED|None\n8|FAILED|NonZeroExitCode\n9|CANCELLED|None\n10|RUNNING|None\n11|PENDING|Resources\n";
        let s = parse_squeue(out);
        assert_eq!(s.len(), 5);
        assert_eq!(
            s[1],
            QueueState {
                id: "8".into(),
                state: "FAILED".into(),
                reason: "NonZeroExitCode".into()
            }
        );
        assert!(is_terminal(&s[0].state) && is_terminal(&s[2].state));
        assert!(!is_terminal(&s[3].state) && !is_terminal(&s[4].state));
        assert!(is_terminal("TIMEOUT") && is_terminal("OUT_OF_MEMORY") && is_terminal("NODE_FAIL"));
        assert!(parse_squeue("").is_empty());
    }

    #[test]
    fn sacct_output() {
        // sacct -X -n -P -j 12,13,14 --format=JobIDRaw,State,ExitCode
        let out = "12|COMPLETED|0:0\n13|CANCELLED by 0|0:15\n14|TIMEOUT|0:0\n";
        let a = parse_sacct(out);
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].state, "CANCELLED");
        assert_eq!(a[1].exit, "0:15");
        assert_eq!(a[2].state, "TIMEOUT");
    }

    #[test]
    fn controller_errors() {
        let down = "squeue: error: Unable to contact slurm controller (connect failure)";
        assert!(is_transient(down));
        let purged = "slurm_load_jobs error: Invalid job id specified";
        assert!(!is_transient(purged) && is_invalid_job_id(purged));
    }

    #[test]
    fn the_script_writes_its_exit_code_atomically() {
        let t = tempfile::tempdir().unwrap();
        let s = format!(
            "#!/bin/sh\nfalse\ncode=$?\nprintf '%s\\n' \"$code\" > {0}.tmp && mv -f {0}.tmp {0}\nexit $code\n",
            shell_quote(&t.path().join("x.exitcode").display().to_string())
        );
        let o = Command::new("sh").arg("-c").arg(&s).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            std::fs::read_to_string(t.path().join("x.exitcode")).unwrap(),
            "1\n"
        );
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }

    /// A controller that fails, times out or cannot be reached never makes a job "ended", and
    /// only Slurm's final state or the job's own exit code makes its end certain (the driver
    /// then releases the claims the job could not).
    #[test]
    fn only_a_definite_answer_ends_a_job() {
        let grace = Duration::from_secs(60);
        let long = Some(Duration::from_secs(3600));
        let queued = |state: &str| Seen::Queued {
            state: state.into(),
            reason: "None".into(),
        };
        let ended = |v: Verdict| match v {
            Verdict::Ended { certain, .. } => Some(certain),
            _ => None,
        };
        // squeue failed (Unable to contact slurm controller, a timeout…): wait, however long.
        assert_eq!(judge(&Seen::Unknown, None, None, grace), Verdict::Wait);
        assert_eq!(judge(&Seen::Unknown, None, long, grace), Verdict::Wait);
        // …unless the job wrote its exit code: it has ended, for certain.
        assert_eq!(
            ended(judge(&Seen::Unknown, Some(1), None, grace)),
            Some(true)
        );
        // Running, even with its exit code written (the script is exiting).
        assert_eq!(
            judge(&queued("RUNNING"), Some(0), None, grace),
            Verdict::Running("RUNNING".into())
        );
        // A final state in squeue or sacct ends it for certain.
        for s in parse_squeue("8|CANCELLED|None\n9|TIMEOUT|None\n") {
            let seen = queued(&s.state);
            assert_eq!(ended(judge(&seen, None, None, grace)), Some(true), "{s:?}");
        }
        for a in parse_sacct("12|CANCELLED by 0|0:15\n14|OUT_OF_MEMORY|0:125\n") {
            let seen = Seen::Left {
                acct: Some(a.state.clone()),
            };
            assert_eq!(ended(judge(&seen, None, None, grace)), Some(true), "{a:?}");
        }
        // COMPLETED without an exit code yet: its file may be on its way (NFS).
        assert_eq!(
            judge(&queued("COMPLETED"), None, None, grace),
            Verdict::Wait
        );
        assert_eq!(
            ended(judge(&queued("COMPLETED"), None, long, grace)),
            Some(true)
        );
        // Left the queue, and sacct failed or has no record (accounting off): no word on how it
        // ended. After the grace the stage fails, but its claims are not released.
        let left = Seen::Left { acct: None };
        assert_eq!(judge(&left, None, None, grace), Verdict::Wait);
        assert_eq!(ended(judge(&left, None, long, grace)), Some(false));
        assert_eq!(ended(judge(&left, Some(0), None, grace)), Some(true));
        // sacct still says RUNNING for a job squeue no longer lists: not an end either.
        let odd = Seen::Left {
            acct: Some("RUNNING".into()),
        };
        assert_eq!(judge(&odd, None, None, grace), Verdict::Wait);
        assert_eq!(ended(judge(&odd, None, long, grace)), Some(false));
    }

    fn launcher(t: &Path) -> SlurmLauncher {
        let store = std::sync::Arc::new(crate::cache::Store::new(t));
        let out = Output::detect(true);
        SlurmLauncher {
            dir: t.join("runs"),
            exe: PathBuf::from("seqpipe"),
            root: t.to_path_buf(),
            threads: 1,
            run_id: "r".into(),
            poll_every: Duration::from_secs(2),
            submit_all: true,
            local: LocalLauncher::new(store, out.clone()),
            out,
            local_in_flight: 0,
            jobs: Vec::new(),
            last_poll: None,
            failing_since: None,
            sacct: Some(false),
        }
    }

    fn job(t: &Path, store: &Path, slurm: &str) -> SlurmJob {
        SlurmJob {
            id: 0,
            slurm: slurm.into(),
            stage: "train".into(),
            log: t.join(format!("{slurm}.log")),
            exit: t.join(format!("{slurm}.exitcode")),
            result: t.join(format!("{slurm}.result.json")),
            store: store.to_path_buf(),
            state: "RUNNING".into(),
            waiting_exit_since: None,
            submitted_ms: crate::claim::now_ms() - 1000,
        }
    }

    /// A claim of Slurm job `slurm`, as its exec-job writes it.
    fn claim_of(store: &Path, slurm: &str, key: &str) -> PathBuf {
        let claims = crate::claim::Claims::new(store.join("claims"));
        let mut i = crate::claim::ClaimInfo::new(
            &crate::key::Key::parse(&key.repeat(64)).unwrap(),
            "p",
            "train",
        );
        i.job = Some(slurm.into());
        i.owner.host = "node001".into();
        std::fs::create_dir_all(store.join("claims")).unwrap();
        let p = claims.path(&i.key);
        std::fs::write(&p, serde_json::to_vec(&i).unwrap()).unwrap();
        p
    }

    #[test]
    fn a_silent_controller_fails_the_jobs_but_keeps_their_claims() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let mut l = launcher(t.path());
        l.jobs.push(job(t.path(), &store, "41"));
        let claim = claim_of(&store, "41", "a");
        let down = "squeue: error: Unable to contact slurm controller (connect failure)";
        let mut done = Vec::new();
        l.controller_failed(down.into(), &mut done);
        assert!(done.is_empty() && l.jobs.len() == 1, "patience first");
        l.failing_since = Some(Instant::now() - CONTROLLER_PATIENCE - Duration::from_secs(1));
        l.controller_failed(down.into(), &mut done);
        assert_eq!(done.len(), 1);
        let e = format!("{:#}", done[0].result.as_ref().err().unwrap());
        assert!(e.contains("may still run") && e.contains("41"), "{e}");
        assert!(claim.exists(), "a job that may still run keeps its claims");
    }

    #[test]
    fn a_job_that_ended_for_certain_has_its_claims_released() {
        let t = tempfile::tempdir().unwrap();
        let store = t.path().join("store");
        let mut l = launcher(t.path());
        l.jobs.push(job(t.path(), &store, "43"));
        l.jobs.push(job(t.path(), &store, "44"));
        let certain = claim_of(&store, "43", "c");
        let unsure = claim_of(&store, "44", "d");
        let f = l.finish(0, Err(anyhow!("TIMEOUT")), true);
        assert_eq!(f.job.as_deref(), Some("43"));
        assert!(!certain.exists());
        let f = l.finish(0, Err(anyhow!("left the queue")), false);
        assert_eq!(f.job.as_deref(), Some("44"));
        assert!(unsure.exists());
    }
}
