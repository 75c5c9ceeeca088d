//! File helpers shared by the store and the stages: durable writes, content digests,
//! read-only files. A leaf module: it imports nothing from the crate.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// A filesystem operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct FsError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// `.at("creating", &path)` on an I/O result: the error names what was done, and where.
pub trait IoAt<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, FsError>;
}

impl<T> IoAt<T> for std::io::Result<T> {
    fn at(self, op: &'static str, path: &Path) -> Result<T, FsError> {
        self.map_err(|source| FsError {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// The blake3 of a file's content.
pub fn digest_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    // Large files (corpora, their token ids) are hashed on every core.
    if fs::metadata(path)?.len() >= 16 << 20 {
        h.update_mmap_rayon(path)?;
    } else {
        h.update_mmap(path)?;
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Write a file durably: to a temporary name, fsync, rename.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        // A fresh file, never through a link someone left at the temporary name: what stood
        // there goes (a link is removed itself), and the create is exclusive.
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at("writing", &tmp)?;
        std::io::Write::write_all(&mut f, bytes).at("writing", &tmp)?;
        f.sync_all().at("syncing", &tmp)?;
    }
    fs::rename(&tmp, path).at("renaming into", path)?;
    Ok(())
}

pub fn set_read_only(p: &Path) {
    if let Ok(m) = fs::metadata(p) {
        let mut perm = m.permissions();
        perm.set_readonly(true);
        let _ = fs::set_permissions(p, perm);
    }
}

pub fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Write `parts` (concatenated) to a new file at `path`. Buffers of many megabytes are copied
/// into the page cache by two threads at once (positioned writes to disjoint halves): on large
/// corpora that copy is most of a text stage's time.
pub fn write_parts(path: &Path, parts: &[&[u8]]) -> Result<(), FsError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let f = File::create(path).at("writing", path)?;
    const BIG: usize = 8 << 20;
    #[cfg(unix)]
    if total >= BIG {
        use std::os::unix::fs::FileExt;
        f.set_len(total as u64).at("writing", path)?;
        let mut offset = 0u64;
        for part in parts {
            let half = part.len() / 2;
            let (a, b) = part.split_at(half);
            let (fa, fb) = (&f, &f);
            let (ra, rb) = std::thread::scope(|s| {
                let t = s.spawn(move || fb.write_all_at(b, offset + half as u64));
                (fa.write_all_at(a, offset), t.join())
            });
            ra.at("writing", path)?;
            rb.unwrap_or_else(|_| Err(std::io::Error::other("a writer thread panicked")))
                .at("writing", path)?;
            offset += part.len() as u64;
        }
        return Ok(());
    }
    let mut f = f;
    for part in parts {
        std::io::Write::write_all(&mut f, part).at("writing", path)?;
    }
    Ok(())
}

/// Whether `name` is one plain path component: not empty, not `.` or `..`, no `/` and no NUL.
/// Names read from records that others can write (an entry's file list) must be such names,
/// or joining them to a folder could reach outside it.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// What stands at `path`, without following a link there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Missing,
    Dir,
    File,
    /// A symbolic link (never followed), a socket, a device …
    Other,
}

impl Found {
    pub fn at(path: &Path) -> Found {
        match fs::symlink_metadata(path) {
            Err(_) => Found::Missing,
            Ok(m) if m.is_dir() => Found::Dir,
            Ok(m) if m.is_file() => Found::File,
            Ok(_) => Found::Other,
        }
    }

    /// How to say it in a message: "a link", "a file", …
    pub fn describe(path: &Path) -> &'static str {
        match fs::symlink_metadata(path) {
            Err(_) => "missing",
            Ok(m) if m.is_dir() => "a folder",
            Ok(m) if m.is_file() => "a file",
            Ok(m) if m.file_type().is_symlink() => "a symbolic link",
            Ok(_) => "a special file",
        }
    }
}

