//! The human view `outputs/<pipeline>/<stage>/`: the files of the stage's current entry, as
//! hard links to the store's (read-only) files where the filesystem allows, copies otherwise,
//! and `.key` naming the entry. It is checked against its entry on every run and rebuilt when it
//! differs: a missing, extra or edited file, or a file replaced by another.

use crate::cache::{digest_file, read_entry, set_read_only, Entry};
use crate::key::Key;
use crate::owner::{now_ms, Owner};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

const VIEW_KEY: &str = ".key";

/// The key a view folder shows, if any.
pub fn view_key_at(view: &Path) -> Option<Key> {
    fs::read_to_string(view.join(VIEW_KEY))
        .ok()
        .and_then(|s| Key::parse(s.trim()))
}

/// How a view folder differs from its entry's files.
#[derive(Debug, Default)]
struct Differences {
    /// The folder could not be listed.
    unreadable: Option<String>,
    missing: Vec<String>,
    /// Names the entry does not have (`.key` aside).
    extra: Vec<String>,
    /// The entry's names whose file is another (edited, replaced).
    differing: Vec<String>,
}

impl Differences {
    fn is_empty(&self) -> bool {
        self.unreadable.is_none()
            && self.missing.is_empty()
            && self.extra.is_empty()
            && self.differing.is_empty()
    }
}

/// A hard link to the store's file is the store's file when `object` was just verified
/// (`verified`); otherwise, and for a copy, the file is re-hashed.
fn differences(view: &Path, object: &Path, entry: &Entry, verified: bool) -> Differences {
    let mut d = Differences::default();
    let mut names: Vec<String> = match fs::read_dir(view) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != VIEW_KEY)
            .collect(),
        Err(e) => {
            d.unreadable = Some(e.to_string());
            return d;
        }
    };
    names.sort();
    let mut want: Vec<&str> = entry.files.iter().map(|f| f.name.as_str()).collect();
    want.sort();
    d.extra = names
        .iter()
        .filter(|n| !want.contains(&n.as_str()))
        .cloned()
        .collect();
    d.missing = want
        .iter()
        .filter(|n| !names.iter().any(|x| x == *n))
        .map(|n| n.to_string())
        .collect();
    for f in &entry.files {
        let v = view.join(&f.name);
        if d.missing.contains(&f.name) || (verified && same_file(&v, &object.join(&f.name))) {
            continue;
        }
        let ok = fs::metadata(&v).is_ok_and(|m| m.is_file() && m.len() == f.bytes)
            && digest_file(&v).ok().as_ref() == f.blake3.as_ref();
        if !ok {
            d.differing.push(f.name.clone());
        }
    }
    d
}

