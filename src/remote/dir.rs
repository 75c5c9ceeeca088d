//! A remote in a folder (a mounted share, a synced disk): objects are files under its root.
//!
//! The root is trusted (the user named it); below it nothing is followed: every folder on the
//! way is opened without following a link ([`PinnedDir`]), files are opened `O_NOFOLLOW`, and
//! reads stop at the size the caller expects. A write goes to a temporary file in the same
//! folder, fsynced, then takes its name by `rename` (replace) or `link` (create only: the link
//! fails if the name exists, so the first writer wins and nothing partial is ever visible).

use super::{Meta, RResult, Remote, RemoteError};
use crate::fsutil::{is_plain_name, open_plain, Found, PinnedDir};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct DirRemote {
    url: String,
    root: PathBuf,
}

/// Names of files being written (never listed, never read as objects).
const TMP: &str = ".tmp-";

impl DirRemote {
    pub fn open(url: &str, root: &Path) -> anyhow::Result<Self> {
        Ok(DirRemote {
            url: url.to_string(),
            root: root.to_path_buf(),
        })
    }

    fn err(&self, what: &str, path: &str, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Failed(format!("{what} {}: {e}", self.root.join(path).display()))
    }

    /// The folders and the name of `path`, each a plain name.
    fn split<'a>(&self, path: &'a str) -> RResult<(Vec<&'a str>, &'a str)> {
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        if !parts.iter().chain([&name]).all(|p| is_plain_name(p)) || name.starts_with(TMP) {
            return Err(self.err("reaching", path, "not a path of plain names"));
        }
        Ok((parts, name))
    }

    /// The folder holding `path`: `None` when it does not exist (and `create` is off).
    fn parent(&self, path: &str, create: bool) -> RResult<Option<(PinnedDir, String)>> {
        let (dirs, name) = self.split(path)?;
        if create {
            fs::create_dir_all(&self.root).map_err(|e| self.err("creating", "", e))?;
            for i in 0..dirs.len() {
                let up = PinnedDir::open(&self.root, &dirs[..i])
                    .map_err(|e| self.err("opening", &dirs[..i].join("/"), e))?;
                match fs::create_dir(up.join(dirs[i])) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(self.err("creating", &dirs[..=i].join("/"), e)),
                }
            }
        }
        match PinnedDir::open(&self.root, &dirs) {
            Ok(d) => Ok(Some((d, name.to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("opening", &dirs.join("/"), e)),
        }
    }
}

fn meta_of(m: &fs::Metadata) -> Meta {
    Meta {
        size: m.len(),
        modified: m.modified().unwrap_or(std::time::UNIX_EPOCH),
    }
}

impl Remote for DirRemote {
    fn url(&self) -> &str {
        &self.url
    }

    fn get(&self, path: &str, max: u64, sink: &mut dyn Write) -> RResult<Option<u64>> {
        let Some((dir, name)) = self.parent(path, false)? else {
            return Ok(None);
        };
        let f = match open_plain(&dir.join(&name)) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err("opening", path, e)),
        };
        let m = f.metadata().map_err(|e| self.err("reading", path, e))?;
        if !m.is_file() {
            return Err(self.err("reading", path, "not a plain file"));
        }
        if m.len() > max {
            return Err(RemoteError::TooBig(path.to_string(), max));
        }
        let n =
            std::io::copy(&mut f.take(max + 1), sink).map_err(|e| self.err("reading", path, e))?;
        if n > max {
            return Err(RemoteError::TooBig(path.to_string(), max));
        }
        Ok(Some(n))
    }

    fn head(&self, path: &str) -> RResult<Option<Meta>> {
        let Some((dir, name)) = self.parent(path, false)? else {
            return Ok(None);
        };
        match fs::symlink_metadata(dir.join(&name)) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(&m))),
            Ok(_) => Err(self.err("reading", path, "not a plain file (never followed)")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("reading", path, e)),
        }
    }

    fn put(&self, path: &str, bytes: Vec<u8>, create_only: bool) -> RResult<bool> {
        static N: AtomicU64 = AtomicU64::new(0);
        let (dir, name) = self
            .parent(path, true)?
            .ok_or_else(|| self.err("creating", path, "its folder vanished"))?;
        let tmp = dir.join(&format!(
            "{TMP}{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            crate::owner::now_ms()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.err("writing", path, e));
        }
        let done = if create_only {
            match fs::hard_link(&tmp, dir.join(&name)) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(self.err("writing", path, e)),
            }
        } else {
            fs::rename(&tmp, dir.join(&name))
                .map(|()| true)
                .map_err(|e| self.err("writing", path, e))
        };
        let _ = fs::remove_file(&tmp);
        crate::fsutil::sync_dir(dir.path());
        done
    }

    fn list(&self, prefix: &str) -> RResult<Vec<(String, Meta)>> {
        let top = prefix.trim_end_matches('/');
        let mut out = Vec::new();
        let base = match PinnedDir::open(&self.root, &[top]) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(self.err("listing", top, e)),
        };
        let shards = fs::read_dir(base.path()).map_err(|e| self.err("listing", top, e))?;
        for s in shards {
            let s = s.map_err(|e| self.err("listing", top, e))?;
            let sn = s.file_name().to_string_lossy().into_owned();
            // Only real folders are entered (a link is never followed).
            if Found::at(&base.join(&sn)) != Found::Dir {
                continue;
            }
            let Ok(shard) = PinnedDir::open(&self.root, &[top, &sn]) else {
                continue;
            };
            let files = fs::read_dir(shard.path())
                .map_err(|e| self.err("listing", &format!("{top}/{sn}"), e))?;
            for f in files.filter_map(|f| f.ok()) {
                let n = f.file_name().to_string_lossy().into_owned();
                if n.starts_with(TMP) {
                    continue;
                }
                if let Ok(m) = fs::symlink_metadata(shard.join(&n)) {
                    if m.is_file() {
                        out.push((format!("{top}/{sn}/{n}"), meta_of(&m)));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn delete(&self, path: &str) -> RResult<()> {
        let Some((dir, name)) = self.parent(path, false)? else {
            return Ok(());
        };
        match fs::remove_file(dir.join(&name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("removing", path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_only_is_first_wins_and_links_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let r = DirRemote::open("t", &t.path().join("r")).unwrap();
        assert!(r.put("records/ab/x.json", b"first".to_vec(), true).unwrap());
        assert!(!r
            .put("records/ab/x.json", b"second".to_vec(), true)
            .unwrap());
        let mut v = Vec::new();
        assert_eq!(r.get("records/ab/x.json", 100, &mut v).unwrap(), Some(5));
        assert_eq!(v, b"first");
        assert!(matches!(
            r.get("records/ab/x.json", 4, &mut Vec::new()),
            Err(RemoteError::TooBig(..))
        ));
        assert!(r
            .put("records/ab/x.json", b"third".to_vec(), false)
            .unwrap());
        assert_eq!(r.list("records/").unwrap().len(), 1);
        // A link planted as a shard folder is neither entered nor followed.
        let outside = t.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("y.json"), "secret").unwrap();
        std::os::unix::fs::symlink(&outside, t.path().join("r/records/cd")).unwrap();
        assert!(r.get("records/cd/y.json", 100, &mut Vec::new()).is_err());
        assert_eq!(r.list("records/").unwrap().len(), 1);
        assert!(r.get("../outside/y.json", 100, &mut Vec::new()).is_err());
        r.delete("records/ab/x.json").unwrap();
        assert_eq!(
            r.get("records/ab/x.json", 100, &mut Vec::new()).unwrap(),
            None
        );
    }
}
