//! The content-addressed store (`outputs/.seqpipe/` unless another folder is named).
//!
//! An entry is a folder `objects/<k0k1>/<key>/` holding the stage's files and `entry.json`, the
//! record, written last: every file's name, size and blake3 digest. It is built in `tmp/`, every
//! file fsynced and made read-only, and renamed into place in one step: a crash leaves a folder
//! in `tmp/` (removed by a later run once its owner is gone) and never an entry that looks
//! complete.
//!
//! A hit is verified before its files are used: every file is re-hashed against its digest
//! (once per process). An entry that fails is moved to `quarantine/` with a warning naming the
//! file, and the stage computes again. Computing a key is guarded by a per-key claim
//! ([`crate::claim`]), not by a lock on the whole store.

use crate::claim::{leftover_is_dead, now_ms, owner_from_tag, Claims, Owner};
use crate::fsutil::sync_dir;
pub use crate::fsutil::{digest_file, set_read_only, write_synced};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("a stage may not write a file named `{0}`: the store keeps its record there")]
    Reserved(&'static str),
    #[error("entry {0} has no readable record: {1}")]
    Record(String, String),
    #[error("a store record is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;
use crate::fsutil::{FsError, IoAt};
use crate::key::{Key, KeyRecord};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const ENTRY: &str = "entry.json";
/// Bump when the entry record changes meaning; older entries are then misses.
pub const ENTRY_FORMAT: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub bytes: u64,
    /// blake3 of the content (absent in entries written before digests: such entries are
    /// recomputed).
    #[serde(default)]
    pub blake3: Option<String>,
}

/// The record of a committed entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default)]
    pub format: u32,
    pub key: Key,
    pub record: KeyRecord,
    pub files: Vec<FileInfo>,
    /// The stage name that produced it (informational; not part of the key).
    pub stage: String,
    pub seconds: f64,
}

#[derive(Debug)]
pub enum Lookup {
    Hit(PathBuf),
    Miss,
    /// Present but unusable; the reason is shown as a warning.
    Corrupt(String),
}

pub struct Store {
    meta: PathBuf,
    outputs: PathBuf,
    /// Keys verified by this process (an entry is immutable once committed).
    verified: Mutex<HashSet<Key>>,
    claims: Claims,
    /// A store outside this project (`--store`): it records when each entry was last used,
    /// for `gc --older-than`.
    shared: bool,
}

impl Store {
    /// The store of a project: `outputs/.seqpipe`, views under `outputs/`.
    pub fn new(outputs: &Path) -> Self {
        Store::with_meta(outputs, &outputs.join(".seqpipe"))
    }