/// Why a view differs from its entry, or `None` when it shows exactly the entry's files.
pub fn view_differs(view: &Path, object: &Path, entry: &Entry) -> Option<String> {
    let d = differences(view, object, entry, true);
    if let Some(e) = d.unreadable {
        return Some(format!("cannot be read ({e})"));
    }
    if let Some(m) = d.missing.first() {
        return Some(format!("{m} is missing"));
    }
    if let Some(x) = d.extra.first() {
        return Some(format!("{x} is not part of the entry"));
    }
    d.differing
        .first()
        .map(|f| format!("{f} differs from the entry's file"))
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.file_type().is_file() && x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// What [`publish`] did.
#[derive(Debug)]
pub struct Published {
    /// The view folder.
    pub view: PathBuf,
    /// Why a view that was there, showing this entry or standing in its place, was rebuilt, and
    /// where what was not the entry's went (`None`: it was intact, new, or showed another
    /// entry). E.g. `lines.txt was missing`, `was a file; moved it to …`.
    pub rebuilt: Option<String>,
}

/// Show the entry in `object` (already verified) as `outputs/<pipeline>/<stage>/`. Does
/// nothing when the view already shows it intact. What the view holds that belongs to no entry
/// (a file put there, an edited file, a file in place of the folder) is moved aside to
/// `outputs/<pipeline>/.stray/<stage>/`, never deleted.
pub fn publish(
    outputs: &Path,
    pipeline: &str,
    stage: &str,
    key: &Key,
    object: &Path,
) -> Result<Published> {
    let base = outputs.join(pipeline);
    let view = base.join(stage);
    let entry = read_entry(object).with_context(|| format!("reading the entry of `{stage}`"))?;
    let mut why: Vec<String> = Vec::new();
    match fs::symlink_metadata(&view) {
        Err(_) => {}
        Ok(m) if !m.is_dir() => {
            let to = set_aside(&base, stage, &view)?;
            why.push(format!("was a file; moved it to {}", shown_path(&to)));
        }
        Ok(_) => {
            let shown = view_key_at(&view);
            // Names whose file in the view is seqpipe's, unchanged: the entry's when the view
            // shows this entry; when it showed another, that entry's files that are still its
            // own (a user's edit of one, or a file a user added under a name the new entry
            // has, is moved aside, never deleted).
            let mut ours: Vec<String> = Vec::new();
            let mut differing = Vec::new();
            if shown.as_ref() == Some(key) {
                ours.extend(entry.files.iter().map(|f| f.name.clone()));
                let d = differences(&view, object, &entry, true);
                if d.is_empty() {
                    return Ok(Published {
                        view,
                        rebuilt: None,
                    });
                }
                if let Some(e) = d.unreadable {
                    why.push(format!("it could not be read: {e}"));
                }
                why.extend(d.missing.iter().map(|m| format!("{m} was missing")));
                differing = d.differing;
            } else if let Some(old) = &shown {
                // `objects/<2 hex>/<key>`, as the store lays entries out.
                let old_dir = object
                    .parent()
                    .and_then(Path::parent)
                    .map(|objects| objects.join(old.prefix()).join(old.as_str()));
                match old_dir.as_ref().map(|d| (d, read_entry(d))) {
                    Some((old_dir, Ok(e))) => {
                        // Not verified: an edit made through the view changed its store file too.
                        let d = differences(&view, old_dir, &e, false);
                        ours.extend(
                            e.files
                                .into_iter()
                                .map(|f| f.name)
                                .filter(|n| !d.differing.contains(n)),
                        );
                        differing = d.differing;
                    }
                    // Its entry is gone: its files are the read-only ones.
                    _ => ours.extend(read_only_names(&view)),
                }
            } else {
                why.push(format!("its {VIEW_KEY} was missing"));
                ours.extend(read_only_names(&view));
            }
            let mut names: Vec<String> = fs::read_dir(&view)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            for name in names {
                let edited = differing.contains(&name);
                if name == VIEW_KEY || (ours.contains(&name) && !edited) {
                    continue;
                }
                let to = set_aside(&base, stage, &view.join(&name))?;
                why.push(format!(
                    "{name} {}; moved it to {}",
                    if edited {
                        "differed from the entry's file"
                    } else {
                        "was not part of the entry"
                    },
                    shown_path(&to)
                ));
            }
        }
    }
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let tag = Owner::me().tag();
    let tmp = base.join(format!(".tmp-{stage}-{}~{tag}", now_ms()));
    fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for f in &entry.files {
        let src = object.join(&f.name);
        let dst = tmp.join(&f.name);
        if fs::hard_link(&src, &dst).is_err() {
            fs::copy(&src, &dst)
                .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
            set_read_only(&dst);
        }
    }
    fs::write(tmp.join(VIEW_KEY), key.as_str())
        .with_context(|| format!("writing {}", tmp.join(VIEW_KEY).display()))?;
    // Swap it in. Another run may swap the same view at the same moment: retry.
    for attempt in 0.. {
        let old = base.join(format!(".old-{stage}-{}~{tag}", now_ms()));
        let moved = match fs::rename(&view, &old) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e).with_context(|| format!("moving the old {} aside", view.display()));
            }
        };
        let r = fs::rename(&tmp, &view);
        if moved {
            // A file put in place of the view at this very moment is no folder.
            if fs::remove_dir_all(&old).is_err() {
                let _ = fs::remove_file(&old);
            }
        }
        match r {
            Ok(()) => break,
            Err(_) if attempt < 5 => continue,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e).with_context(|| format!("publishing {}", view.display()));
            }
        }
    }
    Ok(Published {
        view,
        rebuilt: (!why.is_empty()).then(|| why.join("; ")),
    })
}

