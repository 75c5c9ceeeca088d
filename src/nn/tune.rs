//! Kernel choices made on the machine that runs them (in the spirit of FFTW's wisdom): on the
//! first product of a shape, the candidates of `gemm::Choice` are timed on that shape and the
//! fastest is kept, in memory and in a small cache file keyed by CPU model, instruction set
//! and seqpipe version; later runs read it. A choice never changes a result (every candidate
//! gives the same bits, see `gemm`'s `every_candidate_gives_the_same_bits`), only the speed.
//!
//! The search is one parameter at a time from the built-in choice (ATLAS-style line search):
//! micro-kernel and its rows, then the k-block, then packing, then the thread split, keeping a
//! change only when it is at least 3% faster (timings on a shared machine are noisy, and the
//! built-in choice is the known-good one). About 15 candidates per shape, timed in 3
//! interleaved rounds of about 1 ms each, so that a burst of load from elsewhere slows them all
//! alike.
//!
//! Tuning is off until the program names a cache folder ([`set_cache_dir`]; the `seqpipe`
//! binary does, see [`default_cache_dir`]); the library's tests and other embedders get the
//! built-in choice. The cache file is untrusted input: read without following a link, at most
//! `MAX_FILE` bytes and `MAX_ENTRIES` entries, every entry checked to be a candidate that runs
//! here; a file that does not parse or belongs to another CPU, ISA or version is ignored.

use super::caches::Caches;
use super::gemm::{self, Choice, Kernel, Split, KCS, PACK_RULES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

const FORMAT: u32 = 2;
const MAX_FILE: u64 = 256 << 10;
const MAX_ENTRIES: usize = 512;
/// Products below this many FLOPs are not tuned (the choice hardly matters there).
const MIN_TUNE_FLOPS: usize = 1 << 22;
/// A candidate must beat the best so far by this factor to replace it.
const MARGIN: f64 = 0.97;
/// Interleaved timing rounds per search step (see `tune`).
const ROUNDS: usize = 3;
/// Largest dimension an entry of the file may name.
const MAX_DIM: usize = 1 << 24;

/// `c[m×n] = a[m×k] · b[k×n]` (row-major, dense), with the choice tuned for the shape. Splits
/// the work over the thread team when the product is large enough; that never changes a result.
pub(super) fn sgemm(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let ch = choice(Shape::big(m, n, k, false));
    gemm::sgemm_with(&ch, m, n, k, a, false, b, c, true)
}

/// `c[m×n] = a^T · b` where `a` is stored [k×m] row-major (no transposed copy is made).
pub(super) fn sgemm_at(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    let ch = choice(Shape::big(m, n, k, true));
    gemm::sgemm_with(&ch, m, n, k, a, true, b, c, true)
}

/// A product's shape: `step` products are the per-time-step ones on packed weights (run on one
/// thread, `m` rows per thread); `big` ones are the all-steps products (`at`: A transposed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Shape {
    pub step: bool,
    pub at: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl Shape {
    pub fn big(m: usize, n: usize, k: usize, at: bool) -> Shape {
        Shape {
            step: false,
            at,
            m,
            n,
            k,
        }
    }
    pub fn step(m: usize, n: usize, k: usize) -> Shape {
        Shape {
            step: true,
            at: false,
            m,
            n,
            k,
        }
    }
    fn flops(&self) -> usize {
        2 * self.m * self.n * self.k
    }
    fn is_sane(&self) -> bool {
        let ok = |d: usize| (1..=MAX_DIM).contains(&d);
        ok(self.m) && ok(self.n) && ok(self.k) && !(self.step && self.at)
    }
    /// `step 16x1052x256` (m × n × k), `big Aᵀ 256x1052x1152`.
    pub fn describe(&self) -> String {
        let kind = match (self.step, self.at) {
            (true, _) => "step",
            (false, true) => "big Aᵀ",
            (false, false) => "big",
        };
        format!("{kind} {}x{}x{}", self.m, self.n, self.k)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Timed in this process.
    Tuned,
    /// Read from the cache file.
    Cache,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    shape: Shape,
    choice: Choice,
    /// Measured speed of the choice when it was tuned.
    gflops: f64,
}

/// The cache file.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    cpu: String,
    isa: String,
    seqpipe: String,
    /// The caches the candidates were sized for (this CPU's, or `SEQPIPE_ASSUME_CACHES`).
    caches: Caches,
    entries: Vec<Entry>,
}

#[derive(Default)]
struct State {
    dir: Option<PathBuf>,
    loaded: bool,
    map: BTreeMap<Shape, (Choice, f64, Source)>,
    /// Why the cache file could not be read or written (shown in the report), if so.
    problem: Option<String>,
}

static STATE: Mutex<State> = Mutex::new(State {
    dir: None,
    loaded: false,
    map: BTreeMap::new(),
    problem: None,
});

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turn tuning on with the cache file in `dir` (created on the first write), or off (`None`:
/// the built-in choice everywhere). Choices already made stay.
pub fn set_cache_dir(dir: Option<PathBuf>) {
    let mut s = state();
    s.dir = dir;
    s.loaded = false;
}

/// The cache folder of the `seqpipe` binary: `$SEQPIPE_KERNEL_CACHE` (`off`: no tuning), else
/// `$XDG_CACHE_HOME/seqpipe`, else `$HOME/.cache/seqpipe`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(v) = env("SEQPIPE_KERNEL_CACHE") {
        return (v != "off").then(|| PathBuf::from(v));
    }
    if let Some(x) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(x).join("seqpipe"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".cache").join("seqpipe"))
}

