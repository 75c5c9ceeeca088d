//! A sequence of ids on disk: a 16-byte header, then the ids little-endian, each 1, 2 or 4 bytes
//! wide (the narrowest that holds the largest id). The data starts 16 bytes in, so a reader can
//! memory-map the file and use the ids in place.
//!
//! ```text
//! 0..4   magic "SQID"
//! 4      format version (1)
//! 5      width in bytes: 1, 2 or 4
//! 6..8   zero
//! 8..16  number of ids, u64 little-endian
//! 16..   the ids
//! ```
//!
//! Python reads one with `numpy.frombuffer(open(f, "rb").read()[16:], dtype=f"<u{width}")`.

use anyhow::{bail, Context, Result};
use std::path::Path;

pub const MAGIC: &[u8; 4] = b"SQID";
pub const VERSION: u8 = 1;
pub const HEADER: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdWidth {
    U8 = 1,
    U16 = 2,
    U32 = 4,
}

impl IdWidth {
    /// The narrowest width that holds ids up to `max`.
    pub fn for_max(max: u32) -> Self {
        if max <= u8::MAX as u32 {
            IdWidth::U8
        } else if max <= u16::MAX as u32 {
            IdWidth::U16
        } else {
            IdWidth::U32
        }
    }

    pub fn bytes(self) -> usize {
        self as usize
    }
}

/// Encode ids (all below `max + 1`) into the file format, in memory.
pub fn encode(ids: &[u32], width: IdWidth) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + ids.len() * width.bytes());
    out.extend_from_slice(&header(width, ids.len()));
    match width {
        IdWidth::U8 => out.extend(ids.iter().map(|&i| i as u8)),
        IdWidth::U16 => {
            for &i in ids {
                out.extend_from_slice(&(i as u16).to_le_bytes());
            }
        }
        IdWidth::U32 => {
            for &i in ids {
                out.extend_from_slice(&i.to_le_bytes());
            }
        }
    }
    out
}

/// Ids collected in the narrowest width so far: a corpus of chars takes one byte per token in
/// memory too, and widens (once) when an id no longer fits.
#[derive(Debug, Clone)]
pub enum IdBuf {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl IdBuf {
    pub fn with_capacity(n: usize) -> Self {
        IdBuf::U8(crate::bigmem::byte_capacity(n))
    }

    /// Hands a large one-byte buffer back for reuse by the next stage (`bigmem::recycle`).
    pub fn recycle(self) {
        if let IdBuf::U8(v) = self {
            crate::bigmem::recycle(v);
        }
    }

    #[inline]
    pub fn push(&mut self, id: u32) {
        match self {
            IdBuf::U8(v) if id <= u8::MAX as u32 => v.push(id as u8),
            IdBuf::U16(v) if id <= u16::MAX as u32 => v.push(id as u16),
            IdBuf::U32(v) => v.push(id),
            _ => {
                self.widen(IdWidth::for_max(id));
                self.push(id)
            }
        }
    }

    #[cold]
    fn widen(&mut self, to: IdWidth) {
        let all = self.to_vec();
        *self = match to {
            IdWidth::U8 => IdBuf::U8(all.iter().map(|&i| i as u8).collect()),
            IdWidth::U16 => IdBuf::U16(all.iter().map(|&i| i as u16).collect()),
            IdWidth::U32 => IdBuf::U32(all),
        };
    }

    pub fn len(&self) -> usize {
        match self {
            IdBuf::U8(v) => v.len(),
            IdBuf::U16(v) => v.len(),
            IdBuf::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn width(&self) -> IdWidth {
        match self {
            IdBuf::U8(_) => IdWidth::U8,
            IdBuf::U16(_) => IdWidth::U16,
            IdBuf::U32(_) => IdWidth::U32,
        }
    }

    pub fn get(&self, i: usize) -> u32 {
        match self {
            IdBuf::U8(v) => v[i] as u32,
            IdBuf::U16(v) => v[i] as u32,
            IdBuf::U32(v) => v[i],
        }
    }

    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            IdBuf::U8(v) => v.iter().map(|&i| i as u32).collect(),
            IdBuf::U16(v) => v.iter().map(|&i| i as u32).collect(),
            IdBuf::U32(v) => v.clone(),
        }
    }