/// The read-only files of a view folder: seqpipe's (links to the store, or read-only copies).
fn read_only_names(view: &Path) -> Vec<String> {
    fs::read_dir(view)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    fs::symlink_metadata(e.path())
                        .is_ok_and(|m| m.is_file() && m.permissions().readonly())
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Move `path` (a file or folder in the view `outputs/<pipeline>/<stage>`, or a file in place
/// of that view) to `outputs/<pipeline>/.stray/<stage>/<name>` (`<name>.1`, `.2`, … when that
/// is taken); `base` is `outputs/<pipeline>`. Returns where it went.
pub fn set_aside(base: &Path, stage: &str, path: &Path) -> Result<PathBuf> {
    let dir = base.join(".stray").join(stage);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut to = dir.join(&*name);
    for n in 1.. {
        if fs::symlink_metadata(&to).is_err() {
            break;
        }
        to = dir.join(format!("{name}.{n}"));
    }
    fs::rename(path, &to)
        .with_context(|| format!("moving {} aside to {}", path.display(), to.display()))?;
    Ok(to)
}

/// `path` relative to the working folder when it is under it.
fn shown_path(path: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|d| path.strip_prefix(d).ok().map(Path::to_path_buf));
    rel.unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

/// Remove `.tmp-*` and `.old-*` folders that crashed runs left in `outputs/<pipeline>/`.
pub fn clean_leftovers(outputs: &Path, pipeline: &str) -> usize {
    let Ok(dir) = crate::fsutil::PinnedDir::open(&outputs.join(pipeline), &[]) else {
        return 0;
    };
    crate::cache::remove_dead(&dir, |n| n.starts_with(".tmp-") || n.starts_with(".old-"))
        + remove_legacy(&outputs.join(pipeline))
}

/// Leftovers named `.tmp-<stage>-<pid>` by seqpipe before owners were tagged with the host.
fn remove_legacy(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(".tmp-") || name.starts_with(".old-")) || name.contains('~') {
            continue;
        }
        let Some(pid) = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && fs::remove_dir_all(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// The pipelines' folders under `outputs/` (not the store's or other dot folders).
fn pipeline_dirs(outputs: &Path) -> Vec<PathBuf> {
    let Ok(pipes) = fs::read_dir(outputs) else {
        return Vec::new();
    };
    pipes
        .filter_map(|e| e.ok())
        .filter(|p| !p.file_name().to_string_lossy().starts_with('.') && p.path().is_dir())
        .map(|p| p.path())
        .collect()
}

/// Every view folder under `outputs/` (folders holding a `.key`).
pub fn all_views(outputs: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in pipeline_dirs(outputs) {
        let Ok(stages) = fs::read_dir(&p) else {
            continue;
        };
        for s in stages.filter_map(|e| e.ok()) {
            let sn = s.file_name().to_string_lossy().into_owned();
            if !sn.starts_with('.') && s.path().join(VIEW_KEY).exists() {
                out.push(s.path());
            }
        }
    }
    out.sort();
    out
}

/// Files standing where a view belongs: `outputs/<pipeline>/<stage>` is no folder, for a stage
/// that a run record of the pipeline (`outputs/<pipeline>/runs/*.json`) names.
pub fn files_in_place_of_views(outputs: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in pipeline_dirs(outputs) {
        let mut stages = std::collections::BTreeSet::new();
        for r in fs::read_dir(p.join("runs")).into_iter().flatten() {
            let Ok(r) = r else { continue };
            if r.path().extension().is_none_or(|x| x != "json") {
                continue;
            }
            let Ok(rec) = crate::context::read_json::<serde_json::Value>(&r.path()) else {
                continue;
            };
            for s in rec["stages"].as_array().into_iter().flatten() {
                if let Some(n) = s["name"].as_str() {
                    stages.insert(n.to_string());
                }
            }
        }
        for s in stages {
            let v = p.join(&s);
            if !s.is_empty()
                && !s.starts_with('.')
                && fs::symlink_metadata(&v).is_ok_and(|m| !m.is_dir())
            {
                out.push(v);
            }
        }
    }
    out.sort();
    out
}
