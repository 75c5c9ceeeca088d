//! A fixed team of threads for the fork-join regions of a training step (the per-step
//! recurrences over chunks of batch rows, the column blocks of a large matrix product).
//!
//! Why not rayon's pool for these: a training step forks and joins every few hundred
//! microseconds, with short serial parts in between, and rayon parks an idle worker after a few
//! rounds of yielding. Waking a parked worker costs a futex wake-up and, on a virtual machine,
//! the wake-up of an idle vCPU: measured on the 2-core development VM, the second half of the
//! weight-gradient product of LSTM 256 started 1.1–1.6 ms late in about one call in six (the
//! product itself takes 1.5 ms), and 20–75 µs late in the others. Here the calling thread runs
//! part 0 itself, and the helpers spin (for up to `SPIN` after their last job) before parking, as
//! OpenMP runtimes do, so the next region starts at once.
//!
//! The partition of the work never depends on timing: part `p` of `parts` is the same work
//! whoever runs it, so results stay bit-identical across runs and thread counts.

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks.
const SPIN: Duration = Duration::from_millis(5);

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per region; helpers run a region when they see it change.
    epoch: AtomicUsize,
    /// The region's work and its number of parts; written only by the caller that holds `lock`,
    /// while every helper has acknowledged the previous region (`pending == 0`).
    job: UnsafeCell<(Job, usize)>,
    /// Helpers that have not yet finished the current region.
    pending: AtomicUsize,
    /// Whether a helper's part panicked in the current region.
    panicked: AtomicBool,
    parked: Vec<AtomicBool>,
}

// SAFETY: `job` is written only between regions (see `Team::run`) and read by helpers only
// after they observe the new epoch (Acquire pairs with the caller's Release).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Team {
    shared: &'static Shared,
    threads: Vec<Thread>,
    lock: Mutex<()>,
}

thread_local! {
    /// Set on team threads and while a thread runs a region: nested regions run serially.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

fn team() -> &'static Team {
    static TEAM: OnceLock<Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new((std::ptr::null::<fn(usize)>() as Job, 0)),
            pending: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            parked: (0..helpers).map(|_| AtomicBool::new(false)).collect(),
        }));
        let threads = (0..helpers)
            .filter_map(|i| {
                std::thread::Builder::new()
                    .name(format!("seqpipe-team-{}", i + 1))
                    .spawn(move || helper(shared, i))
                    .ok()
                    .map(|h| h.thread().clone())
            })
            .collect::<Vec<_>>();
        // A helper that could not be started would never acknowledge a region: run serially.
        let threads = if threads.len() == helpers {
            threads
        } else {
            Vec::new()
        };
        Team {
            shared,
            threads,
            lock: Mutex::new(()),
        }
    })
}

fn helper(sh: &'static Shared, i: usize) {
    INSIDE.with(|c| c.set(true));
    let mut seen = 0usize;
    loop {
        let idle = Instant::now();
        let mut spins = 0u32;
        loop {
            let e = sh.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(1024) {
                std::hint::spin_loop();
                continue;
            }
            if idle.elapsed() < SPIN {
                // Every 1,024 spins: let a thread that waits for this core run (more threads
                // than free cores: without this, spinning helpers would slow the work down).
                std::thread::yield_now();
                continue;
            }
            sh.parked[i].store(true, Ordering::SeqCst);
            if sh.epoch.load(Ordering::SeqCst) == seen {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            sh.parked[i].store(false, Ordering::SeqCst);
        }
        // SAFETY: the caller keeps the job alive until every helper has decremented `pending`.
        let (job, parts) = unsafe { *sh.job.get() };
        let part = i + 1;
        if part < parts {
            let f = unsafe { &*job };
            if catch_unwind(AssertUnwindSafe(|| f(part))).is_err() {
                sh.panicked.store(true, Ordering::Relaxed);
            }
        }
        sh.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether this thread runs a part of a region now (a team helper, or a caller inside one).
pub(super) fn inside() -> bool {
    INSIDE.with(|c| c.get())
}

/// The number of parts a region can run at once (the `--threads` setting).
pub(super) fn width() -> usize {
    rayon::current_num_threads().max(1)
}

/// Runs `f(0) … f(parts - 1)`, in parallel on the team where it is free, else in order on
/// this thread. Returns when all parts are done; a panic in any part is raised here.
pub(super) fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    let serial = || (0..parts).for_each(f);
    if parts <= 1 || INSIDE.with(|c| c.get()) {
        return serial();
    }
    let t = team();
    let helpers = t.threads.len();
    if helpers == 0 || parts > helpers + 1 {
        return serial();
    }
    let Ok(_guard) = t.lock.try_lock() else {
        // Another model on another thread holds the team: this one runs on its own thread.
        return serial();
    };
    let sh = t.shared;
    // SAFETY: the lifetime of `f` is erased for the helpers, who use it only until they
    // decrement `pending`; this function waits for that before returning (or unwinding).
    let job: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
    unsafe { *sh.job.get() = (job, parts) };
    sh.panicked.store(false, Ordering::Relaxed);
    sh.pending.store(helpers, Ordering::Relaxed);
    sh.epoch.fetch_add(1, Ordering::SeqCst);
    for (i, th) in t.threads.iter().enumerate() {
        if sh.parked[i].load(Ordering::SeqCst) {
            th.unpark();
        }
    }
    INSIDE.with(|c| c.set(true));
    let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
    INSIDE.with(|c| c.set(false));
    let mut spins = 0u32;
    while sh.pending.load(Ordering::Acquire) != 0 {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
    if let Err(p) = mine {
        resume_unwind(p);
    }
    if sh.panicked.load(Ordering::Relaxed) {
        panic!("internal: a part of a parallel region panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_part_runs_once_and_nested_regions_run_serially() {
        for parts in 1..=3 {
            let hits: Vec<AtomicU64> = (0..parts).map(|_| AtomicU64::new(0)).collect();
            for _ in 0..200 {
                run(parts, &|p| {
                    hits[p].fetch_add(1, Ordering::Relaxed);
                    // a nested region inside a part runs on this thread, in order
                    let order = Mutex::new(Vec::new());
                    run(3, &|q| order.lock().unwrap().push(q));
                    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
                });
            }
            for h in &hits {
                assert_eq!(h.load(Ordering::Relaxed), 200);
            }
        }
    }

    #[test]
    fn regions_from_several_threads_at_once_each_run_every_part_once() {
        // One thread gets the team, the others run their regions on their own thread; every
        // region still runs each of its parts exactly once.
        std::thread::scope(|s| {
            for t in 0..4u64 {
                s.spawn(move || {
                    for round in 0..300u64 {
                        let parts = 2 + (round % 2) as usize;
                        let hits: Vec<AtomicU64> = (0..parts).map(|_| AtomicU64::new(0)).collect();
                        run(parts, &|p| {
                            hits[p].fetch_add(t + 1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == t + 1));
                    }
                });
            }
        });
    }

    #[test]
    fn a_panicking_part_is_raised_to_the_caller_and_the_team_still_works() {
        let width = width();
        let r = catch_unwind(|| run(width.max(2), &|p| assert!(p != 1, "part 1 fails")));
        assert!(r.is_err());
        let n = AtomicU64::new(0);
        run(width, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), width as u64);
    }
}
