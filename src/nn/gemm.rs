//! Host single-precision matrix product for the Cpu fast path: `C = A · B`, all row-major.
//!
//! Why not dfdx's matmul (the `gemm` crate 0.15): its AVX-512 kernels are compiled only with a
//! nightly feature, and every call goes through tensor allocation and a copy out. The products
//! here are small and repeated (per time step: batch 32 × hidden 256–512 × up to 4·512+V
//! columns), so a register-blocked kernel straight on the host buffers wins (see the README's
//! "Speed" section for the measurements).
//!
//! Kernels: AVX-512F (8 rows × 32 columns, 16 zmm accumulators, masked edges) when the CPU has
//! it, else AVX2+FMA (6 rows × 16 columns), else a plain loop. Every element of `C` is one FMA
//! chain over k in increasing order, whatever the blocking and the number of threads: results
//! are bit-identical across runs and thread counts on one machine (not across instruction sets).

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

/// Name of the kernel in use (for `seqpipe bench`).
pub(crate) fn kernel_name() -> &'static str {
    match isa() {
        Isa::Avx512 => "avx512f",
        Isa::Avx2 => "avx2+fma",
        Isa::Scalar => "scalar",
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `c[m×n] = a[m×k] · b[k×n]` (row-major, dense). Splits the columns over the rayon pool when
/// the product is large enough; the split never changes a result.
pub(super) fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    sgemm_impl(m, n, k, a, (k, 1), b, false, c, true)
}

/// `c[m×n] = a^T · b` where `a` is stored [k×m] row-major (no transposed copy is made).
pub(super) fn sgemm_at(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    sgemm_impl(m, n, k, a, (1, m), b, false, c, true)
}

/// A right-hand matrix [k×n] packed for the kernel: panels of `panel_width()` columns, each
/// stored contiguously ([k × width], the last one zero-padded), so that a product streams it
/// sequentially. For weights that enter many products (once per time step).
pub(super) struct Packed {
    pub k: usize,
    pub n: usize,
    data: Vec<f32>,
}

fn panel_width() -> usize {
    match isa() {
        Isa::Avx512 => 32,
        _ => 16,
    }
}

#[cfg(test)]
pub(super) fn pack_b(b: &[f32], k: usize, n: usize) -> Packed {
    assert_eq!(b.len(), k * n, "internal: pack size");
    let nr = panel_width();
    let panels = n.div_ceil(nr);
    let mut data = vec![0.0f32; panels * k * nr];
    for (pj, panel) in data.chunks_exact_mut(k * nr).enumerate() {
        let j0 = pj * nr;
        let wdt = nr.min(n - j0);
        for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
            row[..wdt].copy_from_slice(&b[p * n + j0..p * n + j0 + wdt]);
        }
    }
    Packed { k, n, data }
}

/// `pack_b` of the matrix stacked from `parts` (row-major, `n` columns each, `k` rows in all).
pub(super) fn pack_b_rows(parts: &[&[f32]], k: usize, n: usize) -> Packed {
    let nr = panel_width();
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
    Packed { k, n, data }
}

/// `pack_b` of the TRANSPOSE of the matrix stacked from `parts` (row-major, `rows` × `cols` in
/// all): the packed matrix is [cols × rows], with no transposed copy made first.
pub(super) fn pack_b_transposed(parts: &[&[f32]], rows: usize, cols: usize) -> Packed {
    assert!(
        parts.iter().map(|p| p.len()).sum::<usize>() == rows * cols,
        "internal: pack size"
    );
    let (k, n) = (cols, rows);
    let nr = panel_width();
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
    Packed { k, n, data }
}

/// `c[m×n] = a[m×k] · B` with B packed, on the calling thread. Same bits as `sgemm` on the
/// unpacked matrix.
pub(super) fn sgemm_packed_serial(m: usize, a: &[f32], b: &Packed, c: &mut [f32]) {
    sgemm_impl(m, b.n, b.k, a, (b.k, 1), &b.data, true, c, false)
}

/// `a_st`: (row stride, column stride) of `a`'s elements.
#[allow(clippy::too_many_arguments)]
fn sgemm_impl(
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
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    let isa = isa();
    let nr = match isa {
        Isa::Avx512 => 32,
        _ => 16,
    };
    let threads = super::team::width();
    let flops = 2 * m * n * k;
    let panels = n.div_ceil(nr);
    let parts = if parallel && threads > 1 && flops >= 1 << 20 {
        threads.min(panels)
    } else {
        1
    };
    let cp = SendPtr(c.as_mut_ptr());
    let run = |p: usize| {
        let p0 = panels * p / parts;
        let p1 = panels * (p + 1) / parts;
        let (j0, j1) = (p0 * nr, (p1 * nr).min(n));
        #[allow(clippy::redundant_locals)] // capture the Send wrapper, not its raw pointer field
        let cp = cp;
        // SAFETY: parts write disjoint column ranges [j0, j1) of c; bounds asserted above.
        unsafe { block(isa, m, n, k, a, a_st, b, packed, cp.0, j0, j1) }
    };
    super::team::run(parts, &run);
}

