//! File helpers shared by the store and the stages: durable writes, content digests,
//! read-only files. A leaf module: it imports nothing from the crate.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::path::Path;

/// The blake3 of a file's content.
pub fn digest_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(path)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Write a file durably: to a temporary name, fsync, rename.
pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f =
            File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        std::io::Write::write_all(&mut f, bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
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