/// A folder held open, reached from a trusted base without following any link on the way:
/// a co-user who swaps a folder for a link after it was opened redirects nothing, because every
/// operation goes through the open folder ([`PinnedDir::path`] is `/proc/self/fd/N` on Linux,
/// which names the folder itself and never re-resolves the path).
pub struct PinnedDir {
    path: PathBuf,
    #[cfg(target_os = "linux")]
    _fd: std::os::fd::OwnedFd,
}

impl PinnedDir {
    /// Open `base/rel[0]/rel[1]/…`, where `base` is trusted (the user named it) and each
    /// component of `rel` must be a real folder, not a link. `NotFound` when one is missing;
    /// an error naming what stands there otherwise.
    pub fn open(base: &Path, rel: &[&str]) -> std::io::Result<PinnedDir> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
            use std::os::unix::ffi::OsStrExt;
            let c = std::ffi::CString::new(base.as_os_str().as_bytes())
                .map_err(std::io::Error::other)?;
            // SAFETY: a valid C string; the result is checked.
            let fd = unsafe {
                libc::open(
                    c.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a fresh descriptor that nothing else owns.
            let mut dir = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut shown = base.to_path_buf();
            for part in rel {
                shown.push(part);
                if !is_plain_name(part) {
                    return Err(std::io::Error::other(format!(
                        "{} is not a plain name",
                        shown.display()
                    )));
                }
                let c = std::ffi::CString::new(part.as_bytes()).map_err(std::io::Error::other)?;
                // SAFETY: as above; O_NOFOLLOW refuses a link as the last (only) component.
                let fd = unsafe {
                    libc::openat(
                        dir.as_raw_fd(),
                        c.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    )
                };
                if fd < 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(match e.raw_os_error() {
                        Some(libc::ELOOP) | Some(libc::ENOTDIR) => not_a_folder(&shown),
                        _ => e,
                    });
                }
                // SAFETY: a fresh descriptor that nothing else owns.
                dir = unsafe { OwnedFd::from_raw_fd(fd) };
            }
            let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
            if path.is_dir() {
                return Ok(PinnedDir { path, _fd: dir });
            }
            // No /proc: fall back to the checked path below.
        }
        let mut path = base.to_path_buf();
        for part in rel {
            path.push(part);
            match Found::at(&path) {
                Found::Dir => {}
                Found::Missing => return Err(std::io::ErrorKind::NotFound.into()),
                _ => return Err(not_a_folder(&path)),
            }
        }
        Ok(PinnedDir {
            #[cfg(target_os = "linux")]
            _fd: File::open(&path)?.into(),
            path,
        })
    }

    /// A path that reaches the folder itself (join plain names to it).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` inside the folder; `name` must be a plain name.
    pub fn join(&self, name: &str) -> PathBuf {
        debug_assert!(is_plain_name(name), "{name:?}");
        self.path.join(name)
    }

    /// Remove `name` inside the folder: a folder with its content (links inside are removed,
    /// never followed), a file, or a link itself.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        let p = self.join(name);
        match Found::at(&p) {
            Found::Dir => fs::remove_dir_all(&p),
            Found::Missing => Ok(()),
            _ => fs::remove_file(&p),
        }
    }
}

fn not_a_folder(path: &Path) -> std::io::Error {
    std::io::Error::other(format!(
        "{} is {}, not a folder: seqpipe never follows a link inside a store (a co-user or a \
         copy put it there; remove it)",
        path.display(),
        Found::describe(path)
    ))
}

/// Open a file to read without following a link at `path`, and only when it is a plain file of
/// at most `max` bytes; return its content.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = open_nofollow(path, false)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other("not a plain file"));
    }
    if m.len() > max {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {max} a seqpipe file of this kind may have",
            m.len()
        )));
    }
    let mut out = Vec::with_capacity(m.len() as usize);
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "more than the {max} bytes a seqpipe file of this kind may have"
        )));
    }
    Ok(out)
}

/// Open `path` to read, never through a link at it (a folder opens too).
pub fn open_plain(path: &Path) -> std::io::Result<File> {
    open_nofollow(path, false)
}

