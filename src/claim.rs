//! Per-key claims: before a process computes a stage, it claims the stage's key, so that two
//! runs (two terminals, two cluster jobs) never compute the same key at once and never wait on
//! each other for anything else.
//!
//! A claim is a file `claims/<key>.claim` created exclusively (`O_CREAT|O_EXCL`, which holds on
//! NFS v3+), holding the owner's host, boot, pid and process start time ([`Owner`]). While the
//! stage runs, a heartbeat thread refreshes the file's modification time. A claim whose owner is
//! gone is taken over: on the same machine when the pid no longer runs (the start time guards
//! against reused pids), from another machine when the heartbeat is older than
//! [`stale_after`]. A heartbeat more than [`stale_after`] in the future is a clock skew between
//! hosts: it is reported once and the claim counts as stale, so a wrong clock cannot hold a
//! key forever. Take-overs go through a second exclusive file, so two processes never both take
//! over one claim. Nothing here uses `flock`.
//!
//! Owners and their tags in leftover names: [`crate::owner`].

use crate::key::Key;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// How often a held claim's heartbeat is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A claim from another host whose heartbeat is older than this is taken over
/// (`SEQPIPE_CLAIM_TIMEOUT`, seconds; default 60). Hosts' clocks must agree to well within it.
pub fn stale_after() -> Duration {
    std::env::var("SEQPIPE_CLAIM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60))
}

pub use crate::owner::*;

/// What a claim file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimInfo {
    pub owner: Owner,
    pub key: Key,
    pub stage: String,
    pub pipeline: String,
    pub started_unix_ms: u128,
    /// The cluster job computing it (`SLURM_JOB_ID`), so that a driver that sees the job
    /// end can release a claim the dead job could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl ClaimInfo {
    pub fn new(key: &Key, pipeline: &str, stage: &str) -> Self {
        ClaimInfo {
            owner: Owner::me().clone(),
            key: key.clone(),
            stage: stage.to_string(),
            pipeline: pipeline.to_string(),
            started_unix_ms: now_ms(),
            job: std::env::var("SLURM_JOB_ID").ok(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "stage `{}` of `{}`, {}",
            self.stage,
            self.pipeline,
            self.owner.describe()
        )
    }
}

/// Claim files this process holds, removed on Ctrl-C by [`release_all_on_exit`].
fn held() -> &'static Mutex<Vec<PathBuf>> {
    static HELD: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    HELD.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remove every claim this process holds (called when the process is interrupted).
pub fn release_all_on_exit() {
    if let Ok(h) = held().lock() {
        for p in h.iter() {
            let _ = fs::remove_file(p);
        }
    }
}

/// A held claim: the heartbeat runs until it is dropped, which removes the file.
pub struct Claim {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    beat: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.beat.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        // Remove it only if it is still ours (it is never taken over while we live, unless a
        // heartbeat stalled longer than the timeout).
        if read_claim(&self.path).is_some_and(|c| &c.owner == Owner::me()) {
            let _ = fs::remove_file(&self.path);
        }
        if let Ok(mut h) = held().lock() {
            h.retain(|p| p != &self.path);
        }
    }
}

pub enum TryClaim {
    Got(Claim),
    /// Held by a live owner (its record, when readable).
    Held(Option<ClaimInfo>),
}

/// The claims folder of a store.
pub struct Claims {
    dir: PathBuf,
}

impl Claims {
    pub fn new(dir: PathBuf) -> Self {
        Claims { dir }
    }

