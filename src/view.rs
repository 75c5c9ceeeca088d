//! The human view `outputs/<pipeline>/<stage>/`: the files of the stage's current entry, as
//! hard links to the store's (read-only) files where the filesystem allows, copies otherwise,
//! and `.key` naming the entry. It is checked against its entry on every run and rebuilt when it
//! differs: a missing, extra or edited file, or a file replaced by another.

use crate::cache::{digest_file, read_entry, set_read_only, Entry};
use crate::claim::{now_ms, Owner};
use crate::key::Key;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

const VIEW_KEY: &str = ".key";

/// The key a view folder shows, if any.
pub fn view_key_at(view: &Path) -> Option<Key> {
    fs::read_to_string(view.join(VIEW_KEY))
        .ok()
        .map(|s| Key(s.trim().to_string()))
}

/// Why a view differs from its entry, or `None` when it shows exactly the entry's files. A
/// hard link to the store's file is the store's file (verified with the entry); a copy is
/// re-hashed.
pub fn view_differs(view: &Path, object: &Path, entry: &Entry) -> Option<String> {
    let mut names: Vec<String> = match fs::read_dir(view) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != VIEW_KEY)
            .collect(),
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    names.sort();
    let mut want: Vec<&str> = entry.files.iter().map(|f| f.name.as_str()).collect();
    want.sort();
    if names != want {
        let extra: Vec<&String> = names
            .iter()
            .filter(|n| !want.contains(&n.as_str()))
            .collect();
        let missing: Vec<&&str> = want
            .iter()
            .filter(|n| !names.contains(&n.to_string()))
            .collect();
        return Some(match (extra.first(), missing.first()) {
            (_, Some(m)) => format!("{m} is missing"),
            (Some(x), _) => format!("{x} is not part of the entry"),
            _ => "its files differ from the entry's".into(),
        });
    }
    for f in &entry.files {
        let v = view.join(&f.name);
        if same_file(&v, &object.join(&f.name)) {
            continue;
        }
        let ok = fs::metadata(&v).is_ok_and(|m| m.len() == f.bytes)
            && digest_file(&v).ok().as_ref() == f.blake3.as_ref();
        if !ok {
            return Some(format!("{} differs from the entry's file", f.name));
        }
    }
    None
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

/// Show the entry in `object` (already verified) as `outputs/<pipeline>/<stage>/`. Does
/// nothing when the view already shows it intact. Returns the view folder.
pub fn publish(
    outputs: &Path,
    pipeline: &str,
    stage: &str,
    key: &Key,
    object: &Path,
) -> Result<PathBuf> {
    let base = outputs.join(pipeline);
    let view = base.join(stage);
    let entry = read_entry(object).with_context(|| format!("reading the entry of `{stage}`"))?;
    if view_key_at(&view).as_ref() == Some(key) && view_differs(&view, object, &entry).is_none() {
        return Ok(view);
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
    fs::write(tmp.join(VIEW_KEY), &key.0)
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
            let _ = fs::remove_dir_all(&old);
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
    Ok(view)
}

/// Remove `.tmp-*` and `.old-*` folders that crashed runs left in `outputs/<pipeline>/`.
pub fn clean_leftovers(outputs: &Path, pipeline: &str) -> usize {
    crate::cache::remove_dead(&outputs.join(pipeline), |n| {
        n.starts_with(".tmp-") || n.starts_with(".old-")
    }) + remove_legacy(&outputs.join(pipeline))
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

/// Every view folder under `outputs/` (folders holding a `.key`).
pub fn all_views(outputs: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(pipes) = fs::read_dir(outputs) else {
        return out;
    };
    for p in pipes.filter_map(|e| e.ok()) {
        let name = p.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !p.path().is_dir() {
            continue;
        }
        let Ok(stages) = fs::read_dir(p.path()) else {
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
