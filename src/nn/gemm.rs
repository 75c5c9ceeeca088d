//! Host single-precision matrix product for the Cpu fast path: `C = A · B`, all row-major.
//!
//! Why not dfdx's matmul (the `gemm` crate 0.15): its AVX-512 kernels are compiled only with a
//! nightly feature, and every call goes through tensor allocation and a copy out. The products
//! here are small and repeated (per time step: batch 32 × hidden 256–512 × up to 4·512+V
//! columns), so a register-blocked kernel straight on the host buffers wins (see the README's
//! "Speed" section for the measurements).
//!
//! Kernels: AVX-512F (`mr` rows × 32 columns, 2·`mr` zmm accumulators, masked edges) when the
//! CPU has it, AVX2+FMA (`mr` × 16), a plain loop otherwise. How a product runs is a [`Choice`]
//! (micro-kernel and its rows, k-blocking, packing of B or not, how threads split the work),
//! picked per shape by `super::tune` on the machine that runs it. Every element of `C` is one
//! FMA chain over k in increasing order (starting from +0), whatever the choice and the number
//! of threads: results are bit-identical across choices, runs and thread counts (the test
//! `every_candidate_gives_the_same_bits` holds every candidate to it).

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Scalar,
}

fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("SEQPIPE_NO_AVX512").is_none()
                && is_x86_feature_detected!("avx512f")
            {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

/// 2: AVX-512F, 1: AVX2+FMA, 0: baseline (for the element-wise kernels, `math::simd_fn`).
#[inline]
pub(crate) fn simd_level() -> u8 {
    match isa() {
        Isa::Avx512 => 2,
        Isa::Avx2 => 1,
        Isa::Scalar => 0,
    }
}

/// The widest instruction set in use (for `seqpipe bench` and the kernel cache's key).
pub(crate) fn kernel_name() -> &'static str {
    match isa() {
        Isa::Avx512 => "avx512f",
        Isa::Avx2 => "avx2+fma",
        Isa::Scalar => "scalar",
    }
}

/// A micro-kernel family: its instruction set and its panel width (columns per tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kernel {
    /// AVX-512F, 32 columns (two zmm per row).
    Avx512,
    /// AVX2+FMA, 16 columns (two ymm per row).
    Avx2,
    /// A plain loop (16-column panels).
    Scalar,
}

impl Kernel {
    pub fn nr(self) -> usize {
        match self {
            Kernel::Avx512 => 32,
            _ => 16,
        }
    }
    /// The micro-tile heights this kernel has (accumulators: 2 × rows registers).
    pub fn mrs(self) -> &'static [u8] {
        match self {
            Kernel::Avx512 => &[4, 6, 8, 12],
            Kernel::Avx2 => &[4, 6],
            Kernel::Scalar => &[1],
        }
    }
    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        match self {
            Kernel::Avx512 => isa() == Isa::Avx512,
            Kernel::Avx2 => isa() != Isa::Scalar,
            Kernel::Scalar => true,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2 => "avx2",
            Kernel::Scalar => "scalar",
        }
    }
}

/// How the threads share a product: by panels of columns, or by blocks of rows (then each
/// thread copies the panels of B it needs itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Split {
    Cols,
    Rows,
}

/// k-blocks a choice may use (0: all of k in one block).
pub(crate) const KCS: [u32; 5] = [0, 128, 256, 512, 1024];
/// Row counts from which an unpacked B's panel is copied first (`NEVER`: walk B in place).
pub(crate) const PACK_RULES: [u32; 3] = [0, 16, NEVER];
pub(crate) const NEVER: u32 = u32::MAX;

/// How one product runs. Any valid choice gives the same bits; only the speed differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Choice {
    pub kernel: Kernel,
    /// Rows of the micro-tile (one of `kernel.mrs()`).
    pub mr: u8,
    /// Depth of a k-block over a contiguous panel of B (one of [`KCS`]; 0: all of k).
    pub kc: u32,
    /// Copy an unpacked panel of B into a contiguous buffer when the product (or the thread's
    /// part of it) has at least this many rows (one of [`PACK_RULES`]).
    pub pack_min_rows: u32,
    pub split: Split,
}

