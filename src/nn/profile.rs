//! Where a training step's time goes, for `seqpipe bench --breakdown`: exclusive thread time
//! per phase. Off by default; then a span costs one relaxed load of a flag and nothing else.
//!
//! On: each thread keeps the phase it is in and when it entered it; entering a span charges
//! the time since the last switch to the phase that was running (so nested spans are not
//! counted twice: a copy of B's panel inside a product counts as packing, not as product), and
//! leaving it charges the span's own time and returns to the outer phase. A team helper outside
//! any span is idle and charges nothing; the calling thread of a training step is inside
//! `Other` for the whole step, so its waits and untimed work land there.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Matrix products (including their k-loops over packed or copied panels).
    Products = 0,
    /// The cells' element-wise forward and backward kernels.
    Cell = 1,
    /// Packing the weights, copying B's panels, transposes.
    Packing = 2,
    /// Softmax and cross-entropy (or MSE) with dL/dlogits.
    Loss = 3,
    /// Gradient norm, clipping and the optimizer's update.
    Update = 4,
    /// Everything else in a step: copies, gathers, bias sums, waits for the other threads.
    Other = 5,
}

pub const PHASES: [Phase; 6] = [
    Phase::Products,
    Phase::Cell,
    Phase::Packing,
    Phase::Loss,
    Phase::Update,
    Phase::Other,
];

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Products => "products",
            Phase::Cell => "cell kernels",
            Phase::Packing => "packing and transposes",
            Phase::Loss => "softmax / loss",
            Phase::Update => "norm and update",
            Phase::Other => "other (copies, gathers, sums, waits)",
        }
    }
}

const NONE: u8 = u8::MAX;

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
static FLOPS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static CUR: Cell<(u8, Option<Instant>)> = const { Cell::new((NONE, None)) };
}

#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Turns the timers on (`true`) or off, and zeroes the totals.
pub fn set_enabled(on: bool) {
    ON.store(on, Ordering::SeqCst);
    reset();
}

pub fn reset() {
    for n in &NANOS {
        n.store(0, Ordering::SeqCst);
    }
    FLOPS.store(0, Ordering::SeqCst);
}

/// Time spent per phase (nanoseconds, summed over threads, in [`PHASES`] order) and the
/// products' FLOPs since the last reset.
pub fn totals() -> ([u64; 6], u64) {
    let mut t = [0u64; 6];
    for (d, n) in t.iter_mut().zip(&NANOS) {
        *d = n.load(Ordering::SeqCst);
    }
    (t, FLOPS.load(Ordering::SeqCst))
}

#[inline]
pub fn add_flops(f: usize) {
    if enabled() {
        FLOPS.fetch_add(f as u64, Ordering::Relaxed);
    }
}

/// Leaving it returns the thread to the phase it was in before.
pub struct Span {
    prev: u8,
    on: bool,
}

fn charge(phase: u8, since: Option<Instant>, now: Instant) {
    if let (Some(t), true) = (since, (phase as usize) < NANOS.len()) {
        NANOS[phase as usize].fetch_add((now - t).as_nanos() as u64, Ordering::Relaxed);
    }
}

#[inline]
pub fn enter(p: Phase) -> Span {
    if !enabled() {
        return Span {
            prev: NONE,
            on: false,
        };
    }
    let now = Instant::now();
    let prev = CUR.with(|c| {
        let (ph, t) = c.get();
        charge(ph, t, now);
        c.set((p as u8, Some(now)));
        ph
    });
    Span { prev, on: true }
}

impl Drop for Span {
    #[inline]
    fn drop(&mut self) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        CUR.with(|c| {
            let (ph, t) = c.get();
            charge(ph, t, now);
            let since = (self.prev != NONE).then_some(now);
            c.set((self.prev, since));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spans_charge_their_phases_and_off_charges_nothing() {
        let _g = crate::nn::tune::tests::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        set_enabled(false);
        {
            let _s = enter(Phase::Cell);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(totals().0, [0; 6]);
        set_enabled(true);
        {
            let _o = enter(Phase::Other);
            std::thread::sleep(Duration::from_millis(10));
            {
                let _p = enter(Phase::Products);
                add_flops(1000);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let (t, f) = totals();
        set_enabled(false);
        let ms = |p: Phase| t[p as usize] as f64 / 1e6;
        // (other tests may run products or cells meanwhile: only lower bounds hold)
        assert!(f >= 1000, "{f}");
        assert!(ms(Phase::Products) >= 20.0, "{t:?}");
        assert!(ms(Phase::Other) >= 10.0, "{t:?}");
    }
}
