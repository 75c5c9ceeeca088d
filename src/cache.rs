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

use crate::claim::Claims;
pub use crate::fsutil::{digest_file, set_read_only, write_synced};
use crate::fsutil::{is_plain_name, read_bounded, stamp, sync_dir, Found, PinnedDir};
use crate::owner::{leftover_is_dead, now_ms, owner_from_tag, parse_tag, Owner};

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
    /// Something in the store that seqpipe did not make there (a link, a file where a folder
    /// belongs, a name it never writes): never followed, read or removed.
    #[error("{0} is {1}")]
    Strange(String, String),
    #[error("{0}: seqpipe never writes through a link in a store (a co-user or a copy put it there; remove it)")]
    Link(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;
use crate::fsutil::{FsError, IoAt};
use crate::key::{Key, KeyRecord};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub const ENTRY: &str = "entry.json";
/// The most an entry record may hold: it lists a stage's files (a few), never megabytes.
const MAX_RECORD: u64 = 4 << 20;
/// The most a live-run record may hold (it lists a run's keys).
const MAX_LIVE: u64 = 16 << 20;
/// The store's own folders: nothing else is made, listed or removed at its top level.
pub const STORE_DIRS: [&str; 8] = [
    "objects",
    "tmp",
    "trash",
    "quarantine",
    "checkpoints",
    "claims",
    "live",
    "used",
];
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
    /// Keys verified by this process, with what their files were then (an entry is immutable
    /// once committed; a file whose fingerprint changed is re-hashed).
    verified: Mutex<HashMap<Key, Vec<Fingerprint>>>,
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
            verified: Mutex::new(HashMap::new()),
            claims: Claims::new(meta.join("claims")),
            shared: meta != outputs.join(".seqpipe"),
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Record that an entry was used now (shared stores only): `used/<key>`'s mtime.
    /// The stamp is created without truncating and without following a link: a link planted
    /// at `used/<key>` is left alone (and `verify` reports it).
    fn mark_used(&self, key: &Key) {
        if self.shared {
            if let Ok(d) = self.dir("used", true) {
                let _ = stamp(&d.join(key.as_str()));
            }
        }
    }

    /// When an entry was last used, as far as the store knows.
    pub(crate) fn last_used(&self, key: &Key, dir: &Path) -> Option<std::time::SystemTime> {
        fs::symlink_metadata(self.meta.join("used").join(key.as_str()))
            .ok()
            .filter(|m| m.is_file())
            .or_else(|| fs::symlink_metadata(dir).ok())
            .and_then(|m| m.modified().ok())
    }

    /// One of the store's own folders ([`STORE_DIRS`]), held open without following a link:
    /// `create` makes it when missing (group-usable on a shared store). A link or a file in its
    /// place is an error that says so; nothing is ever done through it.
    pub fn dir(&self, name: &str, create: bool) -> Result<PinnedDir> {
        debug_assert!(STORE_DIRS.contains(&name) || name.len() == 2, "{name}");
        let open = |rel: &[&str]| PinnedDir::open(&self.meta, rel);
        let rel: Vec<&str> = if name.len() == 2 {
            vec!["objects", name]
        } else {
            vec![name]
        };
        match open(&rel) {
            Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
                if rel.len() == 2 {
                    self.dir("objects", true)?;
                } else if !self.meta.exists() {
                    fs::create_dir_all(&self.meta).at("creating", &self.meta)?;
                    self.make_shared(&self.meta);
                }
                let parent = open(&rel[..rel.len() - 1]).at("opening", &self.meta)?;
                let p = parent.join(rel[rel.len() - 1]);
                match fs::create_dir(&p) {
                    Ok(()) => self.make_shared(&p),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e).at("creating", &self.meta.join(rel.join("/")))?,
                }
                Ok(open(&rel).at("opening", &self.meta.join(rel.join("/")))?)
            }
            r => Ok(r.at("opening", &self.meta.join(rel.join("/")))?),
        }
    }

    /// A folder this store made: on a shared store, group-writable with the setgid bit (so
    /// that what is made inside stays the group's), whatever the user's umask.
    /// Through a handle opened without following a link (`chmod_nofollow`).
    fn make_shared(&self, dir: &Path) {
        #[cfg(unix)]
        if self.shared {
            let _ = crate::fsutil::chmod_nofollow(dir, 0o2775);
        }
    }

    /// A committed file: read-only; on a shared store readable by all (`0444`), whatever the
    /// writer's umask, so that every co-user can verify and use it.
    fn seal(&self, file: &File) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if self.shared {
                0o444
            } else {
                file.metadata()
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0o444)
                    & !0o222
            };
            let _ = file.set_permissions(fs::Permissions::from_mode(mode));
        }
    }

    /// Check the store before a run does any work: its folder and each of its own folders are
    /// real folders (a link or a file there is an error naming it), made when missing, and the
    /// store can be written (an error naming the store and what to do otherwise).
    pub fn prepare(&self) -> Result<(), anyhow::Error> {
        if self.meta.exists() && !self.meta.is_dir() {
            anyhow::bail!(
                "{} is {}, but seqpipe keeps its store (a folder) there; move it away or name \
                 another store",
                self.meta.display(),
                Found::describe(&self.meta)
            );
        }
        let made = !self.meta.exists();
        let created = fs::create_dir_all(&self.meta);
        if made && created.is_ok() {
            self.make_shared(&self.meta);
        }
        let probe = created.map_err(anyhow::Error::from).and_then(|()| {
            let tmp = self.dir("tmp", true)?;
            let p = tmp.join(&format!(".probe-{}~{}", now_ms(), Owner::me().tag()));
            File::create(&p)?;
            fs::remove_file(&p)?;
            // The store's own folders that exist must be real folders (made when needed).
            for d in STORE_DIRS {
                match self.dir(d, false) {
                    Err(StoreError::Fs(e)) if e.source.kind() == std::io::ErrorKind::NotFound => {}
                    r => {
                        r?;
                    }
                }
            }
            Ok(())
        });
        probe.map_err(|e| {
            let denied = e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    io.kind() == std::io::ErrorKind::PermissionDenied
                        || io.raw_os_error() == Some(libc::EROFS)
                })
            });
            if denied {
                e.context(format!(
                    "the store {} cannot be written: every run writes its claims and run \
                     records there, even when all is cached; make it writable, or name another \
                     store with --store",
                    self.meta.display()
                ))
            } else {
                e.context(format!("the store {} cannot be used", self.meta.display()))
            }
        })
    }

    pub fn meta(&self) -> &Path {
        &self.meta
    }

    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn object_dir(&self, key: &Key) -> PathBuf {
        self.meta
            .join("objects")
            .join(key.prefix())
            .join(key.as_str())
    }

    /// Look a key up, verifying every file of a hit against its digest. A hit this process
    /// verified before is checked again, by content, when any of its files changed since (its
    /// inode, size or modification time): an edit made through a view between planning
    /// and use is caught.
    pub fn lookup(&self, key: &Key) -> Lookup {
        let dir = self.object_dir(key);
        match walk_is_real(&self.meta, &["objects", key.prefix(), key.as_str()]) {
            Ok(false) => return Lookup::Miss,
            Ok(true) => {}
            Err(why) => return Lookup::Corrupt(format!("entry {}: {why}", key.short())),
        }
        let known = self.verified.lock().unwrap().get(key).cloned();
        if let Some(files) = known {
            if fingerprints(&dir, &files).as_ref() == Some(&files) {
                return Lookup::Hit(dir);
            }
        }
        match verify_entry(&dir, key) {
            Ok(e) => {
                match fingerprints_of(&dir, &e) {
                    Some(f) => {
                        self.verified.lock().unwrap().insert(key.clone(), f);
                    }
                    None => {
                        return Lookup::Corrupt(format!(
                            "entry {}: its files changed while they were checked",
                            key.short()
                        ))
                    }
                }
                self.mark_used(key);
                Lookup::Hit(dir)
            }
            Err(why) => Lookup::Corrupt(format!("entry {}: {why}", key.short())),
        }
    }

    /// Whether the files of a verified entry are still the ones verified (`None`: this process
    /// did not verify it). A stage that read its inputs calls this before its result is
    /// committed: an input edited while the stage ran fails it.
    pub fn unchanged_since_verified(&self, key: &Key) -> Option<Result<(), String>> {
        let files = self.verified.lock().unwrap().get(key).cloned()?;
        let now = fingerprints(&self.object_dir(key), &files);
        Some(match now {
            Some(n) if n == files => Ok(()),
            _ => {
                let changed = files
                    .iter()
                    .find(|f| {
                        Fingerprint::of(&self.object_dir(key).join(&f.name)).as_ref() != Some(f)
                    })
                    .map(|f| f.name.clone())
                    .unwrap_or_default();
                Err(changed)
            }
        })
    }

    /// Forget what this process verified (for `verify`, which re-hashes everything).
    pub fn forget_verified(&self) {
        self.verified.lock().unwrap().clear();
    }

    pub fn entry(&self, key: &Key) -> Option<Entry> {
        walk_is_real(&self.meta, &["objects", key.prefix(), key.as_str()])
            .ok()
            .filter(|&real| real)?;
        read_entry(&self.object_dir(key)).ok()
    }

    /// Set a damaged entry aside in `quarantine/` (so that it is never served, and can be
    /// looked at). Returns where it went.
    pub fn quarantine(&self, key: &Key) -> Result<Option<PathBuf>> {
        self.verified.lock().unwrap().remove(key);
        let shard = match self.dir(key.prefix(), false) {
            Ok(d) => d,
            Err(StoreError::Fs(e)) if e.source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let dir = shard.join(key.as_str());
        if Found::at(&dir) == Found::Missing {
            return Ok(None);
        }
        let q = self.dir("quarantine", true)?;
        let name = format!("{}-{}~{}", key.as_str(), now_ms(), Owner::me().tag());
        match fs::rename(&dir, q.join(&name)) {
            Ok(()) => Ok(Some(self.meta.join("quarantine").join(name))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e)
                .at("moving to quarantine", &self.object_dir(key))
                .map_err(Into::into),
        }
    }

    /// Checkpoints of the stage computing `key`: they belong to the key, so a changed param
    /// never resumes a stale one.
    pub fn checkpoint_dir(&self, key: &Key) -> PathBuf {
        self.meta.join("checkpoints").join(key.as_str())
    }

    /// Remove the checkpoints of `key` (through the store's own folder, never a link).
    pub fn remove_checkpoints(&self, key: &Key) -> Result<()> {
        match self.dir("checkpoints", false) {
            Ok(d) => Ok(d
                .remove(key.as_str())
                .at("removing", &self.checkpoint_dir(key))?),
            Err(StoreError::Fs(e)) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The checkpoint folder of `key` for a stage about to run: what stands on the way there
    /// (`checkpoints/`, `checkpoints/<key>/`) must be a real folder or nothing (the training
    /// makes it when it first saves); a link there is an error, never written through.
    pub fn checked_checkpoint_dir(&self, key: &Key) -> Result<PathBuf> {
        let p = self.checkpoint_dir(key);
        walk_is_real(&self.meta, &["checkpoints", key.as_str()]).map_err(StoreError::Link)?;
        Ok(p)
    }

    /// A fresh folder for a stage to write into, named for this process so that a later run
    /// can tell a leftover from work in progress.
    pub fn staging(&self, key: &Key) -> Result<PathBuf> {
        let name = format!("{}-{}~{}", key.short(), now_ms(), Owner::me().tag());
        let tmp = self.dir("tmp", true)?;
        let dir = self.meta.join("tmp").join(&name);
        fs::create_dir(tmp.join(&name)).at("creating", &dir)?;
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
        let staging_dir = staging;
        let mut names: Vec<PathBuf> = fs::read_dir(staging_dir)
            .at("reading", staging)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .at("listing", staging)?;
        names.sort();
        for p in names {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == ENTRY {
                return Err(StoreError::Reserved(ENTRY));
            }
            if Found::at(&p) != Found::File {
                return Err(StoreError::Strange(
                    format!("the stage's output {name}"),
                    format!("{}; a stage writes plain files", Found::describe(&p)),
                ));
            }
            // One handle, opened without following a link, for the size, the digest and the
            // mode: a file swapped for a link meanwhile is refused, never changed behind it.
            let f = crate::fsutil::open_plain(&p).at("opening", &p)?;
            let meta = f.metadata().at("reading", &p)?;
            if !meta.is_file() {
                return Err(StoreError::Strange(
                    format!("the stage's output {name}"),
                    "not a plain file".into(),
                ));
            }
            f.sync_all().at("syncing", &p)?;
            files.push(FileInfo {
                name,
                bytes: meta.len(),
                blake3: Some(crate::fsutil::digest_open(&f).at("hashing", &p)?),
            });
            self.seal(&f);
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
        self.seal(&crate::fsutil::open_plain(&staging.join(ENTRY)).at("opening", staging)?);
        self.make_shared(staging);
        sync_dir(staging);
        let target = self.object_dir(&key);
        // The shard folder is held open: the entry goes into the store's own folder even if a
        // link is swapped in meanwhile.
        let shard = self.dir(key.prefix(), true)?;
        let into = shard.join(key.as_str());
        let verified = |dir: &Path| -> Result<Vec<Fingerprint>> {
            let e = read_entry(dir)?;
            fingerprints_of(dir, &e).ok_or_else(|| {
                StoreError::Record(key.short().into(), "its files changed meanwhile".into())
            })
        };
        if Found::at(&into) != Found::Missing {
            if !replace && verify_entry(&into, &key).is_ok() {
                // Same key, intact content: keep the one that is there.
                let _ = fs::remove_dir_all(staging);
                let f = verified(&into)?;
                self.verified.lock().unwrap().insert(key, f);
                return Ok(target);
            }
            let trash = self.dir("trash", true)?;
            let old = format!("{}-{}~{}", key.short(), now_ms(), Owner::me().tag());
            if replace {
                fs::rename(&into, trash.join(&old)).at("moving aside the old", &target)?;
            } else {
                self.quarantine(&key)?;
            }
            fs::rename(staging, &into).at("committing", &target)?;
            let _ = trash.remove(&old);
        } else {
            fs::rename(staging, &into).at("committing", &target)?;
        }
        sync_dir(shard.path());
        self.mark_used(&key);
        let f = verified(&into)?;
        self.verified.lock().unwrap().insert(key, f);
        Ok(target)
    }

    /// What the plan needs to know of `key`: cached, not cached, or there but damaged.
    pub fn cached(&self, key: &Key) -> crate::plan::Cached {
        match self.lookup(key) {
            Lookup::Hit(_) => crate::plan::Cached::Yes,
            Lookup::Miss => crate::plan::Cached::No,
            Lookup::Corrupt(why) => crate::plan::Cached::Broken(why),
        }
    }

    /// Remove what crashed processes of this host left: staging folders, trash, and claims.
    /// Returns how many folders went.
    pub fn clean_leftovers(&self) -> usize {
        let mut n = 0;
        for d in ["tmp", "trash"] {
            if let Ok(dir) = self.dir(d, false) {
                n += remove_dead(&dir, |_| true);
            }
        }
        // A claim or take-over guard a killed process was writing or removing
        // (`claim::create_whole`, `claim::remove_if_stale`).
        if let Ok(dir) = self.dir("claims", false) {
            remove_dead(&dir, |n| n.contains(".tmp~") || n.contains(".gone~"));
        }
        // The announcements of runs that were killed (kill -9 runs no destructor).
        live_runs(&self.meta, true);
        self.claims.clear_stale();
        n
    }

    pub fn runs_dir(&self, pipeline: &str) -> PathBuf {
        self.outputs.join(pipeline).join("runs")
    }

    pub fn outputs(&self) -> &Path {
        &self.outputs
    }

    /// Every entry in the store with its size.
    pub fn entries(&self) -> Result<Vec<(Key, PathBuf, u64)>> {
        Ok(self.walk()?.entries)
    }

    /// Every entry in the store, and everything in its folders that seqpipe does not write
    /// there: a link, a file where a folder belongs, a name it never gives. Nothing is followed:
    /// each thing is looked at with `symlink_metadata`, and the strange ones are only listed.
    pub fn walk(&self) -> Result<Walk> {
        let mut w = Walk::default();
        let strange = |w: &mut Walk, p: PathBuf, why: String| w.strange.push((p, why));
        if !self.meta.is_dir() {
            return Ok(w);
        }
        for e in fs::read_dir(&self.meta).at("listing", &self.meta)? {
            let e = e.at("listing", &self.meta)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let p = e.path();
            let found = Found::at(&p);
            if STORE_DIRS.contains(&name.as_str()) {
                if found != Found::Dir {
                    let why = format!("{}, where the store keeps a folder", Found::describe(&p));
                    strange(&mut w, p, why);
                }
            } else {
                let why = format!("{}, not a name the store writes", Found::describe(&p));
                strange(&mut w, p, why);
            }
        }
        let Ok(objects) = self.dir("objects", false) else {
            return Ok(w);
        };
        for shard in fs::read_dir(objects.path()).at("listing", &self.meta.join("objects"))? {
            let shard = shard.at("listing", &self.meta.join("objects"))?;
            let sn = shard.file_name().to_string_lossy().into_owned();
            let shown = self.meta.join("objects").join(&sn);
            let is_hex2 = sn.len() == 2
                && sn
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !is_hex2 || Found::at(&objects.join(&sn)) != Found::Dir {
                let why = format!(
                    "{}{}",
                    Found::describe(&objects.join(&sn)),
                    if is_hex2 {
                        ", not a shard folder"
                    } else {
                        ", not a name the store writes"
                    }
                );
                strange(&mut w, shown, why);
                continue;
            }
            let Ok(sd) = self.dir(&sn, false) else {
                continue;
            };
            for e in fs::read_dir(sd.path()).at("listing", &shown)? {
                let e = e.at("listing", &shown)?;
                let en = e.file_name().to_string_lossy().into_owned();
                let path = shown.join(&en);
                match Key::parse(&en) {
                    Some(k) if k.prefix() == sn && Found::at(&sd.join(&en)) == Found::Dir => {
                        let size = dir_size(&sd.join(&en));
                        w.entries.push((k, path, size));
                    }
                    Some(k) if k.prefix() == sn => {
                        let why = format!(
                            "{}, where an entry's folder belongs",
                            Found::describe(&sd.join(&en))
                        );
                        strange(&mut w, path, why);
                    }
                    _ => {
                        let why = format!(
                            "{}, not a name the store writes",
                            Found::describe(&sd.join(&en))
                        );
                        strange(&mut w, path, why);
                    }
                }
            }
        }
        for (sub, ok) in [
            ("checkpoints", checkpoint_name as fn(&str) -> bool),
            ("quarantine", tagged_key_name),
            ("tmp", tagged_name),
            ("trash", tagged_name),
            ("claims", claim_name),
            ("live", |n: &str| live_name(n).is_some()),
            ("used", |n: &str| Key::parse(n).is_some()),
        ] {
            let Ok(d) = self.dir(sub, false) else {
                continue;
            };
            let Ok(rd) = fs::read_dir(d.path()) else {
                continue;
            };
            for e in rd.filter_map(|e| e.ok()) {
                let n = e.file_name().to_string_lossy().into_owned();
                let found = Found::at(&d.join(&n));
                let want = match sub {
                    "checkpoints" | "quarantine" | "tmp" | "trash" => Found::Dir,
                    _ => Found::File,
                };
                let shown = self.meta.join(sub).join(&n);
                if !ok(&n) {
                    let why = format!(
                        "{}, not a name the store writes",
                        Found::describe(&d.join(&n))
                    );
                    strange(&mut w, shown, why);
                } else if found != want && !(sub == "trash" || sub == "tmp") {
                    let why = format!(
                        "{}, where the store keeps {}",
                        Found::describe(&d.join(&n)),
                        if want == Found::Dir {
                            "a folder"
                        } else {
                            "a file"
                        }
                    );
                    strange(&mut w, shown, why);
                } else if found == Found::Other {
                    let why = Found::describe(&d.join(&n)).to_string();
                    strange(&mut w, shown, why);
                }
            }
        }
        w.entries.sort();
        w.strange.sort();
        Ok(w)
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

    /// Announce the keys a run uses, so that `gc` leaves them alone while it lives.
    pub fn register_run(&self, pipeline: &str, keys: &[Key]) -> Result<LiveRun> {
        let dir = self.dir("live", true)?;
        let path = dir.join(&format!("{}.json", Owner::me().tag()));
        let rec = LiveRecord {
            owner: Owner::me().clone(),
            pipeline: pipeline.to_string(),
            keys: keys.to_vec(),
        };
        // One process may run several pipelines in turn: merge with what it announced.
        let mut all = read_live(&path).map(|r| r.keys).unwrap_or_default();
        let path = self
            .meta
            .join("live")
            .join(format!("{}.json", Owner::me().tag()));
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

/// A run's announcement of the keys it uses; removed when the run ends.
pub struct LiveRun {
    path: PathBuf,
}

impl LiveRun {
    /// Refresh the heartbeat (for runs watched from other hosts).
    pub fn touch(&self) {
        if Found::at(&self.path) == Found::File {
            let _ = stamp(&self.path);
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
    serde_json::from_slice(&read_bounded(path, MAX_LIVE).ok()?).ok()
}

/// The runs announced in `live/` whose process still runs (or, on another host, whose record
/// is recent). `prune`: remove the files of the others (never in a dry run).
///
/// A file is judged by the owner its *name* carries before its content is read: a run killed
/// while writing its announcement leaves a half-written `<tag>.tmp<pid>`, which no reader can
/// parse, and it goes with the dead owner all the same.
fn live_runs(meta: &Path, prune: bool) -> Vec<LiveRecord> {
    let Ok(dir) = PinnedDir::open(meta, &["live"]) else {
        return Vec::new();
    };
    let Ok(rd) = fs::read_dir(dir.path()) else {
        return Vec::new();
    };
    let mut live = Vec::new();
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((tag, is_record)) = live_name(&name) else {
            continue;
        };
        let path = dir.join(&name);
        let named_for = parse_tag(tag);
        if named_for.as_ref().is_some_and(leftover_is_dead) {
            if prune {
                let _ = dir.remove(&name);
            }
            continue;
        }
        if !is_record {
            continue; // being written by a live process
        }
        let Some(r) = read_live(&path) else { continue };
        let alive = match r.owner.alive_here() {
            Some(a) => a,
            None => fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age < crate::claim::stale_after()),
        };
        if !alive && prune {
            let _ = dir.remove(&name);
        }
        if alive {
            live.push(r);
        }
    }
    live
}

/// Remove entries of `dir` named `…~host~pid` whose owner is a dead process of this host.
/// Through the open folder, never following a link (a link named like a leftover goes itself).
pub(crate) fn remove_dead(dir: &PinnedDir, select: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = fs::read_dir(dir.path()) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !select(&name) || !is_plain_name(&name) {
            continue;
        }
        if owner_from_tag(&name).is_some_and(|o| leftover_is_dead(&o)) && dir.remove(&name).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// An entry's record: a plain file of bounded size (never through a link), whose file names
/// are each one plain path component, none twice and none the record's own name.
pub fn read_entry(dir: &Path) -> Result<Entry> {
    let path = dir.join(ENTRY);
    let bytes = read_bounded(&path, MAX_RECORD).at("reading", &path)?;
    let entry: Entry = serde_json::from_slice(&bytes)?;
    let mut seen = HashSet::new();
    for f in &entry.files {
        if !is_plain_name(&f.name) || f.name == ENTRY || !seen.insert(f.name.as_str()) {
            return Err(StoreError::Record(
                entry.key.short().to_string(),
                format!(
                    "it lists a file named {:?}, which is not a plain file name (or is listed twice)",
                    f.name.chars().take(80).collect::<String>()
                ),
            ));
        }
    }
    Ok(entry)
}

/// Re-hash every file of an entry against its record. The error names the first bad file.
pub fn verify_entry(dir: &Path, key: &Key) -> Result<Entry, String> {
    let entry = read_entry(dir).map_err(|e| match e {
        StoreError::Record(_, why) => why,
        StoreError::Fs(f) => format!("no readable record ({f}: {})", f.source),
        e => format!("no readable record ({e})"),
    })?;
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

/// The bytes of the files under `p`, links neither followed nor counted.
pub(crate) fn dir_size(p: &Path) -> u64 {
    fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| match fs::symlink_metadata(e.path()) {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) if m.is_file() => m.len(),
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The newest modification time of a folder and what is directly in it (links not followed).
pub(crate) fn newest_mtime(p: &Path) -> Option<std::time::SystemTime> {
    let own = fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    let inner = fs::read_dir(p)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            fs::symlink_metadata(e.path())
                .and_then(|m| m.modified())
                .ok()
        });
    inner.chain(own).max()
}

/// What [`Store::walk`] found.
#[derive(Debug, Default)]
pub struct Walk {
    /// (key, folder, bytes) of every entry folder.
    pub entries: Vec<(Key, PathBuf, u64)>,
    /// (path, what it is) of everything the store did not put there.
    pub strange: Vec<(PathBuf, String)>,
}

/// Whether `base/rel…` is a chain of real folders (`Ok(false)`: something on the way is
/// missing; `Err`: something on the way is a link or a file, said how).
fn walk_is_real(base: &Path, rel: &[&str]) -> Result<bool, String> {
    let mut p = base.to_path_buf();
    for part in rel {
        p.push(part);
        match Found::at(&p) {
            Found::Dir => {}
            Found::Missing => return Ok(false),
            _ => {
                return Err(format!(
                    "{} is {}, not a folder (never followed)",
                    p.display(),
                    Found::describe(&p)
                ))
            }
        }
    }
    Ok(true)
}

/// A file as it stands: a write, a truncation or a replacement alters it. (Not the change
/// time: publishing a view links the file, which changes it without changing the content.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    name: String,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Fingerprint {
    fn of(path: &Path) -> Option<Fingerprint> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(path).ok().filter(|m| m.is_file())?;
        Some(Fingerprint {
            name: path.file_name()?.to_string_lossy().into_owned(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        })
    }
}

/// The fingerprints of an entry's files, taken after it was verified; `None` when one cannot
/// be taken.
fn fingerprints_of(dir: &Path, e: &Entry) -> Option<Vec<Fingerprint>> {
    e.files
        .iter()
        .map(|f| Fingerprint::of(&dir.join(&f.name)))
        .collect()
}

/// The fingerprints now of the files named in `known`.
fn fingerprints(dir: &Path, known: &[Fingerprint]) -> Option<Vec<Fingerprint>> {
    known
        .iter()
        .map(|f| Fingerprint::of(&dir.join(&f.name)))
        .collect()
}

/// Names the store gives. `<key>`: a checkpoint folder.
pub(crate) fn checkpoint_name(n: &str) -> bool {
    Key::parse(n).is_some()
}

/// `<anything plain>~<owner tag>`: a staging folder, trash, a probe.
pub(crate) fn tagged_name(n: &str) -> bool {
    is_plain_name(n) && owner_from_tag(n).is_some()
}

/// `<key>-<ms>~<owner tag>`: a quarantined entry.
pub(crate) fn tagged_key_name(n: &str) -> bool {
    n.len() > 65
        && n.is_char_boundary(64)
        && Key::parse(&n[..64]).is_some()
        && n.as_bytes()[64] == b'-'
        && tagged_name(n)
}

/// `<key>.claim` and its take-over guard `<key>.takeover`.
/// `<key>.claim`, `<key>.takeover`, or one being written or removed:
/// `<key>.claim.tmp~<owner tag>`, `<key>.claim.gone~<owner tag>`.
fn claim_name(n: &str) -> bool {
    let n = match n.split_once(".tmp~").or_else(|| n.split_once(".gone~")) {
        Some((stem, tag)) if parse_tag(tag).is_some() => stem,
        Some(_) => return false,
        None => n,
    };
    n.split_once('.')
        .is_some_and(|(k, ext)| Key::parse(k).is_some() && matches!(ext, "claim" | "takeover"))
}

/// A name in `live/`: `<tag>.json` (a record) or `<tag>.tmp<pid>` (one being written). Returns
/// the tag and whether it is a record.
fn live_name(n: &str) -> Option<(&str, bool)> {
    let (stem, is_record) = match n.strip_suffix(".json") {
        Some(s) => (s, true),
        None => (n.rsplit_once(".tmp")?.0, false),
    };
    parse_tag(stem).is_some().then_some((stem, is_record))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn record(p: u32) -> KeyRecord {
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
    fn an_entry_edited_after_it_was_verified_is_caught_by_its_fingerprint() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let r = record(7);
        let k = r.key();
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "hello").unwrap();
        let dir = s.commit(&st, &r, "x", 0.1, false).unwrap();
        assert!(matches!(s.lookup(&k), Lookup::Hit(_)));
        assert_eq!(s.unchanged_since_verified(&k), Some(Ok(())));
        // Edited in place (through a view, which is the same file) after the check.
        std::thread::sleep(std::time::Duration::from_millis(20));
        damage(&dir.join("a.txt"), b"hellO");
        assert_eq!(s.unchanged_since_verified(&k), Some(Err("a.txt".into())));
        // The same process looks it up again: re-hashed, not served from memory.
        assert!(matches!(s.lookup(&k), Lookup::Corrupt(_)));
    }

    #[test]
    fn records_naming_files_outside_their_folder_are_damage() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let r = record(8);
        let k = r.key();
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "x").unwrap();
        let dir = s.commit(&st, &r, "x", 0.1, false).unwrap();
        let rec = dir.join(ENTRY);
        let good = fs::read(&rec).unwrap();
        for bad in [
            "../a.txt",
            "..",
            ".",
            "",
            "sub/a.txt",
            "a.txt",
            "entry.json",
        ] {
            let mut e: serde_json::Value = serde_json::from_slice(&good).unwrap();
            e["files"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": bad, "bytes": 1}));
            damage(&rec, &serde_json::to_vec(&e).unwrap());
            let why = verify_entry(&dir, &k).unwrap_err();
            assert!(why.contains("not a plain file name"), "{bad:?}: {why}");
        }
        // A key that is no key, and a record too big to be one.
        let mut e: serde_json::Value = serde_json::from_slice(&good).unwrap();
        e["key"] = "../../x".into();
        damage(&rec, &serde_json::to_vec(&e).unwrap());
        assert!(verify_entry(&dir, &k).unwrap_err().contains("not a key"));
        damage(&rec, &vec![b' '; MAX_RECORD as usize + 1]);
        assert!(verify_entry(&dir, &k).unwrap_err().contains("more than"));
    }

    #[test]
    fn gc_on_a_shared_store_keeps_recent_checkpoints() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::with_meta(&t.path().join("outputs"), &t.path().join("shared"));
        let k = record(9).key();
        let ck = s.checked_checkpoint_dir(&k).unwrap();
        fs::create_dir_all(&ck).unwrap();
        fs::write(ck.join("ckpt"), "weights").unwrap();
        let day = std::time::Duration::from_secs(86400);
        let r = s.gc(&HashSet::new(), false, day).unwrap();
        assert_eq!(r.kept_checkpoints, 1);
        assert!(ck.join("ckpt").exists(), "a checkpoint written now stays");
        let r = s
            .gc(&HashSet::new(), false, std::time::Duration::ZERO)
            .unwrap();
        assert_eq!((r.kept_checkpoints, r.other_bytes), (0, 7));
        assert!(!ck.exists(), "an old one goes");
    }

    #[test]
    fn gc_removes_leftovers_no_run_can_judge_once_untouched_for_the_grace_period() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let tmp = s.meta().join("tmp");
        let (old, fresh, busy) = (
            tmp.join("0123456789ab-1~elsewhere~42"),
            tmp.join("ba9876543210-1~elsewhere~43"),
            tmp.join(format!("{}-1~elsewhere~44", record(10).key().short())),
        );
        for d in [&old, &fresh, &busy] {
            fs::create_dir_all(d).unwrap();
        }
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(86400 * 40);
        for d in [&old, &busy] {
            File::open(d).unwrap().set_modified(long_ago).unwrap();
        }
        // The key `busy` is named for is being computed (its claim is held).
        let info = crate::claim::ClaimInfo::new(&record(10).key(), "p", "s");
        let _held = s.claims().try_claim(&info).unwrap();
        let month = std::time::Duration::from_secs(86400 * 30);
        s.gc(&HashSet::new(), false, month).unwrap();
        assert!(
            !old.exists(),
            "another host's leftover untouched for 40 days goes"
        );
        assert!(fresh.exists() && busy.exists());
    }

    /// A claim a killed process was writing (`<key>.claim.tmp~<tag>`) goes with the next
    /// cleanup; one of a live process stays, and neither is reported as a strange file.
    #[test]
    fn a_killed_claimants_temporary_file_goes() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let dir = s.meta().join("claims");
        fs::create_dir_all(&dir).unwrap();
        let key = record(6).key();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = &Owner::me().host;
        let theirs = dir.join(format!("{}.claim.tmp~{host}~{dead}", key.as_str()));
        let mine = dir.join(format!(
            "{}.takeover.tmp~{}",
            key.as_str(),
            Owner::me().tag()
        ));
        fs::write(&theirs, "{\"own").unwrap();
        fs::write(&mine, "").unwrap();
        assert!(claim_name(&theirs.file_name().unwrap().to_string_lossy()));
        assert!(!claim_name(&format!("{}.claim.tmp~no tag", key.as_str())));
        s.clean_leftovers();
        assert!(!theirs.exists(), "a dead claimant's file stayed");
        assert!(mine.exists(), "a live process's file went");
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

    /// A run killed with SIGKILL while writing its announcement leaves a half-written temporary
    /// file; the next run's cleanup removes it (and the dead run's record) by the owner in the
    /// name, and leaves a live process's files alone.
    #[test]
    fn a_killed_runs_half_written_announcement_goes() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let live = s.register_run("p", &[record(5).key()]).unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dir = s.meta().join("live");
        let host = &Owner::me().host;
        let half = dir.join(format!("{host}~{dead}.tmp{dead}"));
        fs::write(&half, "{\"owner\": {\"ho").unwrap();
        let whole = dir.join(format!("{host}~{dead}.json"));
        fs::write(&whole, "not json either").unwrap();
        let mine_tmp = dir.join(format!("{}.tmp1", Owner::me().tag()));
        fs::write(&mine_tmp, "").unwrap();
        s.clean_leftovers();
        assert!(!half.exists(), "the half-written file of a dead run stayed");
        assert!(
            !whole.exists(),
            "the unreadable record of a dead run stayed"
        );
        assert!(mine_tmp.exists(), "a live process's file went");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        drop(live);
    }
}
