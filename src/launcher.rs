//! Launchers start stage jobs and report when they end; the executor decides what runs when.
//!
//! - `local`: each job on a thread of this process (the default).
//! - `process`: each job as a child `seqpipe exec-job FILE`, its output in a log beside the job
//!   description under `outputs/<pipeline>/runs/<run>/`. A child that panics, runs out of
//!   memory or is killed is a failed stage whose message names the signal and shows the tail of
//!   its log; the driver itself never crashes.

use crate::cache::Store;
use crate::job::{run_job, JobResult, JobSpec};
use crate::progress::Output;
use anyhow::{anyhow, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::launcher_setting::{LauncherKind, LauncherSetting};

/// A job that ended: its id (the executor's step index) and how it ended.
pub struct Finished {
    pub id: usize,
    pub result: Result<JobResult>,
    /// The job's log, when it has one of its own.
    pub log: Option<PathBuf>,
    /// The cluster's job id, for jobs a cluster ran.
    pub job: Option<String>,
    /// How long the launcher saw the job run (wall time), where it knows: the time a failed
    /// job that left no result is reported with.
    pub wall: Option<f64>,
}

pub trait Launcher {
    /// Start a job.
    fn submit(&mut self, id: usize, spec: JobSpec) -> Result<()>;
    /// Wait up to `timeout` for jobs to end; returns those that did.
    fn poll(&mut self, timeout: Duration) -> Vec<Finished>;
    /// Stop every job still running.
    fn cancel_all(&mut self);
}

/// Runs each job on a thread of this process.
pub struct LocalLauncher {
    store: Arc<Store>,
    out: Output,
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
}

impl LocalLauncher {
    pub fn new(store: Arc<Store>, out: Output) -> Self {
        let (tx, rx) = mpsc::channel();
        LocalLauncher { store, out, tx, rx }
    }
}

impl Launcher for LocalLauncher {
    fn submit(&mut self, id: usize, spec: JobSpec) -> Result<()> {
        let store = self.store.clone();
        let progress = self.out.stage(&spec.stage);
        let tx = self.tx.clone();
        std::thread::Builder::new()
            .name(format!("stage-{id}"))
            .spawn(move || {
                let t = Instant::now();
                let result = run_job(&spec, &store, progress);
                let _ = tx.send(Finished {
                    id,
                    result,
                    log: None,
                    job: None,
                    wall: Some(t.elapsed().as_secs_f64()),
                });
            })
            .context("starting a stage thread")?;
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Vec<Finished> {
        let mut done = Vec::new();
        if let Ok(f) = self.rx.recv_timeout(timeout) {
            done.push(f);
            while let Ok(f) = self.rx.try_recv() {
                done.push(f);
            }
        }
        done
    }

    /// Threads cannot be stopped; the process exits instead (claims are released on exit).
    fn cancel_all(&mut self) {}
}

/// Pids of children in flight, for the Ctrl-C handler.
fn children() -> &'static Mutex<Vec<u32>> {
    static C: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Vec::new()))
}

/// Kill every child job of this process (called on Ctrl-C).
pub fn kill_children() -> usize {
    let Ok(c) = children().lock() else { return 0 };
    for &pid in c.iter() {
        #[cfg(unix)]
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
    c.len()
}

struct Running {
    id: usize,
    child: Child,
    started: Instant,
    log: PathBuf,
    result: PathBuf,
    /// What the driver shows of the job's log.
    tail: LogTail,
}

/// Seconds between two progress lines of one job that the driver shows.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// Follows a job's log and shows the driver's user what a local run shows: the stage's notes
/// and log lines (`  [stage] resuming from …`, `  [stage] waiting: …`) as they come, and its
/// progress lines (`  [stage] 12/30 epochs …`), at most one every [`PROGRESS_EVERY`].
struct LogTail {
    /// `  [stage] `: the lines of the stage, as its job prints them.
    prefix: String,
    /// Bytes of the log already read (complete lines only).
    read: u64,
    last_progress: Option<Instant>,
    /// The newest progress line not shown yet.
    pending: Option<String>,
}

impl LogTail {
    fn new(stage: &str) -> Self {
        LogTail {
            prefix: format!("  [{stage}] "),
            read: 0,
            last_progress: None,
            pending: None,
        }
    }

    /// Show the new complete lines of `log`; `ended`: the job is over (its last progress
    /// lines are old news, its notes are not).
    fn relay(&mut self, log: &Path, out: &Output, ended: bool) {
        use std::io::{Read, Seek, SeekFrom};
        let mut buf = Vec::new();
        let Ok(mut f) = std::fs::File::open(log) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.read)).is_err() || f.read_to_end(&mut buf).is_err() {
            return;
        }
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return self.flush(out, ended);
        };
        self.read += end as u64 + 1;
        for line in String::from_utf8_lossy(&buf[..end]).lines() {
            let Some(rest) = line.strip_prefix(&self.prefix) else {
                continue;
            };
            if is_progress(rest) {
                self.pending = Some(line.to_string());
            } else {
                out.println(line);
            }
        }
        self.flush(out, ended);
    }

    fn flush(&mut self, out: &Output, ended: bool) {
        if ended {
            self.pending = None;
            return;
        }
        if self
            .last_progress
            .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY)
        {
            if let Some(line) = self.pending.take() {
                out.println(&line);
                self.last_progress = Some(Instant::now());
            }
        }
    }
}

