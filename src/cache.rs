//! The content-addressed store under `outputs/.seqpipe/`, and the human view
//! `outputs/<pipeline>/<stage>/`.
//!
//! An entry is a folder `objects/<k0k1>/<key>/` holding the stage's files and `entry.json`, the
//! record, written last. It is built in `tmp/`, every file fsynced, and renamed into place in one
//! step: a crash leaves a folder in `tmp/` (cleared by the next run) and never an entry that
//! looks complete. An entry found broken later is reported and treated as a miss.

use crate::key::{Key, KeyRecord};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

const ENTRY: &str = "entry.json";
const VIEW_KEY: &str = ".key";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileInfo {
    pub name: String,
    pub bytes: u64,
}

/// The record of a committed entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
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
    outputs: PathBuf,
}

/// Holds `outputs/.seqpipe/lock` while alive.
pub struct LockGuard {
    _file: File,
}

impl Store {
    pub fn new(outputs: &Path) -> Self {
        Store {
            outputs: outputs.to_path_buf(),
        }
    }

    fn meta(&self) -> PathBuf {
        self.outputs.join(".seqpipe")
    }

    pub fn object_dir(&self, key: &Key) -> PathBuf {
        self.meta().join("objects").join(&key.0[..2]).join(&key.0)
    }