    pub fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.claim", key.as_str()))
    }

    /// Claim `key`, taking over a claim whose owner is gone.
    pub fn try_claim(&self, info: &ClaimInfo) -> std::io::Result<TryClaim> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path(&info.key);
        for _ in 0..4 {
            match create_whole(&path, &serde_json::to_vec(info)?) {
                Ok(f) => {
                    held().lock().unwrap().push(path.clone());
                    return Ok(TryClaim::Got(start_heartbeat(path, f)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let current = read_claim(&path);
                    if !is_stale(&path, current.as_ref()) {
                        return Ok(TryClaim::Held(current));
                    }
                    self.take_over(&path)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(TryClaim::Held(read_claim(&path)))
    }

    /// Remove a stale claim, under a second exclusive file so that only one process does.
    fn take_over(&self, path: &Path) -> std::io::Result<()> {
        let guard = path.with_extension("takeover");
        let me = serde_json::to_vec(&Guard {
            owner: Owner::me().clone(),
        })?;
        match create_whole(&guard, &me) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Someone else is taking it over; a guard left by a crash goes (its owner is a
                // dead process here, or it is older than the timeout; one dated far in the
                // future too: a skewed clock must not block the key for ever).
                remove_if_stale(&guard, guard_is_stale);
                std::thread::sleep(Duration::from_millis(50));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        // Re-check under the guard: the claim may have been replaced by a live one.
        remove_if_stale(path, |p| is_stale(p, read_claim(p).as_ref()));
        let _ = fs::remove_file(&guard);
        Ok(())
    }

    /// Whether the claim on `key` is held by a live owner.
    pub fn is_held(&self, key: &Key) -> bool {
        let path = self.path(key);
        path.exists() && !is_stale(&path, read_claim(&path).as_ref())
    }

    /// Every live claim.
    pub fn live(&self) -> Vec<ClaimInfo> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "claim"))
            .filter_map(|p| {
                let c = read_claim(&p);
                (!is_stale(&p, c.as_ref())).then_some(c).flatten()
            })
            .collect()
    }

    /// Remove the claims held by cluster job `job`, which has ended for certain (the caller has
    /// Slurm's word or the job's exit code, never a controller's silence). `submitted_ms`: when
    /// the job was submitted; a claim of the same job id made well before that (more than
    /// [`stale_after`], for clocks that differ a little) is another cluster's job, and stays.
    /// Returns how many went.
    pub fn release_for_job(&self, job: &str, submitted_ms: u128) -> usize {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let not_before = submitted_ms.saturating_sub(stale_after().as_millis());
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "claim"))
            .filter(|p| {
                read_claim(p).is_some_and(|c| {
                    c.job.as_deref() == Some(job) && c.started_unix_ms >= not_before
                })
            })
            .filter(|p| fs::remove_file(p).is_ok())
            .count()
    }

    /// Remove claims whose owners are gone. Returns how many.
    pub fn clear_stale(&self) -> usize {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut n = 0;
        for p in rd.filter_map(|e| e.ok()).map(|e| e.path()) {
            if p.extension().is_some_and(|x| x == "claim")
                && is_stale(&p, read_claim(&p).as_ref())
                && self.take_over(&p).is_ok()
                && !p.exists()
            {
                n += 1;
            }
            if p.extension().is_some_and(|x| x == "takeover") && remove_if_stale(&p, guard_is_stale)
            {
                n += 1;
            }
        }
        n
    }
}

fn start_heartbeat(path: PathBuf, file: File) -> Claim {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let beat = std::thread::Builder::new()
        .name("claim-heartbeat".into())
        .spawn(move || {
            while !s.load(Ordering::SeqCst) {
                std::thread::park_timeout(HEARTBEAT);
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let _ = file.set_modified(SystemTime::now());
            }
        })
        .ok();
    Claim { path, stop, beat }
}

/// What a take-over guard holds: who is taking the claim over.
#[derive(Serialize, Deserialize)]
struct Guard {
    owner: Owner,
}

