//! Shared views of time-major buffers for the threads of a training step: a leaf of `nn`, used
//! by the cells (`core`) and the products (`gemm`, `math`).

/// A time-major buffer that chunks of batch rows write from several threads: a chunk touches
/// only its rows of each time block, so the slices handed out to different chunks never overlap.
#[derive(Clone, Copy)]
pub(in crate::nn) struct Rows {
    ptr: *mut f32,
    len: usize,
}
// SAFETY: shared only under the disjointness rule of `at`.
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

impl Rows {
    pub fn new(v: &mut [f32]) -> Self {
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }
    /// `n` elements from `start`.
    ///
    /// # Safety
    /// The buffer outlives every use, and no two live slices (in any thread) overlap where one
    /// of them is written.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn at(&self, start: usize, n: usize) -> &mut [f32] {
        assert!(start + n <= self.len, "internal: row slice out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(start), n)
    }
    /// As [`at`](Self::at), or an empty slice when the buffer is empty (a cache a cell does
    /// not keep).
    ///
    /// # Safety
    /// As `at`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn at_kept(&self, start: usize, n: usize) -> &mut [f32] {
        if self.len == 0 {
            return &mut [];
        }
        self.at(start, n)
    }
}

/// `Rows` for one f64 per row (the per-row squared norms of dL/dh).
#[derive(Clone, Copy)]
pub(in crate::nn) struct RowsF64 {
    ptr: *mut f64,
    len: usize,
}
// SAFETY: as for `Rows`.
unsafe impl Send for RowsF64 {}
unsafe impl Sync for RowsF64 {}

impl RowsF64 {
    pub fn new(v: &mut [f64]) -> Self {
        Self {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }
    /// # Safety
    /// As `Rows::at`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn at(&self, i: usize) -> &mut [f64] {
        assert!(i < self.len, "internal: row out of bounds");
        std::slice::from_raw_parts_mut(self.ptr.add(i), 1)
    }
}