    /// Take the store's lock; if another process holds it, say so and wait.
    pub fn lock(&self, on_wait: impl FnOnce(&Path)) -> Result<LockGuard> {
        fs::create_dir_all(self.meta())
            .with_context(|| format!("creating {}", self.meta().display()))?;
        let path = self.meta().join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait(&path);
                file.lock()?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e).context("locking the store"),
        }
        // We hold the lock: no other process is writing, so leftovers of crashed runs can go.
        for d in ["tmp", "trash"] {
            let p = self.meta().join(d);
            if p.exists() {
                let _ = fs::remove_dir_all(&p);
            }
        }
        Ok(LockGuard { _file: file })
    }

    pub fn lookup(&self, key: &Key) -> Lookup {
        let dir = self.object_dir(key);
        if !dir.exists() {
            return Lookup::Miss;
        }
        match self.check(&dir, key) {
            Ok(()) => Lookup::Hit(dir),
            Err(why) => Lookup::Corrupt(why),
        }
    }

    fn check(&self, dir: &Path, key: &Key) -> Result<(), String> {
        let entry = read_entry(dir).map_err(|e| {
            format!(
                "entry {} has no readable record ({e}); treating it as a miss",
                key.short()
            )
        })?;
        if &entry.key != key {
            return Err(format!(
                "entry {} records key {}; treating it as a miss",
                key.short(),
                entry.key.short()
            ));
        }
        for f in &entry.files {
            match fs::metadata(dir.join(&f.name)) {
                Ok(m) if m.len() == f.bytes => {}
                Ok(m) => {
                    return Err(format!(
                        "entry {}: {} has {} bytes, expected {}; treating it as a miss",
                        key.short(),
                        f.name,
                        m.len(),
                        f.bytes
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "entry {}: {} is missing; treating it as a miss",
                        key.short(),
                        f.name
                    ))
                }
            }
        }
        Ok(())
    }

    pub fn entry(&self, key: &Key) -> Option<Entry> {
        read_entry(&self.object_dir(key)).ok()
    }

    /// Checkpoints of the stage computing `key`: they belong to the key, so a changed param
    /// never resumes a stale one.
    pub fn checkpoint_dir(&self, key: &Key) -> PathBuf {
        self.meta().join("checkpoints").join(&key.0)
    }

    /// A fresh folder for a stage to write into.
    pub fn staging(&self, key: &Key) -> Result<PathBuf> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            self.meta()
                .join("tmp")
                .join(format!("{}-{}-{nanos}", key.short(), std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Make a staging folder the entry for `record`: fsync its files, write the record last,
    /// rename it into place. A broken entry already there is replaced only after the new one is
    /// complete.
    pub fn commit(
        &self,
        staging: &Path,
        record: &KeyRecord,
        stage: &str,
        seconds: f64,
    ) -> Result<PathBuf> {
        let key = record.key();
        let mut files = Vec::new();
        let mut names: Vec<PathBuf> = fs::read_dir(staging)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        names.sort();
        for p in names {
            let f = File::open(&p)?;
            f.sync_all()?;
            files.push(FileInfo {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                bytes: f.metadata()?.len(),
            });
        }
        let entry = Entry {
            key: key.clone(),
            record: record.clone(),
            files,
            stage: stage.to_string(),
            seconds,
        };
        write_synced(&staging.join(ENTRY), &serde_json::to_vec_pretty(&entry)?)?;
        sync_dir(staging);
        let target = self.object_dir(&key);
        fs::create_dir_all(target.parent().unwrap())?;
        if target.exists() {
            if self.check(&target, &key).is_ok() {
                // Same key, same content: keep the one that is there.
                let _ = fs::remove_dir_all(staging);
                return Ok(target);
            }
            let trash =
                self.meta()
                    .join("trash")
                    .join(format!("{}-{}", key.short(), std::process::id()));
            fs::create_dir_all(trash.parent().unwrap())?;
            fs::rename(&target, &trash)?;
            fs::rename(staging, &target)?;
            let _ = fs::remove_dir_all(&trash);
        } else {
            fs::rename(staging, &target)
                .with_context(|| format!("committing {}", target.display()))?;
        }
        sync_dir(target.parent().unwrap());
        Ok(target)
    }

    /// Copy an entry's files to `outputs/<pipeline>/<stage>/` (replacing the old view only once
    /// the new one is complete). Does nothing if the view already shows this key.
    pub fn publish(&self, pipeline: &str, stage: &str, key: &Key) -> Result<PathBuf> {
        let view = self.outputs.join(pipeline).join(stage);
        if fs::read_to_string(view.join(VIEW_KEY)).ok().as_deref() == Some(key.0.as_str()) {
            return Ok(view);
        }
        let src = self.object_dir(key);
        let tmp = self
            .outputs
            .join(pipeline)
            .join(format!(".tmp-{stage}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        for e in fs::read_dir(&src)? {
            let e = e?;
            let name = e.file_name();
            if name == ENTRY {
                continue;
            }
            fs::copy(e.path(), tmp.join(&name))?;
        }
        fs::write(tmp.join(VIEW_KEY), &key.0)?;
        if view.exists() {
            let old = self
                .outputs
                .join(pipeline)
                .join(format!(".old-{stage}-{}", std::process::id()));
            fs::rename(&view, &old)?;
            fs::rename(&tmp, &view)?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, &view)?;
        }
        Ok(view)
    }

    /// The key the view of a stage shows, if any.
    pub fn view_key(&self, pipeline: &str, stage: &str) -> Option<Key> {
        fs::read_to_string(self.outputs.join(pipeline).join(stage).join(VIEW_KEY))
            .ok()
            .map(|s| Key(s.trim().to_string()))
    }

    /// Every entry in the store with its size.
    pub fn entries(&self) -> Result<Vec<(Key, PathBuf, u64)>> {
        let mut out = Vec::new();
        let objects = self.meta().join("objects");
        if !objects.exists() {
            return Ok(out);
        }
        for shard in fs::read_dir(&objects)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for e in fs::read_dir(shard.path())? {
                let e = e?;
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

    /// Remove entries whose key is not in `keep`. Returns (entries removed, bytes freed).
    pub fn gc(&self, keep: &HashSet<Key>, dry_run: bool) -> Result<(Vec<Key>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for (key, path, size) in self.entries()? {
            if keep.contains(&key) {
                continue;
            }
            if !dry_run {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
            removed.push(key);
            bytes += size;
        }
        let ckpts = self.meta().join("checkpoints");
        if ckpts.exists() {
            for e in fs::read_dir(&ckpts)? {
                let e = e?;
                let key = Key(e.file_name().to_string_lossy().into_owned());
                if !keep.contains(&key) {
                    bytes += dir_size(&e.path());
                    if !dry_run {
                        fs::remove_dir_all(e.path())?;
                    }
                }
            }
        }
        Ok((removed, bytes))
    }

    pub fn runs_dir(&self, pipeline: &str) -> PathBuf {
        self.outputs.join(pipeline).join("runs")
    }

    pub fn outputs(&self) -> &Path {
        &self.outputs
    }
}

fn read_entry(dir: &Path) -> Result<Entry> {
    let bytes = fs::read(dir.join(ENTRY))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Write a file durably: to a temporary name, fsync, rename.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn dir_size(p: &Path) -> u64 {
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

    #[test]
    fn commit_then_hit_and_corruption_is_a_miss() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let _g = s.lock(|_| {}).unwrap();
        let r = record(1);
        let k = r.key();
        assert!(matches!(s.lookup(&k), Lookup::Miss));
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "hello").unwrap();
        let dir = s.commit(&st, &r, "x", 0.1).unwrap();
        assert!(matches!(s.lookup(&k), Lookup::Hit(_)));
        // Truncate a file: the entry is no longer trusted.
        fs::write(dir.join("a.txt"), "he").unwrap();
        assert!(matches!(s.lookup(&k), Lookup::Corrupt(_)));
        // A partial entry without its record is a miss with a reason, never a hit.
        fs::remove_file(dir.join(ENTRY)).unwrap();
        assert!(matches!(s.lookup(&k), Lookup::Corrupt(_)));
        // Recommitting replaces the broken entry.
        let st = s.staging(&k).unwrap();
        fs::write(st.join("a.txt"), "hello").unwrap();
        s.commit(&st, &r, "x", 0.1).unwrap();
        assert!(matches!(s.lookup(&k), Lookup::Hit(_)));
        let view = s.publish("p", "x", &k).unwrap();
        assert_eq!(fs::read_to_string(view.join("a.txt")).unwrap(), "hello");
        assert_eq!(s.view_key("p", "x"), Some(k.clone()));
        let (removed, bytes) = s.gc(&HashSet::new(), true).unwrap();
        assert_eq!(removed, vec![k.clone()]);
        assert!(bytes > 5);
        assert!(
            matches!(s.lookup(&k), Lookup::Hit(_)),
            "a dry run removes nothing"
        );
    }
}