impl Choice {
    /// The built-in choice for this CPU (what ran before choices were tuned): the widest
    /// kernel, 8 (AVX-512) or 6 (AVX2) rows; `kc` 256 for products that copy B's panels,
    /// 0 for the per-step products on packed weights.
    pub fn default_for(step: bool) -> Choice {
        let (kernel, mr) = match isa() {
            Isa::Avx512 => (Kernel::Avx512, 8),
            Isa::Avx2 => (Kernel::Avx2, 6),
            Isa::Scalar => (Kernel::Scalar, 1),
        };
        Choice {
            kernel,
            mr,
            kc: if step { 0 } else { 256 },
            pack_min_rows: 16,
            split: Split::Cols,
        }
    }
    /// Whether this is one of the candidates and runs on this CPU (a choice read from a file
    /// is used only then).
    pub fn is_valid_here(&self) -> bool {
        self.kernel.available()
            && self.kernel.mrs().contains(&self.mr)
            && KCS.contains(&self.kc)
            && PACK_RULES.contains(&self.pack_min_rows)
    }
    /// `avx512 8x32 kc=256 pack>=16 split=cols`.
    pub fn describe(&self) -> String {
        let kc = match self.kc {
            0 => "all".to_string(),
            k => k.to_string(),
        };
        let pack = match self.pack_min_rows {
            NEVER => "never".to_string(),
            r => format!(">={r}"),
        };
        let split = match self.split {
            Split::Cols => "cols",
            Split::Rows => "rows",
        };
        format!(
            "{} {}x{} kc={kc} pack{}{pack} split={split}",
            self.kernel.name(),
            self.mr,
            self.kernel.nr(),
            if self.pack_min_rows == NEVER { "=" } else { "" },
        )
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `c = a · b` (`at` false) or `c = aᵀ · b` (`at` true, `a` stored [k×m]) with a given choice; `parallel`: may use the
/// thread team.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm_with(
    ch: &Choice,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    at: bool,
    b: &[f32],
    c: &mut [f32],
    parallel: bool,
) {
    let a_st = if at { (1, m) } else { (k, 1) };
    sgemm_impl(ch, m, n, k, a, a_st, b, false, c, parallel)
}

/// A right-hand matrix [k×n] packed for one choice's kernel: panels of `nr` columns, each
/// stored contiguously ([k × nr], the last one zero-padded), so that a product streams it
/// sequentially. For weights that enter many products (once per time step).
pub(super) struct Packed {
    pub k: usize,
    pub n: usize,
    /// How the products with this matrix run (its kernel's width is the panels').
    pub choice: Choice,
    data: Vec<f32>,
}

/// `b` [k×n] packed for `choice`'s kernel.
pub(super) fn pack_b(b: &[f32], k: usize, n: usize, choice: Choice) -> Packed {
    assert_eq!(b.len(), k * n, "internal: pack size");
    pack_b_rows(&[b], k, n, choice)
}

/// `pack_b` of the matrix stacked from `parts` (row-major, `n` columns each, `k` rows in all).
pub(super) fn pack_b_rows(parts: &[&[f32]], k: usize, n: usize, choice: Choice) -> Packed {
    let _p = super::profile::enter(super::profile::Phase::Packing);
    let nr = choice.kernel.nr();
    let panels = n.div_ceil(nr);
    let mut data = vec![0.0f32; panels * k * nr];
    let rows = parts.iter().flat_map(|p| p.chunks_exact(n));
    for (p, src) in rows.enumerate() {
        for pj in 0..panels {
            let j0 = pj * nr;
            let wdt = nr.min(n - j0);
            let dst = pj * k * nr + p * nr;
            data[dst..dst + wdt].copy_from_slice(&src[j0..j0 + wdt]);
        }
    }
    assert!(
        parts.iter().map(|p| p.len()).sum::<usize>() == k * n,
        "internal: pack size"
    );
    Packed { k, n, choice, data }
}

/// `pack_b` of the TRANSPOSE of the matrix stacked from `parts` (row-major, `rows` × `cols` in
/// all): the packed matrix is [cols × rows], with no transposed copy made first.
pub(super) fn pack_b_transposed(
    parts: &[&[f32]],
    rows: usize,
    cols: usize,
    choice: Choice,
) -> Packed {
    let _p = super::profile::enter(super::profile::Phase::Packing);
    assert!(
        parts.iter().map(|p| p.len()).sum::<usize>() == rows * cols,
        "internal: pack size"
    );
    let (k, n) = (cols, rows);
    let nr = choice.kernel.nr();
    let panels = n.div_ceil(nr);
    let mut data = vec![0.0f32; panels * k * nr];
    let rows_of: Vec<&[f32]> = parts.iter().flat_map(|p| p.chunks_exact(cols)).collect();
    // Row r of the source is column r of the packed matrix: panel r / nr, lane r % nr. The
    // panels are split over the thread team (each writes its own panels).
    let out = super::rows::Rows::new(&mut data);
    let split = if rows * cols >= 1 << 16 {
        super::team::width().min(panels)
    } else {
        1
    };
    super::team::run(split, &|q| {
        let _p = super::profile::enter(super::profile::Phase::Packing);
        let (p0, p1) = (panels * q / split, panels * (q + 1) / split);
        // SAFETY: part q writes only panels [p0, p1).
        let dst = unsafe { out.at(p0 * k * nr, (p1 - p0) * k * nr) };
        let r0 = p0 * nr;
        let r1 = (p1 * nr).min(n);
        for (r, row) in rows_of.iter().enumerate().take(r1).skip(r0) {
            let base = (r / nr - p0) * k * nr + r % nr;
            for (p, &v) in row.iter().enumerate() {
                dst[base + p * nr] = v;
            }
        }
    });
    Packed { k, n, choice, data }
}

/// `c[m×n] = a[m×k] · B` with B packed, on the calling thread, with the packed matrix's
/// choice. Same bits as `sgemm` on the unpacked matrix.
pub(super) fn sgemm_packed_serial(m: usize, a: &[f32], b: &Packed, c: &mut [f32]) {
    sgemm_impl(&b.choice, m, b.n, b.k, a, (b.k, 1), &b.data, true, c, false)
}

/// `a_st`: (row stride, column stride) of `a`'s elements.
#[allow(clippy::too_many_arguments)]
fn sgemm_impl(
    ch: &Choice,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_st: (usize, usize),
    b: &[f32],
    packed: bool,
    c: &mut [f32],
    parallel: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    assert!(
        ch.is_valid_here(),
        "internal: kernel choice {ch:?} not valid here"
    );
    if m == 0 || n == 0 {
        return;
    }
    let _p = super::profile::enter(super::profile::Phase::Products);
    super::profile::add_flops(2 * m * n * k);
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let nr = ch.kernel.nr();
    let mr = ch.mr as usize;
    let threads = super::team::width();
    let flops = 2 * m * n * k;
    let panels = n.div_ceil(nr);
    let tiles = m.div_ceil(mr);
    let units = match ch.split {
        Split::Cols => panels,
        Split::Rows => tiles,
    };
    let parts = if parallel && threads > 1 && flops >= 1 << 20 {
        threads.min(units)
    } else {
        1
    };
    let cp = SendPtr(c.as_mut_ptr());
    let (rs, cs) = a_st;
    let run = |p: usize| {
        let _p = super::profile::enter(super::profile::Phase::Products);
        let u0 = units * p / parts;
        let u1 = units * (p + 1) / parts;
        let ((i0, i1), (j0, j1)) = match ch.split {
            Split::Cols => ((0, m), (u0 * nr, (u1 * nr).min(n))),
            Split::Rows => (((u0 * mr).min(m), (u1 * mr).min(m)), (0, n)),
        };
        #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw pointer field
        let cp = cp;
        // SAFETY: parts write disjoint blocks [i0, i1) × [j0, j1) of c; bounds asserted above
        // (row i0 of a starts at i0·rs; a packed B is never split by rows here: serial).
        unsafe {
            block(
                ch,
                i1 - i0,
                n,
                k,
                a.as_ptr().add(i0 * rs),
                (rs, cs),
                b.as_ptr(),
                packed,
                cp.0.add(i0 * n),
                j0,
                j1,
            )
        }
    };
    super::team::run(parts, &run);
}

/// Rows [0, m), columns [j0, j1) of c = a·b with choice `ch` (c's row stride is `n`).
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    ch: &Choice,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    (rs, cs): (usize, usize),
    b: *const f32,
    packed: bool,
    c: *mut f32,
    j0: usize,
    j1: usize,
) {
    if m == 0 {
        return;
    }
    match ch.kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => x86::block512(ch, m, n, k, a, rs, cs, b, packed, c, j0, j1),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => x86::block256(ch, m, n, k, a, rs, cs, b, packed, c, j0, j1),
        _ => {
            let nr = ch.kernel.nr();
            for i in 0..m {
                let crow = std::slice::from_raw_parts_mut(c.add(i * n + j0), j1 - j0);
                crow.fill(0.0);
                for p in 0..k {
                    let av = *a.add(i * rs + p * cs);
                    for (q, cv) in crow.iter_mut().enumerate() {
                        let j = j0 + q;
                        let bv = if packed {
                            *b.add((j / nr) * k * nr + p * nr + j % nr)
                        } else {
                            *b.add(p * n + j)
                        };
                        *cv = av.mul_add(bv, *cv);
                    }
                }
            }
        }
    }
}

