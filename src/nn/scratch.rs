//! Reused host buffers for the large per-step arrays of a training step (hidden and cell states
//! of all steps, gates, the gradient blocks): a training step needs the same sizes every time,
//! and `vec![0.0; n]` cleared them on the calling thread each time (memset was 5% of LSTM 256's
//! samples on 2 threads, all of it serial). A taken buffer holds arbitrary finite values; the
//! caller writes every element it later reads (debug builds fill taken buffers with NaN, so a
//! read of an element nobody wrote shows up in the gradient checks).

use std::cell::RefCell;

/// At most this many buffers, and this many floats in all, are kept per thread.
const MAX_BUFFERS: usize = 24;
const MAX_FLOATS: usize = 64 << 20;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `n` floats whose contents are unspecified.
pub(super) fn take(n: usize) -> Vec<f32> {
    let found = POOL.with(|p| {
        let mut p = p.borrow_mut();
        // the smallest kept buffer that already holds n initialised floats, else the largest
        let best = (0..p.len())
            .filter(|&i| p[i].len() >= n)
            .min_by_key(|&i| p[i].len())
            .or_else(|| (0..p.len()).max_by_key(|&i| p[i].len()));
        best.map(|i| p.swap_remove(i))
    });
    let mut v = found.unwrap_or_default();
    if v.len() >= n {
        v.truncate(n);
    } else {
        v.resize(n, 0.0);
    }
    #[cfg(debug_assertions)]
    v.fill(f32::NAN);
    v
}

/// Hands a buffer back for reuse.
pub(super) fn give(v: Vec<f32>) {
    if v.capacity() == 0 {
        return;
    }
    POOL.with(|p| {
        let mut p = p.borrow_mut();
        let held: usize = p.iter().map(|b| b.capacity()).sum();
        if p.len() < MAX_BUFFERS && held + v.capacity() <= MAX_FLOATS {
            p.push(v);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_asked_length_and_the_pool_is_bounded() {
        let a = take(1000);
        assert_eq!(a.len(), 1000);
        let ptr = a.as_ptr();
        give(a);
        let b = take(600);
        assert_eq!(
            (b.len(), b.as_ptr()),
            (600, ptr),
            "the kept buffer is reused"
        );
        give(b);
        let c = take(5000);
        assert_eq!(c.len(), 5000);
        for _ in 0..100 {
            give(vec![1.0; 10]);
        }
        assert!(POOL.with(|p| p.borrow().len()) <= MAX_BUFFERS);
        give(vec![0.0; MAX_FLOATS + 1]);
        let held: usize = POOL.with(|p| p.borrow().iter().map(|b| b.capacity()).sum());
        assert!(held <= MAX_FLOATS);
    }
}
