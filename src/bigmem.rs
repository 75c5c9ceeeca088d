//! Large in-memory buffers (a corpus, its cleaned text, its ids) on transparent huge pages.
//!
//! A text stage on a 54 MB corpus fills three buffers of its size; in 4 KB pages that is about
//! 38,000 page faults per run, and on the development VM the kernel's cost per fault varied
//! with the host between runs (0.12 s and 0.40 s of system time for the same run). With
//! `madvise(MADV_HUGEPAGE)` (Linux's default THP mode is `madvise`) the same memory comes in
//! 2 MB pages, a few dozen faults. Elsewhere, and where the kernel refuses, the buffers are
//! ordinary ones.
//!
//! Fresh memory itself is the larger cost there: the VM hands freed memory back to its host
//! (virtio-balloon free page reporting), and touching it again costs about 1 ms per MB. So a
//! stage hands its corpus-sized byte buffer back (`recycle`) when it is done, and the next
//! stage of the run (`load_corpus` → `tokenize` → `build_vocab`) reuses it instead of
//! allocating another: one corpus-sized allocation per run instead of three. `build_vocab`,
//! the last of them, hands nothing back; a buffer whose next stage was cached stays kept (at
//! most `POOL_BUFFERS` of them).

use std::sync::Mutex;

/// Kept buffers: at most this many, of at most this many bytes in all.
const POOL_BUFFERS: usize = 2;
const POOL_BYTES: usize = 1 << 30;
static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A kept buffer of at least `n` bytes' capacity, if there is one.
fn reuse(n: usize) -> Option<Vec<u8>> {
    let mut pool = POOL.lock().ok()?;
    let i = (0..pool.len())
        .filter(|&i| pool[i].capacity() >= n)
        .min_by_key(|&i| pool[i].capacity())?;
    Some(pool.swap_remove(i))
}

/// Hands a large buffer back for the next `bytes`/`byte_capacity` of this process.
pub fn recycle(v: Vec<u8>) {
    if v.capacity() < MIN {
        return;
    }
    if let Ok(mut pool) = POOL.lock() {
        let held: usize = pool.iter().map(|b| b.capacity()).sum();
        if pool.len() < POOL_BUFFERS && held + v.capacity() <= POOL_BYTES {
            pool.push(v);
        }
    }
}

/// Below this size a buffer is left alone (a huge page would not fit in it anyway).
const MIN: usize = 4 << 20;

/// Asks for huge pages on the whole 2 MB-aligned part of `[ptr, ptr + len)`. A hint only.
fn advise(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if len < MIN {
            return;
        }
        let start = (ptr as usize).div_ceil(HUGE) * HUGE;
        let end = (ptr as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside an allocation this process owns; MADV_HUGEPAGE
            // changes no contents, only how untouched pages will be backed.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// `n` zero bytes (`vec![0u8; n]`), on huge pages where possible.
pub fn zeroed_bytes(n: usize) -> Vec<u8> {
    if n < MIN {
        return vec![0u8; n];
    }
    let layout = std::alloc::Layout::array::<u8>(n).expect("buffer size");
    // SAFETY: a non-zero size; the zeroed memory is a valid `[u8; n]`, and the Vec takes over
    // the allocation with the same layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout);
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        advise(p, n);
        Vec::from_raw_parts(p, n, n)
    }
}

/// `n` bytes of unspecified (initialised) contents: a recycled buffer where one is kept, else
/// `zeroed_bytes(n)`. For a caller that writes what it later reads.
pub fn bytes(n: usize) -> Vec<u8> {
    match reuse(n) {
        Some(mut v) => {
            let keep = v.len().min(n);
            v.truncate(keep);
            v.resize(n, 0);
            v
        }
        None => zeroed_bytes(n),
    }
}

/// An empty byte buffer with capacity for `n`: a recycled one where one is kept, else
/// `with_capacity(n)`.
pub fn byte_capacity(n: usize) -> Vec<u8> {
    match reuse(n) {
        Some(mut v) => {
            v.clear();
            v
        }
        None => with_capacity(n),
    }
}

/// `Vec::with_capacity(n)`, its memory on huge pages where possible.
pub fn with_capacity<T>(n: usize) -> Vec<T> {
    let v = Vec::with_capacity(n);
    advise(
        v.as_ptr() as *const u8,
        v.capacity() * std::mem::size_of::<T>(),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_buffers_are_reused_with_the_asked_size() {
        let mut a = bytes(MIN + 10);
        a.iter_mut().for_each(|b| *b = 7);
        let ptr = a.as_ptr();
        recycle(a);
        let b = bytes(MIN + 5);
        assert_eq!(
            (b.len(), b.as_ptr()),
            (MIN + 5, ptr),
            "the kept buffer came back"
        );
        recycle(b);
        let c = byte_capacity(MIN);
        assert!(c.is_empty() && c.capacity() >= MIN);
        recycle(c);
        // small buffers are not kept; the pool stays bounded
        recycle(vec![1; 10]);
        for _ in 0..5 {
            recycle(zeroed_bytes(MIN));
        }
        assert!(POOL.lock().unwrap().len() <= POOL_BUFFERS);
    }

    #[test]
    fn buffers_are_zeroed_and_sized_at_every_size() {
        for n in [0, 1, 4095, MIN - 1, MIN, MIN + 12_345] {
            let v = zeroed_bytes(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&b| b == 0));
            let mut w: Vec<u32> = with_capacity(n);
            assert!(w.capacity() >= n && w.is_empty());
            w.extend(0..n as u32);
            assert_eq!(
                w.iter().map(|&x| x as u64).sum::<u64>(),
                (n as u64) * (n as u64).saturating_sub(1) / 2
            );
        }
    }
}