/// The CPU's model name, family and model from /proc/cpuinfo (`unknown` elsewhere).
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    match (field("model name"), field("cpu family"), field("model")) {
        (Some(n), Some(f), Some(m)) => format!("{n} (family {f}, model {m})"),
        (Some(n), _, _) => n,
        _ => "unknown".to_string(),
    }
}

fn key() -> (String, String, String) {
    (
        cpu_model(),
        gemm::kernel_name().to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )
}

/// The cache file in `dir` for this CPU, ISA and version (a name seqpipe makes itself: a hash
/// of the key, so machines of a cluster that share a home folder keep their own files).
fn file_in(dir: &Path) -> PathBuf {
    let (cpu, isa, ver) = key();
    let c = Caches::current().caches;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{cpu}|{isa}|{ver}|{}|{}", c.l1d, c.l2).bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    dir.join(format!("kernels-{h:016x}.json"))
}

/// Parse and check a cache file: the entries that are valid here, or why none are.
fn parse_file(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let f: File = serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))?;
    let (cpu, isa, ver) = key();
    let c = Caches::current().caches;
    if f.format != FORMAT || f.cpu != cpu || f.isa != isa || f.seqpipe != ver || f.caches != c {
        return Err(format!(
            "written for format {} / {} / {} / seqpipe {} / {}, not format {FORMAT} / {cpu} / {isa} / seqpipe {ver} / {c}",
            f.format, f.cpu, f.isa, f.seqpipe, f.caches
        ));
    }
    if f.entries.len() > MAX_ENTRIES {
        return Err(format!(
            "{} entries, more than {MAX_ENTRIES}",
            f.entries.len()
        ));
    }
    Ok(f.entries
        .into_iter()
        .filter(|e| {
            e.shape.is_sane()
                && e.choice.is_valid_here()
                && e.gflops.is_finite()
                && e.gflops >= 0.0
                && (!e.shape.step || e.choice.split == Split::Cols)
        })
        .collect())
}