#[allow(clippy::too_many_arguments)]
unsafe fn block(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    (rs, cs): (usize, usize),
    b: &[f32],
    packed: bool,
    c: *mut f32,
    j0: usize,
    j1: usize,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::block512(m, n, k, a.as_ptr(), rs, cs, b.as_ptr(), packed, c, j0, j1),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::block256(m, n, k, a.as_ptr(), rs, cs, b.as_ptr(), packed, c, j0, j1),
        _ => {
            for i in 0..m {
                let crow = std::slice::from_raw_parts_mut(c.add(i * n + j0), j1 - j0);
                crow.fill(0.0);
                for p in 0..k {
                    let av = a[i * rs + p * cs];
                    for (q, cv) in crow.iter_mut().enumerate() {
                        let j = j0 + q;
                        let bv = if packed {
                            b[(j / 16) * k * 16 + p * 16 + j % 16]
                        } else {
                            b[p * n + j]
                        };
                        *cv = av.mul_add(bv, *cv);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Rows a product of `m` rows must have before an unpacked right-hand panel is first copied
    /// into a contiguous buffer: the copy is paid once and read by every micro-tile, and it
    /// avoids a strided walk (one page per `k` when a row of B spans 4 KB or more).
    const PACK_MIN_ROWS: usize = 16;
    /// Depth of one block of a packed panel (256 × 32 floats = 32 KB, within L1).
    const KC: usize = 256;

    thread_local! {
        static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// The panel of columns [j, j + w) of B (`nr` wide) as (pointer, row stride, the buffer to
    /// hand back with `give_back`): in place when B is packed, or for fewer than
    /// `PACK_MIN_ROWS` rows; else copied into this thread's buffer as [k × nr], zero-padded.
    #[allow(clippy::too_many_arguments)]
    unsafe fn panel(
        b: *const f32,
        packed: bool,
        m: usize,
        n: usize,
        k: usize,
        j: usize,
        w: usize,
        nr: usize,
    ) -> (*const f32, usize, Option<Vec<f32>>) {
        if packed {
            // j is a multiple of nr: panel j / nr starts at (j / nr)·k·nr
            return (b.add(j * k), nr, None);
        }
        if m < PACK_MIN_ROWS {
            return (b.add(j), n, None);
        }
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

    /// Rows [0, m), columns [j0, j1) of c = a·b; 32-column panels, 8-row micro-tiles.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block512(
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
        let mut j = j0;
        while j < j1 {
            let w = (j1 - j).min(32);
            let m0: u16 = if w >= 16 { 0xffff } else { (1u16 << w) - 1 };
            let m1: u16 = if w >= 32 {
                0xffff
            } else if w > 16 {
                (1u16 << (w - 16)) - 1
            } else {
                0
            };
            let (bp, ldb, guard) = panel(b, packed, m, n, k, j, w, 32);
            // k in blocks of KC rows when B was packed here: one block of the panel (32 KB) stays
            // in L1 while every micro-tile of the rows runs over it; each tile's accumulators
            // carry on from C between blocks (the FMA chain over k is unchanged).
            let kc = if guard.is_some() { KC } else { k };
            let mut p0 = 0;
            while p0 < k {
                let kb = kc.min(k - p0);
                let bpk = bp.add(p0 * ldb);
                let mut i = 0;
                while i < m {
                    let ap = a.add(i * rs + p0 * cs);
                    let cpt = c.add(i * n + j);
                    let rows = (m - i).min(8);
                    macro_rules! go {
                        ($f:literal, $acc:literal) => {
                            match rows {
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
                    match (w == 32, p0 > 0) {
                        (true, false) => go!(true, false),
                        (true, true) => go!(true, true),
                        (false, false) => go!(false, false),
                        (false, true) => go!(false, true),
                    }
                    i += rows;
                }
                p0 += kb;
            }
            give_back(guard);
            j += w;
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

    /// AVX2+FMA: 16-column panels, 6-row micro-tiles.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block256(
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
        let mut j = j0;
        while j < j1 {
            let w = (j1 - j).min(16);
            let mk = |off: usize| {
                let mut v = [0i32; 8];
                for (q, x) in v.iter_mut().enumerate() {
                    *x = if off + q < w { -1 } else { 0 };
                }
                _mm256_loadu_si256(v.as_ptr() as *const __m256i)
            };
            let (m0, m1) = (mk(0), mk(8));
            let (bp, ldb, guard) = panel(b, packed, m, n, k, j, w, 16);
            let mut i = 0;
            while i < m {
                let ap = a.add(i * rs);
                let cpt = c.add(i * n + j);
                let rows = (m - i).min(6);
                macro_rules! go {
                    ($f:literal) => {
                        match rows {
                            6 => k256::<6, $f>(k, ap, rs, cs, bp, ldb, cpt, n, m0, m1),
                            5 => k256::<5, $f>(k, ap, rs, cs, bp, ldb, cpt, n, m0, m1),
                            4 => k256::<4, $f>(k, ap, rs, cs, bp, ldb, cpt, n, m0, m1),
                            3 => k256::<3, $f>(k, ap, rs, cs, bp, ldb, cpt, n, m0, m1),
                            2 => k256::<2, $f>(k, ap, rs, cs, bp, ldb, cpt, n, m0, m1),
                            _ => k256::<1, $f>(k, ap, rs, cs, bp, ldb, cpt, n, m0, m1),
                        }
                    };
                }
                if w == 16 {
                    go!(true)
                } else {
                    go!(false)
                }
                i += rows;
            }
            give_back(guard);
            j += w;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn k256<const MR: usize, const FULL: bool>(
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            packing_matches(r, c);
        }
    }

    fn packing_matches(r: usize, c: usize) {
        let m: Vec<f32> = (0..r * c).map(|i| i as f32 * 0.5 - 7.0).collect();
        let (top, bottom) = m.split_at(20 * c);
        let t = crate::nn::math::transposed(&m, r, c);
        assert_eq!(
            pack_b_rows(&[top, bottom], r, c).data,
            pack_b(&m, r, c).data
        );
        assert_eq!(
            pack_b_transposed(&[top, bottom], r, c).data,
            pack_b(&t, c, r).data
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
            sgemm(m, n, k, &a, &b, &mut c);
            for (x, y) in c.iter().zip(&want) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{m}x{n}x{k}: {x} vs {y}"
                );
            }
        }
    }
}