/// `12/30 epochs …`: a plain progress line of [`crate::progress::StageProgress`].
fn is_progress(rest: &str) -> bool {
    let Some((done, after)) = rest.split_once('/') else {
        return false;
    };
    let total = after.split(' ').next().unwrap_or("");
    !done.is_empty()
        && done.bytes().all(|b| b.is_ascii_digit())
        && !total.is_empty()
        && total.bytes().all(|b| b.is_ascii_digit())
}

/// The binary that runs jobs: `SEQPIPE_BIN`, or this one.
pub fn seqpipe_exe() -> Result<PathBuf> {
    match std::env::var_os("SEQPIPE_BIN") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe().context("finding the seqpipe binary"),
    }
}

/// Runs each job as a child `seqpipe exec-job`.
pub struct ProcessLauncher {
    exe: PathBuf,
    dir: PathBuf,
    threads: usize,
    out: Output,
    running: Vec<Running>,
}

impl ProcessLauncher {
    /// Job descriptions, logs and results go to `dir` (a folder of the run record).
    /// Their notes and progress lines are shown on `out`.
    pub fn new(dir: PathBuf, threads: usize, out: Output) -> Result<Self> {
        let exe = seqpipe_exe()?;
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(ProcessLauncher {
            exe,
            dir,
            threads,
            out,
            running: Vec::new(),
        })
    }
}

impl Launcher for ProcessLauncher {
    fn submit(&mut self, id: usize, spec: JobSpec) -> Result<()> {
        let base = format!("{id:03}-{}", spec.key.short());
        let job = self.dir.join(format!("{base}.job.json"));
        let log = self.dir.join(format!("{base}.log"));
        let result = self.dir.join(format!("{base}.result.json"));
        spec.write(&job)?;
        let logf =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&self.exe)
            .arg("--threads")
            .arg(self.threads.to_string())
            .arg("exec-job")
            .arg(&job)
            .arg("--result")
            .arg(&result)
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("starting {} exec-job", self.exe.display()))?;
        children().lock().unwrap().push(child.id());
        self.running.push(Running {
            id,
            child,
            started: Instant::now(),
            log,
            result,
            tail: LogTail::new(&spec.stage),
        });
        Ok(())
    }

    fn poll(&mut self, timeout: Duration) -> Vec<Finished> {
        let deadline = Instant::now() + timeout;
        for r in &mut self.running {
            r.tail.relay(&r.log, &self.out, false);
        }
        loop {
            let mut done = Vec::new();
            let mut i = 0;
            while i < self.running.len() {
                match self.running[i].child.try_wait() {
                    Ok(Some(status)) => {
                        let mut r = self.running.swap_remove(i);
                        r.tail.relay(&r.log, &self.out, true);
                        children().lock().unwrap().retain(|&p| p != r.child.id());
                        let result = if status.success() {
                            crate::context::read_json::<JobResult>(&r.result)
                                .context("the job exited 0 but wrote no result")
                        } else {
                            Err(anyhow!(
                                "exec-job {}\n{}",
                                describe_exit(&status),
                                log_tail(&r.log, 12)
                            ))
                        };
                        done.push(Finished {
                            id: r.id,
                            result,
                            log: Some(r.log),
                            job: None,
                            wall: Some(r.started.elapsed().as_secs_f64()),
                        });
                    }
                    Ok(None) => i += 1,
                    Err(e) => {
                        let r = self.running.swap_remove(i);
                        done.push(Finished {
                            id: r.id,
                            result: Err(anyhow!("waiting for the job: {e}")),
                            log: Some(r.log),
                            job: None,
                            wall: Some(r.started.elapsed().as_secs_f64()),
                        });
                    }
                }
            }
            if !done.is_empty() || Instant::now() >= deadline || self.running.is_empty() {
                return done;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn cancel_all(&mut self) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        self.running.clear();
    }
}

impl Drop for ProcessLauncher {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

/// "exited with code 3", "was killed by signal 9 (SIGKILL; out of memory?)".
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let (name, hint) = match sig {
                libc::SIGKILL => ("SIGKILL", "; killed from outside, or out of memory"),
                libc::SIGSEGV => ("SIGSEGV", ""),
                libc::SIGABRT => ("SIGABRT", "; an abort, e.g. a failed allocation"),
                libc::SIGTERM => ("SIGTERM", ""),
                libc::SIGINT => ("SIGINT", ""),
                libc::SIGBUS => ("SIGBUS", ""),
                _ => ("", ""),
            };
            return if name.is_empty() {
                format!("was killed by signal {sig}")
            } else {
                format!("was killed by signal {sig} ({name}{hint})")
            };
        }
    }
    match status.code() {
        Some(c) => format!("exited with code {c}"),
        None => "ended abnormally".into(),
    }
}

/// The last `n` lines of a log, indented, with its path.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(n)..];
    if tail.is_empty() {
        return format!("  (its log {} is empty)", path.display());
    }
    let mut s = format!("  last lines of {}:", path.display());
    for l in tail {
        s.push_str("\n    ");
        s.push_str(l);
    }
    s
}
