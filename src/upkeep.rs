//! Upkeep of a store, beside it: `gc` and `verify`. Both look at the views under `outputs/` as
//! well as the store's entries, so they live here, above both [`crate::cache`] and
//! [`crate::view`] (which depends on the store), not inside the store.

use crate::cache::{
    checkpoint_name, dir_size, newest_mtime, read_entry, tagged_key_name, tagged_name,
    verify_entry, Entry, Store, StoreError,
};
use crate::fsutil::{Found, IoAt};
use crate::key::Key;
use crate::owner::owner_from_tag;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;

type Result<T, E = StoreError> = std::result::Result<T, E>;

impl Store {
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
        let shown: HashSet<Key> = crate::view::all_views(self.outputs())
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
            } else if self.is_shared() && used_recently() {
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
                self.dir(key.prefix(), false)?
                    .remove(key.as_str())
                    .at("removing", &path)?;
                if let Ok(used) = self.dir("used", false) {
                    let _ = used.remove(key.as_str());
                }
            }
            r.removed.push(Removed {
                key,
                stage,
                bytes: size,
            });
            r.bytes += size;
        }
        for sub in ["checkpoints", "quarantine"] {
            let Ok(d) = self.dir(sub, false) else {
                continue;
            };
            let shown_dir = self.meta().join(sub);
            for e in fs::read_dir(d.path()).at("listing", &shown_dir)? {
                let e = e.at("listing", &shown_dir)?;
                let name = e.file_name().to_string_lossy().into_owned();
                // Only what the store names and makes: a real folder, named for a key. Anything
                // else is not this store's to remove (`verify` reports it).
                let named = if sub == "checkpoints" {
                    checkpoint_name(&name)
                } else {
                    tagged_key_name(&name)
                };
                if !named || Found::at(&d.join(&name)) != Found::Dir {
                    continue;
                }
                let Some(key) = Key::parse(&name[..64]) else {
                    continue;
                };
                // A checkpoint serves a computation not yet committed: once its entry is in
                // the store (or nothing wants the key), only a live run may still need it. On
                // a shared store, a checkpoint written within `recent` stays too: it may be
                // another project's training, resumed tomorrow.
                if sub == "checkpoints"
                    && (in_use.contains(&key)
                        || ((keep.contains(&key) || shown.contains(&key))
                            && Found::at(&self.object_dir(&key)) != Found::Dir)
                        || (self.is_shared()
                            && newest_mtime(&d.join(&name))
                                .and_then(|t| now.duration_since(t).ok())
                                .is_none_or(|age| age <= recent)))
                {
                    if self.is_shared() {
                        r.kept_checkpoints += 1;
                    }
                    continue;
                }
                let size = dir_size(&d.join(&name));
                r.bytes += size;
                r.other_bytes += size;
                if !dry_run {
                    d.remove(&name).at("removing", &shown_dir.join(&name))?;
                }
            }
        }
        if !dry_run {
            self.clean_leftovers();
            // Leftovers whose owner cannot be judged from here (another host, another boot of
            // this one) go once nothing in them changed for the grace period, unless the key
            // they are named for is being computed (a long training's staging folder).
            let computing: HashSet<&str> = in_use.iter().map(|k| k.short()).collect();
            for sub in ["tmp", "trash"] {
                let Ok(d) = self.dir(sub, false) else {
                    continue;
                };
                let Ok(rd) = fs::read_dir(d.path()) else {
                    continue;
                };
                for e in rd.filter_map(|e| e.ok()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let unjudged = owner_from_tag(&name).is_some_and(|o| o.alive_here().is_none());
                    let computed = name
                        .split('-')
                        .next()
                        .is_some_and(|k| computing.contains(k));
                    let old = newest_mtime(&d.join(&name))
                        .and_then(|t| now.duration_since(t).ok())
                        .is_some_and(|age| age > recent.max(crate::claim::stale_after()));
                    if tagged_name(&name) && unjudged && !computed && old {
                        let size = dir_size(&d.join(&name));
                        if d.remove(&name).is_ok() {
                            r.bytes += size;
                            r.other_bytes += size;
                        }
                    }
                }
            }
        }
        Ok(r)
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
    /// Checkpoints kept on a shared store because they were written recently (or are in use).
    pub kept_checkpoints: usize,
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
    /// Things in the store that seqpipe did not put there (links, misnamed or misplaced
    /// files): (path, what it is). Never followed, never removed, not even by `--repair`.
    pub strange: Vec<(PathBuf, String)>,
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
        let walk = self.walk()?;
        // What seqpipe did not put in the store is reported, never followed or removed.
        r.strange = walk.strange;
        for (key, dir, size) in walk.entries {
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
                        self.dir(key.prefix(), false)?
                            .remove(key.as_str())
                            .at("removing", &dir)?;
                        r.repaired += 1;
                    }
                }
            }
        }
        for view in crate::view::all_views(self.outputs()) {
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
                    // The whole folder goes aside, never deleted: it may hold a user's edits.
                    let stage = view.file_name().unwrap_or_default().to_string_lossy();
                    let base = view.parent().unwrap_or(self.outputs());
                    match crate::view::set_aside(base, &stage, &view) {
                        Ok(to) => {
                            eprintln!("  moved the view {} to {}", view.display(), to.display());
                            r.repaired += 1;
                        }
                        Err(e) => eprintln!("  {e:#}"),
                    }
                }
            }
        }
        // A file where a view belongs: the next run moves it aside and rebuilds the view.
        for f in crate::view::files_in_place_of_views(self.outputs()) {
            r.damaged.push((
                format!("view {}", f.display()),
                "is a file, not the view's folder".into(),
            ));
            if repair {
                let stage = f.file_name().unwrap_or_default().to_string_lossy();
                let base = f.parent().unwrap_or(self.outputs());
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

    #[test]
    fn gc_keeps_what_a_view_shows() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::new(t.path());
        let mut keys = Vec::new();
        for p in [5, 6] {
            let r = crate::cache::tests::record(p);
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
}