/// Remove `path` if `stale` judges it so, and only the file that was judged: its inode is
/// noted first, it is renamed to a name of this process's (`<name>.gone~<owner tag>`), and
/// when the renamed file is another one (a process replaced the stale file meanwhile) it is put
/// back. Deleting by name after judging would remove a live claim or guard written between
/// the two, and let two processes take one key. Returns whether the judged file went.
fn remove_if_stale(path: &Path, stale: impl Fn(&Path) -> bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(before) = fs::symlink_metadata(path) else {
        return false;
    };
    if !stale(path) {
        return false;
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let aside = path.with_file_name(format!("{name}.gone~{}", Owner::me().tag()));
    let _ = fs::remove_file(&aside); // ours, left by a kill; a link there goes itself
    if fs::rename(path, &aside).is_err() {
        return false;
    }
    // The inode and the modification time (an inode number can be reused at once by a file
    // created right after another was deleted; a rename changes neither).
    let id = |m: &fs::Metadata| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len());
    let same = fs::symlink_metadata(&aside).is_ok_and(|m| id(&m) == id(&before));
    if !same {
        let _ = fs::hard_link(&aside, path); // back in place, unless a newer one is there
    }
    let _ = fs::remove_file(&aside);
    same
}

/// Not a plain file at a claim's or guard's name (a link or a folder planted there): never
/// read through, and stale at once, so that it cannot hold a key.
fn not_plain(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file())
}

/// Whether a take-over guard was left by a crash: its owner is a dead process of this machine,
/// or (owner elsewhere or unreadable) it is older than the timeout or dated in the future.
fn guard_is_stale(guard: &Path) -> bool {
    if not_plain(guard) {
        return true;
    }
    let owner = crate::fsutil::read_bounded(guard, 64 << 10)
        .ok()
        .and_then(|b| serde_json::from_slice::<Guard>(&b).ok())
        .map(|g| g.owner);
    if let Some(alive) = owner.and_then(|o| o.alive_here()) {
        return !alive;
    }
    mtime_age(guard).is_some_and(|a| heartbeat(a, stale_after()) != Heartbeat::Fresh)
}

/// Create `path` exclusively with all of `bytes` in it, never a part: the bytes go into a
/// temporary file named for this process (`<name>.tmp~<owner tag>`, removed by the next run
/// when a kill leaves it), which is then hard-linked to `path` (exclusive, as `O_EXCL` is, and
/// on NFS too). A file system without hard links gets an exclusive create and a write (a kill
/// between the two leaves an empty file, which expires by its age). Returns the file, open for
/// the heartbeat.
fn create_whole(path: &Path, bytes: &[u8]) -> std::io::Result<File> {
    use std::io::ErrorKind;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!("{name}.tmp~{}", Owner::me().tag()));
    let _ = fs::remove_file(&tmp); // ours, from an earlier try; a link there goes itself
    let mut f = File::options().write(true).create_new(true).open(&tmp)?;
    if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
        let _ = fs::remove_file(&tmp); // a full disk: nothing is left behind
        return Err(e);
    }
    let linked = fs::hard_link(&tmp, path).or_else(|e| {
        // On NFS a link retried after its reply was lost says "exists" though it was made:
        // the file's link count tells.
        use std::os::unix::fs::MetadataExt;
        if f.metadata().is_ok_and(|m| m.nlink() == 2) {
            Ok(())
        } else {
            Err(e)
        }
    });
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(f),
        // No hard links on this file system (EPERM, EOPNOTSUPP).
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::Unsupported
            ) =>
        {
            let mut f = File::options().write(true).create_new(true).open(path)?;
            if let Err(e) = f.write_all(bytes).and_then(|_| f.sync_all()) {
                let _ = fs::remove_file(path); // ours: just created
                return Err(e);
            }
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// A claim file: a plain file (never through a link) of at most 64 KiB (it holds an owner and
/// a few names).
fn read_claim(path: &Path) -> Option<ClaimInfo> {
    serde_json::from_slice(&crate::fsutil::read_bounded(path, 64 << 10).ok()?).ok()
}

/// How old a file's modification time is: `Ok(age)`, or `Err(ahead)` when it lies ahead of
/// this host's clock.
fn mtime_age(path: &Path) -> Option<Result<Duration, Duration>> {
    let m = fs::symlink_metadata(path).ok()?.modified().ok()?;
    Some(match SystemTime::now().duration_since(m) {
        Ok(age) => Ok(age),
        Err(e) => Err(e.duration()),
    })
}

/// What a claim's heartbeat says of its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Refreshed within `stale` (or a little ahead of our clock): the owner runs.
    Fresh,
    /// Older than `stale`: the owner is gone.
    Stale,
    /// More than `stale` in the future: the owner's clock is ahead of ours by about this much.
    /// It counts as stale, so that a wrong clock cannot hold a key for ever.
    Skewed(Duration),
}