    /// The ids little-endian in their own width.
    fn le_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        use std::borrow::Cow;
        match self {
            IdBuf::U8(v) => Cow::Borrowed(v),
            #[cfg(target_endian = "little")]
            IdBuf::U16(v) => Cow::Borrowed(unsafe {
                // SAFETY: u16 has no padding; the length covers exactly the vector's items.
                std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 2)
            }),
            #[cfg(target_endian = "little")]
            IdBuf::U32(v) => Cow::Borrowed(unsafe {
                // SAFETY: as above.
                std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len() * 4)
            }),
            #[cfg(not(target_endian = "little"))]
            IdBuf::U16(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            #[cfg(not(target_endian = "little"))]
            IdBuf::U32(v) => Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        }
    }

    /// Write the ids in the width that holds `max_id` (the largest id the file may hold).
    pub fn write(&self, path: &Path, max_id: u32) -> Result<()> {
        let width = IdWidth::for_max(max_id);
        if width != self.width() {
            return write(path, &self.to_vec(), max_id);
        }
        let body = self.le_bytes();
        crate::fsutil::write_parts(path, &[&header(width, self.len()), &body])?;
        Ok(())
    }
}

fn header(width: IdWidth, len: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5] = width as u8;
    h[8..].copy_from_slice(&(len as u64).to_le_bytes());
    h
}

/// Write ids in the narrowest width that holds `max_id` (the largest id the file may hold; a
/// vocabulary's size minus one, so that every file of one vocabulary has one width).
pub fn write(path: &Path, ids: &[u32], max_id: u32) -> Result<()> {
    debug_assert!(ids.iter().all(|&i| i <= max_id));
    let bytes = encode(ids, IdWidth::for_max(max_id));
    crate::fsutil::write_parts(path, &[&bytes])?;
    Ok(())
}

enum Backing {
    Map(memmap2::Mmap),
    Bytes(Vec<u8>),
}

/// An id file opened for reading (memory-mapped).
pub struct Ids {
    data: Backing,
    width: IdWidth,
    len: usize,
}