fn load(s: &mut State) {
    if s.loaded {
        return;
    }
    s.loaded = true;
    let Some(dir) = &s.dir else { return };
    let path = file_in(dir);
    match crate::fsutil::read_bounded(&path, MAX_FILE) {
        Ok(bytes) => match parse_file(&bytes) {
            Ok(entries) => {
                for e in entries {
                    s.map
                        .entry(e.shape)
                        .or_insert((e.choice, e.gflops, Source::Cache));
                }
            }
            Err(why) => {
                s.problem = Some(format!("{} ignored: {why}", path.display()));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => s.problem = Some(format!("{} ignored: {e}", path.display())),
    }
}

fn save(s: &mut State) {
    let Some(dir) = &s.dir else { return };
    let (cpu, isa, seqpipe) = key();
    let entries: Vec<Entry> = s
        .map
        .iter()
        .take(MAX_ENTRIES)
        .map(|(shape, &(choice, gflops, _))| Entry {
            shape: *shape,
            choice,
            gflops,
        })
        .collect();
    let file = File {
        format: FORMAT,
        cpu,
        isa,
        seqpipe,
        caches: Caches::current().caches,
        entries,
    };
    let path = file_in(dir);
    let res = std::fs::create_dir_all(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
        .and_then(|_| serde_json::to_vec_pretty(&file).map_err(|e| e.to_string()))
        .and_then(|bytes| crate::fsutil::write_synced(&path, &bytes).map_err(|e| e.to_string()));
    if let Err(e) = res {
        s.problem = Some(format!("kernel choices not saved: {e}"));
    }
}

/// The choice for a product of this shape: the one tuned or read before; else, with tuning on,
/// outside a parallel region and for a product large enough, tuned now; else the built-in one.
pub(crate) fn choice(shape: Shape) -> Choice {
    let mut s = state();
    load(&mut s);
    if let Some(&(c, _, _)) = s.map.get(&shape) {
        return c;
    }
    let default = Choice::default_for(shape.step);
    if s.dir.is_none()
        || shape.flops() < MIN_TUNE_FLOPS
        || !shape.is_sane()
        || super::team::inside()
    {
        return default;
    }
    let (best, gflops) = tune(shape, &Caches::current().caches);
    s.map.insert(shape, (best, gflops, Source::Tuned));
    save(&mut s);
    best
}

#[cfg(test)]
/// Every choice this CPU can run: every available kernel × its tile heights × k-blocks ×
/// packing rules × thread splits.
pub(crate) fn all_candidates() -> Vec<Choice> {
    let mut out = Vec::new();
    for kernel in [Kernel::Avx512, Kernel::Avx2, Kernel::Scalar] {
        if !kernel.available() {
            continue;
        }
        for &mr in kernel.mrs() {
            for kc in KCS {
                for pack_min_rows in PACK_RULES {
                    for split in [Split::Cols, Split::Rows] {
                        out.push(Choice {
                            kernel,
                            mr,
                            kc,
                            pack_min_rows,
                            split,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Seconds per product with choice `ch` on `shape` (best of the runs in about 1 ms, at least one).
fn time_one(shape: Shape, ch: &Choice, a: &[f32], b: &[f32], c: &mut [f32]) -> f64 {
    let Shape { m, n, k, .. } = shape;
    let packed = shape.step.then(|| gemm::pack_b(b, k, n, *ch));
    let mut run = || match &packed {
        Some(p) => gemm::sgemm_packed_serial(m, a, p, c),
        None => gemm::sgemm_with(ch, m, n, k, a, shape.at, b, c, true),
    };
    // No warm-up run: the search times every candidate in several rounds and keeps the best,
    // so a cold first run (caches, the team's threads) is left out anyway.
    let mut best = f64::INFINITY;
    let start = Instant::now();
    let mut runs = 0;
    while runs < 1 || (start.elapsed().as_secs_f64() < 0.001 && runs < 1000) {
        let t = Instant::now();
        run();
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    best
}

/// Where the search starts: the built-in choice, with the longest k-block that fits the caches
/// when its own does not (an assumed small L2).
fn start(shape: Shape, caches: &Caches) -> Choice {
    let built_in = Choice::default_for(shape.step);
    let nr = built_in.kernel.nr();
    if caches.fits(built_in.kc, shape.k, nr) {
        return built_in;
    }
    let kc = KCS
        .iter()
        .copied()
        .filter(|&kc| kc != 0 && caches.fits(kc, shape.k, nr))
        .max()
        .unwrap_or(KCS[1]);
    Choice { kc, ..built_in }
}

/// Line search from the built-in choice over the candidates that fit the caches; returns the
/// winner and its GFLOP/s.
fn tune(shape: Shape, caches: &Caches) -> (Choice, f64) {
    let Shape { m, n, k, .. } = shape;
    // Deterministic values in [-1, 1) (the speed does not depend on them).
    let fill = |len: usize, seed: usize| -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i.wrapping_mul(2_654_435_761).wrapping_add(seed)) % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    };
    let (a, b) = (fill(m * k, 1), fill(k * n, 2));
    let mut c = vec![0.0f32; m * n];
    let mut best = start(shape, caches);
    let mut best_t = time_one(shape, &best, &a, &b, &mut c);
    // The current best and the candidates are timed in ROUNDS interleaved rounds, each keeping
    // its best time: a burst of load from another process then slows every one of them alike
    // instead of sinking one (a choice made under load is kept in the cache for good).
    let mut try_all = |cands: Vec<Choice>, best: &mut Choice, best_t: &mut f64| {
        let mut times: Vec<(Choice, f64)> = std::iter::once(*best)
            .chain(cands.into_iter().filter(|ch| {
                ch != best && ch.is_valid_here() && caches.fits(ch.kc, k, ch.kernel.nr())
            }))
            .map(|ch| (ch, f64::INFINITY))
            .collect();
        if times.len() == 1 {
            return;
        }
        for _ in 0..ROUNDS {
            for (ch, t) in times.iter_mut() {
                *t = t.min(time_one(shape, ch, &a, &b, &mut c));
            }
        }
        *best_t = times[0].1.min(*best_t);
        for &(ch, t) in &times[1..] {
            if t < *best_t * MARGIN {
                (*best, *best_t) = (ch, t);
            }
        }
    };
    let kernels: Vec<Choice> = [Kernel::Avx512, Kernel::Avx2]
        .into_iter()
        .filter(|k| k.available())
        .flat_map(|kernel| kernel.mrs().iter().map(move |&mr| (kernel, mr)))
        .map(|(kernel, mr)| Choice { kernel, mr, ..best })
        .collect();
    try_all(kernels, &mut best, &mut best_t);
    let kcs = KCS.iter().map(|&kc| Choice { kc, ..best }).collect();
    try_all(kcs, &mut best, &mut best_t);
    if !shape.step {
        let packs = PACK_RULES
            .iter()
            .map(|&pack_min_rows| Choice {
                pack_min_rows,
                ..best
            })
            .collect();
        try_all(packs, &mut best, &mut best_t);
        if super::team::width() > 1 {
            let splits = vec![Choice {
                split: Split::Rows,
                ..best
            }];
            try_all(splits, &mut best, &mut best_t);
        }
    }
    (best, shape.flops() as f64 / best_t / 1e9)
}

/// The kernel choices this process knows (tuned here or read from the cache file), for
/// `seqpipe bench --breakdown` and the run record.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    pub cpu: String,
    pub isa: String,
    /// The data caches the candidates are sized for (this CPU's, or assumed).
    pub caches: String,
    /// The cache file (absent: tuning is off, every product uses the built-in choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// The built-in choices (per-step products, all-steps products).
    pub default: String,
    pub choices: Vec<KernelUse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct KernelUse {
    /// `step MxNxK` or `big [Aᵀ] MxNxK`.
    pub shape: String,
    pub choice: String,
    pub gflops: f64,
    pub source: Source,
}

pub fn report() -> KernelReport {
    let mut s = state();
    load(&mut s);
    KernelReport {
        cpu: cpu_model(),
        isa: gemm::kernel_name().to_string(),
        caches: match Caches::current() {
            u if u.assumed => format!("{} (assumed)", u.caches),
            u => u.caches.to_string(),
        },
        cache: s.dir.as_ref().map(|d| file_in(d).display().to_string()),
        default: format!(
            "step: {}; big: {}",
            Choice::default_for(true).describe(),
            Choice::default_for(false).describe()
        ),
        choices: s
            .map
            .iter()
            .map(|(sh, &(c, g, src))| KernelUse {
                shape: sh.describe(),
                choice: c.describe(),
                gflops: (g * 10.0).round() / 10.0,
                source: src,
            })
            .collect(),
        problem: match (&s.problem, &Caches::current().problem) {
            (Some(p), Some(c)) => Some(format!("{p}; {c}")),
            (p, c) => p.clone().or_else(|| c.clone()),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Tests that change the global state run one at a time.
    pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn tuning_writes_a_cache_that_a_later_run_reads_and_bad_files_are_ignored() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let shape = Shape::step(32, 300, 256);
        set_cache_dir(Some(dir.path().to_path_buf()));
        state().map.remove(&shape);
        let c = choice(shape);
        assert!(c.is_valid_here());
        let path = file_in(dir.path());
        let bytes = std::fs::read(&path).expect("the cache file is written");
        let entries = parse_file(&bytes).unwrap();
        assert!(entries.iter().any(|e| e.shape == shape && e.choice == c));
        let r = report();
        assert!(r
            .choices
            .iter()
            .any(|u| u.shape == "step 32x300x256" && u.source == Source::Tuned));

        // A later run (fresh memory) reads the choice back from the file.
        state().map.clear();
        set_cache_dir(Some(dir.path().to_path_buf()));
        assert_eq!(choice(shape), c);
        assert_eq!(state().map.get(&shape).unwrap().2, Source::Cache);

        // An entry that is no candidate here is dropped; a file for another CPU is ignored;
        // so are junk and a link.
        let mut f: File = serde_json::from_slice(&bytes).unwrap();
        f.entries[0].choice.mr = 7;
        let filtered = parse_file(&serde_json::to_vec(&f).unwrap()).unwrap();
        assert!(filtered.iter().all(|e| e.choice.mr != 7));
        f.cpu = "some other CPU".into();
        let err = parse_file(&serde_json::to_vec(&f).unwrap()).unwrap_err();
        assert!(err.contains("some other CPU"), "{err}");
        assert!(parse_file(b"{\"format\": 1").is_err());
        std::fs::write(&path, b"not json").unwrap();
        state().map.clear();
        set_cache_dir(Some(dir.path().to_path_buf()));
        assert_eq!(choice(Shape::step(2, 2, 2)), Choice::default_for(true));
        assert!(report().problem.unwrap().contains("does not parse"));
        #[cfg(unix)]
        {
            std::fs::remove_file(&path).unwrap();
            std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
            state().map.clear();
            set_cache_dir(Some(dir.path().to_path_buf()));
            let _ = choice(Shape::step(2, 2, 2));
            assert!(report().problem.is_some());
        }
        set_cache_dir(None);
        state().map.clear();
        state().problem = None;
    }

    /// With an assumed small L2, the search starts from and keeps to k-blocks that fit in
    /// half of it; with this CPU's caches the same shape may use all of k.
    #[test]
    fn the_search_keeps_to_what_fits_the_caches() {
        let small = Caches {
            l1d: 32 << 10,
            l2: 64 << 10,
        };
        // A per-step product on all of k = 1,024 rows: 128 KiB of a 32-float panel.
        let shape = Shape::step(32, 256, 1024);
        let nr = Choice::default_for(true).kernel.nr();
        assert!(!small.fits(0, 1024, nr));
        let s = start(shape, &small);
        assert!(s.kc != 0 && small.fits(s.kc, 1024, nr), "{s:?}");
        let (best, gflops) = tune(shape, &small);
        assert!(small.fits(best.kc, 1024, best.kernel.nr()), "{best:?}");
        assert!(gflops > 0.0);
        let roomy = Caches {
            l1d: 48 << 10,
            l2: 2 << 20,
        };
        assert_eq!(start(shape, &roomy), Choice::default_for(true));
    }

    #[test]
    fn without_a_cache_folder_nothing_is_tuned() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        set_cache_dir(None);
        let shape = Shape::big(64, 512, 512, true);
        assert_eq!(choice(shape), Choice::default_for(false));
        assert!(!state().map.contains_key(&shape));
    }
}