/// Judge a heartbeat `age` (`Err(ahead)`: in the future) against the timeout `stale`.
pub fn heartbeat(age: Result<Duration, Duration>, stale: Duration) -> Heartbeat {
    match age {
        Ok(a) if a > stale => Heartbeat::Stale,
        Err(ahead) if ahead > stale => Heartbeat::Skewed(ahead),
        _ => Heartbeat::Fresh,
    }
}

/// Warnings not yet shown (clock skews seen on claims), and the hosts already warned about.
fn warnings() -> &'static Mutex<(Vec<String>, Vec<String>)> {
    static W: OnceLock<Mutex<(Vec<String>, Vec<String>)>> = OnceLock::new();
    W.get_or_init(|| Mutex::new((Vec::new(), Vec::new())))
}

/// Record a warning, once per `about` (a host) in the life of this process.
fn warn_once(about: &str, text: String) {
    let mut w = warnings().lock().unwrap_or_else(|e| e.into_inner());
    if !w.1.iter().any(|a| a == about) {
        w.1.push(about.to_string());
        w.0.push(text);
    }
}

/// The warnings this module has to report (each once) since the last call: a caller that
/// claims keys shows them to its user.
pub fn take_warnings() -> Vec<String> {
    std::mem::take(&mut warnings().lock().unwrap_or_else(|e| e.into_inner()).0)
}

/// A claim is stale when its owner is a dead process of this machine, or when its heartbeat is
/// older than the timeout, or more than the timeout in the future (a clock skew, reported once).
/// A claim being written (not yet readable) is stale only by age.
fn is_stale(path: &Path, info: Option<&ClaimInfo>) -> bool {
    if not_plain(path) {
        return true;
    }
    if let Some(alive) = info.and_then(|c| c.owner.alive_here()) {
        return !alive;
    }
    let Some(age) = mtime_age(path) else {
        return false;
    };
    match heartbeat(age, stale_after()) {
        Heartbeat::Fresh => false,
        Heartbeat::Stale => true,
        Heartbeat::Skewed(ahead) => {
            let (who, host) = match info {
                Some(c) => (c.describe(), c.owner.host.clone()),
                None => (
                    "a claim being written".to_string(),
                    path.display().to_string(),
                ),
            };
            warn_once(
                &host,
                format!(
                    "warning: the claim {} ({who}) has a heartbeat {} s in the future: the clock \
                     of {host} is ahead of this host's. Hosts sharing a store must agree on the \
                     time (NTP) to well within {} s (SEQPIPE_CLAIM_TIMEOUT); the claim is taken \
                     over as stale, so its owner, if it still runs, computes the key alongside \
                     this run",
                    path.display(),
                    ahead.as_secs(),
                    stale_after().as_secs()
                ),
            );
            true
        }
    }
}

/// How often a job waiting on another process's claim says it still waits.
pub const WAIT_REMINDER: Duration = Duration::from_secs(60);

/// How long a job waits on another process's claim before it fails (`SEQPIPE_CLAIM_WAIT`,
/// seconds; default 24 h, since a training can take hours).
pub fn wait_limit() -> Duration {
    std::env::var("SEQPIPE_CLAIM_WAIT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(24 * 3600))
}

/// What a job waiting on a claim does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStep {
    /// Say that it waits, and for whom (the first time).
    Begin,
    /// Say that it still waits, after this long.
    Remind(Duration),
    /// Nothing new to say: wait on.
    Quiet,
    /// It waited the limit: fail with [`WaitTooLong`].
    GiveUp,
}