/// One core's peak FP32 rate in GFLOP/s, measured: 12 independent FMA chains of the widest
/// vector this CPU has, in runs of about half a millisecond for about `ms` milliseconds; the
/// best run counts (a short run is rarely interrupted on a busy machine).
pub(crate) fn measure_peak_gflops(ms: u64) -> f64 {
    let mut iters = 1u64 << 10;
    while iters < 1 << 30 {
        let t = std::time::Instant::now();
        fma_chains(iters);
        if t.elapsed().as_secs_f64() >= 5e-4 {
            break;
        }
        iters *= 2;
    }
    let start = std::time::Instant::now();
    let mut best = 0.0f64;
    let mut runs = 0;
    while runs < 3 || start.elapsed().as_millis() < ms as u128 {
        let t = std::time::Instant::now();
        let flops = fma_chains(iters);
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
        runs += 1;
    }
    best
}

/// Runs 12 chains of `iters` FMAs each; returns the FLOPs done.
fn fma_chains(iters: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    match isa() {
        // SAFETY: the ISA was detected.
        Isa::Avx512 => return unsafe { x86::chains512(iters) } * 2.0 * 16.0 * 12.0,
        Isa::Avx2 => return unsafe { x86::chains256(iters) } * 2.0 * 8.0 * 12.0,
        Isa::Scalar => {}
    }
    let mut acc = [1.0f32; 12];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    iters as f64 * 2.0 * 12.0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Choice, NEVER};
    use std::arch::x86_64::*;

    thread_local! {
        static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The panel of columns [j, j + w) of B (`nr` wide) as (pointer, row stride, the buffer to
    /// hand back with `give_back`): in place when B is packed, or for fewer rows than the
    /// choice's `pack_min_rows`; else copied into this thread's buffer as [k × nr],
    /// zero-padded (the copy is paid once and read by every micro-tile, and it avoids a
    /// strided walk: one page per `k` when a row of B spans 4 KB or more).
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel(
        ch: &Choice,
        b: *const f32,
        packed: bool,
        m: usize,
        n: usize,
        k: usize,
        j: usize,
        w: usize,
    ) -> (*const f32, usize, Option<Vec<f32>>) {
        let nr = ch.kernel.nr();
        if packed {
            // j is a multiple of nr: panel j / nr starts at (j / nr)·k·nr
            return (b.add(j * k), nr, None);
        }
        if ch.pack_min_rows == NEVER || m < ch.pack_min_rows as usize {
            return (b.add(j), n, None);
        }
        let _p = super::super::profile::enter(super::super::profile::Phase::Packing);
        let mut buf = PANEL.with(|p| std::mem::take(&mut *p.borrow_mut()));
        buf.clear();
        buf.resize(k * nr, 0.0);
        for p in 0..k {
            std::ptr::copy_nonoverlapping(b.add(p * n + j), buf.as_mut_ptr().add(p * nr), w);
        }
        // The pointer stays valid: moving the Vec does not move its heap buffer.
        (buf.as_ptr(), nr, Some(buf))
    }

    /// Returns a buffer from `panel` to this thread for the next product.
    fn give_back(buf: Option<Vec<f32>>) {
        if let Some(buf) = buf {
            PANEL.with(|p| *p.borrow_mut() = buf);
        }
    }

    /// The k-block depth for a panel: the choice's `kc` when the panel is contiguous (packed
    /// or copied), else all of k.
    fn kc_for(ch: &Choice, contiguous: bool, k: usize) -> usize {
        if contiguous && ch.kc > 0 {
            ch.kc as usize
        } else {
            k
        }
    }

    /// Rows [0, m), columns [j0, j1) of c = a·b; 32-column panels, `ch.mr`-row micro-tiles.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block512(
        ch: &Choice,
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        packed: bool,
        c: *mut f32,
        j0: usize,
        j1: usize,
    ) {
        let mr = ch.mr as usize;
        if let Some(mc) = row_block(ch, packed, m, k) {
            return block512_rows(ch, m, n, k, a, rs, cs, b, c, j0, j1, mc);
        }
        let mut j = j0;
        while j < j1 {
            let w = (j1 - j).min(32);
            let (m0, m1) = masks512(w);
            let (bp, ldb, guard) = panel(ch, b, packed, m, n, k, j, w);
            // k in blocks of kc rows over a contiguous panel: one block of the panel stays in
            // L1 while every micro-tile of the rows runs over it; each tile's accumulators
            // carry on from C between blocks (the FMA chain over k is unchanged).
            let kc = kc_for(ch, packed || guard.is_some(), k);
            let mut p0 = 0;
            while p0 < k {
                let kb = kc.min(k - p0);
                let bpk = bp.add(p0 * ldb);
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(mr);
                    let (ap, cpt) = (a.add(i * rs + p0 * cs), c.add(i * n + j));
                    tile512(
                        rows,
                        w == 32,
                        p0 > 0,
                        kb,
                        ap,
                        rs,
                        cs,
                        bpk,
                        ldb,
                        cpt,
                        n,
                        m0,
                        m1,
                    );
                    i += rows;
                }
                p0 += kb;
            }
            give_back(guard);
            j += w;
        }
    }

    /// Rows per block for [`block512_rows`], or `None` for the panel-by-panel walk: a product
    /// whose B is copied (not packed), with more rows than fit one block. A block of A
    /// (`mc` rows × one k-block) is kept to a quarter of the L2, so that it stays there while
    /// every panel of B runs over it.
    fn row_block(ch: &Choice, packed: bool, m: usize, k: usize) -> Option<usize> {
        if packed || ch.pack_min_rows == NEVER || m < ch.pack_min_rows as usize {
            return None;
        }
        let kc = kc_for(ch, true, k);
        let l2 = crate::nn::caches::Caches::current().caches.l2 as usize;
        let mr = ch.mr as usize;
        let mc = (l2 / 4 / (kc * 4)) / mr * mr;
        (mc >= mr && m > mc).then_some(mc)
    }

    /// Rows [0, m), columns [j0, j1) of c = a·b for a large unpacked product, blocked for the
    /// caches (GotoBLAS's order): per k-block, the block of every panel of B is copied once
    /// ([kb × 32] each); per block of `mc` rows of A, every panel runs over those rows, so
    /// the rows of A are read from memory once per k-block instead of once per panel. Each
    /// element of C is still one FMA chain over k in order (the k-blocks in order, the
    /// accumulators carried through C): the same bits as [`block512`]'s walk.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block512_rows(
        ch: &Choice,
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        c: *mut f32,
        j0: usize,
        j1: usize,
        mc: usize,
    ) {
        let mr = ch.mr as usize;
        let kc = kc_for(ch, true, k);
        let panels = (j1 - j0).div_ceil(32);
        let mut buf = PANEL.with(|p| std::mem::take(&mut *p.borrow_mut()));
        let mut p0 = 0;
        while p0 < k {
            let kb = kc.min(k - p0);
            pack_kblock(b, n, p0, kb, j0, j1, 32, &mut buf);
            let mut i0 = 0;
            while i0 < m {
                let i1 = (i0 + mc).min(m);
                for q in 0..panels {
                    let j = j0 + q * 32;
                    let w = (j1 - j).min(32);
                    let (m0, m1) = masks512(w);
                    let bpk = buf.as_ptr().add(q * kb * 32);
                    let mut i = i0;
                    while i < i1 {
                        let rows = (i1 - i).min(mr);
                        tile512(
                            rows,
                            w == 32,
                            p0 > 0,
                            kb,
                            a.add(i * rs + p0 * cs),
                            rs,
                            cs,
                            bpk,
                            32,
                            c.add(i * n + j),
                            n,
                            m0,
                            m1,
                        );
                        i += rows;
                    }
                }
                i0 = i1;
            }
            p0 += kb;
        }
        give_back(Some(buf));
    }

    /// One micro-tile of `rows` (≤ 12) rows: [`k512`] with its constants chosen at run time.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile512(
        rows: usize,
        full: bool,
        acc: bool,
        kb: usize,
        ap: *const f32,
        rs: usize,
        cs: usize,
        bpk: *const f32,
        ldb: usize,
        cpt: *mut f32,
        n: usize,
        m0: u16,
        m1: u16,
    ) {
        macro_rules! go {
            ($f:literal, $acc:literal) => {
                match rows {
                    12 => k512::<12, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    11 => k512::<11, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    10 => k512::<10, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    9 => k512::<9, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    8 => k512::<8, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    7 => k512::<7, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    6 => k512::<6, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    5 => k512::<5, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    4 => k512::<4, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    3 => k512::<3, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    2 => k512::<2, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    _ => k512::<1, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                }
            };
        }
        match (full, acc) {
            (true, false) => go!(true, false),
            (true, true) => go!(true, true),
            (false, false) => go!(false, false),
            (false, true) => go!(false, true),
        }
    }

    /// The lane masks of a panel `w` columns wide (≤ 32): its two 16-lane halves.
    fn masks512(w: usize) -> (u16, u16) {
        let m0: u16 = if w >= 16 { 0xffff } else { (1u16 << w) - 1 };
        let m1: u16 = if w >= 32 {
            0xffff
        } else if w > 16 {
            (1u16 << (w - 16)) - 1
        } else {
            0
        };
        (m0, m1)
    }

    /// Rows [p0, p0 + kb) of B's columns [j0, j1), as `nr`-column panels ([kb × nr] each,
    /// zero-padded) in `buf`: one k-block for the row-blocked walks.
    #[allow(clippy::too_many_arguments)]
    unsafe fn pack_kblock(
        b: *const f32,
        n: usize,
        p0: usize,
        kb: usize,
        j0: usize,
        j1: usize,
        nr: usize,
        buf: &mut Vec<f32>,
    ) {
        let _p = super::super::profile::enter(super::super::profile::Phase::Packing);
        let panels = (j1 - j0).div_ceil(nr);
        buf.clear();
        buf.resize(panels * kb * nr, 0.0);
        for q in 0..panels {
            let j = j0 + q * nr;
            let w = (j1 - j).min(nr);
            for p in 0..kb {
                std::ptr::copy_nonoverlapping(
                    b.add((p0 + p) * n + j),
                    buf.as_mut_ptr().add((q * kb + p) * nr),
                    w,
                );
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn k512<const MR: usize, const FULL: bool, const ACC: bool>(
        k: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        m0: u16,
        m1: u16,
    ) {
        let mut c0 = [_mm512_setzero_ps(); MR];
        let mut c1 = [_mm512_setzero_ps(); MR];
        if ACC {
            for r in 0..MR {
                let cr = c.add(r * ldc);
                if FULL {
                    c0[r] = _mm512_loadu_ps(cr);
                    c1[r] = _mm512_loadu_ps(cr.add(16));
                } else {
                    c0[r] = _mm512_maskz_loadu_ps(m0, cr);
                    c1[r] = _mm512_maskz_loadu_ps(m1, cr.add(16));
                }
            }
        }
        let mut bp = b;
        for p in 0..k {
            let (b0, b1) = if FULL {
                (_mm512_loadu_ps(bp), _mm512_loadu_ps(bp.add(16)))
            } else {
                (
                    _mm512_maskz_loadu_ps(m0, bp),
                    _mm512_maskz_loadu_ps(m1, bp.add(16)),
                )
            };
            for r in 0..MR {
                let av = _mm512_set1_ps(*a.add(r * rs + p * cs));
                c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
                c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
            }
            bp = bp.add(ldb);
        }
        for r in 0..MR {
            let cr = c.add(r * ldc);
            if FULL {
                _mm512_storeu_ps(cr, c0[r]);
                _mm512_storeu_ps(cr.add(16), c1[r]);
            } else {
                _mm512_mask_storeu_ps(cr, m0, c0[r]);
                _mm512_mask_storeu_ps(cr.add(16), m1, c1[r]);
            }
        }
    }

    /// AVX2+FMA: 16-column panels, `ch.mr`-row micro-tiles.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block256(
        ch: &Choice,
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        packed: bool,
        c: *mut f32,
        j0: usize,
        j1: usize,
    ) {
        let mr = ch.mr as usize;
        if let Some(mc) = row_block(ch, packed, m, k) {
            return block256_rows(ch, m, n, k, a, rs, cs, b, c, j0, j1, mc);
        }
        let mut j = j0;
        while j < j1 {
            let w = (j1 - j).min(16);
            let (m0, m1) = masks256(w);
            let (bp, ldb, guard) = panel(ch, b, packed, m, n, k, j, w);
            let kc = kc_for(ch, packed || guard.is_some(), k);
            let mut p0 = 0;
            while p0 < k {
                let kb = kc.min(k - p0);
                let bpk = bp.add(p0 * ldb);
                let mut i = 0;
                while i < m {
                    let rows = (m - i).min(mr);
                    let (ap, cpt) = (a.add(i * rs + p0 * cs), c.add(i * n + j));
                    tile256(
                        rows,
                        w == 16,
                        p0 > 0,
                        kb,
                        ap,
                        rs,
                        cs,
                        bpk,
                        ldb,
                        cpt,
                        n,
                        m0,
                        m1,
                    );
                    i += rows;
                }
                p0 += kb;
            }
            give_back(guard);
            j += w;
        }
    }

    /// [`block512_rows`] for AVX2+FMA (16-column panels).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block256_rows(
        ch: &Choice,
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        c: *mut f32,
        j0: usize,
        j1: usize,
        mc: usize,
    ) {
        let mr = ch.mr as usize;
        let kc = kc_for(ch, true, k);
        let panels = (j1 - j0).div_ceil(16);
        let mut buf = PANEL.with(|p| std::mem::take(&mut *p.borrow_mut()));
        let mut p0 = 0;
        while p0 < k {
            let kb = kc.min(k - p0);
            pack_kblock(b, n, p0, kb, j0, j1, 16, &mut buf);
            let mut i0 = 0;
            while i0 < m {
                let i1 = (i0 + mc).min(m);
                for q in 0..panels {
                    let j = j0 + q * 16;
                    let w = (j1 - j).min(16);
                    let (m0, m1) = masks256(w);
                    let bpk = buf.as_ptr().add(q * kb * 16);
                    let mut i = i0;
                    while i < i1 {
                        let rows = (i1 - i).min(mr);
                        let (ap, cpt) = (a.add(i * rs + p0 * cs), c.add(i * n + j));
                        tile256(
                            rows,
                            w == 16,
                            p0 > 0,
                            kb,
                            ap,
                            rs,
                            cs,
                            bpk,
                            16,
                            cpt,
                            n,
                            m0,
                            m1,
                        );
                        i += rows;
                    }
                }
                i0 = i1;
            }
            p0 += kb;
        }
        give_back(Some(buf));
    }

    /// The lane masks of a panel `w` columns wide (≤ 16): its two 8-lane halves.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn masks256(w: usize) -> (__m256i, __m256i) {
        let mk = |off: usize| {
            let mut v = [0i32; 8];
            for (q, x) in v.iter_mut().enumerate() {
                *x = if off + q < w { -1 } else { 0 };
            }
            _mm256_loadu_si256(v.as_ptr() as *const __m256i)
        };
        (mk(0), mk(8))
    }

    /// One micro-tile of `rows` (≤ 6) rows: [`k256`] with its constants chosen at run time.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile256(
        rows: usize,
        full: bool,
        acc: bool,
        kb: usize,
        ap: *const f32,
        rs: usize,
        cs: usize,
        bpk: *const f32,
        ldb: usize,
        cpt: *mut f32,
        n: usize,
        m0: __m256i,
        m1: __m256i,
    ) {
        macro_rules! go {
            ($f:literal, $acc:literal) => {
                match rows {
                    6 => k256::<6, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    5 => k256::<5, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    4 => k256::<4, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    3 => k256::<3, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    2 => k256::<2, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                    _ => k256::<1, $f, $acc>(kb, ap, rs, cs, bpk, ldb, cpt, n, m0, m1),
                }
            };
        }
        match (full, acc) {
            (true, false) => go!(true, false),
            (true, true) => go!(true, true),
            (false, false) => go!(false, false),
            (false, true) => go!(false, true),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn k256<const MR: usize, const FULL: bool, const ACC: bool>(
        k: usize,
        a: *const f32,
        rs: usize,
        cs: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        m0: __m256i,
        m1: __m256i,
    ) {
        let mut c0 = [_mm256_setzero_ps(); MR];
        let mut c1 = [_mm256_setzero_ps(); MR];
        if ACC {
            for r in 0..MR {
                let cr = c.add(r * ldc);
                if FULL {
                    c0[r] = _mm256_loadu_ps(cr);
                    c1[r] = _mm256_loadu_ps(cr.add(8));
                } else {
                    c0[r] = _mm256_maskload_ps(cr, m0);
                    c1[r] = _mm256_maskload_ps(cr.add(8), m1);
                }
            }
        }
        let mut bp = b;
        for p in 0..k {
            let (b0, b1) = if FULL {
                (_mm256_loadu_ps(bp), _mm256_loadu_ps(bp.add(8)))
            } else {
                (
                    _mm256_maskload_ps(bp, m0),
                    _mm256_maskload_ps(bp.add(8), m1),
                )
            };
            for r in 0..MR {
                let av = _mm256_set1_ps(*a.add(r * rs + p * cs));
                c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
                c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
            }
            bp = bp.add(ldb);
        }
        for r in 0..MR {
            let cr = c.add(r * ldc);
            if FULL {
                _mm256_storeu_ps(cr, c0[r]);
                _mm256_storeu_ps(cr.add(8), c1[r]);
            } else {
                _mm256_maskstore_ps(cr, m0, c0[r]);
                _mm256_maskstore_ps(cr.add(8), m1, c1[r]);
            }
        }
    }

    /// 12 independent chains of `iters` 16-lane FMAs; returns `iters` (as f64).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn chains512(iters: u64) -> f64 {
        let mut acc = [_mm512_set1_ps(1.0); 12];
        let (x, y) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, y);
            }
        }
        std::hint::black_box(acc);
        iters as f64
    }

    /// 12 independent chains of `iters` 8-lane FMAs; returns `iters` (as f64).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn chains256(iters: u64) -> f64 {
        let mut acc = [_mm256_set1_ps(1.0); 12];
        let (x, y) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, y);
            }
        }
        std::hint::black_box(acc);
        iters as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    c[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        c.into_iter().map(|x| x as f32).collect()
    }

    #[test]
    fn packing_from_parts_and_transposed_matches_pack_b() {
        for (r, c) in [(45, 37), (1_052, 256)] {
            for kernel in [Kernel::Avx512, Kernel::Avx2, Kernel::Scalar] {
                let ch = Choice {
                    kernel,
                    mr: kernel.mrs()[0],
                    ..Choice::default_for(true)
                };
                packing_matches(r, c, ch);
            }
        }
    }

    fn packing_matches(r: usize, c: usize, ch: Choice) {
        let m: Vec<f32> = (0..r * c).map(|i| i as f32 * 0.5 - 7.0).collect();
        let (top, bottom) = m.split_at(20 * c);
        let t = crate::nn::math::transposed(&m, r, c);
        assert_eq!(
            pack_b_rows(&[top, bottom], r, c, ch).data,
            pack_b(&m, r, c, ch).data
        );
        assert_eq!(
            pack_b_transposed(&[top, bottom], r, c, ch).data,
            pack_b(&t, c, r, ch).data
        );
    }

    #[test]
    fn sgemm_matches_naive_on_odd_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (8, 32, 16),
            (9, 33, 17),
            (32, 1052, 64),
            (13, 47, 3),
            (32, 31, 100),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                .collect();
            let want = naive(m, n, k, &a, &b);
            let mut c = vec![f32::NAN; m * n];
            crate::nn::tune::sgemm(m, n, k, &a, &b, &mut c);
            for (x, y) in c.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{m}x{n}x{k}: {x} vs {y}"
                );
            }
        }
    }

    /// Every candidate this CPU can run (every kernel, tile height, k-block, packing rule and
    /// thread split), on random shapes, plain, transposed-A and packed: the same bits as the
    /// built-in choice, and close to an f64 product.
    #[test]
    fn every_candidate_gives_the_same_bits() {
        let cands = crate::nn::tune::all_candidates();
        assert!(cands.len() >= 30, "only {} candidates", cands.len());
        assert!(cands.contains(&Choice::default_for(true)));
        assert!(cands.contains(&Choice::default_for(false)));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(22);
        // random shapes, plus one large enough to be split over the team (≥ 2^20 FLOPs)
        let mut shapes: Vec<(usize, usize, usize)> = (0..4)
            .map(|_| {
                (
                    rng.gen_range(1..30),
                    rng.gen_range(1..80),
                    rng.gen_range(1..300),
                )
            })
            .collect();
        shapes.push((37, 75, 400));
        // Rows enough for the row-blocked walk of unpacked products (`row_block`) on L2 sizes
        // up to 2 MiB, with a ragged last block and a ragged last panel.
        shapes.push((1300, 45, 300));
        for (m, n, k) in shapes {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            // a stored [k×m] for the transposed product
            let at = crate::nn::math::transposed(&a, m, k);
            let reference = |at_: bool, ch: &Choice| {
                let mut c = vec![f32::NAN; m * n];
                let src = if at_ { &at } else { &a };
                sgemm_with(ch, m, n, k, src, at_, &b, &mut c, true);
                c
            };
            let want = reference(false, &Choice::default_for(false));
            let close = naive(m, n, k, &a, &b);
            for (x, y) in want.iter().zip(&close) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{m}x{n}x{k}");
            }
            for ch in &cands {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&reference(false, ch)),
                    bits(&want),
                    "{ch:?} {m}x{n}x{k}"
                );
                assert_eq!(
                    bits(&reference(true, ch)),
                    bits(&want),
                    "{ch:?} Aᵀ {m}x{n}x{k}"
                );
                let pk = pack_b(&b, k, n, *ch);
                let mut c = vec![f32::NAN; m * n];
                sgemm_packed_serial(m, &a, &pk, &mut c);
                assert_eq!(bits(&c), bits(&want), "{ch:?} packed {m}x{n}x{k}");
            }
        }
    }

    /// Side by side with the matrixmultiply crate (0.3, run-time ISA detection) on the shapes
    /// of a training step, one thread, the best of many runs each, alternating. A timing, not
    /// a check: `cargo test --release --lib -- --ignored side_by_side --nocapture`.
    #[test]
    #[ignore]
    fn side_by_side_with_matrixmultiply() {
        let peak = measure_peak_gflops(300);
        println!("peak {peak:.1} GFLOP/s; m x n x k, seqpipe (built-in choice) vs matrixmultiply");
        for &(m, n, k, at) in &[
            (32, 1052, 256, false),
            (1120, 1024, 256, false),
            (256, 1052, 1152, true),
            (512, 2076, 1152, true),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
            let mut c1 = vec![0.0f32; m * n];
            let mut c2 = vec![0.0f32; m * n];
            let ch = Choice::default_for(false);
            // a as stored: [m×k] (row stride k) or, for Aᵀ, [k×m] (column stride m)
            let (rsa, csa) = if at { (1, m as isize) } else { (k as isize, 1) };
            let (mut t1, mut t2) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..30 {
                let t = std::time::Instant::now();
                sgemm_with(&ch, m, n, k, &a, at, &b, &mut c1, false);
                t1 = t1.min(t.elapsed().as_secs_f64());
                let t = std::time::Instant::now();
                // SAFETY: the strides describe the buffers above.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c2.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                t2 = t2.min(t.elapsed().as_secs_f64());
            }
            let g = |t: f64| 2.0 * (m * n * k) as f64 / t / 1e9;
            println!(
                "{}{m} x {n} x {k}: {:.1} GFLOP/s ({:.0}%) vs {:.1} GFLOP/s ({:.0}%)",
                if at { "Aᵀ " } else { "" },
                g(t1),
                100.0 * g(t1) / peak,
                g(t2),
                100.0 * g(t2) / peak
            );
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x - y).abs() <= 1e-3 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }

    #[test]
    fn the_peak_is_measured_and_positive() {
        let p = measure_peak_gflops(3);
        assert!(p.is_finite() && p > 0.1, "peak {p}");
    }
}
