//! Per-key claims: before a process computes a stage, it claims the stage's key, so that two
//! runs (two terminals, two cluster jobs) never compute the same key at once and never wait on
//! each other for anything else.
//!
//! A claim is a file `claims/<key>.claim` created exclusively (`O_CREAT|O_EXCL`, which holds on
//! NFS v3+), holding the owner's host, pid and process start time. While the stage runs, a
//! heartbeat thread refreshes the file's modification time. A claim whose owner is gone is taken
//! over: on the same host when the pid no longer runs (the start time guards against reused
//! pids), from another host when the heartbeat is older than [`stale_after`]. Take-overs go
//! through a second exclusive file, so two processes never both take over one claim. Nothing
//! here uses `flock`.

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

/// A process, identified well enough to tell whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), to tell a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

impl Owner {
    /// This process.
    pub fn me() -> &'static Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                host: hostname(),
                pid,
                start: proc_start(pid),
            }
        })
    }

    /// `host~pid`: a tag for file names that a later run can parse back.
    pub fn tag(&self) -> String {
        format!("{}~{}", self.host, self.pid)
    }

    pub fn is_local(&self) -> bool {
        self.host == Owner::me().host
    }

    /// Whether a process of this host still runs as this owner. `None` when it cannot be
    /// told (another host, or no `/proc`).
    pub fn alive_here(&self) -> Option<bool> {
        if !self.is_local() {
            return None;
        }
        if !Path::new("/proc/self/stat").exists() {
            return None;
        }
        match proc_start(self.pid) {
            None => Some(false),
            Some(s) => Some(self.start.is_none_or(|mine| mine == s)),
        }
    }
}

/// Parse the owner out of a name `<anything>~<host>~<pid>`; `None` if it has no such tail.
pub fn owner_from_tag(name: &str) -> Option<Owner> {
    let mut parts = name.rsplitn(3, '~');
    let pid = parts.next()?.parse().ok()?;
    let host = parts.next()?;
    parts.next()?;
    Some(Owner {
        host: host.to_string(),
        pid,
        start: None,
    })
}

/// Whether a leftover named for `owner` may be removed: its owner is a dead process of this
/// host. Leftovers of other hosts are left to their own runs.
pub fn leftover_is_dead(owner: &Owner) -> bool {
    owner.alive_here() == Some(false)
}

fn hostname() -> String {
    let h = gethostname::gethostname().to_string_lossy().into_owned();
    let h: String = h
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// Field 22 of `/proc/<pid>/stat`: the start time in ticks since boot.
fn proc_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

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
            "stage `{}` of `{}`, pid {} on {}",
            self.stage, self.pipeline, self.owner.pid, self.owner.host
        )
    }
}

pub fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
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
            match File::options().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(&serde_json::to_vec(info)?)?;
                    f.sync_all()?;
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
        match File::options().write(true).create_new(true).open(&guard) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Someone else is taking it over; a guard left by a crash expires.
                if age(&guard).is_some_and(|a| a > stale_after()) {
                    let _ = fs::remove_file(&guard);
                }
                std::thread::sleep(Duration::from_millis(50));
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        // Re-check under the guard: the claim may have been replaced by a live one.
        if is_stale(path, read_claim(path).as_ref()) {
            let _ = fs::remove_file(path);
        }
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

    /// Remove the claims held by cluster job `job`, which has ended. Returns how many.
    pub fn release_for_job(&self, job: &str) -> usize {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return 0;
        };
        rd.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "claim"))
            .filter(|p| read_claim(p).is_some_and(|c| c.job.as_deref() == Some(job)))
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

fn read_claim(path: &Path) -> Option<ClaimInfo> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn age(path: &Path) -> Option<Duration> {
    let m = fs::metadata(path).ok()?.modified().ok()?;
    Some(SystemTime::now().duration_since(m).unwrap_or_default())
}

/// A claim is stale when its owner is a dead process of this host, or when its heartbeat is
/// older than the timeout. A claim being written (not yet readable) is stale only by age.
fn is_stale(path: &Path, info: Option<&ClaimInfo>) -> bool {
    if let Some(alive) = info.and_then(|c| c.owner.alive_here()) {
        return !alive;
    }
    match age(path) {
        Some(a) => a > stale_after(),
        None => false,
    }
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

    #[test]
    fn owner_tags_round_trip() {
        let me = Owner::me();
        let o = owner_from_tag(&format!(".tmp-train[a=1]~{}", me.tag())).unwrap();
        assert_eq!((o.host.as_str(), o.pid), (me.host.as_str(), me.pid));
        assert_eq!(me.alive_here(), Some(true));
        assert!(owner_from_tag(".tmp-train-12").is_none());
    }
}