    /// A store in `meta` (for example a shared folder), with views under `outputs`.
    pub fn with_meta(outputs: &Path, meta: &Path) -> Self {
        Store {
            meta: meta.to_path_buf(),
            outputs: outputs.to_path_buf(),
            verified: Mutex::new(HashSet::new()),
            claims: Claims::new(meta.join("claims")),
            shared: meta != outputs.join(".seqpipe"),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Record that an entry was used now (shared stores only): `used/<key>`'s mtime.
    fn mark_used(&self, key: &Key) {
        if self.shared {
            let d = self.meta.join("used");
            let _ = fs::create_dir_all(&d);
            let _ = File::create(d.join(&key.0));
        }
    }

    /// When an entry was last used, as far as the store knows.
    fn last_used(&self, key: &Key, dir: &Path) -> Option<std::time::SystemTime> {
        fs::metadata(self.meta.join("used").join(&key.0))
            .or_else(|_| fs::metadata(dir))
            .and_then(|m| m.modified())
            .ok()
    }

    pub fn meta(&self) -> &Path {
        &self.meta
    }

    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn object_dir(&self, key: &Key) -> PathBuf {
        self.meta.join("objects").join(&key.0[..2]).join(&key.0)
    }

    /// Look a key up, verifying every file of a hit against its digest.
    pub fn lookup(&self, key: &Key) -> Lookup {
        let dir = self.object_dir(key);
        if !dir.exists() {
            return Lookup::Miss;
        }
        if self.verified.lock().unwrap().contains(key) {
            return Lookup::Hit(dir);
        }
        match verify_entry(&dir, key) {
            Ok(_) => {
                self.verified.lock().unwrap().insert(key.clone());
                self.mark_used(key);
                Lookup::Hit(dir)
            }
            Err(why) => Lookup::Corrupt(format!("entry {}: {why}", key.short())),
        }
    }

    /// Forget what this process verified (for `verify`, which re-hashes everything).
    pub fn forget_verified(&self) {
        self.verified.lock().unwrap().clear();
    }

    pub fn entry(&self, key: &Key) -> Option<Entry> {
        read_entry(&self.object_dir(key)).ok()
    }

    /// Set a damaged entry aside in `quarantine/` (so that it is never served, and can be
    /// looked at). Returns where it went.
    pub fn quarantine(&self, key: &Key) -> Result<Option<PathBuf>> {
        let dir = self.object_dir(key);
        if !dir.exists() {
            return Ok(None);
        }
        self.verified.lock().unwrap().remove(key);
        let q = self.meta.join("quarantine");
        fs::create_dir_all(&q).at("creating", &q)?;
        let to = q.join(format!("{}-{}~{}", key.0, now_ms(), Owner::me().tag()));
        match fs::rename(&dir, &to) {
            Ok(()) => Ok(Some(to)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at("moving to quarantine", &dir).map_err(Into::into),
        }
    }

    /// Checkpoints of the stage computing `key`: they belong to the key, so a changed param
    /// never resumes a stale one.
    pub fn checkpoint_dir(&self, key: &Key) -> PathBuf {
        self.meta.join("checkpoints").join(&key.0)
    }

    /// A fresh folder for a stage to write into, named for this process so that a later run
    /// can tell a leftover from work in progress.
    pub fn staging(&self, key: &Key) -> Result<PathBuf> {
        let dir = self.meta.join("tmp").join(format!(
            "{}-{}~{}",
            key.short(),
            now_ms(),
            Owner::me().tag()
        ));
        fs::create_dir_all(&dir).at("creating", &dir)?;
        Ok(dir)
    }

    /// Make a staging folder the entry for `record`: hash and fsync its files, make them
    /// read-only, write the record last, rename it into place. With `replace` (a forced run)
    /// the new entry wins over one already there; otherwise an intact entry already there is
    /// kept and a damaged one is quarantined first. The caller holds the key's claim.
    pub fn commit(
        &self,
        staging: &Path,
        record: &KeyRecord,
        stage: &str,
        seconds: f64,
        replace: bool,
    ) -> Result<PathBuf> {
        let key = record.key();
        let mut files = Vec::new();
        let mut names: Vec<PathBuf> = fs::read_dir(staging)
            .at("reading", staging)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .at("listing", staging)?;
        names.sort();
        for p in names {
            let f = File::open(&p).at("opening", &p)?;
            f.sync_all().at("syncing", &p)?;
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == ENTRY {
                return Err(StoreError::Reserved(ENTRY));
            }
            files.push(FileInfo {
                name,
                bytes: f.metadata().at("reading", &p)?.len(),
                blake3: Some(digest_file(&p).at("hashing", &p)?),
            });
            set_read_only(&p);
        }
        let entry = Entry {
            format: ENTRY_FORMAT,
            key: key.clone(),
            record: record.clone(),
            files,
            stage: stage.to_string(),
            seconds,
        };
        write_synced(&staging.join(ENTRY), &serde_json::to_vec_pretty(&entry)?)?;
        set_read_only(&staging.join(ENTRY));
        sync_dir(staging);
        let target = self.object_dir(&key);
        let parent = target.parent().unwrap();
        fs::create_dir_all(parent).at("creating", parent)?;
        if target.exists() {
            if !replace && verify_entry(&target, &key).is_ok() {
                // Same key, intact content: keep the one that is there.
                let _ = fs::remove_dir_all(staging);
                return Ok(target);
            }
            let trash = self.meta.join("trash");
            fs::create_dir_all(&trash).at("creating", &trash)?;
            let old = trash.join(format!(
                "{}-{}~{}",
                key.short(),
                now_ms(),
                Owner::me().tag()
            ));
            if replace {
                fs::rename(&target, &old).at("moving aside the old", &target)?;
            } else {
                self.quarantine(&key)?;
            }
            fs::rename(staging, &target).at("committing", &target)?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(staging, &target).at("committing", &target)?;
        }
        sync_dir(parent);
        self.mark_used(&key);
        self.verified.lock().unwrap().insert(key);
        Ok(target)
    }

    /// Remove what crashed processes of this host left: staging folders, trash, and claims.
    /// Returns how many folders went.
    pub fn clean_leftovers(&self) -> usize {
        let mut n = 0;
        for d in ["tmp", "trash"] {
            n += remove_dead(&self.meta.join(d), |_| true);
        }
        // The announcements of runs that were killed (kill -9 runs no destructor).
        live_runs(&self.meta, true);
        self.claims.clear_stale();
        n
    }

    /// The key the view of a stage shows, if any.
    pub fn view_key(&self, pipeline: &str, stage: &str) -> Option<Key> {
        crate::view::view_key_at(&self.outputs.join(pipeline).join(stage))
    }

    pub fn runs_dir(&self, pipeline: &str) -> PathBuf {
        self.outputs.join(pipeline).join("runs")
    }

    pub fn outputs(&self) -> &Path {
        &self.outputs
    }

    /// Every entry in the store with its size.
    pub fn entries(&self) -> Result<Vec<(Key, PathBuf, u64)>> {
        let mut out = Vec::new();
        let objects = self.meta.join("objects");
        if !objects.exists() {
            return Ok(out);
        }
        for shard in fs::read_dir(&objects).at("listing", &objects)? {
            let shard = shard.at("listing", &objects)?;
            if !shard.path().is_dir() {
                continue;
            }
            for e in fs::read_dir(shard.path()).at("listing", &shard.path())? {
                let e = e.at("listing", &shard.path())?;
                out.push((
                    Key(e.file_name().to_string_lossy().into_owned()),
                    e.path(),
                    dir_size(&e.path()),
                ));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Keys that running processes use or compute: their claims and their live-run files.
    pub fn keys_in_use(&self) -> HashSet<Key> {
        let mut keys: HashSet<Key> = self.claims.live().into_iter().map(|c| c.key).collect();
        keys.extend(
            live_runs(&self.meta, false)
                .into_iter()
                .flat_map(|r| r.keys),
        );
        keys
    }

    /// Remove entries whose key is not in `keep`, not shown by a view under `outputs/` and not
    /// used by a live run, with their checkpoints, and the quarantine.
    ///
    /// On a shared store, entries used within `recent` are kept too: other projects' entries
    /// are not this project's to judge, so only what nobody has used for that long goes.
    pub fn gc(
        &self,
        keep: &HashSet<Key>,
        dry_run: bool,
        recent: std::time::Duration,
    ) -> Result<GcReport> {
        let mut r = GcReport::default();
        let now = std::time::SystemTime::now();
        // What the views show: a user's visible results keep their entries.
        let shown: HashSet<Key> = crate::view::all_views(&self.outputs)
            .iter()
            .filter_map(|v| crate::view::view_key_at(v))
            .collect();
        let mut candidates = Vec::new();
        for (k, d, size) in self.entries()? {
            // An age that cannot be told counts as recent.
            let used_recently = || {
                self.last_used(&k, &d)
                    .and_then(|t| now.duration_since(t).ok())
                    .is_none_or(|age| age <= recent)
            };
            if keep.contains(&k) {
                r.kept_reachable += 1;
            } else if shown.contains(&k) {
                r.kept_shown += 1;
            } else if self.shared && used_recently() {
                r.kept_in_use += 1;
            } else {
                candidates.push((k, d, size));
            }
        }
        // Read what live runs use after listing, so that a run that started meanwhile is seen.
        let in_use = self.keys_in_use();
        for (key, path, size) in candidates {
            if in_use.contains(&key) {
                r.kept_in_use += 1;
                continue;
            }
            let stage = read_entry(&path).map(|e| e.stage).unwrap_or_default();
            if !dry_run {
                fs::remove_dir_all(&path).at("removing", &path)?;
                let _ = fs::remove_file(self.meta.join("used").join(&key.0));
            }
            r.removed.push(Removed {
                key,
                stage,
                bytes: size,
            });
            r.bytes += size;
        }
        for sub in ["checkpoints", "quarantine"] {
            let d = self.meta.join(sub);
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd {
                let e = e.at("listing", &d)?;
                let name = e.file_name().to_string_lossy().into_owned();
                let key = Key(name.split('-').next().unwrap_or_default().to_string());
                // A checkpoint serves a computation not yet committed: once its entry is in
                // the store (or nothing wants the key), only a live run may still need it.
                if sub == "checkpoints"
                    && (in_use.contains(&key)
                        || ((keep.contains(&key) || shown.contains(&key))
                            && !self.object_dir(&key).exists()))
                {
                    continue;
                }
                let size = dir_size(&e.path());
                r.bytes += size;
                r.other_bytes += size;
                if !dry_run {
                    fs::remove_dir_all(e.path()).at("removing", &e.path())?;
                }
            }
        }
        if !dry_run {
            self.clean_leftovers();
        }
        Ok(r)
    }

    /// Announce the keys a run uses, so that `gc` leaves them alone while it lives.
    pub fn register_run(&self, pipeline: &str, keys: &[Key]) -> Result<LiveRun> {
        let dir = self.meta.join("live");
        fs::create_dir_all(&dir).at("creating", &dir)?;
        let path = dir.join(format!("{}.json", Owner::me().tag()));
        let rec = LiveRecord {
            owner: Owner::me().clone(),
            pipeline: pipeline.to_string(),
            keys: keys.to_vec(),
        };
        // One process may run several pipelines in turn: merge with what it announced.
        let mut all = read_live(&path).map(|r| r.keys).unwrap_or_default();
        all.extend(rec.keys.iter().cloned());
        all.sort();
        all.dedup();
        write_synced(
            &path,
            &serde_json::to_vec(&LiveRecord { keys: all, ..rec })?,
        )?;
        live_files()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(path.clone());
        Ok(LiveRun { path })
    }
}

/// The announcements this process wrote and has not removed yet (for an exit on Ctrl-C, which
/// runs no destructor).
fn live_files() -> &'static std::sync::Mutex<Vec<PathBuf>> {
    static F: std::sync::OnceLock<std::sync::Mutex<Vec<PathBuf>>> = std::sync::OnceLock::new();
    F.get_or_init(|| std::sync::Mutex::new(Vec::new()))
}

/// Remove this process's run announcements (the Ctrl-C handler calls it before exiting).
pub fn remove_live_files_on_exit() {
    for p in live_files()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        let _ = fs::remove_file(p);
    }
}

/// An entry `gc` removed (or, in a dry run, would remove).
#[derive(Debug, Clone, PartialEq)]
pub struct Removed {
    pub key: Key,
    /// The stage that produced it, as its record says (empty if unreadable).
    pub stage: String,
    pub bytes: u64,
}

/// What `gc` did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<Removed>,
    /// Bytes freed: the removed entries, stale checkpoints and the quarantine.
    pub bytes: u64,
    /// Of those, the stale checkpoints' and the quarantine's.
    pub other_bytes: u64,
    /// Entries kept because a pipeline reaches them.
    pub kept_reachable: usize,
    /// Entries kept only because a view under `outputs/` shows them.
    pub kept_shown: usize,
    /// Entries kept only because a live run uses them or (shared store) they were used recently.
    pub kept_in_use: usize,
}

impl GcReport {
    /// Entries left in the store.
    pub fn kept(&self) -> usize {
        self.kept_reachable + self.kept_shown + self.kept_in_use
    }

    pub fn removed_keys(&self) -> Vec<Key> {
        self.removed.iter().map(|r| r.key.clone()).collect()
    }
}

/// A run's announcement of the keys it uses; removed when the run ends.
pub struct LiveRun {
    path: PathBuf,
}

impl LiveRun {
    /// Refresh the heartbeat (for runs watched from other hosts).
    pub fn touch(&self) {
        if let Ok(f) = File::options().write(true).open(&self.path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        live_files()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.path);
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct LiveRecord {
    owner: Owner,
    pipeline: String,
    keys: Vec<Key>,
}

fn read_live(path: &Path) -> Option<LiveRecord> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Live-run records whose owners still run (same host), or whose heartbeat is fresh.
/// The runs announced in `live/` whose process still runs (or, on another host, whose record
/// is recent). `prune`: remove the records of the others (never in a dry run).
fn live_runs(meta: &Path, prune: bool) -> Vec<LiveRecord> {
    let Ok(rd) = fs::read_dir(meta.join("live")) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let r = read_live(&e.path())?;
            let alive = match r.owner.alive_here() {
                Some(a) => a,
                None => fs::metadata(e.path())
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age < crate::claim::stale_after()),
            };
            if !alive && prune {
                let _ = fs::remove_file(e.path());
            }
            alive.then_some(r)
        })
        .collect()
}

/// Remove entries of `dir` named `…~host~pid` whose owner is a dead process of this host.
pub(crate) fn remove_dead(dir: &Path, select: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !select(&name) {
            continue;
        }
        if owner_from_tag(&name).is_some_and(|o| leftover_is_dead(&o)) {
            let p = e.path();
            let gone = if p.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            if gone.is_ok() {
                n += 1;
            }
        }
    }
    n
}

pub fn read_entry(dir: &Path) -> Result<Entry> {
    let bytes = fs::read(dir.join(ENTRY)).at("reading", &dir.join(ENTRY))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Re-hash every file of an entry against its record. The error names the first bad file.
pub fn verify_entry(dir: &Path, key: &Key) -> Result<Entry, String> {
    let entry = read_entry(dir).map_err(|e| format!("no readable record ({e})"))?;
    if &entry.key != key {
        return Err(format!("the record names key {}", entry.key.short()));
    }
    if entry.format < ENTRY_FORMAT {
        return Err("written by an older seqpipe without file digests".into());
    }
    for f in &entry.files {
        let p = dir.join(&f.name);
        let meta = fs::symlink_metadata(&p).map_err(|_| format!("{} is missing", f.name))?;
        if !meta.is_file() {
            return Err(format!(
                "{} is {}, not a file",
                f.name,
                if meta.is_dir() { "a folder" } else { "a link" }
            ));
        }
        // Views share the entry's files (hard links): an edit made there changed the entry.
        let linked = || {
            use std::os::unix::fs::MetadataExt;
            if meta.nlink() > 1 {
                " (a view under outputs/ is this same file: an edit made there changed the \
                 cache; copy a file out of a view before editing it)"
            } else {
                ""
            }
        };
        if meta.len() != f.bytes {
            return Err(format!(
                "{} has {} bytes, the record says {}{}",
                f.name,
                meta.len(),
                f.bytes,
                linked()
            ));
        }
        let d = digest_file(&p).map_err(|e| format!("{} cannot be read ({e})", f.name))?;
        if Some(&d) != f.blake3.as_ref() {
            return Err(format!("{} does not match its digest{}", f.name, linked()));
        }
    }
    Ok(entry)
}

pub(crate) fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        dir_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The result of `seqpipe verify`.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub entries: usize,
    pub bytes: u64,
    /// (what, why) for each damaged entry or view.
    pub damaged: Vec<(String, String)>,
    /// Views (folder, key) whose entry is not in the store at all: not damage, nothing to
    /// check their files against.
    pub absent: Vec<(String, Key)>,
    pub repaired: usize,
}

impl Store {
    /// Re-hash every entry and every view. With `repair`, damaged entries and views are
    /// removed, so that the next run recomputes (or republishes) them.
    pub fn verify_all(&self, repair: bool) -> Result<VerifyReport> {
        self.forget_verified();
        let mut r = VerifyReport::default();
        let mut good: HashMap<Key, Entry> = HashMap::new();
        let mut listed: HashSet<Key> = HashSet::new();
        for (key, dir, size) in self.entries()? {
            listed.insert(key.clone());
            r.entries += 1;
            r.bytes += size;
            match verify_entry(&dir, &key) {
                Ok(e) => {
                    good.insert(key, e);
                }
                Err(why) => {
                    let what = match read_entry(&dir).map(|e| e.stage) {
                        Ok(stage) if !stage.is_empty() => {
                            format!("entry {} (stage `{stage}`)", key.short())
                        }
                        _ => format!("entry {}", key.short()),
                    };
                    r.damaged.push((what, why));
                    if repair {
                        fs::remove_dir_all(&dir).at("removing", &dir)?;
                        r.repaired += 1;
                    }
                }
            }
        }
        for view in crate::view::all_views(&self.outputs) {
            let Some(key) = crate::view::view_key_at(&view) else {
                continue;
            };
            if !listed.contains(&key) {
                // Not damage: the entry is gone (another project's gc on a shared store, a
                // hand-deleted folder). The view's files stay readable; the next run of its
                // pipeline recomputes the entry.
                r.absent.push((view.display().to_string(), key));
                continue;
            }
            let why = match good.get(&key) {
                None => Some(format!("shows entry {}, which is damaged", key.short())),
                Some(e) => crate::view::view_differs(&view, &self.object_dir(&key), e),
            };
            if let Some(why) = why {
                r.damaged.push((format!("view {}", view.display()), why));
                if repair {
                    fs::remove_dir_all(&view).at("removing", &view)?;
                    r.repaired += 1;
                }
            }
        }
        // A file where a view belongs: the next run moves it aside and rebuilds the view.
        for f in crate::view::files_in_place_of_views(&self.outputs) {
            r.damaged.push((
                format!("view {}", f.display()),
                "is a file, not the view's folder".into(),
            ));
            if repair {
                let stage = f.file_name().unwrap_or_default().to_string_lossy();
                let base = f.parent().unwrap_or(&self.outputs);
                match crate::view::set_aside(base, &stage, &f) {
                    Ok(to) => {
                        eprintln!("  moved the file {} to {}", f.display(), to.display());
                        r.repaired += 1;
                    }
                    Err(e) => eprintln!("  {e:#}"),
                }
            }
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn record(p: u32) -> KeyRecord {
        KeyRecord {
            schema: 1,
            kind: "k".into(),
            version: 1,
            params: serde_json::json!({ "p": p }),
            seed: None,
            device: None,
            inputs: BTreeMap::new(),
            files: BTreeMap::new(),
        }
    }

    fn damage(p: &Path, bytes: &[u8]) {
        let mut perm = fs::metadata(p).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        fs::set_permissions(p, perm).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn commit_then_hit_and_any_damage_is_a_miss() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let r = record(1);
        let k = r.key();
        assert!(matches!(s.lookup(&k), Lookup::Miss));
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "hello").unwrap();
        let dir = s.commit(&st, &r, "x", 0.1, false).unwrap();
        assert!(fs::metadata(dir.join("a.txt"))
            .unwrap()
            .permissions()
            .readonly());
        assert!(matches!(s.lookup(&k), Lookup::Hit(_)));
        // A same-size byte flip: caught by the digest (in a fresh process, nothing memoized).
        damage(&dir.join("a.txt"), b"hellO");
        let s = Store::new(t.path());
        match s.lookup(&k) {
            Lookup::Corrupt(why) => assert!(why.contains("a.txt does not match"), "{why}"),
            other => panic!("a flipped byte must not be a hit: {other:?}"),
        }
        // A truncated file too.
        damage(&dir.join("a.txt"), b"he");
        assert!(matches!(
            Store::new(t.path()).lookup(&k),
            Lookup::Corrupt(_)
        ));
        // Recommitting quarantines the damaged entry and serves the new one.
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "hello").unwrap();
        s.commit(&st, &r, "x", 0.1, false).unwrap();
        assert!(matches!(Store::new(t.path()).lookup(&k), Lookup::Hit(_)));
        assert_eq!(
            fs::read_dir(s.meta().join("quarantine")).unwrap().count(),
            1
        );
        let r = s
            .gc(&HashSet::new(), true, std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(r.removed_keys(), vec![k.clone()]);
        assert_eq!(r.removed[0].stage, "x");
        assert_eq!(r.kept(), 0);
        assert!(r.bytes > 5);
        assert!(
            matches!(s.lookup(&k), Lookup::Hit(_)),
            "a dry run removes nothing"
        );
    }

    #[test]
    fn a_forced_commit_replaces_an_intact_entry() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let r = record(2);
        let k = r.key();
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "old").unwrap();
        s.commit(&st, &r, "x", 0.1, false).unwrap();
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "new!").unwrap();
        let dir = s.commit(&st, &r, "x", 0.1, false).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "old");
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "new!").unwrap();
        let dir = s.commit(&st, &r, "x", 0.1, true).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "new!");
        assert!(matches!(Store::new(t.path()).lookup(&k), Lookup::Hit(_)));
    }

    #[test]
    fn leftovers_of_dead_processes_go_and_live_ones_stay() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let mine = s.staging(&record(3).key()).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = &Owner::me().host;
        let theirs = s.meta().join("tmp").join(format!("abc-1~{host}~{dead}"));
        let remote = s.meta().join("tmp").join(format!("abc-1~otherhost~{dead}"));
        for d in [&theirs, &remote] {
            fs::create_dir_all(d).unwrap();
        }
        assert_eq!(s.clean_leftovers(), 1);
        assert!(mine.exists() && remote.exists() && !theirs.exists());
    }

    #[test]
    fn gc_keeps_what_a_view_shows() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let mut keys = Vec::new();
        for p in [5, 6] {
            let r = record(p);
            let st = s.staging(&r.key()).unwrap();
            fs::write(st.join("a.txt"), format!("{p}")).unwrap();
            let dir = s.commit(&st, &r, "x", 0.1, false).unwrap();
            keys.push((r.key(), dir));
        }
        crate::view::publish(t.path(), "pipe", "x", &keys[0].0, &keys[0].1).unwrap();
        let r = s
            .gc(&HashSet::new(), false, std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(r.removed_keys(), vec![keys[1].0.clone()]);
        assert_eq!((r.kept(), r.kept_shown), (1, 1));
        let v = s.verify_all(false).unwrap();
        assert!(v.damaged.is_empty() && v.absent.is_empty(), "{v:?}");
    }

    #[test]
    fn gc_leaves_keys_of_live_runs() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let r = record(4);
        let k = r.key();
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "x").unwrap();
        s.commit(&st, &r, "x", 0.1, false).unwrap();
        let live = s.register_run("p", std::slice::from_ref(&k)).unwrap();
        let r = s
            .gc(&HashSet::new(), false, std::time::Duration::ZERO)
            .unwrap();
        assert!(r.removed.is_empty(), "a live run's key is kept");
        assert_eq!((r.kept(), r.kept_in_use), (1, 1));
        drop(live);
        let r = s
            .gc(&HashSet::new(), false, std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(r.removed_keys(), vec![k]);
    }
}