/// The schedule of a wait on a claim: what to say, and when to give up.
#[derive(Debug, Clone)]
pub struct Waiting {
    remind_every: Duration,
    limit: Duration,
    said: Option<Duration>,
}

impl Waiting {
    pub fn new(remind_every: Duration, limit: Duration) -> Self {
        Waiting {
            remind_every,
            limit,
            said: None,
        }
    }

    /// The step after waiting `waited` in all.
    pub fn step(&mut self, waited: Duration) -> WaitStep {
        if waited >= self.limit {
            return WaitStep::GiveUp;
        }
        match self.said {
            None => {
                self.said = Some(waited);
                WaitStep::Begin
            }
            Some(last) if waited.saturating_sub(last) >= self.remind_every => {
                self.said = Some(waited);
                WaitStep::Remind(waited)
            }
            Some(_) => WaitStep::Quiet,
        }
    }
}

/// A job waited on another process's claim for longer than `SEQPIPE_CLAIM_WAIT`.
#[derive(Debug, thiserror::Error)]
#[error(
    "gave up after {waited_s} s waiting for key {key}: the claim {path} is held by {who}, which \
     looks alive (its process runs here, or its heartbeat is fresh; SEQPIPE_CLAIM_WAIT={limit_s} \
     s). Let that process finish, stop it, or raise SEQPIPE_CLAIM_WAIT; if it is really gone (a \
     machine that cannot be reached, a clock far off), remove \
     {path} and run again"
)]
pub struct WaitTooLong {
    pub key: String,
    pub path: String,
    pub who: String,
    pub waited_s: u64,
    pub limit_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str) -> ClaimInfo {
        ClaimInfo::new(&Key::parse(&key.repeat(64 / key.len())).unwrap(), "p", "s")
    }

    #[test]
    fn one_claim_per_key_and_release_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let c = Claims::new(t.path().join("claims"));
        let i = info("ab");
        let TryClaim::Got(held) = c.try_claim(&i).unwrap() else {
            panic!("the first claim succeeds")
        };
        assert!(c.is_held(&i.key));
        assert!(matches!(c.try_claim(&i).unwrap(), TryClaim::Held(Some(_))));
        assert_eq!(c.live().len(), 1);
        drop(held);
        assert!(!c.is_held(&i.key));
        assert!(matches!(c.try_claim(&i).unwrap(), TryClaim::Got(_)));
    }

    #[test]
    fn a_dead_owners_claim_is_taken_over() {
        let t = tempfile::tempdir().unwrap();
        let c = Claims::new(t.path().join("claims"));
        let mut i = info("cd");
        // A process that has exited: its pid no longer runs (or runs with another start time).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        i.owner.pid = pid;
        i.owner.start = Some(1);
        fs::create_dir_all(t.path().join("claims")).unwrap();
        fs::write(c.path(&i.key), serde_json::to_vec(&i).unwrap()).unwrap();
        assert!(!c.is_held(&i.key));
        assert!(matches!(c.try_claim(&i).unwrap(), TryClaim::Got(_)));
    }

    #[test]
    fn another_hosts_claim_expires_by_heartbeat_only() {
        let t = tempfile::tempdir().unwrap();
        let c = Claims::new(t.path().join("claims"));
        let mut i = info("ef");
        i.owner.host = "elsewhere".into();
        fs::create_dir_all(t.path().join("claims")).unwrap();
        let p = c.path(&i.key);
        fs::write(&p, serde_json::to_vec(&i).unwrap()).unwrap();
        assert!(
            c.is_held(&i.key),
            "a fresh heartbeat from another host is live"
        );
        let old = SystemTime::now() - stale_after() - Duration::from_secs(5);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(!c.is_held(&i.key));
        assert_eq!(c.clear_stale(), 1);
    }

    /// A claim appears whole or not at all: no half-written claim of a killed process can
    /// hold its key. A guard left by a killed take-over goes at once, not after the timeout.
    #[test]
    fn claims_are_written_whole_and_a_killed_take_over_does_not_block() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("claims");
        let c = Claims::new(dir.clone());
        let i = info("a1");
        let TryClaim::Got(held) = c.try_claim(&i).unwrap() else {
            panic!("the first claim succeeds")
        };
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [format!("{}.claim", i.key.as_str())],
            "no temporary file stays"
        );
        assert_eq!(read_claim(&c.path(&i.key)).unwrap().owner, *Owner::me());
        drop(held);
        // A guard of a dead process of this machine, just written (so not old).
        let mut dead = Owner::me().clone();
        dead.pid = dead_pid();
        dead.start = Some(1);
        let guard = c.path(&i.key).with_extension("takeover");
        fs::write(&guard, serde_json::to_vec(&Guard { owner: dead }).unwrap()).unwrap();
        assert!(guard_is_stale(&guard));
        assert_eq!(c.clear_stale(), 1);
        assert!(!guard.exists());
        // A live one's guard stays; so does an unreadable fresh one (another host's, writing).
        fs::write(
            &guard,
            serde_json::to_vec(&Guard {
                owner: Owner::me().clone(),
            })
            .unwrap(),
        )
        .unwrap();
        assert!(!guard_is_stale(&guard));
        fs::write(&guard, b"").unwrap();
        assert!(!guard_is_stale(&guard));
    }

    /// A stale file replaced by a live one between the judgment and the removal stays (the
    /// live one): removal goes by the judged file, not by the name. A link planted at a claim's
    /// name is stale at once and goes itself; its target stays.
    #[test]
    fn only_the_judged_file_is_removed_and_planted_links_hold_nothing() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k.takeover");
        fs::write(&p, "stale").unwrap();
        let elsewhere = t.path().join("elsewhere");
        let removed = remove_if_stale(&p, |p| {
            // Another process replaces it while we judge (the old one kept elsewhere, so that
            // its inode number is not reused).
            fs::rename(p, &elsewhere).unwrap();
            fs::write(p, "live").unwrap();
            true
        });
        assert!(!removed);
        assert_eq!(fs::read_to_string(&p).unwrap(), "live");
        fs::remove_file(&elsewhere).unwrap();
        let names: Vec<_> = fs::read_dir(t.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "nothing set aside stays");
        assert!(remove_if_stale(&p, |_| true));
        assert!(!p.exists());

        let c = Claims::new(t.path().join("claims"));
        let i = info("b2");
        fs::create_dir_all(t.path().join("claims")).unwrap();
        let target = t.path().join("precious.txt");
        fs::write(&target, "keep me").unwrap();
        std::os::unix::fs::symlink(&target, c.path(&i.key)).unwrap();
        assert!(!c.is_held(&i.key), "a link holds no key");
        assert!(matches!(c.try_claim(&i).unwrap(), TryClaim::Got(_)));
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn owner_tags_round_trip() {
        let me = Owner::me();
        assert!(me.start.is_some() && me.boot.as_ref().is_some_and(|b| b.len() == BOOT_HEX));
        let name = format!(".tmp-train[a=1]-17~{}", me.tag());
        let (prefix, o) = parse_tag_suffix(&name).unwrap();
        assert_eq!((prefix, &o), (".tmp-train[a=1]-17", me));
        assert_eq!(owner_from_tag(&name).as_ref(), Some(me));
        assert_eq!(parse_tag(&me.tag()).as_ref(), Some(me));
        assert_eq!(me.alive_here(), Some(true));
        assert!(owner_from_tag(".tmp-train-12").is_none());
    }

    #[test]
    fn old_tags_are_read_with_boot_and_start_unknown() {
        let (prefix, o) = parse_tag_suffix("abc123-17~node001~42").unwrap();
        assert_eq!(prefix, "abc123-17");
        assert_eq!(
            o,
            Owner {
                host: "node001".into(),
                pid: 42,
                start: None,
                boot: None
            }
        );
        assert_eq!(parse_tag("node001~42"), Some(o));
    }

    #[test]
    fn tags_are_checked_strictly() {
        let boot = "0123456789ab";
        assert!(parse_tag_suffix(&format!("p~n1~12~34~{boot}")).is_some());
        for bad in [
            format!("p~n 1~12~34~{boot}"),  // a host with a space…
            "p~n-1~12".to_string(),         // …or a dash (hostname() never writes one)
            "p~~12".to_string(),            // no host
            "p~n1~12a".to_string(),         // a pid that is not a number
            "p~n1~99999999999".to_string(), // nor a u32
            format!("n1~12~34~{boot}"),     // no prefix: only a bare tag (parse_tag)
            "p".to_string(),
            "~".to_string(),
        ] {
            assert!(parse_tag_suffix(&bad).is_none(), "{bad}");
        }
        // A boot of the wrong form is not the current tag, and not an old one either.
        for bad_boot in [
            "0123456789AB",
            "0123456789a",
            "0123456789abc",
            "0123456789ag",
        ] {
            let name = format!("p~n1~12~34~{bad_boot}");
            assert!(parse_tag_suffix(&name).is_none(), "{name}");
        }
        assert!(parse_tag(&format!("x~n1~12~34~{boot}")).is_none());
    }

    #[test]
    fn a_leftover_of_another_boot_is_never_dead_one_of_ours_is() {
        let me = Owner::me();
        let dead = dead_pid();
        let ours = Owner {
            pid: dead,
            ..me.clone()
        };
        assert!(ours.is_local());
        assert!(leftover_is_dead(
            &owner_from_tag(&format!("abc-1~{}", ours.tag())).unwrap()
        ));
        // Same host name, another machine or container: its pids are not ours to judge.
        let twin = Owner {
            boot: Some("ffffffffffff".into()),
            ..ours.clone()
        };
        assert!(!twin.is_local());
        assert_eq!(twin.alive_here(), None);
        let name = format!("abc-1~{}", twin.tag());
        assert!(!leftover_is_dead(&owner_from_tag(&name).unwrap()));
        // Even when the pid is one that runs here (this process's own).
        let twin_me = Owner {
            boot: Some("ffffffffffff".into()),
            ..me.clone()
        };
        assert_eq!(twin_me.alive_here(), None);
        // A reused pid: ours runs, but it started at another time.
        let reused = Owner {
            start: me.start.map(|s| s + 1),
            ..me.clone()
        };
        assert!(leftover_is_dead(&parse_tag(&reused.tag()).unwrap()));
        // An old tag with our host name and a dead pid: judged as before.
        assert!(leftover_is_dead(
            &owner_from_tag(&format!("abc-1~{}~{dead}", me.host)).unwrap()
        ));
        assert!(!leftover_is_dead(
            &owner_from_tag(&format!("abc-1~{}~{}", me.host, me.pid)).unwrap()
        ));
    }

    #[test]
    fn the_boot_digest_names_boot_and_pid_namespace() {
        let a = boot_digest("6c1b0e3f-0000", "pid:[4026531836]");
        assert_eq!(a.len(), BOOT_HEX);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, boot_digest("6c1b0e3f-0000", "pid:[4026532001]"));
        assert_ne!(a, boot_digest("6c1b0e3f-0001", "pid:[4026531836]"));
    }

    #[test]
    fn heartbeats_far_in_the_future_are_skew() {
        let stale = Duration::from_secs(60);
        let s = Duration::from_secs;
        assert_eq!(heartbeat(Ok(s(3)), stale), Heartbeat::Fresh);
        assert_eq!(heartbeat(Ok(s(61)), stale), Heartbeat::Stale);
        // A clock a little ahead is no matter; far ahead is a skew, and bounded.
        assert_eq!(heartbeat(Err(s(10)), stale), Heartbeat::Fresh);
        assert_eq!(heartbeat(Err(s(600)), stale), Heartbeat::Skewed(s(600)));
    }

    #[test]
    fn a_claim_dated_far_in_the_future_is_taken_over_and_reported_once() {
        let t = tempfile::tempdir().unwrap();
        let c = Claims::new(t.path().join("claims"));
        let mut i = info("9a");
        i.owner.host = "fastclock".into();
        fs::create_dir_all(t.path().join("claims")).unwrap();
        let p = c.path(&i.key);
        fs::write(&p, serde_json::to_vec(&i).unwrap()).unwrap();
        let ahead = SystemTime::now() + stale_after() + Duration::from_secs(120);
        let set = |p: &Path| {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(ahead)
                .unwrap()
        };
        set(&p);
        assert!(
            !c.is_held(&i.key),
            "a heartbeat far ahead does not hold the key for ever"
        );
        let w: Vec<String> = take_warnings()
            .into_iter()
            .filter(|w| w.contains("fastclock"))
            .collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("in the future") && w[0].contains("must agree"),
            "{}",
            w[0]
        );
        // Taken over; a second skewed claim of that host is not reported again.
        assert!(matches!(
            c.try_claim(&info("9a")).unwrap(),
            TryClaim::Got(_)
        ));
        let j = ClaimInfo {
            key: info("8b").key,
            ..i.clone()
        };
        fs::write(c.path(&j.key), serde_json::to_vec(&j).unwrap()).unwrap();
        set(&c.path(&j.key));
        assert!(!c.is_held(&j.key));
        assert!(take_warnings().iter().all(|w| !w.contains("fastclock")));
    }

    #[test]
    fn a_long_wait_is_reminded_and_bounded() {
        let s = Duration::from_secs;
        let mut w = Waiting::new(s(60), s(3600));
        assert_eq!(w.step(s(0)), WaitStep::Begin);
        assert_eq!(w.step(s(1)), WaitStep::Quiet);
        assert_eq!(w.step(s(59)), WaitStep::Quiet);
        assert_eq!(w.step(s(60)), WaitStep::Remind(s(60)));
        assert_eq!(w.step(s(61)), WaitStep::Quiet);
        assert_eq!(w.step(s(125)), WaitStep::Remind(s(125)));
        assert_eq!(w.step(s(3599)), WaitStep::Remind(s(3599)));
        assert_eq!(w.step(s(3600)), WaitStep::GiveUp);
        assert_eq!(Waiting::new(s(60), s(0)).step(s(0)), WaitStep::GiveUp);
        let e = WaitTooLong {
            key: "abc".into(),
            path: "/s/claims/abc.claim".into(),
            who: "stage `t` of `p`, pid 7 on n1".into(),
            waited_s: 3600,
            limit_s: 3600,
        }
        .to_string();
        assert!(
            e.contains("/s/claims/abc.claim") && e.contains("pid 7 on n1"),
            "{e}"
        );
        assert!(e.contains("remove /s/claims/abc.claim"), "{e}");
    }

    #[test]
    fn a_jobs_claims_are_released_but_not_another_clusters_of_the_same_id() {
        let t = tempfile::tempdir().unwrap();
        let c = Claims::new(t.path().join("claims"));
        fs::create_dir_all(t.path().join("claims")).unwrap();
        let submitted = now_ms();
        let mut ours = info("1a");
        ours.job = Some("77".into());
        ours.started_unix_ms = submitted + 500;
        let mut other_cluster = info("2b");
        other_cluster.job = Some("77".into());
        other_cluster.started_unix_ms = submitted - 3_600_000;
        let mut other_job = info("3c");
        other_job.job = Some("78".into());
        for i in [&ours, &other_cluster, &other_job] {
            fs::write(c.path(&i.key), serde_json::to_vec(i).unwrap()).unwrap();
        }
        assert_eq!(c.release_for_job("77", submitted), 1);
        assert!(!c.path(&ours.key).exists());
        assert!(c.path(&other_cluster.key).exists() && c.path(&other_job.key).exists());
    }
}
