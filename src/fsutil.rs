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
        let mut f = File::create(&tmp).at("writing", &tmp)?;
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