impl Ids {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        // SAFETY: store files are read-only and never rewritten in place; a view's file is a
        // hard link to one of them.
        let data = match unsafe { memmap2::Mmap::map(&f) } {
            Ok(m) => Backing::Map(m),
            Err(_) => Backing::Bytes(std::fs::read(path)?),
        };
        Self::from_backing(data).with_context(|| format!("reading {}", path.display()))
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_backing(Backing::Bytes(bytes))
    }

    fn from_backing(data: Backing) -> Result<Self> {
        let b: &[u8] = match &data {
            Backing::Map(m) => m,
            Backing::Bytes(v) => v,
        };
        if b.len() < HEADER || &b[..4] != MAGIC {
            bail!("not an id file (no `SQID` header)");
        }
        if b[4] != VERSION {
            bail!(
                "id file format version {} (this seqpipe reads {VERSION})",
                b[4]
            );
        }
        let width = match b[5] {
            1 => IdWidth::U8,
            2 => IdWidth::U16,
            4 => IdWidth::U32,
            w => bail!("id width {w} is not 1, 2 or 4"),
        };
        let len = u64::from_le_bytes(b[8..16].try_into().unwrap()) as usize;
        if b.len() != HEADER + len * width.bytes() {
            bail!(
                "id file holds {} bytes of ids, its header says {len} ids of {} bytes",
                b.len() - HEADER,
                width.bytes()
            );
        }
        Ok(Ids { data, width, len })
    }

    fn body(&self) -> &[u8] {
        let b: &[u8] = match &self.data {
            Backing::Map(m) => m,
            Backing::Bytes(v) => v,
        };
        &b[HEADER..]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn width(&self) -> IdWidth {
        self.width
    }

    pub fn get(&self, i: usize) -> u32 {
        let b = self.body();
        match self.width {
            IdWidth::U8 => b[i] as u32,
            IdWidth::U16 => u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32,
            IdWidth::U32 => u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()),
        }
    }

    /// The ids as bytes, when they are one byte wide.
    pub fn as_u8(&self) -> Option<&[u8]> {
        (self.width == IdWidth::U8).then(|| self.body())
    }

    /// Call `f` on the first `n` ids (all when `n` is larger), in order.
    #[inline]
    pub fn for_each_prefix(&self, n: usize, mut f: impl FnMut(u32)) {
        let n = n.min(self.len);
        let b = self.body();
        match self.width {
            IdWidth::U8 => b[..n].iter().for_each(|&x| f(x as u32)),
            IdWidth::U16 => b[..2 * n]
                .chunks_exact(2)
                .for_each(|c| f(u16::from_le_bytes([c[0], c[1]]) as u32)),
            IdWidth::U32 => b[..4 * n]
                .chunks_exact(4)
                .for_each(|c| f(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
        }
    }

    pub fn for_each(&self, f: impl FnMut(u32)) {
        self.for_each_prefix(self.len, f)
    }

    /// The first `n` ids mapped through `table`, in the narrowest width.
    pub fn map_prefix(&self, n: usize, table: &[u32]) -> IdBuf {
        let n = n.min(self.len);
        let max = table.iter().copied().max().unwrap_or(0);
        let b = self.body();
        match (self.width, IdWidth::for_max(max)) {
            (IdWidth::U8, IdWidth::U8) => {
                let t: Vec<u8> = table.iter().map(|&x| x as u8).collect();
                let mut out = crate::bigmem::byte_capacity(n);
                out.extend(b[..n].iter().map(|&x| t[x as usize]));
                IdBuf::U8(out)
            }
            (IdWidth::U16, IdWidth::U16) => {
                let t: Vec<u16> = table.iter().map(|&x| x as u16).collect();
                let mut out = crate::bigmem::with_capacity(n);
                out.extend(
                    b[..2 * n]
                        .chunks_exact(2)
                        .map(|c| t[u16::from_le_bytes([c[0], c[1]]) as usize]),
                );
                IdBuf::U16(out)
            }
            _ => {
                let mut out = IdBuf::with_capacity(n);
                self.for_each_prefix(n, |x| out.push(table[x as usize]));
                out
            }
        }
    }

    /// The first `n` ids as `u32`s.
    pub fn prefix_vec(&self, n: usize) -> Vec<u32> {
        let mut v = Vec::with_capacity(n.min(self.len));
        self.for_each_prefix(n, |x| v.push(x));
        v
    }

    pub fn to_vec(&self) -> Vec<u32> {
        self.prefix_vec(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_every_width() {
        for (max, width) in [
            (200u32, IdWidth::U8),
            (60_000, IdWidth::U16),
            (70_000, IdWidth::U32),
        ] {
            let ids: Vec<u32> = (0..1000u32).map(|i| (i * 7919) % (max + 1)).collect();
            let bytes = encode(&ids, IdWidth::for_max(max));
            assert_eq!(bytes.len(), HEADER + ids.len() * width.bytes());
            let back = Ids::from_bytes(bytes).unwrap();
            assert_eq!(back.width(), width);
            assert_eq!(back.to_vec(), ids);
            assert_eq!(back.prefix_vec(10), ids[..10]);
            assert_eq!(back.get(999), ids[999]);
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.bin");
        write(&p, &[3, 1, 2], 27).unwrap();
        assert_eq!(std::fs::read(&p).unwrap().len(), HEADER + 3);
        assert_eq!(Ids::open(&p).unwrap().to_vec(), [3, 1, 2]);
        let empty = Ids::from_bytes(encode(&[], IdWidth::U8)).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_buffer_widens_and_writes_every_width() {
        let d = tempfile::tempdir().unwrap();
        for top in [100u32, 300, 70_000] {
            let ids: Vec<u32> = (0..=top).rev().chain(0..5).collect();
            let mut b = IdBuf::with_capacity(4);
            ids.iter().for_each(|&i| b.push(i));
            assert_eq!(b.width(), IdWidth::for_max(top));
            assert_eq!(b.to_vec(), ids);
            for max_id in [top, top + 70_000] {
                let p = d.path().join(format!("{top}-{max_id}.bin"));
                b.write(&p, max_id).unwrap();
                let back = Ids::open(&p).unwrap();
                assert_eq!(back.width(), IdWidth::for_max(max_id));
                assert_eq!(back.to_vec(), ids);
                assert_eq!(
                    std::fs::read(&p).unwrap(),
                    encode(&ids, IdWidth::for_max(max_id))
                );
            }
        }
    }

    #[test]
    fn damaged_files_are_refused() {
        let mut b = encode(&[1, 2, 3], IdWidth::U8);
        b.pop();
        assert!(Ids::from_bytes(b).is_err());
        assert!(Ids::from_bytes(b"[1,2,3]".to_vec()).is_err());
    }
}