/// Set the mode of the file or folder at `path` through a handle opened without following a
/// link: a link swapped in at `path` gets nothing changed behind it.
#[cfg(unix)]
pub fn chmod_nofollow(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    open_plain(path)?.set_permissions(fs::Permissions::from_mode(mode))
}

/// The blake3 of an open file's content (mapped; large files hashed on every core).
pub fn digest_open(f: &File) -> std::io::Result<String> {
    let len = f.metadata()?.len();
    let mut h = blake3::Hasher::new();
    if len > 0 {
        // SAFETY: a file of a staging folder only its writer fills, read once to hash it.
        let m = unsafe { memmap2::Mmap::map(f)? };
        if len >= 16 << 20 {
            h.update_rayon(&m);
        } else {
            h.update(&m);
        }
    }
    Ok(h.finalize().to_hex().to_string())
}

/// Open `path` (to write: create it if missing, never truncate) without following a link at it.
fn open_nofollow(path: &Path, write: bool) -> std::io::Result<File> {
    let mut o = fs::OpenOptions::new();
    if write {
        o.write(true).create(true);
    } else {
        o.read(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let f = o.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return std::io::Error::other(format!(
                "{} is a symbolic link; seqpipe never follows one here",
                path.display()
            ));
        }
        e
    })?;
    Ok(f)
}

/// Set the modification time of `path` to now, creating it empty if missing: never truncating
/// and never following a link at it (a stamp such as the store's `used/<key>`).
pub fn stamp(path: &Path) -> std::io::Result<()> {
    let f = open_nofollow(path, true)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a plain file"));
    }
    f.set_modified(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_pinned_dir_never_goes_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let (base, victim) = (t.path().join("store"), t.path().join("victim"));
        fs::create_dir_all(base.join("real/inner")).unwrap();
        fs::create_dir_all(victim.join("sub")).unwrap();
        symlink(&victim, base.join("link")).unwrap();
        let err = PinnedDir::open(&base, &["link"]).err().unwrap().to_string();
        assert!(err.contains("is a symbolic link, not a folder"), "{err}");
        assert!(PinnedDir::open(&base, &["../victim"]).is_err());
        let d = PinnedDir::open(&base, &["real"]).unwrap();
        // Swapped for a link after it was opened: what goes through it stays in the real one.
        fs::rename(base.join("real"), base.join("moved")).unwrap();
        symlink(&victim, base.join("real")).unwrap();
        d.remove("inner").unwrap();
        assert!(!base.join("moved/inner").exists() && victim.join("sub").exists());
        // A link inside is removed itself, never followed.
        symlink(&victim, d.join("x")).unwrap();
        d.remove("x").unwrap();
        assert!(victim.join("sub").exists());
    }

    #[test]
    fn stamps_and_bounded_reads_refuse_links() {
        let t = tempfile::tempdir().unwrap();
        let precious = t.path().join("precious");
        fs::write(&precious, "keep").unwrap();
        let link = t.path().join("used");
        symlink(&precious, &link).unwrap();
        assert!(stamp(&link).is_err());
        assert!(read_bounded(&link, 100).is_err());
        assert_eq!(fs::read_to_string(&precious).unwrap(), "keep");
        // A mode change through a link changes nothing behind it.
        use std::os::unix::fs::PermissionsExt;
        let before = fs::metadata(&precious).unwrap().permissions().mode();
        assert!(chmod_nofollow(&link, 0o2777).is_err());
        assert_eq!(
            fs::metadata(&precious).unwrap().permissions().mode(),
            before
        );
        stamp(&precious).unwrap();
        assert_eq!(
            fs::read_to_string(&precious).unwrap(),
            "keep",
            "a stamp never truncates"
        );
        assert!(read_bounded(&precious, 3).is_err());
        assert_eq!(read_bounded(&precious, 4).unwrap(), b"keep");
        for ok in ["a", "a.txt", "..a", "a b"] {
            assert!(is_plain_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a\0"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
